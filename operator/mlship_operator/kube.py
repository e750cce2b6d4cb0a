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
# The kinds the operator writes: the client API that has them, and their name in its methods.
_KINDS = {
    "Deployment": ("apps", "deployment"),
    "Service": ("core", "service"),
    "HorizontalPodAutoscaler": ("autoscaling", "horizontal_pod_autoscaler"),
    "PodDisruptionBudget": ("policy", "pod_disruption_budget"),
    "Secret": ("core", "secret"),
}


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
        self.discovery = client.DiscoveryV1Api(api_client)

    def _call(self, verb: str, kind: str) -> Any:
        """The client's `<verb>_namespaced_<kind>` for a kind the operator writes."""
        if kind not in _KINDS:
            raise ValueError(f"cannot handle kind {kind!r}")
        api, name = _KINDS[kind]
        return getattr(getattr(self, api), f"{verb}_namespaced_{name}")

    def get(self, kind: str, namespace: str, name: str) -> dict[str, Any] | None:
        read = self._call("read", kind)
        try:
            return _decode(read(name, namespace, _preload_content=False, _request_timeout=_TIMEOUT))
        except ApiException as err:
            if err.status == 404:
                return None
            raise

    def delete(self, kind: str, namespace: str, name: str, uid: str) -> None:
        """Delete the object only if it is still the one with `uid` (gone already is fine)."""
        delete = self._call("delete", kind)
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

    def has_ready_endpoint(self, namespace: str, service: str) -> bool:
        """Whether the Service's EndpointSlices list a ready endpoint: traffic to it can land."""
        listing = _decode(self.discovery.list_namespaced_endpoint_slice(
            namespace, label_selector=f"kubernetes.io/service-name={service}",
            _preload_content=False, _request_timeout=_TIMEOUT))
        return any((endpoint.get("conditions") or {}).get("ready")
                   for item in listing.get("items") or () for endpoint in item.get("endpoints") or ())

    def create(self, obj: dict[str, Any]) -> None:
        """Create the object; one of that name existing already is fine (it is not read: the
        operator may create Secrets, never read or change them)."""
        create = self._call("create", obj["kind"])
        try:
            create(obj["metadata"]["namespace"], obj, field_manager=FIELD_MANAGER,
                   _request_timeout=_TIMEOUT)
        except ApiException as err:
            if err.status != 409:
                raise

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
        patch = self._call("patch", obj["kind"])
        return _decode(patch(meta["name"], meta["namespace"], obj, **kwargs))


def api_error_message(err: ApiException) -> str:
    """The API server's own message (e.g. a validation error), not the HTTP dump."""
    try:
        return str(json.loads(err.body).get("message") or err.reason)
    except (TypeError, ValueError):
        return f"{err.status} {err.reason}"
