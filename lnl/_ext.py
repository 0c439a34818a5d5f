"""The only module that imports the compiled extension ``lnl._C``.

Importing ``lnl._C`` runs the static ``TORCH_LIBRARY`` registrars in ``csrc/``, which define the
``torch.ops.lnl.*`` operators. A missing or broken build is not an error here: the failure is kept,
one warning is emitted per process, and every op falls back to its pure-PyTorch reference
(``lnl.ops``). ``python -m lnl.info`` prints what was built and why a backend is unavailable.
"""

from __future__ import annotations

import json
import os
import warnings
from functools import cache
from pathlib import Path
from typing import Any

import torch

_BUILD_INFO = Path(__file__).with_name("_build_info.json")


@cache
def load_error() -> str | None:
    """Import ``lnl._C`` once; return None on success, else the error text."""
    try:
        from lnl import _C  # noqa: F401  (import runs the op registrations)
    except Exception as exc:  # ImportError, undefined symbols, ABI mismatch ...
        message = f"{type(exc).__name__}: {exc}"
        if os.environ.get("LNL_SKIP_EXT") != "1":
            warnings.warn(
                f"lnl._C could not be imported ({message}); every op uses its PyTorch reference. "
                "Build it with `pip install --no-build-isolation -e .` (see `python -m lnl.info`).",
                stacklevel=2,
            )
        return message
    return None


def available() -> bool:
    """True when ``lnl._C`` imported and registered its ops."""
    return load_error() is None


@cache
def build_info() -> dict[str, Any]:
    """The metadata ``setup.py`` wrote beside ``_C`` (torch, CUDA, arch list, flags, git SHA)."""
    if not _BUILD_INFO.exists():
        return {}
    return json.loads(_BUILD_INFO.read_text())


def has_op(name: str) -> bool:
    """True when ``torch.ops.lnl.<name>`` is defined (needs the extension)."""
    if not available():
        return False
    try:
        return torch._C._dispatch_has_kernel(f"lnl::{name}") or hasattr(torch.ops.lnl, name)
    except Exception:
        return hasattr(torch.ops.lnl, name)


def has_kernel(name: str, dispatch_key: str) -> bool:
    """True when ``lnl::<name>`` has a kernel registered for ``dispatch_key`` ("CPU" or "CUDA")."""
    if not has_op(name):
        return False
    return bool(torch._C._dispatch_has_kernel_for_dispatch_key(f"lnl::{name}", dispatch_key))
