"""Thin Kubernetes I/O for the operator's children (sync: handlers run in kopf's executor)."""

from __future__ import annotations

import json
import os
from typing import Any

from kubernetes import client, config
from kubernetes.client.exceptions import ApiException

from .resource import FIELD_MANAGER

_TIMEOUT = (5, 30)  # connect, read
_APPLY = "application/apply-patch+yaml"


def load_credentials() -> None:
    """In-cluster service account when running in a pod, else the kubeconfig (KUBECONFIG)."""
    if os.environ.get("KUBERNETES_SERVICE_HOST") and not os.environ.get("KUBECONFIG"):
        config.load_incluster_config()
    else:
        config.load_kube_config()


def _decode(response: Any) -> dict[str, Any]:
    decoded: dict[str, Any] = json.loads(response.data)
    return decoded


class Kube:
    def __init__(self, api_client: client.ApiClient | None = None) -> None:
        self.apps = client.AppsV1Api(api_client)
        self.core = client.CoreV1Api(api_client)
        self.autoscaling = client.AutoscalingV2Api(api_client)
        self.policy = client.PolicyV1Api(api_client)

    def _calls(self, kind: str) -> tuple[Any, Any, Any]:
        """read, patch and delete of a namespaced kind the operator writes."""
        if kind == "Deployment":
            a: Any = self.apps
            return (a.read_namespaced_deployment, a.patch_namespaced_deployment,
                    a.delete_namespaced_deployment)
        if kind == "Service":
            c: Any = self.core
            return c.read_namespaced_service, c.patch_namespaced_service, c.delete_namespaced_service
        if kind == "HorizontalPodAutoscaler":
            h: Any = self.autoscaling
            return (h.read_namespaced_horizontal_pod_autoscaler,
                    h.patch_namespaced_horizontal_pod_autoscaler,
                    h.delete_namespaced_horizontal_pod_autoscaler)
        if kind == "PodDisruptionBudget":
            p: Any = self.policy
            return (p.read_namespaced_pod_disruption_budget,
                    p.patch_namespaced_pod_disruption_budget,
                    p.delete_namespaced_pod_disruption_budget)
        raise ValueError(f"cannot handle kind {kind!r}")

    def get(self, kind: str, namespace: str, name: str) -> dict[str, Any] | None:
        read = self._calls(kind)[0]
        try:
            return _decode(read(name, namespace, _preload_content=False, _request_timeout=_TIMEOUT))
        except ApiException as err:
            if err.status == 404:
                return None
            raise

    def delete(self, kind: str, namespace: str, name: str, uid: str) -> None:
        """Delete the object only if it is still the one with `uid` (gone already is fine)."""
        delete = self._calls(kind)[2]
        try:
            only_that = client.V1DeleteOptions(preconditions=client.V1Preconditions(uid=uid))
            delete(name, namespace, body=only_that, _request_timeout=_TIMEOUT)
        except ApiException as err:
            if err.status not in (404, 409):  # gone, or replaced by another object since read
                raise

    def get_deployment(self, namespace: str, name: str) -> dict[str, Any] | None:
        return self.get("Deployment", namespace, name)

    def get_service(self, namespace: str, name: str) -> dict[str, Any] | None:
        return self.get("Service", namespace, name)

    def list_pods(self, namespace: str, selector: dict[str, str]) -> list[dict[str, Any]]:
        label_selector = ",".join(f"{k}={v}" for k, v in sorted(selector.items()))
        listing = _decode(self.core.list_namespaced_pod(
            namespace, label_selector=label_selector,
            _preload_content=False, _request_timeout=_TIMEOUT))
        return list(listing.get("items") or [])

    def apply(self, obj: dict[str, Any]) -> dict[str, Any]:
        """Server-side apply: creates or updates, idempotent, owns exactly the fields we set."""
        meta = obj["metadata"]
        kwargs = {
            "field_manager": FIELD_MANAGER,
            "force": True,
            "_content_type": _APPLY,
            "_preload_content": False,
            "_request_timeout": _TIMEOUT,
        }
        patch = self._calls(obj["kind"])[1]
        return _decode(patch(meta["name"], meta["namespace"], obj, **kwargs))


def api_error_message(err: ApiException) -> str:
    """The API server's own message (e.g. a validation error), not the HTTP dump."""
    try:
        return str(json.loads(err.body).get("message") or err.reason)
    except (TypeError, ValueError):
        return f"{err.status} {err.reason}"
