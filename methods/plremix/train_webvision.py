"""PLReMix on WebVision 1.0 mini (``lxysl/PLReMix: train_webvision.py @ b0c4ec3``;
specs/plremix_dividemix.md §2.2, §5.10, §5.11). The README's command runs as written::

    python methods/plremix/train_webvision.py --dataset webvision --data_path PATH_TO_WebVision/ --mcrop

Trains on the Google images of the first 50 classes; every epoch reports top-1/5 of the two-net
ensemble on WebVision val and on ILSVRC12 val (``<data_path>/imagenet/val/<WNID>/``, rearranged by
``data_prep``; class c is line c of ``info/synsets.txt``). Unmeasured here: needs the data and a GPU.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Sequence

if __package__ in (None, ""):  # run as a script: make `lnl` and `methods` importable
    sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from lnl.codivide.cotrain import fit
from lnl.codivide.files import WEBVISION, file_data, topk_tests, webvision_tests
from lnl.data import get_dataset
from lnl.data.file_views import transforms_for
from lnl.engine import default_argument_parser, default_setup, parse_with_config
from methods.plremix import plremix_lib as lib

METHOD = "plremix"
MILESTONES = (60, 120)
WARM_UP = 2


def get_args_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser("PLReMix (WebVision)", parents=[default_argument_parser()])
    lib.add_plremix_args(p, dataset="webvision", datasets=("webvision",), num_classes=50,
                         data_path="~/Documents/WebVision", backbone="inception", batch_size=48, lr=0.015,
                         wd=5e-4, num_epochs=150, alpha=0.5, lambda_u=0, crl="plr")
    return p


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    return parse_with_config(get_args_parser(), argv)


def main(args: argparse.Namespace) -> dict:
    """Train, test both validation sets every epoch; returns the results record."""
    lib.resolve_fixes(args)
    args.out = args.out or f"runs/{METHOD}/webvision-s{args.seed}"
    log = default_setup(args)
    args.warm_up = WARM_UP if args.warm_up is None else args.warm_up
    root = Path(args.data_path).expanduser()
    train_set = get_dataset("webvision", root, "train")
    tf = transforms_for(WEBVISION.crops, train_set.mean, train_set.std, aug=args.aug)
    nets, optimizers = lib.build_nets(args, 50)
    method = lib.FilePLReMix(args, nets, optimizers, file_data(train_set), log, recipe=WEBVISION,
                             milestones=MILESTONES, penalty=False, tf=tf)
    loaders = webvision_tests(root, tf, args)

    record = {"method": METHOD, "dataset": "webvision", "noise": "real", "seed": args.seed}
    return fit(args, method, log, test=topk_tests(method, loaders, batch_mean=True), result=record)


if __name__ == "__main__":
    main(parse_args())
