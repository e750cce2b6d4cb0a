"""The step contract, said once: the pipeline's steps in order, each step's inputs (its flags),
where each input comes from (a field of the trigger form, or a key of an earlier step's result),
and the form's fields with their defaults and types.

Everything else is rendered from it: `mlship run`'s step commands (mlship.cli), the DAGs' pod
arguments and trigger-form Params (dags/mlship_dagspec.py), and the defaults of the step CLIs'
flags (mlship.steps.*). The chart's defaults (charts/mlship/values.yaml) are held to it by
tests/unit/test_contract.py.

Dependency-free on purpose (the standard library and mlship.names): Airflow's DAG processor
imports it, and the Airflow image has no pandas, scikit-learn or MLflow. That is why the task,
estimator and metric names are written here as well as in mlship.ml, which uses them; a unit
test holds the two equal.
"""

from __future__ import annotations

import copy
import json
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from mlship import names

STEPS: tuple[str, ...] = ("ingest", "validate", "featurize", "train", "evaluate", "register")
"""The training pipeline's steps, in order; each reads only results of the steps before it."""
DRIFT = "drift"
"""mlship_drift's check: a step of its own DAG, with its own form."""
SCORE = "score"
"""mlship_batch_score's step: scores a dataset with a model version; its own DAG and form."""
TUNE_PLAN, TUNE_TRIAL, TUNE_BEST = "tune_plan", "tune_trial", "tune_best"
TUNE_STEPS: tuple[str, ...] = (TUNE_PLAN, TUNE_TRIAL, TUNE_BEST)
"""The hyperparameter search between featurize and train, run only when the form's tune_trials
is above 0: plan the trials (and open the search's MLflow run), run them (one pod per share of
the trials, mapped), pick the best. Each is a command of one module run from train's image:
`python -m mlship.steps.tune plan|trial|best` (TUNE_COMMANDS)."""
TUNE_MODULE = "tune"
TUNE_COMMANDS: dict[str, str] = {TUNE_PLAN: "plan", TUNE_TRIAL: "trial", TUNE_BEST: "best"}
TUNE_SEARCHES: tuple[str, ...] = ("random", "grid")  # mlship.ml.tuning.SEARCHES

# --- names the form offers (mlship.ml's, written here so the DAG processor needs no sklearn) ----

TASKS: tuple[str, ...] = ("classification", "regression")  # mlship.ml.datasets.TASKS
ESTIMATORS: dict[str, tuple[str, ...]] = {  # mlship.ml.estimators.REGISTRY
    "classification": ("random_forest", "gradient_boosting", "logistic_regression"),
    "regression": ("random_forest", "gradient_boosting", "ridge", "linear"),
}
METRICS: dict[str, tuple[str, ...]] = {  # mlship.ml.metrics.*_METRICS
    "classification": ("accuracy", "f1", "roc_auc"),
    "regression": ("rmse", "mae", "r2"),
}
AUTO = "auto"
"""The task, estimator or metric chosen per task when none is named."""
PREDICTORS: tuple[str, ...] = (AUTO, "compiled", "sklearn")  # mlship.mlflow_io.compiled's, and auto


def choices(by_task: Mapping[str, tuple[str, ...]]) -> list[str]:
    """`auto`, then every task's names once, in order."""
    return [AUTO, *dict.fromkeys(n for task in TASKS for n in by_task[task])]


# --- the trigger forms -------------------------------------------------------------------------


@dataclass(frozen=True)
class Field:
    """A field of a trigger form: its default, the JSON-schema keywords it is checked with (Airflow's
    Param), its help text, and whether a step gets it as JSON text."""

    default: Any
    schema: Mapping[str, Any]
    description: str = ""
    json: bool = False


TRAINING_FORM: dict[str, Field] = {
    "dataset": Field(
        "sklearn:iris", {"type": "string", "minLength": 1},
        "sklearn:iris|wine|breast_cancer|diabetes, a CSV/Parquet http(s) URL, a JSON API: "
        "json+https://host/path#records=<path>&columns=<name>:<path>,..., or a DVC-tracked "
        "CSV/Parquet: dvc:<git repo>#<path>[@<rev>]",
    ),
    "target": Field("target", {"type": "string", "minLength": 1}, "target column"),
    "task": Field(AUTO, {"type": "string", "enum": [AUTO, *TASKS]}),
    "estimator": Field(
        AUTO, {"type": "string", "enum": choices(ESTIMATORS)},
        "auto: random_forest (classification) or ridge (regression)",
    ),
    "hyperparameters": Field(
        {}, {"type": "object"}, 'e.g. {"n_estimators": 200, "max_depth": 5}', json=True
    ),
    "tune_trials": Field(
        0, {"type": "integer", "minimum": 0, "maximum": 1000},
        "hyperparameter search: how many trials (0: no search, train uses the hyperparameters "
        "above); each trial cross-validates on the training split and is a child MLflow run",
    ),
    "tune_search": Field(
        "random", {"type": "string", "enum": list(TUNE_SEARCHES)},
        "random: tune_trials seeded draws from tune_space; grid: all of its combinations "
        "(refused when there are more than tune_trials)",
    ),
    "tune_space": Field(
        {}, {"type": "object"},
        'hyperparameter -> values to try, e.g. {"max_depth": [3, 5, null]}; {} = the '
        "estimator's default space. The hyperparameters above stay fixed in every trial",
        json=True,
    ),
    "tune_folds": Field(3, {"type": "integer", "minimum": 2, "maximum": 20}, "cross-validation folds"),
    "max_parallel": Field(
        4, {"type": "integer", "minimum": 1, "maximum": 32},
        "search pods running at once; more trials than this share the pods",
    ),
    "seed": Field(42, {"type": "integer"}),
    "holdout_fraction": Field(0.2, {"type": "number", "exclusiveMinimum": 0, "exclusiveMaximum": 1}),
    "validation_rules": Field(
        {}, {"type": "object"}, "see mlship.validation; {} = no nulls allowed", json=True
    ),
    "model_name": Field("iris", {"type": "string", "minLength": 1}),
    "metric": Field(AUTO, {"type": "string", "enum": choices(METRICS)}),
    "threshold": Field(
        None, {"type": ["null", "number"]}, "quality bar for the metric (max for rmse/mae)"
    ),
    "margin": Field(
        0.0, {"type": "number", "minimum": 0}, "how much better than the champion to replace it"
    ),
    "auto_promote": Field(True, {"type": "boolean"}, "move the champion alias automatically"),
    "reason": Field(
        "manual", {"type": "string"},
        "why this run was started (mlship_drift says which drift)",
    ),
}
"""mlship_training's trigger form; `mlship run` fills the same fields from its flags."""

DRIFT_FORM: dict[str, Field] = {
    "model_name": Field(TRAINING_FORM["model_name"].default, {"type": "string", "minLength": 1}),
    "alias": Field(
        names.CHAMPION, {"type": "string", "minLength": 1},
        "alias of the served version whose inputs are checked",
    ),
    "window_minutes": Field(
        60, {"type": "integer", "minimum": 1}, "how far back recent inputs go"
    ),
    "min_rows": Field(
        100, {"type": "integer", "minimum": 1},
        "fewer recent inputs: not enough data, nothing is done",
    ),
    "threshold": Field(
        0.5, {"type": "number", "exclusiveMinimum": 0, "maximum": 1},
        "share of drifted features that triggers mlship_training",
    ),
    "inference_experiment": Field(names.EXPERIMENT_INFERENCE, {"type": "string", "minLength": 1}),
    "report_experiment": Field(names.EXPERIMENT_DRIFT, {"type": "string", "minLength": 1}),
}
"""mlship_drift's trigger form."""

BATCH_FORM: dict[str, Field] = {
    "model_name": Field(TRAINING_FORM["model_name"].default, {"type": "string", "minLength": 1}),
    "alias": Field(
        names.CHAMPION, {"type": "string", "minLength": 1},
        "alias of the version to score with, unless a version is given",
    ),
    "version": Field(
        None, {"type": ["null", "integer"], "minimum": 1}, "a version number (null: the alias's)"
    ),
    "input": Field(
        "sklearn:iris", {"type": "string", "minLength": 1},
        "the dataset to score, any source the training form's dataset takes; it must have the "
        "model's input columns, others are carried through",
    ),
    "predictor": Field(
        AUTO, {"type": "string", "enum": list(PREDICTORS)},
        "auto: the faster of the compiled form (when its parity held) and scikit-learn on the "
        "first rows, their answers compared",
    ),
    "batch_experiment": Field(names.EXPERIMENT_BATCH, {"type": "string", "minLength": 1}),
}
"""mlship_batch_score's trigger form."""


def form(step: str) -> dict[str, Field]:
    """The form a step's inputs are read from."""
    return {DRIFT: DRIFT_FORM, SCORE: BATCH_FORM}.get(step, TRAINING_FORM)


# --- each step's inputs ------------------------------------------------------------------------

FORM = "form"


WHOLE = "*"
"""An Input's `name` when the flag takes the earlier step's whole result (as JSON)."""


@dataclass(frozen=True)
class Input:
    """One flag of a step and where its value comes from: `source` is FORM (then `name` is a field
    of the step's form) or an earlier step (then `name` is a key of that step's result, or WHOLE).
    An `optional` result comes from a step that may not have run (the search): then the flag's
    value is JSON `null`."""

    flag: str
    source: str
    name: str
    optional: bool = False


INPUTS: dict[str, tuple[Input, ...]] = {
    "ingest": (
        Input("--source", FORM, "dataset"),
        Input("--reason", FORM, "reason"),
        Input("--target", FORM, "target"),
        Input("--task", FORM, "task"),
    ),
    "validate": (
        Input("--dataset-uri", "ingest", "dataset_uri"),
        Input("--target", FORM, "target"),
        Input("--task", "ingest", "task"),  # the task ingest settled on, never "auto"
        Input("--rules", FORM, "validation_rules"),
    ),
    "featurize": (
        Input("--dataset-uri", "ingest", "dataset_uri"),
        Input("--target", FORM, "target"),
        Input("--task", "ingest", "task"),
        Input("--holdout-fraction", FORM, "holdout_fraction"),
        Input("--seed", FORM, "seed"),
    ),
    "train": (
        Input("--train-uri", "featurize", "train_uri"),
        Input("--features-uri", "featurize", "features_uri"),
        Input("--estimator", FORM, "estimator"),
        Input("--hyperparameters", FORM, "hyperparameters"),
        Input("--seed", FORM, "seed"),
        # the search's best hyperparameters (JSON), null when there was no search
        Input("--tuned-hyperparameters", TUNE_BEST, "hyperparameters", optional=True),
    ),
    "evaluate": (
        Input("--model-uri", "train", "model_uri"),
        Input("--holdout-uri", "featurize", "holdout_uri"),
        Input("--features-uri", "featurize", "features_uri"),
        Input("--model-name", FORM, "model_name"),
    ),
    "register": (
        Input("--model-uri", "train", "model_uri"),
        Input("--evaluation-uri", "evaluate", "evaluation_uri"),
        Input("--holdout-uri", "featurize", "holdout_uri"),  # the compiled form's parity check
        Input("--model-name", FORM, "model_name"),
        Input("--dataset-digest", "ingest", "dataset_digest"),
        Input("--dataset-uri", "ingest", "dataset_uri"),
        Input("--metric", FORM, "metric"),
        Input("--threshold", FORM, "threshold"),
        Input("--margin", FORM, "margin"),
        Input("--auto-promote", FORM, "auto_promote"),
    ),
    TUNE_PLAN: (
        Input("--train-uri", "featurize", "train_uri"),
        Input("--features-uri", "featurize", "features_uri"),
        Input("--estimator", FORM, "estimator"),
        Input("--hyperparameters", FORM, "hyperparameters"),
        Input("--seed", FORM, "seed"),
        Input("--metric", FORM, "metric"),
        Input("--trials", FORM, "tune_trials"),
        Input("--search", FORM, "tune_search"),
        Input("--space", FORM, "tune_space"),
        Input("--folds", FORM, "tune_folds"),
        Input("--max-parallel", FORM, "max_parallel"),
    ),
    # each trial pod's flags are written by the plan (one share of the trials each): mapped
    TUNE_TRIAL: (),
    TUNE_BEST: (Input("--plan", TUNE_PLAN, WHOLE),),
    DRIFT: (
        Input("--model-name", FORM, "model_name"),
        Input("--alias", FORM, "alias"),
        Input("--window-minutes", FORM, "window_minutes"),
        Input("--min-rows", FORM, "min_rows"),
        Input("--threshold", FORM, "threshold"),
        Input("--inference-experiment", FORM, "inference_experiment"),
        Input("--report-experiment", FORM, "report_experiment"),
    ),
    SCORE: (
        Input("--model-name", FORM, "model_name"),
        Input("--alias", FORM, "alias"),
        Input("--version", FORM, "version"),
        Input("--input", FORM, "input"),
        Input("--predictor", FORM, "predictor"),
        Input("--batch-experiment", FORM, "batch_experiment"),
    ),
}
"""Each step's flags in the order they are passed (besides the flags every step has: tracking URI,
experiment, pipeline run key, XCom path)."""


def render(
    step: str,
    form_value: Callable[[str, Field], str],
    result_value: Callable[[Input], str],
) -> list[str]:
    """The step's flags, each followed by its value: `form_value(field name, field)` for a form
    input, `result_value(input)` for an earlier step's result (its source, name and whether it
    is optional)."""
    fields = form(step)
    out: list[str] = []
    for i in INPUTS[step]:
        value = form_value(i.name, fields[i.name]) if i.source == FORM else result_value(i)
        out += [i.flag, value]
    return out


def default(step: str, flag: str) -> Any:
    """The default of a step CLI's flag: its form field's (a copy, since argparse hands a default
    out as it is). A flag that is not a form input of the step is a KeyError."""
    for i in INPUTS[step]:
        if i.flag == flag and i.source == FORM:
            return copy.deepcopy(form(step)[i.name].default)
    raise KeyError(f"{flag} is not a form input of {step}")


def cli_text(value: Any) -> str:
    """A form value as command-line text the step CLIs read back: none, true/false, JSON."""
    if value is None:
        return "none"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, dict | list):
        return json.dumps(value)
    return str(value)


JSON_FLAGS: tuple[str, ...] = tuple(dict.fromkeys(
    i.flag for step in (*STEPS, TUNE_PLAN, DRIFT, SCORE) for i in INPUTS[step]
    if i.source == FORM and form(step)[i.name].json
))
"""Step flags that take JSON (inline, or @file.json: mlship.steps.common.json_arg)."""
