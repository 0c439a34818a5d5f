"""Fixtures for the data tests: the real CIFAR data in ../shared/data or $LNL_TEST_DATA (decoded once per session; the
decoded arrays are also cached across sessions under $LNL_CACHE) and the clean label arrays."""

from __future__ import annotations

import os
import sys
from pathlib import Path

import numpy as np
import pytest

REPO = Path(__file__).resolve().parents[2]
SHARED_DATA = Path(os.environ.get("LNL_TEST_DATA", REPO.parent / "shared" / "data"))
NOISE_DIR = SHARED_DATA / "noise_labels"

# data_prep scripts import their helpers as top-level modules (they run as scripts).
if str(REPO / "data_prep") not in sys.path:
    sys.path.insert(0, str(REPO / "data_prep"))


def _need(path: Path) -> Path:
    if not path.exists():
        pytest.skip(f"{path} is not present")
    return path


@pytest.fixture(scope="session")
def cifar10_root() -> Path:
    return _need(SHARED_DATA / "cifar10")


@pytest.fixture(scope="session")
def cifar100_root() -> Path:
    return _need(SHARED_DATA / "cifar100")


@pytest.fixture(scope="session")
def noise_dir() -> Path:
    return _need(NOISE_DIR)


@pytest.fixture(scope="session")
def cifar10_train(cifar10_root):
    from lnl.data import get_dataset

    return get_dataset("cifar10", cifar10_root, "train")


@pytest.fixture(scope="session")
def cifar10_test(cifar10_root):
    from lnl.data import get_dataset

    return get_dataset("cifar10", cifar10_root, "test")


@pytest.fixture(scope="session")
def clean_labels(cifar10_train, cifar100_root) -> dict[str, np.ndarray]:
    """Official clean training labels: CIFAR-10 (50k), CIFAR-100 (50k), Tiny-ImageNet (i // 500)."""
    with np.load(cifar100_root / "train_labels_full.npz") as z:
        y100 = np.asarray(z["y"])
    return {
        "cifar10": cifar10_train.targets.numpy(),
        "cifar100": y100,
        "tinyimagenet": np.arange(100_000) // 500,
    }


@pytest.fixture(autouse=True)
def _single_thread():
    """Run the data tests single-threaded: they are many small tensor ops, where OpenMP's fork/join
    costs more than it saves, and on a busy 2-core machine two threads measured 5-10x slower."""
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)
