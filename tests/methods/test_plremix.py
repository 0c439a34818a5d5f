"""PLReMix: its losses and schedules against hand-computed cases, the prototypes, the README commands
and presets, real ``main(args)`` smoke and stop-and-resume runs on (reduced) digits, and the digits
integration check of the issue (GMM clean/noisy AUC >= 0.9, accuracy above the CE baseline)."""

from __future__ import annotations

import json
import shlex
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F

from lnl.engine import read_jsonl
from lnl.presets import get_preset
from methods.plremix import plremix_lib as lib
from methods.plremix import train
from tests.methods.codivide_helpers import (
    fake_clothing1m,
    fake_webvision,
    run_main,
    stop_after,
    tiny_digits,
)

REPO = Path(__file__).resolve().parents[2]
SEEDS = REPO.parent / "shared" / "seeds"


def test_kappa_schedule():
    assert [lib.kappa_at(e) for e in (0, 39, 40, 69, 70, 400)] == [3, 3, 2, 2, 1, 1]
    assert [lib.kappa_at(e, (15, 30)) for e in (14, 15, 29, 30)] == [3, 2, 2, 1]
    # the original's topk_list: a step only while --topk > 1 (resp. > 2), so κ never reaches 0
    assert [lib.kappa_at(e, start=1) for e in (0, 40, 70)] == [1, 1, 1]
    assert [lib.kappa_at(e, start=2) for e in (0, 40, 70)] == [2, 1, 1]
    assert [lib.kappa_at(e, start=4) for e in (0, 40, 70)] == [4, 3, 2]


def _sims(z):
    return z @ z.T / 0.1


def test_flat_warmup_loss_is_one_with_the_flatnce_gradient():
    torch.manual_seed(0)
    z = F.normalize(torch.randn(6, 5), dim=1).requires_grad_()  # V = 2 views of B = 3 samples
    loss = lib.warmup_crl_loss(z, 2, "flat")
    assert loss.item() == pytest.approx(1.0)
    (grad,) = torch.autograd.grad(loss, z)
    # hand-written FlatNCE: l_a = log Σ_{n≠a,p(a)} exp((s_an − s_ap)/τ), gradient of the mean
    z2 = z.detach().clone().requires_grad_()
    s = _sims(
        F.normalize(z2, dim=1)
    )  # the original's InfoNCELoss normalises its (unit) input again
    terms = []
    for a in range(6):
        p = (a + 3) % 6
        terms.append(
            torch.logsumexp(
                torch.stack([s[a, n] - s[a, p] for n in range(6) if n not in (a, p)]), 0
            )
        )
    (want,) = torch.autograd.grad(torch.stack(terms).mean(), z2)
    torch.testing.assert_close(grad, want)


def test_infonce_supcon_and_the_p8_variant():
    torch.manual_seed(1)
    z = F.normalize(torch.randn(4, 3), dim=1)
    s = _sims(z)
    want = torch.stack(
        [-(s[a, (a + 2) % 4] - torch.logsumexp(s[a][torch.arange(4) != a], 0)) for a in range(4)]
    ).mean()
    torch.testing.assert_close(lib.warmup_crl_loss(z, 2, "infonce"), want)
    torch.testing.assert_close(lib.warmup_crl_loss(z, 2, "supcon"), want)
    # P8: logsumexp over [positive | negatives] -> the gradient w.r.t. the positive similarity is > 0,
    # i.e. gradient descent pushes the positive pair apart
    sim = s.clone().requires_grad_()
    loss = sum(torch.logsumexp(sim[a][torch.arange(4) != a], 0) for a in range(4)) / 4
    (g,) = torch.autograd.grad(loss, sim)
    assert all(g[a, (a + 2) % 4] > 0 for a in range(4))
    zz = z.clone().requires_grad_()
    assert lib.warmup_crl_loss(zz, 2, "flat_lse_all").item() == pytest.approx(1.0)


def test_multicrop_infonce_puts_other_positives_in_the_denominator():
    torch.manual_seed(2)
    z = F.normalize(torch.randn(8, 4), dim=1)  # V = 4 views of B = 2 samples
    s = _sims(z)
    a = 0
    pos = [2, 4, 6]
    neg = [1, 3, 5, 7]
    row = torch.stack([s[a, j] for j in pos + neg])
    want0 = -(row[0] - torch.logsumexp(row, 0))
    per_row = []
    for a in range(8):
        pos = [j for j in range(8) if j % 2 == a % 2 and j != a]
        neg = [j for j in range(8) if j % 2 != a % 2]
        r = torch.stack([s[a, j] for j in pos + neg])
        per_row.append((-(r[0] - torch.logsumexp(r, 0)), -(r[:3] - torch.logsumexp(r, 0)).mean()))
    assert per_row[0][0].item() == pytest.approx(want0.item(), rel=1e-5)
    torch.testing.assert_close(
        lib.warmup_crl_loss(z, 4, "infonce"), torch.stack([p[0] for p in per_row]).mean()
    )
    torch.testing.assert_close(
        lib.warmup_crl_loss(z, 4, "supcon"), torch.stack([p[1] for p in per_row]).mean()
    )


def test_lambda_warmup_crl_scales_the_warm_up_term_and_its_gradient():
    import argparse
    import types

    class Proj(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.lin = torch.nn.Linear(12, 8)

        def forward(self, x, mode="proj"):
            return F.normalize(self.lin(x.flatten(1)), dim=1)

    torch.manual_seed(0)
    net, x = Proj(), torch.randn(6, 3, 2, 2)
    views = (x, x + 0.1 * torch.randn_like(x), x - 0.1 * torch.randn_like(x))
    results = []
    for weight in (1.0, 0.25):
        args = argparse.Namespace(
            lambda_warmup_crl=weight, crl="plr", fix_p8=True
        )  # InfoNCE: a non-constant value
        fake = types.SimpleNamespace(
            args=args,
            warmup_kind=lambda v: lib.PLReMix.warmup_kind(fake, v),  # noqa: B023
        )
        loss = lib.PLReMix.warmup_extra(fake, 0)(net, views, torch.arange(6))
        (grad,) = torch.autograd.grad(loss, net.lin.weight)
        results.append((loss, grad))
    torch.testing.assert_close(results[1][0], 0.25 * results[0][0])
    torch.testing.assert_close(results[1][1], 0.25 * results[0][1])
    assert (
        train.get_args_parser().parse_args([]).lambda_warmup_crl == 1.0
    )  # the original's weight by default


class _Holder(torch.nn.Module):
    def __init__(self, c, d):
        super().__init__()
        self.register_buffer("prototypes", torch.zeros(c, d))


def test_prototype_init_is_the_normalised_class_mean():
    q = F.normalize(torch.tensor([[1.0, 0], [0.6, 0.8], [0, 1.0], [0, -1.0]]), dim=1)
    labels = torch.tensor([0, 0, 1, 2])
    net = _Holder(3, 2)
    lib.init_prototypes(net, q, labels, 3)
    torch.testing.assert_close(net.prototypes[0], F.normalize(torch.tensor([1.6, 0.8]), dim=0))
    torch.testing.assert_close(net.prototypes[2], torch.tensor([0.0, -1.0]))
    with pytest.raises(ValueError, match="no sample"):
        lib.init_prototypes(net, q, torch.tensor([0, 0, 1, 1]), 3)


def test_self_adaptive_update_hand_case():
    # 3 samples, 2 classes; the other net's outputs
    logits = torch.tensor([[4.0, 0.0], [0.0, 4.0], [0.1, 0.0]])
    src = {
        "logits": logits,
        "proto_logits": torch.zeros(3, 2),
        "q": torch.tensor([[1.0, 0], [0, 1.0], [0.6, 0.8]]),
    }
    net = _Holder(2, 2)
    net.prototypes.copy_(torch.tensor([[0.0, 1.0], [1.0, 0.0]]))
    state = {"tau_t": torch.tensor(0.5), "p_model": torch.tensor([0.5, 0.5])}
    res = lib.self_adaptive_update(
        net, src, state, epoch=0, num_epochs=10, semi_m=0.9
    )  # α = 1: classifier only
    p = logits.softmax(1)
    tau = 0.9 * 0.5 + 0.1 * p.max(1).values.mean()
    p_model = 0.9 * torch.tensor([0.5, 0.5]) + 0.1 * p.mean(0)
    torch.testing.assert_close(state["tau_t"], tau)
    torch.testing.assert_close(state["p_model"], p_model)
    sel = p.max(1).values >= tau * p_model[p.argmax(1)] / p_model.max()
    assert sel.tolist() == [True, True, False]  # the uncertain third sample is left out
    assert res["selected"].item() == pytest.approx(2 / 3)
    want0 = F.normalize(0.99 * torch.tensor([0.0, 1.0]) + 0.01 * torch.tensor([1.0, 0.0]), dim=0)
    torch.testing.assert_close(net.prototypes[0], want0)


def _readme_commands():
    text = next(SEEDS.glob("001_*.txt")).read_text()
    return [line.strip() for line in text.splitlines() if line.strip().startswith("python train")]


@pytest.mark.skipif(not SEEDS.exists(), reason="../shared/seeds is not present")
def test_every_readme_command_parses_to_the_right_flags():
    from methods.plremix import train_clothing1m, train_webvision

    scripts = {
        "train.py": train,
        "train_clothing1m.py": train_clothing1m,
        "train_webvision.py": train_webvision,
    }
    commands = _readme_commands()
    assert len(commands) == 17
    for cmd in commands:
        argv = shlex.split(cmd)[1:]
        module = scripts[argv[0]]
        args = module.parse_args(
            [
                a.replace("PATH_TO_Clothing1M/", "/data/c1m").replace(
                    "PATH_TO_WebVision/", "/data/wv"
                )
                for a in argv[1:]
            ]
        )
        given = dict(zip(argv[1::2], argv[2::2]))
        if "--lambda_u" in given:
            assert args.lambda_u == float(given["--lambda_u"])
        if "--r" in given:
            assert args.r == float(given["--r"])
        assert args.noise_mode == given.get("--noise_mode", "sym")
    c1m = train_clothing1m.parse_args(["--dataset", "clothing1m", "--data_path", "x", "--pretrain"])
    assert (c1m.pretrain, c1m.backbone, c1m.lr, c1m.batch_size, c1m.crl, c1m.lambda_u) == (
        True,
        "resnet50",
        0.004,
        64,
        "plr",
        0,
    )
    wv = train_webvision.parse_args(["--dataset", "webvision", "--data_path", "x", "--mcrop"])
    assert (wv.mcrop, wv.backbone, wv.lr, wv.batch_size, wv.num_epochs) == (
        True,
        "inception",
        0.015,
        48,
        150,
    )
    assert train.parse_args(["--no_wandb"]).wo_wandb  # the README's flag (P3)
    d = train.parse_args([])
    assert (
        d.lr,
        d.batch_size,
        d.num_epochs,
        d.alpha,
        d.lambda_u,
        d.crl,
        d.p_threshold,
        d.aug,
        d.seed,
    ) == (0.02, 64, 400, 4, 25, "flat_plr", 0.5, "autoaug", 123)


def _fake_tiny_imagenet(root: Path) -> Path:
    """Tiny-ImageNet in the regrouped layout: 200 classes, 10 train and 1 val JPEGs each (16x16 here, for
    speed; 10 per class so that every class keeps a noisy label at 80 % noise)."""
    import numpy as np
    from PIL import Image

    rng = np.random.default_rng(0)
    for c in range(200):
        for split, n in (("train", 10), ("val", 1)):
            folder = root / split / f"n{c:08d}"
            folder.mkdir(parents=True, exist_ok=True)
            for i in range(n):
                Image.fromarray(rng.integers(0, 255, (16, 16, 3), dtype=np.uint8)).save(
                    folder / f"{i}.JPEG"
                )
    return root


@pytest.mark.slow
@pytest.mark.skipif(not SEEDS.exists(), reason="../shared/seeds is not present")
@pytest.mark.parametrize("index", range(15))
def test_every_cifar_and_tiny_imagenet_readme_command_runs(tmp_path, shared_data, index):
    """Each of the README's CIFAR-10/100 and Tiny-ImageNet commands runs as written, with our data
    folder for ``--data_path`` and a smoke budget appended: the first 200 images (CIFAR-100: 1,000; a
    fake Tiny-ImageNet: all 2,000), small_cnn, one warm-up and one co-divide epoch. Its noise is the
    command's."""
    cmd = [c for c in _readme_commands() if c.startswith("python train.py")][index]
    argv = shlex.split(cmd)[2:]
    given = dict(zip(argv[::2], argv[1::2]))
    dataset = given.get("--dataset", "cifar10")
    if dataset == "tiny_imagenet":
        data, smoke = _fake_tiny_imagenet(tmp_path / "tiny-imagenet-200"), []
    else:
        # enough images that every class has one (prototype init asserts it, as the original)
        data, smoke = (
            shared_data / dataset,
            ["--subset", "1000" if dataset == "cifar100" else "200"],
        )
    argv = [a if a != given.get("--data_path") else str(data) for a in argv]
    if "--data_path" not in given:
        argv += ["--data_path", str(data)]
    res = run_main(
        train,
        tmp_path / "run",
        *argv,
        *smoke,
        "--num_epochs",
        "1",
        "--warm_up",
        "1",
        "--arch",
        "small_cnn",
        "--batch_size",
        "16",
    )
    r, mode = float(given["--r"]), given.get("--noise_mode", "sym")
    assert (res["dataset"], res["noise"]) == (dataset, f"{mode}{r:g}") and 0 <= res["test_acc"] <= 1
    rows = read_jsonl(tmp_path / "run" / "eval.jsonl")
    assert [row["step"] for row in rows] == [0, 1] and rows[1]["net1_labeled"] > 0


def test_presets_resolve_to_the_readme_values_with_sources():
    for dataset, r, mode, lam in [
        ("cifar10", 0.9, "sym", 50),
        ("cifar100", 0.5, "sym", 150),
        ("tiny_imagenet", 0.45, "asym", 0),
        ("cifar10", 0.4, "asym", 0),
    ]:
        preset = get_preset("plremix", dataset=dataset, noise_mode=mode, r=r)
        assert preset.flags["lambda_u"] == lam and "README" in preset.sources["lambda_u"]
    assert get_preset("plremix", dataset="cifar100", noise_mode="sym", r=0.2).flags["warm_up"] == 30
    args = train.parse_args(["--preset", "--dataset", "cifar10", "--r", "0.9"])
    assert (args.lambda_u, args.warm_up, args.p_threshold) == (50, 10, 0.5)
    args = train.parse_args(["--preset", "--dataset", "cifar10", "--r", "0.9", "--lambda_u", "7"])
    assert args.lambda_u == 7  # the command line wins


def test_wo_wandb_wins_over_the_wandb_flags_and_resume_id_continues_a_run():
    options = lib.wandb_options(
        train.parse_args(["--no_wandb", "--wandb", "--offline", "--resume_id", "abc"])
    )
    assert options == {"wandb": False, "wandb_offline": False, "wandb_id": None}
    assert lib.wandb_options(train.parse_args(["--resume_id", "abc"])) == {"wandb_id": "abc"}
    assert lib.wandb_options(train.parse_args([])) == {"wandb_id": None}


def test_fix_all_turns_every_fix_on():
    args = train.parse_args(["--fix_all"])
    lib.resolve_fixes(args)
    assert all(getattr(args, f) for f in lib.FIXES)


SMOKE = [
    "--dataset",
    "digits",
    "--r",
    "0.4",
    "--batch_size",
    "16",
    "--lr",
    "0.05",
    "--lambda_u",
    "25",
    "--num_epochs",
    "2",
    "--warm_up",
    "1",
]


@pytest.mark.parametrize(
    "fixes", [[], ["--fix_all", "--gmm-backend", "sklearn"]], ids=["original", "fix_all"]
)
def test_main_smoke_and_stop_and_resume_gives_the_same_weights(tmp_path, monkeypatch, fixes):
    """Real main() on reduced digits: warm-up, prototype init, two co-divide epochs; a run stopped
    after epoch 1 and resumed ends with the same weights, prototypes and selection state."""
    tiny_digits(monkeypatch)
    result = run_main(train, tmp_path / "whole", *SMOKE, *fixes)
    rows = read_jsonl(tmp_path / "whole" / "eval.jsonl")
    assert [r["step"] for r in rows] == [0, 1, 2]
    assert rows[0]["net1_warmup_extra"] == pytest.approx(1.0)  # the FlatNCE value is identically 1
    assert rows[1]["kappa"] == 3 and rows[1]["net1_labeled"] > 0 and 0 <= rows[1]["net1_auc"] <= 1
    assert result["method"] == "plremix" and 0 <= result["test_acc"] <= 1
    assert (
        json.loads((tmp_path / "whole" / "results.jsonl").read_text())["test_acc"]
        == result["test_acc"]
    )
    a = torch.load(tmp_path / "whole" / "last.pth", weights_only=False)
    assert set(a["method_state"]["method"]) == {"tau_t", "p_model"}
    assert a["models"]["net1"]["prototypes"].norm(dim=1).allclose(torch.ones(10))

    with stop_after(monkeypatch, 1):
        run_main(train, tmp_path / "cut", *SMOKE, *fixes)
    assert torch.load(tmp_path / "cut" / "last.pth", weights_only=False)["epoch"] == 1
    run_main(train, tmp_path / "cut", *SMOKE, *fixes)
    b = torch.load(tmp_path / "cut" / "last.pth", weights_only=False)
    for net in ("net1", "net2"):
        for k, v in a["models"][net].items():
            torch.testing.assert_close(b["models"][net][k], v, rtol=0, atol=0, msg=f"{net}.{k}")
    for key in ("p_model", "tau_t"):  # the self-adaptive selection's state, restored on resume
        torch.testing.assert_close(
            a["method_state"]["method"][key], b["method_state"]["method"][key]
        )


def test_clothing1m_entry_point_on_a_fake_file_list_dataset(tmp_path):
    from methods.plremix import train_clothing1m

    fake_clothing1m(tmp_path / "c1m")
    result = run_main(
        train_clothing1m,
        tmp_path / "run",
        "--dataset",
        "clothing1m",
        "--data_path",
        str(tmp_path / "c1m"),
        "--arch",
        "small_cnn",
        "--batch_size",
        "4",
        "--num_epochs",
        "1",
        "--num_workers",
        "0",
    )
    rows = read_jsonl(tmp_path / "run" / "eval.jsonl")
    assert [r["step"] for r in rows] == [0, 1] and "val_acc" in rows[1] and rows[1]["kappa"] == 3
    assert {"test_acc", "test_top5", "best_acc"} <= set(result) and result["test_top5"] >= result[
        "test_acc"
    ]


@pytest.mark.slow
def test_webvision_entry_point_with_mcrop_on_a_fake_file_list_dataset(tmp_path):
    from methods.plremix import train_webvision

    fake_webvision(tmp_path / "wv")
    result = run_main(
        train_webvision,
        tmp_path / "run",
        "--dataset",
        "webvision",
        "--data_path",
        str(tmp_path / "wv"),
        "--mcrop",
        "--arch",
        "small_cnn",
        "--batch_size",
        "4",
        "--num_epochs",
        "1",
        "--warm_up",
        "1",
        "--num_workers",
        "0",
        "--fix_all",
    )
    rows = read_jsonl(tmp_path / "run" / "eval.jsonl")
    assert {"val_top1", "val_top5", "imagenet_val_top1", "imagenet_val_top5"} <= set(rows[-1])
    assert result["dataset"] == "webvision" and rows[1]["net1_labeled"] > 0


@pytest.mark.slow
def test_digits_integration_gmm_auc_and_accuracy_above_ce(tmp_path, monkeypatch):
    """Issue 7's CPU check: 40 % sym noise on digits; AUC >= 0.9 and test accuracy > CE's (same budget).

    The warm-up contrastive term is weighted 0.03 (``--lambda_warmup_crl``; the default is the
    original's 1): on ``small_cnn`` weight 1 costs 4 points here and 7 at 30 epochs. Measured over seeds
    123, 0-4 (RESULTS.md): PLReMix 84.1 % vs CE 82.0 % on average, above CE on 5 of 6 seeds; at weight
    0.1, above CE on 2 of 3."""
    from tests.methods.codivide_helpers import INTEGRATION, INTEGRATION_EPOCHS, ce_baseline

    ce = ce_baseline(monkeypatch, tmp_path / "ce")
    tiny_digits(monkeypatch, n_train=1437, n_test=360)
    res = run_main(
        train,
        tmp_path / "plremix",
        *INTEGRATION,
        "--num_epochs",
        str(INTEGRATION_EPOCHS - 1),
        "--warm_up",
        "4",
        "--lambda_u",
        "0",
        "--lambda_warmup_crl",
        "0.03",
    )
    rows = read_jsonl(tmp_path / "plremix" / "eval.jsonl")
    aucs = [min(r["net1_auc"], r["net2_auc"]) for r in rows if "net1_auc" in r]
    assert aucs[-1] >= 0.9 and min(aucs) >= 0.85, aucs  # the issue: the GMM *reaches* AUC >= 0.9
    assert res["test_acc"] > ce["test_acc"], (res["test_acc"], ce["test_acc"])


def test_a_split_smaller_than_a_batch_trains_instead_of_hanging(tmp_path):
    """Issue 20 item 13: 100 digits, batch 64 with drop_last: the unlabeled (and warm-up) sets are
    smaller than one batch. The run must finish (the port hung in ``cycle()`` forever) and say so."""
    import subprocess
    import sys

    cmd = [
        sys.executable,
        "methods/plremix/train.py",
        "--dataset",
        "digits",
        "--r",
        "0.4",
        "--subset",
        "100",
        "--num_epochs",
        "1",
        "--warm_up",
        "1",
        "--out",
        str(tmp_path / "run"),
        "--device",
        "cpu",
        "--no-tensorboard",
    ]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=300, cwd=REPO)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert "fewer than one batch of 64: training on one short batch" in proc.stderr + proc.stdout
    rows = read_jsonl(tmp_path / "run" / "eval.jsonl")
    assert [r["step"] for r in rows] == [0, 1]
    assert (
        rows[1]["net1_lx"] == rows[1]["net1_lx"]
    )  # a step ran: its loss is a number, not the empty mean
