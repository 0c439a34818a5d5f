"""Seconds per epoch of PLReMix / DivideMix: a warm-up epoch and a full co-divide epoch (evaluation
pass + GMM for both nets, MixMatch for both nets, ensemble test), timed separately.

Claim: the GPU-resident pipeline (lnl.data.gpu), bf16 autocast (``--amp``), channels_last and the
vectorised evaluation pass keep the GPU busy; the evidence is the epoch time and the images/s below,
measured on real CIFAR-10 (``--data_path``) or synthetic CIFAR-shaped data (``--synthetic N``).
Every epoch is timed with ``torch.cuda.synchronize`` + ``perf_counter``; the median of ``--repeats``
runs of each kind is reported and a line appended to ``benchmarks/RESULTS.md``.

    python benchmarks/bench_epoch.py --method plremix --data_path data/cifar10 -- --amp
    python benchmarks/bench_epoch.py --method dividemix --synthetic 5000 --repeats 1 -- --device cpu

Arguments after ``--`` go to the method's own parser (e.g. ``--amp --compile --r 0.5``).
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from _machine import machine_line  # noqa: E402  (benchmarks/ is sys.path[0] for a script)

import lnl.engine.data as engine_data  # noqa: E402
from lnl.codivide.cotrain import CoDivide  # noqa: E402
from lnl.data import InMemoryDataset  # noqa: E402
from lnl.engine import default_setup  # noqa: E402
from lnl.engine.defaults import git_sha  # noqa: E402
from lnl.engine.settings import DataSettings  # noqa: E402

RESULTS = Path(__file__).resolve().parent / "RESULTS.md"


def synthetic(n: int):
    """Replace ``get_dataset`` with random CIFAR-shaped uint8 data of ``n`` training images."""

    def fake(name, root=None, split="train", **kw):
        m = n if split == "train" else max(n // 5, 100)
        g = torch.Generator().manual_seed(0 if split == "train" else 1)
        images = torch.randint(0, 256, (m, 32, 32, 3), dtype=torch.uint8, generator=g)
        targets = torch.randint(0, 10, (m,), generator=g)
        return InMemoryDataset(
            "cifar10", split, images, targets, 10, (0.49, 0.48, 0.45), (0.2, 0.2, 0.2)
        )

    engine_data.get_dataset = fake


def build(method: str, argv: list[str]) -> CoDivide:
    """The method object exactly as its entry point's ``main`` builds it (no training yet)."""
    if method == "plremix":
        from methods.plremix import plremix_lib as lib
        from methods.plremix import train as entry
    else:
        from methods.dividemix import Train_cifar as entry
        from methods.dividemix import dividemix_lib as dm_lib
    args = entry.parse_args(argv)
    vars(args).pop("recipe")  # the entry point's main() pops it too
    args.noise_file = args.noise_file or None
    log = default_setup(args)
    args.warm_up = (
        args.warm_up if args.warm_up is not None else entry.RECIPE.warm_up_epochs[args.dataset]
    )
    data = engine_data.build_noisy_data(DataSettings.from_args(args), log)
    if method == "plremix":
        lib.resolve_fixes(args)
        nets, opts = lib.proto_nets(args, data.num_classes)
        return lib.PLReMix(args, nets, opts, data, log)
    nets, opts = dm_lib.dividemix_nets(
        args, entry.RECIPE.backbone, data.num_classes, weight_decay=5e-4
    )
    return CoDivide(args, nets, opts, data, log)


def timed(fn) -> float:
    if torch.cuda.is_available():
        torch.cuda.synchronize()
    t = time.perf_counter()
    fn()
    if torch.cuda.is_available():
        torch.cuda.synchronize()
    return time.perf_counter() - t


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--method", choices=("plremix", "dividemix"), default="plremix")
    p.add_argument("--data_path", default=None, help="real CIFAR-10 folder")
    p.add_argument(
        "--synthetic", type=int, default=0, help="use N random CIFAR-shaped images instead"
    )
    p.add_argument("--repeats", type=int, default=3, help="epochs timed per kind (median reported)")
    p.add_argument("--no-record", dest="record", action="store_false")
    argv = sys.argv[1:]
    own, rest = (
        (argv[: argv.index("--")], argv[argv.index("--") + 1 :]) if "--" in argv else (argv, [])
    )
    opts = p.parse_args(own)
    if opts.synthetic:
        synthetic(opts.synthetic)
    out = tempfile.mkdtemp(prefix="bench_epoch_")
    extra = ["--data_path", opts.data_path] if opts.data_path else []
    method = build(
        opts.method, ["--out", out, "--resume", "none", "--no-tensorboard", *extra, *rest]
    )
    n = len(method.noisy)
    warm = [timed(lambda: method.run_epoch(0)) for _ in range(opts.repeats)]
    full = [timed(lambda: method.run_epoch(method.args.warm_up)) for _ in range(opts.repeats)]
    w, f = statistics.median(warm), statistics.median(full)
    device = torch.cuda.get_device_name() if method.args.device.type == "cuda" else "cpu"
    device += f"; {machine_line()}"
    line = (
        f"| bench_epoch | {opts.method} | {device} | torch {torch.__version__} | {git_sha()[:8]} | N={n} "
        f"bs={method.args.batch_size} amp={method.args.amp} compile={method.args.compile} | warm-up epoch "
        f"{w:.2f} s ({2 * n / w:.0f} img/s over both nets) | full epoch {f:.2f} s ({2 * n / f:.0f} train "
        f"samples/s) | `python benchmarks/bench_epoch.py {' '.join(argv)}` |"
    )
    print(line)
    if opts.record:
        with open(RESULTS, "a") as fh:
            fh.write(line + "\n")


if __name__ == "__main__":
    main()
