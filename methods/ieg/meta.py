"""The L2R/IEG meta step: per-example weights ω* and label choices λ* from a one-step look-ahead on the
probe batch (``ieg/models/model.py``, ``ieg/models/l2rmodel.py``).

With per-example losses ℓ_i(λ) = CE(λ_i y_i + (1−λ_i) g_i, z_i), the look-ahead is
``θ' = θ − α(μ·m + ∇_θ[Σ_i ε_i ℓ_i + R(θ)])`` (m: the optimizer's momentum buffer, zeros before
the first step), evaluated at ε_i = ``eps0``, λ_i = ``lam0``. With ``L_p`` the probe loss at θ',
``a_i = ∂L_p/∂ε_i`` and ``b_i = ∂L_p/∂λ_i``; then ``ω̃_i = max(0, −a_i)``,
``ω*_i = ω̃_i / (Σ_j ω̃_j + 1e-5)`` and ``λ*_i = 1[b_i < 0]`` (1: keep the noisy label).

Two ways to get ``a`` and ``b``:

* :func:`meta_double_backward`: the original's graph, differentiated twice (the reference).
* :func:`meta_jvp` (``--meta_jvp``): since ``∂θ'/∂ε_i = −α∇_θℓ_i`` and
  ``∂θ'/∂λ_i = −α ε_i ∇_θ(∂ℓ_i/∂λ_i) = α ε_i ∇_θ h_i`` with ``h_i = (y_i − g_i)·log softmax(z_i)``,
  ``a = −α·dℓ`` and ``b = α ε·dh`` where ``(dℓ, dh)`` is one forward-mode JVP of θ ↦ (ℓ(θ), h(θ))
  along ``v = ∇_{θ'} L_p(θ')``. If g depends on θ (not detached, the original), the JVP runs through
  the forwards that produce g as well, which is exact.

Both take the batch as functions of the parameters, so BatchNorm coupling across the batch is part
of the derivative in both. Run them with :func:`bn_stats_frozen`: the meta forwards use batch
statistics without touching the running averages, as in the original.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator
from dataclasses import dataclass

import torch
import torch.nn as nn
import torch.nn.functional as F
from torch import Tensor

Params = dict[str, Tensor]
#: params -> (logits Tensor[B, C], pseudo-label Tensor[B, C] or None when λ is not estimated)
BatchFn = Callable[[Params], tuple[Tensor, Tensor | None]]
#: params -> scalar probe loss (cross-entropy on the probe batch plus its weight decay)
ProbeFn = Callable[[Params], Tensor]
#: params -> scalar regulariser R(θ) of the look-ahead loss
RegFn = Callable[[Params], Tensor]

WEIGHT_EPS = 1e-5


@dataclass(frozen=True)
class MetaConfig:
    """Look-ahead constants.

    Attributes:
        alpha: ``--meta_stepsize``.
        mu: ``--meta_momentum`` (0 for L2R).
        eps0: initial example weight ε (1/B for IEG, 0 for L2R).
        lam0: ``--grad_eps_init``, the initial label mix λ (ignored when the batch has no g).
    """

    alpha: float
    mu: float
    eps0: float
    lam0: float = 1.0


@dataclass
class MetaResult:
    """``weights``: ω* Tensor[B]; ``keep_label``: λ* Tensor[B] in {0, 1} (None without g);
    ``raw``: ω̃ before normalisation; ``probe_loss``: L_p at θ' (detached)."""

    weights: Tensor
    keep_label: Tensor | None
    raw: Tensor
    probe_loss: Tensor


@contextlib.contextmanager
def bn_stats_frozen(model: nn.Module) -> Iterator[nn.Module]:
    """BatchNorm layers in training mode use batch statistics but leave the running ones untouched.

    ``track_running_stats=False`` makes ``nn.BatchNorm`` pass no running buffers to ``F.batch_norm``,
    which is also what ``torch.func`` transforms need (no in-place writes to captured tensors).
    """
    layers = [m for m in model.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)]
    saved = [m.track_running_stats for m in layers]
    for m in layers:
        m.track_running_stats = False
    try:
        yield model
    finally:
        for m, flag in zip(layers, saved):
            m.track_running_stats = flag


def soft_ce(target: Tensor, logits: Tensor) -> Tensor:
    """Per-row ``−Σ_c target_c log softmax(logits)_c``: Tensor[B]."""
    return -(target * F.log_softmax(logits, dim=-1)).sum(-1)


def mixed_target(onehot: Tensor, pseudo: Tensor | None, lam: Tensor | float) -> Tensor:
    """``λ·onehot + (1 − λ)·g`` (``onehot`` itself without g); λ a float or Tensor[B]."""
    if pseudo is None:
        return onehot
    lam = lam.unsqueeze(-1) if isinstance(lam, Tensor) else lam
    return lam * onehot + (1 - lam) * pseudo


def _finish(a: Tensor, b: Tensor | None, probe_loss: Tensor) -> MetaResult:
    raw = torch.relu(-a).detach()
    weights = raw / (raw.sum() + WEIGHT_EPS)
    keep = None if b is None else (b < 0).to(a.dtype).detach()
    return MetaResult(weights, keep, raw, probe_loss.detach())


def _look_ahead(
    params: Params, grads: tuple[Tensor, ...], momentum: Params, cfg: MetaConfig
) -> Params:
    """θ' = θ − α(μ·m + G); a missing momentum buffer counts as zeros."""
    out = {}
    for (name, p), g in zip(params.items(), grads):
        m = momentum.get(name)
        step = g if m is None or cfg.mu == 0 else cfg.mu * m + g
        out[name] = p - cfg.alpha * step
    return out


def meta_double_backward(
    batch_fn: BatchFn,
    probe_fn: ProbeFn,
    reg_fn: RegFn,
    params: Params,
    labels: Tensor,
    momentum: Params,
    cfg: MetaConfig,
    current: tuple[Tensor, Tensor | None] | None = None,
) -> MetaResult:
    """The reference: ``a``, ``b`` by differentiating L_p(θ'(ε, λ)) with a second backward.

    Args:
        batch_fn, probe_fn, reg_fn: see the type aliases.
        params: name -> tensor requiring grad (e.g. ``dict(model.named_parameters())``).
        labels: Tensor[B] noisy labels.
        momentum: name -> momentum buffer (missing: zeros).
        cfg: the constants.
        current: ``batch_fn(params)`` when the caller already has it (with its graph to ``params``).

    Returns:
        :class:`MetaResult`.
    """
    logits, pseudo = current if current is not None else batch_fn(params)
    b = logits.shape[0]
    eps = torch.full((b,), cfg.eps0, dtype=logits.dtype, device=logits.device, requires_grad=True)
    lam = torch.full((b,), cfg.lam0, dtype=logits.dtype, device=logits.device, requires_grad=True)
    onehot = F.one_hot(labels, logits.shape[-1]).to(logits.dtype)
    look = (eps * soft_ce(mixed_target(onehot, pseudo, lam), logits)).sum() + reg_fn(params)
    grads = torch.autograd.grad(look, list(params.values()), create_graph=True)
    probe_loss = probe_fn(_look_ahead(params, grads, momentum, cfg))
    wrt = [eps] if pseudo is None else [eps, lam]
    # retain_graph: the caller's forward graph (``current``) is still needed for its own backward.
    d = torch.autograd.grad(probe_loss, wrt, allow_unused=True, retain_graph=True)
    d = [g if g is not None else torch.zeros_like(eps) for g in d]
    return _finish(d[0], None if pseudo is None else d[1], probe_loss)


def meta_jvp(
    batch_fn: BatchFn,
    probe_fn: ProbeFn,
    reg_fn: RegFn,
    params: Params,
    labels: Tensor,
    momentum: Params,
    cfg: MetaConfig,
    current: tuple[Tensor, Tensor | None] | None = None,
) -> MetaResult:
    """``a``, ``b`` from one backward (θ'), one probe backward (v) and one JVP (module docstring).

    Same arguments and result as :func:`meta_double_backward`; ``batch_fn`` must also accept plain
    tensors (it runs inside ``torch.func.jvp``).
    """
    names = list(params)
    logits, pseudo = current if current is not None else batch_fn(params)
    onehot = F.one_hot(labels, logits.shape[-1]).to(logits.dtype)
    look = cfg.eps0 * soft_ce(mixed_target(onehot, pseudo, cfg.lam0), logits).sum() + reg_fn(params)
    grads = torch.autograd.grad(
        look, [params[n] for n in names], retain_graph=True, allow_unused=True
    )
    grads = tuple(g if g is not None else torch.zeros_like(params[n]) for n, g in zip(names, grads))
    detached = {n: p.detach() for n, p in params.items()}
    ahead = {
        n: t.detach().requires_grad_(True)
        for n, t in _look_ahead(detached, grads, momentum, cfg).items()
    }
    probe_loss = probe_fn(ahead)
    v = torch.autograd.grad(probe_loss, [ahead[n] for n in names], allow_unused=True)
    tangents = {
        n: (g if g is not None else torch.zeros_like(detached[n])) for n, g in zip(names, v)
    }

    def per_example(ps: Params) -> tuple[Tensor, Tensor]:
        z, g = batch_fn(ps)
        target = mixed_target(onehot, g, cfg.lam0)
        agreement = onehot - g if g is not None else torch.zeros_like(onehot)
        log_p = F.log_softmax(z, -1)
        return -(target * log_p).sum(-1), (agreement * log_p).sum(-1)

    _, (d_loss, d_agree) = torch.func.jvp(per_example, (detached,), (tangents,))
    b = None if pseudo is None else cfg.alpha * cfg.eps0 * d_agree
    return _finish(-cfg.alpha * d_loss, b, probe_loss)
