"""Issue 23's two crashes: a tensor argument on another device than the kernel's (a host pointer in a
CUDA kernel poisons the context), and a build with no code the GPU can load ("no kernel image" on
every op instead of a fallback)."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest
import torch

from lnl import _ext
from lnl.ops import _dispatch

REPO = Path(__file__).resolve().parents[2]


@pytest.mark.parametrize(
    "arch_list, capability, runs",
    [
        ("8.0;9.0+PTX", (8, 0), True),
        ("8.0;9.0+PTX", (8, 6), True),  # sm_80 cubin runs on 8.x, x >= 0
        ("8.0;9.0+PTX", (9, 0), True),
        ("8.0;9.0+PTX", (12, 0), True),  # PTX 9.0 JIT-compiles on newer GPUs
        ("8.0;9.0", (12, 0), False),  # no PTX: nothing a Blackwell can load
        ("8.6", (8, 0), False),  # a newer minor's cubin does not run on an older GPU
        ("9.0a", (9, 0), True),
        ("9.0a", (10, 0), False),  # arch-specific code runs on that exact version only
        ("9.0a+PTX", (10, 0), False),
        ("10.0f", (10, 3), True),
        ("8.0 8.9", (8, 9), True),  # spaces separate entries as well
    ],
)
def test_arch_list_runs_on(arch_list, capability, runs):
    assert _dispatch.arch_list_runs_on(arch_list, capability) is runs


def test_a_gpu_the_build_cannot_load_falls_back_with_a_reason(monkeypatch):
    monkeypatch.setattr(_ext, "build_info", lambda: {"with_cuda": True, "arch_list": "8.0;9.0"})
    reasons = _dispatch._capability_reasons((12, 0), "cuda:0")
    assert len(reasons) == 1 and "TORCH_CUDA_ARCH_LIST='8.0;9.0'" in reasons[0]
    assert "rebuild with TORCH_CUDA_ARCH_LIST='12.0+PTX'" in reasons[0]
    assert _dispatch._capability_reasons((9, 0), "cuda:0") == []
    assert "8.0+" in _dispatch._capability_reasons((7, 5), "cuda:0")[0]
    # auto skips the cuda backend with that reason and takes the next one
    choice = _dispatch.choose(
        "knn_labels", "auto", {"cuda": reasons, "cpu": [], "reference": []}, "q"
    )
    assert choice == "cpu"


def _setup_functions() -> dict:
    """setup.py's architecture helpers, without running setup() (which importing the file would)."""
    tree = ast.parse((REPO / "setup.py").read_text())
    wanted = [
        n
        for n in tree.body
        if isinstance(n, ast.FunctionDef) and n.name in {"_with_ptx", "_arch_list"}
    ]
    namespace: dict = {}
    exec(compile(ast.Module(body=wanted, type_ignores=[]), "setup.py", "exec"), namespace)
    return namespace


@pytest.mark.parametrize(
    "requested, built",
    [
        ("8.0;9.0", "8.0;9.0+PTX"),  # the newest architecture gets PTX
        ("9.0;8.6", "9.0+PTX;8.6"),
        ("8.0;9.0+PTX", "8.0;9.0+PTX"),  # already there: unchanged
        ("8.0;9.0a", "8.0;9.0a;9.0+PTX"),  # arch-specific PTX would not JIT to newer GPUs
        ("7.5;8.0", "8.0+PTX"),
        (None, "8.0;9.0+PTX"),
    ],
)
def test_setup_always_builds_ptx_for_the_newest_architecture(requested, built):
    class NoGpu:
        class cuda:
            is_available = staticmethod(lambda: False)

    assert _setup_functions()["_arch_list"](NoGpu, requested) == built
    assert _dispatch.arch_list_runs_on(built, (12, 0))


# --- every tensor argument's device, checked in the kernels' shared checks -------------------------
# The CPU kernels run these checks too; an argument on the "meta" device stands for "another device"
# (no second real device exists on a CPU machine), and the call goes straight to the CPU kernel.


def _cpu_kernel(op_name: str):
    pytest.importorskip("lnl._C")
    op = getattr(torch.ops.lnl, op_name).default
    return lambda *args: op.redispatch(torch._C.DispatchKeySet(torch._C.DispatchKey.CPU), *args)


def _on_meta(args: tuple, index: int) -> tuple:
    return tuple(a.to("meta") if i == index else a for i, a in enumerate(args))


def _plr_args():
    g = torch.Generator().manual_seed(0)
    feats = torch.nn.functional.normalize(torch.randn(8, 4, generator=g), dim=1)
    cand = torch.tensor([[0, 1], [1, 2], [2, 0], [1, 0]])
    labels = torch.tensor([0, 1, 2, 1])
    return feats, cand, labels


def test_plr_loss_backward_checks_every_tensor_device():
    forward, backward = _cpu_kernel("plr_loss"), _cpu_kernel("plr_loss_backward")
    feats, cand, labels = _plr_args()
    _, _, lse, n_neg = forward(feats, cand, labels, 1, 3, 0.3, 0.3, False)
    args = (torch.ones(()), feats, cand, labels, lse, n_neg)
    backward(*args, 1, 3, 0.3, 0.3, False)  # all on the CPU: runs
    for index, name in [(2, "cand"), (3, "labels"), (4, "lse"), (5, "n_neg")]:
        with pytest.raises(RuntimeError, match="device|are on|is on") as err:
            backward(*_on_meta(args, index), 1, 3, 0.3, 0.3, False)
        assert "meta" in str(err.value), name
    with pytest.raises(RuntimeError, match="grad must be on cpu"):
        backward(torch.ones(1, device="meta"), *args[1:], 1, 3, 0.3, 0.3, False)
    with pytest.raises(RuntimeError, match="lse must be floating"):
        backward(args[0], feats, cand, labels, n_neg, n_neg, 1, 3, 0.3, 0.3, False)


def test_plr_loss_and_mask_check_every_tensor_device():
    forward, mask = _cpu_kernel("plr_loss"), _cpu_kernel("plr_mask")
    args = _plr_args()
    for index in range(3):
        with pytest.raises(RuntimeError, match="meta"):
            forward(*_on_meta(args, index), 1, 3, 0.3, 0.3, False)
    for index in range(2):
        with pytest.raises(RuntimeError, match="meta"):
            mask(*_on_meta(args[1:], index), 1, 3)


def test_knn_checks_every_tensor_device():
    knn = _cpu_kernel("knn_labels")
    g = torch.Generator().manual_seed(0)
    args = (torch.randn(6, 4, generator=g), torch.randn(9, 4, generator=g), torch.arange(9) % 3)
    knn(*args, 2, 3, "ip", False, 0)
    for index in range(3):
        with pytest.raises(RuntimeError, match="must be on one device.*meta"):
            knn(*_on_meta(args, index), 2, 3, "ip", False, 0)


def test_gmm_checks_every_tensor_device():
    kmeans, em = _cpu_kernel("gmm_kmeans"), _cpu_kernel("gmm_em")
    g = torch.Generator().manual_seed(0)
    x = torch.randn(2, 10, 1, generator=g, dtype=torch.float64)
    lengths = torch.tensor([10, 7])
    uniforms = torch.rand(2, 8, generator=g, dtype=torch.float64)
    labels = kmeans(x, lengths, uniforms, 2)
    for index in (1, 2):
        with pytest.raises(RuntimeError, match="on meta"):
            kmeans(*_on_meta((x, lengths, uniforms), index), 2)
    resp = torch.nn.functional.one_hot(labels, 2).double()
    weights, means, covs, *_ = em(x, lengths, labels, None, None, None, None, 2, 5, 1e-3, 1e-6)
    inits = {
        "lengths": (lengths, labels, None, None, None, None),
        "init_labels": (lengths, labels.to("meta"), None, None, None, None),
        "init_resp": (lengths, None, resp.to("meta"), None, None, None),
        "weights": (lengths, None, None, weights.to("meta"), means, covs),
        "means": (lengths, None, None, weights, means.to("meta"), covs),
        "covs": (lengths, None, None, weights, means, covs.to("meta")),
    }
    inits["lengths"] = (lengths.to("meta"), labels, None, None, None, None)
    for rest in inits.values():
        with pytest.raises(RuntimeError, match="on meta"):
            em(x, *rest, 2, 5, 1e-3, 1e-6)
