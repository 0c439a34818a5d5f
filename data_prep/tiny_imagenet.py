"""Prepare Tiny-ImageNet (200 classes, 64x64) in the layout DivideMix/PLReMix use.

Steps (as ``prepare_tiny_imagenet.sh``), each skipped when already done:

1. download ``tiny-imagenet-200.zip`` from cs231n (md5 checked) next to ``--root``, or use
   ``--zip``;
2. extract it, giving ``--root`` = ``.../tiny-imagenet-200``;
3. for each train class move ``images/*`` up one level and delete the ``*_boxes.txt`` files;
4. move every val image into ``val/<wnid>/`` using ``val/val_annotations.txt``.

Then ``get_dataset("tiny_imagenet", root)`` lists classes as sorted WNIDs and files sorted by name,
so training image ``i`` has label ``i // 500``.

Example:
    python data_prep/tiny_imagenet.py --root data/tiny-imagenet-200
"""

from __future__ import annotations

import argparse
import shutil
from pathlib import Path

from _common import download, extract, report

URL = "http://cs231n.stanford.edu/tiny-imagenet-200.zip"
MD5 = "90528d7ca1a48142e341f4ef8d21d0de"
TOP = "tiny-imagenet-200"


def get_args_parser() -> argparse.ArgumentParser:
    """The script's flags."""
    p = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    p.add_argument(
        "--root", type=Path, required=True, help="the tiny-imagenet-200 folder to create"
    )
    p.add_argument(
        "--zip", type=Path, default=None, help="use this local zip instead of downloading"
    )
    p.add_argument("--url", default=URL, help="download URL (file:// works)")
    p.add_argument("--md5", default=MD5, help="expected md5 of the zip ('none' skips the check)")
    p.add_argument("--keep-archive", action="store_true", help="keep the downloaded zip")
    return p


def fetch(args: argparse.Namespace) -> None:
    """Download (unless ``--zip``) and extract the archive so that ``--root`` exists."""
    if (args.root / "wnids.txt").is_file():
        print(f"already extracted: {args.root}")
        return
    md5 = None if str(args.md5).lower() == "none" else args.md5
    archive = args.zip or download(args.url, args.root.parent / Path(args.url).name, md5)
    staging = args.root.parent / (args.root.name + ".extracting")
    extract(archive, staging)
    top = staging / TOP if (staging / TOP).is_dir() else staging
    shutil.move(str(top), str(args.root))
    shutil.rmtree(staging, ignore_errors=True)
    if args.zip is None and not args.keep_archive:
        archive.unlink()


def regroup_train(root: Path) -> int:
    """Move ``train/<wnid>/images/*`` up into ``train/<wnid>/``, drop box files; return #images."""
    count = 0
    for cls in sorted(p for p in (root / "train").iterdir() if p.is_dir()):
        images = cls / "images"
        if images.is_dir():
            for f in images.iterdir():
                f.replace(cls / f.name)
            images.rmdir()
        for box in cls.glob("*_boxes.txt"):
            box.unlink()
        count += sum(1 for f in cls.iterdir() if f.suffix.lower() == ".jpeg")
    return count


def regroup_val(root: Path) -> int:
    """Move ``val/images/*`` into ``val/<wnid>/`` per ``val_annotations.txt``; return #images."""
    val, ann = root / "val", root / "val" / "val_annotations.txt"
    if (val / "images").is_dir():
        for line in ann.read_text().splitlines():
            if not line.strip():
                continue
            name, wnid = line.split("\t")[:2]
            src = val / "images" / name
            if src.is_file():
                (val / wnid).mkdir(exist_ok=True)
                src.replace(val / wnid / name)
        (val / "images").rmdir()
    return sum(1 for d in val.iterdir() if d.is_dir() for _ in d.iterdir())


def main(args: argparse.Namespace) -> None:
    """Download, extract and regroup; print counts and the checksums of the list files."""
    fetch(args)
    n_train, n_val = regroup_train(args.root), regroup_val(args.root)
    n_classes = len([p for p in (args.root / "train").iterdir() if p.is_dir()])
    print(f"tiny_imagenet at {args.root}: {n_classes} classes, train {n_train}, val {n_val}")
    if (n_classes, n_train, n_val) != (200, 100_000, 10_000):
        print("note: the official release has 200 classes, 100000 train and 10000 val images")
    report([args.root / "wnids.txt", args.root / "val" / "val_annotations.txt"])


if __name__ == "__main__":
    main(get_args_parser().parse_args())
