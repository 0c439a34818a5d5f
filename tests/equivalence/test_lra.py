"""LRA-Diffusion's port against the original's golden outputs (``make_goldens_lra.py``): the cosine
schedule, DDIM timesteps and LR schedule, initialisation from a seed, the denoiser's forward and
gradients with a mapped state_dict, the SimCLR prior encoder, the kNN label draws, two training steps,
a DDIM sample (and the random draws it consumes), the CIFAR data loaders draw for draw, two epochs of
``train_CIFAR.py``'s ``train()`` end to end, and PLC's PMD draws and hybrid overlay (also against the
shipped hybrid files when ``../shared`` or ``$LNL_DATA`` has them)."""

from __future__ import annotations

import hashlib
import os
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn as nn
import torch.nn.functional as F

from methods.lra import lra_lib as L
from tests.equivalence import make_goldens_lra as G
from tests.equivalence._golden import assert_close, check_meta, fill_state, grad_sample, load_golden


def shipped_dir() -> Path:
    """LRA's noise_label files: ``$LNL_DATA/noise_labels/lra_pmd`` or ``../shared/data/...`` (CI)."""
    roots = [Path(os.environ["LNL_DATA"])] if "LNL_DATA" in os.environ else []
    roots.append(Path(__file__).resolve().parents[3] / "shared" / "data")
    for root in roots:
        if (root / "noise_labels" / "lra_pmd" / "cifar10-1-0.35.npy").is_file():
            return root / "noise_labels" / "lra_pmd"
    return roots[-1] / "noise_labels" / "lra_pmd"


SHIPPED = shipped_dir()

DENOISER_KEYS = {"norm1": "unetnorm1", "norm2": "unetnorm2", "norm3": "unetnorm3"}


def golden(name: str) -> dict:
    g = load_golden("lra", name)
    check_meta(g, G.PLC_COMMIT if name == "pmd_hybrids" else G.LRA_COMMIT)
    return g


def denoiser_key(key: str) -> str:
    head, _, rest = key.partition(".")
    return f"{DENOISER_KEYS.get(head, head)}.{rest}"


def encoder_key(key: str) -> str:
    """torchvision ResNet names → the original's ``ResNet_for_32`` names."""
    return key.replace("downsample.", "shortcut.").replace("fc.", "linear.")


def port_denoiser() -> nn.Module:
    return L.Denoiser(G.C, G.FP, G.F_DIM, G.T)


def port_encoder() -> nn.Module:
    return L.build_image_encoder("resnet18", G.F_DIM)


def compare_params(module: nn.Module, g: dict, prefix: str, rename) -> None:
    keys = {k for k in g if k.startswith(prefix)}
    seen = set()
    for key, value in module.state_dict().items():
        if not value.is_floating_point():
            continue
        name = f"{prefix}{rename(key)}"
        seen.add(name)
        assert_close(grad_sample(value), g[name], name=name)
    assert seen == keys, f"parameter names differ: {sorted(seen ^ keys)[:6]}"


# ------------------------------------------------------------------------------------ schedule
def test_cosine_schedule_and_ddim_parameters():
    g = golden("schedule")
    schedule = L.Schedule.cosine(G.T)
    assert_close(schedule.alphas_cumprod, g["alphas_cumprod"], name="alphas_cumprod")
    steps = L.ddim_timesteps(10, G.T)
    ab = schedule.alphas_cumprod
    assert_close(ab[steps], g["ddim_alphas"], name="ddim_alphas")
    assert_close(
        torch.cat([ab[:1], ab[steps[:-1]]]), g["ddim_alphas_prev"], name="ddim_alphas_prev"
    )


@pytest.mark.parametrize("steps", G.DDIM_STEPS)
def test_ddim_timesteps(steps):
    assert_close(
        np.array(L.ddim_timesteps(steps, G.T)),
        golden("schedule")[f"ddim_timesteps_{steps}"].astype(np.int64),
    )


@pytest.mark.parametrize("warm,horizon", [(5, 1000), (10, 200), (1, 300)])
def test_learning_rate(warm, horizon):
    got = np.array([L.learning_rate(e, warm, horizon, 1e-3) for e in G.LR_POINTS])
    np.testing.assert_allclose(got, golden("schedule")[f"lr_{warm}_{horizon}"], rtol=1e-12)


# ------------------------------------------------------------------------------------ networks
def test_initialisation_from_a_seed():
    """The same seed gives the original's weights: the denoiser (U(0,1) embeddings) and the CIFAR
    ResNet with PyTorch's default init (ResNet_for_32 never calls initialize_weights), and the
    generator is left where the original leaves it."""
    g = golden("init")
    torch.manual_seed(21)
    compare_params(port_denoiser(), g, "denoiser/p:", denoiser_key)
    torch.manual_seed(22)
    encoder = port_encoder()
    compare_params(encoder, g, "encoder/p:", encoder_key)
    assert_close(torch.rand(4), g["encoder_next_draw"], name="generator after the encoder")


def test_denoiser_forward_and_gradients():
    g = golden("denoiser")
    model = port_denoiser()
    fill_state(model, seed=3, rename=denoiser_key)
    x = G.denoiser_inputs()
    model.eval()
    with torch.no_grad():
        assert_close(
            model(x["x_embed"], x["y"], x["t"], x["fp"]), g["out_eval"], name="eval forward"
        )
    model.train()
    x_embed, fp = x["x_embed"].clone().requires_grad_(), x["fp"].clone().requires_grad_()
    out = model(x_embed, x["y"], x["t"], fp)
    assert_close(out, g["out_train"], name="train forward")
    loss = (x["w"] @ (x["eps"] - out).square()).mean()
    assert_close(loss, g["loss"], name="loss")
    loss.backward()
    assert_close(x_embed.grad, g["grad_x_embed"], name="grad x_embed")
    assert_close(fp.grad, g["grad_fp"], name="grad fp")
    assert_close(model.norm1.running_mean, g["running_mean"], name="running_mean")
    assert_close(model.norm1.running_var, g["running_var"], name="running_var")
    for key, p in model.named_parameters():
        assert_close(grad_sample(p.grad), g[f"g:{denoiser_key(key)}"], name=f"grad {key}")


def test_simclr_encoder_init_and_features():
    """The online CIFAR prior: SimCLR_encoder's names, its weights from a seed, its L2-normalised
    2048-d feature in eval mode."""
    from methods.lra.lra_prior import SimCLREncoder
    from tests.equivalence._golden import det_tensor

    g = golden("simclr")
    torch.manual_seed(61)
    enc = SimCLREncoder(feature_dim=128)
    assert list(enc.state_dict()) == g["keys"].tolist()
    for key in (k[2:] for k in g if k.startswith("p:")):
        assert_close(grad_sample(enc.state_dict()[key]), g[f"p:{key}"], name=key)
    assert_close(torch.rand(4), g["next_draw"], name="generator after the encoder")
    fill_state(enc, seed=6)
    with torch.no_grad():
        assert_close(
            enc.eval()(det_tensor((2, 3, 32, 32), 62, "images")), g["features"], name="features"
        )


# ------------------------------------------------------------------------------------ kNN prior
def test_knn_draws_with_database_rows_as_queries():
    """CIFAR/CLIP: the query is a database row (self among the k neighbours), count weights."""
    g, x = golden("knn"), G.knn_inputs()
    cand = L.batch_candidates(x["db"][x["idx"]], x["idx"], x["db"], x["labels"], G.KNN_K, G.KNN_C)
    table = L.neighbour_candidates(x["db"], x["labels"], G.KNN_K, G.KNN_C)
    assert torch.equal(cand, table[x["idx"]])
    torch.manual_seed(31)
    labels, weights = L.sample_retrieved(cand, G.KNN_C, weighted=True)
    assert_close(labels, g["rows_labels"], name="labels")
    assert_close(weights, g["rows_weights"], name="weights")


def test_knn_draws_with_online_queries():
    """Clothing1M/WebVision/CIFAR-SimCLR: an online embedding queries the database, uniform weights."""
    g, x = golden("knn"), G.knn_inputs()
    res = L.knn_labels(x["online"], x["db"], x["labels"], G.KNN_K, G.KNN_C, metric="l2")
    assert_close(res.indices, g["online_neighbours"], name="neighbours")
    cand = torch.cat([x["labels"][res.indices], x["labels"][x["idx"]].unsqueeze(1)], 1)
    torch.manual_seed(32)
    labels, weights = L.sample_retrieved(cand, G.KNN_C, weighted=False)
    assert_close(labels, g["online_labels"], name="labels")
    assert_close(weights, g["online_weights"], name="weights")


def test_food_static_table_and_draws():
    """Food-101N: ``prepare_knn`` (k + 1 nearest, self first) and ``knn_labels``."""
    g, x = golden("knn"), G.knn_inputs()
    table = L.neighbour_candidates(x["db"], x["labels"], G.KNN_K, G.KNN_C, layout="food")
    assert_close(table, g["food_table"], name="table")
    torch.manual_seed(33)
    labels, weights = L.sample_retrieved(table[x["idx"]], G.KNN_C, weighted=True)
    assert_close(labels, g["food_labels"], name="labels")
    assert_close(weights, g["food_weights"], name="weights")


# ------------------------------------------------------------------------------------ training and DDIM
def step_nets() -> tuple[nn.Module, nn.Module]:
    denoiser, encoder = port_denoiser(), port_encoder()
    fill_state(denoiser, seed=4, rename=denoiser_key)
    fill_state(encoder, seed=5, rename=encoder_key)
    return denoiser, encoder


def test_two_training_steps():
    """train_CIFAR.py's step: kNN draw, antithetic t, noise, weighted loss, clipped Adam, LR schedule;
    the image encoder runs in train mode, outside the optimiser."""
    g, x = golden("train_step"), G.step_inputs()
    denoiser, encoder = step_nets()
    schedule = L.Schedule.cosine(G.T)
    opt = torch.optim.Adam(
        denoiser.parameters(), lr=1e-4, betas=(0.9, 0.999), eps=1e-8, weight_decay=0.0
    )
    table = L.neighbour_candidates(x["db"], x["labels"], 4, G.C)
    torch.manual_seed(41)
    for step in range(2):
        denoiser.train()
        encoder.train()
        idx = x["idx"][step]
        lr = L.learning_rate(step / 10, 5, 1000, 1e-3)
        for group in opt.param_groups:
            group["lr"] = lr
        labels, weights = L.sample_retrieved(table[idx], G.C, weighted=True)
        assert_close(labels, g[f"s{step}/labels"], name="labels")
        assert_close(weights, g[f"s{step}/weights"], name="weights")
        np.testing.assert_allclose(lr, g[f"s{step}/lr"], rtol=1e-12)
        with torch.no_grad():
            x_embed = encoder(x["images"][step])
        loss = L.diffusion_loss(
            denoiser, x_embed, x["db"][idx], F.one_hot(labels, G.C).float(), weights, schedule
        )
        assert_close(loss, g[f"s{step}/loss"], name=f"loss {step}")
        opt.zero_grad()
        loss.backward()
        for key, p in denoiser.named_parameters():
            assert_close(
                grad_sample(p.grad), g[f"s{step}/g:{denoiser_key(key)}"], name=f"grad {key}"
            )
        assert_close(
            nn.utils.clip_grad_norm_(denoiser.parameters(), 1.0),
            g[f"s{step}/grad_norm"],
            name="norm",
        )
        opt.step()
    compare_params(denoiser, g, "final/p:", denoiser_key)


@pytest.mark.parametrize("steps", [10, 7])
def test_ddim_sample_and_its_random_draws(steps):
    g, x = golden("ddim"), G.step_inputs()
    denoiser, encoder = step_nets()
    denoiser.eval()
    encoder.train()  # the original's test() never switches the image encoder to eval (A.9.16)
    torch.manual_seed(51)
    with torch.no_grad():
        x_embed = encoder(x["images"][0])
    y = L.ddim_sample(
        denoiser, x_embed, x["db"][: G.B], L.Schedule.cosine(G.T), L.ddim_timesteps(steps, G.T), G.C
    )
    assert_close(y, g[f"label_{steps}"], name="DDIM output")
    assert_close(torch.randn(5), g[f"next_draw_{steps}"], name="generator after DDIM")


# ------------------------------------------------------------------------------------ PMD hybrids
@pytest.mark.parametrize("num_classes", [10, 100])
@pytest.mark.parametrize("kind,rate", G.HYBRIDS)
def test_plc_overlay(num_classes, kind, rate):
    from lnl.data.noise_models import plc_overlay

    g = golden("pmd_hybrids")
    dataset = "cifar10" if num_classes == 10 else "cifar100"
    out = plc_overlay(g[f"base_{num_classes}"], kind, rate, num_classes, dataset)
    assert_close(out, g[f"small_{num_classes}_{kind}_{rate}"], name="overlay")


@pytest.mark.skipif(
    not (SHIPPED / "cifar10-1-0.35.npy").is_file(), reason="needs the shipped LRA noise files"
)
@pytest.mark.parametrize("dataset", ["cifar10", "cifar100"])
@pytest.mark.parametrize("kind,rate", G.HYBRIDS)
def test_plc_overlay_reproduces_the_shipped_hybrid_files(dataset, kind, rate):
    from lnl.data.noise_models import plc_overlay

    g = golden("pmd_hybrids")
    num_classes = 10 if dataset == "cifar10" else 100
    out = plc_overlay(np.load(SHIPPED / f"{dataset}-1-0.35.npy"), kind, rate, num_classes, dataset)
    stem = f"{dataset}-1-0.35_{kind}_{rate}"
    assert hashlib.sha256(out.astype(np.int64).tobytes()).hexdigest() == str(g[f"sha256_{stem}"])
    assert np.array_equal(out, np.load(SHIPPED / f"{stem}.npy"))


# ------------------------------------------------------------------------------------ data loaders
def _compare_loader(g: dict, prefix: str, loader, weights) -> None:
    got = G.loader_record(loader, weights)
    for key in ("idx", "labels", "proj"):
        assert_close(got[key], g[f"{prefix}/{key}"], name=f"{prefix} {key}")
    assert_close(
        torch.rand(3), g[f"{prefix}/next_draw"], name=f"{prefix}: generator after the epoch"
    )


def test_original_loaders_shuffle_crop_flip_and_draw_as_the_dataloader():
    """train_CIFAR.py's shuffling 4-worker DataLoader with RandomCrop(32, 4) and flips, two epochs, then
    the evaluation loader: the same batches, the same images and the global generator left alike."""
    from lnl.data.cifar import CIFAR10_MEAN, CIFAR10_STD
    from methods.lra.lra_loader import OriginalLoader

    g, x = golden("loader"), G.loader_inputs()
    common = dict(mean=CIFAR10_MEAN, std=CIFAR10_STD, device="cpu", num_workers=4)
    images, labels = torch.from_numpy(x["images"]), torch.from_numpy(x["labels"])
    train = OriginalLoader(images, labels, G.B, shuffle=True, augment=True, **common)
    torch.manual_seed(72)
    for epoch in range(2):
        _compare_loader(g, f"train{epoch}", train, x["weights"])
    _compare_loader(
        g,
        "eval",
        OriginalLoader(images, labels, G.B, shuffle=False, augment=False, **common),
        x["weights"],
    )


# ------------------------------------------------------------------------------------ two epochs
def test_two_epochs_of_train_cifar_end_to_end(tmp_path):
    """train_CIFAR.py's train() for two epochs (CLIP mode, a fixed stand-in f_p encoder, the original's
    f_p table): initial weights from the seed, prepare_fp_x's draw, the loaders, kNN draws, steps, the
    DDIM evaluation of val (and test when val improves): accuracies, final weights, the encoder's BN
    statistics and the global generator after it all equal the original's."""
    import logging
    import types

    from lnl.data.cifar import CIFAR10_MEAN, CIFAR10_STD
    from methods.lra import lra_data as D
    from methods.lra import lra_train
    from methods.lra.lra_loader import OriginalLoader

    g, x = golden("epochs"), G.epoch_inputs()
    stub = G.PriorStub()
    fill_state(stub, seed=8)
    common = dict(mean=CIFAR10_MEAN, std=CIFAR10_STD, device="cpu")
    images = {s: torch.from_numpy(x[s][0]) for s in G.EPOCH_SPLITS}
    labels = {s: torch.from_numpy(x[s][1]) for s in G.EPOCH_SPLITS}
    loaders = {
        "train": OriginalLoader(
            images["train"], labels["train"], G.B, shuffle=True, augment=True, **common
        )
    }
    feats = {"train": torch.from_numpy(g["train_embed"])}
    for s in ("val", "test"):
        loaders[s] = OriginalLoader(
            images[s], labels[s], G.B, shuffle=False, augment=False, **common
        )
        with torch.no_grad():
            feats[s] = torch.cat(
                [
                    stub(xb)
                    for xb, _, _ in OriginalLoader(
                        images[s], labels[s], G.B, shuffle=False, augment=False, **common
                    )
                ]
            )
    data = D.LRAData(
        G.C,
        torch.arange(40),
        labels["train"],
        feats,
        loaders,
        {"val": feats["val"], "test": feats["test"]},
        labels["test"],
        {},
    )
    args = types.SimpleNamespace(
        device=torch.device("cpu"),
        feature_dim=G.F_DIM,
        diff_encoder="resnet18",
        encoder_weights="none",
        torchvision_init=False,
        train_encoder=False,
        ema_decay=0.9999,
        knn_per_batch=False,
        k=4,
        knn_metric="l2",
        exclude_self=False,
        table_layout="own_last",
        knn_backend="reference",
        out=str(tmp_path),
        lr=1e-3,
        lr_warmup=0,
        lr_horizon=1000,
        amp=False,
        ddim_n_step=10,
        fix_ddim_steps=False,
        fix_ddim_output=False,
        predict_argmax=False,
        use_ema=False,
        knn_weights="count",
        selection="val",
        nepoch=2,
    )
    torch.manual_seed(92)
    run = lra_train.Run(args, data, logging.getLogger("lnl"))
    state, accuracies = {"tracker": 0.0, "best_acc": 0.0}, []
    for epoch in range(2):
        run.train_epoch(epoch)
        if epoch == 0:  # the original's evaluation epochs: epoch % 5 == 0 and epoch >= warmup (0)
            metrics = {"val_acc": run.accuracy("val")}
            accuracies.append(100 * metrics["val_acc"])
            if lra_train.needs_test(args, state, metrics, epoch):
                metrics["test_acc"] = run.accuracy("test")
                accuracies.append(100 * metrics["test_acc"])
            lra_train.select(state, metrics, args.selection)
    np.testing.assert_allclose(accuracies, g["accuracies"], rtol=1e-12)
    compare_params(run.denoiser, g, "final/p:", denoiser_key)
    for key, value in run.encoder.state_dict().items():
        if "running" in key:
            assert_close(grad_sample(value), g[f"encoder/p:{encoder_key(key)}"], name=key)
    assert_close(torch.rand(3), g["next_draw"], name="generator after two epochs")


@pytest.mark.parametrize("pmd_type", [1, 2, 3])
def test_pmd_draws_as_plc_label_noise(pmd_type):
    """PLC's label_noise (utils.py) with its probabilities, seed and factor: the same PMD labels."""
    from lnl.data.noise import make_noise

    eta = G.pmd_probs()
    y = eta.argmax(1).numpy()
    out = make_noise(
        y,
        "pmd",
        0.3,
        num_classes=G.C,
        seed=64,
        probs=eta.numpy(),
        pmd_type=pmd_type,
        pmd_factor=1.2,
    )
    assert_close(
        out.labels.numpy(),
        golden("pmd_hybrids")[f"label_noise_{pmd_type}"].astype(np.int64),
        name="labels",
    )
