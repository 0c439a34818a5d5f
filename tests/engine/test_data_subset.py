"""``--subset N``: the first N images of a real split, with the noise drawn over the whole split."""

from __future__ import annotations

import argparse

import pytest
import torch

from lnl.engine.data import add_subset_flag, build_noisy_data, noisy_labels_for, subset_suffix
from lnl.engine.settings import DataSettings, NoiseSettings


def _settings(tmp_path, *extra: str, noise_file: str | None = None) -> DataSettings:
    """digits, 40 % sym noise, seed 3, batch 32, with ``extra`` flags parsed by ``add_subset_flag``."""
    p = argparse.ArgumentParser()
    add_subset_flag(p)
    subset = p.parse_args(list(extra)).subset
    return DataSettings(
        dataset="digits",
        noise=NoiseSettings("sym", 0.4, seed=3, file=noise_file),
        out=str(tmp_path),
        device="cpu",
        batch_size=32,
        seed=3,
        subset=subset,
    )


def test_subset_keeps_the_first_images_and_their_noisy_labels(tmp_path):
    full = build_noisy_data(_settings(tmp_path / "full"))
    part = build_noisy_data(_settings(tmp_path / "part", "--subset", "100"))
    assert len(part.train) == 100 and len(part.test) == 100
    assert torch.equal(part.train.images, full.train.images[:100])
    assert torch.equal(part.noisy.labels, full.noisy.labels[:100])  # same draw, then cut
    assert torch.equal(part.test.targets, full.test.targets[:100])
    assert part.noisy.meta["subset"] == 100 and len(part.train_loader.labels) == 100


def test_subset_smaller_than_the_classes_is_refused(tmp_path):
    with pytest.raises(ValueError, match="--subset 5 keeps fewer images than digits has classes"):
        build_noisy_data(_settings(tmp_path, "--subset", "5"))


def test_subset_runs_get_their_own_default_folder(tmp_path):
    """--resume auto must not resume a full run's checkpoint in a subset run (or the reverse)."""
    assert subset_suffix(_settings(tmp_path).subset) == ""
    assert subset_suffix(_settings(tmp_path, "--subset", "256").subset) == "-sub256"


def test_a_subset_runs_label_file_is_read_back_by_a_run_with_that_subset(tmp_path):
    """``<out>/noisy_labels.npz`` of a --subset run holds its first N labels: another --subset N run
    trains on exactly them; a full run, or another N, is told which --subset the file needs."""
    part = build_noisy_data(_settings(tmp_path / "part", "--subset", "100"))
    written = str(tmp_path / "part" / "noisy_labels.npz")
    again = _settings(tmp_path / "again", "--subset", "100", noise_file=written)
    assert torch.equal(build_noisy_data(again).noisy.labels, part.noisy.labels)
    for extra in ((), ("--subset", "50")):
        other = _settings(tmp_path / "other", *extra, noise_file=written)
        with pytest.raises(
            ValueError, match="labels of a --subset 100 run .* read it with --subset 100"
        ):
            build_noisy_data(other)


def test_a_subset_file_of_a_whole_small_split_and_of_another_dataset(tmp_path):
    """--subset N at or above the split size keeps every image (N > labels in the file) and still reads
    back with --subset N; a subset file of another dataset is refused by name."""
    whole = build_noisy_data(_settings(tmp_path / "whole", "--subset", "5000"))
    written = str(tmp_path / "whole" / "noisy_labels.npz")
    again = _settings(tmp_path / "again", "--subset", "5000", noise_file=written)
    assert len(whole.train) == 1437 and torch.equal(
        build_noisy_data(again).noisy.labels, whole.noisy.labels
    )
    with pytest.raises(ValueError, match="holds labels of digits, not cifar10"):
        noisy_labels_for(
            NoiseSettings(file=written),
            torch.zeros(50000, dtype=torch.long),
            10,
            dataset="cifar10",
            subset=5000,
        )
