# Render FastAPI template + memsafe. `make help` lists the targets.
SHELL := /bin/bash
.DEFAULT_GOAL := help

PYTHON ?= $(shell command -v python3.11 || command -v python3)
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed-dev
PROFILE ?= local
PORT ?= 8000
# make run/dev listen on loopback only (override: make run HOST=0.0.0.0); the image and Render
# bind 0.0.0.0 (Dockerfile ENV HOST). `:=` so a shell HOST (zsh: the machine name) is ignored.
HOST := 127.0.0.1
IMAGE ?= render-memsafe-template

.PHONY: help install run dev test test-fast lint fmt typecheck check bench bench-http \
        bench-middleware bench-recycle bench-sizeof bench-slowloris loadtest loadtest-calibrate \
        emulate leak-report browser config-docs docker-build docker-run lock clean chaos

help: ## Show this help
	@grep -E '^[a-zA-Z_-]+:.*?## ' $(MAKEFILE_LIST) | \
	  awk 'BEGIN {FS = ":.*?## "}; {printf "  \033[36m%-13s\033[0m %s\n", $$1, $$2}'

$(STAMP): requirements/dev.lock memsafe/pyproject.toml
	@$(PYTHON) -c 'import sys; sys.exit(0 if sys.version_info[:2] == (3, 11) else "Python 3.11 is required, found " + sys.version.split()[0])'
	@echo "Installing the locked dependencies into $(VENV) (about 30 s the first time; again only when requirements/dev.lock changes)..."
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	@$(BIN)/python -m pip install --quiet --upgrade pip
	@$(BIN)/python -m pip install --quiet --require-hashes -r requirements/dev.lock
	@# memsafe as its own distribution, editable, so `import memsafe` works from any directory
	@# with .venv/bin/python (no dependency: psutil comes from the lock above).
	@$(BIN)/python -m pip install --quiet --no-deps --editable ./memsafe
	@touch $(STAMP)
	@echo "Dependencies installed."

install: $(STAMP) ## Create .venv, install the locked dependencies and memsafe (editable)

# The image's start command: checks the settings (gunicorn reads $$WEB_CONCURRENCY before its
# config, as a traceback), then execs gunicorn with config/gunicorn.conf.py.
run: $(STAMP) ## Serve the app through gunicorn on http://127.0.0.1:8000 (PROFILE=local PORT=8000)
	APP_CONFIG=config/$(PROFILE).yaml HOST=$(HOST) PORT=$(PORT) $(BIN)/python -m app.server.serve

dev: $(STAMP) ## uvicorn with reload on edits in app/, memsafe/, config/*.yaml (development only)
	APP_CONFIG=config/$(PROFILE).yaml $(BIN)/python -m app.core.dev --host $(HOST) --port $(PORT)

test: $(STAMP) ## Run the whole test suite with memsafe branch coverage (>= 90%)
	$(BIN)/pytest --cov=memsafe --cov-branch --cov-report=term --cov-fail-under=90

# The fault suite (also part of `make test`): real gunicorn, figures logged per test.
CHAOS_TESTS = tests/e2e/test_faults.py tests/e2e/test_recycle_gunicorn.py \
  tests/e2e/test_server.py::test_worker_recycled_on_rss_under_traffic_without_failed_requests
chaos: $(STAMP) ## Fault suite on real gunicorn: failed start-up, corrupt store, kill -9, SIGTERM, RSS recycle
	$(BIN)/pytest $(CHAOS_TESTS) -v -p no:cacheprovider --log-cli-level=INFO \
	  --log-cli-format='%(name)s: %(message)s'

test-fast: $(STAMP) ## Run the tests that need no real thread, process or server
	$(BIN)/pytest -m 'not slow and not e2e' -q

config-docs: $(STAMP) ## Rewrite the profiles' key comments and the README table from the Field descriptions
	$(BIN)/python -m app.core.config_docs --write

lint: $(STAMP) ## Ruff lint and format check
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

fmt: $(STAMP) ## Format and autofix with ruff
	$(BIN)/ruff format .
	$(BIN)/ruff check --fix .

typecheck: $(STAMP) ## mypy --strict on memsafe, app and tests
	$(BIN)/mypy

check: lint typecheck test ## Lint, typecheck and test (what CI runs)

bench: $(STAMP) ## memsafe.LRUCache speed and policy hit ratios against cachetools, theine, OrderedDict, lru_cache
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

leak-report: $(STAMP) ## Serve the leaky app (APP=app.main:app for the real one), load it, print a 5 s allocation trace
	$(BIN)/python -m loadtests.leak_report $(if $(APP),--app $(APP)) $(if $(SECONDS),--seconds $(SECONDS))

browser: ## Install Debian's chromium for the /admin/ browser test (only as root with CI=true)
	@if command -v chromium >/dev/null; then echo "chromium: $$(command -v chromium)"; \
	elif [ "$${CI:-}" = true ] && [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null; then \
	  echo "installing chromium for the browser test (apt-get, ~30 s)"; \
	  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >/dev/null; \
	else echo "chromium not installed: the /admin/ browser test will be skipped (apt-get install chromium)"; fi

DOCKER ?= docker
# Say what is missing instead of the daemon's raw connection errors.
DOCKER_CHECK = command -v $(DOCKER) >/dev/null || { echo "$@: no '$(DOCKER)' command; install Docker (https://docs.docker.com/get-docker/) or set DOCKER=podman" >&2; exit 1; }; \
  $(DOCKER) info >/dev/null 2>&1 || { echo "$@: '$(DOCKER)' is installed but its engine is not running or not reachable by $$(id -un); start it (e.g. 'sudo systemctl start docker' or Docker Desktop) and retry" >&2; exit 1; }

docker-build: ## Build the image (needs a running Docker engine; DOCKER=podman works too)
	@$(DOCKER_CHECK)
	$(DOCKER) build -t $(IMAGE) .

docker-run: ## Run the image on http://127.0.0.1:8000 with the starter profile (needs Docker)
	@$(DOCKER_CHECK)
	$(DOCKER) run --rm -p 8000:10000 --memory 512m --cpus 0.5 -e ADMIN_TOKEN=$${ADMIN_TOKEN:-local-docker-admin-token} $(IMAGE)

bench-http: $(STAMP) ## req/s and p50/p99 of /users/{id} cache hits against a bare endpoint; idle RSS/USS
	$(BIN)/python -m benchmarks.bench_http

bench-recycle: $(STAMP) ## Failed requests and latency across RSS recycles, never-retrying keep-alive clients (~10 min)
	$(BIN)/python -m benchmarks.bench_recycle

bench-middleware: $(STAMP) ## Per-request cost of MemoryMonitorMiddleware against BaseHTTPMiddleware
	$(BIN)/python -m benchmarks.bench_middleware --check

bench-sizeof: $(STAMP) ## memsafe's default byte estimate against RSS growth per cached entry
	$(BIN)/python -m benchmarks.bench_sizeof

bench-slowloris: $(STAMP) ## 1,200 slowloris connections vs one worker at nofile 1024: /health, deadline, RSS (WORKER_CLASS=guarded)
	$(BIN)/python -m benchmarks.bench_slowloris $(if $(WORKER_CLASS),--worker-class $(WORKER_CLASS))

lock: ## Re-pin requirements/*.lock from pyproject.toml (needs uv: pip install uv)
	uv pip compile pyproject.toml --python-version 3.11 --generate-hashes -o requirements/base.lock
	uv pip compile pyproject.toml --extra dev --python-version 3.11 --generate-hashes -o requirements/dev.lock

clean: ## Remove the venv, caches and reports
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache .coverage reports data/*.sqlite3*
