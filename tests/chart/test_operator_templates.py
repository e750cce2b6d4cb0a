"""Render tests of the operator's templates and of the `helm test` pods: one class per template."""

from __future__ import annotations

import pytest
from chart_helpers import env, one, pod_spec, render_chart, requires_helm

pytestmark = [pytest.mark.chart, requires_helm]

OP = "templates/operator/"
TESTS = "templates/tests/"
DISABLED = {"operator": {"enabled": False}}


class TestOperatorDeployment:
    def test_defaults(self) -> None:
        d = one(render_chart(None, OP + "deployment.yaml"), "Deployment")
        # kopf runs standalone: never two operators, not even during an upgrade
        assert d["spec"]["replicas"] == 1
        assert d["spec"]["strategy"] == {"type": "Recreate"}
        spec = pod_spec(d)
        assert spec["serviceAccountName"] == "mlship-operator"
        (c,) = spec["containers"]
        assert c["image"] == "mlship-operator:dev"
        e = env(c)
        assert e["MLFLOW_TRACKING_URI"] == "http://mlship-mlflow.mlship.svc.cluster.local:5000"
        assert e["MLSHIP_SERVING_IMAGE"] == "mlship-serving:dev"
        assert e["MLSHIP_WATCH_NAMESPACES"] == "mlship"
        assert e["MLSHIP_POLL_INTERVAL_SECONDS"] == "5"
        assert e["MLSHIP_ALLOWED_TRACKING_URIS"] == ""  # only the release's MLflow
        assert e["MLSHIP_LIVENESS_ENDPOINT"] == "http://0.0.0.0:8081/healthz"
        assert c["livenessProbe"]["httpGet"] == {"path": "/healthz", "port": "health"}

    def test_options(self) -> None:
        d = one(
            render_chart(
                {
                    "images": {"registry": "reg.example", "pullPolicy": "Never"},
                    "operator": {
                        "servingImage": {"repository": "srv", "tag": "v2"},
                        "watchNamespaces": ["a", "b"],
                        "pollIntervalSeconds": 30,
                        "progressDeadlineSeconds": 300,
                        "logLevel": "DEBUG",
                        "allowedTrackingUris": ["https://mlflow.team-a", "http://mlflow.b:5000"],
                    },
                    "clusterDomain": "corp.local",
                },
                OP + "deployment.yaml",
            ),
            "Deployment",
        )
        (c,) = pod_spec(d)["containers"]
        e = env(c)
        assert c["image"] == "reg.example/mlship-operator:dev"
        assert e["MLSHIP_SERVING_IMAGE"] == "reg.example/srv:v2"
        assert e["MLSHIP_IMAGE_PULL_POLICY"] == "Never"
        assert e["MLSHIP_WATCH_NAMESPACES"] == "a,b"
        assert e["MLSHIP_POLL_INTERVAL_SECONDS"] == "30"
        assert e["MLSHIP_PROGRESS_DEADLINE_SECONDS"] == "300"
        assert e["MLSHIP_LOG_LEVEL"] == "DEBUG"
        assert e["MLSHIP_ALLOWED_TRACKING_URIS"] == "https://mlflow.team-a,http://mlflow.b:5000"
        assert e["MLSHIP_CLUSTER_DOMAIN"] == "corp.local"
        assert e["MLFLOW_TRACKING_URI"] == "http://mlship-mlflow.mlship.svc.corp.local:5000"

    @pytest.mark.parametrize("uri", ["mlflow:5000", "ftp://mlflow", "http://a,http://b"])
    def test_an_allowed_tracking_uri_must_be_one_http_url(self, uri: str) -> None:
        from chart_helpers import render_error

        assert "allowedTrackingUris" in render_error({"operator": {"allowedTrackingUris": [uri]}})

    def test_all_namespaces(self) -> None:
        d = one(
            render_chart({"operator": {"watchAllNamespaces": True}}, OP + "deployment.yaml"), "Deployment"
        )
        assert env(pod_spec(d)["containers"][0])["MLSHIP_WATCH_NAMESPACES"] == ""

    def test_not_rendered_unless_enabled(self) -> None:
        objects = render_chart(DISABLED)
        assert not [
            o for o in objects if o["metadata"]["labels"]["app.kubernetes.io/component"] == "operator"
        ]
        assert not [o for o in objects if o["metadata"]["name"] == "mlship-test-operator"]


class TestOperatorRbac:
    def test_cluster_role_matches_the_manifest(self) -> None:
        """The chart grants exactly what manifests/operator-rbac.yaml (the reviewed minimum) grants."""
        from pathlib import Path

        import yaml

        manifest = Path(__file__).resolve().parents[2] / "manifests" / "operator-rbac.yaml"
        reviewed = one(list(yaml.safe_load_all(manifest.read_text())), "ClusterRole")
        role = one(render_chart(None, OP + "rbac.yaml"), "ClusterRole")
        assert role["rules"] == reviewed["rules"]
        assert role["metadata"]["name"] == "mlship-mlship-operator"  # namespace-prefixed: cluster-unique

    def test_bound_in_the_release_namespace_by_default(self) -> None:
        objects = render_chart(None, OP + "rbac.yaml")
        rb = one(objects, "RoleBinding")
        assert rb["metadata"]["namespace"] == "mlship"
        assert rb["roleRef"]["kind"] == "ClusterRole"
        assert rb["subjects"] == [
            {"kind": "ServiceAccount", "name": "mlship-operator", "namespace": "mlship"}
        ]
        assert not [o for o in objects if o["kind"] == "ClusterRoleBinding"]

    def test_one_binding_per_watched_namespace(self) -> None:
        objects = render_chart({"operator": {"watchNamespaces": ["models", "staging"]}}, OP + "rbac.yaml")
        bindings = [o for o in objects if o["kind"] == "RoleBinding"]
        assert sorted(b["metadata"]["namespace"] for b in bindings) == ["models", "staging"]

    def test_cluster_role_binding_for_all_namespaces(self) -> None:
        objects = render_chart({"operator": {"watchAllNamespaces": True}}, OP + "rbac.yaml")
        crb = one(objects, "ClusterRoleBinding")
        assert crb["subjects"][0]["name"] == "mlship-operator"
        assert not [o for o in objects if o["kind"] == "RoleBinding"]

    def test_all_and_a_list_exclude_each_other(self) -> None:
        from chart_helpers import render_error

        assert "exclude each other" in render_error(
            {"operator": {"watchAllNamespaces": True, "watchNamespaces": ["a"]}}
        )


class TestOperatorServiceAccount:
    def test_rendered(self) -> None:
        sa = one(render_chart(None, OP + "serviceaccount.yaml"), "ServiceAccount")
        assert sa["metadata"]["name"] == "mlship-operator"
        assert render_chart(DISABLED, OP + "serviceaccount.yaml") == []


class TestOperatorService:
    def test_exposes_the_health_endpoint(self) -> None:
        svc = one(render_chart(None, OP + "service.yaml"), "Service")
        assert svc["spec"]["ports"] == [
            {"name": "health", "port": 8081, "targetPort": "health", "protocol": "TCP"}
        ]
        assert render_chart(DISABLED, OP + "service.yaml") == []


def hook_pod(template: str, values: dict | None = None) -> dict:
    pod = one(render_chart(values, TESTS + template), "Pod")
    assert pod["metadata"]["annotations"]["helm.sh/hook"] == "test"
    assert pod["spec"]["restartPolicy"] == "Never"
    return pod


class TestHelmTestAirflow:
    def test_checks_health_login_and_dag(self) -> None:
        pod = hook_pod("test-airflow.yaml")
        (c,) = pod["spec"]["containers"]
        code = c["args"][0]
        assert "/api/v2/monitor/health" in code
        assert "/auth/token" in code
        assert "/api/v2/dags/mlship_training" in code
        e = env(c)
        assert e["AIRFLOW_URL"] == "http://mlship-airflow-api-server.mlship.svc.cluster.local:8080"
        assert e["TRIGGERER"] == "triggerer"
        assert e["ADMIN_PASSWORD"] == {"secretKeyRef": {"name": "mlship-airflow", "key": "admin-password"}}
        compile(code, "test-airflow", "exec")

    def test_no_triggerer_check_without_a_triggerer(self) -> None:
        pod = hook_pod("test-airflow.yaml", {"airflow": {"triggerer": {"enabled": False}}})
        assert env(pod["spec"]["containers"][0])["TRIGGERER"] == ""


class TestHelmTestMlflow:
    def test_checks_health_through_the_in_cluster_name(self) -> None:
        pod = hook_pod("test-mlflow.yaml")
        (c,) = pod["spec"]["containers"]
        assert c["image"] == "mlship-mlflow:dev"
        assert env(c)["MLFLOW_URL"] == "http://mlship-mlflow.mlship.svc.cluster.local:5000"
        compile(c["args"][0], "test-mlflow", "exec")


class TestHelmTestOperator:
    def test_checks_the_liveness_endpoint(self) -> None:
        pod = hook_pod("test-operator.yaml")
        (c,) = pod["spec"]["containers"]
        assert env(c)["OPERATOR_HEALTH_URL"] == "http://mlship-operator.mlship.svc.cluster.local:8081/healthz"
        compile(c["args"][0], "test-operator", "exec")

    def test_not_rendered_unless_the_operator_is(self) -> None:
        assert render_chart(DISABLED, TESTS + "test-operator.yaml") == []
