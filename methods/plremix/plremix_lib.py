"""PLReMix-only logic (bug IDs: README's deviation table): the warm-up contrastive loss, the
2-D GMM input, the PLR term of the MixMatch step, the κ schedule and the prototypes with the
FreeMatch-style self-adaptive selection. The co-divide loop itself is ``lnl.codivide.cotrain.CoDivide``
(shared with DivideMix); ``PLReMix`` overrides its hooks.

Ported from ``lxysl/PLReMix @ b0c4ec3`` (``utils/train_utils.py``, ``losses/losses.py``). Quirks kept
by default, each with its opt-in fix:

* P2 — net k's prototypes are updated with the *other* net's projections (``--fix_p2``: its own).
* P8 — on CIFAR the warm-up always uses the FlatNCE gradient trick; with ``--crl plr`` it takes the
  log-sum-exp over [positives | negatives], which pushes the positive away (``--fix_p8``: InfoNCE).
* P9 — the flat PLR loss of a batch with no negatives is NaN in the original; ``lnl.ops.plr_loss``
  returns 0 instead (a crash fix, always on).
* P10 — with ``--mcrop`` the warm-up InfoNCE has target column 0, so the other 6 positives sit in the
  denominator (``--fix_p10``: multi-positive SupCon form).
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor

from lnl.codivide import steps as cd
from lnl.codivide.cotrain import CoDivide
from lnl.codivide.files import FileListMixin
from lnl.codivide.nets import build_nets
from lnl.codivide.recipe import Recipe

#: ``--aug`` → the GPU loader's strong view: PLReMix's PIL AutoAugment (CIFAR policy on CIFAR, ImageNet
#: policy on Tiny-ImageNet, ``data/data_loader.py``), FixMatch's RandAugment, or the weak view itself.
STRONG_VIEW = {"autoaug": "autoaug_cifar", "randaug": "randaug_fixmatch", "train": "weak"}
#: Datasets whose AutoAugment view uses the ImageNet policy and whose weak crop is unpadded.
IMAGENET_STYLE = ("tiny_imagenet",)


def strong_view(aug: str, dataset: str) -> str | None:
    """The GPU loader view of ``--aug`` on ``dataset`` (None: not provided there)."""
    view = STRONG_VIEW.get(aug)
    return "autoaug_imagenet" if view == "autoaug_cifar" and dataset in IMAGENET_STYLE else view


PROTO_M = 0.99


def kappa_at(epoch: int, milestones: tuple[int, int] = (40, 70), start: int = 3) -> int:
    """The PLR top-κ schedule (``train.py``): ``start`` (``--topk``, 3) before ``milestones[0]``, one less
    until ``milestones[1]``, two less after (3/2/1). A step is taken only while κ stays ≥ 1 (the
    original's ``topk_list`` decrements only when ``--topk`` > 1, resp. > 2): 1 stays 1, 2 goes 2/1/1.
    CIFAR/Tiny-ImageNet use (40, 70); Clothing1M/WebVision (15, 30). Epochs count the warm-up."""
    stage = 0 if epoch < milestones[0] else (1 if epoch < milestones[1] else 2)
    return start - min(stage, max(start - 1, 0))


def warmup_crl_loss(z: Tensor, views: int, kind: str, temperature: float = 0.1) -> Tensor:
    """The warm-up contrastive loss on ``views`` views per sample (P8, P10).

    Args:
        z: Tensor[V·B, D] L2-normalised projections, view-major (row v·B + i: view v of sample i).
        views: V.
        kind: ``"flat"`` (FlatNCE: mean_a exp(ℓ_a − sg(ℓ_a)), ℓ_a = logsumexp_n (s_an − s_ap)/τ; V = 2),
            ``"flat_lse_all"`` (P8: the same trick on logsumexp over [positives | negatives]),
            ``"infonce"`` (cross-entropy over [positives | negatives] with target column 0, P10 for
            V > 2) or ``"supcon"`` (mean over every positive; equals ``infonce`` for V = 2).
        temperature: τ (0.1).

    Returns:
        The scalar loss.
    """
    if kind not in ("flat", "flat_lse_all", "infonce", "supcon"):
        raise ValueError(f"unknown warm-up contrastive loss {kind!r}")
    if kind == "flat" and views != 2:
        raise ValueError(f"the FlatNCE warm-up needs 2 views, got {views}")
    n = z.shape[0]
    b = n // views
    with torch.autocast(z.device.type, enabled=False):  # similarities in float32, also under --amp
        z = F.normalize(
            z.float(), dim=1
        )  # a no-op but for rounding: the original's InfoNCELoss normalises again
        raw = z @ z.t()
    sim = raw / temperature
    # Index arithmetic instead of boolean-mask selection, which would synchronise with the device.
    rows = torch.arange(n, device=z.device)
    same = (rows[:, None] % b) == (rows[None, :] % b)
    pos_cols = (
        ((rows[:, None] + b * torch.arange(1, views, device=z.device)) % n).sort(dim=1).values
    )
    positives = sim.gather(1, pos_cols)  # [n, V-1], in column order (P10's "column 0" is the first)
    if (
        kind == "flat"
    ):  # (negatives − Σ positives) / τ over the n − V negative columns, as the original
        # ascending, as its mask keeps them
        neg_cols = torch.argsort(same.int(), dim=1, stable=True)[:, : n - views]
        logits = (
            raw.gather(1, neg_cols) - raw.gather(1, pos_cols).sum(1, keepdim=True)
        ) / temperature
        v = torch.logsumexp(logits, dim=1)
        return torch.exp(v - v.detach()).mean()
    lse_all = torch.logsumexp(sim.masked_fill(rows[:, None] == rows[None, :], float("-inf")), dim=1)
    if kind == "flat_lse_all":
        return torch.exp(lse_all - lse_all.detach()).mean()
    log_prob = positives - lse_all[:, None]
    return -(log_prob[:, 0] if kind == "infonce" else log_prob).mean()


def project_views(net, views: list[Tensor]) -> Tensor:
    """q of every view, view-major; views of equal size share one forward (multi-crop sizes differ)."""
    out, group = [], [views[0]]
    for v in views[1:]:
        if v.shape[1:] == group[0].shape[1:]:
            group.append(v)
        else:
            out.append(net(torch.cat(group), mode="proj"))
            group = [v]
    out.append(net(torch.cat(group), mode="proj"))
    return torch.cat(out).float()


@torch.no_grad()
def init_prototypes(net, q: Tensor, labels: Tensor, num_classes: int) -> None:
    """prototype_c = normalize(mean of q over samples with noisy label c) (end of the warm-up).

    Raises:
        ValueError: a class has no sample (the original asserts).
    """
    sums = torch.zeros(num_classes, q.shape[1], device=q.device).index_add_(0, labels, q)
    counts = torch.bincount(labels, minlength=num_classes)
    if bool((counts == 0).any()):
        raise ValueError(
            f"prototype init: classes {(counts == 0).nonzero().flatten().tolist()} have no sample"
        )
    _protos(net).copy_(F.normalize(sums / counts[:, None], dim=1))


def _protos(net) -> Tensor:
    return getattr(net, "_orig_mod", net).prototypes


@torch.no_grad()
def self_adaptive_update(
    net, src: dict, state: dict, *, epoch: int, num_epochs: int, semi_m: float
) -> dict:
    """FreeMatch-style selection and prototype EMA (``pseudo_selection``), vectorised.

    Args:
        net: the net whose prototypes move.
        src: eval outputs used (the other net's by default, P2): ``logits``, ``proto_logits``, ``q``.
        state: the global ``tau_t`` (scalar) and ``p_model`` (Tensor[C]); updated in place.
        epoch, num_epochs: for α_e = ½(1 + cos(π e / num_epochs)).
        semi_m: EMA momentum m of ``tau_t``/``p_model``.

    Returns:
        ``{"selected": fraction of samples selected, "tau_t": threshold}`` (tensors; no sync).
    """
    a = 0.5 * (1 + math.cos(math.pi * epoch / num_epochs))
    p = F.softmax((1 - a) * src["proto_logits"] + a * src["logits"], dim=1)
    max_p, top = p.max(dim=1)
    state["tau_t"] = semi_m * state["tau_t"] + (1 - semi_m) * max_p.mean()
    state["p_model"] = semi_m * state["p_model"] + (1 - semi_m) * p.mean(0)
    p_model = state["p_model"]
    selected = (max_p >= state["tau_t"] * p_model[top] / p_model.max()).float()
    pred = src["logits"].argmax(1)  # ŷ′: the stored classifier prediction
    protos = _protos(net)
    sums = torch.zeros_like(protos).index_add_(0, pred, src["q"] * selected[:, None])
    counts = torch.zeros(protos.shape[0], device=protos.device).index_add_(0, pred, selected)
    mean = F.normalize(sums / counts.clamp_min(1)[:, None], dim=1)
    updated = F.normalize(PROTO_M * protos + (1 - PROTO_M) * mean, dim=1)
    protos.copy_(torch.where((counts > 0)[:, None], updated, protos))
    return {"selected": selected.mean(), "tau_t": state["tau_t"]}


class PLReMix(CoDivide):
    """PLReMix's CIFAR/Tiny-ImageNet epoch (``train.py`` + ``utils/train_utils.py``).

    Differences from DivideMix, all through ``CoDivide``'s hooks: the warm-up adds a contrastive term
    on two strong views; the GMM is 2-D (CE, prototype CE) with the min-norm clean component and no
    history; MixMatch mixes the strong views; each step adds λ_c · PLR with candidate sets from the
    other net's stored logits; prototypes are initialised after the warm-up and moved after each
    net's semi-supervised epoch.
    """

    name = "plremix"
    drop_last = True
    gmm_sklearn_dtype = torch.float32  # the original fits sklearn on a float32 numpy array
    kappa_milestones = (40, 70)

    def __init__(self, args, nets, optimizers, data, log):
        strong = strong_view(args.aug, args.dataset)
        if strong is None:
            raise ValueError(
                f"--aug {args.aug}: the GPU-resident pipeline provides {sorted(STRONG_VIEW)} "
                "(simclr's colour jitter/blur is not implemented there)"
            )
        if (
            args.dataset in IMAGENET_STYLE
        ):  # Tiny-ImageNet: RandomCrop(64) without padding (data_loader.py)
            data.train_loader.crop_padding = 0
        self.semi_views = ("weak", "weak", strong, strong)
        self.warmup_views = ("weak", strong, strong)
        self.mix_views = (2, 3) if args.aug in ("autoaug", "randaug") else (0, 1)
        super().__init__(args, nets, optimizers, data, log)
        c = self.num_classes
        self.state.update(
            tau_t=torch.tensor(1.0 / c, device=args.device),
            p_model=torch.full((c,), 1.0 / c, device=args.device),
        )
        self.state.pop("history")

    def lr_at(self, epoch: int) -> float:
        if self.args.cos:
            return self.args.lr * 0.5 * (1 + math.cos(math.pi * epoch / self.args.num_epochs))
        return super().lr_at(epoch)

    def warmup_kind(self, views: int) -> str:
        if self.args.crl == "flat_plr":
            return "flat"
        return "infonce" if self.args.fix_p8 else "flat_lse_all"

    def eval_forward(self, net, images: Tensor) -> dict:
        logits, proto_logits, q = net(images, mode="all")
        return {"logits": logits, "proto_logits": proto_logits, "q": q}

    def gmm_input(self, k: int, outs: dict) -> Tensor:
        ce = cd.per_sample_ce(outs["logits"], outs["labels"])
        proto_ce = cd.per_sample_ce(outs["proto_logits"], outs["labels"])
        return torch.stack([cd.minmax(ce), cd.minmax(proto_ce)], dim=1)

    def warmup_extra(self, k: int):
        weight = self.args.lambda_warmup_crl

        def extra(net, views: tuple, idx: Tensor) -> Tensor:
            z = project_views(net, list(views[1:]))
            return weight * warmup_crl_loss(z, len(views) - 1, self.warmup_kind(len(views) - 1))

        return extra

    def semi_extra(self, k: int, other: dict):
        """λ_c · PLR on the strong views, candidates from the other net's stored logits."""
        kappa = kappa_at(self._epoch, self.kappa_milestones, self.args.topk)
        cand_all = other["logits"].topk(min(max(kappa, 1), self.num_classes), dim=1).indices
        rows = self._cand_rows(other)

        def extra(net, xv: tuple, uv: tuple, ix: Tensor, iu: Tensor) -> Tensor:
            views = [torch.cat([x, u]) for x, u in zip(xv[2:], uv[2:])]
            q = project_views(net, views)
            idx = torch.cat([ix, iu])
            from lnl.ops import plr_loss

            loss = plr_loss(
                q,
                cand_all[rows(idx, len(ix))],
                self.noisy[idx],
                kappa=kappa,
                flat=self.args.crl == "flat_plr",
                num_classes=self.num_classes,
                validate=False,
                backend=self.args.plr_backend,
            )
            return self.args.lambda_c * loss

        return extra

    def _cand_rows(self, other: dict):
        """Maps a batch's dataset indices to rows of the stored outputs (identity on CIFAR)."""
        return lambda idx, n_x: idx

    def after_warmup(self, epoch: int) -> dict:
        for k in (0, 1):
            loader, index = self.eval_loader(epoch, k)
            outs = cd.collect_outputs(
                self.nets[k],
                loader,
                len(index),
                forward=self.eval_forward,
                rows=self.rows_lookup(index),
                amp=self.args.amp,
            )
            init_prototypes(self.nets[k], outs["q"], outs["labels"], self.num_classes)
        return {}

    def after_semi(self, k: int, own: dict, other: dict, epoch: int) -> dict:
        src = own if self.args.fix_p2 else other
        res = self_adaptive_update(
            self.nets[k],
            src,
            self.state,
            epoch=epoch,
            num_epochs=self.args.num_epochs,
            semi_m=self.args.semi_m,
        )
        return {f"net{k + 1}_proto_selected": float(res["selected"]), "tau_t": float(res["tau_t"])}

    def train(self, epoch: int) -> dict:
        self._epoch = epoch
        return {
            **super().train(epoch),
            "kappa": kappa_at(epoch, self.kappa_milestones, self.args.topk),
        }


# ----------------------------------------------------------------------------- entry-point helpers
FIXES = ("fix_p1", "fix_p2", "fix_p8", "fix_p10")
BACKBONES = {
    "preact_resnet18": "dividemix_preact_resnet18",
    "resnet50": "torchvision_resnet50",
    "inception": "timm_inception_resnet_v2",
}


def add_plremix_args(p, r: Recipe) -> None:
    """The flags of PLReMix's three scripts, with the defaults of ``r``'s script; plus lnl's
    ``--noise_file``, ``--warm_up``, ``--arch`` and the opt-in ``--fix_*`` switches."""
    g = p.add_argument_group("PLReMix (lxysl/PLReMix @ b0c4ec3)")
    g.add_argument("--dataset", default=r.dataset, choices=r.datasets)
    g.add_argument(
        "--num_classes", type=int, default=r.num_classes, help="overwritten by the dataset"
    )
    g.add_argument(
        "--data_path", default=r.data_path, help="dataset folder (default: $LNL_DATA/<dataset>)"
    )
    g.add_argument("--noise_mode", default="sym", help="sym or asym")
    g.add_argument("--r", type=float, default=0.5, help="noise ratio")
    g.add_argument(
        "--noise_file",
        default=None,
        help="noise labels file (default: the original's ./data/noise_file/..., else generated; README)",
    )
    g.add_argument(
        "--backbone", default=r.backbone, help=f"{', '.join(BACKBONES)} or any lnl model name"
    )
    g.add_argument(
        "--arch", default=None, help="lnl model name overriding --backbone (tests: small_cnn)"
    )
    g.add_argument("--pretrain", action="store_true", help="ImageNet weights (resnet50 only)")
    g.add_argument(
        "--batch_size", type=int, default=r.batch_size, help="labeled and unlabeled batch"
    )
    g.add_argument("--lr", "--learning_rate", dest="lr", type=float, default=r.lr)
    g.add_argument("--wd", type=float, default=r.weight_decay)
    g.add_argument("--cos", action="store_true", help="cosine LR instead of the step")
    g.add_argument(
        "--num_epochs", type=int, default=r.num_epochs, help="epochs 0..num_epochs inclusive"
    )
    g.add_argument(
        "--warm_up", type=int, default=None, help="default: the original's per-dataset value"
    )
    g.add_argument("--num_workers", type=int, default=16, help="file-list datasets only")
    g.add_argument("--gpu", type=int, default=0, help="accepted for compatibility; use --device")
    g.add_argument(
        "--seed", type=int, default=123, help="(an int here; the original passed a string, P7)"
    )
    g.add_argument("--alpha", type=float, default=r.alpha, help="Beta(α, α) of mixup")
    g.add_argument(
        "--lambda_u", type=float, default=r.lambda_u, help="unlabeled loss weight (ramped)"
    )
    g.add_argument("--lambda_c", type=float, default=1.0, help="PLR loss weight")
    g.add_argument(
        "--lambda_warmup_crl",
        type=float,
        default=1.0,
        help="weight of the warm-up contrastive term (lnl's; 1 = the original; README: Numbers)",
    )
    g.add_argument("--p_threshold", type=float, default=0.5, help="clean-posterior threshold")
    g.add_argument("--T", type=float, default=0.5, help="sharpening temperature")
    g.add_argument("--topk", type=int, default=3, help="initial κ (scheduled 3/2/1)")
    g.add_argument(
        "--semi_m", type=float, default=0.99, help="EMA momentum of the self-adaptive selection"
    )
    g.add_argument("--aug", default="autoaug", choices=("train", "simclr", "autoaug", "randaug"))
    g.add_argument("--crl", default=r.flags["crl"], choices=("plr", "flat_plr"))
    g.add_argument("--mcrop", action="store_true", help="multi-crop (Clothing1M/WebVision)")
    g.add_argument(
        "--wo_wandb",
        "--no_wandb",
        dest="wo_wandb",
        action="store_true",
        help="no-op: lnl logs to wandb only with --wandb (the README's --no_wandb is accepted, P3)",
    )
    g.add_argument(
        "--resume_id",
        default="",
        help="continue this wandb run (turns wandb on; the training state "
        "resumes from <out>/last.pth)",
    )
    f = p.add_argument_group("fixes of the original's bugs (README; default: original behaviour)")
    f.add_argument(
        "--fix_p1",
        action="store_true",
        help="P1: PLR candidates of the right rows (Clothing1M/WebVision)",
    )
    f.add_argument(
        "--fix_p2",
        action="store_true",
        help="P2: update a net's prototypes with its own projections",
    )
    f.add_argument(
        "--fix_p8", action="store_true", help="P8: CIFAR warm-up with --crl plr uses InfoNCE"
    )
    f.add_argument(
        "--fix_p10", action="store_true", help="P10: multi-positive warm-up InfoNCE with --mcrop"
    )
    f.add_argument("--fix_all", action="store_true", help="all of the above")


def wandb_options(args) -> dict:
    """The logger's wandb keywords: ``--wo_wandb`` wins over ``--wandb``/``--offline``/``--resume_id``, as
    in the original; ``--resume_id`` continues that wandb run."""
    if args.wo_wandb:
        return {"wandb": False, "wandb_offline": False, "wandb_id": None}
    return {"wandb_id": args.resume_id or None}


def resolve_fixes(args) -> None:
    """``--fix_all`` turns every ``--fix_*`` on."""
    if args.fix_all:
        for name in FIXES:
            setattr(args, name, True)


def default_noise_file(args) -> str | None:
    """The original's noise file path ``./data/noise_file/<dataset>/<r:.2f>[_asym].json`` if present."""
    from pathlib import Path

    path = (
        Path("data/noise_file")
        / args.dataset
        / f"{args.r:.2f}{'_asym' if args.noise_mode == 'asym' else ''}.json"
    )
    return str(path) if path.is_file() else None


def proto_nets(args, num_classes: int, *, input_size: int = 32) -> tuple[list, list]:
    """Two ``proto_net`` models over ``--backbone`` (``--arch`` overrides) and their SGD optimizers
    (weight decay ``--wd``)."""
    from lnl.models import create_model

    name = args.arch or BACKBONES.get(args.backbone, args.backbone)
    kwargs = (
        {"input_size": input_size}
        if name in ("dividemix_preact_resnet18", "textbook_preact_resnet18")
        else {}
    )
    if name == "torchvision_resnet50":
        kwargs["pretrained"] = bool(args.pretrain)

    def make_net():
        return create_model("proto_net", backbone=name, num_classes=num_classes, **kwargs)

    return build_nets(
        make_net, device=args.device, lr=args.lr, weight_decay=args.wd, compile=args.compile
    )


# ----------------------------------------------------------------------------- Clothing1M / WebVision
def file_view_names(dataset: str, mcrop: bool) -> tuple[tuple[str, ...], tuple[str, ...]]:
    """The ``transforms_for`` views of a warm-up item (CE view, two contrastive views, 6 small crops with
    ``--mcrop``) and of a labeled/unlabeled item (2 weak, 2 strong, small crops), each drawn on its own.

    The CE view is Clothing1M's strong transform (the first large crop with ``--mcrop``) and WebVision's
    weak one (``data/data_loader.py`` mode 'warmup'; ``clothing1m.py``/``webvision.py`` mode 'all')."""
    small = ("small",) * 6 if mcrop else ()
    big = "large" if mcrop else "strong"
    ce = big if dataset == "clothing1m" else "weak"
    return (ce, big, big, *small), ("weak", "weak", big, big, *small)


class FilePLReMix(FileListMixin, PLReMix):
    """PLReMix on a file-list dataset (``train_clothing1m.py`` / ``train_webvision.py`` @ b0c4ec3):
    two-milestone LR, κ milestones (15, 30), InfoNCE warm-up on two strong views (the CE branch reads a
    third view of its own: strong on Clothing1M, weak on WebVision), multi-crop with ``--mcrop``, and P1 (PLR candidates read at the sample's
    position in its labeled/unlabeled list instead of its eval row; ``--fix_p1``)."""

    kappa_milestones = (15, 30)

    def __init__(self, args, nets, optimizers, data, log, *, recipe, milestones, penalty: bool, tf):
        self.recipe, self.milestones, self._penalty, self.tf = recipe, milestones, penalty, tf
        self.train_set = data.train
        args.aug = "autoaug" if args.aug not in STRONG_VIEW else args.aug
        super().__init__(args, nets, optimizers, data, log)
        self.warmup_names, self.semi_names = file_view_names(args.dataset, args.mcrop)
        self.mix_views = (2, 3)
        self._lists = None

    @property
    def warmup_penalty(self) -> bool:
        return self._penalty

    def lr_at(self, epoch: int) -> float:
        """Cosine with ``--cos``, else ÷10 at each milestone (``adjust_lr`` of the original's
        ``utils/train_utils_clothing1m.py`` and ``_webvision.py``)."""
        if self.args.cos:
            return self.args.lr * 0.5 * (1 + math.cos(math.pi * epoch / self.args.num_epochs))
        return self.args.lr * 0.1 ** sum(epoch >= m for m in self.milestones)

    def warmup_kind(self, views: int) -> str:
        return "supcon" if self.args.fix_p10 else "infonce"

    def semi_loaders(self, epoch, k, labeled, unlabeled):
        self._lists = (labeled, unlabeled)
        return super().semi_loaders(epoch, k, labeled, unlabeled)

    def _cand_rows(self, other: dict):
        n = len(self.noisy)
        if self.args.fix_p1:
            lookup = self.rows_lookup(other["index"])
            return (lambda idx, n_x: idx) if lookup is None else (lambda idx, n_x: lookup[idx])
        pos = []
        for lst in self._lists:  # P1: the position of a sample within its own list
            p = torch.zeros(n, dtype=torch.long, device=lst.device)
            p[lst] = torch.arange(len(lst), device=lst.device)
            pos.append(p)
        return lambda idx, n_x: torch.cat([pos[0][idx[:n_x]], pos[1][idx[n_x:]]])
