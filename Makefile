# Parley. `make run` serves the site; `make test` runs the suite. See README.md.

PYTHON ?= python3.11
VENV := .venv
BIN := $(VENV)/bin
HOST ?= 127.0.0.1
PORT ?= 8000

# The real parts, for `make test-services` (docs/running.md).
SERVICES_ENV := DATABASE_URL=postgres://postgres@127.0.0.1:5432/parley \
	REDIS_URL=redis://127.0.0.1:6379/1 CACHE_REDIS_URL=redis://127.0.0.1:6379/2

.PHONY: run test test-services bench lint format requirements static migrate services-up browser-up turn-up clean

run: $(VENV)/.runtime static migrate
	DEBUG=1 $(BIN)/python manage.py runserver $(HOST):$(PORT)

test: $(VENV)/.dev static browser-up turn-up
	DJANGO_ENV=test $(BIN)/pytest

test-services: $(VENV)/.dev static services-up browser-up turn-up
	DJANGO_ENV=test $(SERVICES_ENV) $(BIN)/pytest

# Speed and scale against the floors and a peer (docs/performance.md); not part of the
# tests. BENCH_ARGS narrows it, e.g. BENCH_ARGS="--devices 100 --synapse ''".
bench: $(VENV)/.dev static services-up
	$(BIN)/python -m bench.run $(BENCH_ARGS)

lint: $(VENV)/.dev
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/mypy .
	DJANGO_ENV=test $(BIN)/python manage.py makemigrations --check --dry-run
	DJANGO_ENV=test $(BIN)/python manage.py spectacular --fail-on-warn --validate --file /dev/null

format: $(VENV)/.dev
	$(BIN)/ruff check --fix .
	$(BIN)/ruff format .

migrate: $(VENV)/.runtime
	$(BIN)/python manage.py migrate --no-input

# Re-pin after editing requirements.in or requirements-dev.in.
requirements: $(VENV)/.dev
	$(BIN)/pip-compile -q --no-emit-index-url --no-emit-find-links --strip-extras requirements.in -o requirements.txt
	$(BIN)/pip-compile -q --no-emit-index-url --no-emit-find-links --strip-extras requirements-dev.in -o requirements-dev.txt

# Browser libraries come from npm and are copied into a git-ignored static folder.
static: node_modules/.installed
	mkdir -p static/vendor
	# A relative import instead of the bare "libsodium-sumo": no import map (an inline
	# script) is needed, and the module also loads in a Web Worker, where import maps do not apply.
	sed 's#from"libsodium-sumo"#from"./libsodium-sumo.mjs"#' \
		node_modules/libsodium-wrappers-sumo/dist/modules-sumo-esm/libsodium-wrappers.mjs \
		> static/vendor/libsodium-wrappers.mjs
	grep -q 'from"./libsodium-sumo.mjs"' static/vendor/libsodium-wrappers.mjs
	cp node_modules/libsodium-sumo/dist/modules-sumo-esm/libsodium-sumo.mjs static/vendor/libsodium-sumo.mjs
	cp node_modules/qrcode-generator/dist/qrcode.mjs static/vendor/qrcode.mjs

node_modules/.installed: package.json package-lock.json
	npm ci --no-audit --no-fund
	touch $@

$(VENV)/bin/python:
	$(PYTHON) -m venv $(VENV)

$(VENV)/.runtime: requirements.txt | $(VENV)/bin/python
	$(BIN)/pip install --disable-pip-version-check -q -r requirements.txt
	touch $@

$(VENV)/.dev: requirements.txt requirements-dev.txt | $(VENV)/bin/python
	$(BIN)/pip install --disable-pip-version-check -q -r requirements.txt -r requirements-dev.txt
	touch $@ $(VENV)/.runtime

services-up:
	scripts/services-up.sh

# Debian's Chromium, for the browser tests.
browser-up:
	scripts/browser-up.sh

# coturn, for the relay-only call tests (each test session starts its own on loopback).
turn-up:
	scripts/turn-up.sh

clean:
	rm -rf $(VENV) node_modules static/vendor var
