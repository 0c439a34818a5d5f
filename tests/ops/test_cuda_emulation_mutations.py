"""Every barrier of the CUDA kernels matters to some emulation test (tests/ops/cuda_emulation/mutate.py):
deleting any one makes a test of tests/ops/test_cuda_emulation.py fail. An hour or more on two cores,
so it runs only with LNL_MUTATE=1 (``make mutate`` prints the whole table instead)."""

from __future__ import annotations

import os

import pytest

from tests.ops.cuda_emulation import mutate


@pytest.mark.slow
@pytest.mark.skipif(
    not os.environ.get("LNL_MUTATE"), reason="an hour or more: set LNL_MUTATE=1 (or make mutate)"
)
def test_every_barrier_deletion_is_caught(tmp_path):
    outcomes = mutate.run([m for m in mutate.find_mutations() if m.kind == "barrier"], tmp_path)
    survivors = [o.mutation.where for o in outcomes if o.caught_by is None]
    assert not survivors, f"barriers whose deletion no emulation test notices: {survivors}"


def test_every_site_is_found_and_switched():
    """Each barrier call and shuffle/ballot mask in the kernels' code (not their comments) is one mutation,
    and the instrumented copy differs from the source only at those sites."""
    muts = mutate.find_mutations()
    for path in mutate.sources():
        rel = path.relative_to(mutate.CSRC).as_posix()
        code = "\n".join(line.split("//")[0] for line in path.read_text().splitlines())
        mine = [m for m in muts if m.path == rel]
        barriers = code.count("__syncthreads()") + code.count("__syncwarp(") + code.count(".sync()")
        masks = sum(
            code.count(f"__{c}_sync(")
            for c in ("shfl", "shfl_xor", "shfl_down", "shfl_up", "ballot")
        )
        assert sum(m.kind == "barrier" for m in mine) == barriers, rel
        assert sum(m.kind == "mask" for m in mine) == masks, rel
        text = mutate.instrumented(path.read_text(), mine)
        for m in mine:
            text = text.replace(m.switched(), m.original, 1)
        assert text == path.read_text(), rel
    assert len({m.id for m in muts}) == len(muts)
