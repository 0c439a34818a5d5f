"""LRA-Diffusion's model pieces (``model_diffusion.py``, ``utils/``): the cosine noise schedule, DDIM,
the timestep-gated denoiser, the diffusion image encoder, label retrieval from a kNN graph, one
training step and the evaluation. Re-implemented from a reading of
``puar-playground/LRA-diffusion @ 231e587`` (``model_diffusion.py``, ``utils/diffusion_utils.py``,
``utils/knn_utils.py``, ``utils/learning.py``); no code is copied.

Quirks kept by default (each has a flag, README): DDIM starts from y = 0 and returns y_{τ_0−1}, not
ŷ_0 (issue #2); the prediction is the class whose output is closest to 1; the CIFAR/Food image
encoder is random, untrained and left in train-mode BatchNorm at test time (A.9.2, A.9.16); the
query's own noisy label is among its k nearest neighbours when the query is a database row (A.9.9).
Fixed unconditionally: DDIM step counts whose timesteps index past T (A.9.11) lose that entry.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn as nn
import torch.nn.functional as F

from lnl.ops import knn_graph, knn_labels

NUM_TIMESTEPS = 1000
COSINE_S, MAX_BETA = 0.008, 0.999

# ----------------------------------------------------------------------------------------------------
# Noise schedule and DDIM
# ----------------------------------------------------------------------------------------------------


def cosine_betas(num_timesteps: int = NUM_TIMESTEPS) -> torch.Tensor:
    """Nichol & Dhariwal's cosine schedule, β_i = min(1 − f(i+1)/f(i), 0.999) with
    f(i) = cos²((i/T + s)/(1 + s)·π/2), s = 0.008. Computed in float64: Tensor[T]."""
    i = torch.arange(num_timesteps + 1, dtype=torch.float64)
    f = torch.cos((i / num_timesteps + COSINE_S) / (1 + COSINE_S) * math.pi / 2) ** 2
    return (1 - f[1:] / f[:-1]).clamp(max=MAX_BETA)


@dataclass
class Schedule:
    """ᾱ and its square roots (float32 on ``device``; the original stores them in float32 too)."""

    alphas_cumprod: torch.Tensor  # Tensor[T]

    @classmethod
    def cosine(
        cls, num_timesteps: int = NUM_TIMESTEPS, device: torch.device | str = "cpu"
    ) -> Schedule:
        # β rounded to float32 first, then 1 − β and the cumulative product in float32, as the original
        # (model_diffusion.py: Diffusion.__init__); a float64 product differs in the last bits
        return cls(torch.cumprod(1 - cosine_betas(num_timesteps).float(), 0).to(device))

    @property
    def num_timesteps(self) -> int:
        return self.alphas_cumprod.shape[0]

    def q_sample(self, y0: torch.Tensor, t: torch.Tensor, noise: torch.Tensor) -> torch.Tensor:
        """y_t = √ᾱ_t·y_0 + √(1−ᾱ_t)·ε (zero prior mean: the original always passes fq_x=None)."""
        a = self.alphas_cumprod[t].unsqueeze(1)
        return a.sqrt() * y0 + (1 - a).sqrt() * noise


def ddim_timesteps(
    num_steps: int, num_timesteps: int = NUM_TIMESTEPS, exact: bool = False
) -> list[int]:
    """The DDIM timesteps τ_0 < … < τ_{S'-1}.

    Original (``exact=False``): stride c = T // S, τ = {0, c, 2c, …} + 1. Entries equal to T (which
    crash the original: S ∈ {3, 9, 27, 36, 37, 101–111, 251–333, 501–1000}) are dropped, and a
    non-divisor S gives ⌈T/c⌉ steps, as the original silently does (A.9.11).
    ``exact=True`` (``--fix_ddim_steps``): exactly S evenly spaced steps ending at T − 1,
    τ_i = (i + 1)·T // S − 1.

    Raises:
        ValueError: ``num_steps`` outside [1, T].
    """
    if not 1 <= num_steps <= num_timesteps:
        raise ValueError(
            f"--ddim_n_step {num_steps} must be in [1, {num_timesteps}] (T = {num_timesteps})"
        )
    if exact:
        return [(i + 1) * num_timesteps // num_steps - 1 for i in range(num_steps)]
    stride = num_timesteps // num_steps
    return [t + 1 for t in range(0, num_timesteps, stride) if t + 1 < num_timesteps]


def ddim_step(
    y: torch.Tensor, eps: torch.Tensor, a_t: torch.Tensor | float, a_prev: torch.Tensor | float
) -> tuple[torch.Tensor, torch.Tensor]:
    """One deterministic (η = 0) DDIM step: ŷ_0 = (y − √(1−a_t)·ε̂)/√a_t and
    y_prev = √a_prev·ŷ_0 + √(1−a_prev)·ε̂. Returns (y_prev, ŷ_0)."""
    a_t, a_prev = torch.as_tensor(a_t, dtype=y.dtype), torch.as_tensor(a_prev, dtype=y.dtype)
    y0_hat = (y - (1 - a_t).sqrt() * eps) / a_t.sqrt()
    return a_prev.sqrt() * y0_hat + (1 - a_prev).sqrt() * eps, y0_hat


@torch.no_grad()
def ddim_sample(
    denoiser: nn.Module,
    x_embed: torch.Tensor,
    fp: torch.Tensor,
    schedule: Schedule,
    timesteps: list[int],
    num_classes: int,
    return_y0: bool = False,
) -> torch.Tensor:
    """Decode labels from y = 0 ("mean start", the original's ``stochastic=False``).

    Step i (from the largest τ down) uses a_t = ᾱ[τ_i] and a_prev = ᾱ[τ_{i−1}], ᾱ[0] for the last.

    Returns:
        Tensor[B, C]: the final y (original) or the last ŷ_0 (``return_y0``, issue #2).
    """
    ab = schedule.alphas_cumprod
    # The original draws y_T = 0·N(0, I) on the CPU and a σ_t = 0 noise per step on the device
    # (diffusion_utils.py: ddim_sample_loop, ddim_sample_step); the draws are kept so that the global
    # generator after an evaluation is where the original leaves it.
    torch.randn(x_embed.shape[0], num_classes)
    y = torch.zeros(x_embed.shape[0], num_classes, device=x_embed.device)
    y0_hat = y
    for i in reversed(range(len(timesteps))):
        t = torch.full((y.shape[0],), timesteps[i], device=y.device, dtype=torch.long)
        eps = denoiser(x_embed, y, t, fp).float()
        torch.randn_like(y)
        a_prev = ab[timesteps[i - 1]] if i > 0 else ab[0]
        y, y0_hat = ddim_step(y, eps, ab[timesteps[i]], a_prev)
    return y0_hat if return_y0 else y


def antithetic_timesteps(n: int, num_timesteps: int, device: torch.device | str) -> torch.Tensor:
    """⌊n/2⌋+1 draws t ~ U{0..T−1}, concatenated with T−1−t, truncated to n. Drawn from the CPU
    generator and moved, as the original (``torch.randint(...).to(device)``, train_CIFAR.py)."""
    t = torch.randint(0, num_timesteps, (n // 2 + 1,)).to(device)
    return torch.cat([t, num_timesteps - 1 - t])[:n]


def predict(y: torch.Tensor, rule: str = "closest_to_one") -> torch.Tensor:
    """The class of a decoded label: closest to 1 (``cnt_agree``: argmax softmax(−(y − 1)²)) or argmax."""
    if rule == "argmax":
        return y.argmax(1)
    return (y - 1).square().argmin(1)


# ----------------------------------------------------------------------------------------------------
# Networks
# ----------------------------------------------------------------------------------------------------


class ConditionalLinear(nn.Module):
    """Linear(x) ⊙ γ_t, with γ an ``Embedding(T + 1, out)`` initialised U(0, 1)."""

    def __init__(self, num_in: int, num_out: int, num_timesteps: int):
        super().__init__()
        self.lin = nn.Linear(num_in, num_out)
        self.embed = nn.Embedding(num_timesteps + 1, num_out)
        nn.init.uniform_(self.embed.weight)

    def forward(self, x: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        return self.embed(t) * self.lin(x)


class Denoiser(nn.Module):
    """ε_θ(E(x), y_t, t, f_p(x)) (model_diffusion.py): [y_t ‖ f_p] → F, gated by BN(E(x)), two more timestep-scaled
    layers, each followed by BN and softplus, then Linear(F → C)."""

    def __init__(
        self, num_classes: int, fp_dim: int, feature_dim: int, num_timesteps: int = NUM_TIMESTEPS
    ):
        super().__init__()
        self.norm = nn.BatchNorm1d(feature_dim)
        self.lin1 = ConditionalLinear(num_classes + fp_dim, feature_dim, num_timesteps)
        self.norm1 = nn.BatchNorm1d(feature_dim)
        self.lin2 = ConditionalLinear(feature_dim, feature_dim, num_timesteps)
        self.norm2 = nn.BatchNorm1d(feature_dim)
        self.lin3 = ConditionalLinear(feature_dim, feature_dim, num_timesteps)
        self.norm3 = nn.BatchNorm1d(feature_dim)
        self.lin4 = nn.Linear(feature_dim, num_classes)

    def forward(
        self, x_embed: torch.Tensor, y_t: torch.Tensor, t: torch.Tensor, fp: torch.Tensor
    ) -> torch.Tensor:
        h = F.softplus(self.norm1(self.lin1(torch.cat([y_t, fp], dim=-1), t)))
        h = self.norm(x_embed) * h  # the only place the image encoder enters
        h = F.softplus(self.norm2(self.lin2(h, t)))
        h = F.softplus(self.norm3(self.lin3(h, t)))
        return self.lin4(h)


class CifarPool(nn.Module):
    """The original's ``F.avg_pool2d(out, 4)`` on the 4×4 map of a 32×32 input (``ResNet_for_32.py``;
    same summation order, so the same bits); a global average on other sizes (the original fails there)."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.avg_pool2d(x, 4) if x.shape[-2:] == (4, 4) else F.adaptive_avg_pool2d(x, 1)


def cifar_resnet(base: str, feature_dim: int, torchvision_init: bool = False) -> nn.Module:
    """The original's ``ResNet_for_32`` (kuangliu's CIFAR ResNet) as a torchvision ResNet: 3×3 stride-1
    stem, no max-pool, linear head to F.

    Initialisation: PyTorch's default of each layer, drawn in the original's construction order (its
    ``initialize_weights`` is never called), so a seed gives the original's weights and leaves the
    generator where the original leaves it. ``torchvision_init`` (``--torchvision_init``): torchvision's
    Kaiming-normal convolutions instead.
    """
    import torchvision

    with torch.random.fork_rng(devices=[]):  # the skeleton's own init draws are discarded
        net = getattr(torchvision.models, base)(weights=None)
        net.conv1 = nn.Conv2d(3, 64, 3, 1, 1, bias=False)
        net.fc = nn.Linear(net.fc.in_features, feature_dim)
    net.maxpool = nn.Identity()
    net.avgpool = CifarPool()
    if torchvision_init:
        for m in net.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
        return net
    for m in net.modules():  # registration order = the original's creation order
        if isinstance(m, (nn.Conv2d, nn.Linear, nn.BatchNorm2d)):
            m.reset_parameters()
    return net


def build_image_encoder(
    name: str, feature_dim: int, weights: str = "none", torchvision_init: bool = False
) -> nn.Module:
    """The diffusion image encoder E with a ``feature_dim`` output (``--diff_encoder``).

    * ``resnet18/34/50``: the original's ``ResNet_for_32`` (:func:`cifar_resnet`), PyTorch's default
      init (``torchvision_init``: torchvision's).
    * ``resnet18_l/34_l/50_l``: ImageNet ResNet with avgpool → Linear(·→512) → Linear(512→F), no
      nonlinearity between (``ResNet_for_224``); ``weights`` is a torchvision tag (the original
      loads ImageNet weights) or ``none``.
    * ``linear``: a linear map of the image average-pooled to 16×16 (the original had a linear
      encoder option before 2023-05-02); cheap, for CPU runs.
    * any other name: an ``lnl.models`` model built with ``num_classes=F`` (``small_cnn``).
    """
    import torchvision

    if name == "linear":
        return nn.Sequential(
            nn.AdaptiveAvgPool2d(16), nn.Flatten(), nn.Linear(3 * 16 * 16, feature_dim)
        )

    base = name[:-2] if name.endswith("_l") else name
    if base in ("resnet18", "resnet34", "resnet50") and name.endswith("_l"):
        tag = None if weights.lower() == "none" else weights
        net = getattr(torchvision.models, base)(weights=tag)
        net.fc = nn.Sequential(nn.Linear(net.fc.in_features, 512), nn.Linear(512, feature_dim))
        return net
    if base in ("resnet18", "resnet34", "resnet50"):
        return cifar_resnet(base, feature_dim, torchvision_init)
    from lnl.models import create_model

    return create_model(name, num_classes=feature_dim)


# ----------------------------------------------------------------------------------------------------
# Label retrieval
# ----------------------------------------------------------------------------------------------------


def neighbour_candidates(
    features: torch.Tensor,
    labels: torch.Tensor,
    k: int,
    num_classes: int,
    *,
    metric: str = "l2",
    exclude_self: bool = False,
    layout: str = "own_last",
    backend: str = "auto",
) -> torch.Tensor:
    """The retrieval table: each sample's k nearest neighbours' noisy labels plus its own.

    ``layout="own_last"`` (``sample_knn_labels``: CIFAR, Clothing1M, WebVision): the k nearest (the
    sample itself first, so its label appears twice), then the own label in column k.
    ``layout="food"`` (Food-101N's ``prepare_knn``): the k + 1 nearest, self first; no extra column.
    ``exclude_self=True`` (``--exclude_self``): k *other* samples (``lnl.ops.knn_graph``) then the own
    label, whatever the layout. The column order matters: the draw picks a column by index.

    Returns:
        Tensor[N, k + 1] int64.
    """
    if exclude_self:
        res = knn_graph(
            features, labels, k, num_classes=num_classes, metric=metric, backend=backend
        )
    elif layout == "food":
        res = knn_labels(
            features, features, labels, k + 1, num_classes, metric=metric, backend=backend
        )
        return labels[res.indices]
    else:
        res = knn_labels(features, features, labels, k, num_classes, metric=metric, backend=backend)
    return torch.cat([labels[res.indices], labels.unsqueeze(1)], dim=1)


def batch_candidates(
    queries: torch.Tensor,
    positions: torch.Tensor,
    db: torch.Tensor,
    db_labels: torch.Tensor,
    k: int,
    num_classes: int,
    *,
    metric: str = "l2",
    exclude_self: bool = False,
    layout: str = "own_last",
    backend: str = "auto",
) -> torch.Tensor:
    """``--knn_per_batch``: search the batch's queries against the database every step, as the
    original's ``sample_knn_labels``; returns the same Tensor[B, k + 1] as the table rows."""
    if layout == "food" and not exclude_self:
        return db_labels[
            knn_labels(
                queries, db, db_labels, k + 1, num_classes, metric=metric, backend=backend
            ).indices
        ]
    extra = 1 if exclude_self else 0
    idx = knn_labels(
        queries, db, db_labels, k + extra, num_classes, metric=metric, backend=backend
    ).indices
    if exclude_self:  # drop the query's own row (if found), keep the first k others
        is_self = idx == positions.unsqueeze(1)
        order = torch.sort(is_self.to(torch.int8), dim=1, stable=True).indices
        idx = torch.gather(idx, 1, order)[:, :k]
    return torch.cat([db_labels[idx], db_labels[positions].unsqueeze(1)], dim=1)


def sample_retrieved(
    candidates: torch.Tensor, num_classes: int, weighted: bool
) -> tuple[torch.Tensor, torch.Tensor]:
    """Draw one of the k + 1 candidates per row uniformly (global CPU generator) and weight the sample.

    Weights: n_i / Σ_j n_j with n_i the number of candidates equal to the drawn label (``weighted``,
    CIFAR and Food), else 1/B (Clothing1M, WebVision).

    Returns:
        (labels Tensor[B] int64, weights Tensor[B] float32 summing to 1).
    """
    b, width = candidates.shape
    # the CPU generator, as sample_knn_labels / knn_labels (utils/knn_utils.py) on any device
    pick = torch.randint(0, width, (b,)).to(candidates.device)
    drawn = candidates.gather(1, pick.unsqueeze(1)).squeeze(1)
    if weighted:
        counts = (candidates == drawn.unsqueeze(1)).sum(1).float()
        return drawn, counts / counts.sum()
    return drawn, torch.full((b,), 1.0 / b, device=candidates.device)


def vote_accuracy(
    queries: torch.Tensor,
    db: torch.Tensor,
    db_labels: torch.Tensor,
    targets: torch.Tensor,
    k: int,
    num_classes: int,
    metric: str = "l2",
    backend: str = "auto",
) -> float:
    """Reference: accuracy of the majority vote of the k nearest training samples' noisy labels."""
    votes = knn_labels(queries, db, db_labels, k, num_classes, metric=metric, backend=backend).votes
    return float((votes.argmax(1) == targets.to(votes.device)).float().mean())


# ----------------------------------------------------------------------------------------------------
# Training and evaluation
# ----------------------------------------------------------------------------------------------------


def learning_rate(epoch: float, warmup: float, horizon: float, peak: float = 1e-3) -> float:
    """``adjust_learning_rate``: linear warm-up to ``peak`` over ``warmup`` epochs, then half-cosine to
    0 at ``horizon`` epochs (CIFAR's hard-coded 1000 keeps it near the peak for 200 epochs, A.9.5)."""
    if epoch < warmup:
        return peak * epoch / warmup
    return peak * 0.5 * (1.0 + math.cos(math.pi * (epoch - warmup) / max(horizon - warmup, 1e-12)))


def diffusion_loss(
    denoiser: nn.Module,
    x_embed: torch.Tensor,
    fp: torch.Tensor,
    y0: torch.Tensor,
    weights: torch.Tensor,
    schedule: Schedule,
) -> torch.Tensor:
    """Σ_i w_i · mean_c (ε_ic − ε̂_ic)² at antithetic timesteps (the original's matmul then mean)."""
    t = antithetic_timesteps(y0.shape[0], schedule.num_timesteps, y0.device)
    noise = torch.randn_like(y0)
    eps_hat = denoiser(x_embed, schedule.q_sample(y0, t, noise), t, fp).float()
    with torch.autocast(y0.device.type, enabled=False):  # the weighted sum in float32 under --amp
        return (weights.float() @ (noise.float() - eps_hat).square()).mean()
