# Two commands on a fresh machine with only Python and make: `make demo`, `make test`.
PYTHON ?= python3
VENV   ?= .venv
BIN    := $(VENV)/bin

.PHONY: demo check test lint bench bench-1m bench-pull clean fuzz

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip

$(VENV)/.installed-dev: pyproject.toml | $(BIN)/python
	$(BIN)/pip install --quiet -e '.[dev]'
	touch $@

$(VENV)/.installed: pyproject.toml | $(BIN)/python
	$(BIN)/pip install --quiet -e .
	touch $@

## demo: set up, then a full sync of a sample CRM (SQLite) into the provider sandboxes and back, ending with
##       the daemon serving its status page for a few seconds and `status`'s table
demo: $(VENV)/.installed
	$(BIN)/crm-esp-sync demo --workdir demo

## check: ruff, mypy, the unit tests and the shared provider suite on SQLite, on every core (the loop before
##        every commit; tests/README.md)
check: $(VENV)/.installed-dev
	$(BIN)/python tests/tiers.py check

## test: set up, then the whole test suite on every core (PostgreSQL/MariaDB from CRM_ESP_SYNC_TEST_*_URL): what CI runs
test: $(VENV)/.installed-dev
	$(BIN)/python tests/tiers.py test

## fuzz: the provider state machine with many more examples and steps from a random seed, every harness and
##       reading on every core; a failure prints its steps and FUZZ_SEED (FUZZ_SEED=... replays it;
##       FUZZ_ARGS='-k postacell' picks harnesses)
FUZZ_EXAMPLES ?= 200
FUZZ_STEPS    ?= 60
fuzz: $(VENV)/.installed-dev
	FUZZ_EXAMPLES=$(FUZZ_EXAMPLES) FUZZ_STEPS=$(FUZZ_STEPS) FUZZ_SEED=$(FUZZ_SEED) $(BIN)/python -m pytest -n auto \
		-p no:cacheprovider tests/integration/providers/test_state_machine.py $(FUZZ_ARGS)

lint: $(VENV)/.installed-dev
	$(BIN)/ruff check sync tests bench migrations
	$(BIN)/mypy

bench: $(VENV)/.installed
	$(BIN)/python bench/sync_throughput.py

## bench-1m: 100,000 and 1,000,000 members on PostgreSQL (BENCH_POSTGRES_URL), with the growth exponent; long
BENCH_POSTGRES_URL ?= postgresql://postgres@127.0.0.1:5432/test
bench-1m: $(VENV)/.installed
	$(BIN)/python bench/sync_throughput.py --members 100000,1000000 --backfill --database-url $(BENCH_POSTGRES_URL)

## bench-pull: the daemon's status pull of 100,000 suppressed subscribers against dlt's rest_api source (dlt goes
##             into bench/.dlt-venv on first use; it is not a dependency of the project)
bench-pull: $(VENV)/.installed
	$(BIN)/python bench/pull_vs_dlt.py

clean:
	rm -rf demo .pytest_cache .mypy_cache .ruff_cache
