"""NMTune: a residual MLP and a linear head on a frozen, noisily pre-trained encoder, trained with CE
plus three feature regularisers; ``src/nml_tune.py`` of Hhhhhhao/Noisy-Model-Learning @ f249dce.
The README's command runs as written::

    python methods/nmtune/nml_tune.py --seed=3907 --train-dataset=CIFAR10 --eval-datasets=CIFAR10 \\
        --model=resnet50_noise_5 --model_source=timm --epochs=30 --lr=0.001 --wd=0.0001 \\
        --batch-size=64 --save SAVE_PATH --results SAVE_PATH/results.jsonl --data-location=DATA_DIR \\
        --template=openai_imagenet_template --freeze-encoder --load-zero-shot-classifier False \\
        --use-weak-strong=False --mlp-with-res=True --mlp-res-scale-init=1.0 --mlp-after-ratio=4 \\
        --mlp-after-layers=1 --mlp-after-layers=1 --mse-loss-weight=1.0 --cov-loss-weight=0.04 \\
        --svd-loss-weight=0.001

Each step encodes two fresh train-pipeline views of the batch (``[x_w; x_s]``, no gradient through a
frozen encoder, whose BN stays in eval mode), then ``Z = F + s ⊙ MLP(F)`` (MLP BN in train mode on
the 2B rows), ``logits = head(Z)`` and ``L = CE + 1·MSE + 0.04·COV − 0.001·mean(ŝ_1..5)``. AdamW over
MLP, scale and head (and the encoder without ``--freeze-encoder``), per-step cosine. After every
epoch: evaluate (test features are encoded once when the encoder is frozen), ``eval.jsonl``, one
``results.jsonl`` line, checkpoint ``last.pth``.
"""

from __future__ import annotations

import argparse
import contextlib
import sys
import time
from pathlib import Path

import torch

if __package__ in (None, ""):  # run as a script: make `lnl` and `methods` importable
    sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from lnl.engine import default_setup, parse_with_config
from lnl.engine.train_loop import FiniteGuard, autocast, progress, set_lr
from methods.nmtune import nmtune_lib as L
from methods.nmtune.downstream import (
    Downstream,
    cached_features,
    encode_split,
    load_downstream,
    top1,
)
from methods.nmtune.encoders import ImageEncoder, ResidualMLP
from methods.nmtune.regularisers import LossWeights, nmtune_objective
from methods.nmtune.views import batches, cosine_lr, epoch_generator, train_view


def get_args_parser() -> argparse.ArgumentParser:
    p = L.get_args_parser("NMTune (nml_tune.py)", lr=1e-3, template="openai_imagenet_template")
    L.add_nmtune_flags(p)
    return p


class Tuner(torch.nn.Module):
    """Encoder → residual MLP → head; ``features`` returns ``(F, Z)``."""

    def __init__(
        self, encoder: ImageEncoder, mlp: ResidualMLP, head: torch.nn.Linear, frozen: bool
    ):
        super().__init__()
        self.encoder, self.mlp, self.head, self.frozen = encoder, mlp, head, frozen

    def features(self, x: torch.Tensor, amp: bool) -> tuple[torch.Tensor, torch.Tensor]:
        grad = contextlib.nullcontext() if not self.frozen else torch.no_grad()
        with grad, autocast(x.device, amp):
            feats = self.encoder(x).float()
        return feats, self.mlp(feats)


def train_step(
    model: Tuner,
    optimizer,
    views: torch.Tensor,
    labels: torch.Tensor,
    weights: LossWeights,
    amp: bool = False,
) -> tuple[torch.Tensor, dict]:
    """One NMTune step on the stacked views ``[x_w; x_s]``: the objective, backward, the optimiser."""
    feats, z = model.features(views, amp)
    loss, parts = nmtune_objective(feats, z, model.head(z), labels, weights)
    optimizer.zero_grad(set_to_none=True)
    loss.backward()
    optimizer.step()
    return loss.detach(), parts


def train_epoch_fn(args, model: Tuner, images: torch.Tensor, labels: torch.Tensor, optimizer):
    """One NMTune epoch: two views per image, the objective of ``nmtune_objective``."""
    weights = LossWeights(args.mse_loss_weight, args.cov_loss_weight, args.svd_loss_weight)
    prep = model.encoder.preprocess

    def train_epoch(epoch: int) -> dict:
        model.train()
        model.encoder.eval()  # the original re-sets the backbone to eval mode every epoch
        g = epoch_generator(args.device, args.seed, epoch)
        order = batches(len(images), args.batch_size, g, L.shuffles(args))
        nb, total = len(order), args.epochs * len(order)
        sums: dict[str, torch.Tensor] = {}
        guard = FiniteGuard(f"epoch {epoch}")
        for i, idx in enumerate(progress(order, desc=f"nmtune {epoch}", total=nb)):
            set_lr(optimizer, cosine_lr(epoch * nb + i, args.lr, args.warmup_length, total))
            x = images[idx]
            views = torch.cat(
                [train_view(x, prep, g), train_view(x, prep, g, args.use_weak_strong)]
            )
            loss, parts = train_step(model, optimizer, views, labels[idx], weights, args.amp)
            guard.watch(i, loss=loss, **parts)
            for k, v in {"loss": loss, **parts}.items():
                sums[k] = sums.get(k, 0) + v
        # One host sync per epoch.
        guard.check()
        return {f"train_{k}": float(v) / nb for k, v in sums.items()} | {
            "lr": optimizer.param_groups[0]["lr"]
        }

    return train_epoch


def evaluate_fn(args, model: Tuner, data: Downstream):
    """Top-1 on every eval split: frozen encoder → test features encoded once, on the device."""
    bs = max(args.batch_size, 256)
    cached = (
        {
            name: (cached_features(args, model.encoder, s), s.labels.to(args.device))
            for name, s in data.evals.items()
        }
        if model.frozen
        else {}
    )

    @torch.no_grad()
    def evaluate() -> dict:
        model.eval()
        out = {}
        for name, split in data.evals.items():
            if name in cached:
                feats, y = cached[name]
            else:
                feats = encode_split(model.encoder, split.images, args.device, bs, args.amp)
                y = split.labels.to(args.device)
            out[name] = top1(model.head(model.mlp(feats)), y)
        return out

    return evaluate


def main(args: argparse.Namespace) -> dict:
    """Tune, evaluating and checkpointing every epoch; returns the results record."""
    started = time.perf_counter()
    L.resolve_paths(args, "nmtune")
    log = default_setup(args, supports=("amp",))
    L.ensure_pretrained(args, log)
    encoder = L.build_frozen_or_tuned_encoder(args)
    data = load_downstream(args, log)
    d = encoder.num_features
    mlp = ResidualMLP(
        d, args.mlp_after_ratio, args.mlp_after_layers, args.mlp_with_res, args.mlp_res_scale_init
    )
    model = Tuner(
        encoder, mlp, L.build_head(args, encoder, data.train, log), args.freeze_encoder
    ).to(args.device)
    params = [p for p in model.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(params, lr=args.lr, weight_decay=args.wd)
    images = data.train.images[data.keep.cpu()].to(args.device).permute(0, 3, 1, 2)
    modules = {"mlp": mlp, "head": model.head} | (
        {} if args.freeze_encoder else {"encoder": encoder}
    )
    job = L.Job(
        "nmtune",
        modules,
        optimizer,
        train_epoch_fn(args, model, images, data.labels, optimizer),
        evaluate_fn(args, model, data),
        L.noise_label(args, encoder),
        0.0,
    )
    job.setup_seconds = time.perf_counter() - started
    log.info(
        "nmtune: %d-d features, MLP %s, %d trainable parameters",
        d,
        list(mlp.mlp_after),
        sum(p.numel() for p in params),
    )
    return L.run_job(args, log, job)


if __name__ == "__main__":
    main(parse_with_config(get_args_parser()))
