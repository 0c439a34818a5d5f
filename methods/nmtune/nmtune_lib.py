"""NMTune and its linear-probe baseline (Chen et al., ICLR 2024; spec ``ieg_nmtune.md`` Part B, D2).

Upstream: ``Hhhhhhao/Noisy-Model-Learning @ f249dce`` (``src/models/nml_tune.py``, ``finetune.py``,
``modeling.py``, ``eval.py``, ``args.py``). Everything here is an independent re-implementation.

Pieces, top to bottom:

* the three feature regularisers of NMTune (B6.2), with a Gram-matrix path for ``N < D`` (B11.1);
* :class:`ResidualMLP` (``Z = F + s ⊙ MLP(F)``) and the kaiming-uniform linear head (B5, B6.1);
* encoders from timm or open_clip, built without weights and loaded from ``--pretrained PATH``
  (nothing downloads here; the paper's noisy checkpoints are not public, B4);
* batched, on-device preprocessing (RandomResizedCrop / flip / resize-centre-crop via
  ``affine_grid``; RandAugment(3, 5) for ``--use-weak-strong``), datasets from ``lnl.data`` and
  torchvision, frozen-encoder features cached on the device (and on disk with ``--cache-dir``);
* the parser shared by ``finetune.py`` and ``nml_tune.py``, the legacy ``results.jsonl`` writer (B8)
  and the epoch driver with checkpoint / resume.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import math
import os
import pickle
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import torch
import torch.nn as nn
import torch.nn.functional as F
from torch import Tensor

from lnl.engine import (MetricLogger, append_jsonl, default_argument_parser, find_resume_path, load_checkpoint,
                        read_jsonl, save_checkpoint)
from lnl.engine.args import str2bool
from lnl.engine.checkpoint import atomic_save
from lnl.engine.train_loop import Stopwatch, autocast, progress, run_epochs

SVD_TOPK = 5  # hard-coded in the original (``s[:5]``)
_EIG_FLOOR = 1e-12  # relative floor of Gram eigenvalues before the square root

# --------------------------------------------------------------------------------------------
# Regularisers (B6.2). All take Tensor[N, D] features of both views stacked (N = 2B).
# --------------------------------------------------------------------------------------------


def mse_consistency_loss(z_strong: Tensor, f_weak: Tensor) -> Tensor:
    """Mean over ``B·D`` of ``(Z_s/‖Z_s‖ − sg(F_w)/‖F_w‖)²``: strong-view MLP features pulled to the
    weak view's pre-trained features (row-wise L2 normalisation, ``nn.MSELoss`` mean reduction)."""
    return F.mse_loss(F.normalize(z_strong, dim=1), F.normalize(f_weak.detach(), dim=1))


def covariance_loss(z: Tensor, use_gram: bool | None = None) -> Tensor:
    """VICReg covariance term ``Σ_{i≠j} Cov_ij² / D`` with ``Cov = Z_cᵀZ_c / (N−1)``.

    Args:
        z: ``Tensor[N, D]``.
        use_gram: compute ``‖Cov‖²_F`` as ``‖Z_c Z_cᵀ‖²_F`` (an ``N×N`` matrix, no ``D×D`` one);
            default when ``N < D``.

    Returns:
        A scalar tensor.
    """
    n, d = z.shape
    zc = z - z.mean(dim=0)
    use_gram = n < d if use_gram is None else use_gram
    gram = zc @ zc.T if use_gram else zc.T @ zc  # same Frobenius norm: ‖AᵀA‖_F = ‖AAᵀ‖_F
    diagonal = zc.pow(2).sum(dim=0)  # diag(Z_cᵀZ_c), D values
    return (gram.pow(2).sum() - diagonal.pow(2).sum()) / ((n - 1) ** 2 * d)


def singular_values(z: Tensor, use_gram: bool | None = None) -> Tensor:
    """Singular values of ``z`` in descending order.

    Args:
        z: ``Tensor[N, D]``.
        use_gram: take ``sqrt(eigvalsh(Z Zᵀ))`` (float64, an ``N×N`` eigensolve) instead of
            ``svdvals``; default when ``N < D``. Only ``min(N, D)`` values are returned either way.

    Returns:
        ``Tensor[min(N, D)]`` of ``z``'s dtype (the Gram path's extra zero values are dropped).
    """
    n, d = z.shape
    if not (n < d if use_gram is None else use_gram):
        return torch.linalg.svdvals(z)
    # float64: squaring the singular values squares the condition number (fp32 would lose the
    # small ones that enter Σσ); also the safe choice under autocast.
    zd = z.double()
    eig = torch.linalg.eigvalsh(zd @ zd.T).flip(0)[: min(n, d)]
    floor = eig[0].detach().clamp_min(1e-300) * _EIG_FLOOR
    return eig.clamp_min(floor).sqrt().to(z.dtype)


def top_singular_share(z: Tensor, k: int = SVD_TOPK, use_gram: bool | None = None) -> Tensor:
    """``mean(ŝ_1..ŝ_k)`` with ``ŝ = σ/Σσ`` of the **uncentred** ``z``; NMTune *subtracts* it."""
    s = singular_values(z, use_gram)
    return (s / s.sum())[:k].mean()


@dataclass(frozen=True)
class LossWeights:
    mse: float = 1.0
    cov: float = 0.04
    svd: float = 0.001


def nmtune_objective(feats: Tensor, z: Tensor, logits: Tensor, labels: Tensor,
                     w: LossWeights) -> tuple[Tensor, dict[str, Tensor]]:
    """``L = CE + w_mse·L_MSE + w_cov·L_COV − w_svd·mean(ŝ_1..5)`` (README weights 1, 0.04, 0.001).

    Args:
        feats: ``Tensor[2B, D]`` pre-trained features ``[F_w; F_s]``.
        z: ``Tensor[2B, D]`` MLP outputs ``[Z_w; Z_s]``.
        logits: ``Tensor[2B, C]`` head outputs on ``z``.
        labels: ``Tensor[B]`` (duplicated for the two views).
        w: loss weights; a zero weight skips its term, as in the original.

    Returns:
        ``(loss, parts)``; ``parts`` holds the detached terms (``ce``, ``mse``, ``cov``, ``svd``).
    """
    b = labels.shape[0]
    ce = F.cross_entropy(logits, torch.cat([labels, labels]))
    loss, parts = ce, {"ce": ce.detach()}
    if w.mse:
        parts["mse"] = mse_consistency_loss(z[b:], feats[:b])
        loss = loss + w.mse * parts["mse"]
    if w.svd:
        parts["svd"] = top_singular_share(z)
        loss = loss - w.svd * parts["svd"]
    if w.cov:
        parts["cov"] = covariance_loss(z)
        loss = loss + w.cov * parts["cov"]
    return loss, {k: v.detach() for k, v in parts.items()}


# --------------------------------------------------------------------------------------------
# Modules
# --------------------------------------------------------------------------------------------


class ResidualMLP(nn.Module):
    """``h``: ``[Linear → BatchNorm1d → ReLU] × layers → Linear`` with hidden width ``ratio·D``;
    ``Z = s ⊙ h(F) + F`` with a learnable per-dimension ``s`` (init ``res_scale_init``) when
    ``residual``, else ``Z = h(F)`` (B6.1; parameter names follow the original's)."""

    def __init__(self, dim: int, ratio: float = 4, layers: int = 1, residual: bool = True,
                 res_scale_init: float = 1.0):
        super().__init__()
        dims = [dim] + [int(dim * ratio)] * layers + [dim]
        blocks: list[nn.Module] = []
        for d_in, d_out in zip(dims[:-2], dims[1:-1]):
            blocks += [nn.Linear(d_in, d_out), nn.BatchNorm1d(d_out), nn.ReLU()]
        blocks.append(nn.Linear(dims[-2], dims[-1]))
        self.mlp_after = nn.Sequential(*blocks)
        self.scale_after = nn.Parameter(torch.full((1, dim), float(res_scale_init))) if residual else None

    def forward(self, feats: Tensor) -> Tensor:
        """``Tensor[N, D] -> Tensor[N, D]``."""
        h = self.mlp_after(feats)
        return h if self.scale_after is None else self.scale_after * h + feats


def make_head(dim: int, num_classes: int) -> nn.Linear:
    """``ClassificationHead(normalize=False)``: weight ``kaiming_uniform_`` (a=0) of ``[C, D]``, bias 0."""
    head = nn.Linear(dim, num_classes)
    with torch.no_grad():
        nn.init.kaiming_uniform_(head.weight)
        head.bias.zero_()
    return head


@dataclass(frozen=True)
class Preprocess:
    """An encoder's input pipeline (timm ``pretrained_cfg`` or open_clip's, B4)."""

    input_size: int
    crop_pct: float
    mean: tuple[float, ...]
    std: tuple[float, ...]
    interpolation: str  # "bilinear" or "bicubic"
    scale: tuple[float, float]  # RandomResizedCrop area range of the train view


class ImageEncoder(nn.Module):
    """Images ``Tensor[B, 3, S, S]`` (normalised) → features ``Tensor[B, D]``.

    timm: ``forward_head(forward_features(x), pre_logits=True)`` (the original's ``TimmWrapper``);
    open_clip: the visual tower (``encode_image`` without normalisation).
    """

    def __init__(self, net: nn.Module, kind: str, num_features: int, preprocess: Preprocess,
                 meta: dict):
        super().__init__()
        self.net, self.kind, self.num_features, self.preprocess = net, kind, num_features, preprocess
        self.meta = meta  # the checkpoint's lnl_pretrain record (noise of the pre-training), if any

    def forward(self, x: Tensor) -> Tensor:
        if self.kind == "timm":
            return self.net.forward_head(self.net.forward_features(x), pre_logits=True)
        return self.net(x)


# The original's unpublished noisy ResNet-50 cfgs and where its timm fork expected them (B4).
ORIGINAL_TIMM_CHECKPOINTS = {
    "resnet50_orig": "pretrained_models/r50_in1k_clean/model.pth.tar",
    **{f"resnet50_noise_{r}": f"pretrained_models/r50_in1k_random_noise_{r}/model.pth.tar"
       for r in (5, 10, 20, 30)},
}
_ORIGINAL_TAG = re.compile(r"^(?P<arch>[a-z0-9]+)_(orig|noise_\w+|cifar100_noise_\w+)$")


def read_checkpoint(path: str | os.PathLike) -> tuple[dict[str, Tensor], dict]:
    """A local checkpoint's state dict (unwrapped, ``module.`` stripped) and its extra record.

    Accepts a bare state dict or one under ``state_dict`` / ``model`` / ``net`` (timm's train.py,
    open_clip's training), plus the ``pretrained_cfg`` / ``lnl_pretrain`` entries that
    ``data_prep/pretrain_noisy.py`` writes.

    Raises:
        FileNotFoundError: ``path`` does not exist.
    """
    path = Path(path).expanduser()
    if not path.is_file():
        raise FileNotFoundError(f"--pretrained {path}: no such checkpoint file")
    try:
        raw = torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError:  # timm's train.py also pickles its argparse Namespace
        raw = torch.load(path, map_location="cpu", weights_only=False)
    extra = {k: raw[k] for k in ("pretrained_cfg", "lnl_pretrain") if isinstance(raw, dict) and k in raw}
    for key in ("state_dict", "model", "net"):
        if isinstance(raw, dict) and isinstance(raw.get(key), dict):
            raw = raw[key]
            break
    if not isinstance(raw, dict):
        raise ValueError(f"--pretrained {path}: expected a state dict, got a {type(raw).__name__}")
    return {k.removeprefix("module."): v for k, v in raw.items()}, extra


def load_weights(net: nn.Module, state: dict[str, Tensor], path, what: str) -> None:
    """Load ``state`` strictly into ``net``; a mismatch raises ``ValueError`` naming the keys."""
    try:
        missing, unexpected = net.load_state_dict(state, strict=False)
    except RuntimeError as exc:  # shape mismatches
        raise ValueError(f"--pretrained {path} does not fit {what}: {exc}") from exc
    if missing or unexpected:
        raise ValueError(f"--pretrained {path} does not match {what}: {len(missing)} missing keys "
                         f"{missing[:5]}, {len(unexpected)} unexpected keys {unexpected[:5]}")


def _no_weights(name: str, tag: str | None) -> ValueError:
    why = f"pretrained tag {tag!r} cannot be downloaded here" if tag else "no weights were given"
    return ValueError(f"--model {name}: {why}; pass --pretrained PATH (a local checkpoint), or "
                      "--pretrained none for a randomly initialised encoder (tests only)")


def _timm_encoder(name: str, pretrained: str | None) -> ImageEncoder:
    import timm

    arch, match = name, _ORIGINAL_TAG.match(name)
    if not timm.is_model(name) and match and timm.is_model(match["arch"]):
        arch = match["arch"]
        if pretrained is None and name in ORIGINAL_TIMM_CHECKPOINTS:
            pretrained = ORIGINAL_TIMM_CHECKPOINTS[name]
            if not Path(pretrained).is_file():
                raise FileNotFoundError(f"--model {name} is one of the original's unpublished noisy "
                                        f"checkpoints, expected at {Path(pretrained).resolve()}; "
                                        "put it there or pass --pretrained PATH")
    if not timm.is_model(arch):
        raise ValueError(f"--model {name!r} is not a timm model (--model_source timm); "
                         f"e.g. {', '.join(timm.list_models('resnet5*')[:4])}")
    if pretrained is None:
        raise _no_weights(name, name if match else None)
    net = timm.create_model(arch, pretrained=False, num_classes=0)
    cfg, meta = dict(net.pretrained_cfg), {}
    if pretrained.lower() != "none":
        state, extra = read_checkpoint(pretrained)
        heads = cfg.get("classifier") or ()
        heads = (heads,) if isinstance(heads, str) else tuple(heads)
        state = {k: v for k, v in state.items() if not k.startswith(tuple(f"{h}." for h in heads))}
        load_weights(net, state, pretrained, f"timm model {arch}")
        cfg.update(extra.get("pretrained_cfg", {}))
        meta = extra.get("lnl_pretrain", {})
    prep = Preprocess(int(cfg["input_size"][-1]), float(cfg.get("crop_pct", 0.875)), tuple(cfg["mean"]),
                      tuple(cfg["std"]), cfg.get("interpolation", "bicubic"), (0.8, 1.0))
    return ImageEncoder(net, "timm", net.num_features, prep, meta)


def _open_clip_encoder(name: str, pretrained: str | None) -> ImageEncoder:
    import open_clip

    arch, _, tag = name.partition("_")  # the original splits "<arch>_<tag>" at the first "_"
    if arch not in open_clip.list_models():
        raise ValueError(f"--model {name!r}: {arch!r} is not an open_clip model (--model_source "
                         f"open_clip); e.g. RN50, ViT-B-16, ViT-B-32")
    if pretrained is None:
        raise _no_weights(name, tag or None)
    model = open_clip.create_model(arch, pretrained=None)
    meta = {}
    if pretrained.lower() != "none":
        state, extra = read_checkpoint(pretrained)
        load_weights(model, state, pretrained, f"open_clip model {arch}")
        meta = extra.get("lnl_pretrain", {})
    visual = model.visual
    size = visual.image_size
    size = int(size if isinstance(size, int) else size[-1])
    prep = Preprocess(size, 1.0, tuple(open_clip.OPENAI_DATASET_MEAN), tuple(open_clip.OPENAI_DATASET_STD),
                      "bicubic", (0.9, 1.0))
    return ImageEncoder(visual, "open_clip", int(visual.output_dim), prep, meta)


def build_encoder(source: str, name: str, pretrained: str | None) -> ImageEncoder:
    """The frozen feature extractor of ``--model_source`` / ``--model`` / ``--pretrained``.

    Raises:
        ValueError: unknown source or model name, no weights, or a checkpoint that does not fit.
        FileNotFoundError: ``--pretrained`` does not exist.
    """
    if not name:
        raise ValueError("--model is required (a timm name, or open_clip '<arch>[_<tag>]')")
    builders = {"timm": _timm_encoder, "open_clip": _open_clip_encoder}
    if source not in builders:
        raise ValueError(f"--model_source {source!r}: expected one of {', '.join(builders)} "
                         "(OpenAI 'clip' is not ported: use open_clip with the same weights)")
    return builders[source](name, pretrained)


# --------------------------------------------------------------------------------------------
# Batched preprocessing on the device
# --------------------------------------------------------------------------------------------


def _sample(images: Tensor, theta: Tensor, size: int, prep: Preprocess) -> Tensor:
    """Resample ``images`` (uint8 ``[B, 3, H, W]``) through per-sample affine maps to ``size²``."""
    grid = F.affine_grid(theta, [images.shape[0], 3, size, size], align_corners=False)
    out = F.grid_sample(images.float(), grid, mode=prep.interpolation, padding_mode="border",
                        align_corners=False)
    return out.clamp_(0, 255)


def _normalize(x255: Tensor, prep: Preprocess) -> Tensor:
    mean = torch.tensor(prep.mean, device=x255.device).view(1, 3, 1, 1) * 255
    std = torch.tensor(prep.std, device=x255.device).view(1, 3, 1, 1) * 255
    return (x255 - mean) / std


def val_view(images: Tensor, prep: Preprocess) -> Tensor:
    """``Resize(ceil(S/crop_pct)) + CenterCrop(S) + Normalize`` as one resampling.

    Args:
        images: ``Tensor[B, 3, H, W]`` uint8.

    Returns:
        ``Tensor[B, 3, S, S]`` float32, normalised.
    """
    b, _, h, w = images.shape
    s = prep.input_size
    resized = math.ceil(s / prep.crop_pct)
    # The crop covers S/resized of the short side after the short side is scaled to `resized`.
    frac = s / resized * min(h, w)
    theta = torch.zeros(b, 2, 3, device=images.device)
    theta[:, 0, 0], theta[:, 1, 1] = frac / w, frac / h
    return _normalize(_sample(images, theta, s, prep), prep)


def train_view(images: Tensor, prep: Preprocess, generator: torch.Generator,
               randaug: bool = False) -> Tensor:
    """``RandomResizedCrop(S, scale) + RandomHorizontalFlip (+ RandAugment(3, 5)) + Normalize``.

    Area fraction uniform in ``prep.scale``, aspect ratio log-uniform in (3/4, 4/3); like
    torchvision, up to 10 draws per image until the crop fits, else the whole image. With
    ``randaug`` the strong view gets RandAugment(3, 5) after the crop, as the original inserts
    it; the original flips after RandAugment, here the flip is part of the crop, which gives the
    same distribution (every RandAugment op commutes with a mirror up to its random sign).

    Args:
        images: ``Tensor[B, 3, H, W]`` uint8.
        generator: random source on ``images.device``.

    Returns:
        ``Tensor[B, 3, S, S]`` float32, normalised.
    """
    b, _, h, w = images.shape
    dev = images.device

    def uniform(lo: float, hi: float, *shape: int) -> Tensor:
        return lo + (hi - lo) * torch.rand(*shape, b, device=dev, generator=generator)

    area = uniform(*prep.scale, 10)
    ratio = torch.exp(uniform(math.log(3 / 4), math.log(4 / 3), 10))
    fw = torch.sqrt(area * ratio) * math.sqrt(h / w)  # crop width / image width
    fh = torch.sqrt(area / ratio) * math.sqrt(w / h)
    fits = (fw <= 1) & (fh <= 1)
    first = fits.int().argmax(0, keepdim=True)  # first draw that fits (0 when none does)
    whole = ~fits.any(0)
    fw = torch.where(whole, 1.0, fw.gather(0, first)[0])
    fh = torch.where(whole, 1.0, fh.gather(0, first)[0])
    flip = torch.where(torch.rand(b, device=dev, generator=generator) < 0.5, -1.0, 1.0)
    theta = torch.zeros(b, 2, 3, device=dev)
    theta[:, 0, 0], theta[:, 1, 1] = fw * flip, fh
    theta[:, 0, 2], theta[:, 1, 2] = uniform(-1, 1) * (1 - fw), uniform(-1, 1) * (1 - fh)
    x = _sample(images, theta, prep.input_size, prep)
    if randaug:
        from lnl.data.autoaugment import rand_augment

        x = rand_augment(x.round().to(torch.uint8), generator, num_ops=3, magnitude=5).float()
    return _normalize(x, prep)


def epoch_generator(device: torch.device, seed: int, epoch: int) -> torch.Generator:
    """The generator of epoch ``epoch``: order and augmentations depend on ``(seed, epoch)`` only,
    so a resumed run sees the batches an uninterrupted one saw."""
    from lnl.data.gpu import epoch_seed

    return torch.Generator(device=device).manual_seed(epoch_seed(seed, epoch))


def batches(n: int, batch_size: int, generator: torch.Generator) -> list[Tensor]:
    """A shuffled partition of ``range(n)`` into batches (last one short; ``drop_last=False``)."""
    return list(torch.randperm(n, device=generator.device, generator=generator).split(batch_size))


def cosine_lr(step: int, base_lr: float, warmup: int, total: int) -> float:
    """The original's per-step schedule: linear warmup, then ``0.5·(1+cos(π·e/E))·lr``."""
    if step < warmup:
        return base_lr * (step + 1) / warmup
    e, es = step - warmup, max(total - warmup, 1)
    return 0.5 * (1 + math.cos(math.pi * e / es)) * base_lr


def set_lr(optimizer: torch.optim.Optimizer, lr: float) -> None:
    for group in optimizer.param_groups:
        group["lr"] = lr


# --------------------------------------------------------------------------------------------
# Datasets
# --------------------------------------------------------------------------------------------


@dataclass
class Split:
    """A downstream split in memory: ``images`` uint8 ``[N, H, W, 3]`` and ``labels`` ``[N]``."""

    name: str
    split: str
    images: Tensor
    labels: Tensor
    num_classes: int
    source: str  # identifies the data for the feature cache


# name -> (torchvision class, constructor kwargs per split) for B7's torchvision datasets.
TORCHVISION = {
    "flowers102": ("Flowers102", {"train": {"split": "train"}, "test": {"split": "test"}}),
    "food101": ("Food101", {"train": {"split": "train"}, "test": {"split": "test"}}),
    "oxfordiiitpet": ("OxfordIIITPet", {"train": {"split": "trainval"}, "test": {"split": "test"}}),
    "stanfordcars": ("StanfordCars", {"train": {"split": "train"}, "test": {"split": "test"}}),
    "fgvcaircraft": ("FGVCAircraft", {"train": {"split": "trainval"}, "test": {"split": "test"}}),
    "dtd": ("DTD", {"train": {"split": "train"}, "test": {"split": "test"}}),
    "country211": ("Country211", {"train": {"split": "train"}, "test": {"split": "test"}}),
    "stl10": ("STL10", {"train": {"split": "train"}, "test": {"split": "test"}}),
    "renderedsst2": ("RenderedSST2", {"train": {"split": "train"}, "test": {"split": "test"}}),
}


def _key(name: str) -> str:
    return re.sub(r"[-_ ]", "", name.lower())


def _lnl_split(name: str, location: Path, split: str) -> Split:
    from lnl.data import dataset_info, get_dataset

    info = dataset_info(name)
    root = None
    if info.folder is not None:  # --data-location may be the dataset folder or its parent
        root = location / info.folder if (location / info.folder).is_dir() else location
    ds = get_dataset(name, root, split)
    return Split(name, split, ds.images, ds.targets, ds.num_classes, f"lnl:{name}:{root}")


def _rgb(image):
    return image.convert("RGB")  # some torchvision datasets mix grey-level and RGB files


def _torchvision_split(key: str, location: Path, split: str, store_size: int) -> Split:
    import torchvision
    import torchvision.transforms as T

    from lnl.data import DatasetNotFoundError

    cls_name, kwargs = TORCHVISION[key]
    cls = getattr(torchvision.datasets, cls_name)
    try:
        ds = cls(root=str(location), download=False, **kwargs[split])
    except (RuntimeError, FileNotFoundError) as exc:
        raise DatasetNotFoundError(
            f"dataset {cls_name} not found under --data-location {location.resolve()}: put "
            f"torchvision's {cls_name} files there (the layout torchvision.datasets.{cls_name}"
            f"(root, download=True) creates; nothing is downloaded here). ({exc})") from exc
    ds.transform = T.Compose([_rgb, T.Resize(store_size), T.CenterCrop(store_size), T.PILToTensor()])
    loader = torch.utils.data.DataLoader(ds, batch_size=256, num_workers=min(4, os.cpu_count() or 1))
    images, labels = [], []
    for x, y in progress(loader, desc=f"decoding {cls_name}/{split}", total=len(loader)):
        images.append(x.permute(0, 2, 3, 1).contiguous())
        labels.append(torch.as_tensor(y))
    labels = torch.cat(labels)
    classes = len(getattr(ds, "classes", [])) or int(labels.max()) + 1
    return Split(key, split, torch.cat(images), labels, classes, f"tv:{cls_name}:{location}:{store_size}")


def load_split(name: str, data_location: str, split: str, store_size: int = 256) -> Split:
    """``--train-dataset`` / ``--eval-datasets`` entries: lnl registry names (``CIFAR10`` →
    ``cifar10``, ``digits`` ...) or torchvision's (B7), case- and dash-insensitive.

    torchvision images are decoded once, resized and centre-cropped to ``store_size²``, into memory.

    Raises:
        ValueError: unknown dataset (the message lists the known names).
        DatasetNotFoundError: the files are missing (the message says where and what to put there).
    """
    from lnl.data import list_datasets

    location = Path(data_location).expanduser()
    lnl_names = {_key(n): n for n in list_datasets()}
    key = _key(name)
    if key in lnl_names:
        return _lnl_split(lnl_names[key], location, split)
    if key in TORCHVISION:
        return _torchvision_split(key, location, split, store_size)
    known = sorted(set(lnl_names.values()) | {v[0] for v in TORCHVISION.values()})
    raise ValueError(f"unknown dataset {name!r}; known datasets: {', '.join(known)}")


def few_shot_indices(labels: Tensor, fraction: float | None, seed: int) -> Tensor:
    """``--num-shots``: keep ``int(n_c · fraction)`` random samples of each class (a fraction, B3)."""
    n = labels.shape[0]
    if fraction is None:
        return torch.arange(n)
    if not 0 < fraction <= 1:
        raise ValueError(f"--num-shots is a fraction of each class in (0, 1], got {fraction}")
    g = torch.Generator().manual_seed(seed)
    perm = torch.randperm(n, generator=g)
    keep = [perm[labels[perm] == c][: int((labels == c).sum() * fraction)] for c in labels.unique()]
    return torch.cat(keep).sort().values


def downstream_noise(labels: Tensor, ratio: float | None, num_classes: int, seed: int) -> Tensor:
    """``--noise-ratio``: the first ``⌈ratio·N⌉`` of a random permutation get ``randint(C)`` (the
    true class is possible, B3)."""
    if not ratio:
        return labels
    g = torch.Generator().manual_seed(seed)
    n = labels.shape[0]
    chosen = torch.randperm(n, generator=g)[: math.ceil(ratio * n)]
    noisy = labels.clone()
    noisy[chosen] = torch.randint(num_classes, (len(chosen),), generator=g)
    return noisy


@dataclass
class Downstream:
    """The training split (all of it: features are cached per full split), the rows ``keep`` that
    ``--num-shots`` keeps, their (``--noise-ratio``-noised) ``labels`` on the device, and the
    evaluation splits by ``--eval-datasets`` name."""

    train: Split
    keep: Tensor
    labels: Tensor
    evals: dict[str, Split]


def load_downstream(args: argparse.Namespace, log) -> Downstream:
    """Load ``--train-dataset`` (train split) and every ``--eval-datasets`` entry (test split)."""
    train = load_split(args.train_dataset, args.data_location, "train", args.store_size)
    keep = few_shot_indices(train.labels, args.num_shots, args.seed)
    labels = downstream_noise(train.labels[keep], args.noise_ratio, train.num_classes, args.seed)
    evals = {name: load_split(name, args.data_location, "test", args.store_size)
             for name in args.eval_datasets}
    log.info("%s: %d of %d train images, %d classes; eval %s", train.name, len(keep), len(train.labels),
             train.num_classes, {k: len(v.labels) for k, v in evals.items()})
    return Downstream(train, keep.to(args.device), labels.to(args.device), evals)


def top1(logits: Tensor, labels: Tensor) -> float:
    return float((logits.argmax(1) == labels).float().mean())


# --------------------------------------------------------------------------------------------
# Feature extraction and cache
# --------------------------------------------------------------------------------------------


@torch.no_grad()
def encode_split(encoder: ImageEncoder, images: Tensor, device: torch.device, batch_size: int,
                 amp: bool = False, desc: str = "encoding") -> Tensor:
    """Features of every image under the val pipeline: ``Tensor[N, D]`` float32 on ``device``."""
    encoder.eval()
    chunks = []
    starts = range(0, images.shape[0], batch_size)
    for i in progress(starts, desc=desc, total=len(starts)):
        x = images[i : i + batch_size].to(device).permute(0, 3, 1, 2)
        with autocast(device, amp):
            chunks.append(encoder(val_view(x, encoder.preprocess)).float())
    return torch.cat(chunks)


def encoder_id(args: argparse.Namespace, encoder: ImageEncoder) -> str:
    """What determines the frozen features: model, weights file (path, size, mtime), pipeline."""
    weights = str(args.pretrained)
    path = Path(weights).expanduser()
    if path.is_file():
        st = path.stat()
        weights = f"{path.resolve()}|{st.st_size}|{st.st_mtime_ns}"
    return f"{args.model_source}|{args.model}|{weights}|{encoder.preprocess}"


def cached_features(args: argparse.Namespace, encoder: ImageEncoder, split: Split,
                    rows: Tensor | None = None) -> Tensor:
    """Val-pipeline features of ``split`` (of its ``rows`` only, when given).

    With ``--cache-dir`` the whole split is encoded once and kept on disk (reusable by any
    ``--num-shots``), then indexed; without it only ``rows`` are encoded.
    """
    def encode(images: Tensor) -> Tensor:
        return encode_split(encoder, images, args.device, max(args.batch_size, 256), args.amp,
                            desc=f"encoding {split.name}/{split.split}")

    if not args.cache_dir:
        return encode(split.images if rows is None else split.images[rows.cpu()])
    key = hashlib.sha1(f"{encoder_id(args, encoder)}|{split.source}|{split.split}".encode()).hexdigest()
    path = Path(args.cache_dir).expanduser() / f"{split.name}_{split.split}_{key[:16]}.pt"
    if path.is_file():
        feats = torch.load(path, map_location=args.device, weights_only=True)["features"]
    else:
        feats = encode(split.images)
        atomic_save({"features": feats.cpu(), "labels": split.labels, "encoder": encoder_id(args, encoder)},
                    path)
    return feats if rows is None else feats[rows.to(feats.device)]


# --------------------------------------------------------------------------------------------
# Flags, output paths, results.jsonl
# --------------------------------------------------------------------------------------------


def optional_float(value: str) -> float | None:
    """A float, or ``None``/``none`` (the README passes ``--num-shots=None``, B12)."""
    return None if value.lower() == "none" else float(value)


def get_args_parser(description: str, **defaults) -> argparse.ArgumentParser:
    """The flags of both entry points (``src/args.py``'s names); ``defaults`` are the README values."""
    p = argparse.ArgumentParser(description, parents=[default_argument_parser()])
    a = p.add_argument
    a("--seed", type=int, default=3907)
    a("--train-dataset", "--dataset", dest="train_dataset", default="CIFAR10",
      help="lnl name (CIFAR10, CIFAR100, digits, ...) or torchvision's (--dataset: lnl's name)")
    a("--eval-datasets", default=None, type=lambda s: s.split(","), help="comma list (default: train dataset)")
    a("--model", default=None, help="timm name, or open_clip '<arch>[_<tag>]' (split at the first '_')")
    a("--model_source", default="timm", help="timm or open_clip")
    a("--pretrained", default=None, help="local checkpoint of the encoder; 'none': random init (tests)")
    a("--epochs", "--num_epochs", dest="epochs", type=int, default=30, help="(--num_epochs: lnl's name)")
    a("--lr", type=float, default=defaults.get("lr", 1e-3))
    a("--wd", type=float, default=1e-4, help="AdamW weight decay")
    a("--batch-size", type=int, default=64)
    a("--warmup_length", type=int, default=0, help="linear warmup steps")
    a("--save", default=None, help="folder for checkpoints (default: --out)")
    a("--results-db", "--results", dest="results_db", default=None,
      help="legacy results file, one line per epoch (default: <save>/results.jsonl)")
    a("--data-location", "--data_path", dest="data_location", default=os.environ.get("LNL_DATA", "~/data"),
      help="datasets root, or the dataset's own folder (--data_path: lnl's name)")
    a("--store-size", type=int, default=256, help="torchvision datasets: decoded side length in memory")
    a("--cache-dir", default=None, help="cache frozen-encoder features of the deterministic splits here")
    a("--freeze-encoder", action="store_true")
    a("--template", default=defaults.get("template"), help="zero-shot head template (recorded only)")
    a("--load-zero-shot-classifier", type=str2bool, default=False)
    a("--num-shots", type=optional_float, default=None, help="fraction of each class kept")
    a("--noise-ratio", type=float, default=None, help="downstream symmetric label noise")
    a("--pretrain-if-missing", default=None, metavar="DATASET:RATE[:EPOCHS]",
      help="pre-train --model (timm) on DATASET with RATE symmetric noise into --pretrained (default: "
           "$LNL_CACHE/nmtune/<model>_<dataset>_sym<rate>_e<epochs>.pth) unless that file exists")
    return p


def add_nmtune_flags(p: argparse.ArgumentParser) -> None:
    """NMTune's own flags, README values as defaults (B3)."""
    a = p.add_argument
    a("--use-weak-strong", type=str2bool, default=False, help="RandAugment(3, 5) on the second view")
    a("--mlp-with-res", type=str2bool, default=True)
    a("--mlp-res-scale-init", type=float, default=1.0)
    a("--mlp-after-ratio", type=int, default=4)
    a("--mlp-after-layers", type=int, default=1)
    a("--mse-loss-weight", type=float, default=1.0)
    a("--cov-loss-weight", type=float, default=0.04)
    a("--svd-loss-weight", type=float, default=0.001)


def resolve_paths(args: argparse.Namespace, method: str) -> None:
    """Map lnl's ``--out`` and the original's ``--save``/``--results``: ``--out`` (else ``--save``,
    else ``runs/<method>/<dataset>-<model>-s<seed>``) is the run folder; ``--save`` defaults to it and
    ``--results`` to ``<save>/results.jsonl`` (the original crashed without it, B12)."""
    default = f"runs/{method}/{_key(args.train_dataset)}-{args.model}-s{args.seed}"
    args.out = args.out or args.save or default
    args.save = args.save or args.out
    args.results_db = args.results_db or str(Path(args.save) / "results.jsonl")
    args.eval_datasets = args.eval_datasets or [args.train_dataset]
    if args.load_zero_shot_classifier and args.model_source == "open_clip":
        raise ValueError("--load-zero-shot-classifier True is not ported (the README runs pass False)")


def ensure_pretrained(args: argparse.Namespace, log) -> None:
    """``--pretrain-if-missing DATASET:RATE[:EPOCHS]``: pre-train the timm ``--model`` on DATASET
    with RATE symmetric noise (``data_prep/pretrain_noisy.py``) into ``--pretrained`` unless that
    file exists; the demo's encoder. The global RNG is left as it was, so the run that pre-trains
    and a later run that reuses the file initialise their heads identically."""
    if not args.pretrain_if_missing:
        return
    if args.model_source != "timm":
        raise ValueError("--pretrain-if-missing pre-trains timm models only (--model_source timm)")
    from data_prep.pretrain_noisy import DEFAULT_EPOCHS, pretrain
    from lnl.data._base import cache_dir

    dataset, rate, *rest = args.pretrain_if_missing.split(":")
    epochs = int(rest[0]) if rest else DEFAULT_EPOCHS
    if args.pretrained is None:
        name = f"{args.model}_{dataset}_sym{float(rate):g}_e{epochs}.pth"
        args.pretrained = str(cache_dir() / "nmtune" / name)
    if Path(args.pretrained).expanduser().is_file():
        return
    log.info("pre-training %s on %s with %s noise into %s", args.model, dataset, rate, args.pretrained)
    cuda = [args.device.index or 0] if args.device.type == "cuda" else []
    with torch.random.fork_rng(devices=cuda):
        pretrain(dataset=dataset, rate=float(rate), model=args.model, out=Path(args.pretrained).expanduser(),
                 epochs=epochs, device=str(args.device))


def noise_label(args: argparse.Namespace, encoder: ImageEncoder) -> str:
    """The results table's noise column: the encoder's pre-training noise (+ downstream noise)."""
    pre = encoder.meta
    label = f"pre-{pre['noise']}{pre['rate']:g}" if pre else "pre-unknown"
    return label + (f"+sym{args.noise_ratio:g}" if args.noise_ratio else "")


def legacy_results_line(args: argparse.Namespace, epoch: int, top1: dict[str, float]) -> dict:
    """One ``results.jsonl`` line as the original writes it (B8): every CLI argument (``vars(args)``),
    ``device``, ``current_epoch`` and ``"<EvalDataset>:top1"`` (a fraction)."""
    plain = {k: (v if isinstance(v, (int, float, str, bool, list, type(None))) else str(v))
             for k, v in vars(args).items()}
    return {**plain, "current_epoch": epoch, **{f"{name}:top1": acc for name, acc in top1.items()}}


def drop_results_after(path: str, save: str, first_epoch: int) -> None:
    """On resume, forget this run's lines for epochs that will be run again (no duplicates)."""
    rows = read_jsonl(path)
    keep = [r for r in rows if r.get("save") != save or r.get("current_epoch", -1) < first_epoch]
    if len(keep) != len(rows):
        Path(path).write_text("".join(json.dumps(r) + "\n" for r in keep))


# --------------------------------------------------------------------------------------------
# The epoch driver shared by both entry points
# --------------------------------------------------------------------------------------------


@dataclass
class Job:
    """What the driver needs from an entry point."""

    method: str
    modules: dict[str, nn.Module]
    optimizer: torch.optim.Optimizer
    train_epoch: Callable[[int], dict[str, float]]
    evaluate: Callable[[], dict[str, float]]  # eval dataset name -> top-1 (fraction)
    noise: str
    setup_seconds: float


def run_job(args: argparse.Namespace, log, job: Job) -> dict:
    """Train ``args.epochs`` epochs with evaluation, logging, results lines and a checkpoint after
    each; resume from ``<out>/last.pth`` (``--resume auto``). Returns the results record."""
    state = {"first_epoch": 0, "seconds": 0.0, "best_acc": 0.0, "last_acc": None}
    resume = find_resume_path(args.out, args.resume)
    if resume is not None:
        ckpt = load_checkpoint(resume, models=job.modules, optimizers={"opt": job.optimizer})
        state = {**ckpt["method_state"], "first_epoch": ckpt["epoch"] + 1}
        drop_results_after(args.results_db, args.save, state["first_epoch"])
        log.info("resumed from %s at epoch %d", resume, state["first_epoch"])
    clock = Stopwatch(state["seconds"])
    logger = MetricLogger(args.out, tensorboard=args.tensorboard, wandb=args.wandb, wandb_offline=args.offline,
                          name=Path(args.out).name, config=vars(args), resume_step=state["first_epoch"])
    first = args.eval_datasets[0]

    def step(epoch: int) -> dict:
        metrics = job.train_epoch(epoch)
        top1 = job.evaluate()
        return {**metrics, **{f"{k}:top1": v for k, v in top1.items()}, "test_acc": top1[first]}

    def record(epoch: int, metrics: dict) -> None:
        state["best_acc"] = max(state["best_acc"], metrics["test_acc"])
        state["last_acc"] = metrics["test_acc"]
        logger.log(epoch, {**metrics, "seconds": clock.elapsed + job.setup_seconds}, stream="eval")
        top1 = {k[: -len(":top1")]: v for k, v in metrics.items() if k.endswith(":top1")}
        Path(args.results_db).parent.mkdir(parents=True, exist_ok=True)
        with open(args.results_db, "a") as f:
            f.write(json.dumps(legacy_results_line(args, epoch, top1)) + "\n")

    def checkpoint(epoch: int, metrics: dict) -> None:
        state["seconds"] = clock.elapsed
        save_checkpoint(args.out, epoch=epoch, models=job.modules, optimizers={"opt": job.optimizer},
                        method_state=state, args=vars(args))

    run_epochs(state["first_epoch"], args.epochs, step, after_epoch=[record, checkpoint])
    logger.close()
    result = {"method": job.method, "dataset": _key(args.train_dataset), "noise": job.noise,
              "model": args.model, "seed": args.seed, "epochs": args.epochs, "test_acc": state["last_acc"],
              "best_acc": state["best_acc"], "seconds": round(clock.elapsed + job.setup_seconds, 2),
              "run_dir": args.out}
    # lnl's record, as every entry point writes it (launchers/collect.py reads it); with the README's
    # `--results <save>/results.jsonl` it follows the original's per-epoch lines in the same file.
    append_jsonl(Path(args.out) / "results.jsonl", result)
    log.info("result %s", result)
    return result
