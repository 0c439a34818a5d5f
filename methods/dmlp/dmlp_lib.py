"""DMLP's pieces (``yuanpengtu/DMLP: DMLP.py`` @ ba9795c): frozen features in, purified labels out.

* features: the original's folder layout, ``data_prep/extract_features.py`` prefixes, or ``pixels``
  (pooled grey-level pixels of a small in-memory dataset, for CPU tests and the demo);
* the seeded meta split, the cached closed-form solver and the IPC meta step (the original's first loop);
* the EAC linear head and its loss (its second loop), the label exchange (bug B.7.1);
* evaluation and the written outputs (DivideMix JSON, ``.npz`` with soft labels, report).

Everything is batched on ``device``; the only host syncs are once per epoch (metrics) and at the end.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, field, replace
from pathlib import Path

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F

from lnl.data._base import reading
from lnl.data.noise import make_noise
from lnl.data.noise_files import load_noise_file, save_noise_file
from lnl.engine.train_loop import FiniteGuard, set_lr

# ----------------------------------------------------------------------------------------------------
# Features
# ----------------------------------------------------------------------------------------------------


@dataclass
class FeatureSet:
    """Frozen features of the training split (dataset order) and, when known, of the test split."""

    train: torch.Tensor  # [N, D] float32
    clean: torch.Tensor | None  # [N] int64 clean labels, None when unknown
    noisy: torch.Tensor | None  # [N] int64 noisy labels shipped with the features
    test: torch.Tensor | None = None
    test_labels: torch.Tensor | None = None
    meta: torch.Tensor | None = None  # an external clean meta set (Clothing1M: the clean val split)
    meta_labels: torch.Tensor | None = None
    source: dict = field(default_factory=dict)


def _npy(path: Path, dtype=None) -> torch.Tensor | None:
    if not path.is_file():
        return None
    with reading(path, "feature file"):
        arr = np.load(path, allow_pickle=False)
    return torch.from_numpy(arr.astype(dtype) if dtype is not None else arr)


def _prefix(spec: str) -> Path:
    """``foo/cifar10_train`` from ``foo/cifar10_train`` or ``foo/cifar10_train_features.npy``."""
    p = Path(spec)
    return p.with_name(p.name[: -len("_features.npy")]) if p.name.endswith("_features.npy") else p


def read_prefix(spec: str) -> tuple[torch.Tensor, torch.Tensor | None, torch.Tensor | None]:
    """(features float32, labels, noisy labels) of an ``extract_features.py`` output prefix."""
    pre = _prefix(spec)
    feats = _npy(pre.with_name(pre.name + "_features.npy"), np.float32)
    if feats is None:
        raise FileNotFoundError(
            f"--feature_file {spec}: neither the original's folder (trainfeatures.npy, testfeatures.npy, "
            f"trainlabels.npy, correctlabels.npy, testlabels.npy from its Drive link) nor a "
            f"data_prep/extract_features.py prefix ({pre}_features.npy)"
        )
    labels = _npy(pre.with_name(pre.name + "_labels.npy"), np.int64)
    noisy = _npy(pre.with_name(pre.name + "_noisy_labels.npy"), np.int64)
    return feats, labels, noisy


def read_original_folder(folder: Path) -> FeatureSet:
    """The Drive layout of the original: train/test features, noisy, clean and test labels."""
    return FeatureSet(
        train=_npy(folder / "trainfeatures.npy", np.float32),
        clean=_npy(folder / "correctlabels.npy", np.int64),
        noisy=_npy(folder / "trainlabels.npy", np.int64),
        test=_npy(folder / "testfeatures.npy", np.float32),
        test_labels=_npy(folder / "testlabels.npy", np.int64),
        source={"kind": "original_folder", "path": str(folder)},
    )


def pixel_features(images: torch.Tensor, size: int) -> torch.Tensor:
    """Grey-level pixels average-pooled to ``size x size`` (digits: back to its native 8x8), in [0, 1]."""
    x = images.float().mean(-1, keepdim=True).permute(0, 3, 1, 2) / 255.0
    return F.adaptive_avg_pool2d(x, size).flatten(1)


def read_pixels(dataset: str, root: str | None, size: int) -> FeatureSet:
    """``--feature_file pixels``: a fixed, label-free encoder for small in-memory datasets."""
    from lnl.data import get_dataset

    train, test = get_dataset(dataset, root, "train"), get_dataset(dataset, root, "test")
    xtr, xte = pixel_features(train.images, size), pixel_features(test.images, size)
    mean, std = xtr.mean(0), xtr.std(0).clamp_min(1e-3)  # standardise with train statistics
    return FeatureSet(
        train=(xtr - mean) / std,
        clean=torch.as_tensor(train.targets).long(),
        noisy=None,
        test=(xte - mean) / std,
        test_labels=torch.as_tensor(test.targets).long(),
        source={"kind": "pixels", "dataset": dataset, "size": size},
    )


def _test_prefix(spec: str) -> str | None:
    """The test split's prefix next to a train prefix (``..._train`` -> ``..._test``), if it exists."""
    pre = _prefix(spec)
    if "train" not in pre.name:
        return None
    cand = pre.with_name(pre.name.replace("train", "test"))
    return str(cand) if cand.with_name(cand.name + "_features.npy").is_file() else None


def load_features(args) -> FeatureSet:
    """Resolve ``--feature_file`` (folder / prefix / ``pixels``), ``--test_feature_file`` and
    ``--meta_feature_file`` into a :class:`FeatureSet` on the CPU."""
    spec = args.feature_file
    if spec == "pixels":
        fs = read_pixels(args.dataset, args.data_path, args.pixel_size)
    elif Path(spec).is_dir():
        if not (Path(spec) / "trainfeatures.npy").is_file():
            raise FileNotFoundError(
                f"--feature_file {spec}: no trainfeatures.npy (the original's layout)"
            )
        fs = read_original_folder(Path(spec))
    else:
        feats, labels, noisy = read_prefix(spec)
        fs = FeatureSet(
            train=feats, clean=labels, noisy=noisy, source={"kind": "prefix", "path": spec}
        )
        test_spec = args.test_feature_file or _test_prefix(spec)
        if test_spec:
            fs.test, fs.test_labels, _ = read_prefix(test_spec)
    if args.test_feature_file and spec != "pixels" and fs.test is None:
        fs.test, fs.test_labels, _ = read_prefix(args.test_feature_file)
    if args.meta_feature_file:
        fs.meta, fs.meta_labels, _ = read_prefix(args.meta_feature_file)
        if fs.meta_labels is None:
            raise ValueError(f"--meta_feature_file {args.meta_feature_file}: no _labels.npy")
    return fs


def random_relu_view(x: torch.Tensor, seed: int, test: torch.Tensor | None = None):
    """A second, different view when no ``--feature_file_v2`` is given (``--fix_views``): fixed
    random ReLU features ``relu(x R)`` of the same width (seeded), standardised on the train rows."""
    g = torch.Generator().manual_seed(seed)
    r = torch.randn(x.shape[1], x.shape[1], generator=g) / math.sqrt(x.shape[1])
    tr = torch.relu(x @ r)
    mean, std = tr.mean(0), tr.std(0).clamp_min(1e-3)
    te = None if test is None else (torch.relu(test @ r) - mean) / std
    return (tr - mean) / std, te


# ----------------------------------------------------------------------------------------------------
# Labels and the meta split
# ----------------------------------------------------------------------------------------------------


def noisy_labels(args, fs: FeatureSet, num_classes: int) -> tuple[torch.Tensor, dict]:
    """``--noise_file`` > the features' own noisy labels > ``--noise_mode``/``--r`` with ``--seed``."""
    if args.noise_file:
        nl = load_noise_file(args.noise_file, num_classes=num_classes, num_samples=len(fs.train))
        return nl.labels, {**nl.meta, "source": "noise_file"}
    if fs.noisy is not None:
        return fs.noisy, {"source": "feature_file"}
    if fs.clean is None:
        raise ValueError(
            "no noisy labels: pass --noise_file, or features with clean labels to add noise to"
        )
    nl = make_noise(
        fs.clean,
        args.noise_mode,
        args.r,
        num_classes=num_classes,
        seed=args.seed,
        dataset=args.dataset,
    )
    return nl.labels, {**nl.meta, "source": "generated"}


def first_rows(
    fs: FeatureSet, noisy: torch.Tensor, n: int, num_classes: int, meta_size: int
) -> tuple[FeatureSet, torch.Tensor]:
    """``--subset n``: the first ``n`` training rows (features, clean and noisy labels) and test rows.

    ``noisy`` was made or read over the whole split, so row i keeps the full run's label (a noise
    file stays aligned with its features). The meta set is then held out from within the ``n`` rows;
    an external ``--meta_feature_file`` set is kept whole.
    """
    if n < num_classes:
        raise ValueError(f"--subset {n} keeps fewer rows than there are classes ({num_classes})")
    if fs.meta is None and meta_size >= min(n, len(fs.train)):
        raise ValueError(
            f"--subset {n} is too small for --meta_size {meta_size}: the meta set is held out "
            f"from within the subset, so --subset must exceed --meta_size"
        )
    cut = lambda t: None if t is None else t[:n]  # noqa: E731
    fs = replace(
        fs,
        train=fs.train[:n],
        clean=cut(fs.clean),
        noisy=cut(fs.noisy),
        test=cut(fs.test),
        test_labels=cut(fs.test_labels),
        source={**fs.source, "subset": n},
    )
    return fs, noisy[:n]


def split_meta(
    n: int,
    meta_size: int,
    seed: int,
    clean: torch.Tensor | None = None,
    balanced: bool = False,
    num_classes: int = 0,
) -> tuple[torch.Tensor, torch.Tensor]:
    """(train indices, meta indices). Default: the original's split, ``perm = randperm(n)``, the last
    ``meta_size`` rows are the meta set, drawn here from a seeded generator. ``balanced``: take
    ``meta_size // C`` of each clean class, the first of each class in the permutation."""
    if not 0 <= meta_size < n:  # a negative slice below would silently give a wrong split
        raise ValueError(
            f"--meta_size {meta_size} leaves no noisy-set rows of the {n} training rows"
        )
    perm = torch.randperm(n, generator=torch.Generator().manual_seed(seed))
    if not balanced:
        return perm[: n - meta_size], perm[n - meta_size :]
    if clean is None:
        raise ValueError("--balanced_meta needs the clean labels")
    per = meta_size // num_classes
    lab = clean[perm]
    order = torch.argsort(lab, stable=True)  # by class, permutation order within a class
    counts = torch.bincount(lab, minlength=num_classes)
    if int(counts.min()) < per:
        raise ValueError(
            f"--balanced_meta: a class has only {int(counts.min())} samples, need {per}"
        )
    starts = torch.cumsum(counts, 0) - counts
    rank = torch.arange(n) - starts[lab[order]]  # rank of each sorted position within its class
    meta_mask = torch.zeros(n, dtype=torch.bool)
    meta_mask[order[rank < per]] = True  # positions in perm, so the permutation order is kept
    return perm[~meta_mask], perm[meta_mask]


def batch_bounds(n: int, batch: int, keep_short: bool = False) -> list[tuple[int, int]]:
    """Contiguous IPC batches, never reshuffled. Original (DMLP.py: ``iteration = train_num //
    batchsize``): full batches only, the ``n % batch`` last rows never get an IPC step or reach EAC.
    ``keep_short`` (``--fix_short_batches``): a short last batch covers them."""
    stop = n if keep_short else n - n % batch
    return [(s, min(s + batch, n)) for s in range(0, stop, batch)]


def eac_bounds(rows: int, batch_fc: int, keep_short: bool = False) -> list[tuple[int, int]]:
    """EAC mini-batches within one IPC batch. Original (``iteration_fc = batchsize // batchsize_fc``):
    full mini-batches only, never empty; ``keep_short``: a short last one."""
    return batch_bounds(rows, batch_fc, keep_short)


class SoftLabels(nn.Module):
    """The trainable label matrix Y (rows of the noisy set, initialised one-hot)."""

    def __init__(self, labels: torch.Tensor, num_classes: int):
        super().__init__()
        self.y = nn.Parameter(F.one_hot(labels, num_classes).float())


def project_simplex(y: torch.Tensor) -> torch.Tensor:
    """Euclidean projection of each row onto the probability simplex (keeps the row's argmax)."""
    u, _ = torch.sort(y, dim=1, descending=True)
    css = u.cumsum(1) - 1.0
    k = torch.arange(1, y.shape[1] + 1, device=y.device, dtype=y.dtype)
    rho = ((u - css / k) > 0).sum(1, keepdim=True)
    tau = css.gather(1, rho - 1) / rho.to(y.dtype)
    return (y - tau).clamp_min(0)


# ----------------------------------------------------------------------------------------------------
# IPC: closed-form solver and meta step
# ----------------------------------------------------------------------------------------------------


def batch_solver(x: torch.Tensor, fix_solver: bool = False, ridge: float = 1e-6) -> torch.Tensor:
    """``P = (XᵀX)⁻¹Xᵀ`` (D x B) of one batch, so that ``W* = P Y``: the original's product order
    (``mm(mm(inverse(XᵀX), Xᵀ), Y)``, DMLP.py), cached since features and batches never change.
    Default: the original's plain fp32 ``inverse`` (bug B.7.4: fragile, no ridge). ``fix_solver``:
    fp64 Cholesky of ``XᵀX + ridge·tr(XᵀX)/D·I``, cast back."""
    if not fix_solver:
        return torch.inverse(x.T @ x) @ x.T
    xd = x.double()
    a = xd.T @ xd
    a.diagonal().add_(ridge * float(a.diagonal().mean()))
    return (torch.cholesky_inverse(torch.linalg.cholesky(a)) @ xd.T).to(x.dtype)


def closed_form(solver: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """The least-squares map ``W* = (XᵀX)⁻¹ Xᵀ Y`` (D x C) from a cached :func:`batch_solver`."""
    return solver @ y


def meta_loss(
    w: torch.Tensor, xv: torch.Tensor, yv: torch.Tensor, xb: torch.Tensor
) -> torch.Tensor:
    """CE(X_v W, y_v) + Σ(X_v W − onehot)² + KL(uniform ‖ mean softmax(X_b W)) (IPC)."""
    out = xv @ w
    c = w.shape[1]
    mse = (out - F.one_hot(yv, c).to(out.dtype)).pow(2).sum()
    pred_mean = torch.softmax(xb @ w, dim=1).mean(0)
    prior = torch.full_like(pred_mean, 1.0 / c)
    return F.cross_entropy(out, yv) + mse + (prior * (prior / pred_mean).log()).sum()


# ----------------------------------------------------------------------------------------------------
# EAC: the linear head
# ----------------------------------------------------------------------------------------------------


def make_head(dim: int, num_classes: int, fix_softmax: bool = False) -> nn.Module:
    """Linear(D→C) followed by a Softmax layer, as in the original (bug B.7.5: the losses then stack
    more softmaxes on its probabilities); ``fix_softmax``: the head returns logits."""
    linear = nn.Linear(dim, num_classes)
    return linear if fix_softmax else nn.Sequential(linear, nn.Softmax(dim=1))


def head_probs(out: torch.Tensor, fix_softmax: bool) -> torch.Tensor:
    """The head's class probabilities (its output, or the softmax of its logits when fixed)."""
    return torch.softmax(out, dim=1) if fix_softmax else out


def eac_loss(
    out: torch.Tensor,
    target: torch.Tensor,
    weight_prior: float,
    weight_conf: float,
    fix_softmax: bool = False,
) -> torch.Tensor:
    """CE(out, ŷ) + weight_prior·KL(π ‖ mean softmax(p)) + weight_conf·mean Σ p log p (EAC).

    Original: ``out`` already holds probabilities, ``p = softmax(out)`` and the prior term takes a
    third softmax. ``fix_softmax``: ``out`` are logits, ``p = softmax(out)`` and the prior uses ``p``.
    """
    ce = F.cross_entropy(out, target)
    p = torch.softmax(out, dim=1)
    conf = (
        (p.log() * p).sum(1).mean()
    )  # built before the prior term, as the original: same float gradients
    pred_mean = p.mean(0) if fix_softmax else torch.softmax(p, dim=1).mean(0)
    prior = torch.full_like(pred_mean, 1.0 / out.shape[1])
    penalty = (prior * (prior / pred_mean).log()).sum()
    return ce + weight_prior * penalty + weight_conf * conf


def eac_lr(epoch: int, lr_fc: float, decay_epoch: int) -> float:
    """The original's ``adjust_learning_rate``: ``lr_fc`` up to ``decay_epoch``, then a tenth (B.7.7)."""
    return lr_fc * 0.1 ** int(epoch > decay_epoch)


def exchange_due(epoch: int, epochs: int, epoch_T: int, fix: bool) -> bool:
    """The label exchange's guard. Original (bug B.7.1): ``i % T == 0 and i != 0 and i == epochs - 1``,
    never true with the defaults (99 % 20 = 19). ``fix``: every ``T`` epochs, ``i % T == 0 and i != 0``."""
    periodic = epoch % epoch_T == 0 and epoch != 0
    return periodic if fix else periodic and epoch == epochs - 1


# ----------------------------------------------------------------------------------------------------
# The two views and one epoch
# ----------------------------------------------------------------------------------------------------


@dataclass
class View:
    """One view: its features (noisy-set rows in split order), labels, head and optimisers."""

    x: torch.Tensor  # [Nt, D]
    xv: torch.Tensor  # [M, D] meta features
    xt: torch.Tensor | None  # [T, D] test features
    solvers: list  # cached (XᵀX)⁻¹Xᵀ per IPC batch
    labels: SoftLabels
    opt: torch.optim.Optimizer
    head: nn.Module
    head_opt: torch.optim.Optimizer
    last_w: torch.Tensor | None = None


def build_view(x, xv, xt, noisy, bounds, args, solvers=None) -> View:
    """A view with the original's optimisers: Adam(lr, (0.5, 0.999), wd 3e-4) on Y, Adam on the head."""
    c = args.num_classes
    if solvers is None:
        solvers = [batch_solver(x[s:e], args.fix_solver, args.ridge) for s, e in bounds]
    labels = SoftLabels(noisy, c).to(x.device)
    opt = torch.optim.Adam(
        labels.parameters(), args.lr, betas=(0.5, 0.999), weight_decay=args.weight_decay
    )
    head = make_head(x.shape[1], c, args.fix_softmax).to(x.device)
    head_opt = torch.optim.Adam(
        head.parameters(), 0.03, betas=(0.5, 0.999), weight_decay=args.weight_decay
    )
    return View(x, xv, xt, solvers, labels, opt, head, head_opt)


def ipc_step(view: View, j: int, s: int, e: int, yv: torch.Tensor) -> torch.Tensor:
    """One meta step: W*(Y_b) in closed form, the meta loss on the clean set, Adam on the whole Y."""
    view.opt.zero_grad(set_to_none=True)
    xb = view.x[s:e]
    w = closed_form(view.solvers[j], view.labels.y[s:e])
    loss = meta_loss(w, view.xv, yv, xb)
    loss.backward()
    view.opt.step()
    view.last_w = w.detach()
    return loss.detach()


def eac_steps(view: View, s: int, e: int, args) -> torch.Tensor:
    """Train the head on the batch's hard labels ``argmax Y_b`` in mini-batches of ``batch_fc``
    (full ones only, as the original, unless ``--fix_short_batches``)."""
    target = view.labels.y.detach()[s:e].argmax(1)
    view.head.train()
    loss = torch.zeros((), device=view.x.device)
    xb = view.x[s:e]
    for ps, pe in eac_bounds(e - s, args.batch_fc, args.fix_short_batches):
        out = view.head(xb[ps:pe])
        loss = eac_loss(out, target[ps:pe], args.weight_prior, args.weight_conf, args.fix_softmax)
        view.head_opt.zero_grad(set_to_none=True)
        loss.backward()
        view.head_opt.step()
    return loss.detach()


def _count_correct(pred: torch.Tensor, clean: torch.Tensor | None) -> torch.Tensor:
    return torch.zeros((), device=pred.device) if clean is None else (pred == clean).sum().float()


def train_epoch(views: list[View], epoch: int, bounds, yv, clean_t, args, bar=None) -> dict:
    """One epoch of the original's loop: per batch, IPC then EAC for each view, then the exchange."""
    for v in views:
        set_lr(v.head_opt, eac_lr(epoch, args.lr_fc, args.lr_fc_decay_epoch))
    dev = views[0].x.device
    sums = {
        k: torch.zeros((), device=dev) for k in ("ipc_loss", "eac_loss", "acc_before", "acc_head")
    }
    swap = exchange_due(epoch, args.epochs, args.epoch_T, args.fix_exchange)
    guard = FiniteGuard(f"epoch {epoch}")
    for j, (s, e) in enumerate(bounds):
        clean_b = None if clean_t is None else clean_t[s:e]
        sums["acc_before"] += _count_correct(views[0].labels.y.detach()[s:e].argmax(1), clean_b)
        ipc = [ipc_step(v, j, s, e, yv) for v in views]
        eac = [eac_steps(v, s, e, args) for v in views]
        guard.watch(
            j,
            **{f"ipc_loss_v{k}": t for k, t in enumerate(ipc, 1)},
            **{f"eac_loss_v{k}": t for k, t in enumerate(eac, 1)},
        )
        for t in ipc:
            sums["ipc_loss"] += t / len(views)
        for t in eac:
            sums["eac_loss"] += t / len(views)
        with torch.no_grad():
            probs = [head_probs(v.head(v.x[s:e]), args.fix_softmax) for v in views]
            sums["acc_head"] += _count_correct(probs[0].argmax(1), clean_b)
            if swap:  # Y_b of each view <- the other view's head
                for v, p in zip(views, probs[::-1]):
                    v.labels.y[s:e] = p
        if bar is not None:
            bar.update(1)
    guard.check()
    n = float(bounds[-1][1])
    out = {k: float(t) / len(bounds) for k, t in sums.items() if k.endswith("loss")}
    if clean_t is not None:
        out.update(
            acc_before=float(sums["acc_before"]) / n, acc_head_v1=float(sums["acc_head"]) / n
        )
    out["exchanged"] = swap
    return out


@torch.no_grad()
def evaluate(views: list[View], test_labels: torch.Tensor | None, fix_softmax: bool) -> dict:
    """Test accuracy of each view's last closed-form W*, each head and the heads' ensemble."""
    if views[0].xt is None or test_labels is None:
        return {}
    out = {}
    probs = []
    for k, v in enumerate(views, 1):
        v.head.eval()
        out[f"test_acc_w_v{k}"] = float((v.xt @ v.last_w).argmax(1).eq(test_labels).float().mean())
        probs.append(head_probs(v.head(v.xt), fix_softmax))
        out[f"test_acc_head_v{k}"] = float(probs[-1].argmax(1).eq(test_labels).float().mean())
    ens = torch.softmax(sum(probs) / len(probs), dim=1)
    out["test_acc"] = float(ens.argmax(1).eq(test_labels).float().mean())
    return out


# ----------------------------------------------------------------------------------------------------
# Purified labels: assembly, report and files
# ----------------------------------------------------------------------------------------------------


@torch.no_grad()
def purified(
    views: list[View],
    noisy: torch.Tensor,
    train_idx,
    meta_idx,
    meta_labels,
    num_classes: int,
    use_heads: bool,
    fix_softmax: bool,
) -> tuple[torch.Tensor, torch.Tensor]:
    """(hard [N], soft [N, C]) in the dataset's order. Noisy-set rows: the views' mean Y projected on
    the simplex (``use_heads``: the heads' ensemble probabilities); meta rows: their clean labels."""
    if use_heads:
        soft_t = sum(head_probs(v.head(v.x), fix_softmax) for v in views) / len(views)
    else:
        soft_t = project_simplex(sum(v.labels.y.detach() for v in views) / len(views))
    soft = F.one_hot(noisy.to(soft_t.device), num_classes).float()
    soft[train_idx.to(soft.device)] = soft_t.float()
    if meta_idx is not None:
        soft[meta_idx.to(soft.device)] = F.one_hot(meta_labels.to(soft.device), num_classes).float()
    hard = soft.argmax(1)
    if not use_heads:  # exact argmax of Y (the projection keeps it; ties resolved like argmax Y)
        hard[train_idx.to(hard.device)] = (sum(v.labels.y.detach() for v in views)).argmax(1)
    return hard.cpu(), soft.cpu()


def _acc(a: torch.Tensor, b: torch.Tensor) -> float:
    return float((a == b).float().mean())


def label_report(
    hard: torch.Tensor, noisy: torch.Tensor, clean: torch.Tensor | None, train_idx, num_classes: int
) -> dict:
    """Accuracy of the purified and of the noisy labels (all rows, noisy-set rows), per class."""
    rep = {
        "num_samples": int(len(hard)),
        "num_noisy_set": int(len(train_idx)),
        "changed": int((hard != noisy).sum()),
    }
    if clean is None:
        return rep
    t = train_idx
    rep.update(
        purified_acc=_acc(hard, clean),
        noisy_acc=_acc(noisy, clean),
        purified_acc_noisy_set=_acc(hard[t], clean[t]),
        noisy_acc_noisy_set=_acc(noisy[t], clean[t]),
    )
    counts = torch.bincount(clean, minlength=num_classes).clamp_min(1).float()
    for name, lab in (("purified", hard), ("noisy", noisy)):
        right = torch.bincount(clean[lab == clean], minlength=num_classes)
        rep[f"per_class_{name}_acc"] = (right / counts).tolist()
    return rep


def write_outputs(out: Path, name: str, hard, soft, meta: dict, report: dict, extra: dict) -> dict:
    """``<out>/<name>.json`` (DivideMix/PLReMix list), ``<out>/<name>.npz`` (``labels``, ``soft_labels``,
    ``meta`` and the split; ``lnl.data.noise_files.load_noise_file`` reads it) and ``<out>/report.json``."""
    paths = {
        "json": out / f"{name}.json",
        "npz": out / f"{name}.npz",
        "report": out / "report.json",
    }
    save_noise_file(paths["json"], hard)
    tmp = out / f".{name}.tmp.npz"
    np.savez(
        tmp,
        labels=hard.numpy().astype(np.int64),
        soft_labels=soft.numpy().astype(np.float32),
        meta=np.array(json.dumps(meta, default=str)),
        **{k: v.numpy() for k, v in extra.items()},
    )
    tmp.replace(paths["npz"])
    paths["report"].write_text(json.dumps(report, indent=1))
    return {k: str(v) for k, v in paths.items()}
