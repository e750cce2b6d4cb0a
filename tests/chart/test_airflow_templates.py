"""Render tests of charts/mlship/templates/airflow/*: one class per template."""

from __future__ import annotations

import base64
import configparser
import json

import pytest
from chart_helpers import env, one, pod_spec, render_chart, requires_helm

pytestmark = [pytest.mark.chart, requires_helm]

T = "templates/airflow/"


def airflow_cfg(values: dict | None = None) -> configparser.ConfigParser:
    cm = one(render_chart(values, T + "configmap.yaml"), "ConfigMap")
    cfg = configparser.ConfigParser(interpolation=None)
    cfg.read_string(cm["data"]["airflow.cfg"])
    return cfg


class TestConfigMap:
    def test_defaults(self) -> None:
        cfg = airflow_cfg()
        assert cfg["core"]["executor"] == "LocalExecutor"
        assert cfg["core"]["parallelism"] == "4"
        assert cfg["core"]["load_examples"] == "False"
        assert cfg["core"]["dags_are_paused_at_creation"] == "True"
        # production's auth manager, not the development one (SimpleAuthManager)
        fab = "airflow.providers.fab.auth_manager.fab_auth_manager.FabAuthManager"
        assert cfg["core"]["auth_manager"] == fab
        assert not any(k.startswith("simple_auth_manager") for k in cfg["core"])
        # Task processes report to the API server by its in-cluster name.
        assert cfg["core"]["execution_api_server_url"] == (
            "http://mlship-airflow-api-server.mlship.svc.cluster.local:8080/execution/"
        )
        # Task logs are fetched from <pod IP>:8793, the scheduler's log server.
        assert cfg["core"]["hostname_callable"] == "airflow.utils.net.get_host_ip_address"
        assert cfg["logging"]["worker_log_server_port"] == "8793"
        assert cfg["scheduler"]["enable_health_check"] == "True"
        # DAG files are baked into the image: no re-parse every 30 s
        assert cfg["dag_processor"]["min_file_process_interval"] == "300"

    def test_options(self) -> None:
        cfg = airflow_cfg(
            {
                "airflow": {
                    "parallelism": 8,
                    "dagsArePausedAtCreation": False,
                    "apiServer": {"workers": 2, "service": {"port": 9090}},
                },
                "clusterDomain": "k8s.example",
            }
        )
        assert cfg["core"]["parallelism"] == "8"
        assert cfg["core"]["dags_are_paused_at_creation"] == "False"
        assert cfg["api"]["workers"] == "2"
        assert cfg["core"]["execution_api_server_url"] == (
            "http://mlship-airflow-api-server.mlship.svc.k8s.example:9090/execution/"
        )

    def test_extra_config_wins_over_the_charts(self) -> None:
        cfg = airflow_cfg(
            {
                "airflow": {
                    "config": {
                        "core": {"parallelism": 16},
                        "logging": {"logging_level": "DEBUG"},
                        "smtp": {"smtp_port": 25},
                    }
                }
            }
        )
        assert cfg["core"]["parallelism"] == "16"
        assert cfg["core"]["executor"] == "LocalExecutor"  # untouched chart settings stay
        assert cfg["logging"]["logging_level"] == "DEBUG"
        assert cfg["smtp"]["smtp_port"] == "25"

    def test_only_local_executor_is_accepted(self) -> None:
        from chart_helpers import render_error

        assert "LocalExecutor" in render_error({"airflow": {"executor": "KubernetesExecutor"}})


class TestSecret:
    def secret(self, values: dict | None = None) -> dict[str, str]:
        obj = one(render_chart(values, T + "secret.yaml"), "Secret", "mlship-airflow")
        # kept on uninstall: the database it unlocks outlives the release
        assert obj["metadata"]["annotations"]["helm.sh/resource-policy"] == "keep"
        return {k: base64.b64decode(v).decode() for k, v in obj["data"].items()}

    def test_generated_by_default(self) -> None:
        data = self.secret()
        assert set(data) == {"fernet-key", "api-secret-key", "jwt-secret", "admin-password"}
        # a valid Fernet key: urlsafe base64 of 32 bytes
        assert len(base64.urlsafe_b64decode(data["fernet-key"])) == 32
        assert len(data["admin-password"]) == 20
        assert len(data["api-secret-key"]) == len(data["jwt-secret"]) == 32
        assert len(set(data.values())) == 4

    def test_explicit_values_are_used(self) -> None:
        key = base64.urlsafe_b64encode(b"k" * 32).decode()
        data = self.secret(
            {
                "airflow": {
                    "admin": {"password": "s3cret"},
                    "secrets": {"fernetKey": key, "apiSecretKey": "api", "jwtSecret": "jwt"},
                }
            }
        )
        assert data == {
            "fernet-key": key,
            "api-secret-key": "api",
            "jwt-secret": "jwt",
            "admin-password": "s3cret",
        }

    def test_a_malformed_fernet_key_is_rejected(self) -> None:
        from chart_helpers import render_error

        assert "fernetKey" in render_error({"airflow": {"secrets": {"fernetKey": "short"}}})


class TestServiceAccount:
    def test_no_token_unless_a_pod_asks(self) -> None:
        sa = one(render_chart(None, T + "serviceaccount.yaml"), "ServiceAccount")
        assert sa["metadata"]["name"] == "mlship-airflow"
        assert sa["automountServiceAccountToken"] is False


class TestRole:
    def test_pods_in_its_own_namespace_only(self) -> None:
        role = one(render_chart(None, T + "role.yaml"), "Role")
        assert role["metadata"]["namespace"] == "mlship"
        rules = {(tuple(r["apiGroups"]), tuple(r["resources"])): set(r["verbs"]) for r in role["rules"]}
        assert rules == {
            (("",), ("pods",)): {"create", "get", "list", "watch", "patch", "delete"},
            (("",), ("pods/log",)): {"get"},
            (("",), ("pods/exec",)): {"create", "get"},
            (("",), ("events",)): {"list"},
        }

    def test_no_cluster_wide_rights_for_airflow(self) -> None:
        objects = render_chart()
        cluster_bindings = [o for o in objects if o["kind"] == "ClusterRoleBinding"]
        assert not any(s["name"] == "mlship-airflow" for b in cluster_bindings for s in b["subjects"])


class TestRoleBinding:
    def test_binds_the_role_to_the_airflow_service_account(self) -> None:
        rb = one(render_chart(None, T + "rolebinding.yaml"), "RoleBinding")
        assert rb["roleRef"] == {
            "apiGroup": "rbac.authorization.k8s.io",
            "kind": "Role",
            "name": "mlship-airflow-pod-launcher",
        }
        assert rb["subjects"] == [{"kind": "ServiceAccount", "name": "mlship-airflow", "namespace": "mlship"}]


class TestMigrateJob:
    def test_a_plain_job_not_a_hook(self) -> None:
        job = one(render_chart(None, T + "migrate-job.yaml"), "Job")
        # a hook would deadlock `helm install --wait`
        assert "helm.sh/hook" not in job["metadata"].get("annotations", {})
        # one per revision: a Job's template is immutable, so an upgrade makes a new one
        assert job["metadata"]["name"] == "mlship-airflow-migrate-1"
        (c,) = pod_spec(job)["containers"]
        assert c["command"] == ["sh", "-c"]
        script = c["args"][0]
        assert script.startswith("airflow db check --retry")
        assert "&& airflow db migrate &&" in script
        assert job["spec"]["backoffLimit"] == 6

    def test_it_creates_the_admin_with_the_secrets_password(self) -> None:
        job = one(render_chart({"airflow": {"admin": {"username": "ops"}}}, T + "migrate-job.yaml"), "Job")
        (c,) = pod_spec(job)["containers"]
        script = c["args"][0]
        # after the schema exists; a user that exists already gets the Secret's password again
        assert script.index("airflow db migrate") < script.index("airflow users create --role Admin")
        assert script.endswith(
            'exec airflow users reset-password --username "$ADMIN_USERNAME" --password "$ADMIN_PASSWORD"')
        e = env(c)
        assert e["ADMIN_USERNAME"] == "ops"
        assert e["ADMIN_PASSWORD"] == {"secretKeyRef": {"name": "mlship-airflow", "key": "admin-password"}}

    def test_backoff_and_resources(self) -> None:
        job = one(
            render_chart(
                {"airflow": {"migrateJob": {"backoffLimit": 2, "resources": {"requests": {"cpu": "10m"}}}}},
                T + "migrate-job.yaml",
            ),
            "Job",
        )
        assert job["spec"]["backoffLimit"] == 2
        # values merge into the defaults (helm semantics)
        assert pod_spec(job)["containers"][0]["resources"] == {
            "requests": {"cpu": "10m", "memory": "256Mi"},
            "limits": {"memory": "768Mi"},
        }


def deployment(template: str, values: dict | None = None) -> dict:
    return one(render_chart(values, T + template), "Deployment")


def main_container(obj: dict) -> dict:
    return pod_spec(obj)["containers"][0]


class TestAirflowEnvironment:
    """What every Airflow container gets: secrets, the DB URL and the DAG's MLSHIP_* settings."""

    def test_secrets_and_database(self) -> None:
        e = env(main_container(deployment("scheduler-deployment.yaml")))
        assert e["MLSHIP_DB_PASSWORD"] == {
            "secretKeyRef": {"name": "mlship-postgresql", "key": "airflow-password"}
        }
        # $(MLSHIP_DB_PASSWORD) is expanded by the kubelet: the password is never in the spec
        assert e["AIRFLOW__DATABASE__SQL_ALCHEMY_CONN"] == (
            "postgresql+psycopg2://airflow:$(MLSHIP_DB_PASSWORD)"
            "@mlship-postgresql.mlship.svc.cluster.local:5432/airflow"
        )
        for var, key in [
            ("AIRFLOW__CORE__FERNET_KEY", "fernet-key"),
            ("AIRFLOW__API__SECRET_KEY", "api-secret-key"),
            ("AIRFLOW__API_AUTH__JWT_SECRET", "jwt-secret"),
        ]:
            assert e[var] == {"secretKeyRef": {"name": "mlship-airflow", "key": key}}
        conn = json.loads(e["AIRFLOW_CONN_KUBERNETES_DEFAULT"])
        assert conn == {
            "conn_type": "kubernetes",
            "extra": {
                "in_cluster": True,
                "namespace": "mlship",
                "xcom_sidecar_container_image": "python:3.11-slim-bookworm",
            },
        }

    def test_pipeline_settings_default(self) -> None:
        e = env(main_container(deployment("dag-processor-deployment.yaml")))
        for step in ("ingest", "validate", "featurize", "train", "evaluate", "register", "drift"):
            assert e[f"MLSHIP_IMAGE_{step.upper()}"] == f"mlship-step-{step}:dev"
        assert e["MLSHIP_NAMESPACE"] == "mlship"
        assert (e["MLSHIP_DRIFT_SCHEDULE"], e["MLSHIP_DRIFT_ALIAS"]) == ("@hourly", "champion")
        assert (e["MLSHIP_DRIFT_WINDOW_MINUTES"], e["MLSHIP_DRIFT_MIN_ROWS"]) == ("60", "100")
        assert e["MLSHIP_DRIFT_THRESHOLD"] == "0.5"
        assert e["MLSHIP_INFERENCE_LOG_EXPERIMENT"] == "mlship-inference"
        assert e["MLSHIP_DRIFT_EXPERIMENT"] == "mlship-drift"
        assert e["MLSHIP_MLFLOW_TRACKING_URI"] == "http://mlship-mlflow.mlship.svc.cluster.local:5000"
        assert e["MLSHIP_SCHEDULE"] == "@daily"
        assert e["MLSHIP_IMAGE_PULL_POLICY"] == "IfNotPresent"
        assert "MLSHIP_STEP_RESOURCES" not in e

    def test_pipeline_settings_from_values(self) -> None:
        e = env(
            main_container(
                deployment(
                    "scheduler-deployment.yaml",
                    {
                        "images": {
                            "registry": "ghcr.io/acme/",
                            "tag": "1.2.3",
                            "pullPolicy": "Always",
                            "pullSecrets": ["regcred"],
                        },
                        "pipeline": {
                            "images": {"train": {"repository": "custom-train", "tag": "gpu"}},
                            "schedule": "none",
                            "experiment": "exp",
                            "retries": 0,
                            "retryDelaySeconds": 5,
                            "podStartupTimeoutSeconds": 120,
                            "defaultDataset": "sklearn:wine",
                            "defaultModelName": "wine",
                            "serviceAccountName": "steps",
                            "stepResources": {"train": {"requests": {"cpu": "500m"}}},
                            "xcomSidecarImage": "alpine:3.20",
                        },
                        "drift": {"schedule": "none", "threshold": 0.3, "minRows": 20},
                    },
                )
            )
        )
        assert e["MLSHIP_IMAGE_TRAIN"] == "ghcr.io/acme/custom-train:gpu"
        assert e["MLSHIP_IMAGE_INGEST"] == "ghcr.io/acme/mlship-step-ingest:1.2.3"
        assert e["MLSHIP_IMAGE_PULL_POLICY"] == "Always"
        assert e["MLSHIP_IMAGE_PULL_SECRETS"] == "regcred"
        assert e["MLSHIP_SCHEDULE"] == "none"
        assert e["MLSHIP_EXPERIMENT"] == "exp"
        assert e["MLSHIP_TASK_RETRIES"] == "0"
        assert e["MLSHIP_RETRY_DELAY_SECONDS"] == "5"
        assert e["MLSHIP_POD_STARTUP_TIMEOUT_SECONDS"] == "120"
        assert e["MLSHIP_DEFAULT_DATASET"] == "sklearn:wine"
        assert e["MLSHIP_DEFAULT_MODEL_NAME"] == "wine"
        assert e["MLSHIP_SERVICE_ACCOUNT"] == "steps"
        assert json.loads(e["MLSHIP_STEP_RESOURCES"]) == {"train": {"requests": {"cpu": "500m"}}}
        assert e["MLSHIP_IMAGE_DRIFT"] == "ghcr.io/acme/mlship-step-drift:1.2.3"
        assert (e["MLSHIP_DRIFT_SCHEDULE"], e["MLSHIP_DRIFT_THRESHOLD"]) == ("none", "0.3")
        assert (e["MLSHIP_DRIFT_MIN_ROWS"], e["MLSHIP_DRIFT_ALIAS"]) == ("20", "champion")
        assert (
            json.loads(e["AIRFLOW_CONN_KUBERNETES_DEFAULT"])["extra"]["xcom_sidecar_container_image"]
            == "alpine:3.20"
        )

    def test_the_source_headers_secret_is_named_not_read(self) -> None:
        """Airflow gets the Secret's name and key only; the ingest pod reads the Secret itself."""
        e = env(main_container(deployment("scheduler-deployment.yaml")))
        assert (e["MLSHIP_SOURCE_HEADERS_SECRET"], e["MLSHIP_SOURCE_HEADERS_SECRET_KEY"]) == (
            "", "headers.json")
        values = {"pipeline": {"sourceHeadersSecret": "api-headers", "sourceHeadersSecretKey": "keys.json"}}
        for template in ("scheduler-deployment.yaml", "dag-processor-deployment.yaml"):
            e = env(main_container(deployment(template, values)))
            assert (e["MLSHIP_SOURCE_HEADERS_SECRET"], e["MLSHIP_SOURCE_HEADERS_SECRET_KEY"]) == (
                "api-headers", "keys.json"), template
            assert "MLSHIP_SOURCE_HEADERS" not in e, template

    def test_the_source_credentials_secret_is_named_not_read(self) -> None:
        """Airflow gets the credentials Secret's name only (none: ""); the source pods' envFrom
        reads the Secret itself."""
        for values in ({}, {"pipeline": {"sourceCredentialsSecret": ""}}):
            e = env(main_container(deployment("scheduler-deployment.yaml", values)))
            assert e["MLSHIP_SOURCE_CREDENTIALS_SECRET"] == "", values
        values = {"pipeline": {"sourceCredentialsSecret": "cloud-creds"}}
        for template in ("scheduler-deployment.yaml", "dag-processor-deployment.yaml"):
            container = main_container(deployment(template, values))
            assert env(container)["MLSHIP_SOURCE_CREDENTIALS_SECRET"] == "cloud-creds", template  # noqa: S105 - a name
            assert not container.get("envFrom"), template  # Airflow itself never reads it

    def test_the_alert_webhook_is_kept_in_a_secret_that_airflow_only_names(self) -> None:
        """The URL (a chat webhook's is a credential) is in a Secret the register and drift pods
        read; Airflow gets its name and key. No URL, no Secret."""
        assert render_chart({}, T + "alerts-secret.yaml") == []
        e = env(main_container(deployment("scheduler-deployment.yaml")))
        assert (e["MLSHIP_ALERT_WEBHOOK_SECRET"], e["MLSHIP_MLFLOW_UI_URL"], e["MLSHIP_AIRFLOW_UI_URL"]) == (
            "", "", "")
        url = "https://hooks.example.com/services/T0/B0/s3cr3t"
        values = {"alerts": {"webhookUrl": url, "mlflowUrl": "https://mlflow.example.com",
                             "airflowUrl": "https://airflow.example.com"}}  # fmt: skip
        [secret] = render_chart(values, T + "alerts-secret.yaml")
        assert (secret["metadata"]["name"], secret["stringData"]) == ("mlship-alerts", {"url": url})
        for template in ("scheduler-deployment.yaml", "dag-processor-deployment.yaml"):
            e = env(main_container(deployment(template, values)))
            assert (e["MLSHIP_ALERT_WEBHOOK_SECRET"], e["MLSHIP_ALERT_WEBHOOK_SECRET_KEY"]) == (
                "mlship-alerts", "url"), template
            assert e["MLSHIP_AIRFLOW_UI_URL"] == "https://airflow.example.com", template
            assert url not in json.dumps(e), template
        values = {"alerts": {"webhookUrl": url, "existingSecret": "team-hook", "existingSecretKey": "hook"}}
        assert render_chart(values, T + "alerts-secret.yaml") == []  # theirs, not ours
        e = env(main_container(deployment("scheduler-deployment.yaml", values)))
        assert (e["MLSHIP_ALERT_WEBHOOK_SECRET"], e["MLSHIP_ALERT_WEBHOOK_SECRET_KEY"]) == (
            "team-hook", "hook")

    @pytest.mark.parametrize(
        "alerts",
        [{"webhookUrl": "hooks.example.com/x"}, {"existingSecret": "Team_Hook"},
         {"existingSecretKey": "a/b"}, {"airflowUrl": "airflow:8080"}],
    )
    def test_a_bad_alerts_value_is_refused(self, alerts: dict) -> None:
        from chart_helpers import render_error

        assert next(iter(alerts)) in render_error({"alerts": alerts})

    @pytest.mark.parametrize(
        "pipeline",
        [{"sourceHeadersSecret": "Api_Headers"}, {"sourceHeadersSecretKey": "a/b"},
         {"sourceHeadersSecretKey": ""}, {"sourceCredentialsSecret": "Cloud_Creds"}],
    )
    def test_a_bad_source_headers_secret_is_refused(self, pipeline: dict) -> None:
        from chart_helpers import render_error

        assert next(iter(pipeline)) in render_error({"pipeline": pipeline})

    def test_the_dag_settings_match_what_the_dag_reads(self) -> None:
        """Every MLSHIP_* variable the chart sets is one dags/mlship_dagspec.py reads."""
        import re
        from pathlib import Path

        spec = (Path(__file__).resolve().parents[2] / "dags" / "mlship_dagspec.py").read_text()
        read = set(re.findall(r'"(MLSHIP_[A-Z_]+)"', spec)) | {
            f"MLSHIP_IMAGE_{s.upper()}"
            for s in ("ingest", "validate", "featurize", "train", "evaluate", "register", "drift", "score")
        }
        e = env(
            main_container(
                deployment(
                    "scheduler-deployment.yaml",
                    {"pipeline": {"stepResources": {"train": {"requests": {"cpu": "1"}}}}},
                )
            )
        )
        set_by_chart = {k for k in e if k.startswith("MLSHIP_") and k != "MLSHIP_DB_PASSWORD"}
        assert set_by_chart <= read, f"not read by the DAG: {set_by_chart - read}"

    def test_config_changes_roll_the_pods(self) -> None:
        a = deployment("scheduler-deployment.yaml")
        b = deployment("scheduler-deployment.yaml", {"airflow": {"config": {"core": {"x": 1}}}})
        key = "checksum/config"
        assert (
            a["spec"]["template"]["metadata"]["annotations"][key]
            != b["spec"]["template"]["metadata"]["annotations"][key]
        )

    def test_every_component_waits_for_the_migration(self) -> None:
        for template in (
            "api-server-deployment.yaml",
            "scheduler-deployment.yaml",
            "dag-processor-deployment.yaml",
            "triggerer-deployment.yaml",
        ):
            init = pod_spec(deployment(template))["initContainers"][0]
            assert init["name"] == "wait-for-migrations", template
            assert "airflow db check-migrations" in init["args"][0], template


class TestApiServerDeployment:
    def test_defaults(self) -> None:
        d = deployment("api-server-deployment.yaml")
        spec = pod_spec(d)
        c = main_container(d)
        assert c["args"] == ["api-server"]
        assert spec["automountServiceAccountToken"] is False
        assert c["readinessProbe"]["httpGet"] == {"path": "/api/v2/version", "port": "http"}
        assert c["resources"] == {"requests": {"cpu": "100m", "memory": "256Mi"}, "limits": {"memory": "1Gi"}}
        mounts = {m["mountPath"] for m in c["volumeMounts"]}
        assert {"/opt/airflow/airflow.cfg", "/opt/airflow/logs", "/tmp"} <= mounts

    def test_resources(self) -> None:
        res = {"requests": {"cpu": "1", "memory": "1Gi"}, "limits": {"memory": "3Gi"}}
        d = deployment("api-server-deployment.yaml", {"airflow": {"apiServer": {"resources": res}}})
        assert all(c["resources"] == res for c in pod_spec(d)["containers"] + pod_spec(d)["initContainers"])


class TestApiServerService:
    def test_defaults_and_options(self) -> None:
        svc = one(render_chart(None, T + "api-server-service.yaml"), "Service")
        assert svc["spec"]["type"] == "ClusterIP"
        assert svc["spec"]["ports"] == [
            {"name": "http", "port": 8080, "targetPort": "http", "protocol": "TCP"}
        ]
        svc = one(
            render_chart(
                {"airflow": {"apiServer": {"service": {"type": "NodePort", "port": 80}}}},
                T + "api-server-service.yaml",
            ),
            "Service",
        )
        assert svc["spec"]["type"] == "NodePort"
        assert svc["spec"]["ports"][0]["port"] == 80


class TestSchedulerDeployment:
    def test_defaults(self) -> None:
        d = deployment("scheduler-deployment.yaml")
        spec = pod_spec(d)
        c = main_container(d)
        assert c["args"] == ["scheduler"]
        assert d["spec"]["strategy"] == {"type": "Recreate"}
        # its task processes create the step pods: it alone (with the triggerer) mounts a token
        assert spec["serviceAccountName"] == "mlship-airflow"
        assert spec["automountServiceAccountToken"] is True
        ports = {p["name"]: p["containerPort"] for p in c["ports"]}
        assert ports == {"task-logs": 8793, "health": 8974}
        assert c["livenessProbe"]["httpGet"] == {"path": "/health", "port": "health"}
        assert c["resources"]["limits"] == {"memory": "2Gi"}


class TestDagProcessorDeployment:
    def test_defaults(self) -> None:
        d = deployment("dag-processor-deployment.yaml")
        c = main_container(d)
        assert c["args"] == ["dag-processor"]
        assert pod_spec(d)["automountServiceAccountToken"] is False
        assert c["livenessProbe"]["exec"]["command"] == [
            "airflow",
            "jobs",
            "check",
            "--job-type",
            "DagProcessorJob",
            "--local",
        ]
        assert c["startupProbe"]["exec"] == c["livenessProbe"]["exec"]


class TestTriggererDeployment:
    def test_defaults(self) -> None:
        c = main_container(deployment("triggerer-deployment.yaml"))
        assert c["args"] == ["triggerer"]
        assert c["livenessProbe"]["exec"]["command"][-3:] == ["--job-type", "TriggererJob", "--local"][-3:]

    def test_not_rendered_unless_enabled(self) -> None:
        assert (
            render_chart({"airflow": {"triggerer": {"enabled": False}}}, T + "triggerer-deployment.yaml")
            == []
        )


class TestStepPods:
    """The step pods' ServiceAccount and the admission policy that keeps Airflow to step pods (the
    security tier proves the policy on a real API server)."""

    def policy(self, values: dict | None = None) -> tuple[dict, dict]:
        objs = render_chart(values, T + "pod-launcher-policy.yaml")
        return one(objs, "ValidatingAdmissionPolicy"), one(objs, "ValidatingAdmissionPolicyBinding")

    @staticmethod
    def variables(policy: dict) -> dict[str, str]:
        return {v["name"]: v["expression"] for v in policy["spec"]["variables"]}

    def test_by_default_steps_run_as_their_own_account_without_a_token(self) -> None:
        sa = one(render_chart(None, T + "steps-serviceaccount.yaml"), "ServiceAccount")
        assert sa["metadata"]["name"] == "mlship-steps"
        assert sa["automountServiceAccountToken"] is False
        e = env(main_container(deployment("scheduler-deployment.yaml")))
        assert e["MLSHIP_SERVICE_ACCOUNT"] == "mlship-steps"
        # nothing grants it anything
        bindings = [o for o in render_chart() if o["kind"] in ("RoleBinding", "ClusterRoleBinding")]
        assert all(s["name"] != "mlship-steps" for b in bindings for s in b["subjects"])

    def test_a_named_account_is_used_and_none_created(self) -> None:
        values = {"pipeline": {"serviceAccountName": "runner"}}
        assert render_chart(values, T + "steps-serviceaccount.yaml") == []
        assert self.variables(self.policy(values)[0])["steps"] == "'runner'"

    def test_the_policy_binds_airflows_account_in_the_release_namespace(self) -> None:
        policy, binding = self.policy()
        name = "mlship-mlship-airflow-pod-launcher"  # cluster-scoped: the namespace, then the release
        assert policy["metadata"]["name"] == binding["spec"]["policyName"] == name
        assert policy["spec"]["failurePolicy"] == "Fail"
        assert binding["spec"]["validationActions"] == ["Deny"]
        assert binding["spec"]["matchResources"]["namespaceSelector"]["matchLabels"] == {
            "kubernetes.io/metadata.name": "mlship"}
        [condition] = policy["spec"]["matchConditions"]
        assert "'system:serviceaccount:mlship:mlship-airflow'" in condition["expression"]
        rules = policy["spec"]["matchConstraints"]["resourceRules"]
        ops = {op: r["resources"] for r in rules for op in r["operations"]}
        assert ops["CREATE"] == ops["UPDATE"] == ops["DELETE"] == ["pods"]
        assert "pods/exec" in ops["CONNECT"]

    def test_only_the_sources_and_alerts_secrets_are_allowed(self) -> None:
        assert self.variables(self.policy()[0])["allowedSecrets"] == "[]"
        values = {"pipeline": {"sourceHeadersSecret": "hdr", "sourceCredentialsSecret": "creds"}}
        assert json.loads(self.variables(self.policy(values)[0])["allowedSecrets"]) == ["hdr", "creds"]
        values["alerts"] = {"webhookUrl": "https://hooks.example.com/x"}
        assert json.loads(self.variables(self.policy(values)[0])["allowedSecrets"]) == [
            "hdr", "creds", "mlship-alerts"]

    def test_it_can_be_turned_off(self) -> None:
        assert render_chart({"pipeline": {"restrictStepPods": False}}, T + "pod-launcher-policy.yaml") == []
