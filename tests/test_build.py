"""The build and registration rules: one TORCH_LIBRARY, the extension loads after `make build`, the
report names every op and backend, and `import lnl` stays cheap."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

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


def test_info_report_lists_each_op_and_backend():
    out = subprocess.run([sys.executable, "-m", "lnl.info"], capture_output=True, text=True, check=True).stdout
    for op in lnl.ops.OPS:
        assert f"{op}" in out
    assert "compiled backends:" in out


def test_import_lnl_does_not_load_the_extension_or_torchvision():
    code = "import sys, lnl; print('lnl._C' in sys.modules, 'torchvision' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.split() == ["False", "False"]
