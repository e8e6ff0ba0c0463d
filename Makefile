# The two commands a newcomer needs: `make test` and `make demo`.
# Each creates .venv if missing and installs the project into it.
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed

.PHONY: test demo install lint typecheck bench clean

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip

$(STAMP): $(BIN)/python pyproject.toml
	$(BIN)/python -m pip install --quiet -e '.[dev]'
	touch $(STAMP)

install: $(STAMP)

# Two test processes, a test file each at a time: the end-to-end tests spend most
# of their time waiting on the broker (group joins, session timeouts), so the
# suite takes about half as long on two cores. Each process starts its own broker.
test: $(STAMP)
	$(BIN)/python -m pytest -n 2 --dist loadfile schemas streams agents tests

demo: $(STAMP)
	$(BIN)/driftline demo

lint: $(STAMP)
	$(BIN)/ruff check schemas streams agents scripts tests
	$(BIN)/ruff format --check schemas streams agents scripts tests

typecheck: $(STAMP)
	$(BIN)/mypy schemas streams

bench: $(STAMP)
	$(BIN)/driftline bench

clean:
	rm -rf $(VENV) build *.egg-info .pytest_cache .mypy_cache .ruff_cache
