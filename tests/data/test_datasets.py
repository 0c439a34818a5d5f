"""Dataset registry and loaders: counts, class orders, layouts, caching and missing-data errors."""

from __future__ import annotations

import os
import time

import numpy as np
import pytest
import torch
from PIL import Image

from lnl.data import DATA_PREP_HINT, DatasetNotFoundError, _base, get_dataset, list_datasets
from lnl.data._classes import CIFAR100_FINE_TO_COARSE
from lnl.data.loaders import ClassBalancedSampler, build_file_loader, class_balanced_subset

from ._fakes import make_clothing1m, make_food101n, make_webvision, save_image, write_cifar_pickles

ALL = [
    "cifar10",
    "cifar100",
    "cifar100n",
    "cifar10n",
    "clothing1m",
    "digits",
    "digits16",
    "food101",
    "food101n",
    "ilsvrc12_val",
    "tiny_imagenet",
    "webvision",
]


def test_registry_lists_every_dataset():
    assert list_datasets() == ALL
    assert list_datasets("cifar*") == ["cifar10", "cifar100", "cifar100n", "cifar10n"]
    assert set(DATA_PREP_HINT) == set(ALL)


def test_unknown_dataset_and_split_raise_value_error():
    with pytest.raises(ValueError, match="unknown dataset 'imagenet21k'.*cifar10.*webvision"):
        get_dataset("imagenet21k")
    with pytest.raises(ValueError, match="unknown split 'val'.*train, test"):
        get_dataset("digits", None, "val")


@pytest.mark.parametrize("name", [n for n in ALL if not n.startswith("digits")])
def test_missing_dataset_names_folder_and_command(name, tmp_path):
    root = tmp_path / "nowhere"
    split = "val" if name == "ilsvrc12_val" else "train"
    with pytest.raises(DatasetNotFoundError) as info:
        get_dataset(name, root, split)
    msg = str(info.value)
    assert isinstance(info.value, ValueError) and isinstance(info.value, FileNotFoundError)
    assert str(root.resolve()) in msg
    command = msg.split("Prepare it with:")[1]
    assert "python data_prep/" in command and f"root {root}" in command


def test_digits_split_and_pixels():
    from sklearn.datasets import load_digits

    raw = load_digits()
    train, test = get_dataset("digits", None, "train"), get_dataset("digits", None, "test")
    assert (len(train), len(test)) == (1437, 360)
    assert train.images.shape == (1437, 32, 32, 3) and train.images.dtype == torch.uint8
    assert train.targets.dtype == torch.int64 and train.num_classes == 10
    # Disjoint, complete, stratified (every class has 35 or 36 test images).
    idx = torch.cat([train.official_index, test.official_index]).sort().values
    assert torch.equal(idx, torch.arange(1797))
    assert set(torch.bincount(test.targets).tolist()) <= {35, 36, 37}
    assert torch.equal(train.targets, torch.as_tensor(raw.target[train.official_index.numpy()]))
    # The three channels are equal and match PIL's bilinear resize of the 0..255-scaled 8x8 digit.
    img = train.images.float()
    assert torch.equal(img[..., 0], img[..., 1]) and torch.equal(img[..., 0], img[..., 2])
    for j, k in enumerate(train.official_index[:50].tolist()):
        scaled = Image.fromarray((raw.images[k] * 255 / 16).astype(np.float32), mode="F")
        ref = np.round(np.asarray(scaled.resize((32, 32), Image.BILINEAR)))
        assert np.array_equal(ref, train.images[j, :, :, 0].numpy()), j
    assert train.images.max() == 255 and train.images.min() == 0
    # Normalisation constants are the train split's statistics.
    assert train.mean[0] == pytest.approx(img.mean().item() / 255, abs=1e-4)
    assert train.std[0] == pytest.approx((img / 255).std().item(), abs=1e-3)
    assert torch.equal(get_dataset("digits", "/ignored", "train").images, train.images)
    assert (train.crop_padding, train.flip) == (4, True)  # CIFAR's views


def test_digits16_is_the_digits_split_at_16x16_without_augmentation():
    from sklearn.datasets import load_digits

    raw = load_digits()
    for split in ("train", "test"):
        small, big = get_dataset("digits16", None, split), get_dataset("digits", None, split)
        assert small.images.shape == (len(big), 16, 16, 3)
        assert torch.equal(small.official_index, big.official_index)
        assert torch.equal(small.targets, big.targets)
        assert (small.crop_padding, small.flip) == (0, False)
    for j, k in enumerate(small.official_index[:20].tolist()):
        scaled = Image.fromarray((raw.images[k] * 255 / 16).astype(np.float32), mode="F")
        ref = np.round(np.asarray(scaled.resize((16, 16), Image.BILINEAR)))
        assert np.array_equal(ref, small.images[j, :, :, 0].numpy()), j
    img = get_dataset("digits16", None, "train").images.float() / 255
    assert small.mean[0] != get_dataset("digits", None, "train").mean[0]
    assert get_dataset("digits16", None, "train").mean[0] == pytest.approx(
        img.mean().item(), abs=1e-4
    )


def test_cifar10_shared_npz(cifar10_train, cifar10_test):
    assert (len(cifar10_train), len(cifar10_test)) == (50000, 10000)
    assert cifar10_train.images.shape == (50000, 32, 32, 3)
    assert torch.bincount(cifar10_train.targets).tolist() == [5000] * 10
    assert torch.bincount(cifar10_test.targets).tolist() == [1000] * 10
    assert cifar10_train.classes[:3] == ["airplane", "automobile", "bird"]
    mean = cifar10_train.images.float().mean(dim=(0, 1, 2)) / 255
    assert torch.allclose(mean, torch.tensor([0.4914, 0.4822, 0.4465]), atol=1e-4)
    assert not cifar10_train.is_partial and len(cifar10_train.full_targets) == 50000
    img, label = cifar10_train[7]
    assert torch.equal(img, cifar10_train.images[7]) and label == int(cifar10_train.targets[7])


def test_cifar100_partial_train_is_exposed_honestly(cifar100_root):
    ds = get_dataset("cifar100", cifar100_root, "train")
    assert len(ds) == 10000 and ds.is_partial
    assert torch.equal(ds.official_index, torch.arange(10000))
    assert len(ds.full_targets) == 50000
    assert torch.equal(ds.full_targets[:10000], ds.targets)
    assert torch.equal(ds.coarse_targets, torch.tensor(CIFAR100_FINE_TO_COARSE)[ds.targets])
    test = get_dataset("cifar100", cifar100_root, "test")
    assert len(test) == 10000 and torch.bincount(test.targets).tolist() == [100] * 100
    assert ds.classes[0] == "apple" and ds.classes[-1] == "worm"


@pytest.mark.parametrize("nested", [True, False])
@pytest.mark.parametrize("name", ["cifar10", "cifar100"])
def test_cifar_pickle_layouts_round_trip(cifar10_test, tmp_path, name, nested):
    x = cifar10_test.images[:25].numpy()
    y = np.arange(25) % (10 if name == "cifar10" else 100)
    folder = tmp_path / ("cifar-10-batches-py" if name == "cifar10" else "cifar-100-python")
    write_cifar_pickles(folder if nested else tmp_path, x, y, name)
    train, test = get_dataset(name, tmp_path, "train"), get_dataset(name, tmp_path, "test")
    assert torch.equal(train.images, torch.from_numpy(x[:20]))
    assert torch.equal(test.images, torch.from_numpy(x[20:]))
    assert train.targets.tolist() == y[:20].tolist() and train.is_partial
    if name == "cifar100":
        assert train.coarse_targets.tolist() == (y[:20] // 5).tolist()


def test_npz_is_decoded_once_and_cache_follows_the_source(tmp_path, monkeypatch, cifar10_test):
    monkeypatch.setenv("LNL_CACHE", str(tmp_path / "cache"))
    root = tmp_path / "c10"
    root.mkdir()
    x, y = cifar10_test.images[:30].numpy(), cifar10_test.targets[:30].numpy()
    np.savez_compressed(root / "test.npz", x=x, y=y)
    calls = []
    real_load = np.load
    monkeypatch.setattr(np, "load", lambda *a, **k: calls.append(str(a[0])) or real_load(*a, **k))
    first = get_dataset("cifar10", root, "test")
    second = get_dataset("cifar10", root, "test")
    assert torch.equal(first.images, second.images) and torch.equal(
        first.images, torch.from_numpy(x)
    )
    assert sum(c.endswith("test.npz") for c in calls) == 1  # the second load came from the cache
    # Rewriting the source (new size/mtime) invalidates the entry.
    np.savez_compressed(root / "test.npz", x=x[::-1].copy(), y=y[::-1].copy())
    os.utime(root / "test.npz", ns=(time.time_ns(), time.time_ns() + 10**9))
    third = get_dataset("cifar10", root, "test")
    assert torch.equal(third.images, torch.from_numpy(x[::-1].copy()))
    assert sum(c.endswith("test.npz") for c in calls) == 2


def test_cache_survives_a_read_only_cache_dir(tmp_path, monkeypatch):
    blocker = tmp_path / "file"
    blocker.write_text("not a folder")
    monkeypatch.setenv("LNL_CACHE", str(blocker / "cache"))
    with pytest.warns(UserWarning, match="could not write the lnl cache"):
        out = _base.cached_arrays([blocker], "t", lambda: {"a": np.arange(3)})
    assert out["a"].tolist() == [0, 1, 2]


def _human_file(path, y, noisy_keys):
    d = {"clean_label": y.copy()}
    for i, k in enumerate(noisy_keys):
        d[k] = (y + i + 1) % 10
    torch.save(d, path)


def test_cifar10n_human_labels(cifar10_test, tmp_path):
    x = cifar10_test.images[:25].numpy()
    y_full = np.random.default_rng(0).integers(0, 10, 50000)
    write_cifar_pickles(tmp_path / "cifar-10-batches-py", x, y_full[:25])
    keys = ["aggre_label", "worse_label", "random_label1", "random_label2", "random_label3"]
    _human_file(tmp_path / "CIFAR-10_human.pt", y_full, keys)
    for i, (name, _key) in enumerate(
        zip(["aggre", "worst", "random1", "random2", "random3"], keys)
    ):
        ds = get_dataset("cifar10n", tmp_path, "train", label_set=name)
        assert ds.name == "cifar10n" and torch.equal(ds.targets, torch.from_numpy(y_full[:20]))
        assert ds.noisy_targets.tolist() == ((y_full[:20] + i + 1) % 10).tolist()
    assert get_dataset("cifar10n", tmp_path, "test").noisy_targets is None
    with pytest.raises(ValueError, match="unknown label_set 'worse'"):
        get_dataset("cifar10n", tmp_path, "train", label_set="worse")
    bad = y_full.copy()
    bad[3] = (bad[3] + 1) % 10
    _human_file(tmp_path / "CIFAR-10_human.pt", bad, keys)
    with pytest.raises(ValueError, match="does not match the CIFAR labels"):
        get_dataset("cifar10n", tmp_path, "train")


def test_cifar100n_requires_the_human_file(cifar10_test, tmp_path):
    write_cifar_pickles(tmp_path, cifar10_test.images[:25].numpy(), np.arange(25), "cifar100")
    with pytest.raises(DatasetNotFoundError, match="CIFAR-100_human.pt"):
        get_dataset("cifar100n", tmp_path, "train")
    y = np.arange(50000) % 100
    y[:20] = np.arange(20)
    torch.save({"clean_label": y, "noisy_label": (y + 1) % 100}, tmp_path / "CIFAR-100_human.pt")
    ds = get_dataset("cifar100n", tmp_path, "train")
    assert ds.noisy_targets.tolist() == [(i + 1) % 100 for i in range(20)]


@pytest.mark.parametrize("subdir", [False, True])
def test_clothing1m_lists(tmp_path, subdir):
    exp = make_clothing1m(tmp_path, annotations_subdir=subdir)
    train = get_dataset("clothing1m", tmp_path, "train")
    assert train.paths == exp["train"] and train.num_classes == 14 and not train.in_memory
    assert train.targets.tolist() == [exp["noisy"][p] for p in exp["train"]]
    assert train.clean_targets.tolist() == [exp["clean"].get(p, -1) for p in exp["train"]]
    assert torch.equal(train.noisy_targets, train.targets)
    for split in ("val", "test", "clean_train"):
        ds = get_dataset("clothing1m", tmp_path, split)
        assert ds.paths == exp[split]
        assert ds.targets.tolist() == [exp["clean"][p] for p in exp[split]]
    img, label = train[5]
    assert img.size == (8, 8) and img.mode == "RGB" and label == 5
    assert train.classes[0] == "T-Shirt" and train.mean == (0.6959, 0.6537, 0.6371)


def test_webvision_ilsvrc_food(tmp_path):
    make_webvision(tmp_path / "wv")
    train = get_dataset("webvision", tmp_path / "wv", "train")
    assert len(train) == 20 and int(train.targets.max()) == 45  # labels >= 50 dropped
    assert train.paths[0] == "google/q0000/0.jpg" and train.classes[1] == "n00001001"
    val = get_dataset("webvision", tmp_path / "wv", "test")
    assert len(val) == 10 and val.paths[0] == "val_images_256/val000000.jpg"
    assert val[0][0].size == (8, 8)
    im = tmp_path / "imagenet"
    for c in (0, 1, 49, 50):
        for k in range(2):
            save_image(im / "val" / f"n{1000 + c:08d}" / f"ILSVRC2012_val_{c}{k}.JPEG", c)
    (im / "synsets.txt").write_text((tmp_path / "wv" / "info" / "synsets.txt").read_text())
    ds = get_dataset("ilsvrc12_val", im, "val")
    assert len(ds) == 6 and ds.targets.tolist() == [0, 0, 1, 1, 49, 49]
    classes = make_food101n(tmp_path / "food")
    tr, te = (
        get_dataset("food101n", tmp_path / "food", "train"),
        get_dataset("food101n", tmp_path / "food", "test"),
    )
    assert tr.classes == classes and tr.targets.tolist() == [0, 0, 0, 1, 1, 1, 2, 2, 2]
    assert tr.clean_targets.tolist() == [-1, 0, -1, 1, -1, 1, -1, 2, -1]
    assert len(te) == 3 and te.paths[0] == "food-101/images/apple_pie/test0.jpg"
    f101 = get_dataset("food101", tmp_path / "food" / "food-101", "train")
    assert len(f101) == 6 and f101.targets.tolist() == [0, 0, 1, 1, 2, 2]


def _divide_mix_subset(perm, targets, num_samples, num_classes):
    """The originals' loop over a shuffled list (the oracle)."""
    counts, kept = [0] * num_classes, []
    for i in perm:
        if counts[targets[i]] < num_samples / num_classes and len(kept) < num_samples:
            kept.append(i)
            counts[targets[i]] += 1
    return kept


def test_class_balanced_subset_matches_the_original_loop():
    rng = np.random.default_rng(1)
    targets = rng.choice(14, size=5000, p=np.r_[np.full(13, 0.99 / 13), 0.01])
    sub = class_balanced_subset(targets, 1400, num_classes=14, seed=3, epoch=2)
    perm = np.random.default_rng([3, 2]).permutation(5000)
    assert sorted(sub.tolist()) == sorted(_divide_mix_subset(perm, targets, 1400, 14))
    counts = np.bincount(targets[sub.numpy()], minlength=14)
    assert counts.max() == 100 and counts[13] == (targets == 13).sum() < 100
    # A fractional bound (1000 / 14 = 71.4, so 72 per class) with the total cap reached.
    uniform = rng.integers(0, 14, 5000)
    frac = class_balanced_subset(uniform, 1000, num_classes=14, seed=5, epoch=0)
    perm = np.random.default_rng([5, 0]).permutation(5000)
    assert frac.tolist() != sorted(frac.tolist())  # shuffled again after selection
    assert sorted(frac.tolist()) == sorted(_divide_mix_subset(perm, uniform, 1000, 14))
    assert len(frac) == 1000 and np.bincount(uniform[frac.numpy()]).max() == 72
    again = class_balanced_subset(targets, 1400, num_classes=14, seed=3, epoch=2)
    other = class_balanced_subset(targets, 1400, num_classes=14, seed=3, epoch=3)
    assert torch.equal(sub, again) and not torch.equal(sub, other)
    sampler = ClassBalancedSampler(targets, 1400, num_classes=14, seed=3)
    sampler.set_epoch(2)
    assert list(sampler) == sub.tolist() and len(sampler) == len(sub)
    assert (
        list(sampler)
        == class_balanced_subset(targets, 1400, num_classes=14, seed=3, epoch=3).tolist()
    )
    with pytest.raises(ValueError, match="targets must lie in"):
        class_balanced_subset([0, 1, 20], 10, num_classes=14)


def test_file_loader_yields_indices_and_replacement_labels(tmp_path):
    import torchvision.transforms as T

    make_clothing1m(tmp_path)
    ds = get_dataset("clothing1m", tmp_path, "val")
    noisy = (ds.targets + 1) % 14
    loader = build_file_loader(ds, T.ToTensor(), 4, labels=noisy, num_workers=0)
    images, labels, idx = next(iter(loader))
    assert images.shape == (4, 3, 8, 8) and idx.tolist() == [0, 1, 2, 3]
    assert torch.equal(labels, noisy[:4])
