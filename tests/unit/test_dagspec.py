"""The DAG's pure builders: configuration from the environment, and step arguments that the
step CLIs really accept once Airflow has rendered them."""

from __future__ import annotations

import importlib
import json
import re
import sys
from datetime import timedelta
from pathlib import Path

import jinja2
import jsonschema
import pytest

from mlship.ml import estimators, metrics

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
    """Airflow's: None for a task that did not run (the search, skipped without trials)."""

    def xcom_pull(self, task_ids: str) -> dict | list | None:
        return XCOMS.get(task_ids)


PLAN = [["trial", "--search-run-id", "s1", "--share", '[{"index": 0, "params": {"C": 1}}]']]


def render(args: list[str], params: dict) -> list[str]:
    env = jinja2.Environment(autoescape=False)  # noqa: S701 - command-line args, not HTML
    ctx = {"params": params, "ti": FakeTI(), "run_id": "manual__2026-01-01T00:00:00+00:00"}
    return [env.from_string(a).render(**ctx) for a in args]


def form_schema(step: str, settings: spec.Settings) -> dict:
    """The trigger form (as Params' arguments) of the DAG the step belongs to."""
    schemas = {"drift": spec.drift_params_schema, "score": spec.score_params_schema}
    return schemas.get(step, spec.params_schema)(settings)


def default_params(step: str = "ingest", **overrides) -> dict:
    schema = form_schema(step, spec.settings_from_env({}))
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


def test_every_bad_variable_is_named_at_once():
    with pytest.raises(spec.SettingsError) as err:
        spec.settings_from_env({
            "MLSHIP_IMAGE_PULL_POLICY": "Sometimes",
            "MLSHIP_TASK_RETRIES": "many",
            "MLSHIP_DRIFT_THRESHOLD": "high",
            "MLSHIP_DRIFT_MIN_ROWS": "0",
        })
    assert str(err.value).split("; ") == [
        "MLSHIP_IMAGE_PULL_POLICY='Sometimes': use Always|IfNotPresent|Never",
        "MLSHIP_TASK_RETRIES='many' is not an integer",
        "MLSHIP_DRIFT_THRESHOLD='high' is not a number",
        "MLSHIP_DRIFT_MIN_ROWS=0 must be >= 1",
    ]


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
        assert args.tuned_hyperparameters is None  # no search ran
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
    if step == "score":
        assert (args.model_name, args.alias, args.version) == ("iris", "champion", None)
        assert (args.input, args.predictor, args.batch_experiment) == ("sklearn:iris", "auto", "mlship-batch")


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


# ------------------------------------------------------------------ boundaries (mutation testing)
# What each trigger-form param accepts and refuses, as Airflow's Param checks it (JSON schema).
TRAINING_PARAMS = {
    "dataset": (["sklearn:iris", "https://h/d.csv", "d"], ["", 3, None]),
    "target": (["y"], ["", 1]),
    "task": (["auto", "classification", "regression"], ["Auto", "", "ranking"]),
    "estimator": (["auto", *estimators.names("classification"), *estimators.names("regression")],
                  ["svm", ""]),
    "hyperparameters": ([{}, {"n_estimators": 3}], [[], "x"]),
    "tune_trials": ([1, 1000], [-1, 1001, 1.5, "3", None]),
    "tune_search": (["random", "grid"], ["Grid", "", None]),
    "tune_space": ([{}, {"max_depth": [3, None]}], [[], "x"]),
    "tune_folds": ([2, 20], [1, 21, 2.5]),
    "max_parallel": ([1, 32], [0, 33, 1.5, None]),
    "seed": ([0, 42, -1], [1.5, "42", None]),
    "holdout_fraction": ([0.001, 0.5, 0.999], [0, 1, -0.1, "0.2"]),
    "validation_rules": ([{}, {"min_rows": 3}], [[], "x"]),
    "model_name": (["m"], ["", 1]),
    "metric": (["auto", *metrics.CLASSIFICATION_METRICS, *metrics.REGRESSION_METRICS], ["AUC", ""]),
    "threshold": ([None, 0, 0.8, -1.5], ["0.8", True]),
    "margin": ([0, 0.1], [-0.001, None, "0"]),
    "auto_promote": ([True, False], ["true", 1, None]),
    "reason": (["manual", ""], [None, 1]),
}
DRIFT_PARAMS = {
    "model_name": (["m"], ["", 1]),
    "alias": (["champion", "a"], ["", None]),
    "window_minutes": ([1, 1440], [0, 1.5, "60"]),
    "min_rows": ([1, 100], [0, -1, 2.5]),
    "threshold": ([0.001, 0.5, 1], [0, 1.001, "0.5"]),
    "inference_experiment": (["e"], ["", 1]),
    "report_experiment": (["e"], ["", 1]),
}


def keywords(param: dict) -> dict:
    return {k: v for k, v in param.items() if k not in ("default", "description")}


@pytest.mark.parametrize(("form", "cases"), [("training", TRAINING_PARAMS), ("drift", DRIFT_PARAMS)])
def test_each_param_accepts_its_range_and_refuses_what_is_past_it(form: str, cases: dict) -> None:
    settings = spec.settings_from_env({})
    schema = spec.params_schema(settings) if form == "training" else spec.drift_params_schema(settings)
    assert set(schema) == set(cases)
    for name, (accepted, refused) in cases.items():
        checker = jsonschema.Draft202012Validator(keywords(schema[name]))
        for value in [schema[name]["default"], *accepted]:
            assert checker.is_valid(value), (name, value)
        for value in refused:
            assert not checker.is_valid(value), (name, value)
        assert schema[name].get("description", "x"), name  # if there is help text, it says something


@pytest.mark.parametrize("step", spec.POD_STEPS)
def test_every_param_a_step_renders_is_in_its_form(step: str) -> None:
    settings = spec.settings_from_env({})
    form = form_schema(step, settings)
    used = set(re.findall(r"params\.(\w+)", " ".join(spec.step_arguments(step))))
    assert used and used <= set(form)


def test_the_training_form_has_no_param_no_step_uses() -> None:
    used = {m for step in (*spec.STEPS, *spec.contract.TUNE_STEPS)
            for m in re.findall(r"params\.(\w+)", " ".join(spec.step_arguments(step)))}
    assert used == set(spec.params_schema(spec.settings_from_env({})))


def test_the_security_contexts_are_exactly_restricted() -> None:
    assert spec.pod_security_context() == {
        "runAsNonRoot": True, "runAsUser": 10001, "runAsGroup": 10001, "fsGroup": 10001,
        "seccompProfile": {"type": "RuntimeDefault"},
    }
    assert spec.container_security_context() == {
        "runAsNonRoot": True, "runAsUser": 10001, "allowPrivilegeEscalation": False,
        "readOnlyRootFilesystem": True, "capabilities": {"drop": ["ALL"]},
        "seccompProfile": {"type": "RuntimeDefault"},
    }


def test_the_step_environment_and_labels() -> None:
    s = spec.settings_from_env({"MLSHIP_MLFLOW_TRACKING_URI": "http://m:5000", "MLSHIP_EXPERIMENT": "exp"})
    assert spec.step_env(s) == {
        "MLFLOW_TRACKING_URI": "http://m:5000", "MLSHIP_EXPERIMENT": "exp", "HOME": "/tmp",
        "TMPDIR": "/tmp", "PYTHONUNBUFFERED": "1", "MLSHIP_MLFLOW_WAIT_SECONDS": "30",
    }
    assert spec.labels("train") == {
        "app.kubernetes.io/part-of": "mlship", "app.kubernetes.io/component": "training-step",
        "mlship.io/step": "train",
    }
    assert spec.labels("drift")["app.kubernetes.io/component"] == "drift-check"


def test_the_xcom_sidecar_settings_in_full() -> None:
    s = spec.settings_from_env({"MLSHIP_IMAGE_PULL_POLICY": "Never"})
    sidecar = spec.xcom_sidecar(s, connection_image="from-connection:1")
    assert sidecar == {
        "image": "from-connection:1", "image_pull_policy": "Never",
        "resources": spec.XCOM_SIDECAR_RESOURCES, "security_context": spec.container_security_context(),
    }
    assert sidecar["resources"] is not spec.XCOM_SIDECAR_RESOURCES  # a copy the operator may change


def test_every_setting_with_nothing_configured_is_the_dataclass_default():
    assert spec.settings_from_env({}) == spec.Settings(
        images={step: f"mlship-step-{step}:dev" for step in spec.POD_STEPS})
    assert spec.Settings(images={}).experiment == "mlship"
    assert (spec.Settings(images={}).startup_timeout_seconds, spec.Settings(images={}).default_dataset) == (
        600, "sklearn:iris")


def test_every_setting_is_read_from_its_variable():
    s = spec.settings_from_env({
        "MLSHIP_EXPERIMENT": "exp", "MLSHIP_SERVICE_ACCOUNT": "runner",
        "MLSHIP_POD_STARTUP_TIMEOUT_SECONDS": "0", "MLSHIP_DEFAULT_MODEL_NAME": "wine",
        "MLSHIP_DEFAULT_DATASET": "sklearn:wine", "MLSHIP_SCHEDULE": " @hourly ",
        "MLSHIP_IMAGE_PULL_POLICY": "Always", "MLSHIP_IMAGE_PULL_SECRETS": " , ",
        "MLSHIP_IMAGE_DRIFT": "d:1",
    })
    assert (s.experiment, s.service_account, s.startup_timeout_seconds) == ("exp", "runner", 0)
    assert (s.default_model_name, s.default_dataset, s.schedule) == ("wine", "sklearn:wine", "@hourly")
    assert (s.image_pull_policy, s.image_pull_secrets, s.images["drift"]) == ("Always", (), "d:1")


@pytest.mark.parametrize("off", ["", "none", "None", "null", "NULL"])
def test_a_schedule_can_be_turned_off(off):
    assert spec.settings_from_env({"MLSHIP_SCHEDULE": off, "MLSHIP_DRIFT_SCHEDULE": off}).schedule is None
    assert spec.settings_from_env({"MLSHIP_DRIFT_SCHEDULE": off}).drift.schedule is None


@pytest.mark.parametrize(("env", "message"), [
    ({"MLSHIP_TASK_RETRIES": "-1"}, "MLSHIP_TASK_RETRIES='-1' must be >= 0"),
    ({"MLSHIP_DRIFT_THRESHOLD": "0"}, "MLSHIP_DRIFT_THRESHOLD='0' must be in (0, 1]"),
    ({"MLSHIP_DRIFT_WINDOW_MINUTES": "0"}, "MLSHIP_DRIFT_WINDOW_MINUTES=0 must be >= 1"),
    ({"MLSHIP_IMAGE_PULL_POLICY": "always"},
     "MLSHIP_IMAGE_PULL_POLICY='always': use Always|IfNotPresent|Never"),
])
def test_settings_edges_refused_in_full(env, message):
    with pytest.raises(spec.SettingsError) as err:
        spec.settings_from_env(env)
    assert str(err.value) == message


def test_settings_edges_accepted():
    d = spec.settings_from_env({"MLSHIP_DRIFT_THRESHOLD": "1", "MLSHIP_DRIFT_WINDOW_MINUTES": "1",
                                "MLSHIP_DRIFT_MIN_ROWS": "1", "MLSHIP_TASK_RETRIES": "0"})
    assert (d.drift.threshold, d.drift.window_minutes, d.drift.min_rows, d.retries) == (1.0, 1, 1, 0)


def test_the_training_forms_defaults():
    form = spec.params_schema(spec.settings_from_env({}))
    assert {name: p["default"] for name, p in form.items()} == {
        "dataset": "sklearn:iris", "target": "target", "task": "auto", "estimator": "auto",
        "hyperparameters": {}, "seed": 42, "holdout_fraction": 0.2, "validation_rules": {},
        "model_name": "iris", "metric": "auto", "threshold": None, "margin": 0.0, "auto_promote": True,
        "reason": "manual", "tune_trials": 0, "tune_search": "random", "tune_space": {}, "tune_folds": 3,
        "max_parallel": 4,
    }


def test_every_bad_setting_is_named_at_once():
    with pytest.raises(spec.SettingsError) as err:
        spec.settings_from_env({
            "MLSHIP_RETRY_DELAY_SECONDS": "soon", "MLSHIP_POD_STARTUP_TIMEOUT_SECONDS": "-1",
            "MLSHIP_DRIFT_WINDOW_MINUTES": "x", "MLSHIP_DRIFT_MIN_ROWS": "y",
        })
    for part in ("MLSHIP_RETRY_DELAY_SECONDS='soon' is not an integer",
                 "MLSHIP_POD_STARTUP_TIMEOUT_SECONDS='-1' must be >= 0",
                 "MLSHIP_DRIFT_WINDOW_MINUTES='x' is not an integer",
                 "MLSHIP_DRIFT_MIN_ROWS='y' is not an integer"):
        assert part in str(err.value).split("; ")


def test_drift_settings_collect_their_problems_when_asked_and_raise_otherwise():
    errs: list[str] = []
    d = spec.drift_settings_from_env({"MLSHIP_DRIFT_THRESHOLD": "high", "MLSHIP_DRIFT_MIN_ROWS": "0"}, errs)
    assert errs == ["MLSHIP_DRIFT_THRESHOLD='high' is not a number", "MLSHIP_DRIFT_MIN_ROWS=0 must be >= 1"]
    assert d.threshold == 0.5  # the default stands in for what could not be read
    with pytest.raises(spec.SettingsError) as err:
        spec.drift_settings_from_env({"MLSHIP_DRIFT_THRESHOLD": "high", "MLSHIP_DRIFT_MIN_ROWS": "0"})
    assert str(err.value) == "; ".join(errs)
    assert spec.drift_settings_from_env({}, []) == spec.DriftSettings()


def test_the_source_steps_are_ingest_and_score():
    assert spec.SOURCE_STEPS == ("ingest", "score")
    assert set(spec.SOURCE_STEPS) <= set(spec.POD_STEPS)


def test_the_source_headers_secret_goes_to_the_source_steps_only():
    s = spec.settings_from_env({"MLSHIP_SOURCE_HEADERS_SECRET": " api-headers "})
    assert (s.source_headers_secret, s.source_headers_secret_key) == ("api-headers", "headers.json")
    for step in ("ingest", "score"):
        assert spec.step_secret_env(s, step) == {
            "MLSHIP_SOURCE_HEADERS": spec.SecretEnv("api-headers", "headers.json")}, step
    for step in spec.POD_STEPS:
        if step not in ("ingest", "score"):
            assert spec.step_secret_env(s, step) == {}, step
    keyed = spec.settings_from_env(
        {"MLSHIP_SOURCE_HEADERS_SECRET": "h", "MLSHIP_SOURCE_HEADERS_SECRET_KEY": "k.json"})
    assert spec.step_secret_env(keyed, "ingest") == {"MLSHIP_SOURCE_HEADERS": spec.SecretEnv("h", "k.json")}
    # the plain environment never holds it
    assert "MLSHIP_SOURCE_HEADERS" not in spec.step_env(keyed)


@pytest.mark.parametrize("unset", [
    {}, {"MLSHIP_SOURCE_HEADERS_SECRET": ""},
    {"MLSHIP_SOURCE_HEADERS_SECRET": " ", "MLSHIP_SOURCE_HEADERS_SECRET_KEY": ""},
])
def test_no_source_headers_secret_no_secret_env(unset):
    s = spec.settings_from_env(unset)
    assert (s.source_headers_secret, s.source_headers_secret_key) == (None, "headers.json")
    assert all(spec.step_secret_env(s, step) == {} for step in spec.POD_STEPS)


@pytest.mark.parametrize(("env", "message"), [
    ({"MLSHIP_SOURCE_HEADERS_SECRET": "Api_Headers"},
     "MLSHIP_SOURCE_HEADERS_SECRET='Api_Headers' is not a Secret name"),
    ({"MLSHIP_SOURCE_HEADERS_SECRET": "h", "MLSHIP_SOURCE_HEADERS_SECRET_KEY": "a/b"},
     "MLSHIP_SOURCE_HEADERS_SECRET_KEY='a/b' is not a Secret key"),
])
def test_a_bad_source_headers_secret_is_named(env, message):
    with pytest.raises(spec.SettingsError) as err:
        spec.settings_from_env(env)
    assert str(err.value) == message


def test_the_alert_webhook_secret_goes_to_register_and_drift_only():
    s = spec.settings_from_env({"MLSHIP_ALERT_WEBHOOK_SECRET": " hook ",
                                "MLSHIP_SOURCE_HEADERS_SECRET": "api-headers"})  # fmt: skip
    assert spec.ALERT_STEPS == ("register", "drift")
    for step in spec.POD_STEPS:
        got = spec.step_secret_env(s, step)
        if step in ("register", "drift"):
            assert got == {"MLSHIP_ALERT_WEBHOOK_URL": spec.SecretEnv("hook", "url")}, step
        else:
            assert "MLSHIP_ALERT_WEBHOOK_URL" not in got, step
    keyed = spec.settings_from_env({"MLSHIP_ALERT_WEBHOOK_SECRET": "h",
                                    "MLSHIP_ALERT_WEBHOOK_SECRET_KEY": "slack"})  # fmt: skip
    assert spec.step_secret_env(keyed, "drift") == {"MLSHIP_ALERT_WEBHOOK_URL": spec.SecretEnv("h", "slack")}
    assert all(spec.step_secret_env(spec.settings_from_env({}), step) == {} for step in spec.POD_STEPS)


def test_the_ui_urls_for_alert_links_reach_every_step_when_set():
    assert "MLSHIP_AIRFLOW_UI_URL" not in spec.step_env(spec.settings_from_env({}))
    s = spec.settings_from_env({"MLSHIP_MLFLOW_UI_URL": "https://mlflow.example.com",
                                "MLSHIP_AIRFLOW_UI_URL": " http://localhost:8080 "})  # fmt: skip
    env = spec.step_env(s)
    assert (env["MLSHIP_MLFLOW_UI_URL"], env["MLSHIP_AIRFLOW_UI_URL"]) == (
        "https://mlflow.example.com", "http://localhost:8080")


@pytest.mark.parametrize(("env", "message"), [
    ({"MLSHIP_ALERT_WEBHOOK_SECRET": "Hook_1"}, "MLSHIP_ALERT_WEBHOOK_SECRET='Hook_1' is not a Secret name"),
    ({"MLSHIP_ALERT_WEBHOOK_SECRET_KEY": "a/b"}, "MLSHIP_ALERT_WEBHOOK_SECRET_KEY='a/b' is not a Secret key"),
    ({"MLSHIP_AIRFLOW_UI_URL": "airflow:8080"}, "MLSHIP_AIRFLOW_UI_URL='airflow:8080' is not an http(s) URL"),
])
def test_bad_alert_settings_are_named(env, message):
    with pytest.raises(spec.SettingsError) as err:
        spec.settings_from_env(env)
    assert str(err.value) == message


def test_the_source_credentials_secret_is_the_source_steps_env_from_only():
    s = spec.settings_from_env({"MLSHIP_SOURCE_CREDENTIALS_SECRET": " cloud-creds "})
    assert s.source_credentials_secret == "cloud-creds"  # noqa: S105 - a Secret's name
    for step in spec.POD_STEPS:
        expected = ("cloud-creds",) if step in ("ingest", "score") else ()
        assert spec.step_env_from_secrets(s, step) == expected, step
        # it is no single variable, and the headers Secret stays unset
        assert spec.step_secret_env(s, step) == {}, step
    assert "cloud-creds" not in spec.step_env(s).values()


@pytest.mark.parametrize("unset", [{}, {"MLSHIP_SOURCE_CREDENTIALS_SECRET": ""},
                                   {"MLSHIP_SOURCE_CREDENTIALS_SECRET": "  "}])
def test_no_source_credentials_secret_no_env_from(unset):
    s = spec.settings_from_env(unset)
    assert s.source_credentials_secret is None
    assert all(spec.step_env_from_secrets(s, step) == () for step in spec.POD_STEPS)


def test_a_bad_source_credentials_secret_is_named_with_the_others():
    with pytest.raises(spec.SettingsError) as err:
        spec.settings_from_env({"MLSHIP_SOURCE_CREDENTIALS_SECRET": "Cloud_Creds",
                                "MLSHIP_SOURCE_HEADERS_SECRET": "Api_Headers"})
    assert str(err.value) == (
        "MLSHIP_SOURCE_HEADERS_SECRET='Api_Headers' is not a Secret name; "
        "MLSHIP_SOURCE_CREDENTIALS_SECRET='Cloud_Creds' is not a Secret name")


# ------------------------------------------------------------------ the hyperparameter search

def test_the_search_steps_run_mlship_steps_tune_from_trains_image_and_resources() -> None:
    settings = spec.settings_from_env({"MLSHIP_IMAGE_TRAIN": "r/train:1"})
    for step in spec.contract.TUNE_STEPS:
        assert spec.step_command(step) == ["python", "-m", "mlship.steps.tune"]
        assert spec.image_step(step) == "train"
        assert settings.images[spec.image_step(step)] == "r/train:1"
    assert spec.image_step("evaluate") == "evaluate"


@pytest.mark.parametrize(("trials", "wanted"), [(0, False), (None, False), (1, True), (40, True)])
def test_the_search_runs_only_when_trials_are_asked_for(trials, wanted) -> None:
    assert spec.tune_requested({"tune_trials": trials}) is wanted
    assert spec.tune_requested({}) is False


def test_the_search_steps_rendered_arguments_parse_with_the_tune_cli(monkeypatch) -> None:
    from mlship.steps import train, tune

    params = default_params(tune_trials=6, tune_search="grid", tune_space={"C": [0.1, 1]},
                            max_parallel=2, hyperparameters={"max_iter": 50})
    plan = tune.build().parse_args(render(spec.step_arguments("tune_plan"), params))
    assert plan.command == "plan"
    assert (plan.trials, plan.search, plan.space, plan.max_parallel, plan.folds) == (
        6, "grid", {"C": [0.1, 1]}, 2, 3)
    assert plan.hyperparameters == {"max_iter": 50}
    assert plan.train_uri == XCOMS["featurize"]["train_uri"]
    monkeypatch.setitem(XCOMS, "tune_plan", PLAN)
    best = tune.build().parse_args(render(spec.step_arguments("tune_best"), params))
    assert best.command == "best" and best.plan == PLAN
    assert tune.search_run_id(best.plan) == ("s1", 1)
    monkeypatch.setitem(XCOMS, "tune_best", {"hyperparameters": {"C": 1, "max_iter": 50}})
    args = train.build().parse_args(render(spec.step_arguments("train"), params))
    assert args.tuned_hyperparameters == {"C": 1, "max_iter": 50}

