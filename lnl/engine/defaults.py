"""``default_setup(args)``: the first call of every entry point (detectron2's ``default_setup``)."""

from __future__ import annotations

import argparse
import json
import logging
import subprocess
import sys
from pathlib import Path

import torch
import yaml

from lnl.engine import comm, runlock
from lnl.engine.seed import seed_everything

REPO = Path(__file__).resolve().parents[2]


def resolve_device(name: str | None) -> torch.device:
    """``None`` means CUDA when available, else CPU; an unavailable CUDA request is an error."""
    if name is None:
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    device = torch.device(name)
    if device.type == "cuda" and not torch.cuda.is_available():
        raise ValueError(
            f"--device {name}: CUDA is not available on this machine (use --device cpu)"
        )
    if (
        device.type == "cuda"
        and device.index is not None
        and device.index >= torch.cuda.device_count()
    ):
        raise ValueError(
            f"--device {name}: this machine has {torch.cuda.device_count()} GPU(s), "
            f"cuda:0..cuda:{torch.cuda.device_count() - 1}"
        )
    return device


def git_sha(short: bool = False) -> str:
    """The checkout's commit, or ``"unknown"`` (no git on the machine, or no .git copied with the tree)."""
    try:
        out = subprocess.run(
            ["git", "rev-parse", *(["--short"] if short else []), "HEAD"],
            cwd=REPO,
            capture_output=True,
            text=True,
        )
    except OSError:
        return "unknown"
    return out.stdout.strip() or "unknown"


def _logger(run_dir: Path) -> logging.Logger:
    log = logging.getLogger("lnl")
    log.setLevel(logging.INFO)
    if not log.handlers:
        fmt = logging.Formatter(f"[%(asctime)s r{comm.get_rank()}] %(message)s", "%H:%M:%S")
        stream = logging.StreamHandler(sys.stderr)
        stream.setFormatter(fmt)
        log.addHandler(stream)
        if comm.is_main_process():
            fh = logging.FileHandler(run_dir / "log.txt")
            fh.setFormatter(fmt)
            log.addHandler(fh)
    return log


def check_supported(args: argparse.Namespace, supports: tuple[str, ...]) -> None:
    """Refuse a shared switch (``--amp``, ``--compile``) that this entry point does not honour,
    instead of silently running without it.

    Raises:
        ValueError: naming the switch and the entry point.
    """
    for flag in ("amp", "compile"):
        if getattr(args, flag, False) and flag not in supports:
            raise ValueError(
                f"--{flag} is not supported by {Path(sys.argv[0]).name or 'this entry point'}: "
                f"drop it (supported here: {', '.join('--' + f for f in supports) or 'neither'})"
            )


def default_setup(
    args: argparse.Namespace, *, supports: tuple[str, ...] = ("amp", "compile")
) -> logging.Logger:
    """Join the process group (when launched as several tasks), create the run folder, logger and
    reports, seed with ``seed + rank`` and set backend flags. ``supports``: the shared switches this
    entry point honours (``check_supported``).

    Takes the run folder's lock (``lnl.engine.runlock``: a second run on it fails at once).
    Writes ``args.yaml``, ``env.txt`` (``python -m lnl.info``'s report plus the git SHA) in
    ``args.out``; sets ``args.device`` to a ``torch.device``. cuDNN benchmark stays off and TF32 is
    set explicitly (off: the originals ran in full fp32), never at import time.

    Returns:
        The ``lnl`` logger.
    """
    from lnl.info import report

    check_supported(args, supports)
    comm.init_distributed()  # torchrun or a multi-task submitit job; a no-op for one process
    # Validate before the run folder exists: a refused run leaves no empty folder behind.
    args.device = resolve_device(
        args.device if not isinstance(args.device, torch.device) else str(args.device)
    )
    run_dir = Path(args.out)
    run_dir.mkdir(parents=True, exist_ok=True)
    if comm.is_main_process():
        runlock.acquire(run_dir)  # a second run on this folder fails here, naming the first
    log = _logger(run_dir)
    if comm.is_main_process():
        plain = {
            k: (str(v) if isinstance(v, (torch.device, Path)) else v) for k, v in vars(args).items()
        }
        (run_dir / "args.yaml").write_text(yaml.safe_dump(plain, sort_keys=True))
        (run_dir / "env.txt").write_text(f"git: {git_sha()}\n{report()}\n")
    seed_everything(int(getattr(args, "seed", 0)) + comm.get_rank())
    torch.backends.cudnn.benchmark = False
    torch.backends.cuda.matmul.allow_tf32 = False
    torch.backends.cudnn.allow_tf32 = False
    log.info(
        "run folder %s, device %s, args %s",
        run_dir,
        args.device,
        json.dumps(vars(args), default=str),
    )
    return log
