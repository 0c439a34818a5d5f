"""The LRA-Diffusion run shared by the four entry points: one parser whose defaults come from a
per-dataset ``Recipe`` (the originals' flags and hard-coded values), and
``main(args)``: build data and the kNN retrieval table once, train the conditional diffusion model,
evaluate by DDIM, checkpoint every epoch (resumable from ``<out>/last.pth``).

Defaults reproduce the original code; the paper-vs-code choices and bug fixes (README's table) are opt-in
flags (``--fix_all`` sets every one in ``FIXES``).
"""

from __future__ import annotations

import argparse
import contextlib
import hashlib
from dataclasses import dataclass
from pathlib import Path

import torch
import torch.nn as nn
import torch.nn.functional as F

from lnl.engine import default_argument_parser, default_setup
from lnl.engine.data import add_subset_flag
from lnl.engine.ema import EMA
from lnl.engine.runner import Runner, RunRecord, subset_of
from lnl.engine.threads import cpu_threads, small_run_threads
from lnl.engine.train_loop import DeviceTimer, FiniteGuard, autocast, progress, set_lr
from methods.lra import lra_data as D
from methods.lra import lra_lib as L
from methods.lra.lra_loader import OriginalLoader, draw_int64

METHOD = "lra"
FIXES = (
    "train_encoder",
    "use_ema",
    "fix_lr_horizon",
    "exclude_self",
    "fix_ddim_steps",
    "fix_ddim_output",
    "predict_argmax",
    "fix_selection",
    "keep_last_batch",
    "dataset_norm",
)


def data_parallel_ids(requested: list[int], device: int, visible: int) -> list[int]:
    """The GPUs DataParallel may use: the requested ones that exist, the model's device first (it must
    be device_ids[0]). The scripts' default ``0 1 2 3`` crashed the original on fewer than 4 GPUs."""
    ids = [i for i in dict.fromkeys(requested) if 0 <= i < visible]
    if device not in ids:
        return []
    return [device] + [i for i in ids if i != device]


@dataclass
class Recipe:
    """One original script's defaults, including the values it hard-codes."""

    title: str
    dataset: str
    noise_type: str
    nepoch: int
    batch_size: int
    num_workers: int
    warmup_epochs: int
    feature_dim: int
    k: int
    fp_encoder: str
    diff_encoder: str
    # count-weighted kNN loss weights (CIFAR, Food) vs uniform (Clothing1M, WebVision)
    weighted: bool
    train_encoder: bool  # the CIFAR/Food optimisers leave the image encoder out (A.9.2)
    lr_warmup: float | None  # hard-coded warm-up (None: --warmup_epochs)
    lr_horizon: float | None  # hard-coded cosine horizon (None: --nepoch)
    selection: str  # "val", "val_test_tracker" (Clothing1M's bug), "best_test" (Food), "last"
    val_split: str | None  # "holdout" (last --val_size training images), a split name, or None
    test_split: str
    eval_freq: int
    eval_from_warmup: bool
    val_size: int | None = 0  # None: 5000 for CIFAR, else 0
    samples_per_class: int = 0
    gpu_devices: bool = False
    # "food": prepare_knn's k + 1 nearest, self first, no own-label column
    table_layout: str = "own_last"
    # the original's val/test loader batch (None: --batch_size)
    eval_batch_size: int | None = None
    # the original's Food/Clothing1M/WebVision train loaders drop the short batch
    drop_last: bool = False
    # CIFAR: SimCLR f_p computed online on the augmented batch (real_fp)
    online_simclr: bool = False


def get_args_parser(r: Recipe) -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(r.title, parents=[default_argument_parser()])
    a = p.add_argument_group(
        "original flags (puar-playground/LRA-diffusion @ 231e587)"
    ).add_argument
    a(
        "--noise_type",
        default=r.noise_type,
        help="file stem, <dataset>-<mode>-<rate>, a noise file, or 'real'",
    )
    a("--nepoch", "--num_epochs", dest="nepoch", type=int, default=r.nepoch)
    a("--batch_size", type=int, default=r.batch_size)
    a("--num_workers", type=int, default=r.num_workers, help="file-list decoding workers")
    a("--warmup_epochs", type=int, default=r.warmup_epochs)
    a(
        "--feature_dim",
        type=int,
        default=r.feature_dim,
        help="denoiser width F and image-encoder output",
    )
    a("--k", type=int, default=r.k, help="kNN neighbours")
    a("--ddim_n_step", type=int, default=10, help="DDIM steps at inference, 1..1000")
    a("--fp_encoder", default=r.fp_encoder, help=f"prior features: one of {D.FP_ENCODERS}")
    a(
        "--CLIP_type",
        default="ViT-L/14",
        help="the CLIP model the features were extracted with (recorded)",
    )
    a(
        "--diff_encoder",
        default=r.diff_encoder,
        help="resnet18/34/50 (CIFAR), resnet18_l/34_l/50_l, or an lnl model",
    )
    if r.gpu_devices:
        a(
            "--gpu_devices",
            type=int,
            nargs="+",
            default=[0, 1, 2, 3],
            help="DataParallel over these GPUs",
        )
    extra = p.add_argument_group("lnl additions")
    b = extra.add_argument
    add_subset_flag(extra)  # --subset N (lra_data.subset_splits; CIFAR and digits only)
    b("--dataset", default=r.dataset, help="the dataset of a noise file given by path")
    b("--data_path", default=None, help="the dataset's folder (default: $LNL_DATA/<dataset>)")
    b(
        "--feature_file",
        default=None,
        help="extract_features.py train prefix (default: features/<dataset>_train_<fp_encoder>)",
    )
    b(
        "--noise_dir",
        default=None,
        help="folder of the original noise files (default: see lra_data.noise_dirs)",
    )
    b(
        "--val_size",
        type=int,
        default=r.val_size,
        help="held-out clean training images (CIFAR: 5000)",
    )
    b("--val_split", default=r.val_split, help="'holdout', a split name, or none")
    b("--test_split", default=r.test_split)
    b(
        "--eval_batch_size",
        type=int,
        default=r.eval_batch_size,
        help="val/test batch (the original's: CIFAR --batch_size, Food 512, Clothing1M 400, WebVision 512)",
    )
    b(
        "--eval_freq",
        type=int,
        default=r.eval_freq,
        help="evaluate every N epochs (and at the last)",
    )
    b("--lr", type=float, default=1e-3, help="peak learning rate")
    b("--knn_weights", choices=("count", "uniform"), default="count" if r.weighted else "uniform")
    b("--knn_per_batch", action="store_true", help="search the kNN every batch, as the original")
    b("--knn_metric", choices=("l2", "cosine"), default="l2", help="the original: torch.cdist (l2)")
    b(
        "--samples_per_class",
        type=int,
        default=r.samples_per_class,
        help="class-balanced epoch subset",
    )
    b(
        "--encoder_weights",
        default="IMAGENET1K_V1",
        help="torchvision tag for *_l encoders, or none",
    )
    b("--ema_decay", type=float, default=0.9999)
    b("--seed", type=int, default=123)
    b(
        "--precomputed_fp",
        action="store_true",
        help="CIFAR/SimCLR: read un-augmented features from files instead of the online prior (fast)",
    )
    b(
        "--fast_loader",
        action="store_true",
        help="CIFAR: augment on the device with the loader's own generator (not the original's DataLoader draws)",
    )
    b(
        "--simclr_weights",
        default=None,
        help="online SimCLR prior (default: model/SimCLR_128_<dataset>.pt)",
    )
    b(
        "--threads",
        type=int,
        default=None,
        help="CPU threads (default on CPU: 1 below 20k images, else unchanged)",
    )
    f = p.add_argument_group(
        "fixes and paper choices (all off: the original's behaviour)"
    ).add_argument
    f(
        "--train_encoder",
        action=argparse.BooleanOptionalAction,
        default=r.train_encoder,
        help="A.9.2: train the diffusion image encoder and eval() it at test time",
    )
    f("--use_ema", action="store_true", help="A.9.6: evaluate with the EMA weights")
    f(
        "--fix_lr_horizon",
        action="store_true",
        help="A.9.5: warm-up --warmup_epochs, cosine to 0 at --nepoch",
    )
    f(
        "--exclude_self",
        action="store_true",
        help="A.9.9: a sample is not its own neighbour (k others + own label)",
    )
    f(
        "--torchvision_init",
        action="store_true",
        help="CIFAR ResNet encoder with torchvision's init (the original: PyTorch's default)",
    )
    f(
        "--keep_last_batch",
        action="store_true",
        help="Food/Clothing1M/WebVision: keep the short last training batch (the original drops it)",
    )
    f(
        "--dataset_norm",
        action="store_true",
        help="CIFAR-100 with its own mean/std (the original normalises it with CIFAR-10's)",
    )
    f(
        "--fix_ddim_steps",
        action="store_true",
        help="A.9.11: exactly S evenly spaced steps ending at T-1",
    )
    f("--fix_ddim_output", action="store_true", help="issue #2: return ŷ_0 rather than y_{t-1}")
    f("--predict_argmax", action="store_true", help="argmax of the decoded label, not closest to 1")
    f(
        "--fix_selection",
        action="store_true",
        help="A.9.7: select on val only; no test-set selection",
    )
    f("--fix_all", action="store_true", help="all of: " + ", ".join(FIXES))
    p.set_defaults(recipe=r)
    return p


def resolve(args: argparse.Namespace) -> argparse.Namespace:
    """Turn the recipe's hard-coded values and the fix flags into the settings used."""
    r = vars(args).pop("recipe")  # not a flag: keeps args.yaml and the logs plain
    args.script = r.title
    if args.fix_all:
        for name in FIXES:
            setattr(args, name, True)
    if args.fp_encoder not in D.FP_ENCODERS:
        raise ValueError(
            f"unknown --fp_encoder {args.fp_encoder!r}; expected one of {D.FP_ENCODERS}"
        )
    L.ddim_timesteps(args.ddim_n_step, L.NUM_TIMESTEPS)  # raises on an out-of-range step count
    args.dataset = D.parse_noise_type(args).dataset  # raises on an unknown --noise_type
    if args.val_size is None:  # the original holds out the last 5k CIFAR images; digits has no val
        args.val_size = 5000 if args.noise_type.startswith("cifar") else 0
    if args.val_split in (None, "none") or (args.val_split == "holdout" and args.val_size == 0):
        args.val_split = None
    args.eval_batch_size = args.eval_batch_size or args.batch_size
    args.table_layout = r.table_layout
    # train_CIFAR.py's real_fp: SimCLR features are computed online on the augmented batch
    args.fp_online = r.online_simclr and args.fp_encoder == "SimCLR" and not args.precomputed_fp
    args.drop_last = r.drop_last and not args.keep_last_batch
    fixed = args.fix_lr_horizon
    args.lr_warmup = args.warmup_epochs if fixed or r.lr_warmup is None else r.lr_warmup
    args.lr_horizon = args.nepoch if fixed or r.lr_horizon is None else r.lr_horizon
    args.selection = r.selection
    if args.fix_selection:
        args.selection = {"val_test_tracker": "val", "best_test": "last"}.get(
            r.selection, r.selection
        )
    if args.val_split is None and args.selection == "val":
        args.selection = "last"
    args.eval_from = args.warmup_epochs if r.eval_from_warmup else 0
    return args


def default_out(args: argparse.Namespace) -> str:
    # a subset run gets its own folder: --resume auto must not pick up the full run's last.pth, or vice versa
    sub = f"-sub{args.subset}" if getattr(args, "subset", None) else ""
    return f"runs/{METHOD}/{args.noise_type.replace('/', '_')}-{args.fp_encoder}-s{args.seed}{sub}"


# ----------------------------------------------------------------------------------------------------
# The run
# ----------------------------------------------------------------------------------------------------


class Run:
    """The networks, optimiser, EMA and retrieval table of one run, with its train/eval steps."""

    def __init__(self, args: argparse.Namespace, data: D.LRAData, log):
        self.args, self.data, self.log = args, data, log
        dev = args.device
        fp_dim = 2048 if data.fp_encoder is not None else data.features["train"].shape[1]
        self.schedule = L.Schedule.cosine(L.NUM_TIMESTEPS, dev)
        self.timesteps = L.ddim_timesteps(
            args.ddim_n_step, L.NUM_TIMESTEPS, exact=args.fix_ddim_steps
        )
        # the original's construction order (model_diffusion.py: Diffusion builds the encoder, then the
        # denoiser), so that a seed gives its initial weights
        self.encoder = L.build_image_encoder(
            args.diff_encoder,
            args.feature_dim,
            args.encoder_weights,
            torchvision_init=args.torchvision_init,
        ).to(dev)
        self.denoiser = L.Denoiser(data.num_classes, fp_dim, args.feature_dim).to(dev)
        if data.fp_encoder is not None:
            D.online_features(
                args, data
            )  # prepare_fp_x, after the networks as in train_CIFAR.py's train()
        elif isinstance(data.loaders["train"], OriginalLoader):
            draw_int64()  # prepare_fp_x's DataLoader draws its base seed (train_CIFAR.py: train)
        params = list(self.denoiser.parameters())
        if args.train_encoder:
            params += list(self.encoder.parameters())
        self.optimizer = torch.optim.Adam(
            params, lr=1e-4, betas=(0.9, 0.999), eps=1e-8, weight_decay=0.0
        )
        self.ema = EMA(self.denoiser, args.ema_decay)
        self.db = data.features["train"][data.train_idx]
        # the kNN search's device time (the table once, or every batch with --knn_per_batch), recorded
        self.knn_timer = DeviceTimer(dev)
        self.table_from_cache = False
        online = (
            data.fp_encoder is not None
        )  # online queries: searched every batch, as the original
        self.table = None if args.knn_per_batch or online else self.retrieval_table()
        self.nets = self.parallel()

    def parallel(self) -> tuple[nn.Module, nn.Module]:
        """(denoiser, encoder), under DataParallel over ``--gpu_devices`` when several GPUs are given."""
        if self.args.device.type != "cuda":
            return self.denoiser, self.encoder
        requested = getattr(self.args, "gpu_devices", None) or []
        ids = data_parallel_ids(requested, self.args.device.index or 0, torch.cuda.device_count())
        if ids != list(requested):
            self.log.info(
                "--gpu_devices %s: DataParallel over %s (visible GPUs: %d, model on cuda:%d)",
                requested,
                ids or "none",
                torch.cuda.device_count(),
                self.args.device.index or 0,
            )
        if len(ids) > 1:
            return nn.DataParallel(self.denoiser, ids), nn.DataParallel(self.encoder, ids)
        return self.denoiser, self.encoder

    def retrieval_table(self) -> torch.Tensor:
        """Tensor[n, k + 1] of neighbour labels plus the own label, cached in ``<out>/knn_table.pt``."""
        a, noisy = self.args, self.data.noisy
        fingerprint = hashlib.sha256(
            self.db.double().sum().cpu().numpy().tobytes() + noisy.cpu().numpy().tobytes()
        ).hexdigest()
        key = {
            "k": a.k,
            "metric": a.knn_metric,
            "exclude_self": a.exclude_self,
            "layout": a.table_layout,
            "n": len(noisy),
            "fingerprint": fingerprint,
        }
        path = Path(a.out) / "knn_table.pt"
        if path.is_file():
            cached = torch.load(path, map_location="cpu", weights_only=True)
            if cached["key"] == key:
                self.table_from_cache = True
                return cached["table"].to(a.device)
        with self.knn_timer():
            table = L.neighbour_candidates(
                self.db,
                noisy,
                a.k,
                self.data.num_classes,
                metric=a.knn_metric,
                exclude_self=a.exclude_self,
                layout=a.table_layout,
                backend=a.knn_backend,
            )
        self.log.info(
            "kNN table (n=%d, k=%d, %s backend): %.3f s",
            len(noisy),
            a.k,
            a.knn_backend,
            self.knn_timer.seconds,
        )
        torch.save({"key": key, "table": table.cpu()}, path)
        return table

    def candidates(self, idx: torch.Tensor, queries: torch.Tensor) -> torch.Tensor:
        if self.table is not None:
            return self.table[idx]
        a = self.args
        with self.knn_timer():
            return L.batch_candidates(
                queries,
                idx,
                self.db,
                self.data.noisy,
                a.k,
                self.data.num_classes,
                metric=a.knn_metric,
                exclude_self=a.exclude_self,
                layout=a.table_layout,
                backend=a.knn_backend,
            )

    def prior(self, images: torch.Tensor, idx: torch.Tensor) -> torch.Tensor:
        """f_p of a training batch: the online SimCLR embedding of the augmented images, or the
        precomputed row."""
        if self.data.fp_encoder is not None:
            from methods.lra.lra_prior import encode_batch

            return encode_batch(self.data.fp_encoder, images)
        return self.data.features["train"][idx]

    def scheduled_lr(self, epoch: float) -> float:
        lr = L.learning_rate(epoch, self.args.lr_warmup, self.args.lr_horizon, self.args.lr)
        set_lr(self.optimizer, lr)
        return lr

    def train_epoch(self, epoch: int) -> dict:
        a, loader = self.args, self.data.loaders["train"]
        _set_epoch(loader, epoch)
        denoiser, encoder = self.nets
        self.denoiser.train()
        self.encoder.train()  # also when frozen: the original never calls eval() on it (A.9.16)
        loss_sum, steps, lr = torch.zeros((), device=a.device), len(loader), 0.0
        guard = FiniteGuard(f"epoch {epoch}")
        for i, (images, _, idx) in enumerate(progress(loader, desc=f"epoch {epoch}", total=steps)):
            images, idx = images.to(a.device, non_blocking=True), idx.to(a.device)
            lr = self.scheduled_lr(epoch + i / steps)
            fp = self.prior(images, idx)
            labels, weights = L.sample_retrieved(
                self.candidates(idx, fp), self.data.num_classes, a.knn_weights == "count"
            )
            y0 = F.one_hot(labels, self.data.num_classes).float()
            with autocast(a.device, a.amp):
                with torch.set_grad_enabled(
                    a.train_encoder
                ):  # no wasted backward into a frozen net (A.9.3)
                    x_embed = encoder(images)
                loss = L.diffusion_loss(denoiser, x_embed, fp, y0, weights, self.schedule)
            guard.watch(i, diffusion_loss=loss)
            self.optimizer.zero_grad(set_to_none=True)
            loss.backward()
            nn.utils.clip_grad_norm_(self.denoiser.parameters(), 1.0)
            if a.train_encoder:
                nn.utils.clip_grad_norm_(self.encoder.parameters(), 1.0)
            self.optimizer.step()
            self.ema.update(self.denoiser)
            loss_sum += loss.detach()
        guard.check()
        return {"train_loss": float(loss_sum) / max(steps, 1), "lr": lr}

    @torch.no_grad()
    def accuracy(self, role: str) -> float:
        """DDIM-decoded label accuracy on the ``val`` or ``test`` loader."""
        a, feats = self.args, self.data.eval_features[role]
        denoiser, encoder = self.nets
        self.denoiser.eval()
        if a.train_encoder:
            self.encoder.eval()  # the CIFAR/Food original leaves it in train mode: test-batch BN stats
        correct, seen = 0, 0
        swap = self.ema.swapped_in(self.denoiser) if a.use_ema else contextlib.nullcontext()
        with swap:
            for images, targets, idx in self.data.loaders[role]:
                images, targets = images.to(a.device), targets.to(a.device)
                with autocast(a.device, a.amp):
                    x_embed = encoder(images).float()
                y = L.ddim_sample(
                    denoiser,
                    x_embed,
                    feats[idx.to(a.device)],
                    self.schedule,
                    self.timesteps,
                    self.data.num_classes,
                    return_y0=a.fix_ddim_output,
                )
                pred = L.predict(y.float(), "argmax" if a.predict_argmax else "closest_to_one")
                correct += int((pred == targets).sum())
                seen += targets.shape[0]
        return correct / max(seen, 1)

    def knn_accuracy(self) -> float:
        a = self.args
        return L.vote_accuracy(
            self.data.eval_features["test"],
            self.db,
            self.data.noisy,
            self.data.test_targets,
            a.k,
            self.data.num_classes,
            metric=a.knn_metric,
            backend=a.knn_backend,
        )

    def checkpoint_objects(self) -> tuple[dict, dict]:
        return {"denoiser": self.denoiser, "encoder": self.encoder}, {"opt": self.optimizer}


def _set_epoch(loader, epoch: int) -> None:
    """GPULoader.set_epoch, or the class-balanced sampler's for a file-list DataLoader."""
    target = loader if hasattr(loader, "set_epoch") else getattr(loader, "sampler", None)
    if hasattr(target, "set_epoch"):
        target.set_epoch(epoch)


def select(state: dict, metrics: dict, selection: str) -> None:
    """Update the reported test accuracy after an evaluation (``train_CIFAR.py: test``).

    ``val``: test at the best-val epoch (CIFAR, WebVision). ``val_test_tracker``: Clothing1M's
    original compares val with a best value it then updates with *test* accuracy (A.9.7).
    ``best_test``: Food-101N's selection on the test set. ``last``: the latest test accuracy.
    """
    test, val = metrics.get("test_acc"), metrics.get("val_acc")
    if test is None:  # val did not improve: the original does not evaluate the test set
        return
    state["best_acc"] = max(state["best_acc"], test)
    if selection in ("last", "best_test"):
        state["test_acc"] = test if selection == "last" else state["best_acc"]
    elif val > state["tracker"]:
        state["test_acc"], state["val_acc"] = test, val
        state["tracker"] = max(state["tracker"], test if selection == "val_test_tracker" else val)


def needs_test(args: argparse.Namespace, state: dict, metrics: dict, epoch: int) -> bool:
    """Selecting on val, the original evaluates the test set only when val improves on the tracker
    (``train_CIFAR.py``, ``train_Clothing1M.py``; its random draws then happen only then); the port also
    evaluates it at the last epoch."""
    if args.selection not in ("val", "val_test_tracker") or "val_acc" not in metrics:
        return True
    return metrics["val_acc"] > state["tracker"] or epoch == args.nepoch - 1


def is_eval_epoch(args: argparse.Namespace, epoch: int) -> bool:
    """CIFAR: ``epoch % 5 == 0 and epoch >= warmup``; others every epoch; always the last epoch."""
    return epoch == args.nepoch - 1 or (epoch % args.eval_freq == 0 and epoch >= args.eval_from)


def main(args: argparse.Namespace) -> dict:
    """Train and evaluate; returns the results record (also appended to ``<out>/results.jsonl``)."""
    resolve(args)
    args.out = args.out or default_out(args)
    log = default_setup(args, supports=("amp",))
    data = D.build_data(args, log)
    with cpu_threads(small_run_threads(args.threads, args.device, len(data.train_idx))):
        return train_and_report(args, data, log)


def train_and_report(args: argparse.Namespace, data: D.LRAData, log) -> dict:
    """Build the run, resume it when asked, train with evaluations, write the results line."""
    run = Run(args, data, log)
    models, opts = run.checkpoint_objects()
    follows_length = (
        args.lr_horizon == args.nepoch
    )  # the cosine ends at --nepoch: a longer run is another
    runner = Runner(
        args,
        log,
        models=models,
        optimizers=opts,
        state={"tracker": 0.0, "test_acc": None},
        length_flag="nepoch" if follows_length else None,
        pack=lambda state: {
            **state,
            "knn_seconds": run.knn_timer.seconds,
            "ema": run.ema.state_dict(),
        },
        unpack=dict,
        checkpoint_args=lambda: _plain(vars(args)),
    )
    if runner.resume() is not None:
        run.ema.load_state_dict(runner.state.pop("ema"))
        if (
            run.table is None or run.table_from_cache
        ):  # else the table was searched again: count that once
            run.knn_timer.total += runner.state.get("knn_seconds", 0.0)
    state = runner.state
    state.setdefault("knn_acc", run.knn_accuracy())

    def step(epoch: int) -> dict:
        metrics = run.train_epoch(epoch)
        if is_eval_epoch(args, epoch):
            if "val" in data.loaders:
                metrics["val_acc"] = run.accuracy("val")
            if needs_test(args, state, metrics, epoch):
                metrics["test_acc"] = run.accuracy("test")
            select(state, metrics, args.selection)
        return metrics

    def record(epoch: int, metrics: dict) -> None:
        runner.log_metrics(
            epoch,
            {
                "train_loss": metrics["train_loss"],
                "lr": metrics["lr"],
                "knn_seconds": run.knn_timer.seconds,
            },
            stream="train",
        )
        if "test_acc" in metrics or "val_acc" in metrics:
            runner.log_metrics(epoch, {**metrics, "knn_acc": state["knn_acc"]})

    runner.run(args.nepoch, step, record)
    return runner.finish(
        RunRecord(
            method=METHOD,
            dataset=args.dataset,
            noise=args.noise_type,
            seed=args.seed,
            epochs=args.nepoch,
            test_acc=state["test_acc"],
            best_acc=state["best_acc"],
            seconds=runner.seconds,
            run_dir=args.out,
            subset=subset_of(args),  # only then: a full run's record keeps its fields
            extra={
                "fp_encoder": args.fp_encoder,
                "fixes": [f for f in FIXES if getattr(args, f)],
                "val_acc": state.get("val_acc"),
                "knn_acc": state["knn_acc"],
                "knn_seconds": round(run.knn_timer.seconds, 3),
            },
        )
    )


def _plain(values: dict) -> dict:
    return {k: (str(v) if isinstance(v, torch.device) else v) for k, v in values.items()}
