"""A toy 8th method for tests/launchers/test_toy_method.py: nearest class means on digits pixels,
relabelling each training image to its nearest mean for ``--rounds`` rounds (a self-cleaning loop).
Only an entry point's contract: ``get_args_parser``, ``main(args)`` returning the results record,
which it also appends to ``<out>/results.jsonl``."""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import torch

from lnl.data import get_dataset
from lnl.engine import append_jsonl, default_argument_parser, default_setup

METHOD = "toy"


def get_args_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        "Toy: nearest class means with relabelling", parents=[default_argument_parser()]
    )
    p.add_argument(
        "--dataset", default="digits", choices=("digits",), help="the only dataset it reads"
    )
    p.add_argument(
        "--noise_mode",
        default="sym",
        choices=("sym",),
        help="uniform relabelling (may redraw the class)",
    )
    p.add_argument("--r", type=float, default=0.4, help="noise rate")
    p.add_argument(
        "--rounds", type=int, default=3, help="relabelling rounds (the launcher's --epochs)"
    )
    p.add_argument("--seed", type=int, default=0)
    return p


def features(split: str) -> tuple[torch.Tensor, torch.Tensor]:
    data = get_dataset("digits", None, split)
    return data.images.flatten(1).float() / 255, data.targets


def nearest_mean(x: torch.Tensor, means: torch.Tensor) -> torch.Tensor:
    return torch.cdist(x, means).argmin(1)


def main(args: argparse.Namespace) -> dict:
    args.out = args.out or f"runs/{METHOD}/digits-sym{args.r:g}-s{args.seed}"
    default_setup(args, supports=())
    start = time.perf_counter()
    x, targets = features("train")
    x_test, y_test = features("test")
    g = torch.Generator().manual_seed(args.seed)
    flip = torch.rand(len(targets), generator=g) < args.r
    labels = torch.where(flip, torch.randint(0, 10, (len(targets),), generator=g), targets)
    accs = []
    for _ in range(args.rounds):
        means = torch.stack([x[labels == c].mean(0) for c in range(10)])
        accs.append(float((nearest_mean(x_test, means) == y_test).float().mean()))
        labels = nearest_mean(x, means)
    result = {
        "method": METHOD,
        "dataset": "digits",
        "noise": f"sym{args.r:g}",
        "seed": args.seed,
        "epochs": args.rounds,
        "test_acc": accs[-1],
        "best_acc": max(accs),
        "seconds": round(time.perf_counter() - start, 2),
        "run_dir": args.out,
    }
    append_jsonl(Path(args.out) / "results.jsonl", result)
    return result
