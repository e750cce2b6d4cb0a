"""The drift check (`python -m mlship.steps.drift`) against a real MLflow server: a champion
registered by the pipeline, inference records in serving's format, the report it logs."""

from __future__ import annotations

import json
import tempfile
import time
import uuid
from pathlib import Path

import pytest
from mlflow.tracking import MlflowClient
from sklearn.datasets import load_iris
from testkit import alert_receiver as webhook

from mlship.monitoring import inference_log

pytestmark = pytest.mark.integration

FEATURES = list(load_iris(as_frame=True).data.columns)


def iris_rows(n: int, seed: int, shift_cm: float = 0.0) -> list[dict[str, float]]:
    """n rows drawn from iris itself (the training distribution), optionally shifted."""
    data = load_iris(as_frame=True).data
    picked = data.sample(n, replace=True, random_state=seed).to_numpy() + shift_cm
    return [dict(zip(FEATURES, map(float, row), strict=True)) for row in picked]


def champion(client: MlflowClient, model: str) -> str:
    """The version the check looks at (other modules may have registered more of this model)."""
    return str(client.get_model_version_by_alias(model, "champion").version)


def log_inputs(client: MlflowClient, experiment: str, model: str, rows: list[dict]) -> None:
    """What the champion's serving process writes: one run per process, JSON lines per hour folder."""
    version = champion(client, model)
    exp = client.get_experiment_by_name(experiment)
    exp_id = exp.experiment_id if exp else client.create_experiment(experiment)
    pod = f"iris-{uuid.uuid4().hex[:5]}"
    run = client.create_run(exp_id, tags=inference_log.run_tags(model, version, pod))
    now = time.time()
    lines = b"".join(
        inference_log.encode_record(now - 60 + i * 0.01, row, 0) for i, row in enumerate(rows)
    )
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / inference_log.file_name(now - 60, 0)
        path.write_bytes(lines)
        folder = inference_log.artifact_dir(inference_log.hour_of(now - 60))
        client.log_artifact(run.info.run_id, str(path), folder)
    client.set_terminated(run.info.run_id)


@pytest.fixture
def experiments() -> dict[str, str]:
    suffix = uuid.uuid4().hex[:6]
    return {"inference": f"inputs-{suffix}", "report": f"drift-{suffix}"}


def check(steps, iris_pipeline, experiments, *flags: str, expect_ok: bool = True, env=None, key=None):
    return steps.run(
        "drift", "--model-name", iris_pipeline["model"],
        "--inference-experiment", experiments["inference"],
        "--report-experiment", experiments["report"], *flags,
        key=key or f"drift-{uuid.uuid4().hex[:6]}", expect_ok=expect_ok, env=env,
    )


def reports(mlflow_server: str, experiments: dict[str, str]) -> list:
    client = MlflowClient(mlflow_server)
    exp = client.get_experiment_by_name(experiments["report"])
    return client.search_runs([exp.experiment_id]) if exp else []


def test_too_few_recent_inputs_is_said_and_nothing_is_reported(
    steps, iris_pipeline, experiments, mlflow_server
) -> None:
    client = MlflowClient(mlflow_server)
    log_inputs(client, experiments["inference"], iris_pipeline["model"], iris_rows(40, seed=1))
    result, stderr = check(steps, iris_pipeline, experiments)
    assert result["status"] == "not_enough_data" and result["drifted"] is False
    assert result["rows"] == 40
    assert "not enough data: 40 inputs" in result["reason"] and "100 needed" in result["reason"]
    assert reports(mlflow_server, experiments) == []


def test_inputs_like_the_training_data_are_no_drift(steps, iris_pipeline, experiments, mlflow_server) -> None:
    client = MlflowClient(mlflow_server)
    log_inputs(client, experiments["inference"], iris_pipeline["model"], iris_rows(300, seed=2))
    with webhook() as (url, received):
        result, _ = check(steps, iris_pipeline, experiments, env={"MLSHIP_ALERT_WEBHOOK_URL": url})
    assert result["status"] == "no_drift", result["reason"]
    assert received == []  # nothing to say
    assert result["rows"] == 300 and result["version"] == champion(client, iris_pipeline["model"])
    [run] = reports(mlflow_server, experiments)
    assert run.info.run_id == result["report_run_id"]
    assert run.data.tags["mlship.drift"] == "no_drift"
    assert run.data.params["recent_rows"] == "300" and run.data.params["reference_rows"] == "150"
    artifacts = {a.path for a in client.list_artifacts(run.info.run_id)}
    assert {"drift_report.json", "drift.png"} <= artifacts
    table = json.loads(Path(client.download_artifacts(run.info.run_id, "drift_report.json")).read_text())
    assert sorted(row[0] for row in table["data"]) == sorted(FEATURES)


def test_shifted_inputs_are_drift_with_the_features_named(
    steps, iris_pipeline, experiments, mlflow_server
) -> None:
    client = MlflowClient(mlflow_server)
    log_inputs(client, experiments["inference"], iris_pipeline["model"],
               iris_rows(300, seed=3, shift_cm=1.5))
    key = f"scheduled__{uuid.uuid4().hex[:6]}"
    with webhook() as (url, received):
        result, _ = check(steps, iris_pipeline, experiments, "--window-minutes", "10", key=key, env={
            "MLSHIP_ALERT_WEBHOOK_URL": url, "MLSHIP_AIRFLOW_UI_URL": "https://airflow.example.com/"})
    assert result["status"] == "drift" and result["drifted"] is True
    assert set(result["drifted_features"]) == set(FEATURES)
    model, version = iris_pipeline["model"], champion(client, iris_pipeline["model"])
    assert result["reason"].startswith(f"drift in 300 inputs to {model} v{version} ")
    [run] = reports(mlflow_server, experiments)
    assert run.data.tags["mlship.drift"] == "drift"
    assert run.data.metrics["drifted_share"] == 1.0
    # ... and a person hears of it: one alert, with links to the report and the DAG run
    [alert] = received
    assert (alert["kind"], alert["model"], alert["version"]) == ("drift", model, version)
    assert alert["summary"].startswith("4 of 4 features drifted"), alert["summary"]
    assert alert["links"] == {
        "mlflow": f"{mlflow_server}/#/experiments/{run.info.experiment_id}/runs/{run.info.run_id}",
        "airflow": f"https://airflow.example.com/dags/mlship_drift/runs/{key}",
    }
    assert alert["text"].startswith(f"mlship: drift in {model} v{version}: 4 of 4 features drifted")


def test_an_alert_webhook_that_refuses_fails_nothing(
    steps, iris_pipeline, experiments, mlflow_server
) -> None:
    log_inputs(MlflowClient(mlflow_server), experiments["inference"], iris_pipeline["model"],
               iris_rows(300, seed=5, shift_cm=1.5))  # fmt: skip
    with webhook(status=404) as (url, received):  # e.g. a catch-all answering a dead address
        result, stderr = check(steps, iris_pipeline, experiments, "--window-minutes", "10",
                               env={"MLSHIP_ALERT_WEBHOOK_URL": url})  # fmt: skip
    assert result["status"] == "drift"
    assert len(received) == 3  # tried three times, each on a new connection
    assert "alert drift for" in stderr and "was not delivered to http://127.0.0.1" in stderr
    assert "s3cr3t" not in stderr  # the URL's path (the webhook's secret) is never logged


def test_unknown_model_is_a_clear_error(steps, experiments) -> None:
    _, stderr = steps.run(
        "drift", "--model-name", "no-such-model", "--inference-experiment", experiments["inference"],
        key="drift-unknown", expect_ok=False,
    )
    assert "model 'no-such-model' has no version with alias 'champion'" in stderr
