# Every target installs what it needs: a fresh Debian machine needs only `make demo` / `make test`.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed-dev
PYTEST_ARGS ?=

.PHONY: demo test bench lint proto deps system-deps clean

$(STAMP): pyproject.toml | system-deps
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --disable-pip-version-check -e '.[dev]'
	touch $@

deps: $(STAMP)

system-deps:
	@sh scripts/install-system-deps.sh

## demo: start a directory, a broker and an agent, and sign users in (Ctrl-C stops all)
demo: deps system-deps
	$(BIN)/python -m tooling.demo

## test: the whole suite, against a real slapd over real gRPC and mTLS
test: deps system-deps
	$(BIN)/python -m pytest $(PYTEST_ARGS)

## bench: end-to-end sign-ins against a direct LDAP bind, same run (not a test)
bench: deps system-deps
	$(BIN)/python -m tooling.bench $(BENCH_ARGS)

## lint: ruff (lint and format) and mypy --strict
lint: deps
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/mypy

## proto: regenerate pta/v1 from proto/ (the result is committed)
proto: deps
	$(BIN)/python -m tooling.protogen

clean:
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache .demo .bench
