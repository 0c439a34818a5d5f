"""Benchmark of the fused PLR loss (``lnl.ops.plr_loss``) against the dense PyTorch formulation.

Claim (issue 6): the fused op computes PLReMix's PLR loss
forward + backward without building the B×C one-hot, the B×B overlap or any (V·B)² tensor, so its
memory is O(V·B·D) and it runs where the dense formulation (``plr_loss_reference``, which builds
them as the original does) runs out of memory; on an H100 it should also be ≥ 3× faster from
B = 4096 up and no slower at B = 128.
Evidence: for each B, the median forward+backward time of every available backend and of the dense
baseline, measured in the same run (CUDA events on GPU, ``perf_counter`` on CPU, median of ``--reps``
after warm-up), and the peak memory of one forward+backward (CUDA: ``max_memory_allocated``; CPU:
the growth of the peak RSS (VmHWM) of a fresh subprocess over its inputs and warm-up). V = 2, D = 128, C = 100, κ = 3.

    python benchmarks/bench_plr.py --quick            # CPU, a few minutes
    python benchmarks/bench_plr.py --device cuda --sizes 128 1024 4096 16384 65536 --record
"""

from __future__ import annotations

import argparse
import datetime
import multiprocessing as mp
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

from lnl.ops import plr_loss, plr_loss_reference  # noqa: E402
from lnl.ops.plr import choose_backend  # noqa: E402

RESULTS = ROOT / "benchmarks" / "RESULTS.md"


def make_inputs(batch: int, args, device: str):
    g = torch.Generator().manual_seed(batch)
    feats = F.normalize(torch.randn(args.views * batch, args.dim, generator=g), dim=1)
    cand = torch.randn(batch, args.classes, generator=g).topk(args.kappa, dim=1).indices
    labels = torch.randint(0, args.classes, (batch,), generator=g)
    feats = feats.to(device, getattr(torch, args.dtype))
    return feats.requires_grad_(), cand.to(device), labels.to(device)


def step(name: str, feats, cand, labels, args) -> None:
    """One forward + backward of backend ``name`` ("dense" is the PyTorch formulation)."""
    kw = dict(kappa=args.kappa, num_classes=args.classes, flat=not args.supcon)
    if name == "dense":
        loss = plr_loss_reference(feats, cand, labels, **kw)
    else:
        loss = plr_loss(feats, cand, labels, backend=name, **kw)
    loss.backward()
    feats.grad = None


def time_ms(name: str, inputs, args) -> float:
    """Median forward+backward milliseconds over args.reps, after one warm-up."""
    cuda = inputs[0].is_cuda
    step(name, *inputs, args)
    times = []
    for _ in range(args.reps):
        if cuda:
            start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
            start.record()
            step(name, *inputs, args)
            end.record()
            torch.cuda.synchronize()
            times.append(start.elapsed_time(end))
        else:
            t0 = time.perf_counter()
            step(name, *inputs, args)
            times.append((time.perf_counter() - t0) * 1e3)
    return statistics.median(times)


def _status_kb(field: str) -> int:
    line = next(
        x for x in Path("/proc/self/status").read_text().splitlines() if x.startswith(field)
    )
    return int(line.split()[1])


def _cpu_peak_child(name: str, batch: int, args, queue) -> None:
    torch.set_num_threads(args.threads)
    inputs = make_inputs(batch, args, "cpu")
    step(name, *inputs, args)  # warm-up: one-time allocations (thread pools, BLAS buffers)
    Path("/proc/self/clear_refs").write_text("5")  # Linux: reset the peak RSS (VmHWM) to now
    base = _status_kb("VmRSS")
    step(name, *inputs, args)
    queue.put((_status_kb("VmHWM") - base) / 1024.0)


def peak_mb(name: str, batch: int, args, inputs) -> float:
    """Peak memory (MiB) of one forward+backward beyond the inputs."""
    if inputs[0].is_cuda:
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
        base = torch.cuda.memory_allocated()
        step(name, *inputs, args)
        torch.cuda.synchronize()
        return (torch.cuda.max_memory_allocated() - base) / 2**20
    ctx = mp.get_context("spawn")
    queue = ctx.Queue()
    proc = ctx.Process(target=_cpu_peak_child, args=(name, batch, args, queue))
    proc.start()
    proc.join()
    return queue.get() if proc.exitcode == 0 else float("nan")


def measure(name: str, batch: int, args, inputs) -> tuple[str, str]:
    if name == "dense" and batch > args.max_dense_batch:
        return "skipped", "skipped"
    try:
        ms = time_ms(name, inputs, args)
        mem = peak_mb(name, batch, args, inputs)
    except torch.OutOfMemoryError:
        return "OOM", "OOM"
    finally:
        if inputs[0].is_cuda:
            torch.cuda.empty_cache()
    return f"{ms:.3f}", f"{mem:.1f}"


def device_name(device: str) -> str:
    if device == "cuda":
        return f"{torch.cuda.get_device_name()}; {machine_line()}"
    cpu = next(
        (
            line.split(":", 1)[1].strip()
            for line in Path("/proc/cpuinfo").read_text().splitlines()
            if line.startswith("model name")
        ),
        "cpu",
    )
    return f"{cpu}; {machine_line()}"


def record(rows, args) -> None:
    """Appends one row to the table of benchmarks/RESULTS.md (created with its header if absent)."""
    from lnl.engine.defaults import git_sha

    sha = git_sha(short=True)
    if not RESULTS.exists():
        RESULTS.write_text(
            "# Measured results\n\n| date | device | what | command | numbers |\n"
            "|---|---|---|---|---|\n"
        )
    now = datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    what = (
        f"plr_loss fwd+bwd (median of {args.reps}, peak MiB beyond inputs) vs the dense PyTorch "
        f"formulation: V={args.views} D={args.dim} {args.dtype} C={args.classes} kappa={args.kappa} "
        f"flat={not args.supcon}; torch {torch.__version__}, git {sha}, "
        f"load average {os.getloadavg()[0]:.2f}"
    )
    numbers = "; ".join(f"B={b} {n}: {ms} ms, {mem} MiB" for b, n, ms, mem in rows)
    line = f"| {now} | {device_name(args.device)} | {what} | `python {' '.join(sys.argv)}` | {numbers} |\n"
    text = RESULTS.read_text()
    with RESULTS.open("a") as fh:
        fh.write(("" if text.endswith("\n") else "\n") + line)


def main() -> None:
    p = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    p.add_argument("--sizes", type=int, nargs="+", default=[128, 512, 1024, 2048, 4096, 8192])
    p.add_argument("--quick", action="store_true", help="B in 128..4096, 5 reps less")
    p.add_argument("--views", type=int, default=2)
    p.add_argument("--dim", type=int, default=128)
    p.add_argument("--dtype", default="float32", choices=["float32", "float16", "bfloat16"])
    p.add_argument("--classes", type=int, default=100)
    p.add_argument("--kappa", type=int, default=3)
    p.add_argument("--supcon", action="store_true", help="flat=False (SupCon form)")
    p.add_argument("--reps", type=int, default=10)
    p.add_argument("--threads", type=int, default=torch.get_num_threads())
    p.add_argument(
        "--max-dense-batch", type=int, default=8192, help="skip the dense baseline above"
    )
    p.add_argument("--record", action="store_true", help="append a line to benchmarks/RESULTS.md")
    args = p.parse_args()
    if args.quick:
        args.sizes = [128, 512, 1024, 2048, 4096]
    torch.set_num_threads(args.threads)
    rows = []
    print(f"# {device_name(args.device)}")
    print(f"{'B':>7} {'backend':>9} {'fwd+bwd ms':>12} {'peak MiB':>10}")
    for batch in args.sizes:
        inputs = make_inputs(batch, args, args.device)
        compiled = [b for b in ("cuda", "cpu") if not choose_backend(*inputs, args.classes)[1][b]]
        for name in compiled + ["dense"]:
            ms, mem = measure(name, batch, args, inputs)
            rows.append((batch, name, ms, mem))
            print(f"{batch:>7} {name:>9} {ms:>12} {mem:>10}", flush=True)
    if args.record:
        record(rows, args)


if __name__ == "__main__":
    main()
