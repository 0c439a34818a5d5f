"""`make demo` in its 1-epoch form: the table, results.jsonl with the required keys, and the plot."""

from __future__ import annotations

from lnl.engine import read_jsonl
from methods import demo

REQUIRED = {"method", "dataset", "noise", "test_acc", "seconds"}


def test_demo_one_epoch(tmp_path, capsys):
    rows = demo.main(["--out", str(tmp_path), "--epochs", "1", "--device", "cpu"])
    records = read_jsonl(tmp_path / "results.jsonl")
    assert records == rows and {r["method"] for r in records} == set(demo.DEMO_RUNS)
    assert all(REQUIRED <= r.keys() and r["dataset"] == "digits" for r in records)
    assert (tmp_path / "accuracy.png").stat().st_size > 1000
    out = capsys.readouterr().out
    assert "test acc" in out and "standard" in out
