"""Class maps of the asymmetric noise types, their transition matrices and the originals' per-sample
draw from such a matrix; used by :mod:`lnl.data.noise` (``asym``) and :mod:`lnl.data.noise_models`
(PLC's ``pmd+A`` overlay)."""

from __future__ import annotations

import numpy as np

from lnl.data._classes import CIFAR100_FINE_TO_COARSE

#: Dataset names (and the folder names of the shipped noise files) to the name of their class map.
DATASET_ALIASES = {
    "cifar10": "cifar10",
    "cifar10n": "cifar10",
    "cifar100": "cifar100",
    "cifar100n": "cifar100",
    "tiny_imagenet": "tiny_imagenet",
    "tinyimagenet": "tiny_imagenet",
    "tiny-imagenet": "tiny_imagenet",
}
_CLASSES_TO_DATASET = {10: "cifar10", 100: "cifar100", 200: "tiny_imagenet"}

#: DivideMix's CIFAR-10 map; classes not listed keep their label.
CIFAR10_ASYM_MAP = {9: 1, 2: 0, 4: 7, 3: 5, 5: 3}


def resolve_dataset(dataset: str | None, num_classes: int) -> str | None:
    """Canonical dataset name for class maps; inferred from ``num_classes`` (10/100/200) if None."""
    if dataset is None:
        return _CLASSES_TO_DATASET.get(num_classes)
    return DATASET_ALIASES.get(dataset.lower(), dataset.lower())


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


def map_matrix(mapping: np.ndarray, rate: float) -> np.ndarray:
    """Transition matrix ``(1 - rate) I + rate M`` of a class map (identity where ``m[c] == c``)."""
    c = len(mapping)
    t = np.zeros((c, c))
    t[np.arange(c), np.arange(c)] = 1.0 - rate
    t[np.arange(c), mapping] += rate
    return t


def per_sample_multinomial(y: np.ndarray, matrix: np.ndarray, seed: int) -> np.ndarray:
    """Draw ``RandomState(seed).multinomial(1, matrix[y_i])`` for each sample in order (originals'
    ``multiclass_noisify``); a Python loop, since vectorising would change the random stream."""
    rs = np.random.RandomState(seed)
    out = np.empty_like(y)
    rows = {c: matrix[c] for c in np.unique(y)}
    for i, c in enumerate(y):
        out[i] = int(np.argmax(rs.multinomial(1, rows[c])))
    return out
