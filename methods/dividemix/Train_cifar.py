"""DivideMix on CIFAR-10/100 (``LiJunnan1992/DivideMix: Train_cifar.py @ d9d3058``;
specs/plremix_dividemix.md §6.1, §6.2). The original's commands run as written, e.g.::

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

import argparse
import sys
from pathlib import Path
from typing import Sequence

import torch

if __package__ in (None, ""):  # run as a script: make `lnl` and `methods` importable
    sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from lnl.engine import default_argument_parser, default_setup
from lnl.engine.cotrain import CoDivide, fit
from lnl.engine.data import add_subset_flag, build_noisy_data, subset_suffix
from lnl.engine.settings import DataSettings, NoiseSettings
from lnl.models import create_model
from lnl.presets import parse_with_preset

METHOD = "dividemix"
WARM_UP = {"cifar10": 10, "cifar100": 30, "digits": 3}  # Train_cifar.py @ d9d3058; digits: lnl
# dataloader_cifar.py @ d9d3058: DivideMix's own constants (CIFAR-100's differ from PLReMix's)
NORMALISATION = {"cifar10": ((0.4914, 0.4822, 0.4465), (0.2023, 0.1994, 0.2010)),
                 "cifar100": ((0.507, 0.487, 0.441), (0.267, 0.256, 0.276))}


def get_args_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser("DivideMix (CIFAR-10/100)", parents=[default_argument_parser()])
    g = p.add_argument_group("DivideMix (LiJunnan1992/DivideMix @ d9d3058)")
    g.add_argument("--batch_size", default=64, type=int, help="train batchsize (labeled and unlabeled)")
    g.add_argument("--lr", "--learning_rate", dest="lr", default=0.02, type=float, help="initial learning rate")
    g.add_argument("--noise_mode", default="sym")
    g.add_argument("--alpha", default=4, type=float, help="parameter for Beta")
    g.add_argument("--lambda_u", default=25, type=float, help="weight for unsupervised loss")
    g.add_argument("--p_threshold", default=0.5, type=float, help="clean probability threshold")
    g.add_argument("--T", default=0.5, type=float, help="sharpening temperature")
    g.add_argument("--num_epochs", default=300, type=int, help="epochs 0..num_epochs inclusive")
    g.add_argument("--r", default=0.5, type=float, help="noise ratio")
    g.add_argument("--id", default="")
    g.add_argument("--seed", default=123, type=int)
    g.add_argument("--gpuid", default=0, type=int, help="accepted for compatibility; use --device")
    g.add_argument("--num_class", default=10, type=int, help="overwritten by the dataset")
    g.add_argument("--data_path", default=None, help="dataset folder (default: $LNL_DATA/<dataset>)")
    g.add_argument("--dataset", default="cifar10", choices=("cifar10", "cifar100", "digits"))
    e = p.add_argument_group("lnl additions")
    e.add_argument("--noise_file", default=None, help="noise labels file (see the module docstring)")
    e.add_argument("--warm_up", type=int, default=None, help="default: 10 (cifar10) / 30 (cifar100)")
    e.add_argument("--arch", default=None, help="lnl model (default: DivideMix's PreAct ResNet-18)")
    e.add_argument("--lr_milestone", default="150", help="epoch of the LR ÷10 step (the original's 150), or 'half'")
    e.add_argument("--preset", action="store_true", help="per-setting defaults from lnl/presets/dividemix.yaml")
    add_subset_flag(p)
    return p


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    """Parse the command line; with ``--preset`` the setting's preset values become defaults first."""
    return parse_with_preset(get_args_parser(), METHOD, argv)


def default_noise_file(args: argparse.Namespace) -> str | None:
    """The original's ``<data_path>/<r:.1f>_<noise_mode>.json`` when it exists."""
    if args.data_path is None:
        return None
    path = Path(args.data_path) / f"{args.r:.1f}_{args.noise_mode}.json"
    return str(path) if path.is_file() else None


def build_nets(args: argparse.Namespace, num_classes: int) -> tuple[list, list]:
    """Two PreAct ResNet-18 (or ``--arch``) and SGD(lr, momentum 0.9, wd 5e-4) optimizers."""
    nets, optimizers = [], []
    for _ in range(2):
        net = create_model(args.arch or "dividemix_preact_resnet18", num_classes=num_classes).to(args.device)
        if args.device.type == "cuda":
            net = net.to(memory_format=torch.channels_last)
        optimizers.append(torch.optim.SGD(net.parameters(), lr=args.lr, momentum=0.9, weight_decay=5e-4))
        nets.append(torch.compile(net) if args.compile else net)
    return nets, optimizers


def main(args: argparse.Namespace) -> dict:
    """Train both networks, test the ensemble every epoch, checkpoint every epoch; returns the record."""
    args.noise_file = args.noise_file or default_noise_file(args)
    noise = NoiseSettings.from_args(args)
    args.out = args.out or f"runs/{METHOD}/{args.dataset}-{noise.name}-s{args.seed}{subset_suffix(args.subset)}"
    log = default_setup(args)
    args.warm_up = WARM_UP[args.dataset] if args.warm_up is None else args.warm_up
    data = build_noisy_data(DataSettings.from_args(args), log, normalisation=NORMALISATION.get(args.dataset))
    args.num_class = data.num_classes
    if args.arch is None and args.dataset == "digits":
        args.arch = "small_cnn"
    nets, optimizers = build_nets(args, data.num_classes)
    method = CoDivide(args, nets, optimizers, data, log)

    def test() -> dict:
        return {"test_acc": method.test(data.test_loader)["top1"]}

    record = {"method": METHOD, "dataset": args.dataset, "noise": noise.name, "seed": args.seed}
    return fit(args, method, log, test=test, result=record)


if __name__ == "__main__":
    main(parse_args())
