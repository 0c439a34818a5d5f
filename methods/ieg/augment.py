"""IEG's CIFAR strong augmentations as the TF code draws them (dataset_utils/utils.py,
augmentation_transforms.py, randaugment.py, autoaugment.py ``cifar10_policies``), batched on uint8
images with lnl's ops (``lnl.data.autoaugment.apply_ops``).

* ``--aug_type autoaug``: each image draws one of the **95** sub-policies of the three AutoAugment
  experiment groups (20 + 35 + 40), as ``pool_policy_augmentation`` does when ``POOL is None``
  (every image calls ``apply_autoaugment`` on its own, so it draws its own sub-policy).
* ``--aug_type randaug``: ``random_augmentation`` draws 2 ops (with replacement) of 14 and a level
  1..9 for each **once per batch**; every image applies each with probability ½.

Levels map to arguments with TF's ``float_parameter``/``int_parameter`` (level/10 of the maximum, the
int ones truncated): Rotate ``int(3·L)``°, Shear ``0.03·L``, Translate ``int(L)`` px, enhance factors
``0.18·L + 0.1``, Posterize ``4 − int(0.4·L)`` bits, Solarize threshold ``256 − int(25.6·L)``, Cutout
``int(2·L)`` px; Rotate/Shear/Translate get a random sign. Pixels that geometric ops and Cutout leave
empty are grey (TF: alpha 0, set to 0 in [−1, 1]), ``fill`` here.
"""

from __future__ import annotations

import functools

import torch
from torch import Tensor

from lnl.data.autoaugment import OP_ID, OPS, apply_ops

#: The 95 CIFAR sub-policies of ``cifar10_policies()``, "op prob level, op prob level" separated by "|",
#: in the original's order: exp0_0..exp0_3, exp1_0..exp1_6, exp2_0..exp2_7, five sub-policies each (one
#: paragraph per experiment).
_POLICY_TEXT = """
Invert .1 7, Contrast .2 6 | Rotate .7 2, TranslateX .3 9 | Sharpness .8 1, Sharpness .9 3
ShearY .5 8, TranslateY .7 9 | AutoContrast .5 8, Equalize .9 2

Solarize .4 5, AutoContrast .9 3 | TranslateY .9 9, TranslateY .7 9 | AutoContrast .9 2, Solarize .8 3
Equalize .8 8, Invert .1 3 | TranslateY .7 9, AutoContrast .9 1

Solarize .4 5, AutoContrast 0 2 | TranslateY .7 9, TranslateY .7 9 | AutoContrast .9 0, Solarize .4 3
Equalize .7 5, Invert .1 3 | TranslateY .7 9, TranslateY .7 9

Solarize .4 5, AutoContrast .9 1 | TranslateY .8 9, TranslateY .9 9 | AutoContrast .8 0, TranslateY .7 9
TranslateY .2 7, Color .9 6 | Equalize .7 6, Color .4 9

ShearY .2 7, Posterize .3 7 | Color .4 3, Brightness .6 7 | Sharpness .3 9, Brightness .7 9
Equalize .6 5, Equalize .5 1 | Contrast .6 7, Sharpness .6 5

Brightness .3 7, AutoContrast .5 8 | AutoContrast .9 4, AutoContrast .5 6 | Solarize .3 5, Equalize .6 5
TranslateY .2 4, Sharpness .3 3 | Brightness 0 8, Color .8 8

Solarize .2 6, Color .8 6 | Solarize .2 6, AutoContrast .8 1 | Solarize .4 1, Equalize .6 5
Brightness 0 0, Solarize .5 2 | AutoContrast .9 5, Brightness .5 3

Contrast .7 5, Brightness 0 2 | Solarize .2 8, Solarize .1 5 | Contrast .5 1, TranslateY .2 9
AutoContrast .6 5, TranslateY 0 9 | AutoContrast .9 4, Equalize .8 4

Brightness 0 7, Equalize .4 7 | Solarize .2 5, Equalize .7 5 | Equalize .6 8, Color .6 2
Color .3 7, Color .2 4 | AutoContrast .5 2, Solarize .7 2

AutoContrast .2 0, Equalize .1 0 | ShearY .6 5, Equalize .6 5 | Brightness .9 3, AutoContrast .4 1
Equalize .8 8, Equalize .7 7 | Equalize .7 7, Solarize .5 0

Equalize .8 4, TranslateY .8 9 | TranslateY .8 9, TranslateY .6 9 | TranslateY .9 0, TranslateY .5 9
AutoContrast .5 3, Solarize .3 4 | Solarize .5 3, Equalize .4 4

Color .7 7, TranslateX .5 8 | Equalize .3 7, AutoContrast .4 8 | TranslateY .4 3, Sharpness .2 6
Brightness .9 6, Color .2 8 | Solarize .5 2, Invert 0 3

AutoContrast .1 5, Brightness 0 0 | Cutout .2 4, Equalize .1 1 | Equalize .7 7, AutoContrast .6 4
Color .1 8, ShearY .2 3 | ShearY .4 2, Rotate .7 0

ShearY .1 3, AutoContrast .9 5 | TranslateY .3 6, Cutout .3 3 | Equalize .5 0, Solarize .6 6
AutoContrast .3 5, Rotate .2 7 | Equalize .8 2, Invert .4 0

Equalize .9 5, Color .7 0 | Equalize .1 1, ShearY .1 3 | AutoContrast .7 3, Equalize .7 0
Brightness .5 1, Contrast .1 7 | Contrast .1 4, Solarize .6 5

Solarize .2 3, ShearX 0 0 | TranslateX .3 0, TranslateX .6 0 | Equalize .5 9, TranslateY .6 7
ShearX .1 0, Sharpness .5 1 | Equalize .8 6, Invert .3 6

AutoContrast .3 9, Cutout .5 3 | ShearX .4 4, AutoContrast .9 2 | ShearX 0 3, Posterize 0 3
Solarize .4 3, Color .2 4 | Equalize .1 4, Equalize .7 6

Equalize .3 8, AutoContrast .4 3 | Solarize .6 4, AutoContrast .7 6 | AutoContrast .2 9, Brightness .4 8
Equalize .1 0, Equalize 0 6 | Equalize .8 4, Equalize 0 4

Equalize .5 5, AutoContrast .1 2 | Solarize .5 5, AutoContrast .9 5 | AutoContrast .6 1, AutoContrast .7 8
Equalize .2 0, AutoContrast .1 2 | Equalize .6 9, Equalize .4 4
"""


def _parse(text: str) -> tuple:
    subs = [sp for line in text.strip().splitlines() if line.strip() for sp in line.split("|")]
    return tuple(
        tuple((o, float(p), int(lv)) for o, p, lv in (op.split() for op in sp.split(",")))
        for sp in subs
    )


CIFAR_POLICIES = _parse(_POLICY_TEXT)
#: randaugment.py ``RANDOM_POLICY_OPS``.
RANDAUG_OPS = (
    "Identity",
    "AutoContrast",
    "Equalize",
    "Rotate",
    "Solarize",
    "Color",
    "Contrast",
    "Brightness",
    "Sharpness",
    "ShearX",
    "TranslateX",
    "TranslateY",
    "Posterize",
    "ShearY",
)
SIGNED = {"Rotate", "ShearX", "ShearY", "TranslateX", "TranslateY"}
ENHANCE = {"Color", "Contrast", "Brightness", "Sharpness"}
CUTOUT = len(OPS)  # not one of lnl's ops: its own id, run after apply_ops
PARAMETER_MAX = 10


def tf_argument(name: str, level: int) -> float:
    """augmentation_transforms.py's argument of ``name`` at ``level`` (before the random sign)."""

    def as_float(maxval):
        return float(level) * maxval / PARAMETER_MAX

    def as_int(maxval):
        return int(level * maxval / PARAMETER_MAX)

    if name == "Rotate":
        return float(as_int(30))
    if name in ("ShearX", "ShearY"):
        return as_float(0.3)
    if name in ("TranslateX", "TranslateY"):
        return float(as_int(10))
    if name in ENHANCE:
        return as_float(1.8) + 0.1
    if name == "Posterize":
        return float(4 - as_int(4))
    if name == "Solarize":
        return float(256 - as_int(256))
    if name == "Cutout":
        return float(as_int(20))
    return 0.0


def _magnitude(name: str, level: int) -> float:
    """:func:`tf_argument` in ``apply_ops`` units (enhance ops there take ``factor − 1``)."""
    arg = tf_argument(name, level)
    return arg - 1.0 if name in ENHANCE else arg


def _op_id(name: str) -> int:
    return CUTOUT if name == "Cutout" else OP_ID[name]


@functools.cache
def _policy_tables(device: torch.device) -> tuple[Tensor, Tensor, Tensor, Tensor]:
    """(op ids, probabilities, float64 magnitudes, signed?), each ``[95, 2]``."""
    rows = CIFAR_POLICIES
    return (
        torch.tensor([[_op_id(o) for o, _, _ in sp] for sp in rows], device=device),
        torch.tensor([[p for _, p, _ in sp] for sp in rows], dtype=torch.float64, device=device),
        torch.tensor(
            [[_magnitude(o, lv) for o, _, lv in sp] for sp in rows],
            dtype=torch.float64,
            device=device,
        ),
        torch.tensor([[o in SIGNED for o, _, _ in sp] for sp in rows], device=device),
    )


@functools.cache
def _randaug_tables(device: torch.device) -> tuple[Tensor, Tensor, Tensor]:
    """(op ids ``[14]``, magnitudes ``[14, 10]`` by level, signed? ``[14]``)."""
    return (
        torch.tensor([OP_ID[o] for o in RANDAUG_OPS], device=device),
        torch.tensor(
            [[_magnitude(o, lv) for lv in range(PARAMETER_MAX)] for o in RANDAUG_OPS],
            dtype=torch.float64,
            device=device,
        ),
        torch.tensor([o in SIGNED for o in RANDAUG_OPS], device=device),
    )


def cutout_fill(x: Tensor, size: Tensor, g: torch.Generator, fill: int) -> Tensor:
    """``create_cutout_mask`` per image: centre uniform over the image, the square
    ``[c − size//2, c + size//2)`` clipped at the borders set to ``fill``; ``size`` 0 leaves the image."""
    b, _, h, w = x.shape
    cy = torch.randint(0, h, (b, 1, 1), device=x.device, generator=g)
    cx = torch.randint(0, w, (b, 1, 1), device=x.device, generator=g)
    half = (size.to(torch.int64) // 2).view(b, 1, 1)
    rows = torch.arange(h, device=x.device).view(1, h, 1)
    cols = torch.arange(w, device=x.device).view(1, 1, w)
    inside = (rows >= cy - half) & (rows < cy + half) & (cols >= cx - half) & (cols < cx + half)
    return torch.where(inside.unsqueeze(1), torch.full_like(x, fill), x)


def _apply_slot(
    x: Tensor,
    op: Tensor,
    mag: Tensor,
    signed: Tensor,
    applied: Tensor,
    g: torch.Generator,
    fill: int,
) -> Tensor:
    """One op per image where ``applied`` (TF: ``random.random() < probability``), with a random sign
    for the signed ops (TF: ``random.random() > 0.5``)."""
    negative = (torch.rand(op.shape, device=op.device, generator=g) > 0.5) & signed
    mag = torch.where(negative, -mag, mag)
    cut = applied & (op == CUTOUT)
    x = apply_ops(x, torch.where(applied & ~cut, op, 0), mag, fill)
    return cutout_fill(x, torch.where(cut, mag, torch.zeros_like(mag)), g, fill)


def tf_autoaugment(x: Tensor, g: torch.Generator, fill: int = 128) -> Tensor:
    """``--aug_type autoaug``: a random one of the 95 sub-policies per image. uint8 ``[B, 3, H, W]``."""
    b, dev = x.shape[0], x.device
    ids, probs, mags, signs = _policy_tables(dev)
    policy = torch.randint(0, len(CIFAR_POLICIES), (b,), device=dev, generator=g)
    for slot in range(2):
        applied = torch.rand(b, device=dev, generator=g, dtype=torch.float64) < probs[policy, slot]
        x = _apply_slot(
            x, ids[policy, slot], mags[policy, slot], signs[policy, slot], applied, g, fill
        )
    return x


def tf_randaugment(x: Tensor, g: torch.Generator, fill: int = 128, num_ops: int = 2) -> Tensor:
    """``--aug_type randaug``: ``num_ops`` ops and their levels (1..9) drawn once for the batch,
    each applied to an image with probability ½. uint8 ``[B, 3, H, W]``."""
    b, dev = x.shape[0], x.device
    ids, mags, signs = _randaug_tables(dev)
    choice = torch.randint(0, len(RANDAUG_OPS), (num_ops,), device=dev, generator=g)
    level = torch.randint(1, PARAMETER_MAX, (num_ops,), device=dev, generator=g)
    for slot in range(num_ops):
        c, lv = choice[slot].expand(b), level[slot].expand(b)
        applied = torch.rand(b, device=dev, generator=g) < 0.5
        x = _apply_slot(x, ids[c], mags[c, lv], signs[c], applied, g, fill)
    return x
