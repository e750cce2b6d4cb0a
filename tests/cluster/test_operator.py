"""The operator against the real kube-apiserver and a real MLflow server.

The operator runs as a subprocess on the host (`python -m mlship_operator`), watching one fresh
namespace; MLflow is the session's real `mlflow server`, reached through a TCP proxy that a test
can stop to make MLflow "go down". Pods are kept Pending (an unsatisfiable CPU request) unless
a test needs them to run, so the operator's behaviour does not depend on images.
"""

from __future__ import annotations

import base64
import os
import socket
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import requests
import yaml
from cluster_helpers import wait_until
from kubernetes import client
from kubernetes.client.rest import ApiException
from mlflow import MlflowClient

pytestmark = [pytest.mark.cluster, pytest.mark.timeout(420)]

ROOT = Path(__file__).resolve().parents[2]
GROUP, VERSION, PLURAL = "mlship.io", "v1alpha1", "modeldeployments"
# Never schedulable: pods stay Pending, admitted by PodSecurity but never started.
PENDING = {"resources": {"requests": {"cpu": "500", "memory": "64Mi"}},
           "progressDeadlineSeconds": 3600}
SERVING_IMAGE = os.environ.get("MLSHIP_SERVING_IMAGE", "mlship-serving:dev")


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class TcpProxy:
    """Forwards a local port to MLflow; stop() makes MLflow unreachable through it."""

    def __init__(self, target: str) -> None:
        self.target = ("127.0.0.1", int(target.rsplit(":", 1)[1]))
        self.host, self.port = "127.0.0.1", _free_port()
        self._listener: socket.socket | None = None
        self._conns: list[socket.socket] = []

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self) -> TcpProxy:
        listener = socket.socket()
        listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        listener.bind((self.host, self.port))
        listener.listen(64)
        self._listener = listener
        threading.Thread(target=self._accept, args=(listener,), daemon=True).start()
        return self

    def stop(self) -> None:
        if self._listener:
            # close() alone does not wake a thread blocked in accept(), and the kernel would
            # keep accepting; shutdown() stops listening at once.
            try:
                self._listener.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
            self._listener.close()
            self._listener = None
        for conn in self._conns:
            try:
                conn.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
            conn.close()
        self._conns.clear()

    def _accept(self, listener: socket.socket) -> None:
        while True:
            try:
                downstream, _ = listener.accept()
            except OSError:
                return
            upstream = socket.create_connection(self.target)
            self._conns += [downstream, upstream]
            for a, b in ((downstream, upstream), (upstream, downstream)):
                threading.Thread(target=self._pipe, args=(a, b), daemon=True).start()

    @staticmethod
    def _pipe(src: socket.socket, dst: socket.socket) -> None:
        try:
            while data := src.recv(65536):
                dst.sendall(data)
        except OSError:
            pass
        finally:
            for s in (src, dst):
                try:
                    s.shutdown(socket.SHUT_RDWR)
                except OSError:
                    pass


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
        self.health = _free_port()
        self.log_path = log
        self._log = open(log, "wb")  # noqa: SIM115 - closed in stop()
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "mlship_operator"],
            env={**os.environ, **env,
                 "MLSHIP_LIVENESS_ENDPOINT": f"http://127.0.0.1:{self.health}/healthz"},
            stdout=self._log, stderr=subprocess.STDOUT,
        )
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                pytest.fail(f"operator exited with {self.proc.returncode}:\n{self.log()}")
            try:
                if requests.get(f"http://127.0.0.1:{self.health}/healthz", timeout=2).ok:
                    return
            except requests.RequestException:
                pass
            time.sleep(0.3)
        pytest.fail(f"operator not healthy within 60s:\n{self.log()}")

    def log(self) -> str:
        self._log.flush()
        return self.log_path.read_text(errors="replace")[-6000:]

    def stop(self) -> None:
        self.proc.terminate()
        try:
            self.proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            self.proc.kill()
        self._log.close()


# --------------------------------------------------------------------------- fixtures


@pytest.fixture(scope="session")
def crd(kube: client.ApiClient) -> None:
    body = yaml.safe_load((ROOT / "manifests/crd.yaml").read_text())
    api = client.ApiextensionsV1Api(kube)
    api.patch_custom_resource_definition(
        body["metadata"]["name"], body, field_manager="mlship-tests", force=True,
        _content_type="application/apply-patch+yaml",
    )

    def established() -> bool:
        got = api.read_custom_resource_definition(body["metadata"]["name"])
        return any(c.type == "Established" and c.status == "True"
                   for c in got.status.conditions or [])

    wait_until("the ModelDeployment CRD to be established", established, timeout=60)


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
    # Delete the CRs while an operator still runs to release its finalizer; otherwise the
    # namespace would hang in Terminating. Strip what is left if the operator is gone.
    objects = client.CustomObjectsApi(kube)
    objects.delete_collection_namespaced_custom_object(GROUP, VERSION, namespace, PLURAL)
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline and objects.list_namespaced_custom_object(
            GROUP, VERSION, namespace, PLURAL)["items"]:
        time.sleep(0.5)
    for op in started:
        op.stop()
    for item in objects.list_namespaced_custom_object(GROUP, VERSION, namespace, PLURAL)["items"]:
        objects.patch_namespaced_custom_object(
            GROUP, VERSION, namespace, PLURAL, item["metadata"]["name"],
            {"metadata": {"finalizers": None}})


# --------------------------------------------------------------------------- helpers


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


# --------------------------------------------------------------------------- tests


def test_cr_creates_an_owned_deployment_and_service(
    operator, registered, objects, apps, core, namespace
) -> None:
    op = operator()
    model, versions = registered(1)
    cr = create_cr(objects, namespace, "iris", {"model": model, **PENDING})
    uid = cr["metadata"]["uid"]

    dep = wait_until("the Deployment", lambda: deployment(apps, namespace, "iris"), 60)
    assert template_version(dep) == versions[0]
    env = {e.name: e.value for e in dep.spec.template.spec.containers[0].env}
    assert (env["MLSHIP_MODEL_NAME"], env["MLSHIP_MODEL_VERSION"]) == (model, versions[0])
    assert dep.spec.strategy.rolling_update.max_unavailable == 0
    (owner,) = dep.metadata.owner_references
    assert (owner.kind, owner.uid, owner.controller) == ("ModelDeployment", uid, True)

    svc = core.read_namespaced_service("iris", namespace)
    assert svc.metadata.owner_references[0].uid == uid
    assert svc.spec.selector == dep.spec.selector.match_labels

    # The pods were admitted by the namespace's `restricted` PodSecurity level.
    wait_until("a serving pod to be admitted", lambda: core.list_namespaced_pod(
        namespace, label_selector="app.kubernetes.io/instance=iris").items, 60)

    def status_follows() -> dict | None:
        got = get_cr(objects, namespace, "iris")
        ok = (got.get("status", {}).get("desiredVersion") == versions[0]
              and condition(got, "Progressing").get("status") == "True")
        return got if ok else None

    got = wait_until(f"status to follow\n{op.log()}", status_follows, 60)
    assert "mlship.io/finalizer" in got["metadata"]["finalizers"]
    assert got["status"]["url"] == f"http://iris.{namespace}.svc.cluster.local"
    assert got["status"]["alias"] == "champion"
    assert condition(got, "Ready")["status"] == "False"  # pods are Pending on purpose
    assert condition(got, "Degraded")["status"] == "False"
    assert "RolloutStarted" in event_reasons(core, namespace, "iris")


def test_alias_move_updates_the_pod_template_and_the_status(
    operator, registered, objects, apps, core, namespace, mlflow_server
) -> None:
    op = operator()
    model, versions = registered(3)
    create_cr(objects, namespace, "iris", {"model": model, **PENDING})
    wait_until("version 1 deployed", lambda: template_version(
        deployment(apps, namespace, "iris")) == versions[0], 60)
    first = deployment(apps, namespace, "iris")

    MlflowClient(tracking_uri=mlflow_server).set_registered_model_alias(
        model, "champion", versions[2])
    wait_until(f"the pod template to move to version {versions[2]}\n{op.log()}",
               lambda: template_version(deployment(apps, namespace, "iris")) == versions[2], 60)
    moved = deployment(apps, namespace, "iris")
    assert moved.metadata.uid == first.metadata.uid  # updated in place: a rolling update
    assert moved.spec.selector == first.spec.selector
    env = {e.name: e.value for e in moved.spec.template.spec.containers[0].env}
    assert env["MLSHIP_MODEL_VERSION"] == versions[2]

    def status_follows() -> dict | None:
        got = get_cr(objects, namespace, "iris")
        return got if got.get("status", {}).get("desiredVersion") == versions[2] else None

    got = wait_until("status.desiredVersion to follow", status_follows, 30)
    assert condition(got, "Progressing")["status"] == "True"
    assert f"rolling out version {versions[2]}" in condition(got, "Ready")["message"]


@pytest.mark.parametrize(
    ("spec", "message"),
    [
        ({"model": "m", "alias": "champion", "version": "3"},
         "set either spec.alias (follow an alias) or spec.version (pin a version), not both"),
        ({"model": "m", "version": "03"}, "spec.version must be a positive whole number"),
        ({"model": "m", "alias": "latest"}, "spec.alias 'latest' is reserved by MLflow"),
        ({"model": "a/b"}, "spec.model must not contain '/' or ':'"),
        ({"model": "m", "trackingUri": "mlflow:5000"}, "spec.trackingUri must be an http://"),
        ({"model": "m", "resources": {"requests": {"memory": "2Gi"},
                                      "limits": {"memory": "1Gi"}}},
         "spec.resources.limits must not be smaller than spec.resources.requests"),
        ({"model": "m", "replicas": 0}, "spec.replicas in body should be greater than or equal"),
        ({"alias": "champion"}, "spec.model: Required value"),
    ],
)
def test_invalid_crs_are_rejected_with_the_schema_message(
    crd, objects, namespace, spec, message
) -> None:
    with pytest.raises(ApiException) as info:
        create_cr(objects, namespace, "bad", spec)
    assert info.value.status == 422
    assert message in info.value.body


def test_invalid_name_is_rejected(crd, objects, namespace) -> None:
    with pytest.raises(ApiException) as info:
        create_cr(objects, namespace, "9lives", {"model": "m"})
    assert info.value.status == 422
    assert "metadata.name must be a DNS-1035 label" in info.value.body


def test_mlflow_down_sets_a_condition_and_deletes_nothing(
    operator, registered, objects, apps, core, namespace, mlflow_server
) -> None:
    op = operator()
    model, versions = registered(2)
    proxy = TcpProxy(mlflow_server).start()
    try:
        create_cr(objects, namespace, "iris",
                  {"model": model, "trackingUri": proxy.url, **PENDING})
        wait_until("the Deployment", lambda: template_version(
            deployment(apps, namespace, "iris")) == versions[0], 60)
        dep_uid = deployment(apps, namespace, "iris").metadata.uid
        svc_uid = core.read_namespaced_service("iris", namespace).metadata.uid

        proxy.stop()
        MlflowClient(tracking_uri=mlflow_server).set_registered_model_alias(
            model, "champion", versions[1])  # unseen while MLflow is unreachable

        def degraded() -> dict | None:
            cond = condition(get_cr(objects, namespace, "iris"), "Degraded")
            return cond if cond.get("reason") == "MlflowUnreachable" else None

        cond = wait_until(f"Degraded=MlflowUnreachable\n{op.log()}", degraded, 60)
        assert cond["status"] == "True"
        assert f"cannot query MLflow at {proxy.url}" in cond["message"]
        assert "retrying in" in cond["message"]
        time.sleep(5)  # several more ticks and polls while down
        dep = deployment(apps, namespace, "iris")
        assert dep is not None and dep.metadata.uid == dep_uid
        assert template_version(dep) == versions[0]
        assert core.read_namespaced_service("iris", namespace).metadata.uid == svc_uid
        assert "MlflowUnreachable" in event_reasons(core, namespace, "iris")

        proxy.start()  # MLflow is back: the alias move is picked up
        wait_until(f"version {versions[1]} after recovery\n{op.log()}", lambda: template_version(
            deployment(apps, namespace, "iris")) == versions[1], 60)
        wait_until("Degraded to clear", lambda: condition(
            get_cr(objects, namespace, "iris"), "Degraded").get("status") == "False", 30)
    finally:
        proxy.stop()


def test_deleting_the_cr_removes_its_children(
    operator, registered, objects, apps, core, namespace
) -> None:
    operator()
    model, _ = registered(1)
    create_cr(objects, namespace, "iris", {"model": model, **PENDING})
    wait_until("the Deployment", lambda: deployment(apps, namespace, "iris"), 60)
    wait_until("the Service", lambda: core.read_namespaced_service("iris", namespace), 30)

    objects.delete_namespaced_custom_object(GROUP, VERSION, namespace, PLURAL, "iris")

    def gone(read: Callable[[], Any]) -> bool:
        try:
            read()
        except ApiException as err:
            return err.status == 404
        return False

    wait_until("the CR to be gone (finalizer released)",
               lambda: gone(lambda: get_cr(objects, namespace, "iris")), 60)
    wait_until("the Deployment to be garbage-collected",
               lambda: gone(lambda: apps.read_namespaced_deployment("iris", namespace)), 90)
    wait_until("the Service to be garbage-collected",
               lambda: gone(lambda: core.read_namespaced_service("iris", namespace)), 90)


def test_a_foreign_deployment_of_the_same_name_is_left_alone(
    operator, registered, objects, apps, namespace
) -> None:
    operator()
    model, _ = registered(1)
    foreign = {
        "apiVersion": "apps/v1", "kind": "Deployment",
        "metadata": {"name": "iris", "labels": {"app": "theirs"}},
        "spec": {"replicas": 0, "selector": {"matchLabels": {"app": "theirs"}},
                 "template": {"metadata": {"labels": {"app": "theirs"}},
                              "spec": {"containers": [{"name": "c", "image": "theirs:1"}]}}},
    }
    apps.create_namespaced_deployment(namespace, foreign)
    create_cr(objects, namespace, "iris", {"model": model})

    def conflict() -> bool:
        return condition(get_cr(objects, namespace, "iris"), "Degraded").get("reason") == (
            "NameConflict")

    wait_until("Degraded=NameConflict", conflict, 60)
    dep = apps.read_namespaced_deployment("iris", namespace)
    assert dep.metadata.labels == {"app": "theirs"} and not dep.metadata.owner_references


def test_a_crash_looping_first_version_is_reported_degraded(
    operator, registered, objects, apps, core, namespace
) -> None:
    """Real pods on the real kubelet: a container that keeps exiting is detected, and with no
    earlier good version there is nothing to roll back to, so nothing else changes."""
    from cluster_helpers import SMOKE_IMAGE  # its default command exits at once, no TTY

    op = operator(MLSHIP_CRASHLOOP_RESTARTS="1")
    model, versions = registered(1)
    create_cr(objects, namespace, "iris", {
        "model": model, "image": SMOKE_IMAGE,
        "resources": {"requests": {"cpu": "10m", "memory": "32Mi"}, "limits": {"memory": "64Mi"}},
    })

    def degraded() -> dict | None:
        got = get_cr(objects, namespace, "iris")
        return got if condition(got, "Degraded").get("reason") == "RolloutFailed" else None

    got = wait_until(f"Degraded=RolloutFailed\n{op.log()}", degraded, 120, 2)
    assert condition(got, "Ready") == {**condition(got, "Ready"), "status": "False",
                                       "reason": "CrashLoopBackOff"}
    assert "restarted" in condition(got, "Degraded")["message"]
    assert "nothing to roll back to" in condition(got, "Degraded")["message"]
    assert "lastGoodVersion" not in got["status"] and "lastFailure" not in got["status"]
    assert template_version(deployment(apps, namespace, "iris")) == versions[0]
    assert "RolloutFailed" in event_reasons(core, namespace, "iris")


# --------------------------------------------------------------------------- RBAC


def _service_account_kubeconfig(kube: client.ApiClient, namespace: str, token: str) -> str:
    cfg = kube.configuration
    ca = Path(cfg.ssl_ca_cert).read_bytes() if cfg.ssl_ca_cert else b""
    doc = {
        "apiVersion": "v1", "kind": "Config", "current-context": "sa",
        "clusters": [{"name": "c", "cluster": {
            "server": cfg.host, "certificate-authority-data": base64.b64encode(ca).decode()}}],
        "users": [{"name": "sa", "user": {"token": token}}],
        "contexts": [{"name": "sa", "context": {"cluster": "c", "user": "sa",
                                                "namespace": namespace}}],
    }
    fd, path = tempfile.mkstemp(suffix=".kubeconfig")
    with os.fdopen(fd, "w") as f:
        yaml.safe_dump(doc, f)
    return path


def test_the_rbac_manifest_is_enough(
    kube, operator, registered, objects, apps, core, namespace
) -> None:
    """Run the operator as a ServiceAccount holding only manifests/operator-rbac.yaml's rules."""
    docs = [d for d in yaml.safe_load_all((ROOT / "manifests/operator-rbac.yaml").read_text()) if d]
    (role,) = [d for d in docs if d["kind"] == "ClusterRole"]
    role_name = f"mlship-operator-test-{namespace}"[:63]
    role = {**role, "metadata": {**role["metadata"], "name": role_name}}
    rbac = client.RbacAuthorizationV1Api(kube)
    rbac.create_cluster_role(role)
    try:
        core.create_namespaced_service_account(namespace, {"metadata": {"name": "mlship-operator"}})
        rbac.create_namespaced_role_binding(namespace, {
            "metadata": {"name": "mlship-operator"},
            "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole",
                        "name": role_name},
            "subjects": [{"kind": "ServiceAccount", "name": "mlship-operator",
                          "namespace": namespace}],
        })
        token = core.create_namespaced_service_account_token(
            "mlship-operator", namespace, {"spec": {"expirationSeconds": 3600}}).status.token
        kubeconfig = _service_account_kubeconfig(kube, namespace, token)
        try:
            op = operator(KUBECONFIG=kubeconfig)
            model, versions = registered(2)
            create_cr(objects, namespace, "iris", {"model": model, **PENDING})
            wait_until(f"the Deployment, created as the ServiceAccount\n{op.log()}",
                       lambda: deployment(apps, namespace, "iris"), 60)
            wait_until("the Service", lambda: core.read_namespaced_service("iris", namespace), 30)
            wait_until("status written", lambda: get_cr(objects, namespace, "iris").get(
                "status", {}).get("desiredVersion") == versions[0], 30)
            wait_until("events posted", lambda: "RolloutStarted" in event_reasons(
                core, namespace, "iris"), 30)
            # deletion: the ServiceAccount must be able to release its finalizer
            objects.delete_namespaced_custom_object(GROUP, VERSION, namespace, PLURAL, "iris")
            wait_until(f"the CR to be gone\n{op.log()}", lambda: not objects.
                       list_namespaced_custom_object(GROUP, VERSION, namespace, PLURAL)["items"],
                       30)
            log = op.log()
            assert "403" not in log and "Forbidden" not in log, log
        finally:
            os.unlink(kubeconfig)
    finally:
        rbac.delete_cluster_role(role_name)


# --------------------------------------------------------------------------- real serving pods


def _node_ip_and_images(core) -> tuple[str, set[str]]:
    (node, *_) = core.list_node().items
    ip = next(a.address for a in node.status.addresses if a.type == "InternalIP")
    names = {n for image in node.status.images or [] for n in image.names or []}
    return ip, names


def _has_image(names: set[str], image: str) -> bool:
    return any(n == image or n.endswith(f"/{image}") or n.endswith(f"/library/{image}")
               for n in names)


def _register_real_versions(mlflow_server: str, tmp_path: Path) -> tuple[str, str, str, str]:
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


def test_ready_then_a_broken_version_is_rolled_back_and_not_retried(
    operator, objects, apps, core, namespace, mlflow_server, tmp_path
) -> None:
    node_ip, images = _node_ip_and_images(core)
    if not _has_image(images, SERVING_IMAGE):
        pytest.skip(f"serving image {SERVING_IMAGE} is not loaded in the cluster "
                    f"(build it, then `hack/cluster load {SERVING_IMAGE}`)")
    # Pods reach the host's MLflow through a proxy on all interfaces, at the node's IP.
    proxy = HttpForwarder(mlflow_server)
    try:
        model, good, broken, fixed = _register_real_versions(mlflow_server, tmp_path)
        op = operator(MLSHIP_SERVING_TRACKING_URI=f"http://{node_ip}:{proxy.port}",
                      MLSHIP_SERVING_IMAGE=SERVING_IMAGE, MLSHIP_CRASHLOOP_RESTARTS="1")
        create_cr(objects, namespace, "iris", {"model": model, "progressDeadlineSeconds": 120})

        def ready() -> dict | None:
            got = get_cr(objects, namespace, "iris")
            return got if condition(got, "Ready").get("status") == "True" else None

        got = wait_until(f"Ready=True with version {good}\n{op.log()}", ready, 240, 2)
        assert got["status"]["servingVersion"] == got["status"]["lastGoodVersion"] == good

        MlflowClient(tracking_uri=mlflow_server).set_registered_model_alias(
            model, "champion", broken)

        def rolled_back() -> dict | None:
            got = get_cr(objects, namespace, "iris")
            cond = condition(got, "Degraded")
            return got if cond.get("reason") == "RolledBack" and ready() else None

        got = wait_until(f"rollback to {good}\n{op.log()}", rolled_back, 300, 2)
        assert got["status"]["lastFailure"]["version"] == broken
        assert got["status"]["servingVersion"] == good
        assert got["status"]["desiredVersion"] == broken
        assert "RolledBack" in event_reasons(core, namespace, "iris")
        for _ in range(10):  # the broken version is not tried again
            assert template_version(deployment(apps, namespace, "iris")) == good
            time.sleep(1)

        # The alias moves on to a good version: it rolls out, and Degraded clears.
        promoted = time.monotonic()
        MlflowClient(tracking_uri=mlflow_server).set_registered_model_alias(
            model, "champion", fixed)

        def serving_fixed() -> dict | None:
            got = ready()
            return got if got and got["status"].get("servingVersion") == fixed else None

        got = wait_until(f"version {fixed} serving\n{op.log()}", serving_fixed, 180, 1)
        print(f"alias move to Ready with the new version: {time.monotonic() - promoted:.1f}s")
        assert condition(got, "Degraded")["status"] == "False"
        assert got["status"]["lastGoodVersion"] == fixed and "lastFailure" not in got["status"]
        assert "Recovered" in event_reasons(core, namespace, "iris")
    finally:
        proxy.stop()
