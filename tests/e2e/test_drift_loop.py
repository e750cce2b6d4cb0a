"""The loop closed on the installed system: a served champion's answers reach the event record
(surviving a pod restart), mlship_drift finds shifted traffic in the record and triggers
mlship_training with the reason, and too little traffic is "not enough data" that triggers nothing.

Runs on the session's release (tests/e2e/release.py); trains a champion first if no earlier
test left one.
"""

from __future__ import annotations

import re
import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from typing import Any
from urllib.parse import quote

import pytest
import requests
from devkit import wait_for
from e2e.kit import (
    AIRFLOW_UI_URL,
    ALERT_PATH,
    ALERT_RECEIVER,
    ALERT_RECEIVER_PORT,
    ALERT_RECEIVER_PY,
    IRIS_COLUMNS,
    IRIS_ROWS,
    MD_GROUP,
    MD_PLURAL,
    MD_VERSION,
    MODEL,
    Airflow,
    Release,
    all_ready,
    condition,
    python_pod,
    received_alerts,
    service_body,
)

from mlship.events.reader import read_record

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(3600)]

DRIFT_DAG = "mlship_drift"
TRAINING_DAG = "mlship_training"
NAME = "iris-monitored"
SHIFT_CM = 1.5
ROWS = 300


def finish(airflow: Airflow, dag: str, run_id: str, timeout: float = 1200) -> None:
    """Wait for the run; fail with its failed tasks' pod output unless it succeeded."""
    airflow.require_success(run_id, airflow.wait_run(run_id, timeout, dag=dag), dag=dag)


def task_states(airflow: Airflow, dag: str, run_id: str) -> dict[str, str]:
    return {task: ti["state"] for task, ti in airflow.tasks(run_id, dag=dag).items()}


def champion_version(release: Release) -> str | None:
    """The champion's version; None only when no model or no champion alias exists yet. Any other
    failure (MLflow unreachable, an auth error) fails the test rather than training a new one."""
    with release.mlflow_client() as mlflow:
        if not mlflow.search_registered_models(filter_string=f"name = '{MODEL}'"):
            return None
        version = mlflow.get_registered_model(MODEL).aliases.get("champion")
        return None if version is None else str(version)


@pytest.fixture(scope="module")
def monitored(release: Release) -> Iterator[str]:
    """A ModelDeployment of the champion whose every request is a prediction event."""
    if champion_version(release) is None:
        with release.airflow() as airflow:
            finish(airflow, TRAINING_DAG, airflow.trigger())
    release.apply_model_deployment(
        NAME,
        {"model": MODEL, "alias": "champion", "replicas": 1,
         "inferenceLog": {"sampleRate": 1.0}},
    )
    wait_for(
        f"ModelDeployment {NAME} to be Ready",
        lambda: condition(release.model_deployment(NAME), "Ready").get("status") == "True",
        timeout=600,
        interval=3,
    )
    yield NAME
    release.custom.delete_namespaced_custom_object(MD_GROUP, MD_VERSION, release.namespace, MD_PLURAL, NAME)


@pytest.fixture(scope="module")
def alert_receiver(release: Release) -> Iterator[None]:
    """The pod the release's alerts go to (kit.ALERTS_SECRET names it), and its Service."""
    ns, core = release.namespace, release.core
    core.create_namespaced_pod(ns, python_pod(ALERT_RECEIVER, ns, ALERT_RECEIVER_PY, ALERT_RECEIVER_PORT))
    try:
        core.create_namespaced_service(ns, service_body(ALERT_RECEIVER, ALERT_RECEIVER_PORT))
        wait_for(f"pod {ALERT_RECEIVER} to be Ready",
                 lambda: all_ready([core.read_namespaced_pod(ALERT_RECEIVER, ns)]), timeout=180, interval=2)
        yield
    finally:
        core.delete_namespaced_pod(ALERT_RECEIVER, ns, grace_period_seconds=0)
        core.delete_namespaced_service(ALERT_RECEIVER, ns)


def recorded_rows(release: Release, version: str, since: datetime) -> int:
    with release.mlflow_client() as mlflow:
        return len(read_record(mlflow, MODEL, version, since=since, labels=False).rows)


def test_too_little_traffic_is_not_enough_data_and_triggers_nothing(release: Release, monitored: str) -> None:
    with release.airflow() as airflow:
        before = airflow.get(f"/dags/{TRAINING_DAG}/dagRuns")["total_entries"]
        run_id = airflow.trigger({"min_rows": 1_000_000}, dag=DRIFT_DAG)
        finish(airflow, DRIFT_DAG, run_id)
        assert task_states(airflow, DRIFT_DAG, run_id) == {
            "detect": "success", "retrain_needed": "success", "retrain": "skipped"}
        assert "not enough data" in airflow.log(run_id, "detect", 1, dag=DRIFT_DAG)
        assert airflow.get(f"/dags/{TRAINING_DAG}/dagRuns")["total_entries"] == before


def test_shifted_traffic_is_logged_through_a_restart_and_triggers_training(
    release: Release, monitored: str, alert_receiver: None, record_property: Any
) -> None:
    version = release.model_deployment(NAME)["status"]["servingVersion"]
    since = datetime.now(UTC) - timedelta(seconds=5)
    shifted = [[round(x + SHIFT_CM, 2) for x in row] for row, _ in IRIS_ROWS] * (ROWS // len(IRIS_ROWS))
    [pod] = release.serving_pods(NAME)
    with release.serving(NAME) as url:
        for start in range(0, len(shifted), 10):
            resp = requests.post(
                f"{url}/invocations",
                json={"dataframe_split": {"columns": IRIS_COLUMNS, "data": shifted[start:start + 10]}},
                timeout=30,
            )
            assert resp.ok, resp.text
    # Right after the answers, some events may still wait in the pod's producer: a graceful
    # restart must send them.
    release.core.delete_namespaced_pod(pod.metadata.name, release.namespace)
    wait_for(
        "the restarted serving pod",
        lambda: [p for p in release.serving_pods(NAME) if p.metadata.uid != pod.metadata.uid
                 and any(c.type == "Ready" and c.status == "True" for c in p.status.conditions or [])],
        timeout=300,
        interval=3,
    )
    # the record writes every 10 s
    wait_for(f"{ROWS} rows in the record", lambda: recorded_rows(release, version, since) >= ROWS, 240, 10)
    assert recorded_rows(release, version, since) == ROWS

    with release.airflow() as airflow:
        started = time.monotonic()
        drift_run = airflow.trigger({"window_minutes": 30, "min_rows": 100}, dag=DRIFT_DAG)
        finish(airflow, DRIFT_DAG, drift_run)
        assert task_states(airflow, DRIFT_DAG, drift_run) == dict.fromkeys(
            ("detect", "retrain_needed", "retrain"), "success")
        training_run = airflow.get(f"/dags/{TRAINING_DAG}/dagRuns/drift__{drift_run}")
        reason = training_run["conf"]["reason"]
        # earlier tests' requests to the same version fall in the window too: at least ours
        match = re.match(rf"drift in (\d+) inputs to {MODEL} v{version} ", reason)
        assert match and int(match[1]) >= ROWS, reason
        assert "4 of 4 features drifted" in reason, reason
        assert "rows from the event record" in airflow.log(drift_run, "detect", 1, dag=DRIFT_DAG)
        finish(airflow, TRAINING_DAG, training_run["dag_run_id"], timeout=1800)
        record_property("drift_to_trained_seconds", round(time.monotonic() - started, 1))

    with release.mlflow_client() as mlflow:
        [report] = mlflow.search_runs(
            [mlflow.get_experiment_by_name("mlship-drift").experiment_id],
            filter_string=f"tags.`mlship.pipeline_run_key` = '{drift_run}'",
        )
        assert report.data.tags["mlship.drift"] == "drift"
        # the team was told: one alert, to the webhook's path, linking the report and the DAG run
        [(path, alert)] = [(p, a) for p, a in received_alerts(release) if a["kind"] == "drift"]
        assert path == ALERT_PATH
        assert (alert["model"], alert["version"]) == (MODEL, version)
        dag_run_url = f"{AIRFLOW_UI_URL}/dags/{DRIFT_DAG}/runs/{quote(drift_run, safe='')}"
        assert alert["links"]["airflow"] == dag_run_url
        assert alert["links"]["mlflow"].endswith(
            f"/#/experiments/{report.info.experiment_id}/runs/{report.info.run_id}")
        assert alert["text"].startswith(f"mlship: drift in {MODEL} v{version}: 4 of 4 features drifted")
        artifacts = {a.path for a in mlflow.list_artifacts(report.info.run_id)}
        assert {"drift.png", "drift_report.json"} <= artifacts
        # the triggered pipeline carries the reason and compared its model with the champion
        [parent] = mlflow.search_runs(
            [mlflow.get_experiment_by_name("mlship").experiment_id],
            filter_string=f"tags.`mlship.pipeline_run_key` = '{training_run['dag_run_id']}' "
            "and tags.`mlship.trigger_reason` != ''",
        )
        assert parent.data.tags["mlship.trigger_reason"] == reason
        [new] = [
            v for v in mlflow.search_model_versions(f"name = '{MODEL}'")
            if v.tags.get("mlship.parent_run_id") == parent.info.run_id
        ]
        # the quality gate decided, against the champion scored on the same fresh holdout
        assert new.tags["mlship.gate"] and "champion" in new.tags["mlship.gate_reason"], new.tags
