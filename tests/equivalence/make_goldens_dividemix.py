"""Golden outputs of DivideMix (``LiJunnan1992/DivideMix`` @ d9d3058), computed by the original on the CPU.

    python tests/equivalence/make_goldens_dividemix.py --original PATH [--cifar10 DIR] [--cifar100 DIR]

Runs, from a checkout at ``PATH``, unmodified:
* ``PreResNet.ResNet18``: train-mode forward (logits, BN buffers), eval-mode forward, CE gradients;
* ``Train_cifar.warmup``: two SGD steps, sym and asym (NegEntropy);
* ``Train_cifar.eval_train``: per-sample CE, min-max, the GMM's clean probability and partition, at
  r = 0.5 and at r = 0.9 (the mean of the last 5 epochs' losses);
* ``Train_cifar.train``: two MixMatch steps (co-guessing, co-refinement, mixup, SemiLoss, the prior
  penalty, SGD) with every forward output, Lx/Lu/λ_u, gradients and BN buffers;
* the LR of every epoch (the main loop's first statements) and ``linear_rampup``;
* ``dataloader_cifar``: the symmetric and asymmetric noise of CIFAR-10/100 and the normalisations.

``Train_cifar.py`` parses flags and trains at import: only its imports, functions and classes are
executed (``_golden.load_definitions``) and the globals they read are injected. ``.cuda()`` is a
no-op (``_golden.cpu_only``). The unlabeled iterator gets a ``.next()`` method (the original calls
``it.next()``, which Python 3's DataLoader iterators lack). ``torchnet`` (an AUC meter the noise code
never reaches) is stubbed. ``--cifar10``/``--cifar100`` point at this project's ``.npz`` folders; the
original's pickles are written from them to a temporary folder.
"""

from __future__ import annotations

import argparse
import ast
import pickle
import random
import sys
import tempfile
import types
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import torch
import torch.nn.functional as F

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))
from tests.equivalence import _golden as G  # noqa: E402

COMMIT = "d9d3058fa69a952463b896f84730378cdee6ec39"
OUT = G.FIXTURES / "dividemix"
NET_SEED, NET2_SEED, DATA_SEED = 1, 2, 3
EVAL_ROWS = 50_000  # eval_train's loss buffer is torch.zeros(50000)


# ----------------------------------------------------------------------------- small fakes the originals iterate
class Batches:
    """A list of batches with the ``dataset``/``batch_size`` attributes the original reads, whose
    iterator also has ``.next()``."""

    def __init__(self, batches, dataset_len: int, batch_size: int):
        self.batches, self.dataset, self.batch_size = batches, range(dataset_len), batch_size

    def __iter__(self):
        return _Iter(self.batches)

    def __len__(self):
        return len(self.batches)


class _Iter:
    def __init__(self, items):
        self._it = iter(items)

    def __iter__(self):
        return self

    def __next__(self):
        return next(self._it)

    next = __next__


class TableNet(torch.nn.Module):
    """``net(x)`` returns rows ``x[:, 0]`` of a fixed logit table: eval_train's loop without a network."""

    def __init__(self, table: torch.Tensor):
        super().__init__()
        self.table = table

    def forward(self, x):
        return self.table[x[:, 0].long()]


# ----------------------------------------------------------------------------- inputs shared with the test
def images(n: int, name: str) -> torch.Tensor:
    return G.det_tensor((n, 3, 32, 32), DATA_SEED, name)


def labels(n: int, name: str, num_classes: int = 10) -> torch.Tensor:
    return G.det_tensor((n,), DATA_SEED, name, kind="int", low=0, high=num_classes)


def eval_table(epoch: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Logits Tensor[50000, 10] and noisy labels where 60 % of rows agree with the logits' argmax
    (low loss) and the rest are random (high loss): a bimodal loss as the GMM sees in training."""
    logits = G.det_tensor((EVAL_ROWS, 10), DATA_SEED, f"eval_logits_{epoch}", scale=3.0)
    random_labels = G.det_tensor(
        (EVAL_ROWS,), DATA_SEED, f"eval_labels_{epoch}", kind="int", low=0, high=10
    )
    clean = torch.arange(EVAL_ROWS) % 5 < 3
    return logits, torch.where(clean, logits.argmax(1), random_labels)


def eval_batches(epoch: int, batch: int = 1000):
    logits, targets = eval_table(epoch)
    rows = torch.arange(EVAL_ROWS)
    return logits, [
        (rows[i : i + batch, None].float(), targets[i : i + batch], rows[i : i + batch])
        for i in range(0, EVAL_ROWS, batch)
    ]


def gmm_seed(call: int) -> int:
    return 1000 + call


def semi_batches():
    """Two labeled batches (x, x2, labels, w) of 4 and one unlabeled batch (u, u2) of 4."""
    lab = [
        (
            images(4, f"x1_{b}"),
            images(4, f"x2_{b}"),
            labels(4, f"y_{b}"),
            G.det_tensor((4,), DATA_SEED, f"w_{b}", kind="uniform", low=0.5, high=1.0),
        )
        for b in range(2)
    ]
    unl = [(images(4, "u1"), images(4, "u2"))]
    return lab, unl


SEMI = dict(
    batch_size=4,
    labeled_len=8,
    epoch=12,
    warm_up=10,
    lambda_u=25.0,
    T=0.5,
    alpha=4.0,
    lr=0.02,
    mix_seed=7,
)


# ----------------------------------------------------------------------------- helpers
def bn_buffers(net: torch.nn.Module) -> np.ndarray:
    return np.concatenate(
        [
            v.detach().double().flatten().numpy()
            for k, v in net.state_dict().items()
            if k.endswith(("running_mean", "running_var"))
        ]
    )


def grad_table(net: torch.nn.Module) -> np.ndarray:
    return np.concatenate([G.grad_sample(p.grad) for _, p in net.named_parameters()])


def delta_table(net: torch.nn.Module, before: dict) -> np.ndarray:
    return np.concatenate(
        [G.grad_sample(p.detach() - before[k]) for k, p in net.named_parameters()]
    )


def snapshot(net):
    return {k: p.detach().clone() for k, p in net.named_parameters()}


def record_gradients(optimizer, table) -> list:
    """Make ``optimizer.step`` first append ``table()`` (the gradients it is about to apply) to the list returned."""
    grads, step = [], optimizer.step

    def recording_step(*a, **k):
        grads.append(table())
        return step(*a, **k)

    optimizer.step = recording_step
    return grads


def record_outputs(*nets):
    outputs = []
    for net in nets:
        net.register_forward_hook(lambda m, i, o: outputs.append(o.detach().clone()))
    return outputs


# ----------------------------------------------------------------------------- components
def golden_network(orig):
    net = orig["ResNet18"](num_classes=10)
    G.fill_state(net, NET_SEED)
    x, y = images(8, "net_x"), labels(8, "net_y")
    net.train()
    logits_train = net(x)
    F.cross_entropy(logits_train, y).backward()
    buffers = bn_buffers(net)
    net.eval()
    with torch.no_grad():
        logits_eval = net(x)
    keys = np.array([k for k, v in net.state_dict().items() if v.is_floating_point()])
    return dict(
        logits_train=logits_train,
        logits_eval=logits_eval,
        bn_buffers=buffers,
        grads=grad_table(net),
        keys=keys,
        shapes=np.array([str(tuple(net.state_dict()[k].shape)) for k in keys]),
    )


def golden_warmup(orig, noise_mode: str):
    ns = orig
    ns["args"] = SimpleNamespace(noise_mode=noise_mode, dataset="cifar10", r=0.5, num_epochs=300)
    ns["CEloss"] = torch.nn.CrossEntropyLoss()
    ns["conf_penalty"] = ns["NegEntropy"]()
    losses = []
    ce = ns["CEloss"]
    ns["CEloss"] = lambda out, lab: losses.append(ce(out, lab)) or losses[-1]
    net = ns["ResNet18"](num_classes=10)
    G.fill_state(net, NET_SEED)
    before = snapshot(net)
    optimizer = torch.optim.SGD(net.parameters(), lr=0.02, momentum=0.9, weight_decay=5e-4)
    batches = [(images(8, f"warm_x_{b}"), labels(8, f"warm_y_{b}"), None) for b in range(2)]
    ns["warmup"](0, net, optimizer, Batches(batches, 16, 8))
    return dict(
        ce=torch.stack(losses).detach(), deltas=delta_table(net, before), bn_buffers=bn_buffers(net)
    )


def golden_eval_train(orig, r: float, epochs: int):
    ns = orig
    ns["args"] = SimpleNamespace(r=r)
    ns["CE"] = torch.nn.CrossEntropyLoss(reduction="none")
    all_loss, out = [], {}
    for epoch in range(epochs):
        logits, batches = eval_batches(epoch)
        ns["eval_loader"] = batches
        np.random.seed(
            gmm_seed(epoch)
        )  # the original leaves random_state unset: its k-means init reads this
        prob, all_loss = ns["eval_train"](TableNet(logits), all_loss)
        out[f"prob_sample_{epoch}"] = prob[::25].astype(np.float64)
        out[f"prob_sum_{epoch}"] = np.float64(prob.sum())
        out[f"clean_bits_{epoch}"] = np.packbits(prob > 0.5)
    return out


def golden_train(orig):
    ns = orig
    ns["args"] = SimpleNamespace(
        batch_size=SEMI["batch_size"],
        num_class=10,
        T=SEMI["T"],
        alpha=SEMI["alpha"],
        lambda_u=SEMI["lambda_u"],
        dataset="cifar10",
        r=0.5,
        noise_mode="sym",
        num_epochs=300,
    )
    ns["warm_up"] = SEMI["warm_up"]
    terms = []
    criterion = ns["SemiLoss"]()

    def recording_criterion(*a):
        lx, lu, lamb = criterion(*a)
        terms.append([float(lx), float(lu), float(lamb)])
        return lx, lu, lamb

    ns["criterion"] = recording_criterion
    net, net2 = ns["ResNet18"](num_classes=10), ns["ResNet18"](num_classes=10)
    G.fill_state(net, NET_SEED)
    G.fill_state(net2, NET2_SEED)
    outputs = record_outputs(net, net2)
    before = snapshot(net)
    optimizer = torch.optim.SGD(net.parameters(), lr=SEMI["lr"], momentum=0.9, weight_decay=5e-4)
    grads = record_gradients(optimizer, lambda: grad_table(net))
    lab, unl = semi_batches()
    np.random.seed(SEMI["mix_seed"])
    torch.manual_seed(SEMI["mix_seed"])
    ns["train"](
        SEMI["epoch"],
        net,
        net2,
        optimizer,
        Batches(lab, SEMI["labeled_len"], SEMI["batch_size"]),
        Batches(unl, 4, SEMI["batch_size"]),
    )
    return dict(
        terms=np.array(terms),
        outputs=torch.cat([o.flatten() for o in outputs]),
        grads=np.stack(grads),
        deltas=delta_table(net, before),
        bn_buffers=bn_buffers(net),
        bn_buffers_net2=bn_buffers(net2),
    )


def lr_statements(script: Path) -> types.CodeType:
    """The main loop's LR statements (``lr=args.lr`` and ``if epoch >= 150: lr /= 10``), compiled."""
    tree = ast.parse(script.read_text())
    loop = next(
        n for n in tree.body if isinstance(n, ast.For) and getattr(n.target, "id", "") == "epoch"
    )
    body = [s for s in loop.body[:2]]
    assert ast.unparse(body[0]).replace(" ", "") == "lr=args.lr", ast.unparse(body[0])
    return compile(ast.Module(body=body, type_ignores=[]), str(script), "exec")


def golden_schedules(orig, script: Path):
    code = lr_statements(script)
    out = {}
    for num_epochs in (300, 100, 9):
        lrs = []
        for epoch in range(num_epochs + 1):
            scope = {"args": SimpleNamespace(lr=0.02, num_epochs=num_epochs), "epoch": epoch}
            exec(code, scope)
            lrs.append(scope["lr"])
        out[f"lr_{num_epochs}"] = np.array(lrs)
    orig["args"] = SimpleNamespace(lambda_u=25.0)
    current = np.linspace(0, 40, 161)
    out["rampup_current"] = current
    out["rampup"] = np.array([orig["linear_rampup"](c, 10) for c in current])
    return out


# ----------------------------------------------------------------------------- noise and normalisation
def write_cifar_pickles(npz_dir: Path, dataset: str, dest: Path) -> None:
    """The original's ``cifar-10-batches-py``/``cifar-100-python`` training pickles from our .npz
    (labels are what the noise code reads; CIFAR-100's images are zeros where we lack them)."""
    dest.mkdir(parents=True, exist_ok=True)
    if dataset == "cifar10":
        with np.load(npz_dir / "train.npz") as z:
            x, y = z["x"], z["y"]
        data = x.transpose(0, 3, 1, 2).reshape(len(x), -1)
        for b in range(5):
            rows = slice(b * 10_000, (b + 1) * 10_000)
            with open(dest / f"data_batch_{b + 1}", "wb") as f:
                pickle.dump({"data": data[rows], "labels": [int(v) for v in y[rows]]}, f)
    else:
        with np.load(npz_dir / "train_labels_full.npz") as z:
            fine = z["y"]  # the fine labels
        with open(dest / "train", "wb") as f:
            pickle.dump(
                {"data": np.zeros((50_000, 3072), np.uint8), "fine_labels": [int(v) for v in fine]},
                f,
            )


def golden_noise(root: Path, npz: dict[str, Path]):
    loader = G.import_original(root, "dataloader_cifar")
    out = {}
    with tempfile.TemporaryDirectory() as tmp:
        for dataset, mode, r in (
            ("cifar10", "sym", 0.5),
            ("cifar10", "asym", 0.4),
            ("cifar100", "sym", 0.5),
        ):
            folder = Path(tmp) / dataset
            if not folder.exists():
                write_cifar_pickles(npz[dataset], dataset, folder)
            random.seed(
                123
            )  # Train_cifar.py: random.seed(args.seed), default 123, before the first dataset
            ds = loader.cifar_dataset(
                dataset, r, mode, str(folder), None, "all", noise_file=str(folder / "n.json")
            )
            out[f"{dataset}_{mode}_{r}"] = np.array(ds.noise_label, dtype=np.uint8)
            (folder / "n.json").unlink()
        for dataset in ("cifar10", "cifar100"):
            tf = loader.cifar_dataloader(
                dataset,
                r=0.5,
                noise_mode="sym",
                batch_size=4,
                num_workers=0,
                root_dir=tmp,
                log=None,
            ).transform_test.transforms[1]
            out[f"{dataset}_mean"], out[f"{dataset}_std"] = np.array(tf.mean), np.array(tf.std)
    return out


def stub_torchnet() -> None:
    """dataloader_cifar imports torchnet's AUCMeter (used for a log line only); torchnet is not installed."""
    sys.modules.setdefault("torchnet", types.ModuleType("torchnet"))
    meter = sys.modules.setdefault("torchnet.meter", types.ModuleType("torchnet.meter"))
    meter.AUCMeter = object


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--original", type=Path, required=True, help="a DivideMix checkout at d9d3058")
    p.add_argument(
        "--cifar10", type=Path, default=Path("../shared/data/cifar10"), help="CIFAR-10 .npz folder"
    )
    p.add_argument(
        "--cifar100",
        type=Path,
        default=Path("../shared/data/cifar100"),
        help="CIFAR-100 .npz folder",
    )
    p.add_argument("--only", nargs="*", default=None, help="fixture names to write (default: all)")
    args = p.parse_args()
    root = args.original.resolve()
    commit = G.git_commit(root, COMMIT)
    torch.set_num_threads(
        1
    )  # one thread: the reductions' order, hence the float32 results, is fixed
    stub_torchnet()
    script = root / "Train_cifar.py"
    defs = lambda: G.load_definitions(script)  # noqa: E731  (fresh globals per component)
    components = {
        "network": lambda: golden_network(vars(G.import_original(root, "PreResNet"))),
        "warmup_sym": lambda: golden_warmup(defs(), "sym"),
        "warmup_asym": lambda: golden_warmup(defs(), "asym"),
        "eval_train_r0.5": lambda: golden_eval_train(defs(), 0.5, 1),
        "eval_train_r0.9": lambda: golden_eval_train(defs(), 0.9, 6),
        "train_step": lambda: golden_train(defs()),
        "schedules": lambda: golden_schedules(defs(), script),
        "noise": lambda: golden_noise(root, {"cifar10": args.cifar10, "cifar100": args.cifar100}),
    }
    with G.cpu_only():
        for name, make in components.items():
            if args.only is None or name in args.only:
                G.save_golden(
                    OUT / f"{name}.npz",
                    original="LiJunnan1992/DivideMix",
                    commit=commit,
                    generator=Path(__file__).name,
                    **make(),
                )


if __name__ == "__main__":
    main()
