"""Small training-loop pieces (no monolithic ``train()``): one supervised epoch, evaluation, the
epoch loop with checkpoint/resume, and an AMP context. Methods compose these with their own steps."""

from __future__ import annotations

import contextlib
import time
from collections.abc import Callable, Iterable
from typing import Any

import torch
import torch.nn.functional as F
from tqdm.auto import tqdm

from lnl.engine import comm


def autocast(device: torch.device, enabled: bool):
    """bf16 autocast on CUDA when ``enabled`` (``--amp``); a no-op elsewhere."""
    if enabled and device.type == "cuda":
        return torch.autocast("cuda", dtype=torch.bfloat16)
    return contextlib.nullcontext()


def set_lr(optimizer: torch.optim.Optimizer, lr: float) -> None:
    """Set every parameter group's learning rate (the originals' ``adjust_learning_rate``)."""
    for group in optimizer.param_groups:
        group["lr"] = lr


def progress(iterable: Iterable, *, desc: str, total: int | None = None, leave: bool = False):
    """A tqdm bar on rank 0 (to stderr), silent on other ranks."""
    return tqdm(
        iterable,
        desc=desc,
        total=total,
        leave=leave,
        dynamic_ncols=True,
        disable=not comm.is_main_process(),
        mininterval=1.0,
    )


class NonFiniteLossError(RuntimeError):
    """A NaN or inf loss: the run stops (non-zero exit, no results row); the last checkpoint is kept."""


class FiniteGuard:
    """Stops a run at the first NaN/inf loss term, naming the step and every term.

    ``watch(step, ce=..., extra=...)`` after each step's loss; ``check()`` where the loop syncs anyway
    (the end of an epoch, an evaluation), before anything is logged or checkpointed. On the CPU a bad
    step raises at once; on a GPU the first bad step and its terms are kept on the device (no host sync
    per step) and ``check`` raises for them, so the weights after it are never saved.
    """

    def __init__(self, where: str = "", *, defer: bool | None = None):
        self.where = where
        self.defer = defer  # None: defer off the CPU only
        self._names: tuple[str, ...] = ()
        # the first bad step, -1 while every step was finite
        self._first: torch.Tensor | None = None
        self._values: torch.Tensor | None = None  # that step's terms

    def watch(self, step: int, **terms) -> None:
        values = torch.stack(
            [torch.as_tensor(t).detach().float().reshape(()) for t in terms.values()]
        )
        if self._first is None or tuple(terms) != self._names:
            self.check()
            self._names = tuple(terms)
            self._first = torch.full((), -1, dtype=torch.long, device=values.device)
            self._values = torch.zeros_like(values)
        take = (self._first < 0) & ~torch.isfinite(values).all()
        self._first = torch.where(take, step, self._first)
        self._values = torch.where(take, values, self._values)
        if not (values.device.type != "cpu" if self.defer is None else self.defer):
            self.check()

    def check(self) -> None:
        """Raise :class:`NonFiniteLossError` when a watched step was not finite."""
        if self._first is None or int(self._first) < 0:
            return
        terms = ", ".join(f"{k}={v:.6g}" for k, v in zip(self._names, self._values.tolist()))
        where = f"{self.where}, " if self.where else ""
        raise NonFiniteLossError(
            f"non-finite loss at {where}step {int(self._first)}: {terms}. The run stops "
            f"without a result; the last checkpoint (before this epoch) is kept: lower the "
            f"learning rate or check the data"
        )


def train_one_epoch(
    model: torch.nn.Module,
    loader,
    optimizer: torch.optim.Optimizer,
    *,
    device: torch.device,
    epoch: int,
    amp: bool = False,
    loss_fn: Callable[..., torch.Tensor] = F.cross_entropy,
) -> dict[str, float]:
    """One pass of supervised training on ``(images, labels, indices)`` batches.

    Returns:
        ``{"loss": mean loss, "acc": accuracy against the (noisy) training labels}``.
    """
    model.train()
    loss_sum = torch.zeros((), device=device)
    correct = torch.zeros((), device=device, dtype=torch.long)
    seen = 0
    guard = FiniteGuard(f"epoch {epoch}")
    for step, (images, labels, _) in enumerate(
        progress(loader, desc=f"epoch {epoch}", total=len(loader))
    ):
        images, labels = images.to(device, non_blocking=True), labels.to(device, non_blocking=True)
        with autocast(device, amp):
            logits = model(images)
            loss = loss_fn(logits, labels)
        optimizer.zero_grad(set_to_none=True)
        guard.watch(step, loss=loss)
        loss.backward()
        optimizer.step()
        loss_sum += loss.detach() * labels.shape[0]
        correct += (logits.argmax(1) == labels).sum()
        seen += labels.shape[0]
    # One host sync per epoch, not per step.
    guard.check()
    return {"loss": (loss_sum / max(seen, 1)).item(), "acc": correct.item() / max(seen, 1)}


@torch.no_grad()
def evaluate(
    model: torch.nn.Module, loader, *, device: torch.device, amp: bool = False
) -> dict[str, float]:
    """Top-1 accuracy and mean cross-entropy on ``(images, labels, indices)`` batches."""
    model.eval()
    loss_sum, correct, seen = 0.0, 0, 0
    for images, labels, _ in loader:
        images, labels = images.to(device), labels.to(device)
        with autocast(device, amp):
            logits = model(images).float()
        loss_sum += F.cross_entropy(logits, labels, reduction="sum").item()
        correct += int((logits.argmax(1) == labels).sum())
        seen += labels.shape[0]
    return {"acc": correct / max(seen, 1), "loss": loss_sum / max(seen, 1)}


class Stopwatch:
    """Wall time that survives resumes: ``elapsed`` adds the seconds stored in the checkpoint."""

    def __init__(self, previous: float = 0.0):
        self.previous = previous
        self.start = time.perf_counter()

    @property
    def elapsed(self) -> float:
        return self.previous + time.perf_counter() - self.start


class DeviceTimer:
    """Seconds spent in regions of device work, summed without synchronising inside them: on CUDA each
    region is a pair of events, read (and so waited for) only by ``seconds``; on the CPU, wall time."""

    def __init__(self, device: torch.device | str):
        self.device = torch.device(device)
        self.cuda = self.device.type == "cuda"
        self.total = 0.0  # seconds already read (a resumed run adds its saved total here)
        self._pending: list = []

    @contextlib.contextmanager
    def __call__(self):
        if not self.cuda:
            start = time.perf_counter()
            yield
            self.total += time.perf_counter() - start
            return
        # on the device's own stream: with --device cuda:1 the current device may still be cuda:0
        stream = torch.cuda.current_stream(self.device)
        start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        start.record(stream)
        yield
        end.record(torch.cuda.current_stream(self.device))
        self._pending.append((start, end))

    @property
    def seconds(self) -> float:
        for start, end in self._pending:
            end.synchronize()
            self.total += start.elapsed_time(end) / 1e3
        self._pending.clear()
        return self.total


def run_epochs(
    first_epoch: int,
    num_epochs: int,
    step: Callable[[int], dict[str, Any]],
    after_epoch: Iterable[Callable[[int, dict[str, Any]], None]] = (),
) -> None:
    """Call ``step(epoch)`` for each remaining epoch, then each hook with the epoch's metrics.

    Hooks run in order; put the checkpoint hook last so a checkpoint covers the whole epoch.
    """
    epochs = range(first_epoch, num_epochs)
    for epoch in progress(epochs, desc="epochs", total=len(epochs), leave=True):
        metrics = step(epoch)
        for hook in after_epoch:
            hook(epoch, metrics)
