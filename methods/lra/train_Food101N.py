"""LRA-Diffusion on Food-101N (``puar-playground/LRA-diffusion: train_Food101N.py @ 231e587``)::

    python methods/lra/train_Food101N.py --gpu_devices 0 1 2 3 --nepoch 200 --warmup_epochs 1 \\
        --feature_dim 1024 --data_path $LNL_DATA/Food101N --feature_file features/food101n_train_clip

As the original: CLIP ViT-L/14 prior features, k = 10 with count weights and a static table of each
sample's k + 1 nearest training samples' labels, self first (``prepare_knn``: the own label counts
once), batches of 256 without the short last one, the test set in batches of 512, an ImageNet ResNet-50
encoder that is *not* trained, warm-up 10 and a cosine over 200 epochs whatever the flags say, and
the test set evaluated every epoch with the best test accuracy reported (``--fix_lr_horizon``,
``--train_encoder``, ``--fix_selection`` change that). The checkpoint is not loaded at start-up.
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
    title="LRA-Diffusion (Food-101N)",
    dataset="food101n",
    noise_type="real",
    nepoch=100,
    batch_size=256,
    num_workers=4,
    warmup_epochs=1,
    feature_dim=1024,
    k=10,
    fp_encoder="CLIP",
    diff_encoder="resnet50_l",
    weighted=True,
    train_encoder=False,
    lr_warmup=10,
    lr_horizon=200,
    selection="best_test",
    val_split=None,
    test_split="test",
    eval_freq=1,
    eval_from_warmup=False,
    gpu_devices=True,
    table_layout="food",
    eval_batch_size=512,
    drop_last=True,
)


def get_args_parser():
    return lra_train.get_args_parser(RECIPE)


if __name__ == "__main__":
    main(parse_with_config(get_args_parser()))
