"""Typed settings: what ``from_args`` reads from an entry point's flags, and the values it refuses."""

from __future__ import annotations

import dataclasses

import pytest

from lnl.engine.settings import DataSettings, NoiseSettings
from methods.standard import train as standard


def test_from_args_reads_the_entry_points_flags():
    args = standard.get_args_parser().parse_args(
        [
            "--dataset",
            "digits",
            "--noise_mode",
            "asym",
            "--r",
            "0.3",
            "--seed",
            "7",
            "--batch_size",
            "16",
            "--subset",
            "200",
            "--out",
            "runs/x",
            "--device",
            "cpu",
            "--data_path",
            "data/digits",
        ]
    )
    assert DataSettings.from_args(args) == DataSettings(
        dataset="digits",
        noise=NoiseSettings("asym", 0.3, seed=7),
        out="runs/x",
        data_path="data/digits",
        device="cpu",
        batch_size=16,
        seed=7,
        subset=200,
    )


def test_the_noise_name_and_an_empty_noise_file():
    args = standard.get_args_parser().parse_args(
        ["--noise_mode", "sym", "--r", "0.4", "--noise_file", ""]
    )
    assert (
        NoiseSettings.from_args(args).file is None
        and NoiseSettings.from_args(args).name == "sym0.4"
    )
    assert NoiseSettings(file="noise/cifar10/0.50.json").name == "0.50"


@pytest.mark.parametrize(
    "kw, message",
    [
        ({"mode": "uniform"}, "--noise_mode 'uniform' is not a noise type; valid: sym, "),
        ({"rate": 1.5}, r"--r \(the noise rate\) must be in \[0, 1\], got 1.5"),
        ({"rate": "high"}, r"--r \(the noise rate\) must be a number in \[0, 1\], got 'high'"),
    ],
)
def test_bad_noise_values_are_refused_by_flag(kw, message):
    with pytest.raises(ValueError, match=message):
        NoiseSettings(**kw)


def test_a_noise_file_is_used_whatever_the_mode_and_rate_say():
    assert NoiseSettings(mode="real", rate=2.0, file="labels.npz").name == "labels"


@pytest.mark.parametrize(
    "kw, message",
    [
        ({"batch_size": 0}, "--batch_size must be an integer >= 1, got 0"),
        ({"subset": 0}, "--subset must be an integer >= 1, got 0"),
    ],
)
def test_bad_data_values_are_refused_by_flag(kw, message):
    with pytest.raises(ValueError, match=message):
        DataSettings(dataset="digits", noise=NoiseSettings(), out="runs/x", **kw)


def test_settings_are_frozen():
    with pytest.raises(dataclasses.FrozenInstanceError):
        NoiseSettings().rate = 0.2
