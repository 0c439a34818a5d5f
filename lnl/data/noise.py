"""Synthetic label noise and the originals' noise files.

:func:`make_noise` is the single entry point; every generator is seeded, never touches a global RNG
and returns :class:`NoisyLabels` (``labels: Tensor[N]`` int64 plus ``meta``: type, rate, seed,
measured ``actual_noise_rate`` and the measured ``transition_matrix`` ``T[i][j] = P(noisy = j |
clean = i)``).

Noise types (DivideMix ``dataloader_cifar.py``, IEG ``ieg/dataset_utils``, LRA's files, PLC):

``sym``
    DivideMix/PLReMix convention (IEG's is the same in expectation, drawn per sample with
    probability ``rate``): pick ``int(rate * N)`` samples and give each a label drawn uniformly from
    **all** C classes, so the true class can be redrawn and the actual noise rate is about
    ``rate * (C - 1) / C`` (45 % for CIFAR-10 "50 %"). Exact procedure, kept call for call from
    ``LiJunnan1992/DivideMix: dataloader_cifar.py @ d9d3058`` (and ``lxysl/PLReMix @ b0c4ec3``):
    ``rng = random.Random(seed)``; ``idx = list(range(N))``; ``rng.shuffle(idx)``; the noise set is
    ``idx[:int(rate * N)]``; then for ``i`` in increasing order, if ``i`` is in the noise set,
    ``label[i] = rng.randint(0, C - 1)``. The originals seed Python's global ``random`` with 123 at
    start-up and draw nothing else first, so **seed=123 reproduces the shipped ``dividemix_json``
    files bit for bit** (every CIFAR-10/100 sym and CIFAR-10 asym file, and all Tiny-ImageNet sym
    files except 0.80, which was generated some other way; tests/data/test_noise.py checks this).
``sym_flip``
    Same noise set, but the new label is uniform over the C - 1 *other* classes
    (``(y + rng.randint(1, C - 1)) % C``), so the actual rate is ``int(rate * N) / N``.
``asym``
    The dataset's class map. CIFAR-10 (DivideMix): the same ``int(rate * N)`` subset (drawn across
    all classes) is mapped truck→automobile, bird→airplane, deer→horse, cat↔dog; other classes keep
    their label, so about ``rate / 2`` of labels change. CIFAR-100 (PLReMix; DivideMix never ran
    it): each sample independently moves to the next index within its block of 5 consecutive indices
    (``5 * (c // 5) + (c + 1) % 5``) with probability ``rate``. Tiny-ImageNet: pair flip
    ``c → (c + 1) % 200`` with probability ``rate``. The per-sample cases draw
    ``np.random.RandomState(seed).multinomial(1, T[y])`` sample by sample, as the originals do; seed
    0 reproduces the shipped ``tinyimagenet/0.45_asym.json``. The CIFAR-100 file was drawn unseeded
    and cannot be regenerated. ``asym_procedure="per_sample"`` gives CIFAR-10 IEG's per-sample
    variant.
``asym_superclass``
    CIFAR-100 only: like ``asym`` but the cycle runs through the 5 fine classes of each **real**
    superclass (sorted fine indices), since the index blocks of 5 are alphabetical, not
    superclasses.
``pmd``, ``pmd+U``, ``pmd+A``, ``idn``
    Feature-dependent noise from a classifier's probabilities or from features; see
    :mod:`lnl.data.noise_models`.

Files (:func:`load_noise_file` / :func:`save_noise_file`): DivideMix/PLReMix JSON lists (``.json``;
one label per training index, 50,000 for CIFAR), LRA-Diffusion ``.npy`` (int64, 45,000 labels for
the first 45k CIFAR training images) and lnl's ``.npz`` (``labels`` plus ``meta`` as JSON).
"""

from __future__ import annotations

import hashlib
import json
import os
import random
import re
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from lnl.data._base import DataFileError, reading
from lnl.data._classes import CIFAR100_FINE_TO_COARSE

NOISE_TYPES = ("sym", "sym_flip", "asym", "asym_superclass", "pmd", "pmd+U", "pmd+A", "idn")
_DATASET_ALIASES = {
    "cifar10": "cifar10",
    "cifar10n": "cifar10",
    "cifar100": "cifar100",
    "cifar100n": "cifar100",
    "tiny_imagenet": "tiny_imagenet",
    "tinyimagenet": "tiny_imagenet",
    "tiny-imagenet": "tiny_imagenet",
}
_CLASSES_TO_DATASET = {10: "cifar10", 100: "cifar100", 200: "tiny_imagenet"}
_DEFAULT_ASYM_PROCEDURE = {
    "cifar10": "subset",
    "cifar100": "per_sample",
    "tiny_imagenet": "per_sample",
}

#: DivideMix's CIFAR-10 map; classes not listed keep their label.
CIFAR10_ASYM_MAP = {9: 1, 2: 0, 4: 7, 3: 5, 5: 3}


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


def check_labels(labels: Any, num_classes: int | None = None, name: str = "labels") -> np.ndarray:
    """Validate labels and return them as a 1-D int64 numpy array.

    Args:
        labels: 1-D integer sequence, ndarray or tensor.
        num_classes: if given, every label must lie in ``[0, num_classes)``.
        name: used in error messages.

    Returns:
        ``np.ndarray[N]`` int64.

    Raises:
        ValueError: not 1-D, not integer, or out of range.
    """
    arr = labels.detach().cpu().numpy() if isinstance(labels, torch.Tensor) else np.asarray(labels)
    if arr.ndim != 1:
        raise ValueError(f"{name} must be 1-D, got shape {arr.shape}")
    if arr.size and not np.issubdtype(arr.dtype, np.integer):
        if not (np.issubdtype(arr.dtype, np.floating) and np.all(arr == np.round(arr))):
            raise ValueError(f"{name} must be integers, got dtype {arr.dtype}")
    arr = arr.astype(np.int64)
    if arr.size and arr.min() < 0:
        raise ValueError(f"{name} out of range: minimum {arr.min()} < 0")
    if num_classes is not None and arr.size and arr.max() >= num_classes:
        raise ValueError(f"{name} out of range: maximum {arr.max()} >= num_classes={num_classes}")
    return arr


def check_rate(rate: float, name: str = "rate") -> float:
    """Raise ``ValueError`` unless ``rate`` is a number in [0, 1]."""
    try:
        r = float(rate)
    except (TypeError, ValueError):
        raise ValueError(f"{name} must be a number in [0, 1], got {rate!r}") from None
    if not 0.0 <= r <= 1.0:
        raise ValueError(f"{name} must be in [0, 1], got {rate}")
    return r


def transition_matrix(clean: Any, noisy: Any, num_classes: int) -> np.ndarray:
    """Measured row-normalised transition matrix ``T[i, j] = #(clean=i, noisy=j) / #(clean=i)``.

    Rows of classes absent from ``clean`` are the identity row.
    """
    c, n = check_labels(clean, num_classes), check_labels(noisy, num_classes, "noisy labels")
    if len(c) != len(n):
        raise ValueError(f"{len(c)} clean labels but {len(n)} noisy labels")
    counts = np.bincount(c * num_classes + n, minlength=num_classes**2).reshape(num_classes, -1)
    rows = counts.sum(1, keepdims=True)
    eye = np.eye(num_classes)
    return np.where(rows > 0, counts / np.maximum(rows, 1), eye)


def noise_rate(clean: Any, noisy: Any) -> float:
    """Fraction of labels that differ (the measured noise rate)."""
    c, n = check_labels(clean), check_labels(noisy, name="noisy labels")
    if len(c) != len(n):
        raise ValueError(f"{len(c)} clean labels but {len(n)} noisy labels")
    return float(np.mean(c != n)) if len(c) else 0.0


def resolve_dataset(dataset: str | None, num_classes: int) -> str | None:
    """Canonical dataset name for class maps; inferred from ``num_classes`` (10/100/200) if None."""
    if dataset is None:
        return _CLASSES_TO_DATASET.get(num_classes)
    return _DATASET_ALIASES.get(dataset.lower(), dataset.lower())


def asym_map(dataset: str | None, num_classes: int, superclass: bool = False) -> np.ndarray:
    """The asymmetric class map ``m`` (``c → m[c]``) of a dataset.

    Args:
        dataset: ``cifar10``, ``cifar100`` or ``tiny_imagenet`` (aliases accepted); None infers it
            from ``num_classes``.
        num_classes: number of classes (must match the dataset).
        superclass: CIFAR-100 only: cycle within the real superclasses instead of index blocks of 5.

    Returns:
        ``np.ndarray[C]`` int64.

    Raises:
        ValueError: no map is defined for this dataset / class count.
    """
    ds = resolve_dataset(dataset, num_classes)
    expected = {"cifar10": 10, "cifar100": 100, "tiny_imagenet": 200}
    if ds not in expected or (superclass and ds != "cifar100"):
        kind = "asym_superclass (CIFAR-100 only)" if superclass else "asym"
        raise ValueError(f"no {kind} map for dataset {dataset!r} with {num_classes} classes")
    if expected[ds] != num_classes:
        raise ValueError(f"dataset {ds} has {expected[ds]} classes, num_classes={num_classes}")
    m = np.arange(num_classes)
    if ds == "cifar10":
        for src, dst in CIFAR10_ASYM_MAP.items():
            m[src] = dst
    elif ds == "tiny_imagenet":
        m = (m + 1) % num_classes
    elif not superclass:
        m = 5 * (m // 5) + (m + 1) % 5
    else:
        coarse = np.asarray(CIFAR100_FINE_TO_COARSE)
        for k in range(20):
            members = np.flatnonzero(coarse == k)  # sorted fine indices of superclass k
            m[members] = np.roll(members, -1)
    return m


def _dividemix_subset(n: int, rate: float, rng: random.Random) -> np.ndarray:
    """DivideMix's noise set: shuffle ``range(n)``, keep the first ``int(rate * n)``."""
    idx = list(range(n))
    rng.shuffle(idx)
    mask = np.zeros(n, dtype=bool)
    mask[idx[: int(rate * n)]] = True
    return mask


def _sym(y: np.ndarray, rate: float, num_classes: int, seed: int, flip: bool) -> np.ndarray:
    """``sym`` / ``sym_flip`` (module docstring for the exact call order)."""
    rng = random.Random(seed)
    out = y.copy()
    for i in np.flatnonzero(_dividemix_subset(len(y), rate, rng)):
        if flip:
            out[i] = (y[i] + rng.randint(1, num_classes - 1)) % num_classes
        else:
            out[i] = rng.randint(0, num_classes - 1)
    return out


def _per_sample_multinomial(y: np.ndarray, matrix: np.ndarray, seed: int) -> np.ndarray:
    """Draw ``RandomState(seed).multinomial(1, matrix[y_i])`` for each sample in order (originals'
    ``multiclass_noisify``); a Python loop, since vectorising would change the random stream."""
    rs = np.random.RandomState(seed)
    out = np.empty_like(y)
    rows = {c: matrix[c] for c in np.unique(y)}
    for i, c in enumerate(y):
        out[i] = int(np.argmax(rs.multinomial(1, rows[c])))
    return out


def map_matrix(mapping: np.ndarray, rate: float) -> np.ndarray:
    """Transition matrix ``(1 - rate) I + rate M`` of a class map (identity where ``m[c] == c``)."""
    c = len(mapping)
    t = np.zeros((c, c))
    t[np.arange(c), np.arange(c)] = 1.0 - rate
    t[np.arange(c), mapping] += rate
    return t


def _asym(y, rate, num_classes, seed, dataset, superclass, procedure):
    """``asym`` / ``asym_superclass`` (module docstring)."""
    mapping = asym_map(dataset, num_classes, superclass)
    ds = resolve_dataset(dataset, num_classes)
    procedure = procedure or _DEFAULT_ASYM_PROCEDURE[ds]
    if procedure == "subset":
        out = y.copy()
        mask = _dividemix_subset(len(y), rate, random.Random(seed))
        out[mask] = mapping[y[mask]]
        return out, procedure
    if procedure == "per_sample":
        return _per_sample_multinomial(y, map_matrix(mapping, rate), seed), procedure
    raise ValueError(f"asym_procedure must be 'subset' or 'per_sample', got {procedure!r}")


_PROCEDURES = {
    "sym": "random.Random(seed): shuffle range(N), first int(rate*N) get randint(0, C-1) in index "
    "order (DivideMix)",
    "sym_flip": "random.Random(seed): shuffle range(N), first int(rate*N) get "
    "(y + randint(1, C-1)) % C",
    "subset": "random.Random(seed): shuffle range(N), first int(rate*N) mapped through the "
    "class map "
    "(DivideMix)",
    "per_sample": "np.random.RandomState(seed).multinomial(1, T[y]) per sample in index order",
}


def make_noise(
    labels: Any,
    noise_type: str,
    rate: float,
    *,
    num_classes: int,
    seed: int,
    dataset: str | None = None,
    probs: Any = None,
    **options: Any,
) -> NoisyLabels:
    """Generate noisy labels (module docstring for every type's exact procedure).

    Args:
        labels: ``[N]`` clean labels (Tensor, ndarray or list) in ``[0, num_classes)``.
        noise_type: one of :data:`NOISE_TYPES`.
        rate: noise rate in [0, 1]; for ``pmd`` the target noise level, for ``pmd+U``/``pmd+A`` the
            rate of the overlaid uniform/asymmetric noise (the PMD level is ``pmd_level``).
        num_classes: number of classes C.
        seed: the generator's seed.
        dataset: selects the asymmetric map (``cifar10``, ``cifar100``, ``tiny_imagenet``); None
            infers it from ``num_classes``.
        probs: ``[N, C]`` class probabilities of a clean-trained classifier (PMD types).
        **options: ``asym_procedure`` (``"subset"``/``"per_sample"``); PMD: ``pmd_type`` (1, 2, 3),
            ``pmd_factor``, ``pmd_anchor`` (``"top1"``/``"label"``), ``pmd_level``; IDN:
            ``features`` (``[N, D]``), ``idn_std``. See :mod:`lnl.data.noise_models`.

    Returns:
        :class:`NoisyLabels`.

    Raises:
        ValueError: unknown type or option, rate outside [0, 1], labels out of range, or a missing
            or malformed ``probs``/``features``.
    """
    if noise_type not in NOISE_TYPES:
        raise ValueError(
            f"unknown noise type {noise_type!r}; valid types: {', '.join(NOISE_TYPES)}"
        )
    if not isinstance(num_classes, (int, np.integer)) or num_classes < 2:
        raise ValueError(f"num_classes must be an int >= 2, got {num_classes!r}")
    r = check_rate(rate)
    y = check_labels(labels, int(num_classes))
    meta: dict[str, Any] = {
        "type": noise_type,
        "rate": r,
        "seed": int(seed),
        "num_classes": int(num_classes),
    }
    meta["dataset"] = resolve_dataset(dataset, int(num_classes))
    if noise_type in ("sym", "sym_flip"):
        _reject_options(options, ())
        noisy = _sym(y, r, int(num_classes), int(seed), noise_type == "sym_flip")
        meta["procedure"] = _PROCEDURES[noise_type]
    elif noise_type in ("asym", "asym_superclass"):
        _reject_options(options, ("asym_procedure",))
        noisy, proc = _asym(
            y,
            r,
            int(num_classes),
            int(seed),
            dataset,
            noise_type == "asym_superclass",
            options.get("asym_procedure"),
        )
        meta["procedure"] = _PROCEDURES[proc]
    else:
        from lnl.data import noise_models

        noisy, extra = noise_models.generate(
            noise_type, y, r, int(num_classes), int(seed), dataset, probs, options
        )
        meta.update(extra)
    return NoisyLabels(torch.from_numpy(noisy.astype(np.int64)), _finish_meta(meta, y, noisy))


def _reject_options(options: dict[str, Any], allowed: tuple[str, ...]) -> None:
    """Raise ``ValueError`` for options a noise type does not take (catches typos)."""
    extra = sorted(set(options) - set(allowed))
    if extra:
        raise ValueError(f"unexpected options {extra}; this noise type accepts {list(allowed)}")


def _finish_meta(meta: dict[str, Any], clean: np.ndarray, noisy: np.ndarray) -> dict[str, Any]:
    """Add the measured rate and transition matrix."""
    c = meta["num_classes"]
    meta["num_samples"] = int(len(clean))
    meta["actual_noise_rate"] = noise_rate(clean, noisy)
    meta["transition_matrix"] = np.round(transition_matrix(clean, noisy, c), 6).tolist()
    return meta


# --------------------------------------------------------------------------------------------------
# Files
# --------------------------------------------------------------------------------------------------

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
        if parent in _DATASET_ALIASES:
            meta["dataset"] = _DATASET_ALIASES[parent]
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
