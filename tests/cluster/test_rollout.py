"""Promotion on the real cluster: moving the alias switches serving with no failed request.

A client pod keeps calling the model's Service (by its DNS name) throughout: POST /invocations and
GET /metadata, each on a new connection, from two threads. The alias moves v1 → v2; once the CR
says v2 is served and Ready and v1's pod is gone, the client stops and reports what it saw.
Harness: tests/cluster/operator_harness.py.
"""

from __future__ import annotations

import time

import pytest
from devkit import wait_for
from mlflow import MlflowClient
from operator_harness import (
    SERVING_IMAGE,
    client_lines,
    condition,
    create_cr,
    get_cr,
    iris_request,
    register_forests,
    start_client,
    stop_client,
)

pytestmark = [pytest.mark.cluster, pytest.mark.timeout(420)]

# Every version label the instance's pods carry (terminating ones included).
INSTANCE = "app.kubernetes.io/instance=iris"


def test_promotion_switches_serving_with_no_failed_requests(
    operator, objects, core, namespace, mlflow_server, serving_mlflow
) -> None:
    model, (v1, v2) = register_forests(mlflow_server, 2)
    op = operator(MLSHIP_SERVING_TRACKING_URI=serving_mlflow, MLSHIP_SERVING_IMAGE=SERVING_IMAGE)
    create_cr(objects, namespace, "iris", {"model": model})

    def serving(version: str) -> dict | None:
        got = get_cr(objects, namespace, "iris")
        ready = condition(got, "Ready").get("status") == "True"
        return got if ready and got["status"].get("servingVersion") == version else None

    got = wait_for(f"version {v1} Ready\n{op.log()}", lambda: serving(v1), 240, 2)

    start_client(core, namespace, "client", got["status"]["url"], body=iris_request())
    wait_for("the client's first answers", lambda: sum(
        "version" in line for line in client_lines(core, namespace, "client")), 120)
    time.sleep(2)  # some traffic on v1 alone
    MlflowClient(tracking_uri=mlflow_server).set_registered_model_alias(model, "champion", v2)

    got = wait_for(f"version {v2} served and Ready\n{op.log()}", lambda: serving(v2), 240, 1)
    assert condition(got, "Degraded").get("status") == "False"

    def pod_versions() -> set[str]:
        pods = core.list_namespaced_pod(namespace, label_selector=INSTANCE).items
        return {p.metadata.labels.get("mlship.io/model-version") for p in pods}

    # Ready may be reported while v1's pod still drains (preStop, then graceful shutdown).
    wait_for(f"the {v1} pod to be gone", lambda: pod_versions() == {v2}, 120)
    time.sleep(3)  # traffic on v2 alone
    seen = stop_client(core, namespace, "client")

    failures = [line for line in seen["lines"] if "failure" in line]
    assert seen.get("failed", 0) == 0, f"{seen.get('failed')} failed requests: {failures}"
    assert seen["/invocations"] >= 200, seen  # a rollout's worth of traffic, not a handful
    # v1 answered, then v2; and at the end only v2.
    switches = [line["version"] for line in seen["lines"] if "version" in line]
    assert switches[0] == v1 and switches[-1] == v2, switches
    assert set(seen["versions"]) == {v1, v2}, seen["versions"]
    assert seen["tail"] and set(seen["tail"]) == {v2}, seen["tail"]
    print(f"client: {seen['/invocations']} invocations and {seen['/metadata']} metadata calls "
          f"in {seen['seconds']:.0f}s, 0 failed; answers per version {seen['versions']}; "
          f"version switches seen {switches}")
