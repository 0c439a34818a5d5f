"""Distributed helpers: rank, world size, main process, barrier and an object gather (single process safe),
process-group setup from torchrun or a submitit/SLURM job, DDP wrapping and sharded batches."""

from __future__ import annotations

import datetime
import os
import zlib

import torch
import torch.distributed as dist


def is_dist() -> bool:
    return dist.is_available() and dist.is_initialized()


def get_rank() -> int:
    return dist.get_rank() if is_dist() else 0


def get_world_size() -> int:
    return dist.get_world_size() if is_dist() else 1


def is_main_process() -> bool:
    """Only rank 0 writes files (checkpoints, logs, results)."""
    return get_rank() == 0


def barrier() -> None:
    if is_dist():
        dist.barrier()


def all_gather_object(obj):
    """Every rank's picklable ``obj``, in rank order (``[obj]`` when not distributed)."""
    if not is_dist():
        return [obj]
    out = [None] * get_world_size()
    dist.all_gather_object(out, obj)
    return out


# --------------------------------------------------------------------------------------------------
# Process-group setup (torchrun or a submitit/SLURM job) and the two DDP pieces entry points use.


def _launcher_env() -> tuple[int, int, int, str | None, int | None]:
    """(rank, local_rank, world_size, master_addr, master_port) from torchrun's variables or, in a
    submitit job, from ``submitit.JobEnvironment`` (the port derives from the job id and restart
    count so a requeued job does not reuse a port that may still be in TIME_WAIT)."""
    env = os.environ
    if "RANK" in env and "WORLD_SIZE" in env:  # torchrun / torch.distributed.run
        return (
            int(env["RANK"]),
            int(env.get("LOCAL_RANK", 0)),
            int(env["WORLD_SIZE"]),
            env.get("MASTER_ADDR"),
            int(env["MASTER_PORT"]) if "MASTER_PORT" in env else None,
        )
    if "SUBMITIT_EXECUTOR" not in env:
        return 0, 0, 1, None, None
    import submitit

    job = submitit.JobEnvironment()
    restarts = int(env.get("SLURM_RESTART_COUNT", 0))
    port = 20000 + (zlib.crc32(f"{job.job_id}:{restarts}".encode()) % 40000)
    return job.global_rank, job.local_rank, job.num_tasks, job.hostnames[0], port


def init_distributed(backend: str | None = None, timeout_s: int = 1800) -> tuple[int, int, int]:
    """Join the process group when this process is one of several tasks; idempotent.

    Reads rank and world size from torchrun (``RANK``, ``WORLD_SIZE``, ``LOCAL_RANK``,
    ``MASTER_ADDR/PORT``) or from ``submitit.JobEnvironment`` (one task per GPU, set by
    ``launchers/slurm.py``), exports ``MASTER_ADDR/PORT``, selects ``cuda:<local_rank>`` and calls
    ``init_process_group`` (NCCL on CUDA, gloo on CPU). A single task does nothing.

    Args:
        backend: force ``nccl`` or ``gloo`` (default: by device availability).
        timeout_s: collective timeout.

    Returns:
        ``(rank, local_rank, world_size)``.
    """
    if is_dist():
        return get_rank(), int(os.environ.get("LOCAL_RANK", 0)), get_world_size()
    rank, local_rank, world, addr, port = _launcher_env()
    if world <= 1:
        return 0, 0, 1
    os.environ.setdefault("MASTER_ADDR", addr or "127.0.0.1")
    os.environ.setdefault("MASTER_PORT", str(port or 29500))
    os.environ.update(RANK=str(rank), LOCAL_RANK=str(local_rank), WORLD_SIZE=str(world))
    cuda = torch.cuda.is_available()
    if cuda:
        torch.cuda.set_device(local_rank % torch.cuda.device_count())
    dist.init_process_group(
        backend or ("nccl" if cuda else "gloo"),
        init_method="env://",
        rank=rank,
        world_size=world,
        timeout=datetime.timedelta(seconds=timeout_s),
    )
    return rank, local_rank, world


def ddp(model: torch.nn.Module, device: torch.device) -> torch.nn.Module:
    """``DistributedDataParallel(model)`` when there are several processes, ``model`` otherwise.

    Checkpoints keep working unchanged: ``save_checkpoint`` unwraps ``.module``.
    """
    if get_world_size() <= 1:
        return model
    from torch.nn.parallel import DistributedDataParallel

    ids = [device] if device.type == "cuda" else None
    return DistributedDataParallel(model, device_ids=ids)


class ShardedLoader:
    """This rank's share of every batch of a ``GPULoader``: rank ``r`` of ``W`` takes the ``r``-th of
    ``W`` contiguous chunks (``tensor_split``) of each batch, so ``--batch_size`` stays the global
    batch of the paper and the gradient averaged by DDP equals the single-process one (BatchNorm
    statistics are per rank). Every rank draws the same permutation from ``(seed, epoch)`` — the
    ``DistributedSampler`` contract without a sampler. ``set_epoch`` and other attributes pass
    through to the wrapped loader. A batch smaller than ``W`` leaves some ranks empty: keep
    ``batch_size >= W`` (the last batch included, or use ``drop_last``).
    """

    def __init__(self, loader, rank: int | None = None, world_size: int | None = None):
        self.loader = loader
        self.rank = get_rank() if rank is None else rank
        self.world_size = get_world_size() if world_size is None else world_size

    def _part(self, t):
        if isinstance(t, (tuple, list)):
            return type(t)(self._part(x) for x in t)
        return t.tensor_split(self.world_size)[self.rank]

    def __iter__(self):
        for batch in self.loader:
            yield tuple(self._part(t) for t in batch)

    def __len__(self) -> int:
        return len(self.loader)

    def __getattr__(self, name: str):
        if name == "loader":  # not set yet (copy/pickle): no recursion
            raise AttributeError(name)
        return getattr(self.loader, name)


def shard(loader):
    """``ShardedLoader(loader)`` when distributed, the loader itself otherwise."""
    return ShardedLoader(loader) if get_world_size() > 1 else loader


def broadcast_from_rank0(model: torch.nn.Module) -> None:
    """Start every replica from rank 0's weights (each rank seeds its RNG with ``seed + rank``)."""
    if get_world_size() > 1:
        for tensor in [*model.parameters(), *model.buffers()]:
            torch.distributed.broadcast(tensor.data, 0)


def sync_gradients(model: torch.nn.Module) -> None:
    """Sum the replicas' gradients (each loss is already divided by the world size), as
    MirroredStrategy does; a no-op for one process."""
    if get_world_size() > 1:
        for p in model.parameters():
            if p.grad is not None:
                torch.distributed.all_reduce(p.grad)
