"""Backend selection shared by every op in ``lnl.ops`` (xformers' dispatch, reduced to three backends).

Each op lists, for every backend, the reasons it cannot run the given inputs (an empty list means it
can). ``"auto"`` takes the first backend in the op's ``priority`` (``PRIORITY`` unless the op has
kernel variants, such as kNN's ``cuda_gemm``) with no reasons and warns once per op and
reason when that is the pure-PyTorch reference. Given the call (``Call``), a CUDA kernel must first
pass its first-use check (``_verify``), and on large problems the runnable backends compete by
measurement (``_tune``). A forced backend with reasons raises a ``ValueError`` that shows the inputs
and the reasons, instead of silently running something else.
"""

from __future__ import annotations

import warnings
from collections.abc import Callable
from typing import NamedTuple

import torch

from lnl import _ext
from lnl.ops import _tune, _verify

PRIORITY = ("cuda", "cpu", "reference")
# Ops with more than one compiled kernel per device: their backends in static order, and each extra
# backend's (lnl:: schema, device type), registered by the op's module.
PRIORITIES: dict[str, tuple[str, ...]] = {}
VARIANTS: dict[tuple[str, str], tuple[str, str]] = {}
_WARNED: set[tuple[str, str]] = set()


def priority(op: str) -> tuple[str, ...]:
    """``op``'s backends in the order ``auto`` prefers them (without measurements)."""
    return PRIORITIES.get(op, PRIORITY)


def compiled_reasons(op: str, backend: str, device: torch.device) -> list[str]:
    """Why the compiled ``backend`` ("cpu", "cuda" or a variant in ``VARIANTS``) of ``lnl::<op>``
    cannot run on ``device``."""
    if backend == "reference":
        return []
    op, backend = VARIANTS.get((op, backend), (op, backend))
    if not _ext.available():
        return [f"extension lnl._C is not built ({_ext.load_error()})"]
    key = backend.upper()
    reasons = []
    if not _ext.has_kernel(op, key):
        built_cuda = _ext.build_info().get("with_cuda")
        suffix = " (lnl._C was built without CUDA)" if backend == "cuda" and not built_cuda else ""
        reasons.append(f"lnl._C has no {key} kernel for lnl::{op}{suffix}")
    if device.type != backend:
        reasons.append(f"inputs are on {device.type}, not {backend}")
    elif backend == "cuda":
        reasons += _capability_reasons(torch.cuda.get_device_capability(device), str(device))
    return reasons


def _capability_reasons(capability: tuple[int, int], device: str) -> list[str]:
    """Why the built CUDA code cannot run on a GPU of ``capability``: too old for the kernels, or no
    cubin or PTX in ``lnl._C`` that it can load (every launch would raise "no kernel image")."""
    cap = f"{capability[0]}.{capability[1]}"
    if capability[0] < 8:
        return [f"the CUDA kernels need compute capability 8.0+, {device} has {cap}"]
    arch_list = _ext.build_info().get("arch_list")
    if arch_list and not arch_list_runs_on(arch_list, capability):
        return [
            f"lnl._C was built for TORCH_CUDA_ARCH_LIST={arch_list!r}, which has no code that "
            f"{device} (compute capability {cap}) can load; rebuild with "
            f"TORCH_CUDA_ARCH_LIST='{cap}+PTX'"
        ]
    return []


def arch_list_runs_on(arch_list: str, capability: tuple[int, int]) -> bool:
    """Whether a build for ``arch_list`` (TORCH_CUDA_ARCH_LIST syntax: "8.0;8.6;9.0a;9.0+PTX") has code
    a GPU of ``capability`` loads: a cubin of the same major version and no newer minor ("a" variants
    only on their exact version), or PTX of a version no newer than the GPU (the driver compiles it)."""
    for entry in arch_list.replace(" ", ";").split(";"):
        if not entry:
            continue
        version, ptx = entry.removesuffix("+PTX"), entry.endswith("+PTX")
        exact = version.endswith("a")
        major, minor = (int(part) for part in version.rstrip("af").split("."))
        if exact and (major, minor) == capability:
            return True  # "9.0a" code (cubin or PTX) uses features of that exact version only
        if ptx and not exact and (major, minor) <= capability:
            return True
        if not exact and major == capability[0] and minor <= capability[1]:
            return True
    return False


def describe(**tensors: torch.Tensor) -> str:
    """A one-line summary of the inputs for error messages: name=shape dtype device."""
    parts = [
        f"{name}={tuple(t.shape)} {str(t.dtype).replace('torch.', '')} {t.device}"
        for name, t in tensors.items()
        if isinstance(t, torch.Tensor)
    ]
    return ", ".join(parts)


class Call(NamedTuple):
    """What ``auto`` needs beyond the reasons: the inputs' device and dtype (first-use verification),
    the shape bucket and work (multiply-adds) of the problem, and ``run(backend)`` to time a candidate."""

    device: torch.device
    dtype: torch.dtype
    shape: str
    work: float
    run: Callable[[str], object]


def _tracing(device: torch.device) -> bool:
    capturing = device.type == "cuda" and torch.cuda.is_current_stream_capturing()
    return capturing or torch.compiler.is_compiling()


def choose(
    op: str, requested: str, reasons: dict[str, list[str]], inputs: str, call: Call | None = None
) -> str:
    """Pick the backend for one call.

    Args:
        op: the op's name, for messages.
        requested: "auto" or one of ``priority(op)``.
        reasons: for each backend in ``priority(op)``, why it cannot run these inputs.
        inputs: ``describe(...)`` of the inputs, shown when a forced backend cannot run.
        call: for "auto": a CUDA kernel is used only once it passed its first-use check
            (``_verify``), and among several runnable backends a large problem takes the measured
            fastest (``_tune``). Without it, the first runnable backend in ``priority(op)``.

    Returns:
        The chosen backend name.
    """
    order = tuple(b for b in priority(op) if b in reasons)  # the backends the caller weighed
    if requested == "auto":
        if call is not None and _tracing(call.device):
            call = None  # no checks or timings inside torch.compile or a CUDA graph capture
        if call is not None:
            for backend in order:
                failed = (
                    None
                    if reasons[backend]
                    else _verify.mismatch(op, backend, call.device, call.dtype)
                )
                if failed:
                    reasons[backend] = [
                        f"the {backend} kernel failed its first-use check ({failed})"
                    ]
        runnable = [b for b in order if not reasons[b]]
        chosen = (
            runnable[0]
            if call is None
            else _tune.pick(op, runnable, call.device, call.shape, call.work, call.run)
        )
        # each reason once: a kernel and its variant (cuda, cuda_gemm) often share one
        skipped = list(dict.fromkeys(r for b in order[: order.index(chosen)] for r in reasons[b]))
        # not when measured faster than a runnable kernel
        if runnable[0] == "reference" and skipped:
            key = (op, "; ".join(skipped))
            if key not in _WARNED:
                _WARNED.add(key)
                warnings.warn(f"lnl.ops.{op}: using the PyTorch reference because {key[1]}")
        return chosen
    if requested not in order:
        raise ValueError(f"{op}: unknown backend {requested!r}; expected 'auto' or one of {order}")
    if reasons[requested]:
        raise ValueError(
            f"{op}: backend {requested!r} cannot run inputs [{inputs}]: "
            + "; ".join(reasons[requested])
        )
    return requested
