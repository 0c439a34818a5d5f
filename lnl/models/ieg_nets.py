"""The CIFAR networks of IEG, rebuilt from the description of
``google-research/google-research: ieg/models/wrn.py`` and ``ieg/models/cifar10_resnet.py`` (IEG-era,
2020), which themselves follow the AutoAugment repository's WRN and the Keras "ResNet v2" CIFAR example.

* ``wrn28_10``: the AutoAugment-repo WRN-28-10 (``wrn_size=160``): 3×3 stem of 16 channels, three
  stages of four pre-activation blocks (160/320/640, strides 1/2/2). Shortcuts between different
  widths are average-pool + zero channel padding (no 1×1 conv); every stage also adds a shortcut of
  its input, and the end adds one of the stem output. ~36.5 M parameters.
* ``resnet29``: Keras ResNet v2 with depth 9·3 + 2: 1×1 → 3×3 → 1×1 pre-activation bottlenecks with
  outputs 64/128/256 and 1×1 projection shortcuts. ``faithful=True`` (the default) keeps the
  original's quirk: the loop never resets ``activation='relu'``, so after the very first block the
  first 1×1 conv of every bottleneck is preceded by BN *without* ReLU.

Both expose ``forward_features``/``forward_head`` and an ``ieg_decay`` attribute, ``(coefficient,
scope)``: the gradient coefficient of the network's L2 term and whether it covers every parameter
(WRN: 5e-4·Σ‖w‖²/2 over all variables) or only conv/linear kernels (Keras ``L2(1e-4)`` = 1e-4·Σw²,
gradient 2e-4·w).
"""

from __future__ import annotations

import math

import torch
import torch.nn as nn
import torch.nn.functional as F

from lnl.models._registry import register_model

_BN_MOMENTUM = 0.1  # TF decay 0.9


def _bn(channels: int) -> nn.BatchNorm2d:
    return nn.BatchNorm2d(channels, eps=1e-5, momentum=_BN_MOMENTUM)


class SameConv2d(nn.Conv2d):
    """A bias-free convolution with TF's ``padding='SAME'``: the total padding
    ``max((ceil(n/s) − 1)·s + k − n, 0)`` is split with the smaller half **before**; a 3×3 stride-2
    conv on an even size pads 0 before and 1 after (PyTorch's ``padding=1`` would pad both sides)."""

    def __init__(self, cin: int, cout: int, k: int, stride: int = 1):
        super().__init__(cin, cout, k, stride, padding=0, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        pads = []
        for n in (x.shape[-1], x.shape[-2]):  # F.pad order: last dimension first
            total = max((-(-n // self.stride[0]) - 1) * self.stride[0] + self.kernel_size[0] - n, 0)
            pads += [total // 2, total - total // 2]
        return super().forward(F.pad(x, pads))


def _conv(cin: int, cout: int, k: int, stride: int = 1) -> nn.Conv2d:
    conv = SameConv2d(cin, cout, k, stride)
    # The AutoAugment WRN initialiser: N(0, sqrt(2 / (k·k·C_out))).
    nn.init.normal_(conv.weight, 0.0, math.sqrt(2.0 / (k * k * cout)))
    return conv


def glorot_normal_(weight: torch.Tensor) -> torch.Tensor:
    """TF1 ``glorot_normal``: ``VarianceScaling(1, 'fan_avg', 'truncated_normal')``, a normal truncated
    at ±2σ whose σ = sqrt(2 / (fan_in + fan_out)) / 0.8796 keeps the variance 2 / (fan_in + fan_out)."""
    fan_in, fan_out = nn.init._calculate_fan_in_and_fan_out(weight)
    std = math.sqrt(2.0 / (fan_in + fan_out)) / 0.87962566103423978
    return nn.init.trunc_normal_(weight, 0.0, std, -2 * std, 2 * std)


def _pool_pad(x: torch.Tensor, stride: int, out_channels: int) -> torch.Tensor:
    """The WRN shortcut between widths: stride×stride average pool, then zero channels on both sides."""
    if stride > 1:
        x = F.avg_pool2d(x, stride, stride)
    extra = out_channels - x.shape[1]
    return F.pad(x, (0, 0, 0, 0, extra // 2, extra - extra // 2)) if extra > 0 else x


class WRNBlock(nn.Module):
    """A pre-activation block; ``activate_before_residual`` shares the first BN-ReLU with the shortcut."""

    def __init__(self, cin: int, cout: int, stride: int, activate_before_residual: bool):
        super().__init__()
        self.cout, self.stride = cout, stride
        self.activate_before_residual = activate_before_residual
        self.bn1, self.conv1 = _bn(cin), _conv(cin, cout, 3, stride)
        self.bn2, self.conv2 = _bn(cout), _conv(cout, cout, 3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        pre = F.relu(self.bn1(x))
        shortcut = pre if self.activate_before_residual else x
        out = self.conv2(F.relu(self.bn2(self.conv1(pre))))
        if shortcut.shape[1] != self.cout:
            shortcut = _pool_pad(shortcut, self.stride, self.cout)
        return out + shortcut


class WideResNet(nn.Module):
    """AutoAugment-repo WRN (module docstring). Args: ``depth`` 6n+4, ``widen`` (10 → 160/320/640)."""

    ieg_decay = (5e-4, "all")

    def __init__(self, depth: int = 28, widen: int = 10, num_classes: int = 10):
        super().__init__()
        if (depth - 4) % 6:
            raise ValueError(f"WRN depth must be 6n+4, got {depth}")
        n, k = (depth - 4) // 6, 16 * widen
        self.widths, self.strides = (16, k, 2 * k, 4 * k), (1, 2, 2)
        self.num_classes, self.num_features = num_classes, 4 * k
        self.stem = _conv(3, 16, 3)
        self.stages = nn.ModuleList()
        for s in range(3):
            blocks = [WRNBlock(self.widths[s], self.widths[s + 1], self.strides[s], s == 0)]
            blocks += [
                WRNBlock(self.widths[s + 1], self.widths[s + 1], 1, False) for _ in range(n - 1)
            ]
            self.stages.append(nn.Sequential(*blocks))
        self.bn = _bn(4 * k)
        self.fc = nn.Linear(4 * k, num_classes)
        bound = 1.0 / math.sqrt(num_classes)
        nn.init.uniform_(self.fc.weight, -bound, bound)
        nn.init.zeros_(self.fc.bias)

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        """Tensor[B, 3, H, W] -> Tensor[B, 640·widen/10]."""
        x = first = self.stem(x)
        for s, stage in enumerate(self.stages):
            # The stage-level residual of the AutoAugment variant, on top of the blocks' own.
            x = stage(x) + _pool_pad(x, self.strides[s], self.widths[s + 1])
        x = x + _pool_pad(first, 4, self.widths[3])
        return F.relu(self.bn(x)).mean((2, 3))

    def forward_head(self, features: torch.Tensor) -> torch.Tensor:
        return self.fc(features)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.forward_head(self.forward_features(x))


class _PreAct(nn.Module):
    """Keras ``resnet_layer(conv_first=False)``: [BN] → [ReLU] → conv."""

    def __init__(
        self, cin: int, cout: int, k: int, stride: int = 1, bn: bool = True, relu: bool = True
    ):
        super().__init__()
        self.bn = _bn(cin) if bn else None
        self.relu = relu
        self.conv = nn.Conv2d(
            cin, cout, k, stride, padding=k // 2, bias=False
        )  # 'same': k odd, stride 2 only for k=1
        glorot_normal_(self.conv.weight)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.bn is not None:
            x = self.bn(x)
        return self.conv(F.relu(x) if self.relu else x)


class Bottleneck(nn.Module):
    def __init__(
        self, cin: int, mid: int, cout: int, stride: int, first_bn: bool, first_relu: bool
    ):
        super().__init__()
        self.body = nn.Sequential(
            _PreAct(cin, mid, 1, stride, first_bn, first_relu),
            _PreAct(mid, mid, 3),
            _PreAct(mid, cout, 1),
        )
        self.project = None
        if stride != 1 or cin != cout:
            self.project = nn.Conv2d(cin, cout, 1, stride, bias=False)
            glorot_normal_(self.project.weight)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        shortcut = self.project(x) if self.project is not None else x
        return self.body(x) + shortcut


class ResNet29(nn.Module):
    """Keras ResNet v2, depth 29 (module docstring); ``faithful`` keeps the missing-ReLU quirk."""

    ieg_decay = (2e-4, "kernels")

    def __init__(self, num_classes: int = 10, faithful: bool = True, blocks_per_stage: int = 3):
        super().__init__()
        self.num_classes, self.num_features = num_classes, 256
        self.stem = nn.Sequential(nn.Conv2d(3, 16, 3, padding=1, bias=False), _bn(16), nn.ReLU())
        glorot_normal_(self.stem[0].weight)
        blocks, cin = [], 16
        for stage in range(3):
            cout = cin * 4 if stage == 0 else cin * 2
            for b in range(blocks_per_stage):
                very_first = stage == 0 and b == 0
                stride = 2 if stage > 0 and b == 0 else 1
                relu = not very_first and not faithful
                blocks.append(
                    Bottleneck(cin if b == 0 else cout, cin, cout, stride, not very_first, relu)
                )
            cin = cout
        self.blocks = nn.Sequential(*blocks)
        self.bn = _bn(256)
        self.fc = nn.Linear(256, num_classes)
        nn.init.xavier_uniform_(self.fc.weight)
        nn.init.zeros_(self.fc.bias)

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        """Tensor[B, 3, 32, 32] -> Tensor[B, 256]."""
        return F.relu(self.bn(self.blocks(self.stem(x)))).mean((2, 3))

    def forward_head(self, features: torch.Tensor) -> torch.Tensor:
        return self.fc(features)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.forward_head(self.forward_features(x))


@register_model
def wrn28_10(num_classes: int = 10, **kwargs) -> WideResNet:
    return WideResNet(28, 10, num_classes, **kwargs)


@register_model
def resnet29(num_classes: int = 10, faithful: bool = True, **kwargs) -> ResNet29:
    return ResNet29(num_classes, faithful, **kwargs)


def _max_pool_same(x: torch.Tensor, k: int, stride: int) -> torch.Tensor:
    """TF ``max_pooling2d(padding='SAME')``: the smaller half of the padding before (an even input
    pads 0 before and 1 after a 3×3 stride-2 window; padded cells never win)."""
    pads = []
    for n in (x.shape[-1], x.shape[-2]):
        total = max((-(-n // stride) - 1) * stride + k - n, 0)
        pads += [total // 2, total - total // 2]
    return F.max_pool2d(F.pad(x, pads, value=float("-inf")), k, stride)


def _variance_scaling_conv(cin: int, cout: int, k: int, stride: int = 1) -> nn.Conv2d:
    """TF-official ResNet's ``conv2d_fixed_padding``: an odd kernel padded (k−1)/2 on both sides (explicit
    for stride > 1, 'SAME' for stride 1: the same here), no bias, TF1 ``variance_scaling_initializer()``:
    a normal truncated at ±2σ with σ = sqrt(1/fan_in)/0.8796."""
    conv = nn.Conv2d(cin, cout, k, stride, padding=(k - 1) // 2, bias=False)
    std = math.sqrt(1.0 / (cin * k * k)) / 0.87962566103423978
    nn.init.trunc_normal_(conv.weight, 0.0, std, -2 * std, 2 * std)
    return conv


def _bn_v2(channels: int) -> nn.BatchNorm2d:
    return nn.BatchNorm2d(channels, eps=1e-5, momentum=1 - 0.997)  # TF decay 0.997


class BottleneckV2(nn.Module):
    """``_bottleneck_block_v2``: BN-ReLU shared by the projection shortcut, 1×1 → 3×3 (stride) → 1×1."""

    def __init__(self, cin: int, filters: int, stride: int, project: bool):
        super().__init__()
        self.bn1, self.conv1 = _bn_v2(cin), _variance_scaling_conv(cin, filters, 1)
        self.bn2, self.conv2 = _bn_v2(filters), _variance_scaling_conv(filters, filters, 3, stride)
        self.bn3, self.conv3 = _bn_v2(filters), _variance_scaling_conv(filters, 4 * filters, 1)
        self.project = _variance_scaling_conv(cin, 4 * filters, 1, stride) if project else None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        pre = F.relu(self.bn1(x))
        shortcut = self.project(pre) if self.project is not None else x
        out = self.conv1(pre)
        out = self.conv2(F.relu(self.bn2(out)))
        out = self.conv3(F.relu(self.bn3(out)))
        return out + shortcut


class ResNetV2(nn.Module):
    """TF-official pre-activation ResNet v2 (IEG's ``ImagenetModelv2``, ``ieg/models/resnet50.py``):
    7×7/2 stem without BN, 3×3/2 'SAME' max pool, bottleneck v2 stages (stride on the 3×3), final
    BN-ReLU, global mean, dense (glorot uniform, zero bias). BN decay 0.997, eps 1e-5.

    Args:
        block_sizes: blocks per stage ((3, 4, 6, 3): ResNet-50).
        num_filters: first stage's width (64; tests use fewer).
    """

    ieg_decay = (4e-4, "all")

    def __init__(self, num_classes: int = 50, block_sizes=(3, 4, 6, 3), num_filters: int = 64):
        super().__init__()
        self.num_classes, self.num_features = (
            num_classes,
            num_filters * 2 ** (len(block_sizes) - 1) * 4,
        )
        self.stem = _variance_scaling_conv(3, num_filters, 7, 2)
        stages, cin = [], num_filters
        for i, blocks in enumerate(block_sizes):
            filters, stride = num_filters * 2**i, 1 if i == 0 else 2
            layer = [BottleneckV2(cin, filters, stride, True)]
            layer += [BottleneckV2(4 * filters, filters, 1, False) for _ in range(blocks - 1)]
            stages.append(nn.Sequential(*layer))
            cin = 4 * filters
        self.stages = nn.Sequential(*stages)
        self.bn = _bn_v2(cin)
        self.fc = nn.Linear(cin, num_classes)
        nn.init.xavier_uniform_(self.fc.weight)
        nn.init.zeros_(self.fc.bias)

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        x = _max_pool_same(self.stem(x), 3, 2)
        return F.relu(self.bn(self.stages(x))).mean((2, 3))

    def forward_head(self, features: torch.Tensor) -> torch.Tensor:
        return self.fc(features)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.forward_head(self.forward_features(x))


@register_model
def resnet50_v2(num_classes: int = 50, **kwargs) -> ResNetV2:
    return ResNetV2(num_classes, (3, 4, 6, 3), **kwargs)
