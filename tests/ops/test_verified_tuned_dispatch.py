"""``backend="auto"``'s first-use verification (``lnl.ops._verify``) and measured choice (``lnl.ops._tune``).

Verification applies to the CUDA kernels; here the compiled CPU kernel stands in for one (``VERIFIED``
patched) and a deliberately wrong kernel is patched over ``torch.ops.lnl``. The tuner runs on fake
timings: which backend is faster is the test's choice, not the machine's.
"""

from __future__ import annotations

import json
import warnings

import pytest
import torch

from lnl import _ext
from lnl.ops import _dispatch, _tune, _verify, gmm_fit, knn, knn_labels, plr_loss

CPU = torch.device("cpu")
needs_cpu_kernels = pytest.mark.skipif(
    not _ext.has_kernel("knn_labels", "CPU"), reason="lnl._C not built"
)


@pytest.fixture(autouse=True)
def fresh_state(monkeypatch, tmp_path):
    monkeypatch.setattr(_verify, "_RESULTS", {})
    monkeypatch.setattr(_tune, "_TABLES", {})
    monkeypatch.setattr(_dispatch, "_WARNED", set())
    monkeypatch.setenv("LNL_CACHE", str(tmp_path / "cache"))
    monkeypatch.delenv("LNL_VERIFY", raising=False)
    monkeypatch.delenv("LNL_AUTOTUNE", raising=False)


def _points(n=40, d=6, seed=0):
    g = torch.Generator().manual_seed(seed)
    return torch.randn(n, d, generator=g), torch.arange(n) % 4


def _wrong_knn(monkeypatch):
    """The compiled kernel, with each row's neighbours in reverse order (as a broken kernel might)."""
    right = torch.ops.lnl.knn_labels

    def reversed_rows(*args):
        indices, *rest = right(*args)
        return (indices.flip(1), *rest)

    monkeypatch.setattr(torch.ops.lnl, "knn_labels", reversed_rows)


@needs_cpu_kernels
def test_a_wrong_kernel_is_caught_warned_once_and_skipped(monkeypatch):
    monkeypatch.setattr(_verify, "VERIFIED", ("cpu",))
    _wrong_knn(monkeypatch)
    x, y = _points()
    with pytest.warns(UserWarning, match=r"cpu kernel .* disagrees .* neighbours differ"):
        got = knn_labels(x, x, y, 5, 4, metric="ip")
    want = knn_labels(x, x, y, 5, 4, metric="ip", backend="reference")
    torch.testing.assert_close(got.indices, want.indices)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # once per process: the second call neither checks nor warns
        assert torch.equal(knn_labels(x, x, y, 5, 4, metric="ip").indices, want.indices)
    assert list(_verify._RESULTS) == [("knn_labels", "cpu", "cpu", torch.float32)]


@needs_cpu_kernels
def test_the_fallback_reason_names_the_failed_check(monkeypatch):
    monkeypatch.setattr(_verify, "VERIFIED", ("cpu",))
    _wrong_knn(monkeypatch)
    x, y = _points()
    call = _dispatch.Call(CPU, x.dtype, "", 0, lambda b: None)
    with pytest.warns(UserWarning):
        chosen, reasons = knn.choose_backend(x, x, y, 5, "ip", "auto", call)
    assert chosen == "reference"
    assert "failed its first-use check" in reasons["cpu"][0]


@needs_cpu_kernels
def test_verify_off_runs_the_kernel_unchecked(monkeypatch):
    monkeypatch.setattr(_verify, "VERIFIED", ("cpu",))
    monkeypatch.setenv("LNL_VERIFY", "0")
    _wrong_knn(monkeypatch)
    x, y = _points()
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        got = knn_labels(x, x, y, 5, 4, metric="ip")
    want = knn_labels(x, x, y, 5, 4, metric="ip", backend="reference")
    assert torch.equal(got.indices, want.indices.flip(1))  # the wrong kernel ran
    assert not _verify._RESULTS


@needs_cpu_kernels
@pytest.mark.parametrize("op", ["knn_labels", "gmm_em", "plr_loss", "plr_mask"])
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_each_right_kernel_passes_its_check(op, dtype):
    assert _verify.CHECKS[op]("cpu", CPU, dtype) is None


@needs_cpu_kernels
def test_a_kernel_that_raises_fails_its_check(monkeypatch):
    def broken(*args):
        raise RuntimeError("no kernel image is available for execution on the device")

    monkeypatch.setattr(_verify, "VERIFIED", ("cpu",))
    monkeypatch.setattr(torch.ops.lnl, "gmm_em", broken)
    x = torch.rand(2, 30, 1)
    with pytest.warns(UserWarning, match="raised RuntimeError: no kernel image"):
        got = gmm_fit(x, init="quantile", max_iter=3)
    torch.testing.assert_close(
        got.means, gmm_fit(x, init="quantile", max_iter=3, backend="reference").means
    )


@needs_cpu_kernels
def test_wrong_plr_gradient_is_caught(monkeypatch):
    right = torch.ops.lnl.plr_loss_backward
    monkeypatch.setattr(_verify, "VERIFIED", ("cpu",))
    monkeypatch.setattr(torch.ops.lnl, "plr_loss_backward", lambda *a: 1.01 * right(*a))
    assert "in the gradient" in _verify.CHECKS["plr_loss"]("cpu", CPU, torch.float64)


# ---- the tuner, on fake timings ----


def _fake_timings(monkeypatch, times: dict[str, float]) -> list[str]:
    measured = []

    def fake(name, run, device):
        measured.append(name)
        return times[name]

    monkeypatch.setattr(_tune, "time_candidate", fake)
    return measured


def test_the_tuner_picks_the_fastest_and_caches_it(monkeypatch):
    monkeypatch.setenv("LNL_AUTOTUNE", "1")
    measured = _fake_timings(monkeypatch, {"cpu": 3.0, "reference": 1.0})
    big = _tune.MIN_WORK
    assert _tune.pick("knn_labels", ["cpu", "reference"], CPU, "s1", big, None) == "reference"
    assert _tune.pick("knn_labels", ["cpu", "reference"], CPU, "s1", big, None) == "reference"
    assert measured == ["cpu", "reference"]  # measured once per bucket
    key = _tune.cache_key(CPU)
    assert key["torch"] == torch.__version__ and key["device"] == _tune.device_name(CPU)
    path = _tune.cache_path(key)
    data = json.loads(path.read_text())
    assert data["key"] == key and data["winners"] == {"knn_labels|s1|cpu/reference": "reference"}
    monkeypatch.setattr(_tune, "_TABLES", {})  # a new process reads the file back
    assert _tune.read_cache(path, key) == data["winners"]
    assert _tune.pick("knn_labels", ["cpu", "reference"], CPU, "s1", big, None) == "reference"
    assert len(measured) == 2
    assert _tune.pick("knn_labels", ["cpu", "reference"], CPU, "s2", big, None) == "reference"
    assert len(measured) == 4  # another bucket is measured again


def test_the_cache_is_keyed_by_device_torch_and_build(monkeypatch):
    key = _tune.cache_key(CPU)
    others = [
        dict(key, device="NVIDIA H100"),
        dict(key, torch="0.0"),
        dict(key, build="0123456789ab"),
    ]
    assert len({_tune.cache_path(k) for k in [key, *others]}) == 4
    _tune.write_cache(_tune.cache_path(key), key, {"e": "cpu"})
    with pytest.warns(
        UserWarning, match="was written for"
    ):  # a file under another key's name is refused
        assert _tune.read_cache(_tune.cache_path(key), others[0]) == {}


@pytest.mark.parametrize("damage", ["garbage", "tampered", "not_names"])
def test_a_damaged_cache_is_refused(monkeypatch, damage):
    monkeypatch.setenv("LNL_AUTOTUNE", "1")
    key = _tune.cache_key(CPU)
    path = _tune.cache_path(key)
    _tune.write_cache(path, key, {"knn_labels|s1|cpu/reference": "cpu"})
    data = json.loads(path.read_text())
    if damage == "garbage":
        path.write_text(path.read_text()[:40])
    elif damage == "tampered":
        data["winners"]["knn_labels|s1|cpu/reference"] = "reference"
        path.write_text(json.dumps(data))
    else:
        data["winners"] = {"knn_labels|s1|cpu/reference": ["os.system"]}
        path.write_text(json.dumps(data))
    measured = _fake_timings(monkeypatch, {"cpu": 1.0, "reference": 2.0})
    with pytest.warns(UserWarning, match="ignoring the autotune cache"):
        assert (
            _tune.pick("knn_labels", ["cpu", "reference"], CPU, "s1", _tune.MIN_WORK, None) == "cpu"
        )
    assert measured == ["cpu", "reference"]
    assert _tune.read_cache(path, key) == {"knn_labels|s1|cpu/reference": "cpu"}  # rewritten whole


@pytest.mark.parametrize("setting", ["0", None])
def test_static_rule_when_off_or_on_the_cpu_by_default(monkeypatch, setting):
    if setting is not None:
        monkeypatch.setenv("LNL_AUTOTUNE", setting)
    measured = _fake_timings(monkeypatch, {"cpu": 3.0, "reference": 1.0})
    assert _tune.pick("knn_labels", ["cpu", "reference"], CPU, "s1", _tune.MIN_WORK, None) == "cpu"
    assert not measured and not _tune.cache_root().exists()


def test_small_problems_use_the_static_rule(monkeypatch):
    monkeypatch.setenv("LNL_AUTOTUNE", "1")
    measured = _fake_timings(monkeypatch, {"cpu": 3.0, "reference": 1.0})
    assert (
        _tune.pick("knn_labels", ["cpu", "reference"], CPU, "s1", _tune.MIN_WORK - 1, None) == "cpu"
    )
    assert not measured


def test_buckets_round_up_to_powers_of_two():
    assert _tune.bucket(1, 2, 3, 1000, 1024, 1025) == "1x2x4x1024x1024x2048"


@needs_cpu_kernels
def test_auto_follows_the_measured_winner_end_to_end(monkeypatch):
    """Through the faces: a large enough call measures (here with fake times), takes the winner and
    records it under its op and shape bucket; the kNN result is the reference's."""
    monkeypatch.setenv("LNL_AUTOTUNE", "1")
    monkeypatch.setattr(_tune, "MIN_WORK", 1)
    measured = _fake_timings(monkeypatch, {"cpu": 3.0, "reference": 1.0})
    x, y = _points()
    knn_labels(x, x, y, 5, 4, metric="ip")
    feats = torch.nn.functional.normalize(torch.randn(20, 4), dim=1)
    plr_loss(
        feats,
        torch.randint(0, 3, (10, 1)),
        torch.randint(0, 3, (10,)),
        kappa=1,
        num_classes=3,
    )
    winners = _tune._TABLES[str(_tune.cache_path(_tune.cache_key(CPU)))]
    assert measured == ["cpu", "reference"] * 2
    assert sorted(e.split("|")[0] for e in winners) == ["knn_labels", "plr_loss"]
    assert set(winners.values()) == {"reference"}


def test_time_candidate_runs_the_backend():
    calls = []
    assert _tune.time_candidate("cpu", calls.append, CPU) >= 0
    assert calls == ["cpu"] * 3  # a warm-up and two timed calls


@needs_cpu_kernels
def test_no_check_or_timing_while_tracing(monkeypatch):
    """Inside torch.compile (or a CUDA graph capture) auto takes the static rule: nothing to time or check."""
    monkeypatch.setattr(_verify, "VERIFIED", ("cpu",))
    monkeypatch.setenv("LNL_AUTOTUNE", "1")
    monkeypatch.setattr(_tune, "MIN_WORK", 1)
    measured = _fake_timings(monkeypatch, {"cpu": 3.0, "reference": 1.0})
    monkeypatch.setattr(torch.compiler, "is_compiling", lambda: True)
    x, y = _points()
    call = _dispatch.Call(CPU, x.dtype, "s", 10**12, lambda b: None)
    assert knn.choose_backend(x, x, y, 5, "ip", "auto", call)[0] == "cpu"
    assert not measured and not _verify._RESULTS


def test_lnl_info_prints_the_cache(monkeypatch):
    from lnl import info

    key = _tune.cache_key(CPU)
    _tune.write_cache(_tune.cache_path(key), key, {"knn_labels|float32|s1|cpu/reference": "cpu"})
    text = info.report()
    assert str(_tune.cache_root()) in text
    assert "knn_labels|float32|s1|cpu/reference -> cpu" in text


@pytest.mark.cuda
@pytest.mark.skipif(
    not (torch.cuda.is_available() and _ext.has_kernel("knn_labels", "CUDA")),
    reason="needs a GPU and CUDA kernels",
)
@pytest.mark.parametrize(
    "op, dtypes",
    [
        ("knn_labels", (torch.float32, torch.float16, torch.bfloat16, torch.float64)),
        ("gmm_em", (torch.float32, torch.float64)),
        ("plr_loss", (torch.float32, torch.float16, torch.bfloat16)),
        ("plr_mask", (torch.int64,)),
    ],
)
def test_every_cuda_kernel_passes_its_first_use_check(op, dtypes):
    """On a GPU: a check that failed a right kernel would turn the CUDA path off for every user."""
    for dtype in dtypes:
        assert _verify.CHECKS[op]("cuda", torch.device("cuda"), dtype) is None, (op, dtype)


def test_a_candidate_out_of_memory_loses(monkeypatch):
    monkeypatch.setenv("LNL_AUTOTUNE", "1")

    def fake(name, run, device):
        if name == "reference":
            raise torch.OutOfMemoryError("dense masks of a large batch")
        return 5.0

    monkeypatch.setattr(_tune, "time_candidate", fake)
    order = ["reference", "cpu"]  # the failing one first: it would win ties
    assert _tune.pick("plr_loss", order, CPU, "s1", _tune.MIN_WORK, None) == "cpu"


# ---- kNN's GEMM + select variant (backend "cuda_gemm"), a candidate after the tile kernel ----


def test_the_tuner_can_pick_the_gemm_variant(monkeypatch):
    monkeypatch.setenv("LNL_AUTOTUNE", "1")
    monkeypatch.setenv(
        "LNL_VERIFY", "0"
    )  # the CUDA kernels cannot run their checks on this machine
    measured = _fake_timings(monkeypatch, {"cuda": 2.0, "cuda_gemm": 1.0, "reference": 3.0})
    reasons = {"cuda": [], "cuda_gemm": [], "cpu": ["not this one"], "reference": []}
    big = _dispatch.Call(CPU, torch.float32, "s1", _tune.MIN_WORK, lambda b: None)
    assert _dispatch.choose("knn_labels", "auto", dict(reasons), "q", big) == "cuda_gemm"
    assert measured == ["cuda", "cuda_gemm", "reference"]  # in the op's priority order
    winners = _tune._TABLES[str(_tune.cache_path(_tune.cache_key(CPU)))]
    assert winners == {"knn_labels|s1|cuda/cuda_gemm/reference": "cuda_gemm"}
    small = big._replace(shape="s2", work=_tune.MIN_WORK - 1)
    assert _dispatch.choose("knn_labels", "auto", dict(reasons), "q", small) == "cuda"
    # other ops keep their three backends
    assert _dispatch.priority("gmm_em") == _dispatch.PRIORITY


def test_a_failed_gemm_check_leaves_the_tile_kernel(monkeypatch):
    monkeypatch.setattr(
        _verify, "_RESULTS", {("knn_labels", "cuda_gemm", "cpu", torch.float32): "bad"}
    )
    monkeypatch.setattr(_verify, "VERIFIED", ("cuda_gemm",))
    reasons = {"cuda": ["no GPU"], "cuda_gemm": [], "cpu": [], "reference": []}
    call = _dispatch.Call(CPU, torch.float32, "s", 0, lambda b: None)
    assert _dispatch.choose("knn_labels", "auto", reasons, "q", call) == "cpu"
    assert "cuda_gemm kernel failed its first-use check (bad)" in reasons["cuda_gemm"][0]


def test_gemm_variant_reasons(monkeypatch):
    x, y = _points()
    reasons = knn.choose_backend(x, x, y, 5)[1]
    assert any("lnl::knn_labels_gemm" in r or "not cuda" in r for r in reasons["cuda_gemm"])
    assert "float32/float16/bfloat16, got torch.float64" in " ".join(
        knn.not_supported_reasons("cuda_gemm", x.double(), x.double(), y, 5, "ip")
    )
    assert "at most k=256" in " ".join(knn.not_supported_reasons("cuda_gemm", x, x, y, 257, "ip"))
    matmul = torch.backends.cuda.matmul  # properties: monkeypatch cannot set them
    previous = matmul.fp32_precision
    for setting in ("legacy", "new", "precision"):
        if setting == "legacy":
            matmul.allow_tf32 = True
        elif setting == "new":
            matmul.fp32_precision = "tf32"
        else:
            torch.set_float32_matmul_precision("medium")
        try:
            assert "TF32" in " ".join(knn.not_supported_reasons("cuda_gemm", x, x, y, 5, "ip"))
            half = knn.not_supported_reasons("cuda_gemm", x.half(), x.half(), y, 5, "ip")
            assert "TF32" not in " ".join(half)
        finally:
            matmul.fp32_precision = previous
    assert "TF32" not in " ".join(knn.not_supported_reasons("cuda_gemm", x, x, y, 5, "ip"))
    with pytest.raises(ValueError, match="backend 'cuda_gemm' cannot run inputs"):
        knn_labels(x, x, y, 5, 4, backend="cuda_gemm")


@needs_cpu_kernels
@pytest.mark.parametrize("metric", ["ip", "l2"])
def test_the_gemm_backend_runs_the_gemm_op_on_the_shifted_inputs(monkeypatch, metric):
    """The face's wiring, with the compiled CPU kernel standing in for lnl::knn_labels_gemm."""
    calls = []

    def stand_in(*args):
        calls.append(args)
        return torch.ops.lnl.knn_labels(*args)

    monkeypatch.setattr(torch.ops.lnl, "knn_labels_gemm", stand_in, raising=False)
    monkeypatch.setattr(
        knn, "not_supported_reasons", lambda b, *a: ["no GPU"] if b == "cuda" else []
    )
    x, y = _points()
    x = x + 1000  # far from the origin: l2 runs on shifted copies
    got = knn_labels(x[:7], x, y, 5, 4, metric=metric, backend="cuda_gemm")
    want = knn_labels(x[:7].double(), x.double(), y, 5, 4, metric=metric, backend="reference")
    assert len(calls) == 1 and torch.equal(got.indices, want.indices)
    assert bool(calls[0][1].mean() < 10) is (metric == "l2")  # the keys as the op saw them
