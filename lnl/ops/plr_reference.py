"""Pure-PyTorch reference of PLReMix's PLR loss (dense masks, as the original builds them).

Follows PLReMix ``utils/train_utils.py: build_mask_step`` (candidate sets and the sample-level mask)
and ``losses/losses.py: PLRLoss`` (the
loss over view-major rows). It materialises the B×C candidate one-hot, the B×B overlap matrix and
several (V·B)² tensors, like ``lxysl/PLReMix: losses/losses.py`` — it is the semantic anchor of
``lnl.ops.plr`` and the "dense PyTorch formulation" the benchmark compares against.
"""

from __future__ import annotations

from typing import NamedTuple

import torch
import torch.nn.functional as F


class PlrStats(NamedTuple):
    """What ``plr_loss(..., return_stats=True)`` returns (everything but ``loss`` is detached).

    loss: the training loss (flat: identically 1 when a row has a negative, else 0).
    value: the explicit value to log. Flat: the FlatNCE/InfoNCE-equivalent value
        (1/R) Σ_a log(1 + Σ_{n∈N(a)} exp((s_an − Σ_{p∈P(a)} s_ap)/τ)); non-flat: the loss.
    lse: Tensor[V·B] per-row log-sum-exp of s/τ over the allowed columns (flat: N(a), −inf when
        N(a) is empty; non-flat: P(a) ∪ N(a)).
    n_neg: Tensor[V·B] int32, |N(a)|, the negative columns of each row.
    num_valid: int64 scalar, R = the number of rows with at least one negative.
    no_negatives: bool scalar, R == 0 (the flat loss is then 0 instead of the original's NaN).
    """

    loss: torch.Tensor
    value: torch.Tensor
    lse: torch.Tensor
    n_neg: torch.Tensor
    num_valid: torch.Tensor
    no_negatives: torch.Tensor


def candidate_columns(cand: torch.Tensor, kappa: int) -> torch.Tensor:
    """The used candidate columns: Tensor[B, κ] for κ ≥ 1, Tensor[B, 1] (the top-1) for κ = 0."""
    return cand[:, : max(kappa, 1)]


def candidate_onehot(
    cand: torch.Tensor, labels: torch.Tensor, kappa: int, num_classes: int
) -> torch.Tensor:
    """T[B, C] float32 with T_ic = 1[c ∈ S_i]: top-κ ∪ {label} (κ ≥ 1) or {top-1} (κ = 0)."""
    used = candidate_columns(cand, kappa).long()
    onehot = torch.zeros(cand.shape[0], num_classes, dtype=torch.float32, device=cand.device)
    onehot.scatter_(1, used, 1.0)
    if kappa >= 1:
        onehot.scatter_(1, labels.long().view(-1, 1), 1.0)
    return onehot


def plr_mask_reference(
    cand: torch.Tensor, labels: torch.Tensor, kappa: int, num_classes: int | None = None
) -> torch.Tensor:
    """Sample-level mask Tensor[B, B] int8: +1 on the diagonal, −1 for disjoint sets, 0 otherwise."""
    if num_classes is None:
        num_classes = default_num_classes(cand, labels, kappa)
    onehot = candidate_onehot(cand, labels, kappa, num_classes)
    overlap = onehot @ onehot.T  # counts of shared classes, exact in float32 for C < 2^24
    mask = torch.where(overlap == 0, -1, 0).to(torch.int8)
    mask.fill_diagonal_(1)
    return mask


def default_num_classes(cand: torch.Tensor, labels: torch.Tensor, kappa: int) -> int:
    """max(used candidates, labels) + 1: the smallest C the inputs fit in (synchronises once)."""
    used = candidate_columns(cand, kappa)
    top = int(used.max()) if used.numel() else 0
    if labels.numel():
        top = max(top, int(labels.max()))
    return top + 1


def _dense_sets(mask: torch.Tensor, views: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Positive and negative column sets Tensor[N, N] bool from the sample mask, view-major."""
    tiled = mask.repeat(views, views)
    eye = torch.eye(tiled.shape[0], dtype=torch.bool, device=mask.device)
    return (tiled == 1) & ~eye, tiled == -1


def _dense_rows(features, cand, labels, kappa, num_classes, temperature, flat):
    """Per-row (lse, Σ_p s_ap/τ, |N(a)|, |P(a)|) from dense (V·B)² masks, differentiable."""
    dtype = torch.promote_types(features.dtype, torch.float32)
    f = features.to(dtype)
    views = f.shape[0] // cand.shape[0]
    pos, neg = _dense_sets(plr_mask_reference(cand, labels, kappa, num_classes), views)
    sim = (f @ f.T) / temperature
    allowed = neg if flat else pos | neg
    ninf = torch.tensor(float("-inf"), dtype=dtype, device=f.device)
    # Rows with no allowed column get lse = −inf; their gradient is masked off by the callers.
    lse = torch.logsumexp(torch.where(allowed, sim, ninf), dim=1)
    return lse, (sim * pos).sum(1), neg.sum(1).to(torch.int32), pos.sum(1)


def plr_terms_reference(
    features, cand, labels, kappa, num_classes, temperature, base_temperature, flat
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """(objective, value, lse, n_neg) as the compiled op ``lnl::plr_loss`` returns them.

    The objective is the quantity whose gradient is the loss's: flat, (1/R) Σ_valid v_a (0 when
    R = 0); non-flat, the SupCon-style loss itself. Computes in at least float32.
    """
    lse, pos_sum, n_neg, n_pos = _dense_rows(
        features, cand, labels, kappa, num_classes, temperature, flat
    )
    if flat:
        valid = n_neg > 0
        count = valid.sum().clamp_min(1).to(lse.dtype)
        v = torch.where(valid, lse - pos_sum, torch.zeros_like(lse))
        objective = (v * valid).sum() / count
        value = (F.softplus(v) * valid).sum() / count
        return objective, value.detach(), lse.detach(), n_neg
    mean_log_prob_pos = pos_sum / n_pos - lse
    loss = -(temperature / base_temperature) * mean_log_prob_pos.mean()
    return loss, loss.detach(), lse.detach(), n_neg


def plr_loss_reference(
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
    backend: str = "reference",
):
    """Dense PyTorch PLR loss; same signature and results as ``lnl.ops.plr_loss``.

    The flat loss is written as the original does, the mean over valid rows of exp(v_a − sg(v_a)),
    except that R = 0 gives 0 (not NaN) and sets ``no_negatives``. Inputs are not validated here.
    """
    del backend  # the reference is the reference
    if num_classes is None:
        num_classes = default_num_classes(cand, labels, kappa)
    if not flat:
        loss, value, lse, n_neg = plr_terms_reference(
            features, cand, labels, kappa, num_classes, temperature, base_temperature, flat
        )
    else:
        lse, pos_sum, n_neg, _ = _dense_rows(
            features, cand, labels, kappa, num_classes, temperature, flat
        )
        valid = n_neg > 0
        count = valid.sum().clamp_min(1).to(lse.dtype)
        v = torch.where(valid, lse - pos_sum, torch.zeros_like(lse))
        loss = (torch.exp(v - v.detach()) * valid).sum() / count
        value = ((F.softplus(v) * valid).sum() / count).detach()
        lse = lse.detach()
    if not return_stats:
        return loss
    num_valid = (n_neg > 0).sum()
    return PlrStats(loss, value, lse, n_neg, num_valid, num_valid == 0)
