"""PLReMix on Clothing1M (``lxysl/PLReMix: train_clothing1m.py @ b0c4ec3``).
The README's command runs as written::

    python methods/plremix/train_clothing1m.py --dataset clothing1m --data_path PATH_TO_Clothing1M/ --pretrain

Each epoch draws class-balanced 64k subsets (seeded by (seed, epoch, net) here; unseeded in the
original) for the warm-up and for each net's evaluation pass; the labeled/unlabeled sets are sub-lists
of that subset. Logs the clean-val accuracy every epoch and tests (top-1/5) with the **last-epoch**
weights at the end (P12; DivideMix tests its best-val models). ``--fix_p1``: PLR candidates from the
right rows (P1). Unmeasured here: needs the real dataset and a GPU.
"""

from __future__ import annotations

import sys
from pathlib import Path

if __package__ in (None, ""):  # run as a script: make `lnl` and `methods` importable
    sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from lnl.codivide.recipe import Recipe
from lnl.data.file_views import CLOTHING1M_CROPS
from lnl.engine import parse_with_config
from methods.plremix import plremix_train
from methods.plremix.plremix_train import main  # noqa: F401  (main is this entry point's)

# class-balanced 64,000-image warm-up and eval subsets (DivideMix's eval subsets: 32,000)
RECIPE = Recipe(
    title="PLReMix (Clothing1M)",
    dataset="clothing1m",
    datasets=("clothing1m",),
    num_classes=14,
    data_path="~/Documents/Clothing1M",
    backbone="resnet50",
    batch_size=64,
    lr=0.004,
    weight_decay=1e-3,
    num_epochs=100,
    alpha=0.5,
    lambda_u=0,
    warm_up_epochs={"clothing1m": 1},
    milestones=(40, 80),
    penalty=True,
    crops=CLOTHING1M_CROPS,
    warmup_samples=64_000,
    eval_samples=64_000,
    evaluation="val_last",
    pretrained=True,
    flags={"crl": "plr"},
)


def get_args_parser():
    return plremix_train.get_args_parser(RECIPE)


def parse_args(argv=None):
    return parse_with_config(get_args_parser(), argv)


if __name__ == "__main__":
    main(parse_args())
