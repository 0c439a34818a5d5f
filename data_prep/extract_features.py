"""Encode a dataset split with a frozen encoder into float16 features for LRA-Diffusion / DMLP.

Writes ``<out>_features.npy`` (float16 ``[N, D]``) and ``<out>_labels.npy`` (int64 ``[N]``, the
dataset's ``targets``; also ``<out>_noisy_labels.npy`` when the dataset has its own noisy labels),
in dataset order, and prints their sha256.

Encoders (``--encoder``):

* ``resnet50``: torchvision ResNet-50 with the classifier removed (2048-d). ``--weights`` is a local
  state-dict file, ``IMAGENET1K_V1``/``IMAGENET1K_V2`` (downloaded by torchvision) or ``none``
  (random init, for tests). Images are resized to ``--image-size`` (224) with ImageNet
  normalisation.
* ``open_clip``: ``--model`` (e.g. ``ViT-L-14``, LRA's f_p encoder) with ``--pretrained`` (a tag
  such as ``openai``, a local checkpoint path, or ``none``), through ``encode_image``. Features are
  L2-normalised unless ``--no-normalize``. OpenAI's weights were trained with QuickGELU, which
  open_clip's ``ViT-L-14`` config leaves off (it only warns): ``--quick-gelu auto`` (default) turns it
  on for ``--pretrained openai``, as OpenAI's ``clip`` package that LRA uses does.
  ``--preprocess open_clip`` (default): the model's PIL pipeline. ``--preprocess lra``: LRA's
  ``utils/clip_wrapper.py`` on the dataset's tensor: ToTensor, the dataset's normalisation and its
  inverse, then a float bicubic resize (no uint8 rounding, no antialias) and centre crop to the
  model's size, then CLIP's normalisation.
* ``simclr``: a ResNet (``--arch``) backbone from a SimCLR checkpoint (``--weights``). Wrapper keys
  (``state_dict``, ``model``) and prefixes (``module.``, ``encoder.``, ``backbone.``, ``f.``) are
  stripped and projection-head keys dropped; LRA's ``SimCLR_encoder`` layout (``f.0`` conv1,
  ``f.1`` bn1, ``f.3``-``f.6`` layer1-4, ``g.*`` head) is read too; ``--cifar-stem`` selects the 3x3
  stride-1 stem without max-pool used by CIFAR SimCLR models. Images keep their size, with the
  dataset's normalisation.

LRA's CIFAR transforms normalise CIFAR-100 with CIFAR-10's mean/std (``train_CIFAR.py``,
``utils/data_utils.py``): ``simclr`` and ``--preprocess lra`` do the same unless ``--dataset-norm``.
``--augment`` encodes each image once through LRA's training transform (CIFAR: RandomCrop(32,
padding 4) and a flip; others: Resize 256, RandomCrop 224, flip), seeded by ``--seed``: LRA's
``prepare_fp_x`` builds its CIFAR/Food feature table from the training dataset, so each row is one
random augmentation. (Food-101N's original resizes with its own rounding, ``int(w·s + 0.5)``; torchvision's
``Resize(256)`` truncates, so a side can be one pixel shorter before the crop.)
* ``cc``: LRA-Diffusion's Clothing1M prior (``model/CC_net.pt``, its ``CC_model``): a ResNet-50's
  pooled 2048-d feature through the checkpoint's ``dr`` Linear(2048 -> 128), raw (not normalised).
  The backbone (``model_resnet.*``) and ``dr.*`` load strictly; the classification heads are unused.
  Images: Resize 256, CenterCrop ``--image-size`` (224), the dataset's normalisation, as LRA's
  Clothing1M evaluation transform.

Weights are never available offline; the tests use random initialisation.

Example:
    python data_prep/extract_features.py --dataset cifar10 --root data/cifar10 --split
    train \
        --encoder open_clip --model ViT-L-14 --pretrained openai --out features/cifar10_train_clip
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
import torch
from _common import report
from tqdm import tqdm

IMAGENET_MEAN, IMAGENET_STD = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)
_PREFIXES = ("module.", "encoder.", "backbone.", "f.", "model.")
_HEAD_KEYS = ("fc.", "head.", "projector.", "projection_head.", "g.")
# LRA's SimCLR_encoder: f = Sequential(conv1, bn1, relu, layer1..4, avgpool) (utils/model_SimCLR.py)
_SIMCLR_F_INDEX = {
    "0": "conv1",
    "1": "bn1",
    "3": "layer1",
    "4": "layer2",
    "5": "layer3",
    "6": "layer4",
}
CLIP_MEAN, CLIP_STD = (0.48145466, 0.4578275, 0.40821073), (0.26862954, 0.26130258, 0.27577711)
CIFAR10_MEAN, CIFAR10_STD = (0.4914, 0.4822, 0.4465), (0.2023, 0.1994, 0.2010)


def get_args_parser() -> argparse.ArgumentParser:
    """The script's flags."""
    p = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    p.add_argument("--dataset", required=True)
    p.add_argument("--root", type=Path, default=None)
    p.add_argument("--split", default="train")
    p.add_argument("--encoder", choices=("resnet50", "open_clip", "simclr", "cc"), required=True)
    p.add_argument("--weights", default="none", help="state dict path, torchvision tag or 'none'")
    p.add_argument("--model", default="ViT-L-14", help="open_clip model name")
    p.add_argument(
        "--pretrained", default="openai", help="open_clip tag, checkpoint path or 'none'"
    )
    p.add_argument("--arch", choices=("resnet18", "resnet34", "resnet50"), default="resnet50")
    p.add_argument("--cifar-stem", action="store_true", help="SimCLR CIFAR stem (3x3, no max-pool)")
    p.add_argument("--image-size", type=int, default=224, help="resnet50 input size")
    p.add_argument("--no-normalize", action="store_true", help="keep raw open_clip features")
    p.add_argument(
        "--quick-gelu",
        choices=("auto", "on", "off"),
        default="auto",
        help="open_clip QuickGELU (auto: on for --pretrained openai)",
    )
    p.add_argument(
        "--preprocess",
        choices=("open_clip", "lra"),
        default="open_clip",
        help="open_clip: the model's PIL pipeline; lra: LRA's clip_wrapper on float tensors",
    )
    p.add_argument(
        "--augment", action="store_true", help="encode one random training augmentation per image"
    )
    p.add_argument("--seed", type=int, default=123, help="seeds --augment")
    p.add_argument(
        "--dataset-norm",
        action="store_true",
        help="CIFAR-100 with its own mean/std (LRA's transforms use CIFAR-10's)",
    )
    p.add_argument("--batch-size", type=int, default=128)
    p.add_argument("--num-workers", type=int, default=4)
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    p.add_argument("--limit", type=int, default=None, help="encode only the first N images")
    p.add_argument("--out", type=Path, required=True, help="output prefix")
    return p


def clean_state_dict(raw: dict) -> dict:
    """Unwrap a checkpoint and strip wrapper prefixes and projection-head keys."""
    for key in ("state_dict", "model", "net"):
        if isinstance(raw.get(key), dict):
            raw = raw[key]
    out = {}
    for k, v in raw.items():
        changed = True
        while changed:
            changed = False
            for prefix in _PREFIXES:
                if k.startswith(prefix):
                    k, changed = k[len(prefix) :], True
        index, _, rest = k.partition(".")
        if index in _SIMCLR_F_INDEX:
            k = f"{_SIMCLR_F_INDEX[index]}.{rest}"
        if not k.startswith(_HEAD_KEYS):
            out[k] = v
    return out


def build_resnet(arch: str, weights: str, cifar_stem: bool) -> torch.nn.Module:
    """A torchvision ResNet backbone (fc = identity) with the requested weights."""
    import torchvision

    tags = ("IMAGENET1K_V1", "IMAGENET1K_V2", "DEFAULT")
    net = getattr(torchvision.models, arch)(weights=weights if weights in tags else None)
    if cifar_stem:
        net.conv1 = torch.nn.Conv2d(3, 64, 3, 1, 1, bias=False)
        net.maxpool = torch.nn.Identity()
    net.fc = torch.nn.Identity()
    if weights not in tags and weights.lower() != "none":
        state = clean_state_dict(torch.load(weights, map_location="cpu", weights_only=True))
        result = net.load_state_dict(state, strict=False)
        if result.missing_keys:
            raise SystemExit(f"{weights}: missing backbone keys {result.missing_keys[:5]} ...")
        if result.unexpected_keys:
            print(
                f"ignored {len(result.unexpected_keys)} unexpected keys, "
                f"e.g. {result.unexpected_keys[:3]}"
            )
    return net


class CCEncoder(torch.nn.Module):
    """LRA-Diffusion's CC features: dr(ResNet-50 pooled feature), 128-d."""

    def __init__(self):
        import torchvision

        super().__init__()
        self.backbone = torchvision.models.resnet50(weights=None)
        self.backbone.fc = torch.nn.Identity()
        self.dr = torch.nn.Linear(2048, 128)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.dr(self.backbone(x))


def build_cc(weights: str) -> CCEncoder:
    """A :class:`CCEncoder` with ``CC_net.pt``'s backbone and ``dr`` (strict), or random for ``none``."""
    net = CCEncoder()
    if weights.lower() == "none":
        print("warning: cc without --weights gives a random encoder")
        return net
    raw = torch.load(weights, map_location="cpu", weights_only=True)
    raw = raw.get("state_dict", raw)
    raw = {k.removeprefix("module."): v for k, v in raw.items()}
    state = {
        "backbone." + k[len("model_resnet.") :]: v
        for k, v in raw.items()
        if k.startswith("model_resnet.")
    }
    state.update({k: v for k, v in raw.items() if k.startswith("dr.")})
    result = net.load_state_dict(state, strict=False)
    if result.missing_keys or result.unexpected_keys:
        raise SystemExit(
            f"{weights} is not a CC_net checkpoint (model_resnet.*, dr.*): missing "
            f"{result.missing_keys[:3]}, unexpected {result.unexpected_keys[:3]}"
        )
    return net


def uses_quick_gelu(args: argparse.Namespace) -> bool:
    """QuickGELU for OpenAI's weights (``--quick-gelu auto``), or as ``--quick-gelu`` says."""
    if args.quick_gelu != "auto":
        return args.quick_gelu == "on"
    return args.pretrained.lower() == "openai"


def create_clip(args: argparse.Namespace):
    """(open_clip model, its PIL preprocessing) for ``--model``/``--pretrained``/``--quick-gelu``."""
    import open_clip

    pretrained = None if args.pretrained.lower() == "none" else args.pretrained
    model, _, preprocess = open_clip.create_model_and_transforms(
        args.model, pretrained=pretrained, force_quick_gelu=uses_quick_gelu(args)
    )
    return model, preprocess


def normalisation(args: argparse.Namespace, ds) -> tuple[tuple, tuple]:
    """The dataset's mean/std, CIFAR-10's for CIFAR-100 as LRA's transforms (module docstring)."""
    if ds.name == "cifar100" and not args.dataset_norm:
        return CIFAR10_MEAN, CIFAR10_STD
    return ds.mean, ds.std


def augmentation(args: argparse.Namespace, ds) -> list:
    """LRA's training crop and flip (``--augment``), else nothing."""
    import torchvision.transforms as T

    if not args.augment:
        return []
    small = getattr(ds, "images", None) is not None and tuple(ds.images.shape[1:3]) == (32, 32)
    crop = [T.RandomCrop(32, padding=4)] if small else [T.Resize(256), T.RandomCrop(224)]
    return [*crop, T.RandomHorizontalFlip()]


def lra_clip_transform(args: argparse.Namespace, ds, size: int):
    """LRA's ``clip_img_wrap`` input: the dataset tensor, un-normalised, float bicubic resize, centre
    crop, CLIP normalisation (``utils/clip_wrapper.py: _transform``)."""
    import torchvision.transforms as T

    mean, std = normalisation(args, ds)
    inverse = T.Normalize([-m / s for m, s in zip(mean, std)], [1 / s for s in std])
    return T.Compose(
        [
            *augmentation(args, ds),
            T.ToTensor(),
            T.Normalize(mean, std),
            inverse,
            T.Resize(size, interpolation=T.InterpolationMode.BICUBIC, antialias=False),
            T.CenterCrop(size),
            T.Normalize(CLIP_MEAN, CLIP_STD),
        ]
    )


def build_encoder(args: argparse.Namespace, ds):
    """(module whose forward gives features, PIL transform for the dataset images)."""
    import torchvision.transforms as T

    if args.encoder == "open_clip":
        model, preprocess = create_clip(args)

        class ClipImage(torch.nn.Module):
            def __init__(self, m):
                super().__init__()
                self.m = m

            def forward(self, x):
                return self.m.encode_image(x, normalize=not args.no_normalize)

        if args.preprocess == "lra":
            size = model.visual.image_size
            preprocess = lra_clip_transform(
                args, ds, size[0] if isinstance(size, (tuple, list)) else size
            )
        elif args.augment:
            preprocess = T.Compose([*augmentation(args, ds), preprocess])
        return ClipImage(model), preprocess
    if args.encoder == "resnet50":
        tf = T.Compose(
            [
                *augmentation(args, ds),
                T.Resize((args.image_size, args.image_size)),
                T.ToTensor(),
                T.Normalize(IMAGENET_MEAN, IMAGENET_STD),
            ]
        )
        return build_resnet("resnet50", args.weights, False), tf
    if args.encoder == "cc":
        tf = T.Compose(
            [
                T.Resize(256),
                T.CenterCrop(args.image_size),
                T.ToTensor(),
                T.Normalize(ds.mean, ds.std),
            ]
        )
        return build_cc(args.weights), tf
    if args.weights.lower() == "none":
        print("warning: simclr without --weights gives a random encoder")
    tf = T.Compose([*augmentation(args, ds), T.ToTensor(), T.Normalize(*normalisation(args, ds))])
    return build_resnet(args.arch, args.weights, args.cifar_stem), tf


@torch.no_grad()
def encode(model: torch.nn.Module, ds, args: argparse.Namespace) -> np.ndarray:
    """Run the encoder over the dataset in order; return float16 ``[N, D]``."""
    subset = (
        ds if args.limit is None else torch.utils.data.Subset(ds, range(min(args.limit, len(ds))))
    )
    loader = torch.utils.data.DataLoader(
        subset, batch_size=args.batch_size, shuffle=False, num_workers=args.num_workers
    )
    model = model.to(args.device).eval()
    chunks = []
    for images, _ in tqdm(loader, desc=f"encoding {ds.name}/{ds.split}", unit="batch"):
        chunks.append(model(images.to(args.device)).float().cpu().numpy().astype(np.float16))
    return np.concatenate(chunks)


def main(args: argparse.Namespace) -> None:
    """Encode and write features and labels."""
    from lnl.data import get_dataset

    ds = get_dataset(args.dataset, args.root, args.split)
    torch.manual_seed(args.seed)  # --augment's crops and flips (workers derive their seeds from it)
    model, tf = build_encoder(args, ds)
    ds.transform = tf
    feats = encode(model, ds, args)
    n = len(feats)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    written = {"features": feats, "labels": ds.targets[:n].numpy()}
    if ds.noisy_targets is not None:
        written["noisy_labels"] = ds.noisy_targets[:n].numpy()
    paths = []
    for name, arr in written.items():
        path = args.out.with_name(f"{args.out.name}_{name}.npy")
        np.save(path, arr)
        paths.append(path)
    print(f"{n} images -> features {feats.shape} float16")
    report(paths)


if __name__ == "__main__":
    main(get_args_parser().parse_args())
