# Two commands do all set-up on a fresh machine with Python 3.11+ and pip:
#   make demo   runs the main job on the embedded SYNTHETIC sample data and the simulated broker
#   make test   runs the test suite
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed

.PHONY: demo test test-fast bench lint collect lab notebooks clean-venv

# Cache compiled modules (__pycache__, ignored by git) even where the environment says not to:
# without it pytest rewrites every test module's asserts in every worker on every run (15 s),
# and each kernel and child process compiles the package again.
unexport PYTHONDONTWRITEBYTECODE

$(BIN)/python:
	@$(PYTHON) -c 'import sys; sys.exit(0 if sys.version_info >= (3, 11) else "ops-runner needs Python 3.11+, found " + sys.version.split()[0])'
	$(PYTHON) -m venv $(VENV)

# Re-install only when the pins change; register the venv's kernel inside the venv itself.
# uv (from PyPI through pip) installs the same pins in a fraction of pip's time (CI: 114 s ->
# 15 s). uv reads no pip configuration (mirrors, find-links): where it cannot be had or cannot
# install, pip does the same install. Modules are compiled to bytecode when first imported
# (all of them up front took 30 s more, most never imported).
UV := uv==0.13.10
$(STAMP): pyproject.toml | $(BIN)/python
	if $(BIN)/python -m pip install --quiet "$(UV)" && \
		$(BIN)/uv pip install --python $(BIN)/python --quiet -e ".[dev]"; then :; \
	else \
		echo "uv could not install the pins: installing them with pip"; \
		$(BIN)/python -m pip install --quiet --upgrade pip && \
		$(BIN)/python -m pip install --quiet -e ".[dev]"; \
	fi
	$(BIN)/python -m ipykernel install --sys-prefix --name ops-runner --display-name "Python (ops-runner)" >/dev/null
	@touch $(STAMP)

# vectorbt compiles its Numba functions on first use (about 40 s) into a cache in the venv:
# fill it once, so test workers and research kernels load compiled code instead of each
# compiling its own. .ci/run builds it on the second core while `make lint` runs.
WARM := $(VENV)/.numba-warm
$(WARM): $(STAMP)
	$(BIN)/python -m ops_runner.strategy.warmup
	@touch $(WARM)

# Import what the test workers import (collecting the suite), once: after a fresh install,
# workers starting together would each compile the same modules. .ci/run does it after lint.
collect: $(STAMP)
	$(BIN)/python -m pytest --collect-only -q >/dev/null

demo: $(WARM)
	$(BIN)/ops-runner demo

# One worker more than cores: many tests wait on a socket, a child process, a kernel starting
# or a hang on purpose, and the extra worker fills that time (2 cores, the whole suite: 605 s ->
# 583 s; test-fast, which leaves out notebook kernels and slow tests: 119 s -> 102 s).
WORKERS ?= $(shell $(PYTHON) -c 'import os; print(len(os.sched_getaffinity(0)) + 1)')

test: $(WARM)
	$(BIN)/python -m pytest -n $(WORKERS) --dist worksteal

test-fast: $(WARM)
	$(BIN)/python -m pytest -n $(WORKERS) --dist worksteal -m "not notebook and not slow"

bench: $(STAMP)
	$(BIN)/python benchmarks/run_all.py $(BENCH)  # make bench BENCH="sweep qa": a subset

lint: $(STAMP)
	$(BIN)/ruff check ops_runner tests benchmarks notebooks
	$(BIN)/ruff format --check ops_runner tests benchmarks
	$(BIN)/lint-imports
	$(BIN)/mypy

lab: $(STAMP)
	$(BIN)/ops-runner lab

# Each notebook is an .ipynb and its py:percent text (jupytext.toml): after editing either, this
# writes the other from the newer one, keeping the .ipynb's cell ids.
notebooks: $(STAMP)
	$(BIN)/jupytext --sync notebooks/*.ipynb notebooks/research/*.ipynb

clean-venv:
	rm -rf $(VENV)
