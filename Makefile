# The two commands a newcomer needs: `make test` and `make demo`.
# Each creates .venv if missing and installs the project into it.
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed

.PHONY: test test-kafka test-integration demo install lint typecheck bench clean

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip

$(STAMP): $(BIN)/python pyproject.toml
	$(BIN)/python -m pip install --quiet -e '.[dev]'
	touch $(STAMP)

install: $(STAMP)

# Three test processes, a test file each at a time: the end-to-end tests spend most
# of their time waiting on the broker (group joins, session timeouts), so on two
# cores a third process fills the waits: 7:59 against 9:36-9:42 with two, the same
# 2,308 tests on a quiet machine (2026-12-04); two took about half the time of one.
# Each process starts its own broker. Files in collection order
# (--no-loadscope-reorder), where tests/conftest.py puts the longest first
# (SLOW_FIRST), so that the processes end together.
# tests/integration needs more than Python (make test-integration runs it).
test: $(STAMP)
	$(BIN)/python -m pytest -n 3 --dist loadfile --no-loadscope-reorder \
		schemas streams agents tests --ignore=tests/integration

# The end-to-end tests on Apache Kafka instead of the embedded broker: the test
# process starts scripts/apache-kafka (KRaft, one node; Java 17+ and Maven; the
# broker's jars are fetched once into .cache/apache-kafka). One process: two
# (-n 2, a broker each) took as long here, two JVMs and the workers on 2 cores.
KAFKA_PYTEST ?= -p no:xdist
test-kafka: $(STAMP)
	DRIFTLINE_TEST_BROKER=apache-kafka $(BIN)/python -m pytest $(KAFKA_PYTEST) tests/e2e

# Everything that needs more than Python: the end-to-end tests on Apache Kafka,
# then tests/integration: scripts/apache-kafka itself, the alert rules' unit
# tests (promtool), the audit report in headless Chromium, the compose file
# (docker-compose config) and the worker image's install in a fresh venv.
# scripts/integration-deps installs what they need (apt-get, pip), once.
test-integration: test-kafka
	scripts/integration-deps
	$(BIN)/python -m pytest -n 2 --dist loadfile tests/integration

demo: $(STAMP)
	$(BIN)/driftline demo

lint: $(STAMP)
	$(BIN)/ruff check schemas streams agents scripts scripts/apache-kafka tests
	$(BIN)/ruff format --check schemas streams agents scripts scripts/apache-kafka tests

typecheck: $(STAMP)
	$(BIN)/mypy schemas streams

bench: $(STAMP)
	$(BIN)/driftline bench

clean:
	rm -rf $(VENV) build *.egg-info .pytest_cache .mypy_cache .ruff_cache
