"""Bad labels and damaged data files: refused before training, every file error naming its path."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from lnl.data import get_dataset
from lnl.data._base import DataFileError, InMemoryDataset
from lnl.data.noise_files import NoisyLabels, load_noise_file, save_noise_file
from lnl.engine.data import noisy_labels_for
from lnl.engine.settings import NoiseSettings
from methods.standard import train as standard


@pytest.fixture(autouse=True)
def _own_cache(tmp_path, monkeypatch):
    monkeypatch.setenv("LNL_CACHE", str(tmp_path / "cache"))  # decoded arrays: never a shared cache


def _cifar_folder(root, labels: np.ndarray, dtype=np.int64):
    root.mkdir(parents=True, exist_ok=True)
    x = np.zeros((len(labels), 32, 32, 3), np.uint8)
    for split in ("train", "test"):
        np.savez_compressed(root / f"{split}.npz", x=x, y=labels.astype(dtype))
    return root


def test_a_noise_file_label_beyond_the_classes_is_refused_before_training(tmp_path):
    """On a GPU this was a device-side assert deep inside the first epoch."""
    path = tmp_path / "noise.json"
    path.write_text(json.dumps([0, 3, 10, 2]))
    with pytest.raises(
        ValueError,
        match=f"{path} labels span|{path} labels out of range: maximum 10 >= num_classes=10",
    ):
        noisy_labels_for(
            NoiseSettings(file=str(path)), torch.zeros(4, dtype=torch.long), 10, dataset="digits"
        )
    with pytest.raises(ValueError, match="maximum 10 >= num_classes=10"):
        load_noise_file(path, num_classes=10)


def test_float_labels_in_a_dataset_file_are_refused(tmp_path):
    """np.int64 of 0.3, 0.7, ... is 0: every label would be class 0."""
    root = _cifar_folder(tmp_path / "c10", np.linspace(0, 0.9, 200), dtype=np.float32)
    with pytest.raises(ValueError, match=r"cifar10 train \(.*c10\) labels must be integers"):
        get_dataset("cifar10", root, "train")
    whole = InMemoryDataset(
        "x",
        "train",
        np.zeros((3, 2, 2, 3), np.uint8),
        np.array([0.0, 2.0, 1.0]),
        3,
        (0, 0, 0),
        (1, 1, 1),
    )
    assert whole.targets.tolist() == [0, 2, 1]  # integral floats are labels


def test_cifar100_on_a_cifar10_folder_is_refused(tmp_path):
    root = _cifar_folder(tmp_path / "c10", np.arange(1000) % 10)
    assert get_dataset("cifar10", root, "train").num_classes == 10
    with pytest.raises(ValueError, match="labels span 0..9, but cifar100 has 100 classes"):
        get_dataset("cifar100", root, "train")
    with pytest.raises(ValueError, match=r"labels span 0..99, outside 0..9"):
        get_dataset("cifar10", _cifar_folder(tmp_path / "c100", np.arange(1000) % 100), "train")


@pytest.mark.parametrize("value", ["0", "-3", "x"])
def test_subset_must_be_a_positive_count(value, capsys):
    with pytest.raises(SystemExit):
        standard.get_args_parser().parse_args(["--subset", value])
    assert "--subset: expected an integer >= 1" in capsys.readouterr().err


def _truncate(path):
    path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])


def _flip_a_byte(path):
    data = bytearray(path.read_bytes())
    data[len(data) // 3] ^= 0xFF
    path.write_bytes(bytes(data))


@pytest.mark.parametrize("suffix", [".npz", ".npy", ".json"])
@pytest.mark.parametrize("damage", [_truncate, _flip_a_byte, lambda p: p.write_bytes(b"")])
def test_a_damaged_noise_file_names_its_path(tmp_path, suffix, damage):
    path = tmp_path / f"noise{suffix}"
    save_noise_file(path, NoisyLabels(torch.arange(2000) % 10, {"dataset": "cifar10"}))
    damage(path)
    try:
        labels = load_noise_file(path, num_classes=10)
    except ValueError as err:  # DataFileError, or a label check of the damaged content
        assert str(path) in str(err)
    else:  # a flipped byte inside a JSON number or the npy data still parses: the range check holds
        assert labels.labels.min() >= 0 and labels.labels.max() < 10


def test_malformed_json_noise_file_names_its_path(tmp_path):
    path = tmp_path / "noise.json"
    path.write_text("[0, 1, 2")
    with pytest.raises(DataFileError, match=f"noise file {path} cannot be read \\(JSONDecodeError"):
        load_noise_file(path)


@pytest.mark.parametrize("damage", [_truncate, _flip_a_byte])
def test_a_damaged_dataset_npz_names_its_path(tmp_path, damage):
    root = _cifar_folder(tmp_path / "c10", np.random.default_rng(0).integers(0, 10, 500))
    np.savez_compressed(
        root / "train.npz",
        x=np.random.default_rng(1).integers(0, 255, (500, 32, 32, 3), np.uint8),
        y=np.arange(500) % 10,
    )
    damage(root / "train.npz")
    with pytest.raises(DataFileError, match=f"CIFAR file {root / 'train.npz'} cannot be read"):
        get_dataset("cifar10", root, "train")


@pytest.mark.parametrize(
    "name, says",
    [
        ("clothing1m", "request the archives from the authors"),
        ("food101n", "python data_prep/food101n.py --root {root} --download"),
        ("food101", "python data_prep/food101n.py --food101-only --root {root} --download"),
    ],
)
def test_missing_data_hints_say_how_to_get_the_data(tmp_path, name, says):
    """Clothing1M's hint was the checker that had just failed; Food-101N's lacked --download."""
    root = tmp_path / name
    with pytest.raises(FileNotFoundError) as err:
        get_dataset(name, root, "train")
    assert says.format(root=root) in str(err.value)
