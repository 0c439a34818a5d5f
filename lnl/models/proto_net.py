"""PLReMix's network wrapper: a backbone plus a projection head and class prototypes
(``lxysl/PLReMix: models/model.py`` @ b0c4ec3).

* projector: Linear(dim → dim), ReLU, Linear(dim → 128), output L2-normalised (q);
* classifier: the backbone's own linear head (Linear(dim → C));
* prototypes: a C × 128 buffer, read through ``q · Pᵀ / 0.1``.

``forward(x)`` returns the logits, so MixMatch code treats it like any classifier; ``mode="proj"``
returns q and ``mode="all"`` returns (logits, prototype logits, q) from one backbone pass.
"""

from __future__ import annotations

import torch
import torch.nn as nn
import torch.nn.functional as F

from lnl.models._registry import create_model, register_model


class ProtoNet(nn.Module):
    """Args:
    backbone: a classifier with ``forward_features``/``forward_head``/``num_features``.
    num_classes: C.
    proj_dim: projection width (128).
    temperature: prototype-logit temperature (0.1).
    """

    def __init__(
        self, backbone: nn.Module, num_classes: int, proj_dim: int = 128, temperature: float = 0.1
    ):
        super().__init__()
        self.backbone = backbone
        dim = backbone.num_features
        self.num_features, self.num_classes, self.temperature = dim, num_classes, temperature
        self.projector = nn.Sequential(
            nn.Linear(dim, dim), nn.ReLU(inplace=True), nn.Linear(dim, proj_dim)
        )
        self.register_buffer("prototypes", torch.zeros(num_classes, proj_dim))

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        return self.backbone.forward_features(x)

    def forward_head(self, features: torch.Tensor) -> torch.Tensor:
        return self.backbone.forward_head(features)

    def project(self, features: torch.Tensor) -> torch.Tensor:
        """Tensor[B, dim] -> L2-normalised Tensor[B, 128] (float32)."""
        return F.normalize(self.projector(features).float(), dim=1)

    def forward(self, x: torch.Tensor, mode: str = "cls"):
        """``cls``: logits Tensor[B, C]; ``proj``: q Tensor[B, 128]; ``all``: (logits, q·Pᵀ/0.1, q)."""
        f = self.forward_features(x)
        if mode == "cls":
            return self.forward_head(f)
        q = self.project(f)
        if mode == "proj":
            return q
        if mode == "all":
            with torch.autocast(
                x.device.type, enabled=False
            ):  # the GMM's second column: float32 under --amp
                proto_logits = q.float() @ self.prototypes.float().t() / self.temperature
            return self.forward_head(f), proto_logits, q
        raise ValueError(f"ProtoNet: unknown mode {mode!r} (cls, proj, all)")


@register_model
def proto_net(
    backbone: str = "dividemix_preact_resnet18",
    num_classes: int = 10,
    proj_dim: int = 128,
    **backbone_kwargs,
) -> ProtoNet:
    """``ProtoNet`` around ``create_model(backbone, num_classes=..., **backbone_kwargs)``."""
    return ProtoNet(
        create_model(backbone, num_classes=num_classes, **backbone_kwargs), num_classes, proj_dim
    )
