"""Checks across the whole rendered chart: pod security, probes, resources, labels, values and
schema, NOTES.txt and `helm lint --strict`."""

from __future__ import annotations

import json
import re
import subprocess
from typing import Any

import pytest
from chart_helpers import (
    CHART,
    KUBE_VERSION,
    containers,
    one,
    pod_objects,
    pod_spec,
    render_chart,
    requires_helm,
    values_yaml,
)
from testkit import require_or_skip

pytestmark = [pytest.mark.chart, requires_helm]

# Value sets that together render every template and every branch that changes a pod.
VARIANTS: dict[str, dict[str, Any]] = {
    "defaults": {},
    "external-db-object-store": {
        "postgresql": {"enabled": False},
        "externalDatabase": {"host": "db", "airflow": {"password": "a"}, "mlflow": {"password": "m"}},
        "mlflow": {"artifacts": {"destination": "s3://b/p", "credentialsSecret": "s3"}},
        "images": {"pullSecrets": ["regcred"]},
    },
    "minimal": {"operator": {"enabled": False}, "airflow": {"triggerer": {"enabled": False}}},
    "all-namespaces": {"operator": {"watchAllNamespaces": True}},
}
ALLOWED_VOLUMES = {
    "configMap",
    "csi",
    "downwardAPI",
    "emptyDir",
    "ephemeral",
    "persistentVolumeClaim",
    "projected",
    "secret",
}


def restricted_violations(obj: dict[str, Any]) -> list[str]:
    """What keeps a pod from the PodSecurity "restricted" profile (v1.34), as readable strings."""
    spec = pod_spec(obj)
    where = f"{obj['kind']}/{obj['metadata']['name']}"
    problems = []
    for field in ("hostNetwork", "hostPID", "hostIPC"):
        if spec.get(field):
            problems.append(f"{where}: {field}")
    for volume in spec.get("volumes", []):
        kinds = set(volume) - {"name"}
        if not kinds <= ALLOWED_VOLUMES:
            problems.append(f"{where}: volume {volume['name']} is {kinds}")
    pod_sc = spec.get("securityContext", {})
    if pod_sc.get("sysctls"):
        problems.append(f"{where}: sysctls")
    for c in containers(spec):
        sc = c.get("securityContext", {})
        name = f"{where}/{c['name']}"
        if sc.get("privileged"):
            problems.append(f"{name}: privileged")
        if sc.get("allowPrivilegeEscalation") is not False:
            problems.append(f"{name}: allowPrivilegeEscalation is not false")
        if "ALL" not in sc.get("capabilities", {}).get("drop", []):
            problems.append(f"{name}: capabilities not dropped")
        if set(sc.get("capabilities", {}).get("add", [])) - {"NET_BIND_SERVICE"}:
            problems.append(f"{name}: capabilities added")
        if not sc.get("runAsNonRoot", pod_sc.get("runAsNonRoot")):
            problems.append(f"{name}: runAsNonRoot is not true")
        if sc.get("runAsUser", pod_sc.get("runAsUser")) in (0, None):
            problems.append(f"{name}: no non-zero runAsUser")
        seccomp = sc.get("seccompProfile", pod_sc.get("seccompProfile", {})).get("type")
        if seccomp not in ("RuntimeDefault", "Localhost"):
            problems.append(f"{name}: seccompProfile {seccomp}")
        if any(p.get("hostPort") for p in c.get("ports", [])):
            problems.append(f"{name}: hostPort")
    return problems


@pytest.fixture(params=sorted(VARIANTS), scope="module")
def objects(request: pytest.FixtureRequest) -> list[dict[str, Any]]:
    return render_chart(VARIANTS[request.param])


class TestPodSecurity:
    def test_every_pod_is_admissible_under_restricted(self, objects: list[dict[str, Any]]) -> None:
        pods = list(pod_objects(objects))
        assert pods
        problems = [p for obj in pods for p in restricted_violations(obj)]
        assert not problems, "\n".join(problems)

    def test_read_only_root_filesystems(self, objects: list[dict[str, Any]]) -> None:
        for obj in pod_objects(objects):
            for c in containers(pod_spec(obj)):
                assert c["securityContext"]["readOnlyRootFilesystem"] is True, (
                    obj["metadata"]["name"],
                    c["name"],
                )

    def test_api_tokens_only_where_the_api_is_used(self, objects: list[dict[str, Any]]) -> None:
        with_token = {
            o["metadata"]["name"]
            for o in pod_objects(objects)
            if pod_spec(o).get("automountServiceAccountToken") is not False
        }
        assert with_token <= {"mlship-airflow-scheduler", "mlship-airflow-triggerer", "mlship-operator"}

    def test_the_checker_catches_violations(self) -> None:
        """restricted_violations itself: a root, privileged pod must not pass."""
        bad = {
            "kind": "Pod",
            "metadata": {"name": "bad"},
            "spec": {
                "hostNetwork": True,
                "volumes": [{"name": "h", "hostPath": {"path": "/"}}],
                "containers": [
                    {
                        "name": "c",
                        "securityContext": {"privileged": True, "runAsUser": 0},
                        "ports": [{"containerPort": 1, "hostPort": 1}],
                    }
                ],
            },
        }
        problems = "\n".join(restricted_violations(bad))
        for word in (
            "hostNetwork",
            "hostPath",
            "privileged",
            "allowPrivilegeEscalation",
            "capabilities not",
            "runAsNonRoot",
            "runAsUser",
            "seccompProfile",
            "hostPort",
        ):
            assert word in problems


class TestProbesAndResources:
    def test_every_long_running_container_has_probes(self, objects: list[dict[str, Any]]) -> None:
        for obj in objects:
            if obj["kind"] not in ("Deployment", "StatefulSet"):
                continue
            for c in pod_spec(obj)["containers"]:
                name = f"{obj['metadata']['name']}/{c['name']}"
                assert "livenessProbe" in c, name
                assert "readinessProbe" in c or "startupProbe" in c, name

    def test_every_container_requests_cpu_and_memory_and_caps_memory(
        self, objects: list[dict[str, Any]]
    ) -> None:
        for obj in pod_objects(objects):
            for c in containers(pod_spec(obj)):
                res = c.get("resources", {})
                name = f"{obj['metadata']['name']}/{c['name']}"
                assert {"cpu", "memory"} <= set(res.get("requests", {})), name
                assert "memory" in res.get("limits", {}), name

    def test_the_stack_leaves_room_for_steps_on_a_2_cpu_node(self) -> None:
        """Long-running pods + the biggest pipeline step (train: 1 CPU) + DNS fit in 2 CPUs."""
        import sys
        from pathlib import Path

        sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "dags"))
        import mlship_dagspec

        total_cpu = total_mem = 0.0
        for obj in render_chart():
            if obj["kind"] in ("Deployment", "StatefulSet"):
                for c in pod_spec(obj)["containers"]:
                    total_cpu += cpu(c["resources"]["requests"]["cpu"])
                    total_mem += mebibytes(c["resources"]["requests"]["memory"])
        train = mlship_dagspec.DEFAULT_RESOURCES["train"]["requests"]
        dns = 0.1  # CoreDNS' usual request
        assert total_cpu + cpu(train["cpu"]) + dns <= 1.9, f"stack requests {total_cpu} CPU"
        assert total_mem <= 3 * 1024, f"stack requests {total_mem} MiB"


def cpu(q: str) -> float:
    return float(q[:-1]) / 1000 if q.endswith("m") else float(q)


def mebibytes(q: str) -> float:
    units = {"Ki": 1 / 1024, "Mi": 1, "Gi": 1024}
    m = re.fullmatch(r"([0-9.]+)(Ki|Mi|Gi)", q)
    assert m, q
    return float(m.group(1)) * units[m.group(2)]


class TestLabels:
    def test_standard_labels_on_every_object(self, objects: list[dict[str, Any]]) -> None:
        for obj in objects:
            labels = obj["metadata"]["labels"]
            name = f"{obj['kind']}/{obj['metadata']['name']}"
            assert labels["app.kubernetes.io/name"] == "mlship", name
            assert labels["app.kubernetes.io/instance"] == "mlship", name
            assert labels["app.kubernetes.io/managed-by"] == "Helm", name
            assert labels["app.kubernetes.io/version"] == "0.1.0", name
            assert labels["app.kubernetes.io/part-of"] == "mlship", name
            assert labels["app.kubernetes.io/component"], name
            assert labels["helm.sh/chart"] == "mlship-0.1.0", name
            assert len(obj["metadata"]["name"]) <= 63, name

    def test_selectors_use_name_instance_component_and_match_the_pods(
        self, objects: list[dict[str, Any]]
    ) -> None:
        for obj in objects:
            if obj["kind"] in ("Deployment", "StatefulSet"):
                selector = obj["spec"]["selector"]["matchLabels"]
                assert set(selector) == {
                    "app.kubernetes.io/name",
                    "app.kubernetes.io/instance",
                    "app.kubernetes.io/component",
                }
                assert selector.items() <= obj["spec"]["template"]["metadata"]["labels"].items()
            if obj["kind"] == "Service":
                selected = [
                    o
                    for o in objects
                    if o["kind"] in ("Deployment", "StatefulSet")
                    and obj["spec"]["selector"].items() <= o["spec"]["template"]["metadata"]["labels"].items()
                ]
                assert len(selected) == 1, obj["metadata"]["name"]

    def test_names_follow_the_release(self) -> None:
        names = {
            o["metadata"]["name"] for o in render_chart(None, "templates/mlflow/service.yaml", name="prod")
        }
        assert names == {"prod-mlship-mlflow"}
        names = {
            o["metadata"]["name"]
            for o in render_chart(None, "templates/mlflow/service.yaml", name="mlship-prod")
        }
        assert names == {"mlship-prod-mlflow"}
        names = {
            o["metadata"]["name"]
            for o in render_chart({"fullnameOverride": "ml"}, "templates/mlflow/service.yaml")
        }
        assert names == {"ml-mlflow"}


def values_comments() -> dict[str, str]:
    """dotted key -> the comment lines directly above it in values.yaml."""
    comments: dict[str, str] = {}
    stack: list[str] = []
    pending: list[str] = []
    for line in (CHART / "values.yaml").read_text().splitlines():
        if not line.strip():
            pending = []
        elif m := re.match(r"^\s*# ?(.*)$", line):
            pending.append(m.group(1))
        elif m := re.match(r"^(\s*)([A-Za-z0-9_]+):", line):
            stack = stack[: len(m.group(1)) // 2] + [m.group(2)]
            comments[".".join(stack)] = " ".join(pending)
            pending = []
    return comments


def value_paths(value: Any, prefix: str = "") -> list[str]:
    """Dotted paths of values.yaml keys; Kubernetes-typed values (resources) count as one key."""
    paths = []
    for key, sub in value.items():
        path = f"{prefix}{key}"
        paths.append(path)
        if isinstance(sub, dict) and key != "resources":
            paths += value_paths(sub, path + ".")
    return paths


class TestValuesAndSchema:
    def schema(self) -> dict[str, Any]:
        return json.loads((CHART / "values.schema.json").read_text())

    def test_every_key_has_a_comment(self) -> None:
        comments = values_comments()
        missing = [p for p in value_paths(values_yaml()) if not comments.get(p)]
        assert not missing, f"values.yaml keys without a comment: {missing}"

    def test_the_schema_describes_every_key_with_its_default(self) -> None:
        schema = self.schema()
        values = values_yaml()
        for path in value_paths(values):
            node: dict[str, Any] = schema
            value: Any = values
            for part in path.split("."):
                assert part in node.get("properties", {}), f"{path} is not in values.schema.json"
                node, value = node["properties"][part], value[part]
            assert node.get("description"), f"{path} has no description in the schema"
            assert node.get("default") == value, (
                f"{path}: schema default {node.get('default')!r} != {value!r}"
            )

    def test_objects_reject_unknown_keys(self) -> None:
        def walk(node: dict[str, Any], path: str) -> None:
            if node.get("type") == "object" and "properties" in node:
                assert node.get("additionalProperties") is False, f"{path or 'root'} accepts unknown keys"
                for key, sub in node["properties"].items():
                    walk(sub, f"{path}.{key}".strip("."))

        walk(self.schema(), "")

    def test_the_defaults_pass_the_schema(self) -> None:
        import jsonschema

        jsonschema.validate(values_yaml(), self.schema())

    @pytest.mark.parametrize(
        ("values", "complaint"),
        [
            ({"images": {"pullPolicy": "Sometimes"}}, "pullPolicy"),
            ({"mlflow": {"workers": 0}}, "workers"),
            ({"operator": {"watchNamespaces": ["Not_A_Namespace"]}}, "watchNamespaces"),
            ({"airflow": {"scheduler": {"resources": {"requests": {"gpu": []}}}}}, "resources"),
            ({"pipeline": {"images": {"train": {"repository": "x y"}}}}, "repository"),
            ({"postgresql": {"persistence": {"size": "lots"}}}, "size"),
            ({"mlflow": {"extras": True}}, "extras"),
        ],
    )
    def test_bad_values_are_rejected_naming_the_key(self, values: dict[str, Any], complaint: str) -> None:
        from chart_helpers import render_error

        assert complaint in render_error(values)


def helm(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(["helm", *args], capture_output=True, text=True, timeout=120, check=False)


class TestLint:
    @pytest.mark.parametrize("variant", sorted(VARIANTS))
    def test_helm_lint_strict(self, variant: str, tmp_path: Any) -> None:
        values = tmp_path / "values.json"
        values.write_text(json.dumps(VARIANTS[variant]))
        proc = helm("lint", "--strict", "--kube-version", KUBE_VERSION, str(CHART), "-f", str(values))
        assert proc.returncode == 0, proc.stdout + proc.stderr
        assert "[WARNING]" not in proc.stdout and "[ERROR]" not in proc.stdout, proc.stdout


class TestNotes:
    def notes(self, values: dict[str, Any], tmp_path: Any) -> str:
        path = tmp_path / "values.json"
        path.write_text(json.dumps(values))
        proc = helm("install", "mlship", str(CHART), "--dry-run=client", "--namespace", "ml", "-f", str(path))
        if "Kubernetes cluster unreachable" in proc.stderr:
            # helm 3 checks the cluster even for a client-only dry run (helm/helm#13144)
            require_or_skip("rendering NOTES.txt needs a reachable cluster with helm 3 (helm/helm#13144)",
                            "chart")
        assert proc.returncode == 0, proc.stderr
        return proc.stdout.split("NOTES:", 1)[1]

    def test_port_forwards_and_password(self, tmp_path: Any) -> None:
        notes = self.notes({}, tmp_path)
        assert "kubectl -n ml port-forward svc/mlship-airflow-api-server 8080:8080" in notes
        assert "kubectl -n ml port-forward svc/mlship-mlflow 5000:5000" in notes
        assert "kubectl -n ml port-forward svc/iris 8081:80" in notes
        assert "get secret mlship-airflow -o jsonpath='{.data.admin-password}' | base64 -d" in notes

    def test_no_serving_section_without_the_operator(self, tmp_path: Any) -> None:
        notes = self.notes({"operator": {"enabled": False}}, tmp_path)
        assert "ModelDeployment" not in notes

    def test_the_serving_example_goes_where_the_operator_looks(self, tmp_path: Any) -> None:
        notes = self.notes({"operator": {"watchNamespaces": ["models"]}}, tmp_path)
        assert "namespace: models" in notes
        assert "kubectl -n models port-forward svc/iris 8081:80" in notes

    def test_impossible_values_fail_the_install(self, tmp_path: Any) -> None:
        path = tmp_path / "values.json"
        path.write_text(json.dumps({"postgresql": {"enabled": False}}))
        proc = helm("template", "mlship", str(CHART), "-f", str(path))
        assert proc.returncode != 0
        assert "externalDatabase.host is required" in proc.stderr


def test_crd_is_shipped_in_crds() -> None:
    """Helm installs crds/ before the templates; the operator's CRD must be there."""
    import yaml

    crd = yaml.safe_load((CHART / "crds" / "modeldeployments.mlship.io.yaml").read_text())
    assert crd["metadata"]["name"] == "modeldeployments.mlship.io"
    assert one(render_chart(), "ClusterRole")["rules"][0]["apiGroups"] == ["mlship.io"]
