# diffcli: set-up, demo, tests, benchmarks. Every target creates .venv on a fresh machine.
PY ?= python3
VENV := .venv
BIN := $(VENV)/bin
export PYTHONUNBUFFERED := 1

.PHONY: demo test test-all test-torch bench bench-gpu lint install dev reproduce-analytic shards-slurm clean

$(BIN)/python:
	$(PY) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip

$(VENV)/.installed: pyproject.toml | $(BIN)/python
	$(BIN)/python -m pip install -q -e .
	touch $@

$(VENV)/.installed-dev: pyproject.toml | $(BIN)/python
	$(BIN)/python -m pip install -q -e '.[dev]'
	touch $@ $(VENV)/.installed

# The test suite also covers the torch extra (PyTorch models, diffusers folders). A venv without torch first gets
# TORCH_PIN, one known release (a CPU build where pip finds one locally; TORCH_PIN=path/to/wheel picks another).
TORCH_PIN ?= torch==2.13.0
$(VENV)/.installed-test: pyproject.toml | $(BIN)/python
	$(BIN)/python -c "import torch" 2>/dev/null || $(BIN)/python -m pip install -q '$(TORCH_PIN)'
	$(BIN)/python -m pip install -q -e '.[dev,torch]'
	touch $@ $(VENV)/.installed-dev $(VENV)/.installed

install: $(VENV)/.installed
dev: $(VENV)/.installed-dev

## demo: install, sample 64 digits with the exact empirical denoiser, say where the picture is
demo: install
	$(BIN)/diffcli sample --out demo-out --overwrite
	@echo "The picture is at $(CURDIR)/demo-out/grid.png"

## test: the default suite (slow checks excluded), the torch extra's tests included, over TEST_WORKERS processes
## (most of the suite is single-threaded XLA compiling; on 2 cores two workers took 0.77x the time of one, and
## worksteal, which hands a waiting worker the other's queued tests, 0.94x the time of the default scheduling)
TEST_WORKERS ?= 2
test: $(VENV)/.installed-test
	$(BIN)/python -m pytest -n $(TEST_WORKERS) --dist worksteal

test-all: $(VENV)/.installed-test
	$(BIN)/python -m pytest -n $(TEST_WORKERS) --dist worksteal -m ''

## test-torch: only the tests of PyTorch models and diffusers folders
test-torch: $(VENV)/.installed-test
	$(BIN)/python -m pytest tests/test_torch_bridge.py tests/test_torch_export.py tests/test_model_commands.py

bench: dev
	@for b in benchmarks/bench_*.py; do m=$$(basename $$b .py); echo "== $$m"; $(BIN)/python -m benchmarks.$$m --quick || exit 1; done

## bench-gpu: every GPU measurement in one run of under 8 minutes (benchmarks/gpu_suite.py), over the machine's own
## CUDA JAX (no .venv: the GPU machines reach no registry); one JSON + table in benchmarks/results/gpu_suite_<device>.json
## GPU_PY=python3, GPU_ARGS="--mirror DIR" also copies the JSON there after every part; --cpu / --quick on a CPU.
## The install may fail where pip cannot build offline: the suite then imports diffcli from this folder.
GPU_PY ?= python3
GPU_ARGS ?=
bench-gpu:
	-$(GPU_PY) -m pip install -q --no-deps --no-build-isolation -e .
	$(GPU_PY) -m benchmarks.gpu_suite $(GPU_ARGS)

lint: dev
	$(BIN)/ruff check diffcli tests benchmarks

## reproduce-analytic: train (or reuse) the digits reference, run every analytical denoiser from the same noise,
## print the MSE / r2 / seconds-per-step / peak-memory table (benchmarks/results/compare_analytic.json)
reproduce-analytic: dev
	$(BIN)/python benchmarks/compare_analytic.py --recipe recipes/compare-analytic.toml

## shards-slurm: seed-sharded sampling as a SLURM array job, then one merge (SHARDS=8 by default)
SHARDS ?= 8
shards-slurm: install
	$(BIN)/diffcli index-build --dataset afhq
	jid=$$(sbatch --parsable --array=0-$$(($(SHARDS)-1)) --gres=gpu:1 --wrap \
	  '$(BIN)/diffcli sample --recipe recipes/slurm-array.toml --shard $${SLURM_ARRAY_TASK_ID}/$(SHARDS) --out out/afhq-shards/$${SLURM_ARRAY_TASK_ID}'); \
	sbatch --dependency=afterok:$$jid --wrap '$(BIN)/diffcli merge out/afhq-shards/* --out out/afhq'

clean:
	rm -rf demo-out out .pytest_cache
