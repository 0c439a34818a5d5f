"""Golden outputs of LRA-Diffusion (puar-playground/LRA-diffusion @ 231e587) and of PLC's PMD label
noise (pxiangwu/PLC @ 8c2bcfd), for ``test_lra.py``::

    python tests/equivalence/make_goldens_lra.py --original /tmp/orig/lra --plc /tmp/orig/plc

Runs on the CPU, unmodified except for PLC lines patched at load time where it assigns a 1-element
array to a scalar, which numpy ≥ 2 refuses: ``cifar/noise.py``'s ``np.where(flipped == 1)[0]`` and
``utils.py``'s three ``np.random.binomial(1, noise_level[i]/factor, 1)`` get a ``[0]`` (the same
value); ``termcolor`` (imported by ``utils.py``, unused) is stubbed when absent. The LRA modules are
imported as they are (``.cuda()`` is never called on the CPU paths used here), except for
``gen_epochs``'s changes. Without ``--plc`` the
PMD fixture is left as it is.

Fixtures (``fixtures/lra/``): ``schedule`` (cosine β, ᾱ, DDIM timesteps and ᾱ pairs, the LR
schedule), ``init`` (ConditionalModel and CIFAR ResNet-18 initialised from a seed), ``denoiser``
(forward in eval and train mode, gradients), ``simclr`` (the online prior's encoder), ``knn``
(``sample_knn_labels`` and Food's ``prepare_knn`` + ``knn_labels`` draws), ``train_step`` (two CIFAR
training steps: kNN draw, antithetic t, noise, loss, gradients, clipped Adam update), ``ddim``
(``reverse_ddim`` and the random draws it consumes), ``loader`` (train_CIFAR.py's DataLoaders:
shuffle, crops, flips, draws), ``epochs`` (two epochs of train_CIFAR.py's ``train()``, with the run-
time changes listed in ``gen_epochs``), ``pmd_hybrids`` (PLC's ``label_noise`` PMD draws and its
``RandomState(77)`` overlay).
"""

from __future__ import annotations

import argparse
import hashlib
import sys
import tempfile
import types
from pathlib import Path

import numpy as np
import torch
import torch.nn as nn

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))
from tests.equivalence._golden import (  # noqa: E402
    FIXTURES,
    det_array,
    det_tensor,
    fill_state,
    git_commit,
    grad_sample,
    import_original,
    load_definitions,
    save_golden,
)

LRA_COMMIT = "231e587f3569ce413d40d96b9cce5a3c08ee361f"
PLC_COMMIT = "8c2bcfd25e538fdcdb637a820ac340e9ee084e59"
OUT = FIXTURES / "lra"
GENERATOR = "tests/equivalence/make_goldens_lra.py"

# tiny shapes shared with test_lra.py
B, C, FP, F_DIM, T = 8, 10, 16, 32, 1000
DDIM_STEPS = (1, 2, 4, 5, 7, 10, 16, 50, 100)
LR_POINTS = (0.0, 0.3, 1.0, 4.99, 5.0, 37.5, 199.9)
KNN_N, KNN_D, KNN_C, KNN_K = 60, 8, 5, 5
HYBRIDS = (("U", 0.3), ("U", 0.6), ("A", 0.3))


def denoiser_inputs(seed: int = 7) -> dict:
    return {
        "x_embed": det_tensor((B, F_DIM), seed, "x_embed"),
        "y": det_tensor((B, C), seed, "y"),
        "t": det_tensor((B,), seed, "t", kind="int", low=0, high=T + 1),
        "fp": det_tensor((B, FP), seed, "fp"),
        "eps": det_tensor((B, C), seed, "eps"),
        "w": det_tensor((B,), seed, "w", kind="uniform", low=0.0, high=0.25),
    }


def knn_inputs(seed: int = 11) -> dict:
    return {
        "db": det_tensor((KNN_N, KNN_D), seed, "db"),
        "labels": det_tensor((KNN_N,), seed, "labels", kind="int", low=0, high=KNN_C),
        "idx": det_tensor((B,), seed, "idx", kind="int", low=0, high=KNN_N),
        "online": det_tensor((B, KNN_D), seed, "online", scale=0.3),
    }


def step_inputs(seed: int = 13) -> dict:
    n = 40
    return {
        "images": det_tensor((2, B, 3, 32, 32), seed, "images"),
        "db": det_tensor((n, FP), seed, "db"),
        "labels": det_tensor((n,), seed, "labels", kind="int", low=0, high=C),
        "idx": det_tensor((2, B), seed, "idx", kind="int", low=0, high=n),
    }


def save(name: str, commit: str, original: str, **arrays) -> None:
    save_golden(
        OUT / f"{name}.npz", original=original, commit=commit, generator=GENERATOR, **arrays
    )


def params_sample(module: nn.Module) -> dict:
    """A strided sample and the norm of every floating state entry, by the original's key."""
    return {
        f"p:{k}": grad_sample(v) for k, v in module.state_dict().items() if v.is_floating_point()
    }


# ------------------------------------------------------------------------------------------------ LRA
def build_diffusion(md, steps: int = 10):
    return md.Diffusion(
        nn.Identity(),
        num_timesteps=T,
        n_class=C,
        fp_dim=FP,
        device="cpu",
        feature_dim=F_DIM,
        encoder_type="resnet18",
        ddim_num_steps=steps,
    )


def gen_schedule(md, du, learning, commit: str) -> None:
    diff = build_diffusion(md)
    out = {
        "betas": diff.betas,
        "alphas_cumprod": diff.alphas_cumprod,
        "ddim_alphas": diff.ddim_alphas,
        "ddim_alphas_prev": diff.ddim_alphas_prev,
    }
    for s in DDIM_STEPS:
        out[f"ddim_timesteps_{s}"] = du.make_ddim_timesteps("uniform", s, T)
    opt = torch.optim.SGD([nn.Parameter(torch.zeros(1))], lr=0.1)
    for warm, horizon in ((5, 1000), (10, 200), (1, 300)):
        out[f"lr_{warm}_{horizon}"] = np.array(
            [learning.adjust_learning_rate(opt, e, warm, horizon, 0.001) for e in LR_POINTS]
        )
    save("schedule", commit, "puar-playground/LRA-diffusion", **out)


def gen_init(md, r32, commit: str) -> None:
    torch.manual_seed(21)
    model = md.ConditionalModel(T, y_dim=C, fp_dim=FP, feature_dim=F_DIM, guidance=True)
    torch.manual_seed(22)
    enc = r32.resnet18(num_classes=F_DIM, num_input_channels=3)
    next_draw = torch.rand(4)
    save(
        "init",
        commit,
        "puar-playground/LRA-diffusion",
        **{f"denoiser/{k}": v for k, v in params_sample(model).items()},
        **{f"encoder/{k}": v for k, v in params_sample(enc).items()},
        encoder_next_draw=next_draw,
    )


def gen_denoiser(md, commit: str) -> None:
    model = md.ConditionalModel(T, y_dim=C, fp_dim=FP, feature_dim=F_DIM, guidance=True)
    fill_state(model, seed=3)
    x = denoiser_inputs()
    model.eval()
    with torch.no_grad():
        out_eval = model(x["x_embed"], x["y"], x["t"], x["fp"])
    model.train()
    x_embed, fp = x["x_embed"].clone().requires_grad_(), x["fp"].clone().requires_grad_()
    out = model(x_embed, x["y"], x["t"], fp)
    loss = torch.mean(torch.matmul(x["w"], nn.MSELoss(reduction="none")(x["eps"], out)))
    loss.backward()
    grads = {f"g:{k}": grad_sample(p.grad) for k, p in model.named_parameters()}
    save(
        "denoiser",
        commit,
        "puar-playground/LRA-diffusion",
        out_eval=out_eval,
        out_train=out,
        loss=loss,
        grad_x_embed=x_embed.grad,
        grad_fp=fp.grad,
        running_mean=model.unetnorm1.running_mean,
        running_var=model.unetnorm1.running_var,
        **grads,
    )


def gen_knn(knn_utils, commit: str) -> None:
    x = knn_inputs()
    out = {}
    torch.manual_seed(31)
    lab, w = knn_utils.sample_knn_labels(
        x["db"][x["idx"]],
        x["labels"][x["idx"]],
        x["db"],
        x["labels"],
        k=KNN_K,
        n_class=KNN_C,
        weighted=True,
    )
    out.update(rows_labels=lab, rows_weights=w)
    torch.manual_seed(32)
    lab, w = knn_utils.sample_knn_labels(
        x["online"],
        x["labels"][x["idx"]],
        x["db"],
        x["labels"],
        k=KNN_K,
        n_class=KNN_C,
        weighted=False,
    )
    out.update(
        online_labels=lab,
        online_weights=w,
        online_neighbours=knn_utils.knn(x["online"], x["db"], KNN_K)[1],
    )
    with tempfile.TemporaryDirectory() as tmp:
        table = knn_utils.prepare_knn(x["labels"], x["db"], str(Path(tmp) / "fp_knn.npy"), k=KNN_K)
    torch.manual_seed(33)
    lab, w = knn_utils.knn_labels(table.numpy(), x["idx"].numpy(), k=KNN_K, n_class=KNN_C)
    out.update(food_table=table, food_labels=lab, food_weights=w)
    save("knn", commit, "puar-playground/LRA-diffusion", **out)


def gen_train_step(md, knn_utils, learning, commit: str) -> None:
    """Two steps of train_CIFAR.py's loop (CLIP mode: f_p is the precomputed row, weighted kNN)."""
    diff = build_diffusion(md)
    fill_state(diff.model, seed=4)
    fill_state(diff.diffusion_encoder, seed=5)
    x = step_inputs()
    opt = torch.optim.Adam(
        diff.model.parameters(),
        lr=0.0001,
        weight_decay=0.0,
        betas=(0.9, 0.999),
        amsgrad=False,
        eps=1e-08,
    )
    mse = nn.MSELoss(reduction="none")
    torch.manual_seed(41)
    out = {}
    for step in range(2):
        diff.model.train()
        idx = x["idx"][step]
        fp = x["db"][idx]
        lab, w = knn_utils.sample_knn_labels(
            fp, x["labels"][idx], x["db"], x["labels"], k=4, n_class=C, weighted=True
        )
        y0, _ = learning.cast_label_to_one_hot_and_prototype(lab.to(torch.int64), n_class=C)
        lr = learning.adjust_learning_rate(
            opt, step / 10 + 0.0, warmup_epochs=5, n_epochs=1000, lr_input=0.001
        )
        t = torch.randint(low=0, high=T, size=(B // 2 + 1,))
        t = torch.cat([t, T - 1 - t], dim=0)[:B]
        output, e = diff.forward_t(y0, x["images"][step], t, fp)
        loss = torch.mean(torch.matmul(w, mse(e, output)))
        opt.zero_grad()
        loss.backward()
        out.update(
            {
                f"s{step}/labels": lab,
                f"s{step}/weights": w,
                f"s{step}/t": t,
                f"s{step}/e": e,
                f"s{step}/loss": loss,
                f"s{step}/lr": np.array(lr),
            }
        )
        out.update(
            {f"s{step}/g:{k}": grad_sample(p.grad) for k, p in diff.model.named_parameters()}
        )
        out[f"s{step}/grad_norm"] = torch.nn.utils.clip_grad_norm_(diff.model.parameters(), 1.0)
        opt.step()
    out.update({f"final/{k}": v for k, v in params_sample(diff.model).items()})
    save("train_step", commit, "puar-playground/LRA-diffusion", **out)


def gen_simclr(model_simclr, commit: str) -> None:
    """utils/model_SimCLR.py: SimCLR_encoder built from a seed (every 10th state entry and the generator
    after it), then with filled weights in eval mode on two images (train_CIFAR.py's online f_p)."""
    torch.manual_seed(61)
    enc = model_simclr.SimCLR_encoder(feature_dim=128)
    keys = [k for k, v in enc.state_dict().items() if v.is_floating_point()][::10]
    init = {f"p:{k}": grad_sample(enc.state_dict()[k]) for k in keys}
    next_draw = torch.rand(4)
    fill_state(enc, seed=6)
    with torch.no_grad():
        feats = enc.eval()(det_tensor((2, 3, 32, 32), 62, "images"))
    save(
        "simclr",
        commit,
        "puar-playground/LRA-diffusion",
        **init,
        next_draw=next_draw,
        features=feats,
        keys=np.array(list(enc.state_dict())),
    )


def loader_inputs(seed: int = 71) -> dict:
    return {
        "images": det_array((40, 32, 32, 3), seed, "images", kind="int", low=0, high=256).astype(
            np.uint8
        ),
        "labels": det_array((40,), seed, "labels", kind="int", low=0, high=C),
        "weights": det_tensor((3 * 32 * 32,), seed, "weights").double(),
    }


def loader_record(batches, weights) -> dict:
    """Indices, labels and a flip-sensitive projection of every image of the batches."""
    idx, lab, proj = [], [], []
    for x, y, i in batches:
        idx.append(torch.as_tensor(i))
        lab.append(torch.as_tensor(y))
        proj.append(x.flatten(1).double() @ weights)
    return {"idx": torch.cat(idx), "labels": torch.cat(lab), "proj": torch.cat(proj)}


def gen_loader(data_utils, commit: str) -> None:
    """train_CIFAR.py's loaders: Custom_dataset with its training transform (train_CIFAR.py's
    transform_train, built here with the same torchvision calls: it sits under ``__main__``) in a
    shuffling DataLoader with 4 workers, two epochs; then the evaluation loader (Custom_dataset's
    default transform, no shuffle). The global generator is recorded after each."""
    import torchvision.transforms as T

    x = loader_inputs()
    train_tf = T.Compose(
        [
            T.RandomCrop(32, padding=4),
            T.RandomHorizontalFlip(),
            T.ToTensor(),
            T.Normalize((0.4914, 0.4822, 0.4465), (0.2023, 0.1994, 0.2010)),
        ]
    )
    train = data_utils.Custom_dataset(x["images"], list(x["labels"]), transform=train_tf)
    loader = torch.utils.data.DataLoader(train, batch_size=B, shuffle=True, num_workers=4)
    out = {}
    torch.manual_seed(72)
    for epoch in range(2):
        out.update({f"train{epoch}/{k}": v for k, v in loader_record(loader, x["weights"]).items()})
        out[f"train{epoch}/next_draw"] = torch.rand(3)
    evaluation = data_utils.Custom_dataset(x["images"], list(x["labels"]))
    loader = torch.utils.data.DataLoader(evaluation, batch_size=B, shuffle=False, num_workers=4)
    out.update({f"eval/{k}": v for k, v in loader_record(loader, x["weights"]).items()})
    out["eval/next_draw"] = torch.rand(3)
    save("loader", commit, "puar-playground/LRA-diffusion", **out)


class PriorStub(nn.Module):
    """A fixed stand-in for the CLIP f_p encoder (the real one needs OpenAI's weights): pooled pixels
    through a linear map; its weights come from ``fill_state``."""

    def __init__(self):
        super().__init__()
        self.lin = nn.Linear(48, FP)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.lin(nn.functional.adaptive_avg_pool2d(x, 4).flatten(1))


EPOCH_SPLITS = {"train": 40, "val": 16, "test": 16}


def epoch_inputs(seed: int = 91) -> dict:
    return {
        s: (
            det_array((n, 32, 32, 3), seed, f"{s}_images", kind="int", low=0, high=256).astype(
                np.uint8
            ),
            det_array((n,), seed, f"{s}_labels", kind="int", low=0, high=C),
        )
        for s, n in EPOCH_SPLITS.items()
    }


def gen_epochs(root: Path, md, data_utils, commit: str) -> None:
    """train_CIFAR.py's ``train()`` for two epochs with ``--warmup_epochs 0 --k 4`` on 40/16/16 images
    (batch 8) and a fixed stand-in f_p encoder (its CLIP mode: precomputed training rows): prepare_fp_x,
    the loaders, kNN draws, steps, DDIM evaluation, selection. Changes (run-time, listed here):
    ``cnt_agree(...)[0]`` crashes the original's ``test()`` (an int has no ``[0]``), so ``cnt_agree``
    returns a 1-element tensor; ``test``/``prepare_fp_x`` are wrapped to record what they return; an
    empty ``clip`` module stands in for OpenAI's package (imported, unused)."""
    import argparse as ap

    import torchvision.transforms as tv

    sys.modules.setdefault(
        "clip", types.ModuleType("clip")
    )  # imported by clip_wrapper.py, never called here
    ns = load_definitions(root / "train_CIFAR.py")
    agree = ns["cnt_agree"]
    ns["cnt_agree"] = lambda output, target: torch.tensor([agree(output, target)])
    ns.update(fp_dim=FP, batch_size=B, device="cpu")
    seen = {"acc": [], "embed": []}
    original_test, original_prepare = ns["test"], ns["prepare_fp_x"]
    ns["test"] = lambda *a: seen["acc"].append(original_test(*a)) or seen["acc"][-1]
    ns["prepare_fp_x"] = lambda *a, **k: (
        seen["embed"].append(original_prepare(*a, **k)) or seen["embed"][-1]
    )
    x = epoch_inputs()
    train_tf = tv.Compose(
        [
            tv.RandomCrop(32, padding=4),
            tv.RandomHorizontalFlip(),
            tv.ToTensor(),
            tv.Normalize((0.4914, 0.4822, 0.4465), (0.2023, 0.1994, 0.2010)),
        ]
    )
    datasets = {
        s: data_utils.Custom_dataset(
            x[s][0], list(x[s][1]), **({"transform": train_tf} if s == "train" else {})
        )
        for s in EPOCH_SPLITS
    }
    stub = PriorStub()
    fill_state(stub, seed=8)
    torch.manual_seed(92)
    diff = md.Diffusion(
        stub,
        num_timesteps=T,
        n_class=C,
        fp_dim=FP,
        device="cpu",
        feature_dim=F_DIM,
        encoder_type="resnet18",
        ddim_num_steps=10,
    )
    args = ap.Namespace(nepoch=2, k=4, warmup_epochs=0)
    with tempfile.TemporaryDirectory() as tmp:
        ns["train"](
            diff,
            datasets["train"],
            datasets["val"],
            datasets["test"],
            str(Path(tmp) / "m.pt"),
            args,
            real_fp=False,
        )
    save(
        "epochs",
        commit,
        "puar-playground/LRA-diffusion",
        accuracies=np.array(seen["acc"]),
        train_embed=seen["embed"][0],
        next_draw=torch.rand(3),
        **{f"final/{k}": v for k, v in params_sample(diff.model).items()},
        **{
            f"encoder/{k}": v
            for k, v in params_sample(diff.diffusion_encoder).items()
            if "running" in k
        },
    )


def gen_ddim(md, commit: str) -> None:
    """test(): model.eval(); the image encoder stays in train mode; reverse_ddim(stochastic=False)."""
    x = step_inputs()
    out = {}
    for steps in (10, 7):
        diff = build_diffusion(md, steps)
        fill_state(diff.model, seed=4)
        fill_state(diff.diffusion_encoder, seed=5)
        diff.model.eval()
        torch.manual_seed(51)
        y = diff.reverse_ddim(x["images"][0], stochastic=False, fp_x=x["db"][:B])
        out[f"label_{steps}"] = y
        out[f"next_draw_{steps}"] = torch.randn(
            5
        )  # reverse_ddim's draws advance the global generator
    save("ddim", commit, "puar-playground/LRA-diffusion", **out)


# ------------------------------------------------------------------------------------------------ PLC
def load_plc_noise(plc: Path) -> types.ModuleType:
    """PLC's ``cifar/noise.py`` with the numpy ≥ 2 patch of the module docstring."""
    src = (plc / "cifar" / "noise.py").read_text()
    old = "new_y[idx] = np.where(flipped == 1)[0]"
    if old not in src:
        raise RuntimeError(f"{plc}/cifar/noise.py: expected line not found (another PLC commit?)")
    mod = types.ModuleType("plc_noise")
    exec(
        compile(src.replace(old, old + "[0]"), str(plc / "cifar" / "noise.py"), "exec"),
        mod.__dict__,
    )
    return mod


def load_label_noise(plc: Path):
    """PLC's ``utils.py: label_noise`` with the numpy ≥ 2 patch of the module docstring (``binomial(...,
    1)`` is a 1-element array PLC assigns to a scalar; ``[0]`` assigns the same value)."""
    sys.modules.setdefault(
        "termcolor", types.SimpleNamespace(cprint=print)
    )  # imported by utils.py, unused
    src = (plc / "utils.py").read_text()
    old = "noise_level[i]/factor, 1)"
    if src.count(old) != 3:
        raise RuntimeError(
            f"{plc}/utils.py: expected PMD draw lines not found (another PLC commit?)"
        )
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "plc_utils.py"
        path.write_text(src.replace(old, old + "[0]"))
        return load_definitions(path)["label_noise"]


def plc_overlay(
    noise, base: np.ndarray, num_classes: int, kind: str, rate: float, seed: int = 77
) -> np.ndarray:
    """What PLC's ``cifar/train.py`` does to the loaded file with ``--noise_type uniform|asymmetric``."""
    if kind == "U":
        return noise.noisify_with_P(
            base.copy(), nb_classes=num_classes, noise=rate, random_state=seed
        )[0]
    fn = (
        noise.noisify_cifar10_asymmetric if num_classes == 10 else noise.noisify_cifar100_asymmetric
    )
    return fn(base.copy(), noise=rate, random_state=seed)[0]


def pmd_probs(seed: int = 63) -> torch.Tensor:
    """η for PLC's label_noise: a softmax of sharp logits (float32, as PLC's network output)."""
    return torch.softmax(det_tensor((300, C), seed, "logits", scale=3.0), dim=1)


def gen_pmd(plc: Path, shipped: Path | None, commit: str) -> None:
    noise = load_plc_noise(plc)
    out = {}
    label_noise = load_label_noise(plc)
    eta = pmd_probs()
    for pmd_type in (0, 1, 2):  # PLC's type index starts at 0
        np.random.seed(64)
        targets = types.SimpleNamespace(targets=list(eta.argmax(1).numpy()))
        out[f"label_noise_{pmd_type + 1}"] = label_noise(targets, eta, pmd_type, factor=1.2)[0]
    for num_classes in (10, 100):
        base = det_array((600,), 61, f"base{num_classes}", kind="int", low=0, high=num_classes)
        out[f"base_{num_classes}"] = base
        for kind, rate in HYBRIDS:
            out[f"small_{num_classes}_{kind}_{rate}"] = plc_overlay(
                noise, base, num_classes, kind, rate
            )
        if shipped is None:
            continue
        ds = "cifar10" if num_classes == 10 else "cifar100"
        full = np.load(shipped / f"{ds}-1-0.35.npy")
        for kind, rate in HYBRIDS:
            labels = plc_overlay(noise, full, num_classes, kind, rate)
            out[f"sha256_{ds}-1-0.35_{kind}_{rate}"] = np.array(
                hashlib.sha256(labels.astype(np.int64).tobytes()).hexdigest()
            )
    save("pmd_hybrids", commit, "pxiangwu/PLC", **out)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--original", type=Path, required=True, help="LRA-diffusion checkout at 231e587")
    p.add_argument(
        "--plc", type=Path, default=None, help="PLC checkout at 8c2bcfd (the PMD overlay fixture)"
    )
    p.add_argument(
        "--shipped",
        type=Path,
        default=None,
        help="folder of LRA's noise_label/*.npy (default: <original>/noise_label)",
    )
    args = p.parse_args()
    torch.set_num_threads(1)
    commit = git_commit(args.original, LRA_COMMIT)
    md = import_original(args.original, "model_diffusion")
    du = import_original(args.original, "utils.diffusion_utils")
    knn_utils = import_original(args.original, "utils.knn_utils")
    learning = import_original(args.original, "utils.learning")
    r32 = import_original(args.original, "utils.ResNet_for_32")
    gen_schedule(md, du, learning, commit)
    gen_init(md, r32, commit)
    gen_denoiser(md, commit)
    gen_knn(knn_utils, commit)
    gen_train_step(md, knn_utils, learning, commit)
    gen_ddim(md, commit)
    gen_simclr(import_original(args.original, "utils.model_SimCLR"), commit)
    gen_loader(import_original(args.original, "utils.data_utils"), commit)
    gen_epochs(args.original, md, import_original(args.original, "utils.data_utils"), commit)
    if args.plc is not None:
        shipped = args.shipped or args.original / "noise_label"
        gen_pmd(
            args.plc,
            shipped if (shipped / "cifar10-1-0.35.npy").is_file() else None,
            git_commit(args.plc, PLC_COMMIT),
        )


if __name__ == "__main__":
    main()
