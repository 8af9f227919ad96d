# Two commands do everything on a fresh machine:
#   make demo   set up .venv, train GLAMOR on the default grid world, print the result
#   make test   set up .venv with the test extras, run the test suite
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
PIP := $(PY) -m pip --disable-pip-version-check -q
STAMP := $(VENV)/.installed
TEST_STAMP := $(VENV)/.installed-test

.PHONY: demo test bench ray clean

$(PY):
	$(PYTHON) -m venv $(VENV)

# torch first, pinned: its CPU build is what satisfies pixelplan's torch requirement, so
# installing pixelplan afterwards pulls no CUDA packages.
$(STAMP): pyproject.toml | $(PY)
	$(PIP) install torch==2.13.0
	$(PIP) install -e .
	touch $@

$(TEST_STAMP): $(STAMP) pyproject.toml
	$(PIP) install -e '.[test]'
	touch $@

demo: $(STAMP)
	$(VENV)/bin/pixelplan train --out runs/demo
	@echo "Run directory: runs/demo (summary.json, learning_curve.png, goals_vs_achieved.png, tb/)"

test: $(TEST_STAMP)
	$(PY) -m pytest

# Ray, for sweeps and collection on a cluster (docs/cluster.md); the test extras include it.
ray: $(STAMP)
	$(PIP) install -e '.[ray]'

bench: $(STAMP)
	$(PY) benchmarks/throughput.py
	$(PY) benchmarks/planning_compute.py

clean:
	rm -rf runs bench_out .pytest_cache
