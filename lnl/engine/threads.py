"""CPU thread count for small runs.

Tiny matmuls and convolutions with several intra-op threads on a shared 2-core machine ran up to ten
times slower than with one (LRA on digits: 31 s with 1 thread, 305 s with 2 under load), so small CPU
runs pin one thread for their duration and restore the previous count afterwards.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

import torch

SMALL_RUN_SAMPLES = 20_000


def small_run_threads(requested: int | None, device: torch.device, num_samples: int) -> int | None:
    """``requested`` when given; else 1 for a CPU run over fewer than 20k samples; else None (unchanged)."""
    if requested:
        return requested
    return 1 if device.type == "cpu" and num_samples < SMALL_RUN_SAMPLES else None


@contextlib.contextmanager
def cpu_threads(n: int | None) -> Iterator[None]:
    """Run the block with ``torch.set_num_threads(n)`` (None: leave it), then restore the count."""
    before = torch.get_num_threads()
    if n:
        torch.set_num_threads(n)
    try:
        yield
    finally:
        torch.set_num_threads(before)
