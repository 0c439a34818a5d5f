"""Download (optionally) and check Food-101N with Food-101's test set.

Layout under ``--root`` (LRA-Diffusion's ``./Food101N``)::

    Food-101N_release/meta/{imagelist.tsv, classes.txt, verified_train.tsv, verified_val.tsv}
    Food-101N_release/images/<class>/<key>.jpg
    food-101/meta/{classes.txt, train.txt, test.txt}
    food-101/images/<class>/<id>.jpg

``--download`` fetches Food-101 from ETH Zurich (md5 checked, the value torchvision publishes) and
Food-101N from the URL in the Food-101N readme (no md5 is published, so its sha256 is printed for
the record; pass ``--food101n-md5`` to enforce one). Both archives are large (5 GB and 3.6 GB).
Without ``--download`` the script only checks the layout. ``--food101-only`` treats ``--root`` as
the ``food-101`` folder itself (the ``food101`` dataset).

Example:
    python data_prep/food101n.py --root data/Food101N --download
"""

from __future__ import annotations

import argparse
import random
from pathlib import Path

from _common import download, extract, report

FOOD101_URL = "http://data.vision.ee.ethz.ch/cvl/food-101.tar.gz"
FOOD101_MD5 = "85eeb15f3717b99a5da872d97d918f87"
FOOD101N_URL = "https://iudata.blob.core.windows.net/food101/Food-101N_release.zip"


def get_args_parser() -> argparse.ArgumentParser:
    """The script's flags."""
    p = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    p.add_argument("--root", type=Path, required=True)
    p.add_argument("--download", action="store_true", help="download missing archives")
    p.add_argument("--food101-only", action="store_true", help="--root is the food-101 folder")
    p.add_argument("--food101-url", default=FOOD101_URL)
    p.add_argument("--food101-md5", default=FOOD101_MD5)
    p.add_argument("--food101n-url", default=FOOD101N_URL)
    p.add_argument("--food101n-md5", default=None)
    p.add_argument(
        "--check-images", type=int, default=1000, help="listed images to check (0: none)"
    )
    p.add_argument("--keep-archives", action="store_true")
    return p


def fetch(url: str, md5: str | None, into: Path, marker: Path, keep: bool) -> None:
    """Download and extract an archive into ``into`` unless ``marker`` already exists."""
    if marker.exists():
        return
    md5 = None if md5 is None or md5.lower() == "none" else md5
    archive = download(url, into / Path(url).name, md5)
    extract(archive, into)
    if not keep:
        archive.unlink()


def check(name: str, root: Path, n_check: int) -> list[Path]:
    """Load both splits through the registry, check a seeded sample of images exists."""
    from lnl.data import get_dataset

    for split in ("train", "test"):
        ds = get_dataset(name, root, split)
        sample = random.Random(0).sample(ds.paths, min(n_check, len(ds.paths)))
        absent = [p for p in sample if not (root / p).is_file()]
        if absent:
            raise SystemExit(
                f"{len(absent)} of {len(sample)} checked {split} images missing: {absent[:3]}"
            )
        print(f"{name} {split}: {len(ds)} images, {ds.num_classes} classes")
    return [p for p in root.rglob("*.t[sx]t") if "meta" in p.parts]


def main(args: argparse.Namespace) -> None:
    """Download if asked, then check the layout and print checksums of the metadata files."""
    root = args.root
    if args.food101_only:
        if args.download:
            fetch(
                args.food101_url, args.food101_md5, root.parent, root / "meta", args.keep_archives
            )
        report(sorted(check("food101", root, args.check_images)))
        return
    if args.download:
        root.mkdir(parents=True, exist_ok=True)
        fetch(
            args.food101_url, args.food101_md5, root, root / "food-101" / "meta", args.keep_archives
        )
        fetch(
            args.food101n_url,
            args.food101n_md5,
            root,
            root / "Food-101N_release" / "meta",
            args.keep_archives,
        )
    report(sorted(check("food101n", root, args.check_images)))


if __name__ == "__main__":
    main(get_args_parser().parse_args())
