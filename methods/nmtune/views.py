"""Preprocessing of NMTune's downstream images (original ``src/finetune.py``), per-epoch
generators, batch order and the per-step cosine LR.

Default: the original's pipeline, torchvision's transforms on PIL images one by one (bicubic PIL
resampling, rounded to uint8 before ``ToTensor``/``Normalize``), with the crop boxes drawn as
torchvision's ``RandomResizedCrop.get_params`` draws them, from the epoch's generator.
``--fast-preprocess``: each view is one float ``affine_grid``/``grid_sample`` over the batch on the
device (continuous crop offsets, no uint8 rounding, no antialiasing when shrinking).
RandAugment(3, 5) for ``--use-weak-strong`` runs on the uint8 crops in both.
"""

from __future__ import annotations

import functools
import math

import numpy as np
import torch
import torch.nn.functional as F
import torchvision.transforms.functional as TF
from PIL import Image
from torch import Tensor
from torchvision.transforms import InterpolationMode

from methods.nmtune.encoders import Preprocess


def _sample(images: Tensor, theta: Tensor, size: int, prep: Preprocess) -> Tensor:
    """Resample ``images`` (uint8 ``[B, 3, H, W]``) through per-sample affine maps to ``size²``."""
    grid = F.affine_grid(theta, [images.shape[0], 3, size, size], align_corners=False)
    out = F.grid_sample(
        images.float(), grid, mode=prep.interpolation, padding_mode="border", align_corners=False
    )
    return out.clamp_(0, 255)


def _normalize(x255: Tensor, prep: Preprocess) -> Tensor:
    mean, std = _mean_std_255(tuple(prep.mean), tuple(prep.std), x255.device)
    return (x255 - mean) / std


# Built once per device: a host-to-device copy waits for the GPU's queue, so making these per batch
# would stall every step.
@functools.cache
def _mean_std_255(
    mean: tuple[float, ...], std: tuple[float, ...], device: torch.device
) -> tuple[Tensor, Tensor]:
    return (
        torch.tensor(mean, device=device).view(1, 3, 1, 1) * 255,
        torch.tensor(std, device=device).view(1, 3, 1, 1) * 255,
    )


def fast_val_view(images: Tensor, prep: Preprocess) -> Tensor:
    """``--fast-preprocess``: ``Resize(ceil(S/crop_pct)) + CenterCrop(S) + Normalize`` as one resampling.

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


def fast_train_view(
    images: Tensor, prep: Preprocess, generator: torch.Generator, randaug: bool = False
) -> Tensor:
    """``--fast-preprocess``: ``RandomResizedCrop(S, scale) + RandomHorizontalFlip (+ RandAugment(3, 5))
    + Normalize`` as one resampling.

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
    if not prep.hflip:
        flip = torch.ones_like(flip)
    theta = torch.zeros(b, 2, 3, device=dev)
    theta[:, 0, 0], theta[:, 1, 1] = fw * flip, fh
    theta[:, 0, 2], theta[:, 1, 2] = uniform(-1, 1) * (1 - fw), uniform(-1, 1) * (1 - fh)
    x = _sample(images, theta, prep.input_size, prep)
    if randaug:
        from lnl.data.autoaugment import rand_augment

        x = rand_augment(x.round().to(torch.uint8), generator, num_ops=3, magnitude=5).float()
    return _normalize(x, prep)


# ------------------------------------------------------------------ the original's PIL pipeline
_PIL_MODES = {"bicubic": InterpolationMode.BICUBIC, "bilinear": InterpolationMode.BILINEAR}


def _pil(image: Tensor) -> Image.Image:
    """A uint8 ``[3, H, W]`` tensor as an RGB PIL image."""
    return Image.fromarray(image.permute(1, 2, 0).cpu().numpy())


def _to_tensor_normalize(pils: list, prep: Preprocess, device: torch.device) -> Tensor:
    """``ToTensor() + Normalize(mean, std)`` of a list of PIL images, in torchvision's float32 order."""
    x = torch.from_numpy(np.stack([np.asarray(p) for p in pils])).to(device).permute(0, 3, 1, 2)
    return _unit_normalize(x.float().div(255), prep)


def _unit_normalize(x01: Tensor, prep: Preprocess) -> Tensor:
    mean = torch.tensor(prep.mean, dtype=x01.dtype, device=x01.device).view(1, 3, 1, 1)
    std = torch.tensor(prep.std, dtype=x01.dtype, device=x01.device).view(1, 3, 1, 1)
    return (x01 - mean) / std


def pil_val_image(image: Image.Image, prep: Preprocess) -> Image.Image:
    """The original's val transform before ``ToTensor``: ``Resize(ceil(S/crop_pct))`` of the short side
    and ``CenterCrop(S)``, PIL resampling (``src/models/modeling.py`` ``timm_load``; open_clip's
    ``Resize(S) + CenterCrop(S)`` is crop_pct 1)."""
    resized = TF.resize(
        image,
        math.ceil(prep.input_size / prep.crop_pct),
        interpolation=_PIL_MODES[prep.interpolation],
    )
    return TF.center_crop(resized, prep.input_size)


def pil_crop_image(
    image: Image.Image, box: tuple[int, int, int, int], flip: bool, prep: Preprocess
) -> Image.Image:
    """``RandomResizedCrop`` with a drawn box ``(top, left, height, width)``, then the mirror."""
    out = TF.resized_crop(
        image,
        *box,
        [prep.input_size, prep.input_size],
        interpolation=_PIL_MODES[prep.interpolation],
    )
    return TF.hflip(out) if flip else out


def crop_boxes(
    b: int, h: int, w: int, scale: tuple[float, float], generator: torch.Generator
) -> list:
    """``b`` boxes ``(top, left, height, width)`` drawn as torchvision's ``RandomResizedCrop.get_params``
    (ratio (3/4, 4/3), up to 10 tries with integer sides, else the ratio-clamped centre crop), from
    ``generator`` (one host sync per batch)."""
    dev = generator.device
    area = (
        scale[0] + (scale[1] - scale[0]) * torch.rand(10, b, device=dev, generator=generator)
    ).tolist()
    lo, hi = math.log(3 / 4), math.log(4 / 3)
    log_ratio = (lo + (hi - lo) * torch.rand(10, b, device=dev, generator=generator)).tolist()
    offsets = torch.rand(2, b, device=dev, generator=generator).tolist()
    boxes = []
    for k in range(b):
        for t in range(10):
            target, aspect = h * w * area[t][k], math.exp(log_ratio[t][k])
            cw, ch = int(round(math.sqrt(target * aspect))), int(round(math.sqrt(target / aspect)))
            if 0 < cw <= w and 0 < ch <= h:
                boxes.append(
                    (int(offsets[0][k] * (h - ch + 1)), int(offsets[1][k] * (w - cw + 1)), ch, cw)
                )
                break
        else:
            boxes.append(_centre_box(h, w))
    return boxes


def _centre_box(h: int, w: int) -> tuple[int, int, int, int]:
    ratio = w / h
    ch, cw = h, w
    if ratio < 3 / 4:
        ch = int(round(w / (3 / 4)))
    elif ratio > 4 / 3:
        cw = int(round(h * (4 / 3)))
    return (h - ch) // 2, (w - cw) // 2, ch, cw


def pil_val_view(images: Tensor, prep: Preprocess) -> Tensor:
    """The original's val pipeline on a uint8 ``[B, 3, H, W]`` batch: ``[B, 3, S, S]`` float32."""
    return _to_tensor_normalize(
        [pil_val_image(_pil(x), prep) for x in images.cpu()], prep, images.device
    )


def pil_train_view(
    images: Tensor, prep: Preprocess, generator: torch.Generator, randaug: bool = False
) -> Tensor:
    """The original's train pipeline: ``RandomResizedCrop`` (PIL) ``[+ RandAugment(3, 5)] +
    RandomHorizontalFlip + ToTensor + Normalize`` (the flip after RandAugment, where the original
    inserts it; open_clip's pipeline has no flip)."""
    b, _, h, w = images.shape
    boxes = crop_boxes(b, h, w, prep.scale, generator)
    flips = (torch.rand(b, device=generator.device, generator=generator) < 0.5).tolist()
    if not randaug:
        flips = [f and prep.hflip for f in flips]
        return _to_tensor_normalize(
            [
                pil_crop_image(_pil(x), box, f, prep)
                for x, box, f in zip(images.cpu(), boxes, flips)
            ],
            prep,
            images.device,
        )
    from lnl.data.autoaugment import rand_augment

    crops = [
        np.asarray(pil_crop_image(_pil(x), box, False, prep)) for x, box in zip(images.cpu(), boxes)
    ]
    x = torch.from_numpy(np.stack(crops)).to(images.device).permute(0, 3, 1, 2).contiguous()
    x = rand_augment(x, generator, num_ops=3, magnitude=5)
    mirror = torch.tensor(flips, device=x.device) & prep.hflip
    x = torch.where(mirror.view(-1, 1, 1, 1), x.flip(-1), x)
    return _unit_normalize(x.float().div(255), prep)


def val_view(images: Tensor, prep: Preprocess) -> Tensor:
    """The val view of a uint8 ``[B, 3, H, W]`` batch: the original's PIL pipeline, or the fast one."""
    return fast_val_view(images, prep) if prep.fast else pil_val_view(images, prep)


def train_view(
    images: Tensor, prep: Preprocess, generator: torch.Generator, randaug: bool = False
) -> Tensor:
    """A train view of a uint8 ``[B, 3, H, W]`` batch: the original's PIL pipeline, or the fast one."""
    if prep.fast:
        return fast_train_view(images, prep, generator, randaug)
    return pil_train_view(images, prep, generator, randaug)


def epoch_generator(device: torch.device, seed: int, epoch: int) -> torch.Generator:
    """The generator of epoch ``epoch``: order and augmentations depend on ``(seed, epoch)`` only,
    so a resumed run sees the batches an uninterrupted one saw."""
    from lnl.data.gpu import epoch_seed

    return torch.Generator(device=device).manual_seed(epoch_seed(seed, epoch))


def batches(
    n: int, batch_size: int, generator: torch.Generator, shuffle: bool = True
) -> list[Tensor]:
    """A partition of ``range(n)`` into batches, shuffled or in order (last one short; ``drop_last=False``)."""
    order = (
        torch.randperm(n, device=generator.device, generator=generator)
        if shuffle
        else torch.arange(n, device=generator.device)
    )
    return list(order.split(batch_size))


def cosine_lr(step: int, base_lr: float, warmup: int, total: int) -> float:
    """The original's per-step schedule: linear warmup, then ``0.5·(1+cos(π·e/E))·lr``."""
    if step < warmup:
        return base_lr * (step + 1) / warmup
    e, es = step - warmup, max(total - warmup, 1)
    return 0.5 * (1 + math.cos(math.pi * e / es)) * base_lr
