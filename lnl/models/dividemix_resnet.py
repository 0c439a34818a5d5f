"""DivideMix's CIFAR "PreAct ResNet-18", which PLReMix reuses (DivideMix ``PreResNet.py``):
``LiJunnan1992/DivideMix: PreResNet.py @ d9d3058`` (class ``ResNet``).

It differs from the canonical pre-activation ResNet in ``lnl.models.preact_resnet``: the stem is
conv3×3 + BN + ReLU, there is **no** final BN-ReLU, the head pools with a fixed ``avg_pool2d(4)``, and
the identity shortcut of each block carries the pre-activated input ``relu(bn1(x))`` (5 of the 8
blocks), not ``x``. ``textbook_preact_resnet18`` is the same network with the paper's identity
shortcut (``x``), as this port computed before; an original checkpoint loads into either.
On 64×64 inputs (PLReMix's Tiny-ImageNet) the last stage is 8×8, the pool leaves 2×2×512 and the
feature dimension is 2048, as the original's ``dim * 4``; pass ``input_size=64`` for that.
"""

from __future__ import annotations

import torch
import torch.nn as nn
import torch.nn.functional as F

from lnl.models._registry import register_model
from lnl.models.preact_resnet import PreActBlock


class DivideMixResNet(nn.Module):
    """Args:
    num_blocks: blocks per stage ((2, 2, 2, 2) for ResNet-18).
    num_classes: width of the linear head.
    input_size: 32 (CIFAR, 512 features) or 64 (Tiny-ImageNet, 2048 features).
    preact_identity: identity shortcuts carry ``relu(bn1(x))`` (the originals) instead of ``x``.
    """

    def __init__(
        self,
        num_blocks=(2, 2, 2, 2),
        num_classes: int = 10,
        input_size: int = 32,
        preact_identity: bool = True,
    ):
        super().__init__()
        self.num_classes = num_classes
        self.conv1 = nn.Conv2d(3, 64, 3, 1, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(64)
        stages, in_planes = [], 64
        for i, (planes, blocks) in enumerate(zip((64, 128, 256, 512), num_blocks)):
            layers = []
            for b in range(blocks):
                stride = 2 if (i > 0 and b == 0) else 1
                layers.append(
                    PreActBlock(in_planes, planes, stride, preact_identity=preact_identity)
                )
                in_planes = planes
            stages.append(nn.Sequential(*layers))
        self.layers = nn.Sequential(*stages)
        side = max(input_size // 8 // 4, 1)  # spatial size left by avg_pool2d(4) on the last stage
        self.num_features = 512 * side * side
        self.linear = nn.Linear(self.num_features, num_classes)

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        """Tensor[B, 3, H, W] -> Tensor[B, num_features] (avg_pool2d(4), flattened)."""
        out = self.layers(F.relu(self.bn1(self.conv1(x))))
        return F.avg_pool2d(out, 4).flatten(1)

    def forward_head(self, features: torch.Tensor) -> torch.Tensor:
        return self.linear(features)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.forward_head(self.forward_features(x))


@register_model
def dividemix_preact_resnet18(
    num_classes: int = 10, input_size: int = 32, **kwargs
) -> DivideMixResNet:
    return DivideMixResNet((2, 2, 2, 2), num_classes, input_size=input_size, **kwargs)


@register_model
def textbook_preact_resnet18(
    num_classes: int = 10, input_size: int = 32, **kwargs
) -> DivideMixResNet:
    """DivideMix's network with the paper's identity shortcut (``x``), as lnl computed before it
    matched the originals (``--arch`` in DivideMix, ``--backbone`` in PLReMix)."""
    return DivideMixResNet(
        (2, 2, 2, 2), num_classes, input_size=input_size, preact_identity=False, **kwargs
    )
