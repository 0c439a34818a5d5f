"""First-use verification (``lnl.ops._verify``) against the CUDA kernels themselves, run in the CPU
emulation (``tests/ops/cuda_emulation``): every check passes the real kernels in every dtype they take
(a check that failed a right kernel would turn the GPU path off for every user), and a wrong variant
is caught and skipped by ``auto``. The emulated kernels stand in for the compiled CPU backend, made
the verified one for the test. Compiling the emulation takes minutes (shared with
test_cuda_emulation.py in one session)."""

from __future__ import annotations

import pytest
import torch

from lnl import _ext
from lnl.ops import _dispatch, _verify, gmm, knn, knn_labels, plr
from tests.ops.cuda_emulation import build

pytestmark = pytest.mark.skipif(not _ext.has_kernel("knn_labels", "CPU"), reason="lnl._C not built")
CPU = torch.device("cpu")


@pytest.fixture(scope="module")
def emu():
    return build.load()


class EmulatedPlr(torch.autograd.Function):
    """The emulated forward and backward kernels, wired as ``lnl::plr_loss``'s autograd formula is."""

    @staticmethod
    def forward(ctx, emu, features, cand, labels, kappa, classes, tau, tau_b, flat):
        out = emu.plr_loss(features, cand, labels, kappa, classes, tau, tau_b, flat)
        ctx.save_for_backward(features, cand, labels, out[2], out[3])
        ctx.emu, ctx.args = emu, (kappa, classes, tau, tau_b, flat)
        ctx.mark_non_differentiable(*out[1:])
        return tuple(out)

    @staticmethod
    def backward(ctx, grad, *unused):
        features, cand, labels, lse, n_neg = ctx.saved_tensors
        return (
            None,
            ctx.emu.plr_loss_backward(grad, features, cand, labels, lse, n_neg, *ctx.args),
        ) + (None,) * 7


@pytest.fixture
def emulated(monkeypatch, emu):
    """``torch.ops.lnl`` runs the emulated CUDA kernels under the name "cpu", which takes CUDA's dtypes."""
    for name in ("knn_labels", "gmm_kmeans", "gmm_em", "plr_loss_backward", "plr_mask"):
        monkeypatch.setattr(torch.ops.lnl, name, getattr(emu, name))
    monkeypatch.setattr(torch.ops.lnl, "plr_loss", lambda *args: EmulatedPlr.apply(emu, *args))
    for module in (knn, gmm, plr):
        original = module.not_supported_reasons
        monkeypatch.setattr(
            module,
            "not_supported_reasons",
            lambda backend, *a, _o=original, **k: [] if backend == "cpu" else _o(backend, *a, **k),
        )
    monkeypatch.setattr(_verify, "VERIFIED", ("cpu",))
    monkeypatch.setattr(_verify, "_RESULTS", {})
    monkeypatch.setattr(_dispatch, "_WARNED", set())
    return emu


@pytest.mark.parametrize(
    "op, dtypes",
    [
        ("knn_labels", (torch.float32, torch.float16, torch.bfloat16, torch.float64)),
        ("gmm_em", (torch.float32, torch.float64)),
        ("plr_loss", (torch.float32, torch.float16, torch.bfloat16)),
        ("plr_mask", (torch.int64,)),
    ],
)
def test_every_check_passes_the_emulated_cuda_kernels(emulated, op, dtypes):
    for dtype in dtypes:
        assert _verify.CHECKS[op]("cpu", CPU, dtype) is None, (op, dtype)


def ip_answered_as_cosine(knn_op):
    """A wrong kernel variant: ``knn_op`` answering an inner-product query with cosine ranks."""
    return lambda q, k, lab, kk, c, metric, *rest: knn_op(
        q, k, lab, kk, c, "cosine" if metric == "ip" else metric, *rest
    )


def test_a_wrong_emulated_variant_is_caught_and_skipped(emulated, monkeypatch):
    """The variant: the emulated kernel of another metric (cosine) answering an inner-product query."""
    right = emulated.knn_labels
    monkeypatch.setattr(torch.ops.lnl, "knn_labels", ip_answered_as_cosine(right))
    g = torch.Generator().manual_seed(0)
    x, y = torch.randint(-3, 4, (50, 6), generator=g).float(), torch.arange(50) % 4
    with pytest.warns(UserWarning, match="disagrees with the PyTorch reference"):
        got = knn_labels(x, x, y, 5, 4, metric="ip")
    want = knn_labels(x, x, y, 5, 4, metric="ip", backend="reference")
    assert torch.equal(got.indices, want.indices)


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_the_plr_check_runs_the_emulated_backward(emulated, monkeypatch, dtype):
    """A gradient 5% off in the emulated backward kernel fails the check (so the passes above ran it)."""
    wrong = type(
        "Wrong",
        (),
        {
            "plr_loss": emulated.plr_loss,
            "plr_loss_backward": lambda *a: 1.05 * emulated.plr_loss_backward(*a),
        },
    )
    monkeypatch.setattr(torch.ops.lnl, "plr_loss", lambda *args: EmulatedPlr.apply(wrong, *args))
    assert "in the gradient" in _verify.CHECKS["plr_loss"]("cpu", CPU, dtype)


@pytest.fixture
def emulated_gemm(emulated, monkeypatch):
    """Backend "cuda_gemm" runs the emulated lnl::knn_labels_gemm (its reasons emptied here)."""
    monkeypatch.setattr(torch.ops.lnl, "knn_labels_gemm", emulated.knn_labels_gemm, raising=False)
    patched = knn.not_supported_reasons
    monkeypatch.setattr(
        knn,
        "not_supported_reasons",
        lambda backend, *a, _o=patched: [] if backend == "cuda_gemm" else _o(backend, *a),
    )
    return emulated


def test_the_knn_check_passes_the_emulated_gemm_variant(emulated_gemm):
    for dtype in (torch.float32, torch.float16, torch.bfloat16):
        assert _verify.CHECKS["knn_labels"]("cuda_gemm", CPU, dtype) is None, dtype
    g = torch.Generator().manual_seed(1)  # l2 far from the origin: the face shifts both sets first
    keys, labels = (
        torch.randn(300, 16, generator=g) + 1000,
        torch.randint(0, 7, (300,), generator=g),
    )
    queries = torch.randn(20, 16, generator=g) + 1000
    got = knn_labels(queries, keys, labels, 10, 7, metric="l2", backend="cuda_gemm")
    want = knn_labels(
        queries.double(), keys.double(), labels, 10, 7, metric="l2", backend="reference"
    )
    assert torch.equal(got.indices, want.indices) and torch.equal(got.votes, want.votes)


def test_a_wrong_emulated_gemm_variant_is_caught_and_skipped(emulated_gemm, monkeypatch):
    right = emulated_gemm.knn_labels_gemm
    monkeypatch.setattr(torch.ops.lnl, "knn_labels_gemm", ip_answered_as_cosine(right))
    monkeypatch.setattr(_verify, "VERIFIED", ("cpu", "cuda_gemm"))
    g = torch.Generator().manual_seed(0)
    x, y = torch.randint(-3, 4, (50, 6), generator=g).float(), torch.arange(50) % 4
    with pytest.warns(UserWarning, match="cuda_gemm kernel .* disagrees"):
        got = knn_labels(x, x, y, 5, 4, metric="ip")
    want = knn_labels(x, x, y, 5, 4, metric="ip", backend="reference")
    assert torch.equal(got.indices, want.indices)
    assert _verify._RESULTS[("knn_labels", "cuda_gemm", "cpu", torch.float32)]
    assert _verify._RESULTS[("knn_labels", "cpu", "cpu", torch.float32)] is None  # cpu ran instead
