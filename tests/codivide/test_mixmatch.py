"""MixMatch pieces of DivideMix/PLReMix against hand-computed values (spec §5.5)."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from lnl.codivide import mixmatch as mm


def test_sharpen_matches_the_formula():
    p = torch.tensor([[0.6, 0.3, 0.1]])
    # p^2 / sum p^2 = [0.36, 0.09, 0.01] / 0.46
    torch.testing.assert_close(mm.sharpen(p, 0.5), torch.tensor([[0.36, 0.09, 0.01]]) / 0.46)


def test_semi_loss_hand_case():
    logits_x = torch.tensor([[math.log(3.0), 0.0]])  # softmax [0.75, 0.25]
    targets_x = torch.tensor([[0.5, 0.5]])
    logits_u = torch.tensor([[0.0, 0.0]])  # softmax [0.5, 0.5]
    targets_u = torch.tensor([[1.0, 0.0]])
    lx, lu = mm.semi_loss(logits_x, targets_x, logits_u, targets_u)
    assert lx.item() == pytest.approx(-(0.5 * math.log(0.75) + 0.5 * math.log(0.25)))
    assert lu.item() == pytest.approx((0.25 + 0.25) / 2)  # mean over rows *and classes*


def test_linear_rampup_is_16_epochs_after_warm_up():
    assert mm.linear_rampup(10, 10, 25) == 0
    assert mm.linear_rampup(18, 10, 25) == pytest.approx(12.5)
    assert mm.linear_rampup(40, 10, 25) == 25
    assert mm.linear_rampup(5, 10, 25) == 0


def test_uniform_prior_penalty_and_neg_entropy():
    assert mm.uniform_prior_penalty(torch.zeros(4, 5)).item() == pytest.approx(0, abs=1e-7)
    logits = torch.log(torch.tensor([[0.5, 0.5], [0.9, 0.1]]))  # mean softmax [0.7, 0.3]
    want = 0.5 * math.log(0.5 / 0.7) + 0.5 * math.log(0.5 / 0.3)
    assert mm.uniform_prior_penalty(logits).item() == pytest.approx(want, rel=1e-5)
    want_ne = ((0.5 * math.log(0.5)) * 2 + 0.9 * math.log(0.9) + 0.1 * math.log(0.1)) / 2
    assert mm.neg_entropy(logits).item() == pytest.approx(want_ne, rel=1e-5)


def test_mixup_keeps_lambda_at_least_half_and_mixes_rows_consistently():
    np.random.seed(0)
    torch.manual_seed(0)
    x = torch.arange(8.0).view(8, 1, 1, 1)
    y = torch.nn.functional.one_hot(torch.arange(8), 8).float()
    mx, my, lam = mm.mixup(x, y, alpha=4)
    assert 0.5 <= lam <= 1
    # each mixed target puts λ on its own row and 1-λ on its partner: recover the partner from x
    partner = ((mx.flatten() - lam * torch.arange(8.0)) / (1 - lam)).round().long()
    torch.testing.assert_close(my, lam * y + (1 - lam) * y[partner])


class _Const(torch.nn.Module):
    def __init__(self, logits):
        super().__init__()
        self.logits = logits

    def forward(self, x):
        return self.logits.expand(x.shape[0], -1)


def test_co_refine_and_co_guess():
    net = _Const(torch.log(torch.tensor([[0.2, 0.8]])))
    net2 = _Const(torch.log(torch.tensor([[0.6, 0.4]])))
    x = torch.zeros(2, 3, 4, 4)
    onehot = torch.tensor([[1.0, 0.0], [1.0, 0.0]])
    w = torch.tensor([1.0, 0.5])
    tx = mm.co_refine(net, x, x, onehot, w, 0.5)
    torch.testing.assert_close(tx[0], torch.tensor([1.0, 0.0]))
    p = torch.tensor([0.6, 0.4])  # 0.5·onehot + 0.5·[0.2, 0.8]
    torch.testing.assert_close(tx[1], p**2 / (p**2).sum())
    tu = mm.co_guess(net, net2, x, x, 0.5)
    q = torch.tensor([0.4, 0.6])  # mean of the two nets, two views each
    torch.testing.assert_close(tu[0], q**2 / (q**2).sum())
