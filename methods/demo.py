"""``make demo``: every method on ``digits16`` (scikit-learn's 1,797 real 8×8 handwritten digits at
16×16, unaugmented) with 60% symmetric noise, on whatever device is there.

With 60% of the labels wrong, plain cross-entropy (CE) on the methods' own schedule is the bar. On
these unaugmented images CE memorises the noise within the demo's 40 epochs: its test accuracy rises,
then falls far below its best as it fits the wrong labels, the regime the CIFAR papers' methods are
for (their CE baselines do the same in 300 epochs). Every method reads the same noisy labels
(``<out>/sym0.6.npz``, drawn once from ``--seed``); NMTune's rows are the other kind of noise, in
the encoder's pre-training (on the 32×32 ``digits``, its labels clean). Each run is its real
``main(args)`` in a fresh process with pinned threads, so a seed gives the same table twice (on the
same machine and build).

Prints a table (method, noise, best and last test accuracy, the margin over CE's last, wall time),
writes ``<out>/results.jsonl`` (one JSON object per run) and ``<out>/accuracy.png`` (test accuracy per
epoch). Each method's row is the ``demo`` of its entry in ``methods/registry.py``. Run as
``python -m methods.demo``.
"""

from __future__ import annotations

import argparse
import importlib
import json
import multiprocessing
import os
import shutil
import sys
import time
from pathlib import Path

import threadpoolctl
import torch

if __package__ in (None, ""):  # run as a script: make `lnl` and `methods` importable
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from lnl.data import get_dataset
from lnl.data.noise import make_noise
from lnl.data.noise_files import save_noise_file
from lnl.engine.logger import read_jsonl
from methods.registry import DEMO_DATASET, DEMO_EPOCHS, METHODS, DemoRun

NOISE = ("sym", 0.6)  # (make_noise type, rate) of the labels every method reads
BASELINE = "standard"  # CE: its last accuracy is the bar of the table
# NMTune's rows: the encoder's pre-training noise (their own flags say so)
PRETRAIN_NOISE = "30% sym"
# Measured at 60% sym, DEMO_EPOCHS, seeds 0-2 (RESULTS.md): CE 86.1-86.7% best, 58.1-66.9% last (it
# memorises the noise); every other row 26.7-40.8 points above CE's last, at every seed.
EPOCHS = DEMO_EPOCHS
# The registered methods with a demo row, in registration order (the table's).
DEMO_RUNS: dict[str, DemoRun] = {m.name: m.demo for m in METHODS.values() if m.demo is not None}


def demo_noise(out: Path, seed: int) -> Path:
    """Draw the demo's noisy labels once (``NOISE`` on the demo dataset's training split, ``seed``) and
    write them where every method's noise flag reads them: all rows train on the same labels."""
    train = get_dataset(DEMO_DATASET, None, "train")
    mode, rate = NOISE
    noisy = make_noise(
        train.targets, mode, rate, num_classes=train.num_classes, seed=seed, dataset=DEMO_DATASET
    )
    path = out / f"{mode}{rate:g}.npz"  # its stem is the noise column of every record that reads it
    save_noise_file(path, noisy)
    return path


def run_argv(
    method: str, out: Path, noise_file: Path, epochs: int | None, device: str | None, seed: int
) -> list[str]:
    """The command line of one method's demo run."""
    run = DEMO_RUNS[method]
    length = (run.length if epochs is None else epochs * run.units_per_epoch) + run.length_offset
    argv = run.flags + [
        "--out",
        str(out / method),
        "--resume",
        "never",
        "--seed",
        str(seed),
        run.length_flag,
        str(length),
    ]
    if run.noise_flag:
        argv += [run.noise_flag, str(noise_file)]
    return argv + (["--device", device] if device else [])


def pin_threads(threads: int) -> None:
    """One fixed thread count for torch (intra-op; inter-op 1) and for numpy's BLAS (sklearn's GMM):
    float sums split over another number of threads round differently, and a short noisy-label run
    amplifies that into other selections and another table."""
    torch.set_num_threads(threads)
    torch.set_num_interop_threads(1)  # a fresh process: nothing has started the inter-op pool yet
    threadpoolctl.threadpool_limits(threads)


def run_group(methods: list[str], argvs: dict[str, list[str]], threads: int) -> list[dict]:
    """Run methods one after another in this (fresh, spawned) process: each its real ``main(args)``."""
    pin_threads(threads)
    rows = []
    for method in methods:
        module = importlib.import_module(METHODS[method].module)
        cpu = time.process_time()
        row = module.main(module.get_args_parser().parse_args(argvs[method]))
        # CPU seconds: on one thread about the wall time this run takes on an idle core
        rows.append({**row, "cpu_seconds": round(time.process_time() - cpu, 1)})
    return rows


def thread_env(threads: int) -> dict[str, str]:
    """Environment of the worker processes: OpenMP/BLAS pools sized before any library starts them."""
    return {
        name: str(threads)
        for name in ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS")
    }


def run_all(methods: list[str], argvs: dict[str, list[str]], jobs: int, threads: int) -> list[dict]:
    """Every group in its own fresh process, ``jobs`` at a time, the longest first; rows in ``methods`` order.

    A fresh process per group makes a row independent of what ran before it in the same process."""
    groups: dict[str, list[str]] = {}
    for method in methods:
        groups.setdefault(DEMO_RUNS[method].group or method, []).append(method)
    order = sorted(groups.values(), key=lambda g: -sum(DEMO_RUNS[m].cost for m in g))
    saved = dict(os.environ)
    os.environ.update(thread_env(threads))  # inherited by the spawned workers
    try:
        ctx = multiprocessing.get_context("spawn")
        with ctx.Pool(min(jobs, len(order)), maxtasksperchild=1) as pool:
            done = pool.starmap(run_group, [(g, argvs, threads) for g in order], chunksize=1)
    finally:
        os.environ.clear()
        os.environ.update(saved)
    by_method = {m: r for g, rows in zip(order, done) for m, r in zip(g, rows)}
    return [by_method[m] for m in methods]


def bar(rows: list[dict]) -> float | None:
    """CE's last test accuracy: the bar every noisy-label method's last accuracy must clear."""
    return next((r["test_acc"] for r in rows if r["method"] == BASELINE), None)


def noise_label(record: dict) -> str:
    """The record's noise name; a noise file's stem where a method records the file's path (LRA)."""
    noise = str(record["noise"])
    return Path(noise).stem if noise.endswith((".npz", ".json", ".npy")) else noise


def format_table(rows: list[dict]) -> str:
    """A fixed-width table of results records: best and last test accuracy, the margin over CE's last."""
    ce = bar(rows)
    header = (
        f"{'method':<13} {'noise':<14} {'best acc':>9} {'last acc':>9} {'last - CE last':>15} "
        f"{'seconds':>8} {'cpu s':>7}"
    )
    lines = [header, "-" * len(header)]
    for r in rows:
        margin = (
            "(the bar)"
            if r["method"] == BASELINE
            else ("" if ce is None else f"{100 * (r['test_acc'] - ce):+.2f}")
        )
        lines.append(
            f"{r['method']:<13} {noise_label(r):<14} {100 * r['best_acc']:>8.2f}% "
            f"{100 * r['test_acc']:>8.2f}% {margin:>15} {r['seconds']:>8.1f} "
            f"{r.get('cpu_seconds', float('nan')):>7.1f}"
        )
    if ce is not None:
        others = [r for r in rows if r["method"] != BASELINE]
        above = sum(r["test_acc"] > ce for r in others)
        lines.append(
            f"\nCE's last accuracy {100 * ce:.2f}% is the bar: "
            f"{above} of {len(others)} methods end above it."
        )
    return "\n".join(lines)


def plot_curves(out: Path, methods: list[str]) -> Path:
    """Test accuracy per epoch of each method's run, from its ``eval.jsonl``."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6, 4))
    for (
        method
    ) in methods:  # methods count epochs, short epochs or iterations: plot against run progress
        rows = read_jsonl(out / method / "eval.jsonl")
        last = rows[-1]["step"] + 1
        ax.plot(
            [(r["step"] + 1) / last for r in rows],
            [100 * r["test_acc"] for r in rows],
            marker=".",
            label=method,
        )
    mode, rate = NOISE
    ax.set(
        xlabel="fraction of the run",
        ylabel="test accuracy (%)",
        title=f"{DEMO_DATASET}, {100 * rate:g}% {mode} noise (NMTune: {PRETRAIN_NOISE} in pre-training)",
    )
    ax.grid(alpha=0.3)
    ax.legend()
    path = out / "accuracy.png"
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path


def main(argv: list[str] | None = None) -> list[dict]:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--out", default="results/demo")
    p.add_argument("--methods", nargs="+", default=list(DEMO_RUNS), choices=list(DEMO_RUNS))
    p.add_argument("--epochs", type=int, default=None, help="override every method's epoch count")
    p.add_argument("--device", default=None)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--jobs", type=int, default=2, help="runs side by side, each in its own process")
    p.add_argument(
        "--threads", type=int, default=1, help="CPU threads per run (the table depends on it)"
    )
    args = p.parse_args(argv)
    if args.jobs < 1 or args.threads < 1:
        p.error("--jobs and --threads must be at least 1")
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    noise_file = demo_noise(out, args.seed)
    argvs = {
        m: run_argv(m, out, noise_file, args.epochs, args.device, args.seed) for m in args.methods
    }
    for method in args.methods:
        shutil.rmtree(out / method, ignore_errors=True)  # a demo always starts fresh
    rows = run_all(args.methods, argvs, args.jobs, args.threads)
    (out / "results.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    plot = plot_curves(out, args.methods)
    print("\n" + format_table(rows))
    print(f"\nwrote {out / 'results.jsonl'} and {plot}")
    return rows


if __name__ == "__main__":
    main()
