"""A small CNN for CPU smoke runs and the ``digits`` demo: three conv-BN-ReLU stages (32/64/128
channels, max-pool after each), global average pool, linear head. About 0.1 M parameters, so a
digits epoch takes a second on two CPU cores."""

from __future__ import annotations

import torch
import torch.nn as nn

from lnl.models._registry import register_model


def _stage(cin: int, cout: int) -> nn.Sequential:
    return nn.Sequential(
        nn.Conv2d(cin, cout, 3, padding=1, bias=False),
        nn.BatchNorm2d(cout),
        nn.ReLU(inplace=True),
        nn.MaxPool2d(2),
    )


class SmallCNN(nn.Module):
    def __init__(self, num_classes: int = 10, in_chans: int = 3, width: int = 32):
        super().__init__()
        self.num_classes = num_classes
        self.features = nn.Sequential(
            _stage(in_chans, width), _stage(width, 2 * width), _stage(2 * width, 4 * width)
        )
        self.num_features = 4 * width
        self.head = nn.Linear(4 * width, num_classes)

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        """Tensor[B, C, H, W] -> Tensor[B, 4·width]."""
        return self.features(x).mean((2, 3))

    def forward_head(self, features: torch.Tensor) -> torch.Tensor:
        return self.head(features)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.forward_head(self.forward_features(x))


@register_model
def small_cnn(num_classes: int = 10, **kwargs) -> SmallCNN:
    return SmallCNN(num_classes, **kwargs)
