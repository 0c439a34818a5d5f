"""Pre-activation ResNets for 32×32 inputs (He et al. 2016, "Identity Mappings in Deep Residual
Networks"), the CIFAR backbone of DivideMix and PLReMix (DivideMix ``PreResNet.py``): 3×3 stem
with 64 channels, four stages of 64/128/256/512, global 4×4 average pool, linear head."""

from __future__ import annotations

import torch
import torch.nn as nn
import torch.nn.functional as F

from lnl.models._registry import register_model


class PreActBlock(nn.Module):
    """Args:
    in_planes, planes, stride: as torchvision's BasicBlock.
    preact_identity: the identity shortcut carries ``relu(bn1(x))`` instead of ``x``. DivideMix
        and PLReMix do this (their empty ``nn.Sequential`` shortcut is applied to the
        pre-activated input: DivideMix ``PreResNet.py`` ``PreActBlock.forward``); the paper's
        block (False) adds ``x``. Same parameters, another function.
    """

    expansion = 1

    def __init__(self, in_planes: int, planes: int, stride: int = 1, preact_identity: bool = False):
        super().__init__()
        self.preact_identity = preact_identity
        self.bn1 = nn.BatchNorm2d(in_planes)
        self.conv1 = nn.Conv2d(in_planes, planes, 3, stride, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(planes)
        self.conv2 = nn.Conv2d(planes, planes, 3, 1, 1, bias=False)
        self.shortcut = None
        if stride != 1 or in_planes != planes:
            self.shortcut = nn.Conv2d(in_planes, planes, 1, stride, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = F.relu(self.bn1(x))
        # The projection shortcut reads the pre-activated input, as in the paper's full pre-activation.
        if self.shortcut is not None:
            shortcut = self.shortcut(out)
        else:
            shortcut = out if self.preact_identity else x
        out = self.conv1(out)
        out = self.conv2(F.relu(self.bn2(out)))
        return out + shortcut


class PreActResNet(nn.Module):
    """Args:
    num_blocks: blocks per stage, e.g. (2, 2, 2, 2) for ResNet-18.
    num_classes: width of the linear head.
    in_chans: input channels.
    """

    def __init__(self, num_blocks=(2, 2, 2, 2), num_classes: int = 10, in_chans: int = 3):
        super().__init__()
        self.num_classes = num_classes
        self.conv1 = nn.Conv2d(in_chans, 64, 3, 1, 1, bias=False)
        stages, in_planes = [], 64
        for i, (planes, blocks) in enumerate(zip((64, 128, 256, 512), num_blocks)):
            layers = []
            for b in range(blocks):
                layers.append(PreActBlock(in_planes, planes, stride=2 if (i > 0 and b == 0) else 1))
                in_planes = planes
            stages.append(nn.Sequential(*layers))
        self.layers = nn.Sequential(*stages)
        self.bn = nn.BatchNorm2d(512)
        self.num_features = 512
        self.linear = nn.Linear(512, num_classes)

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        """Tensor[B, C, H, W] -> pooled features Tensor[B, 512]."""
        out = F.relu(self.bn(self.layers(self.conv1(x))))
        return F.adaptive_avg_pool2d(out, 1).flatten(1)

    def forward_head(self, features: torch.Tensor) -> torch.Tensor:
        return self.linear(features)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.forward_head(self.forward_features(x))


@register_model
def preact_resnet18(num_classes: int = 10, **kwargs) -> PreActResNet:
    return PreActResNet((2, 2, 2, 2), num_classes, **kwargs)


@register_model
def preact_resnet34(num_classes: int = 10, **kwargs) -> PreActResNet:
    return PreActResNet((3, 4, 6, 3), num_classes, **kwargs)
