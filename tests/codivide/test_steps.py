"""Co-divide pieces (spec §5.2–§5.4, §6.2): the vectorised evaluation pass, min-max, the GMM clean
probability on a synthetic bimodal loss (lnl.ops vs the sklearn oracle), co-divide, AUC, ensemble."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from sklearn.metrics import roc_auc_score

from lnl.codivide import steps as cd
from lnl.data.gpu import GPULoader


def _bimodal(n_clean=600, n_noisy=400, dims=1, seed=0):
    g = torch.Generator().manual_seed(seed)
    clean = 0.1 + 0.05 * torch.randn(n_clean, dims, generator=g).abs()
    noisy = 0.7 + 0.1 * torch.randn(n_noisy, dims, generator=g)
    x = torch.cat([clean, noisy])
    truth = torch.cat(
        [torch.ones(n_clean, dtype=torch.bool), torch.zeros(n_noisy, dtype=torch.bool)]
    )
    return cd.minmax(x), truth


@pytest.mark.parametrize("dims", [1, 2])
def test_clean_probability_separates_a_bimodal_loss_and_matches_sklearn(dims):
    x, truth = _bimodal(dims=dims)
    prob = cd.clean_probability(x, backend="auto", seed=3)
    oracle = cd.clean_probability(x, backend="sklearn", seed=3)
    assert prob.shape == (1000,)
    assert roc_auc_score(truth.numpy(), prob.numpy()) > 0.99
    assert ((prob > 0.5) == truth).float().mean() > 0.98
    assert ((prob > 0.5) == (oracle > 0.5)).float().mean() > 0.995
    assert (prob - oracle).abs().max() < 1e-2


def test_minmax_and_divide_partition():
    x = torch.tensor([[2.0, 1.0], [4.0, 3.0], [3.0, 1.0]])
    torch.testing.assert_close(cd.minmax(x), torch.tensor([[0.0, 0.0], [1.0, 1.0], [0.5, 0.0]]))
    assert torch.equal(cd.minmax(torch.ones(3)), torch.zeros(3))  # constant column: 0, not NaN
    prob = torch.tensor([0.1, 0.5, 0.51, 0.9, 0.0])
    lab, unl = cd.divide(prob, 0.5)
    assert lab.tolist() == [2, 3] and unl.tolist() == [0, 1, 4]


def test_roc_auc_matches_sklearn_with_ties():
    g = torch.Generator().manual_seed(1)
    scores = torch.randint(0, 5, (200,), generator=g).float()
    pos = torch.rand(200, generator=g) < 0.4
    assert cd.roc_auc(scores, pos) == pytest.approx(roc_auc_score(pos.numpy(), scores.numpy()))


def test_collect_outputs_stores_rows_by_dataset_index_under_shuffling():
    g = torch.Generator().manual_seed(0)
    images = torch.randint(0, 255, (37, 8, 8, 3), dtype=torch.uint8, generator=g)
    labels = torch.randint(0, 4, (37,), generator=g)
    base = GPULoader(images, labels, 8, mean=(0.5,) * 3, std=(0.25,) * 3, train=False)
    loader = cd.subset_loader(base, None, 5, views=("none",), seed=1, shuffle=True)
    net = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(192, 4))
    outs = cd.collect_outputs(net, loader, 37)
    ordered = torch.cat([net(x) for x, _, _ in base])
    torch.testing.assert_close(outs["logits"], ordered)
    assert torch.equal(outs["labels"], labels)
    # a subset with a row lookup
    idx = torch.tensor([30, 2, 17])
    rows = torch.full((37,), -1, dtype=torch.long)
    rows[idx] = torch.arange(3)
    sub = cd.subset_loader(base, idx, 2, views=("none",), seed=0, shuffle=True)
    outs = cd.collect_outputs(net, sub, 3, rows=rows)
    torch.testing.assert_close(outs["logits"], ordered[idx])


def test_ensemble_eval_top1_top5():
    class Fixed(torch.nn.Module):
        def __init__(self, logits):
            super().__init__()
            self.l = logits

        def forward(self, x):
            return self.l[: x.shape[0]]

    logits1 = torch.tensor([[0.0, 1, 2, 3, 4, 5], [5.0, 4, 3, 2, 1, 0]])
    logits2 = torch.zeros(2, 6)
    batches = [(torch.zeros(2, 1), torch.tensor([5, 4]), torch.arange(2))]
    res = cd.ensemble_eval([Fixed(logits1), Fixed(logits2)], batches, topk=(1, 5))
    assert res == {"top1": 0.5, "top5": 1.0, "top1_batchmean": 0.5, "top5_batchmean": 1.0}
    batches = [(torch.zeros(2, 1), torch.tensor([0, 4]), torch.arange(2))]
    res = cd.ensemble_eval([Fixed(logits1), Fixed(logits2)], batches, topk=(1, 5))
    assert (res["top1"], res["top5"]) == (0.0, 0.5)


def test_ensemble_eval_batch_mean_weighs_a_short_batch_as_a_full_one():
    """PLReMix's WebVision/Clothing1M protocol: the mean of per-batch accuracies (batches of 2 and 1)."""

    class Fixed(torch.nn.Module):
        def forward(self, x):
            return torch.tensor([[1.0, 0.0]]).expand(x.shape[0], 2)

    batches = [
        (torch.zeros(2, 1), torch.tensor([0, 1]), torch.arange(2)),
        (torch.zeros(1, 1), torch.tensor([0]), torch.arange(1)),
    ]
    res = cd.ensemble_eval([Fixed()], batches, topk=(1,))
    assert res["top1"] == 2 / 3 and res["top1_batchmean"] == (0.5 + 1.0) / 2


def test_sklearn_oracle_picks_the_low_loss_component():
    x, truth = _bimodal(dims=2, seed=5)
    prob = cd.sklearn_clean_prob(x, seed=0)
    assert prob[truth].mean() > 0.9 and prob[~truth].mean() < 0.1
    assert np.isfinite(prob.numpy()).all()


def test_a_non_finite_warmup_or_semi_loss_stops_before_the_step():
    """Issue 25 item 3 for the co-divide family: NaN logits raise NonFiniteLossError naming the terms,
    and the optimizer never steps on them."""
    from lnl.engine.train_loop import NonFiniteLossError

    net = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(4, 3))
    with torch.no_grad():
        net[1].bias.fill_(float("nan"))
    before = net[1].weight.detach().clone()
    opt = torch.optim.SGD(net.parameters(), lr=0.1)
    batches = [(torch.ones(2, 4), torch.tensor([0, 1]), torch.arange(2))]
    with pytest.raises(NonFiniteLossError, match="ce=nan"):
        cd.warmup_epoch(net, opt, batches, penalty=False)
    assert torch.equal(net[1].weight, before)
    labeled = type("L", (list,), {})(
        [((torch.ones(2, 4), torch.ones(2, 4)), torch.tensor([0, 1]), torch.arange(2))]
    )
    labeled.indices, labeled.batch_size = torch.arange(2), 2
    unlabeled = [((torch.ones(2, 4), torch.ones(2, 4)), None, torch.arange(2))]
    with pytest.raises(NonFiniteLossError, match="lx=nan"):
        cd.semi_epoch(
            net,
            net,
            opt,
            labeled,
            unlabeled,
            torch.ones(2),
            epoch=0,
            warm_up=0,
            lambda_u=1.0,
            temperature=0.5,
            alpha=4.0,
            num_classes=3,
        )
    assert torch.equal(net[1].weight, before)
