"""Exact k-nearest-neighbour label retrieval: ``knn_labels`` and the self-kNN ``knn_graph``.

For each query row, the ``k`` best keys under ``metric`` (ties broken by the lower key index), their
scores, and the histogram of their labels over ``num_classes`` classes. LRA-Diffusion draws one label
per sample from its neighbours' noisy labels plus its own (LRA-Diffusion
``utils/knn_utils.py``). Equivalent PyTorch for ``metric="cosine"``::

    s = F.normalize(queries) @ F.normalize(keys).T          # Tensor[Q, N], never built whole
    scores, indices = s.sort(dim=1, descending=True, stable=True)[..., :k]
    votes = F.one_hot(key_labels[indices], num_classes).sum(1).float()

Metrics: ``cosine`` and ``ip`` rank by similarity (descending); ``l2`` ranks by the Euclidean
distance (ascending, as ``torch.cdist`` in the original's ``knn()``), and ``scores`` are distances.
Validation reads every value (NaN/inf and label range checks). What depends on the key table (its
values are finite, its labels in range, the l2 shift and the shifted copy of the keys, see
``l2_shift``) is computed once per table and cached while the same tensor objects stay unchanged
(``check_values``): a call with a known table synchronises with the device once (the queries'
NaN/inf check), a call with a new table also once (every check fetched together), and a self-search
(``knn_graph``, queries given as the keys) on a known table not at all. The compiled CUDA op itself
never synchronises; ``auto``'s first-use check and measurements (once per process / shape bucket) do.

Backends: ``cuda`` and ``cpu`` (the compiled kernels, exact) and ``reference`` (pure PyTorch, exact),
picked by ``auto`` in that order. ``cuda_gemm`` (CUDA only: cuBLAS score tiles, then the tile
kernel's running top-k; k <= 256, float32/float16/bfloat16; not for float32 while TF32 or bf16
float32 matmuls are enabled, which would rank near-ties differently) is a candidate that ``auto``
measures against ``cuda`` on large problems, and runs when forced. ``faiss`` (flat indexes:
``faiss.knn_gpu`` for CUDA inputs when the installed faiss has GPU support, else ``faiss.knn``) runs
only when asked for: it is exact up to its own order among tied scores, and an optional dependency.
"""

from __future__ import annotations

import weakref
from collections import OrderedDict
from typing import NamedTuple

import torch
import torch.nn.functional as F

from lnl import _ext
from lnl.ops import _dispatch, _tune

OP = "knn_labels"
GEMM_OP = "knn_labels_gemm"  # the CUDA GEMM + select variant, backend "cuda_gemm"
# "cuda_gemm" after the tile kernel: the static rule (small problems) keeps the tile kernel, and the
# tuner measures both on large ones (see knn_cuda.cu's GEMM + select block for the design).
_dispatch.PRIORITIES[OP] = ("cuda", "cuda_gemm", "cpu", "reference")
_dispatch.VARIANTS[(OP, "cuda_gemm")] = (GEMM_OP, "cuda")
_GEMM_MAX_K = 256  # the running lists' capacity (knn_kernels.cuh's kMaxFastK)
METRICS = ("cosine", "ip", "l2")
# Scores agree with the float64 oracle to float32 rounding of a dot product of unit vectors.
ATOL = {torch.float32: 1e-5, torch.float64: 1e-10, torch.float16: 2e-3, torch.bfloat16: 1e-2}
RTOL = {torch.float32: 1e-5, torch.float64: 1e-10, torch.float16: 2e-3, torch.bfloat16: 1e-2}
# Query rows per block when chunk is not given: keeps each Q-block × N score tile near 64 MB.
_TILE_ELEMENTS = 1 << 24


class KnnResult(NamedTuple):
    indices: torch.Tensor  # Tensor[Q, k] int64
    scores: torch.Tensor  # Tensor[Q, k] float
    votes: torch.Tensor  # Tensor[Q, C] float32


def check_inputs(queries, keys, key_labels, k, num_classes, metric, exclude_self, chunk) -> None:
    """Raise ``ValueError`` naming the first problem with the arguments of ``knn_labels``."""
    check_arguments(queries, keys, key_labels, k, metric, exclude_self, chunk)
    check_values(queries, keys, key_labels, num_classes)


def check_arguments(queries, keys, key_labels, k, metric, exclude_self, chunk) -> None:
    """The checks that read no tensor values (shapes, dtypes, k, metric): no synchronisation."""
    if queries.dim() != 2 or keys.dim() != 2:
        raise ValueError(
            f"queries and keys must be 2-D, got {tuple(queries.shape)} and {tuple(keys.shape)}"
        )
    if queries.shape[1] != keys.shape[1]:
        raise ValueError(f"queries have D={queries.shape[1]} but keys have D={keys.shape[1]}")
    if key_labels.dim() != 1 or key_labels.shape[0] != keys.shape[0]:
        raise ValueError(
            f"key_labels must be Tensor[N={keys.shape[0]}], got {tuple(key_labels.shape)}"
        )
    if key_labels.dtype.is_floating_point or key_labels.dtype == torch.bool:
        raise ValueError(f"key_labels must be an integer tensor, got {key_labels.dtype}")
    if not queries.dtype.is_floating_point or not keys.dtype.is_floating_point:
        raise ValueError(
            f"queries and keys must be floating point, got {queries.dtype}, {keys.dtype}"
        )
    if metric not in METRICS:
        raise ValueError(f"unknown metric {metric!r}; expected one of {METRICS}")
    n_avail = keys.shape[0] - (1 if exclude_self else 0)
    if not 1 <= k <= n_avail:
        raise ValueError(
            f"k={k} must be in [1, {n_avail}] (N={keys.shape[0]} keys, exclude_self={exclude_self})"
        )
    if exclude_self and queries.shape[0] != keys.shape[0]:
        raise ValueError(
            f"exclude_self needs query i to be key i: Q={queries.shape[0]} != N={keys.shape[0]}"
        )
    if chunk is not None and chunk < 1:
        raise ValueError(f"chunk must be a positive number of query rows, got {chunk}")


# ---- per-table facts: checked (and the l2 shift computed) once per key table, not once per call ----
# id(tensor) -> (weak reference, signature, facts). A table is "the same" while the very tensor object
# is alive and its signature (storage address, offset, shape, strides, dtype, device and autograd's
# version counter, which every in-place write through torch bumps) is unchanged. Writes that bypass
# the version counter (``.data``, a NumPy or DLPack view) are not seen: clear_table_cache() after them.
_KEY_TABLES: OrderedDict[int, tuple[weakref.ref, tuple, dict]] = OrderedDict()
_MAX_KEY_TABLES = 8  # least recently used beyond this are dropped (each may hold a shifted copy)
# Rows per block of the shift's float64 statistics: 16M elements (128 MB in float64) at a time.
_STAT_ELEMENTS = 1 << 24


def clear_table_cache() -> None:
    """Forget every key table's checks and l2 shift (and free the shifted copies)."""
    _KEY_TABLES.clear()


def _signature(t: torch.Tensor) -> tuple:
    return (
        t.data_ptr(),
        t.storage_offset(),
        tuple(t.shape),
        t.stride(),
        t.dtype,
        t.device,
        t._version,
    )


def _facts(t: torch.Tensor) -> dict:
    """The cached facts of tensor ``t`` (a fresh dict when it is new or changed since)."""
    if t.is_inference() or torch.compiler.is_compiling():
        return {}  # no version counter to trust (inference tensors) or nothing to keep (tracing)
    key, sig = id(t), _signature(t)
    entry = _KEY_TABLES.get(key)
    if entry is not None and entry[0]() is t and entry[1] == sig:
        _KEY_TABLES.move_to_end(key)
        return entry[2]
    facts: dict = {}
    _KEY_TABLES[key] = (weakref.ref(t, lambda _, key=key: _KEY_TABLES.pop(key, None)), sig, facts)
    _KEY_TABLES.move_to_end(key)
    while len(_KEY_TABLES) > _MAX_KEY_TABLES:
        _KEY_TABLES.popitem(last=False)
    return facts


def _fetch(scalars: dict[str, torch.Tensor]) -> dict[str, int]:
    """Device scalars to host ints: one synchronisation per device involved (usually one)."""
    by_device: dict[torch.device, list[str]] = {}
    for name, t in scalars.items():
        by_device.setdefault(t.device, []).append(name)
    out = {}
    for names in by_device.values():
        values = torch.stack([scalars[n].to(torch.int64) for n in names]).tolist()
        out.update(zip(names, values))
    return out


def check_values(queries, keys, key_labels, num_classes, want_shift: bool = False):
    """Raise ``ValueError`` for NaN/inf inputs or labels outside [0, num_classes); with
    ``want_shift``, return the keys' l2 shift (float64 Tensor[D], see ``l2_shift``) or None.

    What depends on the keys (finite, their shift) and on the labels (range) is computed once per
    table and cached (``_facts``); every device value needed by this call is fetched in one
    synchronisation: the queries' NaN/inf check, plus a new table's facts. A call whose queries are
    the keys (``knn_graph``) on a known table does not synchronise at all.
    """
    table, labels = _facts(keys), _facts(key_labels)
    pending: dict[str, torch.Tensor] = {}
    if queries is not keys:
        pending["queries"] = torch.isfinite(queries).all()
    if "finite" not in table:
        pending["keys"] = _all_finite(keys)
    if want_shift and "shift" not in table:
        shift64 = _shift64(keys)
        pending["shift"] = (shift64 != 0).any()
    if "range" not in labels:
        empty = key_labels.numel() == 0
        pending["lo"] = key_labels.min() if not empty else key_labels.new_zeros(())
        pending["hi"] = key_labels.max() if not empty else key_labels.new_zeros(())
    got = _fetch(pending) if pending else {}
    if "keys" in got:
        table["finite"] = bool(got["keys"])
    if "shift" in got and table["finite"]:
        table["shift"] = shift64 if got["shift"] else None
    if "lo" in got:
        labels["range"] = None if key_labels.numel() == 0 else (got["lo"], got["hi"])
    lo_hi = labels["range"]
    if lo_hi is not None and (lo_hi[0] < 0 or lo_hi[1] >= num_classes):
        raise ValueError(
            f"key_labels must lie in [0, num_classes={num_classes}), got range "
            f"[{lo_hi[0]}, {lo_hi[1]}]"
        )
    for name, ok in (("queries", got.get("queries", table["finite"])), ("keys", table["finite"])):
        if not ok:
            raise ValueError(f"{name} contains NaN or inf")
    return table.get("shift") if want_shift else None


def _row_blocks(t: torch.Tensor):
    rows = max(1, _STAT_ELEMENTS // max(t.shape[1], 1))
    return (t[start : start + rows] for start in range(0, t.shape[0], rows))


def _all_finite(t: torch.Tensor) -> torch.Tensor:
    """A device bool: every value of ``t`` is finite (blocks of rows, no copy of the whole)."""
    ok = torch.ones((), dtype=torch.bool, device=t.device)
    for block in _row_blocks(t):
        ok &= torch.isfinite(block).all()
    return ok


def _block_rows(chunk: int | None, n_keys: int) -> int:
    return chunk if chunk else max(1, _TILE_ELEMENTS // max(n_keys, 1))


def knn_labels_reference(
    queries, keys, key_labels, k, num_classes, *, metric="cosine", exclude_self=False, chunk=None
) -> KnnResult:
    """Pure-PyTorch ``knn_labels``: blocks of query rows, a stable sort per row (exact tie order).

    Computes in the inputs' promoted dtype (at least float32). Memory is one block × N scores.
    """
    dtype = torch.promote_types(torch.promote_types(queries.dtype, keys.dtype), torch.float32)
    q, kk = queries.to(dtype), keys.to(dtype)
    if metric == "cosine":
        q, kk = F.normalize(q, dim=1), F.normalize(kk, dim=1)
    rows = _block_rows(chunk, kk.shape[0])
    out_idx, out_scores = [], []
    for start in range(0, q.shape[0], rows):
        block = q[start : start + rows]
        if metric == "l2":
            s = torch.cdist(
                block.unsqueeze(0), kk.unsqueeze(0), compute_mode="donot_use_mm_for_euclid_dist"
            )[0]
        else:
            s = block @ kk.T
        if exclude_self:
            fill = float("inf") if metric == "l2" else float("-inf")
            diag = torch.arange(start, start + block.shape[0], device=s.device)
            s[torch.arange(block.shape[0], device=s.device), diag] = fill
        vals, idx = s.sort(dim=1, descending=metric != "l2", stable=True)
        out_idx.append(idx[:, :k])
        out_scores.append(vals[:, :k])
    indices = (
        torch.cat(out_idx) if out_idx else torch.empty(0, k, dtype=torch.long, device=q.device)
    )
    scores = (
        torch.cat(out_scores) if out_scores else torch.empty(0, k, dtype=dtype, device=q.device)
    )
    return KnnResult(indices, scores, votes_from_indices(indices, key_labels, num_classes))


def votes_from_indices(
    indices: torch.Tensor, key_labels: torch.Tensor, num_classes: int
) -> torch.Tensor:
    """Histogram of the neighbours' labels: Tensor[Q, C] float32 from indices Tensor[Q, k]."""
    labels = key_labels.to(indices.device).long()[indices]
    votes = torch.zeros(indices.shape[0], num_classes, dtype=torch.float32, device=indices.device)
    return votes.scatter_add_(1, labels, torch.ones_like(labels, dtype=torch.float32))


def _knn_labels_fake(queries, keys, key_labels, k, num_classes, metric, exclude_self, chunk):
    q = queries.shape[0]
    score_dtype = torch.promote_types(torch.promote_types(queries.dtype, keys.dtype), torch.float32)
    return (
        queries.new_empty((q, k), dtype=torch.int64),
        queries.new_empty((q, k), dtype=score_dtype),
        queries.new_empty((q, num_classes), dtype=torch.float32),
    )


for _name in (OP, GEMM_OP):
    if _ext.has_op(_name):
        torch.library.register_fake(f"lnl::{_name}")(_knn_labels_fake)


def l2_shift(keys: torch.Tensor) -> torch.Tensor | None:
    """A per-dimension shift for ``metric="l2"`` on the compiled and faiss backends, or None.

    They rank by ``q·k − |k|²/2`` (one GEMM), which cancels catastrophically in float32 when the
    data sit far from the origin (recall 0.27 at an offset of 1000 on unit-variance data, RESULTS.md). Distances
    do not change when both sets move by the same vector, so both are moved near the keys' mean
    first. The shift is the mean rounded to a power-of-two grid no coarser than the keys' spread in
    that dimension: integer-valued data stay exact (their ties too), and a dimension whose mean is
    within half a grid step of 0 is not moved. ``knn_labels`` computes it once per key table
    (``check_values``); this function computes it afresh (one synchronisation).
    """
    shift = _shift64(keys)
    return shift.to(keys.dtype) if bool((shift != 0).any()) else None


def _shift64(keys: torch.Tensor) -> torch.Tensor:
    """``l2_shift``'s float64 Tensor[D] (zeros: no shift), without a float64 copy of the table: its
    mean and spread are two passes of float64 sums over blocks of rows, each block converted alone."""
    n, d = keys.shape
    total = torch.zeros(d, dtype=torch.float64, device=keys.device)
    for block in _row_blocks(keys):
        total += block.double().sum(0)
    mean = total / max(n, 1)
    squares = torch.zeros_like(total)
    for block in _row_blocks(keys):
        squares += (block.double() - mean).square_().sum(0)
    spread = (squares / max(n, 1)).sqrt_()
    step = torch.exp2(torch.floor(torch.log2(spread.clamp_min(1e-300))))
    return torch.where(spread > 0, torch.round(mean / step) * step, mean)


def _shifted(keys: torch.Tensor, work: torch.Tensor, shift64: torch.Tensor) -> torch.Tensor:
    """``work - shift`` for the key table ``keys`` (``work``: the keys in the working dtype), kept with
    the table's facts so that later calls with the same table reuse the copy."""
    table = _facts(keys)
    copy = table.get(("shifted", work.dtype))
    if copy is None:
        copy = work - shift64.to(work.dtype)
        if "finite" in table:  # not cached where the facts are not (inference tensors, tracing)
            table[("shifted", work.dtype)] = copy
    return copy


def knn_labels_faiss(
    queries, keys, key_labels, k, num_classes, *, metric="cosine", exclude_self=False
) -> KnnResult:
    """``knn_labels`` through a faiss flat (exhaustive) search, in float32.

    ``exclude_self`` asks faiss for ``k + 1`` neighbours and drops query i's own key (or the last one
    when a duplicate pushed it out). Scores are similarities (cosine, ip) or distances (l2: the square
    root of faiss's squared distances). Tied scores come in faiss's order, not by the lower index.

    Raises:
        ValueError: faiss is not installed.
    """
    try:
        import faiss
    except ImportError as exc:
        raise ValueError(
            "knn_labels: backend 'faiss' needs faiss (pip install faiss-cpu; the CUDA Docker image "
            f"has faiss-gpu) ({exc})"
        ) from exc
    q, kk = queries.float(), keys.float()
    if metric == "cosine":
        q, kk = F.normalize(q, dim=1), F.normalize(kk, dim=1)
    faiss_metric = faiss.METRIC_L2 if metric == "l2" else faiss.METRIC_INNER_PRODUCT
    want = k + (1 if exclude_self else 0)
    if q.is_cuda and hasattr(faiss, "StandardGpuResources"):
        import faiss.contrib.torch_utils  # noqa: F401  (knn_gpu takes torch tensors)

        scores, indices = faiss.knn_gpu(
            faiss.StandardGpuResources(), q.contiguous(), kk.contiguous(), want, metric=faiss_metric
        )
    else:
        d, i = faiss.knn(q.cpu().numpy(), kk.cpu().numpy(), want, metric=faiss_metric)
        scores, indices = torch.from_numpy(d).to(q.device), torch.from_numpy(i).to(q.device)
    indices = indices.long()
    if exclude_self:  # move the own key (if found) to the end, then keep k
        own = indices == torch.arange(indices.shape[0], device=indices.device)[:, None]
        order = own.to(torch.int8).argsort(dim=1, stable=True)
        indices, scores = indices.gather(1, order)[:, :k], scores.gather(1, order)[:, :k]
    if metric == "l2":
        scores = scores.clamp_min(0).sqrt()
    return KnnResult(indices, scores, votes_from_indices(indices, key_labels, num_classes))


def not_supported_reasons(backend: str, queries, keys, key_labels, k, metric) -> list[str]:
    """Why ``backend`` cannot run these inputs (empty when it can)."""
    reasons = _dispatch.compiled_reasons(OP, backend, queries.device)
    if backend == "reference":
        return reasons
    if keys.device != queries.device or key_labels.device != queries.device:
        reasons.append("queries, keys and key_labels are on different devices")
    if backend == "cpu" and queries.dtype not in (torch.float32, torch.float64):
        reasons.append(f"the CPU kernel takes float32/float64, got {queries.dtype}")
    if backend == "cuda_gemm":
        reasons += _gemm_reasons(queries.dtype, k)
    return reasons


def _fp32_matmul_reduced() -> bool:
    """Whether cuBLAS may round float32 matmul inputs (TF32 or bf16)."""
    precision = getattr(torch.backends.cuda.matmul, "fp32_precision", None)
    if (
        precision is not None
    ):  # reflects both APIs; the legacy getters raise once the new one is used
        return precision not in ("none", "ieee")
    return (
        torch.backends.cuda.matmul.allow_tf32 or torch.get_float32_matmul_precision() != "highest"
    )


def _gemm_reasons(dtype: torch.dtype, k: int) -> list[str]:
    reasons = []
    if dtype not in (torch.float32, torch.float16, torch.bfloat16):
        reasons.append(f"the GEMM path takes float32/float16/bfloat16, got {dtype}")
    if k > _GEMM_MAX_K:
        reasons.append(f"the GEMM path keeps at most k={_GEMM_MAX_K} neighbours, got k={k}")
    if dtype == torch.float32 and _fp32_matmul_reduced():
        reasons.append(
            "float32 matmuls may use TF32/bf16 (torch.backends.cuda.matmul.fp32_precision, allow_tf32 "
            "or set_float32_matmul_precision), which would rank near-ties differently from the exact "
            "kernels"
        )
    return reasons


def choose_backend(
    queries,
    keys,
    key_labels,
    k,
    metric="cosine",
    requested="auto",
    call: _dispatch.Call | None = None,
) -> tuple[str, dict[str, list[str]]]:
    """The backend ``knn_labels`` would use, and why each higher-priority one was skipped (``call``:
    verify and measure, see ``_dispatch.choose``)."""
    reasons = {
        b: not_supported_reasons(b, queries, keys, key_labels, k, metric)
        for b in _dispatch.priority(OP)
    }
    inputs = _dispatch.describe(queries=queries, keys=keys, key_labels=key_labels)
    return _dispatch.choose(OP, requested, reasons, inputs, call), reasons


def knn_labels(
    queries: torch.Tensor,
    keys: torch.Tensor,
    key_labels: torch.Tensor,
    k: int,
    num_classes: int,
    *,
    metric: str = "cosine",
    exclude_self: bool = False,
    chunk: int | None = None,
    backend: str = "auto",
) -> KnnResult:
    """Exact kNN of each query among the keys, with the neighbours' label histogram.

    Args:
        queries: Tensor[Q, D] float.
        keys: Tensor[N, D] float, same D and device.
        key_labels: Tensor[N] integer labels in [0, num_classes).
        k: neighbours per query, 1 <= k <= N (N - 1 with exclude_self).
        num_classes: C, the histogram width.
        metric: "cosine" (inputs normalised once), "ip" or "l2" (Euclidean distance, ascending).
        exclude_self: query i never matches key i (self-kNN; needs Q == N).
        chunk: query rows per block; None picks a block of about 16M scores.
        backend: "auto", "cuda", "cuda_gemm", "cpu", "reference" (see ``choose_backend`` and the
            module docstring) or "faiss" (only when asked for; ties in faiss's order, see
            ``knn_labels_faiss``).

    Returns:
        KnnResult(indices Tensor[Q, k] int64, scores Tensor[Q, k], votes Tensor[Q, C] float32),
        best first, ties broken by the lower key index.
    """
    check_arguments(queries, keys, key_labels, k, metric, exclude_self, chunk)
    want_shift = metric == "l2" and backend != "reference"  # the reference needs none
    shift64 = check_values(queries, keys, key_labels, num_classes, want_shift)
    table, self_search = keys, queries is keys
    if queries.dtype != keys.dtype:  # float32 queries, float64 keys: both in the wider type
        dtype = torch.promote_types(queries.dtype, keys.dtype)
        queries, keys = queries.to(dtype), keys.to(dtype)
    if backend == "faiss":
        chosen = backend
    else:
        run = lambda b: knn_labels(
            queries,
            keys,
            key_labels,
            k,
            num_classes,
            metric=metric,
            exclude_self=exclude_self,
            chunk=chunk,
            backend=b,
        )
        shape = f"{queries.dtype}|{metric}|{exclude_self}|{_tune.bucket(queries.shape[0], *keys.shape, k)}"
        work = queries.shape[0] * keys.shape[0] * keys.shape[1]
        call = _dispatch.Call(queries.device, queries.dtype, shape, work, run)
        chosen = choose_backend(queries, keys, key_labels, k, metric, backend, call)[0]
    if chosen == "reference":  # exact distances, no shift needed
        return knn_labels_reference(
            queries,
            keys,
            key_labels,
            k,
            num_classes,
            metric=metric,
            exclude_self=exclude_self,
            chunk=chunk,
        )
    if shift64 is not None:
        keys = _shifted(table, keys, shift64)
        queries = keys if self_search else queries - shift64.to(queries.dtype)
    if chosen == "faiss":
        return knn_labels_faiss(
            queries, keys, key_labels, k, num_classes, metric=metric, exclude_self=exclude_self
        )
    op = torch.ops.lnl.knn_labels_gemm if chosen == "cuda_gemm" else torch.ops.lnl.knn_labels
    out = op(
        queries.contiguous(),
        keys.contiguous(),
        key_labels.contiguous().long(),
        k,
        num_classes,
        metric,
        exclude_self,
        int(chunk or 0),
    )
    return KnnResult(*out)


def knn_graph(
    features: torch.Tensor,
    labels: torch.Tensor,
    k: int,
    *,
    num_classes: int | None = None,
    metric: str = "cosine",
    chunk: int | None = None,
    backend: str = "auto",
) -> KnnResult:
    """Self-kNN over a feature set, excluding each point itself (LRA-Diffusion's retrieval graph).

    Args:
        features: Tensor[N, D] float.
        labels: Tensor[N] integer (noisy) labels.
        k: neighbours per point, k <= N - 1.
        num_classes: C; defaults to labels.max() + 1.

    Returns:
        KnnResult with indices Tensor[N, k], scores Tensor[N, k], votes Tensor[N, C].
    """
    if num_classes is None:
        num_classes = int(labels.max()) + 1 if labels.numel() else 1
    return knn_labels(
        features,
        features,
        labels,
        k,
        num_classes,
        metric=metric,
        exclude_self=True,
        chunk=chunk,
        backend=backend,
    )
