"""PLReMix on WebVision 1.0 mini (``lxysl/PLReMix: train_webvision.py @ b0c4ec3``).
The README's command runs as written::

    python methods/plremix/train_webvision.py --dataset webvision --data_path PATH_TO_WebVision/ --mcrop

Trains on the Google images of the first 50 classes; every epoch reports top-1/5 of the two-net
ensemble on WebVision val and on ILSVRC12 val (``<data_path>/imagenet/val/<WNID>/``, rearranged by
``data_prep``; class c is line c of ``info/synsets.txt``). Unmeasured here: needs the data and a GPU.
"""

from __future__ import annotations

import sys
from pathlib import Path

if __package__ in (None, ""):  # run as a script: make `lnl` and `methods` importable
    sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from lnl.codivide.recipe import Recipe
from lnl.data.file_views import WEBVISION_CROPS
from lnl.engine import parse_with_config
from methods.plremix import plremix_train
from methods.plremix.plremix_train import main  # noqa: F401  (main is this entry point's)

RECIPE = Recipe(
    title="PLReMix (WebVision)",
    dataset="webvision",
    datasets=("webvision",),
    num_classes=50,
    data_path="~/Documents/WebVision",
    backbone="inception",
    batch_size=48,
    lr=0.015,
    weight_decay=5e-4,
    num_epochs=150,
    alpha=0.5,
    lambda_u=0,
    warm_up_epochs={"webvision": 2},
    milestones=(60, 120),
    penalty=False,
    crops=WEBVISION_CROPS,
    evaluation="webvision",
    flags={"crl": "plr"},
)


def get_args_parser():
    return plremix_train.get_args_parser(RECIPE)


def parse_args(argv=None):
    return parse_with_config(get_args_parser(), argv)


if __name__ == "__main__":
    main(parse_args())
