"""``python -m lnl.selftest`` on the CPU, on a reduced grid (the full ``--quick`` takes ~30 s): the
report's JSON has the documented fields, every compiled CPU backend passes, and a wrong kernel fails
the run with its numbers."""

from __future__ import annotations

import json

import pytest
import torch

from lnl import _ext, selftest

needs_cpu_kernels = pytest.mark.skipif(
    not _ext.has_kernel("knn_labels", "CPU"), reason="lnl._C not built"
)


@pytest.fixture
def small(monkeypatch):
    """Three cases per op (the first plain one, a tie case where there is one, a NaN row) and tiny timings."""
    for op, spec in selftest.CHECKED.items():

        def cases(quick, full=spec.cases):
            every = full(quick)
            return [
                every[0],
                *[c for c in every if c.exact][:1],
                *[c for c in every if c.raises][:1],
            ]

        monkeypatch.setitem(selftest.CHECKED, op, spec._replace(cases=cases))
    monkeypatch.setitem(selftest.SIZES, "knn_labels", ((300, 16, 5),) * 3)
    monkeypatch.setitem(selftest.SIZES, "gmm_em", (500,) * 3)
    monkeypatch.setitem(selftest.SIZES, "plr_loss", (32,) * 3)


@needs_cpu_kernels
def test_quick_run_writes_the_documented_report(small, tmp_path, capsys):
    path = tmp_path / "selftest.json"
    assert selftest.main(["--quick", "--json", str(path)]) == 0
    report = json.loads(path.read_text())
    for field in report:
        assert f"    {field}:" in selftest.__doc__, f"JSON field {field!r} is not documented"
    assert report["device"]["type"] == "cpu" and report["failures"] == 0 and report["quick"]
    assert report["versions"]["torch"] == torch.__version__
    tested = {(r["op"], r["backend"], r["dtype"]) for r in report["checks"]}
    assert tested == {
        (op, "cpu", dt)
        for op in ("knn_labels", "gmm_em", "plr_loss")
        for dt in ("float32", "float64")
    } | {("plr_mask", "cpu", "int64")}
    assert {"nan row", "ties ints 40x90 d4 k10 ip"} <= {r["case"] for r in report["checks"]}
    names = {(r["op"], r["name"]) for r in report["timings"] if r["ms"] is not None}
    assert {
        ("knn_labels", "cpu"),
        ("knn_labels", "torch mm+topk"),
        ("gmm_em", "sklearn"),
        ("gmm_em", "torch reference"),
        ("plr_loss", "cpu"),
        ("plr_loss", "dense torch"),
    } <= names
    assert "0 failed check(s)" in capsys.readouterr().out


@needs_cpu_kernels
def test_a_wrong_kernel_fails_the_run(small, tmp_path, monkeypatch, capsys):
    right = torch.ops.lnl.plr_loss_backward
    monkeypatch.setattr(torch.ops.lnl, "plr_loss_backward", lambda *a: 1.1 * right(*a))
    path = tmp_path / "selftest.json"
    assert selftest.main(["--quick", "--json", str(path)]) == 1
    failed = [r for r in json.loads(path.read_text())["checks"] if r["status"] == "fail"]
    assert failed and {r["op"] for r in failed} == {"plr_loss"}
    assert all("grad: relative error" in r["detail"] for r in failed)
    assert "FAIL" in capsys.readouterr().out


def test_without_compiled_kernels_every_op_is_skipped_with_its_reason(small, monkeypatch):
    monkeypatch.setattr(
        selftest._dispatch,
        "compiled_reasons",
        lambda op, b, d: ["extension lnl._C is not built"],
    )
    rows = selftest.correctness(torch.device("cpu"), quick=True)
    assert [(r["op"], r["status"]) for r in rows] == [(op, "skipped") for op in selftest.OPS]
    assert all("not built" in r["detail"] for r in rows)


def test_compare_knn_catches_wrong_scores_and_self_matches():
    case = selftest._knn_case("self", 12, 12, 3, 4, exclude=True)
    inp = {**case.make(torch.device("cpu"), torch.float64), "metric": "ip"}
    want = selftest.run_knn(inp, "reference")
    assert selftest.compare_knn(want, want, inp, case, torch.float64) is None
    shifted = dict(want, scores=want["scores"] + 1e-3)
    assert "score error" in selftest.compare_knn(shifted, want, inp, case, torch.float64)
    own = want["indices"].clone()
    own[:, 0] = torch.arange(12)
    bad = dict(
        want,
        indices=own,
        votes=selftest.knn_op.votes_from_indices(own, inp["labels"], 7),
    )
    assert "found itself" in selftest.compare_knn(bad, want, inp, case, torch.float64)
