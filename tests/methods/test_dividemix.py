"""DivideMix: flags and presets, the 90 %-noise loss averaging, real ``main(args)`` smoke and
stop-and-resume on reduced digits, and the digits integration check (AUC >= 0.9, above CE)."""

from __future__ import annotations

import pytest
import torch

from lnl.codivide import cotrain
from lnl.codivide.steps import minmax, per_sample_ce
from lnl.engine import read_jsonl
from lnl.presets import get_preset
from methods.dividemix import Train_cifar as train
from methods.dividemix import dividemix_train
from tests.methods.codivide_helpers import run_main, stop_after, tiny_digits


def test_defaults_and_presets():
    a = train.parse_args([])
    assert (
        a.batch_size,
        a.lr,
        a.alpha,
        a.lambda_u,
        a.p_threshold,
        a.T,
        a.num_epochs,
        a.r,
        a.seed,
    ) == (64, 0.02, 4, 25, 0.5, 0.5, 300, 0.5, 123)
    a = train.parse_args(["--preset", "--r", "0.9"])
    assert (a.lambda_u, a.p_threshold, a.warm_up) == (50, 0.6, 10)
    a = train.parse_args(
        ["--preset", "--dataset", "cifar100", "--r", "0.9", "--p_threshold", "0.55"]
    )
    assert (a.lambda_u, a.p_threshold, a.warm_up) == (150, 0.55, 30)
    p = get_preset("dividemix", dataset="cifar10", noise_mode="asym", r=0.4)
    assert p.flags["lambda_u"] == 0 and "#15" in p.sources["lambda_u"]


def test_original_noise_file_name_is_used_when_present(tmp_path):
    (tmp_path / "0.5_sym.json").write_text("[]")
    a = train.parse_args(["--data_path", str(tmp_path)])
    assert dividemix_train.default_noise_file(a) == str(tmp_path / "0.5_sym.json")
    assert (
        dividemix_train.default_noise_file(
            train.parse_args(["--data_path", str(tmp_path), "--r", "0.8"])
        )
        is None
    )


class _Args:
    r = 0.9


def test_ninety_percent_noise_averages_the_last_five_epochs():
    method = cotrain.CoDivide.__new__(cotrain.CoDivide)
    method.args, method.state = _Args(), {"history": [[], []]}
    g = torch.Generator().manual_seed(0)
    seen = []
    for _ in range(7):
        logits, labels = torch.randn(20, 3, generator=g), torch.randint(0, 3, (20,), generator=g)
        seen.append(minmax(per_sample_ce(logits, labels)))
        x = method.gmm_input(0, {"logits": logits, "labels": labels})
        torch.testing.assert_close(x[:, 0], torch.stack(seen[-5:]).mean(0))
    assert len(method.state["history"][0]) == 5
    method.args.r = 0.5
    x = method.gmm_input(0, {"logits": logits, "labels": labels})
    torch.testing.assert_close(x[:, 0], seen[-1])


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


@pytest.mark.parametrize("r", ["0.4", "0.9"])  # at 0.9 the GMM averages the last 5 epochs' losses
def test_main_smoke_and_stop_and_resume_gives_the_same_weights(tmp_path, monkeypatch, r):
    tiny_digits(monkeypatch)
    smoke = [*SMOKE, "--r", r]
    result = run_main(train, tmp_path / "whole", *smoke)
    rows = read_jsonl(tmp_path / "whole" / "eval.jsonl")
    assert [r["step"] for r in rows] == [0, 1, 2]
    assert rows[1]["net1_labeled"] > 0 and rows[1]["net1_lu"] >= 0 and 0 <= rows[2]["net2_auc"] <= 1
    assert result["method"] == "dividemix" and result["noise"] == f"sym{r}"
    with stop_after(monkeypatch, 1):
        run_main(train, tmp_path / "cut", *smoke)
    run_main(train, tmp_path / "cut", *smoke)
    a = torch.load(tmp_path / "whole" / "last.pth", weights_only=False)
    b = torch.load(tmp_path / "cut" / "last.pth", weights_only=False)
    history = [a["method_state"]["method"]["history"], b["method_state"]["method"]["history"]]
    assert [len(h) for h in history[0]] == [2, 2]  # both co-divide epochs, per net
    for ha, hb in zip(*history, strict=True):
        assert len(ha) == len(hb) and all(torch.equal(x, y) for x, y in zip(ha, hb))
    for net in ("net1", "net2"):
        for k, v in a["models"][net].items():
            torch.testing.assert_close(b["models"][net][k], v, rtol=0, atol=0, msg=f"{net}.{k}")
    assert [r["step"] for r in read_jsonl(tmp_path / "cut" / "eval.jsonl")] == [0, 1, 2]


def test_clothing1m_entry_point_keeps_best_val_models_on_a_fake_dataset(tmp_path):
    from methods.dividemix import Train_clothing1M
    from tests.methods.codivide_helpers import fake_clothing1m

    fake_clothing1m(tmp_path / "c1m")
    result = run_main(
        Train_clothing1M,
        tmp_path / "run",
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
        "--num_batches",
        "4",
    )
    rows = read_jsonl(tmp_path / "run" / "eval.jsonl")
    assert [r["step"] for r in rows] == [0, 1] and {"val_acc_net1", "val_acc_net2"} <= set(rows[1])
    assert (tmp_path / "run" / "best_net1.pth").exists() or rows[0]["val_acc_net1"] == 0
    assert rows[1]["net1_labeled"] > 0 and {"test_acc", "test_top5"} <= set(result)


def test_webvision_entry_point_parses_the_original_flags():
    from methods.dividemix import Train_webvision

    a = Train_webvision.parse_args(["--data_path", "x"])
    assert (a.batch_size, a.lr, a.alpha, a.lambda_u, a.num_epochs, a.num_class) == (
        32,
        0.01,
        0.5,
        0,
        80,
        50,
    )


@pytest.mark.slow
def test_digits_integration_gmm_auc_and_accuracy_above_ce(tmp_path, monkeypatch):
    """Issue 7's CPU check: 40 % sym noise on digits; AUC >= 0.9 and test accuracy > CE's (same budget)."""
    from tests.methods.codivide_helpers import INTEGRATION, INTEGRATION_EPOCHS, ce_baseline

    ce = ce_baseline(monkeypatch, tmp_path / "ce")
    tiny_digits(monkeypatch, n_train=1437, n_test=360)
    res = run_main(
        train,
        tmp_path / "dividemix",
        *INTEGRATION,
        "--num_epochs",
        str(INTEGRATION_EPOCHS - 1),
        "--warm_up",
        "4",
        "--lambda_u",
        "0",
        "--lr_milestone",
        "half",
    )
    rows = read_jsonl(tmp_path / "dividemix" / "eval.jsonl")
    aucs = [min(r["net1_auc"], r["net2_auc"]) for r in rows if "net1_auc" in r]
    assert aucs[-1] >= 0.9 and min(aucs) >= 0.85, aucs  # the issue: the GMM *reaches* AUC >= 0.9
    assert res["test_acc"] > ce["test_acc"], (res["test_acc"], ce["test_acc"])


@pytest.mark.parametrize("method", ["dividemix", "plremix"])
def test_a_file_list_recipe_with_an_evaluation_its_method_lacks_is_refused(tmp_path, method):
    import dataclasses
    import importlib

    entry = importlib.import_module(
        "methods.dividemix.Train_webvision"
        if method == "dividemix"
        else "methods.plremix.train_webvision"
    )
    args = entry.parse_args(["--data_path", str(tmp_path), "--out", str(tmp_path / "run")])
    args.recipe = dataclasses.replace(args.recipe, evaluation="test")
    with pytest.raises(ValueError, match="evaluation 'test'"):
        entry.main(args)
    assert not (tmp_path / "run").exists()
