# Every target installs what it needs into $(VENV) first, so a fresh clone needs only python3 (>= 3.11) and make.

VENV ?= .venv
PYTHON ?= python3
BIN := $(VENV)/bin
# Reinstalled whenever pyproject.toml changes (new or updated dependencies).
INSTALLED := $(VENV)/.installed
PYTEST_ARGS ?=

.DEFAULT_GOAL := help
.PHONY: help install dev test lint format bench fuzz clean

help:
	@echo "make dev      run the whole stack on this machine (Temporal + Web UI, PostgreSQL, worker, API)"
	@echo "make test     the whole test suite (starts real Temporal, PostgreSQL and S3 over HTTP by itself)"
	@echo "make lint     ruff check, ruff format --check, mypy"
	@echo "make format   ruff format and the fixable lint rules"
	@echo "make bench    benchmarks (print and save their figures)"
	@echo "make fuzz     schemathesis against the OpenAPI schema"
	@echo "make clean    caches and build output (keeps $(VENV) and .data)"

install: $(INSTALLED)

$(INSTALLED): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --upgrade pip
	$(BIN)/python -m pip install -e '.[dev]'
	touch $@

dev: $(INSTALLED)
	$(BIN)/imagejobs dev

test: $(INSTALLED)
	$(BIN)/pytest -q $(PYTEST_ARGS)

lint: $(INSTALLED)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/mypy

format: $(INSTALLED)
	$(BIN)/ruff format .
	$(BIN)/ruff check --fix .

bench: $(INSTALLED)
	$(BIN)/python -m bench.run

fuzz: $(INSTALLED)
	FUZZ_MAX_EXAMPLES=200 $(BIN)/pytest -q -m fuzz $(PYTEST_ARGS)

clean:
	rm -rf build dist .pytest_cache .mypy_cache .ruff_cache
	find . -path ./$(VENV) -prune -o -type d -name __pycache__ -exec rm -rf {} +
