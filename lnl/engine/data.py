"""From settings to batches: the dataset, its noisy labels (generated or read from a file, and saved in
the run folder) and GPU-resident loaders. Entry points call ``build_noisy_data`` with the
:class:`~lnl.engine.settings.DataSettings` of their flags."""

from __future__ import annotations

import argparse
import logging
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import torch

from lnl.data import get_dataset
from lnl.data._base import InMemoryDataset
from lnl.data.gpu import GPULoader
from lnl.data.noise import make_noise
from lnl.data.noise_files import NoisyLabels, load_noise_file, save_noise_file
from lnl.engine import comm
from lnl.engine.settings import DataSettings, NoiseSettings


@dataclass
class NoisyData:
    train: object  # the training dataset (clean labels in .targets)
    test: object
    noisy: NoisyLabels
    num_classes: int
    train_loader: GPULoader
    test_loader: GPULoader


def noisy_labels_for(
    noise: NoiseSettings,
    targets: torch.Tensor,
    num_classes: int,
    *,
    dataset: str,
    subset: int | None = None,
) -> NoisyLabels:
    """Read ``noise.file`` when given, else generate ``noise.mode`` at ``noise.rate`` with ``noise.seed``
    for the training split of ``dataset`` (``targets``); ``subset``: the run's ``--subset``."""
    if noise.file:
        noisy = load_noise_file(noise.file, num_classes=num_classes)
        if _labels_of_a_subset_run(noisy, noise.file, dataset, subset, len(targets)):
            return noisy
        if noisy.labels.shape[0] != targets.shape[0]:
            raise ValueError(
                f"--noise_file {noise.file} has {noisy.labels.shape[0]} labels but "
                f"the {dataset} training split has {targets.shape[0]} images"
            )
        return noisy
    return make_noise(
        targets, noise.mode, noise.rate, num_classes=num_classes, seed=noise.seed, dataset=dataset
    )


def _labels_of_a_subset_run(
    noisy: NoisyLabels, path: str, dataset: str, subset: int | None, split_size: int
) -> bool:
    """True for the ``noisy_labels.npz`` of a ``--subset N`` run read by a run with the same ``--subset``
    on the same dataset (the labels of the first N images, or of all when the split is smaller); any
    other run gets an error saying what the file needs."""
    written = noisy.meta.get("subset")
    if not written:
        return False
    made_for = noisy.meta.get("dataset")
    if made_for is not None and made_for != dataset:
        raise ValueError(f"--noise_file {path} holds labels of {made_for}, not {dataset}")
    if subset != written or noisy.labels.shape[0] != min(written, split_size):
        raise ValueError(
            f"--noise_file {path} holds the labels of a --subset {written} run (its "
            f"first {written} images): read it with --subset {written}, or use a full run's file"
        )
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
    parser.add_argument(
        "--subset",
        type=positive_int,
        default=None,
        metavar="N",
        help="train and test on the first N images only (a CPU smoke test of a real dataset)",
    )


def check_subset_size(subset: int | None, num_classes: int, dataset: str) -> None:
    """``--subset N`` must keep at least one image per class (of the split it cuts)."""
    if subset is not None and subset < num_classes:
        raise ValueError(
            f"--subset {subset} keeps fewer images than {dataset} has classes ({num_classes})"
        )


def subset_suffix(subset: int | None) -> str:
    """``-sub<N>`` for a ``--subset N`` run's default folder: with ``--resume auto`` a subset run and a
    full run in one folder would resume each other's checkpoint."""
    return f"-sub{subset}" if subset else ""


def first_images(ds: InMemoryDataset, n: int) -> InMemoryDataset:
    """The split's first ``n`` images (all of them when it has fewer)."""
    return ds if n >= len(ds) else ds.take(slice(0, n))


def build_noisy_data(
    settings: DataSettings,
    log: logging.Logger | None = None,
    normalisation: tuple[Sequence[float], Sequence[float]] | None = None,
) -> NoisyData:
    """Load ``settings.dataset`` from ``settings.data_path``, apply ``settings.noise``, save the labels
    as ``<settings.out>/noisy_labels.npz``.

    The loaders keep the uint8 data on ``settings.device`` and draw epoch ``e``'s batches and
    augmentations from ``(seed, e)`` only, so a resumed run sees the batches an uninterrupted one saw.
    ``subset`` (``--subset N``) keeps the first N training and test images after the noise is drawn over the whole
    split (a noise file's labels stay aligned with their images): a CPU smoke test of a real dataset.
    ``normalisation`` (mean, std) overrides the dataset's: the constants belong to the method (DivideMix
    normalises CIFAR-100 with other values than PLReMix).
    """
    dataset, subset = settings.dataset, settings.subset
    train = get_dataset(dataset, settings.data_path, "train")
    test = get_dataset(dataset, settings.data_path, "test")
    noisy = noisy_labels_for(
        settings.noise, train.targets, train.num_classes, dataset=dataset, subset=subset
    )
    if subset:
        check_subset_size(subset, train.num_classes, dataset)
        train, test = first_images(train, subset), first_images(test, subset)
        noisy = NoisyLabels(
            noisy.labels[:subset], {**noisy.meta, "subset": subset}
        )  # no-op on a subset file
    if comm.is_main_process():
        save_noise_file(Path(settings.out) / "noisy_labels.npz", noisy)
    if log is not None:
        actual = float((noisy.labels != train.targets).float().mean())
        log.info(
            "%s: %d train / %d test, noise %s, measured noise rate %.4f",
            dataset,
            len(train),
            len(test),
            settings.noise.name,
            actual,
        )
    # channels_last batches on CUDA, where the networks are channels_last (no layout change per forward)
    mean, std = normalisation if normalisation is not None else (train.mean, train.std)
    common = dict(
        mean=mean,
        std=std,
        device=settings.device,
        channels_last=torch.device(settings.device).type == "cuda",
    )
    bs = settings.batch_size
    train_loader = GPULoader(
        train.images,
        noisy.labels,
        bs,
        train=True,
        seed=settings.seed,
        crop_padding=train.crop_padding,
        flip=train.flip,
        **common,
    )
    test_loader = GPULoader(test.images, test.targets, max(bs, 256), train=False, **common)
    return NoisyData(train, test, noisy, train.num_classes, train_loader, test_loader)
