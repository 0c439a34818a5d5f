"""The run driver (lnl/engine/runner.py): a run stopped after some epochs and resumed ends where a
straight run ends (weights, state, logged rows, the results record), a non-finite step leaves the
previous checkpoint, and a record survives the trip through ``results.jsonl`` and collect.py."""

import argparse
import json
import logging
import math
import sys
from pathlib import Path

import pytest
import torch

from lnl.engine.runner import Runner, RunRecord, read_records
from lnl.engine.train_loop import FiniteGuard, NonFiniteLossError

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))
from launchers import collect  # noqa: E402

LOG = logging.getLogger("test_runner")


def _args(out: Path, epochs: int, resume: str = "auto") -> argparse.Namespace:
    return argparse.Namespace(
        out=str(out),
        resume=resume,
        tensorboard=False,
        wandb=False,
        offline=False,
        num_epochs=epochs,
        seed=0,
        dataset="toy",
    )


def _toy_run(
    out: Path, epochs: int, stop_after: int | None = None, bad_epoch: int | None = None
) -> dict | None:
    """A linear model on noisy random data, one SGD step per epoch drawing from the global RNG (so a
    resume must restore the RNG state too). ``stop_after``: the process dies after that epoch."""
    torch.manual_seed(0)
    x, y = torch.randn(64, 5), torch.randint(0, 3, (64,))
    model = torch.nn.Linear(5, 3)
    opt = torch.optim.SGD(model.parameters(), lr=0.5, momentum=0.9)
    args = _args(out, epochs)
    runner = Runner(
        args,
        LOG,
        models={"model": model},
        optimizers={"opt": opt},
        state={"last_acc": None},
        length_flag="num_epochs",
    )
    runner.resume()
    state = runner.state

    def step(epoch: int) -> dict:
        rows = torch.randint(0, 64, (32,))  # the RNG stream matters
        loss = torch.nn.functional.cross_entropy(model(x[rows]), y[rows])
        if epoch == bad_epoch:
            loss = loss * math.inf
        FiniteGuard(f"epoch {epoch}").watch(0, loss=loss)
        opt.zero_grad()
        loss.backward()
        opt.step()
        acc = float((model(x).argmax(1) == y).float().mean())
        state["best_acc"] = max(state["best_acc"], acc)
        return {"loss": float(loss.detach()), "test_acc": acc}

    def record(epoch: int, metrics: dict) -> None:
        state["last_acc"] = metrics["test_acc"]
        runner.log_metrics(epoch, metrics)
        if epoch == stop_after:
            runner.checkpoint(epoch)
            raise KeyboardInterrupt  # killed after this epoch's checkpoint

    try:
        runner.run(epochs, step, record)
    except KeyboardInterrupt:
        runner.close()
        return None
    return runner.finish(
        RunRecord(
            method="toy",
            dataset="toy",
            noise="sym0.5",
            seed=0,
            epochs=epochs,
            test_acc=state["last_acc"],
            best_acc=state["best_acc"],
            seconds=runner.seconds,
            run_dir=str(out),
            extra={"fixes": ["a"]},
        )
    )


def _weights(out: Path) -> dict:
    return torch.load(out / "last.pth", weights_only=False)["models"]["model"]


def _eval_rows(out: Path) -> list[dict]:
    rows = [json.loads(line) for line in (out / "eval.jsonl").read_text().splitlines()]
    return [{k: v for k, v in r.items() if k not in ("time", "seconds")} for r in rows]


def test_a_resumed_run_equals_a_straight_one(tmp_path):
    straight = _toy_run(tmp_path / "straight", 6)
    assert _toy_run(tmp_path / "resumed", 6, stop_after=2) is None
    assert not (tmp_path / "resumed" / "results.jsonl").exists()
    resumed = _toy_run(tmp_path / "resumed", 6)
    for key, value in _weights(tmp_path / "straight").items():
        assert torch.equal(value, _weights(tmp_path / "resumed")[key]), key
    assert _eval_rows(tmp_path / "resumed") == _eval_rows(tmp_path / "straight")
    assert [r["step"] for r in _eval_rows(tmp_path / "resumed")] == list(range(6))
    drop = ("seconds", "run_dir")
    assert {k: v for k, v in resumed.items() if k not in drop} == {
        k: v for k, v in straight.items() if k not in drop
    }
    assert straight["epochs"] == 6 and straight["test_acc"] is not None


def test_a_non_finite_step_stops_the_run_and_keeps_the_previous_checkpoint(tmp_path):
    with pytest.raises(NonFiniteLossError, match="epoch 3"):
        _toy_run(tmp_path, 6, bad_epoch=3)
    assert torch.load(tmp_path / "last.pth", weights_only=False)["epoch"] == 2
    assert not (tmp_path / "results.jsonl").exists()


def test_a_longer_relaunch_is_refused(tmp_path):
    _toy_run(tmp_path, 2)
    with pytest.raises(ValueError, match="--num_epochs 2"):
        _toy_run(tmp_path, 4)


def test_the_record_round_trips_through_results_jsonl_and_collect(tmp_path):
    record = RunRecord(
        method="toy",
        dataset="digits",
        noise="sym0.4",
        seed=3,
        epochs=5,
        test_acc=0.5,
        best_acc=0.75,
        seconds=1.25,
        run_dir=str(tmp_path / "run"),
        subset=200,
        extra={"auc": 0.9, "fixes": ["fix_p1"], "val_acc": None},
    )
    record.append_to(tmp_path / "run")
    with open(
        tmp_path / "run" / "results.jsonl", "a"
    ) as f:  # NMTune's per-epoch lines share the file
        f.write(json.dumps({"train_dataset": "CIFAR10", "current_epoch": 0}) + "\n")
    (back,) = read_records(tmp_path / "run" / "results.jsonl")
    assert back == record
    (found,) = collect.find_results([tmp_path])
    assert found == {**record.to_line(), "run_dir": str(tmp_path / "run"), "settings": {}}
    (row,) = collect.summarize([found])
    assert (row["method"], row["epochs"], row["test_acc"], row["best_acc"], row["subset"]) == (
        "toy",
        "5",
        50.0,
        75.0,
        200,
    )


def test_a_line_without_the_record_keys_is_refused():
    assert (
        RunRecord.from_line({"method": "toy", "dataset": "d", "noise": "n", "steps": 9}).steps == 9
    )
    with pytest.raises(ValueError, match="needs method, dataset, noise"):
        RunRecord.from_line({"method": "toy", "current_epoch": 0})
