# mlship's two everyday commands are `make up` and `make test` (see README.md).
SHELL := /bin/bash
UV ?= uv
PYTEST := $(UV) run --frozen pytest

.PHONY: test test-unit test-integration test-cluster lint cluster-up cluster-down

## test: every tier; a tier whose prerequisite is absent (e.g. no cluster) is skipped with the reason
test:
	$(PYTEST)

test-unit:
	$(PYTEST) -m unit

test-integration:
	$(PYTEST) -m integration

test-cluster:
	$(PYTEST) -m cluster

lint:
	$(UV) run --frozen ruff check .

## cluster-up / cluster-down: the local Kubernetes of hack/cluster (bare Linux, as root)
cluster-up:
	hack/cluster up

cluster-down:
	hack/cluster down
