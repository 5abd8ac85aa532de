# Two commands on a fresh machine: `make demo` and `make test`. Both create .venv and install
# the project with the pinned versions in constraints.txt first (nothing installed by hand).
PYTHON ?= python3
VENV   ?= .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed
export PREFECT_SERVER_ANALYTICS_ENABLED ?= false
export PYTHONDONTWRITEBYTECODE = 1

.PHONY: install demo test test-fast lint bench clean serve

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)

$(STAMP): $(BIN)/python pyproject.toml constraints.txt
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -c constraints.txt -e ".[dev]"
	touch $(STAMP)

install: $(STAMP)

demo: $(STAMP)
	$(BIN)/mrv run configs/demo.yaml

# Two worker processes (pytest-xdist): the suite is half subprocesses and servers waiting on each other.
test: $(STAMP)
	$(BIN)/pytest -n 2

test-fast: $(STAMP)
	$(BIN)/pytest -n 2 -m "not slow"

lint: $(STAMP)
	$(BIN)/ruff check mrv flows tests benchmarks
	$(BIN)/mypy mrv flows

bench: $(STAMP)
	$(BIN)/python benchmarks/predict.py
	$(BIN)/python benchmarks/ingest.py

# `make serve`: a local Prefect server (UI and API on http://127.0.0.1:4200) plus the process serving the
# deployments of flows/deploy.py (monthly monitoring per configs/*.yaml; on-demand ingest-samples/submit and
# verification-report/verify). Ctrl-C stops both. Trigger a run: `prefect deployment run ingest-samples/submit
# -p file=FILE -p agency=NAME` with PREFECT_API_URL=http://127.0.0.1:4200/api.
serve: $(STAMP)
	$(BIN)/prefect server start --host 127.0.0.1 --port 4200 & server=$$!; \
	trap 'kill $$server 2>/dev/null' EXIT INT TERM; \
	PREFECT_API_URL=http://127.0.0.1:4200/api $(BIN)/python -m flows.deploy --wait-for-api 120

clean:
	rm -rf out .pytest_cache .mypy_cache .ruff_cache
