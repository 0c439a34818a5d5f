"""LRA-Diffusion's data side (``utils/data_utils.py``, ``train_CIFAR.py``): ``--noise_type`` names, the
splits, the frozen prior features f_p(x) and the loaders.

* ``--noise_type``: an original file stem (``cifar10-1-0.35``, ``cifar100-1-0.35_U_0.3`` …, read from
  ``--noise_dir``), a generated setting ``<dataset>-<mode>-<rate>`` (``digits-sym-0.4``,
  ``cifar10-asym-0.4``; modes of ``lnl.data.noise.make_noise`` that need no classifier), a path to
  a noise file (``.npy``/``.json``/``.npz``, e.g. PMD files from ``data_prep/make_noise.py``; the
  dataset is then ``--dataset``), or ``real`` (the dataset's own noisy labels: Food-101N,
  Clothing1M, WebVision).
* Splits: the first ``N − val_size`` training images are trained on; the last ``val_size`` (5,000 on
  CIFAR, as the original) keep their clean labels for validation. A 45k-label LRA file over the
  50k CIFAR images therefore lines up exactly. Web-scale sets use their own val/test splits.
* Features: ``data_prep/extract_features.py`` prefixes (``<prefix>_features.npy``, one row per
  image in dataset order; the val/test prefix replaces ``train`` in the name), or ``pixels``
  (grey-level pixels pooled to 8×8 and standardised: a fixed, label-free encoder for digits).
  SimCLR features are L2-normalised as the original's encoder does; CLIP and CC features stay raw.
* ``--subset N`` (in-memory datasets only): after the noisy labels are made or read over the whole split,
  keep the first N images of the training part, the first N of its held-out part, and the first N of
  every other split; features are then computed, or read from the files' rows, for those images only.
"""

from __future__ import annotations

import argparse
import os
import re
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from lnl.data import get_dataset
from lnl.data._base import reading
from lnl.data.cifar import CIFAR10_MEAN, CIFAR10_STD
from lnl.data.gpu import GPULoader
from lnl.data.noise import NOISE_TYPES, make_noise
from lnl.data.noise_files import load_noise_file
from lnl.engine.data import check_subset_size, first_images

FP_ENCODERS = ("SimCLR", "CLIP", "ResNet", "CC", "pixels")
LRA_FILE = re.compile(r"^(cifar10|cifar100)-[123]-\d*\.\d+(_[UA]_\d*\.\d+)?$")
GENERATED = re.compile(r"^(?P<dataset>[a-z0-9_]+)-(?P<mode>[a-z_+]+)-(?P<rate>\d*\.?\d+)$")
NO_CLASSIFIER_MODES = tuple(m for m in NOISE_TYPES if not m.startswith("pmd"))
EXTRACT_HINT = {
    "CLIP": "--encoder open_clip --model ViT-L-14 --pretrained openai --no-normalize --preprocess lra",
    "SimCLR": "--encoder simclr --arch resnet50 --cifar-stem --weights model/SimCLR_128_{dataset}.pt",
    "ResNet": "--encoder resnet50 --weights IMAGENET1K_V2",
    "CC": "--encoder cc --weights model/CC_net.pt",
}


@dataclass
class NoiseSpec:
    dataset: str
    kind: str  # "file", "generated" or "real"
    path: Path | None = None
    mode: str | None = None
    rate: float | None = None


def noise_dirs(args: argparse.Namespace) -> list[Path]:
    """Where original noise files are looked up: ``--noise_dir``, ``./noise_label`` (the original's),
    and ``$LNL_DATA/noise_labels/lra_pmd`` (``$LNL_DATA`` defaults to ``data``)."""
    if args.noise_dir:
        return [Path(args.noise_dir)]
    return [
        Path("noise_label"),
        Path(os.environ.get("LNL_DATA", "data")) / "noise_labels" / "lra_pmd",
    ]


def parse_noise_type(args: argparse.Namespace) -> NoiseSpec:
    """Resolve ``--noise_type`` (module docstring).

    Raises:
        ValueError: an unknown name, mode or rate. FileNotFoundError: an original file not found.
    """
    name = args.noise_type
    if name == "real":
        return NoiseSpec(args.dataset, "real")
    if name.endswith((".npy", ".json", ".npz")):
        if not Path(name).is_file():
            raise FileNotFoundError(f"--noise_type {name}: no such noise file")
        return NoiseSpec(args.dataset, "file", path=Path(name))
    if LRA_FILE.match(name):
        tried = [d / f"{name}.npy" for d in noise_dirs(args)]
        for path in tried:
            if path.is_file():
                return NoiseSpec(name.split("-")[0], "file", path=path)
        raise FileNotFoundError(
            f"--noise_type {name}: not found in {[str(p) for p in tried]} (pass --noise_dir)"
        )
    m = GENERATED.match(name)
    if m and m["mode"] in NO_CLASSIFIER_MODES:
        rate = float(m["rate"])
        if not 0.0 <= rate <= 1.0:
            raise ValueError(f"--noise_type {name}: rate {rate} is not in [0, 1]")
        return NoiseSpec(m["dataset"], "generated", mode=m["mode"], rate=rate)
    raise ValueError(
        f"unknown --noise_type {name!r}: expected an original file stem like cifar10-1-0.35 or "
        f"cifar100-1-0.35_U_0.3, <dataset>-<mode>-<rate> with mode in {NO_CLASSIFIER_MODES} "
        f"(e.g. digits-sym-0.4), a .npy/.json/.npz noise file, or 'real'"
    )


def noisy_labels(spec: NoiseSpec, train, n_train: int, seed: int) -> tuple[torch.Tensor, dict]:
    """Noisy labels of the first ``n_train`` training images, and their provenance."""
    if spec.kind == "real":
        if train.noisy_targets is None:
            raise ValueError(f"--noise_type real: {spec.dataset} has no noisy labels of its own")
        return train.noisy_targets[:n_train], {"source": "dataset"}
    if spec.kind == "generated":
        noisy = make_noise(
            train.targets,
            spec.mode,
            spec.rate,
            num_classes=train.num_classes,
            seed=seed,
            dataset=spec.dataset,
        )
        return noisy.labels[:n_train], noisy.meta
    noisy = load_noise_file(spec.path, num_classes=train.num_classes)
    if len(noisy.labels) not in (n_train, len(train)):
        raise ValueError(
            f"{spec.path} holds {len(noisy.labels)} labels; {spec.dataset} trains on the first "
            f"{n_train} of {len(train)} images (set --val_size to match)"
        )
    return noisy.labels[:n_train], noisy.meta


# ----------------------------------------------------------------------------------------------------
# Features
# ----------------------------------------------------------------------------------------------------


def pixel_features(images: torch.Tensor, size: int = 8) -> torch.Tensor:
    """Grey-level pixels average-pooled to ``size × size``, in [0, 1]: Tensor[N, size²]."""
    x = images.float().mean(-1, keepdim=True).permute(0, 3, 1, 2) / 255.0
    return F.adaptive_avg_pool2d(x, size).flatten(1)


def split_prefix(prefix: str, split: str) -> Path:
    """The prefix of another split: ``features/cifar10_train_clip`` → ``features/cifar10_test_clip``."""
    p = Path(prefix[: -len("_features.npy")] if prefix.endswith("_features.npy") else prefix)
    if split == "train":
        return p
    if "train" not in p.name:
        raise ValueError(
            f"--feature_file {prefix}: cannot derive the {split} prefix (no 'train' in the name)"
        )
    return p.with_name(p.name.replace("train", split, 1))


def read_features(
    prefix: Path,
    split: str,
    args: argparse.Namespace,
    n_rows: int,
    keep: torch.Tensor | None = None,
) -> torch.Tensor:
    """``<prefix>_features.npy`` as float32, only its rows ``keep`` when given (the file must still cover
    the whole split of ``n_rows`` images, so row i is image i); raises with the command that makes a
    missing file."""
    path = prefix.with_name(prefix.name + "_features.npy")
    if not path.is_file():
        hint = EXTRACT_HINT.get(args.fp_encoder, "--encoder ...").format(dataset=args.dataset)
        raise FileNotFoundError(
            f"no feature file {path}; make it with: python data_prep/extract_features.py --dataset "
            f"{args.dataset} --root <data folder> --split {split} {hint} --out {prefix}"
        )
    with reading(path, "feature file"):
        rows = np.load(path, mmap_mode="r")  # memory-mapped: a subset reads only its rows
    if rows.shape[0] != n_rows:
        raise ValueError(
            f"{path} has {rows.shape[0]} rows but the {args.dataset} {split} split has {n_rows}"
        )
    if keep is not None:
        rows = rows[keep.numpy()]
    return torch.from_numpy(np.array(rows, dtype=np.float32))


def prior_features(
    args: argparse.Namespace,
    splits: dict[str, object],
    rows: dict[str, tuple[int, torch.Tensor]] | None = None,
) -> dict[str, torch.Tensor]:
    """f_p(x) of every split in ``splits`` (name → dataset), normalised as the original does.

    ``rows`` (``--subset``; split → (its full size, the kept images' row indices)): ``splits`` hold the
    kept images only, and the feature files, which cover the full splits, are read at those rows.
    """
    if args.fp_encoder == "pixels":
        if not all(getattr(ds, "in_memory", False) for ds in splits.values()):
            raise ValueError("--fp_encoder pixels needs an in-memory dataset (digits, CIFAR)")
        raw = {s: pixel_features(ds.images) for s, ds in splits.items()}
        mean, std = raw["train"].mean(0), raw["train"].std(0).clamp_min(1e-3)
        return {s: (x - mean) / std for s, x in raw.items()}
    prefix = args.feature_file or f"features/{args.dataset}_train_{args.fp_encoder.lower()}"
    rows = rows or {s: (len(ds), None) for s, ds in splits.items()}
    feats = {s: read_features(split_prefix(prefix, s), s, args, *rows[s]) for s in splits}
    if (
        args.fp_encoder == "SimCLR"
    ):  # the original's SimCLR encoder returns normalize(avgpool feature)
        feats = {s: F.normalize(x, dim=1) for s, x in feats.items()}
    return feats


# ----------------------------------------------------------------------------------------------------
# Splits and loaders
# ----------------------------------------------------------------------------------------------------


def kept_rows(n: int, n_train: int, subset: int) -> torch.Tensor:
    """The rows ``--subset`` keeps of a split of ``n`` images trained on up to ``n_train`` (``n`` for
    test/val splits): the first ``subset`` of [0, n_train) and the first ``subset`` of the held-out
    [n_train, n). Cutting both parts, not the split's prefix, keeps a validation set."""
    return torch.cat(
        [torch.arange(min(subset, n_train)), torch.arange(n_train, min(n, n_train + subset))]
    )


def subset_splits(args: argparse.Namespace, splits: dict, n_train: int) -> tuple[dict, dict]:
    """``--subset N``: the splits cut to their kept images, and split → (full size, kept rows) for
    reading feature files that cover the full splits.

    Raises:
        ValueError: N below the number of classes, or a file-list dataset (not supported there).
    """
    subset, train = args.subset, splits["train"]
    if not getattr(train, "in_memory", False):
        raise ValueError(
            f"--subset is not supported for {args.dataset} (a file-list dataset); it applies to "
            f"the in-memory datasets (CIFAR, digits)"
        )
    check_subset_size(subset, train.num_classes, args.dataset)
    rows = {
        s: (len(ds), kept_rows(len(ds), n_train if s == "train" else len(ds), subset))
        for s, ds in splits.items()
    }
    cut = {
        s: ds.take(rows[s][1]) if s == "train" else first_images(ds, subset)
        for s, ds in splits.items()
    }
    return cut, rows


@dataclass
class LRAData:
    """Everything a run reads. Feature tables are indexed by dataset index of their split."""

    num_classes: int
    train_idx: torch.Tensor  # Tensor[n] dataset indices trained on (0..n−1)
    noisy: torch.Tensor  # Tensor[n] noisy labels of train_idx, on the device
    # split -> Tensor[N_split, d] on the device ("train" covers the held-out rows too)
    features: dict
    loaders: dict  # "train", "val" (optional), "test"
    eval_features: dict  # "val"/"test" -> the feature table their loader's indices refer to
    test_targets: torch.Tensor  # Tensor[N_test] clean test labels (for the kNN-vote reference)
    noise_meta: dict
    fp_encoder: torch.nn.Module | None = None  # online SimCLR prior: queries are encoded every step
    # "train"/"test" datasets (the online prior's tables are built from them)
    datasets: dict | None = None


def normalisation(args: argparse.Namespace, ds) -> tuple[tuple, tuple]:
    """The mean/std images are normalised with: CIFAR-100 gets CIFAR-10's, as the original hard-codes
    them for both (``train_CIFAR.py`` transform_train, ``utils/data_utils.py`` Custom_dataset);
    ``--dataset_norm`` uses the dataset's own."""
    if args.dataset == "cifar100" and not args.dataset_norm:
        return CIFAR10_MEAN, CIFAR10_STD
    return ds.mean, ds.std


def _in_memory_loaders(args, train, test, n_train: int, noisy: torch.Tensor, device) -> dict:
    mean, std = normalisation(args, train)
    common = dict(mean=mean, std=std, device=device)
    labels = train.targets.clone()
    labels[:n_train] = noisy.cpu()
    if args.fast_loader:

        def loader(images, targets, batch, indices=None, train=False):
            return GPULoader(
                images,
                targets,
                batch,
                train=train,
                seed=args.seed,
                indices=indices,
                drop_last=args.drop_last and train,
                **common,
            )
    else:  # the original's DataLoaders (4 workers), draw for draw

        def loader(images, targets, batch, indices=None, train=False):
            from methods.lra.lra_loader import OriginalLoader

            return OriginalLoader(
                images,
                targets,
                batch,
                shuffle=train,
                augment=train,
                indices=indices,
                drop_last=args.drop_last and train,
                **common,
            )

    loaders = {
        "train": loader(train.images, labels, args.batch_size, torch.arange(n_train), train=True),
        "test": loader(test.images, test.targets, args.eval_batch_size),
    }
    if n_train < len(train):  # the held-out rows keep their clean labels
        loaders["val"] = loader(
            train.images, train.targets, args.eval_batch_size, torch.arange(n_train, len(train))
        )
    return loaders


def _file_loaders(args, splits: dict, noisy: torch.Tensor) -> dict:
    """DataLoaders over file lists (Clothing1M, WebVision, Food-101N), 224 crops as the original;
    ``--samples_per_class`` draws a fresh class-balanced subset every epoch."""
    import torchvision.transforms as T

    from lnl.data.loaders import ClassBalancedSampler, build_file_loader

    train = splits["train"]
    norm = [T.ToTensor(), T.Normalize(train.mean, train.std)]
    weak = T.Compose([T.Resize(256), T.RandomCrop(224), T.RandomHorizontalFlip(), *norm])
    plain = T.Compose([T.Resize(256), T.CenterCrop(224), *norm])
    sampler = None
    if args.samples_per_class:
        sampler = ClassBalancedSampler(
            noisy.cpu(),
            args.samples_per_class * train.num_classes,
            num_classes=train.num_classes,
            seed=args.seed,
        )
    loaders = {
        "train": build_file_loader(
            train,
            weak,
            args.batch_size,
            shuffle=True,
            sampler=sampler,
            labels=noisy.cpu(),
            num_workers=args.num_workers,
            seed=args.seed,
            drop_last=args.drop_last,
        )
    }
    for role in ("val", "test"):
        split = getattr(args, f"{role}_split")
        if split and split in splits:
            loaders[role] = build_file_loader(
                splits[split], plain, args.eval_batch_size, num_workers=args.num_workers
            )
    return loaders


def build_data(args: argparse.Namespace, log=None) -> LRAData:
    """Datasets, noisy labels, features and loaders for ``args`` (module docstring)."""
    spec = parse_noise_type(args)
    args.dataset = spec.dataset
    splits = {"train": get_dataset(spec.dataset, args.data_path, "train")}
    for split in {args.val_split, args.test_split} - {None, "holdout"}:
        splits[split] = get_dataset(spec.dataset, args.data_path, split)
    train = splits["train"]
    val_size = 0 if args.val_split != "holdout" else args.val_size
    if not 0 <= val_size < len(train):
        raise ValueError(f"--val_size {val_size} must be in [0, {len(train)})")
    n_train = len(train) - val_size
    noisy, meta = noisy_labels(spec, train, n_train, args.seed)
    rows = None
    if getattr(
        args, "subset", None
    ):  # cut after the noise: labels drawn/read over the whole split stay aligned
        splits, rows = subset_splits(args, splits, n_train)
        train, n_train = splits["train"], min(args.subset, n_train)
        noisy, meta = noisy[:n_train], {**meta, "subset": args.subset}
    in_memory = getattr(train, "in_memory", False)
    if args.fp_online and not in_memory:
        raise ValueError(
            f"the online SimCLR prior needs an in-memory dataset (CIFAR); pass --precomputed_fp "
            f"for {spec.dataset}"
        )
    fp_encoder, feats = None, None
    if (
        args.fp_online
    ):  # the encoder now (the original builds it first); its tables after the networks
        from methods.lra import lra_prior

        fp_encoder = lra_prior.load_simclr(
            args.simclr_weights or f"model/SimCLR_128_{args.dataset}.pt", args.device
        )
    else:
        feats = {s: x.to(args.device) for s, x in prior_features(args, splits, rows).items()}
    if in_memory:
        loaders = _in_memory_loaders(
            args, train, splits[args.test_split], n_train, noisy, args.device
        )
    else:
        loaders = _file_loaders(args, splits, noisy)
    if log is not None and spec.kind != "real":
        clean = train.targets[:n_train]
        log.info(
            "%s: training on %d images%s, noise %s, measured noise rate %.4f, %s features",
            spec.dataset,
            n_train,
            f" (--subset {args.subset})" if rows else "",
            args.noise_type,
            float((noisy != clean).float().mean()),
            "online" if feats is None else f"{feats['train'].shape[1]}-d",
        )
    data = LRAData(
        train.num_classes,
        torch.arange(n_train),
        noisy.to(args.device),
        feats,
        loaders,
        {},
        splits[args.test_split].targets,
        meta,
        fp_encoder,
        {"train": train, "test": splits[args.test_split]},
    )
    if feats is not None:
        set_eval_features(args, data)
    return data


def set_eval_features(args: argparse.Namespace, data: LRAData) -> None:
    """The tables the val/test loaders' indices refer to."""
    data.eval_features = {"test": data.features[args.test_split]}
    if "val" in data.loaders:
        data.eval_features["val"] = data.features[
            "train" if args.val_split == "holdout" else args.val_split
        ]


def online_features(args: argparse.Namespace, data: LRAData) -> None:
    """The online SimCLR prior's tables (``lra_prior``), set in ``data``: the training rows through one
    training augmentation each (``prepare_fp_x`` on the training set, batches of 400 from 16 workers: the
    kNN database), the held-out and test rows un-augmented (what ``reverse_ddim`` computes at evaluation).
    Called after the networks are built, where the original calls ``prepare_fp_x``."""
    from methods.lra import lra_prior
    from methods.lra.lra_loader import OriginalLoader

    train, test, n_train = data.datasets["train"], data.datasets["test"], len(data.train_idx)
    mean, std = normalisation(args, train)
    common = dict(mean=mean, std=std, device=args.device)
    n, enc = lra_prior.DATABASE_BATCH, data.fp_encoder
    if args.fast_loader:
        database = GPULoader(
            train.images,
            train.targets,
            n,
            train=True,
            shuffle=False,
            seed=args.seed,
            indices=torch.arange(n_train),
            **common,
        )
    else:
        database = OriginalLoader(
            train.images,
            train.targets,
            n,
            shuffle=False,
            augment=True,
            num_workers=16,
            indices=torch.arange(n_train),
            **common,
        )
    feats = {"train": lra_prior.encode_loader(enc, database, len(train), args.device)}
    if n_train < len(train):  # no random draw: these are what test() embeds at every evaluation
        held_out = GPULoader(
            train.images,
            train.targets,
            n,
            train=False,
            indices=torch.arange(n_train, len(train)),
            **common,
        )
        feats["train"][n_train:] = lra_prior.encode_loader(enc, held_out, len(train), args.device)[
            n_train:
        ]
    plain = GPULoader(test.images, test.targets, n, train=False, **common)
    feats[args.test_split] = lra_prior.encode_loader(enc, plain, len(test), args.device)
    data.features = feats
    set_eval_features(args, data)
