"""Damaged, truncated, empty, foreign and other methods' checkpoints are refused with the path and the
ways on; the previous checkpoint is kept; a kill during a save never leaves a bad last.pth."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from lnl.engine import LAST_CHECKPOINT, find_resume_path, load_checkpoint, save_checkpoint
from lnl.engine.checkpoint import PREVIOUS_CHECKPOINT, CheckpointError, verify_checkpoint
from tests.reliability._runs import REPO, run, standard_cmd


def _model(seed: int = 0) -> torch.nn.Module:
    torch.manual_seed(seed)
    return torch.nn.Linear(64, 32)


def _save(folder: Path, epoch: int, model=None, **kw) -> Path:
    return save_checkpoint(folder, epoch=epoch, models={"model": model or _model(epoch)}, **kw)


def _ways_on(path: Path) -> str:
    return re.escape(str(path)) + ".*start over with --resume never"


def _overwrite(path: Path, offset: int, data: bytes) -> None:
    with open(path, "r+b") as f:
        f.seek(offset)
        f.write(data)


def test_random_bytes_inside_the_file_are_refused(tmp_path):
    """2 KB of random bytes over the tensor data: torch.load would read it (NaN losses, exit 0)."""
    path = _save(tmp_path, 0)
    _overwrite(path, path.stat().st_size // 2 - 1024, os.urandom(2048))
    with pytest.raises(CheckpointError, match=_ways_on(path) + r"|checksum mismatch"):
        load_checkpoint(path, models={"model": _model()})
    with pytest.raises(CheckpointError, match="checksum mismatch"):
        verify_checkpoint(path)


@pytest.mark.parametrize(
    "damage, message",
    [
        (lambda p: p.write_bytes(b""), "is empty"),
        (
            lambda p: p.write_bytes(p.read_bytes()[: p.stat().st_size // 2]),
            "no lnl checkpoint marker",
        ),
        (
            lambda p: p.write_bytes(p.read_bytes()[:-200] + p.read_bytes()[-118:]),
            "length does not match",
        ),
        (lambda p: p.write_bytes(os.urandom(2048)), "no lnl checkpoint marker"),
        (
            lambda p: torch.save({"model": {}}, p),
            "no lnl checkpoint marker",
        ),  # another program's file
    ],
)
def test_a_bad_file_names_its_path_and_both_ways_on(tmp_path, damage, message):
    _save(tmp_path, 0)
    path = _save(tmp_path, 1)  # previous.pth now holds epoch 0
    damage(path)
    with pytest.raises(CheckpointError) as err:
        load_checkpoint(path, models={"model": _model()})
    text = str(err.value)
    assert message in text and str(path) in text and "--resume never" in text
    assert f"--resume {tmp_path / PREVIOUS_CHECKPOINT}" in text
    previous = load_checkpoint(tmp_path / PREVIOUS_CHECKPOINT, models={"model": _model()})
    assert previous["epoch"] == 0 and torch.equal(
        previous["models"]["model"]["weight"], _model(0).weight
    )


def test_previous_checkpoint_is_the_one_before_and_resumable(tmp_path):
    for epoch in range(3):
        _save(tmp_path, epoch)
    assert torch.load(tmp_path / LAST_CHECKPOINT, weights_only=False)["epoch"] == 2
    assert (
        find_resume_path(tmp_path, str(tmp_path / PREVIOUS_CHECKPOINT))
        == tmp_path / PREVIOUS_CHECKPOINT
    )
    assert load_checkpoint(tmp_path / PREVIOUS_CHECKPOINT, models={"model": _model()})["epoch"] == 1
    assert find_resume_path(tmp_path, "never") is None


def test_another_methods_checkpoint_is_a_clear_error(tmp_path):
    """Other model names (PLReMix's net1/net2 into the CE baseline) and other shapes name the path."""
    save_checkpoint(tmp_path, epoch=0, models={"net1": _model(), "net2": _model()})
    with pytest.raises(
        CheckpointError,
        match=re.escape(
            f"{tmp_path / LAST_CHECKPOINT} has no models ['model'] (it holds ['net1', 'net2'])"
        ),
    ):
        load_checkpoint(tmp_path / LAST_CHECKPOINT, models={"model": _model()})
    save_checkpoint(tmp_path, epoch=0, models={"model": torch.nn.Linear(3, 2)})
    with pytest.raises(CheckpointError, match="its model 'model' does not fit"):
        load_checkpoint(tmp_path / LAST_CHECKPOINT, models={"model": _model()})


def test_another_entry_points_checkpoint_is_refused(tmp_path, monkeypatch):
    """Two methods with the same model names (DivideMix and PLReMix: net1, net2) differ by entry point."""
    monkeypatch.setattr(sys, "argv", [str(REPO / "methods/plremix/train.py")])
    save_checkpoint(tmp_path, epoch=0, models={"net1": _model()})
    monkeypatch.setattr(sys, "argv", [str(REPO / "methods/dividemix/Train_cifar.py")])
    with pytest.raises(
        CheckpointError, match="written by plremix/train.py, not dividemix/Train_cifar.py"
    ):
        load_checkpoint(tmp_path / LAST_CHECKPOINT, models={"net1": _model()})


def test_a_longer_relaunch_is_refused_where_the_schedule_depends_on_it(tmp_path):
    _save(tmp_path, 4, args={"num_epochs": 5})
    with pytest.raises(
        ValueError, match="--num_epochs 5, this run asks for --num_epochs 10.*own --out"
    ):
        load_checkpoint(
            tmp_path / LAST_CHECKPOINT,
            models={"model": _model()},
            run_args={"num_epochs": 10},
            length_flag="num_epochs",
        )
    # a method whose schedule does not depend on the length (DMLP, IEG) extends exactly: not refused
    assert load_checkpoint(
        tmp_path / LAST_CHECKPOINT, models={"model": _model()}, run_args={"num_epochs": 10}
    )


_SAVER = """
import sys, torch
from lnl.engine import save_checkpoint
model = torch.nn.Linear(1024, 1024)
print("ready", flush=True)
for epoch in range(10**6):
    save_checkpoint(sys.argv[1], epoch=epoch, models={"model": model})
"""


def test_kill_during_save_leaves_a_verified_checkpoint(tmp_path):
    """SIGKILL at random moments of back-to-back 4 MB saves: last.pth always verifies and loads."""
    proc = subprocess.Popen(
        [sys.executable, "-c", _SAVER, str(tmp_path)], cwd=REPO, stdout=subprocess.PIPE
    )
    try:
        assert proc.stdout.readline().strip() == b"ready"
        deadline = time.time() + 60
        while not (tmp_path / PREVIOUS_CHECKPOINT).exists() and time.time() < deadline:
            time.sleep(0.01)
        time.sleep(0.137)
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.wait()
    for name in (LAST_CHECKPOINT, PREVIOUS_CHECKPOINT):
        verify_checkpoint(tmp_path / name)
    last = load_checkpoint(
        tmp_path / LAST_CHECKPOINT, models={"model": torch.nn.Linear(1024, 1024)}
    )
    assert last["epoch"] >= 1


@pytest.mark.slow
def test_a_damaged_last_pth_stops_the_run_and_previous_pth_resumes(tmp_path):
    """The user's view: a run, a damaged last.pth, a refusal with the way on, the way on works."""
    out = tmp_path / "run"
    assert run(standard_cmd(out, epochs=2)).returncode == 0
    _overwrite(out / LAST_CHECKPOINT, (out / LAST_CHECKPOINT).stat().st_size // 2, os.urandom(2048))
    again = run(standard_cmd(out, epochs=2))
    assert again.returncode != 0
    assert f"checkpoint {out / LAST_CHECKPOINT} is damaged (checksum mismatch)" in again.stderr
    assert f"--resume {out / PREVIOUS_CHECKPOINT}" in again.stderr
    resumed = run(standard_cmd(out, "--resume", str(out / PREVIOUS_CHECKPOINT), epochs=2))
    assert resumed.returncode == 0, resumed.stderr[-2000:]
    verify_checkpoint(out / LAST_CHECKPOINT)
    assert "resumed from" in resumed.stderr and "at epoch 1" in resumed.stderr
