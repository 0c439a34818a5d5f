"""``DataLoader`` plumbing for file-list datasets: index-carrying views and per-epoch subsets.

In-memory datasets use :class:`lnl.data.gpu.GPULoader` instead (no workers). Every batch, from
either path, is ``(images, labels, indices)`` with dataset indices always present (style.md item
16).

The Clothing1M subset follows DivideMix ``dataloader_clothing1M.py`` and PLReMix ``data/clothing1m.py``:
shuffle the
whole training list, walk it in that order keeping an image while its class has fewer than
``num_samples / num_classes`` kept images and fewer than ``num_samples`` are kept in total, then
shuffle the kept ones. The originals redraw with the unseeded global RNG each time the loader is
built; here the draw is a pure function of ``(seed, epoch)`` so that a resumed run sees the same
subsets.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset, Sampler


def class_balanced_subset(
    targets: Sequence[int] | np.ndarray | torch.Tensor,
    num_samples: int,
    *,
    num_classes: int | None = None,
    seed: int = 0,
    epoch: int = 0,
) -> torch.Tensor:
    """Draw DivideMix's class-balanced random subset (module docstring).

    Args:
        targets: ``[N]`` labels in ``[0, num_classes)`` (the noisy labels for Clothing1M).
        num_samples: subset size (64,000 for the Clothing1M warm-up, 32,000 per net for eval).
        num_classes: number of classes (default ``max(targets) + 1``).
        seed: base seed.
        epoch: epoch number; the subset is a pure function of ``(seed, epoch)``.

    Returns:
        ``Tensor[M]`` int64 of dataset indices in random order, ``M <= num_samples``, at most
        ``ceil(num_samples / num_classes)`` per class.
    """
    y = np.asarray(torch.as_tensor(targets).cpu(), dtype=np.int64)
    if num_samples < 0:
        raise ValueError(f"num_samples must be >= 0, got {num_samples}")
    c = int(num_classes if num_classes is not None else (y.max() + 1 if len(y) else 1))
    if len(y) and (y.min() < 0 or y.max() >= c):
        raise ValueError(f"targets must lie in [0, {c}), got [{y.min()}, {y.max()}]")
    rng = np.random.default_rng([seed, epoch])
    perm = rng.permutation(len(y))
    lab = y[perm]
    # Rank of each element within its class, in permutation order; kept while rank < N/C, which is
    # the originals' "count < num_samples / num_classes" test on a float bound.
    order = np.argsort(lab, kind="stable")
    sorted_lab = lab[order]
    ranks = np.empty(len(y), dtype=np.int64)
    ranks[order] = np.arange(len(y)) - np.searchsorted(sorted_lab, sorted_lab, side="left")
    keep = ranks < num_samples / c
    keep &= np.cumsum(keep) <= num_samples
    chosen = perm[keep]
    rng.shuffle(chosen)
    return torch.from_numpy(chosen)


class ClassBalancedSampler(Sampler[int]):
    """A sampler that yields :func:`class_balanced_subset` for the current epoch.

    Call ``set_epoch(e)`` before each epoch (as with ``DistributedSampler``); iterating without it
    advances the epoch by one automatically, so consecutive epochs differ either way.
    """

    def __init__(
        self,
        targets: Sequence[int] | torch.Tensor,
        num_samples: int,
        *,
        num_classes: int | None = None,
        seed: int = 0,
    ) -> None:
        self.targets = torch.as_tensor(targets, dtype=torch.int64).cpu()
        self.num_samples, self.seed, self.epoch = int(num_samples), int(seed), 0
        self.num_classes = int(num_classes or int(self.targets.max()) + 1)
        counts = torch.bincount(self.targets, minlength=self.num_classes)
        per_class = math.ceil(self.num_samples / self.num_classes)
        self._len = min(self.num_samples, int(counts.clamp(max=per_class).sum()))

    def set_epoch(self, epoch: int) -> None:
        """Select the subset of ``epoch``."""
        self.epoch = int(epoch)

    def __iter__(self):
        subset = class_balanced_subset(
            self.targets,
            self.num_samples,
            num_classes=self.num_classes,
            seed=self.seed,
            epoch=self.epoch,
        )
        self.epoch += 1
        return iter(subset.tolist())

    def __len__(self) -> int:
        return self._len


class IndexedDataset(Dataset):
    """Wrap a dataset so items are ``(transform(image), label, index)``.

    Args:
        dataset: a registry dataset (``ds[i]`` gives ``(image, label)``).
        transform: applied to the image (PIL for file lists); may return a tuple of views.
        labels: optional ``[N]`` labels that replace the dataset's (for example noisy labels).
    """

    def __init__(
        self,
        dataset: Dataset,
        transform: Callable | None = None,
        labels: torch.Tensor | None = None,
    ) -> None:
        self.dataset, self.transform = dataset, transform
        self.labels = None if labels is None else torch.as_tensor(labels, dtype=torch.int64).cpu()
        if self.labels is not None and len(self.labels) != len(dataset):
            raise ValueError(f"{len(self.labels)} labels for a dataset of {len(dataset)}")

    def __len__(self) -> int:
        return len(self.dataset)

    def __getitem__(self, i: int):
        if hasattr(self.dataset, "load"):  # file list: decode without the dataset's own transform
            img, label = self.dataset.load(i), int(self.dataset.targets[i])
        else:
            img, label = self.dataset[i]
        if self.transform is not None:
            img = self.transform(img)
        if self.labels is not None:
            label = int(self.labels[i])
        return img, label, i


class DeviceLoader:
    """Moves ``(views, labels, indices)`` batches of a ``DataLoader`` to ``device``; exposes
    ``indices`` and ``batch_size`` like ``GPULoader`` (``semi_epoch`` sizes its λ_u ramp with them)."""

    def __init__(self, loader: DataLoader, device: torch.device, indices: torch.Tensor):
        self.loader, self.device, self.indices, self.batch_size = (
            loader,
            device,
            indices,
            loader.batch_size,
        )

    def __len__(self) -> int:
        return len(self.loader)

    def __iter__(self):
        for views, labels, idx in self.loader:
            if isinstance(views, (tuple, list)):
                views = tuple(v.to(self.device, non_blocking=True) for v in views)
            else:
                views = views.to(self.device, non_blocking=True)
            yield (
                views,
                labels.to(self.device, non_blocking=True),
                idx.to(self.device, non_blocking=True),
            )


def build_file_loader(
    dataset: Dataset,
    transform: Callable | None,
    batch_size: int,
    *,
    shuffle: bool = False,
    sampler: Sampler | None = None,
    labels: torch.Tensor | None = None,
    num_workers: int = 4,
    drop_last: bool = False,
    pin_memory: bool = True,
    seed: int = 0,
) -> DataLoader:
    """A ``DataLoader`` over a file-list dataset that yields ``(images, labels, indices)``.

    Args:
        dataset: a ``FileListDataset`` (or any registry dataset).
        transform: per-image transform (PIL in, tensor or tuple of tensors out).
        batch_size: batch size.
        shuffle: shuffle each epoch (ignored when ``sampler`` is given).
        sampler: for example a :class:`ClassBalancedSampler` or a ``SubsetRandomSampler``.
        labels: optional replacement labels ``[N]`` (noisy labels).
        num_workers: decoding processes.
        drop_last: drop the last incomplete batch.
        pin_memory: pin host memory for faster copies to the GPU.
        seed: seeds the loader's shuffle generator (the global RNG is not used).

    Returns:
        The ``DataLoader``.
    """
    generator = torch.Generator().manual_seed(seed)
    return DataLoader(
        IndexedDataset(dataset, transform, labels),
        batch_size=batch_size,
        shuffle=shuffle if sampler is None else False,
        sampler=sampler,
        num_workers=num_workers,
        drop_last=drop_last,
        pin_memory=pin_memory and torch.cuda.is_available(),
        generator=generator,
        persistent_workers=num_workers > 0,
    )
