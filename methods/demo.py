"""``make demo``: every method on the embedded ``digits`` dataset (1,797 real 8×8 handwritten digits
from scikit-learn, upsampled to 32×32) with 40% symmetric noise, on whatever device is there.

Prints a table (method, noise, test accuracy, wall time), writes ``<out>/results.jsonl`` (one JSON
object per run) and ``<out>/accuracy.png`` (test accuracy per epoch). Method issues add their rows
to ``DEMO_RUNS``.
"""

from __future__ import annotations

import argparse
import importlib
import json
import shutil
from dataclasses import dataclass
from pathlib import Path

from lnl.engine.logger import read_jsonl

@dataclass(frozen=True)
class DemoRun:
    """One method's demo run: its entry point, its flags, and the flag that sets its length.

    ``length`` counts ``length_flag`` units; ``units_per_epoch`` converts the demo's ``--epochs``
    override (in the CE baseline's epochs) into them: IEG counts iterations, LRA-Diffusion's cheap
    epochs (a small denoiser on fixed features) run 15 to one of CE's."""

    module: str
    flags: list[str]
    length: int
    length_flag: str = "--num_epochs"
    units_per_epoch: int = 1


# Every run also gets --out, --device, --seed and --resume none.
DEMO_RUNS: dict[str, DemoRun] = {
    # CE: the same 10 epochs as the co-divide methods run (their originals run epochs 0..num_epochs).
    "standard": DemoRun("methods.standard.train", ["--dataset", "digits", "--noise_mode", "sym", "--r", "0.4",
                                                   "--batch_size", "64", "--lr", "0.05"], length=10),
    "dividemix": DemoRun("methods.dividemix.Train_cifar", ["--dataset", "digits", "--noise_mode", "sym", "--r", "0.4",
                                                           "--batch_size", "32", "--lr", "0.05", "--warm_up", "4",
                                                           "--lambda_u", "0", "--lr_milestone", "half"], length=9),
    "plremix": DemoRun("methods.plremix.train", ["--dataset", "digits", "--noise_mode", "sym", "--r", "0.4",
                                                 "--batch_size", "32", "--lr", "0.05", "--warm_up", "4",
                                                 "--lambda_u", "0"], length=9),
    # DMLP purifies the labels on fixed features (8x8 pixels here); its test_acc is its linear head's.
    "dmlp": DemoRun("methods.dmlp.DMLP", ["--dataset", "digits", "--feature_file", "pixels", "--noise_mode", "sym",
                                          "--r", "0.4", "--meta_size", "100", "--batch", "200", "--batch_fc", "64",
                                          "--fix_all"], length=100),
    # IEG holds out 10 clean images per class as its probe set; 26 steps of 50 ~ one CE epoch. The paper's
    # loss weights (ce_factor 5, consistency_factor 20) collapse small_cnn on digits: 1 and 1 here.
    "ieg": DemoRun("methods.ieg.main", ["--dataset", "digits_uniform_0.4", "--network_name", "small_cnn",
                                        "--probe_dataset_hold_ratio", "0.07", "--ce_factor", "1",
                                        "--consistency_factor", "1", "--batch_size", "50", "--eval_freq", "20",
                                        "--decay_steps", "100", "--meta_jvp"],
                   length=100, length_flag="--max_iteration", units_per_epoch=26),
    # LRA-Diffusion retrieves labels among 8x8-pixel neighbours; its denoiser's encoder is linear here.
    "lra": DemoRun("methods.lra.train_CIFAR", ["--noise_type", "digits-sym-0.4", "--fp_encoder", "pixels",
                                               "--diff_encoder", "linear", "--feature_dim", "128", "--batch_size",
                                               "64", "--lr", "3e-3", "--eval_freq", "10", "--fix_lr_horizon"],
                   length=150, length_flag="--nepoch", units_per_epoch=15),
    # NMTune's noise is in pre-training: a small timm encoder is pre-trained on digits with 30% symmetric
    # noise (once, cached in $LNL_CACHE/nmtune), then probed / tuned frozen on the clean labels.
    "linear-probe": DemoRun("methods.nmtune.finetune", ["--train-dataset", "digits", "--model", "test_resnet",
                                                        "--model_source", "timm", "--pretrain-if-missing",
                                                        "digits:0.3", "--freeze-encoder", "--lr", "0.01"],
                            length=10, length_flag="--epochs"),
    "nmtune": DemoRun("methods.nmtune.nml_tune", ["--train-dataset", "digits", "--model", "test_resnet",
                                                  "--model_source", "timm", "--pretrain-if-missing", "digits:0.3",
                                                  "--freeze-encoder"], length=10, length_flag="--epochs"),
}


def run_method(method: str, out: Path, epochs: int | None, device: str | None, seed: int) -> dict:
    """Run one method's real ``main(args)`` in this process and return its results record."""
    run = DEMO_RUNS[method]
    module = importlib.import_module(run.module)
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
