"""One training step of each ``--method``: ``ieg`` (``ieg/models/model.py``), ``l2r``
(``l2rmodel.py``) and ``supervised`` (``basemodel.py``). Each returns detached per-step metrics; the
caller runs the optimizer.

BatchNorm running statistics are updated only by the forward of the weak view ``f(x)``, as in the
original; the strong-view, MixUp and meta forwards use batch statistics (:func:`bn_stats_frozen`).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch
import torch.nn as nn
import torch.nn.functional as F
from torch import Tensor
from torch.func import functional_call

from methods.ieg import ieg_lib as L
from methods.ieg.meta import (
    MetaConfig,
    MetaResult,
    bn_stats_frozen,
    meta_double_backward,
    meta_jvp,
    mixed_target,
    soft_ce,
)


@dataclass
class StepSetup:
    """What a step needs besides the batch.

    Attributes:
        model: the network (training mode).
        optimizer: SGD with momentum (its buffers enter IEG's look-ahead).
        num_classes: C.
        decay_names, decay: the parameters and gradient coefficient of the network's L2 term R(θ).
        probe_decay: weight decay of the meta probe loss.
        args: the parsed flags (``ce_factor``, ``consistency_factor``, ``grad_eps_init``, …).
    """

    model: nn.Module
    optimizer: torch.optim.Optimizer
    num_classes: int
    decay_names: list[str]
    decay: float
    probe_decay: float
    args: object

    def momentum(self) -> dict[str, Tensor]:
        """The optimizer's momentum buffers by parameter name (absent before the first step)."""
        out = {}
        for name, p in self.model.named_parameters():
            buf = self.optimizer.state.get(p, {}).get("momentum_buffer")
            if buf is not None:
                out[name] = buf
        return out

    def probe_fn(self, xp: Tensor, yp: Tensor) -> Callable[[dict], Tensor]:
        names = list(dict(self.model.named_parameters()))

        def probe_loss(ps: dict) -> Tensor:
            ce = F.cross_entropy(functional_call(self.model, ps, (xp,)), yp)
            return ce + L.l2_term(ps, names, self.probe_decay)

        return probe_loss

    def reg_fn(self, ps: dict) -> Tensor:
        return L.l2_term(ps, self.decay_names, self.decay)

    def meta(self, *args, **kwargs) -> MetaResult:
        fn = meta_jvp if self.args.meta_jvp else meta_double_backward
        return fn(*args, **kwargs)


def supervised_step(s: StepSetup, batch: dict, g: torch.Generator) -> tuple[Tensor, dict]:
    """Cross-entropy on the noisy labels; the probe set is held out and unused."""
    z = s.model(batch["xw"])
    loss = F.cross_entropy(z, batch["y"])
    return loss, {"loss": loss.detach(), "acc": (z.argmax(1) == batch["y"]).float().mean()}


def l2r_step(s: StepSetup, batch: dict, g: torch.Generator) -> tuple[Tensor, dict]:
    """Learning to reweight: ε = 0, θ' = θ − α∇[Σε_iℓ_i + R(θ)] (no momentum; l2rmodel.py keeps the
    network's L2 term R in the look-ahead), weights from the probe."""
    xw, y = batch["xw"], batch["y"]
    z = s.model(xw)
    cfg = MetaConfig(alpha=s.args.meta_stepsize, mu=0.0, eps0=0.0)
    with bn_stats_frozen(s.model):
        res = s.meta(
            lambda ps: (functional_call(s.model, ps, (xw,)), None),
            s.probe_fn(batch["xp"], batch["yp"]),
            s.reg_fn,
            dict(s.model.named_parameters()),
            y,
            {},
            cfg,
            current=(z, None),
        )
    loss = (res.weights * F.cross_entropy(z, y, reduction="none")).sum()
    return loss, {
        "loss": loss.detach(),
        "meta_loss": res.probe_loss,
        "weights_zero": (res.raw == 0).float().mean(),
    }


def ieg_step(s: StepSetup, batch: dict, g: torch.Generator) -> tuple[Tensor, dict]:
    """IEG's loss (``model.py``): ½(L_λ* + L_ω*) + L_mix + L_KL (R(θ) through SGD's weight decay).

    g gets no gradient in L_λ* and L_ω*: TF computes them with ``tf.losses.softmax_cross_entropy``,
    which stops the gradient of its labels (model.py ``train_step``); the meta step's look-ahead is a
    hand-written cross-entropy where g keeps it (unless ``--detach_pseudo_label``).
    """
    a = s.args
    xw, xs, y = batch["xw"], batch["xs"], batch["y"]
    z = s.model(xw)  # the only forward that updates BN running statistics
    onehot = F.one_hot(y, s.num_classes).to(z.dtype)
    with bn_stats_frozen(s.model):
        zs = s.model(xs)
        pseudo = L.guess_label(z, zs, detach=a.detach_pseudo_label)
        yp_onehot = F.one_hot(batch["yp"], s.num_classes).to(z.dtype)
        x_mix, t_mix = L.mixup_batch(batch["xp"], yp_onehot, xw, xs, pseudo, g)
        l_mix = L.mixup_loss(s.model(x_mix), t_mix, a.ce_factor)
        res = _ieg_meta(s, batch, z, pseudo)
    l_kl = L.consistency_loss(z, zs, a.consistency_factor)
    target = pseudo.detach()
    l_lam = soft_ce(mixed_target(onehot, target, res.keep_label), z).mean()
    l_w = (res.weights * soft_ce(mixed_target(onehot, target, a.grad_eps_init), z)).sum()
    loss = 0.5 * (l_lam + l_w) + l_mix + l_kl
    metrics = {
        "loss": loss.detach(),
        "xemin": (0.5 * (l_lam + l_w)).detach(),
        "mixup": l_mix.detach(),
        "consistency": l_kl.detach(),
        "meta_loss": res.probe_loss,
        "weights_zero": (res.raw == 0).float().mean(),
        "keep_label": res.keep_label.mean(),
    }
    return loss, {**metrics, **_label_choice_quality(res.keep_label, y, batch.get("y_clean"))}


def _ieg_meta(s: StepSetup, batch: dict, z: Tensor, pseudo: Tensor) -> MetaResult:
    """ω*, λ* of the current batch; the JVP path recomputes f(x) (and f(x̂) when g keeps its graph)."""
    xw, xs = batch["xw"], batch["xs"]
    detach = s.args.detach_pseudo_label

    def batch_fn(ps: dict) -> tuple[Tensor, Tensor]:
        zw = functional_call(s.model, ps, (xw,))
        if detach:
            return zw, pseudo
        return zw, L.guess_label(zw, functional_call(s.model, ps, (xs,)), detach=False)

    cfg = MetaConfig(
        alpha=s.args.meta_stepsize,
        mu=s.args.meta_momentum,
        eps0=1.0 / xw.shape[0],
        lam0=s.args.grad_eps_init,
    )
    return s.meta(
        batch_fn,
        s.probe_fn(batch["xp"], batch["yp"]),
        s.reg_fn,
        dict(s.model.named_parameters()),
        batch["y"],
        s.momentum(),
        cfg,
        current=(z, pseudo),
    )


def _label_choice_quality(keep: Tensor, y: Tensor, y_clean: Tensor | None) -> dict:
    """Mean λ* on truly-noisy and on clean examples (diagnostics; the clean labels are known here)."""
    if y_clean is None:
        return {}
    noisy = (y != y_clean).float()
    return {
        "keep_on_noisy": (keep * noisy).sum() / noisy.sum().clamp_min(1),
        "keep_on_clean": (keep * (1 - noisy)).sum() / (1 - noisy).sum().clamp_min(1),
    }


STEPS = {"ieg": ieg_step, "l2r": l2r_step, "supervised": supervised_step}
