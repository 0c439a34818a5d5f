"""DivideMix on Clothing1M (``LiJunnan1992/DivideMix: Train_clothing1M.py @ d9d3058``)::

    python methods/dividemix/Train_clothing1M.py --data_path PATH_TO_Clothing1M

ImageNet-pretrained ResNet-50 (``--pretrained``, on by default as in the original; the weights must be
in the torch hub cache when offline). Warm-up (epoch 0) on a 64k class-balanced subset with the
confidence penalty; each later epoch evaluates each net on its own ``num_batches × batch_size``
class-balanced subset, trains with MixMatch forwarding only the labeled mixed rows (L_x + prior
penalty), validates each net and keeps its best-validation weights; the final test ensembles the two
best-validation nets (top-1/5). Unmeasured here: needs the dataset and a GPU.
"""

from __future__ import annotations

import sys
from pathlib import Path

if __package__ in (None, ""):  # run as a script: make `lnl` and `methods` importable
    sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from lnl.codivide.recipe import Recipe
from lnl.data.file_views import CLOTHING1M_CROPS
from lnl.engine import parse_with_config
from methods.dividemix import dividemix_train
from methods.dividemix.dividemix_train import main  # noqa: F401  (main is this entry point's)

# the eval subsets are --num_batches × --batch_size = 32,000 per net (PLReMix's: 64,000); warm-up twice that
RECIPE = Recipe(
    title="DivideMix (Clothing1M)",
    dataset="clothing1m",
    datasets=("clothing1m",),
    num_classes=14,
    data_path="../../Clothing1M/data",
    backbone="torchvision_resnet50",
    batch_size=32,
    lr=0.002,
    weight_decay=1e-3,
    num_epochs=80,
    alpha=0.5,
    lambda_u=0,
    warm_up=1,
    milestones=(40,),
    penalty=True,
    crops=CLOTHING1M_CROPS,
    evaluation="val_best",
    pretrained=True,
    labeled_only=True,
    flags={"id": "clothing1m", "num_batches": 1000},
)


def get_args_parser():
    return dividemix_train.get_args_parser(RECIPE)


def parse_args(argv=None):
    return parse_with_config(get_args_parser(), argv)


if __name__ == "__main__":
    main(parse_args())
