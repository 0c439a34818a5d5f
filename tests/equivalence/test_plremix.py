"""PLReMix's port against the original's golden outputs (``make_goldens_plremix.py``): network with its
projection and prototypes, warm-up step, 2-D GMM selection, a full train step (MixMatch + PLR +
FreeMatch selection + prototype update) and the schedules."""

from __future__ import annotations

import logging
import re
from types import SimpleNamespace

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from lnl.codivide import mixmatch as mm
from lnl.codivide import steps as cd
from lnl.models import create_model
from methods.plremix import plremix_lib as lib
from tests.equivalence import _golden as G
from tests.equivalence import make_goldens_plremix as gen
from tests.equivalence.make_goldens_dividemix import (
    bn_buffers,
    images,
    labels,
    record_gradients,
    record_outputs,
)

COMMIT = gen.COMMIT


def golden(name: str) -> dict:
    return G.load_checked("plremix", name, COMMIT)


def original_key(key: str) -> str:
    """Port ``proto_net`` key -> the original ``PLReMixModel`` key."""
    key = re.sub(
        r"^backbone\.layers\.(\d)\.", lambda m: f"backbone.layer{int(m.group(1)) + 1}.", key
    )
    key = key.replace("shortcut.weight", "shortcut.0.weight")
    return key.replace("backbone.linear.", "cls_head.")


def port_net(seed: int = gen.NET_SEED, input_size: int = 32):
    net = create_model(
        "proto_net", backbone="dividemix_preact_resnet18", num_classes=10, input_size=input_size
    )
    G.fill_state(net, seed, original_key)
    return net


def in_original_order(net, golden_keys) -> list[torch.Tensor]:
    """The port's parameters in the original's order (its cls_head comes after the projector)."""
    params = {original_key(k): p for k, p in net.named_parameters()}
    return [params[k] for k in golden_keys if k in params]


def grads(net, keys) -> np.ndarray:
    return np.concatenate([G.grad_sample(p.grad) for p in in_original_order(net, keys)])


def deltas(net, before: list[torch.Tensor], keys) -> np.ndarray:
    return np.concatenate(
        [G.grad_sample(p.detach() - b) for p, b in zip(in_original_order(net, keys), before)]
    )


def method(noisy: torch.Tensor, nets, optimizers) -> lib.PLReMix:
    s = gen.TRAIN
    args = SimpleNamespace(
        aug="autoaug",
        crl="flat_plr",
        fix_p1=False,
        fix_p2=False,
        fix_p8=False,
        fix_p10=False,
        lambda_warmup_crl=1.0,
        lambda_c=s["lambda_c"],
        topk=s["topk"],
        plr_backend="auto",
        device=torch.device("cpu"),
        num_epochs=s["num_epochs"],
        semi_m=s["semi_m"],
        seed=0,
        noise_mode="sym",
        r=0.5,
        gmm_backend="sklearn",
        amp=False,
        cos=False,
        lr=s["lr"],
        warm_up=s["warm_up"],
        T=s["T"],
        alpha=s["alpha"],
        lambda_u=s["lambda_u"],
        p_threshold=0.5,
        dataset="cifar10",
    )
    data = SimpleNamespace(
        num_classes=10,
        noisy=SimpleNamespace(labels=noisy),
        train=SimpleNamespace(targets=noisy),
        train_loader=None,
    )
    return lib.PLReMix(args, nets, optimizers, data, logging.getLogger("test"))


class Loader(list):
    def __init__(self, batches, num_samples: int, batch_size: int):
        super().__init__(batches)
        self.indices, self.batch_size = torch.arange(num_samples), batch_size


def keys():
    return golden("network")["keys"].tolist()


def test_network_keys_and_shapes_are_the_originals():
    g = golden("network")
    mapped = {
        original_key(k): str(tuple(v.shape))
        for k, v in port_net().state_dict().items()
        if v.is_floating_point()
    }
    assert mapped == dict(zip(g["keys"].tolist(), g["shapes"].tolist()))


def test_network_all_forward_buffers_gradients_and_prototype_init():
    g = golden("network")
    net = port_net()
    x, y = images(8, "net_x"), labels(8, "net_y")
    logits, proto_logits, q = net(x, mode="all")
    for name, value in (("logits", logits), ("proto_logits", proto_logits), ("q", q)):
        G.assert_close(value, g[name], name=f"train-mode {name}")
    (F.cross_entropy(logits, y) + (q * gen.proj_weights()).sum()).backward()
    G.assert_close(bn_buffers(net), g["bn_buffers"], name="BN buffers")
    G.assert_close(grads(net, g["keys"].tolist()), g["grads"], rtol=1e-5, name="gradients")
    net.eval()
    with torch.no_grad():
        for name, value in zip(("logits", "proto_logits", "q"), net(x, mode="all")):
            G.assert_close(value, g[f"eval_{name}"], name=f"eval-mode {name}")
        tiny = port_net(input_size=64).eval()
        G.assert_close(
            tiny(G.det_tensor((2, 3, 64, 64), gen.DATA_SEED, "tiny_x")),
            g["tiny_logits"],
            name="64x64 (Tiny-ImageNet, 2048-d) logits",
        )
    features = F.normalize(G.det_tensor((40, 128), gen.DATA_SEED, "proto_features"), dim=1)
    lib.init_prototypes(net, features, torch.arange(40) % 10, 10)
    G.assert_close(net.prototypes, g["init_prototypes"], name="initial prototypes")


@pytest.mark.parametrize("mode", ["sym", "asym"])
def test_warmup_steps(mode):
    g = golden(f"warmup_{mode}")
    net = port_net()
    optimizer = torch.optim.SGD(net.parameters(), lr=0.02, momentum=0.9, weight_decay=5e-4)
    m = method(
        torch.zeros(16, dtype=torch.long), [net, port_net(gen.NET2_SEED)], [optimizer, optimizer]
    )
    before = [p.detach().clone() for p in in_original_order(net, keys())]
    batches = [((x, a1, a2), y, idx) for x, a1, a2, y, idx in gen.warmup_batches()]
    cd.warmup_epoch(net, optimizer, batches, penalty=mode == "asym", extra_loss=m.warmup_extra(0))
    G.assert_close(deltas(net, before, keys()), g["deltas"], rtol=1e-5, name="parameter updates")
    G.assert_close(bn_buffers(net), g["bn_buffers"], name="BN buffers")


class PortTable(gen.TableModel):
    def forward(self, x, mode="all"):
        return super().forward(x)


def test_gmm_selection_probability_and_partition():
    g = golden("gmm_selection")
    logits, proto_logits, q, targets = gen.gmm_table()
    m = method(targets, [port_net(), port_net()], [None, None])
    outs = cd.collect_outputs(
        PortTable(logits, proto_logits, q), gen.gmm_batches(), gen.GMM_ROWS, forward=m.eval_forward
    )
    prob = cd.clean_probability(
        m.gmm_input(0, outs), backend="sklearn", seed=77, sklearn_dtype=m.gmm_sklearn_dtype
    )
    G.assert_close(prob, g["prob"].astype(np.float32), name="clean probability")
    clean, noisy = cd.divide(prob, 0.5)
    G.assert_close(clean, g["clean"], name="clean set")
    G.assert_close(noisy, g["noisy"], name="noisy set")


def test_train_step_semi_plr_selection_and_prototypes():
    g, s = golden("train_step"), gen.TRAIN
    logits, proto_logits, q, noisy = gen.other_net_outputs()
    net, net2 = port_net(gen.NET_SEED), port_net(gen.NET2_SEED)
    optimizer = torch.optim.SGD(net.parameters(), lr=s["lr"], momentum=0.9, weight_decay=5e-4)
    m = method(noisy, [net, net2], [optimizer, optimizer])
    m._epoch = s["epoch"]
    other = {
        "logits": logits,
        "proto_logits": proto_logits,
        "q": q,
        "labels": noisy,
        "index": torch.arange(s["rows"]),
    }
    outputs = record_outputs(net, net2)
    before = [p.detach().clone() for p in in_original_order(net, keys())]
    step_grads = record_gradients(optimizer, lambda: grads(net, keys()))
    lab, unl = gen.train_batches()
    prob = torch.zeros(s["rows"])
    labeled = []
    for *views, y, w, idx in lab:
        prob[idx] = w
        labeled.append((tuple(views), y, idx))
    unlabeled = [(tuple(views), y, idx) for *views, y, idx in unl]
    np.random.seed(s["mix_seed"])
    torch.manual_seed(s["mix_seed"])
    cd.semi_epoch(
        net,
        net2,
        optimizer,
        Loader(labeled, 8, s["batch_size"]),
        unlabeled,
        prob,
        epoch=s["epoch"],
        warm_up=s["warm_up"],
        lambda_u=s["lambda_u"],
        temperature=s["T"],
        alpha=s["alpha"],
        num_classes=10,
        mix_views=m.mix_views,
        extra_loss=m.semi_extra(0, other),
    )
    m.after_semi(0, {}, other, s["epoch"])
    G.assert_close(
        torch.cat([o.flatten() for o in outputs]),
        g["outputs"],
        name="forward outputs in call order",
    )
    G.assert_close(np.stack(step_grads), g["grads"], rtol=1e-5, name="gradients of each step")
    G.assert_close(deltas(net, before, keys()), g["deltas"], rtol=1e-5, name="parameter updates")
    G.assert_close(bn_buffers(net), g["bn_buffers"], name="BN buffers")
    G.assert_close(m.state["tau_t"], g["time_p"], name="FreeMatch threshold τ")
    G.assert_close(m.state["p_model"], g["p_model"], name="FreeMatch p_model")
    G.assert_close(net.prototypes, g["prototypes"], name="prototypes after the update")


@pytest.mark.parametrize("cos", [False, True])
@pytest.mark.parametrize("num_epochs", [400, 9])
def test_lr_of_every_epoch(cos, num_epochs):
    g = golden("schedules")
    m = method(torch.zeros(4, dtype=torch.long), [port_net(), port_net()], [None, None])
    m.args.lr, m.args.num_epochs, m.args.cos = 0.02, num_epochs, cos
    lrs = [m.lr_at(e) for e in range(num_epochs + 1)]
    G.assert_close(np.array(lrs), g[f"lr_{'cos' if cos else 'step'}_{num_epochs}"], name="LR")


@pytest.mark.parametrize("topk", [0, 1, 2, 3, 4])
def test_kappa_schedule(topk):
    g = golden("schedules")
    # the original's slice assignments grow topk_list past num_epochs + 1; epochs 0..100 are read
    G.assert_close(
        np.array([lib.kappa_at(e, (40, 70), topk) for e in range(101)]),
        g[f"kappa_{topk}"][:101],
        name="κ",
    )


def test_lambda_u_rampup():
    g = golden("schedules")
    G.assert_close(
        np.array([mm.linear_rampup(c, 10, 25.0) for c in g["rampup_current"]]),
        g["rampup"],
        name="ramp",
    )
