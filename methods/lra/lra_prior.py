"""LRA-Diffusion's online SimCLR prior on CIFAR (``train_CIFAR.py`` with ``--fp_encoder SimCLR``, the
original's default): f_p of every training step is the SimCLR encoder run on that step's augmented
batch, queried against a database of the training images' embeddings; val/test embeddings come from
the same encoder on un-augmented images (``reverse_ddim`` with ``fp_x=None``).

The database is ``prepare_fp_x(fp_encoder, train_dataset)``: batches of 400 in index order through the
*training* transform, so each row is one random augmentation (``utils/knn_utils.py``). The encoder
is in eval mode throughout (the original calls ``fp_encoder.eval()`` and never ``train()``); it is
never trained, so it runs without autograd (same values).

``--precomputed_fp`` (a documented deviation) reads un-augmented features from
``data_prep/extract_features.py`` files instead: much faster, not the original's prior.
"""

from __future__ import annotations

from pathlib import Path

import torch
import torch.nn as nn
import torch.nn.functional as F

DATABASE_BATCH = 400  # prepare_fp_x's batch size


class SimCLREncoder(nn.Module):
    """The original's ``SimCLR_encoder`` (``utils/model_SimCLR.py``): a torchvision ResNet-50 with a
    3×3 stride-1 stem, without max-pool and fc (``f``), and an unused projection head (``g``).
    Built in the original's order (ResNet-50, the new stem, the head), so a seed gives its weights
    and its checkpoints load by the same names. Returns the L2-normalised 2048-d pooled feature."""

    def __init__(self, feature_dim: int = 128):
        import torchvision

        super().__init__()
        layers = []
        for name, module in torchvision.models.resnet50().named_children():
            if name == "conv1":
                module = nn.Conv2d(3, 64, kernel_size=3, stride=1, padding=1, bias=False)
            if not isinstance(module, (nn.Linear, nn.MaxPool2d)):
                layers.append(module)
        self.f = nn.Sequential(*layers)
        self.g = nn.Sequential(
            nn.Linear(2048, 512, bias=False),
            nn.BatchNorm1d(512),
            nn.ReLU(inplace=True),
            nn.Linear(512, feature_dim, bias=True),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.normalize(torch.flatten(self.f(x), start_dim=1), dim=-1)


def load_simclr(path: str | Path, device) -> SimCLREncoder:
    """A :class:`SimCLREncoder` with the checkpoint's weights, loaded with ``strict=False`` as the original
    does, in eval mode.

    Raises:
        FileNotFoundError: no checkpoint at ``path``. ValueError: none of its keys is an encoder key.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(
            f"--simclr_weights {path}: no such file (the original's model/SimCLR_128_<dataset>.pt; "
            f"or pass --precomputed_fp with extract_features.py files)"
        )
    encoder = SimCLREncoder()
    state = torch.load(path, map_location="cpu", weights_only=True)
    if not set(state) & set(encoder.state_dict()):
        raise ValueError(f"{path} holds no SimCLR_encoder key (f.*, g.*); e.g. {list(state)[:3]}")
    encoder.load_state_dict(state, strict=False)
    return encoder.to(device).eval()


@torch.no_grad()
def encode_loader(encoder: nn.Module, loader, n: int, device) -> torch.Tensor:
    """Embeddings of a loader's images written by dataset index: Tensor[n, 2048]."""
    out = torch.zeros(n, 2048, device=device)
    for images, _, idx in loader:
        out[idx.to(device)] = encoder(images.to(device)).float()
    return out


@torch.no_grad()
def encode_batch(encoder: nn.Module, images: torch.Tensor) -> torch.Tensor:
    return encoder(images).float()
