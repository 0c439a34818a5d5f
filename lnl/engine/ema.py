"""Exponential moving average of a module's trainable parameters (LRA-Diffusion's ``utils/ema.py``
semantics: shadow ← (1 − μ)·param + μ·shadow after every optimiser step, no bias correction, buffers
not averaged).

``swapped_in(module)`` evaluates with the averaged weights and restores the live ones afterwards, so
training continues unchanged; ``state_dict()`` makes the average part of a checkpoint.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

import torch
import torch.nn as nn


class EMA:
    """Shadow copies of ``module``'s parameters that require grad.

    Args:
        module: the module to track (registered at construction, as the original's ``register``).
        decay: μ, the weight of the old average.
    """

    def __init__(self, module: nn.Module, decay: float = 0.9999):
        if not 0.0 <= decay <= 1.0:
            raise ValueError(f"EMA decay must be in [0, 1], got {decay}")
        self.decay = decay
        self.shadow = {
            n: p.detach().clone() for n, p in module.named_parameters() if p.requires_grad
        }

    @torch.no_grad()
    def update(self, module: nn.Module) -> None:
        """shadow ← (1 − μ)·param + μ·shadow for every tracked parameter."""
        for name, param in module.named_parameters():
            if name in self.shadow:
                self.shadow[name].lerp_(param.detach(), 1.0 - self.decay)

    @contextlib.contextmanager
    def swapped_in(self, module: nn.Module) -> Iterator[nn.Module]:
        """Temporarily load the averaged weights into ``module`` (restored on exit)."""
        live = {}
        with torch.no_grad():
            for name, param in module.named_parameters():
                if name in self.shadow:
                    live[name] = param.detach().clone()
                    param.copy_(self.shadow[name])
        try:
            yield module
        finally:
            with torch.no_grad():
                for name, param in module.named_parameters():
                    if name in live:
                        param.copy_(live[name])

    def state_dict(self) -> dict[str, torch.Tensor]:
        return {"decay": self.decay, "shadow": {n: t.clone() for n, t in self.shadow.items()}}

    def load_state_dict(self, state: dict) -> None:
        missing = set(self.shadow) - set(state["shadow"])
        if missing:
            raise KeyError(f"EMA state lacks parameters {sorted(missing)[:5]}")
        self.decay = state["decay"]
        for name, value in state["shadow"].items():
            self.shadow[name].copy_(value)
