"""Faults on the installed system, survived without a person stepping in.

Each test breaks one thing while a client pod keeps calling the model's Service by its DNS name
(POST /invocations and GET /metadata, each on a new connection, from two threads), then checks
what a user cares about: no failed prediction, nothing lost from the registry, the system back to
Ready by itself within a stated time. Each prints its figures (`mlship fault: {...}`).

The tests share one ModelDeployment (`faults`, two replicas) of a model registered for this
module: two loadable forests and a version whose artifact cannot be deserialized.
"""

from __future__ import annotations

import os
import subprocess
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import pytest
from devkit import WaitTimeout, wait_for
from e2e.kit import ROOT, Release, condition, pod_output, step_pods_state
from kubernetes import client
from mlflow import MlflowClient
from operator_harness import (
    client_lines,
    iris_request,
    register_real_versions,
    start_client,
    stop_client,
)
from testkit import require_or_skip

pytestmark = pytest.mark.faults

MD = "faults"
POLL_SECONDS = 5  # the operator's default registry poll interval
# Within two poll intervals of MLflow answering again: the next poll (the default backoff cap is
# the interval) and the tick that makes it.
MLFLOW_RECOVERY_SECONDS = 2 * POLL_SECONDS


@dataclass
class Served:
    release: Release
    model: str
    good: str
    broken: str
    other: str
    url: str  # the Service, as pods reach it

    def md(self) -> dict[str, Any]:
        return self.release.model_deployment(MD)

    def move_alias(self, version: str) -> None:
        with self.release.mlflow_client() as mlflow:
            mlflow.set_registered_model_alias(self.model, "champion", version)

    def serving(self, version: str) -> dict[str, Any] | None:
        """The CR once `version` serves, Ready, on pods of that version only."""
        got = self.md()
        status = got.get("status") or {}
        pods = self.release.serving_pods(MD)
        if (status.get("servingVersion") == version and condition(got, "Ready").get("status") == "True"
                and pods and {p.metadata.labels.get("mlship.io/model-version") for p in pods} == {version}):
            return got
        return None


@pytest.fixture(scope="module")
def served(release: Release, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Served]:
    with release.mlflow() as url:
        model, good, broken, other = register_real_versions(url, tmp_path_factory.mktemp("faults"))
    release.apply_model_deployment(MD, {"model": model, "alias": "champion", "replicas": 2})
    s = Served(release, model, good, broken, other, url="")
    got = wait_for(f"{MD} serving version {good}", lambda: s.serving(good), timeout=300, interval=2)
    s.url = got["status"]["url"]
    yield s
    release.delete_model_deployment(MD)


@pytest.fixture
def load(served: Served) -> Iterator[Any]:
    """A client pod calling the Service; `load()` stops it and returns its summary."""
    core = served.release.core
    ns = served.release.namespace
    name = f"client-{uuid.uuid4().hex[:6]}"
    start_client(core, ns, name, served.url, body=iris_request())
    wait_for("the client's first answers",
               lambda: any("version" in line for line in client_lines(core, ns, name)), 120)
    summary: dict[str, Any] = {}

    def stop() -> dict[str, Any]:
        summary.update(stop_client(core, ns, name))
        return summary

    yield stop
    if not summary:
        stop()
    core.delete_namespaced_pod(name, ns)


def no_failures(seen: dict[str, Any]) -> None:
    failures = [line["failure"] for line in seen["lines"] if "failure" in line]
    assert seen.get("failed", 0) == 0, f"{seen.get('failed')} of {seen['requests']} failed: {failures}"
    assert seen["/invocations"] >= 50, seen  # real traffic, not a handful


def test_serving_pod_deleted_under_load(served: Served, load: Any, report: Any) -> None:
    before = served.release.serving_pods(MD)
    victim = before[0].metadata.name
    started = time.monotonic()
    served.release.core.delete_namespaced_pod(victim, served.release.namespace)

    def replaced() -> bool:
        pods = served.release.serving_pods(MD)
        ready = [p for p in pods if any(c.type == "Ready" and c.status == "True"
                                        for c in p.status.conditions or [])]
        return victim not in {p.metadata.name for p in pods} and len(ready) == 2

    wait_for("a second Ready serving pod again", replaced, timeout=180, interval=0.5)
    recovered = time.monotonic() - started
    time.sleep(2)
    seen = load()
    report("serving pod deleted under load", requests=seen["requests"], failed=seen.get("failed", 0),
           recovered_seconds=round(recovered, 1))
    no_failures(seen)


def test_mlflow_outage_is_survived_and_recovered_from(served: Served, load: Any, report: Any) -> None:
    apps = client.AppsV1Api()
    ns, mlflow = served.release.namespace, served.release.name("mlflow")
    scale = {"spec": {"replicas": 0}}
    apps.patch_namespaced_deployment_scale(mlflow, ns, scale)
    started = time.monotonic()
    try:
        degraded = wait_for(
            f"{MD} Degraded with MlflowUnreachable",
            lambda: condition(served.md(), "Degraded").get("reason") == "MlflowUnreachable" and served.md(),
            timeout=60, interval=0.5)
        noticed = time.monotonic() - started
        time.sleep(max(0.0, 20 - (time.monotonic() - started)))  # an outage of 20 s
    finally:
        apps.patch_namespaced_deployment_scale(mlflow, ns, {"spec": {"replicas": 1}})
    outage = time.monotonic() - started

    def mlflow_ready_at() -> datetime | None:
        pods = served.release.pods("app.kubernetes.io/component=mlflow")
        times = [c.last_transition_time for p in pods for c in p.status.conditions or []
                 if c.type == "Ready" and c.status == "True"]
        return max(times) if pods and len(times) == len(pods) else None

    ready_at = wait_for("MLflow Ready again", mlflow_ready_at, timeout=180, interval=0.5)
    md = wait_for(f"{MD} no longer Degraded",
                    lambda: condition(served.md(), "Degraded").get("status") == "False" and served.md(),
                    timeout=120, interval=0.5)
    # Both instants as the cluster recorded them (1 s resolution), not when this test looked.
    recovered_at = datetime.fromisoformat(condition(md, "Degraded")["lastTransitionTime"])
    recovered = (recovered_at - ready_at).total_seconds()
    seen = load()
    report("MLflow scaled to 0 and back", outage_seconds=round(outage, 1),
           degraded_after_seconds=round(noticed, 1), recovered_after_mlflow_ready_seconds=recovered,
           requests=seen["requests"], failed=seen.get("failed", 0),
           degraded_message=condition(degraded, "Degraded").get("message"))
    no_failures(seen)
    assert recovered <= MLFLOW_RECOVERY_SECONDS, (
        f"the ModelDeployment stayed Degraded {recovered:.1f}s after MLflow was Ready again; "
        f"the operator's log:\n{operator_log(served.release)}")
    assert served.serving(served.good)


def test_operator_killed_mid_rollout(served: Served, load: Any, report: Any) -> None:
    ns = served.release.namespace
    served.move_alias(served.other)
    started = time.monotonic()
    wait_for("the rollout to start", lambda: (served.md().get("status") or {}).get(
        "desiredVersion") == served.other, timeout=60, interval=0.2)
    for pod in served.release.pods("app.kubernetes.io/component=operator"):
        served.release.core.delete_namespaced_pod(pod.metadata.name, ns)
    wait_for(f"version {served.other} serving alone", lambda: served.serving(served.other),
               timeout=240, interval=0.5)
    converged = time.monotonic() - started
    time.sleep(2)
    seen = load()
    report("operator killed mid-rollout", converged_seconds=round(converged, 1),
           requests=seen["requests"], failed=seen.get("failed", 0), versions=seen["versions"])
    no_failures(seen)
    assert set(seen["tail"]) == {served.other}, seen["tail"]


def test_a_corrupted_version_is_rolled_back(served: Served, load: Any, report: Any) -> None:
    stable = served.md()["status"]["servingVersion"]

    def rolled_back() -> dict[str, Any] | None:
        got = served.md()
        status = got.get("status") or {}
        failed = status.get("desiredVersion") == served.broken and status.get("servingVersion") == stable
        return got if failed and condition(got, "Degraded").get("status") == "True" else None

    def stable_pods_only() -> set[str] | None:  # the failed version's pod may still be terminating
        pods = served.release.serving_pods(MD)
        return {p.metadata.uid for p in pods} if pods and all(
            p.metadata.labels.get("mlship.io/model-version") == stable
            and not p.metadata.deletion_timestamp for p in pods) else None

    served.move_alias(served.broken)
    started = time.monotonic()
    try:  # the alias goes back even when this fails: the next faults need a Ready CR
        got = wait_for(f"version {served.broken} rolled back to {stable}", rolled_back,
                       timeout=400, interval=1)
        rolled = time.monotonic() - started
        pods_after = wait_for(f"only version {stable}'s pods", stable_pods_only, timeout=120, interval=1)
        time.sleep(3 * POLL_SECONDS)  # several polls: no new attempt at the version that failed
        assert {p.metadata.uid for p in served.release.serving_pods(MD)} == pods_after
        seen = load()
        report("corrupted version promoted", rolled_back_seconds=round(rolled, 1), requests=seen["requests"],
               failed=seen.get("failed", 0), degraded=condition(got, "Degraded").get("message"))
        no_failures(seen)
        assert set(seen["versions"]) == {stable}, seen["versions"]
    finally:
        served.move_alias(stable)
    wait_for(f"{stable} Ready again", lambda: served.serving(stable), timeout=120, interval=1)


# Before the node restart, which slows the next training run (101 s once, against ~40 s first).
def test_postgres_killed_mid_training_loses_nothing(served: Served, report: Any) -> None:
    release = served.release
    with release.mlflow() as url:
        mlflow = MlflowClient(tracking_uri=url, registry_uri=url)
        before = {(v.name, v.version) for v in mlflow.search_model_versions()}
    model = f"faults-pg-{uuid.uuid4().hex[:4]}"
    with release.airflow() as airflow:
        run_id = airflow.trigger({"dataset": "sklearn:iris", "model_name": model})
        seen: dict[str, Any] = {}

        def train_running() -> bool:  # keeps what it saw, for the message when it never runs
            seen["run"] = airflow.get(f"/dags/mlship_training/dagRuns/{run_id}")["state"]
            tasks = airflow.tasks(run_id)
            seen["tasks"] = {t: (i.get("state"), i.get("try_number")) for t, i in tasks.items()}
            return seen["tasks"].get("train", (None,))[0] == "running"

        try:
            wait_for("the train step to run", train_running, timeout=300, interval=1)
        except WaitTimeout as exc:
            others = airflow.get("/dags/mlship_training/dagRuns", state=["running", "queued"])
            stuck = {t: pod_output(airflow.log(run_id, t, n))[-1500:]
                     for t, (state, n) in seen["tasks"].items() if state == "running" and n}
            raise AssertionError(f"{exc}; run {run_id}: {seen}; running or queued training runs: "
                                 f"{[r['dag_run_id'] for r in others.get('dag_runs', [])]}; step pods: "
                                 f"{step_pods_state(release)}; running tasks' logs: {stuck}") from None
        pg = release.pods("app.kubernetes.io/component=postgresql")
        assert pg, "no PostgreSQL pod"
        started = time.monotonic()
        release.core.delete_namespaced_pod(pg[0].metadata.name, release.namespace)
        wait_for("PostgreSQL Ready again", lambda: any(
            p.metadata.uid != pg[0].metadata.uid and any(
                c.type == "Ready" and c.status == "True" for c in p.status.conditions or [])
            for p in release.pods("app.kubernetes.io/component=postgresql")), timeout=180, interval=0.5)
        pg_back = time.monotonic() - started
    # Airflow's API server may restart after losing its database: reconnect for the rest.
    state = wait_for(f"run {run_id} to end", lambda: _run_state(release, run_id), timeout=900, interval=5)
    ended = time.monotonic() - started
    with release.mlflow() as url:
        mlflow = MlflowClient(tracking_uri=url, registry_uri=url)
        after = {(v.name, v.version) for v in mlflow.search_model_versions()}
    report("PostgreSQL pod killed mid-training", postgres_ready_seconds=round(pg_back, 1),
           run_ended_seconds=round(ended, 1), run_state=state,
           versions_before=len(before), versions_after=len(after))
    assert before <= after, f"lost from the registry: {before - after}"
    assert state == "success", f"the training run {run_id} ended {state}"
    assert (model, "1") in after


def test_node_restart_keeps_the_pods(served: Served, load: Any, report: Any) -> None:
    if not os.environ.get("KUBECONFIG", "").startswith("/var/lib/mlship-cluster"):
        require_or_skip("restarting the node's containerd and kubelet needs hack/cluster", "faults")
    release = served.release

    def pods_state() -> dict[str, int]:
        return {p.metadata.uid: sum(c.restart_count for c in p.status.container_statuses or [])
                for p in release.pods() if p.status.phase == "Running"}

    before = pods_state()
    started = time.monotonic()
    proc = subprocess.run([str(ROOT / "hack" / "cluster"), "restart-node"], capture_output=True, text=True,
                          timeout=300, check=False)
    assert proc.returncode == 0, proc.stderr[-3000:]
    restarted = time.monotonic() - started
    wait_for(f"{MD} Ready", lambda: served.serving(served.md()["status"]["servingVersion"]),
               timeout=180, interval=1)
    time.sleep(3)
    after = pods_state()  # before the client stops (its pod is one of them)
    seen = load()
    report("containerd, kubelet and kube-proxy restarted", restart_seconds=round(restarted, 1),
           requests=seen["requests"], failed=seen.get("failed", 0),
           pods_kept=len(set(before) & set(after)), pods_before=len(before))
    assert set(before) <= set(after), "pods were replaced by the node restart"
    restarted_containers = {uid: after[uid] - n for uid, n in before.items() if after[uid] != n}
    assert not restarted_containers, f"containers restarted: {restarted_containers}"
    no_failures(seen)


def operator_log(release: Release, lines: int = 40) -> str:
    pod = release.pods("app.kubernetes.io/component=operator")[0].metadata.name
    log = release.core.read_namespaced_pod_log(pod, release.namespace, tail_lines=lines, timestamps=True)
    return str(log)


def _run_state(release: Release, run_id: str) -> str | None:
    with release.airflow() as airflow:
        state = airflow.get(f"/dags/mlship_training/dagRuns/{run_id}")["state"]
    return state if state in ("success", "failed") else None

