# Two entry points, each bootstrapping its own virtualenv in .venv on a fresh machine
# that has only python3, pip and make.
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed
REPORT_DIR ?= build/report
PYTEST_ARGS ?=

.PHONY: report test lint bench clean

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -e ".[test,notebooks,dask]"
	touch $(STAMP)

report: $(STAMP)
	$(PY) -m amla_numerics report --out $(REPORT_DIR)

# two test workers on two cores, one BLAS thread each (more threads spin against the other worker)
test: $(STAMP)
	OPENBLAS_NUM_THREADS=1 OMP_NUM_THREADS=1 $(PY) -m pytest -n 2 $(PYTEST_ARGS)

lint: $(STAMP)
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .
	$(VENV)/bin/mypy

bench: $(STAMP)
	for f in experiments/bench_*.py; do $(PY) $$f || exit 1; done

clean:
	rm -rf $(VENV) build .pytest_cache .hypothesis
