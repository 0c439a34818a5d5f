"""Co-divide on file-list datasets (Clothing1M, WebVision): PIL transforms decoded in ``DataLoader``
workers instead of the GPU-resident pipeline, per-epoch class-balanced subsets, and the originals'
evaluation protocols (DivideMix ``Train_clothing1M.py``, ``Train_webvision.py``; PLReMix
``train_clothing1m.py``).

``FileListMixin`` overrides ``CoDivide``'s loader hooks; combine it with ``CoDivide`` (DivideMix) or
``PLReMix``: ``class C1M(FileListMixin, PLReMix)``. Every subset and shuffle is a pure function of
``(seed, epoch, net)`` (the originals redraw with unseeded RNGs, P7/P13), so resumes are exact up to
the nondeterminism of decoding workers (none: each item is a pure function of its index and the
torch seed of its worker, which ``DataLoader`` derives from the loader's generator).
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from types import SimpleNamespace

import torch
from torch import Tensor
from torch.utils.data import SubsetRandomSampler

from lnl.codivide import steps as cd
from lnl.codivide.recipe import Recipe
from lnl.data.file_views import MultiView
from lnl.data.loaders import DeviceLoader, build_file_loader, class_balanced_subset


class FileListMixin:
    """Loader hooks of ``CoDivide`` for file-list data. The subclass sets ``recipe``, ``warmup_names``,
    ``semi_names`` and provides ``self.train_set`` (a ``FileListDataset``) and ``self.tf``."""

    recipe: Recipe
    warmup_names: tuple[str, ...] = ("weak",)
    semi_names: tuple[str, ...] = ("weak", "weak")
    eval_batch_size = 256

    def _gen(self, epoch: int, tag: int) -> torch.Generator:
        return torch.Generator().manual_seed(
            (int(self.args.seed) * 1_000_003 + epoch * 100 + tag) % 2**63
        )

    def _subset(self, samples: int | None, epoch: int, tag: int) -> Tensor:
        targets = self.noisy.cpu()
        if samples is None:
            return torch.arange(len(targets))
        return class_balanced_subset(
            targets,
            samples,
            num_classes=self.num_classes,
            seed=int(self.args.seed),
            epoch=epoch * 100 + tag,
        )

    def _file_loader(
        self,
        indices: Tensor,
        names,
        batch_size: int,
        epoch: int,
        tag: int,
        shuffle: bool,
        drop_last: bool,
    ):
        indices = indices.cpu()
        drop_last = cd.keep_partial_batch(
            len(indices), batch_size, drop_last, cd.loader_name(tag), self.log
        )
        sampler = (
            SubsetRandomSampler(indices.tolist(), generator=self._gen(epoch, tag))
            if shuffle
            else indices.tolist()
        )
        loader = build_file_loader(
            self.train_set,
            MultiView(self.tf, names),
            batch_size,
            sampler=sampler,
            labels=self.noisy.cpu(),
            num_workers=self.args.num_workers,
            drop_last=drop_last,
            seed=(int(self.args.seed) + epoch * 100 + tag) % 2**63,
        )
        return DeviceLoader(loader, self.args.device, indices.to(self.args.device))

    def warmup_loader(self, epoch: int, k: int):
        idx = self._subset(self.recipe.warmup_samples, epoch, 10 + k)
        return self._file_loader(
            idx, self.warmup_names, 2 * self.args.batch_size, epoch, 10 + k, True, self.drop_last
        )

    def eval_loader(self, epoch: int, k: int):
        idx = self._subset(self.recipe.eval_samples, epoch, 20 + k)
        loader = self._file_loader(idx, ("val",), self.eval_batch_size, epoch, 20 + k, False, False)
        return loader, idx.to(self.args.device)

    def semi_loaders(self, epoch: int, k: int, labeled: Tensor, unlabeled: Tensor):
        bs = self.args.batch_size
        lab = self._file_loader(labeled, self.semi_names, bs, epoch, 30 + k, True, self.drop_last)
        unl = self._file_loader(
            unlabeled if len(unlabeled) else labeled,
            self.semi_names,
            bs,
            epoch,
            40 + k,
            True,
            self.drop_last,
        )
        return lab, unl


def eval_file_loader(
    dataset, transform: Callable, batch_size: int, num_workers: int, device: torch.device
):
    """An in-order loader over a whole evaluation split, moved to ``device``."""
    loader = build_file_loader(
        dataset, transform, batch_size, shuffle=False, num_workers=num_workers
    )
    return DeviceLoader(loader, device, torch.arange(len(dataset), device=device))


def file_data(train_set):
    """The ``data`` object ``CoDivide`` reads, for a file-list training set (labels are the noisy ones)."""
    return SimpleNamespace(
        num_classes=train_set.num_classes,
        train=train_set,
        train_loader=None,
        noisy=SimpleNamespace(labels=train_set.targets),
    )


def webvision_tests(root: Path, tf: dict, args) -> dict:
    """Loaders of WebVision val and ILSVRC12 val (first 50 classes), in order, on the device."""
    from lnl.data import get_dataset

    bs = 2 * args.batch_size
    wv = get_dataset("webvision", root, "val")
    imagenet = get_dataset(
        "ilsvrc12_val", root / "imagenet", "val"
    )  # class c: c-th WNID (synsets order)
    return {
        name: eval_file_loader(ds, tf["val"], bs, args.num_workers, args.device)
        for name, ds in (("val", wv), ("imagenet_val", imagenet))
    }


def topk_tests(method, loaders: dict, *, batch_mean: bool = False) -> Callable[[], dict]:
    """A ``test()`` for ``fit``: top-1/top-5 of ``method`` on each loader; ``test_acc`` is val top-1
    (per sample). ``batch_mean`` also records ``<name>_top1_batchmean``/``_top5_batchmean``, the mean
    of per-batch accuracies that PLReMix's original reports."""

    def test() -> dict:
        out = {}
        for name, loader in loaders.items():
            res = method.test(loader, topk=(1, 5))
            out[f"{name}_top1"], out[f"{name}_top5"] = res["top1"], res["top5"]
            if batch_mean:
                out[f"{name}_top1_batchmean"], out[f"{name}_top5_batchmean"] = (
                    res["top1_batchmean"],
                    res["top5_batchmean"],
                )
        return {"test_acc": out["val_top1"], **out}

    return test
