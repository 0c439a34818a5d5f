"""IEG: the meta step against a hand-written double backward (and the JVP form against both), label
estimation on a constructed case, the LR schedule, the probe split and noise, the networks, and the
real main() on digits (records, resume in two halves, evaluation mode, IEG vs its baselines)."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
import torch.nn as nn
import torch.nn.functional as F
from torch.func import functional_call

from lnl.data import DatasetNotFoundError
from lnl.engine import read_jsonl
from lnl.models import create_model
from lnl.models.ieg_nets import WideResNet
from methods.ieg import ieg_lib as L
from methods.ieg import main as ieg_main
from methods.ieg.meta import MetaConfig, bn_stats_frozen, meta_double_backward, meta_jvp

DIGITS = [
    "--dataset",
    "digits_uniform_0.8",
    "--network_name",
    "small_cnn",
    "--probe_dataset_hold_ratio",
    "0.07",
    "--ce_factor",
    "1",
    "--consistency_factor",
    "1",
]


# ----------------------------------------------------------------------------------------------
# Meta step


def _hand_double_backward(w, b, m_w, m_b, x, y, g, xp, yp, alpha, mu, eps0, lam0, wd, probe_wd):
    """The look-ahead written out for logits = x Wᵀ + b, differentiated twice by autograd."""
    n, c = x.shape[0], w.shape[0]
    eps = torch.full((n,), eps0, dtype=x.dtype, requires_grad=True)
    lam = torch.full((n,), lam0, dtype=x.dtype, requires_grad=True)
    w, b = w.clone().requires_grad_(True), b.clone().requires_grad_(True)
    onehot = F.one_hot(y, c).to(x.dtype)
    target = lam[:, None] * onehot + (1 - lam[:, None]) * g
    per_example = -(target * F.log_softmax(x @ w.T + b, -1)).sum(-1)
    look = (eps * per_example).sum() + 0.5 * wd * (w.pow(2).sum() + b.pow(2).sum())
    gw, gb = torch.autograd.grad(look, (w, b), create_graph=True)
    w2, b2 = w - alpha * (mu * m_w + gw), b - alpha * (mu * m_b + gb)
    probe = F.cross_entropy(xp @ w2.T + b2, yp) + 0.5 * probe_wd * (
        w2.pow(2).sum() + b2.pow(2).sum()
    )
    a, lam_grad = torch.autograd.grad(probe, (eps, lam))
    raw = torch.relu(-a)
    return raw / (raw.sum() + 1e-5), (lam_grad < 0).to(x.dtype), a


def _linear_case(seed=0, n=12, d=5, c=4):
    gen = torch.Generator().manual_seed(seed)
    dt = torch.float64
    lin = nn.Linear(d, c).to(dt)
    with torch.no_grad():
        lin.weight.copy_(torch.randn(c, d, generator=gen, dtype=dt))
        lin.bias.copy_(torch.randn(c, generator=gen, dtype=dt))
    x, xp = torch.randn(n, d, generator=gen, dtype=dt), torch.randn(8, d, generator=gen, dtype=dt)
    y, yp = torch.randint(0, c, (n,), generator=gen), torch.randint(0, c, (8,), generator=gen)
    g = torch.softmax(torch.randn(n, c, generator=gen, dtype=dt), -1)
    momentum = {
        "weight": torch.randn(c, d, generator=gen, dtype=dt),
        "bias": torch.randn(c, generator=gen, dtype=dt),
    }
    return lin, x, y, g, xp, yp, momentum


def _linear_fns(lin, x, g, xp, yp, wd, probe_wd):
    names = ["weight", "bias"]
    batch_fn = lambda ps: (functional_call(lin, ps, (x,)), g)  # noqa: E731
    probe_fn = lambda ps: (
        F.cross_entropy(functional_call(lin, ps, (xp,)), yp) + L.l2_term(ps, names, probe_wd)
    )  # noqa: E731
    reg_fn = lambda ps: L.l2_term(ps, names, wd)  # noqa: E731
    return batch_fn, probe_fn, reg_fn


@pytest.mark.parametrize("meta", [meta_double_backward, meta_jvp])
def test_meta_weights_and_labels_equal_the_hand_written_double_backward(meta):
    lin, x, y, g, xp, yp, momentum = _linear_case()
    cfg = MetaConfig(alpha=0.1, mu=0.9, eps0=1 / len(y), lam0=0.9)
    want_w, want_keep, want_a = _hand_double_backward(
        lin.weight.detach(),
        lin.bias.detach(),
        momentum["weight"],
        momentum["bias"],
        x,
        y,
        g,
        xp,
        yp,
        0.1,
        0.9,
        1 / len(y),
        0.9,
        5e-4,
        1e-4,
    )
    res = meta(
        *_linear_fns(lin, x, g, xp, yp, 5e-4, 1e-4), dict(lin.named_parameters()), y, momentum, cfg
    )
    assert want_w.sum() > 0.5 and 0 < int((want_w == 0).sum()) < len(
        y
    )  # a case with clipped weights
    torch.testing.assert_close(res.weights, want_w, rtol=1e-9, atol=1e-12)
    torch.testing.assert_close(res.raw, torch.relu(-want_a), rtol=1e-9, atol=1e-12)
    assert torch.equal(res.keep_label, want_keep)


def test_l2r_weights_have_the_closed_form_of_a_linear_model():
    """ε = 0: θ' = θ, so a_i = −α (p_i − e_{y_i})·(V x_i + v_b) with (V, v_b) = ∇L_p(θ)."""
    lin, x, y, _, xp, yp, _ = _linear_case(seed=1)
    params = dict(lin.named_parameters())
    probe = F.cross_entropy(lin(xp), yp)
    v_w, v_b = torch.autograd.grad(probe, [params["weight"], params["bias"]])
    p = torch.softmax(lin(x), -1).detach()
    a = -0.1 * ((p - F.one_hot(y, 4)) * (x @ v_w.T + v_b)).sum(-1)
    want = torch.relu(-a) / (torch.relu(-a).sum() + 1e-5)
    batch_fn = lambda ps: (functional_call(lin, ps, (x,)), None)  # noqa: E731
    probe_fn = lambda ps: F.cross_entropy(functional_call(lin, ps, (xp,)), yp)  # noqa: E731
    cfg = MetaConfig(alpha=0.1, mu=0.0, eps0=0.0)
    for meta in (meta_double_backward, meta_jvp):
        res = meta(batch_fn, probe_fn, lambda ps: torch.zeros(()), params, y, {}, cfg)
        torch.testing.assert_close(res.weights, want, rtol=1e-9, atol=1e-12)
        assert res.keep_label is None


def _tiny_bn_net():
    return nn.Sequential(
        nn.Conv2d(3, 4, 3, padding=1),
        nn.BatchNorm2d(4),
        nn.ReLU(),
        nn.AdaptiveAvgPool2d(1),
        nn.Flatten(),
        nn.Linear(4, 3),
    ).double()


def test_jvp_equals_double_backward_through_batchnorm_and_an_attached_pseudo_label():
    torch.manual_seed(0)
    net = _tiny_bn_net()
    xw, xs, xp = (torch.randn(8, 3, 6, 6, dtype=torch.float64) for _ in range(3))
    y, yp = torch.randint(0, 3, (8,)), torch.randint(0, 3, (8,))
    names = [n for n, _ in net.named_parameters()]

    def batch_fn(ps):  # g keeps its graph through both views, as in the original
        zw = functional_call(net, ps, (xw,))
        return zw, L.guess_label(zw, functional_call(net, ps, (xs,)), detach=False)

    probe_fn = lambda ps: (
        F.cross_entropy(functional_call(net, ps, (xp,)), yp) + L.l2_term(ps, names, 5e-4)
    )  # noqa: E731
    reg_fn = lambda ps: L.l2_term(ps, names, 5e-4)  # noqa: E731
    momentum = {n: torch.randn_like(p) for n, p in net.named_parameters()}
    cfg = MetaConfig(alpha=0.1, mu=0.9, eps0=1 / 8, lam0=0.9)
    running = net[1].running_mean.clone()
    with bn_stats_frozen(net):
        ref = meta_double_backward(
            batch_fn, probe_fn, reg_fn, dict(net.named_parameters()), y, momentum, cfg
        )
        fast = meta_jvp(batch_fn, probe_fn, reg_fn, dict(net.named_parameters()), y, momentum, cfg)
    torch.testing.assert_close(fast.raw, ref.raw, rtol=1e-8, atol=1e-12)
    torch.testing.assert_close(fast.weights, ref.weights, rtol=1e-8, atol=1e-12)
    assert torch.equal(fast.keep_label, ref.keep_label)
    assert torch.equal(net[1].running_mean, running)  # the meta forwards left the statistics alone


@pytest.mark.parametrize(
    "make",
    [
        lambda: create_model("resnet29", num_classes=5, blocks_per_stage=1),
        lambda: WideResNet(10, 1, num_classes=5),
    ],
    ids=["resnet29", "wrn10-1"],
)
def test_jvp_equals_double_backward_on_the_ieg_networks(make):
    torch.manual_seed(2)  # a draw where some example gets a weight
    net = make().double()
    xw, xs, xp = (torch.randn(4, 3, 8, 8, dtype=torch.float64) for _ in range(3))
    y, yp = torch.randint(0, 5, (4,)), torch.randint(0, 5, (4,))
    names = [n for n, _ in net.named_parameters()]

    def batch_fn(ps):
        zw = functional_call(net, ps, (xw,))
        return zw, L.guess_label(zw, functional_call(net, ps, (xs,)), detach=False)

    probe_fn = lambda ps: (
        F.cross_entropy(functional_call(net, ps, (xp,)), yp) + L.l2_term(ps, names, 1e-4)
    )  # noqa: E731
    momentum = {n: 0.1 * torch.randn_like(p) for n, p in net.named_parameters()}
    cfg = MetaConfig(alpha=0.1, mu=0.9, eps0=1 / 4, lam0=0.9)
    with bn_stats_frozen(net):
        ref, fast = (
            meta(
                batch_fn,
                probe_fn,
                lambda ps: L.l2_term(ps, names, 2e-4),
                dict(net.named_parameters()),
                y,
                momentum,
                cfg,
            )
            for meta in (meta_double_backward, meta_jvp)
        )
    torch.testing.assert_close(fast.raw, ref.raw, rtol=1e-9, atol=1e-12)
    assert torch.equal(fast.keep_label, ref.keep_label) and ref.raw.max() > 0


def test_label_estimation_keeps_labels_that_agree_with_the_probe():
    """Probe: class 0 at feature e1. Two training copies of e1 with g = class 0: labelled 0 (clean) the
    label is kept (λ* = 1); labelled 1 (noise) the pseudo-label wins (λ* = 0)."""
    lin = nn.Linear(2, 2).double()
    nn.init.zeros_(lin.weight), nn.init.zeros_(lin.bias)
    e1 = torch.tensor([[1.0, 0.0]], dtype=torch.float64)
    x, y = e1.repeat(2, 1), torch.tensor([0, 1])
    g = torch.tensor([[0.9, 0.1], [0.9, 0.1]], dtype=torch.float64)
    cfg = MetaConfig(alpha=0.1, mu=0.0, eps0=0.5, lam0=0.9)
    fns = _linear_fns(lin, x, g, e1.repeat(4, 1), torch.zeros(4, dtype=torch.long), 0.0, 0.0)
    for meta in (meta_double_backward, meta_jvp):
        res = meta(*fns, dict(lin.named_parameters()), y, {}, cfg)
        assert res.keep_label.tolist() == [1.0, 0.0]
        assert res.weights[0] > 0.99 and res.weights[1] == 0  # the noisy copy gets no weight


def test_bn_stats_frozen_uses_batch_statistics_without_updating():
    net = _tiny_bn_net().train()
    x = torch.randn(6, 3, 5, 5, dtype=torch.float64)
    before = {k: v.clone() for k, v in net.state_dict().items()}
    with bn_stats_frozen(net):
        frozen = net(x)
    assert all(torch.equal(before[k], v) for k, v in net.state_dict().items())
    torch.testing.assert_close(frozen, net(x))  # training mode: same batch statistics
    assert not torch.equal(before["1.running_mean"], net[1].running_mean)


# ----------------------------------------------------------------------------------------------
# Schedule, losses, data


def _cosine_by_walking(step, lr0, period, t_mul, m_mul):
    start, k = 0.0, 0
    while step >= start + period * t_mul**k:
        start, k = start + period * t_mul**k, k + 1
    frac = (step - start) / (period * t_mul**k)
    return lr0 * m_mul**k * 0.5 * (1 + math.cos(math.pi * frac))


def test_cosine_restarts_lr_values():
    assert L.cosine_restarts_lr(0, 0.1, 500, 1.5, 0.9) == pytest.approx(0.1)
    assert L.cosine_restarts_lr(250, 0.1, 500, 1.5, 0.9) == pytest.approx(0.05)
    assert L.cosine_restarts_lr(500 + 375, 0.1, 500, 1.5, 0.9) == pytest.approx(
        0.045
    )  # cycle 1: 750 steps
    for step in (1, 499, 501, 1000, 1249, 1251, 7000, 199999):
        assert L.cosine_restarts_lr(step, 0.1, 500, 1.5, 0.9) == pytest.approx(
            _cosine_by_walking(step, 0.1, 500, 1.5, 0.9), rel=1e-5, abs=1e-7
        )  # TF's float32
    assert L.cosine_restarts_lr(30, 0.1, 20, 1.0, 1.0) == pytest.approx(0.05)
    # TF's cycle-end evaluations add rounded periods (490, 735, round(1102.5) = 1102, …), not exact ends
    ends = sorted(L.cycle_ends(490, 1.5, 200000))
    assert ends == [
        490,
        1225,
        2327,
        3980,
        6460,
        10180,
        15760,
        24130,
        36685,
        55517,
        83765,
        126137,
        189695,
    ]
    assert max(L.cycle_ends(500, 1.5, 200000)) == 193682
    assert L.custom_step_lr(150, 0.1, [100, 200], 0.1) == pytest.approx(0.01)
    assert L.custom_step_lr(99, 0.1, [100, 200], 0.1) == pytest.approx(
        0.01
    )  # iteration 100 runs step 99
    assert L.custom_step_lr(98, 0.1, [100, 200], 0.1) == pytest.approx(0.1)


def test_pseudo_label_mixup_and_consistency_match_hand_computation():
    z, zs = torch.tensor([[1.0, 2.0], [0.0, -1.0]]), torch.tensor([[0.5, 0.5], [2.0, 0.0]])
    rms = lambda a: a / math.sqrt((a**2).mean() + 1e-8)  # noqa: E731
    q = 0.5 * (torch.softmax(rms(z), -1) + torch.softmax(rms(zs), -1))
    torch.testing.assert_close(
        L.guess_label(z, zs, detach=True), q**2 / (q**2).sum(-1, keepdim=True)
    )
    p, log_p_hat = torch.softmax(z, -1), torch.log_softmax(zs, -1)
    kl = (p * (torch.log(p) - log_p_hat)).sum(-1).mean()
    torch.testing.assert_close(L.consistency_loss(z, zs, 20.0), 20 * kl)
    g = torch.Generator().manual_seed(0)
    xs = [torch.randn(4, 3, 2, 2) for _ in range(3)]
    x_mix, t_mix = L.mixup_batch(
        xs[0],
        F.one_hot(torch.arange(4) % 2, 2).float(),
        xs[1],
        xs[2],
        torch.softmax(torch.randn(4, 2), -1),
        g,
    )
    assert x_mix.shape == (12, 3, 2, 2) and torch.allclose(t_mix.sum(-1), torch.ones(12))
    assert (t_mix[:4].max(-1).values >= 0.5 - 1e-6).all()  # m ∈ [0.5, 1] keeps each row's own share


def test_probe_split_is_class_balanced_interleaved_and_disjoint():
    clean = np.repeat(np.arange(5), 40)
    probe, train = L.probe_split(clean, 0.1, 5, np.random.RandomState(0))
    assert len(probe) == 20 and len(train) == 180 and not set(probe) & set(train)
    assert clean[probe].tolist() == [0, 1, 2, 3, 4] * 4
    with pytest.raises(ValueError, match="need at least one per class"):
        L.probe_split(clean, 0.02, 5, np.random.RandomState(0))


def test_step_batches_are_a_pure_function_of_the_step_and_cutout_is_16x16():
    gen = torch.Generator().manual_seed(0)
    images = torch.randint(0, 256, (60, 32, 32, 3), dtype=torch.uint8, generator=gen)
    labels = torch.arange(60) % 3
    probe, train = L.probe_split(labels.numpy(), 0.1, 3, np.random.RandomState(0))
    make = lambda: L.StepBatches(
        images,
        labels,
        train,
        probe,
        6,
        (0.5,) * 3,
        (0.25,) * 3,  # noqa: E731
        torch.device("cpu"),
        seed=1,
        aug_type="autoaug",
    )
    a, b = make().get(11, strong=True), make().get(11, strong=True)
    assert all(torch.equal(a[k], b[k]) for k in a)
    assert not torch.equal(a["xs"], make().get(12, strong=True)["xs"])
    assert sorted(a["yp"].tolist()) == [0, 0, 1, 1, 2, 2] and set(a["idx"].tolist()) <= set(
        train.tolist()
    )
    epoch = torch.cat([make().train_indices(s) for s in range(9)])  # 54 train images: 9 steps of 6
    assert sorted(epoch.tolist()) == sorted(train.tolist())
    zeros = (L.cutout(torch.ones(64, 3, 32, 32), 16, gen) == 0).sum((1, 2, 3)) // 3
    assert zeros.min() >= 64 and zeros.max() == 256


def test_views_without_flip_are_the_same_crops_unmirrored():
    """``flip=False`` (digits16): the crops and every other draw stay those of the flipping views;
    only the mirror goes."""
    images = torch.randint(0, 256, (64, 3, 16, 16), dtype=torch.uint8)
    for view, pad in ((L.weak_crop_flip, L.WEAK_PAD), (L.strong_crop_flip, L.STRONG_PAD)):
        args = (128,) if view is L.strong_crop_flip else ()
        flipping = view(images, torch.Generator().manual_seed(5), *args)
        kept = view(images, torch.Generator().manual_seed(5), *args, flip=False)
        mirrored = [not torch.equal(f, k) for f, k in zip(flipping, kept)]
        assert 10 < sum(mirrored) < 54, pad
        for f, k, m in zip(flipping, kept, mirrored):
            assert torch.equal(f, k.flip(-1) if m else k)


def test_uniform_noise_includes_the_true_class():
    clean = np.repeat(np.arange(10), 5000)
    noisy = L.uniform_noise(clean, 0.8, 10, np.random.RandomState(0))
    assert (noisy != clean).mean() == pytest.approx(0.8 * 0.9, abs=0.01)


def test_dataset_names_and_bad_flags_are_clear_errors(tmp_path):
    assert L.parse_dataset("cifar100_uniform_0.8", ("cifar100",)) == L.DatasetName(
        "cifar100", "uniform", 0.8
    )
    for bad, msg in (
        ("cifar100_gaussian_0.8", "expected"),
        ("cifar11_uniform_0.4", "unknown dataset"),
        ("cifar100_asymmetric_0.4", "cifar10 only"),
        ("cifar10_uniform_1.5", "outside"),
    ):
        with pytest.raises(ValueError, match=msg):
            L.parse_dataset(bad, ("cifar10", "cifar100"))
    for flags, msg in (
        (["--network_name", "vgg"], "--network_name 'vgg'"),
        (["--method", "mwn"], "--method"),
        (["--aug_type", "mixup"], "--aug_type"),
    ):
        with pytest.raises(ValueError, match=msg):
            _run(tmp_path, *DIGITS, *flags, "--max_iteration", "1")
    with pytest.raises(DatasetNotFoundError, match="data_prep/cifar.py"):
        _run(tmp_path, "--dataset", "cifar10_uniform_0.4", "--data_path", str(tmp_path / "nowhere"))


def test_networks_shapes_sizes_and_the_resnet29_quirk():
    assert sum(
        p.numel() for p in create_model("wrn28_10", num_classes=100).parameters()
    ) == pytest.approx(36.3e6, rel=0.01)
    x = torch.randn(2, 3, 32, 32)
    faithful, keras = (
        create_model("resnet29", num_classes=10),
        create_model("resnet29", faithful=False),
    )
    keras.load_state_dict(faithful.state_dict())  # same weights, one ReLU per bottleneck differs
    assert faithful(x).shape == (2, 10) and not torch.allclose(faithful(x), keras(x))
    assert L.build_network("resnet29", 10).ieg_decay == (2e-4, "kernels")


# ----------------------------------------------------------------------------------------------
# The real main() on digits


def _run(tmp_path, *flags):
    args = ieg_main.get_args_parser().parse_args(
        ["--out", str(tmp_path), "--device", "cpu", "--no-tensorboard", "--seed", "0", *flags]
    )
    return ieg_main.main(args)


def test_resume_in_two_halves_equals_straight_through(tmp_path):
    flags = [
        *DIGITS,
        "--batch_size",
        "20",
        "--eval_freq",
        "2",
        "--decay_steps",
        "100",
        "--meta_jvp",
    ]
    straight = _run(tmp_path / "a", *flags, "--max_iteration", "4", "--resume", "none")
    _run(tmp_path / "b", *flags, "--max_iteration", "2", "--resume", "none")
    halves = _run(tmp_path / "b", *flags, "--max_iteration", "4")
    a, b = (
        torch.load(p / "last.pth", weights_only=False) for p in (tmp_path / "a", tmp_path / "b")
    )
    for key in ("model", "ema"):
        flat_a, flat_b = a["models"][key], b["models"][key]
        flat_a, flat_b = flat_a.get("shadow", flat_a), flat_b.get("shadow", flat_b)
        assert all(torch.equal(flat_a[k], flat_b[k]) for k in flat_a), key
    assert halves["test_acc"] == straight["test_acc"] and halves["steps"] == 4
    assert [r["step"] for r in read_jsonl(tmp_path / "b" / "eval.jsonl")] == [1, 2, 4]


def test_records_probe_files_and_evaluation_mode(tmp_path):
    result = _run(
        tmp_path,
        *DIGITS,
        "--method",
        "l2r",
        "--batch_size",
        "20",
        "--max_iteration",
        "3",
        "--eval_freq",
        "3",
        "--resume",
        "none",
    )
    assert (
        result["method"] == "ieg-l2r"
        and result["noise"] == "uniform0.8"
        and result["dataset"] == "digits"
    )
    assert 0 <= result["test_acc"] <= 1 and 0 <= result["best_acc"] <= 1 and result["seconds"] > 0
    assert [r["step"] for r in read_jsonl(tmp_path / "eval.jsonl")] == [1, 3]
    probe = np.load(tmp_path / "probe_indices.npy")
    labels, clean = (
        np.load(tmp_path / "noisy_labels.npz")["labels"],
        __import__("lnl.data").data.get_dataset("digits").targets.numpy(),
    )
    assert len(probe) == 100 and (labels[probe] == clean[probe]).all()
    evaluated = _run(tmp_path, *DIGITS, "--method", "l2r", "--mode", "evaluation")
    assert evaluated["test_acc"] == result["test_acc"]
    # --restore_step: every evaluation's checkpoint is kept (the newest 5, as TF's Saver)
    assert sorted(p.name for p in tmp_path.glob("checkpoint-*.pth")) == [
        "checkpoint-1.pth",
        "checkpoint-3.pth",
    ]
    first = _run(
        tmp_path, *DIGITS, "--method", "l2r", "--mode", "evaluation", "--restore_step", "1"
    )
    assert (
        first["steps"] == 1
        and first["test_acc"] == read_jsonl(tmp_path / "eval.jsonl")[0]["test_acc"]
    )
    with pytest.raises(
        FileNotFoundError, match="--restore_step 2: .*kept: checkpoint-1.pth, checkpoint-3.pth"
    ):
        _run(tmp_path, *DIGITS, "--method", "l2r", "--mode", "evaluation", "--restore_step", "2")
    with pytest.raises(ValueError, match="method='l2r'"):
        _run(tmp_path, *DIGITS, "--method", "supervised", "--max_iteration", "4")


def test_subset_keeps_the_first_images_the_full_runs_labels_and_a_probe_from_within(tmp_path):
    import logging

    args = ieg_main.get_args_parser().parse_args(
        [
            "--out",
            str(tmp_path),
            "--device",
            "cpu",
            "--seed",
            "0",
            *DIGITS,
            "--subset",
            "300",
            "--batch_size",
            "20",
        ]
    )
    batches, loaders, _, clean = ieg_main.prepare_data(
        args, ieg_main.check_args(args), False, logging.getLogger("test")
    )
    full = __import__("lnl.data").data.get_dataset("digits")
    full_labels, _, _ = L.make_ieg_labels(
        full.targets.numpy(), L.parse_dataset("digits_uniform_0.8", ("digits",)), 0.07, 10, 0
    )
    probe, rest = np.load(tmp_path / "probe_indices.npy"), batches.train.numpy()
    assert torch.equal(batches.images, full.images[:300].permute(0, 3, 1, 2)) and torch.equal(
        clean, full.targets[:300]
    )
    assert (
        len(probe) == 20
        and probe.max() < 300
        and sorted(full.targets[probe].tolist()) == sorted(list(range(10)) * 2)
    )
    assert sorted([*probe, *rest]) == list(range(300))
    assert (
        batches.labels.numpy()[rest] == full_labels[rest]
    ).all()  # the whole split's draw, then cut
    assert (
        batches.labels.numpy()[probe] == full.targets.numpy()[probe]
    ).all()  # the probe is clean
    assert len(loaders[""].labels) == 300 and np.load(tmp_path / "noisy_labels.npz")[
        "labels"
    ].shape == (300,)
    args.out = None  # the default folder keeps a subset run apart from the full run (--resume auto)
    assert "digits_uniform_0.8_p0.07-sub300/small_cnn" in ieg_main.run_dir(args)


def test_subset_too_small_is_a_clear_error_and_a_subset_run_completes(tmp_path):
    with pytest.raises(
        ValueError, match="--subset 5 keeps fewer images than digits_uniform_0.8 has classes"
    ):
        _run(tmp_path / "a", *DIGITS, "--subset", "5")
    with pytest.raises(
        ValueError, match=r"--subset 100 with --probe_dataset_hold_ratio 0.07: 100·0.07 = 7 probe"
    ):
        _run(tmp_path / "a", *DIGITS, "--subset", "100")
    result = _run(
        tmp_path / "b",
        *DIGITS,
        "--subset",
        "200",
        "--batch_size",
        "20",
        "--max_iteration",
        "2",
        "--meta_jvp",
    )
    assert result["subset"] == 200 and result["steps"] == 2 and 0 <= result["test_acc"] <= 1
    with pytest.raises(ValueError, match="holds 200 labels but this run trains on 1437 images"):
        _run(tmp_path / "b", *DIGITS, "--batch_size", "20", "--max_iteration", "3")


@pytest.mark.slow
def test_ieg_beats_supervised_and_l2r_on_digits_with_80_percent_noise(tmp_path):
    flags = [
        *DIGITS,
        "--batch_size",
        "50",
        "--max_iteration",
        "100",
        "--eval_freq",
        "50",
        "--decay_steps",
        "100",
        "--meta_jvp",
        "--resume",
        "none",
    ]
    acc = {
        m: _run(tmp_path / m, *flags, "--method", m)["test_acc"]
        for m in ("supervised", "l2r", "ieg")
    }
    assert acc["ieg"] > max(acc["supervised"], acc["l2r"]) + 0.1, acc


# ----------------------------------------------------------------------------------------------
# WebVision-mini: the ImageNet AutoAugment policy, the file-list data path, the real main()

# The v0 policy as transcribed from TF's autoaugment.py (IEG's dataset_utils): "op prob level" pairs.
V0_TRANSCRIBED = """Equalize 0.8 1, ShearY 0.8 4 | Color 0.4 9, Equalize 0.6 3 | Color 0.4 1, Rotate 0.6 8
| Solarize 0.8 3, Equalize 0.4 7 | Solarize 0.4 2, Solarize 0.6 2 | Color 0.2 0, Equalize 0.8 8
| Equalize 0.4 8, SolarizeAdd 0.8 3 | ShearX 0.2 9, Rotate 0.6 8 | Color 0.6 1, Equalize 1.0 2
| Invert 0.4 9, Rotate 0.6 0 | Equalize 1.0 9, ShearY 0.6 3 | Color 0.4 7, Equalize 0.6 0
| Posterize 0.4 6, AutoContrast 0.4 7 | Solarize 0.6 8, Color 0.6 9 | Solarize 0.2 4, Rotate 0.8 9
| Rotate 1.0 7, TranslateY 0.8 9 | ShearX 0.0 0, Solarize 0.8 4 | ShearY 0.8 0, Color 0.6 4
| Color 1.0 0, Rotate 0.6 2 | Equalize 0.8 4, Equalize 0.0 8 | Equalize 1.0 4, AutoContrast 0.6 2
| ShearY 0.4 7, SolarizeAdd 0.6 7 | Posterize 0.8 2, Solarize 0.6 10 | Solarize 0.6 8, Equalize 0.6 1
| Color 0.8 6, Rotate 0.4 5"""


def test_imagenet_v0_policy_table_and_tf_arguments():
    from lnl.data.autoaugment import IMAGENET_POLICY_V0, v0_argument

    want = [
        tuple((o, float(p), int(lv)) for o, p, lv in (op.split() for op in sp.split(",")))
        for sp in V0_TRANSCRIBED.replace("\n", " ").split("|")
    ]
    assert [tuple(sp) for sp in IMAGENET_POLICY_V0] == want and len(want) == 25
    expected = {
        ("Rotate", 8): 24.0,
        ("ShearY", 4): 0.12,
        ("TranslateY", 9): 225.0,
        ("Color", 9): 1.72,
        ("Color", 0): 0.1,
        ("Posterize", 6): 2,
        ("Posterize", 2): 0,
        ("Solarize", 3): 76,
        ("Solarize", 10): 256,
        ("SolarizeAdd", 3): 33,
        ("SolarizeAdd", 7): 77,
        ("Equalize", 8): 0,
    }
    for (op, level), value in expected.items():
        assert v0_argument(op, level) == pytest.approx(value), (op, level)


def test_imagenet_v0_runs_on_uint8_batches_seeded_and_solarize_add_is_tfs():
    from lnl.data.autoaugment import _solarize_add, auto_augment_imagenet

    x = torch.randint(
        0, 256, (32, 3, 24, 24), dtype=torch.uint8, generator=torch.Generator().manual_seed(0)
    )
    run = lambda seed: auto_augment_imagenet(x, torch.Generator().manual_seed(seed))  # noqa: E731
    out = run(1)
    assert out.shape == x.shape and out.dtype == torch.uint8 and torch.equal(out, run(1))
    changed = (out != x).flatten(1).any(1)
    assert 0 < int(changed.sum()) < 32 and not torch.equal(
        out, run(2)
    )  # some images keep p(no op) > 0
    floats = auto_augment_imagenet(x.float() / 255, torch.Generator().manual_seed(1))
    torch.testing.assert_close(floats, out.float() / 255)
    px = (
        torch.tensor([0, 100, 127, 128, 200, 255], dtype=torch.uint8)
        .view(1, 1, 1, 6)
        .expand(2, 3, 1, 6)
    )
    got = _solarize_add(px, torch.tensor([33.0, 200.0]))
    assert got[0, 0, 0].tolist() == [33, 133, 160, 128, 200, 255] and got[1, 0, 0].tolist()[:3] == [
        200,
        255,
        255,
    ]


def _fake_webvision(tmp_path):
    from tests.data._fakes import make_imagenet, make_webvision

    make_webvision(tmp_path / "wv")
    wnids = [
        line.split()[0]
        for line in (tmp_path / "wv" / "info" / "synsets.txt").read_text().splitlines()[:50]
    ]
    make_imagenet(tmp_path / "im", wnids)
    return wnids


def test_webvision_probe_crops_and_step_batches(tmp_path):
    from PIL import Image

    from lnl.data import get_dataset
    from methods.ieg import webvision as W

    assert L.parse_dataset("webvisionmini_20", ()) == L.DatasetName("webvisionmini", None, 0.0, 20)
    default = L.parse_dataset("webvision", ())  # lnl's dataset name is an alias
    assert default == L.parse_dataset("webvisionmini", ()) and default.probe_per_class == 10
    with pytest.raises(ValueError, match="at least one probe image"):
        L.parse_dataset("webvisionmini_0", ())
    wnids = _fake_webvision(tmp_path)
    paths, labels = W.draw_probe(tmp_path / "im", wnids, 2, seed=0)
    assert (
        labels == list(range(50)) * 2
        and paths[0].startswith(f"train/{wnids[0]}/")
        and len(set(paths)) == 100
    )
    with pytest.raises(DatasetNotFoundError, match=r"ImageNet-2012 \*train\* images") as missing:
        W.draw_probe(tmp_path / "nowhere", wnids, 2, seed=0)
    assert "nowhere/train/<WNID>/" in str(
        missing.value
    ) and "--train-images ILSVRC2012_img_train.tar" in str(missing.value)
    with pytest.raises(DatasetNotFoundError, match="the probe needs 3 per class"):
        W.draw_probe(tmp_path / "im", wnids, 3, seed=0)
    img = Image.new("RGB", (40, 30))
    assert W.center_crop(img, 16).size == (16, 16)
    assert W.inception_crop(img, np.random.default_rng(0), 16).size == (16, 16)
    train = get_dataset("webvision", tmp_path / "wv", "train")
    probe = W.probe_dataset(
        tmp_path / "im", train.classes, 1, 0, tmp_path, resumed=False, write=True
    )
    make = lambda workers: W.FileStepBatches(
        train,
        probe,
        4,
        torch.device("cpu"),
        0,
        "autoaug",
        8,
        16,  # noqa: E731
        workers,
    )
    walked = make(0)
    for step in range(6):
        last = walked.get(step, strong=True)
    jumped = make(2).get(5, strong=True)  # a resumed run: other workers, started at step 5
    assert all(torch.equal(last[k], jumped[k]) for k in last)
    assert last["xw"].shape == last["xs"].shape == (4, 3, 16, 16) and last["xp"].shape == (
        4,
        3,
        16,
        16,
    )
    assert torch.equal(last["yp"], torch.tensor([20, 21, 22, 23]))  # probe rows 20..23 at step 5
    assert torch.equal(last["y"], train.targets[last["idx"]])
    n = len(train) // 2 + 1
    cut = W.first_files(train, n)  # --subset: each class's first rows, in file order
    kept = [train.paths.index(p) for p in cut.paths]
    assert len(kept) == n and kept == sorted(kept) and torch.equal(cut.targets, train.targets[kept])
    per_class = torch.bincount(cut.targets, minlength=train.num_classes)
    present = torch.bincount(train.targets, minlength=train.num_classes) > 0
    assert int(per_class[present].max() - per_class[present].min()) <= 1  # spread, not a prefix
    for c in range(train.num_classes):  # and each class's earliest rows
        rows = [i for i, t in enumerate(train.targets.tolist()) if t == c]
        assert [i for i in kept if i in rows] == rows[: int(per_class[c])]


def _webvision_flags(tmp_path):
    return [
        "--dataset",
        "webvisionmini_1",
        "--data_path",
        str(tmp_path / "wv"),
        "--imagenet_path",
        str(tmp_path / "im"),
        "--network_name",
        "small_cnn",
        "--image_size",
        "16",
        "--batch_size",
        "4",
        "--val_batch_size",
        "8",
        "--workers",
        "0",
        "--use_imagenet_as_eval",
        "true",
        "--meta_jvp",
        "--eval_freq",
        "2",
    ]


def test_webvision_mini_trains_evaluates_and_resumes(tmp_path):
    _fake_webvision(tmp_path)
    flags = _webvision_flags(tmp_path)
    straight = _run(tmp_path / "a", *flags, "--max_iteration", "3", "--resume", "none")
    _run(tmp_path / "b", *flags, "--max_iteration", "2", "--resume", "none")
    half = torch.load(tmp_path / "b" / "last.pth", weights_only=False)["models"]["model"]
    halves = _run(tmp_path / "b", *flags, "--max_iteration", "3")
    a, b = (
        torch.load(p / "last.pth", weights_only=False)["models"]["model"]
        for p in (tmp_path / "a", tmp_path / "b")
    )
    assert all(torch.equal(a[k], b[k]) for k in a) and not torch.equal(
        half["head.weight"], b["head.weight"]
    )
    losses = [r["loss"] for r in read_jsonl(tmp_path / "a" / "train.jsonl")]
    assert len(losses) == 3 and all(math.isfinite(v) for v in losses)
    assert straight["noise"] == "real" and straight["steps"] == halves["steps"] == 3
    assert 0 <= straight["imagenet_acc"] <= 1 and halves["imagenet_acc"] == straight["imagenet_acc"]
    rows = read_jsonl(tmp_path / "b" / "eval.jsonl")
    assert [r["step"] for r in rows] == [1, 2, 3] and {"imagenet_ema_acc", "test_acc"} <= set(
        rows[-1]
    )
    assert len((tmp_path / "b" / "probe_files.txt").read_text().splitlines()) == 50
    evaluated = _run(tmp_path / "b", *flags, "--mode", "evaluation")
    assert evaluated["test_acc"] == halves["test_acc"]
    part = _run(
        tmp_path / "d", *flags, "--max_iteration", "1", "--subset", "60", "--resume", "none"
    )
    assert part["subset"] == 60 and part["steps"] == 1
    with pytest.raises(ValueError, match="only for --dataset webvisionmini"):
        _run(tmp_path / "c", *DIGITS, "--use_imagenet_as_eval", "true")


def test_randaug_strong_view_runs_with_its_level_on_the_device(tmp_path):
    """--aug_type randaug draws one level per batch on the device (no host read) and trains."""
    result = _run(
        tmp_path, *DIGITS, "--aug_type", "randaug", "--batch_size", "20", "--max_iteration", "2"
    )
    assert result["steps"] == 2 and 0 <= result["test_acc"] <= 1


def test_step_checkpoints_keep_the_newest_five(tmp_path):
    last = tmp_path / "last.pth"
    for step in (1, 500, 1000, 1250, 1500, 2000, 2375):
        last.write_text(str(step))
        ieg_main.keep_step_checkpoint(last, step)
    kept = sorted(int(p.stem.split("-")[1]) for p in tmp_path.glob("checkpoint-*.pth"))
    assert kept == [1000, 1250, 1500, 2000, 2375]
    assert ieg_main.step_checkpoint(tmp_path, 1250).read_text() == "1250"
