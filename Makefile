# Two commands do all the set-up on a fresh machine:
#   make demo   - the whole stack plus a simulated community, end to end
#   make test   - unit and integration tests against a real Kafka broker and PostgreSQL
# Both create .venv and install the project on first use. Needs Python 3.11+, Java 17+ and
# Maven (the broker's jars come from Maven Central); `make system-deps` installs the last two
# on Debian/Ubuntu.

PYTHON ?= $(shell command -v python3.11 || command -v python3)
VENV   ?= .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed
ARGS   ?=

.PHONY: demo test test-fast test-slow lint bench bench-quick stack-up stack-down stack-status system-deps clean

$(STAMP): pyproject.toml
	@test -x "$(BIN)/python" || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[dev]'
	@touch $@

demo: $(STAMP)
	$(BIN)/python -m devstack.demo $(ARGS)

test: $(STAMP)
	$(BIN)/python -m pytest $(ARGS)

test-fast: $(STAMP)  ## unit tests only: no broker, no database
	$(BIN)/python -m pytest -m "not integration and not slow" $(ARGS)

test-slow: $(STAMP)  ## the long crash and soak tests too
	$(BIN)/python -m pytest --run-slow $(ARGS)

BENCH_STAMP := $(VENV)/.installed-bench
$(BENCH_STAMP): $(STAMP)
	$(BIN)/python -m pip install --quiet -e '.[dev,bench]'
	@touch $@

bench: $(BENCH_STAMP)  ## the performance figures (docs/PERFORMANCE.md); minutes
	$(BIN)/python -m bench $(ARGS)

bench-quick: $(BENCH_STAMP)
	$(BIN)/python -m bench --quick $(ARGS)

lint: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/mypy shared services devstack ops importers  # bench: `mypy bench` once the bench extra is installed

stack-up: $(STAMP)
	$(BIN)/python -m devstack up

stack-down: $(STAMP)
	$(BIN)/python -m devstack down

stack-status: $(STAMP)
	$(BIN)/python -m devstack status

system-deps:
	@command -v java >/dev/null && command -v mvn >/dev/null || \
	  (apt-get update -qq && apt-get install -y -qq openjdk-17-jre-headless maven)

clean:
	rm -rf $(VENV) .flywheel .pytest_cache .mypy_cache .ruff_cache
