"""Pure builders for the children of a ModelDeployment: its Deployment and its Service, and with
more than one replica or autoscaling, its PodDisruptionBudget and HorizontalPodAutoscaler."""

from __future__ import annotations

import copy
import dataclasses
import hashlib
import hmac
import json
from collections.abc import Mapping
from typing import Any

from mlship.names import ServingEnv

from . import resource as r
from .config import Config
from .spec import ServingSpec

SERVING_UID = 10001
# Seconds a terminating pod keeps answering before SIGTERM, so that endpoints and
# kube-proxy stop sending it traffic first (no failed requests during a rollout).
PRESTOP_SLEEP_SECONDS = 5


ROUTING_TOKEN_KEY = "token"  # noqa: S105 - the name of a Secret key


def canary_name(name: str) -> str:
    """The canary's Deployment and Service (and its pods' instance label, so that neither the
    stable Service nor the stable Deployment's selector takes them in)."""
    return f"{name}-canary"


def routing_secret_name(name: str) -> str:
    return f"{name}-routing"


def routing_token(key: str, uid: str) -> str:
    """The token the stable pods require on /admin/routing: derived from the operator's key and
    the ModelDeployment's uid, so the operator never reads it back (it may only create Secrets)."""
    return hmac.new(key.encode(), uid.encode(), hashlib.sha256).hexdigest()


def owner_reference(spec: ServingSpec) -> dict[str, Any]:
    return {
        "apiVersion": r.API_VERSION,
        "kind": r.KIND,
        "name": spec.name,
        "uid": spec.uid,
        "controller": True,
        "blockOwnerDeletion": True,
    }


def selector_labels(name: str) -> dict[str, str]:
    """The immutable Deployment selector: never put a version in here."""
    return {r.LABEL_NAME: r.APP_NAME, r.LABEL_INSTANCE: name}


def selector_string(name: str) -> str:
    """The selector in label-selector syntax: status.selector, which the scale subresource hands
    to a HorizontalPodAutoscaler so it finds the pods whose CPU it averages."""
    return ",".join(f"{k}={v}" for k, v in sorted(selector_labels(name).items()))


def common_labels(name: str) -> dict[str, str]:
    return {
        **selector_labels(name),
        r.LABEL_COMPONENT: "model-server",
        r.LABEL_PART_OF: "mlship",
        r.LABEL_MANAGED_BY: r.MANAGED_BY,
    }


def service_url(spec: ServingSpec, config: Config, *, canary: bool = False) -> str:
    name = canary_name(spec.name) if canary else spec.name
    return f"http://{name}.{spec.namespace}.svc.{config.cluster_domain}"


def _fingerprint(obj: Mapping[str, Any]) -> str:
    return hashlib.sha256(json.dumps(obj, sort_keys=True).encode()).hexdigest()[:16]


def _with_hash(obj: dict[str, Any]) -> dict[str, Any]:
    """`obj` annotated with the fingerprint of itself without that annotation. A Deployment's
    replicas are left out: scaling (by hand or by the autoscaler) is not a spec change that
    rolls out anything, nor one that lets a failed version be tried again."""
    hashed = obj
    if obj["kind"] == "Deployment":
        hashed = {**obj, "spec": {k: v for k, v in obj["spec"].items() if k != "replicas"}}
    digest = _fingerprint(hashed)
    obj["metadata"].setdefault("annotations", {})[r.ANNOTATION_CONFIG_HASH] = digest
    return obj


def config_hash(obj: Mapping[str, Any] | None) -> str | None:
    """The config-hash annotation of a built or a read object (None when it has none)."""
    annotations = ((obj or {}).get("metadata") or {}).get("annotations") or {}
    hash_: str | None = annotations.get(r.ANNOTATION_CONFIG_HASH)
    return hash_


def inference_log_env(spec: ServingSpec) -> list[dict[str, str]]:
    """The serving pods' inference-log settings (spec.inferenceLog). Being part of the pod
    template, a change of them rolls the pods like any other spec change."""
    return [
        {"name": ServingEnv.INFERENCE_LOG_SAMPLE_RATE, "value": f"{spec.inference_log_sample_rate:g}"},
        {"name": ServingEnv.INFERENCE_LOG_FLUSH_SECONDS, "value": str(spec.inference_log_flush_seconds)},
    ]


def auth_env(spec: ServingSpec) -> list[dict[str, Any]]:
    """The bearer token serving requires (spec.auth), read by the kubelet from the Secret: the
    operator never sees it. A missing Secret or key keeps the new pods from starting."""
    if spec.auth_token_secret is None:
        return []
    name, key = spec.auth_token_secret
    ref = {"name": name, "key": key, "optional": False}
    return [{"name": ServingEnv.AUTH_TOKEN, "valueFrom": {"secretKeyRef": ref}}]


def events_env(config: Config) -> list[dict[str, str]]:
    """Where serving produces prediction events and labels; nothing when Kafka is not configured
    (serving then logs to MLflow)."""
    if not config.kafka_bootstrap_servers:
        return []
    return [{"name": ServingEnv.KAFKA_BOOTSTRAP_SERVERS, "value": config.kafka_bootstrap_servers}]


def routing_env(spec: ServingSpec) -> list[dict[str, Any]]:
    """The stable pods of a Shadow or Canary rollout take routing pushes from the operator, with
    a token from the Secret the operator created (build_routing_secret)."""
    if not spec.rollout.staged:
        return []
    ref = {"name": routing_secret_name(spec.name), "key": ROUTING_TOKEN_KEY, "optional": False}
    return [{"name": ServingEnv.ROUTING_TOKEN, "valueFrom": {"secretKeyRef": ref}}]


def build_routing_secret(spec: ServingSpec, key: str) -> dict[str, Any]:
    return {
        "apiVersion": "v1",
        "kind": "Secret",
        "metadata": {**_child_metadata(spec), "name": routing_secret_name(spec.name)},
        "type": "Opaque",
        "stringData": {ROUTING_TOKEN_KEY: routing_token(key, spec.uid)},
    }


def _container(spec: ServingSpec, config: Config, *, canary: bool) -> dict[str, Any]:
    return {
        "name": r.CONTAINER_NAME,
        "image": spec.image,
        "imagePullPolicy": config.image_pull_policy,
        "ports": [{"name": "http", "containerPort": r.CONTAINER_PORT, "protocol": "TCP"}],
        "env": [
            {"name": ServingEnv.TRACKING_URI, "value": spec.serving_tracking_uri},
            {"name": ServingEnv.MODEL_NAME, "value": spec.model},
            {"name": ServingEnv.MODEL_VERSION, "value": ""},  # DeploymentTemplate.for_version
            {"name": ServingEnv.PORT, "value": str(r.CONTAINER_PORT)},
            # The root filesystem is read-only: anything that wants a home or temp dir gets /tmp.
            {"name": "HOME", "value": "/tmp"},  # noqa: S108 - an emptyDir, see volumes
            *inference_log_env(spec),
            *events_env(config),
            *auth_env(spec),
            *([] if canary else routing_env(spec)),
        ],
        "resources": copy.deepcopy(dict(spec.resources)),
        # Ready only once the model is loaded and a self-test prediction succeeded.
        "readinessProbe": {
            "httpGet": {"path": "/health", "port": "http"},
            "periodSeconds": 2,
            "timeoutSeconds": 2,
            "failureThreshold": 2,
        },
        "livenessProbe": {
            "httpGet": {"path": "/livez", "port": "http"},
            "periodSeconds": 10,
            "timeoutSeconds": 3,
            "failureThreshold": 3,
        },
        "lifecycle": {"preStop": {"sleep": {"seconds": PRESTOP_SLEEP_SECONDS}}},
        "securityContext": {
            "allowPrivilegeEscalation": False,
            "capabilities": {"drop": ["ALL"]},
            "readOnlyRootFilesystem": True,
            "runAsNonRoot": True,
            "runAsUser": SERVING_UID,
            "runAsGroup": SERVING_UID,
            "seccompProfile": {"type": "RuntimeDefault"},
        },
        "volumeMounts": [{"name": "tmp", "mountPath": "/tmp"}],  # noqa: S108
    }


def _deployment(spec: ServingSpec, config: Config, *, canary: bool) -> dict[str, Any]:
    """The Deployment with an empty model version."""
    name = canary_name(spec.name) if canary else spec.name
    labels = common_labels(name)
    deployment = {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": {
            "name": name,
            "namespace": spec.namespace,
            "labels": dict(labels),
            "annotations": {r.ANNOTATION_MODEL: spec.model},
            "ownerReferences": [owner_reference(spec)],
        },
        "spec": {
            "replicas": 1 if canary else spec.replicas,
            "revisionHistoryLimit": 3,
            "progressDeadlineSeconds": spec.progress_deadline,
            "selector": {"matchLabels": selector_labels(name)},
            "strategy": {
                "type": "RollingUpdate",
                "rollingUpdate": {"maxUnavailable": 0, "maxSurge": "25%"},
            },
            "template": {
                "metadata": {
                    "labels": {**labels, r.LABEL_MODEL_VERSION: ""},  # for_version
                    "annotations": {r.ANNOTATION_MODEL: spec.model},
                },
                "spec": {
                    "automountServiceAccountToken": False,
                    "enableServiceLinks": False,
                    "terminationGracePeriodSeconds": 30 + PRESTOP_SLEEP_SECONDS,
                    "securityContext": {
                        "runAsNonRoot": True,
                        "runAsUser": SERVING_UID,
                        "runAsGroup": SERVING_UID,
                        "fsGroup": SERVING_UID,
                        "seccompProfile": {"type": "RuntimeDefault"},
                    },
                    "containers": [_container(spec, config, canary=canary)],
                    "volumes": [{"name": "tmp", "emptyDir": {}}],
                },
            },
        },
    }
    return deployment


@dataclasses.dataclass(frozen=True)
class DeploymentTemplate:
    """The serving Deployment rendered once, without its model version.

    `config_hash` fingerprints everything but the version: the operator compares the version
    (pod-template label) and this hash (annotation) separately, so a spec edit and a version
    change are each seen on their own.
    """

    body: Mapping[str, Any]
    config_hash: str

    def for_version(self, version: str) -> dict[str, Any]:
        """The complete Deployment to apply for `version` of the spec's model."""
        deployment = copy.deepcopy(dict(self.body))
        template = deployment["spec"]["template"]
        template["metadata"]["labels"][r.LABEL_MODEL_VERSION] = version
        for env in template["spec"]["containers"][0]["env"]:
            if env["name"] == ServingEnv.MODEL_VERSION:
                env["value"] = version
        return deployment


def deployment_template(
    spec: ServingSpec, config: Config, *, canary: bool = False
) -> DeploymentTemplate:
    """The serving Deployment of `spec` (or of its canary: one replica, no routing), rendered
    once: a tick needs its hash before it knows which version to apply."""
    body = _with_hash(_deployment(spec, config, canary=canary))
    return DeploymentTemplate(body, body["metadata"]["annotations"][r.ANNOTATION_CONFIG_HASH])


def build_service(spec: ServingSpec, config: Config, *, canary: bool = False) -> dict[str, Any]:
    name = canary_name(spec.name) if canary else spec.name
    service = {
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": {
            "name": name,
            "namespace": spec.namespace,
            "labels": common_labels(name),
            "ownerReferences": [owner_reference(spec)],
        },
        "spec": {
            "type": "ClusterIP",
            "selector": selector_labels(name),
            "ports": [
                {"name": "http", "port": r.SERVICE_PORT, "targetPort": "http", "protocol": "TCP"}
            ],
        },
    }
    return _with_hash(service)


def _child_metadata(spec: ServingSpec) -> dict[str, Any]:
    return {
        "name": spec.name,
        "namespace": spec.namespace,
        "labels": common_labels(spec.name),
        "ownerReferences": [owner_reference(spec)],
    }


def build_pdb(spec: ServingSpec) -> dict[str, Any] | None:
    """One pod at a time may be evicted (a node drain), so that more than one replica never all
    go at once; None with one replica and no autoscaling (nothing to keep, no drain to block)."""
    if spec.replicas <= 1 and spec.autoscaling is None:
        return None
    return _with_hash({
        "apiVersion": "policy/v1",
        "kind": "PodDisruptionBudget",
        "metadata": _child_metadata(spec),
        "spec": {
            "maxUnavailable": 1,
            "selector": {"matchLabels": selector_labels(spec.name)},
            # a pod that is not ready serves nothing: evicting it costs no availability
            "unhealthyPodEvictionPolicy": "AlwaysAllow",
        },
    })


def build_hpa(spec: ServingSpec) -> dict[str, Any] | None:
    """The autoscaler of spec.autoscaling, scaling the ModelDeployment itself (its scale
    subresource): the operator stays the one writer of its Deployment's replicas."""
    if spec.autoscaling is None:
        return None
    scaling = spec.autoscaling
    behavior = {}
    if scaling.scale_down_window is not None:
        behavior = {"behavior": {
            "scaleDown": {"stabilizationWindowSeconds": scaling.scale_down_window}}}
    return _with_hash({
        "apiVersion": "autoscaling/v2",
        "kind": "HorizontalPodAutoscaler",
        "metadata": _child_metadata(spec),
        "spec": {
            "scaleTargetRef": {"apiVersion": r.API_VERSION, "kind": r.KIND, "name": spec.name},
            "minReplicas": scaling.min_replicas,
            "maxReplicas": scaling.max_replicas,
            "metrics": [{
                "type": "Resource",
                "resource": {
                    "name": "cpu",
                    "target": {"type": "Utilization", "averageUtilization": scaling.cpu_utilization},
                },
            }],
            **behavior,
        },
    })
