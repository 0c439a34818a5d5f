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

.PHONY: install build demo test bench clean info mutate

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
	$(PY) -m lnl.demo --out results/demo

test: build
	bash launchers/install_slurm.sh
	$(PY) -m pytest -q tests

# Deletes each barrier of the CUDA kernels in turn and runs the emulation tests (an hour or more on
# two cores; tests/ops/cuda_emulation/README.md): every deletion must make a test fail.
mutate: build
	$(PY) -m tests.ops.cuda_emulation.mutate --log build/mutate.jsonl

bench: build
	$(PY) benchmarks/bench_knn.py

clean:
	rm -rf build lnl/_C*.so lnl/_build_info.json
