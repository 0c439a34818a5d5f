"""Pre-train an encoder on noisily labelled data: NMTune's "noisy pre-training" at small scale.

The paper pre-trains ResNet-50 on ImageNet-1K with 0-30 % flipped labels;
those checkpoints are not public and nothing downloads here. This script makes the setting
reproducible offline: it trains a timm model from scratch on ``digits`` (embedded) or CIFAR-10/100
(``data/``, prepared by ``data_prep/cifar.py``) with a chosen synthetic noise rate (``lnl.data.noise.make_noise``), and writes
a checkpoint that ``methods/nmtune/{finetune,nml_tune}.py --model_source timm --model NAME
--pretrained OUT`` load. The checkpoint holds::

    state_dict       the timm model (its classifier is dropped when loaded as an encoder)
    pretrained_cfg   input size / crop_pct / mean / std / interpolation of the pre-training images
    lnl_pretrain     dataset, noise, rate, seed, epochs, measured noise rate, clean test accuracy

Examples::

    python data_prep/pretrain_noisy.py --dataset digits --rate 0.3 --out pretrained/digits_sym0.3.pth
    python data_prep/pretrain_noisy.py --dataset cifar100 --root data/cifar100 --rate 0.2 \\
        --model resnet18 --epochs 100 --out pretrained/c100_resnet18_sym0.2.pth

Training: SGD (momentum 0.9, nesterov), cosine over ``--epochs``, weak augmentation (pad-crop 4 +
flip) on the device (``lnl.data.gpu.GPULoader``). Rerunning with the same output path overwrites.
"""

from __future__ import annotations

import argparse
import math
import sys
import time
from pathlib import Path

import torch
import torch.nn.functional as F

DEFAULT_EPOCHS = 12
REPO_ROOT = Path(__file__).resolve().parents[1]
if str(REPO_ROOT) not in sys.path:  # run as a script: make `lnl` importable
    sys.path.insert(0, str(REPO_ROOT))


def get_args_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    p.add_argument(
        "--dataset", default="digits", help="digits, cifar10 or cifar100 (any lnl dataset)"
    )
    p.add_argument("--root", default=None, help="the dataset folder (digits: none)")
    p.add_argument("--noise", default="sym", help="lnl.data.noise type (sym, asym, ...)")
    p.add_argument("--rate", type=float, default=0.3, help="pre-training label-noise rate")
    p.add_argument("--model", default="test_resnet", help="any timm model name")
    p.add_argument("--epochs", type=int, default=DEFAULT_EPOCHS)
    p.add_argument("--batch-size", type=int, default=64)
    p.add_argument("--lr", type=float, default=0.05)
    p.add_argument("--wd", type=float, default=5e-4)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--device", default=None, help="default: cuda when available")
    p.add_argument("--out", type=Path, required=True, help="checkpoint file to write")
    return p


@torch.no_grad()
def clean_accuracy(model: torch.nn.Module, loader) -> float:
    model.eval()
    correct = seen = 0
    for x, y, _ in loader:
        correct += int((model(x).argmax(1) == y).sum())
        seen += len(y)
    return correct / max(seen, 1)


def train(model: torch.nn.Module, loader, epochs: int, lr: float, wd: float) -> float:
    """SGD with a per-step cosine schedule on the noisy labels; returns the last epoch's mean loss."""
    opt = torch.optim.SGD(model.parameters(), lr=lr, momentum=0.9, nesterov=True, weight_decay=wd)
    total, step, loss_sum = epochs * len(loader), 0, 0.0
    from lnl.engine.train_loop import progress

    for _ in progress(range(epochs), desc="pre-training", total=epochs, leave=True):
        model.train()
        loss_sum = torch.zeros(())
        for x, y, _ in loader:
            for group in opt.param_groups:
                group["lr"] = 0.5 * (1 + math.cos(math.pi * step / total)) * lr
            loss = F.cross_entropy(model(x), y)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            loss_sum += loss.detach().cpu()
            step += 1
    return float(loss_sum) / len(loader)


def pretrain(
    *,
    dataset: str = "digits",
    rate: float = 0.3,
    out: Path,
    noise: str = "sym",
    model: str = "test_resnet",
    root: str | None = None,
    epochs: int = DEFAULT_EPOCHS,
    batch_size: int = 64,
    lr: float = 0.05,
    wd: float = 5e-4,
    seed: int = 0,
    device: str | None = None,
) -> dict:
    """Train ``model`` on ``dataset`` with ``noise`` at ``rate`` and write the checkpoint ``out``.

    Returns:
        The ``lnl_pretrain`` record written into the checkpoint.
    """
    import timm

    from lnl.data import get_dataset
    from lnl.data.gpu import GPULoader
    from lnl.data.noise import make_noise
    from lnl.engine.checkpoint import atomic_save
    from lnl.engine.defaults import resolve_device

    dev = resolve_device(device)
    torch.manual_seed(seed)
    started = time.perf_counter()
    tr, te = get_dataset(dataset, root, "train"), get_dataset(dataset, root, "test")
    noisy = make_noise(
        tr.targets, noise, rate, num_classes=tr.num_classes, seed=seed, dataset=dataset
    )
    common = dict(mean=tr.mean, std=tr.std, device=dev)
    loader = GPULoader(tr.images, noisy.labels, batch_size, train=True, seed=seed, **common)
    test_loader = GPULoader(te.images, te.targets, 256, train=False, **common)
    net = timm.create_model(model, pretrained=False, num_classes=tr.num_classes).to(dev)
    last_loss = train(net, loader, epochs, lr, wd)
    record = {
        "dataset": dataset,
        "noise": noise,
        "rate": rate,
        "seed": seed,
        "epochs": epochs,
        "model": model,
        "actual_noise_rate": float((noisy.labels != tr.targets).float().mean()),
        "train_loss": last_loss,
        "clean_test_acc": clean_accuracy(net, test_loader),
        "seconds": round(time.perf_counter() - started, 2),
    }
    size = int(tr.images.shape[1])
    cfg = {
        "input_size": (3, size, size),
        "crop_pct": 1.0,
        "mean": tuple(tr.mean),
        "std": tuple(tr.std),
        "interpolation": "bilinear",
    }
    state = {k: v.cpu() for k, v in net.state_dict().items()}
    atomic_save({"state_dict": state, "pretrained_cfg": cfg, "lnl_pretrain": record}, out)
    return record


def main(args: argparse.Namespace) -> dict:
    from _common import report

    record = pretrain(
        dataset=args.dataset,
        rate=args.rate,
        out=args.out,
        noise=args.noise,
        model=args.model,
        root=args.root,
        epochs=args.epochs,
        batch_size=args.batch_size,
        lr=args.lr,
        wd=args.wd,
        seed=args.seed,
        device=args.device,
    )
    print(record)
    report([args.out])
    return record


if __name__ == "__main__":
    main(get_args_parser().parse_args())
