# mlship's two everyday commands are `make up` and `make test` (see README.md); `make help` lists all.
# Each target installs what it needs first (hack/setup: uv at the pinned version, the locked
# Python environment, host packages), so a fresh clone needs nothing else.
SHELL := /bin/bash
UV ?= hack/uv
RUN := $(UV) run --frozen --all-extras
PYTEST := $(RUN) pytest $(PYTEST_ARGS)

# After `sudo make up` on bare Linux, the tests and kubectl find hack/cluster without `eval $(hack/cluster env)`.
HACK_KUBECONFIG := /var/lib/mlship-cluster/admin.kubeconfig
ifeq ($(origin KUBECONFIG),undefined)
ifneq ($(wildcard $(HACK_KUBECONFIG)),)
export KUBECONFIG := $(HACK_KUBECONFIG)
export PATH := /var/cache/mlship/bin:$(PATH)
endif
endif

.PHONY: help up down test test-unit test-integration test-images test-chart test-cluster test-e2e test-faults test-security \
	lint bench images skaffold cluster-up cluster-down setup-env setup-test setup-bench
.DEFAULT_GOAL := help

help: ## this list
	@awk -F':.*## ' '/^[a-z0-9-]+:.*## / {printf "  make %-17s %s\n", $$1, $$2}' $(MAKEFILE_LIST)

up: setup-env ## cluster (kind/minikube context, else hack/cluster as root), images, chart, a served champion
	$(RUN) python hack/up.py

down: setup-env ## uninstall the release (the namespace keeps the database and artifact volumes)
	$(RUN) python hack/up.py --down

test: setup-test ## every tier; one whose prerequisite is absent is skipped with the reason
	$(PYTEST)

test-unit: setup-env ## pure logic, no servers
	$(PYTEST) -m unit

test-integration: setup-env ## real local MLflow and serving processes, no cluster
	$(PYTEST) -m integration

test-images: setup-env ## the step images run as containers (needs Docker and built images)
	$(PYTEST) -m images

test-chart: setup-env ## helm template render tests
	$(PYTEST) -m chart

test-cluster: setup-env ## operator and serving on the cluster KUBECONFIG names
	$(PYTEST) -m cluster

test-e2e: setup-test ## the whole chart installed and used as a person would
	$(PYTEST) -m e2e

test-faults: setup-env ## faults on the installed system (pods killed, MLflow away, the node restarted)
	$(PYTEST) -m faults

test-security: setup-env ## attacks on the installed system from inside the cluster, each refused
	$(PYTEST) -m security

lint: setup-env ## ruff, and mypy --strict on the operator, the steps and serving
	$(RUN) ruff check .
	$(RUN) mypy

.PHONY: mutate
mutate: setup-env ## mutation testing of the pure modules: kill rate per module, survivors (MODULES="src/mlship/ml/gate.py ..." for some)
	$(UV) run --frozen --all-extras --group mutate nice -n 19 python hack/mutate.py $(MODULES)

bench: setup-bench ## serving throughput and latency next to mlflow models serve and MLServer
	$(RUN) python benchmarks/serving.py

images: ## build every image (LOAD=1 also copies them into hack/cluster's cluster)
	hack/build-images $(if $(LOAD),--load)

SKAFFOLD_BIN ?= /var/cache/mlship/bin/skaffold
skaffold: ## build skaffold through the Go module proxy into the cluster's cache
	cd hack/build/skaffold && CGO_ENABLED=0 go build -trimpath -ldflags "-s -w" -o $(SKAFFOLD_BIN) tool

cluster-up: ## start hack/cluster, the local Kubernetes for bare Linux (root)
	hack/cluster up

cluster-down: ## stop hack/cluster and undo its changes to the host
	hack/cluster down

setup-env:
	@hack/setup env

setup-test:
	@hack/setup test

setup-bench:
	@hack/setup bench
