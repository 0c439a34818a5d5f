"""Backbones of the Clothing1M and WebVision recipes (DivideMix ``InceptionResNetV2.py``), wrapped so
that ``forward_features`` returns pooled features:

* ``torchvision_resnet50``: torchvision's ResNet-50, optionally with ``IMAGENET1K_V1`` weights
  (``pretrained=True``; the weights must already be in the torch hub cache when offline), 2048 features.
* ``timm_inception_resnet_v2``: timm's InceptionResNetV2 (the Cadene layout DivideMix/PLReMix use),
  random init, 1536 features, 299×299 inputs.
"""

from __future__ import annotations

import torch
import torch.nn as nn

from lnl.models._registry import register_model


class _Wrapped(nn.Module):
    def __init__(self, body: nn.Module, head: nn.Module, num_features: int, num_classes: int):
        super().__init__()
        self.body, self.head = body, head
        self.num_features, self.num_classes = num_features, num_classes

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        """Tensor[B, 3, H, W] -> Tensor[B, num_features]."""
        return self.body(x)

    def forward_head(self, features: torch.Tensor) -> torch.Tensor:
        return self.head(features)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.forward_head(self.forward_features(x))


@register_model
def torchvision_resnet50(num_classes: int = 14, pretrained: bool = False) -> nn.Module:
    import torchvision

    weights = torchvision.models.ResNet50_Weights.IMAGENET1K_V1 if pretrained else None
    body = torchvision.models.resnet50(weights=weights)
    body.fc = nn.Identity()
    return _Wrapped(body, nn.Linear(2048, num_classes), 2048, num_classes)


@register_model
def timm_inception_resnet_v2(num_classes: int = 50, pretrained: bool = False) -> nn.Module:
    import timm

    body = timm.create_model("inception_resnet_v2", pretrained=pretrained, num_classes=0)
    return _Wrapped(body, nn.Linear(body.num_features, num_classes), body.num_features, num_classes)
