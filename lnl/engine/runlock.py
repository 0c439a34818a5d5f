"""An exclusive lock on a run folder: two runs with one ``--out`` would interleave ``eval.jsonl``,
``results.jsonl`` and checkpoints.

``<run>/.lock`` is ``flock``-ed for the life of the process and names the holder (host, pid, process
start time, SLURM job, command). The kernel drops the lock when the holder dies, even by ``kill -9``,
so a stale lock needs no cleaning: the next run takes it. On a file system without ``flock`` the
holder the file names is judged instead: stale when it is on this host and gone (or its pid was
reused), or is this same SLURM job requeued. A live holder makes the second run fail at once, naming it.
"""

from __future__ import annotations

import fcntl
import json
import os
import socket
import sys
import time
from pathlib import Path

LOCK_NAME = ".lock"
_held: dict[Path, int] = {}  # run folder -> the locked file descriptor this process holds


class RunFolderLocked(RuntimeError):
    """Another live run holds the folder."""


def _start_time(pid: int) -> str | None:
    """The process's start time in clock ticks since boot (Linux ``/proc``), to tell a reused pid apart."""
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[19]
    except (OSError, IndexError):
        return None


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # another user's live process
        return True
    return True


def _me() -> dict:
    return {
        "host": socket.gethostname(),
        "pid": os.getpid(),
        "start": _start_time(os.getpid()),
        "slurm_job": os.environ.get("SLURM_JOB_ID"),
        "since": time.strftime("%Y-%m-%d %H:%M:%S"),
        "command": " ".join(sys.argv),
    }


def _stale(holder: dict) -> bool:
    """True when the holder is certainly gone (or is this process's own SLURM job, requeued)."""
    if holder.get("slurm_job") and holder.get("slurm_job") == os.environ.get("SLURM_JOB_ID"):
        return True  # requeued: the earlier run of this job is over
    if holder.get("host") != socket.gethostname():
        return False  # cannot look at another machine's processes
    pid = holder.get("pid")
    if not isinstance(pid, int) or not _alive(pid):
        return True
    return (
        holder.get("start") is not None and _start_time(pid) != holder["start"]
    )  # the pid was reused


def _read(lock: Path) -> dict | None:
    try:
        holder = json.loads(lock.read_text())
        return holder if isinstance(holder, dict) else {}
    except FileNotFoundError:
        return None
    except (OSError, ValueError):
        return {}  # empty (released) or garbage


def _describe(holder: dict) -> str:
    job = f", SLURM job {holder['slurm_job']}" if holder.get("slurm_job") else ""
    return (
        f"pid {holder.get('pid')} on {holder.get('host')}{job}, since {holder.get('since')}: "
        f"{holder.get('command', '?')}"
    )


def acquire(run_dir: str | os.PathLike) -> Path:
    """Take ``<run_dir>/.lock`` for this process (re-entrant within it) until it exits.

    Raises:
        RunFolderLocked: another live run holds it, naming the holder.
    """
    run_dir = Path(run_dir)
    lock = run_dir / LOCK_NAME
    if run_dir.resolve() in _held:
        return lock
    run_dir.mkdir(parents=True, exist_ok=True)
    fd = os.open(lock, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        _lock_or_raise(fd, lock, run_dir)
    except BaseException:
        os.close(fd)
        raise
    os.ftruncate(fd, 0)
    os.pwrite(fd, json.dumps(_me()).encode(), 0)
    _held[run_dir.resolve()] = fd  # kept open: the kernel drops the lock when this process dies
    return lock


def _lock_or_raise(fd: int, lock: Path, run_dir: Path) -> None:
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        return
    except BlockingIOError:
        holder = _read(lock) or {}
    except OSError:  # a file system without flock: judge the holder the file names
        holder = _read(lock) or {}
        if not holder or _stale(holder):
            return
    raise RunFolderLocked(
        f"run folder {run_dir} is in use by {_describe(holder)}. Give this run another "
        f"--out, or wait for that run to end"
    )


def release(run_dir: str | os.PathLike) -> None:
    """Release this process's lock on ``run_dir``; the file stays (removing a locked file would let a
    third run lock a new file while a second still waits on the old one)."""
    fd = _held.pop(Path(run_dir).resolve(), None)
    if fd is not None:
        os.ftruncate(fd, 0)
        os.close(fd)
