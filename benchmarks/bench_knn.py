"""Benchmark of exact kNN label retrieval (``lnl.ops.knn_labels``) against its anchors.

Claim (issue 4): on 2 CPU cores the compiled CPU kernel is at least as fast as faiss-cpu flat
search (IndexFlatIP) and faster than the best chunked ``torch.mm`` + ``topk``; on a GPU the CUDA
kernel is compared with ``torch.mm`` + ``topk`` (fp32 and bf16, best chunk) and ``faiss.knn_gpu``.
Evidence: one run times every backend on the same inputs (median of ``--reps`` repetitions after a
warm-up; CUDA events on the GPU, ``perf_counter`` on the CPU) and prints time, ratio to the anchor
(faiss when installed, else torch fp32), achieved TFLOP/s (2*Q*N*D / time) and its fraction of a
large-GEMM rate measured in the same run, recall@k of the low-precision rows against our fp32
answer, peak GPU memory (on the CPU: peak resident memory beyond the inputs), and on the CPU the median process CPU seconds per call (other work on
shared cores inflates the wall time, much less the CPU time). Every case is the self-kNN of LRA-Diffusion (exclude_self, votes)
unless Q < N is printed, in which case the first Q points query all N.

    python benchmarks/bench_knn.py --quick --record               # CPU, N=20k, a few minutes
    python benchmarks/bench_knn.py --sizes 50000x128 50000x512 --ks 10 50 --reps 3 --record
    python benchmarks/bench_knn.py --device cuda --record          # the issue's GPU table
"""

from __future__ import annotations

import argparse
import ctypes
import datetime
import os
import statistics
import sys
import time
from pathlib import Path

import torch
import torch.nn.functional as F

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
from _machine import machine_line  # noqa: E402  (benchmarks/ is sys.path[0] for a script)

from lnl.ops.knn import knn_labels, votes_from_indices  # noqa: E402

RESULTS = ROOT / "benchmarks" / "RESULTS.md"
# The last: 256 queries against a large table (LRA's --knn_per_batch), where the CUDA kernel splits
# the keys across blocks; its "one slice" row times the kernel without the split.
GPU_SIZES = [
    "50000x128",
    "50000x512",
    "66000x768",
    "1000000x128:16384",
    "1000000x512:16384",
    "1000000x768:256",
]
CPU_SIZES = ["50000x128", "50000x512"]
CHUNKS = (256, 1024, 4096)
CLASSES = 10


def parse_size(text: str) -> tuple[int, int, int]:
    """'NxD' or 'NxD:Q' -> (Q, N, D)."""
    shape, _, q = text.partition(":")
    n, d = (int(v) for v in shape.split("x"))
    return (int(q) if q else n), n, d


def timed(fn, reps: int, device: str) -> float:
    """Median seconds of ``reps`` calls after one warm-up call."""
    fn()
    times = []
    for _ in range(reps):
        if device == "cuda":
            start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
            start.record()
            fn()
            end.record()
            torch.cuda.synchronize()
            times.append(start.elapsed_time(end) / 1e3)
        else:
            t0 = time.perf_counter()
            fn()
            times.append(time.perf_counter() - t0)
    return statistics.median(times)


def torch_mm_topk(queries, keys, labels, k: int, chunk: int):
    """The anchor: ``chunk`` query rows at a time, mm with all keys, topk (self masked if Q=N)."""
    idx = []
    for r0 in range(0, queries.shape[0], chunk):
        s = queries[r0 : r0 + chunk] @ keys.T
        if queries.shape[0] == keys.shape[0]:
            s.diagonal(r0).fill_(float("-inf"))  # query i is key i
        idx.append(s.topk(k, dim=1).indices)
    indices = torch.cat(idx)
    return indices, votes_from_indices(indices, labels, CLASSES)


def faiss_search(queries, keys, k: int, device: str):
    """faiss flat inner-product search for k+1 neighbours (the first is usually the point)."""
    import faiss

    if device == "cuda":
        import faiss.contrib.torch_utils  # noqa: F401  (lets knn_gpu take torch tensors)

        return faiss.knn_gpu(
            faiss.StandardGpuResources(), queries, keys, k + 1, metric=faiss.METRIC_INNER_PRODUCT
        )
    index = faiss.IndexFlatIP(keys.shape[1])
    index.add(keys.numpy())
    return index.search(queries.numpy(), k + 1)


def has_faiss(device: str) -> bool:
    try:
        import faiss
    except ImportError:
        return False
    return device == "cpu" or (hasattr(faiss, "knn_gpu") and faiss.get_num_gpus() > 0)


def gemm_rate(device: str, dtype: torch.dtype) -> float:
    """Measured FLOP/s of a large square GEMM on this device (the TFLOP/s column's roofline)."""
    n = 8192 if device == "cuda" else 2048
    a = torch.randn(n, n, device=device, dtype=dtype)
    b = torch.randn(n, n, device=device, dtype=dtype)
    return 2 * n**3 / timed(lambda: a @ b, 10, device)


def recall(a: torch.Tensor, b: torch.Tensor) -> float:
    """Fraction of the rows of ``a``'s neighbours also found in the same row of ``b``."""
    hits = (a.unsqueeze(2) == b.unsqueeze(1)).any(2).sum().item()
    return hits / a.numel()


def sm_count() -> int:
    return torch.cuda.get_device_properties(0).multi_processor_count


def one_slice(fn, n: int):
    """fn with the CUDA kNN's keys in one slice (LNL_KNN_SLICE_KEYS, read at each call): the kernel
    as it was before it split the keys of few queries across blocks."""

    def run():
        saved = os.environ.get("LNL_KNN_SLICE_KEYS")
        os.environ["LNL_KNN_SLICE_KEYS"] = str(n)
        try:
            return fn()
        finally:
            if saved is None:
                del os.environ["LNL_KNN_SLICE_KEYS"]
            else:
                os.environ["LNL_KNN_SLICE_KEYS"] = saved

    return run


def best_chunk(queries, keys, labels, k: int, device: str) -> int:
    """The chunk (query rows per mm) with the lowest single timed run on a slice of the queries."""
    sub = queries[: min(queries.shape[0], 8192)]
    times = {
        c: timed(lambda c=c: torch_mm_topk(sub, keys, labels, k, c), 1, device) for c in CHUNKS
    }
    return min(times, key=times.get)


def measure(name: str, fn, reps: int, device: str):
    """(name, seconds, peak MiB or None, result, CPU seconds or None) for one backend.

    On the CPU the median process CPU time per call is kept too: unlike the wall time it hardly
    moves when other processes compete for the same cores.
    """
    if device == "cuda":
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
    seconds = timed(fn, reps, device)
    peak = torch.cuda.max_memory_allocated() / 2**20 if device == "cuda" else _cpu_peak_mib(fn)
    cpu = None
    if device == "cpu":
        cpu = statistics.median(_cpu_seconds(fn) for _ in range(min(reps, 3)))
    return name, seconds, peak, fn(), cpu


def _status_kib(field: str) -> int:
    line = next(
        ln
        for ln in Path("/proc/self/status").read_text().splitlines()
        if ln.startswith(field + ":")
    )
    return int(line.split()[1])


def _cpu_peak_mib(fn) -> float | None:
    """Peak resident memory of one fn() call beyond what was resident before it, MiB (Linux: the heap's
    free memory goes back to the system first, so the call cannot reuse it unseen, and the high-water
    mark is reset through /proc/self/clear_refs); None where that is not possible."""
    try:
        ctypes.CDLL("libc.so.6").malloc_trim(0)
        Path("/proc/self/clear_refs").write_text("5")
        before = _status_kib("VmRSS")
        fn()
        return max(_status_kib("VmHWM") - before, 0) / 1024
    except (OSError, StopIteration):
        return None


def _cpu_seconds(fn) -> float:
    t0 = time.process_time()
    fn()
    return time.process_time() - t0


def run_case(q: int, n: int, d: int, k: int, args) -> list[dict]:
    """Every backend on one (Q, N, D, k); returns printable rows."""
    g = torch.Generator().manual_seed(0)
    keys = F.normalize(torch.randn(n, d, generator=g), dim=1).to(args.device)
    labels = torch.randint(0, CLASSES, (n,), generator=g).to(args.device)
    queries = keys[:q]
    dtypes = [torch.float32, torch.bfloat16] if args.device == "cuda" else [torch.float32]
    rows = []
    for dtype in dtypes:
        kq, kk = queries.to(dtype), keys.to(dtype)
        tag = str(dtype).replace("torch.", "")

        def ours(kq=kq, kk=kk):
            return knn_labels(
                kq, kk, labels, k, CLASSES, metric="ip", exclude_self=q == n, backend=args.device
            )

        rows.append(measure(f"ours {tag}", ours, args.reps, args.device))
        if args.device == "cuda" and q < n and q < 64 * sm_count():  # the kernel splits the keys
            rows.append(
                measure(f"ours {tag} one slice", one_slice(ours, n), args.reps, args.device)
            )
        if args.device == "cuda":  # the GEMM + select variant that auto's tuner weighs against it

            def gemm(kq=kq, kk=kk):
                return knn_labels(
                    kq,
                    kk,
                    labels,
                    k,
                    CLASSES,
                    metric="ip",
                    exclude_self=q == n,
                    backend="cuda_gemm",
                )

            rows.append(measure(f"ours cuda_gemm {tag}", gemm, args.reps, args.device))
        chunk = best_chunk(kq, kk, labels, k, args.device)
        rows.append(
            measure(
                f"torch mm+topk {tag} (chunk {chunk})",
                lambda kq=kq, kk=kk, c=chunk: torch_mm_topk(kq, kk, labels, k, c),
                args.reps,
                args.device,
            )
        )
    if has_faiss(args.device):
        qf, kf = queries.float().contiguous(), keys.float().contiguous()
        rows.append(
            measure(
                "faiss " + ("knn_gpu" if args.device == "cuda" else "IndexFlatIP"),
                lambda: faiss_search(qf, kf, k, args.device),
                args.reps,
                args.device,
            )
        )
    return summarise(rows, q, n, d, k, args)


def summarise(rows, q: int, n: int, d: int, k: int, args) -> list[dict]:
    """Ratios to the anchor, TFLOP/s against the measured GEMM rate, recall of the bf16 rows."""
    torch_fp32 = next(r for r in rows if r[0].startswith("torch"))
    anchor = next((r for r in rows if r[0].startswith("faiss")), torch_fp32)
    exact = rows[0][3][0]  # our fp32 indices
    flops = 2.0 * q * n * d
    out = []
    for name, seconds, peak, result, cpu in rows:
        indices = result[0] if not name.startswith("faiss") else None
        rate = args.gemm["bf16" if "bfloat16" in name else "fp32"]
        out.append(
            {
                "case": f"Q={q} N={n} D={d} k={k}",
                "backend": name,
                "ms": seconds * 1e3,
                "ratio": seconds / anchor[1],
                "tflops": flops / seconds / 1e12,
                "of_gemm": flops / seconds / rate,
                "recall": recall(indices.cpu(), exact.cpu())
                if indices is not None
                else float("nan"),
                "peak_mib": peak,
                "cpu_s": cpu,
            }
        )
    return out


def print_rows(rows: list[dict], anchor_name: str) -> None:
    print(
        f"{'case':28} {'backend':36} {'ms':>10} {'/' + anchor_name:>10} {'TFLOP/s':>8} "
        f"{'of GEMM':>8} {'recall':>7} {'peak MiB':>9} {'CPU s':>7}"
    )
    for r in rows:
        peak = f"{r['peak_mib']:.0f}" if r["peak_mib"] is not None else "-"
        cpu = f"{r['cpu_s']:.2f}" if r["cpu_s"] is not None else "-"
        print(
            f"{r['case']:28} {r['backend']:36} {r['ms']:10.1f} {r['ratio']:10.2f} "
            f"{r['tflops']:8.3f} {r['of_gemm']:8.2f} {r['recall']:7.4f} {peak:>9} {cpu:>7}"
        )


def device_name(device: str) -> str:
    if device == "cuda":
        return f"{torch.cuda.get_device_name()}; {machine_line()}"
    lines = Path("/proc/cpuinfo").read_text().splitlines()
    cpu = next(
        (line.split(":", 1)[1].strip() for line in lines if line.startswith("model name")), "cpu"
    )
    # Other processes share these cores: the load average says how quiet the machine was, and the
    # threads of each backend whether the anchor ran on as many cores as lnl (faiss is imported first).
    if has_faiss("cpu"):
        import faiss  # noqa: F401
    return f"{cpu}; {machine_line()} at start"


def record(rows: list[dict], args) -> None:
    """Append one row to benchmarks/RESULTS.md (created with a header if absent)."""
    if not RESULTS.exists():
        RESULTS.write_text(
            "# Measured results\n\n| date | device | what | command | numbers |\n"
            "|---|---|---|---|---|\n"
        )
    from lnl.engine.defaults import git_sha

    sha = git_sha(short=True)
    gemm = ", ".join(f"{key} GEMM {v / 1e12:.2f} TFLOP/s" for key, v in args.gemm.items())
    numbers = "; ".join(
        f"{r['case']} {r['backend']}: {r['ms']:.1f} ms (x{r['ratio']:.2f}, "
        f"{r['tflops']:.3f} TFLOP/s = {r['of_gemm']:.2f} of GEMM"
        + (f", recall {r['recall']:.4f}" if r["recall"] == r["recall"] else "")
        + (f", {r['cpu_s']:.2f} CPU s" if r["cpu_s"] is not None else "")
        + (f", {r['peak_mib']:.0f} MiB" if r["peak_mib"] is not None else "")
        + ")"
        for r in rows
    )
    line = (
        f"| {datetime.date.today()} | {args.device_name}, torch {torch.__version__}, "
        f"git {sha} | knn_labels self-kNN ip, votes C={CLASSES}; {gemm} | "
        f"`{' '.join(sys.argv)}` | {numbers} |\n"
    )
    with RESULTS.open("a") as fh:
        fh.write(line)


def main() -> None:
    p = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    p.add_argument("--sizes", nargs="+", default=None, help="NxD or NxD:Q (Q queries among N keys)")
    p.add_argument("--ks", type=int, nargs="+", default=[10, 50])
    p.add_argument("--reps", type=int, default=10)
    p.add_argument("--quick", action="store_true", help="CPU-sized: N=20000, D in {128, 512}")
    p.add_argument(
        "--record", action="store_true", help="append a row per case to benchmarks/RESULTS.md"
    )
    args = p.parse_args()
    if args.sizes is None:
        args.sizes = (
            ["20000x128", "20000x512"]
            if args.quick
            else (GPU_SIZES if args.device == "cuda" else CPU_SIZES)
        )
    args.gemm = {"fp32": gemm_rate(args.device, torch.float32)}
    if args.device == "cuda":
        args.gemm["bf16"] = gemm_rate(args.device, torch.bfloat16)
    args.device_name = device_name(args.device)
    print(
        f"# {args.device_name}; "
        + ", ".join(f"{k} GEMM {v / 1e12:.2f} TFLOP/s" for k, v in args.gemm.items())
    )
    for size in args.sizes:
        for k in args.ks:
            case = run_case(*parse_size(size), k, args)
            print_rows(case, "anchor")
            if args.record:  # a row per case: a run stopped by a time limit keeps what it measured
                record(case, args)


if __name__ == "__main__":
    main()
