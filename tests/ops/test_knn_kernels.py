"""Compiled ``lnl::knn_labels`` kernels (CPU, and CUDA when a GPU is present) against oracles.

Oracles: a float64 NumPy brute force (stable order: ties by the lower key index), the PyTorch
reference ``knn_labels_reference``, and faiss-cpu flat indexes. Float32 kernels cannot match a
float64 order where two true scores are closer than float32 rounding, so ``assert_matches_oracle``
demands equal indices at every rank whose float64 score is separated by more than ``tol`` from every
*different* score (exact ties must come out by ascending index), and everywhere else that the
returned neighbour's true score equals the oracle's score at that rank within ``tol``.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch

from lnl import _ext
from lnl.ops.knn import ATOL, RTOL, knn_graph, knn_labels, knn_labels_reference

OP = "knn_labels"
needs_cpu_kernel = pytest.mark.skipif(
    not _ext.has_kernel(OP, "CPU"), reason="lnl._C has no CPU kernel for lnl::knn_labels"
)
needs_cuda_kernel = pytest.mark.skipif(
    not (torch.cuda.is_available() and _ext.has_kernel(OP, "CUDA")),
    reason="needs a GPU and the CUDA kernel of lnl::knn_labels",
)


def oracle_scores(
    queries: torch.Tensor, keys: torch.Tensor, metric: str, exclude_self: bool
) -> np.ndarray:
    """Float64 score matrix Tensor[Q, N] as 'higher is better' (l2: minus the distance)."""
    q, k = queries.double().numpy(), keys.double().numpy()
    if metric == "cosine":
        q = q / np.maximum(np.linalg.norm(q, axis=1, keepdims=True), 1e-12)
        k = k / np.maximum(np.linalg.norm(k, axis=1, keepdims=True), 1e-12)
    if metric == "l2":  # exact differences, a few rows at a time to bound memory
        s = np.concatenate(
            [
                -np.sqrt(((q[i : i + 16, None, :] - k[None]) ** 2).sum(-1))
                for i in range(0, q.shape[0], 16)
            ]
            or [np.zeros((0, k.shape[0]))]
        )
    else:
        s = q @ k.T
    if exclude_self:
        np.fill_diagonal(s, -np.inf)
    return s


def assert_matches_oracle(
    indices, scores, s: np.ndarray, k: int, metric: str, tol: float, exact_ties: bool = True
) -> None:
    """Check a kNN answer against the float64 score matrix ``s`` (see the module docstring).

    With ``exact_ties=False`` equal float64 scores count as ambiguous too (cosine of different
    vectors can be equal in exact arithmetic but round differently in float32).
    """
    idx = indices.cpu().numpy()
    got = scores.cpu().double().numpy()
    sign = -1.0 if metric == "l2" else 1.0
    order = np.lexsort((np.broadcast_to(np.arange(s.shape[1]), s.shape), -s), axis=1)[:, :k]
    best = np.take_along_axis(s, order, 1)
    assert idx.shape == (s.shape[0], k)
    np.testing.assert_allclose(sign * got, best, atol=tol, rtol=tol)
    np.testing.assert_allclose(np.take_along_axis(s, idx, 1), best, atol=tol, rtol=tol)
    for r in range(s.shape[0]):
        assert len(set(idx[r].tolist())) == k, f"row {r} repeats a neighbour"
        row = np.sort(s[r])
        lo = np.searchsorted(row, best[r] - tol * (1 + np.abs(best[r])), side="left")
        hi = np.searchsorted(row, best[r] + tol * (1 + np.abs(best[r])), side="right")
        exact = np.searchsorted(row, best[r], "right") - np.searchsorted(row, best[r], "left")
        exact = exact if exact_ties else 1
        clear = (hi - lo) == exact  # nothing but exact ties within tol of this rank's score
        np.testing.assert_array_equal(idx[r][clear], order[r][clear], err_msg=f"row {r}")


def assert_duplicates_in_index_order(indices, keys: torch.Tensor, exclude_self: bool) -> None:
    """Ties by lower index: a returned key's identical copies with lower indices come before it."""
    _, group = torch.unique(keys, dim=0, return_inverse=True)
    for r, row in enumerate(indices.cpu().tolist()):
        pos = {key: j for j, key in enumerate(row)}
        for j, key in enumerate(row):
            for other in torch.nonzero(group[:key] == group[key]).flatten().tolist():
                if exclude_self and other == r:
                    continue
                assert pos.get(other, len(row)) < j, f"row {r}: key {other} should precede {key}"


def assert_votes(indices, votes, key_labels, num_classes: int) -> None:
    labels = key_labels[indices.cpu()]
    expected = torch.stack([torch.bincount(row, minlength=num_classes) for row in labels]).float()
    torch.testing.assert_close(votes.cpu(), expected, atol=0, rtol=0)


def tol_for(dtype: torch.dtype) -> float:
    return 1e-10 if dtype == torch.float64 else 2e-5


# (Q, N, D, k, exclude_self): N and Q off every tile size (12 rows, 32 keys, key blocks),
# k=1 and k=N-1.
SHAPES = [
    (1, 1, 3, 1, False),
    (37, 101, 13, 5, False),
    (101, 101, 7, 100, True),
    (50, 300, 64, 1, True),
    (130, 1100, 129, 17, False),
    (25, 517, 512, 50, False),
    (200, 200, 1, 3, True),
]


@needs_cpu_kernel
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("metric", ["cosine", "ip", "l2"])
@pytest.mark.parametrize("shape", SHAPES, ids=lambda s: "x".join(map(str, s)))
def test_cpu_kernel_matches_float64_oracle(shape, metric, dtype):
    nq, n, d, k, exclude_self = shape
    g = torch.Generator().manual_seed(hash(shape) % 1000)
    keys = torch.randn(n, d, generator=g, dtype=dtype)
    queries = keys if exclude_self else torch.randn(nq, d, generator=g, dtype=dtype)
    labels = torch.randint(0, 10, (n,), generator=g)
    out = knn_labels(
        queries, keys, labels, k, 10, metric=metric, exclude_self=exclude_self, backend="cpu"
    )
    assert out.indices.dtype == torch.int64 and out.scores.dtype == dtype
    s = oracle_scores(queries, keys, metric, exclude_self)
    assert_matches_oracle(out.indices, out.scores, s, k, metric, tol_for(dtype))
    assert_votes(out.indices, out.votes, labels, 10)
    ref = knn_labels_reference(
        queries, keys, labels, k, 10, metric=metric, exclude_self=exclude_self
    )
    torch.testing.assert_close(out.scores, ref.scores, atol=ATOL[dtype], rtol=RTOL[dtype])


@needs_cpu_kernel
@pytest.mark.parametrize("metric", ["cosine", "ip", "l2"])
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_cpu_kernel_duplicate_points_break_ties_by_lower_index(metric, dtype):
    # Small integers: every float32 dot product and distance is exact, so ties are real ties.
    g = torch.Generator().manual_seed(3)
    base = torch.randint(-3, 4, (40, 16), generator=g).to(dtype)
    keys = base[torch.randint(0, 40, (203,), generator=g)]  # every point repeated ~5 times
    queries = torch.cat([keys[:30], torch.randint(-3, 4, (17, 16), generator=g).to(dtype)])
    labels = torch.randint(0, 2, (203,), generator=g)
    for exclude_self, q in ((False, queries), (True, keys)):
        for k in (1, 7, 64, 202):
            out = knn_labels(
                q, keys, labels, k, 2, metric=metric, exclude_self=exclude_self, backend="cpu"
            )
            s = oracle_scores(q, keys, metric, exclude_self)
            exact_ties = metric != "cosine"  # distinct vectors may have equal cosines
            assert_matches_oracle(out.indices, out.scores, s, k, metric, tol_for(dtype), exact_ties)
            if metric != "cosine" or dtype == torch.float32:
                # Identical unit vectors: the fused float32 kernel computes every key column
                # with the same instructions, so copies tie exactly; BLAS (the float64 path)
                # may round columns differently, as it does in the reference.
                assert_duplicates_in_index_order(out.indices, keys, exclude_self)
            if metric != "cosine":  # exact arithmetic: the whole order is determined
                ref = knn_labels_reference(
                    q, keys, labels, k, 2, metric=metric, exclude_self=exclude_self
                )
                torch.testing.assert_close(out.indices, ref.indices, atol=0, rtol=0)
            assert_votes(out.indices, out.votes, labels, 2)


@needs_cpu_kernel
@pytest.mark.parametrize("num_classes", [1, 2, 1000])
def test_cpu_kernel_votes_are_label_histograms(num_classes):
    g = torch.Generator().manual_seed(num_classes)
    feats = torch.randn(400, 32, generator=g)
    labels = torch.randint(0, num_classes, (400,), generator=g)
    out = knn_graph(feats, labels, 25, num_classes=num_classes, backend="cpu")
    assert out.votes.shape == (400, num_classes) and out.votes.dtype == torch.float32
    assert_votes(out.indices, out.votes, labels, num_classes)
    torch.testing.assert_close(out.votes.sum(1), torch.full((400,), 25.0))
    assert not (out.indices == torch.arange(400)[:, None]).any()


@needs_cpu_kernel
def test_cpu_kernel_chunk_does_not_change_the_answer():
    g = torch.Generator().manual_seed(5)
    keys, queries = torch.randn(333, 24, generator=g), torch.randn(61, 24, generator=g)
    labels = torch.randint(0, 5, (333,), generator=g)
    base = knn_labels(queries, keys, labels, 9, 5, metric="l2", backend="cpu")
    for chunk in (1, 7, 12, 1000):
        out = knn_labels(queries, keys, labels, 9, 5, metric="l2", chunk=chunk, backend="cpu")
        for a, b in zip(out, base):
            torch.testing.assert_close(a, b, atol=0, rtol=0)


@needs_cpu_kernel
@pytest.mark.parametrize("metric", ["ip", "l2"])
def test_cpu_kernel_matches_faiss_flat(metric):
    faiss = pytest.importorskip("faiss")
    g = torch.Generator().manual_seed(11)
    keys, queries = torch.randn(2000, 48, generator=g), torch.randn(300, 48, generator=g)
    labels = torch.randint(0, 10, (2000,), generator=g)
    out = knn_labels(queries, keys, labels, 20, 10, metric=metric, backend="cpu")
    index = faiss.IndexFlatIP(48) if metric == "ip" else faiss.IndexFlatL2(48)
    index.add(keys.numpy())
    dist, idx = index.search(queries.numpy(), 20)
    faiss_scores = torch.from_numpy(dist if metric == "ip" else np.sqrt(np.maximum(dist, 0)))
    torch.testing.assert_close(out.scores, faiss_scores, atol=1e-4, rtol=1e-4)
    # faiss breaks near-ties in its own way; the sets agree wherever the float64 oracle is clear.
    s = oracle_scores(queries, keys, metric, False)
    assert_matches_oracle(torch.from_numpy(idx), faiss_scores, s, 20, metric, 1e-4)
    assert_matches_oracle(out.indices, out.scores, s, 20, metric, 2e-5)


@needs_cpu_kernel
def test_cpu_kernel_rejects_bad_arguments_with_their_values():
    keys, labels = torch.randn(10, 4), torch.zeros(10, dtype=torch.long)
    with pytest.raises(RuntimeError, match="k=11"):
        torch.ops.lnl.knn_labels(keys, keys, labels, 11, 3, "ip", False, 0)
    with pytest.raises(RuntimeError, match="key_labels must lie in"):
        torch.ops.lnl.knn_labels(keys, keys, labels + 5, 2, 3, "ip", False, 0)
    with pytest.raises(RuntimeError, match="metric"):
        torch.ops.lnl.knn_labels(keys, keys, labels, 2, 3, "dot", False, 0)
    with pytest.raises(RuntimeError, match="float32 or float64"):
        torch.ops.lnl.knn_labels(keys.half(), keys.half(), labels, 2, 3, "ip", False, 0)


def sample_inputs(device: str):
    g = torch.Generator().manual_seed(0)
    keys = torch.randn(70, 9, generator=g)
    queries = torch.randn(13, 9, generator=g)
    labels = torch.randint(0, 4, (70,), generator=g)
    for metric in ("cosine", "ip", "l2"):
        yield (queries.to(device), keys.to(device), labels.to(device), 5, 4, metric, False, 0)
        yield (keys.to(device), keys.to(device), labels.to(device), 69, 4, metric, True, 8)


@needs_cpu_kernel
def test_opcheck_cpu():
    for args in sample_inputs("cpu"):
        torch.library.opcheck(torch.ops.lnl.knn_labels.default, args)


# ------------------------------------------------------------------------------------------ CUDA
@pytest.mark.cuda
@needs_cuda_kernel
def test_opcheck_cuda():
    for args in sample_inputs("cuda"):
        torch.library.opcheck(torch.ops.lnl.knn_labels.default, args)


def cuda_matches_float64_oracle(shape, metric, backend, seed):
    """One random float32 problem on the GPU through ``backend``, against the float64 oracle."""
    nq, n, d, k, exclude_self = shape
    g = torch.Generator().manual_seed(seed)
    keys = torch.randn(n, d, generator=g)
    queries = keys if exclude_self else torch.randn(nq, d, generator=g)
    labels = torch.randint(0, 1000, (n,), generator=g)
    out = knn_labels(
        queries.cuda(),
        keys.cuda(),
        labels.cuda(),
        k,
        1000,
        metric=metric,
        exclude_self=exclude_self,
        backend=backend,
    )
    assert out.indices.is_cuda and out.scores.dtype == torch.float32
    s = oracle_scores(queries, keys, metric, exclude_self)
    assert_matches_oracle(out.indices, out.scores, s, k, metric, 5e-5)
    assert_votes(out.indices, out.votes, labels, 1000)


@pytest.mark.cuda
@needs_cuda_kernel
@pytest.mark.parametrize("metric", ["cosine", "ip", "l2"])
@pytest.mark.parametrize(
    "shape",
    SHAPES + [(300, 4099, 96, 256, False), (64, 3000, 40, 300, True)],
    ids=lambda s: "x".join(map(str, s)),
)
def test_cuda_fp32_matches_float64_oracle(shape, metric):
    cuda_matches_float64_oracle(shape, metric, "cuda", seed=7)


@pytest.mark.cuda
@needs_cuda_kernel
@pytest.mark.parametrize("metric", ["ip", "l2"])
def test_cuda_duplicate_points_break_ties_by_lower_index(metric):
    g = torch.Generator().manual_seed(3)
    base = torch.randint(-3, 4, (40, 16), generator=g).float()
    keys = base[torch.randint(0, 40, (203,), generator=g)]
    labels = torch.randint(0, 2, (203,), generator=g)
    for k in (1, 7, 202):
        out = knn_graph(keys.cuda(), labels.cuda(), k, num_classes=2, metric=metric, backend="cuda")
        ref = knn_labels_reference(keys, keys, labels, k, 2, metric=metric, exclude_self=True)
        torch.testing.assert_close(out.indices.cpu(), ref.indices, atol=0, rtol=0)
        assert_votes(out.indices, out.votes, labels, 2)


@pytest.mark.cuda
@needs_cuda_kernel
@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
def test_cuda_half_precision_recall(dtype):
    g = torch.Generator().manual_seed(9)
    feats = torch.randn(5000, 128, generator=g)
    labels = torch.randint(0, 10, (5000,), generator=g)
    exact = knn_graph(feats.cuda(), labels.cuda(), 10, num_classes=10, backend="cuda")
    low = knn_graph(feats.cuda().to(dtype), labels.cuda(), 10, num_classes=10, backend="cuda")
    hits = sum(len(set(a) & set(b)) for a, b in zip(exact.indices.tolist(), low.indices.tolist()))
    # The 0.999 is measured by the benchmark on its data; random 128-d data is harder.
    assert hits / exact.indices.numel() >= 0.99
    assert_votes(low.indices, low.votes, labels, 10)
    # Against float32 on the same rounded inputs only the kernel's own error remains: the 16-bit values
    # reach the tensor cores once-rounded (cosine scales the dot by float32 inverse norms).
    same = knn_graph(feats.to(dtype).float(), labels, 10, num_classes=10, backend="reference")
    hits = sum(
        len(set(a) & set(b)) for a, b in zip(same.indices.tolist(), low.indices.cpu().tolist())
    )
    assert hits / same.indices.numel() >= 0.999
    torch.testing.assert_close(low.scores.cpu(), same.scores, atol=1e-4, rtol=1e-4)


needs_gemm_kernel = pytest.mark.skipif(
    not (torch.cuda.is_available() and _ext.has_kernel("knn_labels_gemm", "CUDA")),
    reason="needs a GPU and the CUDA kernel of lnl::knn_labels_gemm",
)


@pytest.mark.cuda
@needs_gemm_kernel
def test_opcheck_cuda_gemm():
    for args in sample_inputs("cuda"):
        torch.library.opcheck(torch.ops.lnl.knn_labels_gemm.default, args)


@pytest.mark.cuda
@needs_gemm_kernel
@pytest.mark.parametrize("metric", ["cosine", "ip", "l2"])
@pytest.mark.parametrize("shape", [(300, 4099, 96, 256, False), (1000, 1000, 768, 10, True)])
def test_cuda_gemm_matches_float64_oracle(shape, metric):
    """cuBLAS score tiles + the running top-k (fp32 GEMM: TF32 off, as by default)."""
    cuda_matches_float64_oracle(shape, metric, "cuda_gemm", seed=8)


@pytest.mark.cuda
@needs_gemm_kernel
@pytest.mark.parametrize("dtype", [torch.float32, torch.float16, torch.bfloat16])
def test_cuda_gemm_equals_the_tile_kernel_on_integers(dtype):
    g = torch.Generator().manual_seed(3)
    base = torch.randint(-3, 4, (40, 72), generator=g).float()
    keys = base[torch.randint(0, 40, (5003,), generator=g)].to("cuda", dtype)
    labels = torch.randint(0, 2, (5003,), generator=g).cuda()
    for k in (1, 64, 256):
        args = (keys[:300], keys, labels, k, 2, "l2", False, 0)
        got, want = torch.ops.lnl.knn_labels_gemm(*args), torch.ops.lnl.knn_labels(*args)
        assert all(torch.equal(a, b) for a, b in zip(got, want)), k
