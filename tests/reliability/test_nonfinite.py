"""A NaN or inf loss stops the run: non-zero exit, the step and every loss term in the message, no
results row, and no checkpoint of the poisoned weights."""

from __future__ import annotations

import math

import pytest
import torch

from lnl.engine.checkpoint import LAST_CHECKPOINT
from lnl.engine.train_loop import FiniteGuard, NonFiniteLossError
from tests.reliability._runs import run, standard_cmd


def test_guard_names_the_first_bad_step_and_every_term():
    guard = FiniteGuard("epoch 3")
    guard.watch(0, ce=torch.tensor(2.5), extra=torch.tensor(0.1))
    with pytest.raises(NonFiniteLossError, match=r"epoch 3, step 1: ce=2\.25, extra=inf"):
        guard.watch(1, ce=torch.tensor(2.25), extra=torch.tensor(math.inf))


def test_deferred_guard_keeps_the_first_bad_step_until_check():
    """The GPU path (no host sync per step): later bad steps do not replace the first one."""
    guard = FiniteGuard(defer=True)
    for step in range(5):
        guard.watch(step, loss=torch.tensor(float(step)))
    guard.check()
    guard.watch(5, loss=torch.tensor(math.nan))
    guard.watch(6, loss=torch.tensor(math.inf))
    guard.watch(7, loss=torch.tensor(1.0))
    with pytest.raises(NonFiniteLossError, match="step 5: loss=nan"):
        guard.check()


@pytest.mark.slow
def test_a_diverging_run_exits_non_zero_without_a_result(tmp_path):
    out = tmp_path / "run"
    done = run(standard_cmd(out, "--lr", "1e30", epochs=2))
    assert done.returncode != 0
    assert "NonFiniteLossError: non-finite loss at epoch 0, step" in done.stderr
    assert "loss=nan" in done.stderr or "loss=inf" in done.stderr
    assert not (out / "results.jsonl").exists()
    assert not (out / "eval.jsonl").exists() and not (out / LAST_CHECKPOINT).exists()
