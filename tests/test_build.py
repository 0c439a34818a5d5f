"""The build and registration rules: one TORCH_LIBRARY, the extension loads after `make build`, the
report names every op and backend, and `import lnl` stays cheap."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

import lnl.ops
from lnl import _ext

REPO = Path(__file__).resolve().parents[1]


def test_exactly_one_torch_library_block():
    hits = [
        f"{p}:{i}"
        for p in (REPO / "csrc").rglob("*")
        if p.suffix in (".cpp", ".cu", ".h", ".cuh")
        for i, line in enumerate(p.read_text().splitlines())
        if "TORCH_LIBRARY(" in line and not line.lstrip().startswith("//")
    ]
    assert len(hits) == 1 and hits[0].startswith(str(REPO / "csrc" / "lnl.cpp")), hits


def test_extension_is_built_with_cpu_kernels_for_every_op():
    # `make test` builds lnl._C first; a CPU-only checkout without a build skips nothing here on purpose.
    assert _ext.available(), _ext.load_error()
    assert "cpu" in lnl.ops.backend()
    missing = [op for op in lnl.ops.OPS if not _ext.has_kernel(op, "CPU")]
    assert not missing, f"no CPU kernel for {missing}"
    info = _ext.build_info()
    assert info["torch"] and "csrc/lnl.cpp" in info["sources"]


def test_cuda_kernels_are_compiled_where_a_toolkit_is_found():
    """Issues 4-6 without a GPU: with nvcc beside a CUDA build of torch (CI's case), ``make test`` compiles
    every CUDA kernel, for sm_80 and sm_90 unless TORCH_CUDA_ARCH_LIST says otherwise, and registers it:
    a build that silently fell back to CPU-only fails here instead of skipping the CUDA tests."""
    nvcc = Path(os.environ.get("CUDA_HOME") or "/usr/local/cuda") / "bin" / "nvcc"
    if (
        os.environ.get("LNL_CUDA", "auto").lower() == "0"
        or not torch.version.cuda
        or not nvcc.exists()
    ):
        pytest.skip("CPU-only build by design: LNL_CUDA=0, a CPU torch or no nvcc")
    info = _ext.build_info()
    assert info.get("with_cuda"), info
    assert {f"csrc/{op}/{op}_cuda.cu" for op in ("knn", "gmm", "plr")} <= set(info["sources"])
    if "TORCH_CUDA_ARCH_LIST" not in os.environ:
        assert {"8.0", "9.0"} <= set(info["arch_list"].replace("+PTX", "").split(";")), info[
            "arch_list"
        ]
    missing = [op for op in lnl.ops.OPS if not _ext.has_kernel(op, "CUDA")]
    assert not missing, (
        f"built with CUDA but no CUDA kernel registered for {missing}: rebuild (make build)"
    )


def test_info_report_lists_each_op_and_backend():
    out = subprocess.run(
        [sys.executable, "-m", "lnl.info"], capture_output=True, text=True, check=True
    ).stdout
    for op in lnl.ops.OPS:
        assert f"{op}" in out
    assert "compiled backends:" in out


def test_import_lnl_does_not_load_the_extension_or_torchvision():
    code = "import sys, lnl; print('lnl._C' in sys.modules, 'torchvision' in sys.modules)"
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True
    ).stdout
    assert out.split() == ["False", "False"]
