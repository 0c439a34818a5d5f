"""CIFAR-10, CIFAR-100 and CIFAR-N (human labels), loaded into memory as uint8 NHWC tensors.

Layouts read from ``root`` (the dataset's own folder), first match wins per split
(the originals' layouts and lnl's ``.npz``, which ``data_prep/cifar.py`` writes):

* ``train.npz`` / ``test.npz``: ``x`` uint8 ``[N, 32, 32, 3]``, ``y`` int64 (and for CIFAR-100
  ``y_coarse``, optionally ``index``), as ``data_prep/cifar.py --from-npz`` reads. These may be
  LZMA-compressed, so they are decoded once and cached (see :func:`lnl.data._base.cached_arrays`).
* ``cifar-10-batches-py/`` (``data_batch_1..5``, ``test_batch``) or ``cifar-100-python/``
  (``train``, ``test``): the official pickles, as torchvision and PLReMix download them.
* the same pickle files directly inside ``root``, as DivideMix expects them.

Row ``i`` of the training split is official training image ``i`` (batches 1..5 concatenated), so
noise files indexed by official position line up with it.

A partial ``train.npz`` may hold only the **first 10,000** official training images (with an
``index`` key). It is exposed as it is: ``len(ds) == 10000``, ``ds.official_index`` gives each row's
official position, and ``ds.full_targets`` holds all 50,000 official labels from
``train_labels_full.npz`` so that 50k noise files can be checked and sliced
(``noise[ds.official_index]``).

Normalisation constants are those of the originals' transforms (DivideMix ``dataloader_cifar.py``,
PLReMix ``data/data_loader.py``). For
CIFAR-10 that is std (0.2023, 0.1994, 0.2010), the value DivideMix and PLReMix use, not the true
pixel std (0.2470, 0.2435, 0.2616).
"""

from __future__ import annotations

import pickle
from pathlib import Path

import numpy as np
import torch

from lnl.data._base import InMemoryDataset, cached_arrays, missing, reading
from lnl.data._classes import CIFAR10_CLASSES, CIFAR100_CLASSES
from lnl.data._registry import prep_hint, register_dataset

CIFAR10_MEAN, CIFAR10_STD = (0.4914, 0.4822, 0.4465), (0.2023, 0.1994, 0.2010)
CIFAR100_MEAN, CIFAR100_STD = (0.5071, 0.4865, 0.4409), (0.2673, 0.2564, 0.2762)
NUM_TRAIN = 50_000

_PICKLES = {
    "cifar10": {
        "folder": "cifar-10-batches-py",
        "train": [f"data_batch_{i}" for i in range(1, 6)],
        "test": ["test_batch"],
    },
    "cifar100": {"folder": "cifar-100-python", "train": ["train"], "test": ["test"]},
}

#: CIFAR-N label sets: our name -> key in ``CIFAR-10_human.pt`` / ``CIFAR-100_human.pt``.
CIFAR_N_LABEL_SETS = {
    "cifar10n": {
        "aggre": "aggre_label",
        "random1": "random_label1",
        "random2": "random_label2",
        "random3": "random_label3",
        "worst": "worse_label",
        "clean": "clean_label",
    },
    "cifar100n": {"noisy": "noisy_label", "clean": "clean_label"},
}
CIFAR_N_FILES = {"cifar10n": "CIFAR-10_human.pt", "cifar100n": "CIFAR-100_human.pt"}


def _read_pickle(path: Path) -> dict:
    """Unpickle one official batch file; keys come back as str whether stored as str or bytes."""
    with reading(path, "CIFAR batch file"), open(path, "rb") as f:
        entry = pickle.load(f, encoding="latin1")
    return {(k.decode() if isinstance(k, bytes) else k): v for k, v in entry.items()}


def read_pickles(files: list[Path]) -> dict[str, np.ndarray]:
    """Read official CIFAR batch pickles.

    Args:
        files: batch files in official order (``data_batch_1..5`` or ``train``).

    Returns:
        ``x``: uint8 ``[N, 32, 32, 3]``; ``y``: int64 ``[N]`` (fine labels for CIFAR-100); for
        CIFAR-100 also ``y_coarse``.
    """
    xs, ys, coarse = [], [], []
    for path in files:
        entry = _read_pickle(path)
        # The pickles store each image as 3072 bytes in channel-major (CHW) order.
        xs.append(np.asarray(entry["data"], dtype=np.uint8).reshape(-1, 3, 32, 32))
        ys.append(np.asarray(entry.get("labels", entry.get("fine_labels")), dtype=np.int64))
        if "coarse_labels" in entry:
            coarse.append(np.asarray(entry["coarse_labels"], dtype=np.int64))
    out = {"x": np.concatenate(xs).transpose(0, 2, 3, 1).copy(), "y": np.concatenate(ys)}
    if coarse:
        out["y_coarse"] = np.concatenate(coarse)
    return out


def read_npz(path: Path) -> dict[str, np.ndarray]:
    """Decode a CIFAR ``.npz`` (``x``, ``y`` and optional keys) through the cache."""

    def build() -> dict[str, np.ndarray]:
        with reading(path, "CIFAR file"), np.load(path) as z:
            return {k: np.asarray(z[k]) for k in z.files}

    return cached_arrays([path], "cifar-npz", build)


def _find_source(name: str, root: Path, split: str) -> tuple[str, list[Path]]:
    """Locate the files for ``split``: ("npz", [file]) or ("pickle", [batch files])."""
    npz = root / f"{split}.npz"
    if npz.is_file():
        return "npz", [npz]
    spec = _PICKLES[name]
    for folder in (root / spec["folder"], root):
        files = [folder / f for f in spec[split]]
        if all(f.is_file() for f in files):
            return "pickle", files
    what = f"'{split}.npz', or {spec[split]} in '{spec['folder']}/' or directly in the folder"
    raise missing(name, root, what, prep_hint(name, root))


def load_cifar_arrays(name: str, root: Path, split: str) -> dict[str, np.ndarray]:
    """Load the raw arrays of a CIFAR split (see the module docstring for layouts).

    Args:
        name: ``"cifar10"`` or ``"cifar100"``.
        root: dataset folder.
        split: ``"train"`` or ``"test"``.

    Returns:
        ``x`` uint8 ``[N, 32, 32, 3]``, ``y`` int64 ``[N]``, and where present ``y_coarse`` and
        ``index``.
    """
    if root is None or not Path(root).is_dir():
        raise missing(
            name, root or "<none>", "the folder to exist", prep_hint(name, root or "<root>")
        )
    kind, files = _find_source(name, Path(root), split)
    arrays = read_npz(files[0]) if kind == "npz" else read_pickles(files)
    x = arrays["x"]
    if x.dtype != np.uint8 or x.ndim != 4 or x.shape[1:] != (32, 32, 3):
        raise ValueError(f"{files[0]}: expected x uint8 [N, 32, 32, 3], got {x.dtype} {x.shape}")
    return arrays


def _full_train_labels(root: Path, arrays: dict[str, np.ndarray]) -> np.ndarray | None:
    """All 50,000 official train labels: from the split itself, else ``train_labels_full.npz``."""
    if len(arrays["y"]) == NUM_TRAIN:
        return arrays["y"]
    full = root / "train_labels_full.npz"
    if full.is_file():
        with reading(full, "label file"), np.load(full) as z:
            return np.asarray(z["y"], dtype=np.int64)
    return None


def _build(name: str, root: Path, split: str) -> InMemoryDataset:
    """Build a CIFAR dataset with the extra attributes documented in :func:`cifar10`."""
    arrays = load_cifar_arrays(name, root, split)
    is10 = name == "cifar10"
    ds = InMemoryDataset(
        name,
        split,
        torch.from_numpy(np.ascontiguousarray(arrays["x"])),
        arrays["y"],
        10 if is10 else 100,
        CIFAR10_MEAN if is10 else CIFAR100_MEAN,
        CIFAR10_STD if is10 else CIFAR100_STD,
        classes=CIFAR10_CLASSES if is10 else CIFAR100_CLASSES,
        root=root,
    )
    n = len(ds)
    index = arrays.get("index", np.arange(n))
    ds.official_index = torch.as_tensor(np.asarray(index, dtype=np.int64))
    ds.coarse_targets = (
        torch.as_tensor(arrays["y_coarse"], dtype=torch.int64) if "y_coarse" in arrays else None
    )
    _check_label_span(name, root, split, arrays["y"], ds.num_classes)
    full = _full_train_labels(Path(root), arrays) if split == "train" else None
    ds.full_targets = None if full is None else torch.as_tensor(full, dtype=torch.int64)
    ds.is_partial = split == "train" and n != NUM_TRAIN
    if ds.full_targets is not None and not torch.equal(
        ds.full_targets[ds.official_index], ds.targets
    ):
        raise ValueError(f"{root}: train_labels_full.npz disagrees with the train split's labels")
    return ds


def _check_label_span(
    name: str, root: Path, split: str, labels: np.ndarray, num_classes: int
) -> None:
    """Every class occurs in a CIFAR split of 10+ images per class: ``--dataset cifar100`` on a
    CIFAR-10 folder (labels 0..9, all below 100) would otherwise train silently."""
    if len(labels) >= 10 * num_classes and int(labels.max()) + 1 < num_classes:
        raise ValueError(
            f"{root}: the {split} labels span 0..{int(labels.max())}, but {name} has {num_classes} "
            f"classes: is this another dataset's folder (check --dataset and the data folder)?"
        )


@register_dataset(
    "cifar10", splits=("train", "test"), folder="cifar10", description="CIFAR-10, 50k/10k, 32x32"
)
def cifar10(root: Path, split: str) -> InMemoryDataset:
    """CIFAR-10 in official order.

    Args:
        root: folder with ``train.npz``/``test.npz`` or the official pickles (module docstring).
        split: ``"train"`` (50,000) or ``"test"`` (10,000).

    Returns:
        An ``InMemoryDataset`` with ``images: Tensor[N, 32, 32, 3]`` uint8 and, besides the common
        attributes, ``official_index: Tensor[N]`` (official position of each row),
        ``coarse_targets`` (None for CIFAR-10), ``full_targets`` (all 50k official train labels,
        train split only, when known) and ``is_partial`` (True when the train split holds fewer than
        50,000 images).
    """
    return _build("cifar10", root, split)


@register_dataset(
    "cifar100",
    splits=("train", "test"),
    folder="cifar100",
    description="CIFAR-100, 50k/10k (a partial train.npz of the first 10k is accepted), 32x32",
)
def cifar100(root: Path, split: str) -> InMemoryDataset:
    """CIFAR-100 (fine labels) in official order; ``coarse_targets`` holds the superclasses.

    With a partial ``train.npz`` (first 10k) the train split has 10,000 rows (official indices 0..9999) and
    ``is_partial`` is True; ``full_targets`` then comes from ``train_labels_full.npz``. Otherwise as
    :func:`cifar10`.
    """
    return _build("cifar100", root, split)


def load_human_labels(path: Path) -> dict[str, np.ndarray]:
    """Read a CIFAR-N ``CIFAR-10_human.pt`` / ``CIFAR-100_human.pt`` file.

    The published files are ``torch.save`` dicts of label arrays (keys ``clean_label``,
    ``aggre_label``, ``worse_label``, ``random_label1..3`` for CIFAR-10N; ``clean_label``,
    ``noisy_label``, ``noisy_coarse_label``, ``clean_coarse_label`` for CIFAR-100N). They are loaded
    with ``weights_only=True`` and only the numpy array types allow-listed, so no arbitrary code can
    run.

    Args:
        path: the ``.pt`` file.

    Returns:
        A dict of int64 numpy arrays of length 50,000.
    """
    allowed = [np.ndarray, np.dtype, np._core.multiarray._reconstruct]
    allowed += [type(np.dtype(t)) for t in (np.int8, np.int16, np.int32, np.int64, np.uint8)]
    allowed += [type(np.dtype(t)) for t in (np.float32, np.float64)]
    try:
        with torch.serialization.safe_globals(allowed):
            raw = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # the unpickler's own error names the offending global
        raise ValueError(f"{path}: not a readable CIFAR-N human-label file ({exc})") from exc
    if not isinstance(raw, dict):
        raise ValueError(f"{path}: expected a dict of label arrays, got {type(raw).__name__}")
    return {k: np.asarray(torch.as_tensor(np.asarray(v)), dtype=np.int64) for k, v in raw.items()}


def _cifar_n(name: str, root: Path, split: str, label_set: str, human_file: str | None):
    """Build CIFAR-10N / CIFAR-100N; see :func:`cifar10n`."""
    base = "cifar10" if name == "cifar10n" else "cifar100"
    sets = CIFAR_N_LABEL_SETS[name]
    if label_set not in sets:
        raise ValueError(f"unknown label_set {label_set!r} for {name}; valid: {', '.join(sets)}")
    ds = _build(base, root, split)
    ds.name = name
    if split != "train":  # CIFAR-N relabelled only the training images
        return ds
    fname = CIFAR_N_FILES[name]
    candidates = [Path(human_file)] if human_file else [root / fname, root / "CIFAR-N" / fname]
    path = next((p for p in candidates if p.is_file()), None)
    if path is None:
        raise missing(name, root, f"'{fname}' (or pass human_file=...)", prep_hint(name, root))
    human = load_human_labels(path)
    for key in ("clean_label", sets[label_set]):
        if key not in human or len(human[key]) != NUM_TRAIN:
            raise ValueError(f"{path}: missing or short key {key!r}; found {sorted(human)}")
    idx = ds.official_index.numpy()
    if not np.array_equal(human["clean_label"][idx], ds.targets.numpy()):
        raise ValueError(f"{path}: 'clean_label' does not match the CIFAR labels in {root}")
    ds.noisy_targets = torch.as_tensor(human[sets[label_set]][idx], dtype=torch.int64)
    ds.label_set = label_set
    return ds


@register_dataset(
    "cifar10n",
    splits=("train", "test"),
    folder="cifar10",
    description="CIFAR-10N human labels (aggre, random1-3, worst) on CIFAR-10",
)
def cifar10n(root: Path, split: str, label_set: str = "aggre", human_file: str | None = None):
    """CIFAR-10 with CIFAR-N human labels as ``noisy_targets``.

    Args:
        root: the CIFAR-10 folder; ``CIFAR-10_human.pt`` is looked for in it or in ``root/CIFAR-N``.
        split: ``"train"`` (human labels attached) or ``"test"`` (clean, ``noisy_targets`` None).
        label_set: ``aggre``, ``random1``, ``random2``, ``random3``, ``worst`` (or ``clean``).
        human_file: explicit path to the ``.pt`` file.

    Returns:
        The CIFAR-10 dataset with ``targets`` clean and ``noisy_targets`` the chosen human labels
        (aligned through ``official_index``), plus ``label_set``.
    """
    return _cifar_n("cifar10n", root, split, label_set, human_file)


@register_dataset(
    "cifar100n",
    splits=("train", "test"),
    folder="cifar100",
    description="CIFAR-100N human labels (noisy) on CIFAR-100",
)
def cifar100n(root: Path, split: str, label_set: str = "noisy", human_file: str | None = None):
    """CIFAR-100 with CIFAR-100N human labels (``label_set`` ``noisy`` or ``clean``); see
    :func:`cifar10n`."""
    return _cifar_n("cifar100n", root, split, label_set, human_file)
