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

    def get_deployment(self, namespace: str, name: str) -> dict[str, Any] | None:
        try:
            return _decode(self.apps.read_namespaced_deployment(
                name, namespace, _preload_content=False, _request_timeout=_TIMEOUT))
        except ApiException as err:
            if err.status == 404:
                return None
            raise

    def get_service(self, namespace: str, name: str) -> dict[str, Any] | None:
        try:
            return _decode(self.core.read_namespaced_service(
                name, namespace, _preload_content=False, _request_timeout=_TIMEOUT))
        except ApiException as err:
            if err.status == 404:
                return None
            raise

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
        if obj["kind"] == "Deployment":
            call = self.apps.patch_namespaced_deployment
        elif obj["kind"] == "Service":
            call = self.core.patch_namespaced_service
        else:
            raise ValueError(f"cannot apply kind {obj['kind']!r}")
        return _decode(call(meta["name"], meta["namespace"], obj, **kwargs))


def api_error_message(err: ApiException) -> str:
    """The API server's own message (e.g. a validation error), not the HTTP dump."""
    try:
        return str(json.loads(err.body).get("message") or err.reason)
    except (TypeError, ValueError):
        return f"{err.status} {err.reason}"
