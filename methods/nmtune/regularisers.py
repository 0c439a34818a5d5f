"""NMTune's three feature regularisers (original ``src/models/nml_tune.py``) and its objective, with a
Gram-matrix path for ``N < D``. All take ``Tensor[N, D]`` features of both views stacked
(``N = 2B``).

Upstream: ``Hhhhhhao/Noisy-Model-Learning @ f249dce`` (``src/models/nml_tune.py``); an independent
re-implementation.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor

SVD_TOPK = 5  # hard-coded in the original (``s[:5]``)
_EIG_FLOOR = 1e-12  # relative floor of Gram eigenvalues before the square root


def mse_consistency_loss(z_strong: Tensor, f_weak: Tensor) -> Tensor:
    """Mean over ``B·D`` of ``(Z_s/‖Z_s‖ − sg(F_w)/‖F_w‖)²``: strong-view MLP features pulled to the
    weak view's pre-trained features (row-wise L2 normalisation, ``nn.MSELoss`` mean reduction)."""
    return F.mse_loss(F.normalize(z_strong, dim=1), F.normalize(f_weak.detach(), dim=1))


def covariance_loss(z: Tensor, use_gram: bool | None = None) -> Tensor:
    """VICReg covariance term ``Σ_{i≠j} Cov_ij² / D`` with ``Cov = Z_cᵀZ_c / (N−1)``.

    Args:
        z: ``Tensor[N, D]``.
        use_gram: compute ``‖Cov‖²_F`` as ``‖Z_c Z_cᵀ‖²_F`` (an ``N×N`` matrix, no ``D×D`` one);
            default when ``N < D``.

    Returns:
        A scalar tensor.
    """
    n, d = z.shape
    zc = z - z.mean(dim=0)
    use_gram = n < d if use_gram is None else use_gram
    gram = zc @ zc.T if use_gram else zc.T @ zc  # same Frobenius norm: ‖AᵀA‖_F = ‖AAᵀ‖_F
    diagonal = zc.pow(2).sum(dim=0)  # diag(Z_cᵀZ_c), D values
    return (gram.pow(2).sum() - diagonal.pow(2).sum()) / ((n - 1) ** 2 * d)


def singular_values(z: Tensor, use_gram: bool | None = None) -> Tensor:
    """Singular values of ``z`` in descending order.

    Args:
        z: ``Tensor[N, D]``.
        use_gram: take ``sqrt(eigvalsh(Z Zᵀ))`` (float64, an ``N×N`` eigensolve) instead of
            ``svdvals``; default when ``N < D``. Only ``min(N, D)`` values are returned either way.

    Returns:
        ``Tensor[min(N, D)]`` of ``z``'s dtype (the Gram path's extra zero values are dropped).
    """
    n, d = z.shape
    if not (n < d if use_gram is None else use_gram):
        return torch.linalg.svdvals(z)
    # float64: squaring the singular values squares the condition number (fp32 would lose the
    # small ones that enter Σσ); also the safe choice under autocast.
    zd = z.double()
    eig = torch.linalg.eigvalsh(zd @ zd.T).flip(0)[: min(n, d)]
    floor = eig[0].detach().clamp_min(1e-300) * _EIG_FLOOR
    return eig.clamp_min(floor).sqrt().to(z.dtype)


def top_singular_share(z: Tensor, k: int = SVD_TOPK, use_gram: bool | None = None) -> Tensor:
    """``mean(ŝ_1..ŝ_k)`` with ``ŝ = σ/Σσ`` of the **uncentred** ``z``; NMTune *subtracts* it."""
    s = singular_values(z, use_gram)
    return (s / s.sum())[:k].mean()


@dataclass(frozen=True)
class LossWeights:
    mse: float = 1.0
    cov: float = 0.04
    svd: float = 0.001


def nmtune_objective(
    feats: Tensor, z: Tensor, logits: Tensor, labels: Tensor, w: LossWeights
) -> tuple[Tensor, dict[str, Tensor]]:
    """``L = CE + w_mse·L_MSE + w_cov·L_COV − w_svd·mean(ŝ_1..5)`` (README weights 1, 0.04, 0.001).

    Args:
        feats: ``Tensor[2B, D]`` pre-trained features ``[F_w; F_s]``.
        z: ``Tensor[2B, D]`` MLP outputs ``[Z_w; Z_s]``.
        logits: ``Tensor[2B, C]`` head outputs on ``z``.
        labels: ``Tensor[B]`` (duplicated for the two views).
        w: loss weights; a zero weight skips its term, as in the original.

    Returns:
        ``(loss, parts)``; ``parts`` holds the detached terms (``ce``, ``mse``, ``cov``, ``svd``).
    """
    b = labels.shape[0]
    ce = F.cross_entropy(logits, torch.cat([labels, labels]))
    loss, parts = ce, {"ce": ce.detach()}
    if w.mse:
        parts["mse"] = mse_consistency_loss(z[b:], feats[:b])
        loss = loss + w.mse * parts["mse"]
    if w.svd:
        parts["svd"] = top_singular_share(z)
        loss = loss - w.svd * parts["svd"]
    if w.cov:
        parts["cov"] = covariance_loss(z)
        loss = loss + w.cov * parts["cov"]
    return loss, {k: v.detach() for k, v in parts.items()}
