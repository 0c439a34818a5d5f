"""Checkpoints: atomic writes, a full state round trip, and a real kill-and-resume of a training run
that must end with exactly the weights of an uninterrupted run."""

from __future__ import annotations

import os
import random
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch

from lnl.engine import (
    LAST_CHECKPOINT,
    find_resume_path,
    load_checkpoint,
    read_jsonl,
    save_checkpoint,
)
from lnl.engine.checkpoint import atomic_save

REPO = Path(__file__).resolve().parents[2]


class _Unpicklable:
    def __reduce__(self):
        raise RuntimeError("disk full (simulated)")


def test_atomic_save_keeps_the_previous_file_when_writing_fails(tmp_path):
    path = tmp_path / LAST_CHECKPOINT
    atomic_save({"epoch": 3}, path)
    with pytest.raises(RuntimeError, match="disk full"):
        atomic_save({"epoch": 4, "bad": _Unpicklable()}, path)
    assert torch.load(path)["epoch"] == 3
    assert [p.name for p in tmp_path.iterdir()] == [LAST_CHECKPOINT]  # no temp file left behind


def _objects(seed: int):
    torch.manual_seed(seed)
    model = torch.nn.Linear(4, 3)
    opt = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9)
    sched = torch.optim.lr_scheduler.StepLR(opt, 2)
    return model, opt, sched


def test_round_trip_restores_model_optimizer_scheduler_rng_and_method_state(tmp_path):
    model, opt, sched = _objects(0)
    model(torch.randn(8, 4)).sum().backward()
    opt.step()
    sched.step()
    save_checkpoint(
        tmp_path,
        epoch=5,
        models={"m": model},
        optimizers={"o": opt},
        schedulers={"s": sched},
        method_state={"history": [1, 2]},
        args={"lr": 0.1},
    )
    expected = (random.random(), np.random.rand(), torch.rand(1))

    fresh_model, fresh_opt, fresh_sched = _objects(1)
    state = load_checkpoint(
        find_resume_path(tmp_path, "auto"),
        models={"m": fresh_model},
        optimizers={"o": fresh_opt},
        schedulers={"s": fresh_sched},
    )
    assert state["epoch"] == 5 and state["method_state"] == {"history": [1, 2]}
    assert torch.equal(fresh_model.weight, model.weight)
    assert fresh_sched.last_epoch == 1
    assert torch.equal(
        fresh_opt.state_dict()["state"][0]["momentum_buffer"],
        opt.state_dict()["state"][0]["momentum_buffer"],
    )
    assert (random.random(), np.random.rand(), torch.rand(1)) == expected


def test_a_checkpoint_of_another_subset_is_refused(tmp_path):
    """A --subset run and a full run in one folder must not resume each other (the launcher and an
    explicit --out can put them there)."""
    model, opt, _ = _objects(0)
    save_checkpoint(
        tmp_path, epoch=1, models={"m": model}, optimizers={"o": opt}, args={"subset": 256}
    )
    path = find_resume_path(tmp_path, "auto")
    with pytest.raises(ValueError, match="--subset 256, this run has --subset None"):
        load_checkpoint(path, models={"m": model}, run_args={"subset": None, "lr": 0.1})
    assert load_checkpoint(path, models={"m": model}, run_args={"subset": 256})["epoch"] == 1
    assert load_checkpoint(path, models={"m": model})["epoch"] == 1  # no run args: no check


@pytest.mark.parametrize(
    "saved, now, message",
    [
        (
            {"noise_mode": "sym", "r": 0.5},
            {"noise_mode": "sym", "r": 0.8},
            "--r 0.5, this run has --r 0.8",
        ),
        (
            {"dataset": "cifar10"},
            {"dataset": "cifar100"},
            "--dataset cifar10, this run has --dataset cifar100",
        ),
        (
            {"noise_type": "cifar10-1-0.35"},
            {"noise_type": "cifar10-1-0.25"},
            "--noise_type cifar10-1-0.35",
        ),
        ({"seed": 1}, {"seed": 2}, "--seed 1, this run has --seed 2"),
        ({"train_dataset": "CIFAR10"}, {"train_dataset": "CIFAR100"}, "--train-dataset CIFAR10"),
        ({"noise_file": "a/0.50.json"}, {"noise_file": "a/0.80.json"}, "--noise_file a/0.50.json"),
    ],
)
def test_a_checkpoint_of_other_data_is_refused(tmp_path, saved, now, message):
    """Another dataset, noise, noise file or seed in the same folder is another run, not a resume."""
    model, opt, _ = _objects(0)
    save_checkpoint(tmp_path, epoch=1, models={"m": model}, args={**saved, "lr": 0.1})
    with pytest.raises(ValueError, match=re.escape(message)):
        load_checkpoint(tmp_path / "last.pth", models={"m": model}, run_args={**now, "lr": 0.2})


def test_a_resume_compares_only_what_both_runs_have(tmp_path):
    """Other hyperparameters may change on resume; a moved noise file (same name, the old path gone)
    still resumes; a name one side lacks (a checkpoint from before a flag existed) is not compared."""
    model, opt, _ = _objects(0)
    save_checkpoint(
        tmp_path,
        epoch=1,
        models={"m": model},
        args={"noise_file": "/old/data/0.50.json", "seed": 0, "lr": 0.1, "num_epochs": 10},
    )
    run = {"noise_file": "/new/data/0.50.json", "seed": 0, "lr": 0.01, "num_epochs": 20, "r": 0.5}
    assert load_checkpoint(tmp_path / "last.pth", models={"m": model}, run_args=run)["epoch"] == 1


@pytest.mark.parametrize("key", ["noise_file", "noise_type"])
def test_noise_files_that_both_exist_compare_by_content(tmp_path, key):
    """Two DMLP outputs are both purified_labels.json: a run on the other one is another run; the same
    file reached by another path (relative, or a copy) resumes. LRA's --noise_type may be such a path."""
    (tmp_path / "a").mkdir(), (tmp_path / "b").mkdir(), (tmp_path / "c").mkdir()
    (tmp_path / "a" / "purified_labels.json").write_text("[0, 1, 1]")
    (tmp_path / "b" / "purified_labels.json").write_text("[0, 1, 2]")
    (tmp_path / "c" / "purified_labels.json").write_text("[0, 1, 1]")
    model, _, _ = _objects(0)
    save_checkpoint(
        tmp_path / "run",
        epoch=1,
        models={"m": model},
        args={key: str(tmp_path / "a" / "purified_labels.json")},
    )
    ckpt = tmp_path / "run" / "last.pth"
    with pytest.raises(ValueError, match=f"--{key} .*a/purified_labels.json, this run has"):
        load_checkpoint(
            ckpt, models={"m": model}, run_args={key: str(tmp_path / "b" / "purified_labels.json")}
        )
    assert load_checkpoint(
        ckpt, models={"m": model}, run_args={key: str(tmp_path / "c" / "purified_labels.json")}
    )
    if key == "noise_type":  # a noise-type name, not a path, compares as a name
        save_checkpoint(
            tmp_path / "run", epoch=1, models={"m": model}, args={key: "cifar10-1-0.35"}
        )
        with pytest.raises(ValueError, match="--noise_type cifar10-1-0.35"):
            load_checkpoint(ckpt, models={"m": model}, run_args={key: "cifar10-1-0.25"})


def test_find_resume_path(tmp_path):
    assert find_resume_path(tmp_path, "auto") is None
    assert find_resume_path(tmp_path, "none") is None
    with pytest.raises(FileNotFoundError, match="no checkpoint"):
        find_resume_path(tmp_path, str(tmp_path / "missing.pth"))


def _train_cmd(out: Path, epochs: int) -> list[str]:
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
        "32",
        "--device",
        "cpu",
        "--seed",
        "7",
        "--out",
        str(out),
        "--no-tensorboard",
    ]


def _env() -> dict:
    return {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONWARNINGS": "ignore"}


def _final_weights(out: Path) -> dict:
    return torch.load(out / LAST_CHECKPOINT, weights_only=False)["models"]["model"]


@pytest.mark.slow
def test_killed_run_resumes_to_the_same_final_weights(tmp_path):
    epochs = 6
    subprocess.run(
        _train_cmd(tmp_path / "whole", epochs), check=True, env=_env(), capture_output=True
    )

    out = tmp_path / "killed"
    proc = subprocess.Popen(
        _train_cmd(out, epochs), env=_env(), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
    )
    deadline = time.time() + 120
    while (
        len(read_jsonl(out / "eval.jsonl")) < 2 and proc.poll() is None and time.time() < deadline
    ):
        time.sleep(0.05)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    killed_at = torch.load(out / LAST_CHECKPOINT, weights_only=False)["epoch"]
    assert killed_at < epochs - 1, "the run finished before it could be killed"

    subprocess.run(_train_cmd(out, epochs), check=True, env=_env(), capture_output=True)
    whole, resumed = _final_weights(tmp_path / "whole"), _final_weights(out)
    assert whole.keys() == resumed.keys()
    for name in whole:
        assert torch.equal(whole[name], resumed[name]), name
    # Every epoch is logged exactly once, even the one that was cut off.
    assert [r["step"] for r in read_jsonl(out / "eval.jsonl")] == list(range(epochs))


def _rank_resume(rank: int, world: int, folder: str, port: int, out) -> None:
    """One gloo rank: seed seed + rank, checkpoint, draw; then restore and draw again."""
    import os
    import random

    import torch.distributed as dist

    from lnl.engine import load_checkpoint, save_checkpoint, seed_everything

    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    dist.init_process_group("gloo", rank=rank, world_size=world)
    try:
        seed_everything(100 + rank)
        model = torch.nn.Linear(2, 2)
        save_checkpoint(folder, epoch=0, models={"m": model})
        first = (random.random(), float(np.random.rand()), float(torch.rand(())))
        dist.barrier()
        load_checkpoint(Path(folder) / "last.pth", models={"m": model})
        again = (random.random(), float(np.random.rand()), float(torch.rand(())))
        out.put((rank, first, again))
    finally:
        dist.destroy_process_group()


def test_each_rank_resumes_its_own_rng_streams(tmp_path):
    """Ranks are seeded seed + rank; rank 0 writes the checkpoint, but every rank gets its own states back."""
    import socket

    import torch.multiprocessing as mp

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    ctx = mp.get_context("spawn")
    out = ctx.Queue()
    procs = [
        ctx.Process(target=_rank_resume, args=(r, 2, str(tmp_path), port, out)) for r in range(2)
    ]
    for p in procs:
        p.start()
    results = dict(
        (rank, (first, again)) for rank, first, again in (out.get(timeout=120) for _ in procs)
    )
    for p in procs:
        p.join(timeout=60)
        assert p.exitcode == 0
    for rank in (0, 1):
        first, again = results[rank]
        assert first == again, rank  # the draws after the restore repeat this rank's own stream
    assert results[0][0] != results[1][0]
    state = torch.load(tmp_path / "last.pth", weights_only=False)
    assert len(state["rng_per_rank"]) == 2
