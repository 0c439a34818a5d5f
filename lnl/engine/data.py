"""From flags to batches: the dataset, its noisy labels (generated or read from a file, and saved in
the run folder) and GPU-resident loaders. Every method's entry point calls ``build_noisy_data``."""

from __future__ import annotations

import argparse
import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

import torch

from lnl.data import get_dataset
from lnl.data._base import InMemoryDataset
from lnl.data.gpu import GPULoader
from lnl.data.noise import make_noise
from lnl.data.noise_files import NoisyLabels, load_noise_file, save_noise_file
from lnl.engine import comm


@dataclass
class NoisyData:
    train: object  # the training dataset (clean labels in .targets)
    test: object
    noisy: NoisyLabels
    num_classes: int
    train_loader: GPULoader
    test_loader: GPULoader


def noise_name(args: argparse.Namespace) -> str:
    """A short name of the noise setting, e.g. ``sym0.4`` or the noise file's stem."""
    if getattr(args, "noise_file", None):
        return Path(args.noise_file).stem
    return f"{args.noise_mode}{args.r:g}"


def noisy_labels_for(args: argparse.Namespace, targets: torch.Tensor, num_classes: int) -> NoisyLabels:
    """Read ``--noise_file`` when given, else generate ``--noise_mode`` at rate ``--r`` with ``--seed``."""
    if getattr(args, "noise_file", None):
        noisy = load_noise_file(args.noise_file, num_classes=num_classes)
        if _labels_of_a_subset_run(noisy, args, len(targets)):
            return noisy
        if noisy.labels.shape[0] != targets.shape[0]:
            raise ValueError(f"--noise_file {args.noise_file} has {noisy.labels.shape[0]} labels but "
                             f"the {args.dataset} training split has {targets.shape[0]} images")
        return noisy
    return make_noise(targets, args.noise_mode, args.r, num_classes=num_classes, seed=args.seed,
                      dataset=args.dataset)


def _labels_of_a_subset_run(noisy: NoisyLabels, args: argparse.Namespace, split_size: int) -> bool:
    """True for the ``noisy_labels.npz`` of a ``--subset N`` run read by a run with the same ``--subset``
    on the same dataset (the labels of the first N images, or of all when the split is smaller); any
    other run gets an error saying what the file needs."""
    written = noisy.meta.get("subset")
    if not written:
        return False
    made_for = noisy.meta.get("dataset")
    if made_for is not None and made_for != args.dataset:
        raise ValueError(f"--noise_file {args.noise_file} holds labels of {made_for}, not {args.dataset}")
    if getattr(args, "subset", None) != written or noisy.labels.shape[0] != min(written, split_size):
        raise ValueError(f"--noise_file {args.noise_file} holds the labels of a --subset {written} run (its "
                         f"first {written} images): read it with --subset {written}, or use a full run's file")
    return True


def positive_int(text: str) -> int:
    """An argparse type: an integer >= 1 (``--subset 0`` would otherwise mean the whole split)."""
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected an integer >= 1, got {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"expected an integer >= 1, got {value}")
    return value


def add_subset_flag(parser: argparse.ArgumentParser) -> None:
    """``--subset N`` for entry points that load their data through ``build_noisy_data``."""
    parser.add_argument("--subset", type=positive_int, default=None, metavar="N",
                        help="train and test on the first N images only (a CPU smoke test of a real dataset)")


def check_subset_size(subset: int | None, num_classes: int, dataset: str) -> None:
    """``--subset N`` must keep at least one image per class (of the split it cuts)."""
    if subset is not None and subset < num_classes:
        raise ValueError(f"--subset {subset} keeps fewer images than {dataset} has classes ({num_classes})")


def subset_suffix(args: argparse.Namespace) -> str:
    """``-sub<N>`` for a ``--subset N`` run's default folder: with ``--resume auto`` a subset run and a
    full run in one folder would resume each other's checkpoint."""
    subset = getattr(args, "subset", None)
    return f"-sub{subset}" if subset else ""


def first_images(ds: InMemoryDataset, n: int) -> InMemoryDataset:
    """The split's first ``n`` images (all of them when it has fewer)."""
    if n >= len(ds):
        return ds
    noisy = None if ds.noisy_targets is None else ds.noisy_targets[:n]
    return InMemoryDataset(ds.name, ds.split, ds.images[:n], ds.targets[:n], ds.num_classes, ds.mean, ds.std,
                           classes=ds.classes, noisy_targets=noisy, root=ds.root)


def build_noisy_data(args: argparse.Namespace, log: logging.Logger | None = None,
                     normalisation: tuple[Sequence[float], Sequence[float]] | None = None) -> NoisyData:
    """Load ``--dataset`` from ``--data_path``, apply the noise, save it as ``<out>/noisy_labels.npz``.

    The loaders keep the uint8 data on ``args.device`` and draw epoch ``e``'s batches and
    augmentations from ``(seed, e)`` only, so a resumed run sees the batches an uninterrupted one saw.
    ``--subset N`` keeps the first N training and test images after the noise is drawn over the whole
    split (a noise file's labels stay aligned with their images): a CPU smoke test of a real dataset.
    ``normalisation`` (mean, std) overrides the dataset's: the constants belong to the method (DivideMix
    normalises CIFAR-100 with other values than PLReMix).
    """
    train = get_dataset(args.dataset, args.data_path, "train")
    test = get_dataset(args.dataset, args.data_path, "test")
    noisy = noisy_labels_for(args, train.targets, train.num_classes)
    subset = getattr(args, "subset", None)
    if subset:
        check_subset_size(subset, train.num_classes, args.dataset)
        train, test = first_images(train, subset), first_images(test, subset)
        noisy = NoisyLabels(noisy.labels[:subset], {**noisy.meta, "subset": subset})  # no-op on a subset file
    if comm.is_main_process():
        save_noise_file(Path(args.out) / "noisy_labels.npz", noisy)
    if log is not None:
        actual = float((noisy.labels != train.targets).float().mean())
        log.info("%s: %d train / %d test, noise %s, measured noise rate %.4f", args.dataset, len(train),
                 len(test), noise_name(args), actual)
    # channels_last batches on CUDA, where the networks are channels_last (no layout change per forward)
    mean, std = normalisation if normalisation is not None else (train.mean, train.std)
    common = dict(mean=mean, std=std, device=args.device,
                  channels_last=torch.device(args.device).type == "cuda")
    train_loader = GPULoader(train.images, noisy.labels, args.batch_size, train=True, seed=args.seed, **common)
    test_loader = GPULoader(test.images, test.targets, max(args.batch_size, 256), train=False, **common)
    return NoisyData(train, test, noisy, train.num_classes, train_loader, test_loader)
