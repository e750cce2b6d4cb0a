"""The one release of the e2e and faults tiers: the chart installed once per session in a fresh
namespace that enforces PodSecurity "restricted", removed with its namespace after. The `release`
fixture (tests/conftest.py) enters `installed()`.

The install names the sources' Secrets (kit.BASE_VALUES): they are created just before it, with no
credentials (kit.NEUTRAL_SOURCE_SECRETS), so every step pod that gets them starts; the alerts'
Secret (kit.ALERTS_SECRET) too.

Images must already be in the cluster (`hack/build-images --load ...`). Figures the tests measure
go into `release.figures` and are printed at the end of the session.
"""

from __future__ import annotations

import json
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager

from devkit import WaitTimeout, wait_for
from e2e.kit import (
    BASE_VALUES,
    CHART,
    INSTALL_SECRETS,
    RELEASE,
    STEPS,
    Release,
    run,
    unreachable_reason,
)
from kubernetes import client, config
from testkit import require_or_skip

# What the default values run, plus the model server a ModelDeployment starts; a cluster without a
# registry (hack/cluster) must hold them all.
IMAGES = (
    "mlship-airflow:dev",
    "mlship-mlflow:dev",
    "mlship-operator:dev",
    "mlship-serving:dev",
    "mlship-record:dev",  # the event record's consumer
    *(f"mlship-step-{step}:dev" for step in STEPS),
    "postgres:15-bookworm",  # the PostgreSQL StatefulSet
    "apache/kafka:4.3.1",  # the Kafka StatefulSet
    "python:3.11-slim-bookworm",  # the XCom sidecar of the step pods
)


def missing_images(core: client.CoreV1Api) -> list[str]:
    names = {n for node in core.list_node().items for i in node.status.images or [] for n in i.names or []}
    return [i for i in IMAGES if not any(n == i or n.endswith(f"/{i}") for n in names)]


@contextmanager
def installed(tier: str) -> Iterator[Release]:
    reason = unreachable_reason()
    if reason:
        require_or_skip(reason, tier)
    config.load_kube_config()
    core = client.CoreV1Api()
    missing = missing_images(core)
    if missing:  # the node lists its images in its status, which lags behind images just loaded
        try:
            wait_for("the node to list the images", lambda: not missing_images(core), 30, interval=3)
            missing = []
        except WaitTimeout:
            missing = missing_images(core)
    if missing:  # even one: under MLSHIP_REQUIRE (CI) a broken `hack/build-images --load` fails here
        require_or_skip(
            f"images not in the cluster: {', '.join(missing)} (hack/build-images --load; "
            f"hack/cluster load postgres:15-bookworm python:3.11-slim-bookworm apache/kafka:4.3.1)",
            tier,
        )
    namespace = f"mlship-e2e-{uuid.uuid4().hex[:6]}"
    core.create_namespace(
        {
            "metadata": {
                "name": namespace,
                "labels": {
                    "pod-security.kubernetes.io/enforce": "restricted",
                    "pod-security.kubernetes.io/enforce-version": "latest",
                },
            }
        }
    )
    rel = Release(namespace)
    try:
        for name, data in INSTALL_SECRETS.items():  # the install names them
            rel.create_secret(name, data)
        start = time.monotonic()
        values = [arg for value in BASE_VALUES for arg in ("--set", value)]
        proc = rel.helm("install", RELEASE, str(CHART), "--wait", "--timeout", "15m", *values)
        rel.figures["install_to_ready_seconds"] = round(time.monotonic() - start, 1)
        assert proc.returncode == 0, (
            f"helm install failed:\n{proc.stdout}\n{proc.stderr}\n"
            + run("kubectl", "-n", namespace, "get", "pods,events").stdout
        )
        yield rel
    finally:
        print(f"\nmlship e2e figures: {json.dumps(rel.figures)}")
        try:
            # while the operator still runs: it must remove its finalizers, or the namespace
            # deletion below would hang on the ModelDeployments
            rel.delete_model_deployments()
        finally:
            rel.helm("uninstall", RELEASE, "--wait", "--timeout", "5m")
            # the namespace takes the kept PVCs and Secrets with it
            core.delete_namespace(namespace)
