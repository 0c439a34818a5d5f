"""Builders of small on-disk datasets in the real layouts, for loader and data_prep tests."""

from __future__ import annotations

import hashlib
import io
import pickle
import tarfile
import zipfile
from pathlib import Path

import numpy as np
from PIL import Image


def md5(path: Path) -> str:
    return hashlib.md5(path.read_bytes()).hexdigest()


def write_cifar_pickles(folder: Path, x: np.ndarray, y: np.ndarray, name: str = "cifar10") -> dict:
    """Write official-format CIFAR pickles (5 train batches + test for CIFAR-10, train/test for
    CIFAR-100) from ``x`` [N, 32, 32, 3]; the last 20 % of rows form the test file. Returns
    {file name: md5}."""
    folder.mkdir(parents=True, exist_ok=True)
    n_test = len(x) // 5
    tr_x, tr_y, te_x, te_y = x[:-n_test], y[:-n_test], x[-n_test:], y[-n_test:]
    key = "labels" if name == "cifar10" else "fine_labels"

    def dump(fname, xs, ys):
        entry = {
            "batch_label": fname,
            key: [int(v) for v in ys],
            "data": xs.transpose(0, 3, 1, 2).reshape(len(xs), -1).copy(),
            "filenames": [f"img_{i}.png" for i in range(len(xs))],
        }
        if name == "cifar100":
            entry["coarse_labels"] = [int(v) // 5 for v in ys]
        with open(folder / fname, "wb") as f:
            pickle.dump(entry, f, protocol=2)

    if name == "cifar10":
        for b, chunk in enumerate(np.array_split(np.arange(len(tr_x)), 5)):
            dump(f"data_batch_{b + 1}", tr_x[chunk], tr_y[chunk])
        dump("test_batch", te_x, te_y)
        with open(folder / "batches.meta", "wb") as f:
            pickle.dump({"label_names": [f"c{i}" for i in range(10)]}, f, protocol=2)
    else:
        dump("train", tr_x, tr_y)
        dump("test", te_x, te_y)
        with open(folder / "meta", "wb") as f:
            pickle.dump({"fine_label_names": [f"c{i}" for i in range(100)]}, f, protocol=2)
    return {p.name: md5(p) for p in sorted(folder.iterdir())}


def make_tarball(src_folder: Path, archive: Path) -> str:
    """Tar-gz ``src_folder`` (as its own top-level folder); return the archive md5."""
    with tarfile.open(archive, "w:gz") as t:
        t.add(src_folder, arcname=src_folder.name)
    return md5(archive)


def save_image(path: Path, value: int | np.ndarray, size=(8, 8)) -> None:
    """Save a small RGB image: constant ``value`` or the given array (PNG data, any extension)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    arr = value if isinstance(value, np.ndarray) else np.full((*size, 3), value, np.uint8)
    Image.fromarray(arr).save(path, format="PNG")


def make_tiny_imagenet_zip(tmp: Path, n_classes=3, per_class=4, n_val=2) -> tuple[Path, dict]:
    """A raw ``tiny-imagenet-200.zip`` (train/<wnid>/images + boxes, val/images + annotations).
    Returns the zip path and {relative path: pixel value} of every image."""
    rng = np.random.default_rng(0)
    wnids = [f"n0{i}{i}{i}" for i in range(n_classes)][::-1]  # not sorted on purpose
    buf = io.BytesIO()
    values = {}
    with zipfile.ZipFile(tmp / "tiny-imagenet-200.zip", "w") as z:
        z.writestr("tiny-imagenet-200/wnids.txt", "\n".join(wnids) + "\n")
        ann = []
        for w in wnids:
            z.writestr(f"tiny-imagenet-200/train/{w}/{w}_boxes.txt", "boxes\n")
            for k in range(per_class):
                arr = rng.integers(0, 255, (64, 64, 3), dtype=np.uint8)
                buf = io.BytesIO()
                Image.fromarray(arr).save(buf, format="PNG")
                z.writestr(f"tiny-imagenet-200/train/{w}/images/{w}_{k}.JPEG", buf.getvalue())
                values[f"train/{w}/{w}_{k}.JPEG"] = arr
            for k in range(n_val):
                name = f"val_{w}_{k}.JPEG"
                arr = rng.integers(0, 255, (64, 64, 3), dtype=np.uint8)
                buf = io.BytesIO()
                Image.fromarray(arr).save(buf, format="PNG")
                z.writestr(f"tiny-imagenet-200/val/images/{name}", buf.getvalue())
                ann.append(f"{name}\t{w}\t0\t0\t63\t63")
                values[f"val/{w}/{name}"] = arr
        z.writestr("tiny-imagenet-200/val/val_annotations.txt", "\n".join(ann) + "\n")
    return tmp / "tiny-imagenet-200.zip", values


def make_clothing1m(root: Path, annotations_subdir: bool = False) -> dict:
    """A small Clothing1M tree: 14 classes; returns the expected lists."""
    ann = root / "annotations" if annotations_subdir else root
    ann.mkdir(parents=True, exist_ok=True)
    noisy, clean = {}, {}
    train = [f"images/0/{i:02d}/n{i}.jpg" for i in range(42)]
    for i, p in enumerate(train):
        noisy[p] = i % 14
        if i % 3 == 0:
            clean[p] = (i + 1) % 14  # verified label differs from the noisy one
    val = [f"images/1/00/v{i}.jpg" for i in range(14)]
    test = [f"images/2/00/t{i}.jpg" for i in range(7)]
    clean_train = [p for p in train if p in clean]
    for i, p in enumerate(val + test):
        clean[p] = i % 14
    for p in train + val + test:
        save_image(root / p, 10)
    write = lambda name, lines: (ann / name).write_text("".join(f"{s}\n" for s in lines))  # noqa: E731
    write("noisy_label_kv.txt", [f"{p} {y}" for p, y in noisy.items()])
    write("clean_label_kv.txt", [f"{p} {y}" for p, y in clean.items()])
    write("noisy_train_key_list.txt", train)
    write("clean_train_key_list.txt", clean_train)
    write("clean_val_key_list.txt", val)
    write("clean_test_key_list.txt", test)
    return {
        "train": train,
        "val": val,
        "test": test,
        "clean_train": clean_train,
        "noisy": noisy,
        "clean": clean,
    }


def make_webvision(root: Path) -> None:
    """A small WebVision tree: 60 classes in info/, labels 0..59 (only < 50 are kept)."""
    (root / "info").mkdir(parents=True, exist_ok=True)
    (root / "info" / "synsets.txt").write_text(
        "".join(f"n{1000 + c:08d} class {c}\n" for c in range(60))
    )
    train = [f"google/q{c:04d}/{k}.jpg {c}" for c in range(0, 60, 5) for k in range(2)]
    val = [f"val{i:06d}.jpg {c}" for i, c in enumerate(range(0, 60, 5))]
    (root / "info" / "train_filelist_google.txt").write_text("\n".join(train) + "\n")
    (root / "info" / "val_filelist.txt").write_text("\n".join(val) + "\n")
    for line in train:
        save_image(root / line.split()[0], 20)
    for line in val:
        save_image(root / "val_images_256" / line.split()[0], 30)


def make_food101n(root: Path) -> list[str]:
    """Food-101N + Food-101 trees with 3 classes; returns the class names."""
    classes = ["apple_pie", "baby_back_ribs", "baklava"]
    meta = root / "Food-101N_release" / "meta"
    meta.mkdir(parents=True, exist_ok=True)
    (meta / "classes.txt").write_text("class_name\n" + "\n".join(classes) + "\n")
    entries = [f"{c}/{c[:3]}{k}.jpg" for c in classes for k in range(3)]
    (meta / "imagelist.tsv").write_text("class_name/key\n" + "\n".join(entries) + "\n")
    (meta / "verified_train.tsv").write_text(
        "class_name/key\tverification_label\n"
        + "".join(f"{e}\t{k % 2}\n" for k, e in enumerate(entries))
    )
    for e in entries:
        save_image(root / "Food-101N_release" / "images" / e, 40)
    fmeta = root / "food-101" / "meta"
    fmeta.mkdir(parents=True, exist_ok=True)
    (fmeta / "classes.txt").write_text("\n".join(classes) + "\n")
    for split, n in (("train", 2), ("test", 1)):
        ids = [f"{c}/{split}{k}" for c in classes for k in range(n)]
        (fmeta / f"{split}.txt").write_text("\n".join(ids) + "\n")
        for i in ids:
            save_image(root / "food-101" / "images" / f"{i}.jpg", 50)
    return classes


def make_imagenet(
    root: Path, wnids: list[str], train_per_class: int = 2, val_per_class: int = 1
) -> None:
    """ImageNet folders as lnl reads them: ``train/<WNID>/*.JPEG`` (IEG's WebVision probe),
    ``val/<WNID>/*.JPEG`` and ``synsets.txt`` (``ilsvrc12_val``); pixel values differ per class."""
    (root / "synsets.txt").parent.mkdir(parents=True, exist_ok=True)
    (root / "synsets.txt").write_text("".join(f"{w} class {c}\n" for c, w in enumerate(wnids)))
    for c, w in enumerate(wnids):
        for k in range(train_per_class):
            save_image(root / "train" / w / f"{w}_{k}.JPEG", (5 * c + k) % 256, size=(10, 12))
        for k in range(val_per_class):
            save_image(root / "val" / w / f"ILSVRC2012_val_{c:04d}{k}.JPEG", (5 * c) % 256)
