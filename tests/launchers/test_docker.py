"""docker/Dockerfile and docker/Dockerfile.cpu install through the same requirements file and make
targets as CI (.ci/run -> `make test`): parsed here. `make test-images` (LNL_TEST_IMAGES=1) also builds
lnl:cpu and trains on digits inside it (test_built_image_trains_on_digits; not in `make test`: the
build downloads the pinned wheels and takes tens of minutes)."""

from __future__ import annotations

import importlib.metadata
import json
import os
import re
import shlex
import subprocess
import uuid
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
DOCKER = REPO / "docker"


def instructions(path: Path) -> list[tuple[str, str]]:
    """``(INSTRUCTION, arguments)`` pairs, continuation lines joined and comments dropped."""
    text = re.sub(
        r"\\\n",
        " ",
        "\n".join(ln for ln in path.read_text().splitlines() if not ln.lstrip().startswith("#")),
    )
    out = []
    for line in text.splitlines():
        if line.strip():
            op, _, rest = line.strip().partition(" ")
            out.append((op.upper(), " ".join(rest.split())))
    return out


def runs(path: Path) -> list[str]:
    """The commands of the RUN steps, without their ``--mount=...`` options."""
    return [re.sub(r"^(--\S+\s+)+", "", args) for op, args in instructions(path) if op == "RUN"]


def env(path: Path) -> dict[str, str]:
    values = {}
    for op, args in instructions(path):
        if op == "ENV":
            values.update(dict(tok.split("=", 1) for tok in shlex.split(args)))
    return values


def base_default(path: Path) -> str:
    """The default of the ``ARG BASE`` that the first ``FROM ${BASE}`` uses."""
    ops = instructions(path)
    assert ("FROM", "${BASE}") in ops, f"{path.name} must build FROM the BASE argument"
    return next(
        args.split("=", 1)[1] for op, args in ops if op == "ARG" and args.startswith("BASE=")
    )


def make_recipe(target: str) -> str:
    """The recipe lines of a Makefile target (the tested install path)."""
    lines = (REPO / "Makefile").read_text().splitlines()
    start = next(i for i, ln in enumerate(lines) if re.match(rf"^{re.escape(target)}\s*:", ln))
    recipe = []
    for ln in lines[start + 1 :]:
        if not ln.startswith("\t"):
            break
        recipe.append(ln.strip())
    return "\n".join(recipe)


def pins(path: Path) -> dict[str, str]:
    lines = path.read_text().splitlines()
    return dict(ln.split("==") for ln in lines if "==" in ln and not ln.startswith("#"))


REQUIREMENTS = (
    r"-r (requirements\.txt|docker/requirements-cuda\.txt|docker/requirements-cuda-toolkit\.txt)"
)


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
            assert src == "." or (REPO / src).exists(), (
                f"{name} copies {src}, which is not in the repository"
            )
    install = next(
        i for i, s in enumerate(steps) if re.match(r"make install PYTHON_BOOT=python3\b", s)
    )
    build = next(i for i, s in enumerate(steps) if re.search(r"\bmake build\b", s))
    assert install < build
    # The system packages come from docker/system-deps.sh, before anything else runs.
    assert steps[0].startswith("sh /tmp/system-deps.sh")
    # No packages besides the requirements files: every pip install reads one of them.
    for text in steps + [(DOCKER / "cuda-toolkit.sh").read_text()]:
        for cmd in re.findall(r"pip\"? install ([^&;\n]*)", text):
            assert re.search(REQUIREMENTS, cmd), cmd
    ops = [op for op, _ in instructions(path)]
    user = [args for op, args in instructions(path) if op == "USER"]
    assert user and user[-1] not in ("root", "0") and ops.index("USER") > build
    ignore = (DOCKER / f"{name}.dockerignore").read_text().splitlines()
    assert (
        ".venv" in ignore and ".git" in ignore
    )  # never the host's venv; the commit is a build arg


@pytest.mark.parametrize("name", ["Dockerfile", "Dockerfile.cpu"])
def test_image_records_commit_base_and_date(name):
    path = DOCKER / name
    args = [a.split("=")[0] for op, a in instructions(path) if op == "ARG"]
    assert {"BASE", "GIT_SHA", "SOURCE_DATE_EPOCH"} <= set(args)
    assert env(path)["LNL_IMAGE_BASE"] == "${BASE}"
    assert any(s.startswith("LNL_GIT_SHA=${GIT_SHA} make build") for s in runs(path))
    recipe = make_recipe("image-cuda" if name == "Dockerfile" else "image-cpu")
    assert f"image_args,docker/{name})" in recipe
    makefile = (REPO / "Makefile").read_text()
    assert (
        "--build-arg GIT_SHA=$(GIT_SHA) --build-arg SOURCE_DATE_EPOCH=$(SOURCE_DATE_EPOCH)"
        in makefile
    )
    setup = (REPO / "setup.py").read_text()
    assert all(key in setup for key in ('"LNL_GIT_SHA"', '"LNL_IMAGE_BASE"', '"SOURCE_DATE_EPOCH"'))


def test_cuda_image():
    path = DOCKER / "Dockerfile"
    assert re.fullmatch(
        r"nvidia/cuda:13\.\d+\.\d+-devel-ubuntu24\.04@sha256:[0-9a-f]{64}", base_default(path)
    )
    e = env(path)
    archs = e["TORCH_CUDA_ARCH_LIST"].split(";")
    assert {a.removesuffix("+PTX") for a in archs} >= {"8.0", "8.6", "9.0"} and e[
        "LNL_FORCE_CUDA"
    ] == "1"
    assert archs[-1].endswith("+PTX")  # PTX of the newest architecture: GPUs after Hopper JIT it
    steps = runs(path)
    joined = " && ".join(steps)
    assert "PYTHON_BOOT=python3" in joined
    assert "lnl.info --require-cuda" in joined  # the build fails without the CUDA kernels
    gpu, cpu = pins(DOCKER / "requirements-cuda.txt"), pins(REPO / "requirements.txt")
    assert gpu == {"faiss-gpu": cpu["faiss-cpu"]}  # the same faiss version as CI
    assert "pip uninstall -y faiss-cpu" in joined
    # A base without a toolkit gets nvcc from NVIDIA's wheels, after the venv and before the build.
    toolkit = next(
        i for i, s in enumerate(steps) if s.startswith("sh docker/cuda-toolkit.sh .venv/bin/pip")
    )
    assert toolkit < next(i for i, s in enumerate(steps) if "make build" in s)
    assert e["CUDA_HOME"] == "/usr/local/cuda"


def test_cuda_toolkit_wheels_match_torch():
    """The wheels' compiler is torch's CUDA release, and their runtime is the one torch's wheel pins."""
    import torch

    toolkit = pins(DOCKER / "requirements-cuda-toolkit.txt")
    assert {
        "nvidia-cuda-nvcc",
        "nvidia-cuda-crt",
        "nvidia-nvvm",
        "nvidia-cuda-cccl",
        "nvidia-cuda-runtime",
    } == set(toolkit)
    if torch.version.cuda is None:
        pytest.skip("this torch is a CPU build: no CUDA release to compare with")
    assert all(v.startswith(torch.version.cuda + ".") for v in toolkit.values()), (
        torch.version.cuda,
        toolkit,
    )
    runtime = [
        r for r in importlib.metadata.requires("torch") or [] if r.startswith("nvidia-cuda-runtime")
    ]
    if runtime:  # PyPI's Linux wheel lists it; other builds bundle their runtime
        assert f"nvidia-cuda-runtime=={toolkit['nvidia-cuda-runtime']}" in runtime[0].replace(
            " ", ""
        )


def test_cpu_image_runs_make_demo():
    path = DOCKER / "Dockerfile.cpu"
    assert re.fullmatch(r"python:3\.12-slim@sha256:[0-9a-f]{64}", base_default(path))
    assert env(path)["LNL_CUDA"] == "0"  # `make demo` then reuses the image's build stamp
    cmd = [args for op, args in instructions(path) if op == "CMD"][-1]
    assert cmd == '["make", "demo"]'


def test_readme_documents_build_run_and_apptainer():
    text = (DOCKER / "README.md").read_text()
    for needle in (
        "docker build -f docker/Dockerfile -t lnl:cuda .",
        "docker run --gpus all",
        "python methods/lra/train_CIFAR.py --device cuda:0",
        "make image-cpu",
        "make image-cuda",
        "apptainer build lnl.sif docker-daemon://lnl:cuda",
        "docker-archive:",
        "podman save",
        "make test-images",
        "-v ",
    ):
        assert needle in text, needle


# --- the built image (make test-images) -------------------------------------------------------------

ENGINE = os.environ.get("ENGINE", "docker")


def run_in_image(image: str, cmd: list[str], runs: Path) -> subprocess.CompletedProcess:
    """``cmd`` in a container of ``image`` with ``runs`` at /runs and one intra-op thread: ``$ENGINE run``,
    or with IMAGE_RUNNER=buildah through ``buildah run`` (where podman cannot start containers, as on
    our development machine: no rlimits, hybrid cgroups)."""
    if os.environ.get("IMAGE_RUNNER") != "buildah":
        return subprocess.run(
            [ENGINE, "run", "--rm", "-e", "OMP_NUM_THREADS=1", "-v", f"{runs}:/runs", image, *cmd],
            capture_output=True,
            text=True,
            timeout=3600,
        )
    name = f"lnl-test-{uuid.uuid4().hex[:8]}"
    subprocess.run(["buildah", "from", "--name", name, image], check=True, capture_output=True)
    try:
        return subprocess.run(
            [
                "buildah",
                "run",
                "--isolation",
                "chroot",
                "--env",
                "OMP_NUM_THREADS=1",
                "-v",
                f"{runs}:/runs",
                name,
                "--",
                *cmd,
            ],
            capture_output=True,
            text=True,
            timeout=3600,
        )
    finally:
        subprocess.run(["buildah", "rm", name], capture_output=True)


def host_commit() -> str:
    out = subprocess.run(
        ["git", "describe", "--always", "--dirty", "--abbrev=40"],
        cwd=REPO,
        capture_output=True,
        text=True,
    )
    return out.stdout.strip() or "unknown"


@pytest.mark.slow
@pytest.mark.skipif(
    os.environ.get("LNL_TEST_IMAGES") != "1",
    reason="builds lnl:cpu (tens of minutes, downloads the pinned wheels): `make test-images`",
)
def test_built_image_trains_on_digits(tmp_path):
    """`make image-cpu` (ENGINE, BASE, ENGINE_ARGS from the environment), then lnl.info and a 2-epoch
    digits run inside the image; its results match the same run in this process."""
    import torch

    from lnl.engine import read_jsonl
    from methods import demo

    build = subprocess.run(
        ["make", "image-cpu"], cwd=REPO, capture_output=True, text=True, timeout=7200
    )
    assert build.returncode == 0, build.stdout[-3000:] + build.stderr[-3000:]
    runs = tmp_path / "runs"
    runs.mkdir()
    runs.chmod(0o777)  # the image runs as uid 1000

    info = run_in_image("lnl:cpu", ["python", "-m", "lnl.info"], runs)
    assert info.returncode == 0, info.stdout + info.stderr
    assert "lnl._C: loaded" in info.stdout and "compiled backends: cpu" in info.stdout
    build_info = json.loads(
        next(ln for ln in info.stdout.splitlines() if ln.startswith("build info: "))[12:]
    )
    assert build_info["git_sha"] == host_commit() and not build_info["with_cuda"]
    assert build_info["image_base"] == (
        os.environ.get("BASE") or base_default(DOCKER / "Dockerfile.cpu")
    )

    flags = ["--methods", "standard", "--epochs", "2", "--device", "cpu", "--seed", "0"]
    run = run_in_image(
        "lnl:cpu", ["python", "-m", "methods.demo", *flags, "--out", "/runs/demo"], runs
    )
    assert run.returncode == 0, run.stdout + run.stderr
    (record,) = read_jsonl(runs / "demo" / "results.jsonl")
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # as in the image: the same pinned wheels then give the same run
    try:
        (host,) = demo.main([*flags, "--out", str(tmp_path / "host")])
    finally:
        torch.set_num_threads(threads)
    assert (record["method"], record["dataset"], record["noise"]) == (
        "standard",
        demo.DEMO_DATASET,
        host["noise"],
    )
    assert record["test_acc"] == pytest.approx(host["test_acc"], abs=1e-9)
