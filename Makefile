# Two commands on a fresh machine: `make demo` and `make test`. Both create .venv and install
# the project with the pinned versions in constraints.txt first (nothing installed by hand).
PYTHON ?= python3
VENV   ?= .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed
export PREFECT_SERVER_ANALYTICS_ENABLED ?= false
export PYTHONDONTWRITEBYTECODE = 1

.PHONY: install demo test test-fast lint bench clean

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)

$(STAMP): $(BIN)/python pyproject.toml constraints.txt
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -c constraints.txt -e ".[dev]"
	touch $(STAMP)

install: $(STAMP)

demo: $(STAMP)
	$(BIN)/mrv run configs/demo.yaml

test: $(STAMP)
	$(BIN)/pytest

test-fast: $(STAMP)
	$(BIN)/pytest -m "not slow"

lint: $(STAMP)
	$(BIN)/ruff check mrv flows tests benchmarks
	$(BIN)/mypy mrv flows

bench: $(STAMP)
	$(BIN)/python benchmarks/predict.py

clean:
	rm -rf out .pytest_cache .mypy_cache .ruff_cache
