"""Golden outputs of DivideMix's transforms, computed by the original (``LiJunnan1992/DivideMix @ d9d3058``).

DivideMix augments with torchvision only: ``RandomCrop(32, padding=4)`` + flip on CIFAR
(``dataloader_cifar.py``), ``Resize(256)`` + ``RandomCrop(224)`` + flip on Clothing1M
(``dataloader_clothing1M.py``), ``Resize(320)`` + ``RandomResizedCrop(299)`` + flip on WebVision
(``dataloader_webvision.py``), and resized centre crops to test. Writes ``fixtures/dividemix/aug_views.npz``:

* ``cifar10/train``, ``cifar100/train``: ``transform_train`` on fixed 32×32 uint8 images
  (``make_goldens_plremix_aug.aug_images``) after ``torch.manual_seed``; ``*/test``: ``transform_test``;
  normalised float32.
* ``clothing1m/{train,test}``, ``webvision/{train,test,imagenet}``: the same on one small image, each
  output as a digest of its float32 bytes (a CRC-32 and 48 strided entries).

The loader classes are built for their transforms only (their ``__init__`` reads no data).
``dataloader_cifar.py`` imports ``torchnet.meter.AUCMeter`` (unused here): a stub module stands in when
torchnet is not installed.

Usage::

    python tests/equivalence/make_goldens_dividemix_aug.py --original /tmp/orig/dividemix
"""

from __future__ import annotations

import argparse
import sys
import types
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))
from tests.equivalence._golden import FIXTURES, git_commit, save_golden  # noqa: E402
from tests.equivalence.make_goldens_plremix_aug import FILE_IMAGE, SEED, aug_images, digest  # noqa: E402

ORIGINAL = "LiJunnan1992/DivideMix"
COMMIT = "d9d3058fa69a952463b896f84730378cdee6ec39"
CIFAR_IMAGES = 8


def cifar_images(dataset: str):
    return aug_images(CIFAR_IMAGES, 32, f"dividemix/{dataset}")


def file_image():
    h, w = FILE_IMAGE
    return aug_images(1, w, "dividemix/file", height=h)[0]


def _apply(tf, images):
    from PIL import Image

    torch.manual_seed(SEED)
    return torch.stack([tf(Image.fromarray(a)) for a in images])


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument(
        "--original",
        required=True,
        type=Path,
        help="a checkout of LiJunnan1992/DivideMix at d9d3058",
    )
    args = p.parse_args()
    root = args.original.resolve()
    sys.path.insert(0, str(root))
    try:
        import torchnet.meter  # noqa: F401
    except ImportError:
        meter = types.ModuleType("torchnet.meter")
        meter.AUCMeter = object
        sys.modules.update({"torchnet": types.ModuleType("torchnet"), "torchnet.meter": meter})
    import dataloader_cifar
    import dataloader_clothing1M
    import dataloader_webvision

    torch.set_num_threads(1)
    out = {}
    for dataset in ("cifar10", "cifar100"):
        loader = dataloader_cifar.cifar_dataloader(dataset, 0.5, "sym", 8, 0, "unused", None)
        out[f"{dataset}/train"] = _apply(loader.transform_train, cifar_images(dataset))
        out[f"{dataset}/test"] = _apply(loader.transform_test, cifar_images(dataset))
    image = file_image()
    clothing = dataloader_clothing1M.clothing_dataloader("unused", 8, 1, 0)
    webvision = dataloader_webvision.webvision_dataloader(8, 50, 0, "unused", None)
    for name, tf in (
        ("clothing1m/train", clothing.transform_train),
        ("clothing1m/test", clothing.transform_test),
        ("webvision/train", webvision.transform_train),
        ("webvision/test", webvision.transform_test),
        ("webvision/imagenet", webvision.transform_imagenet),
    ):
        out[name] = digest(_apply(tf, image[None])[0])
    save_golden(
        FIXTURES / "dividemix" / "aug_views.npz",
        original=ORIGINAL,
        commit=git_commit(root, fallback=COMMIT),
        generator=Path(__file__).name,
        **out,
    )


if __name__ == "__main__":
    main()
