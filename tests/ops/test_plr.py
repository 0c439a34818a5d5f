"""Tests of lnl.ops.plr_loss / plr_mask (specs/plremix_dividemix.md §5.6, §5.7, §11.2).

The oracles below are written from the spec's formulas, independently of ``plr_reference.py``:
the mask from Python sets and from a one-hot matmul, the loss with explicit exp/log sums in float64.
"""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from lnl import _ext
from lnl.ops import plr_loss, plr_mask, plr_mask_reference
from lnl.ops.plr import choose_backend
from lnl.ops.plr_reference import plr_terms_reference

HAS_CPU = _ext.has_kernel("plr_loss", "CPU")
HAS_CUDA = _ext.has_kernel("plr_loss", "CUDA") and torch.cuda.is_available()
needs_cpu = pytest.mark.skipif(not HAS_CPU, reason="lnl._C has no CPU plr_loss kernel")


def make_inputs(batch, views, dim, classes, width=3, seed=0, dtype=torch.float64, device="cpu"):
    """Normalised view-major features Tensor[V*B, D] plus cand Tensor[B, width] and labels Tensor[B]."""
    g = torch.Generator().manual_seed(seed)
    feats = F.normalize(torch.randn(views * batch, dim, generator=g, dtype=torch.float64), dim=1)
    logits = torch.randn(batch, classes, generator=g)
    cand = logits.topk(min(width, classes), dim=1).indices
    labels = torch.randint(0, classes, (batch,), generator=g)
    return feats.to(device, dtype), cand.to(device), labels.to(device)


def oracle_mask(cand, labels, kappa, classes):
    """Dense one-hot/matmul construction of §5.6 (float64 counts)."""
    cols = cand[:, : max(kappa, 1)]
    onehot = F.one_hot(cols.long(), classes).sum(1).clamp(max=1)
    if kappa >= 1:
        onehot = (onehot + F.one_hot(labels.long(), classes)).clamp(max=1)
    overlap = onehot.double() @ onehot.double().T
    mask = torch.zeros_like(overlap, dtype=torch.int8)
    mask[overlap == 0] = -1
    mask[torch.arange(len(mask)), torch.arange(len(mask))] = 1
    return mask


def set_mask(cand, labels, kappa):
    """The same mask from Python sets, for small golden cases."""
    sets = [
        set(c[: max(kappa, 1)].tolist()) | ({int(y)} if kappa >= 1 else set())
        for c, y in zip(cand, labels)
    ]
    n = len(sets)
    return torch.tensor(
        [
            [1 if i == j else (-1 if not sets[i] & sets[j] else 0) for j in range(n)]
            for i in range(n)
        ],
        dtype=torch.int8,
    )


def oracle_terms(feats, cand, labels, kappa, classes, tau=1.0, tau_b=1.0, flat=True):
    """(objective, value, n_valid) in float64: flat objective = mean_valid v_a (gradient of the loss)."""
    f = feats.double()
    batch, n = cand.shape[0], feats.shape[0]
    disjoint = oracle_mask(cand, labels, kappa, classes) == -1
    sample = torch.arange(n) % batch
    pos = (sample[:, None] == sample[None, :]) & ~torch.eye(n, dtype=torch.bool)
    neg = disjoint[sample][:, sample]
    s = f @ f.T
    if flat:
        valid = neg.any(1)
        terms = torch.exp((s - (s * pos).sum(1, keepdim=True)) / tau) * neg
        v = torch.log(terms.sum(1)[valid])
        if not bool(valid.any()):
            return f.sum() * 0, torch.zeros((), dtype=f.dtype), 0
        return v.mean(), torch.log1p(torch.exp(v)).mean(), int(valid.sum())
    allowed = pos | neg
    denom = (torch.exp(s / tau) * allowed).sum(1)
    rows = -(tau / tau_b) * ((s / tau * pos).sum(1) / pos.sum(1) - torch.log(denom))
    return rows.mean(), rows.mean(), int(neg.any(1).sum())


def oracle_grad(feats, *args, **kw):
    f = feats.detach().double().requires_grad_()
    objective, value, n_valid = oracle_terms(f, *args, **kw)
    (grad,) = torch.autograd.grad(objective, f, allow_unused=True)
    return (
        objective.detach(),
        value.detach(),
        n_valid,
        torch.zeros_like(f) if grad is None else grad,
    )


def assert_rel(got, ref, rel):
    """max |got − ref| <= rel · max |ref| (relative to the largest entry; float32 sums cancel)."""
    got, ref = got.double(), ref.double()
    scale = max(float(ref.abs().max()), 1e-30)
    err = float((got - ref).abs().max())
    assert err <= rel * scale, f"max err {err:.3g} > {rel} * {scale:.3g}"


def run_op(feats, cand, labels, kappa, classes, flat, backend, tau=1.0, tau_b=1.0):
    f = feats.detach().clone().requires_grad_()
    st = plr_loss(
        f,
        cand,
        labels,
        kappa=kappa,
        num_classes=classes,
        flat=flat,
        temperature=tau,
        base_temperature=tau_b,
        return_stats=True,
        backend=backend,
    )
    st.loss.backward()
    return st, f.grad


# ----------------------------------------------------------------------------------------- mask
@pytest.mark.parametrize("kappa", [0, 1, 2, 3])
@pytest.mark.parametrize("classes", [2, 10, 64, 65, 1000])
def test_mask_reference_vs_oracles(kappa, classes):
    _, cand, labels = make_inputs(40, 2, 4, classes, width=3, seed=kappa + classes)
    cand = cand[:, : max(1, min(3, classes))]
    kappa = min(kappa, cand.shape[1])
    ref = plr_mask_reference(cand, labels, kappa, classes)
    assert ref.dtype == torch.int8
    assert torch.equal(ref, oracle_mask(cand, labels, kappa, classes))
    assert torch.equal(ref, set_mask(cand, labels, kappa))
    assert torch.equal(ref, ref.T)


def test_mask_kappa0_ignores_labels():
    cand = torch.tensor([[0, 1], [2, 0], [0, 3]])
    labels = torch.tensor([2, 0, 9])
    m = plr_mask(cand, labels, 0, num_classes=10, backend="reference")
    assert m.tolist() == [[1, -1, 0], [-1, 1, -1], [0, -1, 1]]
    m1 = plr_mask(cand, labels, 1, num_classes=10, backend="reference")  # {0,2}, {2,0}, {0,9}
    assert m1.tolist() == [[1, 0, 0], [0, 1, 0], [0, 0, 1]]


@needs_cpu
@pytest.mark.parametrize(
    "kappa,classes", [(0, 10), (1, 14), (2, 64), (3, 100), (3, 1000), (2, 1025)]
)
def test_mask_cpu_vs_oracle(kappa, classes):
    _, cand, labels = make_inputs(77, 2, 4, classes, width=4, seed=3)
    got = plr_mask(cand, labels, kappa, num_classes=classes, backend="cpu")
    assert torch.equal(got, oracle_mask(cand, labels, kappa, classes))


# ----------------------------------------------------------------------------- reference loss
@pytest.mark.parametrize("flat", [True, False])
@pytest.mark.parametrize(
    "batch,views,classes,kappa",
    [(2, 2, 10, 0), (16, 2, 10, 1), (24, 3, 14, 2), (32, 8, 50, 3), (40, 2, 100, 2)],
)
def test_reference_vs_oracle(flat, batch, views, classes, kappa):
    feats, cand, labels = make_inputs(batch, views, 16, classes, seed=batch)
    tau, tau_b = (1.0, 1.0) if flat else (0.5, 0.7)
    objective, value, n_valid, grad = oracle_grad(
        feats, cand, labels, kappa, classes, tau, tau_b, flat
    )
    st, got_grad = run_op(feats, cand, labels, kappa, classes, flat, "reference", tau, tau_b)
    expected_loss = (1.0 if n_valid else 0.0) if flat else float(objective)
    torch.testing.assert_close(st.loss.detach().item(), expected_loss, rtol=1e-10, atol=1e-12)
    torch.testing.assert_close(st.value.detach().item(), float(value), rtol=1e-10, atol=1e-12)
    assert int(st.num_valid) == n_valid and bool(st.no_negatives) == (n_valid == 0)
    assert_rel(got_grad, grad, 1e-10)
    terms = plr_terms_reference(feats, cand, labels, kappa, classes, tau, tau_b, flat)
    torch.testing.assert_close(terms[0].item(), float(objective), rtol=1e-10, atol=1e-12)


@pytest.mark.parametrize("flat", [True, False])
def test_reference_gradcheck(flat):
    feats, cand, labels = make_inputs(6, 3, 5, 10, seed=1)

    def fn(f):  # the flat loss is identically 1, so check the objective that carries its gradient
        return plr_terms_reference(f, cand, labels, 1, 10, 0.7, 1.0, flat)[0]

    assert torch.autograd.gradcheck(fn, (feats.clone().requires_grad_(),))


def test_flat_drops_rows_without_negatives_and_all_overlap_is_zero():
    feats, _, _ = make_inputs(4, 2, 8, 10, seed=2)
    # S = {0,1}, {0,2}, {1,3}, {0,4}: sample 0 overlaps every other one, so its rows are dropped.
    cand = torch.tensor([[0], [0], [1], [0]])
    labels = torch.tensor([1, 2, 3, 4])
    for backend in ["reference"] + (["cpu"] if HAS_CPU else []):
        st = plr_loss(
            feats, cand, labels, kappa=1, num_classes=10, return_stats=True, backend=backend
        )
        assert st.n_neg.tolist() == [0, 2, 4, 2] * 2 and int(st.num_valid) == 6
        assert st.loss.item() == 1.0 and torch.isinf(st.lse[0]) and torch.isinf(st.lse[4])
        torch.testing.assert_close(st.value, oracle_terms(feats, cand, labels, 1, 10)[1])
    same = torch.tensor([[0], [0], [0], [0]])  # every set holds class 0: no negatives anywhere
    f = feats.clone().requires_grad_()
    for backend in ["reference"] + (["cpu"] if HAS_CPU else []):
        st = plr_loss(f, same, labels, kappa=1, num_classes=10, return_stats=True, backend=backend)
        assert st.loss.item() == 0.0 and bool(st.no_negatives) and int(st.num_valid) == 0
        (g,) = torch.autograd.grad(st.loss, f)
        assert torch.equal(g, torch.zeros_like(g))
        sup = plr_loss(f, same, labels, kappa=1, num_classes=10, flat=False, backend=backend)
        assert (
            abs(sup.item()) < 1e-12
        )  # V = 2, no negatives: each row's only column is its positive


def test_default_num_classes():
    feats, cand, labels = make_inputs(8, 2, 4, 10, seed=4)
    a = plr_loss(feats, cand, labels, kappa=2, flat=False, backend="reference")
    b = plr_loss(feats, cand, labels, kappa=2, flat=False, num_classes=1000, backend="reference")
    torch.testing.assert_close(a, b)


# -------------------------------------------------------------------------------- bad inputs
def _bad_cases():
    feats, cand, labels = make_inputs(4, 2, 8, 10)
    nan = feats.clone()
    nan[0, 0] = float("nan")
    inf = feats.clone()
    inf[1, 1] = float("inf")
    return {
        "1-D features": (feats[0], cand, labels, 1, {}),
        "rows not multiple": (feats[:7], cand, labels, 1, {}),
        "one view": (feats[:4], cand, labels, 1, {}),
        "nan": (nan, cand, labels, 1, {}),
        "inf": (inf, cand, labels, 1, {}),
        "kappa < 0": (feats, cand, labels, -1, {}),
        "kappa > width": (feats, cand, labels, 4, {}),
        "label range": (feats, cand, labels + 10, 1, {"num_classes": 10}),
        "negative label": (feats, cand, labels - 20, 1, {}),
        "cand range": (feats, cand + 10, labels, 1, {"num_classes": 10}),
        "1-D cand": (feats, cand[:, 0], labels, 1, {}),
        "labels shape": (feats, cand, labels[:3], 1, {}),
        "float labels": (feats, cand, labels.float(), 1, {}),
        "temperature": (feats, cand, labels, 1, {"temperature": 0.0}),
    }


@pytest.mark.parametrize("case", list(_bad_cases()))
@pytest.mark.parametrize("backend", ["auto", "reference"])
def test_bad_inputs_raise(case, backend):
    feats, cand, labels, kappa, kw = _bad_cases()[case]
    with pytest.raises(ValueError):
        plr_loss(feats, cand, labels, kappa=kappa, backend=backend, **kw)


def test_mask_bad_inputs_raise():
    _, cand, labels = make_inputs(4, 2, 8, 10)
    for kappa, kw in [(-1, {}), (4, {}), (1, {"num_classes": 3})]:
        with pytest.raises(ValueError):
            plr_mask(cand, labels, kappa, **kw)


def test_forced_unavailable_backend_raises():
    feats, cand, labels = make_inputs(4, 2, 8, 10)
    if HAS_CUDA:
        pytest.skip("CUDA kernel available")
    with pytest.raises(ValueError, match="cuda"):
        plr_loss(feats, cand, labels, kappa=1, backend="cuda")
    _, reasons = choose_backend(feats, cand, labels, 10)
    assert reasons["cuda"]
    with pytest.raises(ValueError, match="CPU kernel takes float32/float64"):
        plr_loss(feats.half(), cand, labels, kappa=1, backend="cpu")


# ------------------------------------------------------------------------------ compiled CPU
GRID = [  # (B, V, C, κ, flat): a sample of B ∈ {2,96,128,512}, V ∈ {2,8}, C, κ ∈ {0..3}
    (2, 2, 10, 0, True),
    (2, 8, 14, 3, False),
    (96, 2, 50, 1, True),
    (96, 8, 10, 2, False),
    (96, 2, 14, 3, True),
    (128, 2, 100, 3, True),
    (128, 8, 1000, 1, False),
    (128, 2, 200, 0, False),
    (512, 2, 200, 2, True),
    (512, 2, 14, 1, False),
    (512, 8, 100, 0, True),
    (300, 5, 50, 2, False),  # N = 1500: partial row and column blocks of the CPU tiling
    # each C and κ with both variants
    (96, 2, 100, 2, False),
    (128, 2, 1000, 3, True),
    (512, 8, 1000, 0, False),
    (2, 2, 50, 3, False),
    pytest.param(4096, 2, 100, 3, True, marks=pytest.mark.slow),  # ~7 s on an idle 2-core CPU
    pytest.param(4096, 2, 1000, 1, False, marks=pytest.mark.slow),
]


@needs_cpu
@pytest.mark.parametrize("batch,views,classes,kappa,flat", GRID)
def test_cpu_vs_float64_oracle(batch, views, classes, kappa, flat):
    feats, cand, labels = make_inputs(batch, views, 128, classes, width=3, seed=batch + classes)
    objective, value, n_valid, grad = oracle_grad(feats, cand, labels, kappa, classes, flat=flat)
    st, got = run_op(feats.float(), cand, labels, kappa, classes, flat, "cpu")
    expected = (1.0 if n_valid else 0.0) if flat else float(objective)
    torch.testing.assert_close(st.loss.detach().item(), expected, rtol=1e-5, atol=1e-7)
    torch.testing.assert_close(st.value.item(), float(value), rtol=1e-5, atol=1e-7)
    assert int(st.num_valid) == n_valid
    assert got.dtype == torch.float32
    assert_rel(got, grad, 1e-5)
    # and entry by entry: 1e-5 relative, with an absolute floor of 1e-6 of the largest entry for entries
    # that float32 sums cancel to near zero
    torch.testing.assert_close(got.double(), grad, rtol=1e-5, atol=1e-6 * float(grad.abs().max()))


@needs_cpu
@pytest.mark.parametrize("flat", [True, False])
def test_cpu_matches_reference_stats_float64(flat):
    feats, cand, labels = make_inputs(37, 3, 24, 14, seed=5)
    kw = dict(kappa=2, flat=flat, temperature=0.5, base_temperature=0.8, return_stats=True)
    f_ref, f_got = feats.clone().requires_grad_(), feats.clone().requires_grad_()
    ref = plr_loss(f_ref, cand, labels, backend="reference", **kw)
    got = plr_loss(f_got, cand, labels, backend="cpu", **kw)
    for a, b in zip(got, ref):
        torch.testing.assert_close(a, b, rtol=1e-10, atol=1e-12)
    ref.loss.backward()
    got.loss.backward()  # V = 3: the flat gradient subtracts the sum of both positives
    torch.testing.assert_close(f_got.grad, f_ref.grad, rtol=1e-10, atol=1e-12)


@needs_cpu
@pytest.mark.parametrize("flat", [True, False])
def test_cpu_gradcheck(flat):
    feats, cand, labels = make_inputs(5, 3, 6, 10, seed=6)

    def fn(f):  # the objective output carries the loss's gradient (flat: (1/R) Σ v_a)
        return torch.ops.lnl.plr_loss(f, cand, labels, 1, 10, 0.6, 0.9, flat)[0]

    assert torch.autograd.gradcheck(fn, (feats.clone().requires_grad_(),))
    f = feats.clone().requires_grad_()
    loss = plr_loss(
        f,
        cand,
        labels,
        kappa=1,
        num_classes=10,
        flat=flat,
        temperature=0.6,
        base_temperature=0.9,
        backend="cpu",
    )
    (got,) = torch.autograd.grad(loss, f)
    (want,) = torch.autograd.grad(fn(f), f)  # public flat loss: value 1, gradient of the objective
    torch.testing.assert_close(got, want, rtol=1e-12, atol=1e-14)
    if not flat:
        assert torch.autograd.gradcheck(
            lambda x: plr_loss(x, cand, labels, kappa=1, num_classes=10, flat=False, backend="cpu"),
            (f,),
        )


def sample_inputs(device, requires_grad):
    out = []
    for batch, views, kappa, flat in [(6, 2, 1, True), (5, 3, 0, False), (8, 2, 3, True)]:
        feats, cand, labels = make_inputs(
            batch, views, 8, 12, width=3, seed=batch, dtype=torch.float32, device=device
        )
        out.append((feats.requires_grad_(requires_grad), cand, labels, kappa, 12, 1.0, 1.0, flat))
    return out


@needs_cpu
def test_opcheck_cpu():
    for args in sample_inputs("cpu", True):
        torch.library.opcheck(torch.ops.lnl.plr_loss.default, args)
        torch.library.opcheck(torch.ops.lnl.plr_mask.default, (args[1], args[2], args[3], args[4]))


# ------------------------------------------------------------------------------------- CUDA
@pytest.mark.cuda
@pytest.mark.skipif(not HAS_CUDA, reason="needs a GPU and the CUDA plr_loss kernel")
@pytest.mark.parametrize("batch,views,classes,kappa,flat", GRID)
def test_cuda_vs_float64_oracle(batch, views, classes, kappa, flat):
    feats, cand, labels = make_inputs(batch, views, 128, classes, width=3, seed=batch + classes)
    objective, value, n_valid, grad = oracle_grad(feats, cand, labels, kappa, classes, flat=flat)
    for dtype, rel in [(torch.float32, 1e-5), (torch.bfloat16, 2e-3), (torch.float16, 2e-3)]:
        st, got = run_op(
            feats.to("cuda", dtype), cand.cuda(), labels.cuda(), kappa, classes, flat, "cuda"
        )
        torch.testing.assert_close(st.value.item(), float(value), rtol=rel, atol=rel)
        assert int(st.num_valid) == n_valid
        # 16-bit: the gradient against the oracle's at the same rounded features (the 2e-3 is the
        # kernel's error, not the inputs' rounding)
        want = (
            grad
            if dtype == torch.float32
            else oracle_grad(feats.to(dtype).double(), cand, labels, kappa, classes, flat=flat)[3]
        )
        assert_rel(got.cpu(), want, rel)
    assert torch.equal(
        plr_mask(cand.cuda(), labels.cuda(), kappa, num_classes=classes).cpu(),
        oracle_mask(cand, labels, kappa, classes),
    )


@pytest.mark.cuda
@pytest.mark.skipif(not HAS_CUDA, reason="needs a GPU and the CUDA plr_loss kernel")
def test_opcheck_cuda():
    for args in sample_inputs("cuda", True):
        torch.library.opcheck(torch.ops.lnl.plr_loss.default, args)


@pytest.mark.parametrize(
    "backend",
    [
        "reference",
        pytest.param(
            "cpu",
            marks=pytest.mark.skipif(
                not _ext.has_kernel("plr_loss", "CPU"), reason="lnl._C CPU kernel not built"
            ),
        ),
    ],
)
def test_validate_false_skips_the_value_checks_only(backend):
    feats = F.normalize(torch.randn(8, 4), dim=1)
    feats[0, 0] = float("nan")
    cand, labels = torch.tensor([[0], [1], [2], [3]]), torch.tensor([0, 1, 2, 3])
    with pytest.raises(ValueError, match="NaN"):
        plr_loss(feats, cand, labels, kappa=1, num_classes=4, backend=backend)
    out = plr_loss(
        feats,
        cand,
        labels,
        kappa=1,
        num_classes=4,
        validate=False,
        backend=backend,
        return_stats=True,
    )
    assert torch.isnan(out.value)  # the NaN flows through: nothing was read on the host
    with pytest.raises(ValueError, match="cand must be"):  # shapes are still checked
        plr_loss(feats, cand[:, 0], labels, kappa=1, num_classes=4, validate=False, backend=backend)
