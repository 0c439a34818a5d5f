"""DivideMix-only logic for Clothing1M and WebVision (``LiJunnan1992/DivideMix: Train_clothing1M.py``,
``Train_webvision.py`` @ d9d3058; specs/plremix_dividemix.md §6.3): the file-list co-divide with one
LR milestone, per-net 32k class-balanced eval subsets (Clothing1M), the labeled-only MixMatch forward
(Clothing1M) and best-validation model selection (Clothing1M). The loop is ``lnl.codivide.cotrain``.
"""

from __future__ import annotations

import copy
import dataclasses
from pathlib import Path

import torch

from lnl.codivide import steps as cd
from lnl.codivide.cotrain import CoDivide
from lnl.codivide.files import FileListMixin, Recipe
from lnl.data.file_views import CLOTHING1M_CROPS, WEBVISION_CROPS
from lnl.engine.checkpoint import atomic_save
from lnl.models import create_model

# DivideMix Clothing1M: eval subsets of num_batches (1000) × bs (32) per net; warm-up 64k at batch 64.
CLOTHING1M = Recipe(CLOTHING1M_CROPS, 64_000, 32_000)
WEBVISION = Recipe(dataclasses.replace(WEBVISION_CROPS, random_resized_crop=True), None, None)


class FileDivideMix(FileListMixin, CoDivide):
    """DivideMix on a file-list dataset: LR ÷10 at ``milestone``, weak views only.

    Args:
        recipe: image and subset sizes.
        milestone: the LR step epoch (40 for both).
        penalty: NegEntropy in the warm-up (Clothing1M yes, WebVision no).
        labeled_only: Clothing1M forwards only the labeled mixed rows and drops L_u.
        tf: ``transforms_for`` output.
    """

    def __init__(self, args, nets, optimizers, data, log, *, recipe, milestone, penalty, labeled_only, tf):
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


def build_nets(args, name: str, num_classes: int, **kwargs) -> tuple[list, list]:
    """Two ``create_model(name)`` nets (``--arch`` overrides) and SGD(momentum 0.9, ``weight_decay``)."""
    nets, optimizers = [], []
    for _ in range(2):
        net = create_model(args.arch or name, num_classes=num_classes, **({} if args.arch else kwargs))
        net = net.to(args.device)
        if args.device.type == "cuda":
            net = net.to(memory_format=torch.channels_last)
        optimizers.append(torch.optim.SGD(net.parameters(), lr=args.lr, momentum=0.9, weight_decay=args.weight_decay))
        nets.append(torch.compile(net) if args.compile else net)
    return nets, optimizers


def track_best(method: FileDivideMix, val_loader, out: Path) -> dict:
    """Validate each net; save a net's weights to ``<out>/best_net{k}.pth`` when its accuracy improves
    (the original's ``./checkpoint/<id>_net{k}.pth.tar``)."""
    metrics = {}
    for k, net in enumerate(method.nets):
        acc = method.test_single(net, val_loader)
        metrics[f"val_acc_net{k + 1}"] = acc
        if acc > method.state["best"][k]:
            method.state["best"][k] = acc
            atomic_save(copy.deepcopy(getattr(net, "_orig_mod", net).state_dict()), out / f"best_net{k + 1}.pth")
    metrics["val_acc"] = method.test(val_loader)["top1"]
    return metrics


def test_best(method: FileDivideMix, test_loader, out: Path) -> dict:
    """Load each net's best-validation weights and test their ensemble (top-1/5)."""
    for k, net in enumerate(method.nets):
        path = out / f"best_net{k + 1}.pth"
        if path.exists():
            getattr(net, "_orig_mod", net).load_state_dict(torch.load(path, map_location=method.args.device))
    res = method.test(test_loader, topk=(1, 5))
    return {"test_acc": res["top1"], "test_top5": res["top5"]}
