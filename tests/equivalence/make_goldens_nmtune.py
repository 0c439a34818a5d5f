"""Golden outputs of NMTune's original (Hhhhhhao/Noisy-Model-Learning @ f249dce): the residual MLP and
head forward (``ImageEncoderMLP`` + ``ClassificationHead``), two training steps of ``nml_tune`` (loss,
gradients, updated parameters) under five loss weightings (CE only, each regulariser alone at weight
1, the README's weights), one step sets N = 2B below and one above the feature width (the port's
Gram path and its direct path), and the timm preprocessing of a fixed image (PIL bicubic resize,
uint8, ``ToTensor``, ``Normalize``; the train crop for four seeds).

    python tests/equivalence/make_goldens_nmtune.py --original /path/to/Noisy-Model-Learning

The original's modules are imported unmodified (``src.models.modeling``, ``src.models.nml_tune``,
``src.models.utils``, ``src.args``). Stubbed in ``sys.modules`` (their real code pulls in OpenAI's
``clip``, the vendored timm/open_clip forks, wandb, sklearn and the datasets' downloads, none of
which these components use): ``clip``/``clip.clip`` (empty), ``timm``/``timm.models`` (a
``create_model`` returning :class:`TinyTimm`, a 2-layer timm-like encoder with a ``pretrained_cfg``),
``open_clip``/``open_clip.open_clip`` (empty), ``src.datasets`` (a ``Fake`` dataset whose
``train_loader`` is a fixed list of two already-preprocessed batches, ``dataset2classes``),
``src.datasets.common`` (``get_dataloader`` returns that loader) and ``src.models.eval``
(``evaluate`` does nothing). At run time ``.cuda()`` is a no-op (``_golden.cpu_only``),
``ImageClassifier.__init__`` records the model it builds, ``torch.optim.AdamW`` fills that model's
parameters with ``_golden.fill_state`` (the original's names) before its first step and records
every step, and ``Tensor.backward`` records the loss.
"""

from __future__ import annotations

import argparse
import contextlib
import sys
import types
from pathlib import Path

import numpy as np
import torch
import torch.nn as nn

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))
from tests.equivalence._golden import (  # noqa: E402
    FIXTURES,
    cpu_only,
    det_array,
    det_tensor,
    fill_state,
    git_commit,
    save_golden,
)

ORIGINAL = "Hhhhhhao/Noisy-Model-Learning"
COMMIT = "f249dceebd08523acbef868ece897d4fce42c9e1"
SEED = 0
SIZE, DIM, NUM_CLASSES = 8, 16, 5  # encoder input side, feature width, classes
BATCHES = (6, 10)  # N = 2B = 12 < 16 (the port's Gram path), then 20 > 16
LR, WD = 0.01, 0.1
WEIGHTINGS = {
    "ce": (0.0, 0.0, 0.0),
    "mse": (1.0, 0.0, 0.0),
    "cov": (0.0, 1.0, 0.0),
    "svd": (0.0, 0.0, 1.0),
    "readme": (1.0, 0.04, 0.001),
}  # (mse, cov, svd) loss weights
PREP_CFG = {
    "input_size": (3, 24, 24),
    "crop_pct": 0.875,
    "interpolation": "bicubic",
    "mean": (0.485, 0.456, 0.406),
    "std": (0.229, 0.224, 0.225),
}
PREP_SEEDS = (0, 1, 2, 3)


class TinyTimm(nn.Module):
    """A timm-like encoder: ``forward_features`` = ReLU(Linear(flattened image)), ``forward_head(...,
    pre_logits=True)`` = the features, ``fc`` the (unused) classifier, ``pretrained_cfg``."""

    def __init__(self, size: int = SIZE, dim: int = DIM, cfg: dict | None = None):
        super().__init__()
        self.body = nn.Linear(3 * size * size, dim)
        self.fc = nn.Linear(dim, 7)
        self.pretrained_cfg = dict(cfg or {**PREP_CFG, "input_size": (3, size, size)})

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        return torch.relu(self.body(x.flatten(1)))

    def forward_head(self, feats: torch.Tensor, pre_logits: bool = False) -> torch.Tensor:
        return feats if pre_logits else self.fc(feats)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.forward_head(self.forward_features(x), pre_logits=True)


def train_batches() -> list:
    """Two batches of (weak view, strong view, labels), as a loader of preprocessed images gives them."""
    out = []
    for k, b in enumerate(BATCHES):
        xw = det_tensor((b, 3, SIZE, SIZE), SEED, f"weak{k}")
        xs = det_tensor((b, 3, SIZE, SIZE), SEED, f"strong{k}")
        y = torch.from_numpy(det_array((b,), SEED, f"labels{k}", kind="int", high=NUM_CLASSES))
        out.append((xw, xs, y))
    return out


def head_inputs() -> torch.Tensor:
    return det_tensor((12, 3, SIZE, SIZE), SEED, "head_images")


def prep_image() -> np.ndarray:
    """A fixed 29x37 RGB uint8 image (not square, not a multiple of the output size)."""
    return det_array((29, 37, 3), SEED, "prep_image", kind="int", high=256).astype(np.uint8)


# ------------------------------------------------------------------------- the original, stubbed
def _module(name: str, **attrs) -> types.ModuleType:
    mod = types.ModuleType(name)
    mod.__dict__.update(attrs)
    sys.modules[name] = mod
    return mod


class _State:
    timm_cfg: dict | None = None
    loader: list = []
    classifiers: list = []


def install_stubs() -> None:
    _module("clip").clip = _module("clip.clip")
    _module("open_clip").open_clip = _module(
        "open_clip.open_clip", create_model_and_transforms=None
    )
    create = lambda name, pretrained=True: TinyTimm(cfg=_State.timm_cfg)  # noqa: E731
    _module("timm").models = _module("timm.models", create_model=create)

    class Fake:
        def __init__(
            self, preprocess, location=None, batch_size=None, num_shots=None, noise_ratio=None
        ):
            self.train_loader = _State.loader

    datasets = _module("src.datasets", Fake=Fake, dataset2classes={"Fake": NUM_CLASSES})
    datasets.common = _module(
        "src.datasets.common",
        maybe_dictionarize=lambda b: b,
        get_dataloader=lambda dataset, is_train, args, image_encoder=None: dataset.train_loader,
    )
    _module("src.models.eval", evaluate=lambda *a, **k: {})


def original_args(root: Path, weights: tuple[float, float, float], extra=()) -> argparse.Namespace:
    from src.args import parse_arguments  # noqa: E402  (the original's flags and defaults)

    mse, cov, svd = weights
    argv = [
        "--model",
        "tiny",
        "--model_source",
        "timm",
        "--train-dataset",
        "Fake",
        "--epochs",
        "1",
        "--lr",
        str(LR),
        "--wd",
        str(WD),
        "--warmup_length",
        "0",
        "--freeze-encoder",
        "--mlp-with-res",
        "True",
        "--mlp-res-scale-init",
        "1.0",
        "--mse-loss-weight",
        str(mse),
        "--cov-loss-weight",
        str(cov),
        "--svd-loss-weight",
        str(svd),
        *extra,
    ]
    saved = sys.argv
    sys.argv = ["nml_tune.py", *argv]
    try:
        return parse_arguments()
    finally:
        sys.argv = saved


@contextlib.contextmanager
def recording(records: dict):
    """Capture the classifier, fill it before AdamW's first step, record every step and loss."""
    from src.models import modeling

    init, adamw, backward = (
        modeling.ImageClassifier.__init__,
        torch.optim.AdamW,
        torch.Tensor.backward,
    )

    def classifier_init(self, *a, **k):
        init(self, *a, **k)
        _State.classifiers.append(self)

    class Recording(adamw):
        def __init__(self, params, *a, **k):
            params = list(params)
            model = _State.classifiers[-1]
            fill_state(model, SEED)
            names = {id(p): n for n, p in model.named_parameters()}
            records["names"] = [names[id(p)] for p in params]
            super().__init__(params, *a, **k)

            def hook(opt, _a, _k):
                ps = [p for g in opt.param_groups for p in g["params"]]
                records["steps"].append(
                    {
                        "grads": [p.grad.detach().clone() for p in ps],
                        "params": [p.detach().clone() for p in ps],
                        "lr": opt.param_groups[0]["lr"],
                    }
                )

            self.register_step_post_hook(hook)

    def loss_backward(self, *a, **k):
        records["losses"].append(self.detach().clone())
        return backward(self, *a, **k)

    modeling.ImageClassifier.__init__ = classifier_init
    torch.optim.AdamW, torch.Tensor.backward = Recording, loss_backward
    try:
        yield
    finally:
        modeling.ImageClassifier.__init__ = init
        torch.optim.AdamW, torch.Tensor.backward = adamw, backward


def run_steps(root: Path, weights) -> dict:
    from src.models.nml_tune import nml_tune

    _State.loader = [((xw, xs), y) for xw, xs, y in train_batches()]
    _State.timm_cfg = None
    records = {"steps": [], "losses": [], "names": None}
    with cpu_only(), recording(records):
        nml_tune(original_args(root, weights))
    return records


def head_forward(root: Path) -> dict:
    from src.models.modeling import ClassificationHead, ImageClassifier, ImageEncoderMLP

    _State.timm_cfg = None
    encoder = ImageEncoderMLP(original_args(root, WEIGHTINGS["readme"]))
    head = ClassificationHead(False, torch.empty(NUM_CLASSES, DIM))
    model = ImageClassifier(encoder, head)
    fill_state(model, SEED)
    model.train()
    feats, z = encoder(head_inputs(), return_mid_feats=True)
    return {"feats": feats, "z": z, "logits": head(z), "keys": np.array(sorted(model.state_dict()))}


def preprocessing(root: Path) -> dict:
    from PIL import Image
    from src.models.modeling import timm_load
    from torchvision import transforms

    _State.timm_cfg = PREP_CFG
    _, train, val = timm_load("tiny", "Fake")
    image = Image.fromarray(prep_image())
    out = {"val": val(image)}
    crop = train.transforms[0]
    for s in PREP_SEEDS:
        torch.manual_seed(s)
        out[f"train{s}"] = train(image)
        torch.manual_seed(
            s
        )  # the draws Compose makes: RandomResizedCrop's box, then the flip's coin
        out[f"box{s}"] = np.array(
            transforms.RandomResizedCrop.get_params(image, crop.scale, crop.ratio)
        )
        out[f"flip{s}"] = np.array(bool(torch.rand(1) < 0.5))
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument(
        "--original", required=True, type=Path, help="checkout of Hhhhhhao/Noisy-Model-Learning"
    )
    root = ap.parse_args().original.resolve()
    torch.set_num_threads(1)
    install_stubs()
    sys.path.insert(0, str(root))
    meta = dict(original=ORIGINAL, commit=git_commit(root, COMMIT), generator=Path(__file__).name)
    out = FIXTURES / "nmtune"
    save_golden(out / "head.npz", **meta, **head_forward(root))
    for name, weights in WEIGHTINGS.items():
        rec = run_steps(root, weights)
        arrays = {
            "names": np.array(rec["names"]),
            "losses": torch.stack(rec["losses"]),
            "lrs": np.array([s["lr"] for s in rec["steps"]]),
        }
        for k, step in enumerate(rec["steps"]):
            for n, g, p in zip(rec["names"], step["grads"], step["params"]):
                arrays[f"grad{k}:{n}"], arrays[f"param{k}:{n}"] = g, p
        save_golden(out / f"step_{name}.npz", **meta, **arrays)
    save_golden(out / "preprocess.npz", **meta, **preprocessing(root))


if __name__ == "__main__":
    main()
