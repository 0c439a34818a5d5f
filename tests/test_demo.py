"""`make demo`: its 1-epoch form (the table, results.jsonl, the plot, the shared noisy labels), the
same table twice for a seed, and (slow) the full demo's claim: every method ends above CE's last
accuracy, and CE ends below its own best."""

from __future__ import annotations

import numpy as np
import pytest

from lnl.data import get_dataset
from lnl.data.noise_files import load_noise_file
from lnl.engine import read_jsonl
from methods import demo

REQUIRED = {"method", "dataset", "noise", "test_acc", "best_acc", "seconds"}


def test_demo_one_epoch(tmp_path, capsys):
    rows = demo.main(["--out", str(tmp_path), "--epochs", "1", "--device", "cpu"])
    records = read_jsonl(tmp_path / "results.jsonl")
    assert records == rows and [r["method"] for r in records] == list(demo.DEMO_RUNS)
    assert all(REQUIRED <= r.keys() and r["dataset"] == "digits" for r in records)
    assert (tmp_path / "accuracy.png").stat().st_size > 1000
    out = capsys.readouterr().out
    assert "best acc" in out and "last acc" in out and "(the bar)" in out
    assert_same_labels(tmp_path)


def assert_same_labels(out):
    """Every run that reads the demo's noise file trained on exactly its labels (IEG: its probe rows are
    clean by definition; LRA records the file it read)."""
    mode, rate = demo.NOISE
    shared = load_noise_file(out / f"{mode}{rate:g}.npz").labels.numpy()
    assert 0.5 < (shared != get_dataset("digits", None, "train").targets.numpy()).mean() < 0.6
    for method in ("standard", "dividemix", "plremix", "dmlp"):
        assert np.array_equal(np.load(out / method / "noisy_labels.npz")["labels"], shared), method
    ieg = np.load(out / "ieg" / "noisy_labels.npz")["labels"]
    rest = np.setdiff1d(np.arange(len(shared)), np.load(out / "ieg" / "probe_indices.npy"))
    assert np.array_equal(ieg[rest], shared[rest])
    lra = read_jsonl(out / "lra" / "results.jsonl")[-1]
    assert lra["noise"] == str(out / f"{mode}{rate:g}.npz")


def test_same_table_twice(tmp_path):
    """A seed gives the same curve twice (pinned threads, a fresh process per run)."""
    curves = []
    for run in ("a", "b"):
        demo.main(
            [
                "--out",
                str(tmp_path / run),
                "--methods",
                "standard",
                "dmlp",
                "--epochs",
                "2",
                "--device",
                "cpu",
            ]
        )
        curves.append(
            [
                r["test_acc"]
                for m in ("standard", "dmlp")
                for r in read_jsonl(tmp_path / run / m / "eval.jsonl")
            ]
        )
    assert curves[0] == curves[1]


def test_table_marks_the_bar():
    rows = [
        {
            "method": "standard",
            "noise": "sym0.6",
            "test_acc": 0.75,
            "best_acc": 0.8,
            "seconds": 1.0,
        },
        {
            "method": "lra",
            "noise": "/x/sym0.6.npz",
            "test_acc": 0.9,
            "best_acc": 0.91,
            "seconds": 2.0,
        },
        {"method": "ieg", "noise": "sym0.6", "test_acc": 0.7, "best_acc": 0.72, "seconds": 3.0},
    ]
    table = demo.format_table(rows)
    assert "(the bar)" in table and "+15.00" in table and "-5.00" in table and "/x/" not in table
    assert "75.00% is the bar: 1 of 2 methods end above it" in table


# Rows measured below CE's last in the demo (RESULTS.md, issue 20 item 14), each with its numbers. The
# test asserts they still are: a row that rises above CE must leave this table (and the README's note).
KNOWN_BELOW_CE = {
    "plremix": "78.9% last vs CE's 81.4% (60% sym, 20 epochs): its 2-D GMM selects worse (AUC 0.82, "
    "labeled precision 0.63) than its own CE column would (AUC 0.96, precision 0.71), as the prototype "
    "column is the weaker one on the small CNN (0.74; 0.88 even with prototypes that follow the "
    "projections); --lambda_c 0.1 fixes the selection (0.965) and still ends at 77.2%; "
    "--topk 1, --p_threshold 0.7, --lr 0.02, --warm_up 3, --lambda_c 0.5, --aug autoaug do not "
    "lift it; over seeds 0-3 it is above CE's last at 2 of 4 (mean 81.0% vs 81.7%), seed 0 not "
    "among them (RESULTS.md)",
}


@pytest.mark.slow
def test_full_demo_every_method_ends_above_ce(tmp_path, capsys):
    """The demo's own results (~9 min on 2 idle cores): CE ends below its best accuracy, and every
    other method's last accuracy is above CE's last, but for the rows of KNOWN_BELOW_CE."""
    rows = {r["method"]: r for r in demo.main(["--out", str(tmp_path), "--device", "cpu"])}
    with capsys.disabled():  # the table is the record of this run (CI's log)
        print("\n" + demo.format_table(list(rows.values())))
    ce = rows.pop(demo.BASELINE)
    assert ce["test_acc"] < ce["best_acc"]
    below = {m for m, r in rows.items() if not r["test_acc"] > ce["test_acc"]}
    assert below == set(KNOWN_BELOW_CE), (
        f"CE's last {ce['test_acc']:.4f}; below it: {sorted(below)}, expected {sorted(KNOWN_BELOW_CE)}"
    )
