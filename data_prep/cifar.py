"""Prepare CIFAR-10 / CIFAR-100 (and optionally CIFAR-N human labels) for lnl.

Two ways to fill ``--root`` (the dataset folder that ``get_dataset("cifar10", root)`` reads):

* download (default): fetch the official tarball from the University of Toronto, check its md5,
  extract ``cifar-10-batches-py/`` (or ``cifar-100-python/``) and check every batch file's md5 (the
  values torchvision publishes). ``--url``, ``--md5`` and ``--file-md5`` override them (the tests
  point them at a small local archive).
* ``--from-npz DIR``: convert ``train.npz``/``test.npz`` from DIR (for example an LZMA-compressed
  copy) into plain uncompressed ``.npz`` files in ``--root``, which load in well
  under a second. ``train_labels_full.npz`` is carried over when present.

``--cifar-n`` also fetches ``CIFAR-10_human.pt`` / ``CIFAR-100_human.pt`` from the CIFAR-N release
(UCSC-REAL/cifar-10-100n) and checks that its clean labels match the CIFAR training labels.

Rerunning is safe: verified files are kept, existing conversions are skipped unless ``--force``.

Example:
    python data_prep/cifar.py --dataset cifar10 --root data/cifar10
    python data_prep/cifar.py --dataset cifar100 --root data/cifar100 --from-npz DIR
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np
from _common import download, extract, file_hash, report

OFFICIAL = {
    "cifar10": {
        "url": "https://www.cs.toronto.edu/~kriz/cifar-10-python.tar.gz",
        "md5": "c58f30108f718f92721af3b95e74349a",
        "folder": "cifar-10-batches-py",
        "files": {
            "data_batch_1": "c99cafc152244af753f735de768cd75f",
            "data_batch_2": "d4bba439e000b95fd0a9bffe97cbabec",
            "data_batch_3": "54ebc095f3ab1f0389bbae665268c751",
            "data_batch_4": "634d18415352ddfa80567beed471001a",
            "data_batch_5": "482c414d41f54cd18b22e5b47cb7c3cb",
            "test_batch": "40351d587109b95175f43aff81a1287e",
            "batches.meta": "5ff9c542aee3614f3951f8cda6e48888",
        },
        "human_url": "https://github.com/UCSC-REAL/cifar-10-100n/raw/main/data/CIFAR-10_human.pt",
        "human_file": "CIFAR-10_human.pt",
    },
    "cifar100": {
        "url": "https://www.cs.toronto.edu/~kriz/cifar-100-python.tar.gz",
        "md5": "eb9058c3a382ffc7106e4002c42a8d85",
        "folder": "cifar-100-python",
        "files": {
            "train": "16019d7e3df5f24257cddd939b257f8d",
            "test": "f0ef6b0ae62326f3e7ffdfab6717acfc",
            "meta": "7973b15100ade9c7d40fb424638fde48",
        },
        "human_url": "https://github.com/UCSC-REAL/cifar-10-100n/raw/main/data/CIFAR-100_human.pt",
        "human_file": "CIFAR-100_human.pt",
    },
}


def get_args_parser() -> argparse.ArgumentParser:
    """The script's flags."""
    p = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    p.add_argument("--dataset", choices=sorted(OFFICIAL), default="cifar10")
    p.add_argument("--root", type=Path, required=True, help="dataset folder to fill")
    p.add_argument(
        "--from-npz", type=Path, default=None, help="convert train/test.npz from this folder"
    )
    p.add_argument("--url", default=None, help="override the tarball URL (file:// works)")
    p.add_argument("--md5", default=None, help="override the tarball md5 ('none' skips the check)")
    p.add_argument(
        "--file-md5",
        type=Path,
        default=None,
        help="JSON {file name: md5} overriding the per-file md5 table",
    )
    p.add_argument("--keep-archive", action="store_true", help="keep the downloaded tarball")
    p.add_argument("--cifar-n", action="store_true", help="also fetch the CIFAR-N human labels")
    p.add_argument("--cifar-n-url", default=None, help="override the CIFAR-N file URL")
    p.add_argument("--cifar-n-md5", default=None, help="md5 of the CIFAR-N file (none published)")
    p.add_argument("--force", action="store_true", help="redo conversions that already exist")
    return p


def fetch_official(args: argparse.Namespace) -> list[Path]:
    """Download, verify and extract the official tarball; return the verified batch files."""
    spec = OFFICIAL[args.dataset]
    md5 = spec["md5"] if args.md5 is None else (None if args.md5.lower() == "none" else args.md5)
    table = json.loads(args.file_md5.read_text()) if args.file_md5 else spec["files"]
    folder = args.root / spec["folder"]
    files = [folder / name for name in table]
    if all(f.is_file() and file_hash(f, "md5") == table[f.name] for f in files):
        print(f"all {len(files)} files already present and verified in {folder}")
        return files
    url = args.url or spec["url"]
    archive = download(url, args.root / Path(url).name, md5)
    extract(archive, args.root)
    bad = [
        f"{f.name} (md5 {file_hash(f, 'md5') if f.is_file() else 'missing'})"
        for f in files
        if not f.is_file() or file_hash(f, "md5") != table[f.name]
    ]
    if bad:
        raise SystemExit(f"extracted files fail their md5 check: {', '.join(bad)}")
    if not args.keep_archive:
        archive.unlink()
    return files


def convert_npz(args: argparse.Namespace) -> list[Path]:
    """Write uncompressed copies of ``train.npz``/``test.npz`` (and ``train_labels_full.npz``)."""
    written = []
    for name in ("train.npz", "test.npz", "train_labels_full.npz"):
        src, dst = args.from_npz / name, args.root / name
        if not src.is_file():
            if name != "train_labels_full.npz":
                raise SystemExit(f"{src} not found")
            continue
        if dst.is_file() and not args.force:
            print(f"exists, skipped (use --force to redo): {dst}")
            written.append(dst)
            continue
        with np.load(src) as z:
            arrays = {k: np.asarray(z[k]) for k in z.files}
        if "x" in arrays and (
            arrays["x"].dtype != np.uint8 or arrays["x"].shape[1:] != (32, 32, 3)
        ):
            raise SystemExit(f"{src}: x must be uint8 [N, 32, 32, 3], got {arrays['x'].shape}")
        args.root.mkdir(parents=True, exist_ok=True)
        tmp = dst.with_name(dst.name + ".tmp.npz")
        np.savez(tmp, **arrays)
        tmp.replace(dst)
        print(f"converted {src} -> {dst} ({', '.join(f'{k}{v.shape}' for k, v in arrays.items())})")
        written.append(dst)
    return written


def fetch_cifar_n(args: argparse.Namespace) -> Path:
    """Download the CIFAR-N human-label file and check it against the CIFAR train labels."""
    from lnl.data import get_dataset

    spec = OFFICIAL[args.dataset]
    path = download(
        args.cifar_n_url or spec["human_url"], args.root / spec["human_file"], args.cifar_n_md5
    )
    ds = get_dataset(args.dataset + "n", args.root, "train", human_file=str(path))
    agree = float((ds.noisy_targets == ds.targets).float().mean())
    print(f"{path.name}: clean labels match; default label set agrees with clean on {agree:.4f}")
    return path


def main(args: argparse.Namespace) -> None:
    """Fill ``--root`` and print the checksums of what it holds."""
    from lnl.data import get_dataset

    args.root.mkdir(parents=True, exist_ok=True)
    files = convert_npz(args) if args.from_npz else fetch_official(args)
    if args.cifar_n:
        files.append(fetch_cifar_n(args))
    for split in ("train", "test"):
        ds = get_dataset(args.dataset, args.root, split)
        print(f"{args.dataset} {split}: {len(ds)} images, {int(ds.targets.max()) + 1} classes seen")
    report(files)


if __name__ == "__main__":
    main(get_args_parser().parse_args())
