"""Check a WebVision 1.0 folder and regroup ILSVRC2012 val into synset folders.

WebVision (https://data.vision.ee.ethz.ch/cvl/webvision/download.html) is downloaded by hand: the
"resized" Google images, the validation images (``val_images_256``) and the "Training & Validation
Labels" archive that holds ``info/`` (``train_filelist_google.txt``, ``val_filelist.txt``,
``synsets.txt``). With ``--root`` this script checks that layout and counts the mini-WebVision
images (label < ``--num-classes``).

ILSVRC2012 val (for the ``ilsvrc12_val`` test set) is regrouped from the flat
``ILSVRC2012_val_XXXXXXXX.JPEG`` files into ``<imagenet-root>/val/<WNID>/`` for the first
``--num-classes`` classes, as PLReMix's ``rearrange.py`` does. Labels come from the devkit
(``--devkit``: ``ILSVRC2012_devkit_t12`` folder or ``.tar.gz``, reading ``data/meta.mat`` and
``data/ILSVRC2012_validation_ground_truth.txt``) or from LRA's ``ILSVRC2012_val_label.txt``
(``--val-labels``, ``<file> <index> <wnid>`` lines). Images come from a folder or from
``ILSVRC2012_img_val.tar`` (``--val-images``). Class c is the c-th WNID of WebVision's
``synsets.txt`` when ``--root`` is given, else of the sorted WNIDs (the same order); the list is
copied to ``<imagenet-root>/synsets.txt``.

ILSVRC2012 train (IEG's WebVision-mini probe draws 10 images per class from it) is unpacked with
``--train-images``: ``ILSVRC2012_img_train.tar`` (a tar of per-class ``<WNID>.tar``), read as a stream
so only the chosen classes are written, or a folder of ``<WNID>.tar`` files or ``<WNID>/`` folders;
images land in ``<imagenet-root>/train/<WNID>/`` for the first ``--num-classes`` classes.

Example:
    python data_prep/webvision.py --root data/webvision --imagenet-root data/imagenet \
        --devkit ILSVRC2012_devkit_t12.tar.gz --val-images ILSVRC2012_img_val.tar \
        --train-images ILSVRC2012_img_train.tar
"""

from __future__ import annotations

import argparse
import random
import shutil
import tarfile
import tempfile
from pathlib import Path

from _common import extract, place, report, write_text_atomic
from tqdm import tqdm

INFO = ("info/train_filelist_google.txt", "info/val_filelist.txt", "info/synsets.txt")


def get_args_parser() -> argparse.ArgumentParser:
    """The script's flags."""
    p = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    p.add_argument("--root", type=Path, default=None, help="the WebVision folder to check")
    p.add_argument("--num-classes", type=int, default=50)
    p.add_argument("--imagenet-root", type=Path, default=None, help="where to write val/<WNID>/")
    p.add_argument(
        "--devkit", type=Path, default=None, help="ILSVRC2012_devkit_t12 folder or .tar.gz"
    )
    p.add_argument("--val-labels", type=Path, default=None, help="LRA's ILSVRC2012_val_label.txt")
    p.add_argument("--val-images", type=Path, default=None, help="folder or ILSVRC2012_img_val.tar")
    p.add_argument(
        "--train-images",
        type=Path,
        default=None,
        help="ILSVRC2012_img_train.tar or a folder of <WNID>.tar / <WNID>/ (writes train/<WNID>/)",
    )
    p.add_argument("--mode", choices=("copy", "move", "symlink"), default="copy")
    p.add_argument("--check-images", type=int, default=500, help="listed images to check (0: none)")
    return p


def check_webvision(root: Path, num_classes: int, n_check: int) -> list[Path]:
    """Validate the WebVision layout, print mini-WebVision counts; return the info files."""
    absent = [f for f in (*INFO, "google", "val_images_256") if not (root / f).exists()]
    if absent:
        raise SystemExit(f"WebVision folder {root} lacks {', '.join(absent)}; see --help")
    from lnl.data import get_dataset

    for split in ("train", "val"):
        ds = get_dataset("webvision", root, split, num_classes=num_classes)
        sample = random.Random(0).sample(ds.paths, min(n_check, len(ds.paths)))
        missing = [p for p in sample if not (root / p).is_file()]
        if missing:
            raise SystemExit(
                f"{len(missing)} of {len(sample)} checked {split} images missing: {missing[:3]}"
            )
        print(f"webvision {split}: {len(ds)} images with label < {num_classes}")
    return [root / f for f in INFO]


def devkit_labels(devkit: Path) -> tuple[list[str], dict[str, str]]:
    """Read the devkit: (the 1,000 leaf WNIDs, {val file name: WNID})."""
    from scipy.io import loadmat

    if devkit.is_file():  # a .tar.gz: pull out the two files we need
        tmp = Path(tempfile.mkdtemp(prefix="devkit"))
        with tarfile.open(devkit) as t:
            names = [
                m.name
                for m in t.getmembers()
                if m.name.endswith(("data/meta.mat", "data/ILSVRC2012_validation_ground_truth.txt"))
            ]
        extract(devkit, tmp, names)
        devkit = next(tmp.rglob("data")).parent
    synsets = loadmat(devkit / "data" / "meta.mat", squeeze_me=True)["synsets"]
    id_to_wnid = {
        int(s["ILSVRC2012_ID"]): str(s["WNID"]) for s in synsets if int(s["num_children"]) == 0
    }
    truth = (devkit / "data" / "ILSVRC2012_validation_ground_truth.txt").read_text().split()
    files = {f"ILSVRC2012_val_{i + 1:08d}.JPEG": id_to_wnid[int(c)] for i, c in enumerate(truth)}
    return sorted(id_to_wnid.values()), files


def lra_labels(path: Path) -> tuple[list[str], dict[str, str]]:
    """Read LRA's ``<file> <index> <wnid>`` list: (sorted WNIDs, {file: WNID})."""
    files = {}
    for line in path.read_text().splitlines():
        if line.strip():
            name, _, wnid = line.split()[:3]
            files[name] = wnid
    return sorted(set(files.values())), files


def synset_lines(args: argparse.Namespace, devkit_wnids: list[str] | None) -> list[str]:
    """The class order: WebVision's ``info/synsets.txt`` with ``--root``, else the devkit's WNIDs."""
    synsets_src = args.root / "info" / "synsets.txt" if args.root else None
    if synsets_src is not None and synsets_src.is_file():
        return [s for s in synsets_src.read_text().splitlines() if s.strip()]
    if devkit_wnids is None:
        raise SystemExit(
            "--train-images needs the class order: --root (WebVision), --devkit or --val-labels"
        )
    return devkit_wnids


def _unpack_class(inner: tarfile.TarFile, folder: Path) -> int:
    """Write a class tar's images into ``folder`` (base names only: nothing escapes it)."""
    folder.mkdir(parents=True, exist_ok=True)
    count = 0
    for member in inner:
        if member.isfile():
            with inner.extractfile(member) as src:
                (folder / Path(member.name).name).write_bytes(src.read())
            count += 1
    return count


def unpack_imagenet_train(source: Path, dest: Path, wnids: list[str], mode: str) -> int:
    """ImageNet train images of ``wnids`` into ``dest/train/<WNID>/``; returns how many."""
    wanted, count = set(wnids), 0
    if source.is_file():  # ILSVRC2012_img_train.tar, streamed: 138 GB are never written whole
        with tarfile.open(source, "r|*") as outer:
            for member in tqdm(outer, desc=f"reading {source.name}", unit="class"):
                wnid = Path(member.name).name.removesuffix(".tar")
                if member.isfile() and member.name.endswith(".tar") and wnid in wanted:
                    with tarfile.open(fileobj=outer.extractfile(member), mode="r|*") as inner:
                        count += _unpack_class(inner, dest / "train" / wnid)
    else:
        for wnid in wnids:
            if (source / f"{wnid}.tar").is_file():
                with tarfile.open(source / f"{wnid}.tar", "r|*") as inner:
                    count += _unpack_class(inner, dest / "train" / wnid)
            elif (source / wnid).is_dir():
                for f in sorted((source / wnid).iterdir()):
                    place(f, dest / "train" / wnid / f.name, mode)
                    count += 1
    missing = [w for w in wnids if not (dest / "train" / w).is_dir()]
    if missing:
        raise SystemExit(
            f"{source}: no train images for {len(missing)} of {len(wnids)} classes "
            f"(e.g. {missing[0]}); expected <WNID>.tar members or <WNID>/ folders"
        )
    return count


def prepare_imagenet_train(args: argparse.Namespace) -> list[Path]:
    """``--train-images``: the first ``--num-classes`` classes into ``train/<WNID>/``."""
    devkit_wnids = None
    if args.devkit or args.val_labels:
        devkit_wnids = (devkit_labels(args.devkit) if args.devkit else lra_labels(args.val_labels))[
            0
        ]
    lines = synset_lines(args, devkit_wnids)
    keep = [line.split()[0] for line in lines[: args.num_classes]]
    n = unpack_imagenet_train(args.train_images, args.imagenet_root, keep, args.mode)
    synsets = args.imagenet_root / "synsets.txt"
    write_text_atomic(synsets, "".join(line + "\n" for line in lines))
    print(f"imagenet train: {n} images in {len(keep)} classes under {args.imagenet_root / 'train'}")
    return [synsets]


def regroup_imagenet_val(args: argparse.Namespace) -> list[Path]:
    """Place the val images of the first ``--num-classes`` classes into ``val/<WNID>/``."""
    if args.devkit is None and args.val_labels is None:
        raise SystemExit("--imagenet-root needs --devkit or --val-labels")
    if args.val_images is None:
        raise SystemExit("--imagenet-root needs --val-images (folder or ILSVRC2012_img_val.tar)")
    all_wnids, files = devkit_labels(args.devkit) if args.devkit else lra_labels(args.val_labels)
    lines = synset_lines(args, all_wnids)
    keep = [line.split()[0] for line in lines[: args.num_classes]]
    chosen = {f: w for f, w in files.items() if w in set(keep)}
    source, staging, mode = args.val_images, None, args.mode
    if source.is_file():  # the flat val tarball: extract only the chosen images
        staging = args.imagenet_root / ".val_extract"
        extract(source, staging, sorted(chosen))
        source, mode = staging, "move"
    for name, wnid in sorted(chosen.items()):
        if not (source / name).is_file():
            raise SystemExit(f"val image {source / name} not found")
        place(source / name, args.imagenet_root / "val" / wnid / name, mode)
    if staging is not None:
        shutil.rmtree(staging, ignore_errors=True)
    synsets = args.imagenet_root / "synsets.txt"
    write_text_atomic(synsets, "".join(line + "\n" for line in lines))
    print(
        f"ilsvrc12_val: {len(chosen)} images in {len(keep)} classes "
        f"under {args.imagenet_root / 'val'}"
    )
    return [synsets]


def main(args: argparse.Namespace) -> None:
    """Run the requested checks and regrouping; print checksums."""
    if args.root is None and args.imagenet_root is None:
        raise SystemExit(
            "give --root (WebVision) and/or --imagenet-root (ILSVRC2012 val); see --help"
        )
    written = []
    if args.root is not None:
        written += check_webvision(args.root, args.num_classes, args.check_images)
    if args.imagenet_root is not None and args.train_images is not None:
        written += prepare_imagenet_train(args)
    if args.imagenet_root is not None and (
        args.train_images is None or args.val_images is not None
    ):
        written += regroup_imagenet_val(args)
        from lnl.data import get_dataset

        ds = get_dataset("ilsvrc12_val", args.imagenet_root, "val", num_classes=args.num_classes)
        print(f"get_dataset('ilsvrc12_val') sees {len(ds)} images")
    report(written)


if __name__ == "__main__":
    main(get_args_parser().parse_args())
