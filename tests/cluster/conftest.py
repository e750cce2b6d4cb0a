"""Fixtures for tests that need a real Kubernetes cluster (the one KUBECONFIG names)."""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator

import pytest
from kubernetes import client, config


def _cluster_unreachable_reason() -> str | None:
    if not os.environ.get("KUBECONFIG") and not os.path.exists(os.path.expanduser("~/.kube/config")):
        return "no cluster: KUBECONFIG is not set (run `hack/cluster up` and `eval $(hack/cluster env)`)"
    try:
        config.load_kube_config()
        client.VersionApi().get_code(_request_timeout=5)
    except Exception as exc:  # any failure to reach it means: no cluster for these tests
        return f"no cluster reachable through KUBECONFIG: {exc.__class__.__name__}: {exc}"[:300]
    return None


@pytest.fixture(scope="session")
def kube() -> client.ApiClient:
    reason = _cluster_unreachable_reason()
    if reason:
        pytest.skip(reason)
    return client.ApiClient()


@pytest.fixture
def core(kube: client.ApiClient) -> client.CoreV1Api:
    return client.CoreV1Api(kube)


@pytest.fixture
def namespace(kube: client.ApiClient, request: pytest.FixtureRequest) -> Iterator[str]:
    """A fresh namespace per test, labelled like the ones mlship is installed in, deleted after."""
    name = f"t-{request.node.name[:30].lower().replace('_', '-').strip('-')}-{uuid.uuid4().hex[:5]}"
    labels = getattr(request, "param", None) or {"pod-security.kubernetes.io/enforce": "restricted"}
    api = client.CoreV1Api(kube)
    api.create_namespace({"metadata": {"name": name, "labels": labels}})
    yield name
    api.delete_namespace(name, propagation_policy="Foreground")
