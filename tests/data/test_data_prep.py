"""data_prep scripts against small archives and folders built in the real formats.

Downloads use ``file://`` URLs with md5 tables supplied to the scripts. Scripts are imported and
their ``main`` called in-process (fast); one test runs a script as a real subprocess."""

from __future__ import annotations

import importlib.util
import json
import subprocess
import sys

import numpy as np
import pytest
import torch

from lnl.data import get_dataset
from lnl.data.noise_files import load_noise_file

from ._fakes import (
    make_clothing1m,
    make_food101n,
    make_tarball,
    make_tiny_imagenet_zip,
    make_webvision,
    md5,
    save_image,
    write_cifar_pickles,
)
from .conftest import REPO

SCRIPTS = [
    "cifar",
    "tiny_imagenet",
    "clothing1m",
    "webvision",
    "food101n",
    "make_noise",
    "extract_features",
]


def script(name: str):
    """Import data_prep/<name>.py as a module."""
    spec = importlib.util.spec_from_file_location(
        f"data_prep_{name}", REPO / "data_prep" / f"{name}.py"
    )
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def run(name: str, *argv: str):
    mod = script(name)
    return mod.main(mod.get_args_parser().parse_args([str(a) for a in argv]))


@pytest.mark.parametrize("name", SCRIPTS)
def test_every_script_has_help_and_root(name):
    text = script(name).get_args_parser().format_help()
    assert "usage:" in text and ("--root" in text)


def _cifar_tarball(tmp_path, cifar10_test):
    """A 20-image CIFAR-10 release tarball and its md5 tables."""
    src = tmp_path / "src" / "cifar-10-batches-py"
    x, y = cifar10_test.images[:25].numpy(), cifar10_test.targets[:25].numpy()
    table = write_cifar_pickles(src, x, y)
    archive = tmp_path / "cifar-10-python.tar.gz"
    (tmp_path / "md5.json").write_text(json.dumps(table))
    return archive, make_tarball(src, archive), x, y


def test_cifar_download_verify_and_rerun(tmp_path, cifar10_test, capsys):
    archive, archive_md5, x, y = _cifar_tarball(tmp_path, cifar10_test)
    root = tmp_path / "cifar10"
    args = [
        "--dataset",
        "cifar10",
        "--root",
        root,
        "--url",
        archive.as_uri(),
        "--md5",
        archive_md5,
        "--file-md5",
        tmp_path / "md5.json",
    ]
    run("cifar", *args)
    out = capsys.readouterr().out
    assert "downloaded" in out and "train: 20 images" in out
    train = get_dataset("cifar10", root, "train")
    assert (
        torch.equal(train.images, torch.from_numpy(x[:20]))
        and train.targets.tolist() == y[:20].tolist()
    )
    assert not (root / archive.name).exists()  # archive removed after extraction
    digest = md5(root / "cifar-10-batches-py" / "data_batch_1")
    assert digest in (tmp_path / "md5.json").read_text()
    run("cifar", *args)  # rerun: nothing to do
    assert "already present and verified" in capsys.readouterr().out


def test_cifar_rejects_a_wrong_md5(tmp_path, cifar10_test):
    archive, _, _, _ = _cifar_tarball(tmp_path, cifar10_test)
    with pytest.raises(ValueError, match="md5 mismatch"):
        run(
            "cifar",
            "--root",
            tmp_path / "c",
            "--url",
            archive.as_uri(),
            "--md5",
            "0" * 32,
            "--file-md5",
            tmp_path / "md5.json",
        )
    assert not list((tmp_path / "c").glob("*.part"))  # no partial file left behind
    bad = json.loads((tmp_path / "md5.json").read_text())
    bad["test_batch"] = "f" * 32
    (tmp_path / "bad.json").write_text(json.dumps(bad))
    with pytest.raises(SystemExit, match="test_batch"):
        run(
            "cifar",
            "--root",
            tmp_path / "c",
            "--url",
            archive.as_uri(),
            "--md5",
            "none",
            "--file-md5",
            tmp_path / "bad.json",
        )


def test_cifar_official_constants_are_the_published_ones():
    official = script("cifar").OFFICIAL
    assert official["cifar10"]["md5"] == "c58f30108f718f92721af3b95e74349a"
    assert official["cifar100"]["files"]["train"] == "16019d7e3df5f24257cddd939b257f8d"
    assert official["cifar10"]["url"].startswith("https://www.cs.toronto.edu/~kriz/")


def test_cifar_from_npz_and_cifar_n(tmp_path, cifar10_test, capsys, private_cache):
    src = tmp_path / "src"
    src.mkdir()
    x, y = cifar10_test.images[:30].numpy(), cifar10_test.targets[:30].numpy()
    np.savez_compressed(src / "train.npz", x=x[:20], y=y[:20])
    np.savez_compressed(src / "test.npz", x=x[20:], y=y[20:])
    full = np.r_[y[:20], np.zeros(49980, dtype=np.int64)]
    torch.save({"clean_label": full, "aggre_label": (full + 1) % 10}, tmp_path / "h.pt")
    root = tmp_path / "out"
    run(
        "cifar",
        "--root",
        root,
        "--from-npz",
        src,
        "--cifar-n",
        "--cifar-n-url",
        (tmp_path / "h.pt").as_uri(),
    )
    with np.load(root / "train.npz") as z:
        assert np.array_equal(z["x"], x[:20])
    assert (
        get_dataset("cifar10n", root, "train").noisy_targets.tolist()
        == ((y[:20] + 1) % 10).tolist()
    )
    out = capsys.readouterr().out
    assert (
        "clean labels match" in out
        and len([line for line in out.splitlines() if line[:64].isalnum()]) >= 3
    )


@pytest.fixture
def private_cache(tmp_path, monkeypatch):
    """Keep decoded test images out of the user's cache."""
    monkeypatch.setenv("LNL_CACHE", str(tmp_path / "cache"))


def test_tiny_imagenet_download_and_regroup(tmp_path, private_cache):
    archive, values = make_tiny_imagenet_zip(tmp_path)
    root = tmp_path / "data" / "tiny-imagenet-200"
    run("tiny_imagenet", "--root", root, "--url", archive.as_uri(), "--md5", md5(archive))
    assert (
        not list((root / "train").rglob("*_boxes.txt")) and not (root / "val" / "images").exists()
    )
    train = get_dataset("tiny_imagenet", root, "train")
    assert train.classes == ["n0000", "n0111", "n0222"]  # sorted WNIDs
    assert train.targets.tolist() == [i // 4 for i in range(12)]  # label = i // per_class
    for k, rel in enumerate(train.paths):
        assert np.array_equal(train.images[k].numpy(), values[rel])
    val = get_dataset("tiny_imagenet", root, "test")
    assert len(val) == 6 and val.targets.tolist() == [0, 0, 1, 1, 2, 2]
    run("tiny_imagenet", "--root", root, "--url", "file:///nonexistent.zip")  # rerun is a no-op


def test_tiny_imagenet_raw_val_layout_equals_regrouped(tmp_path, private_cache):
    archive, _ = make_tiny_imagenet_zip(tmp_path)
    import zipfile

    zipfile.ZipFile(archive).extractall(tmp_path / "raw")
    raw = get_dataset("tiny_imagenet", tmp_path / "raw" / "tiny-imagenet-200", "val")
    run("tiny_imagenet", "--root", tmp_path / "prep" / "tiny-imagenet-200", "--zip", archive)
    prepped = get_dataset("tiny_imagenet", tmp_path / "prep" / "tiny-imagenet-200", "val")
    assert torch.equal(raw.images, prepped.images) and torch.equal(raw.targets, prepped.targets)


def test_clothing1m_lists(tmp_path, capsys):
    exp = make_clothing1m(tmp_path, annotations_subdir=True)
    run("clothing1m", "--root", tmp_path, "--check-images", "all")
    lines = (tmp_path / "lnl_lists" / "train.txt").read_text().splitlines()
    assert lines[0] == f"{exp['train'][0]} {exp['noisy'][exp['train'][0]]}" and len(lines) == 42
    assert "train: 42 images" in capsys.readouterr().out
    from_lists = get_dataset("clothing1m", tmp_path, "train")
    (tmp_path / "lnl_lists" / "train.txt").rename(tmp_path / "moved.txt")
    from_raw = get_dataset("clothing1m", tmp_path, "train")
    assert from_lists.paths == from_raw.paths and torch.equal(from_lists.targets, from_raw.targets)
    assert torch.equal(from_lists.clean_targets, from_raw.clean_targets)
    (tmp_path / exp["val"][3]).unlink()
    with pytest.raises(SystemExit, match="1 of 14 checked images missing"):
        run("clothing1m", "--root", tmp_path, "--check-images", "all")


def test_webvision_check_and_imagenet_regroup_from_devkit(tmp_path):
    from scipy.io import savemat

    make_webvision(tmp_path / "wv")
    # A devkit with 60 leaf synsets whose ILSVRC ids are NOT in WNID order.
    wnids = [f"n{1000 + c:08d}" for c in range(60)]
    ids = list(range(1, 61))[::-1]
    rec = np.zeros(60, dtype=[("ILSVRC2012_ID", "O"), ("WNID", "O"), ("num_children", "O")])
    for k in range(60):
        rec[k] = (ids[k], wnids[k], 0)
    devkit = tmp_path / "ILSVRC2012_devkit_t12"
    (devkit / "data").mkdir(parents=True)
    savemat(devkit / "data" / "meta.mat", {"synsets": rec})
    truth = [ids[c] for c in (0, 1, 49, 50, 0, 59)]  # classes of val images 1..6
    (devkit / "data" / "ILSVRC2012_validation_ground_truth.txt").write_text(
        "\n".join(map(str, truth))
    )
    for i in range(6):
        save_image(tmp_path / "val_flat" / f"ILSVRC2012_val_{i + 1:08d}.JPEG", i)
    run(
        "webvision",
        "--root",
        tmp_path / "wv",
        "--imagenet-root",
        tmp_path / "im",
        "--devkit",
        devkit,
        "--val-images",
        tmp_path / "val_flat",
    )
    ds = get_dataset("ilsvrc12_val", tmp_path / "im", "val")
    assert ds.targets.tolist() == [0, 0, 1, 49]
    assert ds.paths[0] == "val/n00001000/ILSVRC2012_val_00000001.JPEG"
    assert (tmp_path / "val_flat" / "ILSVRC2012_val_00000001.JPEG").exists()  # copy mode
    with pytest.raises(SystemExit, match="lacks"):
        run("webvision", "--root", tmp_path / "im")


def test_food101n_check(tmp_path, capsys):
    make_food101n(tmp_path)
    run("food101n", "--root", tmp_path)
    out = capsys.readouterr().out
    assert "food101n train: 9 images, 3 classes" in out and "food101n test: 3 images" in out
    run("food101n", "--root", tmp_path / "food-101", "--food101-only")
    assert "food101 train: 6 images" in capsys.readouterr().out


def test_make_noise_reproduces_a_shipped_file_as_a_subprocess(tmp_path, cifar10_root, noise_dir):
    out = tmp_path / "0.20.json"
    proc = subprocess.run(
        [
            sys.executable,
            "data_prep/make_noise.py",
            "--dataset",
            "cifar10",
            "--root",
            str(cifar10_root),
            "--noise",
            "sym",
            "--rate",
            "0.2",
            "--seed",
            "123",
            "--out",
            str(out),
        ],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert proc.returncode == 0, proc.stderr
    assert out.read_bytes() != b"" and "actual noise rate 0.1794" in proc.stdout
    shipped = load_noise_file(noise_dir / "dividemix_json" / "cifar10" / "0.20.json")
    assert torch.equal(load_noise_file(out).labels, shipped.labels)


def test_make_noise_pmd_first_45k_npz(tmp_path):
    y = np.repeat(np.arange(10), 10)
    np.save(tmp_path / "y.npy", y)
    rng = np.random.default_rng(0)
    p = np.exp(rng.normal(size=(100, 10)) + 3 * np.eye(10)[y])
    np.save(tmp_path / "p.npy", (p / p.sum(1, keepdims=True))[:60])
    run(
        "make_noise",
        "--labels",
        tmp_path / "y.npy",
        "--noise",
        "pmd+U",
        "--rate",
        "0.3",
        "--pmd-level",
        "0.3",
        "--first",
        "60",
        "--probs",
        tmp_path / "p.npy",
        "--out",
        tmp_path / "n.npz",
    )
    back = load_noise_file(tmp_path / "n.npz")
    assert len(back) == 60 and back.meta["type"] == "pmd+U" and back.meta["pmd_level"] == 0.3


def test_extract_features_resnet50_and_simclr(tmp_path):
    import torchvision

    run(
        "extract_features",
        "--dataset",
        "digits",
        "--encoder",
        "resnet50",
        "--weights",
        "none",
        "--image-size",
        "32",
        "--limit",
        "6",
        "--batch-size",
        "4",
        "--num-workers",
        "0",
        "--out",
        tmp_path / "r50",
    )
    feats = np.load(tmp_path / "r50_features.npy")
    assert feats.shape == (6, 2048) and feats.dtype == np.float16
    assert (
        np.load(tmp_path / "r50_labels.npy").tolist()
        == get_dataset("digits", None, "train").targets[:6].tolist()
    )
    # SimCLR: a CIFAR-stem ResNet-18 saved with wrapper prefixes and a projection head.
    net = torchvision.models.resnet18()
    net.conv1 = torch.nn.Conv2d(3, 64, 3, 1, 1, bias=False)
    net.maxpool, net.fc = torch.nn.Identity(), torch.nn.Identity()
    state = {f"module.encoder.{k}": v for k, v in net.state_dict().items()}
    state["module.projector.0.weight"] = torch.zeros(4, 512)
    torch.save({"state_dict": state}, tmp_path / "simclr.pt")
    run(
        "extract_features",
        "--dataset",
        "digits",
        "--encoder",
        "simclr",
        "--arch",
        "resnet18",
        "--cifar-stem",
        "--weights",
        tmp_path / "simclr.pt",
        "--limit",
        "5",
        "--num-workers",
        "0",
        "--out",
        tmp_path / "sc",
    )
    ds = get_dataset("digits", None, "train")
    x = ds.images[:5].permute(0, 3, 1, 2).float() / 255 - torch.tensor(ds.mean).view(1, 3, 1, 1)
    x = x / torch.tensor(ds.std).view(1, 3, 1, 1)
    with torch.no_grad():
        ref = net.eval()(x).numpy().astype(np.float16)
    assert np.allclose(np.load(tmp_path / "sc_features.npy"), ref, atol=2e-3)


def test_extract_features_cc_loads_the_original_checkpoint_layout(tmp_path):
    """LRA's Clothing1M prior: CC_net.pt holds model_resnet.* (a ResNet-50, fc = identity), dr (2048 -> 128)
    and unused classification heads; the features are dr(pooled), raw, 128-d."""
    import torchvision
    import torchvision.transforms as T

    torch.manual_seed(0)
    backbone = torchvision.models.resnet50()
    backbone.fc = torch.nn.Identity()
    dr = torch.nn.Linear(2048, 128)
    state = {f"model_resnet.{k}": v for k, v in backbone.state_dict().items()}
    state.update({f"dr.{k}": v for k, v in dr.state_dict().items()})
    state.update(
        {"classification_fc.weight": torch.zeros(14, 2048), "fc1.fc3.weight": torch.zeros(14, 64)}
    )
    torch.save(state, tmp_path / "CC_net.pt")
    run(
        "extract_features",
        "--dataset",
        "digits",
        "--encoder",
        "cc",
        "--weights",
        tmp_path / "CC_net.pt",
        "--image-size",
        "32",
        "--limit",
        "3",
        "--num-workers",
        "0",
        "--out",
        tmp_path / "cc",
    )
    ds = get_dataset("digits", None, "train")
    tf = T.Compose([T.Resize(256), T.CenterCrop(32), T.ToTensor(), T.Normalize(ds.mean, ds.std)])
    from PIL import Image

    x = torch.stack([tf(Image.fromarray(ds.images[i].numpy())) for i in range(3)])
    with torch.no_grad():
        ref = dr(backbone.eval()(x)).numpy().astype(np.float16)
    feats = np.load(tmp_path / "cc_features.npy")
    assert feats.shape == (3, 128) and np.allclose(feats, ref, atol=2e-3, rtol=1e-2)
    torch.save(
        {"conv1.weight": torch.zeros(1)}, tmp_path / "other.pt"
    )  # e.g. a plain ResNet's file
    with pytest.raises(SystemExit, match="is not a CC_net checkpoint"):
        run(
            "extract_features",
            "--dataset",
            "digits",
            "--encoder",
            "cc",
            "--weights",
            tmp_path / "other.pt",
            "--limit",
            "1",
            "--num-workers",
            "0",
            "--out",
            tmp_path / "bad",
        )


def test_extract_features_open_clip_tiny_config(tmp_path):
    import open_clip

    cfg = {
        "embed_dim": 16,
        "vision_cfg": {
            "image_size": 32,
            "layers": 1,
            "width": 32,
            "head_width": 16,
            "patch_size": 8,
        },
        "text_cfg": {"context_length": 8, "vocab_size": 64, "width": 16, "heads": 2, "layers": 1},
    }
    (tmp_path / "lnl-tiny-test.json").write_text(json.dumps(cfg))
    open_clip.add_model_config(tmp_path / "lnl-tiny-test.json")
    run(
        "extract_features",
        "--dataset",
        "digits",
        "--split",
        "test",
        "--encoder",
        "open_clip",
        "--model",
        "lnl-tiny-test",
        "--pretrained",
        "none",
        "--limit",
        "4",
        "--num-workers",
        "0",
        "--out",
        tmp_path / "clip",
    )
    feats = np.load(tmp_path / "clip_features.npy").astype(np.float32)
    assert feats.shape == (4, 16)
    assert np.allclose(np.linalg.norm(feats, axis=1), 1.0, atol=1e-2)  # L2-normalised by default


def test_imagenet_train_unpacks_only_the_webvision_mini_classes(tmp_path):
    import io
    import tarfile

    make_webvision(
        tmp_path / "wv"
    )  # its synsets.txt: n00001000 ... n00001059, the first 50 are kept
    wnids = [f"n{1000 + c:08d}" for c in (0, 49, 50)]
    outer_path = tmp_path / "ILSVRC2012_img_train.tar"
    with tarfile.open(outer_path, "w") as outer:  # a tar of per-class tars, as ImageNet ships it
        for c, w in enumerate(wnids):
            inner_bytes = io.BytesIO()
            with tarfile.open(fileobj=inner_bytes, mode="w") as inner:
                for k in range(2):
                    save_image(tmp_path / "src" / f"{w}_{k}.JPEG", 10 * c + k)
                    inner.add(tmp_path / "src" / f"{w}_{k}.JPEG", arcname=f"{w}_{k}.JPEG")
            info = tarfile.TarInfo(f"{w}.tar")
            info.size = len(inner_bytes.getvalue())
            outer.addfile(info, io.BytesIO(inner_bytes.getvalue()))
    with pytest.raises(SystemExit, match="no train images for 48 of 50 classes"):
        run(
            "webvision",
            "--root",
            tmp_path / "wv",
            "--imagenet-root",
            tmp_path / "im",
            "--train-images",
            outer_path,
        )
    kept = sorted(
        p.relative_to(tmp_path / "im").as_posix()
        for p in (tmp_path / "im" / "train").rglob("*.JPEG")
    )
    assert kept == [
        f"train/{w}/{w}_{k}.JPEG" for w in wnids[:2] for k in range(2)
    ]  # class 50 is not mini
    assert (tmp_path / "im" / "train" / wnids[0] / f"{wnids[0]}_1.JPEG").read_bytes() == (
        tmp_path / "src" / f"{wnids[0]}_1.JPEG"
    ).read_bytes()


def _tiny_clip_config(tmp_path):
    import open_clip

    cfg = {
        "embed_dim": 16,
        "vision_cfg": {
            "image_size": 32,
            "layers": 2,
            "width": 32,
            "head_width": 16,
            "patch_size": 8,
        },
        "text_cfg": {"context_length": 8, "vocab_size": 64, "width": 16, "heads": 2, "layers": 1},
    }
    (tmp_path / "lnl-tiny-qg.json").write_text(json.dumps(cfg))
    open_clip.add_model_config(tmp_path / "lnl-tiny-qg.json")
    return "lnl-tiny-qg"


@pytest.mark.parametrize(
    "pretrained,flag,quick",
    [
        ("openai", "auto", True),
        ("none", "auto", False),
        ("laion2b_s32b_b82k", "auto", False),
        ("none", "on", True),
    ],
)
def test_clip_for_openai_weights_has_quick_gelu(tmp_path, monkeypatch, pretrained, flag, quick):
    """OpenAI's weights were trained with QuickGELU; open_clip's ViT-L-14 config has it off (issue 21,
    item 1). The architecture is built without downloading weights (pretrained=None)."""
    import open_clip

    mod = script("extract_features")
    build = open_clip.create_model_and_transforms
    monkeypatch.setattr(
        open_clip,
        "create_model_and_transforms",
        lambda name, pretrained=None, **kw: build(name, pretrained=None, **kw),
    )
    args = mod.get_args_parser().parse_args(
        [
            "--dataset",
            "digits",
            "--encoder",
            "open_clip",
            "--model",
            _tiny_clip_config(tmp_path),
            "--pretrained",
            pretrained,
            "--quick-gelu",
            flag,
            "--out",
            str(tmp_path / "x"),
        ]
    )
    model, _ = mod.create_clip(args)
    acts = [type(b.mlp.gelu).__name__ for b in model.visual.transformer.resblocks]
    assert acts == ["QuickGELU" if quick else "GELU"] * 2


def test_lra_clip_preprocessing_is_a_float_resize_of_the_normalised_tensor(tmp_path):
    """--preprocess lra: LRA's clip_wrapper (un-normalise, float bicubic resize, centre crop, CLIP
    normalisation), computed here by hand with interpolate; CIFAR-100 uses CIFAR-10's mean/std."""
    import torch.nn.functional as F
    from PIL import Image

    mod = script("extract_features")
    args = mod.get_args_parser().parse_args(
        [
            "--dataset",
            "digits",
            "--encoder",
            "open_clip",
            "--preprocess",
            "lra",
            "--out",
            str(tmp_path / "x"),
        ]
    )
    ds = get_dataset("digits", None, "train")
    tf = mod.lra_clip_transform(args, ds, 24)
    img = ds.images[0].numpy()
    x = torch.from_numpy(img).permute(2, 0, 1).float().div(255).unsqueeze(0)
    ref = F.interpolate(x, size=(24, 24), mode="bicubic", align_corners=False)[0]
    ref = (ref - torch.tensor(mod.CLIP_MEAN).view(3, 1, 1)) / torch.tensor(mod.CLIP_STD).view(
        3, 1, 1
    )
    assert torch.allclose(tf(Image.fromarray(img)), ref, atol=1e-5)
    cifar100 = type(
        "DS", (), {"name": "cifar100", "mean": (0.5, 0.5, 0.5), "std": (0.25, 0.25, 0.25)}
    )()
    assert mod.normalisation(args, cifar100) == (mod.CIFAR10_MEAN, mod.CIFAR10_STD)
    args.dataset_norm = True
    assert mod.normalisation(args, cifar100) == ((0.5, 0.5, 0.5), (0.25, 0.25, 0.25))


def test_simclr_reads_lra_simclr_encoder_layout():
    """LRA's SimCLR_encoder saves f.0 (conv1), f.1 (bn1), f.3-f.6 (layer1-4) and the g head."""
    mod = script("extract_features")
    raw = {
        "f.0.weight": 0,
        "f.1.running_mean": 1,
        "f.3.0.conv1.weight": 2,
        "f.6.2.bn3.bias": 3,
        "g.0.weight": 4,
    }
    assert mod.clean_state_dict(raw) == {
        "conv1.weight": 0,
        "bn1.running_mean": 1,
        "layer1.0.conv1.weight": 2,
        "layer4.2.bn3.bias": 3,
    }


def test_make_noise_base_overlays_the_pmd_file_as_plc(noise_dir, tmp_path):
    """--base: PLC's RandomState(77) overlay on LRA's base PMD file gives the shipped hybrid file."""
    base = noise_dir / "lra_pmd" / "cifar10-1-0.35.npy"
    labels = tmp_path / "clean.npy"
    np.save(
        labels, np.load(base)
    )  # the actual rate is not checked here; any clean labels of the length do
    run(
        "make_noise",
        "--labels",
        labels,
        "--num-classes",
        "10",
        "--dataset",
        "cifar10",
        "--noise",
        "pmd+U",
        "--rate",
        "0.3",
        "--base",
        base,
        "--out",
        tmp_path / "u.npy",
    )
    assert np.array_equal(
        np.load(tmp_path / "u.npy"), np.load(noise_dir / "lra_pmd" / "cifar10-1-0.35_U_0.3.npy")
    )
