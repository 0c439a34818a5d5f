"""PLReMix's augmentations against the original's outputs (fixtures from make_goldens_plremix_aug.py).

Every check is exact: uint8 images by a CRC-32 of their bytes (plus 48 strided pixels that show where a
mismatch lies), file-list views by the CRC-32 of their float32 bytes (both sides normalise with
torchvision's ``ToTensor``/``Normalize``). The one tolerance: the GPU loader's views normalise with
one fused ``x·(1/255σ) − μ/σ`` instead of torchvision's ``(x/255 − μ)/σ``, a few float32 ulps apart
(1e-6 relative, ``assert_close``); their uint8 pixels before it are exact (the policy checks).

Paths run: the ops go through ``lnl.data.pil_augment.apply_per_image`` (sorted segments, the CPU
default); the whole policies through ``auto_augment``/``rand_augment`` with the draws taken in the
original's order, both ways the GPU loader dispatches (sorted; dense ``torch.where``, the CUDA
default); the composed CIFAR and
Tiny-ImageNet views through ``GPULoader.apply`` (what ``GPULoader.transform`` runs for these views)
with ``GPULoader.draws_like_original``; the Clothing1M/WebVision views through
``lnl.data.file_views.transforms_for`` + ``MultiView`` with ``plremix_lib.file_view_names``.
"""

from __future__ import annotations

import random

import numpy as np
import pytest
import torch

from lnl.data import pil_augment as P
from tests.equivalence import make_goldens_plremix_aug as G
from tests.equivalence._golden import assert_close, check_meta, load_golden

AA_ORIGINAL_KEY = {v: k for k, v in G.AA_KEYS.items()}
SIZES = (32, 64)


def _golden(name: str) -> dict:
    golden = load_golden("plremix", name)
    check_meta(golden, G.COMMIT)
    return golden


def _batch(images: np.ndarray) -> torch.Tensor:
    return torch.from_numpy(images).permute(0, 3, 1, 2).contiguous()


def _hwc(x: torch.Tensor) -> np.ndarray:
    return x.permute(0, 2, 3, 1).numpy()


def _assert_digests(images: np.ndarray, expected: np.ndarray, name: str) -> None:
    got = G.per_image_digest(images)
    bad = [i for i in range(len(got)) if not np.array_equal(got[i], expected[i])]
    assert not bad, (
        f"{name}: images {bad} differ from the original's "
        f"(strided pixels port {got[bad[0], 1:9]} vs original {expected[bad[0], 1:9]})"
    )


def _cases(golden: dict, prefix: str) -> list[str]:
    return sorted(k for k in golden if k.startswith(prefix))


def _run_cases(x: torch.Tensor, cases: list, ops, golden: dict) -> None:
    """Apply every (key, op id, argument) case to all images at once (sorted dispatch; the dense one
    runs the same op functions, checked on whole policies below)."""
    n = x.shape[0]
    batch = x.repeat(len(cases), 1, 1, 1)
    op = torch.tensor([c[1] for c in cases]).repeat_interleave(n)
    arg = torch.tensor([c[2] for c in cases], dtype=torch.float64).repeat_interleave(n)
    out = _hwc(P.apply_per_image(batch, op, arg, ops, dense=False))
    for i, (key, _, _) in enumerate(cases):
        _assert_digests(out[i * n : (i + 1) * n], golden[key], key)


@pytest.mark.parametrize("size", SIZES)
def test_every_autoaugment_op_at_every_bin_and_sign(size):
    golden = _golden(f"aug_ops_{size}")
    images = G.aug_images(2, size, f"ops{size}")
    _assert_digests(images, golden["images_digest"], "inputs")
    cases = []
    for key in _cases(golden, "aa/"):
        _, name, b, sign = key.split("/")
        mag = P.aa_magnitudes(name)[int(b)] * (int(sign) if name in P.AA_SIGNED else 1)
        cases.append((key, P.AA_ID[name], mag))
    assert (
        len(cases) == 8 * 10 * 2 + 3 * 10 + 3
    )  # signed ops × bins × signs, Rotate/Posterize/Solarize, 3 plain
    _run_cases(_batch(images), cases, P.aa_ops(128), golden)


@pytest.mark.parametrize("size", SIZES)
def test_every_fixmatch_op_across_its_range(size):
    golden = _golden(f"aug_ops_{size}")
    position = {name: i for i, (name, _, _) in enumerate(P.FIXMATCH_OPS)}
    low, span = P._fixmatch_ranges(torch.device("cpu"))
    cases = []
    for key in _cases(golden, "fm/"):
        _, name, k = key.split("/")
        i = position[name]
        value = float(
            low[i] + span[i] * torch.tensor(G.FIXMATCH_VALUES[int(k)], dtype=torch.float64)
        )
        cases.append((key, i + 1, value))
    assert len(cases) == 14 * len(G.FIXMATCH_VALUES)
    _run_cases(_batch(G.aug_images(2, size, f"ops{size}")), cases, P.fixmatch_ops(), golden)


@pytest.mark.parametrize("size", SIZES)
def test_cutout(size):
    golden = _golden(f"aug_ops_{size}")
    x = _batch(G.aug_images(2, size, f"ops{size}")[:1])
    for frac in G.CUTOUT_FRACTIONS:
        for c, (cx, cy) in enumerate(G.CUTOUT_CENTRES):
            one = lambda v: torch.tensor([v], dtype=torch.float64)  # noqa: E731
            out = P.cutout(x, one(frac * size), one(cx * size), one(cy * size), P.CUTOUT_COLOR)
            _assert_digests(_hwc(out), golden[f"cutout/{frac}/{c}"], f"cutout {frac} {c}")


@pytest.mark.parametrize("dense", [False, True])
def test_whole_policies_with_the_originals_draws(dense):
    golden = _golden("aug_policies")
    for name, policy, size, n in (
        ("cifar", "cifar", 32, 48),
        ("imagenet", "imagenet", 32, 48),
        ("imagenet64", "imagenet", 64, 12),
    ):
        x = _batch(G.aug_images(n, size, f"policy/{name}"))
        random.seed(G.SEED)
        out = P.auto_augment(x, policy, P.policy_draws_python(policy, n), dense=dense)
        _assert_digests(_hwc(out), golden[f"policy/{name}"], f"policy {name}")
    for size, n in ((32, 48), (64, 12)):
        x = _batch(G.aug_images(n, size, f"randaug{size}"))
        random.seed(G.SEED), np.random.seed(G.SEED)
        out = P.rand_augment(x, P.randaug_draws_python(n, 4, size, size), dense=dense)
        _assert_digests(_hwc(out), golden[f"randaug{size}"], f"randaug {size}")


def _normalisation(dataset: str):
    from lnl.data import cifar, small

    return {
        "cifar10": (cifar.CIFAR10_MEAN, cifar.CIFAR10_STD),
        "cifar100": (cifar.CIFAR100_MEAN, cifar.CIFAR100_STD),
        "tiny_imagenet": (small.IMAGENET_MEAN, small.IMAGENET_STD),
    }[dataset]


@pytest.mark.parametrize("dataset", list(G.VIEW_COUNTS))
def test_gpu_loader_views_of_each_dataset(dataset):
    """PLReMix's weak/autoaug/randaug train views on CIFAR-10/100 and Tiny-ImageNet: the view PLReMix
    picks (``strong_view``), the unpadded Tiny-ImageNet crop, the crop/flip/policy draws in the
    original's order, the normalisation."""
    from lnl.data.gpu import GPULoader
    from methods.plremix import plremix_lib as lib

    golden = _golden("aug_views")
    n, size = G.VIEW_COUNTS[dataset], 64 if dataset == "tiny_imagenet" else 32
    images = torch.from_numpy(G.aug_images(n, size, f"views/{dataset}"))
    mean, std = _normalisation(dataset)
    padding = 0 if dataset in lib.IMAGENET_STYLE else 4
    for aug in ("train", "autoaug", "randaug"):
        view = lib.strong_view(aug, dataset)
        loader = GPULoader(
            images,
            torch.zeros(n, dtype=torch.long),
            n,
            mean=mean,
            std=std,
            views=(view,),
            crop_padding=padding,
        )
        G.seed_all(G.SEED)
        out = loader.apply(loader.images, view, loader.draws_like_original(loader.images, view))
        assert_close(out, golden[f"{dataset}/{aug}"], name=f"{dataset} {aug} ({view})")


def test_plremix_picks_the_originals_views():
    from methods.plremix import plremix_lib as lib

    assert lib.strong_view("autoaug", "cifar10") == "autoaug_cifar"
    assert lib.strong_view("autoaug", "tiny_imagenet") == "autoaug_imagenet"
    assert lib.strong_view("randaug", "cifar100") == "randaug_fixmatch"
    assert lib.strong_view("simclr", "cifar10") is None


@pytest.mark.parametrize("dataset", ["clothing1m", "webvision"])
def test_file_list_views_of_warmup_and_labeled_items(dataset):
    """Each view of a Clothing1M/WebVision item (warm-up: CE view + 2 contrastive (+6 small); labeled:
    2 weak + 2 strong (+6 small)), drawn independently in the original's order."""
    from PIL import Image

    from lnl.data import webscale
    from lnl.data.file_views import CLOTHING1M_CROPS, WEBVISION_CROPS, MultiView, transforms_for
    from methods.plremix.plremix_lib import file_view_names

    golden = _golden("aug_file_views")
    h, w = G.FILE_IMAGE
    image = G.aug_images(1, w, "file", height=h)[0]
    assert np.array_equal(G.digest(image), golden["image_digest"])
    crops, mean, std = (
        (CLOTHING1M_CROPS, webscale.CLOTHING1M_MEAN, webscale.CLOTHING1M_STD)
        if dataset == "clothing1m"
        else (WEBVISION_CROPS, webscale.IMAGENET_MEAN, webscale.IMAGENET_STD)
    )
    for aug, mcrop in G.FILE_CASES:
        tf = transforms_for(crops, mean, std, aug=aug)
        warmup, labeled = file_view_names(dataset, mcrop)
        for mode, names in (("all", warmup), ("labeled", labeled)):
            G.seed_all(G.SEED)
            views = MultiView(tf, names)(Image.fromarray(image))
            prefix = f"{dataset}/{aug}/{mode}/mcrop{int(mcrop)}/"
            assert len(views) == len(_cases(golden, prefix)), prefix
            for i, v in enumerate(views):
                assert np.array_equal(G.digest(v), golden[f"{prefix}{i}"]), (
                    f"{prefix}{i} ({names[i]})"
                )


def test_the_gpu_loaders_own_draws_follow_the_originals_distributions():
    """The loader's default draws (a torch generator, per batch) use the original's rules: a coin
    ``U < p`` (p = 0 never applies, p = 1 always), a sub-policy per image, signs ±1 (Rotate unsigned)."""
    g = torch.Generator().manual_seed(0)
    draws = P.policy_draws("imagenet", 4000, g, torch.device("cpu"))
    probs = torch.tensor([[p for _, p, _ in sp] for sp in P.IMAGENET_POLICY], dtype=torch.float64)
    rate = torch.stack(
        [draws.apply[draws.sub == k].double().mean(0) for k in range(len(P.IMAGENET_POLICY))]
    )
    assert (
        rate[12, 0] == 0 and rate[7, 1] == 1
    )  # ("Equalize", 0.0, 7) never, ("Equalize", 1.0, 2) always
    assert torch.allclose(rate, probs, atol=0.12)
    assert set(draws.sign.unique().tolist()) == {-1.0, 1.0}
    assert torch.bincount(draws.sub, minlength=25).min() > 100


def test_gpu_loader_transform_runs_each_new_view():
    from lnl.data.gpu import GPULoader

    images = torch.from_numpy(G.aug_images(6, 32, "loader"))
    for view in ("autoaug_cifar", "autoaug_imagenet", "randaug_fixmatch", "weak"):
        loader = GPULoader(
            images,
            torch.zeros(6, dtype=torch.long),
            6,
            mean=(0.5,) * 3,
            std=(0.25,) * 3,
            views=(view,),
            seed=3,
        )
        (a, _, _), (b, _, _) = (
            next(iter(loader)),
            next(
                iter(
                    GPULoader(
                        images,
                        torch.zeros(6, dtype=torch.long),
                        6,
                        mean=(0.5,) * 3,
                        std=(0.25,) * 3,
                        views=(view,),
                        seed=3,
                    )
                )
            ),
        )
        assert a.shape == (6, 3, 32, 32) and torch.equal(a, b), (
            view
        )  # a pure function of (seed, epoch)
        pixels = a * 0.25 * 255 + 0.5 * 255  # back to uint8 levels: whole numbers in [0, 255]
        assert (
            ((pixels - pixels.round()).abs() < 1e-3).all()
            and pixels.min() > -1e-3
            and pixels.max() < 255.001
        )
