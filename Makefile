# One entry point per task; `make help` lists them. Every target is idempotent.
SHELL := /bin/bash
.DEFAULT_GOAL := help

VENV    ?= .venv
PY      := $(VENV)/bin/python
PYTEST  := $(VENV)/bin/pytest
export PATH := $(CURDIR)/$(VENV)/bin:$(PATH)

# Image coordinates shared with docker-bake.hcl and compose/.
REGISTRY  ?= localhost:5000
TAG       ?= latest
BASE_IMAGE ?= debian:bookworm-slim
PLATFORMS ?= linux/arm64,linux/amd64
export REGISTRY TAG BASE_IMAGE PLATFORMS

.PHONY: help
help: ## List the targets
	@grep -hE '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  %-14s %s\n", $$1, $$2}'

$(VENV)/.installed: pyproject.toml
	python3 -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -e '.[dev,api,worker]'
	touch $@

.PHONY: install
install: $(VENV)/.installed ## Create the virtualenv with every extra (dev, api, worker)

.PHONY: test-fast
test-fast: install ## Tiers that need no engine: unit + integration (real redis-server)
	$(PYTEST) tests/unit tests/integration

.PHONY: test
test: install bake ## Every tier: unit, integration, images (testinfra), e2e (compose stack)
	$(PYTEST) tests

.PHONY: lint
lint: install ## ruff, mypy, import contract, hadolint, shellcheck, actionlint
	$(VENV)/bin/ruff check src tests bench config
	$(VENV)/bin/mypy
	$(VENV)/bin/lint-imports
	find images -name Dockerfile -print0 | xargs -0 -r $(VENV)/bin/hadolint
	find . -path ./$(VENV) -prune -o -name '*.sh' -print0 | xargs -0 -r $(VENV)/bin/shellcheck
	$(VENV)/bin/shellcheck .ci/run
	if command -v actionlint >/dev/null; then actionlint; else echo "actionlint not installed: see .ci/install-lint.sh" >&2; exit 1; fi

.PHONY: bench
bench: install ## Load benchmark (and the image/stack reports when images exist)
	$(PY) bench/load_bench.py

.PHONY: bake
bake: ## Build every image for $(PLATFORMS) with docker buildx bake
	docker buildx bake

.PHONY: bake-native
bake-native: ## Build every image for this machine's platform only (quick loop)
	docker buildx bake native
