"""Atomic, verified checkpoints: the engine writes ``<run>/last.pth`` and every resume path reads that name.

A checkpoint holds the models, optimizers, schedulers, AMP scaler, the last finished epoch, every RNG
state, the run's args, the entry point that wrote it and a free-form ``method_state`` (GMM history,
loss buffers, prototypes ...). It is written to a temporary file in the same folder and moved into
place with ``os.replace``, so a run killed while saving leaves the previous checkpoint intact; the one
it replaces is kept as ``previous.pth``. The file is ``torch.save``'s archive followed by a one-line
trailer (a format marker, the archive's SHA-256 and length): a damaged, truncated or foreign file is
refused on load with its path and the two ways on (``--resume never``, or ``--resume previous.pth``).
"""

from __future__ import annotations

import filecmp
import hashlib
import os
import re
import sys
import tempfile
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch

from lnl.engine import comm
from lnl.engine.seed import get_rng_state, set_rng_state

LAST_CHECKPOINT = "last.pth"
PREVIOUS_CHECKPOINT = "previous.pth"
NEVER = ("never", "none", "")  # --resume values that start over

# b"\nLNL-CHECKPOINT v1 sha256=<64 hex> bytes=<20 digits>\n" after the archive: fixed length, so a
# reader finds it at the end; zip readers (torch.load) ignore bytes after the archive's directory.
_MARKER = b"LNL-CHECKPOINT v1"
_TRAILER = re.compile(rb"\n" + _MARKER + rb" sha256=([0-9a-f]{64}) bytes=([0-9]{20})\n\Z")
_TRAILER_LEN = len(_MARKER) + 2 + len(" sha256=") + 64 + len(" bytes=") + 20
_CHUNK = 1 << 24


class CheckpointError(ValueError):
    """A checkpoint that cannot be resumed: damaged, not an lnl checkpoint, or another method's."""


class _HashingWriter:
    """A write-only file that hashes what goes through it (torch.save writes archives sequentially)."""

    def __init__(self, f):
        self.f, self.sha, self.size = f, hashlib.sha256(), 0

    def write(self, data) -> int:
        self.sha.update(data)
        self.size += len(data)
        return self.f.write(data)

    def flush(self) -> None:
        self.f.flush()


def _trailer(sha: str, size: int) -> bytes:
    return b"\n" + _MARKER + f" sha256={sha} bytes={size:020d}\n".encode()


def atomic_save(obj: Any, path: str | os.PathLike, *, keep_previous: bool = False) -> Path:
    """``torch.save`` plus a checksum trailer to a temporary file beside ``path``, fsync, then
    ``os.replace`` onto it. ``keep_previous``: the file it replaces stays as ``previous.pth`` beside it
    (hard-linked first, so ``path`` exists at every instant)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as f:
            writer = _HashingWriter(f)
            torch.save(obj, writer)
            f.write(_trailer(writer.sha.hexdigest(), writer.size))
            f.flush()
            os.fsync(f.fileno())
        if keep_previous and path.exists():
            _keep_previous(path)
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise
    return path


def _keep_previous(path: Path) -> None:
    previous = path.with_name(PREVIOUS_CHECKPOINT)
    link = path.with_name(f".{PREVIOUS_CHECKPOINT}.{os.getpid()}.tmp")
    try:
        os.link(path, link)
    except OSError:  # a file system without hard links: a copy
        import shutil

        shutil.copyfile(path, link)
    os.replace(link, previous)


def _ways_on(path: Path) -> str:
    previous = path.with_name(PREVIOUS_CHECKPOINT)
    alternative = (
        f", or resume from the checkpoint before it with --resume {previous}"
        if previous.exists() and previous != path
        else ""
    )
    return f"start over with --resume never{alternative}"


def verify_checkpoint(path: str | os.PathLike) -> None:
    """Check the trailer's format marker, length and SHA-256 against the file.

    Raises:
        CheckpointError: naming the path, what is wrong and the ways on.
    """
    path = Path(path)
    size = path.stat().st_size
    with open(path, "rb") as f:
        f.seek(max(size - _TRAILER_LEN, 0))
        match = _TRAILER.search(f.read())
        if match is None:
            what = (
                "is empty"
                if size == 0
                else "has no lnl checkpoint marker (truncated, or not an lnl checkpoint)"
            )
            raise CheckpointError(f"checkpoint {path} {what}: {_ways_on(path)}")
        expected, length = match.group(1).decode(), int(match.group(2))
        if length != size - _TRAILER_LEN:
            raise CheckpointError(
                f"checkpoint {path} is damaged (its length does not match its marker): "
                f"{_ways_on(path)}"
            )
        f.seek(0)
        sha, left = hashlib.sha256(), length
        while left:
            chunk = f.read(min(_CHUNK, left))
            sha.update(chunk)
            left -= len(chunk)
    if sha.hexdigest() != expected:
        raise CheckpointError(f"checkpoint {path} is damaged (checksum mismatch): {_ways_on(path)}")


def _entry_point() -> str:
    """``<method>/<script>`` of the running entry point (``methods/plremix/train.py`` -> ``plremix/train.py``)."""
    script = Path(sys.argv[0]) if sys.argv and sys.argv[0] else Path("")
    return (
        f"{script.parent.name}/{script.name}"
        if script.parent.parent.name == "methods"
        else script.name
    )


def _state_dicts(objects: Mapping[str, Any] | None) -> dict[str, Any]:
    return {name: obj.state_dict() for name, obj in (objects or {}).items() if obj is not None}


def _unwrap(model: torch.nn.Module) -> torch.nn.Module:
    """The module under DistributedDataParallel / torch.compile wrappers (their keys get prefixes)."""
    model = getattr(model, "module", model)
    return getattr(model, "_orig_mod", model)


def save_checkpoint(
    run_dir: str | os.PathLike,
    *,
    epoch: int,
    models: Mapping[str, torch.nn.Module],
    optimizers: Mapping[str, Any] | None = None,
    schedulers: Mapping[str, Any] | None = None,
    scaler: Any = None,
    method_state: Any = None,
    args: Any = None,
) -> Path:
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
        "entry_point": _entry_point(),
        "models": {name: _unwrap(m).state_dict() for name, m in models.items()},
        "optimizers": _state_dicts(optimizers),
        "schedulers": _state_dicts(schedulers),
        "scaler": scaler.state_dict() if scaler is not None else None,
        "rng": rng[0],
        "rng_per_rank": rng,
        "method_state": method_state,
        "args": vars(args) if hasattr(args, "__dict__") else args,
    }
    return atomic_save(state, path, keep_previous=True)


def find_resume_path(run_dir: str | os.PathLike, resume: str | None) -> Path | None:
    """Resolve ``--resume``: ``auto`` takes ``<run_dir>/last.pth`` when present, ``never`` (or ``none``)
    starts over, a path (a file or a run folder) is used as is.

    Raises:
        FileNotFoundError: an explicit path that does not exist.
    """
    if resume is None or resume in NEVER:
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
SAME_RUN_ARGS = (
    "dataset",
    "train_dataset",
    "noise_mode",
    "noise_type",
    "r",
    "noise_file",
    "seed",
    "subset",
)
_NOISE_FILE_SUFFIXES = (".json", ".npy", ".npz")


def _same_noise_file(saved: str, now: str) -> bool:
    a, b = Path(saved).expanduser(), Path(now).expanduser()
    if a.is_file() and b.is_file():
        return filecmp.cmp(a, b, shallow=False)
    return a.name == b.name


def _same_value(key: str, saved: Any, now: Any) -> bool:
    saved, now = (
        saved or None,
        now or None,
    )  # unset, "" and 0 alike: a folder written before the flag
    if key in ("noise_file", "noise_type") and saved is not None and now is not None:
        if key == "noise_file" or str(saved).endswith(_NOISE_FILE_SUFFIXES):
            return _same_noise_file(str(saved), str(now))
    return saved == now


def _check_same_run(
    path, saved: Mapping[str, Any] | None, run_args: Any, length_flag: str | None = None
) -> None:
    if saved is None or run_args is None:
        return
    now = vars(run_args) if hasattr(run_args, "__dict__") else run_args
    for key in SAME_RUN_ARGS:
        if key == "subset" or (key in saved and key in now):  # subset: absent means none
            if not _same_value(key, saved.get(key), now.get(key)):
                flag = "--" + key.replace("_", "-") if key == "train_dataset" else "--" + key
                raise ValueError(
                    f"{path} was written by a run with {flag} {saved.get(key)}, this run has "
                    f"{flag} {now.get(key)}: give this run its own --out (or --resume never)"
                )
    key = length_flag
    if key is not None and key in saved and key in now and saved[key] != now[key]:
        raise ValueError(
            f"{path} was written by a run of --{key} {saved[key]}, this run asks for --{key} "
            f"{now[key]}: its learning-rate schedule and state were built for {saved[key]}, so "
            f"resuming would continue the old schedule. Rerun with --{key} {saved[key]}, or give "
            f"the longer run its own --out (or --resume never)"
        )


def _check_same_method(
    path, state: Mapping[str, Any], groups: Mapping[str, Mapping[str, Any] | None]
) -> None:
    """Another method's checkpoint (other model or optimizer names, another entry point): a clear error."""
    saved_entry, entry = state.get("entry_point"), _entry_point()
    written = f" (written by {saved_entry})" if saved_entry and "/" in saved_entry else ""
    # methods/<method>/<script>: the method's folder is compared (LRA's train_CIFAR.py runs lra_train.py's loop)
    if (
        saved_entry
        and "/" in saved_entry
        and "/" in entry
        and saved_entry.split("/")[0] != entry.split("/")[0]
    ):
        raise CheckpointError(
            f"{path} was written by {saved_entry}, not {entry}: another method's checkpoint; "
            f"give this run its own --out (or --resume never)"
        )
    for group, objects in groups.items():
        wanted = {name for name, obj in (objects or {}).items() if obj is not None}
        missing = sorted(wanted - set(state.get(group) or {}))
        if missing:
            raise CheckpointError(
                f"{path}{written} has no {group} {missing} (it holds "
                f"{sorted(state.get(group) or {})}): another method's checkpoint? give this run "
                f"its own --out (or --resume never)"
            )


def load_checkpoint(
    path: str | os.PathLike,
    *,
    models: Mapping[str, torch.nn.Module],
    optimizers: Mapping[str, Any] | None = None,
    schedulers: Mapping[str, Any] | None = None,
    scaler: Any = None,
    restore_rng: bool = True,
    run_args: Any = None,
    length_flag: str | None = None,
) -> dict[str, Any]:
    """Load a checkpoint written by ``save_checkpoint`` into the given objects.

    The file's checksum is verified first; ``run_args`` (this run's arguments): refuse a checkpoint
    whose :data:`SAME_RUN_ARGS` differ, or whose ``length_flag`` (``num_epochs``) differs where the
    method's schedule is built from the run's length (a longer relaunch would keep the old schedule).

    Returns:
        The raw checkpoint dict; ``["epoch"]`` is the last finished epoch and ``["method_state"]``
        whatever the method stored.

    Raises:
        CheckpointError: a damaged or foreign file, or another method's checkpoint (naming the path).
        ValueError: a checkpoint of another run (dataset, noise, seed, subset, length).
    """
    path = Path(path)
    verify_checkpoint(path)
    state = torch.load(path, map_location="cpu", weights_only=False)
    if not isinstance(state, dict) or "models" not in state:
        raise CheckpointError(f"{path} is not a training checkpoint (no models): {_ways_on(path)}")
    _check_same_method(
        path, state, {"models": models, "optimizers": optimizers, "schedulers": schedulers}
    )
    _check_same_run(path, state.get("args"), run_args, length_flag)
    for group, objects in (
        ("models", models),
        ("optimizers", optimizers),
        ("schedulers", schedulers),
    ):
        for name, obj in (objects or {}).items():
            if obj is not None:
                _load_into(
                    path,
                    group,
                    name,
                    _unwrap(obj) if group == "models" else obj,
                    state[group][name],
                )
    if scaler is not None and state.get("scaler") is not None:
        scaler.load_state_dict(state["scaler"])
    if restore_rng:
        per_rank = state.get("rng_per_rank") or [state["rng"]]
        rank = comm.get_rank()
        set_rng_state(per_rank[rank] if rank < len(per_rank) else per_rank[0])
    return state


def _load_into(path: Path, group: str, name: str, obj: Any, state: Any) -> None:
    try:
        obj.load_state_dict(state)
    except (
        RuntimeError,
        KeyError,
        ValueError,
    ) as exc:  # other shapes or parameter names: another network
        raise CheckpointError(
            f"{path}: its {group[:-1]} {name!r} does not fit this run's (another network or "
            f"method?): {str(exc).splitlines()[0]}; give this run its own --out (or --resume "
            f"never)"
        ) from exc
