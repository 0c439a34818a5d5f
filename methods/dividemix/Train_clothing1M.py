"""DivideMix on Clothing1M (``LiJunnan1992/DivideMix: Train_clothing1M.py @ d9d3058``;
specs/plremix_dividemix.md §6.3)::

    python methods/dividemix/Train_clothing1M.py --data_path PATH_TO_Clothing1M

ImageNet-pretrained ResNet-50 (``--pretrained``, on by default as in the original; the weights must be
in the torch hub cache when offline). Warm-up (epoch 0) on a 64k class-balanced subset with the
confidence penalty; each later epoch evaluates each net on its own ``num_batches × batch_size``
class-balanced subset, trains with MixMatch forwarding only the labeled mixed rows (L_x + prior
penalty), validates each net and keeps its best-validation weights; the final test ensembles the two
best-validation nets (top-1/5). Unmeasured here: needs the dataset and a GPU.
"""

from __future__ import annotations

import argparse
import dataclasses
import sys
from pathlib import Path
from typing import Sequence

if __package__ in (None, ""):  # run as a script: make `lnl` and `methods` importable
    sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from lnl.codivide.cotrain import fit
from lnl.codivide.files import eval_file_loader, file_data
from lnl.data import get_dataset
from lnl.data.file_views import transforms_for
from lnl.engine import default_argument_parser, default_setup, parse_with_config
from methods.dividemix import dividemix_lib as lib

METHOD = "dividemix"


def get_args_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser("DivideMix (Clothing1M)", parents=[default_argument_parser()])
    g = p.add_argument_group("DivideMix (LiJunnan1992/DivideMix @ d9d3058)")
    g.add_argument("--batch_size", default=32, type=int)
    g.add_argument("--lr", "--learning_rate", dest="lr", default=0.002, type=float)
    g.add_argument("--alpha", default=0.5, type=float)
    g.add_argument("--lambda_u", default=0, type=float)
    g.add_argument("--p_threshold", default=0.5, type=float)
    g.add_argument("--T", default=0.5, type=float)
    g.add_argument("--num_epochs", default=80, type=int, help="epochs 0..num_epochs inclusive")
    g.add_argument("--id", default="clothing1m")
    g.add_argument("--data_path", default="../../Clothing1M/data", type=str)
    g.add_argument("--seed", default=123, type=int)
    g.add_argument("--gpuid", default=0, type=int, help="accepted for compatibility; use --device")
    g.add_argument("--num_class", default=14, type=int)
    g.add_argument("--num_batches", default=1000, type=int, help="eval subset = num_batches × batch_size")
    e = p.add_argument_group("lnl additions")
    e.add_argument("--weight_decay", default=1e-3, type=float)
    e.add_argument("--warm_up", default=1, type=int)
    e.add_argument("--num_workers", default=5, type=int)
    e.add_argument("--arch", default=None, help="lnl model instead of ResNet-50 (tests)")
    e.add_argument("--no-pretrained", dest="pretrained", action="store_false", help="random init")
    return p


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    return parse_with_config(get_args_parser(), argv)


def main(args: argparse.Namespace) -> dict:
    """Train, keep best-val weights per net, test their ensemble; returns the results record."""
    args.out = args.out or f"runs/{METHOD}/clothing1m-s{args.seed}"
    log = default_setup(args)
    root = Path(args.data_path).expanduser()
    train_set = get_dataset("clothing1m", root, "train")
    val_set, test_set = get_dataset("clothing1m", root, "val"), get_dataset("clothing1m", root, "test")
    recipe = dataclasses.replace(lib.CLOTHING1M, warmup_samples=2 * args.num_batches * args.batch_size,
                                 eval_samples=args.num_batches * args.batch_size)
    tf = transforms_for(recipe.crops, train_set.mean, train_set.std)
    nets, optimizers = lib.build_nets(args, "torchvision_resnet50", 14, pretrained=args.pretrained)
    method = lib.FileDivideMix(args, nets, optimizers, file_data(train_set), log, recipe=recipe, milestone=40,
                               penalty=True, labeled_only=True, tf=tf)
    val = eval_file_loader(val_set, tf["val"], 4 * args.batch_size, args.num_workers, args.device)
    test = eval_file_loader(test_set, tf["val"], 4 * args.batch_size, args.num_workers, args.device)
    out = Path(args.out)
    record = {"method": METHOD, "dataset": "clothing1m", "noise": "real", "seed": args.seed}
    return fit(args, method, log, test=lambda: lib.track_best(method, val, out), result=record, track="val_acc",
               final=lambda: lib.test_best(method, test, out))


if __name__ == "__main__":
    main(parse_args())
