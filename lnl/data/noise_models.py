"""Feature-dependent label noise: PMD (and its hybrids) and IDN. Called through
:func:`lnl.data.noise.make_noise`.

**PMD**, poly-margin diminishing noise (Zhang et al., ICLR 2021, "Learning with Feature-Dependent
Label
Noise: A Progressive Approach"), as its official generator implements it (``pxiangwu/PLC: utils.py,
label_noise`` @ 9a13490, which produced LRA-Diffusion's files). Given a
clean-trained classifier's probabilities η(x), let u = the most probable class, s = the second and
Δ = η_u − η_s. Each label becomes u with probability ``P_u = g(Δ) / factor`` and s otherwise, where

* type I: ``g = max(1 − f, 0.5)`` with ``f = ½ − ½ Δ²`` (so ``g = ½ + ½ Δ²``),
* type II: ``g = 1 − f`` with ``f = 1 − |Δ|³``,
* type III: ``g = 1 − f`` with ``f = 1 − ⅓|Δ|³ − ⅓|Δ|² − ⅓|Δ|``.

Deviations, both documented options: (1) ``pmd_factor=None`` (default) solves for the factor whose
*expected* noise rate against the clean labels equals ``rate`` (the PLC readme tuned it by hand,
e.g. 1.43 for CIFAR-10 type I 35 %); pass ``pmd_factor`` to use a fixed one. ``P_u`` is clipped to
[0, 1] (PLC's ``np.random.binomial`` would fail above 1). (2) ``pmd_anchor="top1"`` (default, the
code) uses the classifier's top class as u even when it differs from the true label; ``"label"``
(the paper's wording) uses the true label y as u and the most probable other class as s.
Draws (``pmd_procedure="plc"``, default): PLC's loop, ``binomial(1, P_u)`` sample by sample from
``np.random.RandomState(seed)`` (PLC seeds the global generator), with ``P_u`` computed in float32 as
PLC's ``label_noise`` does; with PLC's probabilities, seed and factor this gives its labels.
``pmd_procedure="vectorised"`` (the earlier port): one ``np.random.default_rng(seed)`` uniform per
sample. PLC's probabilities come from a network it trains first, so the shipped ``.npy`` files, not a
regeneration, are what reproduce LRA's numbers.

**Hybrids** (LRA ``_U_r`` / ``_A_r`` files): first PMD at ``pmd_level`` (default
0.35), then PLC's overlay (``pxiangwu/PLC: cifar/train.py`` with ``--noise_type uniform|asymmetric``,
``cifar/noise.py: multiclass_noisify``): ``np.random.RandomState(overlay_seed).multinomial(1, P[y_i])``
sample by sample in index order, ``overlay_seed`` = 77 (PLC's ``--seed``), with ``P`` = (1 − rate) on
the diagonal and rate/(C − 1) elsewhere (``pmd+U``: a sample is changed with probability rate, to one
of the C − 1 other classes) or the dataset's asymmetric map with weight ``rate`` (``pmd+A``: CIFAR-10
DivideMix map, CIFAR-100 next-in-block-of-5). Applied to the shipped base file
(:func:`plc_overlay`), this reproduces all six shipped hybrid files bit for bit.
``overlay_procedure="independent"`` (the earlier port) draws the overlay from
``np.random.default_rng([seed, 1])`` instead: one uniform per sample, then a uniform other class.

**IDN**, instance-dependent noise (Xia et al., NeurIPS 2020, "Part-dependent Label Noise", the
``get_instance_noisy_label`` generator most LNL code uses): per-sample flip rates
``q_i ~ TruncNormal(rate, idn_std, [0, 1])``; a random projection ``W_c ~ N(0, 1)^{D x C}`` per
class; ``p_i = q_i · softmax(x_i W_{y_i})`` with the true class masked out, plus ``1 − q_i`` on the
true class; the new label is drawn from ``p_i``. ``features`` are the flattened inputs ``x_i`` (the
original uses the normalised image tensor). ``rate == 0`` returns the labels unchanged (the
truncated normal would not).
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch

from lnl.data.noise_checks import check_rate, reject_options
from lnl.data.noise_maps import asym_map, map_matrix, per_sample_multinomial

PMD_OPTIONS = ("pmd_type", "pmd_factor", "pmd_anchor", "pmd_procedure")


def _as_float_array(x: Any, name: str, shape0: int) -> np.ndarray:
    """Convert probabilities/features to a 2-D float64 array with ``shape0`` rows."""
    if x is None:
        raise ValueError(f"this noise type needs {name}=... ([N, ...] array), got None")
    arr = x.detach().cpu().numpy() if isinstance(x, torch.Tensor) else np.asarray(x)
    arr = arr.reshape(len(arr), -1).astype(np.float64)
    if arr.shape[0] != shape0:
        raise ValueError(f"{name} has {arr.shape[0]} rows but there are {shape0} labels")
    if not np.all(np.isfinite(arr)):
        raise ValueError(f"{name} contains NaN or inf")
    return arr


def pmd_keep_prob(probs: np.ndarray, y: np.ndarray, pmd_type: int, anchor: str):
    """The anchor class u, the flip class s and ``g(Δ)`` of every sample (module docstring).

    Args:
        probs: ``[N, C]`` probabilities.
        y: ``[N]`` clean labels.
        pmd_type: 1, 2 or 3.
        anchor: ``"top1"`` or ``"label"``.

    Returns:
        ``(u, s, g)``, each ``[N]``.
    """
    if anchor == "top1":
        top2 = np.argsort(-probs, axis=1, kind="stable")[:, :2]
        u, s = top2[:, 0], top2[:, 1]
    elif anchor == "label":
        u = y
        masked = probs.copy()
        masked[np.arange(len(y)), y] = -np.inf
        s = masked.argmax(1)
    else:
        raise ValueError(f"pmd_anchor must be 'top1' or 'label', got {anchor!r}")
    rows = np.arange(len(y))
    delta = probs[rows, u] - probs[rows, s]
    if pmd_type == 1:
        g = np.maximum(1.0 - (0.5 - 0.5 * delta**2), 0.5)
    elif pmd_type == 2:
        g = np.abs(delta) ** 3
    elif pmd_type == 3:
        a = np.abs(delta)
        g = (a**3 + a**2 + a) / 3.0
    else:
        raise ValueError(f"pmd_type must be 1, 2 or 3, got {pmd_type!r}")
    return u, s, g


def _expected_rate(y, u, s, g, factor: float) -> float:
    """Expected fraction of noisy labels for a given factor."""
    p_u = np.clip(g / factor, 0.0, 1.0)
    return float(np.mean(p_u * (u != y) + (1.0 - p_u) * (s != y)))


def solve_pmd_factor(y, u, s, g, rate: float) -> float:
    """Find the factor whose expected noise rate equals ``rate`` (bisection on ``log factor``).

    The expected rate grows with the factor whenever u is the true label, which is the regime PMD is
    meant for; the result is checked, and a rate outside the reachable range raises ``ValueError``.
    """
    lo, hi = np.log(1e-3), np.log(1e6)
    r_lo, r_hi = _expected_rate(y, u, s, g, np.exp(lo)), _expected_rate(y, u, s, g, np.exp(hi))
    if not min(r_lo, r_hi) - 1e-9 <= rate <= max(r_lo, r_hi) + 1e-9:
        raise ValueError(
            f"PMD cannot reach noise rate {rate} with these probabilities: reachable range "
            f"[{min(r_lo, r_hi):.4f}, {max(r_lo, r_hi):.4f}]"
        )
    for _ in range(100):
        mid = 0.5 * (lo + hi)
        if (_expected_rate(y, u, s, g, np.exp(mid)) < rate) == (r_lo < r_hi):
            lo = mid
        else:
            hi = mid
    return float(np.exp(0.5 * (lo + hi)))


def pmd(y, rate, num_classes, seed, probs, options) -> tuple[np.ndarray, dict[str, Any]]:
    """PMD noise (module docstring). Returns ``(noisy, meta)``."""
    p = _as_float_array(probs, "probs", len(y))
    if p.shape[1] != num_classes:
        raise ValueError(f"probs has {p.shape[1]} columns, num_classes={num_classes}")
    pmd_type = int(options.get("pmd_type", 1))
    anchor = options.get("pmd_anchor", "top1")
    u, s, g = pmd_keep_prob(p, y, pmd_type, anchor)
    factor = options.get("pmd_factor")
    factor = solve_pmd_factor(y, u, s, g, rate) if factor is None else float(factor)
    if factor <= 0:
        raise ValueError(f"pmd_factor must be > 0, got {factor}")
    procedure = options.get("pmd_procedure", "plc")
    if procedure == "plc":
        keep = plc_binomial_draws(p, u, s, pmd_type, factor, seed)
        how = "np.random.RandomState(seed).binomial(1, P_u) per sample (PLC)"
    elif procedure == "vectorised":
        keep = np.random.default_rng(seed).random(len(y)) < np.clip(g / factor, 0.0, 1.0)
        how = "np.random.default_rng(seed).random(N)"
    else:
        raise ValueError(f"pmd_procedure must be 'plc' or 'vectorised', got {procedure!r}")
    noisy = np.where(keep, u, s)
    meta = {
        "pmd_type": pmd_type,
        "pmd_factor": factor,
        "pmd_anchor": anchor,
        "expected_noise_rate": _expected_rate(y, u, s, g, factor),
        "pmd_procedure": procedure,
        "procedure": f"PLC label_noise: label = u w.p. clip(g(delta)/factor), else s; {how}",
    }
    return noisy, meta


def plc_binomial_draws(
    probs: np.ndarray, u: np.ndarray, s: np.ndarray, pmd_type: int, factor: float, seed: int
) -> np.ndarray:
    """PLC's ``label_noise`` draws (``utils.py``): the keep probability from float32 η_u, η_s as PLC
    computes it per type, then ``binomial(1, level_i / factor)`` per sample in order from
    ``RandomState(seed)`` (clipped to 1, where PLC's would raise). Returns keep-u flags ``[N]``."""
    rows = np.arange(len(u))
    d = probs[rows, u].astype(np.float32) - probs[rows, s].astype(np.float32)
    if pmd_type == 1:
        level = np.maximum(1 - (-(1 / 2) * d**2 + 1 / 2), 0.5)
    elif pmd_type == 2:
        level = 1 - (1 - np.abs(d) ** 3)
    else:
        level = 1 - (1 - (1 / 3) * np.abs(d) ** 3 - (1 / 3) * np.abs(d) ** 2 - (1 / 3) * np.abs(d))
    rs = np.random.RandomState(seed)
    return np.array(
        [rs.binomial(1, min(float(level[i]) / factor, 1.0), 1)[0] for i in rows], dtype=bool
    )


def overlay_matrix(kind: str, rate: float, num_classes: int, dataset: str | None) -> np.ndarray:
    """PLC's transition matrix: ``build_uniform_P`` (``U``) or its asymmetric ``P`` (``A``), in the
    same float operations (the multinomial draws depend on the exact row values)."""
    if kind == "U":
        matrix = rate / (num_classes - 1) * np.ones((num_classes, num_classes))
        np.fill_diagonal(matrix, (1 - rate) * np.ones(num_classes))
        return matrix
    return map_matrix(asym_map(dataset, num_classes), rate)


def plc_overlay(
    base: Any, kind: str, rate: float, num_classes: int, dataset: str | None = None, seed: int = 77
) -> np.ndarray:
    """PLC's uniform (``U``) or asymmetric (``A``) noise on top of ``base`` labels (a PMD file), drawn
    with ``RandomState(seed).multinomial`` per sample in order (``multiclass_noisify``)."""
    base = np.asarray(base, dtype=np.int64)
    if kind not in ("U", "A"):
        raise ValueError(f"overlay kind must be 'U' or 'A', got {kind!r}")
    if rate == 0.0:  # PLC skips the draw at rate 0 (noisify_* return the labels unchanged)
        return base.copy()
    return per_sample_multinomial(base, overlay_matrix(kind, rate, num_classes, dataset), seed)


def _independent_overlay(kind, base, rate, num_classes, seed, mapping):
    rng = np.random.default_rng([seed, 1])
    hit = rng.random(len(base)) < rate
    other = (
        (base + rng.integers(1, num_classes, size=len(base))) % num_classes
        if kind == "U"
        else mapping[base]
    )
    return np.where(hit, other, base)


def hybrid(kind, y, rate, num_classes, seed, dataset, probs, options):
    """``pmd+U`` / ``pmd+A``: PMD at ``pmd_level`` then the overlay at ``rate`` (module docstring)."""
    level = check_rate(options.get("pmd_level", 0.35), "pmd_level")
    procedure = options.get("overlay_procedure", "plc")
    overlay_seed = int(options.get("overlay_seed", 77))
    base, meta = pmd(y, level, num_classes, seed, probs, options)
    if procedure == "plc":
        noisy = plc_overlay(base, kind, rate, num_classes, dataset, overlay_seed)
        how = f"np.random.RandomState({overlay_seed}).multinomial(1, P[y]) per sample (PLC)"
    elif procedure == "independent":
        noisy = _independent_overlay(
            kind,
            base,
            rate,
            num_classes,
            seed,
            asym_map(dataset, num_classes) if kind == "A" else None,
        )
        how = "np.random.default_rng([seed, 1])"
    else:
        raise ValueError(f"overlay_procedure must be 'plc' or 'independent', got {procedure!r}")
    meta.update(
        pmd_level=level,
        pmd_noise_rate=float(np.mean(base != y)),
        overlay=kind,
        overlay_procedure=procedure,
        overlay_changed_fraction=float(np.mean(noisy != base)),
    )
    meta["procedure"] += f"; then w.p. rate per sample ({how}): " + (
        "uniform over the C-1 other classes" if kind == "U" else "the dataset's asym map"
    )
    return noisy, meta


def idn(y, rate, num_classes, seed, features, std) -> tuple[np.ndarray, dict[str, Any]]:
    """Instance-dependent noise (module docstring). Returns ``(noisy, meta)``."""
    from scipy.stats import truncnorm

    x = _as_float_array(features, "features", len(y)).astype(np.float32)
    meta = {
        "idn_std": std,
        "feature_dim": int(x.shape[1]),
        "procedure": "Xia et al. 2020: q~TruncNormal(rate, std, [0,1]); W_c~N(0,1)^{DxC}; "
        "p = q*softmax(x W_y, true masked) + (1-q) on y; np.random.default_rng(seed)",
    }
    if rate == 0.0:
        return y.copy(), meta
    rng = np.random.default_rng(seed)
    q = truncnorm((0.0 - rate) / std, (1.0 - rate) / std, loc=rate, scale=std).rvs(
        len(y), random_state=rng
    )
    noisy = y.copy()
    u = rng.random(len(y))
    for c in range(num_classes):  # one projection per true class, drawn in class order
        w = rng.standard_normal((x.shape[1], num_classes)).astype(np.float32)
        rows = np.flatnonzero(y == c)
        if not len(rows):
            continue
        logits = (x[rows] @ w).astype(np.float64)
        logits[:, c] = -np.inf
        logits -= logits.max(1, keepdims=True)
        p = np.exp(logits)
        p *= (q[rows] / p.sum(1))[:, None]
        p[:, c] = 1.0 - q[rows]
        cdf = np.cumsum(p, axis=1)
        noisy[rows] = np.minimum((cdf < u[rows, None] * cdf[:, -1:]).sum(1), num_classes - 1)
    meta["mean_flip_rate"] = float(q.mean())
    return noisy, meta


def generate(noise_type, y, rate, num_classes, seed, dataset, probs, options):
    """Dispatch for :func:`lnl.data.noise.make_noise`; returns ``(noisy, meta)``."""
    if noise_type == "pmd":
        reject_options(options, PMD_OPTIONS)
        return pmd(y, rate, num_classes, seed, probs, options)
    if noise_type in ("pmd+U", "pmd+A"):
        reject_options(options, PMD_OPTIONS + ("pmd_level", "overlay_procedure", "overlay_seed"))
        return hybrid(noise_type[-1], y, rate, num_classes, seed, dataset, probs, options)
    reject_options(options, ("features", "idn_std"))
    std = float(options.get("idn_std", 0.1))
    if std <= 0:
        raise ValueError(f"idn_std must be > 0, got {std}")
    return idn(y, rate, num_classes, seed, options.get("features"), std)
