"""The two networks of a co-divide run and their optimizers (DivideMix's and PLReMix's ``create_model``
calls, one net after the other)."""

from __future__ import annotations

from collections.abc import Callable

import torch


def build_nets(
    make_net: Callable[[], torch.nn.Module],
    *,
    device: torch.device,
    lr: float,
    weight_decay: float,
    compile: bool = False,
) -> tuple[list, list]:
    """Two ``make_net()`` nets on ``device`` (channels_last on CUDA, ``torch.compile``d with ``compile``)
    and their SGD optimizers (``lr``, momentum 0.9, ``weight_decay``), as the originals build them."""
    nets, optimizers = [], []
    for _ in range(2):
        net = make_net().to(device)
        if device.type == "cuda":
            net = net.to(memory_format=torch.channels_last)
        optimizers.append(
            torch.optim.SGD(net.parameters(), lr=lr, momentum=0.9, weight_decay=weight_decay)
        )
        nets.append(torch.compile(net) if compile else net)
    return nets, optimizers
