"""The two-network co-divide epoch shared by DivideMix and PLReMix (DivideMix ``Train_cifar.py``):
warm-up, then per epoch an evaluation pass and a GMM for each net, each net trained with
MixMatch on the *other* net's division, and the ensemble test.

``CoDivide`` implements DivideMix on in-memory data (GPU-resident loaders). PLReMix subclasses it
and overrides the hooks (``eval_forward``, ``gmm_input``, ``warmup_extra``, ``semi_extra``,
``after_warmup``, ``after_semi``); the file-list datasets (Clothing1M, WebVision) override the loader
hooks (``warmup_loader``, ``eval_loader``, ``semi_loaders``).

``run_epoch(epoch)`` is a pure function of the nets, the optimizers, ``state_dict()`` and the global
RNG states, so a run resumed from a checkpoint written after epoch e repeats epoch e + 1 exactly.
"""

from __future__ import annotations

import argparse
import logging
import math
from collections.abc import Callable
from typing import Any

import torch
from torch import Tensor

from lnl.codivide import steps as cd
from lnl.engine.runner import Runner, RunRecord
from lnl.engine.train_loop import set_lr

HISTORY = 5  # DivideMix averages the last 5 epochs' losses at 90 % noise


class CoDivide:
    """DivideMix's CIFAR epoch (``LiJunnan1992/DivideMix: Train_cifar.py @ d9d3058``).

    Args:
        args: the entry point's flags (``lr``, ``batch_size``, ``num_epochs``, ``warm_up``, ``T``,
            ``alpha``, ``lambda_u``, ``p_threshold``, ``noise_mode``, ``r``, ``seed``, ``amp``,
            ``gmm_backend``).
        nets, optimizers: the two networks and their SGD optimizers.
        data: ``lnl.engine.data.NoisyData`` (GPU-resident train/test loaders).
        log: logger.
    """

    name = "dividemix"
    semi_views: tuple[str, ...] = ("weak", "weak")
    warmup_views: tuple[str, ...] = ("weak",)
    mix_views = (0, 1)
    drop_last = False  # DivideMix's loaders keep the last partial batch; PLReMix's drop it
    labeled_only = False  # DivideMix Clothing1M: forward the labeled mixed rows only, no L_u
    eval_batch_size = 1000
    gmm_sklearn_dtype = torch.float64  # DivideMix's sklearn converts its float32 tensor to float64

    def __init__(
        self, args: argparse.Namespace, nets: list, optimizers: list, data, log: logging.Logger
    ):
        self.args, self.nets, self.optimizers, self.data, self.log = (
            args,
            nets,
            optimizers,
            data,
            log,
        )
        self.num_classes = data.num_classes
        self.noisy = data.noisy.labels.to(args.device)
        # ground truth, for the AUC only: the clean labels where known (Clothing1M: -1 where unknown)
        truth = getattr(data.train, "clean_targets", None)
        truth = (truth if truth is not None else data.train.targets).to(args.device)
        self.clean, self.known = self.noisy == truth, truth >= 0
        self.state: dict[str, Any] = {"history": [[], []]}

    # ----------------------------------------------------------------- schedules
    def lr_at(self, epoch: int) -> float:
        """LR ÷10 from ``--lr_milestone`` (DivideMix: epoch 150 whatever ``--num_epochs``; ``half``:
        ``num_epochs // 2``)."""
        milestone = getattr(self.args, "lr_milestone", "half")
        step = self.args.num_epochs // 2 if milestone == "half" else int(milestone)
        return self.args.lr / 10 if epoch >= step else self.args.lr

    @property
    def warmup_penalty(self) -> bool:
        """NegEntropy in the warm-up for asym noise only (DivideMix CIFAR, PLReMix CIFAR)."""
        return self.args.noise_mode == "asym"

    # ----------------------------------------------------------------- loaders (in-memory data)
    def _loader(
        self, indices, batch_size: int, views, tag: int, epoch: int, shuffle=True, drop_last=None
    ):
        size = len(self.noisy) if indices is None else len(indices)
        drop_last = self.drop_last if drop_last is None else drop_last
        drop_last = cd.keep_partial_batch(
            size, batch_size, drop_last, cd.loader_name(tag), self.log
        )
        loader = cd.subset_loader(
            self.data.train_loader,
            indices,
            batch_size,
            views=views,
            seed=int(self.args.seed) * 100 + tag,
            shuffle=shuffle,
            drop_last=drop_last,
        )
        loader.set_epoch(epoch)
        return loader

    def warmup_loader(self, epoch: int, k: int):
        """All samples, batch 2·bs, shuffled (the originals' warm-up loader)."""
        return self._loader(None, 2 * self.args.batch_size, self.warmup_views, 10 + k, epoch)

    def eval_loader(self, epoch: int, k: int) -> tuple[Any, Tensor]:
        """All samples in order with the val transform, and their dataset indices (one per row)."""
        loader = self._loader(
            None, self.eval_batch_size, ("none",), 20 + k, epoch, shuffle=False, drop_last=False
        )
        return loader, torch.arange(len(self.noisy), device=self.noisy.device)

    def semi_loaders(self, epoch: int, k: int, labeled: Tensor, unlabeled: Tensor):
        """Labeled and unlabeled loaders of net ``k``'s epoch (the unlabeled one is cycled)."""
        bs = self.args.batch_size
        lab = self._loader(labeled, bs, self.semi_views, 30 + k, epoch)
        if len(unlabeled) == 0:  # every sample is clean: the originals crash; reuse the labeled set
            unlabeled = labeled
        unl = self._loader(unlabeled, bs, self.semi_views, 40 + k, epoch * 10_000)
        return lab, unl

    # ----------------------------------------------------------------- method hooks
    def eval_forward(self, net, images: Tensor) -> dict:
        return {"logits": net(images)}

    def gmm_input(self, k: int, outs: dict) -> Tensor:
        """Min-max normalised CE; at r = 0.9 the mean of the last 5 epochs' (DivideMix)."""
        loss = cd.minmax(cd.per_sample_ce(outs["logits"], outs["labels"]))
        history = self.state["history"][k]
        history.append(loss)
        del history[:-HISTORY]
        if math.isclose(float(self.args.r), 0.9):
            loss = torch.stack(history).mean(0)
        return loss[:, None]

    def warmup_extra(self, k: int):
        return None

    def semi_extra(self, k: int, other: dict):
        return None

    def after_warmup(self, epoch: int) -> dict:
        return {}

    def after_semi(self, k: int, own: dict, other: dict, epoch: int) -> dict:
        return {}

    # ----------------------------------------------------------------- the epoch
    def evaluate_train(self, k: int, epoch: int) -> dict:
        """Net ``k``'s evaluation pass and GMM: outputs by row plus ``prob`` by dataset index."""
        loader, index = self.eval_loader(epoch, k)
        outs = cd.collect_outputs(
            self.nets[k],
            loader,
            len(index),
            forward=self.eval_forward,
            rows=self.rows_lookup(index),
            amp=self.args.amp,
        )
        x = self.gmm_input(k, outs)
        prob_rows = cd.clean_probability(
            x,
            backend=self.args.gmm_backend,
            seed=cd.gmm_seed(self.args.seed, epoch, k),
            sklearn_dtype=self.gmm_sklearn_dtype,
        )
        prob = torch.zeros(len(self.noisy), device=prob_rows.device)
        prob[index] = prob_rows
        outs.update(index=index, prob=prob, prob_rows=prob_rows)
        return outs

    def rows_lookup(self, index: Tensor) -> Tensor | None:
        """``Tensor[N_dataset]`` dataset index -> row of ``index`` (None when ``index`` is all of them,
        in order, as on CIFAR)."""
        if len(index) == len(self.noisy):
            return None
        rows = torch.full((len(self.noisy),), -1, dtype=torch.long, device=index.device)
        rows[index] = torch.arange(len(index), device=index.device)
        return rows

    def warmup(self, epoch: int) -> dict:
        metrics = {}
        for k in (0, 1):
            res = cd.warmup_epoch(
                self.nets[k],
                self.optimizers[k],
                self.warmup_loader(epoch, k),
                penalty=self.warmup_penalty,
                amp=self.args.amp,
                extra_loss=self.warmup_extra(k),
                desc=f"warmup net{k + 1} e{epoch}",
            )
            metrics.update(
                {f"net{k + 1}_warmup_ce": res["ce"], f"net{k + 1}_warmup_extra": res["extra"]}
            )
        if epoch == self.args.warm_up - 1:
            metrics.update(self.after_warmup(epoch))
        return metrics

    def train(self, epoch: int) -> dict:
        outs = [self.evaluate_train(k, epoch) for k in (0, 1)]
        metrics = {}
        for k, o in ((0, 1), (1, 0)):
            labeled, unlabeled = cd.divide(outs[o]["prob_rows"], self.args.p_threshold)
            labeled, unlabeled = outs[o]["index"][labeled], outs[o]["index"][unlabeled]
            lab, unl = self.semi_loaders(epoch, k, labeled, unlabeled)
            res = cd.semi_epoch(
                self.nets[k],
                self.nets[o],
                self.optimizers[k],
                lab,
                unl,
                outs[o]["prob"],
                epoch=epoch,
                warm_up=self.args.warm_up,
                lambda_u=self.args.lambda_u,
                temperature=self.args.T,
                alpha=self.args.alpha,
                num_classes=self.num_classes,
                mix_views=self.mix_views,
                amp=self.args.amp,
                labeled_only=self.labeled_only,
                extra_loss=self.semi_extra(k, outs[o]),
                desc=f"train net{k + 1} e{epoch}",
            )
            res.pop("steps")
            metrics.update({f"net{k + 1}_{name}": v for name, v in res.items()})
            metrics[f"net{k + 1}_labeled"] = len(labeled)  # trained on the other net's division
            metrics.update(self.after_semi(k, outs[k], outs[o], epoch))
        for k in (0, 1):
            idx = outs[k]["index"]
            known = self.known[idx]
            metrics[f"net{k + 1}_auc"] = cd.roc_auc(
                outs[k]["prob_rows"][known], self.clean[idx][known]
            )
        return metrics

    def run_epoch(self, epoch: int) -> dict:
        """One epoch (warm-up or co-divide training), returning its training metrics."""
        lr = self.lr_at(epoch)
        for opt in self.optimizers:
            set_lr(opt, lr)
        metrics = self.warmup(epoch) if epoch < self.args.warm_up else self.train(epoch)
        return {"lr": lr, **metrics}

    def test(self, loader, topk=(1,)) -> dict:
        """Top-k accuracy of the two-net ensemble (summed logits)."""
        return cd.ensemble_eval(self.nets, loader, topk=topk, amp=self.args.amp)

    def test_single(self, net, loader) -> float:
        """Top-1 accuracy of one net."""
        return cd.ensemble_eval([net], loader, amp=self.args.amp)["top1"]

    # ----------------------------------------------------------------- checkpoint
    def state_dict(self) -> dict:
        return {k: v for k, v in self.state.items()}

    def load_state_dict(self, state: dict) -> None:
        dev = self.noisy.device
        self.state = {k: (v.to(dev) if isinstance(v, Tensor) else v) for k, v in state.items()}
        self.state["history"] = [
            [t.to(dev) for t in h] for h in self.state.get("history", [[], []])
        ]


def fit(
    args: argparse.Namespace,
    method: CoDivide,
    log: logging.Logger,
    *,
    test: Callable[[], dict],
    result: dict,
    track: str = "test_acc",
    final: Callable[[], dict] | None = None,
    logger_options: dict | None = None,
) -> dict:
    """Run (or resume) ``method`` for epochs ``0..args.num_epochs`` inclusive, as the originals' loops.

    Every epoch: ``method.run_epoch``, then ``test()`` (the ensemble's metrics, e.g. ``test_acc``),
    one ``eval.jsonl`` line and an atomic ``last.pth`` (both nets, optimizers, RNG states,
    ``method.state_dict()``). ``--resume auto`` continues from it (``lnl.engine.runner.Runner``).

    Args:
        args: flags (``out``, ``resume``, ``num_epochs``, ``tensorboard``, ``wandb``, ``offline``).
        method: the co-divide method object.
        log: logger.
        test: returns the epoch's evaluation metrics; ``metrics[track]`` is tracked (best and last).
        result: fields of the results record (method, dataset, noise, seed, ...).
        track: the metric recorded as ``test_acc``/``best_acc`` (Clothing1M: ``val_acc``).
        final: evaluated once after the last epoch (e.g. Clothing1M's test); merged into the record.
        logger_options: ``MetricLogger`` keywords over the flags' (PLReMix's ``--wo_wandb``, ``--resume_id``).

    Returns:
        The results record, also appended to ``<out>/results.jsonl``.
    """
    models = {f"net{k + 1}": n for k, n in enumerate(method.nets)}
    optims = {f"optimizer{k + 1}": o for k, o in enumerate(method.optimizers)}
    # method_state = {"run": the runner's state, "method": the method's}, as checkpoints have always held
    runner = Runner(
        args,
        log,
        models=models,
        optimizers=optims,
        state={"last": {}},
        length_flag="num_epochs",  # the LR step and PLReMix's α read --num_epochs
        pack=lambda run: {"run": dict(run), "method": method.state_dict()},
        unpack=lambda saved: saved["run"],
        logger_options=logger_options,
    )
    ckpt = runner.resume()
    if ckpt is not None:
        method.load_state_dict(ckpt["method_state"]["method"])
    run = runner.state

    def step(epoch: int) -> dict:
        metrics = {**method.run_epoch(epoch), **test()}
        run["best_acc"] = max(run["best_acc"], metrics[track])
        return metrics

    def record(epoch: int, metrics: dict) -> None:
        run["last"] = metrics
        runner.log_metrics(epoch, metrics)

    runner.run(args.num_epochs + 1, step, record)
    last = run["last"]
    aucs = [last[k] for k in ("net1_auc", "net2_auc") if k in last]
    line = {
        **result,
        "epochs": args.num_epochs + 1,
        "test_acc": last.get(track),
        "best_acc": run["best_acc"],
        "auc": sum(aucs) / len(aucs) if aucs else None,
        **{
            k: v
            for k, v in last.items()
            if k.startswith(("test_", "val_", "imagenet_")) and k != track
        },
        **(final() if final is not None else {}),
        "seconds": runner.seconds,
        "run_dir": str(args.out),
    }
    return runner.finish(RunRecord.from_line(line))
