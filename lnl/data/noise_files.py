"""Noise files: DivideMix/PLReMix JSON lists (``.json``; one label per training index, 50,000 for
CIFAR), LRA-Diffusion ``.npy`` (int64, 45,000 labels for the first 45k CIFAR training images) and lnl's
``.npz`` (``labels`` plus ``meta`` as JSON), read by :func:`load_noise_file` and written by
:func:`save_noise_file` as :class:`NoisyLabels`, the type :func:`lnl.data.noise.make_noise` returns."""

from __future__ import annotations

import hashlib
import json
import os
import re
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from lnl.data._base import DataFileError, reading
from lnl.data.noise_checks import check_labels
from lnl.data.noise_maps import DATASET_ALIASES


@dataclass
class NoisyLabels:
    """Noisy labels with their provenance.

    Attributes:
        labels: ``Tensor[N]`` int64 noisy labels.
        meta: ``type``, ``rate``, ``seed``, ``num_classes``, ``actual_noise_rate`` (vs the clean
            labels given, when known), ``transition_matrix`` (measured, nested lists, C x C),
            ``procedure`` and generator options; file readers add ``format`` and ``sha256``.
    """

    labels: torch.Tensor
    meta: dict[str, Any] = field(default_factory=dict)

    def __len__(self) -> int:
        return len(self.labels)


_DIVIDEMIX_NAME = re.compile(r"^(?P<rate>\d*\.\d+)(?:_(?P<mode>sym|asym))?$")
_LRA_NAME = re.compile(
    r"^(?P<dataset>cifar10|cifar100)-(?P<ptype>[123])-(?P<level>\d*\.\d+)"
    r"(?:_(?P<kind>[UA])_(?P<extra>\d*\.\d+))?$"
)


def _sha256(path: Path) -> str:
    """SHA-256 of a file."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def meta_from_name(path: Path) -> dict[str, Any]:
    """Infer type, rate and dataset from an original file name (``0.40_asym.json``,
    ``0.5_sym.json``, ``cifar10-1-0.35_U_0.3.npy``); unknown names give an empty dict."""
    stem, parent = path.stem, path.parent.name.lower()
    m = _DIVIDEMIX_NAME.match(stem)
    if m and path.suffix == ".json":
        meta = {"type": m["mode"] or "sym", "rate": float(m["rate"])}
        if parent in DATASET_ALIASES:
            meta["dataset"] = DATASET_ALIASES[parent]
        return meta
    m = _LRA_NAME.match(stem)
    if m and path.suffix == ".npy":
        meta = {
            "dataset": m["dataset"],
            "pmd_type": int(m["ptype"]),
            "pmd_level": float(m["level"]),
        }
        if m["kind"]:
            meta.update(type=f"pmd+{m['kind']}", rate=float(m["extra"]))
        else:
            meta.update(type="pmd", rate=float(m["level"]))
        return meta
    return {}


def load_noise_file(
    path: str | os.PathLike, *, num_classes: int | None = None, num_samples: int | None = None
) -> NoisyLabels:
    """Read a noise file in any supported format (chosen by extension).

    Args:
        path: ``.json`` (DivideMix/PLReMix list), ``.npy`` (LRA-Diffusion int64 array) or ``.npz``
            (lnl: ``labels`` + ``meta`` JSON).
        num_classes: if given, every label must be below it.
        num_samples: if given, the file must hold exactly this many labels.

    Returns:
        :class:`NoisyLabels` with ``meta`` holding ``format``, ``path``, ``sha256``, ``num_samples``
        and what the name or the file records (type, rate, dataset).

    Raises:
        ValueError: unknown extension, malformed content, wrong length or labels out of range.
        FileNotFoundError: the file does not exist.
    """
    p = Path(path)
    if not p.is_file():
        raise FileNotFoundError(f"noise file not found: {p}")
    meta: dict[str, Any] = meta_from_name(p)
    if p.suffix not in (".json", ".npy", ".npz"):
        raise ValueError(f"{p}: unknown noise-file extension {p.suffix!r}; use .json, .npy or .npz")
    with reading(p, "noise file"):
        raw, fmt = _read_raw_labels(p, meta)
    labels = check_labels(raw, num_classes, f"{p} labels")
    if num_samples is not None and len(labels) != num_samples:
        raise ValueError(f"{p}: holds {len(labels)} labels, expected {num_samples}")
    meta.update(format=fmt, path=str(p), sha256=_sha256(p), num_samples=len(labels))
    return NoisyLabels(torch.from_numpy(labels), meta)


def _read_raw_labels(p: Path, meta: dict[str, Any]) -> tuple[Any, str]:
    """The file's labels as stored (checked by the caller, outside the read-error translation)."""
    if p.suffix == ".json":
        with open(p) as f:
            raw = json.load(f)
        if isinstance(raw, dict):  # tolerate {"noise_labels": [...]} wrappers
            raw = raw.get("noise_labels", raw.get("labels"))
        if not isinstance(raw, list):
            raise DataFileError(f"{p}: expected a JSON list of labels")
        return raw, "dividemix_json"
    if p.suffix == ".npy":
        return np.load(p, allow_pickle=False), "lra_npy"
    with np.load(p, allow_pickle=False) as z:
        if "labels" not in z.files:
            raise DataFileError(f"{p}: no 'labels' array (keys: {z.files})")
        meta.update(json.loads(str(z["meta"])) if "meta" in z.files else {})
        return np.asarray(z["labels"]), "lnl_npz"


def save_noise_file(
    path: str | os.PathLike, noisy: NoisyLabels | Any, meta: dict[str, Any] | None = None
) -> str:
    """Write noisy labels atomically in the format given by the extension.

    Args:
        path: ``.json`` (DivideMix list of ints), ``.npy`` (int64 array, LRA) or ``.npz`` (labels
            plus ``meta`` as JSON; the only format that keeps metadata).
        noisy: :class:`NoisyLabels` or a 1-D label array.
        meta: metadata for ``.npz`` (default: ``noisy.meta``).

    Returns:
        The SHA-256 hex digest of the written file.
    """
    p = Path(path)
    labels = check_labels(noisy.labels if isinstance(noisy, NoisyLabels) else noisy)
    if meta is None:
        meta = noisy.meta if isinstance(noisy, NoisyLabels) else {}
    if p.suffix not in (".json", ".npy", ".npz"):
        raise ValueError(f"{p}: unknown noise-file extension {p.suffix!r}; use .json, .npy or .npz")
    p.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=p.parent, prefix=p.name + ".", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as f:
            if p.suffix == ".json":
                f.write(json.dumps(labels.tolist()).encode())
            elif p.suffix == ".npy":
                np.save(f, labels)
            else:
                np.savez(f, labels=labels, meta=np.array(json.dumps(meta, default=_json_default)))
        os.replace(tmp, p)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return _sha256(p)


def _json_default(obj: Any) -> Any:
    """JSON fallback for numpy scalars/arrays and tensors in metadata."""
    if isinstance(obj, (np.generic, np.ndarray)):
        return obj.tolist()
    if isinstance(obj, torch.Tensor):
        return obj.tolist()
    return str(obj)
