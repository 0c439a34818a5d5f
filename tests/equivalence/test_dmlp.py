"""DMLP's port against its original's golden outputs (make_goldens_dmlp.py): the IPC steps, the EAC
steps, the exchange and the final labels on a small feature set whose sizes the batch sizes do not
divide (the original's floored loops skip the leftover rows; ``--fix_short_batches`` does not)."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from methods.dmlp import DMLP
from methods.dmlp import dmlp_lib as L
from tests.equivalence._golden import assert_close, check_meta, load_golden
from tests.equivalence.make_goldens_dmlp import COMMIT, CONSTANTS, NUM_CLASSES, inputs


def _args(*extra):
    k = CONSTANTS
    return DMLP.get_args_parser().parse_args(
        [
            "--num_classes",
            str(NUM_CLASSES),
            "--meta_size",
            str(k["val_num"]),
            "--batch",
            str(k["batchsize"]),
            "--batch_fc",
            str(k["batchsize_fc"]),
            "--epochs",
            str(k["epoch"]),
            "--epoch_T",
            str(k["epoch_T"]),
            *extra,
        ]
    )


def _record(opt: torch.optim.Optimizer) -> dict:
    """Each step's gradients and updated parameters, as the generator records the original's Adam."""
    rec = {"grads": [], "params": []}

    def hook(o, _a, _k):
        ps = [p for g in o.param_groups for p in g["params"]]
        rec["grads"].append([p.grad.detach().clone() for p in ps])
        rec["params"].append([p.detach().clone() for p in ps])

    opt.register_step_post_hook(hook)
    return rec


def _run_port(*extra):
    """The port's two views on the original's split and initial heads, trained for the original's epochs."""
    args = _args(*extra)
    data, split = inputs(), load_golden("dmlp", "split")
    check_meta(split, COMMIT)
    x, clean, noisy = (torch.from_numpy(data[k]) for k in ("train", "clean", "noisy"))
    tr, me = torch.from_numpy(split["idx_to_train"]), torch.from_numpy(split["idx_to_meta"])
    bounds = DMLP.check_batches(args, len(tr))
    xt = torch.from_numpy(data["test"])
    views = [L.build_view(x[tr], x[me], xt, noisy[tr], bounds, args) for _ in range(2)]
    recs = []
    for k, v in enumerate(views, 1):
        with torch.no_grad():
            v.head[0].weight.copy_(torch.from_numpy(split[f"head_v{k}_weight"]))
            v.head[0].bias.copy_(torch.from_numpy(split[f"head_v{k}_bias"]))
        recs.append((_record(v.opt), _record(v.head_opt)))
    yv = clean[me]
    for epoch in range(args.epochs):
        L.train_epoch(views, epoch, bounds, yv, None, args)
    return views, recs, bounds, args


@pytest.fixture(scope="module")
def port():
    torch.set_num_threads(1)
    return _run_port()


def test_ipc_steps_match_the_original(port):
    views, recs, bounds, _ = port
    g = load_golden("dmlp", "ipc")
    check_meta(g, COMMIT)
    (lab1, _), (lab2, _) = recs
    per_epoch = len(bounds)
    assert (
        per_epoch == CONSTANTS["train_num"] // CONSTANTS["batchsize"]
    )  # floored: 3 batches, not 4
    assert len(lab1["params"]) == len(g["labels_v1_after_ipc"]) * per_epoch
    for j in range(per_epoch):
        assert_close(lab1["grads"][j][0], g["grads_v1_epoch0"][j], name=f"dL/dY step {j}")
    assert_close(
        lab1["params"][0][0], g["labels_v1_after_step0"], name="Y after the first IPC step"
    )
    ends = range(per_epoch - 1, len(lab1["params"]), per_epoch)
    assert_close(
        torch.stack([lab1["params"][k][0] for k in ends]),
        g["labels_v1_after_ipc"],
        name="Y v1 per epoch",
    )
    assert_close(
        torch.stack([lab2["params"][k][0] for k in ends]),
        g["labels_v2_after_ipc"],
        name="Y v2 per epoch",
    )


def test_eac_steps_match_the_original(port):
    _, recs, _, _ = port
    g = load_golden("dmlp", "eac")
    check_meta(g, COMMIT)
    (_, head1), (_, head2) = recs
    # 70 // 30 = 2 mini-batches per IPC batch (10 rows skipped), 3 batches, 5 epochs
    assert len(head1["params"]) == len(g["head_v1_weights"]) == 30
    assert_close(head1["grads"][0][0], g["head_v1_grad0"], name="head grad, first EAC step")
    for k, rec in ((1, head1), (2, head2)):
        assert_close(
            torch.stack([p[0] for p in rec["params"]]), g[f"head_v{k}_weights"], name=f"head v{k} W"
        )
        assert_close(
            torch.stack([p[1] for p in rec["params"]]), g[f"head_v{k}_biases"], name=f"head v{k} b"
        )


def test_exchange_final_labels_and_test_predictions_match_the_original(port):
    views, _, _, args = port
    g = load_golden("dmlp", "final")
    check_meta(g, COMMIT)
    assert L.exchange_due(
        args.epochs - 1, args.epochs, args.epoch_T, fix=False
    )  # it fires in this setting
    assert_close(views[0].labels.y.detach(), g["labels_v1"], name="final Y v1 (after the exchange)")
    assert_close(views[1].labels.y.detach(), g["labels_v2"], name="final Y v2")
    assert_close(views[0].labels.y.detach().argmax(1), g["hard_v1"], name="final hard labels")
    assert_close(views[0].last_w, g["w_v1"], name="last W* v1")
    assert_close(views[1].last_w, g["w_v2"], name="last W* v2")
    for k, v in enumerate(views, 1):
        v.head.eval()
        with torch.no_grad():
            assert_close(v.head(v.xt), g[f"test_predict_fcv{k}"], name=f"head v{k} test output")
    test_labels = torch.from_numpy(inputs()["test_labels"])
    acc = L.evaluate(views, test_labels, args.fix_softmax)
    assert acc["test_acc"] * 100 == pytest.approx(float(g["ensemacc"]), abs=1e-4)
    assert acc["test_acc_w_v1"] * 100 == pytest.approx(float(g["acc_testv1"]), abs=1e-4)
    assert acc["test_acc_head_v1"] * 100 == pytest.approx(float(g["acc_test_fcv1"]), abs=1e-4)


def test_leftover_rows_are_untouched_by_ipc_and_trained_with_fix_short_batches(port):
    """The original never gives the last 230 % 70 = 20 rows a gradient (only Adam's weight decay moves
    them); --fix_short_batches trains them and diverges from the original."""
    views, recs, bounds, _ = port
    covered = bounds[-1][1]
    assert covered == 210
    (lab1, _), _ = recs
    assert (
        max(float(g[0][covered:].abs().max()) for g in lab1["grads"]) == 0.0
    )  # no loss term reaches them
    assert not torch.equal(
        lab1["params"][-1][0][covered:], lab1["params"][0][0][covered:]
    )  # Adam's decay does
    fixed_views, fixed_recs, fixed_bounds, _ = _run_port("--fix_short_batches")
    assert fixed_bounds[-1] == (210, 230) and len(fixed_recs[0][1]["params"]) == 5 * (3 * 3 + 1)
    g = load_golden("dmlp", "final")
    assert not np.allclose(fixed_views[0].labels.y.detach().numpy(), g["labels_v1"])
