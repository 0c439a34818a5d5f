"""One explicit call, ``log(step, metrics)``, fanning out to JSON lines, TensorBoard (default) or
wandb (``--wandb``, ``--offline``), and a fixed-column table on stdout. Only rank 0 writes."""

from __future__ import annotations

import json
import math
import os
import sys
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from lnl.engine import comm


def _jsonable(value: Any) -> Any:
    if hasattr(value, "item"):
        value = value.item()
    if isinstance(value, float) and not math.isfinite(value):
        return str(value)
    return value


class MetricLogger:
    """Writes every ``log`` call to ``<run>/<stream>.jsonl`` and TensorBoard or wandb.

    Args:
        run_dir: the run's output folder.
        tensorboard: write TensorBoard event files under ``<run>/tb``.
        wandb: also log to Weights & Biases (imported only then).
        wandb_offline: run wandb in offline mode (no network); asking for it turns wandb on, as the
            originals' ``--offline`` does (they log to wandb by default).
        wandb_id: continue this wandb run (PLReMix's ``--resume_id``); also turns wandb on.
        project, name, config: passed to ``wandb.init``.
        stdout: print a fixed-column row per ``log`` call.
        resume_step: when resuming, the first step that will be logged again: rows at or after it
            (written after the checkpoint the run resumes from) are dropped from every stream and
            TensorBoard purges them, so no epoch appears twice.
    """

    def __init__(
        self,
        run_dir: str | os.PathLike,
        *,
        tensorboard: bool = True,
        wandb: bool = False,
        wandb_offline: bool = False,
        wandb_id: str | None = None,
        project: str = "lnl",
        name: str | None = None,
        config: Mapping[str, Any] | None = None,
        stdout: bool = True,
        resume_step: int = 0,
    ):
        self.run_dir = Path(run_dir)
        self.enabled = comm.is_main_process()
        self.stdout = stdout and self.enabled
        self._columns: dict[str, list[str]] = {}
        self._printed: dict[str, int] = {}
        self._tb = self._wandb = None
        if not self.enabled:
            return
        self.run_dir.mkdir(parents=True, exist_ok=True)
        if resume_step > 0:
            for stream in self.run_dir.glob("*.jsonl"):
                if stream.name != "results.jsonl":
                    truncate_jsonl(stream, resume_step)
        if tensorboard:
            from torch.utils.tensorboard import SummaryWriter

            purge = resume_step if resume_step > 0 else None
            self._tb = SummaryWriter(str(self.run_dir / "tb"), purge_step=purge)
        if wandb or wandb_offline or wandb_id:
            self._wandb = _init_wandb(self.run_dir, wandb_offline, project, name, config, wandb_id)

    def log(self, step: int, metrics: Mapping[str, Any], *, stream: str = "train") -> None:
        """Record ``metrics`` at ``step`` in ``<stream>.jsonl`` (e.g. ``train``, ``eval``) and the backends."""
        if not self.enabled:
            return
        row = {
            "step": step,
            "time": round(time.time(), 3),
            **{k: _jsonable(v) for k, v in metrics.items()},
        }
        with open(self.run_dir / f"{stream}.jsonl", "a") as f:
            f.write(json.dumps(row) + "\n")
        numeric = {
            k: v
            for k, v in row.items()
            if isinstance(v, (int, float)) and k not in ("step", "time")
        }
        if self._tb is not None:
            for key, value in numeric.items():
                self._tb.add_scalar(f"{stream}/{key}", value, step)
            self._tb.flush()
        if self._wandb is not None:
            self._wandb.log({f"{stream}/{k}": v for k, v in numeric.items()}, step=step)
        if self.stdout:
            self._print_row(stream, step, numeric)

    def _print_row(self, stream: str, step: int, numeric: Mapping[str, float]) -> None:
        # Columns are fixed by the first row of each stream, so the table stays aligned.
        columns = self._columns.setdefault(stream, list(numeric))
        if self._printed.get(stream, 0) % 25 == 0:
            print(f"{'':>8} {'step':>7} " + " ".join(f"{c[:12]:>12}" for c in columns), flush=True)
        values = " ".join(f"{numeric.get(c, float('nan')):>12.4f}" for c in columns)
        print(f"{stream:>8} {step:>7} {values}", file=sys.stdout, flush=True)
        self._printed[stream] = self._printed.get(stream, 0) + 1

    def close(self) -> None:
        if self._tb is not None:
            self._tb.close()
        if self._wandb is not None:
            self._wandb.finish()


def _init_wandb(
    run_dir: Path,
    offline: bool,
    project: str,
    name: str | None,
    config: Any,
    run_id: str | None = None,
):
    try:
        import wandb
    except ImportError as exc:
        raise RuntimeError(
            "--wandb (or --offline, --resume_id) needs the wandb package: pip install wandb"
        ) from exc
    # A given id must exist (resume="must"): a typo would otherwise start an empty run under that id.
    return wandb.init(
        project=project,
        name=name,
        dir=str(run_dir),
        config=dict(config or {}),
        id=run_id or None,
        resume="must" if run_id else "allow",
        mode="offline" if offline else None,
    )


def append_jsonl(path: str | os.PathLike, record: Mapping[str, Any]) -> None:
    """Append one JSON object as a line (rank 0 only); used for ``results.jsonl``."""
    if not comm.is_main_process():
        return
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "a") as f:
        f.write(json.dumps({k: _jsonable(v) for k, v in record.items()}) + "\n")


def truncate_jsonl(path: str | os.PathLike, before_step: int) -> None:
    """Keep only the rows of a ``.jsonl`` stream whose ``step`` is below ``before_step``."""
    rows = [r for r in read_jsonl(path) if r.get("step", -1) < before_step]
    Path(path).write_text("".join(json.dumps(r) + "\n" for r in rows))


def read_jsonl(path: str | os.PathLike) -> list[dict[str, Any]]:
    """Every JSON object of a ``.jsonl`` file (an absent file reads as no rows)."""
    path = Path(path)
    if not path.exists():
        return []
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
