"""DMLP, the decoupled meta label purifier (Tu et al., CVPR 2023; ``DMLP.py``), on frozen
features. With no arguments it runs the original's only setting, CIFAR-10 with symmetric 20% noise,
reading the original's Drive files from ``./labels_cifar10/symmetric20/``::

    python methods/dmlp/DMLP.py
    python methods/dmlp/DMLP.py --dataset cifar10 --feature_file features/cifar10_train \\
        --noise_file data/noise_labels/dividemix_json/cifar10/0.50.json --fix_all
    python methods/dmlp/DMLP.py --dataset digits --feature_file pixels --r 0.4 --meta_size 100 --batch 200 \\
        --batch_fc 64 --epochs 100

Writes ``purified_labels.json`` (DivideMix/PLReMix: ``--noise_file`` of ``methods/standard/train.py``,
PLReMix and DivideMix), ``purified_labels.npz`` (hard and soft labels, the split) and ``report.json``
(purified vs noisy label accuracy, per class, when the clean labels are known) in ``--out``.
Bugs of the original are reproduced by default; ``--fix_*`` flags (``--fix_all``) fix them (README).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import torch

if __package__ in (None, ""):  # run as a script: make `lnl` and `methods` importable
    sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from lnl.data.noise_files import save_noise_file
from lnl.engine import default_argument_parser, default_setup, parse_with_config
from lnl.engine.data import add_subset_flag, subset_suffix
from lnl.engine.runner import Runner, RunRecord
from lnl.engine.settings import NoiseSettings
from lnl.engine.threads import cpu_threads, small_run_threads
from methods.dmlp import dmlp_lib as L

METHOD = "dmlp"
NUM_CLASSES = {
    "cifar10": 10,
    "cifar100": 100,
    "clothing1m": 14,
    "digits": 10,
    "digits16": 10,
    "webvision": 50,
    "food101n": 101,
    "tiny_imagenet": 200,
    "cifar10n": 10,
    "cifar100n": 100,
}
# --fix_all; --fix_softmax is left out, it also needs new loss weights
FIXES = ("fix_exchange", "fix_views", "fix_solver", "fix_short_batches")
ALL_FIXES = FIXES + ("fix_softmax",)


def get_args_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        "DMLP label purification on frozen features", parents=[default_argument_parser()]
    )
    a = p.add_argument
    a(
        "--dataset",
        default="cifar10",
        help="cifar10, cifar100, clothing1m, digits, or any with a feature file",
    )
    a("--data_path", default=None, help="dataset folder (only for --feature_file pixels)")
    a(
        "--feature_file",
        default="./labels_cifar10/symmetric20/",
        help="the original's folder (trainfeatures.npy, ...), an extract_features.py prefix, or 'pixels'",
    )
    a(
        "--test_feature_file",
        default=None,
        help="test prefix (default: the train prefix with train->test)",
    )
    a(
        "--meta_feature_file",
        default=None,
        help="an external clean meta set (Clothing1M: the clean val split)",
    )
    a(
        "--feature_file_v2",
        default=None,
        help="second view's features (--fix_views; default: random ReLU view)",
    )
    a("--pixel_size", type=int, default=8, help="--feature_file pixels: pooled grey-level side")
    a(
        "--noise_file",
        default=None,
        help="noisy labels (DivideMix JSON, .npy, .npz); else the features' own",
    )
    a(
        "--noise_mode",
        default="sym",
        help="generated noise when neither a noise file nor file labels exist",
    )
    a("--r", type=float, default=0.2, help="generated noise rate")
    a("--num_classes", type=int, default=None)
    a("--meta_size", type=int, default=1000, help="clean meta set size (original: val_num)")
    a(
        "--balanced_meta",
        action="store_true",
        help="class-balanced meta set (original: a random one)",
    )
    a("--epochs", "--num_epochs", dest="epochs", type=int, default=100, help="original: epoch")
    a("--batch", type=int, default=7000, help="IPC batch (original: batchsize)")
    a("--batch_fc", type=int, default=500, help="EAC mini-batch (original: batchsize_fc)")
    a("--lr", type=float, default=0.01, help="label optimiser (Adam) learning rate")
    a("--lr_fc", type=float, default=0.006, help="EAC learning rate (adjust_learning_rate)")
    a("--lr_fc_decay_epoch", type=int, default=3, help="EAC lr is divided by 10 after this epoch")
    a("--weight_decay", type=float, default=3e-4)
    a("--weight_conf", type=float, default=0.4)
    a("--weight_prior", type=float, default=2200.0)
    a("--epoch_T", type=int, default=20, help="period of the EAC -> label exchange")
    a(
        "--purified",
        choices=("labels", "heads"),
        default="labels",
        help="write argmax of the soft labels Y (default) or the EAC heads' ensemble predictions",
    )
    a(
        "--seed",
        type=int,
        default=123,
        help="seeds the meta split (unseeded in the original) and the noise",
    )
    a("--fix_exchange", action="store_true", help="B.7.1: exchange labels every epoch_T epochs")
    a("--fix_views", action="store_true", help="B.7.2: give view 2 different features")
    a(
        "--fix_solver",
        action="store_true",
        help="B.7.4: fp64 Cholesky with a ridge instead of inverse",
    )
    a(
        "--fix_short_batches",
        action="store_true",
        help="item 11: a short last IPC/EAC batch instead of skipping the rows the original's floors drop",
    )
    a("--ridge", type=float, default=1e-6, help="--fix_solver ridge, relative to mean(diag(XᵀX))")
    a(
        "--fix_softmax",
        action="store_true",
        help="B.7.5: EAC head returns logits, one softmax (not in --fix_all: retune --weight_prior, e.g. 1)",
    )
    add_subset_flag(p)
    a(
        "--threads",
        type=int,
        default=None,
        help="CPU threads while running (default on CPU: 1 when the features are small, else unchanged)",
    )
    a("--fix_all", action="store_true", help="all of " + ", ".join(FIXES))
    return p


def _num_classes(args, fs) -> int:
    if args.num_classes:
        return args.num_classes
    if args.dataset in NUM_CLASSES:
        return NUM_CLASSES[args.dataset]
    known = [t for t in (fs.clean, fs.noisy, fs.test_labels) if t is not None]
    return int(max(int(t.max()) for t in known)) + 1


def build_views(args, fs, noisy, train_idx, meta_idx, log) -> tuple[list, list]:
    """The two views on the device and the IPC batch bounds."""
    dev = args.device
    x1 = fs.train[train_idx].to(dev)  # noisy-set rows in split order
    xv1 = (fs.meta if fs.meta is not None else fs.train[meta_idx]).to(dev)
    xt1 = None if fs.test is None else fs.test.to(dev)
    x2, xv2, xt2 = x1, xv1, xt1
    if args.fix_views:
        if args.feature_file_v2:
            tr2, _, _ = L.read_prefix(args.feature_file_v2)
            te_spec = L._test_prefix(args.feature_file_v2)
            te2 = L.read_prefix(te_spec)[0] if te_spec else None
            te2 = None if te2 is None else te2[: args.subset]  # view 1's test rows (fs is cut)
        else:
            log.info(
                "--fix_views without --feature_file_v2: view 2 = fixed random ReLU features of view 1"
            )
            tr2, te2 = L.random_relu_view(fs.train, args.seed + 1, fs.test)
        if fs.meta is not None:
            raise ValueError(
                "--fix_views with --meta_feature_file needs a matching second meta set"
            )
        x2, xv2 = tr2[train_idx].to(dev), tr2[meta_idx].to(dev)
        xt2 = None if te2 is None else te2.to(dev)
    bounds = check_batches(args, len(train_idx))
    small = min(e - s for s, e in bounds)
    if small < x1.shape[1] and not args.fix_solver:
        raise ValueError(
            f"an IPC batch has {small} rows for {x1.shape[1]}-d features: XᵀX is singular; "
            "raise --batch or pass --fix_solver"
        )
    v1 = L.build_view(x1, xv1, xt1, noisy[train_idx].to(dev), bounds, args)
    v2 = L.build_view(
        x2, xv2, xt2, noisy[train_idx].to(dev), bounds, args, v1.solvers if x2 is x1 else None
    )
    return [v1, v2], bounds


def check_batches(args, n: int) -> list[tuple[int, int]]:
    """The IPC batch bounds; a clear error where the original's floored loops train nothing (it then
    crashes on an unset ``W1_v1`` or ``loss_newv1``)."""
    keep = args.fix_short_batches
    if not keep and args.batch > n:
        raise ValueError(
            f"--batch {args.batch} exceeds the {n} noisy-set rows: the original's floored loop "
            "runs no IPC step; lower --batch or pass --fix_short_batches"
        )
    if not keep and args.batch_fc > min(args.batch, n):
        raise ValueError(
            f"--batch_fc {args.batch_fc} exceeds --batch {args.batch}: the original's floored EAC "
            "loop never trains the head; lower --batch_fc or pass --fix_short_batches"
        )
    return L.batch_bounds(n, args.batch, keep)


def _ckpt_objects(views):
    models = {
        f"{k}_v{i}": getattr(v, k) for i, v in enumerate(views, 1) for k in ("labels", "head")
    }
    pairs = (("labels", "opt"), ("head", "head_opt"))
    opts = {f"{k}_v{i}": getattr(v, o) for i, v in enumerate(views, 1) for k, o in pairs}
    return models, opts


def main(args: argparse.Namespace) -> dict:
    """Purify, evaluate every epoch, checkpoint every epoch, write the labels; returns the results record."""
    if args.fix_all:
        for f in FIXES:
            setattr(args, f, True)
    noise = NoiseSettings.from_args(args)
    args.out = (
        args.out
        or f"runs/{METHOD}/{args.dataset}-{noise.name}-s{args.seed}{subset_suffix(args.subset)}"
    )
    log = default_setup(args, supports=())
    fs = L.load_features(args)
    args.num_classes = c = _num_classes(args, fs)
    noisy, noise_meta = L.noisy_labels(args, fs, c)
    if args.subset is not None:  # cut after the noise is made or read over the whole split
        fs, noisy = L.first_rows(fs, noisy, args.subset, c, args.meta_size)
        noise_meta = {**noise_meta, "subset": args.subset}
    save_noise_file(Path(args.out) / "noisy_labels.npz", noisy, {**noise_meta, "num_classes": c})
    n = len(fs.train)
    if fs.meta is not None:
        train_idx, meta_idx, yv = torch.arange(n), None, fs.meta_labels
    else:
        if fs.clean is None:
            raise ValueError(
                "the meta set needs clean labels: features with labels, or --meta_feature_file"
            )
        train_idx, meta_idx = L.split_meta(
            n, args.meta_size, args.seed, fs.clean, args.balanced_meta, c
        )
        yv = fs.clean[meta_idx]
    if fs.clean is not None:
        log.info(
            "%s: %d samples, %d-d features, %d meta, noisy-label accuracy %.4f",
            args.dataset,
            n,
            fs.train.shape[1],
            len(yv),
            float((noisy == fs.clean).float().mean()),
        )
    views, bounds = build_views(args, fs, noisy, train_idx, meta_idx, log)
    dev = args.device
    yv = yv.to(dev)
    clean_t = None if fs.clean is None else fs.clean[train_idx].to(dev)
    test_y = None if fs.test_labels is None else fs.test_labels.to(dev)
    models, opts = _ckpt_objects(views)
    runner = Runner(args, log, models=models, optimizers=opts)
    runner.resume()
    state = runner.state

    def step(epoch: int) -> dict:
        m = L.train_epoch(views, epoch, bounds, yv, clean_t, args)
        with torch.no_grad():
            if clean_t is not None:
                m["label_acc"] = float(views[0].labels.y.argmax(1).eq(clean_t).float().mean())
            m.update(L.evaluate(views, test_y, args.fix_softmax))
        state["best_acc"] = max(state["best_acc"], m.get("test_acc", 0.0))
        return m

    def record(epoch: int, metrics: dict) -> None:
        state["last"] = metrics
        runner.log_metrics(epoch, metrics)

    with cpu_threads(small_run_threads(args.threads, args.device, len(fs.train))):
        runner.run(args.epochs, step, record)
    return finish(args, runner, views, fs, noisy, noise_meta, train_idx, meta_idx, yv)


def finish(args, runner, views, fs, noisy, noise_meta, train_idx, meta_idx, yv) -> dict:
    """Write the purified labels, the report and the results line."""
    c, state = args.num_classes, runner.state
    hard, soft = L.purified(
        views, noisy, train_idx, meta_idx, yv.cpu(), c, args.purified == "heads", args.fix_softmax
    )
    report = L.label_report(hard, noisy, fs.clean, train_idx, c)
    fixes = [f for f in ALL_FIXES if getattr(args, f)]
    noise = NoiseSettings.from_args(args).name
    meta = {
        "type": "dmlp_purified",
        "method": METHOD,
        "dataset": args.dataset,
        "noise": noise,
        "noise_source": noise_meta.get("source"),
        "seed": args.seed,
        "fixes": fixes,
        "features": fs.source,
        "num_classes": c,
        "purified_from": args.purified,
    }
    if (
        args.subset is not None
    ):  # the outputs cover the first N rows only: not labels for a full run
        meta["subset"] = args.subset
    extra = (
        {"train_idx": train_idx}
        if meta_idx is None
        else {"train_idx": train_idx, "meta_idx": meta_idx}
    )
    report.update(meta=meta, last_epoch=state.get("last", {}))
    files = L.write_outputs(Path(args.out), "purified_labels", hard, soft, meta, report, extra)
    last = state.get("last", {})
    return runner.finish(
        RunRecord(
            method=METHOD,
            dataset=args.dataset,
            noise=noise,
            seed=args.seed,
            epochs=args.epochs,
            test_acc=last.get("test_acc"),
            best_acc=state["best_acc"],
            seconds=runner.seconds,
            run_dir=args.out,
            subset=args.subset,
            extra={
                "fixes": fixes,
                "purified_acc": report.get("purified_acc"),
                "noisy_acc": report.get("noisy_acc"),
                "files": files,
            },
        )
    )


if __name__ == "__main__":
    main(parse_with_config(get_args_parser()))
