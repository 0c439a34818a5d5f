"""PLReMix on CIFAR-10/100 and Tiny-ImageNet (``lxysl/PLReMix: train.py @ b0c4ec3``).
The README's commands run as written, e.g.::

    python methods/plremix/train.py --r 0.5 --lambda_u 25
    python methods/plremix/train.py --dataset cifar100 --data_path ./data/cifar100/ --r 0.9 --lambda_u 150
    python methods/plremix/train.py --dataset tiny_imagenet --data_path ./data/tiny-imagenet-200 --r 0.45 \\
        --noise_mode asym --lambda_u 0

``--preset`` takes λ_u / p_threshold / warm-up / epochs from ``lnl/presets/plremix.yaml`` for the
setting (flags given on the command line win). Epochs run 0..num_epochs inclusive, as in the original.
Resumes from ``<out>/last.pth`` by default; writes ``eval.jsonl`` per epoch and a line to
``<out>/results.jsonl``. Bugs kept by default and their ``--fix_*`` flags: methods/plremix/README.md.
"""

from __future__ import annotations

import sys
from pathlib import Path

if __package__ in (None, ""):  # run as a script: make `lnl` and `methods` importable
    sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from lnl.codivide.recipe import Recipe
from lnl.presets import parse_with_preset
from methods.plremix import plremix_train
from methods.plremix.plremix_train import main  # noqa: F401  (main is this entry point's)

RECIPE = Recipe(
    title="PLReMix (CIFAR-10/100, Tiny-ImageNet)",
    dataset="cifar10",
    datasets=("cifar10", "cifar100", "tiny_imagenet", "digits", "digits16"),
    num_classes=10,
    data_path=None,
    backbone="preact_resnet18",
    batch_size=64,
    lr=0.02,
    weight_decay=5e-4,
    num_epochs=400,
    alpha=4,
    lambda_u=25,
    warm_up_epochs={"cifar10": 10, "cifar100": 30, "tiny_imagenet": 10, "digits": 3, "digits16": 3},
    flags={"crl": "flat_plr"},
)


def get_args_parser():
    return plremix_train.get_args_parser(RECIPE)


def parse_args(argv=None):
    """Parse the command line; with ``--preset`` the setting's preset values become defaults first."""
    return parse_with_preset(get_args_parser(), plremix_train.METHOD, argv)


if __name__ == "__main__":
    main(parse_args())
