"""Golden outputs of PLReMix (``lxysl/PLReMix`` @ b0c4ec3), computed by the original on the CPU.

    python tests/equivalence/make_goldens_plremix.py --original PATH [--only NAME ...]

Runs, from a checkout at ``PATH``, unmodified:
* ``models.model.PLReMixModel`` around ``models.resnet.preact_resnet18``: train-mode ``all`` forward
  (logits, prototype logits, q), BN buffers, gradients, eval-mode outputs; the 64×64 (Tiny-ImageNet,
  2048-d) variant; ``init_prototypes``;
* ``utils.train_utils.uniform_warmup``: two SGD steps (CE + FlatNCE warm-up), sym and asym;
* ``utils.train_utils.gmm_selection``: the 2-D GMM's clean probability and partition;
* ``utils.train_utils.uniform_train``: two steps (MixMatch on the strong views + λ_c·PLR with the
  other net's candidates), then the FreeMatch selection and the prototype update;
* ``adjust_lr`` (step and cosine), the κ list of ``train.py``'s main, ``SemiLoss.linear_rampup``.

``wandb`` (imported at module level, never reached with ``wo_wandb``) is stubbed; ``device`` is the CPU.
"""

from __future__ import annotations

import argparse
import ast
import sys
import types
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import torch
import torch.nn.functional as F

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))
from tests.equivalence import _golden as G  # noqa: E402
from tests.equivalence.make_goldens_dividemix import (  # noqa: E402
    Batches,
    bn_buffers,
    delta_table,
    grad_table,
    images,
    labels,
    record_gradients,
    record_outputs,
    snapshot,
)

COMMIT = "b0c4ec373068705e5eba63202341738617a56711"
OUT = G.FIXTURES / "plremix"
NET_SEED, NET2_SEED, DATA_SEED = 11, 12, 3
GMM_ROWS = 2000
TRAIN = dict(
    batch_size=4,
    rows=16,
    epoch=12,
    warm_up=10,
    num_epochs=400,
    lambda_u=25.0,
    lambda_c=1.0,
    T=0.5,
    alpha=4.0,
    lr=0.02,
    topk=3,
    semi_m=0.99,
    mix_seed=9,
    num_classes=10,
)


def build_net(root_modules, seed: int, input_size: int = 32):
    resnet, model = root_modules
    backbone = resnet.preact_resnet18()
    if input_size == 64:
        backbone["dim"] *= 4  # models/model_loader.py: Tiny-ImageNet
    net = model.PLReMixModel(backbone, "cifar10", 10)
    G.fill_state(net, seed)
    return net


def proj_weights() -> torch.Tensor:
    return G.det_tensor((8, 128), DATA_SEED, "q_weights")


class TableModel(torch.nn.Module):
    """``model(x, forward_pass='all')`` returns fixed rows ``x[:, 0]`` of (logits, prototype logits, q)."""

    def __init__(self, logits, proto_logits, q):
        super().__init__()
        self.logits, self.proto_logits, self.q = logits, proto_logits, q

    def forward(self, x, forward_pass="all"):
        rows = x[:, 0].long()
        return self.logits[rows], self.proto_logits[rows], self.q[rows]


def gmm_table(rows: int = GMM_ROWS):
    """Eval outputs where 60 % of rows agree with both heads (low losses) and the rest are random."""
    logits = G.det_tensor((rows, 10), DATA_SEED, "gmm_logits", scale=3.0)
    proto_logits = G.det_tensor((rows, 10), DATA_SEED, "gmm_proto_logits", scale=3.0) + 2 * logits
    q = F.normalize(G.det_tensor((rows, 128), DATA_SEED, "gmm_q"), dim=1)
    noisy = G.det_tensor((rows,), DATA_SEED, "gmm_labels", kind="int", low=0, high=10)
    targets = torch.where(torch.arange(rows) % 5 < 3, logits.argmax(1), noisy)
    return logits, proto_logits, q, targets


def gmm_batches(batch: int = 500):
    logits, proto_logits, q, targets = gmm_table()
    idx = torch.arange(GMM_ROWS)
    return [
        (idx[i : i + batch, None].float(), targets[i : i + batch], idx[i : i + batch])
        for i in range(0, GMM_ROWS, batch)
    ]


def other_net_outputs():
    """The other net's stored eval outputs over the ``TRAIN['rows']`` training rows (every class present)."""
    n = TRAIN["rows"]
    logits = G.det_tensor((n, 10), DATA_SEED, "other_logits", scale=2.0)
    logits[torch.arange(10), torch.arange(10)] += 10.0  # rows 0..9 predict classes 0..9
    proto_logits = G.det_tensor((n, 10), DATA_SEED, "other_proto_logits", scale=2.0) + logits
    q = F.normalize(G.det_tensor((n, 128), DATA_SEED, "other_q"), dim=1)
    noisy = G.det_tensor((n,), DATA_SEED, "train_labels", kind="int", low=0, high=10)
    return logits, proto_logits, q, noisy


def train_batches():
    """Two labeled batches of 4 (4 views, labels, w, indices 0..7) and one unlabeled batch (indices 8..11)."""
    noisy = other_net_outputs()[3]
    lab = []
    for b in range(2):
        idx = torch.arange(4) + 4 * b
        views = [images(4, f"plr_x{v}_{b}") for v in range(4)]
        w = G.det_tensor((4,), DATA_SEED, f"plr_w_{b}", kind="uniform", low=0.5, high=1.0)
        lab.append((*views, noisy[idx], w, idx))
    idx = torch.arange(8, 12)
    unl = [(*[images(4, f"plr_u{v}") for v in range(4)], noisy[idx], idx)]
    return lab, unl


def warmup_batches():
    return [
        (
            images(8, f"pw_x_{b}"),
            images(8, f"pw_a1_{b}"),
            images(8, f"pw_a2_{b}"),
            labels(8, f"pw_y_{b}"),
            torch.arange(8),
        )
        for b in range(2)
    ]


# ----------------------------------------------------------------------------- components
def golden_network(mods):
    net = build_net(mods, NET_SEED)
    x, y = images(8, "net_x"), labels(8, "net_y")
    net.train()
    logits, proto_logits, q = net(x, forward_pass="all")
    (F.cross_entropy(logits, y) + (q * proj_weights()).sum()).backward()
    out = dict(
        logits=logits,
        proto_logits=proto_logits,
        q=q,
        bn_buffers=bn_buffers(net),
        grads=grad_table(net),
    )
    net.eval()
    with torch.no_grad():
        for name, value in zip(
            ("eval_logits", "eval_proto_logits", "eval_q"), net(x, forward_pass="all")
        ):
            out[name] = value
    keys = [k for k, v in net.state_dict().items() if v.is_floating_point()]
    out.update(
        keys=np.array(keys), shapes=np.array([str(tuple(net.state_dict()[k].shape)) for k in keys])
    )
    tiny = build_net(mods, NET_SEED, input_size=64).eval()
    with torch.no_grad():
        out["tiny_logits"] = tiny(
            G.det_tensor((2, 3, 64, 64), DATA_SEED, "tiny_x"), forward_pass="cls"
        )
    features = F.normalize(G.det_tensor((40, 128), DATA_SEED, "proto_features"), dim=1)
    net.init_prototypes(features, torch.arange(40) % 10)
    out["init_prototypes"] = net.prototypes
    return out


def golden_warmup(tu, noise_mode: str):
    losses_mod = sys.modules["losses.losses"]
    args = SimpleNamespace(noise_mode=noise_mode, wo_wandb=True)
    net = build_net(MODS, NET_SEED)
    before = snapshot(net)
    optimizer = torch.optim.SGD(net.parameters(), lr=0.02, momentum=0.9, weight_decay=5e-4)
    info_nce = losses_mod.InfoNCELoss(
        temperature=0.1, batch_size=8, flat=True, n_views=2
    )  # train.py: 2·bs
    tu.uniform_warmup(
        args,
        0,
        net,
        optimizer,
        Batches(warmup_batches(), 16, 8),
        torch.nn.CrossEntropyLoss(),
        info_nce,
        losses_mod.NegEntropy(),
        None,
        "cpu",
    )
    return dict(deltas=delta_table(net, before), bn_buffers=bn_buffers(net))


def golden_gmm(tu):
    logits, proto_logits, q, targets = gmm_table()
    args = SimpleNamespace(num_classes=10, p_threshold=0.5, dataset="cifar10", wo_wandb=True)
    eval_loader = Batches(gmm_batches(), GMM_ROWS, 500)
    np.random.seed(77)  # the original leaves random_state unset: its k-means init reads this
    prob, clean, noisy, *_ = tu.gmm_selection(
        args,
        "net1",
        TableModel(logits, proto_logits, q),
        [],
        [],
        eval_loader,
        torch.nn.CrossEntropyLoss(reduction="none"),
        "cpu",
        12,
    )
    return dict(prob=prob, clean=clean, noisy=noisy)


def golden_train(tu):
    losses_mod = sys.modules["losses.losses"]
    s = TRAIN
    args = SimpleNamespace(
        num_classes=10,
        batch_size=s["batch_size"],
        T=s["T"],
        alpha=s["alpha"],
        aug="autoaug",
        lambda_u=s["lambda_u"],
        lambda_c=s["lambda_c"],
        warm_up=s["warm_up"],
        num_epochs=s["num_epochs"],
        wo_wandb=True,
    )
    logits, proto_logits, q, noisy = other_net_outputs()
    meta_info = {
        "cls_outputs": logits,
        "proj_outputs": proto_logits,
        "features": q,
        "pred_label": logits.argmax(1),
        "topk": s["topk"],
        "semi_m": s["semi_m"],
        "p_model": torch.ones(10) / 10,
        "time_p": (torch.ones(10) / 10).mean(),
    }
    net, net2 = build_net(MODS, NET_SEED), build_net(MODS, NET2_SEED)
    outputs = record_outputs(net, net2)
    before = snapshot(net)
    optimizer = torch.optim.SGD(net.parameters(), lr=s["lr"], momentum=0.9, weight_decay=5e-4)
    grads = record_gradients(optimizer, lambda: grad_table(net))
    lab, unl = train_batches()
    np.random.seed(s["mix_seed"])
    torch.manual_seed(s["mix_seed"])
    tu.uniform_train(
        args,
        s["epoch"],
        net,
        net2,
        optimizer,
        Batches(lab, 8, s["batch_size"]),
        Batches(unl, 4, s["batch_size"]),
        losses_mod.SemiLoss(),
        losses_mod.PLRLoss(flat=True),
        meta_info,
        None,
        "cpu",
    )
    return dict(
        outputs=torch.cat([o.flatten() for o in outputs]),
        grads=np.stack(grads),
        deltas=delta_table(net, before),
        bn_buffers=bn_buffers(net),
        prototypes=net.prototypes,
        time_p=meta_info["time_p"],
        p_model=meta_info["p_model"],
    )


def topk_statements(script: Path) -> types.CodeType:
    """``main``'s κ statements (``milestone1, milestone2 = ...``, ``topk_list = ...`` and its two ifs)."""
    main = next(
        n
        for n in ast.parse(script.read_text()).body
        if isinstance(n, ast.FunctionDef) and n.name == "main"
    )
    start = next(i for i, s in enumerate(main.body) if "milestone1" in ast.unparse(s))
    body = main.body[start : start + 4]
    assert "topk_list[milestone2:]" in ast.unparse(body[3]), ast.unparse(body[3])
    return compile(ast.Module(body=body, type_ignores=[]), str(script), "exec")


def golden_schedules(tu, script: Path):
    out = {}
    for cos in (False, True):
        for num_epochs in (400, 9):
            lrs = []
            for epoch in range(num_epochs + 1):
                opt = torch.optim.SGD([torch.zeros(1, requires_grad=True)], lr=1.0)
                tu.adjust_lr(0.02, cos, opt, opt, epoch, num_epochs)
                lrs.append(opt.param_groups[0]["lr"])
            out[f"lr_{'cos' if cos else 'step'}_{num_epochs}"] = np.array(lrs)
    code = topk_statements(script)
    for topk in (0, 1, 2, 3, 4):
        scope = {"args": SimpleNamespace(topk=topk, num_epochs=100)}
        exec(code, scope)
        out[f"kappa_{topk}"] = np.array(scope["topk_list"])
    current = np.linspace(0, 40, 161)
    semi = sys.modules["losses.losses"].SemiLoss()
    out["rampup_current"], out["rampup"] = (
        current,
        np.array([semi.linear_rampup(25.0, c, 10) for c in current]),
    )
    return out


def stub_wandb() -> None:
    if "wandb" not in sys.modules:
        sys.modules["wandb"] = types.ModuleType("wandb")


MODS = None


def main() -> None:
    global MODS
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--original", type=Path, required=True, help="a PLReMix checkout at b0c4ec3")
    p.add_argument("--only", nargs="*", default=None, help="fixture names to write (default: all)")
    args = p.parse_args()
    root = args.original.resolve()
    commit = G.git_commit(root, COMMIT)
    torch.set_num_threads(1)
    stub_wandb()
    MODS = (G.import_original(root, "models.resnet"), G.import_original(root, "models.model"))
    G.import_original(root, "losses.losses")
    tu = G.import_original(root, "utils.train_utils")
    components = {
        "network": lambda: golden_network(MODS),
        "warmup_sym": lambda: golden_warmup(tu, "sym"),
        "warmup_asym": lambda: golden_warmup(tu, "asym"),
        "gmm_selection": lambda: golden_gmm(tu),
        "train_step": lambda: golden_train(tu),
        "schedules": lambda: golden_schedules(tu, root / "train.py"),
    }
    for name, make in components.items():
        if args.only is None or name in args.only:
            G.save_golden(
                OUT / f"{name}.npz",
                original="lxysl/PLReMix",
                commit=commit,
                generator=Path(__file__).name,
                **make(),
            )


if __name__ == "__main__":
    main()
