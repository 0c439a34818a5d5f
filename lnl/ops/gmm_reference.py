"""Pure-PyTorch batched GMM EM mirroring ``sklearn.mixture.GaussianMixture(covariance_type="full")``.

The reference for ``lnl.ops.gmm_fit`` (``sklearn.mixture.GaussianMixture``'s EM, batched).
Problems are padded to ``Tensor[G, N, D]`` with ``lengths``; padded rows get zero responsibility.
Every statistic is computed in float64 whatever the input dtype (the compiled kernels accumulate in
float64 too); results are cast back to the input dtype. sklearn computes float32 input in float32,
so against it we agree to float32 rounding, not bit for bit.

Steps, as in sklearn (``_base.py::fit_predict``):

1. initial responsibilities (one-hot k-means or quantile labels, or given) -> ``_initialize`` M-step:
   ``N_k = sum r + 10 eps`` (eps of the input dtype), ``mu = sum r x / N_k``,
   ``Sigma = sum r (x - mu)(x - mu)^T / N_k + reg I``, ``pi = N_k / N``;
2. up to ``max_iter`` times: E-step (log N via the precision Cholesky factor, logsumexp),
   ``lower_bound = mean logsumexp``, M-step (``pi = N_k / sum N_k``); stop when ``|delta| < tol``;
3. one more E-step with the final parameters gives ``resp`` (``predict_proba``).
"""

from __future__ import annotations

import math

import numpy as np
import torch

# sklearn's KMeans defaults used by GaussianMixture(init_params="kmeans").
KMEANS_MAX_ITER = 300
KMEANS_TOL = 1e-4


def kmeans_uniforms(seed: int, n_components: int) -> np.ndarray:
    """The uniform draws sklearn's k-means++ makes from ``RandomState(seed)``, in order.

    ``random_state.choice(n, p=uniform)`` takes one draw for the first centre; each further centre
    takes ``2 + int(log(K))`` (``n_local_trials``). None of them depends on the data, so drawing them
    here and replaying the data-dependent part in any backend reproduces sklearn's choice.
    """
    trials = 2 + int(np.log(n_components))
    return np.random.RandomState(seed).random_sample(1 + (n_components - 1) * trials)


def valid_mask(lengths: torch.Tensor, n: int) -> torch.Tensor:
    """Tensor[G, N] bool: True for the first ``lengths[g]`` rows of problem g."""
    return torch.arange(n, device=lengths.device)[None, :] < lengths[:, None]


def _sqdist(x: torch.Tensor, c: torch.Tensor) -> torch.Tensor:
    """Squared distances Tensor[G, N, K] from x Tensor[G, N, D] to centres c Tensor[G, K, D]."""
    return ((x[:, :, None, :] - c[:, None, :, :]) ** 2).sum(-1)


def _kmeanspp(
    x: torch.Tensor, mask: torch.Tensor, lengths: torch.Tensor, k: int, uniforms: torch.Tensor
) -> torch.Tensor:
    """sklearn's greedy k-means++ seeding (``_kmeans_plusplus``), batched; returns centres [G, K, D]."""
    g_idx = torch.arange(x.shape[0], device=x.device)
    trials = 2 + int(math.log(k))
    # choice(n, p=1/n): the first index whose cdf (i + 1) / n exceeds u, i.e. floor(u n).
    first = torch.minimum((uniforms[:, 0] * lengths).floor().long(), lengths - 1)
    centres = [x[g_idx, first]]
    closest = _sqdist(x, centres[0][:, None])[..., 0] * mask
    pot = closest.sum(1)
    for c in range(1, k):
        rand = uniforms[:, 1 + (c - 1) * trials : 1 + c * trials] * pot[:, None]
        cand = torch.searchsorted(closest.cumsum(1), rand.contiguous())
        cand = torch.minimum(cand, (lengths - 1)[:, None])
        d_cand = _sqdist(x, x[g_idx[:, None], cand])  # [G, N, trials]
        d_cand = torch.minimum(closest[..., None], d_cand) * mask[..., None]
        cand_pot = d_cand.sum(1)
        best = cand_pot.argmin(1)  # first minimum, as np.argmin
        pot = cand_pot[g_idx, best]
        closest = d_cand[g_idx, :, best]
        centres.append(x[g_idx, cand[g_idx, best]])
    return torch.stack(centres, 1)


def kmeans_labels(
    x: torch.Tensor, lengths: torch.Tensor, n_components: int, seed: int
) -> torch.Tensor:
    """k-means labels Tensor[G, N] int64 as ``KMeans(K, n_init=1, random_state=seed)`` (Lloyd).

    Same seeding draws, Lloyd iterations with sklearn's stopping rule (labels unchanged, or total
    squared centre shift <= 1e-4 * mean per-feature variance, at most 300 iterations) and the final
    relabelling. Differences: float64 arithmetic (sklearn uses the input dtype, after centring) and an
    empty cluster keeps its previous centre (sklearn moves it to the farthest points).
    Padded rows get label 0.
    """
    xd = x.double()
    mask = valid_mask(lengths, x.shape[1])
    n = lengths.double()
    u = torch.as_tensor(kmeans_uniforms(seed, n_components), device=x.device).expand(x.shape[0], -1)
    centres = _kmeanspp(xd, mask, lengths, n_components, u)
    mean = (xd * mask[..., None]).sum(1) / n[:, None]
    var = (((xd - mean[:, None]) ** 2) * mask[..., None]).sum(1) / n[:, None]
    tol = var.mean(1) * KMEANS_TOL
    labels = torch.full(mask.shape, -1, dtype=torch.long, device=x.device)
    active = torch.ones(x.shape[0], dtype=torch.bool, device=x.device)
    strict = torch.zeros_like(active)
    for _ in range(KMEANS_MAX_ITER):
        new = _sqdist(xd, centres).argmin(-1)
        onehot = torch.nn.functional.one_hot(new, n_components).double() * mask[..., None]
        count = onehot.sum(1)
        sums = onehot.transpose(1, 2) @ xd
        moved = torch.where(count[..., None] > 0, sums / count.clamp_min(1)[..., None], centres)
        shift = ((moved - centres) ** 2).sum((1, 2))
        same = ((new == labels) | ~mask).all(1)
        labels = torch.where(active[:, None], new, labels)
        centres = torch.where(active[:, None, None], moved, centres)
        strict |= active & same
        active &= ~same & (shift > tol)
        if not bool(active.any()):
            break
    final = _sqdist(xd, centres).argmin(-1)  # relabel with the final centres unless strict
    labels = torch.where(strict[:, None], labels, final)
    return torch.where(mask, labels, torch.zeros_like(labels))


def quantile_labels(x: torch.Tensor, lengths: torch.Tensor, n_components: int) -> torch.Tensor:
    """Deterministic labels Tensor[G, N]: nearest of K per-feature quantile centres.

    Centre k takes, per feature, the quantile at ``linspace(0.1, 0.9, K)[k]`` of the problem's
    values (the 10th and 90th percentiles for K = 2). Ties go to the lower component.
    """
    xd = x.double()
    mask = valid_mask(lengths, x.shape[1])
    levels = torch.linspace(0.1, 0.9, n_components, dtype=torch.float64, device=x.device)
    centres = []
    for g in range(x.shape[0]):  # ragged problems: torch.quantile has no mask
        centres.append(torch.quantile(xd[g, : int(lengths[g])], levels, dim=0))
    labels = _sqdist(xd, torch.stack(centres)).argmin(-1)
    return torch.where(mask, labels, torch.zeros_like(labels))


def m_step(
    x: torch.Tensor,
    resp: torch.Tensor,
    reg_covar: float,
    eps: float,
    n: torch.Tensor,
    initial: bool,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """sklearn's ``_estimate_gaussian_parameters`` (full) on float64 x [G,N,D], resp [G,N,K] (0 on padding).

    Returns weights [G,K] (``N_k / N`` when ``initial`` as ``_initialize``, else ``N_k / sum N_k``),
    means [G,K,D] and covariances [G,K,D,D].
    """
    nk = resp.sum(1) + 10 * eps
    means = resp.transpose(1, 2) @ x / nk[..., None]
    diff = x[:, None] - means[:, :, None]  # [G, K, N, D]
    covs = (resp.transpose(1, 2)[..., None] * diff).transpose(2, 3) @ diff / nk[..., None, None]
    covs = covs + reg_covar * torch.eye(x.shape[-1], dtype=x.dtype, device=x.device)
    weights = nk / n[:, None] if initial else nk / nk.sum(1, keepdim=True)
    return weights, means, covs


def precision_cholesky(covs: torch.Tensor) -> torch.Tensor:
    """Upper factor U with U U^T = inv(Sigma), as sklearn's ``_compute_precision_cholesky``.

    Raises:
        ValueError: a covariance is not positive definite (collapsed component with reg_covar = 0).
    """
    chol, info = torch.linalg.cholesky_ex(covs)
    if bool((info > 0).any()):
        g, k = (info > 0).nonzero()[0].tolist()
        raise ValueError(
            f"gmm_fit: problem {g}, component {k} has an ill-defined (not positive definite) covariance, "
            "e.g. a collapsed component; increase reg_covar"
        )
    eye = torch.eye(covs.shape[-1], dtype=covs.dtype, device=covs.device).expand_as(covs)
    return torch.linalg.solve_triangular(chol, eye, upper=False).transpose(-1, -2)


def e_step(
    x: torch.Tensor,
    mask: torch.Tensor,
    weights: torch.Tensor,
    means: torch.Tensor,
    covs: torch.Tensor,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Responsibilities [G,N,K] (0 on padding) and the mean log-likelihood [G] for float64 inputs."""
    prec = precision_cholesky(covs)  # [G, K, D, D]
    y = (
        torch.einsum("gnd,gkde->gkne", x, prec)
        - torch.einsum("gkd,gkde->gke", means, prec)[:, :, None]
    )
    log_det = torch.diagonal(prec, dim1=-2, dim2=-1).log().sum(-1)  # [G, K]
    d = x.shape[-1]
    log_prob = -0.5 * (d * math.log(2 * math.pi) + (y**2).sum(-1)) + log_det[..., None]  # [G, K, N]
    weighted = log_prob.transpose(1, 2) + weights.log()[:, None, :]
    norm = torch.logsumexp(weighted, -1)  # [G, N]
    resp = (weighted - norm[..., None]).exp() * mask[..., None]
    lower_bound = (norm * mask).sum(1) / mask.sum(1)
    return resp, lower_bound


def em(
    x: torch.Tensor,
    lengths: torch.Tensor,
    params: tuple,
    *,
    max_iter: int,
    tol: float,
    reg_covar: float,
    eps: float,
) -> tuple:
    """Runs EM from initial (weights, means, covs); returns (weights, means, covs, resp, lb, n_iter, conv).

    Each problem stops on its own at sklearn's rule ``|lb - lb_prev| < tol``; its parameters then stay
    frozen while the others go on.
    """
    xd = x.double()
    mask = valid_mask(lengths, x.shape[1])
    n = lengths.double()
    weights, means, covs = (p.double() for p in params)
    g = x.shape[0]
    lower_bound = torch.full((g,), -math.inf, dtype=torch.float64, device=x.device)
    n_iter = torch.zeros(g, dtype=torch.long, device=x.device)
    active = torch.ones(g, dtype=torch.bool, device=x.device)
    converged = torch.zeros_like(active)
    for it in range(1, max_iter + 1):
        resp, lb = e_step(xd, mask, weights, means, covs)
        new = m_step(xd, resp, reg_covar, eps, n, initial=False)
        weights, means, covs = (
            torch.where(active.view(-1, *[1] * (p.dim() - 1)), q, p)
            for p, q in zip((weights, means, covs), new)
        )
        done = active & ((lb - lower_bound).abs() < tol)
        lower_bound = torch.where(active, lb, lower_bound)
        n_iter = torch.where(active, torch.full_like(n_iter, it), n_iter)
        converged |= done
        active &= ~done
        if not bool(active.any()):
            break
    resp, _ = e_step(xd, mask, weights, means, covs)
    return weights, means, covs, resp, lower_bound, n_iter, converged


def initial_params(
    x: torch.Tensor, lengths: torch.Tensor, resp: torch.Tensor, reg_covar: float, eps: float
) -> tuple:
    """sklearn's ``_initialize``: an M-step (weights = N_k / N) from initial responsibilities [G,N,K]."""
    mask = valid_mask(lengths, x.shape[1])
    return m_step(
        x.double(), resp.double() * mask[..., None], reg_covar, eps, lengths.double(), initial=True
    )
