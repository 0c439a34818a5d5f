"""Throughput of the GPU-resident pipeline (``lnl.data.gpu.GPULoader``) against a torchvision
``DataLoader`` with PIL transforms, on CIFAR-10 training images.

Claim (issue 3): on a GPU, ``GPULoader`` delivers at least 20x the images per second of a
``DataLoader`` with 4 workers running the same augmentation through PIL, because the dataset stays
on the device as uint8 and each batch is cropped, flipped, augmented and normalised in a few
whole-batch tensor ops, with no worker processes and no host-to-device copy per step.
Evidence: for each pipeline ("weak" = pad-crop + flip + normalise; "mixmatch" = weak + 2 strong
AutoAugment views, PLReMix's ``all`` mode), the median images/s over ``--reps`` repetitions of
``--batches`` batches each, after one warm-up repetition; both loaders are timed in the same run and
deliver normalised float batches on ``--device`` (the DataLoader's batches are copied there inside
the timed loop). CUDA timings are synchronised before the clock stops.

    python benchmarks/bench_data.py                       # CPU, about a minute
    python benchmarks/bench_data.py --device cuda --record
"""

from __future__ import annotations

import argparse
import datetime
import statistics
import sys
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from _machine import machine_line  # noqa: E402  (benchmarks/ is sys.path[0] for a script)

from lnl.data import get_dataset  # noqa: E402
from lnl.data.gpu import GPULoader  # noqa: E402

RESULTS = ROOT / "benchmarks" / "RESULTS.md"
PIPELINES = {"weak": ("weak",), "mixmatch": ("weak", "strong", "strong")}


def pil_transform(views: tuple[str, ...], mean, std):
    """The torchvision PIL equivalent of ``views`` (returns a tuple for several views)."""
    import torchvision.transforms as T

    weak = [T.RandomCrop(32, padding=4), T.RandomHorizontalFlip()]
    tail = [T.ToTensor(), T.Normalize(mean, std)]
    by_name = {
        "weak": T.Compose(weak + tail),
        "strong": T.Compose(weak + [T.AutoAugment(T.AutoAugmentPolicy.CIFAR10, fill=128)] + tail),
    }
    tfs = [by_name[v] for v in views]
    return tfs[0] if len(tfs) == 1 else (lambda img: tuple(t(img) for t in tfs))


def _sync(device: torch.device) -> None:
    """Wait for queued CUDA work so that the clock measures finished batches."""
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def forever(loader):
    """Cycle through epochs so that timing windows measure steady-state throughput."""
    while True:
        yield from loader


def time_loader(it, batches: int, batch_size: int, reps: int, device: torch.device) -> float:
    """Median images/s of ``reps`` consecutive windows of ``batches`` batches drawn from the
    iterator ``it``, after one warm-up window (worker start-up, allocator, caches)."""
    rates = []
    for rep in range(reps + 1):
        _sync(device)
        start = time.perf_counter()
        for _ in range(batches):
            images = next(it)[0]
            first = images[0] if isinstance(images, (tuple, list)) else images
            first.view(-1)[:1].sum()  # touch the output so lazy work is done
        _sync(device)
        if rep:
            rates.append(batches * batch_size / (time.perf_counter() - start))
    return statistics.median(rates)


def bench_gpu(ds, views, args, device) -> float:
    """Median images/s of ``GPULoader`` producing ``views``."""
    loader = GPULoader(
        ds.images,
        ds.targets,
        args.batch_size,
        mean=ds.mean,
        std=ds.std,
        device=device,
        views=views,
        drop_last=True,
        seed=0,
    )
    return time_loader(forever(loader), args.batches, args.batch_size, args.reps, device)


def bench_dataloader(ds, views, args, device) -> float:
    """Median images/s of a ``DataLoader`` with PIL transforms, batches copied to ``device``."""
    ds.transform = pil_transform(views, ds.mean, ds.std)
    loader = torch.utils.data.DataLoader(
        ds,
        batch_size=args.batch_size,
        shuffle=True,
        num_workers=args.workers,
        drop_last=True,
        pin_memory=device.type == "cuda",
        persistent_workers=True,
        generator=torch.Generator().manual_seed(0),
    )

    def batches():
        for images, labels in forever(loader):
            if isinstance(images, (tuple, list)):
                images = tuple(x.to(device, non_blocking=True) for x in images)
            else:
                images = images.to(device, non_blocking=True)
            yield images, labels.to(device, non_blocking=True)

    try:
        return time_loader(batches(), args.batches, args.batch_size, args.reps, device)
    finally:
        ds.transform = None


def device_name(device: torch.device) -> str:
    """GPU name, or CPU model and thread count."""
    if device.type == "cuda":
        return f"{torch.cuda.get_device_name(device)}; {machine_line()}"
    cpu = next(
        (
            line.split(":", 1)[1].strip()
            for line in Path("/proc/cpuinfo").read_text().splitlines()
            if line.startswith("model name")
        ),
        "cpu",
    )
    return f"{cpu}; {machine_line()}"


def record(rows, args, device) -> None:
    """Append one row to benchmarks/RESULTS.md's table."""
    from lnl.engine.defaults import git_sha

    sha = git_sha(short=True)
    table = "; ".join(
        f"{name}: GPULoader {g:.0f} img/s, DataLoader {d:.0f} img/s ({g / d:.1f}x)"
        for name, g, d in rows
    )
    line = (  # a row of RESULTS.md's table: date | device | what | command | numbers
        f"| {datetime.date.today()} | {device_name(device)}, torch {torch.__version__}, git {sha} "
        f"| bench_data: GPULoader vs torchvision DataLoader, CIFAR-10 bs={args.batch_size} "
        f"workers={args.workers} | `{' '.join(sys.argv)}` | {table} |\n"
    )
    with RESULTS.open("a") as fh:
        fh.write(line)


def get_args_parser() -> argparse.ArgumentParser:
    """The benchmark's flags."""
    p = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    p.add_argument("--root", type=Path, default=ROOT / "data" / "cifar10")
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    p.add_argument(
        "--pipelines", nargs="+", choices=sorted(PIPELINES), default=["weak", "mixmatch"]
    )
    p.add_argument("--batch-size", type=int, default=512)
    p.add_argument("--batches", type=int, default=10, help="batches per timed repetition")
    p.add_argument("--reps", type=int, default=10)
    p.add_argument("--workers", type=int, default=4)
    p.add_argument("--threads", type=int, default=None, help="torch intra-op threads")
    p.add_argument("--record", action="store_true", help="append a line to benchmarks/RESULTS.md")
    return p


def main(args: argparse.Namespace) -> None:
    """Run every pipeline on both loaders and print images/s."""
    if args.threads:
        torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    ds = get_dataset("cifar10", args.root, "train")
    print(
        f"device: {device_name(device)}; CIFAR-10 train {tuple(ds.images.shape)}; "
        f"batch {args.batch_size}; {args.reps} reps x {args.batches} batches"
    )
    rows = []
    for name in args.pipelines:
        views = PIPELINES[name]
        g = bench_gpu(ds, views, args, device)
        d = bench_dataloader(ds, views, args, device)
        rows.append((name, g, d))
        print(
            f"{name:9s} GPULoader {g:>10.0f} img/s | DataLoader({args.workers} workers, PIL) "
            f"{d:>8.0f} img/s | ratio {g / d:5.1f}x"
        )
    if args.record:
        record(rows, args, device)


if __name__ == "__main__":
    main(get_args_parser().parse_args())
