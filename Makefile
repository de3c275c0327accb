# Ferry — the two commands that matter: `make demo` and `make test`. Everything installs itself.
SHELL := /bin/bash
.DEFAULT_GOAL := help
export PATH := $(HOME)/.local/bin:$(PATH)
UV := uv
PYTEST_ARGS ?=
# Tests run in parallel workers, one whole file each at a time (every worker starts its own stack);
# TEST_WORKERS=0 runs them in this process, one after another.
TEST_WORKERS ?= 2
PYTEST := $(UV) run pytest -n $(TEST_WORKERS) --dist loadfile --no-loadscope-reorder

.PHONY: help deps sync lint fmt crds nats-auth crds-check chart containers test test-unit test-integration demo up down status compose-up compose-down bench

help: ## list the targets
	@grep -E '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  make %-18s %s\n", $$1, $$2}'

deps: ## install Debian packages, uv, the workspace and the Kubernetes binaries (first run builds them)
	@bash deploy/local/bootstrap.sh

sync:
	@$(UV) sync --locked --quiet

lint: sync ## ruff + mypy
	$(UV) run ruff check .
	$(UV) run ruff format --check .
	$(UV) run mypy

fmt: sync ## format and fix what ruff can
	$(UV) run ruff format .
	$(UV) run ruff check --fix .

crds: sync ## regenerate deploy/crds from the schemas
	$(UV) run python -m ferry_schemas.crdgen deploy/crds

nats-auth: sync ## regenerate deploy/base/nats/auth.conf from the per-service tables in deploy/base/nats/users/
	$(UV) run python -m ferry_local.natsauth > deploy/base/nats/auth.conf

crds-check: sync
	$(UV) run python -m ferry_schemas.crdgen deploy/crds --check

chart: sync ## regenerate the Helm chart (deploy/helm/ferry) from deploy/ (kustomize)
	$(UV) run python -m ferry_local.chart

containers: deps ## the podman engine and every compose image, built locally (first run ~30 min: Jaeger)
	@bash deploy/compose/images.sh >/dev/null

test: deps containers lint ## the whole suite: lint, unit, integration and end-to-end on the real local stack
	$(PYTEST) $(PYTEST_ARGS)

test-unit: sync ## unit tests only (no cluster)
	$(PYTEST) -m "not integration and not e2e" $(PYTEST_ARGS)

test-integration: deps
	$(PYTEST) -m "integration or e2e" $(PYTEST_ARGS)

up: deps ## start the local stack, the six services and the local node, and keep them running
	@$(UV) run ferry-local up

down: ## stop exactly what `make up` started
	@$(UV) run ferry-local down

compose-up: deps ## docker-compose.yml on podman (images built locally, first run ~30 min: Jaeger), left running
	@bash deploy/compose/compose.sh up --detach

compose-down: ## remove what compose-up started
	@bash deploy/compose/compose.sh down --volumes --remove-orphans

status: ## what `make up` runs: processes, logs, router URL
	@$(UV) run ferry-local status

demo: deps ## the quick start: stack up, two boosters Active, chats through the router, the CLI, teardown
	@$(UV) run python -m ferry_local.demo

bench: deps ## run every benchmark and print its table (bench/reconcile at 1 and 50 boosters; more: its README)
	@for b in bench/*/run.py; do echo "==> $$b"; $(UV) run python $$b || exit 1; done
	@echo "==> bench/reconcile"; $(UV) run python -m bench.reconcile 1 50
