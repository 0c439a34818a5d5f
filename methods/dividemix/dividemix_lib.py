"""DivideMix-only logic for Clothing1M and WebVision (``LiJunnan1992/DivideMix: Train_clothing1M.py``,
``Train_webvision.py`` @ d9d3058): the file-list co-divide with one
LR milestone, per-net 32k class-balanced eval subsets (Clothing1M), the labeled-only MixMatch forward
(Clothing1M), best-validation model selection (Clothing1M) and the two nets. The loop is
``lnl.codivide.cotrain``; the entry points' parser and ``main``: ``dividemix_train``.
"""

from __future__ import annotations

import copy
from pathlib import Path

import torch

from lnl.codivide import steps as cd
from lnl.codivide.cotrain import CoDivide
from lnl.codivide.files import FileListMixin
from lnl.codivide.nets import build_nets
from lnl.engine.checkpoint import atomic_save
from lnl.models import create_model


class FileDivideMix(FileListMixin, CoDivide):
    """DivideMix on a file-list dataset: LR ÷10 at ``milestone``, weak views only.

    Args:
        recipe: the script's ``Recipe`` (views and subset sizes).
        milestone: the LR step epoch (40 for both).
        penalty: NegEntropy in the warm-up (Clothing1M yes, WebVision no).
        labeled_only: Clothing1M forwards only the labeled mixed rows and drops L_u.
        tf: ``transforms_for`` output.
    """

    def __init__(
        self, args, nets, optimizers, data, log, *, recipe, milestone, penalty, labeled_only, tf
    ):
        self.recipe, self.milestone, self._penalty, self.tf = recipe, milestone, penalty, tf
        self.labeled_only, self.train_set = labeled_only, data.train
        super().__init__(args, nets, optimizers, data, log)
        self.state["best"] = [0.0, 0.0]

    @property
    def warmup_penalty(self) -> bool:
        return self._penalty

    def lr_at(self, epoch: int) -> float:
        return self.args.lr / 10 if epoch >= self.milestone else self.args.lr

    def gmm_input(self, k: int, outs: dict):
        """Min-max normalised CE of this epoch's subset (no 90 % history on real noise)."""
        return cd.minmax(cd.per_sample_ce(outs["logits"], outs["labels"]))[:, None]


def dividemix_nets(
    args, name: str, num_classes: int, *, weight_decay: float, **kwargs
) -> tuple[list, list]:
    """Two ``create_model(name, **kwargs)`` nets (``--arch`` overrides, without ``kwargs``) and their
    SGD optimizers."""

    def make_net():
        return create_model(
            args.arch or name, num_classes=num_classes, **({} if args.arch else kwargs)
        )

    return build_nets(
        make_net, device=args.device, lr=args.lr, weight_decay=weight_decay, compile=args.compile
    )


def track_best(method: FileDivideMix, val_loader, out: Path) -> dict:
    """Validate each net; save a net's weights to ``<out>/best_net{k}.pth`` when its accuracy improves
    (the original's ``./checkpoint/<id>_net{k}.pth.tar``)."""
    metrics = {}
    for k, net in enumerate(method.nets):
        acc = method.test_single(net, val_loader)
        metrics[f"val_acc_net{k + 1}"] = acc
        if acc > method.state["best"][k]:
            method.state["best"][k] = acc
            atomic_save(
                copy.deepcopy(getattr(net, "_orig_mod", net).state_dict()),
                out / f"best_net{k + 1}.pth",
            )
    metrics["val_acc"] = method.test(val_loader)["top1"]
    return metrics


def test_best(method: FileDivideMix, test_loader, out: Path) -> dict:
    """Load each net's best-validation weights and test their ensemble (top-1/5)."""
    for k, net in enumerate(method.nets):
        path = out / f"best_net{k + 1}.pth"
        if path.exists():
            getattr(net, "_orig_mod", net).load_state_dict(
                torch.load(path, map_location=method.args.device)
            )
    res = method.test(test_loader, topk=(1, 5))
    return {"test_acc": res["top1"], "test_top5": res["top5"]}
