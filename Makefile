# The two commands of the README: `make demo` and `make test`. Both create .venv, install the pinned
# requirements, build lnl._C (incrementally: ninja keeps build/ between runs) and are idempotent.
SHELL := /bin/bash
VENV ?= .venv
PY := $(VENV)/bin/python
PIP := $(VENV)/bin/pip
PYTHON_BOOT ?= python3
# nvcc lives here on our machines; an unset CUDA_HOME with no toolkit gives a CPU-only build.
export CUDA_HOME ?= $(wildcard /usr/local/cuda)
export MAX_JOBS ?= 2
LNL_CUDA ?= auto
BUILD_STAMP := build/.stamp-cuda-$(LNL_CUDA)
CSRC := $(shell find csrc -name '*.cpp' -o -name '*.cu' -o -name '*.h' -o -name '*.cuh' 2>/dev/null)

.PHONY: install build demo test lint bench clean info mutate image-cpu image-cuda test-images

$(VENV)/.installed: requirements.txt
	test -x $(PY) || $(PYTHON_BOOT) -m venv $(VENV)
	$(PIP) install -q --upgrade pip
	$(PIP) install -q -r requirements.txt
	LNL_SKIP_EXT=1 $(PIP) install -q --no-build-isolation --no-deps -e .
	touch $@

install: $(VENV)/.installed

$(BUILD_STAMP): $(VENV)/.installed $(CSRC) setup.py
	@mkdir -p build
	@echo "building lnl._C (LNL_CUDA=$(LNL_CUDA), CUDA_HOME=$(CUDA_HOME)) ..."
	time (LNL_CUDA=$(LNL_CUDA) flock build/.lock $(PY) setup.py -q build_ext --inplace)
	rm -f build/.stamp-cuda-*
	touch $@

build: $(BUILD_STAMP)

info: build
	$(PY) -m lnl.info

demo: build
	$(PY) -m methods.demo --out results/demo

# Lint and format checks first (seconds), then the suite.
test: build lint
	bash launchers/install_slurm.sh
	$(PY) -m pytest -q tests

lint: $(VENV)/.installed
	$(PY) -m ruff check .
	$(PY) -m ruff format --check .

# Deletes each barrier of the CUDA kernels in turn and runs the emulation tests (an hour or more on
# two cores; tests/ops/cuda_emulation/README.md): every deletion must make a test fail.
mutate: build
	$(PY) -m tests.ops.cuda_emulation.mutate --log build/mutate.jsonl

bench: build
	$(PY) benchmarks/bench_knn.py

clean:
	rm -rf build lnl/_C*.so lnl/_build_info.json

# Images (docker/README.md). ENGINE=podman works too; BASE=<image> replaces the Dockerfile's pinned base
# and ENGINE_ARGS adds build options. The commit and its date go in as GIT_SHA / SOURCE_DATE_EPOCH.
ENGINE ?= docker
ENGINE_ARGS ?=
GIT_SHA = $(shell git describe --always --dirty --abbrev=40 2>/dev/null || echo unknown)
SOURCE_DATE_EPOCH ?= $(shell git log -1 --format=%ct 2>/dev/null || echo 0)
# Docker's BuildKit finds <Dockerfile>.dockerignore by itself; podman is told.
image_args = -f $(1) --build-arg GIT_SHA=$(GIT_SHA) --build-arg SOURCE_DATE_EPOCH=$(SOURCE_DATE_EPOCH) \
	$(if $(BASE),--build-arg BASE=$(BASE)) $(if $(filter podman,$(notdir $(ENGINE))),--ignorefile $(1).dockerignore \
	--timestamp $(SOURCE_DATE_EPOCH)) $(ENGINE_ARGS)

image-cpu:
	$(ENGINE) build $(call image_args,docker/Dockerfile.cpu) -t lnl:cpu .

image-cuda:
	$(ENGINE) build $(call image_args,docker/Dockerfile) -t lnl:cuda .

# Builds lnl:cpu and trains on digits inside it (tests/launchers/test_docker.py; slow, not in `make test`).
# Command-line BASE, ENGINE_ARGS and IMAGE_RUNNER (buildah: run through `buildah run`) reach the test.
test-images: install
	LNL_TEST_IMAGES=1 ENGINE=$(ENGINE) $(PY) -m pytest -q tests/launchers/test_docker.py -k built_image
