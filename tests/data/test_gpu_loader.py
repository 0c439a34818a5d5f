"""GPULoader: batch contents, determinism per (seed, epoch), subsets, views, formats, bad input."""

from __future__ import annotations

import random

import numpy as np
import pytest
import torch
import torchvision.transforms.functional as TF

from lnl.data import get_dataset
from lnl.data.gpu import GPULoader

MEAN, STD = (0.4914, 0.4822, 0.4465), (0.2023, 0.1994, 0.2010)


@pytest.fixture(scope="module")
def small(cifar10_test):
    """300 real images with their labels."""
    return cifar10_test.images[:300], cifar10_test.targets[:300]


def unnormalize(x: torch.Tensor) -> torch.Tensor:
    """Back to uint8 [B, 3, H, W] (exact up to float rounding)."""
    m = torch.tensor(MEAN).view(1, 3, 1, 1)
    s = torch.tensor(STD).view(1, 3, 1, 1)
    return ((x.float() * s + m) * 255).round().to(torch.uint8)


def all_crop_flips(img_chw: torch.Tensor) -> list[torch.Tensor]:
    """Every RandomCrop(32, padding=4) + optional hflip of an image (torchvision, the oracle)."""
    out = []
    padded = TF.pad(img_chw, [4])
    for top in range(9):
        for left in range(9):
            crop = TF.crop(padded, top, left, 32, 32)
            out += [crop, TF.hflip(crop)]
    return out


def test_eval_loader_is_ordered_and_only_normalises(small):
    images, labels = small
    loader = GPULoader(images, labels, 128, mean=MEAN, std=STD, train=False)
    assert len(loader) == 3 and loader.views == ("none",) and not loader.shuffle
    seen = []
    for x, y, idx in loader:
        assert x.dtype == torch.float32 and x.shape[1:] == (3, 32, 32)
        ref = TF.normalize(images[idx].permute(0, 3, 1, 2).float() / 255, MEAN, STD)
        assert torch.allclose(x, ref, atol=1e-6) and torch.equal(y, labels[idx])
        seen.append(idx)
    assert torch.equal(torch.cat(seen), torch.arange(300))


def test_train_epoch_is_a_permutation_of_weak_views(small):
    images, labels = small
    loader = GPULoader(images, labels, 64, mean=MEAN, std=STD, seed=3)
    batches = list(loader)
    assert len(batches) == len(loader) == 5 and len(batches[-1][1]) == 300 - 4 * 64
    idx = torch.cat([b[2] for b in batches])
    assert sorted(idx.tolist()) == list(range(300)) and idx.tolist() != list(range(300))
    x, y, i = batches[0]
    assert torch.equal(y, labels[i])
    lo = (0 - torch.tensor(MEAN)) / torch.tensor(STD)
    hi = (1 - torch.tensor(MEAN)) / torch.tensor(STD)
    assert (x.amin(dim=(0, 2, 3)) >= lo - 1e-5).all() and (x.amax(dim=(0, 2, 3)) <= hi + 1e-5).all()
    # Each output is one of torchvision's 162 crop/flip results of its source image.
    raw = unnormalize(x)
    for k in range(12):
        src = images[int(i[k])].permute(2, 0, 1)
        assert any(torch.equal(raw[k], c) for c in all_crop_flips(src)), k
    flipped = sum(
        torch.equal(raw[k], TF.hflip(images[int(i[k])].permute(2, 0, 1))) for k in range(64)
    )
    assert 0 <= flipped < 64


def test_same_seed_and_epoch_give_identical_batches_resume(small):
    images, labels = small
    kw = dict(mean=MEAN, std=STD, seed=11, views=("weak", "strong", "randaug"))
    run = GPULoader(images, labels, 100, **kw)
    epochs = [list(run) for _ in range(3)]  # epochs 0, 1, 2 without set_epoch
    resumed = GPULoader(images, labels, 100, **kw)
    resumed.set_epoch(2)
    again = list(resumed)
    for (xa, ya, ia), (xb, yb, ib) in zip(epochs[2], again):
        assert all(torch.equal(a, b) for a, b in zip(xa, xb))
        assert torch.equal(ia, ib) and torch.equal(ya, yb)
    assert not torch.equal(epochs[0][0][2], epochs[1][0][2])
    other_seed = GPULoader(images, labels, 100, **{**kw, "seed": 12})
    assert not torch.equal(next(iter(other_seed))[2], epochs[0][0][2])


def test_global_rng_is_untouched(small):
    images, labels = small
    state = (torch.get_rng_state(), random.getstate(), np.random.get_state()[1].copy())
    for _ in GPULoader(images, labels, 100, mean=MEAN, std=STD, views=("weak", "strong")):
        pass
    assert torch.equal(torch.get_rng_state(), state[0]) and random.getstate() == state[1]
    assert np.array_equal(np.random.get_state()[1], state[2])


def test_subset_reports_dataset_indices(small):
    images, labels = small
    subset = torch.arange(5, 300, 7)
    noisy = (labels + 1) % 10
    loader = GPULoader(images, noisy, 16, mean=MEAN, std=STD, indices=subset, drop_last=True)
    assert len(loader) == len(subset) // 16
    idx = torch.cat([i for _, _, i in loader])
    assert set(idx.tolist()) <= set(subset.tolist()) and len(idx) == len(loader) * 16
    x, y, i = next(iter(loader))
    assert torch.equal(y, noisy[i])
    loader.set_labels(labels)
    _, y2, i2 = next(iter(loader))
    assert torch.equal(y2, labels[i2])


def test_multi_view_output_and_formats(small):
    images, labels = small
    loader = GPULoader(
        images,
        labels,
        50,
        mean=MEAN,
        std=STD,
        views=("weak", "strong", "strong"),
        dtype=torch.bfloat16,
        channels_last=True,
    )
    (weak, s1, s2), y, idx = next(iter(loader))
    for v in (weak, s1, s2):
        assert v.shape == (50, 3, 32, 32) and v.dtype == torch.bfloat16
        assert v.is_contiguous(memory_format=torch.channels_last)
    assert not torch.equal(s1, s2)  # independent draws per view


def test_tiny_images_without_padding_only_flip():
    images = torch.randint(0, 256, (20, 64, 64, 3), dtype=torch.uint8)
    loader = GPULoader(
        images, torch.zeros(20, dtype=torch.long), 20, mean=MEAN, std=STD, crop_padding=0
    )
    x, _, idx = next(iter(loader))
    raw = unnormalize(x)
    for k in range(20):
        src = images[int(idx[k])].permute(2, 0, 1)
        assert torch.equal(raw[k], src) or torch.equal(raw[k], TF.hflip(src))


def test_digits_end_to_end():
    ds = get_dataset("digits", None, "train")
    loader = GPULoader(ds.images, ds.targets, 256, mean=ds.mean, std=ds.std)
    assert sum(len(y) for _, y, _ in loader) == 1437


def test_bad_input_raises_value_error(small):
    images, labels = small
    kw = dict(mean=MEAN, std=STD)
    with pytest.raises(ValueError, match="images must be uint8"):
        GPULoader(images.float(), labels, 8, **kw)
    with pytest.raises(ValueError, match="labels must be integer"):
        GPULoader(images, labels[:10], 8, **kw)
    with pytest.raises(ValueError, match="unknown views \\['blur'\\]"):
        GPULoader(images, labels, 8, views=("weak", "blur"), **kw)
    with pytest.raises(ValueError, match="indices must lie in"):
        GPULoader(images, labels, 8, indices=[0, 300], **kw)
    with pytest.raises(ValueError, match="batch_size must be a positive int"):
        GPULoader(images, labels, 0, **kw)
    with pytest.raises(ValueError, match="mean and std need 3 values"):
        GPULoader(images, labels, 8, mean=(0.5,), std=STD)


@pytest.mark.cuda
def test_cuda_matches_cpu_shapes_and_eval_values(small):
    images, labels = small
    cpu = GPULoader(images, labels, 64, mean=MEAN, std=STD, train=False)
    gpu = GPULoader(images, labels, 64, mean=MEAN, std=STD, train=False, device="cuda")
    for (xc, _, ic), (xg, _, ig) in zip(cpu, gpu):
        assert xg.is_cuda and torch.allclose(xc, xg.cpu(), atol=1e-6) and torch.equal(ic, ig.cpu())
    strong = GPULoader(images, labels, 64, mean=MEAN, std=STD, views=("strong",), device="cuda")
    x, _, _ = next(iter(strong))
    assert x.shape == (64, 3, 32, 32) and x.is_cuda
