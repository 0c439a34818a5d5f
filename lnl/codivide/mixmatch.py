"""MixMatch pieces shared by DivideMix and PLReMix (DivideMix ``Train_cifar.py: train``).

Ported semantics: ``LiJunnan1992/DivideMix: Train_cifar.py @ d9d3058`` (``train``, ``SemiLoss``,
``NegEntropy``, ``linear_rampup``) and ``lxysl/PLReMix: utils/train_utils.py @ b0c4ec3``. Quirks kept (P14
in PLReMix's README): co-guessing runs the trained net in whatever mode it is in (train-mode BN, which
updates the running statistics), there is no MixMatch interleave, and L_u averages over classes.

Every function is vectorised and makes no host synchronisation except ``mixup``'s λ, which is drawn
on the host from numpy's global RNG as the originals do (it is restored on resume with the other
RNG states).
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor

RAMPUP_EPOCHS = 16


def sharpen(p: Tensor, temperature: float) -> Tensor:
    """MixMatch's sharpening ``p^(1/T) / Σ p^(1/T)``.

    Args:
        p: Tensor[B, C] probabilities.
        temperature: T (0.5 in both originals).

    Returns:
        Tensor[B, C], rows summing to 1.
    """
    pt = p ** (1.0 / temperature)
    return pt / pt.sum(dim=1, keepdim=True)


@torch.no_grad()
def co_guess(
    net: torch.nn.Module, net2: torch.nn.Module, u1: Tensor, u2: Tensor, temperature: float
) -> Tensor:
    """Co-guessed targets of unlabeled samples: the sharpened mean of both nets on two views.

    Args:
        net: the net being trained (its current mode is kept: train-mode BN, as in DivideMix).
        net2: the other net (the caller puts it in eval mode).
        u1, u2: Tensor[B, 3, H, W] two views of the unlabeled batch.
        temperature: sharpening temperature T.

    Returns:
        Tensor[B, C] float32 targets.
    """
    p = (
        net(u1).float().softmax(1)
        + net(u2).float().softmax(1)
        + net2(u1).float().softmax(1)
        + net2(u2).float().softmax(1)
    ) / 4
    return sharpen(p, temperature)


@torch.no_grad()
def co_refine(
    net: torch.nn.Module,
    x1: Tensor,
    x2: Tensor,
    labels_onehot: Tensor,
    w: Tensor,
    temperature: float,
) -> Tensor:
    """Co-refined targets of labeled samples: ``sharpen(w·onehot + (1−w)·mean(p(x1), p(x2)))``.

    Args:
        net: the net being trained (current net only, as in the originals).
        x1, x2: Tensor[B, 3, H, W] two views of the labeled batch.
        labels_onehot: Tensor[B, C] one-hot noisy labels.
        w: Tensor[B] clean probabilities from the other net's GMM.
        temperature: T.

    Returns:
        Tensor[B, C] float32 targets.
    """
    p = (net(x1).float().softmax(1) + net(x2).float().softmax(1)) / 2
    w = w.view(-1, 1).float()
    return sharpen(w * labels_onehot + (1 - w) * p, temperature)


def mixup(inputs: Tensor, targets: Tensor, alpha: float) -> tuple[Tensor, Tensor, float]:
    """MixMatch mixup over all rows: ``λ ~ Beta(α, α)``, ``λ ← max(λ, 1−λ)``, one random permutation.

    Labeled and unlabeled rows are mixed with each other, as in the originals. λ comes from numpy's
    global RNG (host side, no device sync) and the permutation from torch's RNG on the inputs' device.

    Args:
        inputs: Tensor[M, 3, H, W].
        targets: Tensor[M, C].
        alpha: α of the Beta distribution.

    Returns:
        (mixed inputs Tensor[M, 3, H, W], mixed targets Tensor[M, C], λ).
    """
    lam = float(np.random.beta(alpha, alpha))
    lam = max(lam, 1.0 - lam)
    perm = torch.randperm(inputs.shape[0], device=inputs.device)
    mixed_x = lam * inputs + (1 - lam) * inputs[perm]
    mixed_y = lam * targets + (1 - lam) * targets[perm]
    return mixed_x, mixed_y, lam


def semi_loss(
    logits_x: Tensor, targets_x: Tensor, logits_u: Tensor, targets_u: Tensor
) -> tuple[Tensor, Tensor]:
    """DivideMix's ``SemiLoss``: soft cross-entropy on labeled rows, MSE (mean over rows and classes)
    on unlabeled rows.

    Args:
        logits_x: Tensor[Bx, C]; targets_x: Tensor[Bx, C] mixed soft targets.
        logits_u: Tensor[Bu, C]; targets_u: Tensor[Bu, C].

    Returns:
        (L_x, L_u) scalars.
    """
    lx = -(F.log_softmax(logits_x.float(), dim=1) * targets_x).sum(1).mean()
    lu = ((logits_u.float().softmax(1) - targets_u) ** 2).mean()
    return lx, lu


def linear_rampup(
    current: float, warm_up: int, lambda_u: float, rampup_length: int = RAMPUP_EPOCHS
) -> float:
    """``lambda_u · clip((current − warm_up) / rampup_length, 0, 1)`` (DivideMix ``linear_rampup``)."""
    return lambda_u * float(np.clip((current - warm_up) / rampup_length, 0.0, 1.0))


def uniform_prior_penalty(logits: Tensor) -> Tensor:
    """``Σ_c π_c log(π_c / p̄_c)`` with π uniform and p̄ the batch-mean softmax (DivideMix's penalty)."""
    num_classes = logits.shape[1]
    prior = torch.full((num_classes,), 1.0 / num_classes, device=logits.device)
    pred_mean = logits.float().softmax(1).mean(0)
    return (prior * torch.log(prior / pred_mean)).sum()


def neg_entropy(logits: Tensor) -> Tensor:
    """DivideMix's ``NegEntropy`` confidence penalty: ``mean_b Σ_c p log p`` (minimising it raises
    the entropy of the predictions)."""
    p = logits.float().softmax(1)
    return (p * torch.log(p.clamp_min(1e-30))).sum(1).mean()
