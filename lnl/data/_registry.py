"""The dataset registry: one name per dataset, with its splits and the command that prepares it.

Each loader module registers its factories with :func:`register_dataset`; a factory takes
``(root: Path | None, split: str, **kwargs)`` and returns an
:class:`~lnl.data._base.InMemoryDataset` or :class:`~lnl.data._base.FileListDataset`. Registering a
name twice raises (timm only warns, which hides shadowing bugs).
"""

from __future__ import annotations

import fnmatch
import os
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

#: The ``data_prep`` command that prepares each dataset; ``{root}`` is the dataset folder.
DATA_PREP_HINT: dict[str, str] = {
    "cifar10": "python data_prep/cifar.py --dataset cifar10 --root {root}",
    "cifar100": "python data_prep/cifar.py --dataset cifar100 --root {root}",
    "cifar10n": "python data_prep/cifar.py --dataset cifar10 --cifar-n --root {root}",
    "cifar100n": "python data_prep/cifar.py --dataset cifar100 --cifar-n --root {root}",
    "tiny_imagenet": "python data_prep/tiny_imagenet.py --root {root}",
    # Clothing1M cannot be downloaded by script: the hint is what to do, not the checker that just failed.
    "clothing1m": "request the archives from the authors (https://github.com/Cysu/noisy_label), unpack them "
    "into {root} (images/ and the *_kv.txt / *_key_list.txt files), then check them with: "
    "python data_prep/clothing1m.py --root {root}",
    "webvision": "python data_prep/webvision.py --root {root}",
    "ilsvrc12_val": "python data_prep/webvision.py --imagenet-root {root} --devkit DEVKIT "
    "--val-images ILSVRC2012_IMG_VAL_DIR",
    "food101n": "python data_prep/food101n.py --root {root} --download",
    "food101": "python data_prep/food101n.py --food101-only --root {root} --download",
    "digits": "(none: digits ships with scikit-learn)",
    "digits16": "(none: digits ships with scikit-learn)",
}


@dataclass(frozen=True)
class DatasetInfo:
    """A registry entry.

    Attributes:
        name: the registry name.
        factory: ``(root, split, **kwargs) -> dataset``.
        splits: the accepted ``split`` values.
        folder: default folder name under ``$LNL_DATA`` when ``root`` is None (None: no root
            needed).
        description: one line for :func:`list_datasets` users.
    """

    name: str
    factory: Callable
    splits: tuple[str, ...]
    folder: str | None
    description: str


_REGISTRY: dict[str, DatasetInfo] = {}


def register_dataset(
    name: str, *, splits: tuple[str, ...], folder: str | None, description: str
) -> Callable[[Callable], Callable]:
    """Decorator that registers a dataset factory under ``name``.

    Args:
        name: registry name (lower case).
        splits: accepted splits.
        folder: default folder name under ``$LNL_DATA`` (None when the data is embedded).
        description: one-line description.

    Returns:
        The decorator; it returns the factory unchanged.
    """

    def deco(factory: Callable) -> Callable:
        if name in _REGISTRY:
            raise ValueError(f"dataset '{name}' is already registered")
        _REGISTRY[name] = DatasetInfo(name, factory, tuple(splits), folder, description)
        return factory

    return deco


def list_datasets(pattern: str = "*") -> list[str]:
    """Return the registered dataset names matching a shell-style wildcard, sorted."""
    return sorted(n for n in _REGISTRY if fnmatch.fnmatch(n, pattern))


def dataset_info(name: str) -> DatasetInfo:
    """Return the registry entry of ``name``; raise ``ValueError`` listing the known names."""
    key = name.lower() if isinstance(name, str) else name
    if key not in _REGISTRY:
        raise ValueError(f"unknown dataset {name!r}; known datasets: {', '.join(list_datasets())}")
    return _REGISTRY[key]


def prep_hint(name: str, root: Path | str) -> str:
    """The ``data_prep`` command for ``name`` with ``root`` filled in."""
    return DATA_PREP_HINT.get(name, "see data_prep/README.md").format(root=root)


def default_root(info: DatasetInfo) -> Path | None:
    """``$LNL_DATA/<folder>`` (``$LNL_DATA`` defaults to ``./data``), or None for embedded data."""
    if info.folder is None:
        return None
    return Path(os.environ.get("LNL_DATA", "data")) / info.folder


def get_dataset(name: str, root: str | os.PathLike | None = None, split: str = "train", **kwargs):
    """Load a registered dataset split.

    Args:
        name: registry name, see :func:`list_datasets` (``cifar10``, ``cifar100``, ``cifar10n``,
            ``cifar100n``, ``digits``, ``tiny_imagenet``, ``clothing1m``, ``webvision``,
            ``ilsvrc12_val``, ``food101n``, ``food101``).
        root: the dataset's own folder; None uses ``$LNL_DATA/<name's folder>`` (ignored by
            ``digits``).
        split: ``"train"`` or ``"test"``, plus ``"val"`` where the dataset has one.
        **kwargs: dataset-specific options (for example ``label_set="worst"`` for ``cifar10n``).

    Returns:
        An ``InMemoryDataset`` (``images: Tensor[N, H, W, 3]`` uint8) or a ``FileListDataset``.

    Raises:
        ValueError: unknown name or split (the message lists the valid ones).
        DatasetNotFoundError: the folder lacks the files; the message names the folder and the
            ``data_prep`` command to run.
    """
    info = dataset_info(name)
    if split not in info.splits:
        raise ValueError(
            f"unknown split {split!r} for dataset '{info.name}'; "
            f"valid splits: {', '.join(info.splits)}"
        )
    path = Path(root).expanduser() if root is not None else default_root(info)
    return info.factory(path, split, **kwargs)
