"""Generate a noisy-label file for a dataset's training labels (see ``lnl.data.noise``).

The clean labels come from ``get_dataset(--dataset, --root, "train")`` (for a partial CIFAR-100
train split, all 50,000 labels from ``train_labels_full.npz``, since noise files index official
positions), or from ``--labels`` (a ``.npy`` or JSON list). The output format follows the extension
of ``--out``: ``.json`` (DivideMix/PLReMix list), ``.npy`` (LRA int64 array) or ``.npz`` (labels
plus metadata).

``--seed 123`` with ``sym``/``asym`` reproduces the shipped DivideMix/PLReMix CIFAR files bit for
bit. PMD types need ``--probs`` (``[N, C]`` probabilities of a clean-trained classifier, ``.npy``);
``idn`` uses the flattened images scaled to [0, 1] as features unless ``--features`` is given.

Example:
    python data_prep/make_noise.py --dataset cifar10 --root data/cifar10 \
        --noise sym --rate 0.5 --seed 123 --out data/noise_labels/dividemix_json/cifar10/0.50.json
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import _common  # noqa: F401  (puts the repository root on sys.path)
import numpy as np


def get_args_parser() -> argparse.ArgumentParser:
    """The script's flags."""
    from lnl.data.noise import NOISE_TYPES

    p = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    p.add_argument("--dataset", default=None, help="registry name; also selects the asym map")
    p.add_argument("--root", type=Path, default=None, help="dataset folder")
    p.add_argument("--labels", type=Path, default=None, help="clean labels (.npy or .json) instead")
    p.add_argument("--num-classes", type=int, default=None, help="default: the dataset's")
    p.add_argument("--noise", required=True, choices=NOISE_TYPES)
    p.add_argument("--rate", type=float, required=True)
    p.add_argument("--seed", type=int, default=123)
    p.add_argument(
        "--first", type=int, default=None, help="keep only the first N labels (LRA: 45000)"
    )
    p.add_argument(
        "--probs", type=Path, default=None, help="[N, C] probabilities (.npy), PMD types"
    )
    p.add_argument("--features", type=Path, default=None, help="[N, D] features (.npy), idn")
    p.add_argument("--pmd-type", type=int, default=1, choices=(1, 2, 3))
    p.add_argument("--pmd-factor", type=float, default=None)
    p.add_argument("--pmd-level", type=float, default=0.35, help="PMD level under pmd+U / pmd+A")
    p.add_argument("--pmd-anchor", choices=("top1", "label"), default="top1")
    p.add_argument("--asym-procedure", choices=("subset", "per_sample"), default=None)
    p.add_argument(
        "--overlay-procedure",
        choices=("plc", "independent"),
        default="plc",
        help="pmd+U/pmd+A overlay: PLC's RandomState multinomial, or the earlier independent draws",
    )
    p.add_argument("--overlay-seed", type=int, default=77, help="PLC's overlay seed (its --seed)")
    p.add_argument(
        "--base",
        type=Path,
        default=None,
        help="pmd+U/pmd+A: overlay this PMD file (e.g. LRA's cifar10-1-0.35.npy) as PLC does",
    )
    p.add_argument("--out", type=Path, required=True)
    return p


def clean_labels(args: argparse.Namespace):
    """(labels [N], num_classes, dataset or None, images or None)."""
    if args.labels is not None:
        raw = (
            np.load(args.labels)
            if args.labels.suffix == ".npy"
            else json.loads(args.labels.read_text())
        )
        y = np.asarray(raw, dtype=np.int64)
        return y, args.num_classes or int(y.max()) + 1, args.dataset, None
    if args.dataset is None:
        raise SystemExit("give --dataset (and --root) or --labels")
    from lnl.data import get_dataset

    ds = get_dataset(args.dataset, args.root, "train")
    full = getattr(ds, "full_targets", None)
    if full is not None and len(full) != len(ds):
        print(
            f"note: {args.dataset} train split is partial ({len(ds)}); using all {len(full)} labels"
        )
        return full.numpy(), ds.num_classes, args.dataset, None
    return (
        ds.targets.numpy(),
        args.num_classes or ds.num_classes,
        args.dataset,
        getattr(ds, "images", None),
    )


def options(args: argparse.Namespace, images) -> dict:
    """Generator options for ``make_noise`` from the flags."""
    if args.noise.startswith("pmd"):
        opts = {
            "pmd_type": args.pmd_type,
            "pmd_factor": args.pmd_factor,
            "pmd_anchor": args.pmd_anchor,
        }
        if args.noise != "pmd":
            opts.update(
                pmd_level=args.pmd_level,
                overlay_procedure=args.overlay_procedure,
                overlay_seed=args.overlay_seed,
            )
        return opts
    if args.noise == "idn":
        if args.features is not None:
            return {"features": np.load(args.features)}
        if images is None:
            raise SystemExit("idn needs --features or a dataset with in-memory images")
        return {"features": images.reshape(len(images), -1).float().numpy() / 255.0}
    if args.noise.startswith("asym") and args.asym_procedure:
        return {"asym_procedure": args.asym_procedure}
    return {}


def main(args: argparse.Namespace) -> None:
    """Generate, write, and print the measured rate and the file's sha256."""
    from lnl.data.noise import make_noise
    from lnl.data.noise_files import save_noise_file

    y, num_classes, dataset, images = clean_labels(args)
    if args.first is not None:
        y = y[: args.first]
        images = None if images is None else images[: args.first]
    if args.base is not None:
        noisy = overlay_file(args, y, num_classes, dataset)
    else:
        probs = np.load(args.probs) if args.probs is not None else None
        noisy = make_noise(
            y,
            args.noise,
            args.rate,
            num_classes=num_classes,
            seed=args.seed,
            dataset=dataset,
            probs=probs,
            **options(args, images),
        )
    digest = save_noise_file(args.out, noisy)
    print(
        f"{args.noise} rate {args.rate} seed {args.seed}: {len(y)} labels, actual noise rate "
        f"{noisy.meta['actual_noise_rate']:.4f}"
    )
    print(f"{digest}  {args.out}")


def overlay_file(args: argparse.Namespace, y: np.ndarray, num_classes: int, dataset):
    """``--base``: PLC's uniform/asymmetric overlay (``RandomState(--overlay-seed)``) on a PMD file, which
    reproduces LRA's shipped ``_U_r``/``_A_r`` files from their base file bit for bit."""
    import torch

    from lnl.data.noise_files import NoisyLabels, load_noise_file
    from lnl.data.noise_models import plc_overlay

    if args.noise not in ("pmd+U", "pmd+A"):
        raise SystemExit("--base applies to --noise pmd+U or pmd+A")
    base = load_noise_file(args.base, num_classes=num_classes).labels.numpy()
    if len(base) != len(y):
        raise SystemExit(
            f"--base {args.base} has {len(base)} labels, the clean labels {len(y)} (use --first)"
        )
    out = plc_overlay(base, args.noise[-1], args.rate, num_classes, dataset, args.overlay_seed)
    meta = {
        "type": args.noise,
        "rate": args.rate,
        "base": str(args.base),
        "overlay_seed": args.overlay_seed,
        "procedure": "PLC: np.random.RandomState(seed).multinomial(1, P[y]) per sample on the base file",
        "actual_noise_rate": float(np.mean(out != y)),
    }
    return NoisyLabels(torch.as_tensor(out), meta)


if __name__ == "__main__":
    main(get_args_parser().parse_args())
