"""Seeding and RNG state capture: python, numpy, torch (CPU) and every CUDA device."""

from __future__ import annotations

import random
from typing import Any

import numpy as np
import torch


def seed_everything(seed: int) -> None:
    """Seed python's ``random``, numpy's global RNG, torch's CPU RNG and all CUDA RNGs.

    Args:
        seed: the base seed; distributed runs pass ``base + rank`` (``default_setup`` does).
    """
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)
    if torch.cuda.is_available():
        torch.cuda.manual_seed_all(seed)


def get_rng_state() -> dict[str, Any]:
    """Every global RNG state of this process, in a form ``torch.save`` can store and
    ``set_rng_state`` restores. CUDA: the current device's state only (a process trains on one
    device; all devices' states would not load where fewer GPUs are visible)."""
    state = {
        "python": random.getstate(),
        "numpy": np.random.get_state(),
        "torch": torch.get_rng_state(),
    }
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state()
    return state


def set_rng_state(state: dict[str, Any]) -> None:
    """Restore the states captured by ``get_rng_state`` (the CUDA state only when CUDA is present,
    into the current device; checkpoints of older versions hold a list of every device's state)."""
    random.setstate(state["python"])
    np.random.set_state(state["numpy"])
    torch.set_rng_state(state["torch"])
    cuda = state.get("cuda")
    if cuda is not None and torch.cuda.is_available():
        if isinstance(cuda, (list, tuple)):
            cuda = (
                cuda[torch.cuda.current_device()]
                if torch.cuda.current_device() < len(cuda)
                else cuda[0]
            )
        torch.cuda.set_rng_state(cuda)
