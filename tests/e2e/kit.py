"""Helpers of the e2e tier: the installed release, Airflow's REST API (hack/devkit.py's client, and
the tier's verdict on a DAG run), MLflow, ModelDeployments.

Imported as `e2e.kit` (tests/ is on pytest's pythonpath); the session-scoped `release` fixture
that installs the chart is in tests/conftest.py
(tests/e2e/release.py).
"""

from __future__ import annotations

import base64
import json
import shutil
import subprocess
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import devkit
import pytest
import requests
from devkit import DAG, WaitTimeout, port_forward, wait_for
from kubernetes import client
from mlflow import MlflowClient
from testkit import cluster_unreachable_reason

ROOT = Path(__file__).resolve().parents[2]
CHART = ROOT / "charts" / "mlship"
ARTIFACTS = ROOT / "test-artifacts"  # gitignored: screenshots and other evidence of a run
RELEASE = "mlship"
STEPS = ("ingest", "validate", "featurize", "train", "evaluate", "register")
EXPERIMENT = "mlship"  # the chart's pipeline.experiment
MODEL = "iris"
TAG_RUN_KEY = "mlship.pipeline_run_key"
# The Secrets the release names from its install on (BASE_VALUES) as pipeline.sourceHeadersSecret
# and pipeline.sourceCredentialsSecret, created before it (tests/e2e/release.py) with no credentials
# (NEUTRAL_SOURCE_SECRETS): test_sources.py fills them in for its runs and puts these back after,
# with no upgrade (a step pod reads them when it starts).
SOURCE_HEADERS_SECRET = "mlship-e2e-source-headers"  # noqa: S105 - the Secret's name
SOURCE_HEADERS_KEY = "headers.json"  # the chart's default pipeline.sourceHeadersSecretKey
SOURCE_ENV_SECRET = "mlship-e2e-source-env"  # noqa: S105 - the Secret's name
NEUTRAL_SOURCE_SECRETS: dict[str, dict[str, str]] = {
    # {}: $MLSHIP_SOURCE_HEADERS with no host, as unset (mlship.ml.json_source.headers_from_env)
    SOURCE_HEADERS_SECRET: {SOURCE_HEADERS_KEY: "{}"},
    # envFrom: one variable that no source reads (not a DVC, git or cloud variable)
    SOURCE_ENV_SECRET: {"MLSHIP_E2E_SOURCE_ENV": "neutral"},
}
# The Secret the release names as alerts.existingSecret, created before it too: alerts go to a
# receiver pod of this name in the namespace (test_drift_loop.py starts it; while none runs, an
# alert is tried and given up, failing nothing). The path stands for a chat webhook's secret.
ALERTS_SECRET = "mlship-e2e-alerts"  # noqa: S105 - the Secret's name
ALERT_RECEIVER, ALERT_RECEIVER_PORT = "e2e-alert-receiver", 8080
ALERT_PATH = "/services/T0/B0/e2e"
INSTALL_SECRETS: dict[str, dict[str, str]] = {
    **NEUTRAL_SOURCE_SECRETS,
    ALERTS_SECRET: {"url": f"http://{ALERT_RECEIVER}:{ALERT_RECEIVER_PORT}{ALERT_PATH}"},
}
AIRFLOW_UI_URL = "http://localhost:8080"  # what a person port-forwarding Airflow opens
# --set values of every install/upgrade: only triggered DAG runs (no scheduled one competing), a
# short retry delay so a step that fails for good (a bad dataset) fails the run in ~1 min, not 3,
# and the Secrets above.
BASE_VALUES = (
    "pipeline.schedule=none",
    "pipeline.retryDelaySeconds=5",
    f"pipeline.sourceHeadersSecret={SOURCE_HEADERS_SECRET}",
    f"pipeline.sourceCredentialsSecret={SOURCE_ENV_SECRET}",
    f"alerts.existingSecret={ALERTS_SECRET}",
    f"alerts.airflowUrl={AIRFLOW_UI_URL}",
)
MD_GROUP, MD_VERSION, MD_PLURAL = "mlship.io", "v1alpha1", "modeldeployments"

# Rows of the iris data set with their species (0 setosa, 1 versicolor, 2 virginica).
IRIS_COLUMNS = ["sepal length (cm)", "sepal width (cm)", "petal length (cm)", "petal width (cm)"]
IRIS_ROWS = [
    ([5.1, 3.5, 1.4, 0.2], 0),
    ([4.9, 3.0, 1.4, 0.2], 0),
    ([5.4, 3.9, 1.7, 0.4], 0),
    ([7.0, 3.2, 4.7, 1.4], 1),
    ([6.4, 3.2, 4.5, 1.5], 1),
    ([5.7, 2.8, 4.5, 1.3], 1),
    ([5.5, 2.4, 3.8, 1.1], 1),
    ([6.3, 3.3, 6.0, 2.5], 2),
    ([7.2, 3.6, 6.1, 2.5], 2),
    ([6.7, 3.0, 5.2, 2.3], 2),
]


def unreachable_reason() -> str | None:
    """Why the e2e tier cannot run here (no cluster, as testkit defines it; no helm or kubectl), or
    None. A cluster that is there but fails (TLS, auth, a broken kubeconfig) raises."""
    reason = cluster_unreachable_reason()
    if reason:
        return reason
    missing = [tool for tool in ("helm", "kubectl") if shutil.which(tool) is None]
    return f'{" and ".join(missing)} not on PATH (eval "$(hack/cluster env)")' if missing else None


def run(*cmd: str, timeout: float = 600) -> subprocess.CompletedProcess[str]:
    return subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, check=False)


class Airflow(devkit.Airflow):
    """Airflow's REST API (devkit.Airflow), with the e2e tier's verdict on a DAG run."""

    def require_success(self, run_id: str, state: str, *, dag: str = DAG) -> None:
        """Fail the test with the failed tasks' output when the run did not succeed, and when it did
        but a task needed a retry (steps retry twice: a green run must not hide a flaky step)."""
        tasks = self.tasks(run_id, dag=dag)
        if state == "success":
            retried = {
                t: (ti["state"], ti["try_number"]) for t, ti in tasks.items()
                # a task that succeeded did on try 1; one skipped without running has try 0 or 1
                if ti["try_number"] > 1 or (ti["state"] == "success" and ti["try_number"] != 1)
            }
            if retried:
                logs = {t: pod_output(self.log(run_id, t, 1, dag=dag)) for t in retried}
                pytest.fail(
                    f"DAG run {run_id} succeeded, but not each task on its first try "
                    f"(task: (state, try_number)): {retried}\nfirst tries:\n"
                    f"{json.dumps(logs, indent=1)[-8000:]}"
                )
            return
        failed = [t for t, ti in tasks.items() if ti["state"] != "success"]
        logs = {
            t: pod_output(self.log(run_id, t, tasks[t]["try_number"], dag=dag))
            for t in failed if tasks[t]["try_number"] >= 1  # upstream_failed tasks never ran
        }
        pytest.fail(
            f"DAG run {run_id} {state}; tasks not successful: "
            f"{ {t: tasks[t]['state'] for t in failed} }\n{json.dumps(logs, indent=1)[-8000:]}"
        )


def pod_output(log: str) -> str:
    """What a step's pod printed (the "[base]" lines of its task log), else the log's end."""
    lines = [line for line in log.splitlines() if "[base]" in line]
    return "\n".join(lines[-30:]) if lines else log[-3000:]


class StepPods:
    """Which step pods appear while a DAG run goes on (succeeded ones are deleted, so poll)."""

    def __init__(self, release: Release) -> None:
        self.release = release
        self.before = {p.metadata.uid for p in release.pods("app.kubernetes.io/component=training-step")}
        self.images: dict[str, set[str]] = {}  # step -> images of its new pods
        self.accounts: set[str] = set()  # the ServiceAccounts the new pods ran as

    def poll(self) -> None:
        for pod in self.release.pods("app.kubernetes.io/component=training-step"):
            if pod.metadata.uid in self.before:
                continue
            step = pod.metadata.labels["mlship.io/step"]
            images = {c.image for c in pod.spec.containers if c.name == "base"}
            self.images.setdefault(step, set()).update(images)
            self.accounts.add(pod.spec.service_account_name)


def step_pods_state(release: Release) -> dict[str, str]:
    """Each training-step pod's phase and its containers' waiting or terminated reasons: what a run
    stuck in a step is waiting on."""
    def reason(status: client.V1ContainerStatus) -> str:
        waiting, ended = status.state.waiting, status.state.terminated
        got = waiting.reason if waiting else (f"exited {ended.exit_code}" if ended else "running")
        return f"{status.name}: {got}"

    return {
        p.metadata.name: "; ".join([p.status.phase or "?", *map(reason, p.status.container_statuses or [])])
        for p in release.pods("app.kubernetes.io/component=training-step")
    }


class Release:
    """The chart installed in its own namespace, and ways to reach what it runs."""

    def __init__(self, namespace: str) -> None:
        self.namespace = namespace
        self.core = client.CoreV1Api()
        self.custom = client.CustomObjectsApi()
        self.figures: dict[str, Any] = {}
        # what earlier tests leave for later ones (tests run in file order on one release)
        self.run_id: str | None = None  # the first successful training run
        self.challenger: str | None = None  # the version a second run registered, not promoted
        self.deployment: str | None = None  # the ModelDeployment serving MODEL

    def name(self, component: str) -> str:
        return f"{RELEASE}-{component}"

    @property
    def mlflow_in_cluster(self) -> str:
        """MLflow as pods in the cluster reach it."""
        return f"http://{self.name('mlflow')}.{self.namespace}.svc.cluster.local:5000"

    def secret(self, name: str) -> dict[str, str]:
        data = self.core.read_namespaced_secret(name, self.namespace).data
        return {k: base64.b64decode(v).decode() for k, v in data.items()}

    def create_secret(self, name: str, data: dict[str, str]) -> None:
        self.core.create_namespaced_secret(self.namespace, secret_body(name, data))

    def replace_secret(self, name: str, data: dict[str, str]) -> None:
        """The Secret now holds `data` and no other key (pods started from now on read it)."""
        self.core.replace_namespaced_secret(name, self.namespace, secret_body(name, data))

    def pods(self, selector: str = "") -> list[client.V1Pod]:
        return self.core.list_namespaced_pod(self.namespace, label_selector=selector).items

    def own_pods(self) -> list[client.V1Pod]:
        """The release's pods, step pods aside (failed ones of a bad dataset run are kept)."""
        return [p for p in self.pods()
                if p.metadata.labels.get("app.kubernetes.io/component") != "training-step"]

    def settle(self, timeout: float = 180) -> float:
        """Seconds until every pod of the release (step pods aside) is Ready, else an
        AssertionError naming those that are not. `helm --wait` returns once the Deployments are
        Ready; the migrate Job then still sets Airflow's admin on the same node, and a component's
        probe may miss meanwhile (seen in CI: one pod not Ready right after install and upgrade)."""
        start = time.monotonic()
        waiting: list[str] = []

        def settled() -> bool:
            pods = self.own_pods()
            waiting[:] = not_ready(pods)
            return bool(pods) and not waiting

        try:
            wait_for("every pod of the release Ready", settled, timeout, interval=2)
        except WaitTimeout:
            raise AssertionError(f"not Ready {timeout:g} s after helm returned: {waiting}") from None
        return round(time.monotonic() - start, 1)

    def helm(self, *args: str, timeout: float = 1200) -> subprocess.CompletedProcess[str]:
        return run("helm", *args, "-n", self.namespace, timeout=timeout)

    @contextmanager
    def airflow(self) -> Iterator[Airflow]:
        password = self.secret(self.name("airflow"))["admin-password"]
        with port_forward(self.namespace, f"svc/{self.name('airflow-api-server')}", 8080) as url:
            yield Airflow.connect(url, password, timeout=120)

    @contextmanager
    def mlflow(self) -> Iterator[str]:
        with port_forward(self.namespace, f"svc/{self.name('mlflow')}", 5000) as url:
            yield url

    @contextmanager
    def mlflow_client(self) -> Iterator[MlflowClient]:
        with self.mlflow() as url:
            yield MlflowClient(tracking_uri=url, registry_uri=url)

    # ---- ModelDeployments

    def apply_model_deployment(self, name: str, spec: dict[str, Any]) -> dict[str, Any]:
        body = {
            "apiVersion": f"{MD_GROUP}/{MD_VERSION}",
            "kind": "ModelDeployment",
            "metadata": {"name": name, "namespace": self.namespace},
            "spec": spec,
        }
        return dict(
            self.custom.create_namespaced_custom_object(MD_GROUP, MD_VERSION, self.namespace, MD_PLURAL, body)
        )

    def model_deployment(self, name: str) -> dict[str, Any]:
        return dict(
            self.custom.get_namespaced_custom_object(MD_GROUP, MD_VERSION, self.namespace, MD_PLURAL, name)
        )

    def model_deployments(self) -> list[dict[str, Any]]:
        listing = self.custom.list_namespaced_custom_object(MD_GROUP, MD_VERSION, self.namespace, MD_PLURAL)
        return list(listing["items"])

    def delete_model_deployment(self, name: str, timeout: float = 180) -> None:
        """Delete one and wait until the operator released its finalizer (its pods go with it)."""
        self.custom.delete_namespaced_custom_object(MD_GROUP, MD_VERSION, self.namespace, MD_PLURAL, name)
        wait_for(
            f"ModelDeployment {name} to be deleted",
            lambda: name not in {md["metadata"]["name"] for md in self.model_deployments()},
            timeout=timeout,
            interval=3,
        )

    def delete_model_deployments(self, timeout: float = 180) -> None:
        """Delete every ModelDeployment and wait until the operator released its finalizer."""
        for md in self.model_deployments():
            self.custom.delete_namespaced_custom_object(
                MD_GROUP, MD_VERSION, self.namespace, MD_PLURAL, md["metadata"]["name"]
            )
        wait_for("ModelDeployments to be deleted", lambda: not self.model_deployments(), timeout, 3)

    def serving_pods(self, name: str) -> list[client.V1Pod]:
        return [
            p
            for p in self.pods(f"app.kubernetes.io/name=mlship-serving,app.kubernetes.io/instance={name}")
            if not p.metadata.deletion_timestamp
        ]

    def events_of(self, obj: dict[str, Any]) -> list[client.CoreV1Event]:
        uid = obj["metadata"]["uid"]
        return list(
            self.core.list_namespaced_event(self.namespace, field_selector=f"involvedObject.uid={uid}").items
        )

    @contextmanager
    def serving(self, name: str) -> Iterator[str]:
        with port_forward(self.namespace, f"svc/{name}", 80) as url:
            yield url


def python_pod(
    name: str, namespace: str, code: str, port: int, *,
    env: tuple[dict[str, Any], ...] = (), mounts: tuple[dict[str, Any], ...] = (),
    volumes: tuple[dict[str, Any], ...] = (),
) -> dict[str, Any]:
    """A pod running `python -c code` that serves HTTP on `port` (Ready once GET /healthz answers),
    within PodSecurity "restricted" (the namespace enforces it)."""
    return {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": name, "namespace": namespace, "labels": {"app.kubernetes.io/name": name}},
        "spec": {
            "automountServiceAccountToken": False,
            "securityContext": {"runAsNonRoot": True, "runAsUser": 10001, "runAsGroup": 10001,
                                "seccompProfile": {"type": "RuntimeDefault"}},
            "containers": [{
                "name": "server",
                "image": "python:3.11-slim-bookworm",
                "imagePullPolicy": "Never",
                "command": ["python", "-c", code],
                "env": [*env, {"name": "HOME", "value": "/tmp"}, {"name": "PYTHONUNBUFFERED", "value": "1"}],
                "ports": [{"name": "http", "containerPort": port}],
                "readinessProbe": {"httpGet": {"path": "/healthz", "port": port}, "periodSeconds": 2},
                "resources": {"requests": {"cpu": "10m", "memory": "32Mi"},
                              "limits": {"cpu": "250m", "memory": "128Mi"}},
                "securityContext": {
                    "runAsNonRoot": True, "runAsUser": 10001, "allowPrivilegeEscalation": False,
                    "readOnlyRootFilesystem": True, "capabilities": {"drop": ["ALL"]},
                    "seccompProfile": {"type": "RuntimeDefault"},
                },
                "volumeMounts": [*mounts, {"name": "tmp", "mountPath": "/tmp"}],
            }],
            "volumes": [*volumes, {"name": "tmp", "emptyDir": {}}],
        },
    }


def service_body(name: str, port: int) -> dict[str, Any]:
    return {"metadata": {"name": name}, "spec": {
        "selector": {"app.kubernetes.io/name": name},
        "ports": [{"name": "http", "port": port, "targetPort": port}],
    }}


# The alert receiver: prints each POST as one line, `ALERT <path> <body>`.
ALERT_RECEIVER_PY = f"""
import http.server
class Receiver(http.server.BaseHTTPRequestHandler):
    def do_GET(self):
        self.send_response(200)
        self.end_headers()
    def do_POST(self):
        body = self.rfile.read(int(self.headers["Content-Length"])).decode()
        print("ALERT " + self.path + " " + body, flush=True)
        self.send_response(200)
        self.end_headers()
    def log_message(self, *args):
        pass
http.server.ThreadingHTTPServer(("", {ALERT_RECEIVER_PORT}), Receiver).serve_forever()
"""


def received_alerts(release: Release) -> list[tuple[str, dict[str, Any]]]:
    """(path, body) of every alert the receiver pod was sent."""
    # (the client would give the log's bytes as their repr in a str)
    log = release.core.read_namespaced_pod_log(
        ALERT_RECEIVER, release.namespace, _preload_content=False).data.decode()
    lines = (line.removeprefix("ALERT ") for line in log.splitlines() if line.startswith("ALERT "))
    return [(path, json.loads(body)) for path, body in (line.split(" ", 1) for line in lines)]


def secret_body(name: str, data: dict[str, str]) -> dict[str, Any]:
    """An Opaque Secret holding `data` (stringData: the API stores it as its only data on a replace)."""
    return {"metadata": {"name": name}, "type": "Opaque", "stringData": data}


def condition(obj: dict[str, Any], type_: str) -> dict[str, Any]:
    for c in (obj.get("status") or {}).get("conditions") or []:
        if c.get("type") == type_:
            return dict(c)
    return {}


def not_ready(pods: list[client.V1Pod]) -> list[str]:
    """The pods that should be Ready and are not (finished pods and pods being deleted aside)."""
    return [
        p.metadata.name
        for p in pods
        if p.status.phase != "Succeeded"
        and not p.metadata.deletion_timestamp
        and not any(c.type == "Ready" and c.status == "True" for c in (p.status.conditions or []))
    ]


def all_ready(pods: list[client.V1Pod]) -> bool:
    running = [p for p in pods if p.status.phase != "Succeeded" and not p.metadata.deletion_timestamp]
    return bool(running) and not not_ready(running)


def predict(url: str, rows: list[list[float]]) -> list[Any]:
    """POST rows to a model server's /invocations (MLflow scoring protocol); its predictions."""
    resp = requests.post(
        f"{url}/invocations",
        json={"dataframe_split": {"columns": IRIS_COLUMNS, "data": rows}},
        timeout=30,
    )
    assert resp.ok, f"/invocations answered {resp.status_code}: {resp.text}"
    return list(resp.json()["predictions"])


def iris_accuracy(url: str) -> float:
    predictions = predict(url, [row for row, _ in IRIS_ROWS])
    assert len(predictions) == len(IRIS_ROWS), predictions
    hits = sum(int(p) == label for p, (_, label) in zip(predictions, IRIS_ROWS, strict=True))
    return hits / len(IRIS_ROWS)
