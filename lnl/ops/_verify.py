"""First-use verification of the compiled kernels (``backend="auto"`` never trusts an unchecked one).

The first time per process that ``auto`` would run a compiled kernel of a backend in ``VERIFIED``
(CUDA: no kernel of this project had run on a GPU before its users') for an op, device and dtype, it
runs one small problem through that kernel and through the op's PyTorch reference and compares them.
On a mismatch it warns once, with the numbers, and ``auto`` moves on to the next backend for the rest
of the process. ``LNL_VERIFY=0`` skips the check. A forced backend (``backend="cuda"``) is never
verified: it runs what was asked for.
"""

from __future__ import annotations

import os
import warnings

import torch

# the compiled CPU kernels run in CI; the CUDA ones (and kNN's GEMM variant) meet a GPU first at a user's
VERIFIED = ("cuda", "cuda_gemm")
_RESULTS: dict[tuple[str, str, str, torch.dtype], str | None] = {}


def enabled() -> bool:
    return os.environ.get("LNL_VERIFY", "1") != "0"


def mismatch(op: str, backend: str, device: torch.device, dtype: torch.dtype | None) -> str | None:
    """None when ``backend``'s kernel of ``op`` agrees with the reference on ``device`` and ``dtype``
    (or needs no check), else what differed. Runs the check once per process per key."""
    if backend not in VERIFIED or not enabled() or op not in CHECKS:
        return None
    key = (op, backend, str(device), dtype)
    if key not in _RESULTS:
        try:
            _RESULTS[key] = CHECKS[op](backend, device, dtype or torch.float32)
        except Exception as exc:  # noqa: BLE001  (a kernel that raises on a valid problem fails its check)
            _RESULTS[key] = f"raised {type(exc).__name__}: {exc}"
        if _RESULTS[key]:
            warnings.warn(
                f"lnl.ops.{op}: the {backend} kernel ({dtype}, {device}) disagrees with the PyTorch "
                f"reference on a small check ({_RESULTS[key]}); using the next backend. Please report "
                "this with the output of `python -m lnl.selftest`. LNL_VERIFY=0 skips the check."
            )
    return _RESULTS[key]


def rel_error(got: torch.Tensor, want: torch.Tensor, floor: float = 1e-30) -> float:
    """max |got − want| / max(max |want|, ``floor``) over the finite entries of ``want``; inf where the
    shapes or the non-finite entries differ. The self-test passes ``floor=1`` (an absolute error for
    values near 0)."""
    got, want = got.detach().double().cpu(), want.detach().double().cpu()
    finite = torch.isfinite(want)
    if got.shape != want.shape or not torch.equal(finite, torch.isfinite(got)):
        return float("inf")
    if not torch.equal(got[~finite], want[~finite]):
        return float("inf")
    if not finite.any():
        return 0.0
    return float((got - want)[finite].abs().max()) / max(float(want[finite].abs().max()), floor)


def _integer_points(rows: int, dim: int, seed: int, device, dtype) -> torch.Tensor:
    """Small integers: every dot product is exact in any float type, so ties are exact too."""
    g = torch.Generator().manual_seed(seed)
    return torch.randint(-3, 4, (rows, dim), generator=g).to(device, dtype)


def check_knn(backend: str, device, dtype) -> str | None:
    from lnl.ops.knn import knn_labels

    q, keys = (
        _integer_points(37, 16, 1, device, dtype),
        _integer_points(61, 16, 2, device, dtype),
    )
    labels = torch.arange(61, device=device) % 7
    got = knn_labels(q, keys, labels, 5, 7, metric="ip", backend=backend)
    want = knn_labels(q, keys, labels, 5, 7, metric="ip", backend="reference")
    wrong = int((got.indices != want.indices).sum())
    err = rel_error(got.scores, want.scores)
    if wrong or err > 1e-6 or not torch.equal(got.votes, want.votes):
        return f"{wrong} of {want.indices.numel()} neighbours differ, score error {err:.3g}"
    return None


def check_gmm(backend: str, device, dtype) -> str | None:
    from lnl.ops.gmm import RTOL, gmm_fit

    g = torch.Generator().manual_seed(3)
    centres = torch.tensor([[0.2, 0.1], [0.8, 0.7]])
    x = (centres[torch.arange(2 * 60) % 2] + 0.05 * torch.randn(120, 2, generator=g)).view(2, 60, 2)
    x = x.to(device, dtype if dtype in RTOL else torch.float32)
    kw = {"n_components": 2, "max_iter": 5, "init": "quantile"}
    got, want = gmm_fit(x, backend=backend, **kw), gmm_fit(x, backend="reference", **kw)
    err = max(rel_error(got.resp, want.resp), rel_error(got.means, want.means))
    return f"relative error {err:.3g} in resp/means" if err > 100 * RTOL[x.dtype] else None


def check_plr(backend: str, device, dtype) -> str | None:
    from lnl.ops.plr import RTOL, plr_loss

    g = torch.Generator().manual_seed(4)
    feats = torch.nn.functional.normalize(torch.randn(2 * 19, 8, generator=g), dim=1).to(
        device, dtype
    )
    cand = torch.randint(0, 6, (19, 2), generator=g).to(device)
    labels = torch.randint(0, 6, (19,), generator=g).to(device)
    out = {}
    for name in (backend, "reference"):
        f = feats.detach().clone().requires_grad_()
        stats = plr_loss(f, cand, labels, kappa=1, num_classes=6, return_stats=True, backend=name)
        stats.loss.backward()
        out[name] = (stats.value, f.grad)
    err_value = rel_error(out[backend][0], out["reference"][0])
    err_grad = rel_error(out[backend][1], out["reference"][1])
    tol = 10 * RTOL.get(dtype, 1e-5)
    return (
        f"relative error {err_value:.3g} in the value, {err_grad:.3g} in the gradient"
        if max(err_value, err_grad) > tol
        else None
    )


def check_plr_mask(backend: str, device, dtype) -> str | None:
    from lnl.ops.plr import plr_mask

    g = torch.Generator().manual_seed(5)
    cand, labels = (
        torch.randint(0, 9, (23, 2), generator=g).to(device),
        torch.randint(0, 9, (23,), generator=g).to(device),
    )
    got = plr_mask(cand, labels, 1, num_classes=9, backend=backend)
    want = plr_mask(cand, labels, 1, num_classes=9, backend="reference")
    wrong = int((got.cpu() != want.cpu()).sum())
    return f"{wrong} of {want.numel()} mask entries differ" if wrong else None


CHECKS = {
    "knn_labels": check_knn,
    "gmm_em": check_gmm,
    "plr_loss": check_plr,
    "plr_mask": check_plr_mask,
}
