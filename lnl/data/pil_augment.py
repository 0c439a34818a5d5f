"""PIL-exact batched augmentations: PLReMix's AutoAugment policies and FixMatch's RandAugment.

PLReMix (``lxysl/PLReMix @ b0c4ec3``, ``data/auto_augment.py`` and ``data/rand_augment.py``) augments
with PIL one image at a time. This module computes the same pixels on uint8 batches
``Tensor[B, 3, H, W]`` with per-image parameters, on any device, following Pillow's C kernels step by
step (``libImaging/Geometry.c``, ``Blend.c``, ``Filter.c``, ``Convert.c``; Pillow 13):

* nearest translations read ``floor(x + 0.5 + t)`` (Pillow's scale-affine path);
* nearest rotations and shears run Pillow's 16.16 fixed-point affine loop;
* bicubic shears (AutoAugment's ShearX/ShearY) use Pillow's a = -1 cubic in float64, truncated
  (one pass along the sheared axis: the other one's fraction is 0);
* enhance ops blend in float32 and truncate (``ImagingBlend``), grey is ``(19595 R + 38470 G + 7471 B
  + 2^15) >> 16``, Contrast blends with the rounded mean grey, Sharpness with the 3×3 SMOOTH filter;
* AutoContrast builds Pillow's float64 lookup table, Equalize is Pillow's histogram walk.

The random draws are separate from the ops: a policy takes its per-image draws (:class:`PolicyDraws`,
:class:`RandAugDraws`), drawn either from a ``torch.Generator`` on the device (the GPU loader) or from
Python's ``random``/numpy in the original's order (:func:`policy_draws_python`,
:func:`randaug_draws_python`: the file-list transforms, and the golden tests that feed both sides the
same draws). tests/equivalence/test_plremix_aug.py checks every op at every magnitude bin against the
original's PIL output, exactly.
"""

from __future__ import annotations

import functools
import math
import random as _random
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor

from lnl.data import augment as A

# ----------------------------------------------------------------------------- Pillow's kernels


def _per_image(v: Tensor) -> Tensor:
    return v.reshape(-1, 1, 1, 1)


def _grid(x: Tensor) -> tuple[Tensor, Tensor]:
    """Column and row indices, ``[1, 1, W]`` and ``[1, H, 1]`` int64."""
    _, _, h, w = x.shape
    dev = x.device
    return torch.arange(w, device=dev).view(1, 1, w), torch.arange(h, device=dev).view(1, h, 1)


def _sample(x: Tensor, col: Tensor, row: Tensor, fill: int) -> Tensor:
    """``x[b, :, row, col]`` where both lie inside the image, else ``fill``; ``col``/``row`` ``[B, H, W]``."""
    _, _, h, w = x.shape
    valid = ((col >= 0) & (col < w) & (row >= 0) & (row < h)).unsqueeze(1)
    out = A._gather_pixels(x, row.clamp(0, h - 1) * w + col.clamp(0, w - 1))
    return torch.where(valid, out, torch.full_like(out, fill))


def _coord(v: Tensor) -> Tensor:
    """Pillow's ``COORD``: -1 below 0, else truncated."""
    return torch.where(v < 0, -1, torch.floor(v)).to(torch.int64)


def translate(x: Tensor, dx: Tensor, dy: Tensor, fill: int) -> Tensor:
    """``img.transform(size, AFFINE, (1, 0, dx, 0, 1, dy))`` with NEAREST: output pixel ``(c, r)`` reads
    ``(COORD(dx + 0.5 + c), COORD(dy + 0.5 + r))`` (Pillow's ``ImagingScaleAffine``)."""
    b = x.shape[0]
    cols, rows = _grid(x)
    x0 = dx.to(torch.float64).view(b, 1, 1) + 0.5
    y0 = dy.to(torch.float64).view(b, 1, 1) + 0.5
    col = _coord(x0 + cols).expand(b, x.shape[2], -1)
    row = _coord(y0 + rows).expand(b, -1, x.shape[3])
    return _sample(x, col, row, fill)


def _fix(v: Tensor) -> Tensor:
    """Pillow's 16.16 ``FIX``: ``floor(v · 65536 + 0.5)``."""
    return torch.floor(v * 65536.0 + 0.5).to(torch.int64)


def affine_nearest_fixed(x: Tensor, a: Tensor, fill: int) -> Tensor:
    """``img.transform(size, AFFINE, a, NEAREST)`` for a map with a shear or rotation term (Pillow's
    fixed-point ``affine_fixed``): ``a`` is ``[B, 6]`` float64, output ``(c, r)`` reads
    ``((A2 + r·A1 + c·A0) >> 16, (A5 + r·A4 + c·A3) >> 16)``."""
    a = a.to(torch.float64)
    b = x.shape[0]
    a0, a1, a3, a4 = (_fix(a[:, i]).view(b, 1, 1) for i in (0, 1, 3, 4))
    a2 = _fix(a[:, 2] + a[:, 0] * 0.5 + a[:, 1] * 0.5).view(b, 1, 1)
    a5 = _fix(a[:, 5] + a[:, 3] * 0.5 + a[:, 4] * 0.5).view(b, 1, 1)
    cols, rows = _grid(x)
    col = (a2 + rows * a1 + cols * a0) >> 16
    row = (a5 + rows * a4 + cols * a3) >> 16
    return _sample(x, col, row, fill)


def _cubic(v1: Tensor, v2: Tensor, v3: Tensor, v4: Tensor, d: Tensor) -> Tensor:
    """Pillow's ``BICUBIC`` macro (a = -1), term by term in its order."""
    p2 = -v1 + v3
    p3 = 2 * (v1 - v2) + v3 - v4
    p4 = -v1 + v2 - v3 + v4
    return v2 + d * (p2 + d * (p3 + d * p4))


def shear_bicubic(x: Tensor, s: Tensor, axis: str, fill: int) -> Tensor:
    """``img.transform(size, AFFINE, (1, s, 0, 0, 1, 0) or (1, 0, 0, s, 1, 0), BICUBIC)``.

    Output ``(c, r)`` samples ``(c + ½ + s (r + ½), r + ½)`` (x) or ``(c + ½, r + ½ + s (c + ½))`` (y);
    outside ``[0, W) × [0, H)`` it keeps ``fill``. Pillow's 4×4 cubic (a = -1, ``bicubic_filter32RGB``)
    has a zero fraction along the unsheared axis, where its polynomial returns the centre tap exactly,
    so one 4-tap pass along the sheared axis gives its pixels bit for bit; clipped to [0, 255] and
    truncated.
    """
    b, _, h, w = x.shape
    cols, rows = _grid(x)
    xc, yc = cols.double() + 0.5, rows.double() + 0.5
    s = s.to(torch.float64).view(b, 1, 1)
    if axis == "x":
        pos, size = (xc + s * yc) + 0.0, w  # Pillow's a0·x + a1·y + a2, in its order
    else:
        pos, size = (s * xc + yc) + 0.0, h
    pos = pos.expand(b, h, w)
    inside = ((pos >= 0) & (pos < size)).unsqueeze(1)
    t = pos - 0.5
    f = torch.floor(t)
    d = (t - f).unsqueeze(1)
    first = f.to(torch.int64) - 1
    taps = []
    for k in range(4):
        i = (first + k).clamp(0, size - 1)
        src = rows * w + i if axis == "x" else i * w + cols
        taps.append(A._gather_pixels(x, src).double())
    v = _cubic(*taps, d)
    out = torch.where(v <= 0, 0.0, torch.where(v >= 255, 255.0, v)).to(torch.uint8)
    return torch.where(inside, out, torch.full_like(out, fill))


def shear_matrix(s: Tensor, axis: str) -> Tensor:
    """``(1, s, 0, 0, 1, 0)`` (x) or ``(1, 0, 0, s, 1, 0)`` (y), ``[B, 6]`` float64."""
    s = s.to(torch.float64)
    z, o = torch.zeros_like(s), torch.ones_like(s)
    rows = (o, s, z, z, o, z) if axis == "x" else (o, z, z, s, o, z)
    return torch.stack(rows, 1)


def _round15(v: Tensor) -> Tensor:
    """Python's ``round(v, 15)`` (the float64 product can differ from Python's correctly rounded result
    in the last bit: it moves the 16.16 matrix only when v lies within 1e-11 of a grid step)."""
    return torch.round(v * 1e15) / 1e15


def rotate_matrix(degrees: Tensor, w: int, h: int) -> Tensor:
    """``Image.rotate(degrees)``'s inverse map (centre ``(W/2, H/2)``), ``[B, 6]`` float64."""
    angle = -(torch.remainder(degrees.to(torch.float64), 360.0) * (math.pi / 180.0))
    cos, sin = _round15(torch.cos(angle)), _round15(torch.sin(angle))
    msin = _round15(-torch.sin(angle))
    cx, cy = w / 2, h / 2
    c = cos * -cx + sin * -cy + 0.0 + cx
    f = msin * -cx + cos * -cy + 0.0 + cy
    return torch.stack([cos, sin, c, msin, cos, f], 1)


def rotate(x: Tensor, degrees: Tensor, fill: int) -> Tensor:
    """``Image.rotate(degrees)`` (nearest, counter-clockwise) with ``fill`` where nothing maps."""
    return affine_nearest_fixed(x, rotate_matrix(degrees, x.shape[3], x.shape[2]), fill)


def grey(x: Tensor) -> Tensor:
    """Pillow's RGB → L: ``(19595 R + 38470 G + 7471 B + 2^15) >> 16``, ``[B, 1, H, W]`` int64."""
    r, g, b = x.to(torch.int64).unbind(1)
    return ((r * 19595 + g * 38470 + b * 7471 + 0x8000) >> 16).unsqueeze(1)


def blend(degenerate: Tensor, image: Tensor, factor: Tensor) -> Tensor:
    """``Image.blend(degenerate, image, factor)``: ``degenerate + α (image − degenerate)`` in float32
    (α the C float of ``factor``), clipped to [0, 255], truncated."""
    alpha = _per_image(factor.to(torch.float64).to(torch.float32))
    d = degenerate.to(torch.float32)
    out = d + alpha * (image.to(torch.float32) - d)
    return out.clamp(0, 255).to(torch.uint8)


def _smooth(x: Tensor) -> Tensor:
    """``ImageFilter.SMOOTH`` ((1 1 1; 1 5 1; 1 1 1) / 13, rounded; border pixels kept). The exact
    sum never lies on a rounding tie (2S + 13 is odd), so float accuracy cannot change a pixel."""
    _, c, h, w = x.shape
    if h < 3 or w < 3:
        return x
    kernel = torch.ones(3, 3, device=x.device, dtype=torch.float64)
    kernel[1, 1] = 5.0
    kernel = (kernel / 13).expand(c, 1, 3, 3)
    out = x.clone()
    out[..., 1:-1, 1:-1] = torch.floor(F.conv2d(x.double(), kernel, groups=c) + 0.5).to(torch.uint8)
    return out


def enhance(x: Tensor, kind: str, factor: Tensor) -> Tensor:
    """``ImageEnhance.<kind>(img).enhance(factor)`` for Color, Contrast, Brightness, Sharpness."""
    if kind == "Color":
        degenerate = grey(x).expand_as(x)
    elif kind == "Contrast":
        g = grey(x)
        mean = g.sum(dim=(1, 2, 3), keepdim=True).double() / g[0].numel()
        degenerate = torch.floor(mean + 0.5).expand_as(x)
    elif kind == "Brightness":
        degenerate = torch.zeros_like(x)
    elif kind == "Sharpness":
        degenerate = _smooth(x)
    else:
        raise ValueError(f"unknown enhance op {kind!r}")
    return blend(degenerate, x, factor)


def posterize(x: Tensor, bits: Tensor) -> Tensor:
    """``ImageOps.posterize``: keep the ``bits[b]`` high bits."""
    return A.posterize(x, bits.to(torch.int64))


def solarize(x: Tensor, threshold: Tensor) -> Tensor:
    """``ImageOps.solarize``: ``255 − v`` where ``v ≥ threshold[b]`` (compared in float64)."""
    return torch.where(x.double() >= _per_image(threshold.to(torch.float64)), 255 - x, x)


def autocontrast(x: Tensor) -> Tensor:
    """``ImageOps.autocontrast`` (no cutoff): per channel ``int(v · 255/(hi − lo) − lo · 255/(hi − lo))``
    in float64, clipped; channels with ``hi ≤ lo`` unchanged."""
    lo = x.amin(dim=(-2, -1), keepdim=True).double()
    hi = x.amax(dim=(-2, -1), keepdim=True).double()
    flat = hi <= lo
    # a true division: ``255.0 / tensor`` would multiply by the reciprocal (one ulp off)
    scale = torch.full_like(lo, 255.0).div(torch.where(flat, 1.0, hi - lo))
    offset = -lo * scale
    out = torch.trunc(x.double() * scale + offset).clamp(0, 255).to(torch.uint8)
    return torch.where(flat, x, out)


def cutout(x: Tensor, size: Tensor, cx: Tensor, cy: Tensor, color: Sequence[int]) -> Tensor:
    """FixMatch's ``CutoutAbs``: a ``size``-pixel square around ``(cx, cy)`` painted ``color`` by
    ``ImageDraw.rectangle((x0, y0, x1, y1))`` (corners truncated, both inclusive), with
    ``x0 = int(max(0, cx − size/2))`` and ``x1 = min(W, x0 + size)``. ``size < 0`` leaves the image."""
    b, _, h, w = x.shape
    size, cx, cy = size.to(torch.float64), cx.to(torch.float64), cy.to(torch.float64)
    x0 = torch.trunc(torch.clamp(cx - size / 2.0, min=0)).view(b, 1, 1)
    y0 = torch.trunc(torch.clamp(cy - size / 2.0, min=0)).view(b, 1, 1)
    x1 = torch.trunc(torch.clamp(x0 + size.view(b, 1, 1), max=w))
    y1 = torch.trunc(torch.clamp(y0 + size.view(b, 1, 1), max=h))
    cols, rows = _grid(x)
    inside = (cols >= x0) & (cols <= x1) & (rows >= y0) & (rows <= y1) & (size >= 0).view(b, 1, 1)
    return torch.where(inside.unsqueeze(1), _paint(tuple(color), x.device), x)


@functools.cache
def _paint(color: tuple[int, ...], device: torch.device) -> Tensor:
    """The colour as ``[1, 3, 1, 1]`` uint8 on ``device``, copied once (a host-to-device copy per batch
    would wait for the queued GPU work)."""
    return torch.tensor(color, dtype=torch.uint8).view(1, 3, 1, 1).to(device)


# ----------------------------------------------------------------------------- per-image dispatch
OpFn = Callable[[Tensor, Tensor], Tensor]


def apply_per_image(
    x: Tensor,
    op: Tensor,
    arg: Tensor,
    ops: Sequence[OpFn],
    *,
    dense: bool | None = None,
    may_use: Sequence[int] | None = None,
) -> Tensor:
    """Apply ``ops[op[b]](image b, arg[b])`` to every image (op 0 must be the identity).

    ``dense=False`` (the CPU default) sorts the batch by op and runs each op on its segment (one host
    read of the op counts); ``dense=True`` (the CUDA default, no host sync) runs every op of
    ``may_use`` on the whole batch and keeps each image's own result. Both give the same pixels.
    """
    dense = x.is_cuda if dense is None else dense
    if dense:
        out = x
        for i in range(1, len(ops)) if may_use is None else may_use:
            if i:
                out = torch.where(_per_image(op == i), ops[i](x, arg), out)
        return out
    order = torch.argsort(op, stable=True)
    counts = torch.bincount(op, minlength=len(ops)).tolist()
    xs, args = x[order], arg[order]
    out, start = xs.clone(), 0
    for i, n in enumerate(counts):
        if n and i:
            out[start : start + n] = ops[i](xs[start : start + n], args[start : start + n])
        start += n
    result = torch.empty_like(x)
    result[order] = out
    return result


# ----------------------------------------------------------------------------- PLReMix's AutoAugment
#: Op ids shared by the policies below (0 is the identity: an op whose coin came up tails).
AA_OPS = (
    "Identity",
    "ShearX",
    "ShearY",
    "TranslateX",
    "TranslateY",
    "Rotate",
    "Color",
    "Posterize",
    "Solarize",
    "Contrast",
    "Sharpness",
    "Brightness",
    "AutoContrast",
    "Equalize",
    "Invert",
)
AA_ID = {name: i for i, name in enumerate(AA_OPS)}
#: Ops whose magnitude takes a random sign in PLReMix's SubPolicy (Rotate does not: always +θ).
AA_SIGNED = frozenset(
    {"ShearX", "ShearY", "TranslateX", "TranslateY", "Color", "Contrast", "Sharpness", "Brightness"}
)

#: AutoAugment's CIFAR-10 policy as PLReMix's ``CIFARPolicy`` lists it: (op, probability, bin) pairs.
CIFAR_POLICY = (
    (("Invert", 0.1, 7), ("Contrast", 0.2, 6)),
    (("Rotate", 0.7, 2), ("TranslateX", 0.3, 9)),
    (("Sharpness", 0.8, 1), ("Sharpness", 0.9, 3)),
    (("ShearY", 0.5, 8), ("TranslateY", 0.7, 9)),
    (("AutoContrast", 0.5, 8), ("Equalize", 0.9, 2)),
    (("ShearY", 0.2, 7), ("Posterize", 0.3, 7)),
    (("Color", 0.4, 3), ("Brightness", 0.6, 7)),
    (("Sharpness", 0.3, 9), ("Brightness", 0.7, 9)),
    (("Equalize", 0.6, 5), ("Equalize", 0.5, 1)),
    (("Contrast", 0.6, 7), ("Sharpness", 0.6, 5)),
    (("Color", 0.7, 7), ("TranslateX", 0.5, 8)),
    (("Equalize", 0.3, 7), ("AutoContrast", 0.4, 8)),
    (("TranslateY", 0.4, 3), ("Sharpness", 0.2, 6)),
    (("Brightness", 0.9, 6), ("Color", 0.2, 8)),
    (("Solarize", 0.5, 2), ("Invert", 0.0, 3)),
    (("Equalize", 0.2, 0), ("AutoContrast", 0.6, 0)),
    (("Equalize", 0.2, 8), ("Equalize", 0.6, 4)),
    (("Color", 0.9, 9), ("Equalize", 0.6, 6)),
    (("AutoContrast", 0.8, 4), ("Solarize", 0.2, 8)),
    (("Brightness", 0.1, 3), ("Color", 0.7, 0)),
    (("Solarize", 0.4, 5), ("AutoContrast", 0.9, 3)),
    (("TranslateY", 0.9, 9), ("TranslateY", 0.7, 9)),
    (("AutoContrast", 0.9, 2), ("Solarize", 0.8, 3)),
    (("Equalize", 0.8, 8), ("Invert", 0.1, 3)),
    (("TranslateY", 0.7, 9), ("AutoContrast", 0.9, 1)),
)

#: The ImageNet policy as PLReMix's ``ImageNetPolicy`` lists it (25 pairs; three repeat earlier ones).
IMAGENET_POLICY = (
    (("Posterize", 0.4, 8), ("Rotate", 0.6, 9)),
    (("Solarize", 0.6, 5), ("AutoContrast", 0.6, 5)),
    (("Equalize", 0.8, 8), ("Equalize", 0.6, 3)),
    (("Posterize", 0.6, 7), ("Posterize", 0.6, 6)),
    (("Equalize", 0.4, 7), ("Solarize", 0.2, 4)),
    (("Equalize", 0.4, 4), ("Rotate", 0.8, 8)),
    (("Solarize", 0.6, 3), ("Equalize", 0.6, 7)),
    (("Posterize", 0.8, 5), ("Equalize", 1.0, 2)),
    (("Rotate", 0.2, 3), ("Solarize", 0.6, 8)),
    (("Equalize", 0.6, 8), ("Posterize", 0.4, 6)),
    (("Rotate", 0.8, 8), ("Color", 0.4, 0)),
    (("Rotate", 0.4, 9), ("Equalize", 0.6, 2)),
    (("Equalize", 0.0, 7), ("Equalize", 0.8, 8)),
    (("Invert", 0.6, 4), ("Equalize", 1.0, 8)),
    (("Color", 0.6, 4), ("Contrast", 1.0, 8)),
    (("Rotate", 0.8, 8), ("Color", 1.0, 2)),
    (("Color", 0.8, 8), ("Solarize", 0.8, 7)),
    (("Sharpness", 0.4, 7), ("Invert", 0.6, 8)),
    (("ShearX", 0.6, 5), ("Equalize", 1.0, 9)),
    (("Color", 0.4, 0), ("Equalize", 0.6, 3)),
    (("Equalize", 0.4, 7), ("Solarize", 0.2, 4)),
    (("Solarize", 0.6, 5), ("AutoContrast", 0.6, 5)),
    (("Invert", 0.6, 4), ("Equalize", 1.0, 8)),
    (("Color", 0.6, 4), ("Contrast", 1.0, 8)),
    (("Equalize", 0.8, 8), ("Equalize", 0.6, 3)),
)
POLICIES = {"cifar": CIFAR_POLICY, "imagenet": IMAGENET_POLICY}


def aa_magnitudes(name: str) -> np.ndarray:
    """The 10 magnitude bins of op ``name`` (PLReMix's ``SubPolicy`` ranges, in its units: shear factor,
    translation as a fraction of the size, degrees, enhance offset, bits, threshold)."""
    ranges = {
        "ShearX": (0, 0.3),
        "ShearY": (0, 0.3),
        "TranslateX": (0, 150 / 331),
        "TranslateY": (0, 150 / 331),
        "Rotate": (0, 30),
        "Color": (0.0, 0.9),
        "Contrast": (0.0, 0.9),
        "Sharpness": (0.0, 0.9),
        "Brightness": (0.0, 0.9),
        "Solarize": (256, 0),
    }
    if name == "Posterize":
        return np.round(np.linspace(8, 4, 10), 0).astype(np.int32).astype(np.float64)
    if name in ranges:
        return np.linspace(*ranges[name], 10)
    return np.zeros(10)


def aa_ops(fill: int = 128) -> tuple[OpFn, ...]:
    """The op functions of :data:`AA_OPS`, taking the signed magnitude in SubPolicy's units."""

    def geo(kind: str) -> OpFn:
        if kind in ("ShearX", "ShearY"):  # bicubic in PLReMix's SubPolicy
            return lambda x, m: shear_bicubic(x, m, kind[-1].lower(), fill)
        if kind == "TranslateX":
            return lambda x, m: translate(x, m * x.shape[3], torch.zeros_like(m), fill)
        if kind == "TranslateY":
            return lambda x, m: translate(x, torch.zeros_like(m), m * x.shape[2], fill)
        return lambda x, m: rotate(
            x, m, fill
        )  # rotated as RGBA, uncovered pixels composited on grey

    def enh(kind: str) -> OpFn:
        return lambda x, m: enhance(x, kind, 1 + m)

    table = {
        "Identity": lambda x, m: x,
        "Posterize": posterize,
        "Solarize": solarize,
        "AutoContrast": lambda x, m: autocontrast(x),
        "Equalize": lambda x, m: A.equalize(x),
        "Invert": lambda x, m: 255 - x,
    }
    table.update({k: geo(k) for k in ("ShearX", "ShearY", "TranslateX", "TranslateY", "Rotate")})
    table.update({k: enh(k) for k in ("Color", "Contrast", "Sharpness", "Brightness")})
    return tuple(table[name] for name in AA_OPS)


@dataclass
class PolicyDraws:
    """One sub-policy application per image: ``sub`` ``[B]`` int64 sub-policy index, ``apply`` ``[B, 2]``
    bool (each op's coin), ``sign`` ``[B, 2]`` float64 ±1 (ignored for unsigned ops)."""

    sub: Tensor
    apply: Tensor
    sign: Tensor


@functools.cache
def _policy_tables(policy: str, device: torch.device) -> tuple[Tensor, Tensor, Tensor, Tensor]:
    """(op ids, probabilities, unsigned magnitudes, signed?), each ``[n, 2]``, on ``device``."""
    table = POLICIES[policy]
    ids = torch.tensor([[AA_ID[o] for o, _, _ in sp] for sp in table], device=device)
    probs = torch.tensor(
        [[p for _, p, _ in sp] for sp in table], dtype=torch.float64, device=device
    )
    mags = torch.tensor(
        [[aa_magnitudes(o)[m] for o, _, m in sp] for sp in table],
        dtype=torch.float64,
        device=device,
    )
    signed = torch.tensor([[o in AA_SIGNED for o, _, _ in sp] for sp in table], device=device)
    return ids, probs, mags, signed


def policy_draws(
    policy: str, b: int, generator: torch.Generator, device: torch.device
) -> PolicyDraws:
    """Per-image draws from ``generator``, with the original's distributions: a uniform sub-policy,
    coin ``U < p`` per op, sign ±1 with probability ½."""
    _, probs, _, _ = _policy_tables(policy, device)
    sub = torch.randint(0, len(POLICIES[policy]), (b,), device=device, generator=generator)
    coins = torch.rand(b, 2, device=device, generator=generator, dtype=torch.float64)
    flips = torch.rand(b, 2, device=device, generator=generator) < 0.5
    return PolicyDraws(sub, coins < probs[sub], torch.where(flips, -1.0, 1.0).to(torch.float64))


def policy_draws_python(
    policy: str, b: int, rng=_random, device: torch.device | str = "cpu"
) -> PolicyDraws:
    """Draws from Python's ``rng`` in the original's order, image after image: ``randint(0, n − 1)``,
    then per op ``random() < p`` and, if it applies and is signed, ``choice([-1, 1])``."""
    table = POLICIES[policy]
    sub, apply, sign = [], [], []
    for _ in range(b):
        k = rng.randint(0, len(table) - 1)
        row_apply, row_sign = [], []
        for op, p, _ in table[k]:
            hit = rng.random() < p
            row_apply.append(hit)
            row_sign.append(float(rng.choice([-1, 1])) if hit and op in AA_SIGNED else 1.0)
        sub.append(k)
        apply.append(row_apply)
        sign.append(row_sign)
    return PolicyDraws(
        torch.tensor(sub, device=device),
        torch.tensor(apply, device=device),
        torch.tensor(sign, dtype=torch.float64, device=device),
    )


@functools.cache
def _slot_ops(policy: str, slot: int) -> tuple[int, ...]:
    return tuple(sorted({AA_ID[sp[slot][0]] for sp in POLICIES[policy]}))


def auto_augment(
    x: Tensor, policy: str, draws: PolicyDraws, fill: int = 128, *, dense: bool | None = None
) -> Tensor:
    """PLReMix's ``CIFARPolicy``/``ImageNetPolicy`` on a uint8 batch with the given draws.

    Args:
        x: ``Tensor[B, 3, H, W]`` uint8.
        policy: ``"cifar"`` or ``"imagenet"``.
        draws: :func:`policy_draws` or :func:`policy_draws_python`.
        fill: grey of uncovered pixels (the original's 128).
        dense: as in :func:`apply_per_image`.

    Returns:
        ``Tensor[B, 3, H, W]`` uint8.
    """
    if x.dtype != torch.uint8:
        raise ValueError(f"auto_augment needs uint8 images, got {x.dtype}")
    ids, _, mags, signed = _policy_tables(policy, x.device)
    ops = aa_ops(fill)
    for slot in range(2):
        op = torch.where(draws.apply[:, slot], ids[draws.sub, slot], 0)
        mag = mags[draws.sub, slot]
        mag = torch.where(signed[draws.sub, slot], mag * draws.sign[:, slot], mag)
        x = apply_per_image(x, op, mag, ops, dense=dense, may_use=_slot_ops(policy, slot))
    return x


# ----------------------------------------------------------------------------- FixMatch's RandAugment
#: FixMatch's ``augment_list`` (name, low, high), in its order: an op's value is ``low + (high − low)·U``.
FIXMATCH_OPS = (
    ("AutoContrast", 0, 1),
    ("Brightness", 0.05, 0.95),
    ("Color", 0.05, 0.95),
    ("Contrast", 0.05, 0.95),
    ("Equalize", 0, 1),
    ("Identity", 0, 1),
    ("Posterize", 4, 8),
    ("Rotate", -30, 30),
    ("Sharpness", 0.05, 0.95),
    ("ShearX", -0.3, 0.3),
    ("ShearY", -0.3, 0.3),
    ("Solarize", 0, 256),
    ("TranslateX", -0.3, 0.3),
    ("TranslateY", -0.3, 0.3),
)
CUTOUT_COLOR = (125, 123, 114)


def fixmatch_ops() -> tuple[OpFn, ...]:
    """Op functions indexed 1 + position in :data:`FIXMATCH_OPS` (0 is unused): nearest geometry filled
    with black, enhance factors taken as they are."""

    def one(name: str) -> OpFn:
        if name in ("ShearX", "ShearY"):
            return lambda x, v: affine_nearest_fixed(x, shear_matrix(v, name[-1].lower()), 0)
        if name == "TranslateX":
            return lambda x, v: translate(x, v * x.shape[3], torch.zeros_like(v), 0)
        if name == "TranslateY":
            return lambda x, v: translate(x, torch.zeros_like(v), v * x.shape[2], 0)
        if name == "Rotate":
            return lambda x, v: rotate(x, v, 0)
        if name in ("Brightness", "Color", "Contrast", "Sharpness"):
            return lambda x, v: enhance(x, name, v)
        if name == "Posterize":
            return lambda x, v: posterize(x, torch.trunc(v).clamp(min=1))
        if name == "Solarize":
            return solarize
        return {
            "AutoContrast": lambda x, v: autocontrast(x),
            "Equalize": lambda x, v: A.equalize(x),
            "Identity": lambda x, v: x,
        }[name]

    return (lambda x, v: x,) + tuple(one(name) for name, _, _ in FIXMATCH_OPS)


@dataclass
class RandAugDraws:
    """FixMatch RandAugment draws per image: ``op`` ``[B, N]`` int64 index into :data:`FIXMATCH_OPS`,
    ``u`` ``[B, N]`` float64 uniforms of the values, ``cut`` ``[B]`` float64 (cutout fraction =
    ``0.5·cut``), ``centre`` ``[B, 2]`` float64 (the cutout centre as the original draws it)."""

    op: Tensor
    u: Tensor
    cut: Tensor
    centre: Tensor


def randaug_draws(
    b: int, n: int, generator: torch.Generator, device: torch.device, w: int, h: int
) -> RandAugDraws:
    """Draws from ``generator`` with the original's distributions (its centre is
    ``np.random.uniform(w)``, i.e. uniform on (1, w], sic)."""
    op = torch.randint(0, len(FIXMATCH_OPS), (b, n), device=device, generator=generator)
    u = torch.rand(b, n, device=device, generator=generator, dtype=torch.float64)
    cut = torch.rand(b, device=device, generator=generator, dtype=torch.float64)
    r = torch.rand(b, 2, device=device, generator=generator, dtype=torch.float64)
    centre = torch.stack(
        [w + (1.0 - w) * r[:, 0], h + (1.0 - h) * r[:, 1]], 1
    )  # numpy's low + (high - low)·U
    return RandAugDraws(op, u, cut, centre)


def randaug_draws_python(
    b: int,
    n: int,
    w: int,
    h: int,
    rng=_random,
    np_rng=np.random,
    device: torch.device | str = "cpu",
) -> RandAugDraws:
    """Draws in the original's order, image after image: ``choices(k=n)`` (n uniforms), one uniform per
    op value, the cutout uniform, then (if the cutout is not empty) numpy's two centre uniforms."""
    ops, us, cuts, centres = [], [], [], []
    for _ in range(b):
        ops.append([int(math.floor(rng.random() * len(FIXMATCH_OPS))) for _ in range(n)])
        us.append([rng.random() for _ in range(n)])
        cut = rng.random()
        cuts.append(cut)
        centres.append([np_rng.uniform(w), np_rng.uniform(h)] if cut * 0.5 > 0 else [0.0, 0.0])
    f64 = dict(dtype=torch.float64, device=device)
    return RandAugDraws(
        torch.tensor(ops, device=device),
        torch.tensor(us, **f64),
        torch.tensor(cuts, **f64),
        torch.tensor(centres, **f64),
    )


@functools.cache
def _fixmatch_ranges(device: torch.device) -> tuple[Tensor, Tensor]:
    low = torch.tensor([float(lo) for _, lo, _ in FIXMATCH_OPS], dtype=torch.float64, device=device)
    high = torch.tensor(
        [float(hi) for _, _, hi in FIXMATCH_OPS], dtype=torch.float64, device=device
    )
    return low, high - low


def rand_augment(x: Tensor, draws: RandAugDraws, *, dense: bool | None = None) -> Tensor:
    """FixMatch's ``RandAugment(n, m)`` (PLReMix's ``--aug randaug``: n = 4, m unused) on a uint8 batch:
    ``n`` ops with values uniform in their ranges, then a Cutout of ``0.5·U`` of the width."""
    if x.dtype != torch.uint8:
        raise ValueError(f"rand_augment needs uint8 images, got {x.dtype}")
    low, span = _fixmatch_ranges(x.device)
    ops = fixmatch_ops()
    for k in range(draws.op.shape[1]):
        idx = draws.op[:, k]
        value = low[idx] + span[idx] * draws.u[:, k]
        x = apply_per_image(x, idx + 1, value, ops, dense=dense, may_use=range(1, len(ops)))
    frac = draws.cut * 0.5
    size = torch.where(frac > 0, frac * x.shape[3], -1.0)
    return cutout(x, size, draws.centre[:, 0], draws.centre[:, 1], CUTOUT_COLOR)


# ----------------------------------------------------------------------------- one PIL image at a time
class PILPolicy:
    """PIL image in, PIL image out: PLReMix's AutoAugment (``"cifar"``/``"imagenet"``) or FixMatch's
    RandAugment (``"randaug"``) on one image, as a torchvision transform for ``DataLoader`` workers.
    Draws from Python's ``random`` (and numpy's for the Cutout) exactly as the original's
    ``ImageNetPolicy``/``RandAugment`` do, so a seeded ``Compose`` gives the original's pixels."""

    def __init__(self, kind: str, num_ops: int = 4, fill: int = 128):
        if kind not in (*POLICIES, "randaug"):
            raise ValueError(f"unknown policy {kind!r}; expected one of {(*POLICIES, 'randaug')}")
        self.kind, self.num_ops, self.fill = kind, num_ops, fill

    def __call__(self, img):
        from PIL import Image

        x = (
            torch.from_numpy(np.asarray(img.convert("RGB")).copy())
            .permute(2, 0, 1)
            .unsqueeze(0)
            .contiguous()
        )
        if self.kind == "randaug":
            x = rand_augment(x, randaug_draws_python(1, self.num_ops, x.shape[3], x.shape[2]))
        else:
            x = auto_augment(x, self.kind, policy_draws_python(self.kind, 1), self.fill)
        return Image.fromarray(x[0].permute(1, 2, 0).numpy())

    def __repr__(self) -> str:
        return f"PILPolicy({self.kind!r})"
