"""PLReMix on CIFAR-10/100 and Tiny-ImageNet (``lxysl/PLReMix: train.py @ b0c4ec3``;
specs/plremix_dividemix.md §2.1, §5). The README's commands run as written, e.g.::

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

import argparse
import sys
from pathlib import Path
from typing import Sequence

if __package__ in (None, ""):  # run as a script: make `lnl` and `methods` importable
    sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from lnl.engine import default_argument_parser, default_setup
from lnl.engine.cotrain import fit
from lnl.engine.data import add_subset_flag, build_noisy_data, subset_suffix
from lnl.engine.settings import DataSettings, NoiseSettings
from lnl.presets import parse_with_preset
from methods.plremix import plremix_lib as lib

METHOD = "plremix"
WARM_UP = {"cifar10": 10, "cifar100": 30, "tiny_imagenet": 10, "digits": 3}  # train.py @ b0c4ec3; digits: lnl


def get_args_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser("PLReMix (CIFAR-10/100, Tiny-ImageNet)", parents=[default_argument_parser()])
    lib.add_plremix_args(p, dataset="cifar10", datasets=("cifar10", "cifar100", "tiny_imagenet", "digits"),
                         num_classes=10, data_path=None, backbone="preact_resnet18", batch_size=64, lr=0.02,
                         wd=5e-4, num_epochs=400, alpha=4, lambda_u=25, crl="flat_plr")
    p.add_argument("--preset", action="store_true", help="per-setting defaults from lnl/presets/plremix.yaml")
    add_subset_flag(p)
    return p


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    """Parse the command line; with ``--preset`` the setting's preset values become defaults first."""
    return parse_with_preset(get_args_parser(), METHOD, argv)


def main(args: argparse.Namespace) -> dict:
    """Train both networks, test the ensemble every epoch, checkpoint every epoch; returns the record."""
    lib.resolve_fixes(args)
    args.noise_file = args.noise_file or lib.default_noise_file(args)
    noise = NoiseSettings.from_args(args)
    args.out = args.out or f"runs/{METHOD}/{args.dataset}-{noise.name}-s{args.seed}{subset_suffix(args.subset)}"
    log = default_setup(args)
    if args.warm_up is None:
        args.warm_up = WARM_UP[args.dataset]
    if args.mcrop:
        log.warning("--mcrop only applies to Clothing1M/WebVision; ignored")
    data = build_noisy_data(DataSettings.from_args(args), log)
    args.num_classes = data.num_classes
    if args.arch is None and args.dataset == "digits":
        args.arch = "small_cnn"
    nets, optimizers = lib.build_nets(args, data.num_classes, input_size=data.train.images.shape[1])
    method = lib.PLReMix(args, nets, optimizers, data, log)

    def test() -> dict:
        return {"test_acc": method.test(data.test_loader)["top1"]}

    record = {"method": METHOD, "dataset": args.dataset, "noise": noise.name, "seed": args.seed}
    return fit(args, method, log, test=test, result=record)


if __name__ == "__main__":
    main(parse_args())
