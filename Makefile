# vkgrad developer targets. `make help` lists them.
SHELL := /bin/bash
.SHELLFLAGS := -euo pipefail -c
.DEFAULT_GOAL := help

PY := .venv/bin/python
STAMP := .venv/.vkgrad-setup
# Extra arguments: `make train ARGS="--epochs 2"`, `make test PYTEST_ARGS="-k conv -x"`.
ARGS ?=
PYTEST_ARGS ?=
NP ?= 2

.PHONY: help setup shaders test test-sync train train-dist train-gpt bench gpu-check clean distclean

help:
	@echo "make setup      Debian packages, .venv, patched Kompute, vkgrad (editable), shaders"
	@echo "make train      train LeNet5 on MNIST on the best device (ARGS=... passes options)"
	@echo "make train-dist the same, data-parallel on NP MPI ranks (NP=2; ARGS=...)"
	@echo "make train-gpt  train a character-level GPT on Python's docs and print a sample"
	@echo "make test       the whole test suite (PYTEST_ARGS=... passes options)"
	@echo "make test-sync  the Vulkan tests under the Khronos validation layer with"
	@echo "                synchronisation validation; fails on any message from the layer"
	@echo "make bench      run every benchmarks/*.py"
	@echo "make gpu-check  on a GPU machine: build what is missing from .gpu-carry/, run the"
	@echo "                Vulkan tests and benchmarks, write a report (docs/benchmarks.md)"
	@echo "make clean      remove build outputs (keeps .venv); distclean removes .venv too"

# The set-up runs again only when what it depends on changed; scripts/setup.sh writes the stamp.
$(STAMP): scripts/setup.sh pyproject.toml third_party/kompute/kp-0.9.0-vkgrad.patch $(wildcard setup.py)
	bash scripts/setup.sh

setup: $(STAMP)

shaders: setup
	$(PY) tools/build_shaders.py

test: setup shaders
	$(PY) -m pytest -q tests $(PYTEST_ARGS)

# scripts/vk-validate.sh turns the layer on, sends every message of every VkInstance (child
# processes included) to build/vk-validation/validation.log, and fails if there is any.
# pytest's exit status 5 (no test selected) fails too. Full training runs are left out: the
# layer makes them take many minutes, and their kernels are the ones the other tests check.
test-sync: setup shaders
	bash scripts/vk-validate.sh $(PY) -m pytest -q -m "vulkan and not full_run" tests $(PYTEST_ARGS)

train: setup shaders
	$(PY) examples/mnist_lenet5.py $(ARGS)

train-gpt: setup shaders
	$(PY) examples/char_gpt.py $(ARGS)

# NP ranks of Open MPI's mpiexec (the distributed extra) on this machine, one BLAS thread each;
# --oversubscribe lets NP exceed the cores, and root may run it (containers). Several machines:
# MPIEXEC_ARGS="--hostfile hosts" (README, docs/distributed.md).
MPIEXEC_ARGS ?=
train-dist: setup shaders
	OMPI_ALLOW_RUN_AS_ROOT=1 OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1 \
	.venv/bin/mpiexec -n $(NP) --oversubscribe -x OPENBLAS_NUM_THREADS=1 $(MPIEXEC_ARGS) \
		$(PY) examples/mnist_lenet5.py --distributed $(ARGS)

bench: setup shaders
	@shopt -s nullglob; files=(benchmarks/*.py); \
	if [ $${#files[@]} -eq 0 ]; then echo "bench: no benchmarks/*.py"; exit 0; fi; \
	for f in "$${files[@]}"; do echo "== $$f"; $(PY) "$$f" $(ARGS); done

# On a machine with a GPU, which may lack the loader, kp, a network and .venv: everything comes
# from .gpu-carry/ (scripts/gpu-check-prepare.sh fills it). Uses .venv's Python where there is
# one, else python3 (PYTHON=... overrides). GPU_CHECK_ARGS="--quick -k conv --out DIR".
GPU_CHECK_ARGS ?=
gpu-check:
	PYTHON=$${PYTHON:-$(if $(wildcard $(PY)),$(PY),python3)} bash scripts/gpu-check.sh $(GPU_CHECK_ARGS)

clean:
	rm -rf build dist vkgrad/_spirv .pytest_cache .hypothesis *.egg-info
	find . -path ./.venv -prune -o -name __pycache__ -type d -prune -exec rm -rf {} +

distclean: clean
	rm -rf .venv
