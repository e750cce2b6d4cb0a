"""Proves the cluster is a real Kubernetes: scheduling, images, DNS, Services, storage, Jobs,
RBAC, PodSecurity admission and Helm all work as they do on kind or minikube."""

from __future__ import annotations

import json
import subprocess
import textwrap
from collections.abc import Callable
from pathlib import Path

import pytest
from cluster_helpers import (
    RESTRICTED_CONTAINER_SECURITY,
    SMOKE_IMAGE,
    helm_binary,
    pod_finished,
    pod_logs,
    python_pod,
)
from devkit import wait_for
from kubernetes import client
from kubernetes.client.rest import ApiException
from testkit import require_or_skip

pytestmark = pytest.mark.cluster


def run_to_completion(core: client.CoreV1Api, namespace: str, pod: dict, timeout: float = 120) -> str:
    name = pod["metadata"]["name"]
    core.create_namespaced_pod(namespace, pod)
    phase = wait_for(f"pod {name} to finish", lambda: pod_finished(core, namespace, name), timeout)
    logs = pod_logs(core, namespace, name)
    assert phase == "Succeeded", f"pod {name} {phase}: {logs}"
    return logs


def test_node_is_ready(core: client.CoreV1Api) -> None:
    nodes = core.list_node().items
    assert nodes, "the cluster has no node"
    ready = {n.metadata.name: c.status for n in nodes for c in n.status.conditions if c.type == "Ready"}
    assert set(ready.values()) == {"True"}, ready


def test_the_metrics_api_reports_the_node_and_pods(kube: client.ApiClient) -> None:
    """What a HorizontalPodAutoscaler (spec.autoscaling) scales on: metrics.k8s.io answers, with
    the CPU of the node and of running pods (hack/cluster runs metrics-server)."""
    objects = client.CustomObjectsApi(kube)
    try:
        objects.list_cluster_custom_object("metrics.k8s.io", "v1beta1", "nodes")
    except ApiException as err:
        if err.status not in (404, 503):
            raise
        require_or_skip(f"no metrics server (metrics.k8s.io: {err.status} {err.reason}); on kind"
                        " apply metrics-server's manifest, on minikube enable its addon", "cluster")

    def usage() -> tuple[list, list] | None:
        nodes = objects.list_cluster_custom_object("metrics.k8s.io", "v1beta1", "nodes")["items"]
        pods = objects.list_cluster_custom_object("metrics.k8s.io", "v1beta1", "pods")["items"]
        return (nodes, pods) if nodes and pods else None

    nodes, pods = wait_for("node and pod metrics", usage, 120, interval=3)
    assert all(n["usage"]["cpu"] and n["usage"]["memory"] for n in nodes)
    assert all(c["usage"]["cpu"] for p in pods for c in p["containers"])


def test_pod_from_local_image_runs_to_completion(core: client.CoreV1Api, namespace: str) -> None:
    logs = run_to_completion(core, namespace, python_pod("hello", "import os; print('uid', os.getuid())"))
    assert logs.strip() == "uid 10001"


def test_service_resolves_by_dns_and_answers_on_cluster_ip(
    core: client.CoreV1Api, namespace: str, record_property: Callable[[str, object], None]
) -> None:
    server = python_pod(
        "web",
        "import http.server as h; "
        "h.ThreadingHTTPServer(('', 8080), h.SimpleHTTPRequestHandler).serve_forever()",
        container={"workingDir": "/etc", "readinessProbe": {"tcpSocket": {"port": 8080}, "periodSeconds": 1}},
    )
    server["spec"]["restartPolicy"] = "Always"
    core.create_namespaced_pod(namespace, server)
    svc = core.create_namespaced_service(namespace, {
        "metadata": {"name": "web"},
        "spec": {"selector": {"app": "web"}, "ports": [{"port": 80, "targetPort": 8080}]},
    })
    wait_for("web to be ready", lambda: core.read_namespaced_endpoints("web", namespace).subsets, 120)
    fqdn = f"web.{namespace}.svc.cluster.local"
    # Once (1 run in ~10, after tests that churn many Services) the first request was answered 404
    # by some other server. One such miss is tolerated, never more, and the count is always
    # printed and recorded (junit property service_misses) so a trend shows in green runs too.
    client_code = textwrap.dedent(f"""
        import socket, time, urllib.error, urllib.request
        ip = socket.gethostbyname('{fqdn}')
        short = socket.gethostbyname('web')
        url = 'http://' + ip + '/hostname'
        misses, body = 0, '-'
        for attempt in range(2):
            try:
                body = urllib.request.urlopen(url, timeout=10).read().decode().strip()
                break
            except urllib.error.HTTPError as exc:
                misses += 1
                print('miss', attempt, exc.code, exc.headers.get('server'), exc.read()[:200], flush=True)
                time.sleep(1)
        print(ip, short, body, misses)
    """)
    logs = run_to_completion(core, namespace, python_pod("client", client_code))
    ip, short, body, misses = logs.strip().splitlines()[-1].split()
    record_property("service_misses", int(misses))
    print(f"\nService {fqdn}: {misses} request(s) answered by some other server\n{logs}")
    assert int(misses) <= 1, f"{misses} requests to the Service were answered by some other server:\n{logs}"
    assert ip == short == svc.spec.cluster_ip
    assert body == "web", "the Service should answer with the server pod's /etc/hostname"


def test_pvc_binds_and_its_data_survives_the_pod(core: client.CoreV1Api, namespace: str) -> None:
    core.create_namespaced_persistent_volume_claim(namespace, {
        "metadata": {"name": "data"},
        "spec": {"accessModes": ["ReadWriteOnce"], "resources": {"requests": {"storage": "10Mi"}}},
    })
    def bound() -> bool:
        return core.read_namespaced_persistent_volume_claim("data", namespace).status.phase == "Bound"

    wait_for("the PVC to bind", bound, 120)
    volume = {"volumes": [{"name": "data", "persistentVolumeClaim": {"claimName": "data"}}]}
    mount = {"volumeMounts": [{"name": "data", "mountPath": "/data"}]}
    write = python_pod("writer", "open('/data/note', 'w').write('kept')", container=mount, **volume)
    run_to_completion(core, namespace, write)
    core.delete_namespaced_pod("writer", namespace, grace_period_seconds=0)
    wait_for("the writer pod to be gone", lambda: not core.list_namespaced_pod(namespace).items, 120)
    read = python_pod("reader", "print(open('/data/note').read())", container=mount, **volume)
    assert run_to_completion(core, namespace, read).strip() == "kept"


def test_job_completes(kube: client.ApiClient, core: client.CoreV1Api, namespace: str) -> None:
    batch = client.BatchV1Api(kube)
    pod = python_pod("sum", "print(sum(range(101)))")
    batch.create_namespaced_job(namespace, {
        "metadata": {"name": "sum"},
        "spec": {"backoffLimit": 0, "template": {"spec": pod["spec"]}},
    })
    wait_for("the Job to complete", lambda: batch.read_namespaced_job("sum", namespace).status.succeeded,
             120)
    (job_pod,) = core.list_namespaced_pod(namespace, label_selector="job-name=sum").items
    assert pod_logs(core, namespace, job_pod.metadata.name).strip() == "5050"


def test_rbac_denies_a_service_account_without_a_binding(
    kube: client.ApiClient, core: client.CoreV1Api, namespace: str
) -> None:
    core.create_namespaced_service_account(namespace, {"metadata": {"name": "nobody"}})
    token = core.create_namespaced_service_account_token(
        "nobody", namespace, {"spec": {"expirationSeconds": 600}}).status.token
    cfg = client.Configuration()
    cfg.host = kube.configuration.host
    cfg.ssl_ca_cert = kube.configuration.ssl_ca_cert
    cfg.api_key = {"authorization": f"Bearer {token}"}
    as_nobody = client.CoreV1Api(client.ApiClient(cfg))
    with pytest.raises(ApiException) as denied:
        as_nobody.list_namespaced_pod(namespace)
    assert denied.value.status == 403
    assert f"system:serviceaccount:{namespace}:nobody" in denied.value.body


def test_restricted_namespace_rejects_a_privileged_pod(core: client.CoreV1Api, namespace: str) -> None:
    pod = python_pod("root", "print('should never run')")
    pod["spec"]["containers"][0]["securityContext"] = {"privileged": True}
    with pytest.raises(ApiException) as rejected:
        core.create_namespaced_pod(namespace, pod)
    assert rejected.value.status == 403
    assert 'violates PodSecurity \\"restricted:latest\\": privileged' in rejected.value.body


def test_helm_installs_a_chart(kube: client.ApiClient, namespace: str, tmp_path: Path) -> None:
    if helm_binary() is None:
        require_or_skip("helm is not on PATH (hack/cluster env adds it)", "cluster")
    chart = tmp_path / "tiny"
    (chart / "templates").mkdir(parents=True)
    (chart / "Chart.yaml").write_text("apiVersion: v2\nname: tiny\nversion: 0.1.0\n")
    (chart / "values.yaml").write_text("greeting: hello\n")
    (chart / "templates" / "configmap.yaml").write_text(
        "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: {{ .Release.Name }}\n"
        "data:\n  greeting: {{ .Values.greeting | quote }}\n")
    deployment = {
        "apiVersion": "apps/v1", "kind": "Deployment",
        "metadata": {"name": "tiny"},
        "spec": {
            "selector": {"matchLabels": {"app": "tiny"}},
            "template": {"metadata": {"labels": {"app": "tiny"}}, "spec": {
                "securityContext": {"seccompProfile": {"type": "RuntimeDefault"}},
                "containers": [{
                    "name": "main", "image": SMOKE_IMAGE, "imagePullPolicy": "IfNotPresent",
                    "command": ["python3", "-c", "import time; time.sleep(3600)"],
                    "securityContext": RESTRICTED_CONTAINER_SECURITY,
                }],
            }},
        },
    }
    (chart / "templates" / "deployment.yaml").write_text(json.dumps(deployment))
    done = subprocess.run(
        [helm_binary(), "install", "tiny", str(chart), "-n", namespace, "--wait", "--timeout", "120s",
         "--set", "greeting=hi"],
        capture_output=True, text=True, timeout=180,
    )
    assert done.returncode == 0, done.stderr
    cm = client.CoreV1Api(kube).read_namespaced_config_map("tiny", namespace)
    assert cm.data == {"greeting": "hi"}
    ready = client.AppsV1Api(kube).read_namespaced_deployment("tiny", namespace).status.ready_replicas
    assert ready == 1
    listed = subprocess.run([helm_binary(), "list", "-n", namespace, "-o", "json"],
                            capture_output=True, text=True, check=True)
    assert json.loads(listed.stdout)[0]["status"] == "deployed"
