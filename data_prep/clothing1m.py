"""Check a Clothing1M folder and build lnl's key/label lists.

Clothing1M cannot be downloaded by script: the authors send the archives on request
(https://github.com/Cysu/noisy_label). Unpack them so that ``--root`` holds ``images/0..9/…`` and
the annotation files ``noisy_label_kv.txt``, ``clean_label_kv.txt``, ``noisy_train_key_list.txt``,
``clean_{train,val,test}_key_list.txt`` (directly, as DivideMix/PLReMix expect, or in
``annotations/``, as LRA-Diffusion expects). This script then

1. checks that every annotation file is present and that listed images exist (``--check-images all``
   checks every one; the default checks a deterministic sample of 2,000);
2. writes ``lnl_lists/{train,clean_train,val,test}.txt`` (``<relative path> <label>``, noisy labels
   for train, clean otherwise) and ``lnl_lists/train_clean.txt`` (the verified clean label or -1 for
   each train image), which ``get_dataset("clothing1m", root)`` reads instead of re-joining the kv
   files;
3. prints the counts (expected about 1,000,000 / 47,570 / 14,313 / 10,526) and the sha256 of each
   list.

Example:
    python data_prep/clothing1m.py --root data/clothing1m
"""

from __future__ import annotations

import argparse
import random
from pathlib import Path

from _common import report, write_text_atomic

EXPECTED = {"train": 1_000_000, "clean_train": 47_570, "val": 14_313, "test": 10_526}


def get_args_parser() -> argparse.ArgumentParser:
    """The script's flags."""
    p = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    p.add_argument("--root", type=Path, required=True, help="the Clothing1M folder")
    p.add_argument(
        "--check-images",
        default="2000",
        help="'all', 'none' or how many listed images to check for existence",
    )
    return p


def check_images(root: Path, paths: list[str], how: str) -> None:
    """Raise ``SystemExit`` naming missing images among all or a seeded sample of ``paths``."""
    if how == "none":
        return
    sample = paths if how == "all" else random.Random(0).sample(paths, min(int(how), len(paths)))
    absent = [p for p in sample if not (root / p).is_file()]
    if absent:
        raise SystemExit(
            f"{len(absent)} of {len(sample)} checked images missing under {root}, e.g. {absent[:3]}"
        )
    print(f"checked {len(sample)} image paths: all present")


def main(args: argparse.Namespace) -> None:
    """Validate the layout and write the lists."""
    from lnl.data.webscale import clothing1m_lists

    written = []
    for split in ("train", "clean_train", "val", "test"):
        paths, labels, clean = clothing1m_lists(
            args.root, split
        )  # raises with the layout if missing
        check_images(args.root, paths, args.check_images)
        lines = "".join(f"{p} {y}\n" for p, y in zip(paths, labels))
        write_text_atomic(args.root / "lnl_lists" / f"{split}.txt", lines)
        written.append(args.root / "lnl_lists" / f"{split}.txt")
        if split == "train":
            clean_lines = "".join(f"{p} {c}\n" for p, c in zip(paths, clean))
            write_text_atomic(args.root / "lnl_lists" / "train_clean.txt", clean_lines)
            written.append(args.root / "lnl_lists" / "train_clean.txt")
            print(f"train: {sum(c >= 0 for c in clean)} images also have a verified clean label")
        note = "" if len(paths) == EXPECTED[split] else f" (the full release has {EXPECTED[split]})"
        print(f"{split}: {len(paths)} images, {len(set(labels))} classes{note}")
    report(written)


if __name__ == "__main__":
    main(get_args_parser().parse_args())
