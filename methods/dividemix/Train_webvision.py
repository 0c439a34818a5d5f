"""DivideMix on WebVision 1.0 mini (``LiJunnan1992/DivideMix: Train_webvision.py @ d9d3058``;
specs/plremix_dividemix.md §6.3)::

    python methods/dividemix/Train_webvision.py --data_path PATH_TO_WebVision/

InceptionResNetV2 from scratch (timm), warm-up 1 epoch of plain CE, LR ÷10 at epoch 40, the GMM over
all ≈66k Google images of the first 50 classes each epoch, and top-1/5 of the ensemble on WebVision
val and ILSVRC12 val every epoch (ILSVRC12 folders may be named by class index, DivideMix's layout,
or by WNID, PLReMix's). Unmeasured here: needs the dataset and a GPU.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Sequence

if __package__ in (None, ""):  # run as a script: make `lnl` and `methods` importable
    sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from lnl.codivide.cotrain import fit
from lnl.codivide.files import file_data, topk_tests, webvision_tests
from lnl.data import get_dataset
from lnl.data.file_views import transforms_for
from lnl.engine import default_argument_parser, default_setup, parse_with_config
from methods.dividemix import dividemix_lib as lib

METHOD = "dividemix"


def get_args_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser("DivideMix (WebVision)", parents=[default_argument_parser()])
    g = p.add_argument_group("DivideMix (LiJunnan1992/DivideMix @ d9d3058)")
    g.add_argument("--batch_size", default=32, type=int)
    g.add_argument("--lr", "--learning_rate", dest="lr", default=0.01, type=float)
    g.add_argument("--alpha", default=0.5, type=float)
    g.add_argument("--lambda_u", default=0, type=float)
    g.add_argument("--p_threshold", default=0.5, type=float)
    g.add_argument("--T", default=0.5, type=float)
    g.add_argument("--num_epochs", default=80, type=int, help="epochs 0..num_epochs inclusive")
    g.add_argument("--id", default="")
    g.add_argument("--seed", default=123, type=int)
    g.add_argument("--gpuid", default=0, type=int, help="accepted for compatibility; use --device")
    g.add_argument("--num_class", default=50, type=int)
    g.add_argument("--data_path", default="./dataset/", type=str)
    e = p.add_argument_group("lnl additions")
    e.add_argument("--weight_decay", default=5e-4, type=float)
    e.add_argument("--warm_up", default=1, type=int)
    e.add_argument("--num_workers", default=5, type=int)
    e.add_argument("--arch", default=None, help="lnl model instead of InceptionResNetV2 (tests)")
    return p


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    return parse_with_config(get_args_parser(), argv)


def main(args: argparse.Namespace) -> dict:
    """Train, test both validation sets every epoch; returns the results record."""
    args.out = args.out or f"runs/{METHOD}/webvision-s{args.seed}"
    log = default_setup(args)
    root = Path(args.data_path).expanduser()
    train_set = get_dataset("webvision", root, "train")
    tf = transforms_for(lib.WEBVISION.crops, train_set.mean, train_set.std)
    nets, optimizers = lib.build_nets(args, "timm_inception_resnet_v2", 50)
    method = lib.FileDivideMix(args, nets, optimizers, file_data(train_set), log, recipe=lib.WEBVISION,
                               milestone=40, penalty=False, labeled_only=False, tf=tf)
    loaders = webvision_tests(root, tf, args)

    record = {"method": METHOD, "dataset": "webvision", "noise": "real", "seed": args.seed}
    return fit(args, method, log, test=topk_tests(method, loaders), result=record)


if __name__ == "__main__":
    main(parse_args())
