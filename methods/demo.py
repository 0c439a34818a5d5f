"""``make demo``: every method on the embedded ``digits`` dataset (1,797 real 8×8 handwritten digits
from scikit-learn, upsampled to 32×32) with 40% symmetric noise, on whatever device is there.

Prints a table (method, noise, test accuracy, wall time), writes ``<out>/results.jsonl`` (one JSON
object per run) and ``<out>/accuracy.png`` (test accuracy per epoch). Each method's row is the
``demo`` of its entry in ``methods/registry.py``. Run as ``python -m methods.demo``.
"""

from __future__ import annotations

import argparse
import importlib
import json
import shutil
import sys
from pathlib import Path

if __package__ in (None, ""):  # run as a script: make `lnl` and `methods` importable
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from lnl.engine.logger import read_jsonl
from methods.registry import METHODS, DemoRun

# The registered methods with a demo row, in registration order (the table's).
DEMO_RUNS: dict[str, DemoRun] = {m.name: m.demo for m in METHODS.values() if m.demo is not None}


def run_method(method: str, out: Path, epochs: int | None, device: str | None, seed: int) -> dict:
    """Run one method's real ``main(args)`` in this process and return its results record."""
    run = DEMO_RUNS[method]
    module = importlib.import_module(METHODS[method].module)
    run_dir = out / method
    shutil.rmtree(run_dir, ignore_errors=True)  # a demo always starts fresh
    length = run.length if epochs is None else epochs * run.units_per_epoch
    argv = run.flags + ["--out", str(run_dir), "--resume", "none", "--seed", str(seed),
                        run.length_flag, str(length)]
    if device:
        argv += ["--device", device]
    return module.main(module.get_args_parser().parse_args(argv))


def format_table(rows: list[dict]) -> str:
    """A fixed-width table of results records."""
    header = f"{'method':<13} {'dataset':<8} {'noise':<14} {'test acc':>9} {'best acc':>9} {'seconds':>8}"
    lines = [header, "-" * len(header)]
    for r in rows:
        lines.append(f"{r['method']:<13} {r['dataset']:<8} {r['noise']:<14} {100 * r['test_acc']:>8.2f}% "
                     f"{100 * r['best_acc']:>8.2f}% {r['seconds']:>8.1f}")
    return "\n".join(lines)


def plot_curves(out: Path, methods: list[str]) -> Path:
    """Test accuracy per epoch of each method's run, from its ``eval.jsonl``."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6, 4))
    for method in methods:  # methods count epochs, short epochs or iterations: plot against run progress
        rows = read_jsonl(out / method / "eval.jsonl")
        last = rows[-1]["step"] + 1
        ax.plot([(r["step"] + 1) / last for r in rows], [100 * r["test_acc"] for r in rows], marker=".",
                label=method)
    ax.set(xlabel="fraction of the run", ylabel="test accuracy (%)",
           title="digits, 40% symmetric noise (NMTune: 30% in pre-training)")
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
    args = p.parse_args(argv)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    rows = [run_method(m, out, args.epochs, args.device, args.seed) for m in args.methods]
    (out / "results.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    plot = plot_curves(out, args.methods)
    print("\n" + format_table(rows))
    print(f"\nwrote {out / 'results.jsonl'} and {plot}")
    return rows


if __name__ == "__main__":
    main()
