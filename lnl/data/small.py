"""Small in-memory datasets besides CIFAR: scikit-learn digits and Tiny-ImageNet.

``digits`` is scikit-learn's embedded 8x8 digits set (1,797 real images, 10 classes), scaled from
0..16 to 0..255, upsampled to 32x32 (bilinear) and replicated to 3 channels so that CIFAR models and
the GPU pipeline run on it unchanged. It is the dataset every CPU smoke test uses. ``digits16`` is
the same split at 16x16 without augmentation: ``make demo``'s dataset.

Tiny-ImageNet (64x64, 200 classes) follows PLReMix ``data/tiny_imagenet.py``: classes are
the **sorted** WNID folders of ``train/``, and images are sorted file names within each class, so
training image ``i`` has label ``i // 500`` and the shipped ``tinyimagenet/*.json`` noise files line
up. The val split (10,000 images) is the test set; it is read from ``val/<wnid>/`` (after
``data_prep/tiny_imagenet.py``) or from the raw ``val/images`` + ``val_annotations.txt``. Decoding
110k JPEGs takes about a minute, so the decoded arrays are cached under ``$LNL_CACHE``.
"""

from __future__ import annotations

import hashlib
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image
from tqdm import tqdm

from lnl.data._base import InMemoryDataset, cached_arrays, missing, read_lines
from lnl.data._classes import IMAGENET_MEAN, IMAGENET_STD
from lnl.data._registry import prep_hint, register_dataset

DIGITS_TEST_SIZE = 360
# The digits datasets: CPU-sized, so their default network is small_cnn.
DIGITS_DATASETS = ("digits", "digits16")
DIGITS_SPLIT_SEED = 0
_IMAGE_EXTS = (".jpeg", ".jpg", ".png")


def digits_arrays(size: int = 32) -> dict[str, np.ndarray]:
    """Return the full digits set as ``x`` uint8 ``[1797, size, size, 3]`` and ``y`` int64."""
    from sklearn.datasets import load_digits

    data = load_digits()
    # 0..16 -> 0..255 first, then upsample, so that the bilinear weights act on the final scale.
    x = torch.from_numpy(data.images.astype(np.float32) * (255.0 / 16.0)).unsqueeze(1)
    x = F.interpolate(x, size=(size, size), mode="bilinear", align_corners=False)
    x = x.round().clamp(0, 255).to(torch.uint8)
    x = x.expand(-1, 3, -1, -1).permute(0, 2, 3, 1).contiguous()
    return {"x": x.numpy(), "y": data.target.astype(np.int64)}


def digits_split_indices() -> dict[str, np.ndarray]:
    """The fixed split: stratified, 360 test / 1,437 train, ``random_state=0``, indices sorted."""
    from sklearn.datasets import load_digits
    from sklearn.model_selection import train_test_split

    y = load_digits().target
    train, test = train_test_split(
        np.arange(len(y)), test_size=DIGITS_TEST_SIZE, stratify=y, random_state=DIGITS_SPLIT_SEED
    )
    return {"train": np.sort(train), "test": np.sort(test)}


@register_dataset(
    "digits",
    splits=("train", "test"),
    folder=None,
    description="scikit-learn 8x8 digits upsampled to 32x32x3, 1,437/360 (embedded, no root)",
)
def digits(root: Path | None, split: str) -> InMemoryDataset:
    """scikit-learn digits as a 32x32 RGB dataset with CIFAR's views (pad-4 crop and flip).

    Args:
        root: ignored (the data ships with scikit-learn).
        split: ``"train"`` (1,437) or ``"test"`` (360); stratified split with seed 0.

    Returns:
        An ``InMemoryDataset`` with ``images: Tensor[N, 32, 32, 3]`` uint8 (three equal channels)
        and ``mean``/``std`` measured on the train split.
    """
    return digits_dataset("digits", split, 32)


@register_dataset(
    "digits16",
    splits=("train", "test"),
    folder=None,
    description="digits at 16x16x3 without augmentation (make demo's), 1,437/360 (embedded)",
)
def digits16(root: Path | None, split: str) -> InMemoryDataset:
    """``make demo``'s dataset: the digits split at 16x16, its weak view the image itself.

    Without augmentation cross-entropy memorises 60% symmetric noise within 40 epochs (its test
    accuracy falls 20 to 28 points from its best), the regime the CIFAR papers' methods are for; no
    flip, since a mirrored digit is another shape; an epoch costs a quarter of ``digits``'.

    Args:
        root: ignored (the data ships with scikit-learn).
        split: ``"train"`` (1,437) or ``"test"`` (360), the images of ``digits``' split.

    Returns:
        An ``InMemoryDataset`` with ``images: Tensor[N, 16, 16, 3]`` uint8, ``crop_padding`` 0 and
        ``flip`` False.
    """
    return digits_dataset("digits16", split, 16, crop_padding=0, flip=False)


def digits_dataset(name: str, split: str, size: int, **views) -> InMemoryDataset:
    """The digits split as ``size``x``size`` RGB, normalised with the train split's statistics."""
    arrays, idx = digits_arrays(size), digits_split_indices()
    train = arrays["x"][idx["train"]].astype(np.float64) / 255.0
    mean, std = train.mean(axis=(0, 1, 2)), train.std(axis=(0, 1, 2))
    sel = idx[split]
    ds = InMemoryDataset(
        name,
        split,
        torch.from_numpy(arrays["x"][sel].copy()),
        arrays["y"][sel],
        10,
        tuple(mean),
        tuple(std),
        classes=[str(d) for d in range(10)],
        **views,
    )
    ds.official_index = torch.from_numpy(sel.astype(np.int64))
    return ds


def _images_in(folder: Path) -> list[str]:
    """Sorted image file names in a folder."""
    return sorted(f.name for f in folder.iterdir() if f.suffix.lower() in _IMAGE_EXTS)


def tiny_imagenet_files(root: Path, split: str) -> tuple[list[str], list[str], list[int]]:
    """List a Tiny-ImageNet split in DivideMix order.

    Args:
        root: the ``tiny-imagenet-200`` folder.
        split: ``"train"`` or ``"val"``.

    Returns:
        ``(wnids, relative_paths, labels)``; wnids sorted, paths sorted within each class.
    """
    train = root / "train"
    if not train.is_dir() or not (root / "val").is_dir():
        raise missing(
            "tiny_imagenet", root, "'train/' and 'val/'", prep_hint("tiny_imagenet", root)
        )
    wnids = sorted(p.name for p in train.iterdir() if p.is_dir())
    paths, labels = [], []
    if split == "train":
        for c, w in enumerate(wnids):
            sub = train / w / "images" if (train / w / "images").is_dir() else train / w
            names = _images_in(sub)
            paths += [str(sub.relative_to(root) / n) for n in names]
            labels += [c] * len(names)
        return wnids, paths, labels
    ann = root / "val" / "val_annotations.txt"
    if (root / "val" / "images").is_dir() and ann.is_file():  # raw layout, not regrouped
        by_class: dict[str, list[str]] = {}
        for line in read_lines(ann):
            name, wnid = line.split("\t")[:2]
            by_class.setdefault(wnid, []).append(name)
        for c, w in enumerate(wnids):
            names = sorted(by_class.get(w, []))
            paths += [f"val/images/{n}" for n in names]
            labels += [c] * len(names)
        return wnids, paths, labels
    for c, w in enumerate(wnids):
        names = _images_in(root / "val" / w) if (root / "val" / w).is_dir() else []
        paths += [f"val/{w}/{n}" for n in names]
        labels += [c] * len(names)
    return wnids, paths, labels


def decode_images(root: Path, paths: list[str], size: int | None = None) -> np.ndarray:
    """Decode image files to one uint8 ``[N, H, W, 3]`` array (all images must share a size).

    Args:
        root: folder the paths are relative to.
        paths: relative paths.
        size: if given, resize each image to ``size x size`` (bilinear) first.

    Returns:
        The stacked RGB array.
    """
    out = None
    for i, rel in enumerate(tqdm(paths, desc=f"decoding {root.name}", unit="img", leave=False)):
        with Image.open(root / rel) as img:
            img = img.convert("RGB")
            if size is not None and img.size != (size, size):
                img = img.resize((size, size), Image.BILINEAR)
            arr = np.asarray(img)
        if out is None:
            out = np.empty((len(paths), *arr.shape), dtype=np.uint8)
        if arr.shape != out.shape[1:]:
            raise ValueError(f"{root / rel}: size {arr.shape} differs from {out.shape[1:]}")
        out[i] = arr
    return out if out is not None else np.empty((0, 64, 64, 3), dtype=np.uint8)


@register_dataset(
    "tiny_imagenet",
    splits=("train", "val", "test"),
    folder="tiny-imagenet-200",
    description="Tiny-ImageNet, 200 classes, 100k/10k, 64x64 (val is the test set)",
)
def tiny_imagenet(root: Path, split: str) -> InMemoryDataset:
    """Tiny-ImageNet in DivideMix order (module docstring).

    Args:
        root: the ``tiny-imagenet-200`` folder.
        split: ``"train"`` (100,000), ``"val"`` or its alias ``"test"`` (10,000).

    Returns:
        An ``InMemoryDataset`` with ``images: Tensor[N, 64, 64, 3]`` uint8, ``classes`` the WNIDs
        and ImageNet ``mean``/``std``.
    """
    root = Path(root) if root is not None else Path("<none>")
    split = "val" if split == "test" else split
    wnids, paths, labels = tiny_imagenet_files(root, split)
    listing = hashlib.sha1("\n".join(paths).encode()).hexdigest()[:12]
    arrays = cached_arrays(
        [root / split], f"tiny-{split}-{listing}", lambda: {"x": decode_images(root, paths)}
    )
    ds = InMemoryDataset(
        "tiny_imagenet",
        split,
        torch.from_numpy(arrays["x"]),
        labels,
        len(wnids),
        IMAGENET_MEAN,
        IMAGENET_STD,
        classes=wnids,
        root=root,
    )
    ds.paths = paths
    return ds
