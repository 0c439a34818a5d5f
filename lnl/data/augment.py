"""Batched image augmentations on uint8 tensors, with per-sample parameters, for the GPU pipeline.

Every op takes a batch ``Tensor[B, 3, H, W]`` uint8 and
per-sample parameters as ``Tensor[B]``, and runs as a few whole-batch tensor ops (no per-sample
Python loop), on whichever device the batch lives on. The arithmetic follows torchvision's tensor
kernels (``torchvision/transforms/_functional_tensor.py`` @ 0.29) step by step, including their
uint8 truncation after blending and rounding after blurring, so that each op equals
``torchvision.transforms.functional.<op>`` applied image by image (tests/data/test_augment.py checks
this on fixed parameters; geometric ops can differ on the rare pixel whose source coordinate is a
rounding tie).

Geometric ops use nearest-neighbour sampling, as AutoAugment/RandAugment do by default, and fill the
uncovered area with ``fill`` (PLReMix's CIFAR policy uses 128; torchvision's default None equals 0).
"""

from __future__ import annotations

import functools
import math
from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import Tensor

_GRAY = (0.2989, 0.587, 0.114)  # torchvision's rgb_to_grayscale weights (ITU-R 601-2 luma)


def crop_flip(
    images: Tensor, top: Tensor, left: Tensor, flip: Tensor, padding: int, fill: int = 0
) -> Tensor:
    """Pad-crop and horizontal flip with per-sample parameters, as one gather.

    Equivalent to ``RandomCrop(size=(H, W), padding=padding, fill=fill)`` with crop offsets
    ``(top, left)`` into the padded image, followed by ``hflip`` where ``flip`` is set. The padded
    image is never built: out-of-range source pixels are masked to ``fill``.

    Args:
        images: ``Tensor[B, C, H, W]`` uint8.
        top: ``Tensor[B]`` int64 in ``[0, 2 * padding]``.
        left: ``Tensor[B]`` int64 in ``[0, 2 * padding]``.
        flip: ``Tensor[B]`` bool.
        padding: padding on each side.
        fill: value of padded pixels.

    Returns:
        ``Tensor[B, C, H, W]`` uint8.
    """
    b, c, h, w = images.shape
    dev = images.device
    rows = torch.arange(h, device=dev).view(1, h) + top.view(b, 1) - padding  # [B, H]
    cols = torch.arange(w, device=dev).view(1, w)
    cols = torch.where(flip.view(b, 1), w - 1 - cols, cols) + left.view(b, 1) - padding  # [B, W]
    src = rows.clamp(0, h - 1).view(b, h, 1) * w + cols.clamp(0, w - 1).view(b, 1, w)
    out = _gather_pixels(images, src)
    if padding > 0:
        valid = ((rows >= 0) & (rows < h)).view(b, 1, h, 1) & ((cols >= 0) & (cols < w)).view(
            b, 1, 1, w
        )
        out = torch.where(valid, out, torch.full_like(out, fill))
    return out


def _gather_pixels(images: Tensor, src: Tensor) -> Tensor:
    """``out[b, c, i, j] = images[b, c].flatten()[src[b, i, j]]`` (one gather over all channels)."""
    b, c, h, w = images.shape
    idx = src.reshape(b, 1, h * w).expand(b, c, h * w)
    return images.reshape(b, c, h * w).gather(2, idx).view(b, c, h, w)


def random_crop_flip(
    images: Tensor, padding: int, flip: bool, generator: torch.Generator, fill: int = 0
) -> Tensor:
    """:func:`crop_flip` with offsets uniform in ``[0, 2 * padding]`` and flips with probability
    0.5.

    Args:
        images: ``Tensor[B, C, H, W]`` uint8.
        padding: padding on each side (0: no crop).
        flip: whether to flip at random.
        generator: the random source (on ``images.device``).
        fill: padded value.

    Returns:
        ``Tensor[B, C, H, W]`` uint8.
    """
    b, dev = images.shape[0], images.device
    top = torch.randint(0, 2 * padding + 1, (b,), device=dev, generator=generator)
    left = torch.randint(0, 2 * padding + 1, (b,), device=dev, generator=generator)
    flips = torch.rand(b, device=dev, generator=generator) < 0.5
    if not flip:
        flips = torch.zeros_like(flips)
    return crop_flip(images, top, left, flips, padding, fill)


def normalize(
    images: Tensor,
    mean: Sequence[float],
    std: Sequence[float],
    dtype: torch.dtype = torch.float32,
    channels_last: bool = False,
) -> Tensor:
    """``(x / 255 - mean) / std`` per channel, as one fused multiply-add.

    Args:
        images: ``Tensor[B, C, H, W]`` uint8.
        mean: C floats in [0, 1] units.
        std: C floats in [0, 1] units.
        dtype: output dtype (float32, bfloat16, float16).
        channels_last: return ``torch.channels_last`` memory format.

    Returns:
        ``Tensor[B, C, H, W]`` of ``dtype``.
    """
    shift, scale = _normalize_constants(
        tuple(map(float, mean)), tuple(map(float, std)), images.device
    )
    fmt = torch.channels_last if channels_last else torch.contiguous_format
    x = images.to(memory_format=fmt).float()
    return torch.addcmul(shift, x, scale).to(dtype=dtype, memory_format=fmt)


@functools.cache
def _normalize_constants(
    mean: tuple[float, ...], std: tuple[float, ...], device: torch.device
) -> tuple[Tensor, Tensor]:
    """``(-mean/std, 1/(255 std))`` as ``[1, C, 1, 1]`` float32 on ``device``, built once: a host-to-device
    copy per batch would wait for all the work queued on the GPU."""
    m = torch.tensor(mean, dtype=torch.float32).view(1, -1, 1, 1)
    s = torch.tensor(std, dtype=torch.float32).view(1, -1, 1, 1)
    return (-m / s).to(device), (1.0 / (255.0 * s)).to(device)


def _per_sample(values: Tensor, b: int) -> Tensor:
    """Broadcast a ``[B]`` parameter to ``[B, 1, 1, 1]``."""
    return values.reshape(b, 1, 1, 1)


def blend(img1: Tensor, img2: Tensor, ratio: Tensor) -> Tensor:
    """torchvision's ``_blend`` per sample: ``(r * img1 + (1 - r) * img2)``, clamped, truncated to
    uint8.

    ``1 - r`` is formed in float64 and then cast, as torchvision forms it in Python, so the float32
    results match bit for bit.
    """
    r64 = _per_sample(ratio.to(torch.float64), img1.shape[0])
    out = r64.float() * img1.float() + (1.0 - r64).float() * img2.float()
    return out.clamp(0, 255).to(torch.uint8)


def grayscale(images: Tensor) -> Tensor:
    """Luma as uint8 ``Tensor[B, 1, H, W]`` (truncated, as torchvision's ``rgb_to_grayscale``)."""
    r, g, b = images.float().unbind(1)
    return (_GRAY[0] * r + _GRAY[1] * g + _GRAY[2] * b).to(torch.uint8).unsqueeze(1)


def adjust_brightness(images: Tensor, factor: Tensor) -> Tensor:
    """Blend with black by ``factor[b]``."""
    return blend(images, torch.zeros_like(images), factor)


def adjust_saturation(images: Tensor, factor: Tensor) -> Tensor:
    """Blend with the grayscale image by ``factor[b]`` (AutoAugment's "Color")."""
    return blend(images, grayscale(images), factor)


def adjust_contrast(images: Tensor, factor: Tensor) -> Tensor:
    """Blend with the mean grey level of each image by ``factor[b]``."""
    mean = grayscale(images).float().mean(dim=(-3, -2, -1), keepdim=True)
    return blend(images, mean, factor)


def adjust_sharpness(images: Tensor, factor: Tensor) -> Tensor:
    """Blend with a 3x3 smoothed copy (border pixels kept) by ``factor[b]``."""
    b, c, h, w = images.shape
    if h <= 2 or w <= 2:
        return images
    kernel = torch.ones(3, 3, device=images.device)
    kernel[1, 1] = 5.0
    kernel = (kernel / kernel.sum()).expand(c, 1, 3, 3)
    smooth = F.conv2d(images.float(), kernel, groups=c).round().to(torch.uint8)
    degenerate = images.clone()
    degenerate[..., 1:-1, 1:-1] = smooth
    return blend(images, degenerate, factor)


def posterize(images: Tensor, bits: Tensor) -> Tensor:
    """Keep the ``bits[b]`` most significant bits of every pixel."""
    shift = (8 - bits.to(torch.int64)).clamp(0, 8)
    mask = ((255 << shift) & 255).to(torch.uint8)
    return images & _per_sample(mask, images.shape[0])


def solarize(images: Tensor, threshold: Tensor) -> Tensor:
    """Invert the pixels ``>= threshold[b]``."""
    thr = _per_sample(threshold.to(torch.float32), images.shape[0])
    return torch.where(images.float() >= thr, 255 - images, images)


def invert(images: Tensor) -> Tensor:
    """``255 - x``."""
    return 255 - images


def autocontrast(images: Tensor) -> Tensor:
    """Stretch each channel of each image to [0, 255]; constant channels are left as they are."""
    lo = images.amin(dim=(-2, -1), keepdim=True).float()
    hi = images.amax(dim=(-2, -1), keepdim=True).float()
    scale = 255.0 / (hi - lo)
    flat = ~torch.isfinite(scale)
    lo, scale = lo.masked_fill(flat, 0.0), scale.masked_fill(flat, 1.0)
    return ((images.float() - lo) * scale).clamp(0, 255).to(torch.uint8)


def equalize(images: Tensor) -> Tensor:
    """Histogram equalisation per channel of each image (PIL's algorithm, as torchvision's)."""
    b, c, h, w = images.shape
    n = b * c
    x = images.reshape(n, h * w).to(torch.int64)
    offsets = torch.arange(n, device=images.device).view(n, 1) * 256
    # a scatter-add, not torch.bincount: on CUDA bincount reads the input's range back to the host
    flat = (x + offsets).reshape(-1)
    hist = torch.zeros(n * 256, dtype=torch.int64, device=images.device)
    hist = hist.scatter_add_(0, flat, torch.ones_like(flat)).view(n, 256)
    # step = (pixels - count of the last non-empty bin) // 255
    last = torch.where(hist > 0, torch.arange(256, device=images.device), -1).amax(1, keepdim=True)
    last_count = hist.gather(1, last.clamp(min=0))
    step = torch.div(hist.sum(1, keepdim=True) - last_count, 255, rounding_mode="floor")
    safe = step.clamp(min=1)
    lut = torch.div(
        hist.cumsum(1) + torch.div(safe, 2, rounding_mode="floor"), safe, rounding_mode="floor"
    )
    lut = F.pad(lut, (1, 0))[:, :-1].clamp(0, 255)
    out = lut.gather(1, x)
    out = torch.where(step == 0, x, out)
    return out.to(torch.uint8).view(b, c, h, w)


def affine_nearest(images: Tensor, matrix: Tensor, fill: int = 0) -> Tensor:
    """Warp each image by an inverse affine map with nearest-neighbour sampling.

    Coordinates are pixel centres relative to the image centre (x right, y down), as in torchvision:
    output pixel ``p`` reads input pixel ``matrix[b] @ [p_x, p_y, 1]``. The float32 steps mirror
    torchvision's ``_gen_affine_grid`` + ``grid_sample(align_corners=False)``.

    Args:
        images: ``Tensor[B, C, H, W]`` uint8.
        matrix: ``Tensor[B, 2, 3]`` inverse maps (float64 or float32).
        fill: value of pixels that map outside the input.

    Returns:
        ``Tensor[B, C, H, W]`` uint8.
    """
    b, c, h, w = images.shape
    dev = images.device
    theta = matrix.to(device=dev, dtype=torch.float32)
    xs = torch.linspace(-w * 0.5 + 0.5, w * 0.5 - 0.5, w, device=dev).view(1, 1, w)
    ys = torch.linspace(-h * 0.5 + 0.5, h * 0.5 - 0.5, h, device=dev).view(1, h, 1)
    t = theta.view(b, 6, 1, 1)
    gx = (t[:, 0] * xs + t[:, 1] * ys + t[:, 2]) / (0.5 * w)
    gy = (t[:, 3] * xs + t[:, 4] * ys + t[:, 5]) / (0.5 * h)
    ix = torch.round(((gx + 1) * w - 1) / 2).to(torch.int64)  # round half to even, as nearbyint
    iy = torch.round(((gy + 1) * h - 1) / 2).to(torch.int64)
    valid = ((ix >= 0) & (ix < w) & (iy >= 0) & (iy < h)).unsqueeze(1)
    out = _gather_pixels(images, iy.clamp(0, h - 1) * w + ix.clamp(0, w - 1))
    return torch.where(valid, out, torch.full_like(out, fill))


def _shear_angle(m: Tensor) -> Tensor:
    """The shear angle torchvision ends up with: ``radians(degrees(atan(m)))``, in float64."""
    return (torch.atan(m.to(torch.float64)) * (180.0 / math.pi)) * (math.pi / 180.0)


def shear_x_matrix(m: Tensor, w: int, h: int) -> Tensor:
    """Inverse map of AutoAugment's ShearX by ``m`` (pivot at the top-left corner): x' = x + m (y +
    H/2).

    Terms are formed in torchvision's order (``tan`` of the round-tripped angle, offset
    ``(W/2 + t H/2) - W/2``) so that the float32 matrices agree.
    """
    t = torch.tan(_shear_angle(m))
    z, o = torch.zeros_like(t), torch.ones_like(t)
    return torch.stack([o, t, (w * 0.5 + t * (h * 0.5)) - w * 0.5, z, o, z], 1).view(-1, 2, 3)


def shear_y_matrix(m: Tensor, w: int, h: int) -> Tensor:
    """Inverse map of ShearY by ``m`` (pivot at the top-left corner): y' = y + m (x + W/2)."""
    a = _shear_angle(m)
    t = torch.sin(a) / torch.cos(a)
    z, o = torch.zeros_like(t), torch.ones_like(t)
    return torch.stack([o, z, z, t, o, (t * (w * 0.5) + h * 0.5) - h * 0.5], 1).view(-1, 2, 3)


def translate_matrix(tx: Tensor, ty: Tensor) -> Tensor:
    """Inverse map of a translation by ``(tx, ty)`` pixels: p' = p - t."""
    tx, ty = tx.to(torch.float64), ty.to(torch.float64)
    z, o = torch.zeros_like(tx), torch.ones_like(tx)
    return torch.stack([o, z, -tx, z, o, -ty], 1).view(-1, 2, 3)


def rotate_matrix(degrees: Tensor) -> Tensor:
    """Inverse map of a counter-clockwise rotation by ``degrees`` about the centre."""
    a = degrees.to(torch.float64) * (math.pi / 180.0)
    cos, sin, z = torch.cos(a), torch.sin(a), torch.zeros_like(a)
    return torch.stack([cos, -sin, z, sin, cos, z], 1).view(-1, 2, 3)
