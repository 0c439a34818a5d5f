"""Build ``lnl._C``: the C++ CPU kernels always, the CUDA kernels when they can be compiled.

Environment:
    LNL_CUDA=0|1|auto   0: CPU only; 1: CUDA required (fails without a toolkit); auto (default): CUDA
                        when torch has CUDA and a toolkit is found (CUDA_HOME or nvcc on PATH).
    LNL_FORCE_CUDA=1    same as LNL_CUDA=1 (the style guide's name; Docker sets it).
    TORCH_CUDA_ARCH_LIST  defaults to the visible GPUs' architectures, or "8.0;9.0+PTX" when none is
                          visible (CI, image builds); entries below 8.0 are dropped (sm_80+ kernels).
    LNL_SKIP_EXT=1      pure-Python install, no extension.
    LNL_DEBUG=1         -O0 -g (and -lineinfo for nvcc).
    MAX_JOBS            parallel compile jobs (ninja).
    LNL_GIT_SHA, LNL_IMAGE_BASE, SOURCE_DATE_EPOCH  recorded in lnl/_build_info.json (image builds set
                        them: the commit, the base image, the build's timestamp).
"""

from __future__ import annotations

import glob
import json
import os
import subprocess
from pathlib import Path

from setuptools import find_packages, setup

ROOT = Path(__file__).resolve().parent


def _cuda_mode() -> str:
    if os.environ.get("LNL_FORCE_CUDA") == "1":
        return "1"
    mode = os.environ.get("LNL_CUDA", "auto").lower()
    if mode not in {"0", "1", "auto"}:
        raise SystemExit(f"LNL_CUDA must be 0, 1 or auto, got {mode!r}")
    return mode


def _arch_list(torch, requested: str | None) -> str:
    """The CUDA architectures to build: ``requested`` (TORCH_CUDA_ARCH_LIST), else the visible GPUs',
    else A100 + H100 with PTX for newer GPUs. The kernels use bf16 tensor cores and up to 80 KB of
    shared memory per block, so compute capability 8.0 is the floor: lower entries are dropped with a
    warning (lnl.ops then runs the CPU kernels or the reference on such GPUs)."""
    if not requested and torch.cuda.is_available():
        caps = {torch.cuda.get_device_capability(i) for i in range(torch.cuda.device_count())}
        requested = ";".join(f"{a}.{b}" for a, b in sorted(caps))
    entries = [e for e in (requested or "8.0;9.0+PTX").replace(" ", ";").split(";") if e]
    kept = [e for e in entries if int(e.split(".")[0]) >= 8]  # "8.6", "9.0a", "9.0+PTX"
    if len(kept) < len(entries):
        print(
            f"lnl setup: dropping CUDA architectures below 8.0 from {entries} (the kernels need sm_80+)"
        )
    return ";".join(_with_ptx(kept)) or "8.0;9.0+PTX"


def _with_ptx(entries: list[str]) -> list[str]:
    """Add PTX to the newest architecture when no entry has it, so that a GPU newer than every
    cubin (a build made on an older node) JIT-compiles the kernels instead of failing every launch."""
    if not entries or any(e.endswith("+PTX") for e in entries):
        return entries
    newest = max(entries, key=lambda e: tuple(int(p) for p in e.rstrip("af").split(".")))
    if newest.endswith(("a", "f")):  # arch-specific PTX does not JIT to newer GPUs: add plain PTX
        return entries + [newest.rstrip("af") + "+PTX"]
    return [e + "+PTX" if e == newest else e for e in entries]


def _want_cuda(torch, cpp_extension) -> bool:
    mode = _cuda_mode()
    has_toolkit = cpp_extension.CUDA_HOME is not None
    if mode == "0":
        return False
    if mode == "1":
        if not has_toolkit or torch.version.cuda is None:
            raise SystemExit(
                "LNL_CUDA=1 but no CUDA build is possible: "
                f"CUDA_HOME={cpp_extension.CUDA_HOME}, torch.version.cuda={torch.version.cuda}"
            )
        return True
    return has_toolkit and torch.version.cuda is not None


def _git_sha() -> str:
    if os.environ.get(
        "LNL_GIT_SHA"
    ):  # image builds: the context has no .git, the commit is a build arg
        return os.environ["LNL_GIT_SHA"]
    try:
        out = subprocess.run(["git", "rev-parse", "HEAD"], cwd=ROOT, capture_output=True, text=True)
        return out.stdout.strip() or "unknown"
    except OSError:
        return "unknown"


def _nvcc_version(cuda_home: str | None) -> str | None:
    if not cuda_home:
        return None
    try:
        out = subprocess.run(
            [os.path.join(cuda_home, "bin", "nvcc"), "--version"], capture_output=True, text=True
        )
        return out.stdout.strip().splitlines()[-1] if out.stdout else None
    except OSError:
        return None


def _extensions():
    if os.environ.get("LNL_SKIP_EXT") == "1":
        return [], {}
    import torch
    from torch.utils import cpp_extension

    with_cuda = _want_cuda(torch, cpp_extension)
    debug = os.environ.get("LNL_DEBUG") == "1"
    sources = ["csrc/lnl.cpp"] + sorted(glob.glob("csrc/*/*_cpu.cpp", root_dir=ROOT))
    cxx = ["-O0", "-g"] if debug else ["-O3"]
    cxx += ["-fopenmp"]  # the C++ standard comes from torch (C++20 for torch >= 2.13)
    extra = {"cxx": cxx}
    ext_cls = cpp_extension.CppExtension
    if with_cuda:
        os.environ["TORCH_CUDA_ARCH_LIST"] = _arch_list(
            torch, os.environ.get("TORCH_CUDA_ARCH_LIST")
        )
        sources += sorted(glob.glob("csrc/*/*_cuda.cu", root_dir=ROOT))
        nvcc = ["-O0", "-g", "-G", "-lineinfo"] if debug else ["-O3", "-lineinfo"]
        extra["nvcc"] = nvcc + ["--use_fast_math", "--expt-relaxed-constexpr"]
        extra["cxx"].append("-DLNL_WITH_CUDA")
        ext_cls = cpp_extension.CUDAExtension
    ext = ext_cls(
        "lnl._C",
        sources,
        include_dirs=[str(ROOT / "csrc")],
        extra_compile_args=extra,
        extra_link_args=["-fopenmp"],
        py_limited_api=False,
    )
    info = {
        "torch": torch.__version__,
        "torch_cuda": torch.version.cuda,
        "with_cuda": with_cuda,
        "cuda_home": cpp_extension.CUDA_HOME if with_cuda else None,
        "nvcc": _nvcc_version(cpp_extension.CUDA_HOME) if with_cuda else None,
        "arch_list": os.environ.get("TORCH_CUDA_ARCH_LIST") if with_cuda else None,
        "sources": sources,
        "flags": extra,
        "debug": debug,
        "git_sha": _git_sha(),
    }
    if os.environ.get(
        "LNL_IMAGE_BASE"
    ):  # set by docker/Dockerfile*: the base image it was built on
        info["image_base"] = os.environ["LNL_IMAGE_BASE"]
    if os.environ.get("SOURCE_DATE_EPOCH"):
        info["source_date_epoch"] = int(os.environ["SOURCE_DATE_EPOCH"])
    (ROOT / "lnl" / "_build_info.json").write_text(json.dumps(info, indent=2) + "\n")
    return [ext], {"build_ext": cpp_extension.BuildExtension.with_options(use_ninja=True)}


ext_modules, cmdclass = _extensions()

setup(
    name="lnl",
    version="0.1.0",
    description="Learning with noisy labels: LRA-Diffusion, PLReMix/DivideMix, DMLP, IEG, NMTune "
    "on shared C++/CUDA kernels",
    packages=find_packages(include=["lnl", "lnl.*"]),
    package_data={"lnl": ["_build_info.json", "presets/*.yaml"]},
    python_requires=">=3.10",
    ext_modules=ext_modules,
    cmdclass=cmdclass,
    extras_require={"gpu": ["faiss-gpu"]},
)
