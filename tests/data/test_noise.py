"""Noise generators: rates over seeds, exact class maps, determinism, bit-exact reproduction of the
shipped DivideMix/PLReMix files, feature-dependent noise and bad input."""

from __future__ import annotations

import ast
import random
from pathlib import Path

import numpy as np
import pytest
import torch

from lnl.data._classes import CIFAR100_FINE_TO_COARSE
from lnl.data.noise import NOISE_TYPES, make_noise
from lnl.data.noise_files import load_noise_file
from lnl.data.noise_maps import asym_map

Y10 = np.repeat(np.arange(10), 500)  # 5,000 balanced CIFAR-10-like labels
Y100 = np.repeat(np.arange(100), 50)
CIFAR10_MAP = {0: 0, 1: 1, 2: 0, 3: 5, 4: 7, 5: 3, 6: 6, 7: 7, 8: 8, 9: 1}


@pytest.mark.parametrize("rate", [0.2, 0.5, 0.8])
def test_sym_rate_includes_the_true_class(rate):
    rates = [
        make_noise(Y10, "sym", rate, num_classes=10, seed=s).meta["actual_noise_rate"]
        for s in range(5)
    ]
    assert np.mean(rates) == pytest.approx(rate * 9 / 10, abs=0.01)
    assert max(rates) - min(rates) < 0.04


@pytest.mark.parametrize("rate", [0.0, 0.3, 1.0])
def test_sym_flip_always_changes_exactly_int_rate_n(rate):
    out = make_noise(Y10, "sym_flip", rate, num_classes=10, seed=1)
    assert int((out.labels.numpy() != Y10).sum()) == int(rate * len(Y10))
    assert out.meta["actual_noise_rate"] == pytest.approx(int(rate * 5000) / 5000)


def test_sym_flip_is_uniform_over_other_classes():
    y = np.repeat(np.arange(10), 5000)
    out = make_noise(y, "sym_flip", 1.0, num_classes=10, seed=0).meta["transition_matrix"]
    t = np.array(out)
    assert np.allclose(np.diag(t), 0) and np.allclose(t[~np.eye(10, dtype=bool)], 1 / 9, atol=0.02)


def test_cifar10_asym_map_exactly():
    assert asym_map("cifar10", 10).tolist() == [CIFAR10_MAP[c] for c in range(10)]
    out = make_noise(Y10, "asym", 0.4, num_classes=10, seed=7, dataset="cifar10").labels.numpy()
    changed = out != Y10
    assert all(out[i] == CIFAR10_MAP[Y10[i]] for i in np.flatnonzero(changed))
    assert not changed[np.isin(Y10, [0, 1, 6, 7, 8])].any()
    for c in (2, 3, 4, 5, 9):  # about 40 % of each flipping class moves
        assert np.mean(changed[Y10 == c]) == pytest.approx(0.4, abs=0.05)
    assert np.mean(changed) == pytest.approx(0.2, abs=0.02)


def test_cifar100_asym_blocks_and_superclasses():
    blocks = asym_map("cifar100", 100)
    assert blocks[:10].tolist() == [1, 2, 3, 4, 0, 6, 7, 8, 9, 5]
    sup = asym_map("cifar100", 100, superclass=True)
    coarse = np.asarray(CIFAR100_FINE_TO_COARSE)
    assert np.array_equal(coarse[sup], coarse) and sorted(sup.tolist()) == list(range(100))
    assert (sup != np.arange(100)).all()
    for k in range(20):  # each superclass is one 5-cycle
        c, seen = int(np.flatnonzero(coarse == k)[0]), set()
        for _ in range(5):
            seen.add(c)
            c = int(sup[c])
        assert c == int(np.flatnonzero(coarse == k)[0]) and len(seen) == 5
    for noise, m in (("asym", blocks), ("asym_superclass", sup)):
        out = make_noise(Y100, noise, 0.4, num_classes=100, seed=2).labels.numpy()
        changed = out != Y100
        assert np.array_equal(out[changed], m[Y100[changed]])
        assert np.mean(changed) == pytest.approx(0.4, abs=0.03)


def test_tiny_imagenet_pair_flip_and_inferred_dataset():
    y = np.repeat(np.arange(200), 20)
    out = make_noise(y, "asym", 0.45, num_classes=200, seed=0)
    changed = out.labels.numpy() != y
    assert np.array_equal(out.labels.numpy()[changed], (y[changed] + 1) % 200)
    assert out.meta["dataset"] == "tiny_imagenet"
    assert out.meta["actual_noise_rate"] == pytest.approx(0.45, abs=0.02)


@pytest.mark.parametrize("noise", ["sym", "sym_flip", "asym", "asym_superclass", "idn"])
def test_determinism_per_seed_and_global_rng_untouched(noise):
    feats = np.random.default_rng(0).normal(size=(len(Y100), 16))
    kw = {"features": feats} if noise == "idn" else {}
    state = (random.getstate(), np.random.get_state()[1].copy(), torch.get_rng_state())
    a = make_noise(Y100, noise, 0.5, num_classes=100, seed=3, **kw)
    b = make_noise(torch.as_tensor(Y100), noise, 0.5, num_classes=100, seed=3, **kw)
    c = make_noise(Y100, noise, 0.5, num_classes=100, seed=4, **kw)
    assert torch.equal(a.labels, b.labels) and not torch.equal(a.labels, c.labels)
    assert random.getstate() == state[0] and np.array_equal(np.random.get_state()[1], state[1])
    assert torch.equal(torch.get_rng_state(), state[2])
    assert a.labels.dtype == torch.int64 and a.meta["seed"] == 3 and a.meta["type"] == noise
    t = np.array(a.meta["transition_matrix"])
    assert t.shape == (100, 100) and np.allclose(t.sum(1), 1)
    assert np.mean(np.diag(t)) == pytest.approx(1 - a.meta["actual_noise_rate"], abs=1e-6)


def test_bad_input_raises_value_error():
    with pytest.raises(ValueError, match="unknown noise type 'uniform'.*sym, sym_flip"):
        make_noise(Y10, "uniform", 0.2, num_classes=10, seed=0)
    for rate in (-0.1, 1.5, "high"):
        with pytest.raises(ValueError, match="rate must be"):
            make_noise(Y10, "sym", rate, num_classes=10, seed=0)
    with pytest.raises(ValueError, match=r"out of range: maximum 10 >= num_classes=10"):
        make_noise(np.r_[Y10, 10], "sym", 0.2, num_classes=10, seed=0)
    with pytest.raises(ValueError, match="out of range: minimum -1"):
        make_noise(np.r_[Y10, -1], "sym", 0.2, num_classes=10, seed=0)
    with pytest.raises(ValueError, match="must be 1-D"):
        make_noise(Y10.reshape(50, 100), "sym", 0.2, num_classes=10, seed=0)
    with pytest.raises(ValueError, match="must be integers"):
        make_noise(Y10 + 0.5, "sym", 0.2, num_classes=10, seed=0)
    with pytest.raises(ValueError, match="num_classes must be an int >= 2"):
        make_noise(Y10 * 0, "sym", 0.2, num_classes=1, seed=0)
    with pytest.raises(ValueError, match="no asym map for dataset 'svhn'"):
        make_noise(Y10, "asym", 0.2, num_classes=10, seed=0, dataset="svhn")
    with pytest.raises(ValueError, match="CIFAR-100 only"):
        make_noise(Y10, "asym_superclass", 0.2, num_classes=10, seed=0)
    with pytest.raises(ValueError, match="unexpected options \\['pmd_type'\\]"):
        make_noise(Y10, "sym", 0.2, num_classes=10, seed=0, pmd_type=2)
    with pytest.raises(ValueError, match="needs probs"):
        make_noise(Y10, "pmd", 0.35, num_classes=10, seed=0)
    with pytest.raises(ValueError, match="probs has 3 rows"):
        make_noise(Y10, "pmd", 0.35, num_classes=10, seed=0, probs=np.ones((3, 10)) / 10)
    with pytest.raises(ValueError, match="needs features"):
        make_noise(Y10, "idn", 0.2, num_classes=10, seed=0)


def test_noise_types_are_all_covered():
    assert set(NOISE_TYPES) == {
        "sym",
        "sym_flip",
        "asym",
        "asym_superclass",
        "pmd",
        "pmd+U",
        "pmd+A",
        "idn",
    }


# --- bit-exact reproduction of the shipped files
# ----------------------------------------------------


def _shipped(noise_dir, dataset):
    return sorted((noise_dir / "dividemix_json" / dataset).glob("*.json"))


@pytest.mark.parametrize(
    "dataset,num_classes", [("cifar10", 10), ("cifar100", 100), ("tinyimagenet", 200)]
)
def test_seed_123_reproduces_the_shipped_dividemix_files(
    noise_dir, clean_labels, dataset, num_classes
):
    reproduced = []
    for path in _shipped(noise_dir, dataset):
        shipped = load_noise_file(path, num_classes=num_classes)
        kind, rate = shipped.meta["type"], shipped.meta["rate"]
        if dataset == "cifar100" and kind == "asym":
            continue  # drawn with an unseeded RandomState by PLReMix: not reproducible
        seed = 0 if (dataset == "tinyimagenet" and kind == "asym") else 123
        ours = make_noise(
            clean_labels[dataset], kind, rate, num_classes=num_classes, seed=seed, dataset=dataset
        )
        if torch.equal(ours.labels, shipped.labels):
            reproduced.append(path.name)
    expected = {"cifar10": 5, "cifar100": 4, "tinyimagenet": 6}[dataset]
    assert len(reproduced) == expected, reproduced  # tinyimagenet 0.80 was made differently


# --- PMD, hybrids, IDN ----------------------------------------------------------------------------


def _probs(n=4000, c=10, seed=0):
    """Synthetic classifier probabilities, confident and mostly right."""
    rng = np.random.default_rng(seed)
    y = rng.integers(0, c, n)
    logits = rng.normal(size=(n, c)) + 3.0 * np.eye(c)[y]
    p = np.exp(logits)
    return y, p / p.sum(1, keepdims=True)


@pytest.mark.parametrize("pmd_type", [1, 2, 3])
def test_pmd_hits_the_requested_rate_and_flips_to_the_second_class(pmd_type):
    y, p = _probs()
    out = make_noise(y, "pmd", 0.35, num_classes=10, seed=0, probs=p, pmd_type=pmd_type)
    assert out.meta["expected_noise_rate"] == pytest.approx(0.35, abs=1e-6)
    assert out.meta["actual_noise_rate"] == pytest.approx(0.35, abs=0.025)
    top2 = np.argsort(-p, 1)[:, :2]
    assert np.all((out.labels.numpy() == top2[:, 0]) | (out.labels.numpy() == top2[:, 1]))


def test_pmd_fixed_factor_follows_the_plc_formula():
    y, p = _probs(n=20000)
    out = make_noise(y, "pmd", 0.0, num_classes=10, seed=1, probs=p, pmd_factor=1.43)
    srt = np.sort(p, 1)
    keep = (0.5 + 0.5 * (srt[:, -1] - srt[:, -2]) ** 2) / 1.43  # type I: max(1 - f, 1/2) / factor
    top1 = p.argmax(1)
    assert np.mean(out.labels.numpy() == top1) == pytest.approx(keep.mean(), abs=0.01)
    assert out.meta["pmd_factor"] == 1.43


def test_pmd_label_anchor_and_unreachable_rate():
    y, p = _probs()
    out = make_noise(y, "pmd", 0.3, num_classes=10, seed=0, probs=p, pmd_anchor="label")
    masked = p.copy()
    masked[np.arange(len(y)), y] = -1
    second = masked.argmax(1)
    lab = out.labels.numpy()
    assert np.all((lab == y) | (lab == second))
    with pytest.raises(ValueError, match="cannot reach noise rate 0.99"):
        make_noise(y, "pmd", 0.99, num_classes=10, seed=0, probs=p)


@pytest.mark.parametrize("kind", ["U", "A"])
def test_pmd_hybrids_overlay_on_the_pmd_labels(kind):
    y, p = _probs(n=6000)
    base = make_noise(y, "pmd", 0.35, num_classes=10, seed=5, probs=p).labels.numpy()
    out = make_noise(y, f"pmd+{kind}", 0.3, num_classes=10, seed=5, probs=p, dataset="cifar10")
    lab = out.labels.numpy()
    changed = lab != base
    if kind == "U":
        assert np.mean(changed) == pytest.approx(0.3, abs=0.02)  # replacement is never the same
    else:
        m = asym_map("cifar10", 10)
        assert np.array_equal(lab[changed], m[base[changed]])
        movable = np.isin(base, [2, 3, 4, 5, 9])
        assert np.mean(changed[movable]) == pytest.approx(0.3, abs=0.03)
    assert out.meta["pmd_noise_rate"] == pytest.approx(np.mean(base != y))
    assert out.meta["pmd_level"] == 0.35 and out.meta["rate"] == 0.3


def test_idn_rate_and_range():
    rng = np.random.default_rng(0)
    y = np.repeat(np.arange(10), 300)
    feats = rng.normal(size=(len(y), 32))
    out = make_noise(y, "idn", 0.4, num_classes=10, seed=0, features=feats)
    assert out.meta["actual_noise_rate"] == pytest.approx(0.4, abs=0.03)
    assert int(out.labels.min()) >= 0 and int(out.labels.max()) <= 9
    zero = make_noise(y, "idn", 0.0, num_classes=10, seed=0, features=feats)
    assert torch.equal(zero.labels, torch.as_tensor(y))
    # Instance dependence: copies of one image flip mostly to the same class (x W_y is peaked),
    # unlike symmetric noise, where each of the 9 other classes gets about 1/9.
    copies = make_noise(
        np.full(500, 3),
        "idn",
        0.5,
        num_classes=10,
        seed=0,
        features=np.repeat(feats[:1], 500, axis=0),
    ).labels.numpy()
    flipped = copies[copies != 3]
    assert len(flipped) > 150 and np.bincount(flipped).max() / len(flipped) > 0.5


def _imported_modules(path: Path) -> set[str]:
    """Every module a file imports, at the top or inside a function."""
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            found |= {alias.name for alias in node.names}
        elif isinstance(node, ast.ImportFrom):
            found |= {node.module} | {f"{node.module}.{alias.name}" for alias in node.names}
    return found


@pytest.mark.parametrize("helper", ["noise_models", "noise_files", "noise_checks", "noise_maps"])
def test_the_noise_helpers_do_not_import_the_generator_module(helper):
    """``lnl.data.noise`` imports its helpers, never the other way round (no import loop)."""
    path = Path(__file__).parents[2] / "lnl" / "data" / f"{helper}.py"
    assert "lnl.data.noise" not in _imported_modules(path)
