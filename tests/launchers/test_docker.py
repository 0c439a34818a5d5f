"""docker/Dockerfile and docker/Dockerfile.cpu install through the same requirements file and make
targets as CI (.ci/run -> `make test`): parsed here, since no Docker engine runs on this machine."""

from __future__ import annotations

import re
import shlex
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
DOCKER = REPO / "docker"


def instructions(path: Path) -> list[tuple[str, str]]:
    """``(INSTRUCTION, arguments)`` pairs, continuation lines joined and comments dropped."""
    text = re.sub(r"\\\n", " ", "\n".join(ln for ln in path.read_text().splitlines()
                                        if not ln.lstrip().startswith("#")))
    out = []
    for line in text.splitlines():
        if line.strip():
            op, _, rest = line.strip().partition(" ")
            out.append((op.upper(), " ".join(rest.split())))
    return out


def runs(path: Path) -> list[str]:
    return [args for op, args in instructions(path) if op == "RUN"]


def env(path: Path) -> dict[str, str]:
    values = {}
    for op, args in instructions(path):
        if op == "ENV":
            values.update(dict(tok.split("=", 1) for tok in shlex.split(args)))
    return values


def make_recipe(target: str) -> str:
    """The recipe lines of a Makefile target (the tested install path)."""
    lines = (REPO / "Makefile").read_text().splitlines()
    start = next(i for i, ln in enumerate(lines) if re.match(rf"^{re.escape(target)}\s*:", ln))
    recipe = []
    for ln in lines[start + 1:]:
        if not ln.startswith("\t"):
            break
        recipe.append(ln.strip())
    return "\n".join(recipe)


def pins(path: Path) -> dict[str, str]:
    lines = path.read_text().splitlines()
    return dict(ln.split("==") for ln in lines if "==" in ln and not ln.startswith("#"))


@pytest.mark.parametrize("name", ["Dockerfile", "Dockerfile.cpu"])
def test_image_installs_like_ci(name):
    path = DOCKER / name
    steps = runs(path)
    assert "make test" in (REPO / ".ci" / "run").read_text()  # CI's command, from the same Makefile
    assert "-r requirements.txt" in make_recipe("$(VENV)/.installed")
    copied = [args.split()[:-1] for op, args in instructions(path) if op == "COPY"]
    assert any("requirements.txt" in srcs and "Makefile" in srcs for srcs in copied)
    for srcs in copied:
        for src in srcs:
            assert src == "." or (REPO / src).exists(), f"{name} copies {src}, which is not in the repository"
    install = next(i for i, s in enumerate(steps) if s.startswith("make install"))
    build = next(i for i, s in enumerate(steps) if s.startswith("make build"))
    assert install < build
    # No packages besides the requirements files: every pip install reads one of them.
    for step in steps:
        for cmd in re.findall(r"pip install ([^&;]*)", step):
            assert re.search(r"-r (requirements\.txt|docker/requirements-cuda\.txt)\b", cmd), cmd
    ops = [op for op, _ in instructions(path)]
    user = [args for op, args in instructions(path) if op == "USER"]
    assert user and user[-1] not in ("root", "0") and ops.index("USER") > build
    assert (DOCKER / f"{name}.dockerignore").read_text().count(".venv") == 1  # never the host's venv


def test_cuda_image():
    path = DOCKER / "Dockerfile"
    base = next(args for op, args in instructions(path) if op == "FROM")
    assert re.match(r"nvidia/cuda:13\.\d+\.\d+-devel-", base)
    e = env(path)
    archs = e["TORCH_CUDA_ARCH_LIST"].split(";")
    assert {a.removesuffix("+PTX") for a in archs} >= {"8.0", "8.6", "9.0"} and e["LNL_FORCE_CUDA"] == "1"
    assert archs[-1].endswith("+PTX")  # PTX of the newest architecture: GPUs after Hopper JIT it
    steps = " && ".join(runs(path))
    assert "PYTHON_BOOT=python3.12" in steps and "python3.12-dev" in steps
    assert "lnl.info --require-cuda" in steps  # the build fails without the CUDA kernels
    gpu, cpu = pins(DOCKER / "requirements-cuda.txt"), pins(REPO / "requirements.txt")
    assert gpu == {"faiss-gpu": cpu["faiss-cpu"]}  # the same faiss version as CI
    assert "pip uninstall -y faiss-cpu" in steps


def test_cpu_image_runs_make_demo():
    path = DOCKER / "Dockerfile.cpu"
    base = next(args for op, args in instructions(path) if op == "FROM")
    assert base.startswith("python:3.12-slim")
    assert env(path)["LNL_CUDA"] == "0"  # `make demo` then reuses the image's build stamp
    cmd = [args for op, args in instructions(path) if op == "CMD"][-1]
    assert cmd == '["make", "demo"]'


def test_readme_documents_build_run_and_apptainer():
    text = (DOCKER / "README.md").read_text()
    for needle in ("docker build -f docker/Dockerfile -t lnl:cuda .", "docker run --gpus all",
                   "python methods/lra/train_CIFAR.py --device cuda:0",
                   "apptainer build lnl.sif docker-daemon://lnl:cuda",
                   "-v ", "No Docker engine"):
        assert needle in text, needle
