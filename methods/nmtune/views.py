"""Batched, on-device preprocessing of NMTune's downstream images (spec ``ieg_nmtune.md`` B4, B11):
RandomResizedCrop / flip / resize-centre-crop as one ``affine_grid`` resample, RandAugment(3, 5) for
``--use-weak-strong``, per-epoch generators, batch order and the per-step cosine LR.
"""

from __future__ import annotations

import functools
import math

import torch
import torch.nn.functional as F
from torch import Tensor

from methods.nmtune.encoders import Preprocess


def _sample(images: Tensor, theta: Tensor, size: int, prep: Preprocess) -> Tensor:
    """Resample ``images`` (uint8 ``[B, 3, H, W]``) through per-sample affine maps to ``size²``."""
    grid = F.affine_grid(theta, [images.shape[0], 3, size, size], align_corners=False)
    out = F.grid_sample(images.float(), grid, mode=prep.interpolation, padding_mode="border",
                        align_corners=False)
    return out.clamp_(0, 255)


def _normalize(x255: Tensor, prep: Preprocess) -> Tensor:
    mean, std = _mean_std_255(tuple(prep.mean), tuple(prep.std), x255.device)
    return (x255 - mean) / std


# Built once per device: a host-to-device copy waits for the GPU's queue, so making these per batch
# would stall every step.
@functools.lru_cache(maxsize=None)
def _mean_std_255(mean: tuple[float, ...], std: tuple[float, ...], device: torch.device) -> tuple[Tensor, Tensor]:
    return (torch.tensor(mean, device=device).view(1, 3, 1, 1) * 255,
            torch.tensor(std, device=device).view(1, 3, 1, 1) * 255)


def val_view(images: Tensor, prep: Preprocess) -> Tensor:
    """``Resize(ceil(S/crop_pct)) + CenterCrop(S) + Normalize`` as one resampling.

    Args:
        images: ``Tensor[B, 3, H, W]`` uint8.

    Returns:
        ``Tensor[B, 3, S, S]`` float32, normalised.
    """
    b, _, h, w = images.shape
    s = prep.input_size
    resized = math.ceil(s / prep.crop_pct)
    # The crop covers S/resized of the short side after the short side is scaled to `resized`.
    frac = s / resized * min(h, w)
    theta = torch.zeros(b, 2, 3, device=images.device)
    theta[:, 0, 0], theta[:, 1, 1] = frac / w, frac / h
    return _normalize(_sample(images, theta, s, prep), prep)


def train_view(images: Tensor, prep: Preprocess, generator: torch.Generator,
               randaug: bool = False) -> Tensor:
    """``RandomResizedCrop(S, scale) + RandomHorizontalFlip (+ RandAugment(3, 5)) + Normalize``.

    Area fraction uniform in ``prep.scale``, aspect ratio log-uniform in (3/4, 4/3); like
    torchvision, up to 10 draws per image until the crop fits, else the whole image. With
    ``randaug`` the strong view gets RandAugment(3, 5) after the crop, as the original inserts
    it; the original flips after RandAugment, here the flip is part of the crop, which gives the
    same distribution (every RandAugment op commutes with a mirror up to its random sign).

    Args:
        images: ``Tensor[B, 3, H, W]`` uint8.
        generator: random source on ``images.device``.

    Returns:
        ``Tensor[B, 3, S, S]`` float32, normalised.
    """
    b, _, h, w = images.shape
    dev = images.device

    def uniform(lo: float, hi: float, *shape: int) -> Tensor:
        return lo + (hi - lo) * torch.rand(*shape, b, device=dev, generator=generator)

    area = uniform(*prep.scale, 10)
    ratio = torch.exp(uniform(math.log(3 / 4), math.log(4 / 3), 10))
    fw = torch.sqrt(area * ratio) * math.sqrt(h / w)  # crop width / image width
    fh = torch.sqrt(area / ratio) * math.sqrt(w / h)
    fits = (fw <= 1) & (fh <= 1)
    first = fits.int().argmax(0, keepdim=True)  # first draw that fits (0 when none does)
    whole = ~fits.any(0)
    fw = torch.where(whole, 1.0, fw.gather(0, first)[0])
    fh = torch.where(whole, 1.0, fh.gather(0, first)[0])
    flip = torch.where(torch.rand(b, device=dev, generator=generator) < 0.5, -1.0, 1.0)
    theta = torch.zeros(b, 2, 3, device=dev)
    theta[:, 0, 0], theta[:, 1, 1] = fw * flip, fh
    theta[:, 0, 2], theta[:, 1, 2] = uniform(-1, 1) * (1 - fw), uniform(-1, 1) * (1 - fh)
    x = _sample(images, theta, prep.input_size, prep)
    if randaug:
        from lnl.data.autoaugment import rand_augment

        x = rand_augment(x.round().to(torch.uint8), generator, num_ops=3, magnitude=5).float()
    return _normalize(x, prep)


def epoch_generator(device: torch.device, seed: int, epoch: int) -> torch.Generator:
    """The generator of epoch ``epoch``: order and augmentations depend on ``(seed, epoch)`` only,
    so a resumed run sees the batches an uninterrupted one saw."""
    from lnl.data.gpu import epoch_seed

    return torch.Generator(device=device).manual_seed(epoch_seed(seed, epoch))


def batches(n: int, batch_size: int, generator: torch.Generator) -> list[Tensor]:
    """A shuffled partition of ``range(n)`` into batches (last one short; ``drop_last=False``)."""
    return list(torch.randperm(n, device=generator.device, generator=generator).split(batch_size))


def cosine_lr(step: int, base_lr: float, warmup: int, total: int) -> float:
    """The original's per-step schedule: linear warmup, then ``0.5·(1+cos(π·e/E))·lr``."""
    if step < warmup:
        return base_lr * (step + 1) / warmup
    e, es = step - warmup, max(total - warmup, 1)
    return 0.5 * (1 + math.cos(math.pi * e / es)) * base_lr


def set_lr(optimizer: torch.optim.Optimizer, lr: float) -> None:
    for group in optimizer.param_groups:
        group["lr"] = lr
