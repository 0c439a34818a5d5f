"""Plain cross-entropy training under label noise: the baseline every method is compared with
(IEG's ``--method=supervised``). Example::

    python methods/standard/train.py --dataset cifar10 --data_path data/cifar10 \\
        --noise_mode sym --r 0.5 --num_epochs 200 --out runs/standard/c10-sym50

Resumes from ``<out>/last.pth`` by default (``--resume auto``); writes ``eval.jsonl`` per epoch and
one line to ``<out>/results.jsonl`` at the end. ``--lr_schedule step`` is DivideMix/PLReMix's schedule,
to compare those methods with CE on the same schedule.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import torch

if __package__ in (None, ""):  # run as a script: make `lnl` and `methods` importable
    sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from lnl.data.small import DIGITS_DATASETS
from lnl.engine import comm, default_argument_parser, default_setup, parse_with_config
from lnl.engine.data import add_subset_flag, build_noisy_data, subset_suffix
from lnl.engine.runner import Runner, RunRecord
from lnl.engine.settings import DataSettings, NoiseSettings
from lnl.engine.train_loop import evaluate, train_one_epoch
from lnl.models import create_model

METHOD = "standard"


def get_args_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        "Cross-entropy baseline under label noise", parents=[default_argument_parser()]
    )
    p.add_argument("--dataset", default="cifar10", help="a name from lnl.data.list_datasets()")
    p.add_argument(
        "--data_path", default=None, help="the dataset's folder (default: $LNL_DATA/<dataset>)"
    )
    p.add_argument("--noise_mode", default="sym", help="sym, sym_flip, asym, ... (lnl.data.noise)")
    p.add_argument("--r", type=float, default=0.5, help="noise rate")
    p.add_argument(
        "--noise_file", default=None, help="a noise-label file (DivideMix JSON, LRA .npy, .npz)"
    )
    p.add_argument(
        "--arch",
        default=None,
        help="model name (default: small_cnn for digits, else preact_resnet18)",
    )
    p.add_argument("--num_epochs", type=int, default=200)
    p.add_argument("--batch_size", type=int, default=128)
    p.add_argument("--lr", type=float, default=0.02)
    p.add_argument("--momentum", type=float, default=0.9)
    p.add_argument("--weight_decay", type=float, default=5e-4)
    p.add_argument(
        "--lr_schedule",
        default="cosine",
        choices=("cosine", "step"),
        help="cosine to 0, or DivideMix/PLReMix's step (LR / 10 from num_epochs // 2)",
    )
    p.add_argument("--seed", type=int, default=123)
    add_subset_flag(p)
    return p


def _default_out(args: argparse.Namespace, noise: NoiseSettings) -> str:
    return f"runs/{METHOD}/{args.dataset}-{noise.name}-s{args.seed}{subset_suffix(args.subset)}"


def make_scheduler(optimizer: torch.optim.Optimizer, kind: str, num_epochs: int):
    """Per-epoch LR: cosine annealing to 0, or one ÷10 step halfway. The co-divide methods run epochs
    0..E and step at E // 2 (lnl.codivide.cotrain); CE's 0..num_epochs-1 with E = num_epochs - 1 match it."""
    if kind == "step":
        return torch.optim.lr_scheduler.MultiStepLR(
            optimizer, milestones=[(num_epochs - 1) // 2], gamma=0.1
        )
    return torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, T_max=num_epochs)


def main(args: argparse.Namespace) -> dict:
    """Train, evaluate every epoch, checkpoint every epoch; returns the results record."""
    noise = NoiseSettings.from_args(args)
    args.out = args.out or _default_out(args, noise)
    log = default_setup(args)
    data = build_noisy_data(DataSettings.from_args(args), log)
    arch = args.arch or ("small_cnn" if args.dataset in DIGITS_DATASETS else "preact_resnet18")
    model = create_model(arch, num_classes=data.num_classes).to(args.device)
    optimizer = torch.optim.SGD(
        model.parameters(), lr=args.lr, momentum=args.momentum, weight_decay=args.weight_decay
    )
    scheduler = make_scheduler(optimizer, args.lr_schedule, args.num_epochs)
    runner = Runner(
        args,
        log,
        models={"model": model},
        optimizers={"opt": optimizer},
        schedulers={"sched": scheduler},
        length_flag="num_epochs",
    )  # the scheduler's horizon
    runner.resume()
    state = runner.state
    net, train_loader = (
        comm.ddp(model, args.device),
        comm.shard(data.train_loader),
    )  # DDP when >1 rank
    net = (
        torch.compile(net) if args.compile else net
    )  # the training forward; evaluation runs eagerly

    def step(epoch: int) -> dict:
        data.train_loader.set_epoch(epoch)
        train = train_one_epoch(
            net, train_loader, optimizer, device=args.device, epoch=epoch, amp=args.amp
        )
        scheduler.step()
        test = evaluate(model, data.test_loader, device=args.device, amp=args.amp)
        state["best_acc"] = max(state["best_acc"], test["acc"])
        return {
            "train_loss": train["loss"],
            "train_acc": train["acc"],
            "test_loss": test["loss"],
            "test_acc": test["acc"],
            "lr": scheduler.get_last_lr()[0],
        }

    def record(epoch: int, metrics: dict) -> None:
        state["last_acc"] = metrics["test_acc"]
        runner.log_metrics(epoch, metrics)

    runner.run(args.num_epochs, step, record)
    return runner.finish(
        RunRecord(
            method=METHOD,
            dataset=args.dataset,
            noise=noise.name,
            seed=args.seed,
            epochs=args.num_epochs,
            test_acc=state.get("last_acc"),
            best_acc=state["best_acc"],
            seconds=runner.seconds,
            run_dir=args.out,
        )
    )


if __name__ == "__main__":
    main(parse_with_config(get_args_parser()))
