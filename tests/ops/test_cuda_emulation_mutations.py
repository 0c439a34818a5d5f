"""Every barrier of the CUDA kernels matters to some emulation test (tests/ops/cuda_emulation/mutate.py):
deleting any one makes a test of tests/ops/test_cuda_emulation.py fail. An hour or more on two cores,
so it runs only with LNL_MUTATE=1 (``make mutate`` prints the whole table instead)."""

from __future__ import annotations

import os

import pytest

from tests.ops.cuda_emulation import mutate


@pytest.mark.slow
@pytest.mark.skipif(not os.environ.get("LNL_MUTATE"), reason="an hour or more: set LNL_MUTATE=1 (or make mutate)")
def test_every_barrier_deletion_is_caught(tmp_path):
    outcomes = mutate.run([m for m in mutate.find_mutations() if m.kind == "barrier"], tmp_path)
    survivors = [o.mutation.where for o in outcomes if o.caught_by is None]
    assert not survivors, f"barriers whose deletion no emulation test notices: {survivors}"
