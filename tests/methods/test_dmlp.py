"""DMLP (methods/dmlp): the solver, the meta gradient, the simplex output, the original's bugs and their
fixes, the file formats, exact resume, and the digits integration check.

Features: synthetic Gaussian class clusters for the format tests; for digits, ``--feature_file pixels``
(grey-level pixels pooled back to the native 8x8 = 64-d, standardised; a fixed, label-free encoder).
"""

from __future__ import annotations

import json
from types import SimpleNamespace

import numpy as np
import pytest
import torch

from lnl.data.noise_files import load_noise_file
from lnl.engine import read_jsonl
from methods.dmlp import DMLP
from methods.dmlp import dmlp_lib as L

DIGITS = [
    "--dataset",
    "digits",
    "--feature_file",
    "pixels",
    "--r",
    "0.4",
    "--meta_size",
    "100",
    "--batch",
    "200",
    "--batch_fc",
    "64",
]


def _run(out, *extra):
    args = DMLP.get_args_parser().parse_args(
        ["--out", str(out), "--device", "cpu", "--no-tensorboard", *extra]
    )
    return DMLP.main(args)


def _lib_args(**kw):
    base = dict(
        num_classes=4,
        lr=0.01,
        weight_decay=3e-4,
        fix_solver=False,
        ridge=1e-6,
        fix_softmax=False,
        batch_fc=16,
        weight_prior=2200.0,
        weight_conf=0.4,
        lr_fc=0.006,
        lr_fc_decay_epoch=3,
        epochs=100,
        epoch_T=20,
        fix_exchange=False,
        fix_short_batches=False,
    )
    return SimpleNamespace(**{**base, **kw})


# -------------------------------------------------------------------------------------------------- units


def test_closed_form_matches_lstsq():
    g = torch.Generator().manual_seed(0)
    x = torch.randn(300, 20, generator=g, dtype=torch.float64)
    y = torch.randn(300, 5, generator=g, dtype=torch.float64)
    ref = torch.linalg.lstsq(x, y).solution
    torch.testing.assert_close(L.closed_form(L.batch_solver(x), y), ref, rtol=1e-9, atol=1e-9)
    fixed = L.closed_form(L.batch_solver(x, fix_solver=True, ridge=1e-12), y)
    torch.testing.assert_close(fixed, ref, rtol=1e-6, atol=1e-8)
    x32, y32 = x.float(), y.float()  # the original's fp32 path
    torch.testing.assert_close(
        L.closed_form(L.batch_solver(x32), y32), ref.float(), rtol=1e-3, atol=1e-4
    )


def test_meta_step_gradient_matches_finite_differences():
    g = torch.Generator().manual_seed(1)
    n, m, d, c = 60, 30, 8, 4
    x, xv = (
        torch.randn(n, d, generator=g, dtype=torch.float64),
        torch.randn(m, d, generator=g, dtype=torch.float64),
    )
    yv = torch.randint(0, c, (m,), generator=g)
    noisy = torch.randint(0, c, (n,), generator=g)
    bounds = L.batch_bounds(n, 25, keep_short=True)  # 25, 25, 10 rows: the last batch is short
    view = L.build_view(x, xv, None, noisy, bounds, _lib_args(num_classes=c))
    view.labels.double()
    view.opt = torch.optim.Adam(
        view.labels.parameters(), 0.01, betas=(0.5, 0.999), weight_decay=3e-4
    )
    view.solvers = [L.batch_solver(x[s:e]) for s, e in bounds]
    y0 = view.labels.y.detach().clone()
    s, e = bounds[1]
    L.ipc_step(view, 1, s, e, yv)
    grad = view.labels.y.grad.clone()

    def loss(yb):  # the original's formula, recomputed from scratch
        xb = x[s:e]
        w = torch.inverse(xb.T @ xb) @ xb.T @ yb
        return float(L.meta_loss(w, xv, yv, xb))

    fd = torch.zeros(e - s, c, dtype=torch.float64)
    for i in range(e - s):
        for k in range(c):
            dy = torch.zeros(e - s, c, dtype=torch.float64)
            dy[i, k] = 1e-6
            fd[i, k] = (loss(y0[s:e] + dy) - loss(y0[s:e] - dy)) / 2e-6
    torch.testing.assert_close(grad[s:e], fd, rtol=1e-5, atol=1e-6)
    assert grad[:s].abs().max() == 0 and grad[e:].abs().max() == 0
    # B.7.6: Adam's weight decay also moves rows of the other batches (first step: by lr on the one-hot)
    moved = y0[:s] - view.labels.y.detach()[:s]
    torch.testing.assert_close(
        moved.sum(1), torch.full((s,), 0.01, dtype=torch.float64), rtol=1e-3, atol=0
    )


def test_batches_floor_as_the_original_unless_fix_short_batches():
    assert L.batch_bounds(230, 70) == [
        (0, 70),
        (70, 140),
        (140, 210),
    ]  # iteration = train_num // batchsize
    assert L.batch_bounds(230, 70, keep_short=True)[-1] == (210, 230)
    assert L.eac_bounds(70, 30) == [
        (0, 30),
        (30, 60),
    ]  # iteration_fc = batchsize // batchsize_fc: never empty
    assert L.eac_bounds(70, 30, keep_short=True)[-1] == (60, 70)
    args = DMLP.get_args_parser().parse_args(["--batch", "300", "--batch_fc", "50"])
    with pytest.raises(ValueError, match="--batch 300 exceeds the 230 noisy-set rows"):
        DMLP.check_batches(args, 230)
    args.batch, args.batch_fc = 100, 120
    with pytest.raises(ValueError, match="--batch_fc 120 exceeds --batch 100"):
        DMLP.check_batches(args, 230)
    args.fix_short_batches = True
    assert DMLP.check_batches(args, 230)[-1] == (200, 230)


def test_simplex_projection():
    y = torch.tensor([[0.5, 0.5, 0.5], [2.0, 0.0, 0.0], [0.9, -0.3, 0.4], [0.2, 0.3, 0.5]])
    p = L.project_simplex(y)
    torch.testing.assert_close(p[0], torch.full((3,), 1 / 3))
    torch.testing.assert_close(p[1], torch.tensor([1.0, 0.0, 0.0]))
    torch.testing.assert_close(p[2], torch.tensor([0.75, 0.0, 0.25]))
    torch.testing.assert_close(p[3], y[3])  # already on the simplex
    r = torch.randn(500, 10, generator=torch.Generator().manual_seed(0)) * 3
    q = L.project_simplex(r)
    assert q.min() >= 0 and torch.allclose(q.sum(1), torch.ones(500), atol=1e-5)
    assert torch.equal(q.argmax(1), r.argmax(1))
    # the projection is the closest simplex point: no random simplex point is closer
    cand = torch.distributions.Dirichlet(torch.ones(10)).sample((200,))
    assert (
        (r[:, None] - cand[None]).norm(dim=-1) >= (r - q).norm(dim=1, keepdim=True) - 1e-5
    ).all()


def test_exchange_guard_never_fires_in_the_original():
    assert not any(L.exchange_due(i, 100, 20, fix=False) for i in range(100))  # B.7.1
    assert [i for i in range(21) if L.exchange_due(i, 21, 20, fix=False)] == [
        20
    ]  # possible elsewhere
    assert [i for i in range(100) if L.exchange_due(i, 100, 20, fix=True)] == [20, 40, 60, 80]


def test_eac_loss_stacks_softmaxes_like_the_original():
    g = torch.Generator().manual_seed(0)
    probs = torch.softmax(torch.randn(16, 4, generator=g), 1)
    t = torch.randint(0, 4, (16,), generator=g)
    ce = -torch.log_softmax(probs, 1)[torch.arange(16), t].mean()  # CE on probabilities
    p = torch.softmax(probs, 1)
    mean = torch.softmax(p, 1).mean(0)  # a third softmax
    prior = torch.full((4,), 0.25)
    want = ce + 2200 * (prior * (prior / mean).log()).sum() + 0.4 * (p * p.log()).sum(1).mean()
    torch.testing.assert_close(L.eac_loss(probs, t, 2200, 0.4), want)
    logits = torch.randn(16, 4, generator=g)
    q = torch.softmax(logits, 1)
    fixed = (
        torch.nn.functional.cross_entropy(logits, t)
        + 2 * (prior * (prior / q.mean(0)).log()).sum()
        + 0.4 * (q * q.log()).sum(1).mean()
    )
    torch.testing.assert_close(L.eac_loss(logits, t, 2, 0.4, fix_softmax=True), fixed)
    assert [L.eac_lr(e, 0.006, 3) for e in (0, 3, 4, 99)] == pytest.approx(
        [0.006, 0.006, 0.0006, 0.0006]
    )


def test_meta_split_is_seeded_and_balanced_on_request():
    clean = torch.arange(1000) % 10
    tr, me = L.split_meta(1000, 100, 7, clean)
    perm = torch.randperm(1000, generator=torch.Generator().manual_seed(7))
    assert torch.equal(tr, perm[:900]) and torch.equal(me, perm[900:])
    tr, me = L.split_meta(1000, 100, 7, clean, balanced=True, num_classes=10)
    assert torch.bincount(clean[me], minlength=10).tolist() == [10] * 10
    assert sorted(torch.cat([tr, me]).tolist()) == list(range(1000))


# ---------------------------------------------------------------------------------------- entry point


def _clusters(n, d=16, c=4, seed=0):
    g = np.random.default_rng(seed)
    y = g.integers(0, c, n)
    centres = g.normal(0, 3, (c, d))
    return (centres[y] + g.normal(0, 1, (n, d))).astype(np.float32), y.astype(np.int64)


def test_original_folder_layout_runs_and_writes_every_format(tmp_path):
    """The original's files (``python DMLP.py`` reads ./labels_cifar10/symmetric20/), scaled down."""
    folder = tmp_path / "labels"
    folder.mkdir()
    x, y = _clusters(800)
    x, xt, y, yt = x[:600], x[600:], y[:600], y[600:]
    noisy = np.where(np.random.default_rng(2).random(600) < 0.3, (y + 1) % 4, y)
    for name, arr in {
        "trainfeatures": x,
        "testfeatures": xt,
        "trainlabels": noisy,
        "correctlabels": y,
        "testlabels": yt,
    }.items():
        np.save(folder / f"{name}.npy", arr)
    out = tmp_path / "run"
    res = _run(
        out,
        "--dataset",
        "synthetic",
        "--feature_file",
        str(folder),
        "--meta_size",
        "100",
        "--batch",
        "100",
        "--batch_fc",
        "50",
        "--epochs",
        "10",
    )
    assert res["noisy_acc"] == pytest.approx(float((noisy == y).mean()))
    hard = load_noise_file(out / "purified_labels.json").labels
    z = np.load(out / "purified_labels.npz")
    assert torch.equal(load_noise_file(out / "purified_labels.npz").labels, hard)
    soft = z["soft_labels"]
    assert soft.shape == (600, 4) and soft.min() >= 0 and np.allclose(soft.sum(1), 1, atol=1e-5)
    assert np.array_equal(soft.argmax(1), hard.numpy())
    meta_idx = z["meta_idx"]
    assert np.array_equal(hard.numpy()[meta_idx], y[meta_idx])  # meta rows keep their clean labels
    rep = json.loads((out / "report.json").read_text())
    assert rep["purified_acc"] == pytest.approx(float((hard.numpy() == y).mean()))
    assert len(rep["per_class_purified_acc"]) == 4 and rep["meta"]["fixes"] == []
    assert res["test_acc"] > 0.9  # separable clusters: the heads' ensemble


def test_extract_features_prefix_with_a_noise_file(tmp_path):
    x, y = _clusters(600)
    x, xt, y, yt = x[:500], x[500:], y[:500], y[500:]
    for split, (f, lab) in {"train": (x, y), "test": (xt, yt)}.items():
        np.save(
            tmp_path / f"syn_{split}_features.npy", f.astype(np.float16)
        )  # extract_features.py format
        np.save(tmp_path / f"syn_{split}_labels.npy", lab)
    noisy = (y + (np.arange(500) % 5 == 0)) % 4
    (tmp_path / "0.2_sym.json").write_text(json.dumps(noisy.tolist()))
    res = _run(
        tmp_path / "run",
        "--dataset",
        "syn",
        "--feature_file",
        str(tmp_path / "syn_train"),
        "--noise_file",
        str(tmp_path / "0.2_sym.json"),
        "--meta_size",
        "50",
        "--balanced_meta",
        "--batch",
        "150",
        "--batch_fc",
        "50",
        "--epochs",
        "1",
        "--fix_all",
    )
    assert res["noise"] == "0.2_sym" and res["test_acc"] is not None
    assert res["fixes"] == ["fix_exchange", "fix_views", "fix_solver", "fix_short_batches"]
    assert res["noisy_acc"] == pytest.approx(0.8)


def _state(out):
    ck = torch.load(out / "last.pth", weights_only=False)
    return ck["models"], ck["optimizers"]


def test_stop_and_resume_is_exact(tmp_path):
    flags = [*DIGITS, "--epochs", "4", "--epoch_T", "2", "--fix_exchange"]  # an exchange at epoch 2
    _run(tmp_path / "full", *flags)
    _run(tmp_path / "part", *DIGITS, "--epochs", "2", "--epoch_T", "2", "--fix_exchange")
    _run(tmp_path / "part", *flags)  # --resume auto picks up last.pth after epoch 1
    (ma, oa), (mb, ob) = _state(tmp_path / "full"), _state(tmp_path / "part")
    for name in ma:
        for key in ma[name]:
            assert torch.equal(ma[name][key], mb[name][key]), (name, key)
    assert ob["labels_v1"]["state"][0]["step"] == oa["labels_v1"]["state"][0]["step"]
    a, b = (np.load(tmp_path / r / "purified_labels.npz")["soft_labels"] for r in ("full", "part"))
    assert np.array_equal(a, b)
    assert [r["exchanged"] for r in read_jsonl(tmp_path / "part" / "eval.jsonl")] == [
        False,
        False,
        True,
        False,
    ]


def test_unknown_feature_file_is_a_clear_error(tmp_path):
    with pytest.raises(FileNotFoundError, match="extract_features.py"):
        _run(tmp_path, "--feature_file", str(tmp_path / "nothing"), "--epochs", "1")


def test_subset_keeps_the_first_rows_and_the_full_runs_noisy_labels(tmp_path):
    args = DMLP.get_args_parser().parse_args([*DIGITS])
    fs = L.load_features(args)
    noisy, _ = L.noisy_labels(args, fs, 10)
    part, cut = L.first_rows(fs, noisy, 300, 10, 100)  # noise made over the whole split, then cut
    assert torch.equal(part.train, fs.train[:300]) and torch.equal(cut, noisy[:300])
    assert torch.equal(part.clean, fs.clean[:300]) and torch.equal(
        part.test_labels, fs.test_labels[:300]
    )
    assert part.source["subset"] == 300 and len(fs.train) == 1437  # the full set is left as it was
    res = _run(tmp_path / "run", *DIGITS, "--subset", "300", "--epochs", "2")
    assert res["subset"] == 300 and res["test_acc"] is not None
    z = np.load(tmp_path / "run" / "purified_labels.npz")
    assert z["labels"].shape == (300,) and json.loads(str(z["meta"]))["subset"] == 300
    assert json.loads((tmp_path / "run" / "report.json").read_text())["meta"]["subset"] == 300
    assert max(z["meta_idx"].max(), z["train_idx"].max()) < 300 and len(z["meta_idx"]) == 100
    saved = load_noise_file(tmp_path / "run" / "noisy_labels.npz")
    assert torch.equal(saved.labels, noisy[:300]) and saved.meta["subset"] == 300


def test_subset_too_small_is_a_clear_error_and_its_labels_do_not_fit_a_full_run(tmp_path):
    from lnl.engine.data import noisy_labels_for
    from lnl.engine.settings import NoiseSettings

    with pytest.raises(ValueError, match="--subset 5 keeps fewer rows than there are classes"):
        _run(tmp_path / "a", *DIGITS, "--subset", "5")
    with pytest.raises(ValueError, match="--subset 80 is too small for --meta_size 100"):
        _run(tmp_path / "a", *DIGITS, "--subset", "80")
    _run(tmp_path / "b", *DIGITS, "--subset", "250", "--epochs", "1", "--batch", "100")
    full = NoiseSettings(file=str(tmp_path / "b" / "purified_labels.json"))
    with pytest.raises(
        ValueError, match="has 250 labels but the digits training split has 1437 images"
    ):
        noisy_labels_for(
            full, torch.zeros(1437, dtype=torch.long), 10, dataset="digits"
        )  # DivideMix/CE's --noise_file check


# ---------------------------------------------------------------------------------------- integration


def _ce(out, noise_file, epochs=4):
    from methods.standard import train

    before = torch.get_num_threads()
    torch.set_num_threads(1)  # tiny CNN on a shared 2-core machine: one thread is much faster
    try:
        args = train.get_args_parser().parse_args(
            [
                "--out",
                str(out),
                "--device",
                "cpu",
                "--no-tensorboard",
                "--dataset",
                "digits",
                "--noise_file",
                str(noise_file),
                "--num_epochs",
                str(epochs),
                "--batch_size",
                "64",
                "--lr",
                "0.05",
                "--seed",
                "0",
            ]
        )
        return train.main(args)
    finally:
        torch.set_num_threads(before)


@pytest.mark.parametrize("module", ["methods.dividemix.Train_cifar", "methods.plremix.train"])
def test_co_divide_methods_train_on_dmlp_purified_labels(tmp_path, monkeypatch, module):
    """The composition the DMLP paper reports: DivideMix and PLReMix take DMLP's JSON as --noise_file
    (here DMLP on the first 300 digits, then a 2-epoch run on those 300 images)."""
    import importlib

    from tests.methods.codivide_helpers import run_main, tiny_digits

    _run(tmp_path / "dmlp", *DIGITS, "--subset", "300", "--epochs", "1")
    purified = tmp_path / "dmlp" / "purified_labels.json"
    tiny_digits(monkeypatch, n_train=300)
    res = run_main(
        importlib.import_module(module),
        tmp_path / "run",
        "--dataset",
        "digits",
        "--noise_file",
        str(purified),
        "--num_epochs",
        "1",
        "--warm_up",
        "1",
        "--batch_size",
        "32",
    )
    trained_on = load_noise_file(tmp_path / "run" / "noisy_labels.npz").labels
    assert torch.equal(trained_on, load_noise_file(purified).labels) and 0 <= res["test_acc"] <= 1
    assert res["noise"] == "purified_labels"


@pytest.mark.slow
def test_digits_purification_and_the_ce_baseline_on_the_purified_labels(tmp_path):
    """digits, 40% symmetric noise: the original (IPC only, the exchange never fires) leaves the noisy
    rows' labels about as they were; --fix_all purifies them by a wide margin, and CE trained on the
    purified labels beats CE on the noisy ones under the same budget."""
    orig = _run(tmp_path / "orig", *DIGITS, "--epochs", "40")
    assert not any(r["exchanged"] for r in read_jsonl(tmp_path / "orig" / "eval.jsonl"))
    fixed = _run(tmp_path / "fixed", *DIGITS, "--epochs", "40", "--fix_all")
    rep = json.loads((tmp_path / "fixed" / "report.json").read_text())
    assert fixed["noisy_acc"] == orig["noisy_acc"] < 0.66
    assert abs(orig["purified_acc"] - orig["noisy_acc"]) < 0.05
    assert rep["purified_acc_noisy_set"] > rep["noisy_acc_noisy_set"] + 0.2  # about 0.63 -> 0.92
    assert min(rep["per_class_purified_acc"]) > max(rep["per_class_noisy_acc"])
    ce_noisy = _ce(tmp_path / "ce_noisy", tmp_path / "fixed" / "noisy_labels.npz")
    ce_pure = _ce(tmp_path / "ce_pure", tmp_path / "fixed" / "purified_labels.json")
    print(
        f"digits 40% sym, 40 epochs: labels {rep['noisy_acc']:.4f} -> original {orig['purified_acc']:.4f}, "
        f"fix_all {rep['purified_acc']:.4f}; CE 4 epochs: noisy {ce_noisy['test_acc']:.4f}, "
        f"purified {ce_pure['test_acc']:.4f}"
    )
    assert ce_pure["test_acc"] > ce_noisy["test_acc"] + 0.05, (
        ce_pure["test_acc"],
        ce_noisy["test_acc"],
    )


def test_defaults_are_the_original_constants_and_the_preset():
    from lnl.presets import get_preset

    args = DMLP.get_args_parser().parse_args([])
    assert (args.dataset, args.feature_file, args.noise_mode, args.r) == (
        "cifar10",
        "./labels_cifar10/symmetric20/",
        "sym",
        0.2,
    )
    preset = get_preset("dmlp", dataset="cifar10", noise_mode="sym", r=0.2)
    assert {k: getattr(args, k) for k in preset.flags} == preset.flags
    assert not any(getattr(args, f) for f in DMLP.ALL_FIXES)
