# journey-processor: `make demo` and `make test` work on a fresh machine with Python 3.11+.
PYTHON ?= python3
VENV   ?= .venv
BIN    := $(VENV)/bin
CODE   := processor tests $(wildcard bench)

.PHONY: help demo test lint unit integration chaos chaos-short bench bench-smoke bench-memory bench-timers broker worker docs clean

help:
	@echo "make demo         create $(VENV), install, run the live demo (Ctrl-C stops it)"
	@echo "make test         lint, type-check and run every test (starts its own broker)"
	@echo "make lint         ruff (lint and format check) and mypy --strict"
	@echo "make unit         tests without a broker"
	@echo "make integration  tests against the embedded broker"
	@echo "make chaos        the long chaos run (SEED=n DURATION=s CUSTOMERS=n ORDER=partition|event-time)"
	@echo "make chaos-short  the short chaos run alone (3 to 4 minutes; make test runs it too)"
	@echo "make bench        the end-to-end benchmark (prints figures; installs the bench extra)"
	@echo "make bench-smoke  the benchmark on 3,000 records, a quick check that it still runs"
	@echo "make bench-memory one worker holding 1M customers: resident memory, restart-to-ready"
	@echo "make bench-timers timer tick cost against customers holding timers"
	@echo "make docs         regenerate the README's configuration table"
	@echo "make broker       the embedded broker on 127.0.0.1:9092"
	@echo "make worker       one worker against JOURNEY_BROKER_URL"

$(BIN)/journey: pyproject.toml
	@$(PYTHON) -c 'import sys; sys.exit(sys.version_info < (3, 11) and "Python 3.11+ is needed")'
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e '.[dev]'
	@touch $@

demo: $(BIN)/journey
	$(BIN)/journey demo

lint: $(BIN)/journey
	$(BIN)/ruff check $(CODE)
	$(BIN)/ruff format --check $(CODE)
	$(BIN)/mypy

test: lint
	$(BIN)/pytest -q

unit: $(BIN)/journey
	$(BIN)/pytest -q -m "not integration and not chaos"

integration: $(BIN)/journey
	$(BIN)/pytest -q -m "integration and not chaos"

SEED      ?= 1
DURATION  ?= 300
CUSTOMERS ?= 2000
ORDER     ?= partition
chaos: $(BIN)/journey
	$(BIN)/python -m tests.chaos --seed $(SEED) --duration $(DURATION) --customers $(CUSTOMERS) --order $(ORDER)

chaos-short: $(BIN)/journey
	$(BIN)/pytest -q -m chaos tests/chaos/test_chaos.py

# The bench extra (quixstreams, for the peer row) only for the benchmark targets.
$(BIN)/.bench: $(BIN)/journey
	$(BIN)/pip install --quiet -e '.[dev,bench]'
	@touch $@

bench: $(BIN)/.bench
	$(BIN)/python -m bench.run $(BENCH_ARGS)

bench-smoke: $(BIN)/.bench
	$(BIN)/python -m bench.run --events 3000 --quick

bench-memory: $(BIN)/journey
	$(BIN)/python -m bench.memory $(BENCH_ARGS)

bench-timers: $(BIN)/journey
	$(BIN)/python -m bench.timers

docs: $(BIN)/journey
	$(BIN)/python -m processor.docs README.md

broker: $(BIN)/journey
	$(BIN)/journey broker

worker: $(BIN)/journey
	$(BIN)/journey worker

clean:
	rm -rf $(VENV) journey-data .pytest_cache .mypy_cache .ruff_cache .hypothesis
