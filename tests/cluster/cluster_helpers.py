"""Helpers for tests against a real Kubernetes cluster (waiting for something: devkit.wait_for)."""

from __future__ import annotations

import os
import shutil
from typing import Any

from kubernetes import client

# Images that `hack/cluster up` loads into the cluster (a user's kind/minikube pulls them).
SMOKE_IMAGE = os.environ.get("MLSHIP_SMOKE_IMAGE", "python:3.11-slim-bookworm")

RESTRICTED_CONTAINER_SECURITY = {
    "allowPrivilegeEscalation": False,
    "capabilities": {"drop": ["ALL"]},
    "runAsNonRoot": True,
    "runAsUser": 10001,
    "seccompProfile": {"type": "RuntimeDefault"},
}


def python_pod(name: str, code: str, **spec: Any) -> dict[str, Any]:
    """A restricted-compliant pod that runs `python3 -c code` in the smoke image."""
    return {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": name, "labels": {"app": name}},
        "spec": {
            "restartPolicy": "Never",
            "containers": [{
                "name": "main",
                "image": SMOKE_IMAGE,
                "imagePullPolicy": "IfNotPresent",
                "command": ["python3", "-c", code],
                "securityContext": RESTRICTED_CONTAINER_SECURITY,
                "resources": {"requests": {"cpu": "10m", "memory": "32Mi"}, "limits": {"memory": "128Mi"}},
                **spec.pop("container", {}),
            }],
            **spec,
        },
    }


def pod_finished(core: client.CoreV1Api, namespace: str, name: str) -> str | None:
    phase = core.read_namespaced_pod(name, namespace).status.phase
    return phase if phase in ("Succeeded", "Failed") else None


def helm_binary() -> str | None:
    return shutil.which("helm")


def pod_logs(core: client.CoreV1Api, namespace: str, name: str) -> str:
    # The generated client returns repr(bytes) for logs unless we read the raw response.
    resp = core.read_namespaced_pod_log(name, namespace, _preload_content=False)
    return str(resp.data.decode())
