"""PLReMix's pseudo-label-relaxed (PLR) contrastive loss: ``plr_loss`` and its mask ``plr_mask``.

Semantics (PLReMix ``losses/losses.py: PLRLoss``, ``utils/train_utils.py: build_mask_step``):

* Candidate sets: S_i = top-κ candidates ∪ {label_i} for κ ≥ 1; S_i = {cand[i, 0]} (top-1, no
  label) for κ = 0. Samples i ≠ j are a negative pair iff S_i ∩ S_j = ∅; other pairs are neglected.
* ``features`` Tensor[V·B, D] are view-major (row v·B + i is view v of sample i), L2-normalised by
  the caller. P(a) = the other V−1 views of a's sample; N(a) = every view of a's negative samples;
  self-pairs and overlapping pairs are left out. s_ab = f_a·f_b, τ = ``temperature``.
* ``flat=True`` (PLReMix CIFAR): v_a = log Σ_{n∈N(a)} exp((s_an − Σ_{p∈P(a)} s_ap)/τ) over the R rows
  with N(a) ≠ ∅ (the **sum** of positives for V > 2); loss = (1/R) Σ_a exp(v_a − sg(v_a)), which is
  identically 1 and has the gradient (1/R) Σ_a ∇v_a. ``flat=False`` (Clothing1M/WebVision, SupCon):
  loss = mean_a −(τ/τ_b)(1/|P(a)|) Σ_p [s_ap/τ − log Σ_{k∈P(a)∪N(a)} exp(s_ak/τ)].
* Deliberate deviation (P9, PLReMix's README): when no row has a negative (R = 0) the flat loss is 0 with
  a zero gradient, not NaN, and ``return_stats=True`` reports ``no_negatives``.
* ``num_classes`` (C, the candidate bitset width) defaults to max(used candidates, labels) + 1,
  which reads the labels on the host (one synchronisation); pass it to avoid that.
* Validation reads every feature (NaN/inf check) and the candidate/label ranges: one more sync.

Equivalent PyTorch (``plr_reference.py``)::

    T = one_hot(S)                     # Tensor[B, C]
    M = where(T @ T.T == 0, -1, 0); M.fill_diagonal_(1)
    pos, neg = (M.repeat(V, V) == 1) & ~eye(N), M.repeat(V, V) == -1
    lse = logsumexp(where(neg, F @ F.T / τ, -inf), 1)    # flat; pos | neg for SupCon

The compiled op ``lnl::plr_loss`` never builds a B×B or N×N tensor: candidate sets become bitsets
(⌈C/64⌉ words per sample), pair negativity is AND + popcount inside each similarity tile, each row
keeps an online log-sum-exp, and the backward recomputes tiles and accumulates dF = (G + Gᵀ)F (CUDA:
in registers over the column tiles, per 128-wide slice of D; on tensor cores for 16-bit features, with
G + Gᵀ split into two 16-bit halves to keep float32's accuracy; the bitsets come from the forward).
Its first output is the *objective* whose gradient is the loss's ((1/R) Σ v_a for flat); this
wrapper turns it into the original's exp(o − sg(o)). Backends: ``cpu`` (C++, float32/float64, GEMM
tiles through ATen; exps in the input precision, sums in float64), ``cuda`` (tiles of F·Fᵀ in fp32
SIMT for float32 and on tensor cores, WMMA with fp32 accumulation, for float16/bfloat16; C ≤ 1024;
compiled for sm_80 and sm_90 and run in CI under the CPU emulation of thread blocks, not yet on a
GPU), ``reference`` (dense PyTorch, any dtype, float64 for gradcheck).
The CUDA op never synchronises; the CPU backward reads its 0-d incoming gradient on the host.
"""

from __future__ import annotations

import torch

from lnl import _ext
from lnl.ops import _dispatch, _tune
from lnl.ops.plr_reference import (
    PlrStats,
    candidate_columns,
    default_num_classes,
    plr_loss_reference,
    plr_mask_reference,
)

OP = "plr_loss"
MASK_OP = "plr_mask"
# Gradients of the compiled kernels vs the float64 reference, relative to their largest entry.
ATOL = {torch.float32: 1e-5, torch.float64: 1e-10, torch.float16: 2e-3, torch.bfloat16: 2e-3}
RTOL = {torch.float32: 1e-5, torch.float64: 1e-10, torch.float16: 2e-3, torch.bfloat16: 2e-3}
CUDA_MAX_CLASSES = 1024  # bitsets of at most 16 words live in registers/shared memory
CUDA_MAX_DIM = 1024
UNBOUNDED = (
    1 << 62
)  # num_classes while it is not known yet (inferred from the labels after the checks)


def _check_index(name: str, t: torch.Tensor, num_classes: int, values: bool = True) -> None:
    if t.dtype.is_floating_point or t.dtype.is_complex or t.dtype == torch.bool:
        raise ValueError(f"{name} must be an integer tensor, got {t.dtype}")
    if values and t.numel() and (int(t.min()) < 0 or int(t.max()) >= num_classes):
        allowed = ">= 0" if num_classes >= UNBOUNDED else f"in [0, num_classes={num_classes})"
        raise ValueError(f"{name} must be {allowed}, got range [{int(t.min())}, {int(t.max())}]")


def check_mask_inputs(
    cand: torch.Tensor, labels: torch.Tensor, kappa: int, num_classes: int, values: bool = True
) -> None:
    """Raise ``ValueError`` naming the first problem with the candidate sets; ``values=False``
    checks shapes and dtypes only (no host sync)."""
    if cand.dim() != 2 or cand.shape[1] < 1:
        raise ValueError(f"cand must be Tensor[B, κ'] with κ' >= 1, got {tuple(cand.shape)}")
    if labels.dim() != 1 or labels.shape[0] != cand.shape[0]:
        raise ValueError(f"labels must be Tensor[B={cand.shape[0]}], got {tuple(labels.shape)}")
    if not isinstance(kappa, int) or isinstance(kappa, bool) or kappa < 0:
        raise ValueError(f"kappa must be an int >= 0, got {kappa!r}")
    if kappa > cand.shape[1]:
        raise ValueError(f"kappa={kappa} exceeds the {cand.shape[1]} candidate columns of cand")
    if num_classes < 1:
        raise ValueError(f"num_classes must be >= 1, got {num_classes}")
    if labels.device != cand.device:
        raise ValueError(f"cand is on {cand.device} but labels on {labels.device}")
    _check_index("cand", candidate_columns(cand, kappa), num_classes, values)
    _check_index("labels", labels, num_classes, values)


def check_inputs(
    features, cand, labels, kappa, num_classes, temperature, base_temperature, values: bool = True
) -> None:
    """Raise ``ValueError`` naming the first problem with the arguments of ``plr_loss``;
    ``values=False`` skips the checks that read tensor values (ranges, NaN/inf: host syncs)."""
    if features.dim() != 2 or not features.dtype.is_floating_point:
        raise ValueError(
            f"features must be a floating Tensor[V*B, D], got {tuple(features.shape)} "
            f"{features.dtype}"
        )
    if cand.dim() != 2:
        raise ValueError(f"cand must be Tensor[B, κ'], got {tuple(cand.shape)}")
    batch = cand.shape[0]
    if batch < 1:
        raise ValueError(
            f"plr_loss needs at least one sample: cand has 0 rows (shape {tuple(cand.shape)})"
        )
    if features.shape[0] % batch:
        raise ValueError(f"features has {features.shape[0]} rows, not a multiple of B={batch}")
    if features.shape[0] // batch < 2:
        raise ValueError(f"need at least 2 views per sample, got V={features.shape[0] // batch}")
    if features.device != cand.device:
        raise ValueError(f"features are on {features.device} but cand on {cand.device}")
    check_mask_inputs(cand, labels, kappa, num_classes, values)
    if not temperature > 0 or not base_temperature > 0:
        raise ValueError(f"temperatures must be > 0, got {temperature}, {base_temperature}")
    if values and not bool(torch.isfinite(features).all()):
        raise ValueError("features contain NaN or inf")


if _ext.has_op(OP):

    @torch.library.register_fake(f"lnl::{OP}")
    def _plr_loss_fake(
        features, cand, labels, kappa, num_classes, temperature, base_temperature, flat
    ):
        acc = torch.promote_types(features.dtype, torch.float32)
        n = features.shape[0]
        scalar = features.new_empty((), dtype=acc)
        return (
            scalar,
            scalar.clone(),
            features.new_empty((n,), dtype=acc),
            features.new_empty((n,), dtype=torch.int32),
        )

    @torch.library.register_fake(f"lnl::{OP}_backward")
    def _plr_loss_backward_fake(
        grad,
        features,
        cand,
        labels,
        lse,
        n_neg,
        kappa,
        num_classes,
        temperature,
        base_temperature,
        flat,
    ):
        return torch.empty_like(features)

    def _setup_context(ctx, inputs, output) -> None:
        features, cand, labels, kappa, num_classes, temperature, base_temperature, flat = inputs
        _, _, lse, n_neg = output
        ctx.save_for_backward(features, cand, labels, lse, n_neg)
        ctx.args = (kappa, num_classes, temperature, base_temperature, flat)

    def _backward(ctx, grad_objective, grad_value, grad_lse, grad_n_neg):
        # Only the objective is differentiable; the wrapper detaches value and lse.
        features, cand, labels, lse, n_neg = ctx.saved_tensors
        if grad_objective is None:
            grad_objective = torch.zeros((), dtype=lse.dtype, device=lse.device)
        grad = torch.ops.lnl.plr_loss_backward(
            grad_objective, features, cand, labels, lse, n_neg, *ctx.args
        )
        return grad, None, None, None, None, None, None, None

    torch.library.register_autograd(f"lnl::{OP}", _backward, setup_context=_setup_context)

if _ext.has_op(MASK_OP):

    @torch.library.register_fake(f"lnl::{MASK_OP}")
    def _plr_mask_fake(cand, labels, kappa, num_classes):
        return cand.new_empty((cand.shape[0], cand.shape[0]), dtype=torch.int8)


def not_supported_reasons(
    backend: str, features: torch.Tensor, num_classes: int, op: str = OP
) -> list[str]:
    """Why ``backend`` cannot run these inputs (empty when it can)."""
    reasons = _dispatch.compiled_reasons(op, backend, features.device)
    if backend == "cpu" and op == OP and features.dtype not in (torch.float32, torch.float64):
        reasons.append(f"the CPU kernel takes float32/float64 features, got {features.dtype}")
    if backend == "cuda":
        if op == OP and features.dtype not in (torch.float32, torch.float16, torch.bfloat16):
            reasons.append(
                f"the CUDA kernel takes float32/float16/bfloat16 features, got {features.dtype}"
            )
        if num_classes > CUDA_MAX_CLASSES:
            reasons.append(
                f"the CUDA kernel takes num_classes <= {CUDA_MAX_CLASSES}, got {num_classes}"
            )
        if op == OP and features.shape[-1] > CUDA_MAX_DIM:
            reasons.append(f"the CUDA kernel takes D <= {CUDA_MAX_DIM}, got {features.shape[-1]}")
    return reasons


def choose_backend(
    features,
    cand,
    labels,
    num_classes,
    requested="auto",
    op: str = OP,
    call: _dispatch.Call | None = None,
) -> tuple[str, dict[str, list[str]]]:
    """The backend ``plr_loss`` (or ``plr_mask``) would use, and why each higher one was skipped
    (``call``: verify and measure, see ``_dispatch.choose``)."""
    reasons = {b: not_supported_reasons(b, features, num_classes, op) for b in _dispatch.PRIORITY}
    inputs = _dispatch.describe(features=features, cand=cand, labels=labels)
    return _dispatch.choose(op, requested, reasons, inputs, call), reasons


def _timed_step(features, cand, labels, kappa, num_classes, backend, **kw) -> None:
    """One forward and backward of ``backend`` on a detached copy (what the tuner measures)."""
    with torch.enable_grad():
        f = features.detach().requires_grad_()
        plr_loss(
            f,
            cand,
            labels,
            kappa=kappa,
            num_classes=num_classes,
            validate=False,
            backend=backend,
            **kw,
        ).backward()


def plr_mask(
    cand: torch.Tensor,
    labels: torch.Tensor,
    kappa: int,
    *,
    num_classes: int | None = None,
    backend: str = "auto",
) -> torch.Tensor:
    """PLReMix's sample-level mask, for debugging and tests (the loss never builds it).

    Args:
        cand: Tensor[B, κ'] integer top candidates of the other network (κ' >= max(κ, 1)).
        labels: Tensor[B] integer noisy labels (unused when κ = 0).
        kappa: κ >= 0 (0: top-1 only, no label).
        num_classes: C; defaults to max(used candidates, labels) + 1.
        backend: "auto", "cuda", "cpu" or "reference".

    Returns:
        Tensor[B, B] int8: +1 on the diagonal, −1 where S_i ∩ S_j = ∅, 0 elsewhere.
    """
    if num_classes is None:
        check_mask_inputs(cand, labels, kappa, UNBOUNDED)
        num_classes = default_num_classes(cand, labels, kappa)
    check_mask_inputs(cand, labels, kappa, num_classes)
    call = _dispatch.Call(
        cand.device, cand.dtype, "", 0, lambda b: None
    )  # verified, never measured
    chosen, _ = choose_backend(cand, cand, labels, num_classes, backend, op=MASK_OP, call=call)
    if chosen == "reference":
        return plr_mask_reference(cand, labels, kappa, num_classes)
    return torch.ops.lnl.plr_mask(
        cand.contiguous().long(), labels.contiguous().long(), kappa, num_classes
    )


def plr_loss(
    features: torch.Tensor,
    cand: torch.Tensor,
    labels: torch.Tensor,
    *,
    kappa: int,
    temperature: float = 1.0,
    base_temperature: float = 1.0,
    flat: bool = True,
    num_classes: int | None = None,
    return_stats: bool = False,
    validate: bool = True,
    backend: str = "auto",
) -> torch.Tensor | PlrStats:
    """PLR contrastive loss with candidate-set relaxed negatives (see the module docstring).

    Args:
        features: Tensor[V*B, D] float, L2-normalised, view-major rows; V >= 2.
        cand: Tensor[B, κ'] integer top candidates (κ' >= max(κ, 1)); columns past κ are ignored.
        labels: Tensor[B] integer noisy labels.
        kappa: κ >= 0, the scheduled top-k (0: top-1 only, no label).
        temperature: τ (PLReMix: 1.0). base_temperature: τ_b (1.0).
        flat: FlatNCE form (True, CIFAR) or SupCon form (False, Clothing1M/WebVision).
        num_classes: C; defaults to max(used candidates, labels) + 1 (one host sync).
        return_stats: also return the explicit value, per-row lse/n_neg, R and ``no_negatives``.
        validate: check label ranges and NaN/inf (reads the tensors: a host sync). Training loops
            that pass ``num_classes`` and ``validate=False`` run without any host sync.
        backend: "auto", "cuda", "cpu" or "reference" (see ``choose_backend``).

    Returns:
        The scalar loss (float32, or float64 for float64 features), or ``PlrStats``.
    """
    if num_classes is None:
        check_mask_inputs(cand, labels, kappa, UNBOUNDED)
        num_classes = default_num_classes(cand, labels, kappa)
    check_inputs(
        features, cand, labels, kappa, num_classes, temperature, base_temperature, values=validate
    )
    run = lambda b: _timed_step(
        features,
        cand,
        labels,
        kappa,
        num_classes,
        b,
        temperature=temperature,
        base_temperature=base_temperature,
        flat=flat,
    )
    shape = f"{features.dtype}|{flat}|{_tune.bucket(*features.shape, num_classes)}"
    call = _dispatch.Call(
        features.device, features.dtype, shape, 2 * features.shape[0] ** 2 * features.shape[1], run
    )
    chosen, _ = choose_backend(features, cand, labels, num_classes, backend, call=call)
    if chosen == "reference":
        return plr_loss_reference(
            features,
            cand,
            labels,
            kappa=kappa,
            temperature=temperature,
            base_temperature=base_temperature,
            flat=flat,
            num_classes=num_classes,
            return_stats=return_stats,
        )
    objective, value, lse, n_neg = torch.ops.lnl.plr_loss(
        features.contiguous(),
        cand.contiguous().long(),
        labels.contiguous().long(),
        kappa,
        num_classes,
        float(temperature),
        float(base_temperature),
        flat,
    )
    num_valid = (n_neg > 0).sum()
    if flat:  # the original's exp(v − sg(v)): value 1, gradient that of the objective
        loss = torch.where(
            num_valid > 0, torch.exp(objective - objective.detach()), torch.zeros_like(objective)
        )
    else:
        loss = objective
    if not return_stats:
        return loss
    return PlrStats(loss, value.detach(), lse.detach(), n_neg, num_valid, num_valid == 0)
