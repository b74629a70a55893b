# Every target installs what it needs into $(VENV) first, so a fresh clone needs only python3 (>= 3.11) and make.

VENV ?= .venv
PYTHON ?= python3
BIN := $(VENV)/bin
# Reinstalled whenever pyproject.toml changes (new or updated dependencies).
INSTALLED := $(VENV)/.installed
PYTEST_ARGS ?=
# The canvas app: installed from the committed lock, rebuilt when its sources change.
WEB_MODULES := web/node_modules/.package-lock.json
WEB_BUILD := web/dist/index.html
WEB_SOURCES := $(shell find web/src -type f 2>/dev/null) web/index.html web/vite.config.ts web/tsconfig.json
CHROMIUM ?= /usr/bin/chromium

.DEFAULT_GOAL := help
.PHONY: help install web chromium api-types dev test lint format bench fuzz clean

help:
	@echo "make dev      build the canvas, run the whole stack (Temporal + Web UI, PostgreSQL, worker, API)"
	@echo "make test     the whole test suite (real Temporal, PostgreSQL, S3 over HTTP and Chromium)"
	@echo "make lint     ruff, mypy, import layers, and the canvas' tsc, eslint and prettier"
	@echo "make web      build the canvas app (web/dist), served by the API at /"
	@echo "make api-types  regenerate web/openapi.json and the canvas' API types (with the vocabulary's enums) from the API"
	@echo "make format   ruff format, the fixable lint rules, and prettier for the canvas"
	@echo "make bench    benchmarks (print and save their figures)"
	@echo "make fuzz     schemathesis against the OpenAPI schema"
	@echo "make clean    caches and build output (keeps $(VENV) and .data)"

install: $(INSTALLED)

$(INSTALLED): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --upgrade pip
	$(BIN)/python -m pip install -e '.[dev]'
	touch $@

$(WEB_MODULES): web/package.json web/package-lock.json
	cd web && npm ci --no-audit --no-fund
	touch $@

$(WEB_BUILD): $(WEB_MODULES) $(WEB_SOURCES)
	cd web && npm run build

web: $(WEB_BUILD)

# The browser tests drive Debian's Chromium; install it when missing and we can (root with apt-get).
chromium:
	@test -x $(CHROMIUM) || { command -v apt-get >/dev/null && [ "$$(id -u)" = 0 ] \
		&& apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium; } \
		|| { echo "Chromium is missing at $(CHROMIUM): install Debian's chromium package"; exit 1; }

api-types: $(INSTALLED) $(WEB_MODULES)
	$(BIN)/imagejobs openapi --output web/openapi.json
	cd web && npm run gen:api

dev: $(INSTALLED) $(WEB_BUILD)
	$(BIN)/imagejobs dev

test: $(INSTALLED) $(WEB_BUILD) chromium
	$(BIN)/pytest -q $(PYTEST_ARGS)

lint: $(INSTALLED) $(WEB_MODULES)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/mypy
	$(BIN)/lint-imports --no-cache
	cd web && npm run typecheck && npm run lint

format: $(INSTALLED) $(WEB_MODULES)
	$(BIN)/ruff format .
	$(BIN)/ruff check --fix .
	cd web && npm run format

bench: $(INSTALLED)
	$(BIN)/python -m bench.run

fuzz: $(INSTALLED)
	FUZZ_MAX_EXAMPLES=200 $(BIN)/pytest -q -m fuzz $(PYTEST_ARGS)

clean:
	rm -rf build dist web/dist .pytest_cache .mypy_cache .ruff_cache
	find . -path ./$(VENV) -prune -o -type d -name __pycache__ -exec rm -rf {} +
