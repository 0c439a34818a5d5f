"""Backend selection shared by every op in ``lnl.ops`` (xformers' dispatch, reduced to three backends).

Each op lists, for every backend, the reasons it cannot run the given inputs (an empty list means it
can). ``"auto"`` takes the first backend in ``PRIORITY`` with no reasons and warns once per op and
reason when that is the pure-PyTorch reference; a forced backend with reasons raises a ``ValueError``
that shows the inputs and the reasons, instead of silently running something else.
"""

from __future__ import annotations

import warnings

import torch

from lnl import _ext

PRIORITY = ("cuda", "cpu", "reference")
_WARNED: set[tuple[str, str]] = set()


def compiled_reasons(op: str, backend: str, device: torch.device) -> list[str]:
    """Why the compiled ``backend`` ("cpu" or "cuda") of ``lnl::<op>`` cannot run on ``device``."""
    if backend == "reference":
        return []
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
    elif backend == "cuda" and torch.cuda.get_device_capability(device)[0] < 8:
        cap = ".".join(map(str, torch.cuda.get_device_capability(device)))
        reasons.append(f"the CUDA kernels need compute capability 8.0+, {device} has {cap}")
    return reasons


def describe(**tensors: torch.Tensor) -> str:
    """A one-line summary of the inputs for error messages: name=shape dtype device."""
    parts = [
        f"{name}={tuple(t.shape)} {str(t.dtype).replace('torch.', '')} {t.device}"
        for name, t in tensors.items()
        if isinstance(t, torch.Tensor)
    ]
    return ", ".join(parts)


def choose(op: str, requested: str, reasons: dict[str, list[str]], inputs: str) -> str:
    """Pick the backend for one call.

    Args:
        op: the op's name, for messages.
        requested: "auto" or one of ``PRIORITY``.
        reasons: for each backend in ``PRIORITY``, why it cannot run these inputs.
        inputs: ``describe(...)`` of the inputs, shown when a forced backend cannot run.

    Returns:
        The chosen backend name.
    """
    if requested == "auto":
        chosen = next(b for b in PRIORITY if not reasons[b])
        skipped = [r for b in PRIORITY[: PRIORITY.index(chosen)] for r in reasons[b]]
        if chosen == "reference" and skipped:
            key = (op, "; ".join(skipped))
            if key not in _WARNED:
                _WARNED.add(key)
                warnings.warn(f"lnl.ops.{op}: using the PyTorch reference because {key[1]}")
        return chosen
    if requested not in PRIORITY:
        raise ValueError(f"{op}: unknown backend {requested!r}; expected 'auto' or one of {PRIORITY}")
    if reasons[requested]:
        raise ValueError(
            f"{op}: backend {requested!r} cannot run inputs [{inputs}]: " + "; ".join(reasons[requested])
        )
    return requested
