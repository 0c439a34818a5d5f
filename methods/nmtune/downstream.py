"""NMTune's downstream data (original ``src/datasets/``): datasets from ``lnl.data`` and torchvision
held in memory, ``--num-shots`` and ``--noise-ratio``, and frozen-encoder features cached on the
device (and on disk with ``--cache-dir``).
"""

from __future__ import annotations

import argparse
import hashlib
import math
import os
import re
from dataclasses import dataclass, replace
from pathlib import Path

import torch
from torch import Tensor

from lnl.engine.checkpoint import atomic_save
from lnl.engine.data import check_subset_size
from lnl.engine.train_loop import autocast, progress
from methods.nmtune.encoders import ImageEncoder
from methods.nmtune.views import val_view


@dataclass
class Split:
    """A downstream split in memory: ``images`` uint8 ``[N, H, W, 3]`` and ``labels`` ``[N]``."""

    name: str
    split: str
    images: Tensor
    labels: Tensor
    num_classes: int
    source: str  # identifies the data for the feature cache
    classes: list[str] | None = None  # class names by label, for a zero-shot head


# name -> (torchvision class, constructor kwargs per split) for the original's torchvision datasets.
TORCHVISION = {
    "flowers102": ("Flowers102", {"train": {"split": "train"}, "test": {"split": "test"}}),
    "food101": ("Food101", {"train": {"split": "train"}, "test": {"split": "test"}}),
    "oxfordiiitpet": ("OxfordIIITPet", {"train": {"split": "trainval"}, "test": {"split": "test"}}),
    "stanfordcars": ("StanfordCars", {"train": {"split": "train"}, "test": {"split": "test"}}),
    "fgvcaircraft": ("FGVCAircraft", {"train": {"split": "trainval"}, "test": {"split": "test"}}),
    "dtd": ("DTD", {"train": {"split": "train"}, "test": {"split": "test"}}),
    "country211": ("Country211", {"train": {"split": "train"}, "test": {"split": "test"}}),
    "stl10": ("STL10", {"train": {"split": "train"}, "test": {"split": "test"}}),
    "renderedsst2": ("RenderedSST2", {"train": {"split": "train"}, "test": {"split": "test"}}),
}


def dataset_key(name: str) -> str:
    """A dataset name compared case- and dash-insensitively (``CIFAR10`` = ``cifar-10``)."""
    return re.sub(r"[-_ ]", "", name.lower())


def _lnl_split(name: str, location: Path, split: str) -> Split:
    from lnl.data import dataset_info, get_dataset

    info = dataset_info(name)
    root = None
    if info.folder is not None:  # --data-location may be the dataset folder or its parent
        root = location / info.folder if (location / info.folder).is_dir() else location
    ds = get_dataset(name, root, split)
    return Split(
        name, split, ds.images, ds.targets, ds.num_classes, f"lnl:{name}:{root}", ds.classes
    )


def _rgb(image):
    return image.convert("RGB")  # some torchvision datasets mix grey-level and RGB files


def _torchvision_split(key: str, location: Path, split: str, store_size: int) -> Split:
    import torchvision
    import torchvision.transforms as T

    from lnl.data import DatasetNotFoundError

    cls_name, kwargs = TORCHVISION[key]
    cls = getattr(torchvision.datasets, cls_name)
    try:
        ds = cls(root=str(location), download=False, **kwargs[split])
    except (RuntimeError, FileNotFoundError) as exc:
        raise DatasetNotFoundError(
            f"dataset {cls_name} not found under --data-location {location.resolve()}: put "
            f"torchvision's {cls_name} files there (the layout torchvision.datasets.{cls_name}"
            f"(root, download=True) creates; nothing is downloaded here). ({exc})"
        ) from exc
    ds.transform = T.Compose(
        [_rgb, T.Resize(store_size), T.CenterCrop(store_size), T.PILToTensor()]
    )
    loader = torch.utils.data.DataLoader(
        ds, batch_size=256, num_workers=min(4, os.cpu_count() or 1)
    )
    images, labels = [], []
    for x, y in progress(loader, desc=f"decoding {cls_name}/{split}", total=len(loader)):
        images.append(x.permute(0, 2, 3, 1).contiguous())
        labels.append(torch.as_tensor(y))
    labels = torch.cat(labels)
    names = list(getattr(ds, "classes", None) or []) or None
    classes = len(names) if names else int(labels.max()) + 1
    return Split(
        key,
        split,
        torch.cat(images),
        labels,
        classes,
        f"tv:{cls_name}:{location}:{store_size}",
        names,
    )


def load_split(name: str, data_location: str, split: str, store_size: int = 256) -> Split:
    """``--train-dataset`` / ``--eval-datasets`` entries: lnl registry names (``CIFAR10`` →
    ``cifar10``, ``digits`` ...) or torchvision's, case- and dash-insensitive.

    torchvision images are decoded once, resized and centre-cropped to ``store_size²``, into memory.

    Raises:
        ValueError: unknown dataset (the message lists the known names).
        DatasetNotFoundError: the files are missing (the message says where and what to put there).
    """
    from lnl.data import list_datasets

    location = Path(data_location).expanduser()
    lnl_names = {dataset_key(n): n for n in list_datasets()}
    key = dataset_key(name)
    if key in lnl_names:
        return _lnl_split(lnl_names[key], location, split)
    if key in TORCHVISION:
        return _torchvision_split(key, location, split, store_size)
    known = sorted(set(lnl_names.values()) | {v[0] for v in TORCHVISION.values()})
    raise ValueError(f"unknown dataset {name!r}; known datasets: {', '.join(known)}")


def few_shot_indices(labels: Tensor, fraction: float | None, seed: int) -> Tensor:
    """``--num-shots``: keep ``int(n_c · fraction)`` random samples of each class (a fraction)."""
    n = labels.shape[0]
    if fraction is None:
        return torch.arange(n)
    if not 0 < fraction <= 1:
        raise ValueError(f"--num-shots is a fraction of each class in (0, 1], got {fraction}")
    g = torch.Generator().manual_seed(seed)
    perm = torch.randperm(n, generator=g)
    keep = [perm[labels[perm] == c][: int((labels == c).sum() * fraction)] for c in labels.unique()]
    return torch.cat(keep).sort().values


def downstream_noise(labels: Tensor, ratio: float | None, num_classes: int, seed: int) -> Tensor:
    """``--noise-ratio``: the first ``⌈ratio·N⌉`` of a random permutation get ``randint(C)`` (the
    true class is possible)."""
    if not ratio:
        return labels
    g = torch.Generator().manual_seed(seed)
    n = labels.shape[0]
    chosen = torch.randperm(n, generator=g)[: math.ceil(ratio * n)]
    noisy = labels.clone()
    noisy[chosen] = torch.randint(num_classes, (len(chosen),), generator=g)
    return noisy


@dataclass
class Downstream:
    """The training split (all of it, or its first ``--subset`` N: features are cached per split), the
    rows ``keep`` that ``--num-shots`` keeps, their (``--noise-ratio``-noised) ``labels`` on the
    device, and the evaluation splits by ``--eval-datasets`` name."""

    train: Split
    keep: Tensor
    labels: Tensor
    evals: dict[str, Split]


def first_rows(split: Split, n: int | None) -> Split:
    """``--subset n``: the split's first ``n`` images (all of them when ``n`` is None or too large).
    The cut is part of ``source``, so cached features of a subset never stand in for the full split's."""
    if n is None or n >= len(split.labels):
        return split
    return replace(
        split, images=split.images[:n], labels=split.labels[:n], source=f"{split.source}|first{n}"
    )


def subset_rows(
    train: Split, keep: Tensor, labels: Tensor, n: int, num_shots: float | None
) -> tuple[Split, Tensor, Tensor]:
    """Cut the train split to its first ``n`` images after ``--num-shots`` and ``--noise-ratio`` were
    drawn over the whole split: a kept image has the full run's label."""
    check_subset_size(n, train.num_classes, train.name)
    inside = keep < n
    if not bool(inside.any()):
        raise ValueError(
            f"--subset {n} with --num-shots {num_shots}: none of the first {n} images is kept"
        )
    return first_rows(train, n), keep[inside], labels[inside]


def load_downstream(args: argparse.Namespace, log) -> Downstream:
    """Load ``--train-dataset`` (train split) and every ``--eval-datasets`` entry (test split);
    ``--subset N``: their first N images."""
    train = load_split(args.train_dataset, args.data_location, "train", args.store_size)
    keep = few_shot_indices(train.labels, args.num_shots, args.seed)
    labels = downstream_noise(train.labels[keep], args.noise_ratio, train.num_classes, args.seed)
    if args.subset is not None:
        train, keep, labels = subset_rows(train, keep, labels, args.subset, args.num_shots)
    evals = {
        name: first_rows(load_split(name, args.data_location, "test", args.store_size), args.subset)
        for name in args.eval_datasets
    }
    log.info(
        "%s: %d of %d train images, %d classes; eval %s",
        train.name,
        len(keep),
        len(train.labels),
        train.num_classes,
        {k: len(v.labels) for k, v in evals.items()},
    )
    return Downstream(train, keep.to(args.device), labels.to(args.device), evals)


def top1(logits: Tensor, labels: Tensor) -> float:
    return float((logits.argmax(1) == labels).float().mean())


# --------------------------------------------------------------------------------------------
# Feature extraction and cache
# --------------------------------------------------------------------------------------------


@torch.no_grad()
def encode_split(
    encoder: ImageEncoder,
    images: Tensor,
    device: torch.device,
    batch_size: int,
    amp: bool = False,
    desc: str = "encoding",
) -> Tensor:
    """Features of every image under the val pipeline: ``Tensor[N, D]`` float32 on ``device``."""
    encoder.eval()
    chunks = []
    starts = range(0, images.shape[0], batch_size)
    for i in progress(starts, desc=desc, total=len(starts)):
        x = images[i : i + batch_size].to(device).permute(0, 3, 1, 2)
        with autocast(device, amp):
            chunks.append(encoder(val_view(x, encoder.preprocess)).float())
    return torch.cat(chunks)


def encoder_id(args: argparse.Namespace, encoder: ImageEncoder) -> str:
    """What determines the frozen features: model, weights file (path, size, mtime), pipeline."""
    weights = str(args.pretrained)
    path = Path(weights).expanduser()
    if path.is_file():
        st = path.stat()
        weights = f"{path.resolve()}|{st.st_size}|{st.st_mtime_ns}"
    return f"{args.model_source}|{args.model}|{weights}|{encoder.preprocess}"


def cached_features(
    args: argparse.Namespace, encoder: ImageEncoder, split: Split, rows: Tensor | None = None
) -> Tensor:
    """Val-pipeline features of ``split`` (of its ``rows`` only, when given).

    With ``--cache-dir`` the whole split is encoded once and kept on disk (reusable by any
    ``--num-shots``), then indexed; without it only ``rows`` are encoded.
    """

    def encode(images: Tensor) -> Tensor:
        return encode_split(
            encoder,
            images,
            args.device,
            max(args.batch_size, 256),
            args.amp,
            desc=f"encoding {split.name}/{split.split}",
        )

    if not args.cache_dir:
        return encode(split.images if rows is None else split.images[rows.cpu()])
    key = hashlib.sha1(
        f"{encoder_id(args, encoder)}|{split.source}|{split.split}".encode()
    ).hexdigest()
    path = Path(args.cache_dir).expanduser() / f"{split.name}_{split.split}_{key[:16]}.pt"
    if path.is_file():
        feats = torch.load(path, map_location=args.device, weights_only=True)["features"]
    else:
        feats = encode(split.images)
        atomic_save(
            {"features": feats.cpu(), "labels": split.labels, "encoder": encoder_id(args, encoder)},
            path,
        )
    return feats if rows is None else feats[rows.to(feats.device)]
