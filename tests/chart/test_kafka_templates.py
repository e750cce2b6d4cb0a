"""Render tests of the Kafka broker templates (the event stream of docs/events.md)."""

from __future__ import annotations

import base64
import re
from pathlib import Path

import pytest
from chart_helpers import env, one, pod_spec, render_chart, render_error, requires_helm

pytestmark = [pytest.mark.chart, requires_helm]

KAFKA = ("templates/kafka/statefulset.yaml", "templates/kafka/service.yaml")
POM = Path(__file__).resolve().parents[2] / "hack" / "images" / "kafka" / "pom.xml"


def broker_env(values: dict[str, object] | None = None, **kw: str) -> dict[str, object]:
    sts = one(render_chart(values, KAFKA[0], **kw), "StatefulSet")
    (c,) = pod_spec(sts)["containers"]
    return env(c)


class TestBroker:
    def test_defaults_one_kraft_node_on_a_volume(self) -> None:
        objs = render_chart(None, KAFKA)
        sts = one(objs, "StatefulSet")
        assert sts["spec"]["replicas"] == 1
        assert sts["spec"]["serviceName"] == "mlship-kafka-headless"
        spec = pod_spec(sts)
        assert spec["enableServiceLinks"] is False  # KAFKA_* service variables would be properties
        (c,) = spec["containers"]
        assert c["image"] == "apache/kafka:4.3.1"
        e = env(c)
        assert e["KAFKA_PROCESS_ROLES"] == "broker,controller"
        assert e["KAFKA_ADVERTISED_LISTENERS"] == (
            "PLAINTEXT://$(POD_NAME).mlship-kafka-headless.mlship.svc.cluster.local:9092"
        )
        assert e["KAFKA_LOG_DIRS"] == "/var/lib/kafka/data/logs"  # not the volume root
        assert e["KAFKA_HEAP_OPTS"] == "-Xms512m -Xmx512m"
        assert e["KAFKA_NUM_PARTITIONS"] == "3"
        mounts = {m["mountPath"] for m in c["volumeMounts"]}
        assert {"/var/lib/kafka/data", "/opt/kafka/config", "/tmp"} <= mounts
        (claim,) = sts["spec"]["volumeClaimTemplates"]
        assert claim["spec"]["resources"]["requests"]["storage"] == "2Gi"
        services = {s["metadata"]["name"] for s in objs if s["kind"] == "Service"}
        assert services == {"mlship-kafka", "mlship-kafka-headless"}

    def test_cluster_id_is_a_kraft_uuid_stable_per_release(self) -> None:
        first = broker_env()["CLUSTER_ID"]
        assert first == broker_env()["CLUSTER_ID"]
        other = broker_env(name="other")["CLUSTER_ID"]
        assert isinstance(first, str) and isinstance(other, str) and first != other
        for cid in (first, other):
            assert re.fullmatch(r"[0-9a-f]{21}A", cid), cid
            assert len(base64.urlsafe_b64decode(cid + "==")) == 16  # Kafka's Uuid: 16 bytes

    def test_values_reach_the_broker(self) -> None:
        e = broker_env({"kafka": {"partitions": 6, "retentionHours": 24, "heap": "1g"}})
        assert (e["KAFKA_NUM_PARTITIONS"], e["KAFKA_LOG_RETENTION_HOURS"]) == ("6", "24")
        assert e["KAFKA_HEAP_OPTS"] == "-Xms1g -Xmx1g"

    @pytest.mark.parametrize(
        "values",
        [{"kafka": {"enabled": False}}, {"kafka": {"external": {"bootstrapServers": "k1:9092"}}}],
    )
    def test_no_broker_when_disabled_or_external(self, values: dict[str, object]) -> None:
        assert render_chart(values, KAFKA) == []

    @pytest.mark.parametrize(
        ("values", "problem"),
        [
            ({"kafka": {"external": {"bootstrapServers": "k1"}}}, "bootstrapServers"),
            ({"kafka": {"partitions": 0}}, "partitions"),
            ({"kafka": {"heap": "512"}}, "heap"),
        ],
    )
    def test_bad_values_are_refused(self, values: dict[str, object], problem: str) -> None:
        assert problem in render_error(values)

    def test_the_default_tag_is_the_release_the_local_stand_in_builds(self) -> None:
        version = re.search(r"<kafka.version>(.+)</kafka.version>", POM.read_text())
        assert version is not None
        sts = one(render_chart(None, KAFKA[0]), "StatefulSet")
        assert pod_spec(sts)["containers"][0]["image"] == f"apache/kafka:{version.group(1)}"


class TestOperatorHandsKafkaToServing:
    OPERATOR = "templates/operator/deployment.yaml"

    def operator_env(self, values: dict[str, object] | None = None) -> dict[str, object]:
        (c,) = pod_spec(one(render_chart(values, self.OPERATOR), "Deployment"))["containers"]
        return env(c)

    def test_the_built_in_broker(self) -> None:
        assert self.operator_env()["MLSHIP_KAFKA_BOOTSTRAP_SERVERS"] == (
            "mlship-kafka.mlship.svc.cluster.local:9092"
        )

    def test_an_external_cluster(self) -> None:
        e = self.operator_env({"kafka": {"external": {"bootstrapServers": "k1:9092,k2:9092"}}})
        assert e["MLSHIP_KAFKA_BOOTSTRAP_SERVERS"] == "k1:9092,k2:9092"

    def test_none_when_disabled(self) -> None:
        assert "MLSHIP_KAFKA_BOOTSTRAP_SERVERS" not in self.operator_env({"kafka": {"enabled": False}})


class TestRecord:
    RECORD = "templates/kafka/record-deployment.yaml"

    def test_consumes_the_built_in_broker_into_mlflow(self) -> None:
        dep = one(render_chart(None, self.RECORD), "Deployment")
        assert dep["spec"]["replicas"] == 1 and dep["spec"]["strategy"]["type"] == "Recreate"
        (c,) = pod_spec(dep)["containers"]
        assert c["image"] == "mlship-record:dev"
        e = env(c)
        assert e["MLSHIP_KAFKA_BOOTSTRAP_SERVERS"] == "mlship-kafka.mlship.svc.cluster.local:9092"
        assert e["MLFLOW_TRACKING_URI"] == "http://mlship-mlflow.mlship.svc.cluster.local:5000"
        assert (e["MLSHIP_RECORD_FLUSH_SECONDS"], e["MLSHIP_KAFKA_PARTITIONS"]) == ("10", "3")
        probe = ["python", "-m", "mlship.events.alive", e["MLSHIP_RECORD_ALIVE_FILE"], "120"]
        assert c["livenessProbe"]["exec"]["command"] == probe
        assert c["startupProbe"]["exec"]["command"] == probe

    def test_an_external_cluster_still_gets_the_record(self) -> None:
        values = {"kafka": {"external": {"bootstrapServers": "k1:9092"}, "record": {"flushSeconds": 2.5}}}
        (c,) = pod_spec(one(render_chart(values, self.RECORD), "Deployment"))["containers"]
        assert env(c)["MLSHIP_KAFKA_BOOTSTRAP_SERVERS"] == "k1:9092"
        assert env(c)["MLSHIP_RECORD_FLUSH_SECONDS"] == "2.5"

    def test_none_when_kafka_is_disabled(self) -> None:
        assert render_chart({"kafka": {"enabled": False}}, self.RECORD) == []
