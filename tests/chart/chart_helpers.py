"""Render the mlship chart with `helm template` and check every object against Kubernetes' schema."""

from __future__ import annotations

import functools
import json
import shutil
import subprocess
import tempfile
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any

import kubernetes_validate
import pytest
import yaml

CHART = Path(__file__).resolve().parents[2] / "charts" / "mlship"
KUBE_VERSION = "1.34.0"  # the Kubernetes minor mlship is tested on (hack/cluster)
RELEASE = "mlship"
NAMESPACE = "mlship"

# skips without helm, fails under MLSHIP_REQUIRE (the fixture is in tests/chart/conftest.py)
requires_helm = pytest.mark.usefixtures("helm_on_path")


def helm_missing_reason() -> str | None:
    if shutil.which("helm") is None:
        return 'helm is not on PATH (on the dev machine: eval "$(hack/cluster env)")'
    return None


class RenderError(RuntimeError):
    """`helm template` failed; the message is helm's."""


def render_chart(
    values: dict[str, Any] | None = None,
    show_only: str | Iterable[str] | None = None,
    *,
    name: str = RELEASE,
    namespace: str = NAMESPACE,
) -> list[dict[str, Any]]:
    """Objects `helm template` renders with `values`, each validated against the v1.34 schema.

    show_only: template path(s) relative to the chart, e.g. "templates/mlflow/deployment.yaml";
    a template that renders nothing yields [] (helm reports it as an error).
    """
    only = (show_only,) if isinstance(show_only, str) else tuple(show_only or ())
    text = _render(json.dumps(values or {}, sort_keys=True), only, name, namespace)
    objects = [doc for doc in yaml.safe_load_all(text) if doc]
    for obj in objects:
        validate(obj)
    return objects


@functools.lru_cache(maxsize=256)
def _render(values_json: str, show_only: tuple[str, ...], name: str, namespace: str) -> str:
    with tempfile.NamedTemporaryFile("w", suffix=".json") as values_file:
        values_file.write(values_json)
        values_file.flush()
        cmd = [
            "helm",
            "template",
            name,
            str(CHART),
            "--namespace",
            namespace,
            "--kube-version",
            KUBE_VERSION,
            "--values",
            values_file.name,
        ]
        for template in show_only:
            cmd += ["--show-only", template]
        proc = subprocess.run(cmd, capture_output=True, text=True, timeout=60, check=False)
    if proc.returncode != 0:
        if show_only and "could not find template" in proc.stderr:
            return ""
        raise RenderError(proc.stderr.strip())
    return proc.stdout


def validate(obj: dict[str, Any]) -> None:
    """Fails the test if `obj` is not a valid Kubernetes object (strict: no unknown fields)."""
    try:
        kubernetes_validate.validate(obj, KUBE_VERSION, strict=True)
    except kubernetes_validate.ValidationError as exc:
        kind, name = obj.get("kind"), obj.get("metadata", {}).get("name")
        pytest.fail(f"{kind}/{name} is not a valid Kubernetes {KUBE_VERSION} object: {exc}")


def render_error(values: dict[str, Any]) -> str:
    """helm's error message for values the chart must reject."""
    with pytest.raises(RenderError) as info:
        render_chart(values)
    return str(info.value)


def one(objects: list[dict[str, Any]], kind: str, name: str | None = None) -> dict[str, Any]:
    found = [o for o in objects if o["kind"] == kind and (name is None or o["metadata"]["name"] == name)]
    assert len(found) == 1, f"expected one {kind} {name or ''}, got {[o['metadata']['name'] for o in found]}"
    return found[0]


def pod_spec(obj: dict[str, Any]) -> dict[str, Any]:
    if obj["kind"] == "Pod":
        return obj["spec"]
    return obj["spec"]["template"]["spec"]


def pod_objects(objects: list[dict[str, Any]]) -> Iterator[dict[str, Any]]:
    kinds = {"Pod", "Deployment", "StatefulSet", "Job", "DaemonSet"}
    return (o for o in objects if o["kind"] in kinds)


def containers(spec: dict[str, Any]) -> list[dict[str, Any]]:
    return [*spec.get("initContainers", []), *spec["containers"]]


def env(container: dict[str, Any]) -> dict[str, Any]:
    """name -> value (or valueFrom) of a container's environment."""
    return {e["name"]: e.get("value", e.get("valueFrom")) for e in container.get("env", [])}


def values_yaml() -> dict[str, Any]:
    return yaml.safe_load((CHART / "values.yaml").read_text())
