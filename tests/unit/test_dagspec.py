"""The DAG's pure builders: configuration from the environment, and step arguments that the
step CLIs really accept once Airflow has rendered them."""

from __future__ import annotations

import importlib
import json
import sys
from datetime import timedelta
from pathlib import Path

import jinja2
import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "dags"))
import mlship_dagspec as spec  # noqa: E402

pytestmark = pytest.mark.unit

XCOMS = {
    "ingest": {"dataset_uri": "runs:/i/data/dataset.parquet", "task": "classification",
               "dataset_digest": "d" * 32},
    "featurize": {"train_uri": "runs:/f/features/train.parquet",
                  "holdout_uri": "runs:/f/features/holdout.parquet",
                  "features_uri": "runs:/f/features/features.json"},
    "train": {"model_uri": "models:/m-1"},
    "evaluate": {"evaluation_uri": "runs:/e/evaluation/evaluation.json"},
}


class FakeTI:
    def xcom_pull(self, task_ids: str) -> dict:
        return XCOMS[task_ids]


def render(args: list[str], params: dict) -> list[str]:
    env = jinja2.Environment(autoescape=False)  # noqa: S701 - command-line args, not HTML
    ctx = {"params": params, "ti": FakeTI(), "run_id": "manual__2026-01-01T00:00:00+00:00"}
    return [env.from_string(a).render(**ctx) for a in args]


def default_params(step: str = "ingest", **overrides) -> dict:
    settings = spec.settings_from_env({})
    schema = spec.drift_params_schema(settings) if step == "drift" else spec.params_schema(settings)
    return {**{k: v["default"] for k, v in schema.items()}, **overrides}


def test_defaults_without_configuration():
    s = spec.settings_from_env({})
    assert s.images == {step: f"mlship-step-{step}:dev" for step in spec.POD_STEPS}
    assert s.schedule == "@daily"
    assert s.drift == spec.DriftSettings()
    assert (s.drift.schedule, s.drift.alias, s.drift.threshold) == ("@hourly", "champion", 0.5)
    assert s.namespace == "mlship"
    assert s.retries == 2 and s.retry_delay == timedelta(minutes=1)
    assert spec.xcom_sidecar(s)["image"] == "mlship-base:dev"


def test_configuration_from_the_chart():
    s = spec.settings_from_env({
        "MLSHIP_IMAGE_TRAIN": "reg.local/mlship/step-train:1.2.3",
        "MLSHIP_NAMESPACE": "ml",
        "MLSHIP_MLFLOW_TRACKING_URI": "http://mlflow.ml:5000",
        "MLSHIP_IMAGE_PULL_POLICY": "Never",
        "MLSHIP_IMAGE_PULL_SECRETS": "regcred, other",
        "MLSHIP_SCHEDULE": "none",
        "MLSHIP_TASK_RETRIES": "5",
        "MLSHIP_RETRY_DELAY_SECONDS": "30",
        "MLSHIP_STEP_RESOURCES": json.dumps({"train": {"requests": {"cpu": "3"}}}),
    })
    assert s.images["train"] == "reg.local/mlship/step-train:1.2.3"
    assert s.images["ingest"] == "mlship-step-ingest:dev"
    assert (s.namespace, s.tracking_uri, s.image_pull_policy) == (
        "ml", "http://mlflow.ml:5000", "Never")
    assert s.image_pull_secrets == ("regcred", "other")
    assert s.schedule is None
    assert (s.retries, s.retry_delay) == (5, timedelta(seconds=30))
    assert s.resources["train"] == {"requests": {"cpu": "3"}}
    assert s.resources["ingest"] == spec.DEFAULT_RESOURCES["ingest"]
    assert spec.step_env(s)["MLFLOW_TRACKING_URI"] == "http://mlflow.ml:5000"


def test_drift_configuration_from_the_chart():
    d = spec.settings_from_env({
        "MLSHIP_DRIFT_SCHEDULE": "*/15 * * * *", "MLSHIP_DRIFT_ALIAS": "prod",
        "MLSHIP_DRIFT_WINDOW_MINUTES": "30", "MLSHIP_DRIFT_MIN_ROWS": "250",
        "MLSHIP_DRIFT_THRESHOLD": "0.3", "MLSHIP_INFERENCE_LOG_EXPERIMENT": "inputs",
        "MLSHIP_DRIFT_EXPERIMENT": "reports",
    }).drift
    assert d == spec.DriftSettings("*/15 * * * *", "prod", 30, 250, 0.3, "inputs", "reports")
    assert spec.settings_from_env({"MLSHIP_DRIFT_SCHEDULE": "none"}).drift.schedule is None


def test_xcom_sidecar_image_from_configuration():
    s = spec.settings_from_env({"MLSHIP_XCOM_SIDECAR_IMAGE": " reg.local/mlship/base:1.2.3 ",
                                "MLSHIP_IMAGE_PULL_POLICY": "Never"})
    sidecar = spec.xcom_sidecar(s)
    assert (sidecar["image"], sidecar["image_pull_policy"]) == ("reg.local/mlship/base:1.2.3", "Never")
    assert sidecar["security_context"] == spec.container_security_context()
    # the setting wins over the connection's extra, which wins over the default
    assert spec.xcom_sidecar(s, "python:3.11-slim")["image"] == "reg.local/mlship/base:1.2.3"
    unset = spec.settings_from_env({"MLSHIP_XCOM_SIDECAR_IMAGE": ""})
    assert spec.xcom_sidecar(unset, "python:3.11-slim")["image"] == "python:3.11-slim"
    assert spec.xcom_sidecar(unset, None)["image"] == "mlship-base:dev"


@pytest.mark.parametrize(("env", "message"), [
    ({"MLSHIP_IMAGE_PULL_POLICY": "Sometimes"}, "MLSHIP_IMAGE_PULL_POLICY='Sometimes'"),
    ({"MLSHIP_TASK_RETRIES": "many"}, "MLSHIP_TASK_RETRIES='many' is not an integer"),
    ({"MLSHIP_STEP_RESOURCES": "{"}, "MLSHIP_STEP_RESOURCES is not JSON"),
    ({"MLSHIP_STEP_RESOURCES": '{"training": {}}'}, "unknown step(s): ['training']"),
    ({"MLSHIP_DRIFT_THRESHOLD": "high"}, "MLSHIP_DRIFT_THRESHOLD='high' is not a number"),
    ({"MLSHIP_DRIFT_THRESHOLD": "1.5"}, "MLSHIP_DRIFT_THRESHOLD='1.5' must be in (0, 1]"),
    ({"MLSHIP_DRIFT_MIN_ROWS": "0"}, "MLSHIP_DRIFT_MIN_ROWS=0 must be >= 1"),
])
def test_bad_configuration_is_named(env, message):
    with pytest.raises(spec.SettingsError) as err:
        spec.settings_from_env(env)
    assert message in str(err.value)


@pytest.mark.parametrize("step", spec.POD_STEPS)
def test_rendered_arguments_parse_with_the_step_cli(step):
    params = default_params(step, hyperparameters={"n_estimators": 7}, threshold=0.8,
                            validation_rules={"columns": {"a": {"min": 0}}})
    argv = render(spec.step_arguments(step), params)
    module = importlib.import_module(f"mlship.steps.{step}")
    args = module.build().parse_args(argv)
    assert args.pipeline_run_key == "manual__2026-01-01T00:00:00+00:00"
    assert args.xcom_path == spec.XCOM_PATH
    assert spec.step_command(step) == ["python", "-m", f"mlship.steps.{step}"]
    if step == "train":
        assert args.hyperparameters == {"n_estimators": 7}
        assert args.features_uri == XCOMS["featurize"]["features_uri"]
    if step == "validate":
        assert args.rules == {"columns": {"a": {"min": 0}}}
        assert args.task == "classification"
    if step == "register":
        assert (args.threshold, args.auto_promote, args.margin) == (0.8, True, 0.0)
        assert args.dataset_digest == "d" * 32
    if step == "ingest":
        assert args.reason == "manual"
    if step == "drift":
        assert (args.model_name, args.alias, args.threshold) == ("iris", "champion", 0.8)
        assert (args.window_minutes, args.min_rows) == (60, 100)
        assert (args.inference_experiment, args.report_experiment) == ("mlship-inference", "mlship-drift")


def test_null_threshold_and_disabled_promotion_render_to_cli_values():
    from mlship.steps import register

    argv = render(spec.step_arguments("register"),
                  default_params("register", threshold=None, auto_promote=False))
    args = register.build().parse_args(argv)
    assert args.threshold is None and args.auto_promote is False


def test_security_contexts_are_restricted():
    pod = spec.pod_security_context()
    assert pod["runAsNonRoot"] is True and pod["runAsUser"] == 10001
    assert pod["seccompProfile"] == {"type": "RuntimeDefault"}
    c = spec.container_security_context()
    assert c["allowPrivilegeEscalation"] is False
    assert c["capabilities"] == {"drop": ["ALL"]}
