"""Dataset base classes, the missing-data error and the decoded-array cache.

Two kinds of dataset exist in lnl:

* :class:`InMemoryDataset`: the whole split as a ``torch.uint8`` tensor ``images: Tensor[N, H, W,
  3]`` (NHWC, always 3 channels) plus ``targets: Tensor[N]`` (int64). This is what
  :class:`lnl.data.gpu.GPULoader` consumes (CIFAR, CIFAR-N, digits, Tiny-ImageNet).
* :class:`FileListDataset`: relative image paths plus labels, decoded with PIL in ``DataLoader``
  workers (Clothing1M, WebVision, ILSVRC12 val, Food-101N, Food-101).

Both carry ``num_classes``, ``mean``/``std`` (normalisation constants, per channel, in [0, 1]
units), ``classes`` (names, when known) and ``noisy_targets`` (the dataset's own noisy labels for
real-noise datasets such as CIFAR-N or Clothing1M; ``None`` for clean datasets).

The cache: a dataset folder may be read-only and the LZMA ``.npz`` files there take seconds to decode,
so decoded arrays are written once as plain ``.npy`` files under ``$LNL_CACHE`` (default
``~/.cache/lnl``), keyed by the source's absolute path, size and mtime. Editing or replacing the
source invalidates it.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import lzma
import os
import pickle
import shutil
import tempfile
import warnings
import zipfile
import zlib
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path

import numpy as np
import torch
from PIL import Image

CACHE_VERSION = "1"


class DatasetNotFoundError(FileNotFoundError, ValueError):
    """A dataset folder or file is missing.

    It is both a ``FileNotFoundError`` and a ``ValueError`` so that callers that treat bad input as
    ``ValueError`` catch it too. The message names the folder searched and the ``data_prep`` command
    that prepares it.
    """


class DataFileError(ValueError):
    """A data file that exists but cannot be read (truncated, damaged, not the format its name says)."""


# What numpy, zipfile, lzma, zlib, json and pickle raise on a damaged file.
_READ_ERRORS = (
    OSError,
    EOFError,
    ValueError,
    KeyError,
    zipfile.BadZipFile,
    zlib.error,
    lzma.LZMAError,
    pickle.UnpicklingError,
    json.JSONDecodeError,
)


@contextlib.contextmanager
def reading(path: Path | str, what: str = "file") -> Iterator[None]:
    """Re-raise a read error inside the block as :class:`DataFileError` naming ``path``."""
    try:
        yield
    except (DataFileError, FileNotFoundError):
        raise
    except _READ_ERRORS as exc:
        raise DataFileError(
            f"{what} {path} cannot be read ({type(exc).__name__}: {exc}): it is damaged, "
            f"truncated or not the format its name says; make it again"
        ) from exc


def missing(name: str, root: Path | str, what: str, hint: str) -> DatasetNotFoundError:
    """Build the error raised when ``what`` is missing under ``root``.

    Args:
        name: registry name of the dataset.
        root: the folder that was searched.
        what: the files or sub-folders that were expected there.
        hint: the shell command that prepares the dataset (already formatted with ``root``).

    Returns:
        The error (the caller raises it).
    """
    return DatasetNotFoundError(
        f"dataset '{name}' not found in folder {Path(root).resolve()}: expected {what}. "
        f"Prepare it with:\n    {hint}"
    )


def cache_dir() -> Path:
    """Return the cache root: ``$LNL_CACHE`` or ``~/.cache/lnl``."""
    return Path(os.environ.get("LNL_CACHE", Path.home() / ".cache" / "lnl")).expanduser()


def _cache_key(sources: Sequence[Path], tag: str) -> str:
    """Hash the sources' absolute paths, sizes and mtimes with a tag and the cache version."""
    h = hashlib.sha1(f"{tag}|{CACHE_VERSION}".encode())
    for src in sources:
        st = src.stat()
        h.update(f"|{src.resolve()}|{st.st_size}|{st.st_mtime_ns}".encode())
    return h.hexdigest()[:20]


def cached_arrays(
    sources: Sequence[Path], tag: str, build: Callable[[], dict[str, np.ndarray]]
) -> dict[str, np.ndarray]:
    """Return ``build()``'s arrays, decoding them at most once per source version.

    Args:
        sources: files (or folders) whose path, size and mtime identify the content.
        tag: what is built from them (for example ``"cifar-npz"``), part of the key.
        build: decodes the arrays when the cache misses.

    Returns:
        A dict of in-memory numpy arrays (not memory-mapped, so the cache may be deleted later).
    """
    folder = cache_dir() / "arrays" / f"{tag}-{_cache_key([Path(s) for s in sources], tag)}"
    done = folder / "DONE"
    if done.is_file():
        names = done.read_text().split()
        try:
            return {n: np.load(folder / f"{n}.npy") for n in names}
        except (OSError, ValueError) as exc:  # a damaged cache entry is rebuilt, not fatal
            warnings.warn(f"ignoring damaged cache {folder}: {exc}")
    arrays = build()
    try:
        _write_cache(folder, arrays)
    except OSError as exc:  # read-only or full cache: still usable, just slower next time
        warnings.warn(f"could not write the lnl cache at {folder}: {exc}")
    return arrays


def _write_cache(folder: Path, arrays: dict[str, np.ndarray]) -> None:
    """Write arrays into a temporary sibling folder, then rename it into place (atomic)."""
    folder.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=folder.name + ".tmp", dir=folder.parent))
    try:
        for name, arr in arrays.items():
            np.save(tmp / f"{name}.npy", np.ascontiguousarray(arr))
        (tmp / "DONE").write_text("\n".join(arrays))
        if folder.exists():  # a concurrent writer won; its content is identical
            shutil.rmtree(tmp)
            return
        os.replace(tmp, folder)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise


def as_labels(
    values: Sequence[int] | np.ndarray | torch.Tensor,
    num_classes: int | None = None,
    what: str = "labels",
    *,
    unknown_ok: bool = False,
) -> torch.Tensor:
    """Convert labels to a 1-D ``torch.int64`` tensor (a copy).

    Raises:
        ValueError: non-integer values (float labels would be truncated, 0.7 -> 0), or labels outside
            ``[0, num_classes)`` (``-1`` allowed with ``unknown_ok``), naming ``what``.
    """
    t = torch.as_tensor(
        np.asarray(values) if not isinstance(values, torch.Tensor) else values
    ).reshape(-1)
    if t.is_floating_point() or t.is_complex() or t.dtype == torch.bool:
        if t.dtype == torch.bool or t.is_complex() or not torch.equal(t, t.round()):
            raise ValueError(
                f"{what} must be integers, got {t.dtype} values such as {t[:3].tolist()}"
            )
    t = t.to(torch.int64).clone()
    if t.numel() and num_classes is not None:
        low, high = int(t.min()), int(t.max())
        if low < (-1 if unknown_ok else 0) or high >= num_classes:
            raise ValueError(
                f"{what} span {low}..{high}, outside 0..{num_classes - 1} ({num_classes} classes)"
            )
    return t


class InMemoryDataset(torch.utils.data.Dataset):
    """A split held in memory as uint8 NHWC images.

    ``ds[i]`` returns ``(image, label)``: ``image`` is ``Tensor[H, W, 3]`` uint8 (a view into
    ``images``) unless ``transform`` is set, in which case it is ``transform(PIL.Image)``; ``label``
    is a Python int taken from ``targets``.

    Attributes:
        name: registry name.
        split: ``"train"``, ``"test"`` or ``"val"``.
        images: ``Tensor[N, H, W, 3]`` uint8.
        targets: ``Tensor[N]`` int64, clean labels where known, else the dataset's labels.
        num_classes: number of classes.
        mean: per-channel mean, 3 floats in [0, 1] units.
        std: per-channel std, 3 floats in [0, 1] units.
        classes: class names (index = label) or None.
        noisy_targets: ``Tensor[N]`` int64 of the dataset's own noisy labels, or None.
        root: the folder read (None for embedded data).
        transform: optional callable applied to a PIL image in ``__getitem__``.
        crop_padding, flip: the weak training view the GPU pipeline gives these images
            (``GPULoader``'s arguments; CIFAR's pad-4 crop and flip unless the dataset says otherwise).
    """

    in_memory = True

    def __init__(
        self,
        name: str,
        split: str,
        images: torch.Tensor | np.ndarray,
        targets: Sequence[int] | np.ndarray | torch.Tensor,
        num_classes: int,
        mean: Sequence[float],
        std: Sequence[float],
        *,
        classes: Sequence[str] | None = None,
        noisy_targets: Sequence[int] | np.ndarray | torch.Tensor | None = None,
        root: Path | str | None = None,
        crop_padding: int = 4,
        flip: bool = True,
    ) -> None:
        images = torch.as_tensor(images)
        if images.dtype != torch.uint8 or images.ndim != 4 or images.shape[-1] != 3:
            raise ValueError(
                f"images must be uint8 [N, H, W, 3], got {images.dtype} {tuple(images.shape)}"
            )
        self.name, self.split = name, split
        self.images = images
        where = f"{name} {split} ({root})" if root is not None else f"{name} {split}"
        self.targets = as_labels(targets, int(num_classes), f"{where} labels")
        if len(self.targets) != len(images):
            raise ValueError(f"{len(images)} images but {len(self.targets)} labels")
        self.num_classes = int(num_classes)
        self.mean, self.std = tuple(float(m) for m in mean), tuple(float(s) for s in std)
        self.classes = list(classes) if classes is not None else None
        self.noisy_targets = (
            None
            if noisy_targets is None
            else as_labels(noisy_targets, self.num_classes, f"{where} noisy labels")
        )
        self.root = None if root is None else Path(root)
        self.transform: Callable | None = None
        self.crop_padding, self.flip = int(crop_padding), bool(flip)

    def __len__(self) -> int:
        return len(self.targets)

    def take(self, rows: slice | torch.Tensor) -> InMemoryDataset:
        """The same split cut to ``rows`` (a slice keeps views of the images), every attribute kept."""
        noisy = None if self.noisy_targets is None else self.noisy_targets[rows]
        return InMemoryDataset(
            self.name,
            self.split,
            self.images[rows],
            self.targets[rows],
            self.num_classes,
            self.mean,
            self.std,
            classes=self.classes,
            noisy_targets=noisy,
            root=self.root,
            crop_padding=self.crop_padding,
            flip=self.flip,
        )

    def __getitem__(self, i: int):
        img = self.images[i]
        if self.transform is not None:
            return self.transform(Image.fromarray(img.numpy())), int(self.targets[i])
        return img, int(self.targets[i])

    def __repr__(self) -> str:
        return (
            f"{type(self).__name__}(name={self.name!r}, split={self.split!r}, n={len(self)}, "
            f"shape={tuple(self.images.shape[1:])}, num_classes={self.num_classes})"
        )


class FileListDataset(torch.utils.data.Dataset):
    """A split given as image paths relative to ``root`` plus labels; decoded with PIL on access.

    ``ds[i]`` returns ``(image, label)``: the RGB ``PIL.Image`` (or ``transform(image)`` when a
    transform is set) and a Python int. ``images`` is None (nothing is held in memory); use
    ``paths``.

    Attributes:
        name, split, targets, num_classes, mean, std, classes, noisy_targets, root, transform: as in
            :class:`InMemoryDataset`.
        paths: list of N paths relative to ``root``.
        clean_targets: ``Tensor[N]`` int64 with the verified clean label or -1 where unknown, or
            None.
    """

    in_memory = False
    images = None

    def __init__(
        self,
        name: str,
        split: str,
        root: Path | str,
        paths: Sequence[str],
        targets: Sequence[int] | np.ndarray | torch.Tensor,
        num_classes: int,
        mean: Sequence[float],
        std: Sequence[float],
        *,
        classes: Sequence[str] | None = None,
        noisy_targets: Sequence[int] | np.ndarray | torch.Tensor | None = None,
        clean_targets: Sequence[int] | np.ndarray | torch.Tensor | None = None,
        transform: Callable | None = None,
    ) -> None:
        self.name, self.split, self.root = name, split, Path(root)
        self.paths = list(paths)
        where = f"{name} {split} ({root})"
        self.targets = as_labels(targets, int(num_classes), f"{where} labels")
        if len(self.paths) != len(self.targets):
            raise ValueError(f"{len(self.paths)} paths but {len(self.targets)} labels")
        self.num_classes = int(num_classes)
        self.mean, self.std = tuple(float(m) for m in mean), tuple(float(s) for s in std)
        self.classes = list(classes) if classes is not None else None
        self.noisy_targets = (
            None
            if noisy_targets is None
            else as_labels(noisy_targets, self.num_classes, f"{where} noisy labels")
        )
        self.clean_targets = (
            None
            if clean_targets is None  # -1: no verified clean label
            else as_labels(
                clean_targets, self.num_classes, f"{where} clean labels", unknown_ok=True
            )
        )
        self.transform = transform

    def __len__(self) -> int:
        return len(self.paths)

    def load(self, i: int) -> Image.Image:
        """Decode image ``i`` as RGB."""
        with Image.open(self.root / self.paths[i]) as img:
            return img.convert("RGB")

    def __getitem__(self, i: int):
        img = self.load(i)
        if self.transform is not None:
            img = self.transform(img)
        return img, int(self.targets[i])

    def __repr__(self) -> str:
        return (
            f"{type(self).__name__}(name={self.name!r}, split={self.split!r}, n={len(self)}, "
            f"root={str(self.root)!r}, num_classes={self.num_classes})"
        )


def read_lines(path: Path) -> list[str]:
    """Read the non-empty, stripped lines of a text file."""
    with open(path, encoding="utf-8") as f:
        return [line.strip() for line in f if line.strip()]
