"""Linear probing (``--freeze-encoder``) and full fine-tuning of a pre-trained encoder: NMTune's
baseline, ``src/finetune.py`` of Hhhhhhao/Noisy-Model-Learning @ f249dce.

The README's command runs as written (``--num-shots=None`` and ``--results`` included)::

    python methods/nmtune/finetune.py --seed=3907 --train-dataset=CIFAR10 --eval-datasets=CIFAR10 \\
        --model=resnet50_noise_5 --model_source=timm --epochs=30 --lr=0.01 --wd=0.0001 \\
        --batch-size=64 --save SAVE_PATH --results SAVE_PATH/results.jsonl --data-location=DATA_DIR \\
        --freeze-encoder --template=simple_template --load-zero-shot-classifier False --num-shots=None

Linear probe: the train split is encoded once with the val pipeline (the original re-encoded it
every epoch without ``--cache-dir``: same features, 30x the work) and the head is trained on those
features, on the device. ``--cache-dir`` also keeps them on disk. Without ``--freeze-encoder`` the
encoder and head train end to end on the train pipeline. Writes ``last.pth`` (resume),
``eval.jsonl`` and the original's per-epoch ``results.jsonl`` lines.
"""

from __future__ import annotations

import argparse
import math
import sys
import time
from collections.abc import Callable
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import Tensor

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
from methods.nmtune.encoders import ImageEncoder
from methods.nmtune.views import batches, cosine_lr, epoch_generator, train_view


def get_args_parser() -> argparse.ArgumentParser:
    p = L.get_args_parser(
        "Linear probing / fine-tuning (NMTune's finetune.py)",
        lr=None,
        wd=None,
        template="simple_template",
    )
    p.add_argument("--ls", type=float, default=0.0, help="label smoothing")
    return p


# Linear probe: the README's finetune.py command; full fine-tuning: the original's argparse defaults
# (src/args.py), as the README has no full fine-tuning command.
PROBE_DEFAULTS = {"lr": 0.01, "wd": 1e-4}
FULL_DEFAULTS = {"lr": 0.001, "wd": 0.1}


def resolve_optimiser_defaults(args: argparse.Namespace, full: bool) -> None:
    """``--lr``/``--wd`` left unset: the probe's README values, or the original's for full fine-tuning."""
    for key, value in (FULL_DEFAULTS if full else PROBE_DEFAULTS).items():
        if getattr(args, key) is None:
            setattr(args, key, value)


def _train_loop(args, optimizer, batches, loss_of, epoch: int, desc: str) -> dict:
    """One epoch over ``batches`` with the per-step cosine schedule; ``loss_of(idx)`` gives the loss."""
    nb = len(batches)
    total = args.epochs * nb
    loss_sum = torch.zeros((), device=args.device)
    guard = FiniteGuard(f"{desc} epoch {epoch}")
    for i, idx in enumerate(progress(batches, desc=f"{desc} {epoch}", total=nb)):
        set_lr(optimizer, cosine_lr(epoch * nb + i, args.lr, args.warmup_length, total))
        loss = loss_of(idx)
        guard.watch(i, loss=loss)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        loss_sum += loss.detach()
    guard.check()
    return {"train_loss": float(loss_sum) / nb, "lr": optimizer.param_groups[0]["lr"]}


def linear_probe_job(args, encoder: ImageEncoder, head: torch.nn.Linear, data: Downstream) -> L.Job:
    """Train ``head`` on cached frozen features."""
    feats = cached_features(args, encoder, data.train, data.keep)
    evals = {
        name: (cached_features(args, encoder, s), s.labels.to(args.device))
        for name, s in data.evals.items()
    }
    optimizer = torch.optim.AdamW(head.parameters(), lr=args.lr, weight_decay=args.wd)

    def train_epoch(epoch: int) -> dict:
        head.train()
        g = epoch_generator(args.device, args.seed, epoch)
        order = batches(len(feats), args.batch_size, g, L.shuffles(args, linear_probe=True))
        return _train_loop(
            args,
            optimizer,
            order,
            lambda idx: F.cross_entropy(
                head(feats[idx]), data.labels[idx], label_smoothing=args.ls
            ),
            epoch,
            "probe",
        )

    @torch.no_grad()
    def evaluate() -> dict:
        head.eval()
        return {name: top1(head(f), y) for name, (f, y) in evals.items()}

    return L.Job("linear-probe", {"head": head}, optimizer, train_epoch, evaluate, "", 0.0)


def finetune_job(
    args,
    encoder: ImageEncoder,
    head: torch.nn.Linear,
    data: Downstream,
    *,
    method: str = "finetune",
    regulariser: Callable[[Tensor], Tensor] | None = None,
) -> L.Job:
    """Train encoder and head end to end on the train pipeline (BN in train mode, as the original);
    ``regulariser(features)`` is added to the CE loss (``nml_finetune.py``'s feature terms)."""
    images = data.train.images[data.keep.cpu()].to(args.device).permute(0, 3, 1, 2)
    params = list(encoder.parameters()) + list(head.parameters())
    optimizer = torch.optim.AdamW(params, lr=args.lr, weight_decay=args.wd)

    def loss_of(idx, g):
        x = train_view(images[idx], encoder.preprocess, g)
        with autocast(args.device, args.amp):
            feats = encoder(x).float()
        loss = F.cross_entropy(head(feats), data.labels[idx], label_smoothing=args.ls)
        return loss if regulariser is None else loss + regulariser(feats)

    def train_epoch(epoch: int) -> dict:
        encoder.train(), head.train()
        g = epoch_generator(args.device, args.seed, epoch)
        order = batches(len(images), args.batch_size, g, L.shuffles(args))
        return _train_loop(args, optimizer, order, lambda idx: loss_of(idx, g), epoch, "finetune")

    @torch.no_grad()
    def evaluate() -> dict:
        head.eval()
        out = {}
        for name, split in data.evals.items():
            f = encode_split(
                encoder, split.images, args.device, max(args.batch_size, 256), args.amp
            )
            out[name] = top1(head(f), split.labels.to(args.device))
        return out

    return L.Job(
        method, {"encoder": encoder, "head": head}, optimizer, train_epoch, evaluate, "", 0.0
    )


def main(
    args: argparse.Namespace,
    *,
    method: str | None = None,
    regulariser: Callable[[Tensor], Tensor] | None = None,
) -> dict:
    """Probe or fine-tune, evaluating and checkpointing every epoch; returns the results record.
    ``method``/``regulariser``: ``nml_finetune.py``'s name and feature terms (full fine-tuning only)."""
    started = time.perf_counter()
    method = method or ("linear-probe" if args.freeze_encoder else "finetune")
    resolve_optimiser_defaults(args, full=not args.freeze_encoder)
    L.resolve_paths(args, method)
    log = default_setup(args, supports=("amp",))
    L.ensure_pretrained(args, log)
    encoder = L.build_frozen_or_tuned_encoder(args)
    data = load_downstream(args, log)
    head = L.build_head(args, encoder, data.train, log)
    if args.freeze_encoder:
        job = linear_probe_job(args, encoder, head, data)
    else:
        job = finetune_job(args, encoder, head, data, method=method, regulariser=regulariser)
    job.noise = L.noise_label(args, encoder)
    job.setup_seconds = time.perf_counter() - started
    log.info(
        "%s: %d-d features, %d steps per epoch",
        job.method,
        encoder.num_features,
        math.ceil(len(data.keep) / args.batch_size),
    )
    return L.run_job(args, log, job)


if __name__ == "__main__":
    main(parse_with_config(get_args_parser()))
