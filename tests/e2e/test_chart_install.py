"""The chart on a real cluster: install with --wait in a namespace that enforces PodSecurity
"restricted", `helm test`, the training DAG end to end, an upgrade, and a PostgreSQL restart.

The tests share one release (module fixture) and run in file order; each later test relies on
the state the earlier ones leave (a finished DAG run, a registered model). Images must already be
in the cluster (`hack/build-images --load ...`). Figures (install time, requests) are printed and
recorded as junit properties.
"""

from __future__ import annotations

import base64
import importlib.util
import json
import shutil
import socket
import subprocess
import sys
import time
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest
import requests
from kubernetes import client, config
from mlflow import MlflowClient
from testkit import free_port

ROOT = Path(__file__).resolve().parents[2]
CHART = ROOT / "charts" / "mlship"
RELEASE = "mlship"
STEPS = ("ingest", "validate", "featurize", "train", "evaluate", "register")
DAG = "mlship_training"

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(3600)]


def _unreachable_reason() -> str | None:
    """tests/cluster/conftest.py decides whether a cluster is reachable; reuse it as it is."""
    cluster_tests = ROOT / "tests" / "cluster"
    spec = importlib.util.spec_from_file_location("cluster_conftest", cluster_tests / "conftest.py")
    assert spec and spec.loader
    module = importlib.util.module_from_spec(spec)
    sys.path.insert(0, str(cluster_tests))  # for the helper modules that conftest imports
    try:
        spec.loader.exec_module(module)
    finally:
        sys.path.remove(str(cluster_tests))
    reason: str | None = module._cluster_unreachable_reason()
    if reason:
        return reason
    missing = [tool for tool in ("helm", "kubectl") if shutil.which(tool) is None]
    return f'{" and ".join(missing)} not on PATH (eval "$(hack/cluster env)")' if missing else None


def run(*cmd: str, timeout: float = 600) -> subprocess.CompletedProcess[str]:
    return subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, check=False)


def wait_for(what: str, check: Callable[[], Any], timeout: float, interval: float = 3) -> Any:
    deadline = time.monotonic() + timeout
    last: Any = None
    while time.monotonic() < deadline:
        try:
            last = check()
            if last:
                return last
        except (requests.RequestException, client.ApiException) as exc:
            last = exc
        time.sleep(interval)
    pytest.fail(f"timed out after {timeout:.0f}s waiting for {what} (last: {last!r})"[:2000])



@contextmanager
def port_forward(namespace: str, service: str, port: int) -> Iterator[str]:
    """http://127.0.0.1:<local> forwarded to a Service, as a user reaches the UIs."""
    local = free_port()
    proc = subprocess.Popen(
        ["kubectl", "-n", namespace, "port-forward", f"svc/{service}", f"{local}:{port}"],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:

        def connected() -> bool:
            if proc.poll() is not None:
                pytest.fail(
                    f"kubectl port-forward to {service} exited: {proc.stderr.read() if proc.stderr else ''}"
                )
            with socket.socket() as s:
                return s.connect_ex(("127.0.0.1", local)) == 0

        wait_for(f"port-forward to {service}", connected, timeout=30, interval=0.3)
        yield f"http://127.0.0.1:{local}"
    finally:
        proc.terminate()
        proc.wait(timeout=10)


class Airflow:
    """The Airflow REST API through a port-forward, logged in as the chart's admin."""

    def __init__(self, url: str, password: str) -> None:
        self.url = url
        resp = requests.post(
            f"{url}/auth/token", json={"username": "admin", "password": password}, timeout=30
        )
        resp.raise_for_status()
        self.headers = {"Authorization": f"Bearer {resp.json()['access_token']}"}

    def get(self, path: str, **params: Any) -> Any:
        resp = requests.get(f"{self.url}/api/v2{path}", headers=self.headers, params=params, timeout=60)
        resp.raise_for_status()
        return resp.json() if "json" in resp.headers.get("content-type", "") else resp.text

    def send(self, method: str, path: str, body: dict[str, Any], **params: Any) -> Any:
        resp = requests.request(
            method, f"{self.url}/api/v2{path}", headers=self.headers, json=body, params=params, timeout=60
        )
        assert resp.ok, f"{method} {path}: {resp.status_code} {resp.text}"
        return resp.json()


class Release:
    def __init__(self, namespace: str) -> None:
        self.namespace = namespace
        self.core = client.CoreV1Api()
        self.figures: dict[str, Any] = {}
        self.run_id: str | None = None

    def name(self, component: str) -> str:
        return f"{RELEASE}-{component}"

    def secret(self, name: str) -> dict[str, str]:
        data = self.core.read_namespaced_secret(name, self.namespace).data
        return {k: base64.b64decode(v).decode() for k, v in data.items()}

    def pods(self, selector: str = "") -> list[client.V1Pod]:
        return self.core.list_namespaced_pod(self.namespace, label_selector=selector).items

    def helm(self, *args: str, timeout: float = 1200) -> subprocess.CompletedProcess[str]:
        return run("helm", *args, "-n", self.namespace, timeout=timeout)

    @contextmanager
    def airflow(self) -> Iterator[Airflow]:
        password = self.secret(self.name("airflow"))["admin-password"]
        with port_forward(self.namespace, self.name("airflow-api-server"), 8080) as url:
            yield Airflow(url, password)

    @contextmanager
    def mlflow(self) -> Iterator[str]:
        with port_forward(self.namespace, self.name("mlflow"), 5000) as url:
            yield url


def all_ready(pods: list[client.V1Pod]) -> bool:
    running = [p for p in pods if p.status.phase != "Succeeded" and not p.metadata.deletion_timestamp]
    return bool(running) and all(
        any(c.type == "Ready" and c.status == "True" for c in (p.status.conditions or [])) for p in running
    )


def cpu_millis(q: str) -> int:
    return int(q[:-1]) if q.endswith("m") else int(float(q) * 1000)


def mebibytes(q: str) -> int:
    factor = {"Ki": 1 / 1024, "Mi": 1, "Gi": 1024}[q[-2:]]
    return int(float(q[:-2]) * factor)


# What the default values run; a cluster without a registry (hack/cluster) must hold them all.
IMAGES = (
    "mlship-airflow:dev",
    "mlship-mlflow:dev",
    "mlship-operator:dev",
    *(f"mlship-step-{step}:dev" for step in STEPS),
    "postgres:15-bookworm",  # the PostgreSQL StatefulSet
    "python:3.11-slim-bookworm",  # the XCom sidecar of the step pods
)


def missing_images(core: client.CoreV1Api) -> list[str]:
    names = {n for node in core.list_node().items for i in node.status.images or [] for n in i.names or []}
    return [i for i in IMAGES if not any(n == i or n.endswith(f"/{i}") for n in names)]


@pytest.fixture(scope="module")
def release() -> Iterator[Release]:
    reason = _unreachable_reason()
    if reason:
        pytest.skip(reason)
    config.load_kube_config()
    core = client.CoreV1Api()
    missing = missing_images(core)
    if missing:
        pytest.skip(
            f"images not in the cluster: {', '.join(missing)} (hack/build-images --load; "
            f"hack/cluster load postgres:15-bookworm python:3.11-slim-bookworm)"
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
        start = time.monotonic()
        # pipeline.schedule=none: only the run triggered below, no scheduled one competing with it
        proc = rel.helm(
            "install", RELEASE, str(CHART), "--wait", "--timeout", "15m", "--set", "pipeline.schedule=none"
        )
        rel.figures["install_to_ready_seconds"] = round(time.monotonic() - start, 1)
        assert proc.returncode == 0, (
            f"helm install failed:\n{proc.stdout}\n{proc.stderr}\n"
            + run("kubectl", "-n", namespace, "get", "pods,events").stdout
        )
        yield rel
    finally:
        print(f"\nmlship e2e figures: {json.dumps(rel.figures)}")
        rel.helm("uninstall", RELEASE, "--wait", "--timeout", "5m")
        # the namespace takes the kept PVCs and Secrets with it
        core.delete_namespace(namespace)


def test_install_is_ready_in_a_restricted_namespace(release: Release, record_property: Any) -> None:
    pods = release.pods()
    components = {p.metadata.labels["app.kubernetes.io/component"] for p in pods}
    assert {
        "airflow-api-server",
        "airflow-scheduler",
        "airflow-dag-processor",
        "airflow-triggerer",
        "airflow-migrate",
        "mlflow",
        "operator",
        "postgresql",
    } <= components
    assert all_ready(pods), [(p.metadata.name, p.status.phase) for p in pods]
    # every pod was admitted by PodSecurity "restricted" (enforced: a violating pod is never created)
    ns = release.core.read_namespace(release.namespace)
    assert ns.metadata.labels["pod-security.kubernetes.io/enforce"] == "restricted"
    cpu = memory = 0
    for pod in pods:
        if pod.metadata.labels["app.kubernetes.io/component"] == "airflow-migrate":
            continue  # finished: holds no resources
        for c in pod.spec.containers:
            cpu += cpu_millis(c.resources.requests["cpu"])
            memory += mebibytes(c.resources.requests["memory"])
    release.figures.update(requests_cpu_millicores=cpu, requests_memory_mib=memory)
    for key, value in release.figures.items():
        record_property(key, value)
    print(
        f"\ninstall -> all pods Ready: {release.figures['install_to_ready_seconds']} s; "
        f"requests of the running stack: {cpu}m CPU, {memory} MiB"
    )
    assert cpu <= 900, "the stack must leave a 2-CPU node room for the 1-CPU train step"


def test_helm_test_passes(release: Release) -> None:
    proc = release.helm("test", RELEASE, "--logs", "--timeout", "5m")
    assert proc.returncode == 0, proc.stdout + proc.stderr
    for check in ("test-airflow", "test-mlflow", "test-operator"):
        assert f"{RELEASE}-{check}" in proc.stdout


def test_training_dag_runs_each_step_in_its_own_pod(release: Release) -> None:
    seen: dict[str, set[str]] = {}  # step -> images of its pods

    def watch_steps() -> None:
        for pod in release.pods("app.kubernetes.io/component=training-step"):
            step = pod.metadata.labels["mlship.io/step"]
            images = {c.image for c in pod.spec.containers if c.name == "base"}
            seen.setdefault(step, set()).update(images)

    with release.airflow() as airflow:
        dag = wait_for("the DAG to be parsed", lambda: airflow.get(f"/dags/{DAG}"), timeout=300)
        if dag["is_paused"]:
            airflow.send("PATCH", f"/dags/{DAG}", {"is_paused": False}, update_mask="is_paused")
        run_ = airflow.send("POST", f"/dags/{DAG}/dagRuns", {"logical_date": None, "conf": {}})
        release.run_id = run_id = run_["dag_run_id"]
        start = time.monotonic()

        def finished() -> str | None:
            watch_steps()
            state = airflow.get(f"/dags/{DAG}/dagRuns/{run_id}")["state"]
            return state if state in ("success", "failed") else None

        state = wait_for(f"DAG run {run_id}", finished, timeout=1800, interval=2)
        release.figures["dag_run_seconds"] = round(time.monotonic() - start, 1)
        tasks = {
            t["task_id"]: t
            for t in airflow.get(f"/dags/{DAG}/dagRuns/{run_id}/taskInstances")["task_instances"]
        }
        if state != "success":
            failed = [t for t, ti in tasks.items() if ti["state"] != "success"]
            logs = {
                t: airflow.get(
                    f"/dags/{DAG}/dagRuns/{run_id}/taskInstances/{t}/logs/{max(tasks[t]['try_number'], 1)}",
                    full_content="true",
                )
                for t in failed
            }
            pytest.fail(
                f"DAG run {run_id} {state}; tasks not successful: "
                f"{ {t: tasks[t]['state'] for t in failed} }\n{json.dumps(logs)[-6000:]}"
            )
        assert {t: ti["state"] for t, ti in tasks.items()} == dict.fromkeys(STEPS, "success")
        # the step's own output reached the task log the UI shows (scheduler log server)
        log = airflow.get(
            f"/dags/{DAG}/dagRuns/{run_id}/taskInstances/train/logs/{tasks['train']['try_number']}",
            full_content="true",
        )
        # the train step's own output (container "base") is in the task log the UI shows
        text = json.dumps(log)
        assert "[base]" in text and "model_uri" in text, (
            f"the train pod's output is not in the task log: {text[-3000:]}"
        )

    assert set(seen) == set(STEPS), f"step pods seen: {seen}"
    for step in STEPS:
        assert seen[step] == {f"mlship-step-{step}:dev"}, f"{step} ran from {seen[step]}"

    with release.mlflow() as url:
        model = requests.get(
            f"{url}/api/2.0/mlflow/registered-models/get", params={"name": "iris"}, timeout=30
        )
        assert model.ok, model.text
        aliases = {a["alias"] for a in model.json()["registered_model"].get("aliases", [])}
        assert "champion" in aliases


def registry_state(url: str) -> dict[str, Any]:
    """Every model version and every run MLflow knows, as comparable values."""
    mlflow = MlflowClient(url)
    experiments = [e.experiment_id for e in mlflow.search_experiments()]
    return {
        "versions": sorted((v.name, v.version, v.source, v.run_id) for v in mlflow.search_model_versions()),
        "aliases": {m.name: m.aliases for m in mlflow.search_registered_models()},
        "runs": sorted(r.info.run_id for r in mlflow.search_runs(experiments, max_results=1000)),
    }


def test_upgrade_keeps_generated_secrets_and_models(release: Release) -> None:
    assert release.run_id, "needs the DAG run of the previous test"
    secrets = {name: release.secret(release.name(name)) for name in ("airflow", "postgresql")}
    old_pods = {p.metadata.uid for p in release.pods()}
    with release.mlflow() as url:
        before = registry_state(url)
    assert before["versions"], "no registered model version to keep"
    # Not --reuse-values: the generated secrets must survive an upgrade that does not pass them.
    proc = release.helm(
        "upgrade",
        RELEASE,
        str(CHART),
        "--wait",
        "--timeout",
        "15m",
        "--set",
        "pipeline.schedule=none",
        "--set",
        "operator.logLevel=DEBUG",
        "--set",
        "airflow.parallelism=3",
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert {name: release.secret(release.name(name)) for name in ("airflow", "postgresql")} == secrets
    pods = release.pods()
    assert all_ready(pods)
    # the changed values reached new pods (so the checks below meet freshly started components)
    renewed = {
        p.metadata.labels["app.kubernetes.io/component"] for p in pods if p.metadata.uid not in old_pods
    }
    assert {"operator", "airflow-api-server", "airflow-scheduler", "airflow-migrate"} <= renewed
    operator = next(p for p in pods if p.metadata.labels["app.kubernetes.io/component"] == "operator")
    assert any(e.name == "MLSHIP_LOG_LEVEL" and e.value == "DEBUG" for e in operator.spec.containers[0].env)
    with release.mlflow() as url:
        assert registry_state(url) == before
    with release.airflow() as airflow:  # the same admin password, the same metadata DB
        assert airflow.get(f"/dags/{DAG}/dagRuns/{release.run_id}")["state"] == "success"


def test_postgresql_restart_loses_no_run_or_model_version(release: Release) -> None:
    with release.mlflow() as url:
        before = registry_state(url)
    pod = f"{release.name('postgresql')}-0"
    old_uid = release.core.read_namespaced_pod(pod, release.namespace).metadata.uid
    release.core.delete_namespaced_pod(pod, release.namespace)

    def back() -> bool:
        p = release.core.read_namespaced_pod(pod, release.namespace)
        return p.metadata.uid != old_uid and all_ready([p])

    wait_for("PostgreSQL to come back", back, timeout=300)
    with release.mlflow() as url:
        after = wait_for("MLflow to answer again", lambda: registry_state(url), timeout=120)
    assert after == before
    with release.airflow() as airflow:
        assert airflow.get(f"/dags/{DAG}/dagRuns/{release.run_id}")["state"] == "success"
