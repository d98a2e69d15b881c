# Render FastAPI template + memsafe. `make help` lists the targets.
SHELL := /bin/bash
.DEFAULT_GOAL := help

PYTHON ?= $(shell command -v python3.11 || command -v python3)
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed-dev
PROFILE ?= local
PORT ?= 8000
IMAGE ?= render-memsafe-template

.PHONY: help install run dev test test-fast lint fmt typecheck check bench bench-http \
        bench-middleware loadtest loadtest-calibrate emulate docker-build docker-run lock clean

help: ## Show this help
	@grep -E '^[a-zA-Z_-]+:.*?## ' $(MAKEFILE_LIST) | \
	  awk 'BEGIN {FS = ":.*?## "}; {printf "  \033[36m%-13s\033[0m %s\n", $$1, $$2}'

$(STAMP): requirements/dev.lock
	@$(PYTHON) -c 'import sys; sys.exit(0 if sys.version_info[:2] == (3, 11) else "Python 3.11 is required, found " + sys.version.split()[0])'
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet --require-hashes -r requirements/dev.lock
	touch $(STAMP)

install: $(STAMP) ## Create .venv and install the locked dependencies (only when the lock changed)

run: $(STAMP) ## Serve the app through gunicorn on http://127.0.0.1:8000 (PROFILE=local)
	APP_CONFIG=config/$(PROFILE).yaml PORT=$(PORT) $(BIN)/gunicorn -c config/gunicorn.conf.py app.main:app

dev: $(STAMP) ## Serve the app with uvicorn --reload (development only)
	APP_CONFIG=config/$(PROFILE).yaml $(BIN)/uvicorn app.main:app --reload --host 127.0.0.1 --port $(PORT)

test: $(STAMP) ## Run the whole test suite with memsafe branch coverage (>= 90%)
	$(BIN)/pytest --cov=memsafe --cov-branch --cov-report=term --cov-fail-under=90

test-fast: $(STAMP) ## Run the tests that need no real thread, process or server
	$(BIN)/pytest -m 'not slow and not e2e' -q

lint: $(STAMP) ## Ruff lint and format check
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

fmt: $(STAMP) ## Format and autofix with ruff
	$(BIN)/ruff format .
	$(BIN)/ruff check --fix .

typecheck: $(STAMP) ## mypy --strict on memsafe, app and tests
	$(BIN)/mypy

check: lint typecheck test ## Lint, typecheck and test (what CI runs)

bench: $(STAMP) ## memsafe.LRUCache against cachetools, an OrderedDict LRU and functools.lru_cache
	$(BIN)/python -m benchmarks.bench_cache

# The load test defaults to the starter profile unless PROFILE is given explicitly.
LT_PROFILE = $(if $(filter command line environment,$(origin PROFILE)),$(PROFILE),starter)
LT_ARGS = $(if $(DURATION),--duration $(DURATION)) $(if $(USERS),--users $(USERS)) \
  $(if $(SPAWN_RATE),--spawn-rate $(SPAWN_RATE)) $(if $(PLAN),--plan $(PLAN)) \
  $(if $(MAX_RSS_MB),--max-rss-mb $(MAX_RSS_MB)) \
  $(if $(MAX_SLOPE_MB_PER_MIN),--max-slope-mb-per-min $(MAX_SLOPE_MB_PER_MIN)) \
  $(if $(MAX_P95_MS),--max-p95-ms $(MAX_P95_MS)) $(if $(CONFIDENCE),--confidence $(CONFIDENCE)) \
  $(if $(MIN_GROWTH_MB),--min-growth-mb $(MIN_GROWTH_MB)) $(if $(SMOKE),--smoke)

loadtest: $(STAMP) ## Load-test the real server, judge its memory: exit 0 PASS, 1 FAIL, 3 INCONCLUSIVE (PROFILE=starter DURATION=2m PLAN= SMOKE=1)
ifdef SMOKE
	PROFILE=$(LT_PROFILE) $(BIN)/python -m loadtests.smoke
else
	$(BIN)/python -m loadtests.run --profile $(LT_PROFILE) $(LT_ARGS)
endif

loadtest-calibrate: $(STAMP) ## Repeat load tests: false FAIL rate, leak detection, minimum detectable leak (~70 min)
	$(BIN)/python -m loadtests.calibrate --profile $(LT_PROFILE) $(CALIBRATE_ARGS)

emulate: $(STAMP) ## Serve the app inside a cgroup shaped like a Render plan (PLAN=starter; Linux, root)
	$(BIN)/python -m loadtests.emulate --plan $(or $(PLAN),starter) --profile $(LT_PROFILE) --port $(PORT)

docker-build: ## Build the image (needs a Docker engine)
	docker build -t $(IMAGE) .

docker-run: ## Run the image on http://127.0.0.1:8000 with the starter profile (needs Docker)
	docker run --rm -p 8000:10000 --memory 512m --cpus 0.5 -e ADMIN_TOKEN=$${ADMIN_TOKEN:-change-me} $(IMAGE)

bench-http: $(STAMP) ## req/s and p50/p99 of /users/{id} cache hits against a bare endpoint; idle RSS/USS
	$(BIN)/python -m benchmarks.bench_http

bench-middleware: $(STAMP) ## Per-request cost of MemoryMonitorMiddleware against BaseHTTPMiddleware
	$(BIN)/python -m benchmarks.bench_middleware --check

lock: ## Re-pin requirements/*.lock from pyproject.toml (needs uv: pip install uv)
	uv pip compile pyproject.toml --python-version 3.11 --generate-hashes -o requirements/base.lock
	uv pip compile pyproject.toml --extra dev --python-version 3.11 --generate-hashes -o requirements/dev.lock

clean: ## Remove the venv, caches and reports
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache .coverage reports data/*.sqlite3*
