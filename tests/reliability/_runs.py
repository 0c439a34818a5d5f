"""Short real runs of an entry point as a subprocess (digits, CPU, one thread): what a user launches."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]


def standard_cmd(out: Path, *extra: str, epochs: int = 1) -> list[str]:
    return [
        sys.executable,
        str(REPO / "methods/standard/train.py"),
        "--dataset",
        "digits",
        "--noise_mode",
        "sym",
        "--r",
        "0.4",
        "--num_epochs",
        str(epochs),
        "--batch_size",
        "64",
        "--device",
        "cpu",
        "--seed",
        "7",
        "--subset",
        "512",
        "--out",
        str(out),
        "--no-tensorboard",
        *extra,
    ]


def env() -> dict:
    return {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONWARNINGS": "ignore"}


def run(cmd: list[str], timeout: float = 180) -> subprocess.CompletedProcess:
    return subprocess.run(cmd, env=env(), capture_output=True, text=True, timeout=timeout)
