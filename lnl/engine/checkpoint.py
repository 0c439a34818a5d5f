"""Atomic checkpoints: the engine writes ``<run>/last.pth`` and every resume path reads that name.

A checkpoint holds the models, optimizers, schedulers, AMP scaler, the last finished epoch, every RNG
state, the run's args and a free-form ``method_state`` (GMM history, loss buffers, prototypes ...).
It is written to a temporary file in the same folder and moved into place with ``os.replace``, so a
run killed while saving leaves the previous checkpoint intact.
"""

from __future__ import annotations

import filecmp
import os
import tempfile
from pathlib import Path
from typing import Any, Mapping

import torch

from lnl.engine import comm
from lnl.engine.seed import get_rng_state, set_rng_state

LAST_CHECKPOINT = "last.pth"


def atomic_save(obj: Any, path: str | os.PathLike) -> Path:
    """``torch.save`` to a temporary file beside ``path``, fsync, then ``os.replace`` onto it."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as f:
            torch.save(obj, f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise
    return path


def _state_dicts(objects: Mapping[str, Any] | None) -> dict[str, Any]:
    return {name: obj.state_dict() for name, obj in (objects or {}).items() if obj is not None}


def _unwrap(model: torch.nn.Module) -> torch.nn.Module:
    """The module under DistributedDataParallel / torch.compile wrappers (their keys get prefixes)."""
    model = getattr(model, "module", model)
    return getattr(model, "_orig_mod", model)


def save_checkpoint(run_dir: str | os.PathLike, *, epoch: int, models: Mapping[str, torch.nn.Module],
                    optimizers: Mapping[str, Any] | None = None, schedulers: Mapping[str, Any] | None = None,
                    scaler: Any = None, method_state: Any = None, args: Any = None) -> Path:
    """Write ``<run_dir>/last.pth`` atomically.

    Args:
        run_dir: the run's output folder.
        epoch: the last epoch that finished (resume starts at ``epoch + 1``).
        models, optimizers, schedulers: name -> object with ``state_dict()``.
        scaler: a ``torch.amp.GradScaler`` or None.
        method_state: anything picklable the method needs to continue exactly.
        args: the run's arguments (a namespace or dict), kept for inspection.

    Returns:
        The checkpoint path (written by rank 0 only; other ranks return it without writing).
    """
    path = Path(run_dir) / LAST_CHECKPOINT
    # Every rank's RNG states (ranks are seeded seed + rank): a resumed rank continues its own stream.
    rng = comm.all_gather_object(get_rng_state())
    if not comm.is_main_process():
        return path
    state = {
        "epoch": epoch,
        "models": {name: _unwrap(m).state_dict() for name, m in models.items()},
        "optimizers": _state_dicts(optimizers),
        "schedulers": _state_dicts(schedulers),
        "scaler": scaler.state_dict() if scaler is not None else None,
        "rng": rng[0],
        "rng_per_rank": rng,
        "method_state": method_state,
        "args": vars(args) if hasattr(args, "__dict__") else args,
    }
    return atomic_save(state, path)


def find_resume_path(run_dir: str | os.PathLike, resume: str | None) -> Path | None:
    """Resolve ``--resume``: ``auto`` takes ``<run_dir>/last.pth`` when present, a path is used as is.

    Raises:
        FileNotFoundError: an explicit path that does not exist.
    """
    if resume in (None, "", "none"):
        return None
    if resume == "auto":
        path = Path(run_dir) / LAST_CHECKPOINT
        return path if path.exists() else None
    path = Path(resume)
    if path.is_dir():
        path = path / LAST_CHECKPOINT
    if not path.exists():
        raise FileNotFoundError(f"--resume {resume}: no checkpoint at {path}")
    return path


# Arguments that make a different run, not a continuation: a checkpoint written under other values is
# refused. An explicit --out or --resume PATH, or the launcher, can put two runs in one folder (a
# --subset run and a full one, two noise rates); resuming across them would mix their states silently.
# Each entry point has some of these names (LRA --noise_type, IEG's --dataset carries its noise, NMTune
# --train-dataset); a name either side lacks is not compared. Noise files (--noise_file, and LRA's
# --noise_type when it is a path) compare by content while both exist, and by file name when the saved
# path is gone (a data folder that moved still resumes).
SAME_RUN_ARGS = ("dataset", "train_dataset", "noise_mode", "noise_type", "r", "noise_file", "seed", "subset")
_NOISE_FILE_SUFFIXES = (".json", ".npy", ".npz")


def _same_noise_file(saved: str, now: str) -> bool:
    a, b = Path(saved).expanduser(), Path(now).expanduser()
    if a.is_file() and b.is_file():
        return filecmp.cmp(a, b, shallow=False)
    return a.name == b.name


def _same_value(key: str, saved: Any, now: Any) -> bool:
    saved, now = saved or None, now or None  # unset, "" and 0 alike: a folder written before the flag
    if key in ("noise_file", "noise_type") and saved is not None and now is not None:
        if key == "noise_file" or str(saved).endswith(_NOISE_FILE_SUFFIXES):
            return _same_noise_file(str(saved), str(now))
    return saved == now


def _check_same_run(path, saved: Mapping[str, Any] | None, run_args: Any) -> None:
    if saved is None or run_args is None:
        return
    now = vars(run_args) if hasattr(run_args, "__dict__") else run_args
    for key in SAME_RUN_ARGS:
        if key == "subset" or (key in saved and key in now):  # subset: absent means none
            if not _same_value(key, saved.get(key), now.get(key)):
                flag = "--" + key.replace("_", "-") if key == "train_dataset" else "--" + key
                raise ValueError(f"{path} was written by a run with {flag} {saved.get(key)}, this run has "
                                 f"{flag} {now.get(key)}: give this run its own --out (or --resume none)")


def load_checkpoint(path: str | os.PathLike, *, models: Mapping[str, torch.nn.Module],
                    optimizers: Mapping[str, Any] | None = None, schedulers: Mapping[str, Any] | None = None,
                    scaler: Any = None, restore_rng: bool = True, run_args: Any = None) -> dict[str, Any]:
    """Load a checkpoint written by ``save_checkpoint`` into the given objects.

    ``run_args`` (this run's arguments): refuse a checkpoint whose :data:`SAME_RUN_ARGS` differ.

    Returns:
        The raw checkpoint dict; ``["epoch"]`` is the last finished epoch and ``["method_state"]``
        whatever the method stored.
    """
    state = torch.load(path, map_location="cpu", weights_only=False)
    _check_same_run(path, state.get("args"), run_args)
    for name, model in models.items():
        _unwrap(model).load_state_dict(state["models"][name])
    for group, objects in (("optimizers", optimizers), ("schedulers", schedulers)):
        for name, obj in (objects or {}).items():
            if obj is not None:
                obj.load_state_dict(state[group][name])
    if scaler is not None and state.get("scaler") is not None:
        scaler.load_state_dict(state["scaler"])
    if restore_rng:
        per_rank = state.get("rng_per_rank") or [state["rng"]]
        rank = comm.get_rank()
        set_rng_state(per_rank[rank] if rank < len(per_rank) else per_rank[0])
    return state
