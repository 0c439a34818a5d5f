"""Per-sample AutoAugment (CIFAR-10 policy) and RandAugment on uint8 batches.

Each image draws its own sub-policy (AutoAugment) or its own ops (RandAugment), its own
application coin flips and its own magnitude signs, exactly like applying torchvision's
``AutoAugment(AutoAugmentPolicy.CIFAR10)`` / ``RandAugment`` to every image separately, but batched:
on the CPU, for each op slot the batch is sorted by op id and every op runs once on its contiguous
segment (one host sync per slot to read the segment sizes, instead of one per sample). On CUDA that
sync would stall the asynchronous queue inside every training step, so there every op the slot may
use runs on the whole batch and ``torch.where`` picks each image's result (no host sync). The five
geometric ops (ShearX/Y, TranslateX/Y, Rotate) share one warp.

Magnitudes are torchvision's (``autoaugment.py`` @ 0.29): 10 bins for AutoAugment, 31 for
RandAugment; ShearX/Y up to 0.3, TranslateX/Y up to 150/331 of the image size (truncated to whole
pixels), Rotate up to 30°, Brightness/Color/Contrast/Sharpness factor ``1 ± 0.9``, Posterize 8..4
bits, Solarize threshold 255..0; geometric ops fill with ``fill`` (128 by default; torchvision's
default is 0). This is torchvision's AutoAugment, not PLReMix's PIL one (always +θ rotations, bicubic
shears, rounded translations, thresholds 256..0): ``lnl.data.pil_augment`` ports that one exactly.

:func:`auto_augment_imagenet` adds TF's ImageNet policy ``v0`` (IEG's WebVision strong view) with
TF's level-to-argument mapping (:func:`v0_argument`) on the same batched ops, plus SolarizeAdd.
"""

from __future__ import annotations

import functools
from collections.abc import Sequence

import torch
from torch import Tensor

from lnl.data import augment as A

#: Op ids; the geometric ops are consecutive (1..5) so that they form one segment per slot.
OPS = (
    "Identity",
    "ShearX",
    "ShearY",
    "TranslateX",
    "TranslateY",
    "Rotate",
    "Brightness",
    "Color",
    "Contrast",
    "Sharpness",
    "Posterize",
    "Solarize",
    "AutoContrast",
    "Equalize",
    "Invert",
)
OP_ID = {name: i for i, name in enumerate(OPS)}
_GEOMETRIC = range(OP_ID["ShearX"], OP_ID["Rotate"] + 1)
_SIGNED = {
    "ShearX",
    "ShearY",
    "TranslateX",
    "TranslateY",
    "Rotate",
    "Brightness",
    "Color",
    "Contrast",
    "Sharpness",
}

#: AutoAugment's CIFAR-10 policy (Cubuk et al. 2019): 25 sub-policies of two (op, probability,
#: magnitude bin) triples; magnitude None for ops without one.
CIFAR10_POLICY = (
    (("Invert", 0.1, None), ("Contrast", 0.2, 6)),
    (("Rotate", 0.7, 2), ("TranslateX", 0.3, 9)),
    (("Sharpness", 0.8, 1), ("Sharpness", 0.9, 3)),
    (("ShearY", 0.5, 8), ("TranslateY", 0.7, 9)),
    (("AutoContrast", 0.5, None), ("Equalize", 0.9, None)),
    (("ShearY", 0.2, 7), ("Posterize", 0.3, 7)),
    (("Color", 0.4, 3), ("Brightness", 0.6, 7)),
    (("Sharpness", 0.3, 9), ("Brightness", 0.7, 9)),
    (("Equalize", 0.6, None), ("Equalize", 0.5, None)),
    (("Contrast", 0.6, 7), ("Sharpness", 0.6, 5)),
    (("Color", 0.7, 7), ("TranslateX", 0.5, 8)),
    (("Equalize", 0.3, None), ("AutoContrast", 0.4, None)),
    (("TranslateY", 0.4, 3), ("Sharpness", 0.2, 6)),
    (("Brightness", 0.9, 6), ("Color", 0.2, 8)),
    (("Solarize", 0.5, 2), ("Invert", 0.0, None)),
    (("Equalize", 0.2, None), ("AutoContrast", 0.6, None)),
    (("Equalize", 0.2, None), ("Equalize", 0.6, None)),
    (("Color", 0.9, 9), ("Equalize", 0.6, None)),
    (("AutoContrast", 0.8, None), ("Solarize", 0.2, 8)),
    (("Brightness", 0.1, 3), ("Color", 0.7, 0)),
    (("Solarize", 0.4, 5), ("AutoContrast", 0.9, None)),
    (("TranslateY", 0.9, 9), ("TranslateY", 0.7, 9)),
    (("AutoContrast", 0.9, None), ("Solarize", 0.8, 3)),
    (("Equalize", 0.8, None), ("Invert", 0.1, None)),
    (("TranslateY", 0.7, 9), ("AutoContrast", 0.9, None)),
)

#: RandAugment's op set (torchvision order).
RANDAUG_OPS = (
    "Identity",
    "ShearX",
    "ShearY",
    "TranslateX",
    "TranslateY",
    "Rotate",
    "Brightness",
    "Color",
    "Contrast",
    "Sharpness",
    "Posterize",
    "Solarize",
    "AutoContrast",
    "Equalize",
)


def magnitude_table(num_bins: int, height: int, width: int) -> Tensor:
    """``Tensor[len(OPS), num_bins]`` float64: the unsigned magnitude of every op at every bin.

    Built with ``torch.linspace`` in float32, like torchvision, then widened, so values match
    exactly.
    """
    table = torch.zeros(len(OPS), num_bins, dtype=torch.float64)

    def lin(lo: float, hi: float) -> Tensor:
        return torch.linspace(lo, hi, num_bins).to(torch.float64)

    table[OP_ID["ShearX"]] = table[OP_ID["ShearY"]] = lin(0.0, 0.3)
    table[OP_ID["TranslateX"]] = lin(0.0, 150.0 / 331.0 * width)
    table[OP_ID["TranslateY"]] = lin(0.0, 150.0 / 331.0 * height)
    table[OP_ID["Rotate"]] = lin(0.0, 30.0)
    for name in ("Brightness", "Color", "Contrast", "Sharpness"):
        table[OP_ID[name]] = lin(0.0, 0.9)
    table[OP_ID["Posterize"]] = (
        8 - (torch.arange(num_bins) / ((num_bins - 1) / 4)).round().int()
    ).double()
    table[OP_ID["Solarize"]] = lin(255.0, 0.0)
    return table


_SIGNED_MASK = torch.tensor([name in _SIGNED for name in OPS])


def _geometric(x: Tensor, op: Tensor, mag: Tensor, fill: int) -> Tensor:
    """Apply ShearX/ShearY/TranslateX/TranslateY/Rotate, one per sample, in one warp."""
    _, _, h, w = x.shape
    trunc = torch.trunc(mag)  # torchvision translates by int(magnitude)
    zero = torch.zeros_like(mag)
    candidates = torch.stack(
        [
            A.shear_x_matrix(mag, w, h),
            A.shear_y_matrix(mag, w, h),
            A.translate_matrix(trunc, zero),
            A.translate_matrix(zero, trunc),
            A.rotate_matrix(mag),
        ]
    )  # [5, B, 2, 3]
    pick = (op - OP_ID["ShearX"]).view(1, -1, 1, 1).expand(1, -1, 2, 3)
    return A.affine_nearest(x, candidates.gather(0, pick)[0], fill)


def _apply_one(x: Tensor, name: str, mag: Tensor) -> Tensor:
    """Apply a non-geometric op with per-sample magnitudes ``mag``."""
    if name in ("Brightness", "Color", "Contrast", "Sharpness"):
        fn = {
            "Brightness": A.adjust_brightness,
            "Color": A.adjust_saturation,
            "Contrast": A.adjust_contrast,
            "Sharpness": A.adjust_sharpness,
        }[name]
        return fn(x, 1.0 + mag)
    if name == "Posterize":
        return A.posterize(x, mag.to(torch.int64))
    if name == "Solarize":
        return A.solarize(x, mag)
    if name == "AutoContrast":
        return A.autocontrast(x)
    if name == "Equalize":
        return A.equalize(x)
    if name == "Invert":
        return A.invert(x)
    return x


def apply_ops(
    x: Tensor,
    op: Tensor,
    mag: Tensor,
    fill: int = 128,
    *,
    dense: bool | None = None,
    may_use: Sequence[int] | None = None,
) -> Tensor:
    """Apply op ``op[b]`` with signed magnitude ``mag[b]`` to image ``b``.

    Args:
        x: ``Tensor[B, 3, H, W]`` uint8.
        op: ``Tensor[B]`` int64 indices into :data:`OPS` (0 = Identity).
        mag: ``Tensor[B]`` float64 magnitudes (already signed).
        fill: fill value of geometric ops.
        dense: ``True`` runs :func:`_apply_ops_dense` (no host sync), ``False``
            :func:`_apply_ops_sorted` (only the needed work, one host sync); ``None`` picks dense
            on CUDA, sorted elsewhere. Both give the same images.
        may_use: the op ids that ``op`` can hold (all of :data:`OPS` if ``None``); the dense path
            computes only these, images with any other op come back unchanged.

    Returns:
        ``Tensor[B, 3, H, W]`` uint8.
    """
    if dense is None:
        dense = x.is_cuda
    if dense:
        return _apply_ops_dense(x, op, mag, fill, range(len(OPS)) if may_use is None else may_use)
    return _apply_ops_sorted(x, op, mag, fill)


def _apply_ops_sorted(x: Tensor, op: Tensor, mag: Tensor, fill: int) -> Tensor:
    """Sort the batch by op and run each op on its segment: no wasted work, but reading the segment
    sizes is a host sync."""
    order = torch.argsort(op, stable=True)
    counts = torch.bincount(op, minlength=len(OPS)).tolist()  # the slot's one host sync
    xs, ops, mags = x[order], op[order], mag[order]
    out = torch.empty_like(xs)
    start = 0
    geo_start, geo_end = sum(counts[: _GEOMETRIC.start]), sum(counts[: _GEOMETRIC.stop])
    if geo_end > geo_start:
        out[geo_start:geo_end] = _geometric(
            xs[geo_start:geo_end], ops[geo_start:geo_end], mags[geo_start:geo_end], fill
        )
    for i, n in enumerate(counts):
        if n and i not in _GEOMETRIC:
            out[start : start + n] = _apply_one(
                xs[start : start + n], OPS[i], mags[start : start + n]
            )
        start += n
    result = torch.empty_like(x)
    result[order] = out
    return result


def _apply_ops_dense(
    x: Tensor, op: Tensor, mag: Tensor, fill: int, may_use: Sequence[int]
) -> Tensor:
    """Run every op of ``may_use`` on the whole batch and keep each image's own result.

    Sync-free (no data-dependent shapes or host reads), for CUDA: the ops are cheap on small images,
    so computing ~14 of them per image costs far less than stalling the queue for the op counts.
    Images whose op is in ``may_use`` get the same pixels as :func:`_apply_ops_sorted` gives.
    """
    out = x
    if any(i in _GEOMETRIC for i in may_use):
        # _geometric indexes its 5 matrices by op - ShearX: clamp the other ids to a valid index;
        # their warped images are discarded by the mask.
        geo_op = op.clamp(_GEOMETRIC.start, _GEOMETRIC.stop - 1)
        is_geo = (op >= _GEOMETRIC.start) & (op < _GEOMETRIC.stop)
        out = torch.where(_per_image(is_geo), _geometric(x, geo_op, mag, fill), out)
    for i in may_use:
        if i not in _GEOMETRIC and OPS[i] != "Identity":
            out = torch.where(_per_image(op == i), _apply_one(x, OPS[i], mag), out)
    return out


def _per_image(mask: Tensor) -> Tensor:
    """``[B]`` to ``[B, 1, 1, 1]``, to select whole images."""
    return mask.view(-1, 1, 1, 1)


# Constant tables, built and copied once per device: a host-to-device copy waits for all the work
# queued on the GPU, so rebuilding them per batch would stall the pipeline every step.
@functools.cache
def _signed_mask(device: torch.device) -> Tensor:
    return _SIGNED_MASK.to(device)


@functools.cache
def _magnitudes(num_bins: int, h: int, w: int, device: torch.device) -> Tensor:
    return magnitude_table(num_bins, h, w).to(device)


@functools.cache
def _cifar_policy(device: torch.device) -> tuple[Tensor, Tensor, Tensor]:
    """(op ids, probabilities, magnitude bins), each ``[25, 2]``."""
    return (
        torch.tensor([[OP_ID[o] for o, _, _ in sp] for sp in CIFAR10_POLICY], device=device),
        torch.tensor([[p for _, p, _ in sp] for sp in CIFAR10_POLICY], device=device),
        torch.tensor([[m or 0 for _, _, m in sp] for sp in CIFAR10_POLICY], device=device),
    )


@functools.cache
def _randaug_choices(device: torch.device) -> Tensor:
    return torch.tensor([OP_ID[o] for o in RANDAUG_OPS], device=device)


def _slot_ops(policy: tuple, op_id: dict[str, int], slot: int) -> tuple[int, ...]:
    """The op ids a policy's ``slot`` can draw (what the dense path of :func:`apply_ops` must run);
    skipped ops become Identity, which it never needs to run."""
    return tuple(sorted({op_id[sp[slot][0]] for sp in policy if sp[slot][0] in op_id}))


_CIFAR_SLOT_OPS = tuple(_slot_ops(CIFAR10_POLICY, OP_ID, slot) for slot in range(2))
_RANDAUG_OP_IDS = tuple(OP_ID[o] for o in RANDAUG_OPS)


def _signed(op: Tensor, mag: Tensor, generator: torch.Generator) -> Tensor:
    """Negate the magnitude of signed ops with probability 0.5."""
    flip = torch.rand(op.shape, device=op.device, generator=generator) < 0.5
    signed = _signed_mask(op.device)[op] & flip
    return torch.where(signed, -mag, mag)


def _as_uint8(x: Tensor) -> Tensor:
    """Float images in [0, 1] to uint8 (rounded); uint8 passes through."""
    if x.dtype == torch.uint8:
        return x
    if not x.is_floating_point():
        raise ValueError(f"images must be uint8 or float in [0, 1], got {x.dtype}")
    return (x.clamp(0, 1) * 255).round().to(torch.uint8)


def _like(out: Tensor, x: Tensor) -> Tensor:
    """Return ``out`` (uint8) in the dtype of the input ``x`` (float results in [0, 1])."""
    return out if x.dtype == torch.uint8 else (out.to(x.dtype) / 255)


def auto_augment(
    x: Tensor, generator: torch.Generator, fill: int = 128, *, dense: bool | None = None
) -> Tensor:
    """AutoAugment with the CIFAR-10 policy, a random sub-policy per image.

    The ops work on uint8 pixels (as torchvision's do); float input in [0, 1] is quantised to uint8
    first and returned as float in [0, 1].

    Args:
        x: ``Tensor[B, 3, H, W]`` uint8, or float in [0, 1].
        generator: random source on ``x.device``.
        fill: fill value of geometric ops, in uint8 units (PLReMix: 128).
        dense: as in :func:`apply_ops` (``None``: sync-free on CUDA, sorted on the CPU).

    Returns:
        ``Tensor[B, 3, H, W]`` of the input dtype.
    """
    x_in, x = x, _as_uint8(x)
    b, _, h, w = x.shape
    dev = x.device
    table = _magnitudes(10, h, w, dev)
    ids, probs, bins = _cifar_policy(dev)
    policy = torch.randint(0, len(CIFAR10_POLICY), (b,), device=dev, generator=generator)
    for slot in range(2):
        op = ids[policy, slot]
        applied = torch.rand(b, device=dev, generator=generator) <= probs[policy, slot]
        mag = _signed(op, table[op, bins[policy, slot]], generator)
        op = torch.where(applied, op, 0)
        x = apply_ops(x, op, mag, fill, dense=dense, may_use=_CIFAR_SLOT_OPS[slot])
    return _like(x, x_in)


def rand_augment(
    x: Tensor,
    generator: torch.Generator,
    num_ops: int = 2,
    magnitude: int | Tensor = 9,
    num_bins: int = 31,
    fill: int = 128,
    *,
    dense: bool | None = None,
) -> Tensor:
    """RandAugment: ``num_ops`` ops drawn uniformly per image, each at ``magnitude`` (of
    ``num_bins``).

    Args:
        x: ``Tensor[B, 3, H, W]`` uint8, or float in [0, 1] (quantised as in :func:`auto_augment`).
        generator: random source on ``x.device``.
        num_ops: ops per image (torchvision default 2; PLReMix passes 4 with magnitude 6).
        magnitude: magnitude bin in ``[0, num_bins)``; or a 0-d int64 tensor on ``x.device`` (a bin
            drawn on the device: not range-checked, since reading it would be a host sync).
        num_bins: number of magnitude bins.
        fill: fill value of geometric ops, in uint8 units.
        dense: as in :func:`apply_ops`.

    Returns:
        ``Tensor[B, 3, H, W]`` of the input dtype.
    """
    if not isinstance(magnitude, Tensor) and not 0 <= magnitude < num_bins:
        raise ValueError(f"magnitude must be in [0, {num_bins}), got {magnitude}")
    x_in, x = x, _as_uint8(x)
    b, _, h, w = x.shape
    dev = x.device
    table = _magnitudes(num_bins, h, w, dev)
    choices = _randaug_choices(dev)
    for _ in range(num_ops):
        op = choices[torch.randint(0, len(choices), (b,), device=dev, generator=generator)]
        mag = _signed(op, table[op, magnitude], generator)
        x = apply_ops(x, op, mag, fill, dense=dense, may_use=_RANDAUG_OP_IDS)
    return _like(x, x_in)


#: AutoAugment's ImageNet policy ``v0`` as TF's ``autoaugment.py`` (EfficientNet's, copied into
#: IEG's ``dataset_utils``) defines it: 25 sub-policies of two (op, probability, level 0..10)
#: triples. IEG uses it for the strong view of WebVision-mini.
IMAGENET_POLICY_V0 = (
    (("Equalize", 0.8, 1), ("ShearY", 0.8, 4)),
    (("Color", 0.4, 9), ("Equalize", 0.6, 3)),
    (("Color", 0.4, 1), ("Rotate", 0.6, 8)),
    (("Solarize", 0.8, 3), ("Equalize", 0.4, 7)),
    (("Solarize", 0.4, 2), ("Solarize", 0.6, 2)),
    (("Color", 0.2, 0), ("Equalize", 0.8, 8)),
    (("Equalize", 0.4, 8), ("SolarizeAdd", 0.8, 3)),
    (("ShearX", 0.2, 9), ("Rotate", 0.6, 8)),
    (("Color", 0.6, 1), ("Equalize", 1.0, 2)),
    (("Invert", 0.4, 9), ("Rotate", 0.6, 0)),
    (("Equalize", 1.0, 9), ("ShearY", 0.6, 3)),
    (("Color", 0.4, 7), ("Equalize", 0.6, 0)),
    (("Posterize", 0.4, 6), ("AutoContrast", 0.4, 7)),
    (("Solarize", 0.6, 8), ("Color", 0.6, 9)),
    (("Solarize", 0.2, 4), ("Rotate", 0.8, 9)),
    (("Rotate", 1.0, 7), ("TranslateY", 0.8, 9)),
    (("ShearX", 0.0, 0), ("Solarize", 0.8, 4)),
    (("ShearY", 0.8, 0), ("Color", 0.6, 4)),
    (("Color", 1.0, 0), ("Rotate", 0.6, 2)),
    (("Equalize", 0.8, 4), ("Equalize", 0.0, 8)),
    (("Equalize", 1.0, 4), ("AutoContrast", 0.6, 2)),
    (("ShearY", 0.4, 7), ("SolarizeAdd", 0.6, 7)),
    (("Posterize", 0.8, 2), ("Solarize", 0.6, 10)),
    (("Solarize", 0.6, 8), ("Equalize", 0.6, 1)),
    (("Color", 0.8, 6), ("Rotate", 0.4, 5)),
)

#: TF's ``translate_const`` for ImageNet: pixels at level 10 (whatever the image size).
V0_TRANSLATE_CONST = 250
#: Only the geometric ops get TF's random sign; enhance factors are not mirrored around 1.
_V0_SIGNED = {"ShearX", "ShearY", "TranslateX", "TranslateY", "Rotate"}
#: SolarizeAdd is not one of :data:`OPS` (torchvision has no such op); it gets the next id.
_SOLARIZE_ADD = len(OPS)


def v0_argument(name: str, level: int) -> float:
    """TF's ``level_to_arg`` for a v0 op, before the random sign: Rotate degrees, Shear factor,
    Translate pixels, Color/Contrast/Brightness/Sharpness enhance factor, Posterize bits, Solarize
    threshold, SolarizeAdd addition; 0 for ops without an argument."""
    frac = level / 10.0
    if name == "Rotate":
        return frac * 30.0
    if name in ("ShearX", "ShearY"):
        return frac * 0.3
    if name in ("TranslateX", "TranslateY"):
        return frac * float(V0_TRANSLATE_CONST)
    if name in ("Color", "Contrast", "Brightness", "Sharpness"):
        return frac * 1.8 + 0.1
    scale = {"Posterize": 4, "Solarize": 256, "SolarizeAdd": 110}.get(name)
    return float(int(frac * scale)) if scale else 0.0


def _v0_magnitude(name: str, level: int) -> float:
    """The argument in :func:`apply_ops` units (enhance ops there take ``factor - 1``)."""
    arg = v0_argument(name, level)
    return arg - 1.0 if name in ("Color", "Contrast", "Brightness", "Sharpness") else arg


def _solarize_add(x: Tensor, addition: Tensor) -> Tensor:
    """TF's ``solarize_add``: add ``addition[b]`` to pixels below 128, clipped to [0, 255]."""
    added = (x.to(torch.int16) + addition.to(torch.int16).view(-1, 1, 1, 1)).clamp(0, 255)
    return torch.where(x < 128, added.to(torch.uint8), x)


@functools.cache
def _imagenet_policy(device: torch.device) -> tuple[Tensor, Tensor, Tensor, Tensor]:
    """(op ids, probabilities, float64 magnitudes, signed?), each ``[25, 2]``, of the v0 policy."""
    table, op_id = IMAGENET_POLICY_V0, {**OP_ID, "SolarizeAdd": _SOLARIZE_ADD}
    return (
        torch.tensor([[op_id[o] for o, _, _ in sp] for sp in table], device=device),
        torch.tensor([[p for _, p, _ in sp] for sp in table], device=device),
        torch.tensor(
            [[_v0_magnitude(o, lv) for o, _, lv in sp] for sp in table],
            dtype=torch.float64,
            device=device,
        ),
        torch.tensor([[o in _V0_SIGNED for o, _, _ in sp] for sp in table], device=device),
    )


_IMAGENET_SLOT_OPS = tuple(_slot_ops(IMAGENET_POLICY_V0, OP_ID, slot) for slot in range(2))


def _apply_solarize_add(x: Tensor, add: Tensor, addition: Tensor, dense: bool) -> Tensor:
    """SolarizeAdd on the images where ``add``: on the CPU only on those rows; dense (CUDA) on all
    and selected by ``torch.where``, since finding the rows (``nonzero``) is a host sync."""
    if dense:
        return torch.where(_per_image(add), _solarize_add(x, addition), x)
    rows = add.nonzero().squeeze(1)
    if len(rows):
        x = x.clone()
        x[rows] = _solarize_add(x[rows], addition[rows])
    return x


def auto_augment_imagenet(
    x: Tensor, generator: torch.Generator, fill: int = 128, *, dense: bool | None = None
) -> Tensor:
    """AutoAugment with the ImageNet policy ``v0`` (TF's), a random sub-policy per image.

    Each op applies with its probability; Rotate/Shear/Translate take a random sign; geometric ops
    fill with ``fill`` (TF: 128) and translate by whole pixels (up to 250 at level 10).

    Args:
        x: ``Tensor[B, 3, H, W]`` uint8, or float in [0, 1] (quantised as in :func:`auto_augment`).
        generator: random source on ``x.device``.
        fill: fill value of geometric ops, in uint8 units.
        dense: as in :func:`apply_ops` (also for SolarizeAdd).

    Returns:
        ``Tensor[B, 3, H, W]`` of the input dtype.
    """
    x_in, x = x, _as_uint8(x)
    b, dev = x.shape[0], x.device
    dense = x.is_cuda if dense is None else dense
    ids, probs, mags, signs = _imagenet_policy(dev)
    policy = torch.randint(0, len(IMAGENET_POLICY_V0), (b,), device=dev, generator=generator)
    for slot in range(2):
        op = ids[policy, slot]
        applied = torch.rand(b, device=dev, generator=generator) <= probs[policy, slot]
        flip = (torch.rand(b, device=dev, generator=generator) < 0.5) & signs[policy, slot]
        mag = torch.where(flip, -mags[policy, slot], mags[policy, slot])
        add = applied & (op == _SOLARIZE_ADD)
        op = torch.where(applied & ~add, op, 0)
        x = apply_ops(x, op, mag, fill, dense=dense, may_use=_IMAGENET_SLOT_OPS[slot])
        x = _apply_solarize_add(x, add, mag, dense)
    return _like(x, x_in)
