"""Checks shared by the noise generators (:mod:`lnl.data.noise`, :mod:`lnl.data.noise_models`) and the
noise-file readers (:mod:`lnl.data.noise_files`): labels, rates and a noise type's options."""

from __future__ import annotations

from typing import Any

import numpy as np
import torch


def check_labels(labels: Any, num_classes: int | None = None, name: str = "labels") -> np.ndarray:
    """Validate labels and return them as a 1-D int64 numpy array.

    Args:
        labels: 1-D integer sequence, ndarray or tensor.
        num_classes: if given, every label must lie in ``[0, num_classes)``.
        name: used in error messages.

    Returns:
        ``np.ndarray[N]`` int64.

    Raises:
        ValueError: not 1-D, not integer, or out of range.
    """
    arr = labels.detach().cpu().numpy() if isinstance(labels, torch.Tensor) else np.asarray(labels)
    if arr.ndim != 1:
        raise ValueError(f"{name} must be 1-D, got shape {arr.shape}")
    if arr.size and not np.issubdtype(arr.dtype, np.integer):
        if not (np.issubdtype(arr.dtype, np.floating) and np.all(arr == np.round(arr))):
            raise ValueError(f"{name} must be integers, got dtype {arr.dtype}")
    arr = arr.astype(np.int64)
    if arr.size and arr.min() < 0:
        raise ValueError(f"{name} out of range: minimum {arr.min()} < 0")
    if num_classes is not None and arr.size and arr.max() >= num_classes:
        raise ValueError(f"{name} out of range: maximum {arr.max()} >= num_classes={num_classes}")
    return arr


def check_rate(rate: float, name: str = "rate") -> float:
    """Raise ``ValueError`` unless ``rate`` is a number in [0, 1]."""
    try:
        r = float(rate)
    except (TypeError, ValueError):
        raise ValueError(f"{name} must be a number in [0, 1], got {rate!r}") from None
    if not 0.0 <= r <= 1.0:
        raise ValueError(f"{name} must be in [0, 1], got {rate}")
    return r


def reject_options(options: dict[str, Any], allowed: tuple[str, ...]) -> None:
    """Raise ``ValueError`` for options a noise type does not take (catches typos)."""
    extra = sorted(set(options) - set(allowed))
    if extra:
        raise ValueError(f"unexpected options {extra}; this noise type accepts {list(allowed)}")
