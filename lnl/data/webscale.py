"""Large real-noise datasets as file lists: Clothing1M, WebVision (mini), ILSVRC12 val, Food-101N,
Food-101.

Images are decoded with PIL in ``DataLoader`` workers (:func:`lnl.data.loaders.build_file_loader`);
nothing is held in memory. Layouts (DivideMix ``dataloader_clothing1M.py``,
``dataloader_webvision.py``; LRA ``utils/*_data_utils.py``):

* **Clothing1M** ``root``: ``images/<a>/<bb>/<key>.jpg`` and the annotation files
  (``noisy_label_kv.txt``, ``clean_label_kv.txt``, ``noisy_train_key_list.txt``,
  ``clean_{train,val,test}_key_list.txt``) either in ``root`` (DivideMix/PLReMix) or in
  ``root/annotations`` (LRA). Key-list entries start with ``images/`` and are kept relative to
  ``root`` (PLReMix's join; DivideMix strips the prefix because its root is the ``images`` folder).
  If ``data_prep/clothing1m.py`` wrote ``lnl_lists/<split>.txt`` those are read instead (faster).
  ``train`` carries the 1M noisy labels as ``targets`` (clean labels are unknown for most), with the
  verified clean label, or -1, in ``clean_targets``.
* **WebVision 1.0 (mini)** ``root``: ``info/train_filelist_google.txt``, ``info/val_filelist.txt``,
  ``info/synsets.txt``, ``google/…``, ``val_images_256/``. Only Google images with label < 50 are
  used (about 66k); val keeps the 2,500 images with label < 50.
* **ILSVRC12 val** ``root``: ``val/<WNID>/*.JPEG`` (PLReMix, written by ``data_prep/webvision.py``)
  or ``val/<0..49>/`` (DivideMix). Class c is line c of ``synsets.txt`` (``root/synsets.txt``), else
  the c-th sorted WNID, which is the same order since the ILSVRC class ids follow sorted WNIDs.
* **Food-101N** ``root``: ``Food-101N_release/{meta/imagelist.tsv, meta/classes.txt, images/}`` and
  ``food-101/{meta/test.txt, meta/classes.txt, images/}``; the test split is Food-101's test set.
"""

from __future__ import annotations

from pathlib import Path

from lnl.data._base import FileListDataset, missing, read_lines
from lnl.data._classes import CLOTHING1M_CLASSES, IMAGENET_MEAN, IMAGENET_STD
from lnl.data._registry import prep_hint, register_dataset

CLOTHING1M_MEAN, CLOTHING1M_STD = (0.6959, 0.6537, 0.6371), (0.3113, 0.3192, 0.3214)
CLOTHING1M_KEY_LISTS = {
    "train": "noisy_train_key_list.txt",
    "clean_train": "clean_train_key_list.txt",
    "val": "clean_val_key_list.txt",
    "test": "clean_test_key_list.txt",
}
CLOTHING1M_FILES = ("noisy_label_kv.txt", "clean_label_kv.txt", *CLOTHING1M_KEY_LISTS.values())
WEBVISION_CLASSES = 50


def _check_root(name: str, root: Path | None, required: list[str]) -> Path:
    """Raise the missing-data error unless every required relative path exists under root."""
    root = Path(root) if root is not None else Path("<none>")
    absent = [r for r in required if not (root / r).exists()]
    if absent:
        raise missing(name, root, ", ".join(f"'{a}'" for a in absent), prep_hint(name, root))
    return root


def read_kv(path: Path) -> dict[str, int]:
    """Read a ``<path> <label>`` file into a dict."""
    out = {}
    for line in read_lines(path):
        key, label = line.rsplit(maxsplit=1)
        out[key] = int(label)
    return out


def read_list(path: Path) -> tuple[list[str], list[int]]:
    """Read a ``<path> <label>`` file into parallel lists (order kept)."""
    paths, labels = [], []
    for line in read_lines(path):
        key, label = line.rsplit(maxsplit=1)
        paths.append(key)
        labels.append(int(label))
    return paths, labels


def clothing1m_annotation_dir(root: Path) -> Path:
    """``root/annotations`` if it holds the label files (LRA layout), else ``root``."""
    ann = root / "annotations"
    return ann if (ann / "noisy_label_kv.txt").is_file() else root


def clothing1m_lists(root: Path, split: str) -> tuple[list[str], list[int], list[int]]:
    """Build ``(paths, labels, clean_labels)`` for a Clothing1M split from the raw annotation files.

    ``labels`` are the noisy labels for ``train`` and the clean ones otherwise; ``clean_labels`` is
    -1 where no verified label exists.
    """
    ann = clothing1m_annotation_dir(root)
    absent = [f for f in CLOTHING1M_FILES if not (ann / f).is_file()]
    if absent or not (root / "images").is_dir():
        what = ", ".join(absent + ([] if (root / "images").is_dir() else ["images/"]))
        raise missing("clothing1m", root, what, prep_hint("clothing1m", root))
    clean = read_kv(ann / "clean_label_kv.txt")
    keys = read_lines(ann / CLOTHING1M_KEY_LISTS[split])
    if split == "train":
        noisy = read_kv(ann / "noisy_label_kv.txt")
        labels = [noisy[k] for k in keys]
    else:
        labels = [clean[k] for k in keys]
    return keys, labels, [clean.get(k, -1) for k in keys]


@register_dataset(
    "clothing1m",
    splits=("train", "clean_train", "val", "test"),
    folder="clothing1m",
    description="Clothing1M, 14 classes, 1M noisy train / 14,313 val / 10,526 test (file list)",
)
def clothing1m(root: Path, split: str) -> FileListDataset:
    """Clothing1M (module docstring for the layout).

    Args:
        root: the Clothing1M folder.
        split: ``"train"`` (noisy), ``"clean_train"``, ``"val"`` or ``"test"`` (clean).

    Returns:
        A ``FileListDataset``; for ``train``, ``targets`` and ``noisy_targets`` are the noisy labels
        and ``clean_targets`` the verified labels or -1.
    """
    root = Path(root) if root is not None else Path("<none>")
    prepared = root / "lnl_lists" / f"{split}.txt"
    if prepared.is_file():
        paths, labels = read_list(prepared)
        clean_file = root / "lnl_lists" / f"{split}_clean.txt"
        clean = read_list(clean_file)[1] if clean_file.is_file() else None
    else:
        paths, labels, clean = clothing1m_lists(root, split)
    return FileListDataset(
        "clothing1m",
        split,
        root,
        paths,
        labels,
        14,
        CLOTHING1M_MEAN,
        CLOTHING1M_STD,
        classes=CLOTHING1M_CLASSES,
        noisy_targets=labels if split == "train" else None,
        clean_targets=clean,
    )


def _synsets(path: Path, num_classes: int) -> list[str] | None:
    """First ``num_classes`` WNIDs of ``synsets.txt`` (``n01440764 tench, …`` lines), if present."""
    if not path.is_file():
        return None
    return [line.split()[0] for line in read_lines(path)[:num_classes]]


@register_dataset(
    "webvision",
    splits=("train", "val", "test"),
    folder="webvision",
    description="WebVision 1.0 mini: Google images of the first 50 classes (~66k) + 2,500 val",
)
def webvision(root: Path, split: str, num_classes: int = WEBVISION_CLASSES) -> FileListDataset:
    """WebVision 1.0 restricted to the first ``num_classes`` classes (Google images only for train).

    Args:
        root: the WebVision folder (module docstring).
        split: ``"train"``, ``"val"`` or its alias ``"test"`` (WebVision's val is the test set).
        num_classes: keep labels below this (50 in every method here).

    Returns:
        A ``FileListDataset`` with ImageNet ``mean``/``std``; ``noisy_targets`` set for train.
    """
    split = "val" if split == "test" else split
    listing = "info/train_filelist_google.txt" if split == "train" else "info/val_filelist.txt"
    root = _check_root("webvision", root, [listing])
    paths, labels = read_list(root / listing)
    keep = [i for i, y in enumerate(labels) if y < num_classes]
    paths, labels = [paths[i] for i in keep], [labels[i] for i in keep]
    if split == "val":
        folder = "val_images_256" if (root / "val_images_256").is_dir() else "val_images"
        paths = [f"{folder}/{p}" for p in paths]
    return FileListDataset(
        "webvision",
        split,
        root,
        paths,
        labels,
        num_classes,
        IMAGENET_MEAN,
        IMAGENET_STD,
        classes=_synsets(root / "info" / "synsets.txt", num_classes),
        noisy_targets=labels if split == "train" else None,
    )


@register_dataset(
    "ilsvrc12_val",
    splits=("val", "test"),
    folder="imagenet",
    description="ILSVRC2012 val restricted to WebVision's first 50 classes (2,500 images)",
)
def ilsvrc12_val(root: Path, split: str, num_classes: int = WEBVISION_CLASSES) -> FileListDataset:
    """ILSVRC2012 validation images of the first ``num_classes`` classes.

    Args:
        root: folder containing ``val/<WNID or class index>/`` (module docstring).
        split: ``"val"`` or ``"test"`` (the same images).
        num_classes: number of leading classes kept.

    Returns:
        A ``FileListDataset`` sorted by class then file name.
    """
    root = _check_root("ilsvrc12_val", root, ["val"])
    folders = sorted(p.name for p in (root / "val").iterdir() if p.is_dir())
    if folders and all(f.isdigit() for f in folders):  # DivideMix names folders by class index
        wnids, by_index = None, {int(f): f for f in folders if int(f) < num_classes}
    else:
        wnids = _synsets(root / "synsets.txt", num_classes) or folders[:num_classes]
        by_index = {c: w for c, w in enumerate(wnids) if (root / "val" / w).is_dir()}
    paths, labels = [], []
    for c in sorted(by_index):
        names = sorted(f.name for f in (root / "val" / by_index[c]).iterdir() if f.is_file())
        paths += [f"val/{by_index[c]}/{n}" for n in names]
        labels += [c] * len(names)
    return FileListDataset(
        "ilsvrc12_val",
        "val",
        root,
        paths,
        labels,
        num_classes,
        IMAGENET_MEAN,
        IMAGENET_STD,
        classes=wnids,
    )


def _food_classes(path: Path) -> list[str]:
    """Class names of a ``classes.txt``; Food-101N's first line is a ``class_name`` header."""
    names = read_lines(path)
    return names[1:] if names and names[0] == "class_name" else names


def _food101_split(name: str, root: Path, split: str, prefix: str = "") -> FileListDataset:
    """Food-101 ``train``/``test`` from ``meta/<split>.txt`` (``class/id`` lines, + ``.jpg``)."""
    base = root / prefix if prefix else root
    _check_root(name, root, [f"{prefix}meta/classes.txt", f"{prefix}meta/{split}.txt"])
    classes = _food_classes(base / "meta" / "classes.txt")
    index = {c: i for i, c in enumerate(classes)}
    entries = read_lines(base / "meta" / f"{split}.txt")
    paths = [f"{prefix}images/{e}.jpg" for e in entries]
    labels = [index[e.split("/")[0]] for e in entries]
    return FileListDataset(
        name, split, root, paths, labels, len(classes), IMAGENET_MEAN, IMAGENET_STD, classes=classes
    )


@register_dataset(
    "food101",
    splits=("train", "test"),
    folder="food-101",
    description="Food-101 (clean), 101 classes, 75,750/25,250",
)
def food101(root: Path, split: str) -> FileListDataset:
    """Food-101 from its own folder (``meta/``, ``images/``); the clean test set of Food-101N."""
    return _food101_split("food101", Path(root) if root else Path("<none>"), split)


@register_dataset(
    "food101n",
    splits=("train", "test"),
    folder="Food101N",
    description="Food-101N noisy train (~310k) with Food-101's test set (25,250)",
)
def food101n(root: Path, split: str) -> FileListDataset:
    """Food-101N: noisy web images for training, Food-101's clean test set for testing.

    Args:
        root: folder holding ``Food-101N_release/`` and ``food-101/`` (LRA's ``./Food101N``).
        split: ``"train"`` (labels from the class folder of each image, noisy) or ``"test"``.

    Returns:
        A ``FileListDataset``. For train, ``noisy_targets`` equals ``targets`` and ``clean_targets``
        holds the label where ``meta/verified_train.tsv`` marks it correct, -1 elsewhere.
    """
    root = Path(root) if root is not None else Path("<none>")
    if split == "test":
        ds = _food101_split("food101n", root, "test", prefix="food-101/")
        return ds
    meta = "Food-101N_release/meta"
    _check_root("food101n", root, [f"{meta}/imagelist.tsv", f"{meta}/classes.txt"])
    classes = _food_classes(root / meta / "classes.txt")
    index = {c: i for i, c in enumerate(classes)}
    entries = [e for e in read_lines(root / meta / "imagelist.tsv") if e != "class_name/key"]
    labels = [index[e.split("/")[0]] for e in entries]
    verified = {}
    if (root / meta / "verified_train.tsv").is_file():
        for line in read_lines(root / meta / "verified_train.tsv")[1:]:
            key, flag = line.split()[:2]
            verified[key] = flag == "1"
    clean = [y if verified.get(e, False) else -1 for e, y in zip(entries, labels)]
    return FileListDataset(
        "food101n",
        "train",
        root,
        [f"Food-101N_release/images/{e}" for e in entries],
        labels,
        len(classes),
        IMAGENET_MEAN,
        IMAGENET_STD,
        classes=classes,
        noisy_targets=labels,
        clean_targets=clean,
    )
