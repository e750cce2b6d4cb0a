"""What an alert says and where its links lead (sending it: tests/integration/test_drift_step.py,
against a real HTTP receiver)."""

from __future__ import annotations

import pytest

from mlship import alerts
from mlship.alerts import Alert

pytestmark = pytest.mark.unit


def test_the_body_is_slack_text_and_fields_for_programs() -> None:
    alert = Alert("gate_failed", "iris", "7", "accuracy 0.6000 is below the minimum 0.8000: not promoted",
                  {"mlflow": "https://m/#/experiments/1/runs/abc", "airflow": "https://a/dags/d/runs/r"})
    assert alerts.body(alert) == {
        "text": "mlship: iris v7 failed the quality gate: accuracy 0.6000 is below the minimum 0.8000: "
                "not promoted | Mlflow: https://m/#/experiments/1/runs/abc | Airflow: https://a/dags/d/runs/r",
        "kind": "gate_failed", "model": "iris", "version": "7",
        "summary": "accuracy 0.6000 is below the minimum 0.8000: not promoted",
        "links": {"mlflow": "https://m/#/experiments/1/runs/abc", "airflow": "https://a/dags/d/runs/r"},
    }  # fmt: skip
    assert alerts.body(Alert("drift", "iris", "3", "4 of 4 features drifted"))["text"] == (
        "mlship: drift in iris v3: 4 of 4 features drifted")


def test_an_unknown_kind_is_refused() -> None:
    with pytest.raises(ValueError, match="unknown alert kind 'decay'; one of: drift, gate_failed"):
        Alert("decay", "iris", "3", "")


def test_links_lead_to_the_run_the_version_and_the_dag_run() -> None:
    env = {"MLSHIP_AIRFLOW_UI_URL": "https://airflow.example.com/"}
    got = alerts.links(env, "http://mlship-mlflow:5000/", experiment_id="2", run_id="r1", model="my model",
                       version="4", dag_id="mlship_training", dag_run_id="manual__2026-12-02T09:00:00+00:00")
    assert got == {
        "mlflow": "http://mlship-mlflow:5000/#/experiments/2/runs/r1",
        "version": "http://mlship-mlflow:5000/#/models/my%20model/versions/4",
        "airflow": "https://airflow.example.com/dags/mlship_training/runs/manual__2026-12-02T09%3A00%3A00%2B00%3A00",
    }  # fmt: skip
    ui = {"MLSHIP_MLFLOW_UI_URL": "https://mlflow.example.com"}
    assert alerts.links(ui, "http://in-cluster:5000", experiment_id="2", run_id="r1") == {
        "mlflow": "https://mlflow.example.com/#/experiments/2/runs/r1"}
    # no web UI to link to (a local store), no Airflow URL: no links
    assert alerts.links({}, "/tmp/mlruns", experiment_id="2", run_id="r1", dag_id="d", dag_run_id="r") == {}


def test_logs_name_the_webhooks_host_never_its_secret_path() -> None:
    assert alerts.where("https://hooks.slack.com/services/T0/B0/s3cr3t?x=1") == "https://hooks.slack.com"


def test_no_webhook_no_alert() -> None:
    assert alerts.send(Alert("drift", "iris", "3", "x"), {}) is False
    assert alerts.send(Alert("drift", "iris", "3", "x"), {"MLSHIP_ALERT_WEBHOOK_URL": " "}) is False
