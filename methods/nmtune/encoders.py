"""NMTune's modules and frozen encoders (original ``src/models/``): the residual MLP
``Z = F + s ⊙ MLP(F)``, the linear and zero-shot heads, and timm / open_clip encoders built without
weights and loaded from ``--pretrained PATH`` (nothing downloads here; the paper's noisy checkpoints
are not public).

Upstream: ``Hhhhhhao/Noisy-Model-Learning @ f249dce`` (``src/models/modeling.py``,
``src/models/zeroshot.py``); an independent re-implementation.
"""

from __future__ import annotations

import os
import pickle
import re
from dataclasses import dataclass
from pathlib import Path

import torch
import torch.nn as nn
import torch.nn.functional as F
from torch import Tensor


class ResidualMLP(nn.Module):
    """``h``: ``[Linear → BatchNorm1d → ReLU] × layers → Linear`` with hidden width ``ratio·D``;
    ``Z = s ⊙ h(F) + F`` with a learnable per-dimension ``s`` (init ``res_scale_init``) when
    ``residual``, else ``Z = h(F)`` (parameter names follow the original's)."""

    def __init__(
        self,
        dim: int,
        ratio: float = 4,
        layers: int = 1,
        residual: bool = True,
        res_scale_init: float = 1.0,
    ):
        super().__init__()
        dims = [dim] + [int(dim * ratio)] * layers + [dim]
        blocks: list[nn.Module] = []
        for d_in, d_out in zip(dims[:-2], dims[1:-1]):
            blocks += [nn.Linear(d_in, d_out), nn.BatchNorm1d(d_out), nn.ReLU()]
        blocks.append(nn.Linear(dims[-2], dims[-1]))
        self.mlp_after = nn.Sequential(*blocks)
        self.scale_after = (
            nn.Parameter(torch.full((1, dim), float(res_scale_init))) if residual else None
        )

    def forward(self, feats: Tensor) -> Tensor:
        """``Tensor[N, D] -> Tensor[N, D]``."""
        h = self.mlp_after(feats)
        return h if self.scale_after is None else self.scale_after * h + feats


class ClassificationHead(nn.Linear):
    """The original's head: a ``Linear`` that L2-normalises its input rows first when ``normalize``
    (the zero-shot head, whose weights are unit text embeddings scaled by CLIP's logit scale)."""

    def __init__(self, dim: int, num_classes: int, normalize: bool = False):
        super().__init__(dim, num_classes)
        self.normalize = normalize

    def forward(self, feats: Tensor) -> Tensor:
        return super().forward(F.normalize(feats, dim=-1) if self.normalize else feats)


def make_head(dim: int, num_classes: int) -> ClassificationHead:
    """``ClassificationHead(normalize=False)``: weight ``kaiming_uniform_`` (a=0) of ``[C, D]``, bias 0."""
    head = ClassificationHead(dim, num_classes)
    with torch.no_grad():
        nn.init.kaiming_uniform_(head.weight)
        head.bias.zero_()
    return head


def zero_shot_templates(name: str) -> list:
    """``--template``: prompt builders ``class name -> text``. ``simple_template`` is wise-ft's single
    prompt; ``openai_imagenet_template`` CLIP's 80 ImageNet prompts (as open_clip ships them)."""
    import open_clip

    known = {
        "simple_template": [lambda c: f"a photo of a {c}."],
        "openai_imagenet_template": list(open_clip.OPENAI_IMAGENET_TEMPLATES),
    }
    if name not in known:
        raise ValueError(f"--template {name!r}: expected one of {', '.join(known)}")
    return known[name]


@torch.no_grad()
def zero_shot_head(
    model: nn.Module, tokenizer, class_names: list[str], templates: list
) -> ClassificationHead:
    """``--load-zero-shot-classifier True`` : row c is the mean of the unit text embeddings of
    every template filled with class c's name, renormalised and multiplied by ``exp(logit_scale)``;
    the head normalises image features, so its logits are CLIP's scaled cosine similarities.

    Args:
        model: an open_clip ``CLIP`` (its ``encode_text`` and ``logit_scale``), in eval mode.
        tokenizer: ``open_clip.get_tokenizer(arch)``.
        class_names: names by label.
        templates: from ``zero_shot_templates``.
    """
    device = model.logit_scale.device
    rows = []
    for name in class_names:
        text = tokenizer([t(name) for t in templates]).to(
            device
        )  # names as the dataset spells them
        emb = F.normalize(model.encode_text(text).float(), dim=-1)
        rows.append(F.normalize(emb.mean(0), dim=0))
    weight = torch.stack(rows) * model.logit_scale.exp().float()
    head = ClassificationHead(weight.shape[1], weight.shape[0], normalize=True).to(device)
    head.weight.copy_(weight)
    head.bias.zero_()
    return head


@dataclass(frozen=True)
class Preprocess:
    """An encoder's input pipeline (timm ``pretrained_cfg`` or open_clip's)."""

    input_size: int
    crop_pct: float
    mean: tuple[float, ...]
    std: tuple[float, ...]
    interpolation: str  # "bilinear" or "bicubic"
    scale: tuple[float, float]  # RandomResizedCrop area range of the train view
    hflip: bool = True  # timm's train pipeline flips; open_clip's does not (its transform.py)
    # --fast-preprocess: one float grid_sample per batch instead of PIL per image
    fast: bool = False


class ImageEncoder(nn.Module):
    """Images ``Tensor[B, 3, S, S]`` (normalised) → features ``Tensor[B, D]``.

    timm: ``forward_head(forward_features(x), pre_logits=True)`` (the original's ``TimmWrapper``);
    open_clip: the visual tower (``encode_image`` without normalisation).
    """

    def __init__(
        self, net: nn.Module, kind: str, num_features: int, preprocess: Preprocess, meta: dict
    ):
        super().__init__()
        self.net, self.kind, self.num_features, self.preprocess = (
            net,
            kind,
            num_features,
            preprocess,
        )
        self.meta = meta  # the checkpoint's lnl_pretrain record (noise of the pre-training), if any

    def forward(self, x: Tensor) -> Tensor:
        if self.kind == "timm":
            return self.net.forward_head(self.net.forward_features(x), pre_logits=True)
        return self.net(x)


# The original's unpublished noisy ResNet-50 cfgs and where its timm fork expected them.
ORIGINAL_TIMM_CHECKPOINTS = {
    "resnet50_orig": "pretrained_models/r50_in1k_clean/model.pth.tar",
    **{
        f"resnet50_noise_{r}": f"pretrained_models/r50_in1k_random_noise_{r}/model.pth.tar"
        for r in (5, 10, 20, 30)
    },
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
    extra = {
        k: raw[k] for k in ("pretrained_cfg", "lnl_pretrain") if isinstance(raw, dict) and k in raw
    }
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
        raise ValueError(
            f"--pretrained {path} does not match {what}: {len(missing)} missing keys "
            f"{missing[:5]}, {len(unexpected)} unexpected keys {unexpected[:5]}"
        )


def _no_weights(name: str, tag: str | None) -> ValueError:
    why = f"pretrained tag {tag!r} cannot be downloaded here" if tag else "no weights were given"
    return ValueError(
        f"--model {name}: {why}; pass --pretrained PATH (a local checkpoint), or "
        "--pretrained none for a randomly initialised encoder (tests only)"
    )


def _timm_encoder(name: str, pretrained: str | None) -> ImageEncoder:
    import timm

    arch, match = name, _ORIGINAL_TAG.match(name)
    if not timm.is_model(name) and match and timm.is_model(match["arch"]):
        arch = match["arch"]
        if pretrained is None and name in ORIGINAL_TIMM_CHECKPOINTS:
            pretrained = ORIGINAL_TIMM_CHECKPOINTS[name]
            if not Path(pretrained).is_file():
                raise FileNotFoundError(
                    f"--model {name} is one of the original's unpublished noisy "
                    f"checkpoints, expected at {Path(pretrained).resolve()}; "
                    "put it there or pass --pretrained PATH"
                )
    if not timm.is_model(arch):
        raise ValueError(
            f"--model {name!r} is not a timm model (--model_source timm); "
            f"e.g. {', '.join(timm.list_models('resnet5*')[:4])}"
        )
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
    prep = Preprocess(
        int(cfg["input_size"][-1]),
        float(cfg.get("crop_pct", 0.875)),
        tuple(cfg["mean"]),
        tuple(cfg["std"]),
        cfg.get("interpolation", "bicubic"),
        (0.8, 1.0),
    )
    return ImageEncoder(net, "timm", net.num_features, prep, meta)


def _open_clip_model(name: str, pretrained: str | None) -> tuple[nn.Module, str, dict]:
    """The whole open_clip model of ``--model <arch>[_<tag>]`` with ``--pretrained`` weights, its
    architecture name and the checkpoint's ``lnl_pretrain`` record."""
    import open_clip

    arch, _, tag = name.partition("_")  # the original splits "<arch>_<tag>" at the first "_"
    if arch not in open_clip.list_models():
        raise ValueError(
            f"--model {name!r}: {arch!r} is not an open_clip model (--model_source "
            f"open_clip); e.g. RN50, ViT-B-16, ViT-B-32"
        )
    if pretrained is None:
        raise _no_weights(name, tag or None)
    model = open_clip.create_model(arch, pretrained=None)
    meta = {}
    if pretrained.lower() != "none":
        state, extra = read_checkpoint(pretrained)
        load_weights(model, state, pretrained, f"open_clip model {arch}")
        meta = extra.get("lnl_pretrain", {})
    return model, arch, meta


def _open_clip_encoder(name: str, pretrained: str | None) -> ImageEncoder:
    import open_clip

    model, _, meta = _open_clip_model(name, pretrained)
    visual = model.visual
    size = visual.image_size
    size = int(size if isinstance(size, int) else size[-1])
    prep = Preprocess(
        size,
        1.0,
        tuple(open_clip.OPENAI_DATASET_MEAN),
        tuple(open_clip.OPENAI_DATASET_STD),
        "bicubic",
        (0.9, 1.0),
        hflip=False,
    )
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
        raise ValueError(
            f"--model_source {source!r}: expected one of {', '.join(builders)} "
            "(OpenAI 'clip' is not ported: use open_clip with the same weights)"
        )
    return builders[source](name, pretrained)


def build_zero_shot_head(args, class_names: list[str] | None, device) -> ClassificationHead:
    """The zero-shot head of ``--model_source open_clip --load-zero-shot-classifier True``: the text
    tower is built with the ``--pretrained`` weights, used once and dropped.

    Raises:
        ValueError: not an open_clip model, or the training dataset has no class names.
    """
    import open_clip

    if args.model_source != "open_clip":
        raise ValueError(
            "--load-zero-shot-classifier True needs a CLIP text tower (--model_source open_clip); "
            "the original gives timm models a fresh head"
        )
    if not class_names:
        raise ValueError(
            f"--load-zero-shot-classifier True: dataset {args.train_dataset} has no class names"
        )
    model, arch, _ = _open_clip_model(args.model, args.pretrained)
    model = model.to(device).eval()
    return zero_shot_head(
        model, open_clip.get_tokenizer(arch), class_names, zero_shot_templates(args.template)
    )
