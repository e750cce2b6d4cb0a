"""mlship.contract is the one statement of the step contract: the local runner's commands, the
DAG's pod arguments and trigger forms, the step CLIs' defaults and the chart's defaults all agree
with it, and the names it copies from mlship.ml are mlship.ml's."""

from __future__ import annotations

import argparse
import ast
import importlib
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from mlship import cli, contract
from mlship.ml import datasets, estimators, metrics
from mlship.monitoring import drift

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT / "dags"))
import mlship_dagspec as spec  # noqa: E402

pytestmark = pytest.mark.unit

POD_STEPS = (*contract.STEPS, contract.DRIFT, contract.SCORE)
# the training pipeline's steps in the order they run when a search runs too
SEARCH_ORDER = (*contract.STEPS[:3], *contract.TUNE_STEPS, *contract.STEPS[3:])
RESULTS = {
    "ingest": {"dataset_uri": "runs:/i/data/dataset.parquet", "task": "regression",
               "dataset_digest": "ab" * 16},
    "featurize": {"train_uri": "runs:/f/features/train.parquet",
                  "holdout_uri": "runs:/f/features/holdout.parquet",
                  "features_uri": "runs:/f/features/features.json"},
    "train": {"model_uri": "models:/m-1"},
    "evaluate": {"evaluation_uri": "runs:/e/evaluation/evaluation.json"},
    "tune_plan": [["trial", "--search-run-id", "s", "--share", "[]"]],
    "tune_best": {"hyperparameters": {"max_depth": 5}},
}


# --- the contract itself ------------------------------------------------------------------------

def test_the_contract_imports_nothing_but_the_standard_library_and_names() -> None:
    tree = ast.parse((ROOT / "src/mlship/contract.py").read_text())
    imported = {
        (node.module if isinstance(node, ast.ImportFrom) else alias.name) or ""
        for node in ast.walk(tree) if isinstance(node, ast.Import | ast.ImportFrom)
        for alias in node.names
    } - {"mutmut.mutation.trampoline"}  # what mutation testing adds to a mutant
    assert imported == {"__future__", "copy", "json", "collections.abc", "dataclasses", "typing", "mlship"}
    assert [a.name for n in ast.walk(tree) if isinstance(n, ast.ImportFrom) and n.module == "mlship"
            for a in n.names] == ["names"]


def test_the_dag_spec_loads_no_ml_library_as_the_dag_processor_imports_it() -> None:
    """The Airflow image has no pandas, scikit-learn, numpy or MLflow: neither the contract nor
    the DAG spec may pull one in, through a package __init__ or otherwise."""
    probe = (
        "import sys; sys.path.insert(0, sys.argv[1]); import mlship_dagspec, mlship.contract; "
        "print(sorted({m.split('.')[0] for m in sys.modules} & "
        "{'pandas', 'sklearn', 'numpy', 'mlflow', 'scipy'}))"
    )
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)}  # the modules this session sees
    out = subprocess.run([sys.executable, "-c", probe, str(ROOT / "dags")],
                         capture_output=True, text=True, check=True, timeout=60, env=env)
    assert out.stdout.strip() == "[]", out.stderr


def test_steps_read_only_their_form_and_the_results_of_earlier_steps() -> None:
    assert set(contract.INPUTS) == set(POD_STEPS) | set(contract.TUNE_STEPS)
    for n, step in enumerate(SEARCH_ORDER):
        for i in contract.INPUTS[step]:
            if i.source == contract.FORM:
                assert i.name in contract.TRAINING_FORM, (step, i)
            else:
                assert i.source in SEARCH_ORDER[:n], (step, i)  # an earlier step
                # a key that step returns, or the whole result (the plan, for best)
                assert i.name == contract.WHOLE or i.name in RESULTS[i.source], (step, i)
                # a search step's result is optional to the pipeline's steps: it may not run
                assert i.optional == (i.source in contract.TUNE_STEPS and step in contract.STEPS)
    assert {i.source for i in contract.INPUTS[contract.DRIFT]} == {contract.FORM}
    assert {i.source for i in contract.INPUTS[contract.SCORE]} == {contract.FORM}
    for step in (*POD_STEPS, *contract.TUNE_STEPS):
        flags = [i.flag for i in contract.INPUTS[step]]
        assert len(flags) == len(set(flags)), step


def test_every_form_field_is_read_by_some_step() -> None:
    used = {i.name for s in SEARCH_ORDER for i in contract.INPUTS[s] if i.source == contract.FORM}
    assert used == set(contract.TRAINING_FORM)
    assert {i.name for i in contract.INPUTS[contract.DRIFT]} == set(contract.DRIFT_FORM)
    assert contract.form(contract.DRIFT) is contract.DRIFT_FORM
    assert {i.name for i in contract.INPUTS[contract.SCORE]} == set(contract.BATCH_FORM)
    assert contract.form(contract.SCORE) is contract.BATCH_FORM
    assert all(contract.form(s) is contract.TRAINING_FORM for s in contract.STEPS)


def test_the_form_defaults() -> None:
    assert {n: f.default for n, f in contract.TRAINING_FORM.items()} == {
        "dataset": "sklearn:iris", "target": "target", "task": "auto", "estimator": "auto",
        "hyperparameters": {}, "seed": 42, "holdout_fraction": 0.2, "validation_rules": {},
        "tune_trials": 0, "tune_search": "random", "tune_space": {}, "tune_folds": 3, "max_parallel": 4,
        "model_name": "iris", "metric": "auto", "threshold": None, "margin": 0.0, "auto_promote": True,
        "reason": "manual",
    }
    assert {n: f.default for n, f in contract.DRIFT_FORM.items()} == {
        "model_name": "iris", "alias": "champion", "window_minutes": 60, "min_rows": 100,
        "threshold": 0.5, "inference_experiment": "mlship-inference", "report_experiment": "mlship-drift",
    }
    assert contract.JSON_FLAGS == ("--rules", "--hyperparameters", "--space")
    assert contract.TRAINING_FORM["tune_search"].schema["enum"] == ["random", "grid"]


def test_a_step_default_is_a_fresh_copy_of_its_form_fields() -> None:
    rules = contract.default("validate", "--rules")
    rules["min_rows"] = 3
    assert contract.default("validate", "--rules") == {} == contract.TRAINING_FORM["validation_rules"].default
    assert contract.default("drift", "--threshold") == 0.5
    for step, flag in (("validate", "--task"), ("train", "--no-such-flag"), ("drift", "--seed")):
        with pytest.raises(KeyError, match=f"{flag} is not a form input of {step}"):
            contract.default(step, flag)  # a result, or not the step's


@pytest.mark.parametrize(("value", "text"), [
    (None, "none"), (True, "true"), (False, "false"), ({}, "{}"), ({"a": [1]}, '{"a": [1]}'),
    ([], "[]"), (42, "42"), (0.2, "0.2"), (0.0, "0.0"), ("sklearn:iris", "sklearn:iris"),
])
def test_cli_text(value, text) -> None:
    assert contract.cli_text(value) == text


def step_module(step: str):
    return importlib.import_module(cli.step_module(step))


def test_cli_text_of_every_default_reads_back_as_the_default() -> None:
    for step in (*POD_STEPS, contract.TUNE_PLAN):
        parser = step_module(step).build()
        actions = {o: a for a in parser._actions for o in a.option_strings}
        for i in contract.INPUTS[step]:
            if i.source == contract.FORM:
                field = contract.form(step)[i.name]
                convert = actions[i.flag].type or str
                assert convert(contract.cli_text(field.default)) == field.default, (step, i.flag)


# --- the names it shares with mlship.ml --------------------------------------------------------

def test_task_estimator_and_metric_names_are_mlship_mls() -> None:
    from mlship.ml import tuning

    assert contract.TUNE_SEARCHES == tuning.SEARCHES
    assert contract.TRAINING_FORM["tune_trials"].schema["maximum"] == tuning.MAX_TRIALS
    assert contract.TASKS == datasets.TASKS
    for task in contract.TASKS:
        assert contract.ESTIMATORS[task] == tuple(estimators.REGISTRY[task]), task
        assert set(contract.ESTIMATORS[task]) == set(estimators.names(task)), task
        assert contract.METRICS[task] == metrics.metric_names(task), task
    assert contract.METRICS == {"classification": metrics.CLASSIFICATION_METRICS,
                                "regression": metrics.REGRESSION_METRICS}
    assert set(contract.ESTIMATORS) == set(estimators.REGISTRY) == set(contract.METRICS)


def test_the_batch_forms_predictors_are_auto_and_mlflow_ios() -> None:
    from mlship.mlflow_io import compiled

    assert contract.PREDICTORS == (contract.AUTO, compiled.COMPILED, compiled.SKLEARN)


def test_the_forms_choices_are_auto_and_those_names() -> None:
    form = contract.TRAINING_FORM
    assert form["task"].schema["enum"] == ["auto", *datasets.TASKS]
    assert form["estimator"].schema["enum"] == [
        "auto", "random_forest", "gradient_boosting", "logistic_regression", "ridge", "linear"]
    assert set(form["estimator"].schema["enum"]) == {"auto"} | {
        n for task in estimators.REGISTRY for n in estimators.REGISTRY[task]}
    assert form["metric"].schema["enum"] == [
        "auto", *metrics.CLASSIFICATION_METRICS, *metrics.REGRESSION_METRICS]
    default = estimators.DEFAULT_ESTIMATOR
    assert form["estimator"].description == (
        f"auto: {default['classification']} (classification) or {default['regression']} (regression)")


def test_the_drift_statistics_default_threshold_is_the_forms() -> None:
    assert drift.DEFAULT_THRESHOLD == contract.DRIFT_FORM["threshold"].default


# --- the chart ----------------------------------------------------------------------------------

def test_the_charts_defaults_are_the_contracts() -> None:
    values = yaml.safe_load((ROOT / "charts/mlship/values.yaml").read_text())
    schema = json.loads((ROOT / "charts/mlship/values.schema.json").read_text())["properties"]
    drift_form = {n: f.default for n, f in contract.DRIFT_FORM.items()}
    chart_drift = {
        "alias": "alias", "windowMinutes": "window_minutes", "minRows": "min_rows",
        "threshold": "threshold", "inferenceExperiment": "inference_experiment",
        "reportExperiment": "report_experiment",
    }
    for key, name in chart_drift.items():
        assert values["drift"][key] == drift_form[name], key
        assert schema["drift"]["properties"][key]["default"] == drift_form[name], key
    form = contract.TRAINING_FORM
    for key, name in (("defaultDataset", "dataset"), ("defaultModelName", "model_name")):
        assert values["pipeline"][key] == form[name].default, key
        assert schema["pipeline"]["properties"][key]["default"] == form[name].default, key
    assert list(values["pipeline"]["images"]) == list(POD_STEPS)  # an image per step


# --- what is rendered from it ------------------------------------------------------------------

def expected_pod_arguments(step: str) -> list[str]:
    out = [contract.TUNE_COMMANDS[step]] if step in contract.TUNE_STEPS else []
    for i in contract.INPUTS[step]:
        pull = "ti.xcom_pull(task_ids='%s')" % i.source  # noqa: UP031 - Jinja braces
        if i.source == contract.FORM:
            pipe = " | tojson" if contract.form(step)[i.name].json else ""
            out += [i.flag, "{{ params.%s%s }}" % (i.name, pipe)]  # noqa: UP031 - Jinja braces
        elif i.name == contract.WHOLE:
            out += [i.flag, "{{ %s | tojson }}" % pull]  # noqa: UP031
        elif i.optional:
            out += [i.flag, "{{ (%s or {}).get('%s') | tojson }}" % (pull, i.name)]  # noqa: UP031
        else:
            out += [i.flag, "{{ %s['%s'] }}" % (pull, i.name)]  # noqa: UP031
    return [*out, "--pipeline-run-key", "{{ run_id }}", "--xcom-path", spec.XCOM_PATH]


@pytest.mark.parametrize("step", (*POD_STEPS, contract.TUNE_PLAN, contract.TUNE_BEST))
def test_the_dags_pod_arguments_are_the_contracts_inputs(step: str) -> None:
    assert spec.step_arguments(step) == expected_pod_arguments(step)
    assert spec.POD_STEPS == POD_STEPS and spec.STEPS == contract.STEPS


def test_the_dags_trigger_forms_are_the_contracts_fields() -> None:
    settings = spec.settings_from_env({})
    for form, params in ((contract.TRAINING_FORM, spec.params_schema(settings)),
                         (contract.DRIFT_FORM, spec.drift_params_schema(settings))):
        assert list(params) == list(form)  # the form's order is the UI's
        for name, field in form.items():
            described = {"description": field.description} if field.description else {}
            assert params[name] == {"default": field.default, **field.schema, **described}, name
    fresh = spec.params_schema(settings)
    fresh["hyperparameters"]["default"]["x"] = 1
    fresh["estimator"]["enum"].append("svm")
    assert contract.TRAINING_FORM["hyperparameters"].default == {}  # handed out as copies
    assert "svm" not in contract.TRAINING_FORM["estimator"].schema["enum"]


def test_the_chart_configured_fields_take_the_settings_defaults() -> None:
    settings = spec.settings_from_env({
        "MLSHIP_DEFAULT_DATASET": "sklearn:wine", "MLSHIP_DEFAULT_MODEL_NAME": "wine",
        "MLSHIP_DRIFT_ALIAS": "prod", "MLSHIP_DRIFT_WINDOW_MINUTES": "5", "MLSHIP_DRIFT_MIN_ROWS": "7",
        "MLSHIP_DRIFT_THRESHOLD": "0.25", "MLSHIP_INFERENCE_LOG_EXPERIMENT": "in",
        "MLSHIP_DRIFT_EXPERIMENT": "out",
    })
    training = {n: p["default"] for n, p in spec.params_schema(settings).items()}
    assert (training["dataset"], training["model_name"]) == ("sklearn:wine", "wine")
    assert {n: d for n, d in training.items() if n not in ("dataset", "model_name")} == {
        n: f.default for n, f in contract.TRAINING_FORM.items() if n not in ("dataset", "model_name")}
    assert {n: p["default"] for n, p in spec.drift_params_schema(settings).items()} == {
        "model_name": "wine", "alias": "prod", "window_minutes": 5, "min_rows": 7, "threshold": 0.25,
        "inference_experiment": "in", "report_experiment": "out",
    }


def test_unconfigured_settings_are_the_contracts_defaults() -> None:
    s = spec.settings_from_env({})
    assert (s.default_dataset, s.default_model_name) == (
        contract.TRAINING_FORM["dataset"].default, contract.TRAINING_FORM["model_name"].default)
    d = spec.DriftSettings()
    assert (d.alias, d.window_minutes, d.min_rows, d.threshold, d.inference_experiment,
            d.report_experiment) == tuple(
        contract.DRIFT_FORM[n].default for n in ("alias", "window_minutes", "min_rows", "threshold",
                                                 "inference_experiment", "report_experiment"))


def local_commands(*flags: str) -> dict[str, list[str]]:
    args = cli.build_parser().parse_args(["run", "--dataset", "data/houses.csv", *flags])
    return cli.step_commands(args, RESULTS)


def expected_local_flags(step: str, form: dict[str, str]) -> list[str]:
    out = []
    for i in contract.INPUTS[step]:
        if i.source == contract.FORM:
            value = form[i.name]
        elif i.name == contract.WHOLE:
            value = json.dumps(RESULTS[i.source])
        elif i.optional:
            value = json.dumps(RESULTS[i.source][i.name])
        else:
            value = RESULTS[i.source][i.name]
        out += [i.flag, value]
    return out


LOCAL_STEPS = (*contract.STEPS, contract.TUNE_PLAN, contract.TUNE_BEST)


@pytest.mark.parametrize("step", LOCAL_STEPS)
def test_the_local_runners_commands_are_the_contracts_inputs_with_its_defaults(step: str) -> None:
    defaults = {n: contract.cli_text(f.default) for n, f in contract.TRAINING_FORM.items()}
    form = {**defaults, "dataset": "data/houses.csv", "model_name": "houses"}  # the dataset's name
    assert local_commands()[step] == expected_local_flags(step, form)


@pytest.mark.parametrize("step", LOCAL_STEPS)
def test_the_local_runners_flags_fill_the_form(step: str) -> None:
    form = {
        "dataset": "data/houses.csv", "target": "price", "task": "regression", "estimator": "ridge",
        "hyperparameters": "@hp.json", "seed": "7", "holdout_fraction": "0.3",
        "validation_rules": '{"min_rows": 3}', "model_name": "m", "metric": "r2", "threshold": "0.5",
        "margin": "0.1", "auto_promote": "false", "reason": "manual", "tune_trials": "5",
        "tune_search": "grid", "tune_space": '{"alpha": [1, 2]}', "tune_folds": "4", "max_parallel": "2",
    }
    assert set(form) == set(contract.TRAINING_FORM)
    commands = local_commands(
        "--target", "price", "--task", "regression", "--estimator", "ridge", "--hyperparameters",
        "@hp.json", "--seed", "7", "--holdout-fraction", "0.3", "--rules", '{"min_rows": 3}',
        "--model-name", "m", "--metric", "r2", "--threshold", "0.5", "--margin", "0.1",
        "--no-auto-promote", "--tune-trials", "5", "--tune-search", "grid", "--tune-space",
        '{"alpha": [1, 2]}', "--tune-folds", "4", "--max-parallel", "2",
    )
    assert commands[step] == expected_local_flags(step, form)


def test_a_result_not_there_yet_renders_empty_and_no_search_renders_null() -> None:
    args = cli.build_parser().parse_args(["run", "--dataset", "sklearn:iris"])
    train = cli.step_commands(args, {})["train"]
    assert train[train.index("--tuned-hyperparameters") + 1] == "null"
    validate = cli.step_commands(args, {})["validate"]
    assert validate[validate.index("--dataset-uri") + 1] == "" == validate[validate.index("--task") + 1]


@pytest.mark.parametrize("step", (*POD_STEPS, *contract.TUNE_STEPS))
def test_each_step_clis_flags_and_defaults_are_the_contracts(step: str) -> None:
    parser: argparse.ArgumentParser = step_module(step).build()
    actions = {o: a for a in parser._actions for o in a.option_strings}
    for i in contract.INPUTS[step]:
        assert i.flag in actions, (step, i.flag)
        if i.source == contract.FORM and actions[i.flag].required:
            # the fields whose default each install sets (the chart's defaultDataset and
            # defaultModelName): a step is always told them
            assert i.name in ("dataset", "model_name"), (step, i.flag)
        elif i.source == contract.FORM:
            assert actions[i.flag].default == contract.form(step)[i.name].default, (step, i.flag)
        elif i.optional:
            assert actions[i.flag].default is None, (step, i.flag)  # null: its step did not run
        elif step in contract.TUNE_STEPS:
            # one parser for the search's commands: each checks its own when it runs
            assert actions[i.flag].default is None, (step, i.flag)
        else:
            assert actions[i.flag].required, (step, i.flag)  # nothing to default to
