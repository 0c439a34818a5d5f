"""LRA-Diffusion (methods/lra): the noise schedule and DDIM against float64 closed forms, the retrieval
table against a brute-force kNN, the sampler's distribution and weights, EMA, the error messages,
exact resume, and the digits integration check against the CE baseline.

Features for digits: ``--fp_encoder pixels`` (grey-level pixels pooled to 8x8, standardised; a fixed,
label-free encoder).
"""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from lnl.engine import read_jsonl, runner
from lnl.engine.ema import EMA
from methods.lra import lra_data as D
from methods.lra import lra_lib as L
from methods.lra import lra_train, train_CIFAR

# A few-second digits run: tiny denoiser, 2 DDIM steps.
TINY = [
    "--noise_type",
    "digits-sym-0.4",
    "--fp_encoder",
    "pixels",
    "--diff_encoder",
    "small_cnn",
    "--feature_dim",
    "16",
    "--batch_size",
    "256",
    "--ddim_n_step",
    "2",
    "--eval_freq",
    "2",
    "--warmup_epochs",
    "1",
]


def _args(out, *extra):
    return train_CIFAR.get_args_parser().parse_args(
        ["--out", str(out), "--device", "cpu", "--no-tensorboard", "--resume", "none", *extra]
    )


# -------------------------------------------------------------------------------------------------- schedule


def _cosine_alphas_bar_oracle(T=1000, s=0.008):
    f = [math.cos((i / T + s) / (1 + s) * math.pi / 2) ** 2 for i in range(T + 1)]
    betas = [min(1 - f[i + 1] / f[i], 0.999) for i in range(T)]
    return np.array(betas), np.cumprod(1 - np.array(betas))


def test_cosine_schedule_matches_float64_closed_form_and_spec_values():
    betas, ab = _cosine_alphas_bar_oracle()
    np.testing.assert_allclose(L.cosine_betas().numpy(), betas, rtol=1e-12, atol=0)
    sched = L.Schedule.cosine()
    np.testing.assert_allclose(sched.alphas_cumprod.double().numpy(), ab, rtol=1e-5, atol=1e-12)
    # The spec's (A.3.4) derived values.
    assert betas[0] == pytest.approx(4.13e-5, rel=1e-2)
    assert ab[0] == pytest.approx(0.99996, abs=1e-5)
    assert ab[501] == pytest.approx(0.491, abs=1e-3)
    assert ab[901] == pytest.approx(0.0231, abs=1e-4)
    assert ab[999] == pytest.approx(2.4e-9, rel=0.1)


def test_q_sample_is_the_closed_form():
    sched = L.Schedule.cosine()
    y0, noise = torch.eye(3)[[0, 2]], torch.randn(2, 3)
    t = torch.tensor([10, 700])
    a = sched.alphas_cumprod[t].double().unsqueeze(1)
    want = a.sqrt() * y0.double() + (1 - a).sqrt() * noise.double()
    torch.testing.assert_close(sched.q_sample(y0, t, noise).double(), want, rtol=1e-6, atol=1e-6)


def test_antithetic_timesteps_pair_t_with_T_minus_1_minus_t():
    torch.manual_seed(0)
    t = L.antithetic_timesteps(7, 1000, "cpu")
    assert t.shape == (7,) and int(t.min()) >= 0 and int(t.max()) <= 999
    assert torch.equal(t[4:7], 999 - t[:3])


# -------------------------------------------------------------------------------------------------- DDIM


def test_one_ddim_step_matches_closed_form():
    y = torch.tensor([[0.3, -0.2, 1.1]], dtype=torch.float64)
    eps = torch.tensor([[0.5, 0.1, -0.4]], dtype=torch.float64)
    a_t, a_prev = 0.3, 0.8
    y_prev, y0_hat = L.ddim_step(y, eps, a_t, a_prev)
    for c in range(3):  # by hand, element by element
        y0 = (y[0, c].item() - math.sqrt(1 - a_t) * eps[0, c].item()) / math.sqrt(a_t)
        assert y0_hat[0, c].item() == pytest.approx(y0, abs=1e-14)
        assert y_prev[0, c].item() == pytest.approx(
            math.sqrt(a_prev) * y0 + math.sqrt(1 - a_prev) * eps[0, c].item(), abs=1e-14
        )


class _OracleDenoiser(torch.nn.Module):
    """Returns the exact ε for a known y_0: ε = (y_t − √ᾱ_t y_0)/√(1 − ᾱ_t)."""

    def __init__(self, y0, sched):
        super().__init__()
        self.y0, self.ab = y0, sched.alphas_cumprod
        self.seen = []

    def forward(self, x_embed, y, t, fp):
        self.seen.append(int(t[0]))
        a = self.ab[t].unsqueeze(1)
        return (y - a.sqrt() * self.y0) / (1 - a).sqrt()


def test_ddim_sample_with_exact_noise_recovers_y0_and_uses_the_original_timesteps():
    sched = L.Schedule.cosine()
    y0 = torch.eye(4)[[1, 3]]
    net = _OracleDenoiser(y0, sched)
    steps = L.ddim_timesteps(10)
    y = L.ddim_sample(net, torch.zeros(2, 1), torch.zeros(2, 1), sched, steps, 4)
    assert net.seen == [901, 801, 701, 601, 501, 401, 301, 201, 101, 1]
    # The last step maps to ᾱ[0], so y = √ᾱ_0·y0 + √(1−ᾱ_0)·ε (issue #2); ŷ_0 is y0 itself.
    a0 = sched.alphas_cumprod[0]
    y0_hat = L.ddim_sample(
        net, torch.zeros(2, 1), torch.zeros(2, 1), sched, steps, 4, return_y0=True
    )
    torch.testing.assert_close(y0_hat, y0, atol=1e-4, rtol=0)
    eps_last = (y - a0.sqrt() * y0) / (1 - a0).sqrt()
    torch.testing.assert_close(y, a0.sqrt() * y0 + (1 - a0).sqrt() * eps_last)
    assert (L.predict(y) == torch.tensor([1, 3])).all()


def test_ddim_timesteps_original_values_crash_cases_and_every_step_count():
    assert L.ddim_timesteps(10) == list(range(1, 1000, 100))
    assert L.ddim_timesteps(3) == [1, 334, 667]  # the original indexes ᾱ[1000] here and crashes
    assert L.ddim_timesteps(7) == list(
        range(1, 1000, 142)
    )  # a non-divisor: 8 steps, as the original
    for s in range(1, 1001):
        for exact in (False, True):
            ts = L.ddim_timesteps(s, exact=exact)
            assert ts == sorted(set(ts)) and 0 <= ts[0] and ts[-1] <= 999, (s, exact)
            if exact:
                assert len(ts) == s and ts[-1] == 999
    for bad in (0, 1001):
        with pytest.raises(ValueError, match="ddim_n_step"):
            L.ddim_timesteps(bad)


def test_prediction_rules():
    y = torch.tensor([[1.6, 1.05, 0.2], [0.1, 0.4, -3.0]])
    assert L.predict(y).tolist() == [1, 1]  # closest to 1
    assert L.predict(y, "argmax").tolist() == [0, 1]


# -------------------------------------------------------------------------------------------------- retrieval


def _brute_force_candidates(x, labels, k, exclude_self):
    d = torch.cdist(x.double(), x.double())
    if exclude_self:
        d.fill_diagonal_(float("inf"))
    idx = torch.sort(d, dim=1, stable=True).indices[:, :k]
    return torch.cat([labels[idx], labels[:, None]], 1)


@pytest.mark.parametrize("backend", ["auto", "faiss"])  # --knn-backend
@pytest.mark.parametrize("exclude_self", [False, True])
def test_retrieval_table_and_per_batch_mode_match_brute_force(exclude_self, backend):
    if backend == "faiss":
        pytest.importorskip("faiss")
    g = torch.Generator().manual_seed(0)
    x, labels = torch.randn(60, 5, generator=g), torch.randint(0, 4, (60,), generator=g)
    table = L.neighbour_candidates(x, labels, 6, 4, exclude_self=exclude_self, backend=backend)
    assert torch.equal(table, _brute_force_candidates(x, labels, 6, exclude_self))
    if not exclude_self:  # the sample is its own nearest neighbour: own label twice (A.9.9)
        assert torch.equal(table[:, 0], labels)
    pos = torch.tensor([3, 17, 42])
    batch = L.batch_candidates(
        x[pos], pos, x, labels, 6, 4, exclude_self=exclude_self, backend=backend
    )
    assert torch.equal(batch, table[pos])


def test_retrieval_sampler_distribution_and_weights():
    cands = torch.tensor([[0, 0, 0, 1, 2], [2, 2, 1, 1, 1]])
    torch.manual_seed(0)
    n = 20000
    draws = torch.stack([L.sample_retrieved(cands, 3, True)[0] for _ in range(n)])
    for row, probs in ((0, [0.6, 0.2, 0.2]), (1, [0.0, 0.6, 0.4])):
        freq = torch.bincount(draws[:, row], minlength=3).double() / n
        # 5 standard errors of a binomial proportion
        assert torch.allclose(
            freq, torch.tensor(probs, dtype=torch.float64), atol=5 * math.sqrt(0.25 / n)
        )
    torch.manual_seed(1)
    labels, w = L.sample_retrieved(cands, 3, True)
    counts = torch.tensor([float((cands[i] == labels[i]).sum()) for i in range(2)])
    torch.testing.assert_close(w, counts / counts.sum())
    _, w_uniform = L.sample_retrieved(cands, 3, False)
    torch.testing.assert_close(w_uniform, torch.full((2,), 0.5))


def test_learning_rate_schedule():
    assert L.learning_rate(2.5, 5, 1000) == pytest.approx(1e-3 * 0.5)
    assert L.learning_rate(5, 5, 1000) == pytest.approx(1e-3)
    assert L.learning_rate(105, 5, 1000) == pytest.approx(
        1e-3 * 0.5 * (1 + math.cos(math.pi * 100 / 995))
    )
    assert L.learning_rate(200, 5, 200) == pytest.approx(0.0, abs=1e-18)


# -------------------------------------------------------------------------------------------------- EMA


def test_ema_update_swap_and_state():
    net = torch.nn.Linear(2, 1, bias=False)
    with torch.no_grad():
        net.weight.fill_(1.0)
    ema = EMA(net, decay=0.9)
    values = [3.0, -1.0, 2.0]
    shadow = 1.0
    for v in values:
        with torch.no_grad():
            net.weight.fill_(v)
        ema.update(net)
        shadow = 0.1 * v + 0.9 * shadow
    torch.testing.assert_close(ema.shadow["weight"], torch.full((1, 2), shadow))
    with ema.swapped_in(net):
        torch.testing.assert_close(net.weight.detach(), torch.full((1, 2), shadow))
    torch.testing.assert_close(net.weight.detach(), torch.full((1, 2), 2.0))
    other = EMA(net, decay=0.5)
    other.load_state_dict(ema.state_dict())
    assert other.decay == 0.9 and torch.equal(other.shadow["weight"], ema.shadow["weight"])


# -------------------------------------------------------------------------------------------------- inputs


def test_lra_noise_file_lines_up_with_the_first_45k_cifar_images(shared_data):
    args = _args(
        "unused",
        "--noise_type",
        "cifar10-1-0.35",
        "--noise_dir",
        str(shared_data / "noise_labels" / "lra_pmd"),
    )
    spec = D.parse_noise_type(args)
    assert spec.dataset == "cifar10" and spec.path.name == "cifar10-1-0.35.npy"

    class Train:
        targets, num_classes, noisy_targets = torch.zeros(50000, dtype=torch.long), 10, None

        def __len__(self):
            return 50000

    labels, meta = D.noisy_labels(spec, Train(), 45000, 0)
    assert labels.shape == (45000,) and meta["format"] == "lra_npy"
    with pytest.raises(ValueError, match="val_size"):
        D.noisy_labels(spec, Train(), 40000, 0)


@pytest.mark.parametrize(
    "flags, error, match",
    [
        (["--noise_type", "cifar10-sym"], ValueError, "unknown --noise_type"),
        (["--noise_type", "digits-pmd-0.3"], ValueError, "unknown --noise_type"),
        (
            ["--noise_type", "cifar10-1-0.35", "--noise_dir", "/nonexistent"],
            FileNotFoundError,
            "not found",
        ),
        (
            ["--noise_type", "digits-sym-0.4", "--fp_encoder", "BYOL"],
            ValueError,
            "unknown --fp_encoder",
        ),
        (
            ["--noise_type", "digits-sym-0.4", "--ddim_n_step", "1001"],
            ValueError,
            "ddim_n_step 1001",
        ),
        (
            ["--noise_type", "digits-sym-0.4", "--fp_encoder", "CLIP"],
            FileNotFoundError,
            "extract_features.py --dataset digits",
        ),
    ],
)
def test_bad_input_raises_a_clear_error(tmp_path, flags, error, match):
    with pytest.raises(error, match=match):
        train_CIFAR.main(_args(tmp_path / "run", *flags))


# -------------------------------------------------------------------------------------------------- runs


def _tiny_encoder(name, feature_dim, weights, torchvision_init=False):
    """A cheap stand-in image encoder with BatchNorm (its running stats must survive the resume too)."""
    return torch.nn.Sequential(
        torch.nn.AvgPool2d(8),
        torch.nn.Flatten(),
        torch.nn.Linear(48, feature_dim),
        torch.nn.BatchNorm1d(feature_dim),
    )


def _final_state(out):
    ckpt = torch.load(out / "last.pth", map_location="cpu", weights_only=False)
    return ckpt["models"], ckpt["optimizers"]["opt"]["state"], ckpt["method_state"]


@pytest.mark.parametrize("fixes", [[], ["--fix_all"]], ids=["original", "fix_all"])
def test_stop_and_resume_equals_one_run(tmp_path, monkeypatch, fixes):
    """A run stopped after epoch 1 of 4 and resumed from last.pth ends in the same state."""
    monkeypatch.setattr(
        L, "build_image_encoder", _tiny_encoder
    )  # the CNN is not what is tested here
    whole = train_CIFAR.main(_args(tmp_path / "whole", *TINY, "--nepoch", "4", *fixes))
    run_epochs = runner.run_epochs
    with monkeypatch.context() as m:  # stop after epoch 1, as if killed after its checkpoint
        m.setattr(
            runner,
            "run_epochs",
            lambda first, n, step, after_epoch: run_epochs(first, 2, step, after_epoch),
        )
        train_CIFAR.main(_args(tmp_path / "half", *TINY, "--nepoch", "4", *fixes))
    assert torch.load(tmp_path / "half" / "last.pth", weights_only=False)["epoch"] == 1
    resumed = _args(tmp_path / "half", *TINY, "--nepoch", "4", *fixes)
    resumed.resume = "auto"
    second = train_CIFAR.main(resumed)
    for key in ("test_acc", "best_acc", "knn_acc"):
        assert second[key] == whole[key]
    models_a, opt_a, state_a = _final_state(tmp_path / "whole")
    models_b, opt_b, state_b = _final_state(tmp_path / "half")
    for net in models_a:
        for name, value in models_a[net].items():
            assert torch.equal(value, models_b[net][name]), (net, name)
    for i in opt_a:
        assert torch.equal(opt_a[i]["exp_avg"], opt_b[i]["exp_avg"])
    for name, value in state_a["ema"]["shadow"].items():
        assert torch.equal(value, state_b["ema"]["shadow"][name])
    rows_a, rows_b = (
        [
            {k: v for k, v in r.items() if k not in ("seconds", "time")}
            for r in read_jsonl(tmp_path / run / "eval.jsonl")
        ]
        for run in ("whole", "half")
    )
    assert rows_a == rows_b and [r["step"] for r in rows_a] == [2, 3]


def test_clothing1m_entry_point_on_a_fake_file_list_dataset(tmp_path):
    """Real main() of train_Clothing1M on a 14-class fake in the real layout, with random CC features:
    file-list loaders, the class-balanced epoch subset, val and test every epoch."""
    from methods.lra import train_Clothing1M
    from tests.methods.codivide_helpers import fake_clothing1m

    fake_clothing1m(tmp_path / "c1m")
    sizes = {"train": 28, "val": 14, "test": 14}
    g = np.random.default_rng(0)
    for split, n in sizes.items():
        (tmp_path / "feat").mkdir(exist_ok=True)
        np.save(
            tmp_path / "feat" / f"c1m_{split}_cc_features.npy",
            g.normal(size=(n, 6)).astype(np.float16),
        )
    args = train_Clothing1M.get_args_parser().parse_args(
        [
            "--out",
            str(tmp_path / "run"),
            "--device",
            "cpu",
            "--no-tensorboard",
            "--resume",
            "none",
            "--data_path",
            str(tmp_path / "c1m"),
            "--feature_file",
            str(tmp_path / "feat" / "c1m_train_cc"),
            "--diff_encoder",
            "linear",
            "--feature_dim",
            "8",
            "--batch_size",
            "8",
            "--nepoch",
            "2",
            "--k",
            "3",
            "--samples_per_class",
            "1",
            "--num_workers",
            "0",
            "--ddim_n_step",
            "3",
        ]
    )
    res = train_Clothing1M.main(args)
    rows = read_jsonl(tmp_path / "run" / "eval.jsonl")
    assert [r["step"] for r in rows] == [0, 1] and all(
        "val_acc" in r and "test_acc" in r for r in rows
    )
    assert res["dataset"] == "clothing1m" and 0 <= res["test_acc"] <= 1
    train = read_jsonl(tmp_path / "run" / "train.jsonl")
    assert len(train) == 2  # one row per epoch


def test_digits_lra_beats_the_ce_baseline(tmp_path):
    """The demo setting (about 30 s on one core) against CE run here on the same noisy digits (seed 123,
    10 epochs, methods/standard/train.py --batch_size 64 --lr 0.05 as in make demo: 83-89% over seeds)."""
    from methods.standard import train as standard

    ce = standard.main(
        standard.get_args_parser().parse_args(
            [
                "--dataset",
                "digits",
                "--noise_mode",
                "sym",
                "--r",
                "0.4",
                "--batch_size",
                "64",
                "--lr",
                "0.05",
                "--num_epochs",
                "10",
                "--out",
                str(tmp_path / "ce"),
                "--device",
                "cpu",
                "--no-tensorboard",
            ]
        )
    )
    res = train_CIFAR.main(_args(tmp_path / "lra", *DEMO_FLAGS, "--nepoch", str(DEMO_EPOCHS)))
    assert res["method"] == "lra" and res["dataset"] == "digits"
    assert res["test_acc"] > ce["test_acc"], (res["test_acc"], ce["test_acc"])
    rows = read_jsonl(tmp_path / "lra" / "eval.jsonl")
    assert rows[-1]["test_acc"] == res["test_acc"]


DEMO_FLAGS = [
    "--noise_type",
    "digits-sym-0.4",
    "--fp_encoder",
    "pixels",
    "--diff_encoder",
    "linear",
    "--feature_dim",
    "128",
    "--batch_size",
    "64",
    "--lr",
    "3e-3",
    "--eval_freq",
    "10",
    "--fix_lr_horizon",
]
DEMO_EPOCHS = 150


@pytest.mark.parametrize("per_batch", [False, True])
def test_knn_time_is_recorded(tmp_path, per_batch):
    """The issue's GPU run records the kNN time: the table's build, or every batch's search with
    --knn_per_batch, in train.jsonl (running total) and the results record."""
    flags = ["--knn_per_batch"] if per_batch else []
    res = train_CIFAR.main(
        _args(tmp_path / "run", *TINY, "--nepoch", "2", "--subset", "300", *flags)
    )
    seconds = [r["knn_seconds"] for r in read_jsonl(tmp_path / "run" / "train.jsonl")]
    assert 0 < seconds[0] <= seconds[1] and res["knn_seconds"] == pytest.approx(
        seconds[1], abs=1e-3
    )
    assert (
        seconds[0] < seconds[1]
    ) == per_batch  # the table is searched once, per-batch mode every step


def test_data_parallel_ids_keep_visible_gpus_with_the_model_first():
    from methods.lra.lra_train import data_parallel_ids

    assert data_parallel_ids([0, 1, 2, 3], 0, 1) == [
        0
    ]  # the scripts' default on one GPU: no DataParallel
    assert data_parallel_ids([0, 1, 2, 3], 0, 8) == [0, 1, 2, 3]
    assert data_parallel_ids([0, 1, 2, 3], 2, 4) == [
        2,
        0,
        1,
        3,
    ]  # device_ids[0] must hold the model
    assert data_parallel_ids([1, 1, 3], 1, 2) == [1]
    assert data_parallel_ids([1, 2], 0, 4) == []  # the model's GPU not requested: no DataParallel


# -------------------------------------------------------------------------------------------------- --subset


def _subset_data(out, *extra):
    args = lra_train.resolve(_args(out, "--noise_type", "digits-sym-0.4", *extra))
    return D.build_data(args)


def test_subset_keeps_the_first_images_labels_and_feature_rows(tmp_path):
    """--subset cuts after the noise draw (same labels as the full run's first N) and reads the kept
    images' rows of feature files that cover the whole splits; a 100-image hold-out keeps its first N."""
    g = np.random.default_rng(0)
    files = {
        s: g.normal(size=(n, 6)).astype(np.float32) for s, n in (("train", 1437), ("test", 360))
    }
    for s, x in files.items():
        np.save(tmp_path / f"digits_{s}_clip_features.npy", x)
    flags = [
        "--fp_encoder",
        "CLIP",
        "--feature_file",
        str(tmp_path / "digits_train_clip"),
        "--val_size",
        "100",
    ]
    full = _subset_data(tmp_path / "full", *flags)
    part = _subset_data(tmp_path / "part", *flags, "--subset", "60")
    n_train = 1437 - 100
    assert torch.equal(part.train_idx, torch.arange(60))
    assert (
        torch.equal(part.noisy, full.noisy[:60]) and part.noise_meta["subset"] == 60
    )  # same draw, then cut
    kept = torch.cat(
        [torch.arange(60), torch.arange(n_train, n_train + 60)]
    )  # 60 trained on, 60 held out
    train_images = full.loaders["train"].images
    assert torch.equal(part.loaders["train"].images, train_images[kept])
    torch.testing.assert_close(
        part.features["train"], torch.from_numpy(files["train"][kept.numpy()])
    )
    val = part.loaders["val"]
    assert torch.equal(val.images[val.indices], train_images[n_train : n_train + 60])
    assert torch.equal(
        val.labels[val.indices], full.loaders["val"].labels[n_train : n_train + 60]
    )  # clean labels
    torch.testing.assert_close(
        part.eval_features["val"][val.indices], torch.from_numpy(files["train"][kept[60:]])
    )
    assert torch.equal(part.loaders["test"].images, full.loaders["test"].images[:60])
    assert torch.equal(part.test_targets, full.test_targets[:60])
    torch.testing.assert_close(part.eval_features["test"], torch.from_numpy(files["test"][:60]))


def test_subset_smaller_than_the_classes_is_refused(tmp_path):
    with pytest.raises(ValueError, match="--subset 5 keeps fewer images than digits has classes"):
        _subset_data(tmp_path, "--fp_encoder", "pixels", "--subset", "5")


def test_subset_is_refused_on_a_file_list_dataset(tmp_path):
    from methods.lra import train_Clothing1M
    from tests.methods.codivide_helpers import fake_clothing1m

    fake_clothing1m(tmp_path / "c1m")
    args = train_Clothing1M.get_args_parser().parse_args(
        [
            "--out",
            str(tmp_path / "run"),
            "--device",
            "cpu",
            "--no-tensorboard",
            "--resume",
            "none",
            "--data_path",
            str(tmp_path / "c1m"),
            "--subset",
            "20",
        ]
    )
    with pytest.raises(ValueError, match="--subset is not supported for clothing1m"):
        train_Clothing1M.main(args)


def test_digits_run_with_subset_completes_and_records_it(tmp_path):
    res = train_CIFAR.main(_args(tmp_path / "run", *TINY, "--nepoch", "2", "--subset", "100"))
    assert res["subset"] == 100 and 0 <= res["test_acc"] <= 1
    table = torch.load(tmp_path / "run" / "knn_table.pt", weights_only=True)["table"]
    assert table.shape[0] == 100  # the kNN graph is over the kept images only
    named = _args(None, *TINY, "--subset", "100")
    assert lra_train.default_out(named).endswith(
        "-pixels-s123-sub100"
    )  # not the full run's folder (resume)


def test_online_simclr_prior_encodes_every_augmented_batch(tmp_path, monkeypatch):
    """train_CIFAR.py's default prior (issue 21, item 2): the SimCLR encoder embeds each augmented training
    batch (the kNN query and f_p), against a database of one augmentation per training image."""
    from methods.lra import lra_prior

    torch.manual_seed(0)
    torch.save(lra_prior.SimCLREncoder().state_dict(), tmp_path / "simclr.pt")
    calls = []
    encode = lra_prior.encode_batch
    monkeypatch.setattr(
        lra_prior, "encode_batch", lambda enc, x: calls.append(len(x)) or encode(enc, x)
    )
    args = _args(
        tmp_path / "run",
        "--noise_type",
        "digits-sym-0.4",
        "--fp_encoder",
        "SimCLR",
        "--simclr_weights",
        str(tmp_path / "simclr.pt"),
        "--diff_encoder",
        "linear",
        "--feature_dim",
        "16",
        "--batch_size",
        "8",
        "--ddim_n_step",
        "2",
        "--nepoch",
        "1",
        "--subset",
        "16",
        "--warmup_epochs",
        "0",
    )
    result = train_CIFAR.main(args)
    assert args.fp_online and calls == [8, 8] and 0.0 <= result["test_acc"] <= 1.0
    with pytest.raises(ValueError, match="holds no SimCLR_encoder key"):
        torch.save({"conv1.weight": torch.zeros(1)}, tmp_path / "bad.pt")
        lra_prior.load_simclr(tmp_path / "bad.pt", "cpu")
    precomputed = _args(
        tmp_path / "pre",
        "--noise_type",
        "digits-sym-0.4",
        "--fp_encoder",
        "SimCLR",
        "--precomputed_fp",
    )
    lra_train.resolve(precomputed)
    assert not precomputed.fp_online
