"""IEG's pieces besides the meta step (``ieg/models/``, ``ieg/dataset_utils/``): dataset-name parsing, noise, the
class-balanced probe split, networks and their weight decay, the cosine-restart LR schedule, step-indexed
batches with weak/strong views, the unsupervised losses (label guessing, MixUp, KL consistency), and
the replica helpers (identical start, summed gradients: MirroredStrategy's semantics).

Everything random in a step is drawn from generators seeded by ``(seed, step)``, so a run resumed at
step ``s`` sees exactly the batches and draws an uninterrupted run saw.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F
from torch import Tensor

from lnl.data import augment as A
from lnl.data.noise import make_noise
from lnl.data.noise_files import NoisyLabels, save_noise_file
from lnl.models import create_model
from methods.ieg.augment import tf_autoaugment, tf_randaugment

NOISE_KINDS = ("uniform", "asymmetric")
AUG_TYPES = ("autoaug", "randaug", "default")
METHODS = ("ieg", "l2r", "supervised")
LR_SCHEDULES = ("cosine", "custom_step", "cosine_warmup", "exponential", "cosine_one")
SHARPEN_T = 0.5  # hard-coded in the original, as K = 2 views, MixUp β = 0.5 and the epsilons below
LOGIT_NORM_EPS = 1e-8
CUTOUT = 16
WEAK_PAD, STRONG_PAD = 2, 4  # pixels of padding per side before the random crop of each view


# ----------------------------------------------------------------------------------------------
# Dataset names, noise and the probe split


@dataclass(frozen=True)
class DatasetName:
    """``<base>_<uniform|asymmetric>_<ratio>`` (e.g. ``cifar100_uniform_0.8``) or
    ``webvisionmini[_<probe images per class>]`` (alias ``webvision``, lnl's dataset name; real noise;
    ``probe_per_class`` defaults to 10)."""

    base: str
    noise: str | None
    ratio: float
    probe_per_class: int = 10

    @property
    def noise_tag(self) -> str:
        return f"{self.noise}{self.ratio:g}" if self.noise else "real"


def parse_dataset(name: str, known_bases: tuple[str, ...]) -> DatasetName:
    """Parse ``--dataset``.

    Raises:
        ValueError: the string does not follow the schema, names an unknown base dataset, a ratio
            outside [0, 1], or asymmetric noise on a dataset without IEG's class map (CIFAR-10 only).
    """
    web = re.fullmatch(r"webvision(?:mini)?(?:_(\d+))?", name)  # lnl's name `webvision` is an alias
    if web:
        per_class = int(web.group(1) or 10)
        if per_class < 1:
            raise ValueError(f"--dataset {name!r}: needs at least one probe image per class")
        return DatasetName("webvisionmini", None, 0.0, per_class)
    m = re.fullmatch(r"([a-z0-9_]+?)_(uniform|asymmetric)_([0-9.]+)", name)
    if m is None:
        raise ValueError(
            f"--dataset {name!r}: expected <dataset>_<uniform|asymmetric>_<ratio> "
            f"(e.g. cifar100_uniform_0.8) or webvisionmini"
        )
    base, noise, ratio = m.group(1), m.group(2), float(m.group(3))
    if base not in known_bases:
        raise ValueError(
            f"--dataset {name!r}: unknown dataset {base!r}; known: {', '.join(known_bases)}"
        )
    if not 0.0 <= ratio <= 1.0:
        raise ValueError(f"--dataset {name!r}: noise ratio {ratio} is outside [0, 1]")
    if noise == "asymmetric" and base != "cifar10":
        raise ValueError(f"--dataset {name!r}: asymmetric noise is defined for cifar10 only")
    return DatasetName(base, noise, ratio)


def probe_split(
    clean: np.ndarray, ratio: float, num_classes: int, rng: np.random.RandomState
) -> tuple[np.ndarray, np.ndarray]:
    """Hold out ``floor(N·ratio) // C`` clean images per class as the probe set.

    Returns:
        ``(probe, train)``: probe indices class-interleaved ``[c0, c1, …, c_{C-1}, c0, …]`` (never
        shuffled later, so a probe batch of B holds B/C images per class when C | B) and the
        remaining indices, sorted.

    Raises:
        ValueError: the ratio leaves fewer than one image per class, or a class has too few images.
    """
    n_probe = int(math.floor(len(clean) * ratio))
    per_class = n_probe // num_classes
    if per_class < 1:
        need = num_classes / len(clean)
        raise ValueError(
            f"--probe_dataset_hold_ratio {ratio}: {len(clean)}·{ratio} = {n_probe} probe "
            f"images for {num_classes} classes; need at least one per class "
            f"(ratio >= {need:.4g})"
        )
    chosen = []
    for c in range(num_classes):
        members = np.flatnonzero(clean == c)
        if len(members) <= per_class:
            raise ValueError(f"class {c} has {len(members)} images, cannot hold out {per_class}")
        chosen.append(rng.choice(members, per_class, replace=False))
    probe = np.stack(chosen, axis=1).reshape(-1)  # row j holds the j-th pick of every class
    train = np.setdiff1d(np.arange(len(clean)), probe)
    return probe.astype(np.int64), train.astype(np.int64)


def uniform_noise(
    clean: np.ndarray, ratio: float, num_classes: int, rng: np.random.RandomState
) -> np.ndarray:
    """IEG's ``uniform_r``: each label independently, with probability r (``rand <= r``), is redrawn
    uniformly from **all** C classes (the true one included): corruption ≈ r·(1 − 1/C)."""
    flip = rng.rand(len(clean)) <= ratio
    drawn = rng.randint(0, num_classes, len(clean))
    return np.where(flip, drawn, clean).astype(np.int64)


def make_ieg_labels(
    clean: np.ndarray, name: DatasetName, probe_ratio: float, num_classes: int, seed: int
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Probe split first (from the clean labels), then noise on the rest, both from ``seed``.

    Returns:
        ``(labels, probe, train)``: ``labels`` Tensor-like ``[N]`` with noisy labels on the train rows
        and the clean labels on the probe rows; ``probe``/``train`` as :func:`probe_split`.
    """
    rng = np.random.RandomState(seed)
    probe, train = probe_split(clean, probe_ratio, num_classes, rng)
    labels = clean.copy()
    if name.noise == "uniform":
        labels[train] = uniform_noise(clean[train], name.ratio, num_classes, rng)
    elif name.noise == "asymmetric":
        noisy = make_noise(
            clean[train],
            "asym",
            name.ratio,
            num_classes=num_classes,
            seed=seed,
            dataset="cifar10",
            asym_procedure="per_sample",
        )
        labels[train] = noisy.labels.numpy()
    return labels, probe, train


def file_ieg_labels(
    clean: np.ndarray, noisy: np.ndarray, probe_ratio: float, num_classes: int, seed: int
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """``--noise_file``: the file's labels on the train rows, the probe drawn as :func:`make_ieg_labels`
    draws it (the same rows for the same seed) and given its clean labels back.

    Returns:
        ``(labels, probe, train)`` as :func:`make_ieg_labels`.
    """
    probe, train = probe_split(clean, probe_ratio, num_classes, np.random.RandomState(seed))
    labels = noisy.astype(np.int64).copy()
    labels[probe] = clean[probe]
    return labels, probe, train


def subset_ieg_labels(
    clean: np.ndarray, labels: np.ndarray, n: int, probe_ratio: float, num_classes: int, seed: int
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """``--subset n``: the first ``n`` rows of the whole split's :func:`make_ieg_labels`, with the probe
    re-drawn class-balanced from within them.

    The labels come from the whole split, so a kept train image has the label the full run gives it.
    The full run's probe mostly lies beyond row ``n``, hence the new probe (``floor(n·ratio) // C`` per
    class); its rows get their clean labels back, as the probe is clean by definition.

    Returns:
        ``(labels, probe, train)`` over the ``n`` kept rows, as :func:`make_ieg_labels`.

    Raises:
        ValueError: ``n·probe_ratio`` leaves no probe image for some class.
    """
    n_probe = int(math.floor(n * probe_ratio))
    if n_probe // num_classes < 1:
        raise ValueError(
            f"--subset {n} with --probe_dataset_hold_ratio {probe_ratio}: {n}·{probe_ratio} = "
            f"{n_probe} probe images for {num_classes} classes; need at least one per class "
            f"(raise --subset or the ratio)"
        )
    clean, labels = clean[:n], labels[:n].copy()
    probe, train = probe_split(clean, probe_ratio, num_classes, np.random.RandomState(seed))
    labels[probe] = clean[probe]
    return labels, probe, train


def save_labels(
    out: Path,
    clean: np.ndarray,
    labels: np.ndarray,
    probe: np.ndarray,
    name: DatasetName,
    seed: int,
    subset: int | None = None,
    noise_file: str | None = None,
) -> None:
    """``noisy_labels.npz`` (lnl format, all N rows; probe rows clean) and ``probe_indices.npy``.
    With ``subset`` the files cover only the first ``subset`` images, and the meta says so."""
    meta = {
        "type": f"ieg_{name.noise}",
        "rate": name.ratio,
        "seed": seed,
        "actual_noise_rate": float((labels != clean).mean()),
        "probe_size": int(len(probe)),
        "procedure": "probe split then per-example noise, np.random.RandomState(seed)",
    }
    if noise_file:
        meta.update(
            type="file",
            rate=None,
            noise_file=str(noise_file),
            procedure="probe split from np.random.RandomState(seed), the file's labels elsewhere",
        )
    if subset:
        meta["subset"] = subset
    save_noise_file(out / "noisy_labels.npz", NoisyLabels(torch.from_numpy(labels), meta))
    np.save(out / "probe_indices.npy", probe)


# ----------------------------------------------------------------------------------------------
# Networks and weight decay


@dataclass(frozen=True)
class NetSpec:
    """A ``--network_name``: the registry model, its L2 gradient coefficient and scope, and the
    weight decay of the probe loss in the meta step (``net.wd`` of the original)."""

    model: str
    decay: float
    scope: str  # "all" parameters or only conv/linear "kernels"
    probe_decay: float


NETWORKS = {
    "wrn28-10": NetSpec("wrn28_10", 5e-4, "all", 5e-4),
    "resnet29": NetSpec("resnet29", 2e-4, "kernels", 1e-4),
    "resnet50": NetSpec(
        "resnet50_v2", 4e-4, "all", 4e-4
    ),  # TF-official ResNet-50 v2; decay: --l2_weight_decay
    "small_cnn": NetSpec("small_cnn", 5e-4, "all", 5e-4),  # lnl's CPU network for digits runs
}


def build_network(name: str, num_classes: int, faithful_resnet29: bool = True) -> nn.Module:
    if name not in NETWORKS:
        raise ValueError(f"--network_name {name!r}: unknown; choose from {', '.join(NETWORKS)}")
    kwargs = {"faithful": faithful_resnet29} if name == "resnet29" else {}
    return create_model(NETWORKS[name].model, num_classes=num_classes, **kwargs)


def decayed(params: dict[str, Tensor], scope: str) -> list[str]:
    """Names of the parameters the L2 term covers (``kernels``: conv/linear weights, ndim > 1)."""
    return [n for n, p in params.items() if scope == "all" or p.ndim > 1]


def l2_term(params: dict[str, Tensor], names: list[str], coefficient: float) -> Tensor:
    """``coefficient/2 · Σ‖p‖²`` over ``names`` (its gradient is ``coefficient·p``)."""
    if not names or coefficient == 0:
        return torch.zeros(())
    return 0.5 * coefficient * torch.stack([params[n].pow(2).sum() for n in names]).sum()


def sgd_groups(model: nn.Module, spec: NetSpec, decay: float) -> list[dict]:
    """SGD parameter groups whose ``weight_decay`` reproduces the network's L2 term."""
    params = dict(model.named_parameters())
    on = set(decayed(params, spec.scope))
    groups = [
        {"params": [p for n, p in params.items() if n in on], "weight_decay": decay},
        {"params": [p for n, p in params.items() if n not in on], "weight_decay": 0.0},
    ]
    return [g for g in groups if g["params"]]


# ----------------------------------------------------------------------------------------------
# Learning rate


def cosine_restarts_lr(
    step: int, lr0: float, first_period: int, t_mul: float, m_mul: float
) -> float:
    """TF ``cosine_decay_restarts`` with ``alpha=0``: cycle k lasts ``P0·t_mul^k`` steps, peaks at
    ``lr0·m_mul^k`` and decays to 0 by a half cosine. In float32 as TF computes it, so that a step on
    a cycle boundary falls on the side TF's rounding puts it."""
    f32 = np.float32
    fraction = f32(step) / f32(first_period)
    t, m = f32(t_mul), f32(m_mul)
    if t_mul == 1.0:
        k = np.floor(fraction)
        fraction = fraction - k
    else:
        k = np.floor(np.log(f32(1.0) - fraction * (f32(1.0) - t)) / np.log(t))
        done = (f32(1.0) - t**k) / (f32(1.0) - t)
        fraction = (fraction - done) / t**k
    return float(f32(lr0) * (f32(0.5) * m**k * (f32(1.0) + np.cos(f32(math.pi) * fraction))))


def cycle_ends(first_period: int, t_mul: float, until: int) -> set[int]:
    """Steps (1-based, as ``done``) at which the original evaluates a cosine-cycle end, up to ``until``.

    TF's ``time_for_evaluation`` (basemodel.py) accumulates **rounded** periods: the next period is
    ``round(period·t_mul)`` (Python's half-to-even), the end the running total. With P0 = 500 that is
    500, 1250, 2375, … 193,682 (exact ends would give 193,620). Step 1, which the original flags
    too, is left out: it is evaluated anyway and ends no cycle.
    """
    ends, total, period = set(), 0, int(first_period)
    while total + period <= until:
        total += period
        ends.add(total)
        period = round(period * t_mul)
    return ends


def custom_step_lr(step: int, lr0: float, boundaries: list[int], rate: float) -> float:
    """``--lr_schedule custom_step``: TF sets ``lr0·rate^(k+1)`` before running iteration ``b_k``
    (1-based), i.e. from the 0-based ``step = b_k − 1`` on (basemodel.py ``update_learning_rate``)."""
    return lr0 * rate ** sum(step + 1 >= b for b in boundaries)


def exponential_lr(step: int, lr0: float, period: int) -> float:
    """``--lr_schedule exponential``: TF ``exponential_decay(lr0, step, period, 0.9, staircase=True)``."""
    return float(np.float32(lr0) * np.float32(0.9) ** np.float32(step // period))


def cosine_one_lr(step: int, lr0: float, total: int) -> float:
    """``--lr_schedule cosine_one``: TF ``cosine_decay(lr0, step, total)``, one half cosine to 0."""
    f32 = np.float32
    fraction = f32(min(step, total)) / f32(total)
    return float(f32(lr0) * (f32(0.5) * (f32(1.0) + np.cos(f32(math.pi) * fraction))))


def warmup_cosine_lr(
    step: int, lr0: float, first_period: int, t_mul: float, m_mul: float, warmup: int
) -> float:
    """``--lr_schedule cosine_warmup``: ``lr0·step/warmup`` below ``warmup`` steps, then the cosine
    restarts on ``step − warmup`` (basemodel.py ``set_lr_schedule``)."""
    if step < warmup:
        return float(np.float32(lr0 / warmup) * np.float32(step))
    return cosine_restarts_lr(step - warmup, lr0, first_period, t_mul, m_mul)


# ----------------------------------------------------------------------------------------------
# Batches


def step_generator(device: torch.device, *words: int) -> torch.Generator:
    """A generator seeded from a tuple of non-negative ints (numpy ``SeedSequence`` hashing)."""
    state = np.random.SeedSequence([int(w) & 0xFFFFFFFF for w in words]).generate_state(2)
    seed = ((int(state[0]) << 31) ^ int(state[1])) & ((1 << 63) - 1)
    return torch.Generator(device=device).manual_seed(seed)


class StepOrder:
    """The train and probe indices of step ``s`` as a pure function of ``(seed, s, rank)``.

    Train rows are drawn without replacement within an epoch of ``len(train) // (B·W)`` steps (W:
    world size); rank r takes the r-th slice of B. Probe batches walk the fixed class-interleaved
    order cyclically, as the original's repeated probe dataset does.
    """

    def __init__(
        self,
        train: np.ndarray,
        probe: np.ndarray,
        batch_size: int,
        device: torch.device,
        seed: int,
        rank: int = 0,
        world: int = 1,
    ):
        self.train = torch.as_tensor(train, device=device)
        self.probe = torch.as_tensor(probe, device=device)
        self.batch, self.device, self.seed, self.rank, self.world = (
            batch_size,
            device,
            seed,
            rank,
            world,
        )
        self.steps_per_epoch = len(train) // (batch_size * world)
        if self.steps_per_epoch < 1:
            raise ValueError(
                f"--batch_size {batch_size} × {world} replicas exceeds the {len(train)} "
                f"training images"
            )
        self._order: tuple[int, Tensor] | None = None

    def _epoch_order(self, epoch: int) -> Tensor:
        if self._order is None or self._order[0] != epoch:
            g = step_generator(self.device, self.seed, 1, epoch)
            perm = torch.randperm(len(self.train), device=self.device, generator=g)
            self._order = (epoch, self.train[perm])
        return self._order[1]

    def train_indices(self, step: int) -> Tensor:
        order = self._epoch_order(step // self.steps_per_epoch)
        start = ((step % self.steps_per_epoch) * self.world + self.rank) * self.batch
        return order[start : start + self.batch]

    def probe_indices(self, step: int) -> Tensor:
        start = (step * self.world + self.rank) * self.batch
        pos = torch.arange(start, start + self.batch, device=self.device) % len(self.probe)
        return self.probe[pos]


class StepBatches(StepOrder):
    """In-memory images (CIFAR, digits): :class:`StepOrder`'s indices, augmented on the device.
    Images stay uint8 on the device. ``flip`` False: the views never mirror (the dataset's ``flip``:
    digits16), with the same random draws."""

    def __init__(
        self,
        images: Tensor,
        labels: Tensor,
        train: np.ndarray,
        probe: np.ndarray,
        batch_size: int,
        mean,
        std,
        device: torch.device,
        seed: int,
        aug_type: str,
        rank: int = 0,
        world: int = 1,
        flip: bool = True,
    ):
        if aug_type not in AUG_TYPES:
            raise ValueError(f"--aug_type {aug_type!r}: choose from {', '.join(AUG_TYPES)}")
        super().__init__(train, probe, batch_size, device, seed, rank, world)
        self.images = images.to(device).permute(0, 3, 1, 2).contiguous()
        self.labels = labels.to(device)
        self.mean, self.std, self.aug_type, self.flip = mean, std, aug_type, flip

    def get(self, step: int, strong: bool) -> dict[str, Tensor]:
        """``xw``/``y``/``idx`` (train), ``xp``/``yp`` (probe) and, if ``strong``, ``xs``."""
        g = step_generator(self.device, self.seed, 2, step, self.rank)
        idx, pidx = self.train_indices(step), self.probe_indices(step)
        raw = weak_crop_flip(self.images.index_select(0, idx), g, self.flip)
        out = {
            "xw": A.normalize(raw, self.mean, self.std),
            "y": self.labels[idx],
            "idx": idx,
            "xp": self.weak(self.images.index_select(0, pidx), g),
            "yp": self.labels[pidx],
        }
        if strong:
            out["xs"] = self.strong(raw, g)
        return out

    def strong(self, weak_raw: Tensor, g: torch.Generator) -> Tensor:
        """The original's strong view, applied to the weak view: the TF policy (``methods/ieg/augment.py``:
        95 CIFAR sub-policies per image, or RandAugment's ops shared by the batch), pad-crop (grey), flip,
        then Cutout 16×16 (zero in normalised units: the mean colour, like the original's grey)."""
        if self.aug_type == "default":
            return self.weak(weak_raw, g)
        policy = tf_autoaugment if self.aug_type == "autoaug" else tf_randaugment
        x = strong_crop_flip(policy(weak_raw, g, fill=128), g, fill=128, flip=self.flip)
        return cutout(A.normalize(x, self.mean, self.std), CUTOUT, g)

    def weak(self, raw: Tensor, g: torch.Generator) -> Tensor:
        """Pad-crop (zero padding) and flip, then normalise: Tensor[B, 3, H, W] float."""
        return A.normalize(weak_crop_flip(raw, g, self.flip), self.mean, self.std)


def _crop_offsets(
    b: int, count: int, device: torch.device, g: torch.Generator
) -> tuple[Tensor, Tensor, Tensor]:
    """Per-image crop offsets uniform in ``[0, count)`` (rows, columns) and flips with probability ½."""
    top = torch.randint(0, count, (b,), device=device, generator=g)
    left = torch.randint(0, count, (b,), device=device, generator=g)
    return top, left, torch.rand(b, device=device, generator=g) < 0.5


def weak_crop_flip(images: Tensor, g: torch.Generator, flip: bool = True) -> Tensor:
    """The train/probe view of TF's ``cifar_process`` (dataset_utils/utils.py): zero-pad to H+4
    (``resize_image_with_crop_or_pad`` to 36: 2 px per side), random H×W crop (offsets 0..4, shifts
    ±2 px), random flip (drawn either way; applied if ``flip``). uint8 Tensor[B, 3, H, W]."""
    top, left, flips = _crop_offsets(images.shape[0], 2 * WEAK_PAD + 1, images.device, g)
    return A.crop_flip(images, top, left, flips & flip, WEAK_PAD)


def strong_crop_flip(images: Tensor, g: torch.Generator, fill: int, flip: bool = True) -> Tensor:
    """The strong view's ``zero_pad_and_crop(img, 4)`` then ``random_flip``
    (augmentation_transforms.py): 4 px of ``fill`` per side, offsets ``np.random.randint(0, 8)``,
    i.e. 0..7 (shifts −4..+3: the high end is exclusive); the flip as in :func:`weak_crop_flip`."""
    top, left, flips = _crop_offsets(images.shape[0], 2 * STRONG_PAD, images.device, g)
    return A.crop_flip(images, top, left, flips & flip, STRONG_PAD, fill)


def cutout(x: Tensor, size: int, g: torch.Generator) -> Tensor:
    """Zero a ``size``×``size`` square per image, centre uniform over the image, clipped at borders."""
    b, _, h, w = x.shape
    cy = torch.randint(0, h, (b, 1, 1), device=x.device, generator=g)
    cx = torch.randint(0, w, (b, 1, 1), device=x.device, generator=g)
    rows = torch.arange(h, device=x.device).view(1, h, 1)
    cols = torch.arange(w, device=x.device).view(1, 1, w)
    half = size // 2
    inside = (rows >= cy - half) & (rows < cy + half) & (cols >= cx - half) & (cols < cx + half)
    return x * (~inside).unsqueeze(1).to(x.dtype)


# ----------------------------------------------------------------------------------------------
# Losses


def chunk_norm(logits: Tensor) -> Tensor:
    """``z / sqrt(mean(z²) + 1e-8)`` with the mean over the whole chunk (B×C), not per row."""
    return logits / torch.sqrt(logits.pow(2).mean() + LOGIT_NORM_EPS)


def guess_label(z_weak: Tensor, z_strong: Tensor, detach: bool) -> Tensor:
    """Pseudo-label g from K = 2 views: mean softmax of the chunk-normalised logits, sharpened with
    T = 0.5. The original keeps its gradient (``detach=False``)."""
    q = 0.5 * (F.softmax(chunk_norm(z_weak), -1) + F.softmax(chunk_norm(z_strong), -1))
    sharp = q.pow(1.0 / SHARPEN_T)
    g = sharp / sharp.sum(-1, keepdim=True)
    return g.detach() if detach else g


def mixup_draws(
    n_probe: int, b: int, device: torch.device, g: torch.Generator
) -> tuple[Tensor, Tensor, Tensor]:
    """MixUp's random draws: B probe rows with replacement, the 3B mixing coefficients
    ``m = max(u²/2, 1 − u²/2)`` (u ~ U(0, 1): custom_ops.py ``MixMode`` with β = 0.5) and the partner
    permutation of the 3B rows."""
    pick = torch.randint(0, n_probe, (b,), device=device, generator=g)
    m = mixup_coefficient(torch.rand(3 * b, device=device, generator=g))
    return pick, m, torch.randperm(3 * b, device=device, generator=g)


def mixup_coefficient(u: Tensor) -> Tensor:
    """``max(u²/2, 1 − u²/2)``: custom_ops.py's "approximate Beta" ``u^(1/β)/2`` with β = 0.5."""
    return torch.maximum(u.pow(2) / 2, 1 - u.pow(2) / 2)


def mixup_batch(
    xp: Tensor, yp_onehot: Tensor, xw: Tensor, xs: Tensor, pseudo: Tensor, g: torch.Generator
) -> tuple[Tensor, Tensor]:
    """MixUp over probe ∪ weak ∪ strong (3B rows), targets stop-gradient: each row mixes with its
    permutation partner at ``m`` ∈ [0.5, 1] (:func:`mixup_draws`)."""
    pick, m, perm = mixup_draws(xp.shape[0], xw.shape[0], xw.device, g)
    x = torch.cat([xp[pick], xw, xs])
    t = torch.cat([yp_onehot[pick], pseudo, pseudo]).detach()
    mx = m.view(-1, 1, 1, 1)
    return mx * x + (1 - mx) * x[perm], m.view(-1, 1) * t + (1 - m.view(-1, 1)) * t[perm]


def mixup_loss(logits: Tensor, targets: Tensor, ce_factor: float) -> Tensor:
    """Mean soft CE on the probe third plus ``ce_factor`` × mean soft CE on the rest; each third's
    logits are chunk-normalised separately."""
    parts = logits.chunk(3)
    normed = torch.cat([chunk_norm(p) for p in parts])
    ce = -(targets * F.log_softmax(normed, -1)).sum(-1)
    b = parts[0].shape[0]
    return ce[:b].mean() + ce_factor * ce[b:].mean()


def consistency_loss(z_weak: Tensor, z_strong: Tensor, factor: float) -> Tensor:
    """``factor · mean_i KL(softmax(sg(z_i)) ‖ softmax(ẑ_i))`` (no logit norm)."""
    q = F.softmax(z_weak.detach(), -1)
    kl = (q * (F.log_softmax(z_weak.detach(), -1) - F.log_softmax(z_strong, -1))).sum(-1)
    return factor * kl.mean()


# ----------------------------------------------------------------------------------------------
# Flags and replicas
