"""Full fine-tuning with NMTune's feature regularisers on the encoder's own features (no MLP, no MSE
term): ``src/nml_finetune.py`` of Hhhhhhao/Noisy-Model-Learning @ f249dce.

    python methods/nmtune/nml_finetune.py --train-dataset=CIFAR10 --model=resnet50_noise_5 \\
        --model_source=timm --pretrained PATH --epochs=30 --lr=0.0001 --cov-loss-weight=0.04 \\
        --svd-loss-weight=0.001 --save SAVE_PATH

Each step: one train-pipeline view, ``F = encoder(x)``, ``L = CE(head(F), y) + w_cov·L_COV(F) −
w_svd·mean(ŝ_1..5(F))`` (``regularisers.py``; a zero weight skips the term), AdamW and the per-step
cosine schedule of ``finetune.py``, whose driver, outputs and resume this shares. With
``--freeze-encoder`` the features are constants and the terms move nothing, so that flag is refused:
``finetune.py --freeze-encoder`` is the linear probe.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

if __package__ in (None, ""):  # run as a script: make `lnl` and `methods` importable
    sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from torch import Tensor

from lnl.engine import parse_with_config
from methods.nmtune import finetune
from methods.nmtune.regularisers import covariance_loss, top_singular_share


def get_args_parser() -> argparse.ArgumentParser:
    p = finetune.get_args_parser()
    p.description = "Fine-tuning with NMTune's feature regularisers (nml_finetune.py)"
    p.add_argument("--cov-loss-weight", type=float, default=0.04)
    p.add_argument("--svd-loss-weight", type=float, default=0.001)
    return p


def feature_regulariser(cov_weight: float, svd_weight: float):
    """``feats -> w_cov·L_COV(feats) − w_svd·mean(ŝ_1..5(feats))``, skipping zero-weight terms."""

    def regularise(feats: Tensor) -> Tensor:
        loss = feats.new_zeros(())
        if svd_weight:
            loss = loss - svd_weight * top_singular_share(feats)
        if cov_weight:
            loss = loss + cov_weight * covariance_loss(feats)
        return loss

    return regularise


def main(args: argparse.Namespace) -> dict:
    if args.freeze_encoder:
        raise ValueError(
            "nml_finetune.py regularises the encoder's features while training it; with "
            "--freeze-encoder they are constants: use finetune.py --freeze-encoder (linear probe)"
        )
    return finetune.main(
        args,
        method="nml-finetune",
        regulariser=feature_regulariser(args.cov_loss_weight, args.svd_loss_weight),
    )


if __name__ == "__main__":
    main(parse_with_config(get_args_parser()))
