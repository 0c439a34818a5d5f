"""The PLReMix run shared by the three entry points: one parser whose defaults come from a
per-dataset ``Recipe`` (the original script's flags and hard-coded values), and ``main(args)``: build
the data and the two nets, then ``fit`` (train, test, checkpoint every epoch; resumable).
"""

from __future__ import annotations

import argparse
from pathlib import Path

from lnl.codivide.cotrain import fit
from lnl.codivide.files import eval_file_loader, file_data, topk_tests, webvision_tests
from lnl.codivide.recipe import Recipe
from lnl.data import get_dataset
from lnl.data.file_views import transforms_for
from lnl.data.small import DIGITS_DATASETS
from lnl.engine import default_argument_parser, default_setup
from lnl.engine.data import add_subset_flag, build_noisy_data, subset_suffix
from lnl.engine.settings import DataSettings, NoiseSettings
from methods.plremix import plremix_lib as lib

METHOD = "plremix"


def get_args_parser(r: Recipe) -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(r.title, parents=[default_argument_parser()])
    lib.add_plremix_args(p, r)
    if not r.file_list:
        p.add_argument(
            "--preset",
            action="store_true",
            help="per-setting defaults from lnl/presets/plremix.yaml",
        )
        add_subset_flag(p)
    p.set_defaults(recipe=r)
    return p


def main(args: argparse.Namespace) -> dict:
    """Train both networks, evaluate every epoch, checkpoint every epoch; returns the results record."""
    r = vars(args).pop("recipe")  # not a flag: keeps args.yaml and the logs plain
    lib.resolve_fixes(args)
    return (main_file_list if r.file_list else main_in_memory)(args, r)


def main_in_memory(args: argparse.Namespace, r: Recipe) -> dict:
    """CIFAR-10/100, Tiny-ImageNet (and digits) with synthetic noise, tested on the test split every epoch."""
    args.noise_file = args.noise_file or lib.default_noise_file(args)
    noise = NoiseSettings.from_args(args)
    args.out = (
        args.out
        or f"runs/{METHOD}/{args.dataset}-{noise.name}-s{args.seed}{subset_suffix(args.subset)}"
    )
    log = default_setup(args)
    if args.warm_up is None:
        args.warm_up = r.warm_up_epochs[args.dataset]
    if args.mcrop:
        log.warning("--mcrop only applies to Clothing1M/WebVision; ignored")
    data = build_noisy_data(DataSettings.from_args(args), log)
    args.num_classes = data.num_classes
    if args.arch is None and args.dataset in DIGITS_DATASETS:
        args.arch = "small_cnn"
    nets, optimizers = lib.proto_nets(args, data.num_classes, input_size=data.train.images.shape[1])
    method = lib.PLReMix(args, nets, optimizers, data, log)

    def test() -> dict:
        return {"test_acc": method.test(data.test_loader)["top1"]}

    record = {"method": METHOD, "dataset": args.dataset, "noise": noise.name, "seed": args.seed}
    return fit(args, method, log, test=test, result=record, logger_options=lib.wandb_options(args))


def main_file_list(args: argparse.Namespace, r: Recipe) -> dict:
    """Clothing1M (val every epoch, the last epoch's nets tested) or WebVision (both val sets every epoch)."""
    if r.evaluation not in ("val_last", "webvision"):
        raise ValueError(
            f"{r.title}: evaluation {r.evaluation!r}; PLReMix's file-list runs provide "
            "'val_last', 'webvision'"
        )
    args.out = args.out or f"runs/{METHOD}/{r.dataset}-s{args.seed}"
    log = default_setup(args)
    args.warm_up = r.warm_up_epochs[r.dataset] if args.warm_up is None else args.warm_up
    if r.pretrained:
        args.pretrain = args.arch is None or args.pretrain  # forced on in the original
    root = Path(args.data_path).expanduser()
    train_set = get_dataset(r.dataset, root, "train")
    tf = transforms_for(r.crops, train_set.mean, train_set.std, aug=args.aug)
    nets, optimizers = lib.proto_nets(args, r.num_classes)
    method = lib.FilePLReMix(
        args,
        nets,
        optimizers,
        file_data(train_set),
        log,
        recipe=r,
        milestones=r.milestones,
        penalty=r.penalty,
        tf=tf,
    )
    record = {"method": METHOD, "dataset": r.dataset, "noise": "real", "seed": args.seed}
    if r.evaluation == "webvision":
        loaders = webvision_tests(root, tf, args)
        return fit(
            args,
            method,
            log,
            test=topk_tests(method, loaders, batch_mean=True),
            result=record,
            logger_options=lib.wandb_options(args),
        )
    val_set, test_set = get_dataset(r.dataset, root, "val"), get_dataset(r.dataset, root, "test")
    bs = 2 * args.batch_size
    val = eval_file_loader(val_set, tf["val"], bs, args.num_workers, args.device)
    test = eval_file_loader(test_set, tf["val"], bs, args.num_workers, args.device)

    def final() -> dict:
        res = method.test(test, topk=(1, 5))
        # the original's test() averages per-batch accuracies: both are recorded, named
        return {
            "test_acc": res["top1"],
            "test_top5": res["top5"],
            "test_top1_batchmean": res["top1_batchmean"],
            "test_top5_batchmean": res["top5_batchmean"],
        }

    return fit(
        args,
        method,
        log,
        test=lambda: {"val_acc": method.test(val)["top1"]},
        result=record,
        track="val_acc",
        final=final,
        logger_options=lib.wandb_options(args),
    )
