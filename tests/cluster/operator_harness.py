"""The operator harness shared by the cluster tests and benchmarks/promotion.py.

The operator runs as a subprocess on the host (`python -m mlship_operator`), watching namespaces
given to it; MLflow is a real `mlflow server` on the host, which pods reach through an HTTP
reverse proxy on all interfaces (at the node's IP). Serving is checked from INSIDE the cluster by
a client pod that calls the model's Service by its DNS name, so it works on kind too.

Nothing here depends on pytest: failures raise RuntimeError/TimeoutError with what was awaited.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
import uuid
from contextlib import suppress
from pathlib import Path
from typing import Any

import requests
import yaml
from cluster_helpers import python_pod
from devkit import WaitTimeout, free_port, stop_process, wait_for, wait_http
from kubernetes import client
from kubernetes.client.rest import ApiException
from mlflow import MlflowClient

ROOT = Path(__file__).resolve().parents[2]
GROUP, VERSION, PLURAL = "mlship.io", "v1alpha1", "modeldeployments"
SERVING_IMAGE = os.environ.get("MLSHIP_SERVING_IMAGE", "mlship-serving:dev")



class HttpForwarder:
    """An HTTP reverse proxy on all interfaces to the host-only MLflow, so that pods can reach
    it at the node's IP. It sends MLflow its own Host: MLflow refuses foreign Host headers
    (DNS-rebinding protection), which a plain TCP proxy would pass through."""

    _HOP = {"host", "connection", "keep-alive", "transfer-encoding", "te", "trailer",
            "upgrade", "proxy-authorization", "proxy-authenticate", "content-length",
            "content-encoding"}

    def __init__(self, target: str) -> None:
        from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

        base, hop = target.rstrip("/"), self._HOP

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def _forward(self) -> None:
                length = int(self.headers.get("Content-Length") or 0)
                body = self.rfile.read(length) if length else None
                headers = {k: v for k, v in self.headers.items() if k.lower() not in hop}
                resp = requests.request(self.command, base + self.path, headers=headers,
                                        data=body, timeout=120)
                self.send_response(resp.status_code)
                for key, value in resp.headers.items():
                    if key.lower() not in hop:
                        self.send_header(key, value)
                self.send_header("Content-Length", str(len(resp.content)))
                self.end_headers()
                if self.command != "HEAD":
                    self.wfile.write(resp.content)

            do_GET = do_POST = do_PUT = do_PATCH = do_DELETE = do_HEAD = _forward

            def log_message(self, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("0.0.0.0", 0), Handler)  # noqa: S104
        self.port = int(self.server.server_address[1])
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def stop(self) -> None:
        self.server.shutdown()
        self.server.server_close()


class Operator:
    """`python -m mlship_operator` as a subprocess, configured only through its environment."""

    def __init__(self, env: dict[str, str], log: Path) -> None:
        self.health = free_port()
        self.log_path = log
        self._log = open(log, "wb")  # noqa: SIM115 - closed in stop()
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "mlship_operator"],
            env={**os.environ, **env,
                 "MLSHIP_LIVENESS_ENDPOINT": f"http://127.0.0.1:{self.health}/healthz"},
            stdout=self._log, stderr=subprocess.STDOUT,
        )
        try:
            wait_http(f"http://127.0.0.1:{self.health}/healthz", 60, self.proc)
        except (RuntimeError, WaitTimeout) as exc:  # it exited, or never said healthy
            self.stop()
            raise RuntimeError(f"operator not healthy: {exc}\n{self.log()}") from None

    def log(self) -> str:
        if not self._log.closed:
            self._log.flush()
        return self.log_path.read_text(errors="replace")[-6000:]

    def stop(self) -> None:
        stop_process(self.proc)
        self._log.close()


# --------------------------------------------------------------------------- the CRD and CRs


def apply_crd(kube: client.ApiClient, timeout: float = 60) -> None:
    """Server-side apply manifests/crd.yaml and wait until it is established."""
    body = yaml.safe_load((ROOT / "manifests/crd.yaml").read_text())
    api = client.ApiextensionsV1Api(kube)
    api.patch_custom_resource_definition(
        body["metadata"]["name"], body, field_manager="mlship-tests", force=True,
        _content_type="application/apply-patch+yaml",
    )

    def established() -> bool:
        got = api.read_custom_resource_definition(body["metadata"]["name"])
        return any(c.type == "Established" and c.status == "True" for c in got.status.conditions or [])

    wait_for("the ModelDeployment CRD to be established", established, timeout, 0.5, retry=())


def create_cr(objects, namespace: str, name: str, spec: dict[str, Any]) -> dict[str, Any]:
    body = {"apiVersion": f"{GROUP}/{VERSION}", "kind": "ModelDeployment",
            "metadata": {"name": name, "namespace": namespace}, "spec": spec}
    return objects.create_namespaced_custom_object(GROUP, VERSION, namespace, PLURAL, body)


def get_cr(objects, namespace: str, name: str) -> dict[str, Any]:
    return objects.get_namespaced_custom_object(GROUP, VERSION, namespace, PLURAL, name)


def condition(cr: dict[str, Any], type_: str) -> dict[str, Any]:
    for cond in (cr.get("status") or {}).get("conditions") or []:
        if cond["type"] == type_:
            return cond
    return {}


def deployment(apps, namespace: str, name: str) -> client.V1Deployment | None:
    try:
        return apps.read_namespaced_deployment(name, namespace)
    except ApiException as err:
        if err.status == 404:
            return None
        raise


def template_version(dep: client.V1Deployment | None) -> str | None:
    if dep is None:
        return None
    return dep.spec.template.metadata.labels.get("mlship.io/model-version")


def event_reasons(core, namespace: str, name: str) -> set[str]:
    events = core.list_namespaced_event(
        namespace, field_selector=f"involvedObject.kind=ModelDeployment,involvedObject.name={name}")
    return {e.reason for e in events.items}


def delete_crs(objects: client.CustomObjectsApi, namespace: str, operators: list[Operator],
               timeout: float = 30) -> None:
    """Delete a namespace's CRs while an operator still runs to release its finalizer, stop the
    operators, then strip the finalizer of whatever is left (or the namespace would hang in
    Terminating)."""
    objects.delete_collection_namespaced_custom_object(GROUP, VERSION, namespace, PLURAL)
    with suppress(WaitTimeout):  # what is left loses its finalizer below
        wait_for("the CRs to be deleted", lambda: not objects.list_namespaced_custom_object(
            GROUP, VERSION, namespace, PLURAL)["items"], timeout, 0.5, retry=())
    for op in operators:
        op.stop()
    for item in objects.list_namespaced_custom_object(GROUP, VERSION, namespace, PLURAL)["items"]:
        objects.patch_namespaced_custom_object(
            GROUP, VERSION, namespace, PLURAL, item["metadata"]["name"],
            {"metadata": {"finalizers": None}})


# --------------------------------------------------------------------------- real serving pods


def node_ip_and_images(core) -> tuple[str, set[str]]:
    (node, *_) = core.list_node().items
    ip = next(a.address for a in node.status.addresses if a.type == "InternalIP")
    names = {n for image in node.status.images or [] for n in image.names or []}
    return ip, names


def has_image(names: set[str], image: str) -> bool:
    return any(n == image or n.endswith(f"/{image}") or n.endswith(f"/library/{image}")
               for n in names)


def register_real_versions(mlflow_server: str, tmp_path: Path) -> tuple[str, str, str, str]:
    """A loadable iris forest, a version whose artifact cannot be deserialized, and a second
    loadable forest."""
    import mlflow
    import mlflow.sklearn
    from sklearn.datasets import load_iris
    from sklearn.ensemble import RandomForestClassifier

    trusted = ["sklearn.tree._tree.Tree"]
    x, y = load_iris(return_X_y=True, as_frame=True)
    model = RandomForestClassifier(5, random_state=0).fit(x, y)
    name = f"op-real-{uuid.uuid4().hex[:6]}"
    previous = mlflow.get_tracking_uri()
    mlflow.set_tracking_uri(mlflow_server)
    try:
        with mlflow.start_run():
            good = mlflow.sklearn.log_model(model, name="model", input_example=x.head(2),
                                            registered_model_name=name,
                                            skops_trusted_types=trusted)
            saved = tmp_path / "broken"
            mlflow.sklearn.save_model(model, saved, input_example=x.head(1),
                                      skops_trusted_types=trusted)
            (saved / "model.skops").write_bytes(b"this is not a zip file")
            mlflow.log_artifacts(str(saved), artifact_path="broken")
            run_id = mlflow.active_run().info.run_id
            broken = mlflow.register_model(f"runs:/{run_id}/broken", name).version
            other = mlflow.sklearn.log_model(RandomForestClassifier(7, random_state=1).fit(x, y),
                                             name="model2", input_example=x.head(2),
                                             registered_model_name=name,
                                             skops_trusted_types=trusted)
    finally:
        mlflow.set_tracking_uri(previous)
    MlflowClient(tracking_uri=mlflow_server).set_registered_model_alias(
        name, "champion", good.registered_model_version)
    return (name, str(good.registered_model_version), str(broken),
            str(other.registered_model_version))



def register_forests(mlflow_server: str, count: int = 2, prefix: str = "op-forest",
                     shuffled: frozenset[int] = frozenset()) -> tuple[str, list[str]]:
    """`count` loadable iris forests (different sizes and seeds) as versions of a new model,
    alias champion → the first. The forests whose index is in `shuffled` are fit on shuffled
    labels: they load and answer, and are wrong."""
    import mlflow
    import mlflow.sklearn
    import numpy as np
    from sklearn.datasets import load_iris
    from sklearn.ensemble import RandomForestClassifier

    x, y = load_iris(return_X_y=True, as_frame=True)
    wrong = np.random.default_rng(0).permutation(y.to_numpy())
    name = f"{prefix}-{uuid.uuid4().hex[:6]}"
    previous = mlflow.get_tracking_uri()
    mlflow.set_tracking_uri(mlflow_server)
    versions = []
    try:
        with mlflow.start_run():
            for i in range(count):
                labels = wrong if i in shuffled else y
                forest = RandomForestClassifier(5 + 2 * i, random_state=i).fit(x, labels)
                info = mlflow.sklearn.log_model(forest, name=f"model{i}", input_example=x.head(2),
                                                registered_model_name=name,
                                                skops_trusted_types=["sklearn.tree._tree.Tree"])
                versions.append(str(info.registered_model_version))
    finally:
        mlflow.set_tracking_uri(previous)
    MlflowClient(tracking_uri=mlflow_server).set_registered_model_alias(
        name, "champion", versions[0])
    return name, versions


def register_slow_forest(mlflow_server: str, name: str) -> str:
    """A new version of `name`: register_forests' first forest, answering slow_forest.DELAY_S
    later (tests/cluster/slow_forest.py)."""
    import mlflow
    import mlflow.pyfunc
    from sklearn.datasets import load_iris

    x = load_iris(as_frame=True).data
    previous = mlflow.get_tracking_uri()
    mlflow.set_tracking_uri(mlflow_server)
    try:
        with mlflow.start_run():
            info = mlflow.pyfunc.log_model(
                name="slow", python_model=str(Path(__file__).with_name("slow_forest.py")),
                input_example=x.head(2), registered_model_name=name,
            )
    finally:
        mlflow.set_tracking_uri(previous)
    return str(info.registered_model_version)


def iris_request() -> str:
    """One iris row as an MLflow `dataframe_split` /invocations body."""
    from sklearn.datasets import load_iris

    x = load_iris(as_frame=True).data
    return json.dumps({"dataframe_split": {"columns": list(x.columns),
                                           "data": [x.iloc[0].tolist()]}})


# --------------------------------------------------------------------------- in-cluster client

# Runs in the client pod (stdlib only). Each worker thread loops: POST /invocations (if a body
# was given), then GET /metadata, each on a new connection (urllib sends Connection: close), so
# the Service balances every request on its own, as during a real rollout. It prints a JSON line
# whenever the version that answered /metadata differs from the previous answer, one per failure
# (the first 50), and a summary when /tmp/stop appears or the time limit is reached.
CLIENT_SCRIPT = r"""
import collections, json, os, sys, threading, time, urllib.error, urllib.request

base, body = sys.argv[1], sys.argv[2].encode()
threads, pause, limit = int(sys.argv[3]), float(sys.argv[4]), float(sys.argv[5])
lock = threading.Lock()
count = collections.Counter()
versions = collections.Counter()
tail = collections.deque(maxlen=20)
last = [None]
started = time.time()

def emit(**line):
    print(json.dumps(line), flush=True)

def call(method, path, data):
    headers = {"Content-Type": "application/json"} if data else {}
    req = urllib.request.Request(base + path, data=data, method=method, headers=headers)
    try:
        with urllib.request.urlopen(req, timeout=10) as resp:
            return resp.status, resp.read()
    except urllib.error.HTTPError as e:
        return e.code, e.read()

def one(method, path, data):
    t = time.time()
    try:
        status, answer = call(method, path, data)
        error = None if status == 200 else f"HTTP {status}: {answer[:300].decode(errors='replace')}"
    except Exception as e:
        error = f"{type(e).__name__}: {e}"
    with lock:
        count["requests"] += 1
        count[path] += 1
        if error:
            count["failed"] += 1
            if count["failed"] <= 50:
                emit(t=t, failure=f"{method} {path}: {error}")
            return
        if path == "/metadata":
            version = json.loads(answer)["version"]
            versions[version] += 1
            tail.append(version)
            if version != last[0]:
                last[0] = version
                emit(t=t, version=version)

def worker():
    while not os.path.exists("/tmp/stop") and time.time() - started < limit:
        if body:
            one("POST", "/invocations", body)
        one("GET", "/metadata", None)
        time.sleep(pause)

workers = [threading.Thread(target=worker) for _ in range(threads)]
for w in workers:
    w.start()
for w in workers:
    w.join()
emit(summary={**count, "versions": dict(versions), "tail": list(tail), "seconds": time.time() - started})
"""


def start_client(core: client.CoreV1Api, namespace: str, name: str, url: str, *, body: str = "",
                 threads: int = 2, pause: float = 0.05, limit: float = 900) -> None:
    """A pod calling `url` (the Service, by DNS name) until stop_client() or `limit` seconds."""
    pod = python_pod(name, CLIENT_SCRIPT, container={
        "args": [url.rstrip("/"), body, str(threads), str(pause), str(limit)],
    })
    pod["spec"]["activeDeadlineSeconds"] = int(limit) + 120  # never outlives a crashed run
    core.create_namespaced_pod(namespace, pod)


def client_lines(core: client.CoreV1Api, namespace: str, name: str) -> list[dict[str, Any]]:
    """The JSON lines the client printed so far (none while it is still starting)."""
    try:
        resp = core.read_namespaced_pod_log(name, namespace, _preload_content=False)
    except ApiException as err:
        if err.status == 400:  # ContainerCreating: no log yet
            return []
        raise
    return [json.loads(line) for line in resp.data.decode().splitlines()
            if line.startswith("{")]


def stop_client(core: client.CoreV1Api, namespace: str, name: str,
                timeout: float = 60) -> dict[str, Any]:
    """Tell the client to finish (it drains its in-flight requests) and return its summary,
    with `lines` holding everything it printed."""
    from kubernetes.stream import stream

    stream(core.connect_get_namespaced_pod_exec, name, namespace, command=["touch", "/tmp/stop"],
           stderr=True, stdout=True, stdin=False, tty=False)
    wait_for(f"client pod {name} to finish after the stop", lambda: core.read_namespaced_pod(
        name, namespace).status.phase in ("Succeeded", "Failed"), timeout, 0.5, retry=())
    lines = client_lines(core, namespace, name)
    summaries = [line["summary"] for line in lines if "summary" in line]
    if not summaries:
        raise RuntimeError(f"client pod {name} printed no summary: {lines}")
    return {**summaries[-1], "lines": lines}
