"""Measured backend choice for ``backend="auto"`` (as ``cudnn.benchmark`` does), with a disk cache.

When more than one backend can run a call and the problem is large enough that timing it is cheap
relative to the work (``MIN_WORK``), the first call of its shape bucket times every candidate on the
call's own inputs and keeps the fastest; later calls of that bucket reuse the winner. Winners are
cached in ``$LNL_CACHE/autotune/<key>.json`` (default ``~/.cache/lnl``), one file per device name,
torch version and build of ``lnl._C``, so a new GPU, torch or build measures again. A file that does
not parse, belongs to another key or fails its checksum is ignored with a warning, never loaded.
Small problems use the static rule: the first backend of the op's ``_dispatch.priority`` that can run them.

``LNL_AUTOTUNE``: unset measures on CUDA only (the CPU default stays the static rule: the compiled CPU
kernels beat the reference at every size measured in RESULTS.md); ``1`` measures on the CPU too;
``0`` turns measuring off everywhere. ``python -m lnl.info`` prints the cache.
"""

from __future__ import annotations

import hashlib
import json
import os
import platform
import statistics
import time
import warnings
from collections.abc import Callable
from pathlib import Path

import torch

from lnl import _ext

MIN_WORK = 1 << 30  # ~multiply-adds; about a millisecond on a GPU, where a timing costs ~10 µs
FORMAT = 1
_TABLES: dict[str, dict[str, str]] = {}  # cache file -> winners, loaded once per process


def enabled(device: torch.device) -> bool:
    setting = os.environ.get("LNL_AUTOTUNE", "")
    if setting == "0":
        return False
    return device.type == "cuda" or setting == "1"


def bucket(*dims: int) -> str:
    """Each dimension rounded up to a power of two: shapes in one bucket share a winner."""
    return "x".join(str(1 << max(int(d) - 1, 0).bit_length()) for d in dims)


def device_name(device: torch.device) -> str:
    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    return f"cpu {platform.machine()} {platform.processor() or ''} {os.cpu_count()} cores".replace(
        "  ", " "
    )


def cache_key(device: torch.device) -> dict[str, str]:
    """What a cached winner is valid for: this device, torch and build of ``lnl._C``."""
    info = json.dumps(_ext.build_info(), sort_keys=True)
    build = hashlib.sha256(info.encode()).hexdigest()[:12] if _ext.available() else "no-extension"
    return {"device": device_name(device), "torch": torch.__version__, "build": build}


def cache_root() -> Path:
    from lnl.data._base import cache_dir

    return cache_dir() / "autotune"


def cache_path(key: dict[str, str]) -> Path:
    slug = "".join(
        c if c.isalnum() or c in ".-" else "_"
        for c in f"{key['device']}-{key['torch']}-{key['build']}"
    )
    return cache_root() / f"{slug}.json"


def _checksum(winners: dict[str, str]) -> str:
    return hashlib.sha256(json.dumps(winners, sort_keys=True).encode()).hexdigest()


def read_cache(path: Path, key: dict[str, str]) -> dict[str, str]:
    """The winners stored at ``path`` for ``key``; {} (with a warning) for a damaged or foreign file."""
    if not path.exists():
        return {}
    try:
        data = json.loads(path.read_text())
        problem = _cache_problem(data, key)
    except (OSError, ValueError) as exc:
        problem = f"it does not parse ({exc})"
    if problem:
        warnings.warn(f"lnl.ops: ignoring the autotune cache {path}: {problem}; measuring again")
        return {}
    return dict(data["winners"])


def _cache_problem(data, key: dict[str, str]) -> str | None:
    if not isinstance(data, dict) or data.get("format") != FORMAT:
        return f"not an autotune cache of format {FORMAT}"
    if data.get("key") != key:
        return f"it was written for {data.get('key')}, not {key}"
    winners = data.get("winners")
    if not isinstance(winners, dict) or not all(isinstance(v, str) for v in winners.values()):
        return "its winners are not a table of backend names"
    if data.get("sha256") != _checksum(winners):
        return "its checksum does not match its contents"
    return None


def write_cache(path: Path, key: dict[str, str], winners: dict[str, str]) -> None:
    """Write atomically; an unwritable cache folder costs a warning, not the run."""
    data = {
        "format": FORMAT,
        "key": key,
        "winners": winners,
        "sha256": _checksum(winners),
    }
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_suffix(f".tmp{os.getpid()}")
        tmp.write_text(json.dumps(data, indent=1, sort_keys=True))
        os.replace(tmp, path)
    except OSError as exc:
        warnings.warn(
            f"lnl.ops: could not write the autotune cache {path} ({exc}); winners kept in memory only"
        )


def _table(device: torch.device) -> tuple[Path, dict[str, str], dict[str, str]]:
    key = cache_key(device)
    path = cache_path(key)
    if str(path) not in _TABLES:
        _TABLES[str(path)] = read_cache(path, key)
    return path, key, _TABLES[str(path)]


def seconds(fn: Callable[[], object], device: torch.device, reps: int = 3) -> float:
    """Median seconds of ``reps`` calls of ``fn`` after one warm-up (CUDA: synchronised)."""
    sync = torch.cuda.synchronize if device.type == "cuda" else (lambda *a: None)
    fn()
    times = []
    for _ in range(reps):
        sync(device)
        start = time.perf_counter()
        fn()
        sync(device)
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def time_candidate(name: str, run: Callable[[str], object], device: torch.device) -> float:
    """Seconds of one call with backend ``name`` (the tests replace this with fake timings)."""
    with torch.no_grad():
        return seconds(lambda: run(name), device, reps=2)


def _time_or_inf(name: str, run: Callable[[str], object], device: torch.device) -> float:
    """A candidate that runs out of memory (the dense PyTorch path of a large problem) loses."""
    try:
        return time_candidate(name, run, device)
    except torch.OutOfMemoryError:
        if device.type == "cuda":
            torch.cuda.empty_cache()
        return float("inf")


def pick(
    op: str,
    candidates: list[str],
    device: torch.device,
    shape: str,
    work: float,
    run: Callable[[str], object],
) -> str:
    """The backend to use among ``candidates`` (static order first): measured and cached for problems of
    at least ``MIN_WORK``, else the static rule."""
    if len(candidates) < 2 or work < MIN_WORK or not enabled(device):
        return candidates[0]
    path, key, winners = _table(device)
    entry = f"{op}|{shape}|{'/'.join(candidates)}"
    if winners.get(entry) not in candidates:
        times = {name: _time_or_inf(name, run, device) for name in candidates}
        winners[entry] = min(candidates, key=lambda name: (times[name], candidates.index(name)))
        write_cache(path, key, winners)
    return winners[entry]


def describe_cache() -> str:
    """The cache files and their winners, for ``python -m lnl.info``."""
    root = cache_root()
    files = sorted(root.glob("*.json")) if root.is_dir() else []
    setting = os.environ.get("LNL_AUTOTUNE", "") or "unset (CUDA only)"
    lines = [
        f"autotune cache: {root} (LNL_AUTOTUNE={setting}, LNL_VERIFY={os.environ.get('LNL_VERIFY', '1')})"
    ]
    for path in files:
        try:
            data = json.loads(path.read_text())
            lines.append(f"  {path.name}: {data.get('key')}")
            lines += [
                f"    {entry} -> {name}" for entry, name in sorted(data.get("winners", {}).items())
            ]
        except (OSError, ValueError, AttributeError) as exc:
            lines.append(f"  {path.name}: unreadable ({exc})")
    if not files:
        lines.append("  (empty)")
    return "\n".join(lines)
