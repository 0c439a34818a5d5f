"""LRA-Diffusion on CIFAR-10/100 (``puar-playground/LRA-diffusion: train_CIFAR.py @ 231e587``),
and on any in-memory dataset (``digits``) with generated noise::

    python methods/lra/train_CIFAR.py --device cuda:0 --noise_type cifar10-1-0.35 --fp_encoder CLIP \\
        --nepoch 200 --warmup_epochs 5 --data_path data/cifar10 \\
        --feature_file features/cifar10_train_clip
    python methods/lra/train_CIFAR.py --noise_type digits-sym-0.4 --fp_encoder pixels \\
        --diff_encoder small_cnn --nepoch 30 --device cpu

Trains on the first 45,000 training images with the noise file's labels, validates on the last 5,000
(clean) every 5 epochs from ``--warmup_epochs``, reports test accuracy at the best-val epoch.
Resumes from ``<out>/last.pth`` (``--resume auto``). Flags and fixes: methods/lra/README.md.
"""

from __future__ import annotations

import sys
from pathlib import Path

if __package__ in (None, ""):  # run as a script: make `lnl` and `methods` importable
    sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from lnl.engine import parse_with_config
from methods.lra import lra_train
from methods.lra.lra_train import Recipe, main  # noqa: F401  (main is this entry point's)

RECIPE = Recipe(
    title="LRA-Diffusion (CIFAR)",
    dataset="cifar10",
    noise_type="cifar10-1-0.35",
    nepoch=200,
    batch_size=200,
    num_workers=4,
    warmup_epochs=5,
    feature_dim=512,
    k=10,
    fp_encoder="SimCLR",
    diff_encoder="resnet34",
    weighted=True,
    train_encoder=False,
    lr_warmup=None,
    lr_horizon=1000,
    selection="val",
    val_split="holdout",
    test_split="test",
    eval_freq=5,
    eval_from_warmup=True,
    val_size=None,
    online_simclr=True,
)


def get_args_parser():
    return lra_train.get_args_parser(RECIPE)


if __name__ == "__main__":
    main(parse_with_config(get_args_parser()))
