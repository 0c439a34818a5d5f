"""The run's life, written once for every entry point: resume from ``<out>/last.pth``, the metric
logger, a stopwatch that survives resumes, the epoch loop with a record and a checkpoint after each
epoch, and the run's line in ``<out>/results.jsonl`` (:class:`RunRecord`, which
``launchers/collect.py`` reads back).

A method supplies its pieces: the objects to checkpoint, one epoch's step, what it keeps per epoch
(a ``record`` hook) and its results fields. Its ``state`` dict is the checkpoint's ``method_state``
(``pack``/``unpack`` when the method stores more, e.g. an EMA), so checkpoints keep their format::

    runner = Runner(args, log, models={"model": model}, optimizers={"opt": opt}, length_flag="num_epochs")
    runner.resume()
    runner.run(args.num_epochs, step, record)
    return runner.finish(RunRecord(method=..., ...))
"""

from __future__ import annotations

import argparse
import logging
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any

from lnl.engine.checkpoint import find_resume_path, load_checkpoint, save_checkpoint
from lnl.engine.logger import MetricLogger, append_jsonl, read_jsonl
from lnl.engine.train_loop import Stopwatch, run_epochs

RESULTS = "results.jsonl"


@dataclass
class RunRecord:
    """One line of ``results.jsonl``: a finished run (the last line of a folder is its result).

    ``epochs`` (or ``steps`` for step-counted runs) is the run's length; ``subset`` is set for a
    ``--subset`` smoke run only; ``extra`` holds the method's own fields (``fixes``, ``auc``, ...),
    written beside the common ones.
    """

    method: str
    dataset: str
    noise: str
    seed: int | None = None
    epochs: int | None = None
    steps: int | None = None
    test_acc: float | None = None
    best_acc: float | None = None
    seconds: float = 0.0
    run_dir: str = ""
    subset: int | None = None
    extra: dict[str, Any] = field(default_factory=dict)

    REQUIRED = (
        "method",
        "dataset",
        "noise",
    )  # a line without them is another schema (NMTune's per-epoch lines)

    @classmethod
    def is_record(cls, line: Mapping[str, Any]) -> bool:
        return all(k in line for k in cls.REQUIRED)

    @classmethod
    def from_line(cls, line: Mapping[str, Any]) -> RunRecord:
        """The record of a ``results.jsonl`` line; fields it does not know go to ``extra``."""
        if not cls.is_record(line):
            raise ValueError(
                f"not a results record (needs {', '.join(cls.REQUIRED)}): {dict(line)}"
            )
        names = {f.name for f in fields(cls)} - {"extra"}
        return cls(
            **{k: v for k, v in line.items() if k in names},
            extra={k: v for k, v in line.items() if k not in names},
        )

    def to_line(self) -> dict[str, Any]:
        """The JSON line: unset ``epochs``/``steps``/``subset`` are left out, ``extra`` follows the scores."""
        line = {
            "method": self.method,
            "dataset": self.dataset,
            "noise": self.noise,
            "seed": self.seed,
        }
        line.update(
            {k: v for k, v in (("epochs", self.epochs), ("steps", self.steps)) if v is not None}
        )
        line.update(
            test_acc=self.test_acc,
            best_acc=self.best_acc,
            **self.extra,
            seconds=self.seconds,
            run_dir=self.run_dir,
        )
        if self.subset is not None:
            line["subset"] = self.subset
        return line

    def append_to(self, run_dir: str | Path) -> None:
        append_jsonl(Path(run_dir) / RESULTS, self.to_line())


def read_records(path: str | Path) -> list[RunRecord]:
    """Every record line of a ``results.jsonl`` (other lines skipped), oldest first."""
    return [RunRecord.from_line(r) for r in read_jsonl(path) if RunRecord.is_record(r)]


def subset_of(args: argparse.Namespace) -> int | None:
    """``--subset N`` as the record's ``subset`` (None for a full run)."""
    return getattr(args, "subset", None) or None


def _identity(state: dict) -> dict:
    return state


class Runner:
    """Resume, log, time, loop, checkpoint and report one run.

    Args:
        args: the entry point's flags (``out``, ``resume``, ``tensorboard``, ``wandb``, ``offline``).
        log: logger.
        models, optimizers, schedulers: name -> object, saved in every checkpoint.
        state: the method's starting state (``seconds`` and ``best_acc`` are added); it is the
            checkpoint's ``method_state`` unless ``pack``/``unpack`` say otherwise.
        length_flag: refuse a checkpoint written with another value of this flag (a schedule built
            from the run's length).
        pack, unpack: method state -> ``method_state`` and back (the checkpoint's format).
        logger_options: ``MetricLogger`` keywords overriding the flags' (PLReMix: ``--wo_wandb``).
        checkpoint_args: the arguments stored in the checkpoint (default ``vars(args)``).
    """

    def __init__(
        self,
        args: argparse.Namespace,
        log: logging.Logger,
        *,
        models: Mapping[str, Any],
        optimizers: Mapping[str, Any],
        schedulers: Mapping[str, Any] | None = None,
        state: Mapping[str, Any] | None = None,
        length_flag: str | None = None,
        pack: Callable[[dict], dict] = _identity,
        unpack: Callable[[dict], dict] = _identity,
        logger_options: Mapping[str, Any] | None = None,
        checkpoint_args: Callable[[], dict] | None = None,
    ):
        self.args, self.log = args, log
        self.models, self.optimizers, self.schedulers = models, optimizers, schedulers
        self.state: dict[str, Any] = {
            "first_epoch": 0,
            "seconds": 0.0,
            "best_acc": 0.0,
            **(state or {}),
        }
        self.length_flag, self.pack, self.unpack = length_flag, pack, unpack
        self.logger_options = dict(logger_options or {})
        self.checkpoint_args = checkpoint_args or (lambda: vars(args))
        self.clock: Stopwatch | None = None
        self.logger: MetricLogger | None = None

    @property
    def first_epoch(self) -> int:
        return self.state["first_epoch"]

    def resume(self, path: str | Path | None = None, *, unit: str = "epoch") -> dict | None:
        """Load ``path`` (default: ``--resume`` in ``--out``) into the objects and the state; the run
        goes on from the epoch after the checkpoint's. Returns the checkpoint, or None (a fresh run)."""
        path = find_resume_path(self.args.out, self.args.resume) if path is None else path
        if path is None:
            return None
        ckpt = load_checkpoint(
            path,
            models=self.models,
            optimizers=self.optimizers,
            schedulers=self.schedulers,
            run_args=self.args,
            length_flag=self.length_flag,
        )
        self.state = {**self.unpack(ckpt["method_state"]), "first_epoch": ckpt["epoch"] + 1}
        where = self.state["step"] if unit == "step" else self.first_epoch
        self.log.info("resumed from %s at %s %d", path, unit, where)
        return ckpt

    def start(self, resume_step: int | None = None) -> MetricLogger:
        """Start the stopwatch (from the saved seconds) and the logger; rows from ``resume_step`` on
        (default: the first epoch run again) are dropped from the streams."""
        self.clock = Stopwatch(self.state["seconds"])
        options = dict(
            tensorboard=self.args.tensorboard,
            wandb=self.args.wandb,
            wandb_offline=self.args.offline,
            name=Path(self.args.out).name,
            config=vars(self.args),
            resume_step=self.first_epoch if resume_step is None else resume_step,
        )
        self.logger = MetricLogger(self.args.out, **{**options, **self.logger_options})
        return self.logger

    def log_metrics(self, epoch: int, metrics: Mapping[str, Any], stream: str = "eval") -> None:
        """One logger row with the run's seconds so far."""
        self.logger.log(epoch, {**metrics, "seconds": self.clock.elapsed}, stream=stream)

    def checkpoint(self, epoch: int, metrics: Mapping[str, Any] | None = None) -> Path:
        """``last.pth`` after ``epoch`` (rank 0 writes), the state's ``seconds`` updated first."""
        self.state["seconds"] = self.clock.elapsed
        return save_checkpoint(
            self.args.out,
            epoch=epoch,
            models=self.models,
            optimizers=self.optimizers,
            schedulers=self.schedulers,
            method_state=self.pack(self.state),
            args=self.checkpoint_args(),
        )

    def run(
        self, num_epochs: int, step: Callable[[int], dict], record: Callable[[int, dict], None]
    ) -> None:
        """Epochs ``first_epoch .. num_epochs - 1``: ``step``, then ``record`` (log, track), then the
        checkpoint (last, so it covers the whole epoch); the logger is closed at the end. A step that
        raises (a non-finite loss) leaves the previous epoch's checkpoint as the last one."""
        if self.logger is None:
            self.start()
        run_epochs(self.first_epoch, num_epochs, step, after_epoch=[record, self.checkpoint])
        self.close()

    def close(self) -> None:
        if self.logger is not None:
            self.logger.close()

    @property
    def seconds(self) -> float:
        """The run's wall time so far (resumes included), rounded as the records write it."""
        return round(self.clock.elapsed, 2)

    def finish(self, record: RunRecord) -> dict:
        """Append ``record`` to ``<out>/results.jsonl``; returns its line."""
        record.append_to(self.args.out)
        line = record.to_line()
        self.log.info("result %s", line)
        return line
