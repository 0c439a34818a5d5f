"""The CE baseline's real main() on small data: digits end to end, and real CIFAR-10 with a shipped
DivideMix noise file (the measured noise rate must be the file's)."""

from __future__ import annotations

import json

import pytest
import torch

from lnl.engine import read_jsonl
from methods.standard import train


def _run(tmp_path, *extra):
    args = train.get_args_parser().parse_args(
        ["--out", str(tmp_path), "--device", "cpu", "--no-tensorboard", *extra]
    )
    return train.main(args)


def test_digits_two_epochs_learns_and_writes_its_records(tmp_path):
    result = _run(
        tmp_path,
        "--dataset",
        "digits",
        "--r",
        "0.4",
        "--num_epochs",
        "2",
        "--batch_size",
        "32",
        "--lr",
        "0.05",
    )
    assert result["method"] == "standard" and result["noise"] == "sym0.4"
    assert result["test_acc"] > 0.3  # 10 classes: chance is 0.1
    assert [r["step"] for r in read_jsonl(tmp_path / "eval.jsonl")] == [0, 1]
    assert json.loads((tmp_path / "results.jsonl").read_text())["test_acc"] == result["test_acc"]
    noisy = torch.from_numpy(__import__("numpy").load(tmp_path / "noisy_labels.npz")["labels"])
    assert noisy.shape == (1437,)


def test_unknown_dataset_is_a_clear_error(tmp_path):
    with pytest.raises(ValueError, match="unknown dataset 'cifar11'"):
        _run(tmp_path, "--dataset", "cifar11", "--num_epochs", "1")
