"""Op inputs that used to give kernel errors or garbled messages (issue 25, item 9)."""

from __future__ import annotations

import pytest
import torch

from lnl.ops import gmm_fit, knn_labels, plr_loss
from lnl.ops.knn import knn_labels_reference


@pytest.mark.parametrize("backend", ["auto", "cpu", "reference"])
def test_knn_promotes_mixed_float32_and_float64_as_the_reference(backend):
    if backend == "cpu":
        pytest.importorskip("lnl._C")
    g = torch.Generator().manual_seed(0)
    queries, keys = (
        torch.randn(20, 8, generator=g),
        torch.randn(30, 8, generator=g, dtype=torch.float64),
    )
    labels = torch.randint(0, 3, (30,), generator=g)
    got = knn_labels(queries, keys, labels, 5, 3, backend=backend)
    want = knn_labels_reference(queries.double(), keys, labels, 5, 3)
    assert torch.equal(got.indices, want.indices) and got.scores.dtype == torch.float64
    torch.testing.assert_close(got.scores, want.scores)


@pytest.mark.parametrize("backend", ["auto", "reference"])
def test_plr_messages_are_readable(backend):
    with pytest.raises(ValueError, match=r"plr_loss needs at least one sample: cand has 0 rows"):
        plr_loss(
            torch.randn(0, 8),
            torch.zeros(0, 3, dtype=torch.long),
            torch.zeros(0, dtype=torch.long),
            kappa=2,
            backend=backend,
        )
    feats = torch.nn.functional.normalize(torch.randn(8, 8), dim=1)
    negative_cand = torch.tensor([[-5, -4], [-3, -5], [-4, -3], [-5, -5]])
    with pytest.raises(ValueError, match=r"cand must be >= 0, got range \[-5, -3\]$"):
        plr_loss(feats, negative_cand, torch.zeros(4, dtype=torch.long), kappa=2, backend=backend)


@pytest.mark.parametrize("backend", ["auto", "reference"])
def test_gmm_of_no_points_says_so(backend):
    with pytest.raises(ValueError, match=r"gmm_fit: x has no points \(N=0"):
        gmm_fit(torch.zeros(1, 0, 1), backend=backend)
