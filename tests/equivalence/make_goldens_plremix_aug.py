"""Golden outputs of PLReMix's augmentations, computed by the original (``lxysl/PLReMix @ b0c4ec3``).

Runs on the CPU, from the original's ``data/auto_augment.py`` (``SubPolicy``, ``CIFARPolicy``,
``ImageNetPolicy``), ``data/rand_augment.py`` (FixMatch's ``RandAugment``, ``Cutout``),
``data/data_loader.py`` (``get_train_transformations``) and ``data/clothing1m.py``/``webvision.py``
(the per-item views of the warm-up and labeled loaders), and writes ``fixtures/plremix/aug_*.npz``:

* ``aug_ops_32`` / ``aug_ops_64``: every AutoAugment op at each of its 10 magnitude bins with each sign
  (``random.choice`` is pinned to the sign under test), and every FixMatch op at 11 values evenly
  spread over its range, plus Cutout, on fixed uint8 images (``aug_images``).
* ``aug_policies``: the whole CIFAR/ImageNet policies and RandAugment(4, 6), image after image, after
  ``random.seed``/``np.random.seed``.

uint8 outputs are stored per image as a CRC-32 of their bytes and 48 strided pixels (``digest``): an
exact check that keeps the fixtures at KBs (the whole outputs would be megabytes).
* ``aug_views``: the composed train transforms (weak ``train``, ``autoaug``, ``randaug``) of CIFAR-10,
  CIFAR-100 and Tiny-ImageNet after seeding torch, ``random`` and numpy; normalised float32 outputs.
* ``aug_file_views``: the tuples of views a Clothing1M/WebVision item yields in the warm-up ('all')
  and labeled modes, with and without ``--mcrop`` (the image is written to a temporary PNG for the
  original's ``Image.open``); each view as a digest of its float32 bytes.

No patch of the original is needed. The Pillow version is recorded (``pillow``): the ops are Pillow's.

Usage::

    python tests/equivalence/make_goldens_plremix_aug.py --original /tmp/orig/plremix
"""

from __future__ import annotations

import argparse
import contextlib
import random
import sys
import tempfile
import zlib
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))
from tests.equivalence._golden import FIXTURES, det_array, git_commit, save_golden  # noqa: E402

ORIGINAL = "lxysl/PLReMix"
COMMIT = "b0c4ec3"
SEED = 20
#: Original op key → port name (lnl.data.pil_augment.AA_OPS).
AA_KEYS = {
    "shearX": "ShearX",
    "shearY": "ShearY",
    "translateX": "TranslateX",
    "translateY": "TranslateY",
    "rotate": "Rotate",
    "color": "Color",
    "posterize": "Posterize",
    "solarize": "Solarize",
    "contrast": "Contrast",
    "sharpness": "Sharpness",
    "brightness": "Brightness",
    "autocontrast": "AutoContrast",
    "equalize": "Equalize",
    "invert": "Invert",
}
AA_SIGNED = (
    "shearX",
    "shearY",
    "translateX",
    "translateY",
    "color",
    "contrast",
    "sharpness",
    "brightness",
)
AA_UNSIGNED = ("autocontrast", "equalize", "invert")  # no magnitude: one output
FIXMATCH_VALUES = np.linspace(0.0, 1.0, 11)  # u in low + (high - low)·u
CUTOUT_FRACTIONS = (0.05, 0.2, 0.35, 0.5)
CUTOUT_CENTRES = (
    (0.1, 0.9),
    (0.5, 0.3),
    (1.0, 1.0),
)  # × image size: np.random.uniform(w) lies in (1, w]
VIEW_COUNTS = {"cifar10": 8, "cifar100": 4, "tiny_imagenet": 3}
FILE_CASES = (("autoaug", False), ("autoaug", True), ("randaug", False))  # (--aug, --mcrop)
FILE_IMAGE = (52, 40)  # (H, W) of the file-list test image; Resize upsamples it


def aug_images(n: int, size: int, name: str, height: int | None = None) -> np.ndarray:
    """``n`` uint8 ``[size(or height), size, 3]`` images: 4×4 blocks of grey levels in [30, 220] plus
    ±6 noise, so that geometric ops move edges and AutoContrast/Equalize have a range to stretch."""
    h = height or size
    coarse = det_array(
        (n, -(-h // 4), -(-size // 4), 3), SEED, f"{name}/coarse", kind="uniform", low=30, high=220
    )
    blocks = np.repeat(np.repeat(coarse, 4, axis=1), 4, axis=2)[:, :h, :size]
    noise = det_array((n, h, size, 3), SEED, f"{name}/noise", scale=6.0)
    return np.clip(np.round(blocks + noise), 0, 255).astype(np.uint8)


def digest(a) -> np.ndarray:
    """CRC-32 of the array's bytes and 48 strided entries, float64: an exact check of a large output."""
    a = np.ascontiguousarray(a.detach().cpu().numpy() if isinstance(a, torch.Tensor) else a)
    flat = a.reshape(-1)
    step = max(flat.size // 48, 1)
    return np.concatenate([[float(zlib.crc32(a.tobytes()))], flat[::step][:48].astype(np.float64)])


def per_image_digest(images: np.ndarray) -> np.ndarray:
    """``[n, 49]``: :func:`digest` of each image."""
    return np.stack([digest(a) for a in images])


@contextlib.contextmanager
def pinned_sign(sign: int):
    """``random.choice`` returns ``sign`` (SubPolicy's random sign of a signed op)."""
    saved = random.choice
    random.choice = lambda seq: sign
    try:
        yield
    finally:
        random.choice = saved


def per_image(fn, images: np.ndarray) -> np.ndarray:
    from PIL import Image

    return np.stack([np.asarray(fn(Image.fromarray(a))) for a in images])


def ops_golden(size: int, OA, OR) -> dict:
    images = aug_images(2, size, f"ops{size}")
    keep = per_image_digest
    out = {"images_digest": per_image_digest(images)}
    for key, name in AA_KEYS.items():
        signs = (1, -1) if key in AA_SIGNED else (1,)
        for b in range(1 if key in AA_UNSIGNED else 10):
            for sign in signs:
                sub = OA.SubPolicy(1.0, key, b, 0.0, "invert", 0)
                with pinned_sign(sign):
                    out[f"aa/{name}/{b}/{sign:+d}"] = keep(per_image(sub, images))
    fns = {f.__name__: (f, lo, hi) for f, lo, hi in OR.augment_list()}
    for name, (fn, lo, hi) in fns.items():
        for k, u in enumerate(FIXMATCH_VALUES):
            v = lo + float(hi - lo) * u
            out[f"fm/{name}/{k}"] = keep(per_image(lambda img, fn=fn, v=v: fn(img, v), images))
    for frac in CUTOUT_FRACTIONS:
        for c, (cx, cy) in enumerate(CUTOUT_CENTRES):
            with _fixed_uniform([cx * size, cy * size]):
                out[f"cutout/{frac}/{c}"] = keep(
                    per_image(lambda img, frac=frac: OR.Cutout(img, frac), images[:1])
                )
    return out


@contextlib.contextmanager
def _fixed_uniform(values):
    """``np.random.uniform`` returns ``values`` in turn (the Cutout centre), cycling per image."""
    saved, it = np.random.uniform, iter(values * 100)
    np.random.uniform = lambda *a, **k: next(it)
    try:
        yield
    finally:
        np.random.uniform = saved


def policies_golden(OA, OR) -> dict:
    out = {}
    for name, cls, size, n in (
        ("cifar", OA.CIFARPolicy, 32, 48),
        ("imagenet", OA.ImageNetPolicy, 32, 48),
        ("imagenet64", OA.ImageNetPolicy, 64, 12),
    ):
        images = aug_images(n, size, f"policy/{name}")
        random.seed(SEED)
        out[f"policy/{name}"] = per_image_digest(per_image(cls(), images))
    for size, n in ((32, 48), (64, 12)):
        images = aug_images(n, size, f"randaug{size}")
        random.seed(SEED), np.random.seed(SEED)
        out[f"randaug{size}"] = per_image_digest(per_image(OR.RandAugment(4, 6), images))
    return out


def seed_all(seed: int) -> None:
    torch.manual_seed(seed), random.seed(seed), np.random.seed(seed)


def views_golden(DL) -> dict:
    out = {}
    for dataset, n in VIEW_COUNTS.items():
        size = 64 if dataset == "tiny_imagenet" else 32
        images = aug_images(n, size, f"views/{dataset}")
        for aug in ("train", "autoaug", "randaug"):
            tf = DL.get_train_transformations({"dataset": dataset, "transform": aug})
            seed_all(SEED)
            out[f"{dataset}/{aug}"] = torch.stack([tf(img) for img in _pil(images)])
    return out


def _pil(images):
    from PIL import Image

    return [Image.fromarray(a) for a in images]


def file_views_golden(root: Path, DL) -> dict:
    from PIL import Image

    clothing = __import__("data.clothing1m", fromlist=["Clothing1M"]).Clothing1M
    webvision = __import__("data.webvision", fromlist=["WebVision"]).WebVision
    h, w = FILE_IMAGE
    image = aug_images(1, w, "file", height=h)[0]
    out = {"image_digest": digest(image)}
    with tempfile.TemporaryDirectory() as tmp:
        Image.fromarray(image).save(Path(tmp) / "item.png")
        for dataset, cls, path in (
            ("clothing1m", clothing, str(Path(tmp) / "item.png")),
            ("webvision", webvision, "item.png"),
        ):
            for aug, mcrop in FILE_CASES:
                for mode in ("all", "labeled"):
                    item = _item(cls, DL, dataset, aug, mode, mcrop, tmp, path)
                    seed_all(SEED)
                    for i, v in enumerate(_flatten(item)):
                        out[f"{dataset}/{aug}/{mode}/mcrop{int(mcrop)}/{i}"] = digest(v)
    return out


def _item(cls, DL, dataset, aug, mode, mcrop, root, path):
    """The original dataset ``cls`` in ``mode`` holding one image, with ``get_loader``'s transforms."""
    meta = {"dataset": dataset, "multi_crop": mcrop}
    standard = aug if (mode == "all" and dataset == "clothing1m") else "train"
    ds = object.__new__(cls)
    ds.root, ds.mode, ds.multi_crop = root, mode, mcrop
    ds.transform = DL.get_train_transformations({**meta, "transform": standard})
    ds.augmentation_transform = DL.get_train_transformations({**meta, "transform": aug})
    ds.train_imgs, ds.train_labels, ds.probability = [path], {path: 3}, [0.7]
    return (ds, 0)


def _flatten(ds_index) -> list:
    ds, index = ds_index
    views = []
    for v in ds[index]:
        if isinstance(v, torch.Tensor) and v.ndim == 3:
            views.append(v)
        elif isinstance(v, list):
            views.extend(v)
    return views


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument(
        "--original", required=True, type=Path, help="a checkout of lxysl/PLReMix at b0c4ec3"
    )
    args = p.parse_args()
    root = args.original.resolve()
    sys.path.insert(0, str(root))
    import PIL
    from data import auto_augment as OA
    from data import data_loader as DL
    from data import rand_augment as OR

    torch.set_num_threads(1)
    meta = dict(
        original=ORIGINAL,
        commit=git_commit(root, fallback=COMMIT),
        generator=Path(__file__).name,
        pillow=PIL.__version__,
    )
    out = FIXTURES / "plremix"
    for size in (32, 64):
        save_golden(out / f"aug_ops_{size}.npz", **meta, **ops_golden(size, OA, OR))
    save_golden(out / "aug_policies.npz", **meta, **policies_golden(OA, OR))
    save_golden(out / "aug_views.npz", **meta, **views_golden(DL))
    save_golden(out / "aug_file_views.npz", **meta, **file_views_golden(root, DL))


if __name__ == "__main__":
    main()
