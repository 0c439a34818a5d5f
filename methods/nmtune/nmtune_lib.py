"""NMTune and its linear-probe baseline (Chen et al., ICLR 2024; original ``src/``):
the parser shared by ``finetune.py`` and ``nml_tune.py``, output paths, the legacy ``results.jsonl``
writer and the entry points' run (``run_job``, on ``lnl.engine.runner.Runner``).

The rest lives beside it: ``regularisers.py`` (the three feature terms), ``encoders.py`` (the
residual MLP, heads and timm / open_clip encoders), ``views.py`` (on-device preprocessing) and
``downstream.py`` (datasets and the feature cache).

Upstream: ``Hhhhhhao/Noisy-Model-Learning @ f249dce`` (``src/args.py``, ``finetune.py``,
``nml_tune.py``, ``src/models/eval.py``). Everything here is an independent re-implementation.
"""

from __future__ import annotations

import argparse
import json
import os
from collections.abc import Callable
from dataclasses import dataclass, replace
from pathlib import Path

import torch
import torch.nn as nn

from lnl.engine import default_argument_parser, read_jsonl
from lnl.engine.args import str2bool
from lnl.engine.data import add_subset_flag, subset_suffix
from lnl.engine.runner import Runner, RunRecord
from methods.nmtune.downstream import Split, dataset_key
from methods.nmtune.encoders import (
    ClassificationHead,
    ImageEncoder,
    build_encoder,
    build_zero_shot_head,
    make_head,
)


def optional_float(value: str) -> float | None:
    """A float, or ``None``/``none`` (the README passes ``--num-shots=None``)."""
    return None if value.lower() == "none" else float(value)


def get_args_parser(description: str, **defaults) -> argparse.ArgumentParser:
    """The flags of both entry points (``src/args.py``'s names); ``defaults`` are the README values."""
    p = argparse.ArgumentParser(description, parents=[default_argument_parser()])
    a = p.add_argument
    a("--seed", type=int, default=3907)
    a(
        "--train-dataset",
        "--dataset",
        dest="train_dataset",
        default="CIFAR10",
        help="lnl name (CIFAR10, CIFAR100, digits, ...) or torchvision's (--dataset: lnl's name)",
    )
    a(
        "--eval-datasets",
        default=None,
        type=lambda s: s.split(","),
        help="comma list (default: train dataset)",
    )
    a(
        "--model",
        default=None,
        help="timm name, or open_clip '<arch>[_<tag>]' (split at the first '_')",
    )
    a("--model_source", default="timm", help="timm or open_clip")
    a(
        "--pretrained",
        default=None,
        help="local checkpoint of the encoder; 'none': random init (tests)",
    )
    a(
        "--epochs",
        "--num_epochs",
        dest="epochs",
        type=int,
        default=30,
        help="(--num_epochs: lnl's name)",
    )
    a("--lr", type=float, default=defaults.get("lr", 1e-3), help="AdamW learning rate")
    a("--wd", type=float, default=defaults.get("wd", 1e-4), help="AdamW weight decay")
    a("--batch-size", type=int, default=64)
    a("--warmup_length", type=int, default=0, help="linear warmup steps")
    a("--save", default=None, help="folder for checkpoints (default: --out)")
    a(
        "--results-db",
        "--results",
        dest="results_db",
        default=None,
        help="legacy results file, one line per epoch (default: <save>/results.jsonl)",
    )
    a(
        "--data-location",
        "--data_path",
        dest="data_location",
        default=os.environ.get("LNL_DATA", "~/data"),
        help="datasets root, or the dataset's own folder (--data_path: lnl's name)",
    )
    a(
        "--store-size",
        type=int,
        default=256,
        help="torchvision datasets: decoded side length in memory",
    )
    a(
        "--cache-dir",
        default=None,
        help="cache frozen-encoder features of the deterministic splits here",
    )
    a("--freeze-encoder", action="store_true")
    a(
        "--template",
        default=defaults.get("template"),
        help="zero-shot head prompts: simple_template or openai_imagenet_template",
    )
    a("--load-zero-shot-classifier", type=str2bool, default=False)
    a("--num-shots", type=optional_float, default=None, help="fraction of each class kept")
    a("--noise-ratio", type=float, default=None, help="downstream symmetric label noise")
    a(
        "--fast-preprocess",
        type=str2bool,
        default=False,
        help="one float grid_sample per batch on the device instead of the original's PIL pipeline",
    )
    a(
        "--shuffle",
        type=str2bool,
        default=None,
        help="shuffle the training batches (default: as the original, which does not on CIFAR100/Country211)",
    )
    add_subset_flag(p)
    a(
        "--pretrain-if-missing",
        default=None,
        metavar="DATASET:RATE[:EPOCHS]",
        help="pre-train --model (timm) with RATE symmetric noise into --pretrained unless it exists (README)",
    )
    return p


def add_nmtune_flags(p: argparse.ArgumentParser) -> None:
    """NMTune's own flags, README values as defaults."""
    a = p.add_argument
    a(
        "--use-weak-strong",
        type=str2bool,
        default=False,
        help="RandAugment(3, 5) on the second view",
    )
    a("--mlp-with-res", type=str2bool, default=True)
    a("--mlp-res-scale-init", type=float, default=1.0)
    a("--mlp-after-ratio", type=int, default=4)
    a("--mlp-after-layers", type=int, default=1)
    a("--mse-loss-weight", type=float, default=1.0)
    a("--cov-loss-weight", type=float, default=0.04)
    a("--svd-loss-weight", type=float, default=0.001)


# The original's train loaders without shuffle=True (src/datasets/cifar100.py, country211.py); its
# linear probe reads a FeatureDataset loader, which shuffles (src/datasets/common.py get_dataloader).
UNSHUFFLED = {"cifar100", "country211"}


def shuffles(args: argparse.Namespace, linear_probe: bool = False) -> bool:
    """Whether the training batches are shuffled: ``--shuffle``, else as the original."""
    if args.shuffle is not None:
        return args.shuffle
    return linear_probe or dataset_key(args.train_dataset) not in UNSHUFFLED


def build_frozen_or_tuned_encoder(args: argparse.Namespace) -> ImageEncoder:
    """The encoder on ``args.device``, trainable unless ``--freeze-encoder``, with the preprocessing
    that ``--fast-preprocess`` picks."""
    encoder = build_encoder(args.model_source, args.model, args.pretrained).to(args.device)
    encoder.preprocess = replace(encoder.preprocess, fast=args.fast_preprocess)
    encoder.requires_grad_(not args.freeze_encoder)
    return encoder


def resolve_paths(args: argparse.Namespace, method: str) -> None:
    """Map lnl's ``--out`` and the original's ``--save``/``--results``: ``--out`` (else ``--save``,
    else ``runs/<method>/<dataset>-<model>-s<seed>``) is the run folder; ``--save`` defaults to it and
    ``--results`` to ``<save>/results.jsonl`` (the original crashed without it)."""
    suffix = subset_suffix(args.subset)
    default = f"runs/{method}/{dataset_key(args.train_dataset)}-{args.model}-s{args.seed}{suffix}"
    args.out = args.out or args.save or default
    args.save = args.save or args.out
    args.results_db = args.results_db or str(Path(args.save) / "results.jsonl")
    args.eval_datasets = args.eval_datasets or [args.train_dataset]


def build_head(
    args: argparse.Namespace, encoder: ImageEncoder, train: Split, log
) -> ClassificationHead:
    """The classification head on ``args.device``: CLIP's zero-shot head for ``--model_source
    open_clip --load-zero-shot-classifier True``, else a fresh kaiming-uniform ``Linear`` (the
    original gives timm models a fresh head whatever the flag says)."""
    if args.load_zero_shot_classifier and args.model_source == "open_clip":
        log.info("zero-shot head: %d classes x template %s", train.num_classes, args.template)
        return build_zero_shot_head(args, train.classes, args.device)
    if args.load_zero_shot_classifier:
        log.info(
            "--load-zero-shot-classifier ignored for --model_source %s (fresh head)",
            args.model_source,
        )
    return make_head(encoder.num_features, train.num_classes).to(args.device)


def ensure_pretrained(args: argparse.Namespace, log) -> None:
    """``--pretrain-if-missing DATASET:RATE[:EPOCHS]``: pre-train the timm ``--model`` on DATASET
    with RATE symmetric noise (``data_prep/pretrain_noisy.py``) into ``--pretrained`` unless that
    file exists; the demo's encoder. The global RNG is left as it was, so the run that pre-trains
    and a later run that reuses the file initialise their heads identically."""
    if not args.pretrain_if_missing:
        return
    if args.model_source != "timm":
        raise ValueError("--pretrain-if-missing pre-trains timm models only (--model_source timm)")
    from data_prep.pretrain_noisy import DEFAULT_EPOCHS, pretrain
    from lnl.data._base import cache_dir

    dataset, rate, *rest = args.pretrain_if_missing.split(":")
    epochs = int(rest[0]) if rest else DEFAULT_EPOCHS
    if args.pretrained is None:
        name = f"{args.model}_{dataset}_sym{float(rate):g}_e{epochs}.pth"
        args.pretrained = str(cache_dir() / "nmtune" / name)
    if Path(args.pretrained).expanduser().is_file():
        return
    log.info(
        "pre-training %s on %s with %s noise into %s", args.model, dataset, rate, args.pretrained
    )
    cuda = [args.device.index or 0] if args.device.type == "cuda" else []
    with torch.random.fork_rng(devices=cuda):
        pretrain(
            dataset=dataset,
            rate=float(rate),
            model=args.model,
            out=Path(args.pretrained).expanduser(),
            epochs=epochs,
            device=str(args.device),
        )


def noise_label(args: argparse.Namespace, encoder: ImageEncoder) -> str:
    """The results table's noise column: the encoder's pre-training noise (+ downstream noise)."""
    pre = encoder.meta
    label = f"pre-{pre['noise']}{pre['rate']:g}" if pre else "pre-unknown"
    return label + (f"+sym{args.noise_ratio:g}" if args.noise_ratio else "")


def legacy_results_line(args: argparse.Namespace, epoch: int, top1: dict[str, float]) -> dict:
    """One ``results.jsonl`` line as the original writes it: every CLI argument (``vars(args)``),
    ``device``, ``current_epoch`` and ``"<EvalDataset>:top1"`` (a fraction)."""
    plain = {
        k: (v if isinstance(v, (int, float, str, bool, list, type(None))) else str(v))
        for k, v in vars(args).items()
    }
    return {**plain, "current_epoch": epoch, **{f"{name}:top1": acc for name, acc in top1.items()}}


def drop_results_after(path: str, save: str, first_epoch: int) -> None:
    """On resume, forget this run's lines for epochs that will be run again (no duplicates)."""
    rows = read_jsonl(path)
    keep = [r for r in rows if r.get("save") != save or r.get("current_epoch", -1) < first_epoch]
    if len(keep) != len(rows):
        Path(path).write_text("".join(json.dumps(r) + "\n" for r in keep))


# --------------------------------------------------------------------------------------------
# The epoch driver shared by both entry points
# --------------------------------------------------------------------------------------------


@dataclass
class Job:
    """What the driver needs from an entry point."""

    method: str
    modules: dict[str, nn.Module]
    optimizer: torch.optim.Optimizer
    train_epoch: Callable[[int], dict[str, float]]
    evaluate: Callable[[], dict[str, float]]  # eval dataset name -> top-1 (fraction)
    noise: str
    setup_seconds: float


def run_job(args: argparse.Namespace, log, job: Job) -> dict:
    """Train ``args.epochs`` epochs with evaluation, logging, results lines and a checkpoint after
    each; resume from ``<out>/last.pth`` (``--resume auto``). Returns the results record."""
    runner = Runner(
        args,
        log,
        models=job.modules,
        optimizers={"opt": job.optimizer},
        state={"last_acc": None},
        length_flag="epochs",
    )  # the cosine schedule spans --epochs
    if runner.resume() is not None:
        drop_results_after(args.results_db, args.save, runner.first_epoch)
    state = runner.state
    first = args.eval_datasets[0]

    def step(epoch: int) -> dict:
        metrics = job.train_epoch(epoch)
        top1 = job.evaluate()
        return {**metrics, **{f"{k}:top1": v for k, v in top1.items()}, "test_acc": top1[first]}

    def record(epoch: int, metrics: dict) -> None:
        state["best_acc"] = max(state["best_acc"], metrics["test_acc"])
        state["last_acc"] = metrics["test_acc"]
        runner.logger.log(
            epoch, {**metrics, "seconds": runner.clock.elapsed + job.setup_seconds}, stream="eval"
        )
        top1 = {k[: -len(":top1")]: v for k, v in metrics.items() if k.endswith(":top1")}
        Path(args.results_db).parent.mkdir(parents=True, exist_ok=True)
        with open(args.results_db, "a") as f:
            f.write(json.dumps(legacy_results_line(args, epoch, top1)) + "\n")

    runner.run(args.epochs, step, record)
    # lnl's record, as every entry point writes it (launchers/collect.py reads it); with the README's
    # `--results <save>/results.jsonl` it follows the original's per-epoch lines in the same file.
    return runner.finish(
        RunRecord(
            method=job.method,
            dataset=dataset_key(args.train_dataset),
            noise=job.noise,
            seed=args.seed,
            epochs=args.epochs,
            test_acc=state["last_acc"],
            best_acc=state["best_acc"],
            seconds=round(runner.clock.elapsed + job.setup_seconds, 2),
            run_dir=args.out,
            subset=args.subset,  # trained and tested on the first N images only
            extra={"model": args.model},
        )
    )
