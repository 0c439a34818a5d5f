"""DivideMix on CIFAR-10/100 (``LiJunnan1992/DivideMix: Train_cifar.py @ d9d3058``).
The original's commands run as written, e.g.::

    python methods/dividemix/Train_cifar.py --r 0.5 --lambda_u 25 --data_path ./cifar-10
    python methods/dividemix/Train_cifar.py --dataset cifar100 --num_class 100 --data_path ./cifar-100 \\
        --r 0.9 --lambda_u 150 --p_threshold 0.6

``--preset`` takes λ_u / p_threshold from ``lnl/presets/dividemix.yaml`` (paper Table 7 and the
maintainer's answers; command-line flags win). Epochs run 0..num_epochs inclusive. The noise file is
``--noise_file``, else the original's ``<data_path>/<r:.1f>_<noise_mode>.json`` when it exists, else
generated exactly as the original (seed 123). Resumes from ``<out>/last.pth`` by default (the original
saved no checkpoints); writes ``eval.jsonl`` (with the GMM's clean/noisy AUC) and ``results.jsonl``.
"""

from __future__ import annotations

import sys
from pathlib import Path

if __package__ in (None, ""):  # run as a script: make `lnl` and `methods` importable
    sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from lnl.codivide.recipe import Recipe
from lnl.presets import parse_with_preset
from methods.dividemix import dividemix_train
from methods.dividemix.dividemix_train import main  # noqa: F401  (main is this entry point's)

RECIPE = Recipe(
    title="DivideMix (CIFAR-10/100)",
    dataset="cifar10",
    datasets=("cifar10", "cifar100", "digits", "digits16"),
    num_classes=10,
    data_path=None,
    backbone="dividemix_preact_resnet18",
    batch_size=64,
    lr=0.02,
    weight_decay=5e-4,
    num_epochs=300,
    alpha=4,
    lambda_u=25,
    warm_up_epochs={"cifar10": 10, "cifar100": 30, "digits": 3, "digits16": 3},
    flags={"id": ""},
)


def get_args_parser():
    return dividemix_train.get_args_parser(RECIPE)


def parse_args(argv=None):
    """Parse the command line; with ``--preset`` the setting's preset values become defaults first."""
    return parse_with_preset(get_args_parser(), dividemix_train.METHOD, argv)


if __name__ == "__main__":
    main(parse_args())
