"""IEG (Zhang et al., CVPR 2020), ported from ``google-research/google-research: ieg/main.py`` (TF1):
``--method ieg`` and the original's baselines ``l2r`` and ``supervised``. Example::

    python -m methods.ieg.main --dataset cifar100_uniform_0.8 --network_name wrn28-10 \\
        --data_path data/cifar100 --checkpoint_path runs/ieg

WebVision-mini (``--dataset webvisionmini --network_name resnet50``, ImageNet probe, file lists) is in
``methods/ieg/webvision.py``. The run folder is ``--out`` or ``<checkpoint_path>/<dataset>_p<probe ratio>/<network_name>`` (the
original's layout). Resumes from ``<run>/last.pth`` (``--resume auto``); writes ``eval.jsonl`` and
``train.jsonl`` at every evaluation, the generated ``noisy_labels.npz``/``probe_indices.npy`` and one
line to ``results.jsonl``. See methods/ieg/README.md for every flag.
"""

from __future__ import annotations

import argparse
import shutil
import sys
from pathlib import Path

import numpy as np
import torch

if __package__ in (None, ""):  # run as a script: make `lnl` and `methods` importable
    sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from lnl.data import get_dataset, list_datasets
from lnl.data._base import reading
from lnl.data._registry import dataset_info, default_root
from lnl.data.gpu import GPULoader
from lnl.data.noise_files import load_noise_file
from lnl.engine import (
    comm,
    default_argument_parser,
    default_setup,
    find_resume_path,
    parse_with_config,
)
from lnl.engine.args import str2bool
from lnl.engine.data import add_subset_flag, check_subset_size, first_images, subset_suffix
from lnl.engine.ema import EMA
from lnl.engine.runner import Runner, RunRecord, subset_of
from lnl.engine.threads import cpu_threads, small_run_threads
from lnl.engine.train_loop import FiniteGuard, evaluate, progress, set_lr
from methods.ieg import ieg_lib as L
from methods.ieg import webvision as W
from methods.ieg.steps import STEPS, StepSetup


def get_args_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        "IEG / L2R / supervised under label noise", parents=[default_argument_parser()]
    )
    a = p.add_argument
    a(
        "--dataset",
        default="cifar100_uniform_0.8",
        help="<cifar10|cifar100|digits>_<uniform|asymmetric>_<ratio>, or webvisionmini[_<probe per class>]",
    )
    a("--data_path", default=None, help="the base dataset's folder (default: $LNL_DATA/<dataset>)")
    a(
        "--imagenet_path",
        default=None,
        help="webvisionmini: ImageNet folder, train/<WNID>/ and val/ (default $LNL_DATA/imagenet)",
    )
    a("--network_name", default="wrn28-10", help="wrn28-10, resnet29, resnet50 or small_cnn")
    a("--method", default="ieg", help="ieg, l2r or supervised")
    a("--mode", default="train", help="train or evaluation")
    a(
        "--checkpoint_path",
        default="/tmp/ieg",
        help="root of the run folder when --out is not given",
    )
    a("--max_iteration", type=int, default=200000)
    a("--batch_size", type=int, default=100, help="per replica (as the original)")
    a("--val_batch_size", type=int, default=100)
    a("--learning_rate", type=float, default=0.1)
    a("--momentum", type=float, default=0.9)
    a("--lr_schedule", default="cosine", help=f"{', '.join(L.LR_SCHEDULES)}")
    a(
        "--decay_steps",
        default="500",
        help="cosine*: first period in steps; exponential: period; custom_step: comma list (README)",
    )
    a("--decay_rate", type=float, default=0.1)
    a("--cos_t_mul", type=float, default=1.5)
    a("--cos_m_mul", type=float, default=0.9)
    a(
        "--warmup_epochs",
        type=int,
        default=0,
        help="linear warmup of --lr_schedule cosine_warmup only",
    )
    a("--eval_freq", type=int, default=500)
    a("--use_ema", type=str2bool, default=True)
    a("--meta_momentum", type=float, default=0.9)
    a("--meta_stepsize", type=float, default=0.1)
    a("--ce_factor", type=float, default=5)
    a("--consistency_factor", type=float, default=20)
    a("--probe_dataset_hold_ratio", type=float, default=0.02)
    a("--grad_eps_init", type=float, default=0.9)
    a("--aug_type", default="autoaug", help="autoaug, randaug or default")
    a(
        "--post_batch_mode_autoaug",
        type=str2bool,
        default=True,
        help="accepted; always on, as in IEG",
    )
    a(
        "--use_imagenet_as_eval",
        type=str2bool,
        default=False,
        help="webvisionmini: also ILSVRC12 val",
    )
    a("--l2_weight_decay", type=float, default=0.0004, help="ResNet-50 only")
    a("--seed", type=int, default=12345)
    a(
        "--restore_step",
        type=int,
        default=0,
        help="start from (or evaluate) the checkpoint of this step (the newest 5 evaluations are kept); 0 = last",
    )
    add_subset_flag(p)
    g = p.add_argument_group("port options (defaults = the original's behaviour)")
    g.add_argument(
        "--meta_jvp", action="store_true", help="exact meta step by one forward-mode JVP"
    )
    g.add_argument(
        "--detach_pseudo_label",
        action="store_true",
        help="stop-gradient on g in the meta look-ahead too (the final loss always stops it)",
    )
    g.add_argument(
        "--noise_file",
        default=None,
        help="noisy train labels from a file (.npz/.json/.npy) instead of the dataset name's noise",
    )
    g.add_argument(
        "--threads",
        type=int,
        default=None,
        help="CPU threads (default on CPU: 1 below 20k images, else unchanged)",
    )
    g.add_argument(
        "--faithful_resnet29", type=str2bool, default=True, help="keep the missing-ReLU quirk"
    )
    g.add_argument(
        "--image_size", type=int, default=224, help="webvisionmini: crop size (original 224)"
    )
    g.add_argument("--workers", type=int, default=8, help="webvisionmini: image-decoding processes")
    return p


def run_dir(args: argparse.Namespace) -> str:
    """``--out``, else the original's ``<checkpoint_path>/<dataset>_p<ratio>/<network_name>``
    (``_p<ratio>-sub<N>`` with ``--subset N``: ``--resume auto`` never mixes a subset and a full run)."""
    folder = f"{args.dataset}_p{args.probe_dataset_hold_ratio}{subset_suffix(args.subset)}/{args.network_name}"
    return args.out or f"{args.checkpoint_path}/{folder}"


def check_args(args: argparse.Namespace) -> L.DatasetName:
    """Validate the enumerated flags; returns the parsed ``--dataset``."""
    choices = (
        ("--method", args.method, L.METHODS),
        ("--mode", args.mode, ("train", "evaluation")),
        ("--aug_type", args.aug_type, L.AUG_TYPES),
        ("--network_name", args.network_name, tuple(L.NETWORKS)),
        ("--lr_schedule", args.lr_schedule, L.LR_SCHEDULES),
    )
    for flag, value, valid in choices:
        if value not in valid:
            raise ValueError(f"{flag} {value!r}: unknown; choose from {', '.join(valid)}")
    name = L.parse_dataset(args.dataset, tuple(list_datasets()))
    if args.noise_file and name.base == "webvisionmini":
        raise ValueError("--noise_file: WebVision-mini has its own (real) noisy labels")
    if args.use_imagenet_as_eval and name.base != "webvisionmini":
        raise ValueError(
            f"--use_imagenet_as_eval: only for --dataset webvisionmini, not {args.dataset!r}"
        )
    return name


def prepare_data(args: argparse.Namespace, name: L.DatasetName, resumed: bool, log):
    """Load the base dataset, then the probe split and noisy labels (read back when resuming).

    Returns:
        ``(batches, eval loaders by metric prefix, num_classes, clean train labels or None)``.
    """
    if name.base == "webvisionmini":
        return prepare_webvision(args, name, resumed, log)
    train = get_dataset(name.base, args.data_path, "train")
    test = get_dataset(name.base, args.data_path, "test")
    check_subset(args, train.num_classes)
    labels, probe, rest = ieg_labels(args, name, train.targets.numpy(), train.num_classes, resumed)
    if args.subset:
        train, test = first_images(train, args.subset), first_images(test, args.subset)
    clean = train.targets.numpy()
    log.info(
        "%s: %d probe (%d/class), %d train, measured noise %.4f",
        args.dataset,
        len(probe),
        len(probe) // train.num_classes,
        len(rest),
        float((labels[rest] != clean[rest]).mean()),
    )
    batches = L.StepBatches(
        train.images,
        torch.from_numpy(labels),
        rest,
        probe,
        args.batch_size,
        train.mean,
        train.std,
        args.device,
        args.seed,
        args.aug_type,
        comm.get_rank(),
        comm.get_world_size(),
        flip=train.flip,
    )
    test_loader = GPULoader(
        test.images,
        test.targets,
        args.val_batch_size,
        mean=train.mean,
        std=train.std,
        device=args.device,
        train=False,
    )
    return batches, {"": test_loader}, train.num_classes, train.targets.to(args.device)


def check_subset(args: argparse.Namespace, num_classes: int) -> None:
    check_subset_size(args.subset, num_classes, args.dataset)


def ieg_labels(
    args: argparse.Namespace,
    name: L.DatasetName,
    clean: np.ndarray,
    num_classes: int,
    resumed: bool,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """``(labels, probe, train)`` of the run: read back when resuming, else drawn over the whole split
    (``clean``) and, with ``--subset N``, cut to the first N rows with a probe from within them."""
    out, n = Path(args.out), min(args.subset or len(clean), len(clean))
    if resumed and (out / "probe_indices.npy").exists():
        with reading(out / "noisy_labels.npz", "run file"):
            labels = np.load(out / "noisy_labels.npz")["labels"]
        with reading(out / "probe_indices.npy", "run file"):
            probe = np.load(out / "probe_indices.npy")
        if len(labels) != n:  # a full run's labels under a --subset run (or the reverse)
            raise ValueError(
                f"{out / 'noisy_labels.npz'} holds {len(labels)} labels but this run trains "
                f"on {n} images (--subset {args.subset}); pass another --out or --resume never"
            )
        return labels, probe, np.setdiff1d(np.arange(n), probe)
    ratio = args.probe_dataset_hold_ratio
    if args.noise_file:
        noisy = load_noise_file(
            args.noise_file, num_classes=num_classes, num_samples=len(clean)
        ).labels.numpy()
        labels, probe, rest = L.file_ieg_labels(clean, noisy, ratio, num_classes, args.seed)
    else:
        labels, probe, rest = L.make_ieg_labels(clean, name, ratio, num_classes, args.seed)
    if args.subset:
        labels, probe, rest = L.subset_ieg_labels(clean, labels, n, ratio, num_classes, args.seed)
    if comm.is_main_process():
        L.save_labels(out, clean[:n], labels, probe, name, args.seed, args.subset, args.noise_file)
    return labels, probe, rest


def prepare_webvision(args: argparse.Namespace, name: L.DatasetName, resumed: bool, log):
    """WebVision-mini: noisy train labels as given, the ImageNet probe (drawn once, read back when
    resuming), WebVision val and, with ``--use_imagenet_as_eval``, ILSVRC12 val (``imagenet_``)."""
    train = get_dataset("webvision", args.data_path, "train")
    check_subset(args, train.num_classes)
    train = W.first_files(train, args.subset)  # real noise: the labels are the file list's, no draw
    imagenet = Path(args.imagenet_path or default_root(dataset_info("ilsvrc12_val")))
    probe = W.probe_dataset(
        imagenet,
        train.classes,
        name.probe_per_class,
        args.seed,
        Path(args.out),
        resumed,
        comm.is_main_process(),
    )
    log.info(
        "%s: %d probe (%d/class, ImageNet train), %d train (real noise)",
        args.dataset,
        len(probe),
        name.probe_per_class,
        len(train),
    )
    batches = W.FileStepBatches(
        train,
        probe,
        args.batch_size,
        args.device,
        args.seed,
        args.aug_type,
        args.max_iteration,
        args.image_size,
        args.workers,
        comm.get_rank(),
        comm.get_world_size(),
    )
    evals = {"": get_dataset("webvision", args.data_path, "val")}
    if args.use_imagenet_as_eval:
        evals["imagenet_"] = get_dataset("ilsvrc12_val", imagenet, "val")
    loaders = {
        k: W.eval_loader(
            W.first_files(ds, args.subset), args.image_size, args.val_batch_size, args.workers
        )
        for k, ds in evals.items()
    }
    return batches, loaders, train.num_classes, None


def build(args: argparse.Namespace, num_classes: int) -> tuple[StepSetup, EMA]:
    """The network (same weights on every replica), SGD with its L2 term, and the EMA."""
    spec = L.NETWORKS[args.network_name]
    decay = args.l2_weight_decay if args.network_name == "resnet50" else spec.decay
    probe_decay = args.l2_weight_decay if args.network_name == "resnet50" else spec.probe_decay
    model = L.build_network(args.network_name, num_classes, args.faithful_resnet29).to(args.device)
    comm.broadcast_from_rank0(model)
    optimizer = torch.optim.SGD(
        L.sgd_groups(model, spec, decay), lr=args.learning_rate, momentum=args.momentum
    )
    names = L.decayed(dict(model.named_parameters()), spec.scope)
    return StepSetup(model, optimizer, num_classes, names, decay, probe_decay, args), EMA(
        model, 0.999
    )


def first_period(args: argparse.Namespace, steps_per_epoch: int) -> int:
    """The first cosine period (or exponential decay period): ``--decay_steps``, except on
    WebVision-mini, where the original's cosine schedule starts with one epoch (``train_size //``
    global batch) whatever ``--decay_steps`` says."""
    if args.dataset.startswith("webvision") and args.lr_schedule.startswith("cosine"):
        return steps_per_epoch
    return int(args.decay_steps.split(",")[0])


def learning_rate(args: argparse.Namespace, step: int, steps_per_epoch: int) -> float:
    """``--lr_schedule`` at ``step`` (0-based: TF's global step while the update runs)."""
    lr0, schedule = args.learning_rate, args.lr_schedule
    if schedule == "custom_step":
        return L.custom_step_lr(
            step, lr0, [int(s) for s in args.decay_steps.split(",")], args.decay_rate
        )
    if schedule == "exponential":
        return L.exponential_lr(step, lr0, first_period(args, steps_per_epoch))
    if schedule == "cosine_one":
        return L.cosine_one_lr(step, lr0, args.max_iteration)
    period = first_period(args, steps_per_epoch)
    if schedule == "cosine_warmup" and args.warmup_epochs > 0:
        return L.warmup_cosine_lr(
            step, lr0, period, args.cos_t_mul, args.cos_m_mul, args.warmup_epochs * steps_per_epoch
        )
    return L.cosine_restarts_lr(step, lr0, period, args.cos_t_mul, args.cos_m_mul)


def accuracy(setup: StepSetup, ema: EMA, loaders: dict, args) -> dict[str, float]:
    """Raw and EMA top-1 on every loader (the EMA swaps weights only; BN statistics stay the raw
    model's): ``<prefix>raw_acc``, ``<prefix>ema_acc`` and the reported ``test_acc`` (no prefix) or
    ``<prefix>acc``, EMA when ``--use_ema``."""
    out = {}
    for prefix, loader in loaders.items():
        out[f"{prefix}raw_acc"] = evaluate(setup.model, loader, device=args.device)["acc"]
        if args.use_ema:
            with ema.swapped_in(setup.model):
                out[f"{prefix}ema_acc"] = evaluate(setup.model, loader, device=args.device)["acc"]
        out[f"{prefix}acc" if prefix else "test_acc"] = out.get(
            f"{prefix}ema_acc", out[f"{prefix}raw_acc"]
        )
    setup.model.train()
    return out


def optimize(args, setup: StepSetup, ema: EMA, batch: dict, step: int, guard: FiniteGuard) -> dict:
    """One step of ``--method``: scheduled LR, loss, summed gradients, SGD update, EMA update."""
    lr = learning_rate(args, step, batch["steps_per_epoch"])
    set_lr(setup.optimizer, lr)
    generator = L.step_generator(args.device, args.seed, 3, step, comm.get_rank())
    loss, metrics = STEPS[args.method](setup, batch, generator)
    guard.watch(step, loss=loss)
    setup.optimizer.zero_grad(set_to_none=True)
    (loss / comm.get_world_size()).backward()
    comm.sync_gradients(setup.model)
    update_and_average(setup, ema, step, ema_first=args.method == "supervised")
    return {**metrics, "lr": lr}


def update_and_average(setup: StepSetup, ema: EMA, step: int, ema_first: bool) -> None:
    """The optimizer update and the EMA with TF's ``num_updates`` (decay ``min(0.999, (1+n)/(10+n))``).

    IEG (model.py) runs ``ema.apply`` after the update, n = the incremented global step; the supervised
    baseline (basemodel.py) makes the EMA a control dependency of the minimizer: it averages the
    weights before the update, n = the step before it (``ema_first``). L2R groups both without an
    order; the port runs its EMA after the update.
    """
    if ema_first:
        ema.decay = min(0.999, (1 + step) / (10 + step))
        ema.update(setup.model)
    setup.optimizer.step()
    if not ema_first:
        ema.decay = min(0.999, (2 + step) / (11 + step))
        ema.update(setup.model)


def train(
    args, setup: StepSetup, ema: EMA, batches: L.StepBatches, eval_loaders, clean, runner: Runner
) -> None:
    """Steps ``state['step']`` .. ``max_iteration``; evaluate + checkpoint at step 1, every
    ``eval_freq``, at every cosine-cycle end and at the end."""
    # TF's time_for_evaluation counts cycles for cosine and cosine_warmup (unshifted by the warmup).
    cosine = args.lr_schedule in ("cosine", "cosine_warmup")
    period = first_period(args, batches.steps_per_epoch)
    ends = L.cycle_ends(period, args.cos_t_mul, args.max_iteration) if cosine else set()
    state = runner.state
    logger = runner.start(
        resume_step=state["step"] + 1
    )  # evaluations are logged at their step count
    sums, count, guard = {}, 0, FiniteGuard()
    steps = range(state["step"], args.max_iteration)
    for step in progress(steps, desc=args.method, total=len(steps), leave=True):
        batch = batches.get(step, strong=args.method == "ieg")
        batch.update(
            y_clean=None if clean is None else clean[batch["idx"]],
            steps_per_epoch=batches.steps_per_epoch,
        )
        metrics = optimize(args, setup, ema, batch, step, guard)
        # Metrics stay on the device until an evaluation: one host sync per evaluation.
        sums, count, done = (
            {k: sums.get(k, 0.0) + v for k, v in metrics.items()},
            count + 1,
            step + 1,
        )
        if evaluation_due(done, args.eval_freq, ends, args.max_iteration):
            guard.check()
            logger.log(done, {k: float(v) / count for k, v in sums.items()}, stream="train")
            record(args, setup, ema, eval_loaders, runner, done, done in ends)
            sums, count = {}, 0
    runner.close()


def evaluation_due(done: int, eval_freq: int, ends: set[int], last: int) -> bool:
    """basemodel.py ``time_for_evaluation``: step 1, every ``eval_freq``, every cycle end (as TF
    accumulates them, :func:`~methods.ieg.ieg_lib.cycle_ends`); and the last step (port)."""
    return done == 1 or done % eval_freq == 0 or done in ends or done == last


def record(args, setup, ema, eval_loaders, runner: Runner, done: int, cycle_end: bool) -> None:
    """Evaluate, log and checkpoint after step ``done`` (the checkpoint's epoch is the step count)."""
    acc, state = accuracy(setup, ema, eval_loaders, args), runner.state
    state.update(
        step=done,
        last_acc=acc["test_acc"],
        best_acc=max(state["best_acc"], acc["test_acc"]),
        imagenet_acc=acc.get("imagenet_acc"),
    )
    if cycle_end:
        state["cycle_end_acc"] = acc["test_acc"]
    runner.log_metrics(done, acc)
    path = runner.checkpoint(done)
    if comm.is_main_process():
        keep_step_checkpoint(path, done)


STEP_CHECKPOINTS_KEPT = 5  # TF's Saver(max_to_keep=5)


def step_checkpoint_path(out: str | Path, step: int) -> Path:
    return Path(out) / f"checkpoint-{step}.pth"


def keep_step_checkpoint(last: Path, step: int) -> None:
    """Keep a copy of every evaluation's checkpoint as ``checkpoint-<step>.pth``, the newest 5 (TF's
    ``checkpoint.ckpt-<step>``), for ``--restore_step``."""
    shutil.copyfile(last, step_checkpoint_path(last.parent, step))
    saved = sorted(last.parent.glob("checkpoint-*.pth"), key=lambda p: int(p.stem.split("-")[1]))
    for old in saved[:-STEP_CHECKPOINTS_KEPT]:
        old.unlink()


def step_checkpoint(out: str | Path, step: int) -> Path:
    """``--restore_step N``: the checkpoint of step N (train continues from it; evaluation uses it)."""
    path = step_checkpoint_path(out, step)
    if not path.exists():
        kept = sorted(p.name for p in Path(out).glob("checkpoint-*.pth"))
        raise FileNotFoundError(
            f"--restore_step {step}: no {path}; kept: {', '.join(kept) or 'none'}"
        )
    return path


def _without_first_epoch(state: dict) -> dict:
    """The checkpoint's ``method_state``: IEG counts steps (``step``), not epochs."""
    return {k: v for k, v in state.items() if k != "first_epoch"}


def restore(args, runner: Runner, path: Path) -> None:
    """Load ``path``; refuse a checkpoint of another method, dataset or network (same folder)."""
    ckpt = runner.resume(path, unit="step")
    saved = ckpt.get("args") or {}
    for key in ("method", "dataset", "network_name", "subset"):
        if key in saved and saved[key] != getattr(args, key):
            raise ValueError(
                f"{path} was written by a run with {key}={saved[key]!r}, not "
                f"{getattr(args, key)!r}; pass another --out/--checkpoint_path or --resume never"
            )


def main(args: argparse.Namespace) -> dict:
    """Train (or, with ``--mode evaluation``, evaluate the last checkpoint); returns the result record."""
    name = check_args(args)
    args.out = run_dir(args)
    log = default_setup(args, supports=())
    evaluating = args.mode == "evaluation"
    resume = find_resume_path(
        args.out, "auto" if evaluating and args.resume in ("never", "none") else args.resume
    )
    if args.restore_step:
        resume = step_checkpoint(args.out, args.restore_step)
    if evaluating and resume is None:
        raise FileNotFoundError(f"--mode evaluation: no checkpoint {Path(args.out) / 'last.pth'}")
    batches, eval_loaders, num_classes, clean = prepare_data(args, name, resume is not None, log)
    setup, ema = build(args, num_classes)
    runner = Runner(
        args,
        log,
        models={"model": setup.model, "ema": ema},
        optimizers={"opt": setup.optimizer},
        state={"step": 0},
        pack=_without_first_epoch,
    )
    if resume is not None:
        restore(args, runner, resume)
    state = runner.state
    with cpu_threads(small_run_threads(args.threads, args.device, len(batches.train))):
        if args.mode == "train":
            train(args, setup, ema, batches, eval_loaders, clean, runner)
        else:
            acc = accuracy(setup, ema, eval_loaders, args)
            state.update(last_acc=acc["test_acc"], imagenet_acc=acc.get("imagenet_acc"))
    method = "ieg" if args.method == "ieg" else f"ieg-{args.method}"
    noise = Path(args.noise_file).stem if args.noise_file else name.noise_tag
    extra = {
        "ieg_dataset": args.dataset,
        "network": args.network_name,
        "mode": args.mode,
        "cycle_end_acc": state.get("cycle_end_acc"),
    }
    if state.get("imagenet_acc") is not None:  # --use_imagenet_as_eval: ILSVRC12 val, 50 classes
        extra["imagenet_acc"] = state["imagenet_acc"]
    return runner.finish(
        RunRecord(
            method=method,
            dataset=name.base,
            noise=noise,
            seed=args.seed,
            steps=state["step"],
            test_acc=state.get("last_acc"),
            best_acc=state["best_acc"],
            seconds=round(state["seconds"], 2),
            run_dir=args.out,
            subset=subset_of(args),
            extra=extra,
        )
    )


if __name__ == "__main__":
    main(parse_with_config(get_args_parser()))
