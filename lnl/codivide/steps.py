"""Co-divide training pieces shared by DivideMix and PLReMix (DivideMix ``Train_cifar.py``):
the per-sample evaluation pass, the GMM clean probability, the co-divide split, the warm-up epoch,
the MixMatch epoch with co-refinement and co-guessing, and the ensemble test.

Ported from ``LiJunnan1992/DivideMix: Train_cifar.py @ d9d3058`` (``warmup``, ``eval_train``,
``train``, ``test``) and ``lxysl/PLReMix: utils/train_utils.py @ b0c4ec3``. The two methods differ
only in what the evaluation pass stores (``forward`` callables), the GMM's input columns and the
extra loss term of a step (``extra_loss`` callables); the loops are the same.

Differences from the originals, all speed or reproducibility and none semantic:
* the evaluation pass scatters whole batches with ``index_copy_`` (the originals loop per sample,
  P6 in methods/plremix/README.md);
* the GMM's k-means init gets a seed derived from ``(seed, epoch, net)`` (the originals leave
  ``random_state`` unset, P7), so a resumed run divides exactly as an uninterrupted one;
* a constant loss column (max == min) is normalised to 0 instead of NaN (the originals crash).
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence

import torch
import torch.nn.functional as F
from torch import Tensor

from lnl.codivide import mixmatch as mm
from lnl.data.gpu import GPULoader
from lnl.engine.train_loop import FiniteGuard, autocast, progress

ForwardFn = Callable[[torch.nn.Module, Tensor], dict]
# extra_loss(net, x_views, u_views, x_idx, u_idx) -> scalar (already weighted), for the semi step
SemiExtra = Callable[[torch.nn.Module, tuple, tuple, Tensor, Tensor], Tensor]
# extra_loss(net, views, idx) -> scalar, for the warm-up step
WarmupExtra = Callable[[torch.nn.Module, tuple, Tensor], Tensor]


def subset_loader(
    base: GPULoader,
    indices: Tensor | None,
    batch_size: int,
    *,
    views: Sequence[str],
    seed: int,
    shuffle: bool = True,
    drop_last: bool = False,
) -> GPULoader:
    """A ``GPULoader`` over ``indices`` of ``base``'s dataset that shares its device images (no copy).

    Args:
        base: a loader holding the uint8 images on the device (e.g. ``build_noisy_data``'s).
        indices: dataset indices to draw from (None: all).
        batch_size: images per batch.
        views: view names per batch (``lnl.data.gpu.VIEWS``).
        seed: base seed of the loader's per-epoch generators.
        shuffle, drop_last: as ``GPULoader``.

    Returns:
        The loader; its batches report dataset indices.
    """
    return GPULoader(
        base.images.permute(0, 2, 3, 1),
        base.labels,
        batch_size,
        mean=base.mean,
        std=base.std,
        device=base.device,
        train=True,
        shuffle=shuffle,
        drop_last=drop_last,
        seed=seed,
        views=tuple(views),
        indices=indices,
        fill=base.fill,
        crop_padding=base.crop_padding,
        flip=base.flip,
        dtype=base.dtype,
        channels_last=base.channels_last,
    )


def cycle(loader) -> Iterator:
    """Iterate ``loader`` forever, re-entering it when exhausted (DivideMix's unlabeled iterator,
    with ``next(it)`` instead of the removed ``it.next()``). A loader that yields nothing raises
    instead of spinning forever (``keep_partial_batch`` avoids that case)."""
    while True:
        empty = True
        for batch in loader:
            empty = False
            yield batch
        if empty:
            raise RuntimeError(
                "cycle(): the loader yields no batch (fewer samples than one batch with drop_last)"
            )


def loader_name(tag: int) -> str:
    """The loader a co-divide seed tag stands for (10 + k warm-up, 20 + k eval, 30 + k labeled, 40 + k
    unlabeled, k the net), for log lines."""
    kind = {1: "warm-up", 2: "eval", 3: "labeled", 4: "unlabeled"}.get(tag // 10, f"tag {tag}")
    return f"net{tag % 10 + 1}'s {kind} loader"


def keep_partial_batch(size: int, batch_size: int, drop_last: bool, what: str, log=None) -> bool:
    """``drop_last`` for a loader over ``size`` samples: False when dropping would leave no batch at
    all (0 < size < batch_size), so that round trains on the samples there are, and says so. The
    originals crash there (an empty unlabeled iterator) or train on nothing (an empty warm-up)."""
    if drop_last and 0 < size < batch_size:
        if log is not None:
            log.warning(
                "%s: %d samples, fewer than one batch of %d: training on one short batch",
                what,
                size,
                batch_size,
            )
        return False
    return drop_last


@torch.no_grad()
def collect_outputs(
    net: torch.nn.Module,
    loader,
    num_rows: int,
    *,
    forward: ForwardFn | None = None,
    rows: Tensor | None = None,
    amp: bool = False,
) -> dict[str, Tensor]:
    """The per-sample evaluation pass: run ``net`` in eval mode and store its outputs by sample.

    Args:
        net: the network.
        loader: yields ``(images, labels, dataset indices)`` (val transform).
        num_rows: rows of each output buffer (the dataset size, or the subset size with ``rows``).
        forward: ``forward(net, images) -> {name: Tensor[B, ...]}``; default ``{"logits": net(x)}``.
        rows: optional ``Tensor[N_dataset]`` mapping a dataset index to its buffer row.
        amp: bf16 autocast on CUDA.

    Returns:
        ``{name: Tensor[num_rows, ...]}`` float32 on the loader's device, plus ``"labels"`` (the
        loader's labels, int64), written with ``index_copy_`` (no per-sample loop).
    """
    was_training = net.training
    net.eval()
    out: dict[str, Tensor] = {}
    for images, labels, idx in loader:
        dest = idx if rows is None else rows[idx]
        with autocast(labels.device, amp):
            result = forward(net, images) if forward is not None else {"logits": net(images)}
        result = {**{k: v.float() for k, v in result.items()}, "labels": labels}
        for name, value in result.items():
            if name not in out:
                out[name] = torch.zeros(
                    (num_rows, *value.shape[1:]), dtype=value.dtype, device=value.device
                )
            out[name].index_copy_(0, dest, value)
    net.train(was_training)
    return out


def minmax(x: Tensor) -> Tensor:
    """Min-max normalise each column of ``Tensor[N]`` or ``Tensor[N, D]`` to [0, 1] (DivideMix)."""
    lo, hi = x.amin(0, keepdim=True), x.amax(0, keepdim=True)
    return (x - lo) / (hi - lo).clamp_min(torch.finfo(x.dtype).tiny)


def per_sample_ce(logits: Tensor, labels: Tensor) -> Tensor:
    """``Tensor[N]`` cross-entropy of each row against its (noisy) label."""
    return F.cross_entropy(logits.float(), labels, reduction="none")


def gmm_seed(seed: int, epoch: int, net: int) -> int:
    """The k-means ``random_state`` of net ``net``'s GMM at ``epoch`` (fixed, so resumes divide alike)."""
    return (int(seed) * 1_000_003 + epoch * 2 + net) % (2**32)


def sklearn_clean_prob(
    x: Tensor,
    seed: int,
    *,
    max_iter: int = 10,
    tol: float = 1e-2,
    reg_covar: float = 5e-4,
    dtype: torch.dtype = torch.float64,
) -> Tensor:
    """The originals' sklearn path (``--gmm-backend sklearn``): ``GaussianMixture(2, ...)`` on CPU.

    Args:
        x: Tensor[N, D] already-normalised GMM input.
        seed: ``random_state`` of the k-means init.
        dtype: what sklearn fits in. DivideMix hands it a float32 torch tensor, which sklearn's
            ``check_array`` converts to float64; PLReMix hands it a float32 numpy array, which it keeps.

    Returns:
        Tensor[N] clean posterior on ``x``'s device; the clean component has the smallest mean
        (D = 1, DivideMix's ``means_.argmin()``) or the smallest squared mean norm (D = 2, PLReMix).
    """
    from sklearn.mixture import GaussianMixture

    data = x.detach().to(dtype).cpu().numpy()
    gmm = GaussianMixture(
        n_components=2, max_iter=max_iter, tol=tol, reg_covar=reg_covar, random_state=seed
    )
    gmm.fit(data)
    prob = gmm.predict_proba(data)
    clean = (
        int(gmm.means_[:, 0].argmin())
        if data.shape[1] == 1
        else int((gmm.means_**2).sum(1).argmin())
    )
    return torch.from_numpy(prob[:, clean]).float().to(x.device)


def clean_probability(
    x: Tensor, *, backend: str, seed: int, sklearn_dtype: torch.dtype = torch.float64
) -> Tensor:
    """Clean posterior of a 2-component GMM on already-normalised losses (``eval_train``).

    Args:
        x: Tensor[N, D] (D = 1: DivideMix's CE loss; D = 2: PLReMix's CE and prototype loss).
        backend: ``--gmm-backend``: "sklearn" (oracle) or an ``lnl.ops.gmm_clean_prob`` backend.
        seed: the k-means init seed (``gmm_seed``).
        sklearn_dtype: the precision of the sklearn fit (the method's original's, see ``sklearn_clean_prob``).

    Returns:
        Tensor[N] float32 probabilities of the clean component.
    """
    if backend == "sklearn":
        return sklearn_clean_prob(x, seed, dtype=sklearn_dtype)
    from lnl.ops import gmm_clean_prob

    return gmm_clean_prob(
        x.float(), dims=x.shape[1], normalise="none", seed=seed, backend=backend
    ).float()


def divide(prob: Tensor, p_threshold: float) -> tuple[Tensor, Tensor]:
    """Co-divide: dataset indices with ``prob > p_threshold`` (labeled) and the rest (unlabeled).
    Sizing the two sets reads them on the host once per epoch."""
    clean = prob > p_threshold
    return clean.nonzero().flatten(), (~clean).nonzero().flatten()


def roc_auc(scores: Tensor, positive: Tensor) -> float:
    """Area under the ROC curve of ``scores`` for the ``positive`` (bool) class (rank statistic,
    ties averaged); NaN when one class is empty."""
    pos = positive.bool()
    n_pos, n_neg = int(pos.sum()), int((~pos).sum())
    if n_pos == 0 or n_neg == 0:
        return float("nan")
    s = scores.double().cpu()
    order = torch.argsort(s)
    ranks = torch.empty_like(s)
    ranks[order] = torch.arange(1, len(s) + 1, dtype=torch.float64)
    uniq, inverse = torch.unique(s, return_inverse=True)  # average the ranks of ties
    ranks = (
        torch.zeros(len(uniq), dtype=torch.float64).index_add_(0, inverse, ranks)[inverse]
        / torch.bincount(inverse, minlength=len(uniq)).double()[inverse]
    )
    return float((ranks[pos.cpu()].sum() - n_pos * (n_pos + 1) / 2) / (n_pos * n_neg))


def warmup_epoch(
    net: torch.nn.Module,
    optimizer: torch.optim.Optimizer,
    loader,
    *,
    penalty: bool,
    amp: bool = False,
    extra_loss: WarmupExtra | None = None,
    desc: str = "warmup",
) -> dict:
    """One warm-up epoch: CE on the noisy labels of the first view (+ ``NegEntropy`` when ``penalty``,
    DivideMix's asym setting) (+ ``extra_loss``, PLReMix's contrastive term); one SGD step per batch.

    Returns:
        ``{"ce": mean CE, "extra": mean extra loss}`` (one host sync, at the end).
    """
    net.train()
    sums, steps = torch.zeros(2), 0
    guard = FiniteGuard(desc)
    for views, labels, idx in progress(loader, desc=desc, total=len(loader)):
        views = views if isinstance(views, tuple) else (views,)
        optimizer.zero_grad(set_to_none=True)
        # CE's backward before the extra term's forward, as PLReMix's uniform_warmup: the gradients
        # accumulate in the original's order (and the CE graph is freed before the second forward)
        with autocast(labels.device, amp):
            logits = net(views[0])
            ce = F.cross_entropy(logits.float(), labels)
            loss = ce + mm.neg_entropy(logits) if penalty else ce
        loss.backward()
        extra = torch.zeros((), device=ce.device)
        if extra_loss is not None:
            with autocast(labels.device, amp):
                extra = extra_loss(net, views, idx)
            extra.backward()
        guard.watch(steps, ce=loss, extra=extra)  # before the step: NaN weights are never taken
        optimizer.step()
        sums = sums.to(ce.device) + torch.stack([ce.detach(), extra.detach().float()])
        steps += 1
    guard.check()
    sums = (sums / max(steps, 1)).tolist()
    return {"ce": sums[0], "extra": sums[1]}


def _semi_step(
    net, net2, xv, y, w, uv, *, num_classes, temperature, alpha, mix_views, amp, labeled_only
) -> tuple[Tensor, Tensor, Tensor]:
    """Co-guess, co-refine, mix and return (logits of the mixed rows, mixed targets, #labeled rows)."""
    with autocast(
        y.device, amp
    ):  # u before x, as the originals: train-mode BN statistics depend on it
        targets_u = mm.co_guess(net, net2, uv[0], uv[1], temperature)
        targets_x = mm.co_refine(
            net, xv[0], xv[1], F.one_hot(y, num_classes).float(), w, temperature
        )
    a, b = mix_views
    inputs = torch.cat([xv[a], xv[b], uv[a], uv[b]])
    targets = torch.cat([targets_x, targets_x, targets_u, targets_u])
    mixed_x, mixed_y, _ = mm.mixup(inputs, targets, alpha)
    n_x = 2 * xv[0].shape[0]
    with autocast(y.device, amp):
        logits = net(mixed_x[:n_x] if labeled_only else mixed_x)
    return logits.float(), mixed_y, n_x


def semi_epoch(
    net: torch.nn.Module,
    net2: torch.nn.Module,
    optimizer: torch.optim.Optimizer,
    labeled: GPULoader,
    unlabeled,
    prob: Tensor,
    *,
    epoch: int,
    warm_up: int,
    lambda_u: float,
    temperature: float,
    alpha: float,
    num_classes: int,
    mix_views: tuple[int, int] = (0, 1),
    amp: bool = False,
    labeled_only: bool = False,
    extra_loss: SemiExtra | None = None,
    desc: str = "train",
) -> dict:
    """One MixMatch epoch of ``net`` on the other net's division (``Train_cifar.py: train``).

    Args:
        net, net2: the trained net (train mode) and the other net (eval mode, co-guessing only).
        optimizer: ``net``'s optimizer.
        labeled: loader over the labeled set; batches carry >= 2 views (weak, weak[, strong, strong]).
        unlabeled: loader over the unlabeled set, same views; cycled.
        prob: Tensor[N] clean probabilities w from the other net's GMM, by dataset index.
        epoch, warm_up, lambda_u: for the λ_u ramp (``t = epoch + batch / (⌊L/bs⌋ + 1)``).
        temperature, alpha, num_classes: MixMatch's T, α and C.
        mix_views: which two views are mixed (PLReMix with autoaug/randaug: the strong ones, (2, 3)).
        amp: bf16 autocast.
        labeled_only: forward only the 2·bs labeled mixed rows and drop L_u (DivideMix Clothing1M).
        extra_loss: an extra weighted term per step (PLReMix's PLR loss).

    Returns:
        Means of ``lx``, ``lu``, ``penalty``, ``extra`` over the epoch (one host sync at the end).
    """
    net.train()
    net2.eval()
    num_iter = len(labeled.indices) // labeled.batch_size + 1
    u_iter = cycle(unlabeled)
    sums, steps = torch.zeros(4, device=prob.device), 0
    guard = FiniteGuard(desc)
    for b, (xv, y, ix) in enumerate(progress(labeled, desc=desc, total=len(labeled))):
        uv, _, iu = next(u_iter)
        logits, mixed_y, n_x = _semi_step(
            net,
            net2,
            xv,
            y,
            prob[ix],
            uv,
            num_classes=num_classes,
            temperature=temperature,
            alpha=alpha,
            mix_views=mix_views,
            amp=amp,
            labeled_only=labeled_only,
        )
        if labeled_only:
            lx, lu = (
                -(F.log_softmax(logits, 1) * mixed_y[:n_x]).sum(1).mean(),
                torch.zeros_like(logits[0, 0]),
            )
        else:
            lx, lu = mm.semi_loss(logits[:n_x], mixed_y[:n_x], logits[n_x:], mixed_y[n_x:])
        lamb = mm.linear_rampup(epoch + b / num_iter, warm_up, lambda_u)
        penalty = mm.uniform_prior_penalty(logits)
        loss = lx + lamb * lu + penalty
        extra = torch.zeros_like(loss)
        if extra_loss is not None:
            with autocast(y.device, amp):
                extra = extra_loss(net, xv, uv, ix, iu).float()
        guard.watch(b, lx=lx, lu=lu, penalty=penalty, extra=extra)
        optimizer.zero_grad(set_to_none=True)
        (loss + extra).backward()
        optimizer.step()
        sums += torch.stack([lx.detach(), lu.detach(), penalty.detach(), extra.detach()])
        steps += 1
    guard.check()
    means = (sums / max(steps, 1)).tolist()
    return dict(zip(("lx", "lu", "penalty", "extra"), means), steps=steps)


@torch.no_grad()
def ensemble_eval(
    nets: Sequence[torch.nn.Module], loader, *, topk: Sequence[int] = (1,), amp: bool = False
) -> dict:
    """Accuracy of the summed logits of ``nets`` (DivideMix's ``outputs1 + outputs2``).

    Returns:
        ``{"top1": ..., "top5": ...}`` for each k in ``topk`` (k capped at the class count), counted
        per sample, and ``"top1_batchmean"``, ...: the mean of the per-batch accuracies, the protocol
        of PLReMix's WebVision and Clothing1M tests (``accuracy`` per batch, divided by the batch count),
        which produced its published numbers; it differs when the last batch is short.
    """
    states = [n.training for n in nets]
    for n in nets:
        n.eval()
    correct, batch_means, seen, batches = None, None, 0, 0
    for images, labels, _ in loader:
        with autocast(labels.device, amp):
            logits = sum(n(images).float() for n in nets)
        k = min(max(topk), logits.shape[1])
        hit = (logits.topk(k, dim=1).indices == labels[:, None]).cumsum(1)
        batch = torch.stack([hit[:, min(t, k) - 1].sum() for t in topk])
        correct = batch if correct is None else correct + batch
        mean = batch.double() / labels.shape[0]
        batch_means = mean if batch_means is None else batch_means + mean
        seen += labels.shape[0]
        batches += 1
    for n, s in zip(nets, states):
        n.train(s)
    if correct is None:
        return {**{f"top{t}": 0.0 for t in topk}, **{f"top{t}_batchmean": 0.0 for t in topk}}
    values = (correct.double() / seen).tolist()
    means = (batch_means / batches).tolist()
    return {
        **{f"top{t}": v for t, v in zip(topk, values)},
        **{f"top{t}_batchmean": v for t, v in zip(topk, means)},
    }
