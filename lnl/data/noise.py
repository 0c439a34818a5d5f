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

Files: :mod:`lnl.data.noise_files` (:class:`NoisyLabels`, :func:`load_noise_file`,
:func:`save_noise_file`); checks: :mod:`lnl.data.noise_checks`; class maps:
:mod:`lnl.data.noise_maps`.
"""

from __future__ import annotations

import random
from typing import Any

import numpy as np
import torch

from lnl.data import noise_models
from lnl.data.noise_checks import check_labels, check_rate, reject_options
from lnl.data.noise_files import NoisyLabels
from lnl.data.noise_maps import asym_map, map_matrix, per_sample_multinomial, resolve_dataset

__all__ = ["NOISE_TYPES", "make_noise", "noise_rate", "transition_matrix"]

NOISE_TYPES = ("sym", "sym_flip", "asym", "asym_superclass", "pmd", "pmd+U", "pmd+A", "idn")
_DEFAULT_ASYM_PROCEDURE = {
    "cifar10": "subset",
    "cifar100": "per_sample",
    "tiny_imagenet": "per_sample",
}


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
        return per_sample_multinomial(y, map_matrix(mapping, rate), seed), procedure
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
        reject_options(options, ())
        noisy = _sym(y, r, int(num_classes), int(seed), noise_type == "sym_flip")
        meta["procedure"] = _PROCEDURES[noise_type]
    elif noise_type in ("asym", "asym_superclass"):
        reject_options(options, ("asym_procedure",))
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
        noisy, extra = noise_models.generate(
            noise_type, y, r, int(num_classes), int(seed), dataset, probs, options
        )
        meta.update(extra)
    return NoisyLabels(torch.from_numpy(noisy.astype(np.int64)), _finish_meta(meta, y, noisy))


def _finish_meta(meta: dict[str, Any], clean: np.ndarray, noisy: np.ndarray) -> dict[str, Any]:
    """Add the measured rate and transition matrix."""
    c = meta["num_classes"]
    meta["num_samples"] = int(len(clean))
    meta["actual_noise_rate"] = noise_rate(clean, noisy)
    meta["transition_matrix"] = np.round(transition_matrix(clean, noisy, c), 6).tolist()
    return meta
