# mlship's two everyday commands are `make up` and `make test` (see README.md).
SHELL := /bin/bash
UV ?= uv
PYTEST := $(UV) run --frozen pytest

.PHONY: up down test test-unit test-integration test-images test-chart test-cluster test-e2e lint images skaffold cluster-up cluster-down

## up: cluster (current kind/minikube context, else hack/cluster as root), images, chart, a trained
## and served champion; prints where to look. down: uninstall (volumes stay).
up:
	$(UV) run --frozen python hack/up.py

down:
	$(UV) run --frozen python hack/up.py --down

## test: every tier; a tier whose prerequisite is absent (e.g. no cluster) is skipped with the reason
test:
	$(PYTEST)

test-unit:
	$(PYTEST) -m unit

test-integration:
	$(PYTEST) -m integration

test-images:
	$(PYTEST) -m images

test-chart:
	$(PYTEST) -m chart

test-cluster:
	$(PYTEST) -m cluster

test-e2e:
	$(PYTEST) -m e2e

## images: build every image (add LOAD=1 to copy them into hack/cluster's cluster)
images:
	hack/build-images $(if $(LOAD),--load)

lint:
	$(UV) run --frozen ruff check .

## skaffold: build skaffold through the Go module proxy (no release downloads here) into the cluster's cache
SKAFFOLD_BIN ?= /var/cache/mlship/bin/skaffold
skaffold:
	cd hack/build/skaffold && CGO_ENABLED=0 go build -trimpath -ldflags "-s -w" -o $(SKAFFOLD_BIN) tool

## cluster-up / cluster-down: the local Kubernetes of hack/cluster (bare Linux, as root)
cluster-up:
	hack/cluster up

cluster-down:
	hack/cluster down
