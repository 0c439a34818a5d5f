"""Two runs on one folder: the second fails at once naming the first; a dead holder's lock is stale
and taken; a refused run leaves no folder behind."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time

import pytest

from lnl.engine import runlock
from tests.reliability._runs import REPO, env, run, standard_cmd

_HOLDER = """
import sys, time
from lnl.engine import runlock
runlock.acquire(sys.argv[1])
print("locked", flush=True)
time.sleep(600)
"""


def _hold(folder) -> subprocess.Popen:
    proc = subprocess.Popen(
        [sys.executable, "-c", _HOLDER, str(folder)],
        cwd=REPO,
        env=env(),
        stdout=subprocess.PIPE,
        text=True,
    )
    assert proc.stdout.readline().strip() == "locked"
    return proc


def test_a_held_folder_is_refused_naming_the_holder_and_a_dead_holders_lock_is_taken(tmp_path):
    holder = _hold(tmp_path)
    try:
        with pytest.raises(
            runlock.RunFolderLocked,
            match=f"run folder {tmp_path} is in use by pid {holder.pid} on {socket.gethostname()}",
        ):
            runlock.acquire(tmp_path)
    finally:
        holder.send_signal(signal.SIGKILL)
        holder.wait()
    assert (
        json.loads((tmp_path / ".lock").read_text())["pid"] == holder.pid
    )  # left behind by kill -9
    runlock.acquire(tmp_path)
    try:
        assert json.loads((tmp_path / ".lock").read_text())["pid"] == os.getpid()
        assert runlock.acquire(tmp_path) == tmp_path / ".lock"  # re-entrant in one process
    finally:
        runlock.release(tmp_path)
    assert (tmp_path / ".lock").read_text() == ""


def test_without_flock_a_holder_is_judged_by_host_pid_and_slurm_job(monkeypatch):
    dead = subprocess.Popen(["true"])
    dead.wait()
    here = socket.gethostname()
    assert runlock._stale({"host": here, "pid": dead.pid})
    assert not runlock._stale(
        {"host": here, "pid": os.getpid(), "start": runlock._start_time(os.getpid())}
    )
    assert runlock._stale({"host": here, "pid": os.getpid(), "start": "0"})  # the pid was reused
    assert not runlock._stale({"host": "another-node", "pid": 1})
    monkeypatch.setenv("SLURM_JOB_ID", "42")
    assert runlock._stale(
        {"host": "another-node", "pid": 1, "slurm_job": "42"}
    )  # this job, requeued


@pytest.mark.slow
def test_two_concurrent_runs_on_one_folder(tmp_path):
    out = tmp_path / "run"
    first = subprocess.Popen(
        standard_cmd(out, epochs=2),
        env=env(),
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    )
    deadline = time.time() + 120
    while not (out / "args.yaml").exists() and first.poll() is None and time.time() < deadline:
        time.sleep(0.05)
    second = run(standard_cmd(out, epochs=2))
    assert first.wait(timeout=300) == 0, first.stderr.read()[-2000:]
    assert second.returncode != 0
    assert f"RunFolderLocked: run folder {out} is in use by pid {first.pid}" in second.stderr
    assert len((out / "results.jsonl").read_text().splitlines()) == 1
    assert [json.loads(x)["step"] for x in (out / "eval.jsonl").read_text().splitlines()] == [0, 1]


@pytest.mark.slow
def test_an_impossible_device_leaves_no_run_folder(tmp_path):
    out = tmp_path / "run"
    done = run(standard_cmd(out, "--device", "cuda:7"))
    assert done.returncode != 0 and "--device cuda:7" in done.stderr
    assert not out.exists()
