"""knn_labels / knn_graph: the reference against independent oracles (float64 numpy brute force,
faiss-cpu), the compiled CPU kernel against the reference, and input validation."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from lnl import _ext
from lnl.ops import knn

METRICS = ("cosine", "ip", "l2")


def brute_force(q: np.ndarray, k_: np.ndarray, k: int, metric: str, exclude_self=False):
    """Float64 oracle: full score matrix, stable sort (ties by lower index)."""
    q, k_ = q.astype(np.float64), k_.astype(np.float64)
    if metric == "cosine":
        q = q / np.maximum(np.linalg.norm(q, axis=1, keepdims=True), 1e-12)
        k_ = k_ / np.maximum(np.linalg.norm(k_, axis=1, keepdims=True), 1e-12)
    if metric == "l2":
        s = np.sqrt(((q[:, None, :] - k_[None, :, :]) ** 2).sum(-1))
    else:
        s = q @ k_.T
    if exclude_self:
        np.fill_diagonal(s, np.inf if metric == "l2" else -np.inf)
    order = np.argsort(s if metric == "l2" else -s, axis=1, kind="stable")[:, :k]
    return order, np.take_along_axis(s, order, 1)


def data(n_q=37, n_k=203, d=9, c=7, seed=0, dtype=torch.float64):
    g = torch.Generator().manual_seed(seed)
    return (
        torch.randn(n_q, d, generator=g, dtype=dtype),
        torch.randn(n_k, d, generator=g, dtype=dtype),
        torch.randint(0, c, (n_k,), generator=g),
    )


@pytest.mark.parametrize("metric", METRICS)
@pytest.mark.parametrize("k", [1, 5, 202])
def test_reference_equals_float64_brute_force(metric, k):
    q, keys, labels = data()
    res = knn.knn_labels_reference(q, keys, labels, k, 7, metric=metric, chunk=8)
    idx, scores = brute_force(q.numpy(), keys.numpy(), k, metric)
    np.testing.assert_array_equal(res.indices.numpy(), idx)
    np.testing.assert_allclose(res.scores.numpy(), scores, rtol=1e-10, atol=1e-10)
    expected_votes = np.stack([np.bincount(labels.numpy()[row], minlength=7) for row in idx])
    np.testing.assert_array_equal(res.votes.numpy(), expected_votes)


@pytest.mark.parametrize("metric", METRICS)
def test_reference_matches_faiss(metric):
    faiss = pytest.importorskip("faiss")
    q, keys, labels = data(n_q=64, n_k=500, d=16, dtype=torch.float32)
    res = knn.knn_labels_reference(q, keys, labels, 10, 7, metric=metric)
    qn, kn = q.numpy().copy(), keys.numpy().copy()
    if metric == "cosine":
        faiss.normalize_L2(qn)
        faiss.normalize_L2(kn)
    index = faiss.IndexFlatL2(16) if metric == "l2" else faiss.IndexFlatIP(16)
    index.add(kn)
    dist, idx = index.search(qn, 10)
    expected = np.sqrt(np.maximum(dist, 0)) if metric == "l2" else dist
    np.testing.assert_allclose(res.scores.numpy(), expected, rtol=1e-4, atol=1e-4)
    # Random float data has no ties: the neighbour sets agree exactly.
    assert (np.sort(res.indices.numpy(), 1) == np.sort(idx, 1)).all()


@pytest.mark.parametrize("metric", METRICS)
def test_faiss_backend_equals_reference_without_ties(metric):
    pytest.importorskip("faiss")
    feats, _, labels = data(n_q=300, n_k=300, d=16, dtype=torch.float32)
    ref = knn.knn_graph(feats, labels, 8, num_classes=7, metric=metric, backend="reference")
    out = knn.knn_graph(feats, labels, 8, num_classes=7, metric=metric, backend="faiss")
    assert torch.equal(out.indices, ref.indices)  # random floats: no ties, the same order
    torch.testing.assert_close(out.scores, ref.scores, rtol=1e-4, atol=1e-4)
    assert torch.equal(out.votes, ref.votes)
    q, keys, key_labels = data(n_q=40, n_k=200, d=16, dtype=torch.float32)
    ref = knn.knn_labels(q, keys, key_labels, 5, 7, metric=metric, backend="reference")
    out = knn.knn_labels(q, keys, key_labels, 5, 7, metric=metric, backend="faiss")
    assert torch.equal(out.indices, ref.indices) and torch.equal(out.votes, ref.votes)


@pytest.mark.parametrize("offset", [100.0, 1000.0])
@pytest.mark.parametrize("backend", ["cpu", "faiss", pytest.param("cuda", marks=pytest.mark.cuda)])
def test_l2_far_from_the_origin_keeps_the_exact_neighbours(backend, offset):
    """The GEMM form q.k - |k|^2/2 cancels in float32 far from the origin (recall 0.27 at 1000 before
    the shift): the compiled and faiss backends shift both sets first (``l2_shift``)."""
    if backend == "faiss":
        pytest.importorskip("faiss")
    elif not _ext.has_kernel("knn_labels", backend.upper()) or (
        backend == "cuda" and not torch.cuda.is_available()
    ):
        pytest.skip(f"no {backend} kernel")
    dev = "cuda" if backend == "cuda" else "cpu"
    g = torch.Generator().manual_seed(5)
    keys = torch.randn(2000, 64, generator=g) + offset
    queries = torch.randn(200, 64, generator=g) + offset
    labels = torch.randint(0, 7, (2000,), generator=g)
    ref = knn.knn_labels(
        queries.double(), keys.double(), labels, 10, 7, metric="l2", backend="reference"
    )
    out = knn.knn_labels(
        queries.to(dev), keys.to(dev), labels.to(dev), 10, 7, metric="l2", backend=backend
    )
    assert torch.equal(out.indices.cpu(), ref.indices)
    torch.testing.assert_close(out.scores.double().cpu(), ref.scores, rtol=1e-5, atol=1e-5)
    graph = knn.knn_graph(
        keys.to(dev), labels.to(dev), 5, num_classes=7, metric="l2", backend=backend
    )
    assert torch.equal(
        graph.indices.cpu(),
        knn.knn_graph(
            keys.double(), labels, 5, num_classes=7, metric="l2", backend="reference"
        ).indices,
    )


def test_l2_shift_is_exact_on_integer_data_and_absent_near_the_origin():
    noise = torch.randint(-3, 4, (50, 6), generator=torch.Generator().manual_seed(0)).float()
    ints = noise + torch.tensor([0.0, 0, 0, 500, -800, 0.25])
    shift = knn.l2_shift(ints)
    assert torch.equal((ints - shift) + shift, ints)  # exact: no rounding in the shifted data
    # the shift is a whole number near each column's centre (the draw moves the centre by up to a unit)
    assert torch.equal(shift[:5], shift[:5].round())
    assert abs(shift[3] - 500) <= 1 and abs(shift[4] + 800) <= 1 and shift[0].abs() <= 1
    assert knn.l2_shift(torch.randn(100, 8, generator=torch.Generator().manual_seed(0)) * 5) is None


def test_faiss_backend_drops_self_even_behind_a_duplicate():
    pytest.importorskip("faiss")
    feats = torch.tensor([[0.0, 0.0], [0.0, 0.0], [5.0, 0.0], [9.0, 1.0]])
    out = knn.knn_graph(feats, torch.tensor([0, 1, 1, 0]), 2, metric="l2", backend="faiss")
    for i, row in enumerate(out.indices.tolist()):
        assert i not in row and len(set(row)) == 2
    assert set(out.indices[0].tolist()) == {1, 2} and set(out.indices[1].tolist()) == {0, 2}
    torch.testing.assert_close(out.scores[:, 0], torch.tensor([0.0, 0.0, 17**0.5, 17**0.5]))
    # three copies and k=1: faiss's 2 results may both be other copies (self pushed out); never self
    triple = torch.tensor([[1.0, 1.0]] * 3 + [[7.0, 7.0]])
    out = knn.knn_graph(triple, torch.tensor([0, 0, 0, 1]), 1, metric="l2", backend="faiss")
    assert [i not in row for i, row in enumerate(out.indices.tolist())] == [True] * 4
    assert out.indices[:3].lt(3).all() and out.scores[:3].eq(0).all()


def test_faiss_backend_without_faiss_says_how_to_install(monkeypatch):
    import sys

    monkeypatch.setitem(sys.modules, "faiss", None)  # import faiss -> ImportError
    feats, _, labels = data(n_q=20, n_k=20, d=4, dtype=torch.float32)
    with pytest.raises(ValueError, match="backend 'faiss' needs faiss"):
        knn.knn_graph(feats, labels, 3, num_classes=7, backend="faiss")


@pytest.mark.parametrize("backend", ["reference", "auto"])
def test_ties_break_by_lower_index_and_graph_excludes_self(backend):
    # Integer coordinates make every distance exact, so the twins tie bit for bit.
    base = torch.randint(-5, 6, (10, 4), generator=torch.Generator().manual_seed(0)).double()
    base[:, 0] += 20 * torch.arange(10)  # distinct points, far apart
    points = torch.cat([base, base, base])  # every point has two exact duplicates
    labels = torch.arange(30) % 3
    res = knn.knn_graph(points, labels, 2, metric="l2", backend=backend)
    for i in range(30):
        twins = [j for j in (i % 10, i % 10 + 10, i % 10 + 20) if j != i]
        assert res.indices[i].tolist() == twins
    assert not (res.indices == torch.arange(30)[:, None]).any()
    assert (res.scores == 0).all()


def test_chunking_does_not_change_the_result():
    q, keys, labels = data(dtype=torch.float32)
    a = knn.knn_labels_reference(q, keys, labels, 6, 7, chunk=1)
    b = knn.knn_labels_reference(q, keys, labels, 6, 7)
    # BLAS may block the product differently per chunk size: scores agree to rounding.
    assert torch.equal(a.indices, b.indices)
    torch.testing.assert_close(a.scores, b.scores)


needs_cpu_kernel = pytest.mark.skipif(
    not _ext.has_kernel("knn_labels", "CPU"), reason="lnl._C CPU kernel not built"
)


@needs_cpu_kernel
@pytest.mark.parametrize("metric", METRICS)
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_compiled_cpu_matches_reference(metric, dtype):
    q, keys, labels = data(n_q=300, n_k=5000, d=24, dtype=dtype)
    a = knn.knn_labels(q, keys, labels, 10, 7, metric=metric, backend="cpu")
    b = knn.knn_labels(q, keys, labels, 10, 7, metric=metric, backend="reference")
    torch.testing.assert_close(a.scores, b.scores, atol=knn.ATOL[dtype], rtol=knn.RTOL[dtype])
    assert torch.equal(a.indices, b.indices)
    assert torch.equal(a.votes, b.votes)


@needs_cpu_kernel
def test_compiled_cpu_opcheck():
    q, keys, labels = data(dtype=torch.float32)
    torch.library.opcheck(
        torch.ops.lnl.knn_labels.default, (q, keys, labels, 3, 7, "cosine", False, 0)
    )


def test_forced_unavailable_backend_lists_its_reasons():
    q, keys, labels = data(dtype=torch.float32)
    with pytest.raises(ValueError, match="backend 'cuda' cannot run inputs.*queries=\\(37, 9\\)"):
        knn.knn_labels(q, keys, labels, 3, 7, backend="cuda")
    chosen, reasons = knn.choose_backend(q, keys, labels, 3)
    assert chosen in ("cpu", "reference") and reasons["cuda"]


@pytest.mark.parametrize(
    "bad, match",
    [
        (dict(queries=torch.randn(5)), "must be 2-D"),
        (dict(keys=torch.randn(20, 3)), "D=4 but keys have D=3"),
        (dict(k=21), "k=21 must be in"),
        (dict(k=0), "k=0 must be in"),
        (dict(num_classes=3), "key_labels must lie in"),
        (dict(queries=torch.full((5, 4), float("nan"))), "NaN"),
        (dict(metric="cos"), "unknown metric"),
        (dict(key_labels=torch.zeros(19, dtype=torch.long)), "key_labels must be"),
        (dict(exclude_self=True), "exclude_self needs"),
    ],
)
def test_bad_input_raises_value_error(bad, match):
    kwargs = dict(
        queries=torch.randn(5, 4),
        keys=torch.randn(20, 4),
        key_labels=torch.arange(20) % 5,
        k=3,
        num_classes=5,
    )
    kwargs.update(bad)
    with pytest.raises(ValueError, match=match):
        knn.knn_labels(**kwargs)


# ---- the key table's checks and l2 shift, once per table ----


def _old_l2_shift(keys):
    """The shift as first written: statistics of a float64 copy of the whole table."""
    k64 = keys.double()
    mean, spread = k64.mean(0), k64.std(0, correction=0)
    step = torch.exp2(torch.floor(torch.log2(spread.clamp_min(1e-300))))
    return torch.where(spread > 0, torch.round(mean / step) * step, mean)


def _counted(monkeypatch):
    """Counts of the table statistics computed and of the synchronisations (``knn._fetch``)."""
    counts = {"stats": 0, "fetch": 0}
    shift64, fetch = knn._shift64, knn._fetch

    def counted_shift(keys):
        counts["stats"] += 1
        return shift64(keys)

    def counted_fetch(scalars):
        counts["fetch"] += 1
        return fetch(scalars)

    monkeypatch.setattr(knn, "_shift64", counted_shift)
    monkeypatch.setattr(knn, "_fetch", counted_fetch)
    return counts


@pytest.fixture
def few_stat_rows(monkeypatch):
    """Blocks of 7 rows (of 9 dimensions) in the shift's statistics: several blocks, a partial last."""
    monkeypatch.setattr(knn, "_STAT_ELEMENTS", 63)
    knn.clear_table_cache()
    yield
    knn.clear_table_cache()


def test_blockwise_shift_equals_the_float64_copy(few_stat_rows):
    g = torch.Generator().manual_seed(1)
    for keys in (
        torch.randn(200, 9, generator=g) * torch.rand(9, generator=g) * 10 + 1000,
        torch.randint(-3, 4, (101, 9), generator=g).float() + 500.0,
        torch.randn(50, 9, generator=g, dtype=torch.float64).exp() * 1e6,
    ):
        assert torch.equal(knn._shift64(keys), _old_l2_shift(keys))


@pytest.mark.parametrize("backend", ["cpu", "faiss"])
def test_a_known_key_table_is_checked_once_and_syncs_once(monkeypatch, few_stat_rows, backend):
    if backend == "faiss":
        pytest.importorskip("faiss")
    elif not _ext.has_kernel("knn_labels", "CPU"):
        pytest.skip("no cpu kernel")
    g = torch.Generator().manual_seed(2)
    keys, labels = torch.randn(300, 9, generator=g) + 1000, torch.randint(0, 7, (300,), generator=g)
    queries = [torch.randn(20, 9, generator=g) + 1000 for _ in range(3)]
    counts = _counted(monkeypatch)
    got = [knn.knn_labels(q, keys, labels, 5, 7, metric="l2", backend=backend) for q in queries]
    assert counts == {"stats": 1, "fetch": 3}  # one synchronisation per call, statistics once
    knn.knn_graph(keys, labels, 5, num_classes=7, metric="l2", backend=backend)
    assert counts == {"stats": 1, "fetch": 3}  # a self-search on a known table: none at all
    knn.clear_table_cache()
    for q, out in zip(queries, got):  # the cached path returns what an uncached call returns
        fresh = knn.knn_labels(q, keys.clone(), labels, 5, 7, metric="l2", backend=backend)
        assert all(torch.equal(a, b) for a, b in zip(out, fresh))
        ref = knn.knn_labels(
            q.double(), keys.double(), labels, 5, 7, metric="l2", backend="reference"
        )
        assert torch.equal(out.indices, ref.indices)


@pytest.mark.skipif(not _ext.has_kernel("knn_labels", "CPU"), reason="no cpu kernel")
def test_the_shifted_key_copy_is_made_once_per_table(monkeypatch, few_stat_rows):
    seen = []
    op = torch.ops.lnl.knn_labels
    monkeypatch.setattr(
        torch.ops.lnl, "knn_labels", lambda q, kk, *a: seen.append(kk) or op(q, kk, *a)
    )
    keys = torch.randn(100, 9, generator=torch.Generator().manual_seed(3)) + 1000
    labels = torch.arange(100) % 7
    for _ in range(2):
        knn.knn_labels(keys[:10] + 0.5, keys, labels, 3, 7, metric="l2", backend="cpu")
    assert seen[0] is seen[1] and seen[0] is not keys
    torch.testing.assert_close(seen[0] + knn.l2_shift(keys), keys, rtol=0, atol=0)


@pytest.mark.parametrize("change", ["nan key", "label out of range", "moved in place"])
def test_an_in_place_change_of_a_known_table_is_checked_again(few_stat_rows, change):
    g = torch.Generator().manual_seed(4)
    keys, labels = torch.randn(60, 9, generator=g) + 100, torch.randint(0, 5, (60,), generator=g)
    q = torch.randn(8, 9, generator=g) + 100
    before = knn.knn_labels(q, keys, labels, 3, 5, metric="l2")
    if change == "nan key":
        keys[17, 4] = float("nan")
        with pytest.raises(ValueError, match="keys contains NaN or inf"):
            knn.knn_labels(q, keys, labels, 3, 5, metric="l2")
        with pytest.raises(ValueError, match="queries contains NaN or inf"):
            knn.knn_graph(keys, labels, 3, num_classes=5, metric="l2")
    elif change == "label out of range":
        labels[9] = 5
        with pytest.raises(ValueError, match=r"got range \[0, 5\]"):
            knn.knn_labels(q, keys, labels, 3, 5, metric="l2")
    else:  # moved far away in place: a new shift, the same neighbours
        keys.add_(1e4)
        got = knn.knn_labels(q + 1e4, keys, labels, 3, 5, metric="l2")
        assert torch.equal(got.indices, before.indices)
