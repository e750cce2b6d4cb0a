"""Pure builders for the serving Deployment and Service."""

from __future__ import annotations

import copy
import hashlib
import json

import kubernetes_validate
import pytest
from _operator_fixtures import CONFIG, UID, build_deployment, build_service, deployment_config_hash, make_cr
from mlship_operator import builders
from mlship_operator.resource import ANNOTATION_CONFIG_HASH, LABEL_MODEL_VERSION
from mlship_operator.spec import serving_spec

pytestmark = pytest.mark.unit


def container(deployment: dict) -> dict:
    (only,) = deployment["spec"]["template"]["spec"]["containers"]
    return only


def env(deployment: dict) -> dict[str, str]:
    return {e["name"]: e["value"] for e in container(deployment)["env"]}


def test_deployment_runs_the_given_version_with_the_serving_contract() -> None:
    dep = build_deployment(make_cr(), CONFIG, "7")
    assert (dep["apiVersion"], dep["kind"]) == ("apps/v1", "Deployment")
    assert (dep["metadata"]["name"], dep["metadata"]["namespace"]) == ("iris", "models")
    c = container(dep)
    assert c["image"] == "mlship-serving:dev"
    assert env(dep) == {
        "MLFLOW_TRACKING_URI": "http://mlflow.mlship:5000",
        "MLSHIP_MODEL_NAME": "iris",
        "MLSHIP_MODEL_VERSION": "7",
        "PORT": "8080",
        "HOME": "/tmp",
        "MLSHIP_INFERENCE_LOG_SAMPLE_RATE": "1",
        "MLSHIP_INFERENCE_LOG_FLUSH_SECONDS": "10",
    }
    assert c["ports"] == [{"name": "http", "containerPort": 8080, "protocol": "TCP"}]
    assert c["readinessProbe"]["httpGet"] == {"path": "/health", "port": "http"}
    assert c["livenessProbe"]["httpGet"] == {"path": "/livez", "port": "http"}
    assert dep["spec"]["template"]["metadata"]["labels"][LABEL_MODEL_VERSION] == "7"


def test_rolling_update_never_removes_a_ready_pod_first() -> None:
    spec = build_deployment(make_cr(), CONFIG, "1")["spec"]
    assert spec["strategy"] == {
        "type": "RollingUpdate", "rollingUpdate": {"maxUnavailable": 0, "maxSurge": "25%"}
    }
    assert spec["progressDeadlineSeconds"] == CONFIG.progress_deadline
    # terminating pods keep serving during the preStop sleep, within the grace period
    pod = spec["template"]["spec"]
    sleep = container({"spec": spec})["lifecycle"]["preStop"]["sleep"]["seconds"]
    assert 0 < sleep < pod["terminationGracePeriodSeconds"]


def test_pod_meets_the_restricted_pod_security_standard() -> None:
    pod = build_deployment(make_cr(), CONFIG, "1")["spec"]["template"]["spec"]
    assert pod["securityContext"]["runAsNonRoot"] is True
    assert pod["securityContext"]["runAsUser"] == 10001
    assert pod["securityContext"]["seccompProfile"] == {"type": "RuntimeDefault"}
    assert pod["automountServiceAccountToken"] is False
    sc = pod["containers"][0]["securityContext"]
    assert sc["allowPrivilegeEscalation"] is False
    assert sc["capabilities"] == {"drop": ["ALL"]}
    assert sc["runAsNonRoot"] is True
    assert sc["seccompProfile"] == {"type": "RuntimeDefault"}
    # read-only root filesystem, with a writable /tmp for model downloads
    assert sc["readOnlyRootFilesystem"] is True
    assert {"name": "tmp", "mountPath": "/tmp"} in pod["containers"][0]["volumeMounts"]
    assert {"name": "tmp", "emptyDir": {}} in pod["volumes"]
    assert not pod.get("hostNetwork") and not pod.get("hostPID")


def test_children_are_owned_by_the_cr_and_labelled() -> None:
    cr = make_cr()
    for obj in (build_deployment(cr, CONFIG, "1"), build_service(cr, CONFIG)):
        assert obj["metadata"]["ownerReferences"] == [{
            "apiVersion": "mlship.io/v1alpha1", "kind": "ModelDeployment", "name": "iris",
            "uid": UID, "controller": True, "blockOwnerDeletion": True,
        }]
        labels = obj["metadata"]["labels"]
        assert labels["app.kubernetes.io/name"] == "mlship-serving"
        assert labels["app.kubernetes.io/instance"] == "iris"
        assert labels["app.kubernetes.io/managed-by"] == "mlship-operator"
        assert labels["app.kubernetes.io/part-of"] == "mlship"
        assert labels["app.kubernetes.io/component"] == "model-server"


def test_selector_is_stable_across_versions_and_matches_the_pods_and_service() -> None:
    cr = make_cr()
    one, two = (build_deployment(cr, CONFIG, v) for v in ("1", "2"))
    assert one["spec"]["selector"] == two["spec"]["selector"]  # selectors are immutable
    selector = one["spec"]["selector"]["matchLabels"]
    assert LABEL_MODEL_VERSION not in selector
    pod_labels = two["spec"]["template"]["metadata"]["labels"]
    assert selector.items() <= pod_labels.items()
    service = build_service(cr, CONFIG)
    assert service["spec"]["selector"] == selector
    assert service["spec"]["ports"] == [
        {"name": "http", "port": 80, "targetPort": "http", "protocol": "TCP"}
    ]


def test_spec_overrides_replace_operator_defaults() -> None:
    cr = make_cr({
        "model": "fraud", "version": "4", "trackingUri": "https://mlflow.other/",
        "image": "reg/serving:9", "replicas": 3, "progressDeadlineSeconds": 400,
        "resources": {"requests": {"cpu": "1"}, "limits": {"cpu": 2, "memory": "2Gi"}},
    })
    dep = build_deployment(cr, CONFIG, "4")
    assert dep["spec"]["replicas"] == 3
    assert dep["spec"]["progressDeadlineSeconds"] == 400
    assert container(dep)["image"] == "reg/serving:9"
    assert container(dep)["resources"] == {
        "requests": {"cpu": "1"}, "limits": {"cpu": 2, "memory": "2Gi"}
    }
    assert env(dep)["MLFLOW_TRACKING_URI"] == "https://mlflow.other"
    assert env(dep)["MLSHIP_MODEL_NAME"] == "fraud"
    assert dep["metadata"]["annotations"]["mlship.io/model"] == "fraud"


def test_default_resources_when_the_spec_has_none() -> None:
    resources = container(build_deployment(make_cr(), CONFIG, "1"))["resources"]
    assert resources == {
        "requests": {"cpu": "100m", "memory": "256Mi"}, "limits": {"memory": "1Gi"}
    }


def test_config_hash_ignores_the_version_but_sees_spec_changes() -> None:
    cr = make_cr()
    h = deployment_config_hash(cr, CONFIG)
    for version in ("1", "2", "15"):
        annotations = build_deployment(cr, CONFIG, version)["metadata"]["annotations"]
        assert annotations[ANNOTATION_CONFIG_HASH] == h
    assert deployment_config_hash(make_cr({"model": "iris", "image": "x:1"}), CONFIG) != h
    resources = {"requests": {"cpu": "1"}}
    assert deployment_config_hash(make_cr({"model": "iris", "resources": resources}), CONFIG) != h
    # turning auth on, or naming another Secret, rolls the pods (the token itself is the kubelet's)
    auth = {"model": "iris", "auth": {"tokenSecretRef": {"name": "a"}}}
    with_auth = deployment_config_hash(make_cr(auth), CONFIG)
    auth["auth"]["tokenSecretRef"]["name"] = "b"
    assert len({h, with_auth, deployment_config_hash(make_cr(auth), CONFIG)}) == 3


def test_scaling_alone_is_not_a_spec_change() -> None:
    """An autoscaler (or kubectl scale) moving spec.replicas neither rolls the pods nor lets a
    failed version be retried: the replicas stay out of the config hash, not out of the object."""
    h = deployment_config_hash(make_cr(), CONFIG)
    for replicas in (2, 7):
        cr = make_cr({"model": "iris", "replicas": replicas})
        assert deployment_config_hash(cr, CONFIG) == h
        assert build_deployment(cr, CONFIG, "1")["spec"]["replicas"] == replicas
    scaled = make_cr({"model": "iris", "replicas": 3, "autoscaling": {"maxReplicas": 5}})
    assert deployment_config_hash(scaled, CONFIG) == h  # autoscaling itself is not the pods' either


def test_builders_are_deterministic_and_do_not_share_state() -> None:
    cr = make_cr({"model": "iris", "resources": {"limits": {"memory": "1Gi"}}})
    first = build_deployment(cr, CONFIG, "1")
    container(first)["resources"]["limits"]["memory"] = "9Gi"
    assert cr["spec"]["resources"]["limits"]["memory"] == "1Gi"
    assert build_deployment(cr, CONFIG, "1") != first
    assert build_service(cr, CONFIG) == build_service(cr, CONFIG)


def test_serving_pods_get_the_serving_uri_not_the_operators() -> None:
    from mlship_operator.config import from_env

    config = from_env({
        "MLFLOW_TRACKING_URI": "http://127.0.0.1:5000",
        "MLSHIP_SERVING_TRACKING_URI": "http://mlflow.mlship.svc:5000",
    })
    assert env(build_deployment(make_cr(), config, "1"))["MLFLOW_TRACKING_URI"] == (
        "http://mlflow.mlship.svc:5000"
    )


def test_url_names_the_service() -> None:
    assert builders.service_url(serving_spec(make_cr(), CONFIG), CONFIG) == "http://iris.models.svc.cluster.local"


def test_inference_log_settings_reach_the_serving_container() -> None:
    cr = make_cr({"model": "iris", "inferenceLog": {"sampleRate": 0.25, "flushSeconds": 30}})
    got = env(build_deployment(cr, CONFIG, "1"))
    assert got["MLSHIP_INFERENCE_LOG_SAMPLE_RATE"] == "0.25"
    assert got["MLSHIP_INFERENCE_LOG_FLUSH_SECONDS"] == "30"
    off = env(build_deployment(make_cr({"model": "iris", "inferenceLog": {"sampleRate": 0}}),
                                        CONFIG, "1"))
    assert off["MLSHIP_INFERENCE_LOG_SAMPLE_RATE"] == "0"
    # what the API server stores when the field is left out: the CRD's defaults
    defaulted = make_cr({"model": "iris", "inferenceLog": {"sampleRate": 1.0, "flushSeconds": 10}})
    assert env(build_deployment(defaulted, CONFIG, "1")) == env(
        build_deployment(make_cr(), CONFIG, "1")
    )


def test_a_change_of_inference_log_rolls_the_pods() -> None:
    """The operator re-applies the Deployment when its config hash changes (decide.py)."""
    before = deployment_config_hash(make_cr(), CONFIG)
    for change in ({"sampleRate": 0.5}, {"flushSeconds": 60}, {"sampleRate": 0}):
        cr = make_cr({"model": "iris", "inferenceLog": change})
        assert deployment_config_hash(cr, CONFIG) != before, change


# ------------------------------------------------------------------ boundaries (mutation testing)

@pytest.mark.parametrize("kind", ["Deployment", "Service", "PodDisruptionBudget",
                                  "HorizontalPodAutoscaler"])
def test_children_are_valid_kubernetes_objects_strictly(kind: str) -> None:
    """Every field name and kind/apiVersion as the API server knows them (no unknown fields)."""
    cr = make_cr({"model": "iris", "replicas": 2, "inferenceLog": {"sampleRate": 0.5, "flushSeconds": 3},
                  "autoscaling": {"minReplicas": 2, "maxReplicas": 4}})
    spec = serving_spec(cr, CONFIG)
    obj = {
        "Deployment": lambda: build_deployment(cr, CONFIG, "4"),
        "Service": lambda: build_service(cr, CONFIG),
        "PodDisruptionBudget": lambda: builders.build_pdb(spec),
        "HorizontalPodAutoscaler": lambda: builders.build_hpa(spec),
    }[kind]()
    assert obj is not None and obj["kind"] == kind
    kubernetes_validate.validate(obj, "1.34.0", strict=True)


def test_probes_and_shutdown_timing_in_full() -> None:
    pod = build_deployment(make_cr(), CONFIG, "1")["spec"]["template"]["spec"]
    c = container({"spec": {"template": {"spec": pod}}})
    # ready within ~4 s of the model answering; out of the Service after two failed checks
    assert c["readinessProbe"] == {"httpGet": {"path": "/health", "port": "http"},
                                   "periodSeconds": 2, "timeoutSeconds": 2, "failureThreshold": 2}
    assert c["livenessProbe"] == {"httpGet": {"path": "/livez", "port": "http"},
                                  "periodSeconds": 10, "timeoutSeconds": 3, "failureThreshold": 3}
    assert c["lifecycle"] == {"preStop": {"sleep": {"seconds": 5}}}
    assert pod["terminationGracePeriodSeconds"] == 35  # the server's own 25 s drain fits after the sleep
    assert c["volumeMounts"] == [{"name": "tmp", "mountPath": "/tmp"}] and pod["volumes"] == [
        {"name": "tmp", "emptyDir": {}}]
    assert c["name"] == "server" and c["imagePullPolicy"] == CONFIG.image_pull_policy


def test_the_pod_and_container_security_contexts_in_full() -> None:
    pod = build_deployment(make_cr(), CONFIG, "1")["spec"]["template"]["spec"]
    assert pod["securityContext"] == {"runAsNonRoot": True, "runAsUser": 10001, "runAsGroup": 10001,
                                      "fsGroup": 10001, "seccompProfile": {"type": "RuntimeDefault"}}
    assert pod["containers"][0]["securityContext"] == {
        "allowPrivilegeEscalation": False, "capabilities": {"drop": ["ALL"]}, "readOnlyRootFilesystem": True,
        "runAsNonRoot": True, "runAsUser": 10001, "runAsGroup": 10001,
        "seccompProfile": {"type": "RuntimeDefault"}}
    assert pod["enableServiceLinks"] is False


def test_deployment_and_service_metadata_in_full() -> None:
    cr = make_cr()
    dep = build_deployment(cr, CONFIG, "1")
    assert dep["spec"]["revisionHistoryLimit"] == 3
    assert dep["spec"]["template"]["metadata"]["annotations"] == {"mlship.io/model": "iris"}
    svc = build_service(cr, CONFIG)
    assert (svc["apiVersion"], svc["kind"]) == ("v1", "Service")
    assert (svc["metadata"]["name"], svc["metadata"]["namespace"]) == ("iris", "models")
    assert svc["spec"]["type"] == "ClusterIP"
    assert svc["spec"]["ports"] == [{"name": "http", "port": 80, "targetPort": "http", "protocol": "TCP"}]


def test_the_config_hash_is_16_hex_digits_and_ignores_key_order() -> None:
    a = make_cr({"model": "iris", "resources": {"requests": {"cpu": "1", "memory": "1Gi"},
                                                "limits": {"memory": "2Gi", "cpu": "2"}}})
    b = make_cr({"model": "iris", "resources": {"limits": {"cpu": "2", "memory": "2Gi"},
                                                "requests": {"memory": "1Gi", "cpu": "1"}}})
    digest = deployment_config_hash(a, CONFIG)
    assert len(digest) == 16 and int(digest, 16) >= 0
    assert deployment_config_hash(b, CONFIG) == digest


def test_the_service_hash_follows_the_service() -> None:
    def digest(cr: dict) -> str:
        return build_service(cr, CONFIG)["metadata"]["annotations"][ANNOTATION_CONFIG_HASH]

    assert digest(make_cr()) != digest(make_cr(name="wine"))


def test_the_template_is_rendered_once_and_stamped_per_version() -> None:
    spec = serving_spec(make_cr({"model": "iris", "replicas": 2}), CONFIG)
    template = builders.deployment_template(spec, CONFIG)
    before = copy.deepcopy(dict(template.body))
    one, two = template.for_version("1"), template.for_version("2")
    assert dict(template.body) == before  # stamping copies
    assert one is not template.for_version("1") and one == template.for_version("1")
    assert template.body["metadata"]["annotations"][ANNOTATION_CONFIG_HASH] == template.config_hash
    # a version reaches exactly two places: the pod-template label and the container's env
    for version, dep in (("1", one), ("2", two)):
        assert dep["spec"]["template"]["metadata"]["labels"][LABEL_MODEL_VERSION] == version
        assert env(dep)["MLSHIP_MODEL_VERSION"] == version
        unstamped = copy.deepcopy(dep)
        unstamped["spec"]["template"]["metadata"]["labels"][LABEL_MODEL_VERSION] = ""
        next(e for e in container(unstamped)["env"] if e["name"] == "MLSHIP_MODEL_VERSION")[
            "value"] = ""
        assert unstamped == before


def test_the_config_hash_is_of_the_unversioned_deployment_without_its_own_annotation() -> None:
    spec = serving_spec(make_cr(), CONFIG)
    template = builders.deployment_template(spec, CONFIG)
    bare = copy.deepcopy(dict(template.body))
    del bare["metadata"]["annotations"][ANNOTATION_CONFIG_HASH]
    del bare["spec"]["replicas"]  # scaling is not a spec change
    digest = hashlib.sha256(json.dumps(bare, sort_keys=True).encode()).hexdigest()[:16]
    assert template.config_hash == digest
    service = builders.build_service(spec, CONFIG)
    bare_service = copy.deepcopy(service)
    del bare_service["metadata"]["annotations"]
    assert builders.config_hash(service) == hashlib.sha256(
        json.dumps(bare_service, sort_keys=True).encode()).hexdigest()[:16]


def test_config_hash_reads_the_annotation_of_any_object() -> None:
    assert builders.config_hash(None) is None
    assert builders.config_hash({}) is None
    assert builders.config_hash({"metadata": {"annotations": None}}) is None
    assert builders.config_hash({"metadata": {"annotations": {ANNOTATION_CONFIG_HASH: "ab"}}}) == "ab"


# ------------------------------------------------------------------ optional children (#18)

OWNER = [{"apiVersion": "mlship.io/v1alpha1", "kind": "ModelDeployment", "name": "iris",
          "uid": UID, "controller": True, "blockOwnerDeletion": True}]
LABELS = {"app.kubernetes.io/name": "mlship-serving", "app.kubernetes.io/instance": "iris",
          "app.kubernetes.io/managed-by": "mlship-operator", "app.kubernetes.io/part-of": "mlship",
          "app.kubernetes.io/component": "model-server"}


def without_hash(obj: dict) -> dict:
    bare = copy.deepcopy(obj)
    digest = bare["metadata"].pop("annotations")[ANNOTATION_CONFIG_HASH]
    assert digest == builders.config_hash(obj) and len(digest) == 16
    return bare


@pytest.mark.parametrize("spec", [{"model": "iris"}, {"model": "iris", "replicas": 1}])
def test_one_replica_without_autoscaling_has_neither_pdb_nor_hpa(spec: dict) -> None:
    serving = serving_spec(make_cr(spec), CONFIG)
    assert builders.build_pdb(serving) is None
    assert builders.build_hpa(serving) is None


def test_more_than_one_replica_gets_a_pdb_but_no_hpa() -> None:
    spec = serving_spec(make_cr({"model": "iris", "replicas": 2}), CONFIG)
    assert builders.build_hpa(spec) is None
    pdb = builders.build_pdb(spec)
    assert pdb is not None
    assert without_hash(pdb) == {
        "apiVersion": "policy/v1",
        "kind": "PodDisruptionBudget",
        "metadata": {"name": "iris", "namespace": "models", "labels": LABELS, "ownerReferences": OWNER},
        "spec": {
            "maxUnavailable": 1,
            "selector": {"matchLabels": {"app.kubernetes.io/name": "mlship-serving",
                                         "app.kubernetes.io/instance": "iris"}},
            "unhealthyPodEvictionPolicy": "AlwaysAllow",
        },
    }
    # the budget selects exactly the Deployment's pods
    dep = build_deployment(make_cr({"model": "iris", "replicas": 2}), CONFIG, "1")
    assert pdb["spec"]["selector"] == dep["spec"]["selector"]


def test_autoscaling_with_one_replica_gets_a_pdb_and_an_hpa_scaling_the_cr() -> None:
    spec = serving_spec(make_cr({"model": "iris", "autoscaling": {
        "minReplicas": 1, "maxReplicas": 6, "targetCPUUtilizationPercentage": 70}}), CONFIG)
    assert spec.replicas == 1
    pdb = builders.build_pdb(spec)
    assert pdb is not None and pdb["spec"]["maxUnavailable"] == 1
    hpa = builders.build_hpa(spec)
    assert hpa is not None
    assert without_hash(hpa) == {
        "apiVersion": "autoscaling/v2",
        "kind": "HorizontalPodAutoscaler",
        "metadata": {"name": "iris", "namespace": "models", "labels": LABELS, "ownerReferences": OWNER},
        "spec": {
            # the CR itself (its scale subresource), not the Deployment: the operator stays the
            # one writer of the Deployment's replicas
            "scaleTargetRef": {"apiVersion": "mlship.io/v1alpha1", "kind": "ModelDeployment",
                               "name": "iris"},
            "minReplicas": 1,
            "maxReplicas": 6,
            "metrics": [{"type": "Resource", "resource": {
                "name": "cpu", "target": {"type": "Utilization", "averageUtilization": 70}}}],
        },
    }


def test_the_hpa_hash_follows_its_bounds_and_target_but_not_the_replicas() -> None:
    def digest(autoscaling: dict, replicas: int = 2) -> str | None:
        spec = serving_spec(make_cr({"model": "iris", "replicas": replicas,
                                     "autoscaling": autoscaling}), CONFIG)
        return builders.config_hash(builders.build_hpa(spec))

    base = digest({"minReplicas": 2, "maxReplicas": 5})
    assert digest({"minReplicas": 2, "maxReplicas": 5}, replicas=4) == base
    assert digest({"minReplicas": 2, "maxReplicas": 5, "targetCPUUtilizationPercentage": 80}) == base
    for changed in ({"minReplicas": 1, "maxReplicas": 5}, {"minReplicas": 2, "maxReplicas": 6},
                    {"minReplicas": 2, "maxReplicas": 5, "targetCPUUtilizationPercentage": 50}):
        assert digest(changed) != base, changed


def test_the_selector_string_is_the_deployments_selector() -> None:
    assert builders.selector_string("iris") == (
        "app.kubernetes.io/instance=iris,app.kubernetes.io/name=mlship-serving")
    match = build_deployment(make_cr(), CONFIG, "1")["spec"]["selector"]["matchLabels"]
    assert dict(kv.split("=") for kv in builders.selector_string("iris").split(",")) == match


@pytest.mark.parametrize("window", [0, 120])
def test_a_scale_down_window_becomes_the_hpas_behavior(window: int) -> None:
    plain = builders.build_hpa(serving_spec(make_cr({"model": "iris", "autoscaling": {
        "maxReplicas": 3}}), CONFIG))
    assert plain is not None and "behavior" not in plain["spec"]  # the autoscaler's own 300 s
    hpa = builders.build_hpa(serving_spec(make_cr({"model": "iris", "autoscaling": {
        "maxReplicas": 3, "scaleDownStabilizationSeconds": window}}), CONFIG))
    assert hpa is not None
    assert hpa["spec"]["behavior"] == {"scaleDown": {"stabilizationWindowSeconds": window}}
    assert builders.config_hash(hpa) != builders.config_hash(plain)
    kubernetes_validate.validate(hpa, "1.34.0", strict=True)
