"""Helpers of the DivideMix/PLReMix method tests: a reduced digits dataset (first 160 training and 100
test images at 16×16, so a co-divide epoch takes seconds on a loaded CPU), running a real ``main``,
and stopping a run after a given epoch (stop-and-resume)."""

from __future__ import annotations

import contextlib

import torch
import torch.nn.functional as F

import lnl.engine.data as engine_data
from lnl.data import InMemoryDataset, get_dataset
from lnl.engine import runner


def _shrink(ds, n: int, size: int = 16):
    x = ds.images[:n].permute(0, 3, 1, 2).float()
    x = F.interpolate(x, size=(size, size), mode="bilinear", align_corners=False)
    images = x.round().clamp(0, 255).to(torch.uint8).permute(0, 2, 3, 1).contiguous()
    return InMemoryDataset(
        ds.name, ds.split, images, ds.targets[:n], ds.num_classes, ds.mean, ds.std
    )


def tiny_digits(monkeypatch, n_train: int = 160, n_test: int = 100) -> None:
    """Make ``build_noisy_data`` see a reduced digits (the real dataset, fewer and smaller images)."""

    def fake(name, root=None, split="train", **kw):
        ds = get_dataset(name, root, split, **kw)
        return _shrink(ds, n_train if split == "train" else n_test) if name == "digits" else ds

    monkeypatch.setattr(engine_data, "get_dataset", fake)


def run_main(module, out, *argv):
    argv = ["--out", str(out), "--device", "cpu", "--no-tensorboard", *argv]
    parse = getattr(module, "parse_args", None) or module.get_args_parser().parse_args
    return module.main(parse(argv))


# The CPU integration check: all of digits (1,437 / 360, at 16×16 to fit a loaded 2-core CPU),
# 40 % symmetric noise, the same batch size, LR, number of epochs and LR schedule (the originals' ÷10
# step halfway) for every method. With cosine annealing CE wins 10-epoch runs by its final low-LR
# epochs alone: DivideMix's warm-up by itself (plain CE, step LR) is 13 points under it (RESULTS.md).
INTEGRATION = [
    "--dataset",
    "digits",
    "--noise_mode",
    "sym",
    "--r",
    "0.4",
    "--batch_size",
    "32",
    "--lr",
    "0.05",
]
INTEGRATION_EPOCHS = 10  # CE: --num_epochs 10; co-divide methods: --num_epochs 9 (epochs 0..9)
_CE: dict = {}


def ce_baseline(monkeypatch, out) -> dict:
    """The CE baseline's record under ``INTEGRATION`` (computed once per session)."""
    if "result" not in _CE:
        from methods.standard import train as standard

        tiny_digits(monkeypatch, n_train=1437, n_test=360)
        _CE["result"] = run_main(
            standard,
            out,
            *INTEGRATION,
            "--num_epochs",
            str(INTEGRATION_EPOCHS),
            "--lr_schedule",
            "step",
        )
    return _CE["result"]


@contextlib.contextmanager
def stop_after(monkeypatch, last_epoch: int):
    """Within the block, a run (``lnl.engine.runner``) goes up to ``last_epoch`` only (then returns normally)."""
    original = runner.run_epochs

    def truncated(first, end, step, after_epoch=()):
        return original(first, min(end, last_epoch + 1), step, after_epoch)

    with monkeypatch.context() as m:
        m.setattr(runner, "run_epochs", truncated)
        yield


def _jpeg(path, seed: int, size: int = 24) -> None:
    import numpy as np
    from PIL import Image

    path.parent.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    Image.fromarray(rng.integers(0, 255, (size, size, 3), dtype=np.uint8)).save(path)


def fake_clothing1m(root, per_class: int = 2) -> None:
    """A tiny Clothing1M in the real layout: 14 classes × ``per_class`` noisy-train images, half of them
    with a verified clean label, and 14-image val/test lists."""
    noisy, clean, train, val, test = [], [], [], [], []
    for c in range(14):
        for j in range(per_class + 2):
            key = f"images/{c % 10}/{c:02d}/{c}_{j}.jpg"
            _jpeg(root / key, seed=c * 100 + j)
            if j < per_class:
                noisy.append(f"{key} {(c + j) % 14}")
                train.append(key)
                if j == 0:
                    clean.append(f"{key} {c}")
            else:
                clean.append(f"{key} {c}")
                (val if j == per_class else test).append(key)
    for name, lines in [
        ("noisy_label_kv.txt", noisy),
        ("clean_label_kv.txt", clean),
        ("noisy_train_key_list.txt", train),
        ("clean_train_key_list.txt", train[:3]),
        ("clean_val_key_list.txt", val),
        ("clean_test_key_list.txt", test),
    ]:
        (root / name).write_text("\n".join(lines) + "\n")


def fake_webvision(root, classes: int = 50, per_class: int = 1) -> None:
    """A tiny WebVision 1.0 in the real layout (Google train list, val list, synsets, and the
    rearranged ILSVRC12 val under ``imagenet/val/<WNID>/``), plus one class-50 image that is dropped."""
    (root / "info").mkdir(parents=True)
    wnids = [f"n{c:08d}" for c in range(classes + 1)]
    (root / "info" / "synsets.txt").write_text(
        "".join(f"{w} class {i}\n" for i, w in enumerate(wnids))
    )
    train, val = [], []
    for c in range(classes + 1):
        for j in range(per_class):
            key = f"google/q{c:04d}/{j}.jpg"
            _jpeg(root / key, seed=c * 10 + j)
            train.append(f"{key} {c}")
        _jpeg(root / "val_images_256" / f"val{c:03d}.jpg", seed=5000 + c)
        val.append(f"val{c:03d}.jpg {c}")
        _jpeg(root / "imagenet" / "val" / wnids[c] / f"ILSVRC2012_val_{c:08d}.JPEG", seed=9000 + c)
    (root / "info" / "train_filelist_google.txt").write_text("\n".join(train) + "\n")
    (root / "info" / "val_filelist.txt").write_text("\n".join(val) + "\n")
