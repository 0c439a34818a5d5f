"""Every equivalence test runs on one thread, as the generators did: float32 reductions then add in
the same order as when the fixtures were made. The thread count is restored after each module."""

from __future__ import annotations

import pytest
import torch


@pytest.fixture(scope="module", autouse=True)
def one_thread():
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)
