"""NMTune (methods/nmtune): regularisers against float64 oracles, the residual MLP, preprocessing
against torch's interpolate, flag parsing of the README commands, results.jsonl schema, exact
resume, clear errors, and (slow) linear probe vs NMTune on a noisily pre-trained digits encoder."""

from __future__ import annotations

import math
import shlex
from dataclasses import replace

import pytest
import torch
import torch.nn.functional as F

from lnl.data import DatasetNotFoundError
from lnl.engine import read_jsonl, runner
from methods.nmtune import finetune, nml_tune, nmtune_lib
from methods.nmtune.downstream import (
    downstream_noise,
    few_shot_indices,
    first_rows,
    load_downstream,
    load_split,
    subset_rows,
)
from methods.nmtune.encoders import Preprocess, ResidualMLP, build_encoder, make_head
from methods.nmtune.regularisers import (
    LossWeights,
    covariance_loss,
    mse_consistency_loss,
    nmtune_objective,
    singular_values,
    top_singular_share,
)
from methods.nmtune.views import train_view, val_view


@pytest.fixture(scope="module", autouse=True)
def one_thread():
    """NMTune's tiny runs are faster on one thread. The count is restored afterwards: a module-level
    call here, run at collection, left every test of the session on one thread."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


FAST = [
    "--train-dataset",
    "digits",
    "--model",
    "test_resnet",
    "--device",
    "cpu",
    "--no-tensorboard",
    "--batch-size",
    "64",
]


@pytest.fixture(scope="module")
def encoder(tmp_path_factory):
    """A timm test_resnet pre-trained for one epoch on digits with 30% noise (32x32 inputs)."""
    from data_prep.pretrain_noisy import pretrain

    path = tmp_path_factory.mktemp("encoder") / "digits_sym0.3.pth"
    pretrain(dataset="digits", rate=0.3, out=path, epochs=1, device="cpu")
    return str(path)


def _run(module, tmp_path, *extra, pretrained="none"):
    args = module.get_args_parser().parse_args(
        ["--out", str(tmp_path), *FAST, "--pretrained", pretrained, *extra]
    )
    return module.main(args)


# ----------------------------------------------------------------------------- regularisers


def _cov_oracle(z: torch.Tensor) -> torch.Tensor:
    """float64, the explicit D×D covariance matrix and its off-diagonal squares."""
    z = z.double()
    n, d = z.shape
    zc = z - z.mean(0)
    cov = zc.T @ zc / (n - 1)
    off = cov[~torch.eye(d, dtype=torch.bool)]
    return off.pow(2).sum() / d


def _svd_oracle(z: torch.Tensor, k: int = 5) -> torch.Tensor:
    s = torch.linalg.svd(z.double(), full_matrices=False).S
    return (s / s.sum())[:k].mean()


@pytest.mark.parametrize("n,d", [(16, 40), (48, 12)])
@pytest.mark.parametrize("use_gram", [True, False])
def test_covariance_loss_matches_float64_covariance_matrix(n, d, use_gram):
    z = torch.randn(n, d, generator=torch.Generator().manual_seed(n + d)) * torch.linspace(
        0.5, 2, d
    )
    z.requires_grad_(True)
    loss = covariance_loss(z, use_gram)
    (grad,) = torch.autograd.grad(loss, z)
    z64 = z.detach().double().requires_grad_(True)
    ref = _cov_oracle(z64)
    (ref_grad,) = torch.autograd.grad(ref, z64)
    torch.testing.assert_close(loss.double(), ref, rtol=1e-4, atol=1e-6)
    torch.testing.assert_close(grad.double(), ref_grad, rtol=1e-3, atol=1e-6)


@pytest.mark.parametrize("n,d", [(16, 40), (48, 12)])
@pytest.mark.parametrize("use_gram", [True, False])
def test_top_singular_share_matches_float64_svd(n, d, use_gram):
    z = torch.randn(n, d, generator=torch.Generator().manual_seed(7 * n + d)) + 0.3  # uncentred
    z.requires_grad_(True)
    share = top_singular_share(z, 5, use_gram)
    (grad,) = torch.autograd.grad(share, z)
    z64 = z.detach().double().requires_grad_(True)
    ref = _svd_oracle(z64)
    (ref_grad,) = torch.autograd.grad(ref, z64)
    torch.testing.assert_close(share.double(), ref, rtol=1e-5, atol=1e-7)
    torch.testing.assert_close(grad.double(), ref_grad, rtol=1e-3, atol=1e-6)


def test_gram_singular_values_are_the_svd_ones():
    z = torch.randn(10, 64, generator=torch.Generator().manual_seed(3))
    torch.testing.assert_close(
        singular_values(z, use_gram=True).double(),
        torch.linalg.svdvals(z.double()),
        rtol=1e-5,
        atol=1e-6,
    )


def test_mse_consistency_is_normalised_rows_squared_error_and_stops_the_target_gradient():
    g = torch.Generator().manual_seed(1)
    zs, fw = (
        torch.randn(6, 9, generator=g, requires_grad=True),
        torch.randn(6, 9, generator=g, requires_grad=True),
    )
    loss = mse_consistency_loss(zs, fw)
    a, b = zs.detach().double(), fw.detach().double()
    ref = ((a / a.norm(dim=1, keepdim=True) - b / b.norm(dim=1, keepdim=True)) ** 2).mean()
    torch.testing.assert_close(loss.double(), ref)
    loss.backward()
    assert fw.grad is None and zs.grad.abs().sum() > 0


def test_objective_is_ce_plus_weighted_terms_and_zero_weights_skip():
    g = torch.Generator().manual_seed(2)
    feats, z = torch.randn(8, 12, generator=g), torch.randn(8, 12, generator=g)
    logits = torch.randn(8, 3, generator=g)
    y = torch.tensor([0, 1, 2, 1])
    loss, parts = nmtune_objective(feats, z, logits, y, LossWeights(1.0, 0.04, 0.001))
    ce = F.cross_entropy(logits, torch.cat([y, y]))
    hand = (
        ce
        + mse_consistency_loss(z[4:], feats[:4])
        + 0.04 * _cov_oracle(z).float()
        - 0.001 * _svd_oracle(z).float()
    )
    torch.testing.assert_close(loss, hand, rtol=1e-5, atol=1e-6)
    only_ce, parts = nmtune_objective(feats, z, logits, y, LossWeights(0.0, 0.0, 0.0))
    assert set(parts) == {"ce"} and torch.equal(only_ce, ce)


# ----------------------------------------------------------------------------- modules


def test_residual_mlp_with_zero_scale_is_the_identity_map():
    mlp = ResidualMLP(16, ratio=4, layers=1, residual=True, res_scale_init=0.0)
    f = torch.randn(10, 16)
    assert torch.equal(mlp(f), f)  # train mode (BN on batch statistics)
    mlp.eval()
    assert torch.equal(mlp(f), f)


def test_residual_mlp_shapes_parameters_and_plain_variant():
    d = 8
    mlp = ResidualMLP(d, ratio=4, layers=1, residual=True, res_scale_init=0.5)
    expected = (d * 4 * d + 4 * d) + 2 * 4 * d + (4 * d * d + d) + d  # Linear, BN, Linear, scale
    assert sum(p.numel() for p in mlp.parameters()) == expected
    assert torch.equal(mlp.scale_after, torch.full((1, d), 0.5))
    plain = ResidualMLP(d, ratio=2, layers=2, residual=False)
    f = torch.randn(5, d)
    assert plain.scale_after is None and torch.equal(plain(f), plain.mlp_after(f))
    assert [m.out_features for m in plain.mlp_after if isinstance(m, torch.nn.Linear)] == [
        16,
        16,
        8,
    ]


def test_head_is_kaiming_uniform_with_zero_bias():
    torch.manual_seed(0)
    head = make_head(512, 10)
    bound = math.sqrt(6 / 512)  # kaiming_uniform_(a=0): gain √2 · √(3 / fan_in)
    assert torch.equal(head.bias, torch.zeros(10))
    assert head.weight.abs().max() <= bound and head.weight.abs().max() > 0.95 * bound


# ----------------------------------------------------------------------------- preprocessing


def test_fast_val_view_is_resize_then_centre_crop():
    prep = Preprocess(
        24, 0.75, (0.5, 0.4, 0.3), (0.2, 0.25, 0.3), "bilinear", (0.8, 1.0), fast=True
    )
    x = torch.randint(
        0, 256, (2, 3, 16, 16), dtype=torch.uint8, generator=torch.Generator().manual_seed(0)
    )
    resized = F.interpolate(
        x.float(), size=(32, 32), mode="bilinear", align_corners=False
    )  # ceil(24/0.75)
    ref = resized[:, :, 4:28, 4:28] / 255
    mean, std = torch.tensor(prep.mean).view(1, 3, 1, 1), torch.tensor(prep.std).view(1, 3, 1, 1)
    torch.testing.assert_close(val_view(x, prep), (ref - mean) / std, rtol=1e-5, atol=1e-4)


@pytest.mark.parametrize("fast", [False, True])
def test_train_view_full_crop_is_the_image_or_its_mirror(fast):
    prep = Preprocess(8, 1.0, (0.0,) * 3, (1.0,) * 3, "bilinear", (1.0, 1.0), fast=fast)
    x = torch.randint(
        0, 256, (64, 3, 8, 8), dtype=torch.uint8, generator=torch.Generator().manual_seed(1)
    )
    out = train_view(x, prep, torch.Generator().manual_seed(0)) * 255
    # scale 1: no aspect ratio but 1 fits, so (as torchvision) the whole image, flipped half the time.
    same = (out - x.float()).abs().amax((1, 2, 3)) < 1e-3
    mirrored = (out - x.float().flip(-1)).abs().amax((1, 2, 3)) < 1e-3
    assert out.shape == (64, 3, 8, 8) and bool((same | mirrored).all())
    assert 16 < int(mirrored.sum()) < 48
    no_flip = (
        train_view(x, replace(prep, hflip=False), torch.Generator().manual_seed(0)) * 255
    )  # open_clip's
    assert (no_flip - x.float()).abs().max() < 1e-3


def test_few_shot_fraction_and_downstream_noise():
    labels = torch.arange(10).repeat_interleave(30)
    keep = few_shot_indices(labels, 0.2, seed=0)
    assert torch.equal(torch.bincount(labels[keep]), torch.full((10,), 6))
    noisy = downstream_noise(labels, 0.5, 10, seed=0)
    changed = int((noisy != labels).sum())
    assert (
        0.5 * 300 * 0.8 < changed <= 150 and int(noisy.max()) < 10
    )  # ⌈0.5·N⌉ redrawn, self possible


def _downstream(*extra):
    import logging

    args = finetune.get_args_parser().parse_args([*FAST, "--eval-datasets", "digits", *extra])
    return load_downstream(args, logging.getLogger("test"))


def test_subset_keeps_the_first_images_and_the_full_runs_shots_and_noisy_labels():
    flags = ["--num-shots", "0.5", "--noise-ratio", "0.4"]
    full, part = _downstream(*flags), _downstream(*flags, "--subset", "300")
    inside = full.keep < 300  # shots and noise drawn over the whole split, then cut
    assert torch.equal(part.train.images, full.train.images[:300]) and len(part.train.labels) == 300
    assert torch.equal(part.keep, full.keep[inside]) and torch.equal(
        part.labels, full.labels[inside]
    )
    test, cut = full.evals["digits"], part.evals["digits"]
    assert torch.equal(cut.images, test.images[:300]) and torch.equal(cut.labels, test.labels[:300])
    # the feature cache is keyed by `source`: a subset's features never stand in for the full split's
    assert part.train.source != full.train.source and cut.source != test.source
    assert first_rows(test, 10**6) is test


def test_subset_too_small_is_a_clear_error():
    split = load_split("digits", "~/data", "train")
    with pytest.raises(ValueError, match="--subset 5 keeps fewer images than digits has classes"):
        _downstream("--subset", "5")
    with pytest.raises(
        ValueError, match="--subset 50 with --num-shots 0.1: none of the first 50 images is kept"
    ):
        subset_rows(split, torch.tensor([60, 70]), torch.tensor([1, 2]), 50, 0.1)


def test_torchvision_dataset_is_decoded_to_store_size(tmp_path):
    """A tiny DTD in torchvision's layout (grey and RGB files of several sizes)."""
    from PIL import Image

    data = tmp_path / "dtd" / "dtd"
    lines = {"train": [], "test": []}
    for c, name in enumerate(["banded", "dotted"]):
        (data / "images" / name).mkdir(parents=True)
        for i in range(3):
            mode, size = ("L", (40, 30)) if i == 0 else ("RGB", (30, 50))
            Image.new(
                mode, size, color=60 * c + 10 * i if mode == "L" else (60 * c, 10 * i, 5)
            ).save(data / "images" / name / f"{name}_{i}.jpg")
            lines["train" if i < 2 else "test"].append(f"{name}/{name}_{i}.jpg")
    (data / "labels").mkdir()
    for split, rows in lines.items():
        (data / "labels" / f"{split}1.txt").write_text("\n".join(rows) + "\n")
    train = load_split("dtd", str(tmp_path), "train", store_size=24)
    assert train.images.shape == (4, 24, 24, 3) and train.images.dtype == torch.uint8
    assert train.labels.tolist() == [0, 0, 1, 1] and train.num_classes == 2
    assert int(train.images[0, 12, 12, 0]) == int(train.images[0, 12, 12, 2])  # grey file -> RGB


# ----------------------------------------------------------------------------- flags and errors

README_LP = (
    "--seed=3907 --train-dataset=CIFAR10 --eval-datasets=CIFAR10 --model=resnet50_noise_5 "
    "--model_source=timm --epochs=30 --lr=0.01 --wd=0.0001 --batch-size=64 --save SAVE_PATH "
    "--results SAVE_PATH/results.jsonl --data-location=DATA_DIR --freeze-encoder  "
    "--template=simple_template  --load-zero-shot-classifier False  --num-shots=None"
)
README_NMTUNE = (
    "--seed=3907 --train-dataset=CIFAR10 --eval-datasets=CIFAR10 --model=RN50_yfcc15m_noise_30 "
    "--model_source=open_clip --epochs=30 --lr=0.001 --wd=0.0001 --batch-size=64 --save SAVE_PATH "
    "--results  SAVE_PATH/results.jsonl --data-location=DATA_DIR --template=openai_imagenet_template "
    "--freeze-encoder --load-zero-shot-classifier False --use-weak-strong=False --mlp-with-res=True "
    "--mlp-res-scale-init=1.0 --mlp-after-ratio=4 --mlp-after-layers=1 --mlp-after-layers=1 "
    "--mse-loss-weight=1.0 --cov-loss-weight=0.04 --svd-loss-weight=0.001"
)


def test_readme_commands_parse_as_written():
    lp = finetune.get_args_parser().parse_args(shlex.split(README_LP))
    assert lp.num_shots is None and lp.results_db == "SAVE_PATH/results.jsonl" and lp.freeze_encoder
    assert (lp.lr, lp.wd, lp.epochs, lp.load_zero_shot_classifier) == (0.01, 1e-4, 30, False)
    nm = nml_tune.get_args_parser().parse_args(shlex.split(README_NMTUNE))
    assert (nm.use_weak_strong, nm.mlp_with_res, nm.mlp_res_scale_init) == (False, True, 1.0)
    assert (nm.mlp_after_layers, nm.model, nm.model_source) == (
        1,
        "RN50_yfcc15m_noise_30",
        "open_clip",
    )
    # Defaults are the README values, not the original argparse's (B3).
    d = nml_tune.get_args_parser().parse_args([])
    assert (
        d.use_weak_strong,
        d.mlp_with_res,
        d.mlp_res_scale_init,
        d.wd,
        d.batch_size,
        d.epochs,
        d.seed,
    ) == (False, True, 1.0, 1e-4, 64, 30, 3907)


def test_bad_inputs_raise_clear_errors(tmp_path):
    with pytest.raises(ValueError, match="not a timm model"):
        build_encoder("timm", "resnet_nope", "none")
    with pytest.raises(ValueError, match="not an open_clip model"):
        build_encoder("open_clip", "RN51_yfcc15m", "none")
    with pytest.raises(ValueError, match="--model_source"):
        build_encoder("clip", "RN50", "none")
    with pytest.raises(ValueError, match="cannot be downloaded.*--pretrained PATH"):
        build_encoder("open_clip", "RN50_yfcc15m_noise_30", None)
    with pytest.raises(FileNotFoundError, match="r50_in1k_random_noise_5/model.pth.tar"):
        build_encoder("timm", "resnet50_noise_5", None)
    with pytest.raises(FileNotFoundError, match="no such checkpoint"):
        build_encoder("timm", "test_resnet", str(tmp_path / "missing.pth"))
    torch.save({"state_dict": {"conv1.weight": torch.zeros(1)}}, tmp_path / "other.pth")
    with pytest.raises(ValueError, match="does not (match|fit) timm model test_resnet"):
        build_encoder("timm", "test_resnet", str(tmp_path / "other.pth"))
    with pytest.raises(ValueError, match="unknown dataset 'CIFAR11'"):
        load_split("CIFAR11", str(tmp_path), "train")
    with pytest.raises(DatasetNotFoundError, match="Flowers102 not found under --data-location"):
        load_split("Flowers102", str(tmp_path), "test")
    with pytest.raises(DatasetNotFoundError, match="cifar10"):
        load_split("CIFAR10", str(tmp_path / "nowhere"), "test")


# ----------------------------------------------------------------------------- zero-shot head

TINY_CLIP = {
    "embed_dim": 32,
    "vision_cfg": {"image_size": 32, "layers": 1, "width": 64, "patch_size": 8},
    "text_cfg": {"context_length": 77, "vocab_size": 49408, "width": 64, "heads": 2, "layers": 1},
}


@pytest.fixture(scope="module")
def tiny_clip(tmp_path_factory):
    """A 1-layer open_clip CLIP registered as ``LnlTinyCLIP`` and its random weights on disk."""
    import json

    import open_clip

    folder = tmp_path_factory.mktemp("clip")
    (folder / "LnlTinyCLIP.json").write_text(json.dumps(TINY_CLIP))
    open_clip.add_model_config(folder / "LnlTinyCLIP.json")
    torch.manual_seed(0)
    model = open_clip.create_model("LnlTinyCLIP")
    torch.save(model.state_dict(), folder / "tiny.pth")
    return model.eval(), str(folder / "tiny.pth")


def _zs_args(ckpt, template):
    return finetune.get_args_parser().parse_args(
        [
            "--model_source",
            "open_clip",
            "--model",
            "LnlTinyCLIP",
            "--pretrained",
            ckpt,
            "--template",
            template,
            "--load-zero-shot-classifier",
            "True",
            "--train-dataset",
            "digits",
        ]
    )


@torch.no_grad()
def test_zero_shot_head_gives_clips_own_scaled_cosine_logits(tiny_clip):
    import open_clip

    from methods.nmtune.encoders import build_zero_shot_head

    model, ckpt = tiny_clip
    names = ["zero", "one", "two"]
    head = build_zero_shot_head(_zs_args(ckpt, "simple_template"), names, "cpu")
    encoder = build_encoder("open_clip", "LnlTinyCLIP", ckpt).eval()
    images = torch.randint(0, 256, (4, 3, 40, 40), generator=torch.Generator().manual_seed(1)).to(
        torch.uint8
    )
    x = val_view(images, encoder.preprocess)
    text = open_clip.get_tokenizer("LnlTinyCLIP")([f"a photo of a {n}." for n in names])
    image_features, text_features, scale = model(
        x, text
    )  # CLIP's forward: unit features, exp(logit_scale)
    torch.testing.assert_close(
        head(encoder(x)), scale * image_features @ text_features.T, rtol=1e-4, atol=1e-4
    )


@torch.no_grad()
def test_zero_shot_head_averages_unit_prompt_embeddings(tiny_clip):
    import open_clip

    from methods.nmtune.encoders import build_zero_shot_head

    model, ckpt = tiny_clip
    head = build_zero_shot_head(
        _zs_args(ckpt, "openai_imagenet_template"), ["cat_dog", "car"], "cpu"
    )
    # the dataset's names as they are spelt, underscores kept (the original's dataset.classnames)
    prompts = [[t(n) for t in open_clip.OPENAI_IMAGENET_TEMPLATES] for n in ("cat_dog", "car")]
    assert len(prompts[0]) == 80
    tok = open_clip.get_tokenizer("LnlTinyCLIP")
    rows = [F.normalize(model.encode_text(tok(p)).double(), dim=1).mean(0) for p in prompts]
    expected = torch.stack([r / r.norm() for r in rows]) * model.logit_scale.exp().double()
    torch.testing.assert_close(head.weight.double(), expected, rtol=1e-5, atol=1e-5)
    assert head.normalize and not head.bias.any()


def test_linear_probe_from_a_zero_shot_head_at_lr_0_keeps_clips_accuracy(tmp_path, tiny_clip):
    from methods.nmtune.encoders import build_zero_shot_head

    _, ckpt = tiny_clip
    result = finetune.main(
        finetune.get_args_parser().parse_args(
            [
                "--out",
                str(tmp_path),
                *FAST,
                "--model_source",
                "open_clip",
                "--model",
                "LnlTinyCLIP",
                "--pretrained",
                ckpt,
                "--freeze-encoder",
                "--load-zero-shot-classifier",
                "True",
                "--template",
                "simple_template",
                "--epochs",
                "1",
                "--lr",
                "0",
                "--num-shots",
                "0.2",
            ]
        )
    )
    saved = torch.load(tmp_path / "last.pth", weights_only=False)["models"]["head"]
    zero_shot = build_zero_shot_head(
        _zs_args(ckpt, "simple_template"), [str(c) for c in range(10)], "cpu"
    )
    torch.testing.assert_close(saved["weight"], zero_shot.weight)  # lr 0: AdamW changed nothing
    encoder = build_encoder("open_clip", "LnlTinyCLIP", ckpt).eval()
    test = load_split("digits", "", "test")
    with torch.no_grad():
        logits = zero_shot(encoder(val_view(test.images.permute(0, 3, 1, 2), encoder.preprocess)))
    expected = float((logits.argmax(1) == test.labels).float().mean())
    assert abs(result["test_acc"] - expected) <= 1 / len(test.labels)


def test_zero_shot_flag_on_timm_keeps_a_fresh_head_and_bad_templates_fail(tmp_path, tiny_clip):
    from methods.nmtune.encoders import build_zero_shot_head

    _, ckpt = tiny_clip
    with pytest.raises(ValueError, match="--template 'imagenet': expected one of simple_template"):
        build_zero_shot_head(_zs_args(ckpt, "imagenet"), ["a"], "cpu")
    with pytest.raises(ValueError, match="has no class names"):
        build_zero_shot_head(_zs_args(ckpt, "simple_template"), None, "cpu")
    result = _run(
        finetune,
        tmp_path,
        "--freeze-encoder",
        "--epochs",
        "1",
        "--num-shots",
        "0.1",
        "--load-zero-shot-classifier",
        "True",
    )
    assert result["method"] == "linear-probe"


# ----------------------------------------------------------------------------- runs


def test_linear_probe_writes_the_legacy_results_schema(tmp_path, encoder):
    result = _run(
        finetune,
        tmp_path,
        "--freeze-encoder",
        "--epochs",
        "2",
        "--lr",
        "0.01",
        "--eval-datasets",
        "digits",
        "--cache-dir",
        str(tmp_path / "cache"),
        pretrained=encoder,
    )
    assert result["method"] == "linear-probe" and result["noise"] == "pre-sym0.3"
    assert 0.5 < result["test_acc"] <= result["best_acc"] <= 1
    *lines, record = read_jsonl(
        tmp_path / "results.jsonl"
    )  # the original's lines, then lnl's record
    assert record == result
    args = finetune.get_args_parser().parse_args([])
    assert [r["current_epoch"] for r in lines] == [0, 1]
    for r in lines:  # vars(args) + device + current_epoch + "<Dataset>:top1", as the original
        assert set(vars(args)) | {"current_epoch", "digits:top1"} == set(r)
        assert r["device"] == "cpu" and 0 <= r["digits:top1"] <= 1
    eval_rows = read_jsonl(tmp_path / "eval.jsonl")
    assert [r["step"] for r in eval_rows] == [0, 1] and eval_rows[-1]["test_acc"] == result[
        "test_acc"
    ]
    assert len(list((tmp_path / "cache").glob("digits_*.pt"))) == 2  # train and test features


def _crash_before_second_checkpoint(first, num_epochs, step, after_epoch):
    """run_epochs that dies after epoch 1's results line but before its checkpoint."""
    record, checkpoint = after_epoch
    for epoch in range(first, num_epochs):
        metrics = step(epoch)
        record(epoch, metrics)
        if epoch == 1:
            raise KeyboardInterrupt
        checkpoint(epoch, metrics)


def test_interrupted_nmtune_resumes_exactly(tmp_path, encoder, monkeypatch):
    flags = ["--freeze-encoder", "--num-shots", "0.3", "--batch-size", "32", "--epochs", "3"]
    straight = _run(nml_tune, tmp_path / "a", *flags, pretrained=encoder)
    with monkeypatch.context() as m:
        m.setattr(runner, "run_epochs", _crash_before_second_checkpoint)
        with pytest.raises(KeyboardInterrupt):
            _run(nml_tune, tmp_path / "b", *flags, pretrained=encoder)
    resumed = _run(nml_tune, tmp_path / "b", *flags, pretrained=encoder)
    a, b = (
        torch.load(p / "last.pth", weights_only=False)["models"]
        for p in (tmp_path / "a", tmp_path / "b")
    )
    for name in ("mlp", "head"):
        for key in a[name]:
            assert torch.equal(a[name][key], b[name][key]), (name, key)
    assert (
        resumed["test_acc"] == straight["test_acc"] and resumed["best_acc"] == straight["best_acc"]
    )
    assert [
        r.get("current_epoch", "record") for r in read_jsonl(tmp_path / "b" / "results.jsonl")
    ] == [0, 1, 2, "record"]
    assert [r["step"] for r in read_jsonl(tmp_path / "b" / "eval.jsonl")] == [0, 1, 2]


def test_subset_runs_end_to_end_and_caches_apart_from_the_full_split(tmp_path, encoder):
    cache = ["--cache-dir", str(tmp_path / "cache")]
    probe = _run(
        finetune,
        tmp_path / "lp",
        "--freeze-encoder",
        "--epochs",
        "1",
        "--subset",
        "200",
        *cache,
        pretrained=encoder,
    )
    tuned = _run(
        nml_tune,
        tmp_path / "nm",
        "--freeze-encoder",
        "--epochs",
        "1",
        "--subset",
        "200",
        pretrained=encoder,
    )
    assert probe["subset"] == tuned["subset"] == 200 and 0 <= tuned["test_acc"] <= 1
    feats = [
        torch.load(p, weights_only=True)["features"]
        for p in (tmp_path / "cache").glob("digits_*.pt")
    ]
    assert sorted(len(f) for f in feats) == [200, 200]  # only the first 200 train and test images


def test_full_finetune_trains_the_encoder(tmp_path, encoder):
    result = _run(
        finetune,
        tmp_path,
        "--epochs",
        "1",
        "--num-shots",
        "0.1",
        "--lr",
        "0.001",
        pretrained=encoder,
    )
    saved = torch.load(tmp_path / "last.pth", weights_only=False)["models"]
    before = build_encoder("timm", "test_resnet", encoder).net.state_dict()
    after = {k[len("net.") :]: v for k, v in saved["encoder"].items()}
    assert result["method"] == "finetune"
    assert any(
        not torch.equal(before[k], after[k]) for k in before if before[k].is_floating_point()
    )


def test_nml_finetune_regulariser_is_the_weighted_float64_terms():
    from methods.nmtune.nml_finetune import feature_regulariser

    f = torch.randn(24, 10, generator=torch.Generator().manual_seed(3)) + 0.2
    got = feature_regulariser(0.04, 0.001)(f)
    torch.testing.assert_close(
        got.double(), 0.04 * _cov_oracle(f) - 0.001 * _svd_oracle(f), rtol=1e-4, atol=1e-7
    )
    assert feature_regulariser(0.0, 0.0)(f).item() == 0.0


def test_nml_finetune_with_zero_weights_is_finetune_and_with_weights_differs(tmp_path, encoder):
    from methods.nmtune import nml_finetune

    flags = ["--epochs", "1", "--num-shots", "0.1", "--lr", "0.001"]
    plain = _run(finetune, tmp_path / "ft", *flags, pretrained=encoder)
    zero = _run(
        nml_finetune,
        tmp_path / "zero",
        *flags,
        "--cov-loss-weight",
        "0",
        "--svd-loss-weight",
        "0",
        pretrained=encoder,
    )
    weighted = _run(
        nml_finetune,
        tmp_path / "w",
        *flags,
        "--cov-loss-weight",
        "1",
        "--svd-loss-weight",
        "1",
        pretrained=encoder,
    )
    assert (
        zero["method"] == weighted["method"] == "nml-finetune"
        and zero["test_acc"] == plain["test_acc"]
    )
    ft, z, w = (
        torch.load(tmp_path / d / "last.pth", weights_only=False)["models"]["encoder"]
        for d in ("ft", "zero", "w")
    )
    floats = [k for k in ft if ft[k].is_floating_point()]
    assert all(torch.equal(ft[k], z[k]) for k in floats)
    assert any(not torch.equal(ft[k], w[k]) for k in floats)
    with pytest.raises(ValueError, match="use finetune.py --freeze-encoder"):
        _run(nml_finetune, tmp_path / "frozen", "--freeze-encoder", pretrained=encoder)


def test_pretrain_if_missing_writes_a_noisy_encoder_that_nmtune_reads(tmp_path):
    ckpt = tmp_path / "enc.pth"
    result = _run(
        nml_tune,
        tmp_path / "run",
        "--freeze-encoder",
        "--epochs",
        "1",
        "--num-shots",
        "0.2",
        "--pretrain-if-missing",
        "digits:0.3:1",
        pretrained=str(ckpt),
    )
    assert ckpt.is_file() and result["noise"] == "pre-sym0.3"
    meta = torch.load(ckpt, weights_only=True)["lnl_pretrain"]
    assert abs(meta["actual_noise_rate"] - 0.3 * 0.9) < 0.05  # sym noise may redraw the true class
    for key in ("method", "dataset", "noise", "test_acc", "best_acc", "seconds"):
        assert key in result


@pytest.mark.slow
def test_nmtune_vs_linear_probe_on_a_noisily_pretrained_digits_encoder(tmp_path):
    ckpt = tmp_path / "digits_sym0.3.pth"
    common = [
        "--freeze-encoder",
        "--epochs",
        "10",
        "--pretrained",
        str(ckpt),
        "--pretrain-if-missing",
        "digits:0.3",
    ]
    lp = _run(finetune, tmp_path / "lp", *common, "--lr", "0.01")
    nm = _run(nml_tune, tmp_path / "nm", *common)
    print("linear probe", lp, "\nnmtune", nm)
    assert lp["test_acc"] > 0.85 and nm["test_acc"] > 0.85


def test_full_fine_tuning_defaults_are_the_originals_and_the_probe_keeps_the_readme_values():
    from methods.nmtune import nml_finetune

    probe = finetune.get_args_parser().parse_args(["--freeze-encoder"])
    finetune.resolve_optimiser_defaults(probe, full=False)
    full = finetune.get_args_parser().parse_args([])
    finetune.resolve_optimiser_defaults(full, full=True)
    assert (probe.lr, probe.wd) == (0.01, 1e-4)  # README finetune.py --freeze-encoder command
    assert (full.lr, full.wd) == (0.001, 0.1)  # src/args.py defaults
    regularised = nml_finetune.get_args_parser().parse_args([])
    finetune.resolve_optimiser_defaults(regularised, full=True)
    assert (regularised.lr, regularised.wd) == (0.001, 0.1)
    given = finetune.get_args_parser().parse_args(["--lr", "0.5"])
    finetune.resolve_optimiser_defaults(given, full=True)
    assert (given.lr, given.wd) == (0.5, 0.1)


def test_training_order_is_unshuffled_on_cifar100_and_country211_as_the_original():
    args = nml_tune.get_args_parser().parse_args(["--train-dataset", "CIFAR100"])
    assert not nmtune_lib.shuffles(args) and nmtune_lib.shuffles(args, linear_probe=True)
    args.train_dataset = "Country211"
    assert not nmtune_lib.shuffles(args)
    args.train_dataset = "CIFAR10"
    assert nmtune_lib.shuffles(args)
    args.shuffle = False
    assert not nmtune_lib.shuffles(args, linear_probe=True)
    from methods.nmtune.views import batches

    order = batches(10, 4, torch.Generator().manual_seed(0), shuffle=False)
    assert [b.tolist() for b in order] == [[0, 1, 2, 3], [4, 5, 6, 7], [8, 9]]
