"""DivideMix's port against the original's golden outputs (``make_goldens_dividemix.py``): the same
weights, batches and random draws give the same network outputs, BN buffers, losses, gradients,
GMM partitions, schedules and noisy labels."""

from __future__ import annotations

import re
from types import SimpleNamespace

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from lnl.codivide import mixmatch as mm
from lnl.codivide import steps as cd
from lnl.codivide.cotrain import CoDivide
from lnl.models import create_model
from tests.equivalence import _golden as G
from tests.equivalence import make_goldens_dividemix as gen

COMMIT = gen.COMMIT


def golden(name: str) -> dict:
    return G.load_checked("dividemix", name, COMMIT)


def original_key(key: str) -> str:
    """Port state_dict key -> the original ``PreResNet.ResNet`` key."""
    key = re.sub(r"^layers\.(\d)\.", lambda m: f"layer{int(m.group(1)) + 1}.", key)
    return key.replace("shortcut.weight", "shortcut.0.weight")


def port_net(seed: int = gen.NET_SEED, arch: str = "dividemix_preact_resnet18") -> torch.nn.Module:
    net = create_model(arch, num_classes=10)
    G.fill_state(net, seed, original_key)
    return net


class Loader:
    """Batches with the ``indices``/``batch_size`` the port's semi epoch reads."""

    def __init__(self, batches, num_samples: int, batch_size: int):
        self.batches, self.indices, self.batch_size = batches, torch.arange(num_samples), batch_size

    def __iter__(self):
        return iter(self.batches)

    def __len__(self):
        return len(self.batches)


def test_network_keys_and_shapes_are_the_originals():
    g = golden("network")
    net = port_net()
    mapped = {
        original_key(k): str(tuple(v.shape))
        for k, v in net.state_dict().items()
        if v.is_floating_point()
    }
    assert mapped == dict(zip(g["keys"].tolist(), g["shapes"].tolist()))


def test_network_forward_buffers_and_gradients():
    g = golden("network")
    net = port_net()
    x, y = gen.images(8, "net_x"), gen.labels(8, "net_y")
    logits = net(x)
    G.assert_close(logits, g["logits_train"], name="train-mode logits")
    F.cross_entropy(logits, y).backward()
    G.assert_close(
        gen.bn_buffers(net), g["bn_buffers"], name="BN buffers after a train-mode forward"
    )
    G.assert_close(gen.grad_table(net), g["grads"], rtol=1e-5, name="CE gradients")
    net.eval()
    with torch.no_grad():
        G.assert_close(net(x), g["logits_eval"], name="eval-mode logits")


def test_the_textbook_block_is_another_function():
    """The paper's identity shortcut (``x``, lnl's block before) loads the same weights and differs."""
    g = golden("network")
    net = port_net(arch="textbook_preact_resnet18")
    with pytest.raises(AssertionError):
        G.assert_close(net(gen.images(8, "net_x")), g["logits_train"], name="textbook logits")


@pytest.mark.parametrize("mode", ["sym", "asym"])
def test_warmup_steps(mode):
    g = golden(f"warmup_{mode}")
    net = port_net()
    before = gen.snapshot(net)
    optimizer = torch.optim.SGD(net.parameters(), lr=0.02, momentum=0.9, weight_decay=5e-4)
    batches = [
        (gen.images(8, f"warm_x_{b}"), gen.labels(8, f"warm_y_{b}"), torch.arange(8))
        for b in range(2)
    ]
    res = cd.warmup_epoch(net, optimizer, batches, penalty=mode == "asym")
    G.assert_close(res["ce"], g["ce"].mean(), name="mean warm-up CE")
    G.assert_close(gen.delta_table(net, before), g["deltas"], rtol=1e-5, name="parameter updates")
    G.assert_close(gen.bn_buffers(net), g["bn_buffers"], name="BN buffers")


def port_clean_prob(r: float, epochs: int, backend: str) -> list[torch.Tensor]:
    host = SimpleNamespace(state={"history": [[], []]}, args=SimpleNamespace(r=r))
    probs = []
    for epoch in range(epochs):
        logits, batches = gen.eval_batches(epoch)
        outs = cd.collect_outputs(gen.TableNet(logits), batches, gen.EVAL_ROWS)
        x = CoDivide.gmm_input(host, 0, outs)
        probs.append(
            cd.clean_probability(
                x, backend=backend, seed=gen.gmm_seed(epoch), sklearn_dtype=torch.float64
            )
        )
    return probs


@pytest.mark.parametrize("r,epochs", [(0.5, 1), (0.9, 6)])
def test_eval_train_gmm_probability_and_partition(r, epochs):
    """Per-sample CE, min-max, (at r = 0.9 the last 5 epochs' mean), sklearn's GMM on float64 input."""
    g = golden(f"eval_train_r{r}")
    for epoch, prob in enumerate(port_clean_prob(r, epochs, "sklearn")):
        G.assert_close(
            prob[::25], g[f"prob_sample_{epoch}"], name=f"clean probability, epoch {epoch}"
        )
        G.assert_close(
            prob.double().sum(), g[f"prob_sum_{epoch}"], name=f"probability sum, epoch {epoch}"
        )
        G.assert_close(
            np.packbits((prob > 0.5).numpy()),
            g[f"clean_bits_{epoch}"],
            name=f"partition, epoch {epoch}",
        )


def test_eval_train_partition_on_the_default_gmm_backend():
    """The compiled (or reference) GMM users run by default divides as the original's sklearn fit."""
    g = golden("eval_train_r0.9")
    for epoch, prob in enumerate(port_clean_prob(0.9, 6, "auto")):
        G.assert_close(
            prob[::25],
            g[f"prob_sample_{epoch}"],
            rtol=0,
            atol_scale=1e-5,
            name=f"probability e{epoch}",
        )
        G.assert_close(
            np.packbits((prob > 0.5).numpy()),
            g[f"clean_bits_{epoch}"],
            name=f"partition, epoch {epoch}",
        )


def test_train_step_outputs_losses_gradients_and_buffers():
    """Two MixMatch steps: every forward output (u before x: BN order), Lx, Lu, λ_u, gradients, updates."""
    g, s = golden("train_step"), gen.SEMI
    net, net2 = port_net(gen.NET_SEED), port_net(gen.NET2_SEED)
    outputs = gen.record_outputs(net, net2)
    before = gen.snapshot(net)
    optimizer = torch.optim.SGD(net.parameters(), lr=s["lr"], momentum=0.9, weight_decay=5e-4)
    grads = gen.record_gradients(optimizer, lambda: gen.grad_table(net))
    lab, unl = gen.semi_batches()
    prob = torch.zeros(s["labeled_len"])
    labeled = []
    for b, (x1, x2, y, w) in enumerate(lab):
        ix = torch.arange(4) + 4 * b
        prob[ix] = w
        labeled.append(((x1, x2), y, ix))
    unlabeled = [((u1, u2), None, torch.arange(4)) for u1, u2 in unl]
    np.random.seed(s["mix_seed"])
    torch.manual_seed(s["mix_seed"])
    res = cd.semi_epoch(
        net,
        net2,
        optimizer,
        Loader(labeled, s["labeled_len"], s["batch_size"]),
        unlabeled,
        prob,
        epoch=s["epoch"],
        warm_up=s["warm_up"],
        lambda_u=s["lambda_u"],
        temperature=s["T"],
        alpha=s["alpha"],
        num_classes=10,
    )
    G.assert_close(
        torch.cat([o.flatten() for o in outputs]),
        g["outputs"],
        name="forward outputs in call order",
    )
    G.assert_close(res["lx"], g["terms"][:, 0].mean(), name="Lx")
    G.assert_close(res["lu"], g["terms"][:, 1].mean(), name="Lu")
    num_iter = s["labeled_len"] // s["batch_size"] + 1
    ramp = [
        mm.linear_rampup(s["epoch"] + b / num_iter, s["warm_up"], s["lambda_u"]) for b in range(2)
    ]
    G.assert_close(np.array(ramp), g["terms"][:, 2], name="λ_u ramp")
    G.assert_close(np.stack(grads), g["grads"], rtol=1e-5, name="gradients of each step")
    G.assert_close(gen.delta_table(net, before), g["deltas"], rtol=1e-5, name="parameter updates")
    G.assert_close(gen.bn_buffers(net), g["bn_buffers"], name="BN buffers of the trained net")
    G.assert_close(
        gen.bn_buffers(net2), g["bn_buffers_net2"], name="BN buffers of the co-guessing net"
    )


@pytest.mark.parametrize("num_epochs", [300, 100, 9])
def test_lr_of_every_epoch(num_epochs):
    g = golden("schedules")
    host = SimpleNamespace(args=SimpleNamespace(lr=0.02, num_epochs=num_epochs, lr_milestone="150"))
    lrs = [CoDivide.lr_at(host, e) for e in range(num_epochs + 1)]
    G.assert_close(np.array(lrs), g[f"lr_{num_epochs}"], name=f"LR, --num_epochs {num_epochs}")


def test_lambda_u_rampup():
    g = golden("schedules")
    ramp = [mm.linear_rampup(c, 10, 25.0) for c in g["rampup_current"]]
    G.assert_close(np.array(ramp), g["rampup"], name="linear_rampup")


@pytest.mark.parametrize(
    "dataset,mode,r", [("cifar10", "sym", 0.5), ("cifar10", "asym", 0.4), ("cifar100", "sym", 0.5)]
)
def test_noise_generation(shared_data, dataset, mode, r):
    from lnl.data.noise import make_noise

    g = golden("noise")
    if dataset == "cifar10":
        with np.load(shared_data / "cifar10" / "train.npz") as z:
            clean = z["y"]
    else:
        with np.load(shared_data / "cifar100" / "train_labels_full.npz") as z:
            clean = z["y"]
    noisy = make_noise(
        clean, mode, r, num_classes=10 if dataset == "cifar10" else 100, seed=123, dataset=dataset
    )
    G.assert_close(
        np.asarray(noisy.labels).astype(np.uint8), g[f"{dataset}_{mode}_{r}"], name="noisy labels"
    )


@pytest.mark.parametrize("dataset", ["cifar10", "cifar100"])
def test_normalisation_is_dividemix_own(dataset):
    from methods.dividemix.dividemix_train import NORMALISATION

    g = golden("noise")
    mean, std = NORMALISATION[dataset]
    G.assert_close(np.array(mean), g[f"{dataset}_mean"], rtol=0, atol_scale=0, name="mean")
    G.assert_close(np.array(std), g[f"{dataset}_std"], rtol=0, atol_scale=0, name="std")
