"""The DivideMix run shared by the three entry points: one parser whose defaults come from a
per-dataset ``Recipe`` (the original script's flags and hard-coded values), and ``main(args)``: build
the data and the two nets, then ``fit`` (train, test, checkpoint every epoch; resumable).
"""

from __future__ import annotations

import argparse
import dataclasses
from pathlib import Path

from lnl.codivide.cotrain import CoDivide, fit
from lnl.codivide.files import eval_file_loader, file_data, topk_tests, webvision_tests
from lnl.codivide.recipe import Recipe
from lnl.data import get_dataset
from lnl.data.file_views import transforms_for
from lnl.data.small import DIGITS_DATASETS
from lnl.engine import default_argument_parser, default_setup
from lnl.engine.data import add_subset_flag, build_noisy_data, subset_suffix
from lnl.engine.settings import DataSettings, NoiseSettings
from methods.dividemix import dividemix_lib as lib

METHOD = "dividemix"
CIFAR_WEIGHT_DECAY = 5e-4  # Train_cifar.py @ d9d3058 hard-codes it (no flag)
# dataloader_cifar.py @ d9d3058: DivideMix's own constants (CIFAR-100's differ from PLReMix's)
NORMALISATION = {
    "cifar10": ((0.4914, 0.4822, 0.4465), (0.2023, 0.1994, 0.2010)),
    "cifar100": ((0.507, 0.487, 0.441), (0.267, 0.256, 0.276)),
}


def get_args_parser(r: Recipe) -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(r.title, parents=[default_argument_parser()])
    g = p.add_argument_group("DivideMix (LiJunnan1992/DivideMix @ d9d3058)")
    g.add_argument(
        "--batch_size",
        default=r.batch_size,
        type=int,
        help="train batchsize (labeled and unlabeled)",
    )
    g.add_argument(
        "--lr", "--learning_rate", dest="lr", default=r.lr, type=float, help="initial learning rate"
    )
    if not r.file_list:
        g.add_argument("--noise_mode", default="sym")
    g.add_argument("--alpha", default=r.alpha, type=float, help="parameter for Beta")
    g.add_argument(
        "--lambda_u", default=r.lambda_u, type=float, help="weight for unsupervised loss"
    )
    g.add_argument("--p_threshold", default=0.5, type=float, help="clean probability threshold")
    g.add_argument("--T", default=0.5, type=float, help="sharpening temperature")
    g.add_argument(
        "--num_epochs", default=r.num_epochs, type=int, help="epochs 0..num_epochs inclusive"
    )
    if not r.file_list:
        g.add_argument("--r", default=0.5, type=float, help="noise ratio")
    g.add_argument("--id", default=r.flags["id"])
    g.add_argument("--seed", default=123, type=int)
    g.add_argument("--gpuid", default=0, type=int, help="accepted for compatibility; use --device")
    g.add_argument(
        "--num_class", default=r.num_classes, type=int, help="overwritten by the dataset"
    )
    g.add_argument(
        "--data_path", default=r.data_path, help="dataset folder (default: $LNL_DATA/<dataset>)"
    )
    if not r.file_list:
        g.add_argument("--dataset", default=r.dataset, choices=r.datasets)
    if "num_batches" in r.flags:
        g.add_argument(
            "--num_batches",
            default=r.flags["num_batches"],
            type=int,
            help="eval subset = num_batches × batch_size",
        )
    e = p.add_argument_group("lnl additions")
    if r.file_list:
        e.add_argument("--weight_decay", default=r.weight_decay, type=float)
    else:
        e.add_argument(
            "--noise_file", default=None, help="noise labels file (see Train_cifar.py's docstring)"
        )
    e.add_argument(
        "--warm_up", type=int, default=r.warm_up, help="warm-up epochs (default: the original's)"
    )
    if r.file_list:
        e.add_argument("--num_workers", default=5, type=int, help="decoding workers")
    e.add_argument("--arch", default=None, help="lnl model (default: the original's network)")
    if r.pretrained:
        e.add_argument(
            "--no-pretrained", dest="pretrained", action="store_false", help="random init"
        )
    if not r.file_list:
        e.add_argument(
            "--lr_milestone",
            default="150",
            help="epoch of the LR ÷10 step (the original's 150), or 'half'",
        )
        e.add_argument(
            "--preset",
            action="store_true",
            help="per-setting defaults from lnl/presets/dividemix.yaml",
        )
        add_subset_flag(p)
    p.set_defaults(recipe=r)
    return p


def default_noise_file(args: argparse.Namespace) -> str | None:
    """The original's ``<data_path>/<r:.1f>_<noise_mode>.json`` when it exists."""
    if args.data_path is None:
        return None
    path = Path(args.data_path) / f"{args.r:.1f}_{args.noise_mode}.json"
    return str(path) if path.is_file() else None


def main(args: argparse.Namespace) -> dict:
    """Train both networks, evaluate every epoch, checkpoint every epoch; returns the results record."""
    r = vars(args).pop("recipe")  # not a flag: keeps args.yaml and the logs plain
    return (main_file_list if r.file_list else main_in_memory)(args, r)


def main_in_memory(args: argparse.Namespace, r: Recipe) -> dict:
    """CIFAR-10/100 (and digits) with synthetic noise, tested on the test split every epoch."""
    args.noise_file = args.noise_file or default_noise_file(args)
    noise = NoiseSettings.from_args(args)
    args.out = (
        args.out
        or f"runs/{METHOD}/{args.dataset}-{noise.name}-s{args.seed}{subset_suffix(args.subset)}"
    )
    log = default_setup(args)
    args.warm_up = r.warm_up_epochs[args.dataset] if args.warm_up is None else args.warm_up
    data = build_noisy_data(
        DataSettings.from_args(args), log, normalisation=NORMALISATION.get(args.dataset)
    )
    args.num_class = data.num_classes
    if args.arch is None and args.dataset in DIGITS_DATASETS:
        args.arch = "small_cnn"
    nets, optimizers = lib.dividemix_nets(
        args, r.backbone, data.num_classes, weight_decay=CIFAR_WEIGHT_DECAY
    )
    method = CoDivide(args, nets, optimizers, data, log)

    def test() -> dict:
        return {"test_acc": method.test(data.test_loader)["top1"]}

    record = {"method": METHOD, "dataset": args.dataset, "noise": noise.name, "seed": args.seed}
    return fit(args, method, log, test=test, result=record)


def main_file_list(args: argparse.Namespace, r: Recipe) -> dict:
    """Clothing1M (best-val nets tested at the end) or WebVision (both val sets every epoch)."""
    if r.evaluation not in ("val_best", "webvision"):
        raise ValueError(
            f"{r.title}: evaluation {r.evaluation!r}; DivideMix's file-list runs provide "
            "'val_best', 'webvision'"
        )
    args.out = args.out or f"runs/{METHOD}/{r.dataset}-s{args.seed}"
    log = default_setup(args)
    root = Path(args.data_path).expanduser()
    train_set = get_dataset(r.dataset, root, "train")
    if (
        "num_batches" in r.flags
    ):  # Clothing1M: warm-up on 2 × num_batches × bs, eval subsets of num_batches × bs
        r = dataclasses.replace(
            r,
            warmup_samples=2 * args.num_batches * args.batch_size,
            eval_samples=args.num_batches * args.batch_size,
        )
    tf = transforms_for(r.crops, train_set.mean, train_set.std)
    kwargs = {"pretrained": args.pretrained} if r.pretrained else {}
    nets, optimizers = lib.dividemix_nets(
        args, r.backbone, r.num_classes, weight_decay=args.weight_decay, **kwargs
    )
    method = lib.FileDivideMix(
        args,
        nets,
        optimizers,
        file_data(train_set),
        log,
        recipe=r,
        milestone=r.milestones[0],
        penalty=r.penalty,
        labeled_only=r.labeled_only,
        tf=tf,
    )
    record = {"method": METHOD, "dataset": r.dataset, "noise": "real", "seed": args.seed}
    if r.evaluation == "webvision":
        return fit(
            args,
            method,
            log,
            test=topk_tests(method, webvision_tests(root, tf, args)),
            result=record,
        )
    val_set, test_set = get_dataset(r.dataset, root, "val"), get_dataset(r.dataset, root, "test")
    val = eval_file_loader(val_set, tf["val"], 4 * args.batch_size, args.num_workers, args.device)
    test = eval_file_loader(test_set, tf["val"], 4 * args.batch_size, args.num_workers, args.device)
    out = Path(args.out)
    return fit(
        args,
        method,
        log,
        test=lambda: lib.track_best(method, val, out),
        result=record,
        track="val_acc",
        final=lambda: lib.test_best(method, test, out),
    )
