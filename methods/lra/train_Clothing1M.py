"""LRA-Diffusion on Clothing1M (``puar-playground/LRA-diffusion: train_Clothing1M.py @ 231e587``)::

    python methods/lra/train_Clothing1M.py --gpu_devices 0 1 2 3 --nepoch 200 --warmup_epochs 1 \\
        --feature_dim 1024 --data_path $LNL_DATA/clothing1m --feature_file features/clothing1m_train_cc

As the original, but training (its ``train()`` call is commented out at HEAD) and without loading a
checkpoint first: CC-classifier prior features, k = 20 with uniform weights, a trained ImageNet
ResNet-50 encoder, 14 × 10,000 class-balanced samples redrawn every epoch, warm-up 1 and a cosine
over ``--nepoch``, val every epoch with the original's val/test best-tracker mix-up (A.9.7;
``--fix_selection``). The original trains on the 738k CC-selected subset; point ``--feature_file`` and
``--noise_type`` at that subset's features and labels to match it (README).
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
    title="LRA-Diffusion (Clothing1M)",
    dataset="clothing1m",
    noise_type="real",
    nepoch=300,
    batch_size=256,
    num_workers=4,
    warmup_epochs=1,
    feature_dim=1024,
    k=20,
    fp_encoder="CC",
    diff_encoder="resnet50_l",
    weighted=False,
    train_encoder=True,
    lr_warmup=1,
    lr_horizon=None,
    selection="val_test_tracker",
    val_split="val",
    test_split="test",
    eval_freq=1,
    eval_from_warmup=False,
    samples_per_class=10_000,
    gpu_devices=True,
    eval_batch_size=400,
    drop_last=True,
)


def get_args_parser():
    return lra_train.get_args_parser(RECIPE)


if __name__ == "__main__":
    main(parse_with_config(get_args_parser()))
