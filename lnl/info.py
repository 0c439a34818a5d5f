"""``python -m lnl.info``: versions, the build metadata of ``lnl._C``, and for every op and backend
either "available", "compiled, not runnable here" (a CUDA kernel on a machine without a GPU) or the
reasons it is not (the same report ``default_setup`` writes per run), and the autotune cache
(``lnl.ops._tune``: the measured winner per op and shape bucket on this device, torch and build)."""

from __future__ import annotations

import json
import platform

import torch

from lnl import __version__, _ext
from lnl.ops import _tune


def report() -> str:
    """The environment and backend report as text."""
    import lnl.ops as ops

    lines = [
        f"lnl {__version__}, python {platform.python_version()}, torch {torch.__version__} "
        f"(cuda {torch.version.cuda}), cuda available: {torch.cuda.is_available()}",
        f"lnl._C: {'loaded' if _ext.available() else 'NOT loaded: ' + str(_ext.load_error())}",
        f"compiled backends: {', '.join(ops.backend()) or 'none'}",
        "build info: " + json.dumps({k: v for k, v in _ext.build_info().items() if k != "flags"}),
    ]
    for op in ops.OPS:
        for backend in ("cuda", "cpu"):
            lines.append(f"  {op:<12} {backend:<5} {_status(op, backend)}")
        lines.append(f"  {op:<12} reference available")
    lines.append(_tune.describe_cache())
    return "\n".join(lines)


def _status(op: str, backend: str) -> str:
    if not _ext.has_kernel(op, backend.upper()):
        return f"unavailable: {'not built' if _ext.available() else _ext.load_error()}"
    if backend == "cuda" and not torch.cuda.is_available():
        return "compiled, not runnable here (no CUDA device)"
    return "available"


def main(argv: list[str] | None = None) -> int:
    import argparse

    import lnl.ops as ops

    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument(
        "--require-cuda",
        action="store_true",
        help="exit 1 unless lnl._C has CUDA kernels (image builds use this)",
    )
    args = p.parse_args(argv)
    print(report())
    if args.require_cuda and "cuda" not in ops.backend():
        print("error: lnl._C was built without CUDA kernels")
        return 1
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
