"""Python faces of lnl's kernels. Each op dispatches to the compiled ``lnl._C`` kernel for the
inputs' device when it was built, else to its pure-PyTorch reference (same signature), with a
one-time warning. ``backend()`` says what was compiled; each op's ``choose_backend`` says why.
On CUDA, ``auto`` first checks each kernel once per process against the reference (``_verify``) and
times the runnable backends of large problems (``_tune``); ``python -m lnl.selftest`` checks them all."""

from __future__ import annotations

from lnl import _ext
from lnl.ops.gmm import GMMParams, GMMResult, gmm_clean_prob, gmm_fit, gmm_fit_reference
from lnl.ops.knn import KnnResult, knn_graph, knn_labels, knn_labels_reference
from lnl.ops.plr import PlrStats, plr_loss, plr_loss_reference, plr_mask, plr_mask_reference

OPS = ("knn_labels", "gmm_em", "plr_loss", "plr_mask")


def backend() -> tuple[str, ...]:
    """The compiled backends: ``("cpu", "cuda")``, ``("cpu",)``, or ``()`` without ``lnl._C``."""
    if not _ext.available():
        return ()
    compiled = [b for b in ("cpu", "cuda") if any(_ext.has_kernel(op, b.upper()) for op in OPS)]
    return tuple(compiled)


__all__ = [
    "backend",
    "KnnResult",
    "knn_labels",
    "knn_labels_reference",
    "knn_graph",
    "PlrStats",
    "plr_loss",
    "plr_loss_reference",
    "plr_mask",
    "plr_mask_reference",
    "GMMParams",
    "GMMResult",
    "gmm_fit",
    "gmm_fit_reference",
    "gmm_clean_prob",
]
