"""Fixtures for tests that need a real Kubernetes cluster (the one KUBECONFIG names)."""

from __future__ import annotations

import uuid
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from kubernetes import client, config
from mlflow import MlflowClient
from operator_harness import (
    SERVING_IMAGE,
    HttpForwarder,
    Operator,
    apply_crd,
    delete_crs,
    has_image,
    node_ip_and_images,
)
from testkit import cluster_unreachable_reason, require_or_skip


@pytest.fixture(scope="session")
def kube() -> client.ApiClient:
    # skips (fails under MLSHIP_REQUIRE) only without a kubeconfig or on a refused or timed-out
    # connection; a TLS, auth or kubeconfig error is raised as the error it is
    reason = cluster_unreachable_reason()
    if reason:
        require_or_skip(reason, "cluster")
    config.load_kube_config()
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


# --------------------------------------------------------------------------- the operator harness
# (tests/cluster/operator_harness.py): fixtures for the operator's cluster tests.


@pytest.fixture(scope="session")
def crd(kube: client.ApiClient) -> None:
    apply_crd(kube)


@pytest.fixture
def objects(kube: client.ApiClient) -> client.CustomObjectsApi:
    return client.CustomObjectsApi(kube)


@pytest.fixture
def apps(kube: client.ApiClient) -> client.AppsV1Api:
    return client.AppsV1Api(kube)


@pytest.fixture
def registered(mlflow_server: str) -> Callable[[int], tuple[str, list[str]]]:
    """Registers a model with N versions (registry entries only), alias champion → first."""
    def make(count: int = 3) -> tuple[str, list[str]]:
        mlflow = MlflowClient(tracking_uri=mlflow_server, registry_uri=mlflow_server)
        name = f"op-{uuid.uuid4().hex[:8]}"
        mlflow.create_registered_model(name)
        experiment = mlflow.create_experiment(name)
        versions = []
        for _ in range(count):
            run = mlflow.create_run(experiment)
            versions.append(str(mlflow.create_model_version(
                name, source=f"{run.info.artifact_uri}/model", run_id=run.info.run_id).version))
        mlflow.set_registered_model_alias(name, "champion", versions[0])
        return name, versions
    return make


@pytest.fixture
def operator(
    kube: client.ApiClient, crd: None, namespace: str, mlflow_server: str, tmp_path: Path
) -> Iterator[Callable[..., Operator]]:
    """Starts `python -m mlship_operator` on the host watching the test's namespace (fast
    polling unless overridden); deletes the namespace's CRs and stops it afterwards."""
    started: list[Operator] = []

    def start(**env: str) -> Operator:
        op = Operator({
            "MLFLOW_TRACKING_URI": mlflow_server,
            "MLSHIP_WATCH_NAMESPACES": namespace,
            "MLSHIP_POLL_INTERVAL_SECONDS": "2",
            "MLSHIP_MAX_BACKOFF_SECONDS": "4",
            **env,
        }, tmp_path / f"operator-{len(started)}.log")
        started.append(op)
        return op

    yield start
    delete_crs(client.CustomObjectsApi(kube), namespace, started)


@pytest.fixture
def serving_mlflow(core: client.CoreV1Api, mlflow_server: str) -> Iterator[str]:
    """The session's MLflow as serving pods reach it (a reverse proxy at the node's IP); skips
    when the serving image is not in the cluster."""
    node_ip, images = node_ip_and_images(core)
    if not has_image(images, SERVING_IMAGE):
        require_or_skip(f"serving image {SERVING_IMAGE} is not loaded in the cluster "
                        f"(build it, then `hack/cluster load {SERVING_IMAGE}`)", "cluster")
    proxy = HttpForwarder(mlflow_server)
    try:
        yield f"http://{node_ip}:{proxy.port}"
    finally:
        proxy.stop()
