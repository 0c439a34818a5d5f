"""Batched Gaussian-mixture EM: ``gmm_fit`` and DivideMix/PLReMix's ``gmm_clean_prob``.

``gmm_fit`` fits G independent K-component full-covariance mixtures to ``x: Tensor[G, N, D]`` (ragged
through ``lengths``) exactly as ``sklearn.mixture.GaussianMixture(n_components=K,
covariance_type="full", max_iter, tol, reg_covar).fit(x[g]).predict_proba(x[g])`` would, given the same
initial responsibilities (as DivideMix ``Train_cifar.py: eval_train`` and PLReMix
``utils/train_utils.py: gmm_selection`` call it).
Equivalent PyTorch for one problem (see ``gmm_reference``)::

    w, mu, S = m_step(x, r0, initial=True)                 # r0: one-hot k-means labels
    for it in range(max_iter):
        r, lb = e_step(x, w, mu, S); w, mu, S = m_step(x, r)
        if abs(lb - lb_prev) < tol: break
    resp, _ = e_step(x, w, mu, S)                          # predict_proba

Initialisation (``init``): ``"kmeans"`` replays sklearn's ``KMeans(K, n_init=1, random_state=seed)``:
the same k-means++ draws from ``numpy.random.RandomState(seed)`` and Lloyd with sklearn's stopping
rule, in float64 (sklearn works in the input dtype after centring; an empty cluster keeps its centre
instead of being moved). Labels then agree with sklearn's except for points within rounding of a
cluster boundary. ``"quantile"``: nearest of the per-feature 10th/90th percentiles (deterministic).
A ``Tensor[G, N, K]`` of responsibilities runs sklearn's ``_initialize`` M-step on it; a ``GMMParams``
(or dict) of weights/means/covs warm-starts EM directly (as ``weights_init/means_init/precisions_init``).

Statistics are accumulated in float64 for every backend; outputs take the input dtype. The CUDA
kernels compute a float32 input's per-point E-step (log-densities, responsibilities) in float32 (FP64
runs at 1/64 of FP32's rate on consumer GPUs), a float64 input's in float64 (see ``ATOL``). Results are
deterministic for a given backend and launch shape. The CUDA kernels' shapes sum in different
orders: one block per problem, a cluster of 8 on sm_90 for a few problems of 16k+ points, a
cooperative grid (sized by the SM count) for one problem over 64k points. So fits on GPUs of another
SM count, or with ``LNL_GMM_CLUSTERS=0``, can differ in the last bits (and, rarely, in a k-means++
centre chosen on a near tie). Host synchronisation (CUDA): one read-back, of the result's status
(NaN/inf in x, which the kernels check, or a non-positive-definite covariance, only with
``reg_covar=0``); explicit ``lengths`` are range-checked first (one more), ``lengths=None`` needs none.
"""

from __future__ import annotations

from typing import NamedTuple

import torch

from lnl import _ext
from lnl.ops import _dispatch, _tune
from lnl.ops import gmm_reference as ref

OP = "gmm_em"
INITS = ("kmeans", "quantile")
CLEAN_RULES = ("min_mean", "min_norm")
KERNEL_MAX_K = 4
# Kernels and reference both accumulate in float64; what differs is summation order and, for float32 on
# CUDA, the fp32 E-step (at most 1.6e-6 on the tests' data, csrc/gmm/gmm_kernels.cuh).
ATOL = {torch.float32: 1e-5, torch.float64: 1e-9}
RTOL = {torch.float32: 1e-5, torch.float64: 1e-9}


class GMMParams(NamedTuple):
    weights: torch.Tensor  # Tensor[G, K]
    means: torch.Tensor  # Tensor[G, K, D]
    covs: torch.Tensor  # Tensor[G, K, D, D]


class GMMResult(NamedTuple):
    weights: torch.Tensor  # Tensor[G, K]
    means: torch.Tensor  # Tensor[G, K, D]
    covs: torch.Tensor  # Tensor[G, K, D, D]
    resp: torch.Tensor  # Tensor[G, N, K], predict_proba; 0 on padded rows
    lower_bound: torch.Tensor  # Tensor[G], mean log-likelihood of the last EM iteration
    n_iter: torch.Tensor  # Tensor[G] int64
    converged: torch.Tensor  # Tensor[G] bool


def _finite(name: str, t: torch.Tensor) -> None:
    if not bool(torch.isfinite(t).all()):
        raise ValueError(f"gmm_fit: {name} contains NaN or inf")


def _check_init(init, g: int, n: int, k: int, d: int) -> None:
    if isinstance(init, str):
        if init not in INITS:
            raise ValueError(
                f"gmm_fit: unknown init {init!r}; expected one of {INITS}, a Tensor or GMMParams"
            )
    elif isinstance(init, torch.Tensor):
        if tuple(init.shape) != (g, n, k):
            raise ValueError(
                f"gmm_fit: init responsibilities must be [G={g}, N={n}, K={k}], got {tuple(init.shape)}"
            )
        _finite("init responsibilities", init)
        if bool((init < 0).any()):
            raise ValueError("gmm_fit: init responsibilities must be non-negative")
    else:
        w, m, c = GMMParams(**init) if isinstance(init, dict) else init
        for name, t, shape in (
            ("weights", w, (g, k)),
            ("means", m, (g, k, d)),
            ("covs", c, (g, k, d, d)),
        ):
            if tuple(t.shape) != shape:
                raise ValueError(
                    f"gmm_fit: init {name} must be {list(shape)}, got {tuple(t.shape)}"
                )
            _finite(f"init {name}", t)
        if bool((w <= 0).any()):
            raise ValueError("gmm_fit: init weights must be positive")
        if not torch.allclose(c, c.transpose(-1, -2)):
            raise ValueError("gmm_fit: init covs must be symmetric (a covariance matrix)")


def check_inputs(
    x, lengths, n_components, max_iter, tol, reg_covar, init, values=True
) -> torch.Tensor:
    """Raise ``ValueError`` naming the first problem; return lengths as Tensor[G] int64 on x's device.

    ``values=False`` skips the NaN/inf scan of x (the CPU kernel does it in its own loop).
    """
    if not isinstance(x, torch.Tensor) or x.dim() != 3:
        raise ValueError(
            f"gmm_fit: x must be Tensor[G, N, D], got shape {tuple(getattr(x, 'shape', ()))}"
        )
    if x.dtype not in (torch.float32, torch.float64):
        raise ValueError(f"gmm_fit: x must be float32 or float64, got {x.dtype}")
    g, n, d = x.shape
    if g < 1 or d < 1:
        raise ValueError(
            f"gmm_fit: x must have G >= 1 problems and D >= 1 features, got {tuple(x.shape)}"
        )
    if n == 0:
        raise ValueError(
            f"gmm_fit: x has no points (N=0, shape {tuple(x.shape)}): a fit needs at least "
            f"max(2, n_components) points per problem"
        )
    if not isinstance(n_components, int) or not 1 <= n_components <= max(n, 1):
        raise ValueError(f"gmm_fit: n_components={n_components} must be an int in [1, N={n}]")
    full = lengths is None
    low = max(2, n_components)
    if full:
        if n < low:
            raise ValueError(
                f"gmm_fit: N={n} points; a fit needs at least max(2, n_components)={low}"
            )
        lengths = torch.full((g,), n, dtype=torch.long, device=x.device)
    if (
        not isinstance(lengths, torch.Tensor)
        or tuple(lengths.shape) != (g,)
        or lengths.dtype.is_floating_point
    ):
        raise ValueError(
            f"gmm_fit: lengths must be an integer Tensor[G={g}], got {getattr(lengths, 'shape', lengths)}"
        )
    lengths = lengths.to(x.device, torch.long)
    if not full and bool(
        ((lengths < low) | (lengths > n)).any()
    ):  # a read-back: kernels index by lengths
        raise ValueError(
            f"gmm_fit: lengths must lie in [max(2, n_components)={low}, N={n}], got range "
            f"[{int(lengths.min())}, {int(lengths.max())}]"
        )
    if not isinstance(max_iter, int) or max_iter < 1:
        raise ValueError(f"gmm_fit: max_iter must be a positive int, got {max_iter}")
    if not tol >= 0 or not reg_covar >= 0:
        raise ValueError(f"gmm_fit: tol={tol} and reg_covar={reg_covar} must be non-negative")
    _check_init(init, g, n, n_components, d)
    if values:
        _finite("x", x if full else x[ref.valid_mask(lengths, n)])
    return lengths


def _initial_resp(x, lengths, k, init, seed) -> torch.Tensor:
    labels = (
        ref.kmeans_labels(x, lengths, k, seed)
        if init == "kmeans"
        else ref.quantile_labels(x, lengths, k)
    )
    return torch.nn.functional.one_hot(labels, k).double()


def gmm_fit_reference(
    x,
    lengths=None,
    *,
    n_components=2,
    max_iter=100,
    tol=1e-3,
    reg_covar=1e-6,
    init="kmeans",
    seed=0,
) -> GMMResult:
    """Pure-PyTorch ``gmm_fit`` (float64 internally); arguments as ``gmm_fit``."""
    lengths = check_inputs(x, lengths, n_components, max_iter, tol, reg_covar, init)
    eps = torch.finfo(x.dtype).eps
    if isinstance(init, (str, torch.Tensor)):
        resp0 = (
            _initial_resp(x, lengths, n_components, init, seed) if isinstance(init, str) else init
        )
        params = ref.initial_params(x, lengths, resp0, reg_covar, eps)
    else:
        params = tuple(GMMParams(**init) if isinstance(init, dict) else init)
    out = ref.em(x, lengths, params, max_iter=max_iter, tol=tol, reg_covar=reg_covar, eps=eps)
    return GMMResult(*(t.to(x.dtype) for t in out[:5]), out[5], out[6])


if _ext.has_op(OP):

    @torch.library.register_fake(f"lnl::{OP}")
    def _gmm_em_fake(
        x,
        lengths,
        init_labels,
        init_resp,
        weights,
        means,
        covs,
        n_components,
        max_iter,
        tol,
        reg_covar,
    ):
        g, n, d = x.shape
        k = n_components
        return (
            x.new_empty((g, k)),
            x.new_empty((g, k, d)),
            x.new_empty((g, k, d, d)),
            x.new_empty((g, n, k)),
            x.new_empty((g,)),
            x.new_empty((g,), dtype=torch.int64),
            x.new_empty((g,), dtype=torch.bool),
            x.new_empty((g,), dtype=torch.int64),
        )

    @torch.library.register_fake("lnl::gmm_kmeans")
    def _gmm_kmeans_fake(x, lengths, uniforms, n_components):
        return x.new_empty(x.shape[:2], dtype=torch.int64)


def not_supported_reasons(backend: str, x: torch.Tensor, n_components: int) -> list[str]:
    """Why ``backend`` cannot run these inputs (empty when it can)."""
    reasons = _dispatch.compiled_reasons(OP, backend, x.device)
    if backend == "reference":
        return reasons
    if x.dim() == 3 and x.shape[2] not in (1, 2):
        reasons.append(f"the kernels take D in {{1, 2}}, got D={x.shape[2]}")
    if n_components > KERNEL_MAX_K:
        reasons.append(f"the kernels take n_components <= {KERNEL_MAX_K}, got {n_components}")
    return reasons


def choose_backend(
    x: torch.Tensor,
    n_components: int = 2,
    requested: str = "auto",
    call: _dispatch.Call | None = None,
) -> tuple[str, dict]:
    """The backend ``gmm_fit`` would use, and why each higher-priority one was skipped (``call``: verify
    and measure, see ``_dispatch.choose``)."""
    reasons = {b: not_supported_reasons(b, x, n_components) for b in _dispatch.PRIORITY}
    return _dispatch.choose(OP, requested, reasons, _dispatch.describe(x=x), call), reasons


def _device_uniforms(seed: int, k: int, device: torch.device) -> torch.Tensor:
    """sklearn's k-means++ draws on ``device``. To a GPU through pinned memory, without blocking: a copy
    from pageable memory would wait for the device's queued work (the co-divide methods draw with a
    new seed every epoch, so caching the copy would not help)."""
    u = torch.as_tensor(ref.kmeans_uniforms(seed, k))
    return u.pin_memory().to(device, non_blocking=True) if device.type == "cuda" else u


def _compiled_fit(x, lengths, k, max_iter, tol, reg_covar, init, seed) -> GMMResult:
    labels = resp = w = m = c = None
    if isinstance(init, torch.Tensor):
        resp = init.to(x.dtype).contiguous()
    elif init == "kmeans":
        u = _device_uniforms(seed, k, x.device).expand(x.shape[0], -1)
        labels = torch.ops.lnl.gmm_kmeans(x, lengths, u.contiguous(), k)
    elif init == "quantile":
        labels = ref.quantile_labels(x, lengths, k)
    else:
        w, m, c = (
            t.to(x.dtype).contiguous()
            for t in (GMMParams(**init) if isinstance(init, dict) else init)
        )
    out = torch.ops.lnl.gmm_em(
        x.contiguous(), lengths, labels, resp, w, m, c, k, max_iter, float(tol), float(reg_covar)
    )
    status = out[7]
    if bool((status != 0).any()):  # the one read-back of the result
        g = int((status != 0).nonzero()[0, 0])
        if int(status[g]) == 2:
            raise ValueError(f"gmm_fit: x contains NaN or inf (problem {g})")
        raise ValueError(
            f"gmm_fit: problem {g} has a component with an ill-defined (not positive definite) "
            "covariance, e.g. a collapsed component; increase reg_covar"
        )
    return GMMResult(*out[:7])


def gmm_fit(
    x: torch.Tensor,
    lengths: torch.Tensor | None = None,
    *,
    n_components: int = 2,
    max_iter: int = 100,
    tol: float = 1e-3,
    reg_covar: float = 1e-6,
    init="kmeans",
    seed: int = 0,
    backend: str = "auto",
) -> GMMResult:
    """Fit G independent full-covariance Gaussian mixtures by EM, as scikit-learn does.

    Args:
        x: Tensor[G, N, D] float32/float64; problem g uses rows ``[:lengths[g]]``.
        lengths: Tensor[G] integer in [max(2, K), N]; None means N for every problem.
        n_components: K (the kernels take K <= 4 and D <= 2; the reference any).
        max_iter, tol, reg_covar: as sklearn's GaussianMixture (defaults are sklearn's).
        init: "kmeans" | "quantile" | Tensor[G, N, K] responsibilities | GMMParams/dict warm start.
        seed: the ``random_state`` whose k-means init is replayed (same for every problem).
        backend: "auto", "cuda", "cpu" or "reference" (see ``choose_backend``).

    Returns:
        GMMResult; ``resp`` is predict_proba (one E-step with the final parameters).

    Raises:
        ValueError: bad shapes, NaN/inf, lengths out of range, or a non-positive-definite covariance.
    """
    # values=False: NaN/inf are the kernels' to find (status 2), the reference checks them itself
    lengths = check_inputs(x, lengths, n_components, max_iter, tol, reg_covar, init, values=False)
    run = lambda b: gmm_fit(
        x,
        lengths,
        n_components=n_components,
        max_iter=max_iter,
        tol=tol,
        reg_covar=reg_covar,
        init=init,
        seed=seed,
        backend=b,
    )
    g, n, d = x.shape
    shape = f"{x.dtype}|{_tune.bucket(g, n)}|d{d}|k{n_components}|it{max_iter}"
    call = _dispatch.Call(x.device, x.dtype, shape, g * n * n_components * d * d * max_iter, run)
    chosen, _ = choose_backend(x, n_components, backend, call)
    if chosen == "reference":
        return gmm_fit_reference(
            x,
            lengths,
            n_components=n_components,
            max_iter=max_iter,
            tol=tol,
            reg_covar=reg_covar,
            init=init,
            seed=seed,
        )
    return _compiled_fit(x, lengths, n_components, max_iter, tol, reg_covar, init, seed)


def _minmax(x: torch.Tensor, lengths: torch.Tensor | None) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-problem, per-column min-max normalisation, and Tensor[G, 1, D] bool of constant columns
    (left on the device: a constant column becomes NaN, which the fit reports, so only a failed fit
    reads it back)."""
    if lengths is None:
        lo, hi = x.amin(1, keepdim=True), x.amax(1, keepdim=True)
        return (x - lo) / (hi - lo), hi == lo
    mask = ref.valid_mask(lengths, x.shape[1])[..., None]
    lo = torch.where(mask, x, torch.inf).amin(1, keepdim=True)
    hi = torch.where(mask, x, -torch.inf).amax(1, keepdim=True)
    return torch.where(mask, (x - lo) / (hi - lo), torch.zeros_like(x)), hi == lo


def _raise_if_constant(constant: torch.Tensor) -> None:
    if bool(constant.any()):
        g, _, j = constant.nonzero()[0].tolist()
        raise ValueError(
            f"gmm_clean_prob: problem {g}, column {j} is constant (max == min); min-max "
            "normalisation is undefined (DivideMix would divide by zero)"
        )


def gmm_clean_prob(
    losses: torch.Tensor,
    *,
    dims: int,
    clean: str | None = None,
    normalise: str = "minmax",
    lengths: torch.Tensor | None = None,
    max_iter: int = 10,
    tol: float = 1e-2,
    reg_covar: float = 5e-4,
    init="kmeans",
    seed: int = 0,
    backend: str = "auto",
    return_fit: bool = False,
):
    """Per-sample probability of the clean (low-loss) component, as DivideMix / PLReMix compute it.

    DivideMix: ``dims=1``, ``clean="min_mean"`` (``prob[:, means_.argmin()]``); PLReMix: ``dims=2`` (CE
    and prototype loss), ``clean="min_norm"`` (smallest ``||mean||^2``). Defaults follow their
    ``GaussianMixture(n_components=2, max_iter=10, tol=1e-2, reg_covar=5e-4)``; each column is min-max
    normalised per problem first (``normalise="none"`` skips it).

    Args:
        losses: Tensor[N] (dims=1), Tensor[N, dims], or batched Tensor[G, N, dims] with ``lengths``.
        dims: D, the number of loss columns.
        clean: "min_mean" (default for dims=1) or "min_norm" (default for dims=2).

    Returns:
        Tensor[N] (or [G, N], 0 on padding) of clean probabilities; with ``return_fit`` also the
        GMMResult and the clean component index Tensor[G].

    Raises:
        ValueError: as ``gmm_fit``, or a constant column (min == max) when normalising.
    """
    batched = losses.dim() == 3
    x = losses if batched else losses.reshape(1, losses.shape[0] if losses.dim() else 0, -1)
    if losses.dim() not in (1, 2, 3) or x.shape[-1] != dims or (losses.dim() == 1 and dims != 1):
        raise ValueError(
            f"gmm_clean_prob: losses of shape {tuple(losses.shape)} do not have dims={dims} columns"
        )
    clean = clean or ("min_mean" if dims == 1 else "min_norm")
    if clean not in CLEAN_RULES or normalise not in ("minmax", "none"):
        raise ValueError(
            f"gmm_clean_prob: clean={clean!r} must be in {CLEAN_RULES}, normalise={normalise!r} "
            "in ('minmax', 'none')"
        )
    x = x if x.dtype in (torch.float32, torch.float64) else x.float()
    checked = check_inputs(x, lengths, 2, max_iter, tol, reg_covar, init, values=False)
    lengths = None if lengths is None else checked  # None: gmm_fit skips the range check
    constant = None
    if normalise == "minmax":
        x, constant = _minmax(x, lengths)
    try:
        fit = gmm_fit(
            x,
            lengths,
            n_components=2,
            max_iter=max_iter,
            tol=tol,
            reg_covar=reg_covar,
            init=init,
            seed=seed,
            backend=backend,
        )
    except ValueError:
        if constant is not None:
            _raise_if_constant(constant)  # the cause of the NaN the fit reported
        raise
    if clean == "min_mean":
        if dims != 1:
            raise ValueError(f"gmm_clean_prob: clean='min_mean' needs dims=1, got dims={dims}")
        idx = fit.means[..., 0].argmin(1)
    else:
        idx = (fit.means**2).sum(-1).argmin(1)
    prob = fit.resp.gather(2, idx.view(-1, 1, 1).expand(-1, x.shape[1], 1))[..., 0]
    prob = prob if batched else prob[0]
    return (prob, fit, idx) if return_fit else prob
