"""WebVision-mini for IEG (``ieg/dataset_utils/datasets.py``): the noisy Google images of the first 50
WebVision classes (lnl's ``webvision`` dataset, labels as given), a clean probe set of ``n`` ImageNet
train images per class, and evaluation on WebVision val (and ILSVRC12 val, first 50 classes).

Images are decoded from the file lists with PIL in ``DataLoader`` workers. Training views follow the
original's Inception preprocessing (random distorted box, area 0.08–1, aspect 3/4–4/3, 10 attempts,
else the eval crop; bilinear resize; flip); evaluation takes the centre ``S/(S+32)`` square of the
short side, resized to S. The strong view is TF's ImageNet AutoAugment ``v0`` on the weak view,
then Cutout 16×16, on the device.

Resume exactness: the worker decoding step ``s`` draws its crops from ``(seed, s, rank)`` and the
indices come from :class:`~methods.ieg.ieg_lib.StepOrder`, so batches do not depend on the number
of workers or on where a run was resumed.
"""

from __future__ import annotations

import math
from functools import partial
from pathlib import Path

import numpy as np
import torch
from PIL import Image
from torch import Tensor
from torch.utils.data import DataLoader, Dataset

from lnl.data import DatasetNotFoundError
from lnl.data import augment as A
from lnl.data._base import FileListDataset
from lnl.data._classes import IMAGENET_MEAN, IMAGENET_STD
from lnl.data.autoaugment import auto_augment_imagenet, rand_augment
from lnl.data.loaders import build_file_loader
from methods.ieg import ieg_lib as L

EVAL_PADDING = 32  # the original's CROP_PADDING: eval keeps S/(S+32) of the short side
PROBE_FILE = "probe_files.txt"


# ----------------------------------------------------------------------------------------------
# The probe set: n ImageNet train images per class


def imagenet_train_hint(root: Path) -> str:
    """How to provide the ImageNet train folders the probe is drawn from."""
    return (
        f"python data_prep/webvision.py --root WEBVISION_ROOT --imagenet-root {root} "
        f"--train-images ILSVRC2012_img_train.tar   # only the 50 WebVision-mini classes are written"
    )


def draw_probe(
    root: Path, wnids: list[str] | None, per_class: int, seed: int
) -> tuple[list[str], list[int]]:
    """``per_class`` images of ``root/train/<WNID>/`` for each class, class-interleaved.

    Files are listed in sorted order and drawn with ``RandomState(seed)``; row j of the result holds
    the j-th pick of every class, as :func:`~methods.ieg.ieg_lib.probe_split` orders CIFAR probes.

    Raises:
        ValueError: WebVision's ``info/synsets.txt`` is absent (no class → WNID map).
        DatasetNotFoundError: class folders are missing or hold fewer than ``per_class`` images.
    """
    if wnids is None:
        raise ValueError(
            "--dataset webvisionmini: the probe needs WebVision's info/synsets.txt to map "
            "classes to ImageNet WNIDs"
        )
    absent = [w for w in wnids if not (root / "train" / w).is_dir()]
    if absent:
        raise DatasetNotFoundError(
            f"WebVision-mini's probe set is {per_class} ImageNet-2012 *train* images per class (the "
            f"original ships them pre-built as imagenet2012-probe.tfrecord); expected class folders "
            f"{root.resolve()}/train/<WNID>/ for the first {len(wnids)} WebVision synsets, missing "
            f"{len(absent)} (e.g. {absent[0]}). Pass --imagenet_path, or extract ILSVRC2012_img_train.tar "
            f"there:\n    {imagenet_train_hint(root)}"
        )
    rng, picks = np.random.RandomState(seed), []
    for w in wnids:
        files = sorted(f.name for f in (root / "train" / w).iterdir() if f.is_file())
        if len(files) < per_class:
            raise DatasetNotFoundError(
                f"{root / 'train' / w}: {len(files)} images, the probe needs {per_class} per class"
            )
        picks.append(
            [f"train/{w}/{files[i]}" for i in rng.choice(len(files), per_class, replace=False)]
        )
    paths = [picks[c][j] for j in range(per_class) for c in range(len(wnids))]
    return paths, [c for _ in range(per_class) for c in range(len(wnids))]


def probe_dataset(
    root: Path,
    wnids: list[str] | None,
    per_class: int,
    seed: int,
    out: Path,
    resumed: bool,
    write: bool,
) -> FileListDataset:
    """The probe as a file list; drawn once, written to ``out/probe_files.txt``, read back on resume."""
    saved = out / PROBE_FILE
    if resumed and saved.is_file():
        rows = [line.rsplit(maxsplit=1) for line in saved.read_text().splitlines()]
        paths, labels = [p for p, _ in rows], [int(y) for _, y in rows]
    else:
        paths, labels = draw_probe(root, wnids, per_class, seed)
        if write:
            saved.write_text("".join(f"{p} {y}\n" for p, y in zip(paths, labels)))
    return FileListDataset(
        "imagenet_probe",
        "train",
        root,
        paths,
        labels,
        len(wnids or labels),
        IMAGENET_MEAN,
        IMAGENET_STD,
        classes=wnids,
    )


def first_files(ds: FileListDataset, n: int | None) -> FileListDataset:
    """``--subset n``: ``n`` rows spread over the classes, each class's first rows in file order, kept
    in file order (all rows when ``n`` is None or too large). WebVision's train list and the ILSVRC12
    val list are grouped by class, so a plain prefix would hold only the first classes."""
    if n is None or n >= len(ds):
        return ds
    targets = torch.as_tensor(ds.targets)
    order = torch.argsort(targets, stable=True)  # rows grouped by class, file order within a class
    starts = torch.searchsorted(targets[order], targets[order], right=False)
    rank = torch.empty_like(order)
    rank[order] = torch.arange(len(order)) - starts  # a row's position within its class
    keep = torch.sort(torch.from_numpy(np.lexsort((np.arange(len(rank)), rank.numpy())))[:n]).values
    cut = lambda t: None if t is None else torch.as_tensor(t)[keep]  # noqa: E731
    return FileListDataset(
        ds.name,
        ds.split,
        ds.root,
        [ds.paths[i] for i in keep.tolist()],
        cut(ds.targets),
        ds.num_classes,
        ds.mean,
        ds.std,
        classes=ds.classes,
        noisy_targets=cut(ds.noisy_targets),
        clean_targets=cut(ds.clean_targets),
        transform=ds.transform,
    )


# ----------------------------------------------------------------------------------------------
# Crops


def center_crop(img: Image.Image, size: int) -> Image.Image:
    """The original's eval crop: the centre ``size/(size+32)`` square of the short side, resized."""
    w, h = img.size
    side = int(size / (size + EVAL_PADDING) * min(w, h))
    top, left = (h - side + 1) // 2, (w - side + 1) // 2
    return img.resize((size, size), Image.BILINEAR, box=(left, top, left + side, top + side))


def inception_crop(img: Image.Image, rng: np.random.Generator, size: int) -> Image.Image:
    """A distorted box (area 0.08–1 of the image, aspect 3/4–4/3, 10 attempts, else the eval crop),
    resized bilinearly to ``size``, flipped with probability ½."""
    w, h = img.size
    out = None
    for _ in range(10):
        area, aspect = rng.uniform(0.08, 1.0) * w * h, rng.uniform(3 / 4, 4 / 3)
        cw, ch = round(math.sqrt(area * aspect)), round(math.sqrt(area / aspect))
        if 0 < cw <= w and 0 < ch <= h:
            x0, y0 = int(rng.integers(0, w - cw + 1)), int(rng.integers(0, h - ch + 1))
            out = img.resize((size, size), Image.BILINEAR, box=(x0, y0, x0 + cw, y0 + ch))
            break
    if out is None:
        out = center_crop(img, size)
    return out.transpose(Image.FLIP_LEFT_RIGHT) if rng.random() < 0.5 else out


def to_chw(img: Image.Image) -> Tensor:
    """PIL RGB → ``Tensor[3, H, W]`` uint8."""
    return torch.from_numpy(np.asarray(img, dtype=np.uint8).copy()).permute(2, 0, 1)


def eval_view(img: Image.Image, size: int, mean, std) -> Tensor:
    """Eval transform for a file loader: centre crop, then normalised float ``[3, S, S]``."""
    x = to_chw(center_crop(img, size)).float().div_(255)
    return (x - torch.tensor(mean).view(3, 1, 1)) / torch.tensor(std).view(3, 1, 1)


def eval_loader(ds: FileListDataset, size: int, batch_size: int, workers: int) -> DataLoader:
    """``(images, labels, indices)`` batches of ``ds`` with the eval crop, in file-list order."""
    return build_file_loader(
        ds, partial(eval_view, size=size, mean=ds.mean, std=ds.std), batch_size, num_workers=workers
    )


# ----------------------------------------------------------------------------------------------
# Step batches


class StepImages(Dataset):
    """Item ``i`` = the decoded, cropped uint8 train and probe images of step ``steps[i]``."""

    def __init__(
        self,
        train: FileListDataset,
        probe: FileListDataset,
        order: L.StepOrder,
        steps: range,
        size: int,
    ):
        self.train_ds, self.probe_ds, self.order, self.steps, self.size = (
            train,
            probe,
            order,
            steps,
            size,
        )

    def __len__(self) -> int:
        return len(self.steps)

    def __getitem__(self, i: int) -> dict[str, Tensor]:
        step = self.steps[i]
        rng = np.random.default_rng([self.order.seed, 4, step, self.order.rank])
        idx, pidx = self.order.train_indices(step), self.order.probe_indices(step)
        view = lambda ds, j: to_chw(inception_crop(ds.load(int(j)), rng, self.size))  # noqa: E731
        return {
            "idx": idx,
            "pidx": pidx,
            "xw": torch.stack([view(self.train_ds, j) for j in idx]),
            "xp": torch.stack([view(self.probe_ds, j) for j in pidx]),
        }


class FileStepBatches:
    """WebVision-mini's batches of step ``s`` (the interface of :class:`~methods.ieg.ieg_lib.StepBatches`).

    Workers decode steps ``start, start+1, …, stop-1`` in order; asking for another step than the
    next one restarts the loader there.
    """

    def __init__(
        self,
        train: FileListDataset,
        probe: FileListDataset,
        batch_size: int,
        device: torch.device,
        seed: int,
        aug_type: str,
        stop: int,
        size: int,
        workers: int,
        rank: int = 0,
        world: int = 1,
    ):
        if aug_type not in L.AUG_TYPES:
            raise ValueError(f"--aug_type {aug_type!r}: choose from {', '.join(L.AUG_TYPES)}")
        self.order = L.StepOrder(
            np.arange(len(train)),
            np.arange(len(probe)),
            batch_size,
            torch.device("cpu"),
            seed,
            rank,
            world,
        )
        self.train, self.steps_per_epoch = self.order.train, self.order.steps_per_epoch
        self.labels, self.probe_labels = train.targets.to(device), probe.targets.to(device)
        self.datasets, self.stop, self.size, self.workers = (train, probe), stop, size, workers
        self.mean, self.std, self.device, self.aug_type = train.mean, train.std, device, aug_type
        self._iter, self._next = None, None

    def _items(self, step: int):
        steps = StepImages(*self.datasets, self.order, range(step, self.stop), self.size)
        return iter(
            DataLoader(
                steps,
                batch_size=None,
                num_workers=self.workers,
                pin_memory=self.device.type == "cuda",
            )
        )

    def get(self, step: int, strong: bool) -> dict[str, Tensor]:
        """``xw``/``y``/``idx`` (train), ``xp``/``yp`` (probe) and, if ``strong``, ``xs``."""
        if self._next != step:
            self._iter = self._items(step)
        item, self._next = next(self._iter), step + 1
        idx, pidx = item["idx"].to(self.device), item["pidx"].to(self.device)
        raw = item["xw"].to(self.device, non_blocking=True)
        out = {
            "xw": A.normalize(raw, self.mean, self.std),
            "y": self.labels[idx],
            "idx": idx,
            "xp": A.normalize(item["xp"].to(self.device, non_blocking=True), self.mean, self.std),
            "yp": self.probe_labels[pidx],
        }
        if strong:
            out["xs"] = self.strong(
                raw, L.step_generator(self.device, self.order.seed, 2, step, self.order.rank)
            )
        return out

    def strong(self, raw: Tensor, g: torch.Generator) -> Tensor:
        """AutoAugment ``v0`` (or RandAugment) on the weak view, then Cutout 16 (zero in normalised
        units); ``default``: the weak view again."""
        if self.aug_type == "default":
            return A.normalize(raw, self.mean, self.std)
        if self.aug_type == "autoaug":
            x = auto_augment_imagenet(raw, g, fill=128)
        else:
            level = int(torch.randint(1, 10, (1,), generator=g, device=self.device))
            x = rand_augment(raw, g, num_ops=2, magnitude=3 * level, num_bins=31)
        return L.cutout(A.normalize(x, self.mean, self.std), L.CUTOUT, g)
