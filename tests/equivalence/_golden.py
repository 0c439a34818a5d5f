"""The golden-output machinery shared by every method's equivalence tests.

A generator (``make_goldens_<method>.py --original PATH``) runs the original code on fixed small
inputs and saves what it computes with ``save_golden``; a test runs the port on the same inputs and
compares with ``assert_close``. Inputs and weights come from ``det_array``/``fill_state``: numpy's
PCG64 keyed by a seed and a name, so the generator (original key names) and the test (the port's
keys, mapped to the original's) build bit-identical tensors without storing 11M weights.
"""

from __future__ import annotations

import ast
import contextlib
import io
import sys
import zipfile
import zlib
from collections.abc import Callable, Iterable, Mapping
from pathlib import Path
from types import ModuleType

import numpy as np
import torch

FIXTURES = Path(__file__).resolve().parent / "fixtures"
META_KEYS = ("__original__", "__commit__", "__generator__")


# ---------------------------------------------------------------- deterministic inputs and weights
def det_array(
    shape: Iterable[int],
    seed: int,
    name: str,
    *,
    kind: str = "normal",
    scale: float = 1.0,
    low: float = 0.0,
    high: float = 1.0,
) -> np.ndarray:
    """A float32 array drawn from PCG64 seeded by ``(seed, crc32(name))``: the same on every machine
    (numpy's bit-generator stream is stable across versions)."""
    rng = np.random.Generator(np.random.PCG64([int(seed), zlib.crc32(name.encode())]))
    shape = tuple(int(s) for s in shape)
    if kind == "normal":
        return (rng.standard_normal(shape) * scale).astype(np.float32)
    if kind == "uniform":
        return rng.uniform(low, high, shape).astype(np.float32)
    if kind == "int":
        return rng.integers(int(low), int(high), shape).astype(np.int64)
    raise ValueError(f"det_array: unknown kind {kind!r}")


def det_tensor(shape, seed: int, name: str, **kw) -> torch.Tensor:
    return torch.from_numpy(det_array(shape, seed, name, **kw))


def det_value(key: str, shape: tuple[int, ...], seed: int) -> np.ndarray:
    """The value ``fill_state`` gives the entry ``key`` (an original state_dict name) of ``shape``:
    BN-like positive scales and variances in [0.5, 1.5], small biases and means, weights with
    1/sqrt(fan_in) spread (activations neither vanish nor explode through a deep net)."""
    leaf = key.rsplit(".", 1)[-1]
    if leaf == "running_var" or (leaf == "weight" and len(shape) == 1):
        return det_array(shape, seed, key, kind="uniform", low=0.5, high=1.5)
    if leaf in ("running_mean", "bias") or len(shape) == 1:
        return det_array(shape, seed, key, scale=0.1)
    fan_in = int(np.prod(shape[1:])) if len(shape) > 1 else 1
    return det_array(shape, seed, key, scale=1.0 / np.sqrt(fan_in))


def fill_state(
    module: torch.nn.Module, seed: int, rename: Callable[[str], str] = lambda k: k
) -> dict:
    """Overwrite every floating entry of ``module``'s state_dict with ``det_value(rename(key))``.

    Args:
        module: the network (original or port).
        seed: weight seed.
        rename: maps this module's key to the original's (identity in the generator).

    Returns:
        {original key: shape} of what was filled, for the test to compare key sets with the original.
    """
    filled = {}
    with torch.no_grad():
        for key, value in module.state_dict().items():
            if not value.is_floating_point():
                continue
            name = rename(key)
            value.copy_(torch.from_numpy(det_value(name, tuple(value.shape), seed)))
            filled[name] = tuple(value.shape)
    return filled


# ---------------------------------------------------------------- fixtures
def save_golden(path: Path, *, original: str, commit: str, generator: str, **arrays) -> None:
    """Write ``arrays`` (tensors or arrays) to ``path`` (.npz) with the original's name and commit."""
    out = {
        k: (v.detach().cpu().numpy() if isinstance(v, torch.Tensor) else np.asarray(v))
        for k, v in arrays.items()
    }
    out.update(
        __original__=np.asarray(original),
        __commit__=np.asarray(commit),
        __generator__=np.asarray(generator),
    )
    path.parent.mkdir(parents=True, exist_ok=True)
    # np.savez_compressed stamps the time into the zip: fixed stamps and order keep a regenerated
    # fixture byte-identical unless its content changed, so `git diff` shows real drift only
    with zipfile.ZipFile(path, "w") as zf:
        for name in sorted(out):
            buffer = io.BytesIO()
            np.lib.format.write_array(
                buffer, np.require(out[name], requirements="C"), allow_pickle=False
            )
            info = zipfile.ZipInfo(f"{name}.npy", date_time=(1980, 1, 1, 0, 0, 0))
            zf.writestr(info, buffer.getvalue(), compress_type=zipfile.ZIP_DEFLATED)
    print(f"wrote {path} ({len(out) - len(META_KEYS)} arrays)")


def load_golden(method: str, name: str) -> dict[str, np.ndarray]:
    """The fixture ``fixtures/<method>/<name>.npz`` as a dict (its meta keys included)."""
    path = FIXTURES / method / f"{name}.npz"
    if not path.exists():
        raise FileNotFoundError(
            f"{path}: golden fixture missing; regenerate it (tests/equivalence/README.md)"
        )
    with np.load(path, allow_pickle=False) as z:
        return {k: z[k] for k in z.files}


def assert_close(
    actual, expected, *, rtol: float = 1e-6, atol_scale: float = 1e-6, name: str = ""
) -> None:
    """float: ``|a − e| ≤ rtol·|e| + atol_scale·max|e|`` everywhere; integers and bools: exact."""
    a = actual.detach().cpu().numpy() if isinstance(actual, torch.Tensor) else np.asarray(actual)
    e = np.asarray(expected)
    assert a.shape == e.shape, f"{name}: shape {a.shape} != golden {e.shape}"
    if not np.issubdtype(e.dtype, np.floating):
        mismatch = int((a != e).sum())
        assert mismatch == 0, (
            f"{name}: {mismatch} of {e.size} entries differ from the golden output"
        )
        return
    a64, e64 = a.astype(np.float64), e.astype(np.float64)
    tol = rtol * np.abs(e64) + atol_scale * max(float(np.abs(e64).max(initial=0.0)), 1e-30)
    err = np.abs(a64 - e64)
    bad = err > tol
    assert not bad.any(), (
        f"{name}: {int(bad.sum())} of {e.size} entries off; max |diff| {err.max():.3g} "
        f"(max |golden| {np.abs(e64).max():.3g})"
    )


def grad_sample(grad: torch.Tensor, n: int = 64) -> np.ndarray:
    """``n`` evenly strided entries of a flattened gradient plus its float64 norm (last entry): a
    strong check of an 11M-entry gradient in a small fixture."""
    flat = grad.detach().flatten().double()
    step = max(flat.numel() // n, 1)
    return torch.cat([flat[::step][:n], flat.norm().reshape(1)]).numpy()


# ---------------------------------------------------------------- running the original on the CPU
@contextlib.contextmanager
def cpu_only():
    """``.cuda()`` on tensors and modules returns them unchanged (the originals call it everywhere)."""
    saved = torch.Tensor.cuda, torch.nn.Module.cuda
    torch.Tensor.cuda = lambda self, *a, **k: self
    torch.nn.Module.cuda = lambda self, *a, **k: self
    try:
        yield
    finally:
        torch.Tensor.cuda, torch.nn.Module.cuda = saved


def import_original(root: Path, module: str) -> ModuleType:
    """Import ``module`` from the original checkout at ``root`` (its folder first on sys.path)."""
    root = str(Path(root).resolve())
    if root not in sys.path:
        sys.path.insert(0, root)
    __import__(module)
    return sys.modules[module]


def load_definitions(
    path: Path, namespace: dict | None = None, *, skip: Iterable[str] = ()
) -> dict:
    """Execute only the imports, functions and classes of a script (never its top-level statements:
    the originals parse flags and start training at import), in ``namespace``.

    Returns:
        The namespace, so that tests can inject the globals the functions read (``args``, ...).
    """
    tree = ast.parse(Path(path).read_text(), filename=str(path))
    keep = (ast.Import, ast.ImportFrom, ast.FunctionDef, ast.ClassDef)
    tree.body = [
        n for n in tree.body if isinstance(n, keep) and getattr(n, "name", None) not in set(skip)
    ]
    namespace = {} if namespace is None else namespace
    namespace.setdefault("__name__", f"original:{Path(path).name}")
    exec(compile(tree, str(path), "exec"), namespace)
    return namespace


def git_commit(root: Path, fallback: str) -> str:
    """The commit of ``root`` if it is a git clone, else ``fallback`` (an archive of the commit)."""
    import subprocess

    try:
        return subprocess.check_output(
            ["git", "-C", str(root), "rev-parse", "HEAD"], text=True, stderr=subprocess.DEVNULL
        ).strip()
    except (OSError, subprocess.CalledProcessError):
        return fallback


def load_checked(method: str, name: str, commit: str) -> dict[str, np.ndarray]:
    """``load_golden`` of a fixture that must come from the original at ``commit``."""
    fixture = load_golden(method, name)
    check_meta(fixture, commit)
    return fixture


def check_meta(golden: Mapping[str, np.ndarray], commit: str) -> None:
    assert str(golden["__commit__"]).startswith(commit[:7]), (
        f"fixture from commit {golden['__commit__']}, expected {commit}: regenerate it"
    )
