"""Render tests of the PostgreSQL and MLflow templates: one class per template."""

from __future__ import annotations

import base64

import pytest
from chart_helpers import containers, env, one, pod_spec, render_chart, render_error, requires_helm

pytestmark = [pytest.mark.chart, requires_helm]

PG = "templates/postgresql/"
ML = "templates/mlflow/"
EXTERNAL = {
    "postgresql": {"enabled": False},
    "externalDatabase": {
        "host": "db.example",
        "port": 6432,
        "sslmode": "require",
        "airflow": {"database": "af", "username": "af_user", "password": "pw1"},
        "mlflow": {"database": "ml", "username": "ml_user", "password": "pw2"},
    },
}


class TestPostgresqlStatefulSet:
    def test_defaults(self) -> None:
        sts = one(render_chart(None, PG + "statefulset.yaml"), "StatefulSet")
        assert sts["spec"]["replicas"] == 1
        assert sts["spec"]["serviceName"] == "mlship-postgresql-headless"
        (c,) = pod_spec(sts)["containers"]
        assert c["image"] == "postgres:15-bookworm"
        e = env(c)
        assert e["POSTGRES_PASSWORD"] == {
            "secretKeyRef": {"name": "mlship-postgresql", "key": "postgres-password"}
        }
        assert e["PGDATA"] == "/var/lib/postgresql/data/pgdata"  # not the volume root (lost+found)
        assert c["readinessProbe"]["exec"]["command"][0] == "pg_isready"
        (claim,) = sts["spec"]["volumeClaimTemplates"]
        assert claim["spec"]["resources"]["requests"]["storage"] == "2Gi"
        assert "storageClassName" not in claim["spec"]
        mounts = {m["mountPath"] for m in c["volumeMounts"]}
        assert mounts == {
            "/var/lib/postgresql/data",
            "/docker-entrypoint-initdb.d",
            "/var/run/postgresql",
            "/tmp",
        }

    def test_options(self) -> None:
        sts = one(
            render_chart(
                {
                    "postgresql": {
                        "image": {
                            "repository": "registry.example/postgres",
                            "tag": "16",
                            "pullPolicy": "Always",
                        },
                        "persistence": {"size": "10Gi", "storageClass": "fast"},
                        "resources": {"requests": {"cpu": "1"}},
                    }
                },
                PG + "statefulset.yaml",
            ),
            "StatefulSet",
        )
        (c,) = pod_spec(sts)["containers"]
        assert c["image"] == "registry.example/postgres:16"
        assert c["imagePullPolicy"] == "Always"
        assert c["resources"]["requests"]["cpu"] == "1"
        claim = sts["spec"]["volumeClaimTemplates"][0]["spec"]
        assert claim["storageClassName"] == "fast"
        assert claim["resources"]["requests"]["storage"] == "10Gi"

    def test_not_rendered_with_an_external_database(self) -> None:
        objects = render_chart(EXTERNAL)
        assert not [o for o in objects if "postgresql" in o["metadata"]["name"]]


class TestPostgresqlSecret:
    def test_generated_passwords(self) -> None:
        secret = one(render_chart(None, PG + "secret.yaml"), "Secret")
        assert secret["metadata"]["name"] == "mlship-postgresql"
        assert secret["metadata"]["annotations"]["helm.sh/resource-policy"] == "keep"
        data = {k: base64.b64decode(v).decode() for k, v in secret["data"].items()}
        assert set(data) == {"postgres-password", "airflow-password", "mlflow-password"}
        # URL-safe: they are put into database URLs as they are
        assert all(len(p) == 32 and p.isalnum() for p in data.values())

    def test_external_database_passwords_from_values(self) -> None:
        secret = one(render_chart(EXTERNAL, PG + "secret.yaml"), "Secret")
        assert secret["metadata"]["name"] == "mlship-external-database"
        data = {k: base64.b64decode(v).decode() for k, v in secret["data"].items()}
        assert data == {"airflow-password": "pw1", "mlflow-password": "pw2"}

    def test_none_with_an_existing_secret(self) -> None:
        values = {
            **EXTERNAL,
            "externalDatabase": {**EXTERNAL["externalDatabase"], "existingSecret": "db-creds"},
        }
        assert render_chart(values, PG + "secret.yaml") == []
        mlflow = one(render_chart(values, ML + "deployment.yaml"), "Deployment")
        assert env(pod_spec(mlflow)["containers"][0])["MLSHIP_DB_PASSWORD"] == {
            "secretKeyRef": {"name": "db-creds", "key": "mlflow-password"}
        }


class TestPostgresqlConfigMap:
    def test_creates_one_owned_database_per_user(self) -> None:
        cm = one(render_chart(None, PG + "configmap.yaml"), "ConfigMap")
        script = cm["data"]["10-mlship-databases.sh"]
        assert "for db in airflow mlflow" in script
        assert 'CREATE DATABASE :"name" OWNER :"name";' in script

    def test_init_changes_roll_the_pod(self) -> None:
        sts = one(render_chart(None, PG + "statefulset.yaml"), "StatefulSet")
        assert "checksum/init" in sts["spec"]["template"]["metadata"]["annotations"]


class TestPostgresqlService:
    def test_service_and_headless_service(self) -> None:
        services = render_chart(None, PG + "service.yaml")
        svc = one(services, "Service", "mlship-postgresql")
        headless = one(services, "Service", "mlship-postgresql-headless")
        assert svc["spec"]["ports"][0]["port"] == 5432
        assert headless["spec"]["clusterIP"] == "None"


class TestExternalDatabase:
    def test_urls_point_at_the_external_server(self) -> None:
        objects = render_chart(EXTERNAL)
        mlflow = env(pod_spec(one(objects, "Deployment", "mlship-mlflow"))["containers"][0])
        assert mlflow["MLFLOW_BACKEND_STORE_URI"] == (
            "postgresql+psycopg2://ml_user:$(MLSHIP_DB_PASSWORD)@db.example:6432/ml?sslmode=require"
        )
        sched = env(pod_spec(one(objects, "Deployment", "mlship-airflow-scheduler"))["containers"][0])
        assert sched["AIRFLOW__DATABASE__SQL_ALCHEMY_CONN"] == (
            "postgresql+psycopg2://af_user:$(MLSHIP_DB_PASSWORD)@db.example:6432/af?sslmode=require"
        )
        assert sched["MLSHIP_DB_PASSWORD"] == {
            "secretKeyRef": {"name": "mlship-external-database", "key": "airflow-password"}
        }

    def test_missing_settings_are_all_reported_at_once(self) -> None:
        message = render_error({"postgresql": {"enabled": False}})
        assert "externalDatabase.host is required" in message
        assert "externalDatabase.airflow.password" in message
        assert "externalDatabase.mlflow.password" in message


class TestMlflowDeployment:
    def deployment(self, values: dict | None = None) -> dict:
        return one(render_chart(values, ML + "deployment.yaml"), "Deployment")

    def test_defaults(self) -> None:
        d = self.deployment()
        assert d["spec"]["strategy"] == {"type": "Recreate"}  # one writer of the RWO volume
        (c,) = pod_spec(d)["containers"]
        assert c["image"] == "mlship-mlflow:dev"
        assert "--serve-artifacts" in c["args"]
        assert "--workers=1" in c["args"]
        e = env(c)
        assert e["MLFLOW_BACKEND_STORE_URI"] == (
            "postgresql+psycopg2://mlflow:$(MLSHIP_DB_PASSWORD)@mlship-postgresql.mlship.svc.cluster.local:5432/mlflow"
        )
        assert e["MLFLOW_ARTIFACTS_DESTINATION"] == "/mlflow/artifacts"
        assert e["MLFLOW_SERVER_ENABLE_JOB_EXECUTION"] == "false"
        assert "MLFLOW_SERVER_CORS_ALLOWED_ORIGINS" not in e
        hosts = e["MLFLOW_SERVER_ALLOWED_HOSTS"].split(",")
        # the in-cluster names the steps, the operator and the model servers use, and port-forwards
        for host in (
            "mlship-mlflow:*",
            "mlship-mlflow.mlship:*",
            "mlship-mlflow.mlship.svc:*",
            "mlship-mlflow.mlship.svc.cluster.local:*",
            "mlship-mlflow",
            "localhost:*",
            "127.0.0.1:*",
        ):
            assert host in hosts
        volumes = {v["name"]: v for v in pod_spec(d)["volumes"]}
        assert volumes["artifacts"]["persistentVolumeClaim"] == {"claimName": "mlship-mlflow-artifacts"}
        assert c["startupProbe"]["httpGet"]["path"] == "/health"
        # Ready only once the store answers a registry query (not /health), under an allowed Host
        assert c["readinessProbe"]["httpGet"] == {
            "path": "/api/2.0/mlflow/registered-models/search?max_results=1", "port": "http",
            "httpHeaders": [{"name": "Host", "value": "localhost"}],
        }

    def test_allowed_hosts_cors_and_workers(self) -> None:
        e = env(
            pod_spec(
                self.deployment(
                    {
                        "mlflow": {
                            "extraAllowedHosts": ["mlflow.example.com"],
                            "corsAllowedOrigins": ["https://a.example", "https://b.example"],
                            "workers": 3,
                        }
                    }
                )
            )["containers"][0]
        )
        assert e["MLFLOW_SERVER_ALLOWED_HOSTS"].split(",")[-1] == "mlflow.example.com"
        assert e["MLFLOW_SERVER_CORS_ALLOWED_ORIGINS"] == "https://a.example,https://b.example"

    def test_object_store_instead_of_the_volume(self) -> None:
        d = self.deployment(
            {"mlflow": {"artifacts": {"destination": "s3://bucket/mlship", "credentialsSecret": "s3-creds"}}}
        )
        (c,) = pod_spec(d)["containers"]
        assert env(c)["MLFLOW_ARTIFACTS_DESTINATION"] == "s3://bucket/mlship"
        assert c["envFrom"] == [{"secretRef": {"name": "s3-creds"}}]
        assert "artifacts" not in {v["name"] for v in pod_spec(d)["volumes"]}

    def test_existing_claim(self) -> None:
        d = self.deployment({"mlflow": {"artifacts": {"persistence": {"existingClaim": "my-artifacts"}}}})
        volumes = {v["name"]: v for v in pod_spec(d)["volumes"]}
        assert volumes["artifacts"]["persistentVolumeClaim"]["claimName"] == "my-artifacts"

    def test_destination_and_existing_claim_exclude_each_other(self) -> None:
        message = render_error(
            {"mlflow": {"artifacts": {"destination": "s3://b", "persistence": {"existingClaim": "c"}}}}
        )
        assert "exclude each other" in message


class TestMlflowPersistentVolumeClaim:
    def test_defaults(self) -> None:
        pvc = one(render_chart(None, ML + "pvc.yaml"), "PersistentVolumeClaim")
        assert pvc["metadata"]["name"] == "mlship-mlflow-artifacts"
        assert pvc["metadata"]["annotations"]["helm.sh/resource-policy"] == "keep"
        assert pvc["spec"]["resources"]["requests"]["storage"] == "5Gi"
        assert pvc["spec"]["accessModes"] == ["ReadWriteOnce"]

    def test_size_and_class(self) -> None:
        pvc = one(
            render_chart(
                {"mlflow": {"artifacts": {"persistence": {"size": "50Gi", "storageClass": "nfs"}}}},
                ML + "pvc.yaml",
            ),
            "PersistentVolumeClaim",
        )
        assert pvc["spec"]["storageClassName"] == "nfs"
        assert pvc["spec"]["resources"]["requests"]["storage"] == "50Gi"

    @pytest.mark.parametrize(
        "artifacts", [{"destination": "gs://b/p"}, {"persistence": {"existingClaim": "x"}}]
    )
    def test_not_rendered_unless_needed(self, artifacts: dict) -> None:
        assert render_chart({"mlflow": {"artifacts": artifacts}}, ML + "pvc.yaml") == []


class TestMlflowService:
    def test_defaults_and_options(self) -> None:
        svc = one(render_chart(None, ML + "service.yaml"), "Service")
        assert svc["metadata"]["name"] == "mlship-mlflow"
        assert svc["spec"]["ports"][0]["port"] == 5000
        svc = one(
            render_chart({"mlflow": {"service": {"type": "LoadBalancer", "port": 80}}}, ML + "service.yaml"),
            "Service",
        )
        assert svc["spec"]["type"] == "LoadBalancer"
        assert svc["spec"]["ports"][0]["port"] == 80
        # the URL handed to clients follows the port
        objects = render_chart({"mlflow": {"service": {"port": 80}}})
        op = one(objects, "Deployment", "mlship-operator")
        assert env(containers(pod_spec(op))[0])["MLFLOW_TRACKING_URI"] == (
            "http://mlship-mlflow.mlship.svc.cluster.local:80"
        )
