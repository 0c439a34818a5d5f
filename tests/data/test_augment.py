"""Batched augmentations against torchvision's per-image functional ops on fixed parameters."""

from __future__ import annotations

import math

import pytest
import torch
import torchvision.transforms.functional as TF
from torchvision.transforms import InterpolationMode

from lnl.data import augment as A
from lnl.data.autoaugment import (
    CIFAR10_POLICY,
    OP_ID,
    OPS,
    apply_ops,
    auto_augment,
    auto_augment_imagenet,
    magnitude_table,
    rand_augment,
)

NEAREST = InterpolationMode.NEAREST


@pytest.fixture(scope="module")
def batch(cifar10_test) -> torch.Tensor:
    """48 real CIFAR-10 test images, ``[B, 3, 32, 32]`` uint8."""
    return cifar10_test.images[:48].permute(0, 3, 1, 2).contiguous()


def reference(op: str, img: torch.Tensor, m: float, fill: int) -> torch.Tensor:
    """torchvision's AutoAugment ``_apply_op`` for one image, spelled out with public functions."""
    f = [float(fill)] * 3
    if op == "ShearX":
        return TF.affine(
            img, 0.0, [0, 0], 1.0, [math.degrees(math.atan(m)), 0.0], NEAREST, f, [0, 0]
        )
    if op == "ShearY":
        return TF.affine(
            img, 0.0, [0, 0], 1.0, [0.0, math.degrees(math.atan(m))], NEAREST, f, [0, 0]
        )
    if op == "TranslateX":
        return TF.affine(img, 0.0, [int(m), 0], 1.0, [0.0, 0.0], NEAREST, f)
    if op == "TranslateY":
        return TF.affine(img, 0.0, [0, int(m)], 1.0, [0.0, 0.0], NEAREST, f)
    if op == "Rotate":
        return TF.rotate(img, m, NEAREST, fill=f)
    simple = {
        "Brightness": lambda: TF.adjust_brightness(img, 1 + m),
        "Color": lambda: TF.adjust_saturation(img, 1 + m),
        "Contrast": lambda: TF.adjust_contrast(img, 1 + m),
        "Sharpness": lambda: TF.adjust_sharpness(img, 1 + m),
        "Posterize": lambda: TF.posterize(img, int(m)),
        "Solarize": lambda: TF.solarize(img, m),
        "AutoContrast": lambda: TF.autocontrast(img),
        "Equalize": lambda: TF.equalize(img),
        "Invert": lambda: TF.invert(img),
        "Identity": lambda: img,
    }
    return simple[op]()


def test_crop_flip_equals_torchvision_for_every_offset(batch):
    x = batch[:4]
    for top in range(9):
        for left in range(9):
            for flip in (False, True):
                b = len(x)
                out = A.crop_flip(
                    x,
                    torch.full((b,), top),
                    torch.full((b,), left),
                    torch.full((b,), flip),
                    padding=4,
                )
                for i in range(b):
                    ref = TF.crop(TF.pad(x[i], [4]), top, left, 32, 32)
                    ref = TF.hflip(ref) if flip else ref
                    assert torch.equal(out[i], ref), (top, left, flip)


def test_crop_flip_mixed_parameters_and_fill(batch):
    g = torch.Generator().manual_seed(0)
    b = len(batch)
    top, left = torch.randint(0, 9, (b,), generator=g), torch.randint(0, 9, (b,), generator=g)
    flip = torch.rand(b, generator=g) < 0.5
    out = A.crop_flip(batch, top, left, flip, padding=4, fill=77)
    for i in range(b):
        ref = TF.crop(TF.pad(batch[i], [4], fill=77), int(top[i]), int(left[i]), 32, 32)
        assert torch.equal(out[i], TF.hflip(ref) if flip[i] else ref)


def test_normalize_matches_to_tensor_and_normalize(batch):
    mean, std = (0.4914, 0.4822, 0.4465), (0.2023, 0.1994, 0.2010)
    out = A.normalize(batch, mean, std)
    ref = TF.normalize(batch.float() / 255, mean, std)
    assert out.dtype == torch.float32 and torch.allclose(out, ref, atol=1e-6)
    bf = A.normalize(batch, mean, std, torch.bfloat16, channels_last=True)
    assert bf.dtype == torch.bfloat16 and bf.is_contiguous(memory_format=torch.channels_last)
    assert torch.allclose(bf.float(), ref, atol=0.02)


@pytest.mark.parametrize("fill", [0, 128])
@pytest.mark.parametrize("op", [o for o in OPS if o != "Identity"])
def test_each_op_equals_torchvision(batch, op, fill):
    table = magnitude_table(10, 32, 32)
    g = torch.Generator().manual_seed(OP_ID[op])
    b = len(batch)
    mag = table[OP_ID[op], torch.randint(0, 10, (b,), generator=g)]
    if op in (
        "ShearX",
        "ShearY",
        "TranslateX",
        "TranslateY",
        "Rotate",
        "Brightness",
        "Color",
        "Contrast",
        "Sharpness",
    ):
        mag = torch.where(torch.rand(b, generator=g) < 0.5, -mag, mag)
    out = apply_ops(batch, torch.full((b,), OP_ID[op]), mag, fill=fill)
    ref = torch.stack([reference(op, batch[i], mag[i].item(), fill) for i in range(b)])
    assert out.dtype == torch.uint8 and out.shape == batch.shape
    assert torch.equal(out, ref)


@pytest.mark.cuda
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
@pytest.mark.parametrize("op", [o for o in OPS if o != "Identity"])
def test_each_op_on_cuda_equals_the_cpu_op(batch, op):
    """Same parameters (drawn on the CPU), both devices: the GPU pipeline computes the same images.
    Contrast reduces a per-image mean in another order on CUDA, so it may differ by one level."""
    g = torch.Generator().manual_seed(100 + OP_ID[op])
    b = len(batch)
    mag = magnitude_table(10, 32, 32)[OP_ID[op], torch.randint(0, 10, (b,), generator=g)]
    mag = torch.where(torch.rand(b, generator=g) < 0.5, -mag, mag)
    ops = torch.full((b,), OP_ID[op])
    cpu = apply_ops(batch, ops, mag, fill=128)
    gpu = apply_ops(batch.cuda(), ops.cuda(), mag.cuda(), fill=128).cpu()
    diff = (cpu.int() - gpu.int()).abs()
    assert int(diff.max()) <= (1 if op == "Contrast" else 0), (
        op,
        int(diff.max()),
        int((diff > 0).sum()),
    )


def test_mixed_ops_in_one_batch_equal_per_image_ops(batch):
    """Sorting by op, applying per segment and scattering back keeps every image in place."""
    g = torch.Generator().manual_seed(1)
    b = len(batch)
    op = torch.randint(0, len(OPS), (b,), generator=g)
    table = magnitude_table(31, 32, 32)
    mag = table[op, torch.randint(0, 31, (b,), generator=g)]
    out = apply_ops(batch, op, mag, fill=128)
    for i in range(b):
        assert torch.equal(out[i], reference(OPS[int(op[i])], batch[i], mag[i].item(), 128)), OPS[
            int(op[i])
        ]


def test_magnitude_tables_match_torchvision():
    import torchvision.transforms as T

    for cls, bins in ((T.AutoAugment(), 10), (T.RandAugment(), 31)):
        space = cls._augmentation_space(bins, (32, 32))
        table = magnitude_table(bins, 32, 32)
        for name, (mags, _) in space.items():
            if mags.ndim:
                assert torch.equal(table[OP_ID[name]].float(), mags.float()), name
    assert len(CIFAR10_POLICY) == 25
    assert CIFAR10_POLICY == tuple(
        tuple(sp) for sp in T.AutoAugment()._get_policies(T.AutoAugmentPolicy.CIFAR10)
    )


def test_policies_are_random_per_image_and_seeded(batch):
    x = batch.repeat(4, 1, 1, 1)  # 192 images, 4 copies of each
    g1, g2 = torch.Generator().manual_seed(5), torch.Generator().manual_seed(5)
    a, b = auto_augment(x, g1), auto_augment(x, g2)
    assert torch.equal(a, b) and a.dtype == torch.uint8 and a.shape == x.shape
    copies = a.view(4, 48, 3, 32, 32)
    differs = (copies[0] != copies[1]).flatten(1).any(1)
    assert differs.float().mean() > 0.3  # copies of an image get different sub-policies
    r = rand_augment(x, torch.Generator().manual_seed(0), num_ops=2, magnitude=9)
    assert r.shape == x.shape and (r != x).flatten(1).any(1).float().mean() > 0.5
    with pytest.raises(ValueError, match="magnitude must be in"):
        rand_augment(x, torch.Generator(), magnitude=31)


def test_float_input_takes_the_uint8_path(batch):
    f = batch.float() / 255
    for fn in (auto_augment, rand_augment):
        out_u8 = fn(batch, torch.Generator().manual_seed(2))
        out_f = fn(f, torch.Generator().manual_seed(2))
        assert out_f.dtype == torch.float32 and torch.equal(
            (out_f * 255).round().to(torch.uint8), out_u8
        )
    with pytest.raises(ValueError, match="uint8 or float"):
        auto_augment(batch.to(torch.int32), torch.Generator())


def _mixed_images(n: int, seed: int) -> torch.Tensor:
    """``n`` random 16x16 uint8 images, a third of them low-contrast and a few with constant
    channels (the edge cases of AutoContrast and Equalize)."""
    g = torch.Generator().manual_seed(seed)
    x = torch.randint(0, 256, (n, 3, 16, 16), dtype=torch.uint8, generator=g)
    x[: n // 3] = torch.randint(100, 110, (n // 3, 3, 16, 16), dtype=torch.uint8, generator=g)
    x[:3, 1] = 77
    return x


def _random_signed_mags(op: torch.Tensor, g: torch.Generator) -> torch.Tensor:
    """Each image's magnitude from its op's row of the 31-bin table, sign random for every op."""
    mag = magnitude_table(31, 16, 16)[op, torch.randint(0, 31, op.shape, generator=g)]
    return torch.where(torch.rand(op.shape, generator=g) < 0.5, -mag, mag)


@pytest.mark.parametrize("fill", [0, 128, 255])
@pytest.mark.parametrize("present", ["all", "some", "identity", "one_geometric"])
def test_dense_apply_ops_equals_sorted_bitwise(present, fill):
    """The sync-free CUDA path (every op on the whole batch, selected by masks) gives exactly the
    sorted path's images, with every op in the batch or only a few."""
    g = torch.Generator().manual_seed(fill)
    x = _mixed_images(90, seed=fill)
    subset = {
        "all": range(len(OPS)),
        "some": [OP_ID[o] for o in ("Identity", "TranslateX", "Color", "Equalize", "Posterize")],
        "identity": [0],
        "one_geometric": [OP_ID["Rotate"]],
    }[present]
    choices = torch.tensor(list(subset))
    op = choices[torch.randint(0, len(choices), (len(x),), generator=g)]
    if present == "all":
        op[: len(OPS) * 2] = torch.arange(len(OPS)).repeat(2)  # every op at least twice
    mag = _random_signed_mags(op, g)
    sorted_out = apply_ops(x, op, mag, fill, dense=False)
    assert torch.equal(apply_ops(x, op, mag, fill, dense=True), sorted_out)
    assert torch.equal(apply_ops(x, op, mag, fill, dense=True, may_use=subset), sorted_out)
    assert present == "identity" or not torch.equal(sorted_out, x)


@pytest.mark.parametrize("fill", [0, 128])
@pytest.mark.parametrize(
    "augment",
    [
        auto_augment,
        auto_augment_imagenet,
        rand_augment,
        lambda x, g, fill, dense: rand_augment(x, g, 4, 6, fill=fill, dense=dense),
    ],
    ids=["auto_augment", "auto_augment_imagenet", "rand_augment", "rand_augment_4_ops_at_6"],
)
def test_dense_public_augments_equal_sorted_bitwise(augment, fill):
    """Same seed, both paths: the public augments (their per-slot op sets and ImageNet's
    SolarizeAdd included) give the same images whichever path runs."""
    x = _mixed_images(200, seed=7)  # 200 images: every sub-policy / op turns up
    for seed in (0, 1):
        dense = augment(x, torch.Generator().manual_seed(seed), fill=fill, dense=True)
        sorted_out = augment(x, torch.Generator().manual_seed(seed), fill=fill, dense=False)
        assert torch.equal(dense, sorted_out), seed
        assert (dense != x).flatten(1).any(1).float().mean() > 0.3


#: The Python-level ways to wait for a tensor's values on the host (``len()`` only reads the shape:
#: the sync of ``len(x.nonzero())`` is ``nonzero``).
_HOST_READS = (
    "tolist",
    "item",
    "nonzero",
    "cpu",
    "numpy",
    "__bool__",
    "__int__",
    "__float__",
    "__index__",
)


@pytest.fixture
def no_host_reads(monkeypatch):
    """Make reading a tensor's values on the host raise: the methods above, ``torch.nonzero`` /
    ``masked_select`` / ``unique``, and indexing by a boolean mask (a data-dependent shape). A CPU
    stand-in for CUDA's sync check; syncs inside C++ kernels (e.g. ``torch.bincount`` on CUDA) are
    not seen here."""

    def forbid(name):
        def raise_(*args, **kwargs):
            raise AssertionError(f"host sync: {name}")

        return raise_

    for name in _HOST_READS:
        monkeypatch.setattr(torch.Tensor, name, forbid(f"Tensor.{name}"))
    for name in ("nonzero", "masked_select", "unique"):
        monkeypatch.setattr(torch, name, forbid(f"torch.{name}"))

    def no_mask(method):
        original = getattr(torch.Tensor, method)

        def checked(self, index, *rest):
            parts = index if isinstance(index, tuple) else (index,)
            if any(isinstance(i, torch.Tensor) and i.dtype == torch.bool for i in parts):
                raise AssertionError(f"host sync: boolean-mask {method}")
            return original(self, index, *rest)

        monkeypatch.setattr(torch.Tensor, method, checked)

    no_mask("__getitem__")
    no_mask("__setitem__")


def test_dense_path_reads_no_tensor_values_on_the_host(no_host_reads):
    x = _mixed_images(40, seed=3)
    op = torch.arange(40) % len(OPS)
    mag = torch.linspace(-20, 20, 40, dtype=torch.float64)
    apply_ops(x, op, mag, dense=True)
    for augment in (auto_augment, auto_augment_imagenet, rand_augment):
        augment(x, torch.Generator().manual_seed(0), dense=True)
    with pytest.raises(AssertionError, match="host sync"):  # the guard does catch a sync:
        apply_ops(x, op, mag)  # the CPU default is the sorted path (bincount().tolist())
    with pytest.raises(AssertionError, match="host sync"):
        auto_augment_imagenet(x, torch.Generator().manual_seed(0), dense=False)
    with pytest.raises(AssertionError, match="boolean-mask"):
        x[op > 3]


@pytest.mark.cuda
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
def test_augments_on_cuda_do_not_sync():
    x = _mixed_images(64, seed=4).cuda()
    g = torch.Generator(device="cuda").manual_seed(0)
    auto_augment(x, g)  # warm-up: the cached constant tables are copied to the GPU once
    auto_augment_imagenet(x, g)
    rand_augment(x, g)
    torch.cuda.synchronize()
    torch.cuda.set_sync_debug_mode("error")
    try:
        for augment in (auto_augment, auto_augment_imagenet, rand_augment):
            augment(x, g)
    finally:
        torch.cuda.set_sync_debug_mode("default")


def test_rand_augment_takes_a_device_magnitude(no_host_reads):
    """A 0-d tensor magnitude (IEG draws its level on the device) gives the int's images, no sync."""
    x = _mixed_images(60, seed=5)
    want = rand_augment(x, torch.Generator().manual_seed(3), num_ops=2, magnitude=12, dense=True)
    got = rand_augment(
        x, torch.Generator().manual_seed(3), num_ops=2, magnitude=torch.tensor(12), dense=True
    )
    assert torch.equal(got, want) and not torch.equal(got, x)


def test_pil_exact_policies_do_not_read_the_host_on_the_dense_path(no_host_reads):
    """PLReMix's PIL-exact views (lnl.data.pil_augment), drawn and applied as the GPU loader does on
    CUDA (dense dispatch): no host read, so no sync inside a training step."""
    from lnl.data import pil_augment as P

    x = _mixed_images(40, seed=7)
    g = torch.Generator().manual_seed(0)
    for policy in ("cifar", "imagenet"):
        out = P.auto_augment(x, policy, P.policy_draws(policy, 40, g, x.device), dense=True)
        assert out.shape == x.shape and not torch.equal(out, x)
    out = P.rand_augment(x, P.randaug_draws(40, 4, g, x.device, 16, 16), dense=True)
    assert out.shape == x.shape and not torch.equal(out, x)
