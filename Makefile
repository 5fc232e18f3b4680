# The two commands of the README: `make demo` and `make test`. Both set up what they need.
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed-stamp
ARGS   ?=
PYTEST_ARGS ?=

.PHONY: setup demo test lint typecheck postgres browser deploy-tools bench clean

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[demo,dev]'
	touch $(STAMP)

setup: $(STAMP)

## run the whole hub on the embedded stack with the three-site simulator (ARGS=--check to verify and exit)
demo: setup
	$(BIN)/lothub demo $(ARGS)

## start PostgreSQL if it is down (the integration tests need the real one)
postgres:
	@bash scripts/ensure-postgres.sh

## install Debian's chromium if missing (the UI's end-to-end tests drive it through Playwright)
browser:
	@bash scripts/ensure-chromium.sh

## docker-compose and promtool for the deploy/ tests (scripts/ensure-deploy-tools.sh says what it installs)
deploy-tools:
	@bash scripts/ensure-deploy-tools.sh

lint: setup
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

typecheck: setup
	$(BIN)/mypy

## lint, type-check, then every test tier (the conftest starts the embedded broker)
test: setup postgres browser deploy-tools lint typecheck
	$(BIN)/pytest $(PYTEST_ARGS)

bench: setup postgres
	$(BIN)/python -m bench $(ARGS)

clean:
	rm -rf $(VENV) var .mypy_cache .ruff_cache .pytest_cache
