"""LRA-Diffusion on mini-WebVision (``puar-playground/LRA-diffusion: train_WebVision.py @ 231e587``):
the Google subset's first 50 classes::

    python methods/lra/train_WebVision.py --gpu_devices 0 1 2 3 --nepoch 200 --warmup_epochs 1 \\
        --feature_dim 1024 --data_path $LNL_DATA/webvision --feature_file features/webvision_train_clip

As the original, without loading a checkpoint first: CLIP ViT-L/14 prior features, k = 50 with
uniform weights, a trained ImageNet ResNet-50 encoder, 50 × 500 class-balanced samples per epoch,
warm-up 1 and a cosine over ``--nepoch``, the WebVision val set (2,500 images) evaluated every epoch
and its best accuracy reported.
"""

from __future__ import annotations

import sys
from pathlib import Path

if __package__ in (None, ""):
    sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from lnl.engine import parse_with_config
from methods.lra import lra_train
from methods.lra.lra_train import Recipe, main  # noqa: F401

RECIPE = Recipe(
    title="LRA-Diffusion (WebVision)",
    dataset="webvision",
    noise_type="real",
    nepoch=300,
    batch_size=256,
    num_workers=16,
    warmup_epochs=1,
    feature_dim=1024,
    k=50,
    fp_encoder="CLIP",
    diff_encoder="resnet50_l",
    weighted=False,
    train_encoder=True,
    lr_warmup=1,
    lr_horizon=None,
    selection="best_test",
    val_split=None,
    test_split="val",
    eval_freq=1,
    eval_from_warmup=False,
    samples_per_class=500,
    gpu_devices=True,
    eval_batch_size=512,
    drop_last=True,
)


def get_args_parser():
    return lra_train.get_args_parser(RECIPE)


if __name__ == "__main__":
    main(parse_with_config(get_args_parser()))
