"""The operator against the real kube-apiserver and a real MLflow server.

The harness (tests/cluster/operator_harness.py, fixtures in conftest.py): the operator runs as a
subprocess on the host (`python -m mlship_operator`), watching one fresh namespace; MLflow is the
session's real `mlflow server`, reached through a TCP proxy that a test can stop to make MLflow
"go down". Pods are kept Pending (an unsatisfiable CPU request) unless a test needs them to run,
so the operator's behaviour does not depend on images.
"""

from __future__ import annotations

import base64
import json
import os
import subprocess
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import yaml
from devkit import wait_for
from kubernetes import client
from kubernetes.client.rest import ApiException
from mlflow import MlflowClient
from operator_harness import (
    GROUP,
    PLURAL,
    ROOT,
    SERVING_IMAGE,
    VERSION,
    client_lines,
    condition,
    create_cr,
    deployment,
    event_reasons,
    get_cr,
    iris_request,
    register_real_versions,
    start_client,
    stop_client,
    template_version,
)
from testkit import TcpProxy

pytestmark = [pytest.mark.cluster, pytest.mark.timeout(420)]

# Never schedulable: pods stay Pending, admitted by PodSecurity but never started.
PENDING = {"resources": {"requests": {"cpu": "500", "memory": "64Mi"}},
           "progressDeadlineSeconds": 3600}


# --------------------------------------------------------------------------- tests


def test_cr_creates_an_owned_deployment_and_service(
    operator, registered, objects, apps, core, namespace
) -> None:
    op = operator()
    model, versions = registered(1)
    cr = create_cr(objects, namespace, "iris", {"model": model, **PENDING})
    uid = cr["metadata"]["uid"]

    dep = wait_for("the Deployment", lambda: deployment(apps, namespace, "iris"), 60)
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
    wait_for("a serving pod to be admitted", lambda: core.list_namespaced_pod(
        namespace, label_selector="app.kubernetes.io/instance=iris").items, 60)

    def status_follows() -> dict | None:
        got = get_cr(objects, namespace, "iris")
        ok = (got.get("status", {}).get("desiredVersion") == versions[0]
              and condition(got, "Progressing").get("status") == "True")
        return got if ok else None

    got = wait_for(f"status to follow\n{op.log()}", status_follows, 60)
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
    wait_for("version 1 deployed", lambda: template_version(
        deployment(apps, namespace, "iris")) == versions[0], 60)
    first = deployment(apps, namespace, "iris")

    MlflowClient(tracking_uri=mlflow_server).set_registered_model_alias(
        model, "champion", versions[2])
    wait_for(f"the pod template to move to version {versions[2]}\n{op.log()}",
               lambda: template_version(deployment(apps, namespace, "iris")) == versions[2], 60)
    moved = deployment(apps, namespace, "iris")
    assert moved.metadata.uid == first.metadata.uid  # updated in place: a rolling update
    assert moved.spec.selector == first.spec.selector
    env = {e.name: e.value for e in moved.spec.template.spec.containers[0].env}
    assert env["MLSHIP_MODEL_VERSION"] == versions[2]

    def status_follows() -> dict | None:
        got = get_cr(objects, namespace, "iris")
        return got if got.get("status", {}).get("desiredVersion") == versions[2] else None

    got = wait_for("status.desiredVersion to follow", status_follows, 30)
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
        ({"model": "m", "rollout": {"steps": [{"weight": 10}]}},
         "spec.rollout.steps are only for strategy Canary"),
        ({"model": "m", "rollout": {"strategy": "Canary",
                                    "steps": [{"weight": 50}, {"weight": 50}]}},
         "spec.rollout.steps weights must increase from one step to the next"),
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
    model, versions = registered(2)
    proxy = TcpProxy(("127.0.0.1", int(mlflow_server.rsplit(":", 1)[1]))).start()
    try:
        # Not the operator's own MLflow URI: only a listed one may be named in spec.trackingUri.
        # The proxy's port is fixed when it is made, so it is known before the operator starts.
        op = operator(MLSHIP_ALLOWED_TRACKING_URIS=proxy.url)
        create_cr(objects, namespace, "iris",
                  {"model": model, "trackingUri": proxy.url, **PENDING})
        wait_for("the Deployment", lambda: template_version(
            deployment(apps, namespace, "iris")) == versions[0], 60)
        dep_uid = deployment(apps, namespace, "iris").metadata.uid
        # The Service comes after the Deployment (a CI run read it in between: 404).
        svc_uid = wait_for("the Service", lambda: core.read_namespaced_service("iris", namespace),
                           30).metadata.uid

        proxy.stop()
        MlflowClient(tracking_uri=mlflow_server).set_registered_model_alias(
            model, "champion", versions[1])  # unseen while MLflow is unreachable

        def degraded() -> dict | None:
            cond = condition(get_cr(objects, namespace, "iris"), "Degraded")
            return cond if cond.get("reason") == "MlflowUnreachable" else None

        cond = wait_for(f"Degraded=MlflowUnreachable\n{op.log()}", degraded, 60)
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
        wait_for(f"version {versions[1]} after recovery\n{op.log()}", lambda: template_version(
            deployment(apps, namespace, "iris")) == versions[1], 60)
        wait_for("Degraded to clear", lambda: condition(
            get_cr(objects, namespace, "iris"), "Degraded").get("status") == "False", 30)
    finally:
        proxy.stop()


def test_a_tracking_uri_not_allowed_is_refused_and_never_asked(
    operator, objects, apps, core, namespace, mlflow_server
) -> None:
    op = operator()
    # A real MLflow behind it, so that a query, had one been made, would have been answered.
    proxy = TcpProxy(("127.0.0.1", int(mlflow_server.rsplit(":", 1)[1]))).start()
    try:
        create_cr(objects, namespace, "iris", {"model": "m", "trackingUri": proxy.url, **PENDING})

        def refused() -> dict | None:
            cond = condition(get_cr(objects, namespace, "iris"), "Degraded")
            return cond if cond.get("reason") == "InvalidSpec" else None

        cond = wait_for(f"Degraded=InvalidSpec\n{op.log()}", refused, 60)
        assert cond["status"] == "True"
        assert cond["message"] == (
            f"spec.trackingUri '{proxy.url}' is not one this operator may use (allowed:"
            f" {mlflow_server.rstrip('/')}); an operator admin can add it to"
            " operator.allowedTrackingUris (MLSHIP_ALLOWED_TRACKING_URIS)"
        )
        got = get_cr(objects, namespace, "iris")
        assert condition(got, "Ready")["reason"] == "InvalidSpec"
        assert condition(got, "Available")["reason"] == "NothingServing"
        time.sleep(5)  # several more ticks
        assert deployment(apps, namespace, "iris") is None
        assert proxy.accepted == 0  # the refused MLflow was never asked
        assert "InvalidSpec" in event_reasons(core, namespace, "iris")
    finally:
        proxy.stop()


def test_deleting_the_cr_removes_its_children(
    operator, registered, objects, apps, core, namespace
) -> None:
    operator()
    model, _ = registered(1)
    create_cr(objects, namespace, "iris", {"model": model, **PENDING})
    wait_for("the Deployment", lambda: deployment(apps, namespace, "iris"), 60)
    wait_for("the Service", lambda: core.read_namespaced_service("iris", namespace), 30)

    objects.delete_namespaced_custom_object(GROUP, VERSION, namespace, PLURAL, "iris")

    def gone(read: Callable[[], Any]) -> bool:
        try:
            read()
        except ApiException as err:
            return err.status == 404
        return False

    wait_for("the CR to be gone (finalizer released)",
               lambda: gone(lambda: get_cr(objects, namespace, "iris")), 60)
    wait_for("the Deployment to be garbage-collected",
               lambda: gone(lambda: apps.read_namespaced_deployment("iris", namespace)), 90)
    wait_for("the Service to be garbage-collected",
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

    wait_for("Degraded=NameConflict", conflict, 60)
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

    got = wait_for(f"Degraded=RolloutFailed\n{op.log()}", degraded, 120, 2)
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
            create_cr(objects, namespace, "iris",
                      {"model": model, "autoscaling": {"maxReplicas": 2}, **PENDING})
            wait_for(f"the Deployment, created as the ServiceAccount\n{op.log()}",
                       lambda: deployment(apps, namespace, "iris"), 60)
            wait_for("the Service", lambda: core.read_namespaced_service("iris", namespace), 30)
            wait_for("the autoscaler", lambda: hpa(kube, namespace, "iris"), 30)
            wait_for("the disruption budget", lambda: pdb(kube, namespace, "iris"), 30)
            remove_autoscaling(namespace, "iris")
            wait_for(f"the autoscaler and the budget deleted\n{op.log()}",
                     lambda: not hpa(kube, namespace, "iris") and not pdb(kube, namespace, "iris"),
                     30)
            wait_for("status written", lambda: get_cr(objects, namespace, "iris").get(
                "status", {}).get("desiredVersion") == versions[0], 30)
            wait_for("events posted", lambda: "RolloutStarted" in event_reasons(
                core, namespace, "iris"), 30)
            # deletion: the ServiceAccount must be able to release its finalizer
            objects.delete_namespaced_custom_object(GROUP, VERSION, namespace, PLURAL, "iris")
            wait_for(f"the CR to be gone\n{op.log()}", lambda: not objects.
                       list_namespaced_custom_object(GROUP, VERSION, namespace, PLURAL)["items"],
                       30)
            log = op.log()
            assert "403" not in log and "Forbidden" not in log, log
        finally:
            os.unlink(kubeconfig)
    finally:
        rbac.delete_cluster_role(role_name)


def _or_none(read: Callable[..., Any], name: str, namespace: str) -> Any:
    try:
        return read(name, namespace)
    except ApiException as err:
        if err.status == 404:
            return None
        raise


def hpa(kube: client.ApiClient, namespace: str, name: str) -> Any:
    return _or_none(client.AutoscalingV2Api(kube).read_namespaced_horizontal_pod_autoscaler, name, namespace)


def pdb(kube: client.ApiClient, namespace: str, name: str) -> Any:
    return _or_none(client.PolicyV1Api(kube).read_namespaced_pod_disruption_budget, name, namespace)


def remove_autoscaling(namespace: str, name: str) -> None:
    kubectl("-n", namespace, "patch", "mldep", name, "--type", "json",
            "-p", '[{"op": "remove", "path": "/spec/autoscaling"}]')


def kubectl(*args: str) -> str:
    proc = subprocess.run(["kubectl", *args], capture_output=True, text=True, timeout=60, check=False)
    assert proc.returncode == 0, f"kubectl {' '.join(args)}: {proc.stderr}"
    return proc.stdout


def test_kubectl_scale_and_the_autoscaler_move_the_serving_replicas(
    kube, operator, registered, objects, apps, namespace
) -> None:
    op = operator()
    model, _ = registered(1)
    cr = create_cr(objects, namespace, "iris", {"model": model, **PENDING})
    wait_for("the Deployment", lambda: deployment(apps, namespace, "iris"), 60)
    first = deployment(apps, namespace, "iris")
    assert pdb(kube, namespace, "iris") is None  # one replica: nothing for a budget to keep

    # `kubectl scale` goes through the scale subresource to spec.replicas; the operator follows.
    kubectl("-n", namespace, "scale", "mldep", "iris", "--replicas=3")
    wait_for(f"the Deployment scaled to 3\n{op.log()}",
             lambda: deployment(apps, namespace, "iris").spec.replicas == 3, 30)
    scaled = deployment(apps, namespace, "iris")
    assert scaled.metadata.annotations["mlship.io/config-hash"] == (
        first.metadata.annotations["mlship.io/config-hash"])  # not a spec change: nothing rolls
    assert scaled.spec.template == first.spec.template
    budget = wait_for("the disruption budget", lambda: pdb(kube, namespace, "iris"), 30)
    assert (budget.spec.max_unavailable, budget.metadata.owner_references[0].uid) == (
        1, cr["metadata"]["uid"])

    # What `kubectl scale` and an autoscaler read: the pods and the selector, from the status.
    def scale_status() -> dict | None:
        got = json.loads(kubectl("get", "--raw",
                                 f"/apis/{GROUP}/{VERSION}/namespaces/{namespace}/{PLURAL}/iris/scale"))
        return got if got["status"].get("replicas") == 3 else None

    scale = wait_for("the scale subresource to report 3 pods", scale_status, 30)
    selector = dict(kv.split("=") for kv in scale["status"]["selector"].split(","))
    assert selector == scaled.spec.selector.match_labels

    # With spec.autoscaling the autoscaler owns spec.replicas: 3 is above its maximum of 2, and it
    # scales the CR itself (no metrics are needed for that), which the operator then follows.
    objects.patch_namespaced_custom_object(GROUP, VERSION, namespace, PLURAL, "iris", {
        "spec": {"autoscaling": {"minReplicas": 1, "maxReplicas": 2,
                                 "targetCPUUtilizationPercentage": 60}}})
    autoscaler = wait_for(f"the autoscaler\n{op.log()}", lambda: hpa(kube, namespace, "iris"), 30)
    ref = autoscaler.spec.scale_target_ref
    assert (ref.api_version, ref.kind, ref.name) == (f"{GROUP}/{VERSION}", "ModelDeployment", "iris")
    assert (autoscaler.spec.min_replicas, autoscaler.spec.max_replicas) == (1, 2)
    assert autoscaler.spec.metrics[0].resource.target.average_utilization == 60
    wait_for("the autoscaler to set spec.replicas to its maximum",
             lambda: get_cr(objects, namespace, "iris")["spec"]["replicas"] == 2, 60)
    wait_for(f"the Deployment to follow to 2\n{op.log()}",
             lambda: deployment(apps, namespace, "iris").spec.replicas == 2, 30)

    def able_to_scale() -> Any:
        got = hpa(kube, namespace, "iris")
        conds = {c.type: c for c in (got.status.conditions or [])}
        return conds.get("AbleToScale") if getattr(conds.get("AbleToScale"), "status", "") else None

    cond = wait_for("the autoscaler's AbleToScale condition", able_to_scale, 60)
    assert cond.status == "True", (cond.reason, cond.message)

    # Without spec.autoscaling the operator removes its autoscaler; one replica, no budget.
    remove_autoscaling(namespace, "iris")
    wait_for(f"the autoscaler deleted\n{op.log()}", lambda: hpa(kube, namespace, "iris") is None, 30)
    kubectl("-n", namespace, "scale", "mldep", "iris", "--replicas=1")
    wait_for("the budget deleted", lambda: pdb(kube, namespace, "iris") is None, 30)
    assert deployment(apps, namespace, "iris").spec.replicas == 1
    assert deployment(apps, namespace, "iris").metadata.uid == first.metadata.uid


# --------------------------------------------------------------------------- real serving pods


def test_ready_then_a_broken_version_is_rolled_back_and_not_retried(
    operator, objects, apps, core, namespace, mlflow_server, serving_mlflow, tmp_path
) -> None:
    model, good, broken, fixed = register_real_versions(mlflow_server, tmp_path)
    op = operator(MLSHIP_SERVING_TRACKING_URI=serving_mlflow,
                  MLSHIP_SERVING_IMAGE=SERVING_IMAGE, MLSHIP_CRASHLOOP_RESTARTS="1")
    create_cr(objects, namespace, "iris", {"model": model, "progressDeadlineSeconds": 120})

    def ready() -> dict | None:
        got = get_cr(objects, namespace, "iris")
        return got if condition(got, "Ready").get("status") == "True" else None

    got = wait_for(f"Ready=True with version {good}\n{op.log()}", ready, 240, 2)
    assert got["status"]["servingVersion"] == got["status"]["lastGoodVersion"] == good

    # Watch the Service from inside the cluster while the broken version is tried.
    start_client(core, namespace, "client", got["status"]["url"], threads=1, pause=0.2)
    wait_for("the client's first answer", lambda: any(
        "version" in line for line in client_lines(core, namespace, "client")), 120)
    MlflowClient(tracking_uri=mlflow_server).set_registered_model_alias(
        model, "champion", broken)

    def rolled_back() -> dict | None:
        # Ready means the desired version serves: after the rollback it does not, but the good
        # version answers (Available) and the rollout is over
        got = get_cr(objects, namespace, "iris")
        done = (
            condition(got, "Degraded").get("reason") == "RolledBack"
            and condition(got, "Ready").get("reason") == "RolledBack"
            and condition(got, "Available").get("status") == "True"
            and condition(got, "Progressing").get("status") == "False"
        )
        return got if done else None

    got = wait_for(f"rollback to {good}\n{op.log()}", rolled_back, 300, 2)
    assert condition(got, "Ready")["status"] == "False"
    assert f"desired version {broken}" in condition(got, "Ready")["message"]
    assert f"version {good} serves instead" in condition(got, "Ready")["message"]
    assert got["status"]["lastFailure"]["version"] == broken
    assert got["status"]["servingVersion"] == good
    assert got["status"]["desiredVersion"] == broken
    assert "RolledBack" in event_reasons(core, namespace, "iris")
    for _ in range(10):  # the broken version is not tried again
        assert template_version(deployment(apps, namespace, "iris")) == good
        time.sleep(1)
    seen = stop_client(core, namespace, "client")
    assert seen.get("failed", 0) == 0, seen["lines"]
    assert seen["versions"] == {good: seen["/metadata"]}, seen  # the old version, throughout

    # The alias moves on to a good version: it rolls out, and Degraded clears.
    promoted = time.monotonic()
    MlflowClient(tracking_uri=mlflow_server).set_registered_model_alias(
        model, "champion", fixed)

    def serving_fixed() -> dict | None:
        got = ready()
        return got if got and got["status"].get("servingVersion") == fixed else None

    got = wait_for(f"version {fixed} serving\n{op.log()}", serving_fixed, 180, 1)
    print(f"alias move to Ready with the new version: {time.monotonic() - promoted:.1f}s")
    assert condition(got, "Degraded")["status"] == "False"
    assert got["status"]["lastGoodVersion"] == fixed and "lastFailure" not in got["status"]
    assert "Recovered" in event_reasons(core, namespace, "iris")


def test_a_token_in_a_secret_guards_predictions_and_labels_only(
    operator, objects, apps, core, namespace, mlflow_server, serving_mlflow, tmp_path
) -> None:
    import requests
    from devkit import port_forward

    model, good, _, _ = register_real_versions(mlflow_server, tmp_path)
    token = base64.urlsafe_b64encode(os.urandom(24)).decode()
    secret = {"metadata": {"name": "iris-token"}, "stringData": {"bearer": token}}
    core.create_namespaced_secret(namespace, secret)
    op = operator(MLSHIP_SERVING_TRACKING_URI=serving_mlflow, MLSHIP_SERVING_IMAGE=SERVING_IMAGE)
    create_cr(objects, namespace, "iris", {
        "model": model, "progressDeadlineSeconds": 120,
        "auth": {"tokenSecretRef": {"name": "iris-token", "key": "bearer"}}})
    wait_for(f"Ready=True with version {good}\n{op.log()}",
             lambda: condition(get_cr(objects, namespace, "iris"), "Ready").get("status") == "True", 240, 2)

    def invoke(url: str, authorization: str | None) -> requests.Response:
        headers = {"Content-Type": "application/json"}
        if authorization:
            headers["Authorization"] = authorization
        return requests.post(f"{url}/invocations", data=iris_request(), headers=headers, timeout=30)

    with port_forward(namespace, "svc/iris", 80) as url:
        anonymous = invoke(url, None)
        wrong = invoke(url, "Bearer " + "x" * len(token))
        right = invoke(url, f"Bearer {token}")
        labels = requests.post(f"{url}/feedback", json={"request_id": "r", "row": 0, "label": 1}, timeout=30)
        health = requests.get(f"{url}/health", timeout=30)
    assert (anonymous.status_code, wrong.status_code) == (401, 401), (anonymous.text, wrong.text)
    assert anonymous.headers["WWW-Authenticate"].startswith("Bearer")
    assert anonymous.json()["error_code"] == "UNAUTHENTICATED"
    assert token not in wrong.text
    assert right.status_code == 200 and len(right.json()["predictions"]) == 1, right.text
    assert labels.status_code == 401, labels.text
    assert health.status_code == 200  # the kubelet's probes need no token
    # the token is the kubelet's to read: it is in neither the CR nor the Deployment
    dep = deployment(apps, namespace, "iris")
    assert dep is not None
    assert token not in json.dumps(client.ApiClient().sanitize_for_serialization(dep))
