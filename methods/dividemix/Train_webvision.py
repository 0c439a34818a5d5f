"""DivideMix on WebVision 1.0 mini (``LiJunnan1992/DivideMix: Train_webvision.py @ d9d3058``)::

    python methods/dividemix/Train_webvision.py --data_path PATH_TO_WebVision/

InceptionResNetV2 from scratch (timm), warm-up 1 epoch of plain CE, LR ÷10 at epoch 40, the GMM over
all ≈66k Google images of the first 50 classes each epoch, and top-1/5 of the ensemble on WebVision
val and ILSVRC12 val every epoch (ILSVRC12 folders may be named by class index, DivideMix's layout,
or by WNID, PLReMix's). Unmeasured here: needs the dataset and a GPU.
"""

from __future__ import annotations

import dataclasses
import sys
from pathlib import Path

if __package__ in (None, ""):  # run as a script: make `lnl` and `methods` importable
    sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from lnl.codivide.recipe import Recipe
from lnl.data.file_views import WEBVISION_CROPS
from lnl.engine import parse_with_config
from methods.dividemix import dividemix_train
from methods.dividemix.dividemix_train import main  # noqa: F401  (main is this entry point's)

RECIPE = Recipe(
    title="DivideMix (WebVision)",
    dataset="webvision",
    datasets=("webvision",),
    num_classes=50,
    data_path="./dataset/",
    backbone="timm_inception_resnet_v2",
    batch_size=32,
    lr=0.01,
    weight_decay=5e-4,
    num_epochs=80,
    alpha=0.5,
    lambda_u=0,
    warm_up=1,
    milestones=(40,),
    penalty=False,
    crops=dataclasses.replace(WEBVISION_CROPS, random_resized_crop=True),
    evaluation="webvision",
    flags={"id": ""},
)


def get_args_parser():
    return dividemix_train.get_args_parser(RECIPE)


def parse_args(argv=None):
    return parse_with_config(get_args_parser(), argv)


if __name__ == "__main__":
    main(parse_args())
