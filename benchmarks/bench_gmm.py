"""Benchmark of ``lnl.ops.gmm_fit`` / ``gmm_clean_prob`` against scikit-learn as the methods call it.

Claim: the compiled CPU kernel fits DivideMix's/PLReMix's 2-component GMM (k-means init + EM +
predict_proba) at least 20x faster than ``sklearn.mixture.GaussianMixture(n_components=2, max_iter=10,
tol=1e-2, reg_covar=5e-4)`` on the same 2 CPU cores, and one CUDA launch fits 1000 per-class
mixtures (goals on an H100: 50k 1-D fit under 200 us, 1000 x 2,400 under 2 ms).
Evidence: this script, same run and same inputs for every backend: median of ``--reps`` wall times
(perf_counter on CPU, CUDA events on GPU, after a warm-up) and, on CPU, of process CPU time (all
threads; robust to other jobs on a shared machine), plus max |p_ours - p_sklearn| and the
clean/noisy partition agreement (p > 0.5) for each backend, so speed is never reported without parity.

Inputs: 50% "noisy" per-sample losses (clean ~
Gamma(1, 0.05), noisy ~ N(2.5, 0.8) clipped at 0), shuffled, min-max normalised, float32; the 2-D
case stacks two independent columns. Cases: one 1-D fit on 50k and on 1M points, one 2-D fit on 1M,
and 1000 per-class 1-D fits of 2,400 points. sklearn fits each per-class problem separately (as a
per-class method would); its per-class time is one timed run of that loop (``--full-per-class``: the
median of ``--reps`` runs). ``dp64`` is max |p_ours - p_sklearn| with sklearn given float64 input:
sklearn computes in its input's dtype, so on 1M float32 points its own sums round at ~1e-3, while every
backend here accumulates in float64.

Run: ``python benchmarks/bench_gmm.py [--quick] [--record]``.
"""

from __future__ import annotations

import argparse
import datetime
import os
import platform
import statistics
import sys
import time
import warnings
from pathlib import Path

import numpy as np
import sklearn
import torch
from sklearn.mixture import GaussianMixture

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run from anywhere, installed or not
from _machine import machine_line  # noqa: E402  (benchmarks/ is sys.path[0] for a script)

from lnl.ops import gmm as gmm_mod  # noqa: E402
from lnl.ops import gmm_fit  # noqa: E402

SETTINGS = dict(max_iter=10, tol=1e-2, reg_covar=5e-4)
RESULTS = Path(__file__).with_name("RESULTS.md")


def losses(n: int, d: int, rng: np.random.Generator) -> np.ndarray:
    cols = []
    for _ in range(d):
        loss = np.concatenate(
            [rng.gamma(1.0, 0.05, n // 2), np.clip(rng.normal(2.5, 0.8, n - n // 2), 0, None)]
        )
        rng.shuffle(loss)
        cols.append((loss - loss.min()) / (loss.max() - loss.min()))
    return np.stack(cols, 1).astype(np.float32)


def timed(fn, reps: int, device: str) -> tuple[float, float, object]:
    """Median wall seconds of fn() over reps after one warm-up, median CPU seconds, last result.

    The process CPU time (all threads; NaN on GPU) is kept because on a shared, loaded machine
    wall time measures the scheduler as much as the code.
    """
    out = fn()
    times, cpu = [], []
    for _ in range(reps):
        if device == "cuda":
            start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
            start.record()
            out = fn()
            end.record()
            torch.cuda.synchronize()
            times.append(start.elapsed_time(end) / 1e3)
        else:
            t0, c0 = time.perf_counter(), time.process_time()
            out = fn()
            times.append(time.perf_counter() - t0)
            cpu.append(time.process_time() - c0)
    return statistics.median(times), statistics.median(cpu) if cpu else float("nan"), out


def sklearn_proba(x: np.ndarray) -> np.ndarray:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        gm = GaussianMixture(n_components=2, random_state=0, **SETTINGS).fit(x)
        return gm.predict_proba(x)


def backends() -> list[tuple[str, str]]:
    """(name, device) pairs; with CUDA also "cuda-fp64": the same data in float64, whose kernels keep
    the fp64 E-step (float32 takes the fp32 one, csrc/gmm/gmm_kernels.cuh), to measure what it brings;
    on sm_90+ also "cuda-blocks": the CUDA kernels with thread block clusters turned off
    (LNL_GMM_CLUSTERS=0), to measure what the clusters bring: one block per problem where a cluster
    would run (the 50k case; one problem over 64k points keeps its cooperative grid)."""
    found = [("reference", "cpu")]
    for b, dev in (("cpu", "cpu"), ("cuda", "cuda")):
        probe = torch.zeros(
            1, 4, 1, device=dev if dev == "cpu" or torch.cuda.is_available() else "cpu"
        )
        if not gmm_mod.not_supported_reasons(b, probe, 2):
            found.append((b, dev))
    if ("cuda", "cuda") in found:
        found.append(("cuda-fp64", "cuda"))
    if ("cuda", "cuda") in found and torch.cuda.get_device_capability()[0] >= 9:
        found.append(("cuda-blocks", "cuda"))
    return found


def fit_resp(x: torch.Tensor, backend: str) -> torch.Tensor:
    if backend == "cuda-fp64":  # x is float64 (run_case)
        return gmm_fit(x, seed=0, backend="cuda", **SETTINGS).resp
    if backend != "cuda-blocks":
        return gmm_fit(x, seed=0, backend=backend, **SETTINGS).resp
    os.environ["LNL_GMM_CLUSTERS"] = "0"  # read by the launcher at every call
    try:
        return gmm_fit(x, seed=0, backend="cuda", **SETTINGS).resp
    finally:
        del os.environ["LNL_GMM_CLUSTERS"]


def run_case(
    name: str, xs: np.ndarray, reps: int, sk_reps: int, full_per_class: bool
) -> list[dict]:
    """xs: [G, N, D] float32. Returns one row per backend (sklearn first)."""
    g = xs.shape[0]
    loop = lambda: np.stack([sklearn_proba(a) for a in xs])  # noqa: E731
    sk_t, sk_cpu, sk_p = timed(loop, sk_reps if g == 1 or full_per_class else 1, "cpu")
    sk_p64 = np.stack([sklearn_proba(a.astype(np.float64)) for a in xs])
    rows = [
        dict(
            case=name,
            backend="sklearn",
            ms=sk_t * 1e3,
            cpu_ms=sk_cpu * 1e3,
            speedup=1.0,
            cpu_speedup=1.0,
            dp=0.0,
            dp64=float(np.abs(sk_p - sk_p64).max()),
            agree=1.0,
        )
    ]
    for b, dev in backends():
        x = torch.from_numpy(xs.astype(np.float64) if b == "cuda-fp64" else xs).to(dev)
        t, cpu, res = timed(
            lambda x=x, b=b: fit_resp(x, b), reps if b != "reference" else max(3, reps // 3), dev
        )
        p = res.cpu().numpy()
        rows.append(
            dict(
                case=name,
                backend=b,
                ms=t * 1e3,
                speedup=sk_t / t,
                cpu_ms=cpu * 1e3,
                cpu_speedup=sk_cpu / cpu if dev == "cpu" else float("nan"),
                dp=float(np.abs(p - sk_p).max()),
                dp64=float(np.abs(p - sk_p64).max()),
                agree=float(((p[..., 0] > 0.5) == (sk_p[..., 0] > 0.5)).mean()),
            )
        )
    return rows


def device_name() -> str:
    cpu = next(
        (
            ln.split(":", 1)[1].strip()
            for ln in open("/proc/cpuinfo")
            if ln.startswith("model name")
        ),
        platform.processor(),
    )
    name = f"{cpu}; {machine_line()}"  # load average and each backend's threads (sklearn's BLAS/OpenMP too)
    return name + (f"; {torch.cuda.get_device_name()}" if torch.cuda.is_available() else "")


def record(rows: list[dict], command: str, cases: list[str]) -> None:
    """Append one row to RESULTS.md's table (date | device | what | command | numbers)."""
    from lnl.engine.defaults import git_sha

    sha = git_sha(short=True)
    if not RESULTS.exists():
        RESULTS.write_text(
            "# Measured results\n\n| date | device | what | command | numbers |\n|---|---|---|---|---|\n"
        )
    load = open("/proc/loadavg").read().split()[0]
    what = (
        f"gmm_fit (k-means init + EM + predict_proba, DivideMix settings, float32) vs sklearn "
        f"{sklearn.__version__}: {', '.join(cases)}; torch {torch.__version__}, git {sha or 'uncommitted'}, "
        f"load average {load}"
    )
    numbers = "; ".join(
        f"{r['case']} {r['backend']}: {r['ms']:.2f} ms wall ({r['speedup']:.1f}x), "
        f"{r['cpu_ms']:.2f} ms CPU ({r['cpu_speedup']:.1f}x), max|dp| {r['dp']:.1e} "
        f"(float64 sklearn {r['dp64']:.1e}), agree {r['agree']:.4f}"
        for r in rows
    )
    date = f"{datetime.datetime.now(datetime.timezone.utc):%Y-%m-%d %H:%M} UTC"
    with RESULTS.open("a") as f:
        f.write(f"| {date} | {device_name()} | {what} | `{command}` | {numbers} |\n")


def main() -> None:
    parser = argparse.ArgumentParser(description="gmm_fit vs scikit-learn")
    parser.add_argument("--quick", action="store_true", help="50k and 100 x 2,400 only, fewer reps")
    parser.add_argument("--reps", type=int, default=10)
    parser.add_argument(
        "--full-per-class",
        action="store_true",
        help="time sklearn's per-class loop --reps times (default: once)",
    )
    parser.add_argument(
        "--record", action="store_true", help=f"append the results to {RESULTS.name}"
    )
    args = parser.parse_args()
    rng = np.random.default_rng(0)
    cases = [("50k 1-D", losses(50_000, 1, rng)[None])]
    if args.quick:
        cases.append(("100 x 2400 1-D", np.stack([losses(2400, 1, rng) for _ in range(100)])))
    else:
        cases += [
            ("1M 1-D", losses(1_000_000, 1, rng)[None]),
            ("1M 2-D", losses(1_000_000, 2, rng)[None]),
            ("1000 x 2400 1-D", np.stack([losses(2400, 1, rng) for _ in range(1000)])),
        ]
    rows = []
    print(f"{device_name()}; torch {torch.__version__}")
    print(
        f"{'case':16s} {'backend':10s} {'wall ms':>10s} {'speedup':>8s} {'CPU ms':>10s} {'speedup':>8s} "
        f"{'max|dp|':>9s} {'dp64':>9s} {'agree':>7s}"
    )
    for name, xs in cases:
        for r in run_case(name, xs, args.reps, args.reps, args.full_per_class):
            rows.append(r)
            print(
                f"{r['case']:16s} {r['backend']:10s} {r['ms']:10.2f} {r['speedup']:7.1f}x {r['cpu_ms']:10.2f} "
                f"{r['cpu_speedup']:7.1f}x {r['dp']:9.2e} {r['dp64']:9.2e} {r['agree']:7.4f}",
                flush=True,
            )
    if args.record:
        record(
            rows,
            " ".join(["python benchmarks/bench_gmm.py", *sys.argv[1:]]),
            [name for name, _ in cases],
        )


if __name__ == "__main__":
    main()
