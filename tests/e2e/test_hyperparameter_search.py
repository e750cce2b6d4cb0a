"""A hyperparameter search in the installed chart: the trigger form's tune_* fields fan the trials
out over pods (Airflow dynamic task mapping), each trial a child MLflow run of the search's run,
and the best trial's hyperparameters go on to train, evaluate and register.

A grid of 4 trials shared by max_parallel=2 pods, for a model of its own (the champion the other
tests serve is not touched). benchmarks/tuning.py measures a larger search against one pod.
"""

from __future__ import annotations

import json
from typing import Any

import pytest
from e2e.kit import EXPERIMENT, TAG_RUN_KEY, Release, StepPods

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(1200)]

MODEL = "iris-tuned"
SPACE = {"n_estimators": [10, 30], "max_depth": [2, 4]}


def test_a_grid_search_fans_out_over_pods_and_train_takes_the_best(release: Release) -> None:
    pods = StepPods(release)
    conf = {"estimator": "random_forest", "model_name": MODEL, "tune_trials": 4,
            "tune_search": "grid", "tune_space": SPACE, "max_parallel": 2}
    with release.airflow() as airflow:
        run_id = airflow.trigger(conf)
        state = airflow.wait_run(run_id, on_poll=pods.poll)
        airflow.require_success(run_id, state)
        listing = airflow.get(f"/dags/mlship_training/dagRuns/{run_id}/taskInstances")["task_instances"]
    trials = [t for t in listing if t["task_id"] == "tune_trial"]
    assert sorted(t["map_index"] for t in trials) == [0, 1], trials  # one task per pod: 2 pods
    assert {t["state"] for t in trials} == {"success"}
    assert pods.images["tune_trial"] == {"mlship-step-train:dev"}, pods.images

    with release.mlflow_client() as mlflow:
        experiment = mlflow.get_experiment_by_name(EXPERIMENT)
        assert experiment is not None
        runs = mlflow.search_runs([experiment.experiment_id],
                                  filter_string=f"tags.`{TAG_RUN_KEY}` = '{run_id}'", max_results=100)
        by_step: dict[str, list[Any]] = {}
        for r in runs:
            by_step.setdefault(r.data.tags.get("mlship.step", ""), []).append(r)
        (search,) = by_step["tune"]  # the search's run, opened by tune_plan
        children = [r for r in runs if r.data.tags.get("mlflow.parentRunId") == search.info.run_id]
        assert len(children) == 4, [r.info.run_name for r in children]
        assert {r.info.status for r in children} == {"FINISHED"}
        grid = {json.dumps({"max_depth": d, "n_estimators": n}, sort_keys=True)
                for d in SPACE["max_depth"] for n in SPACE["n_estimators"]}
        assert {r.data.params["trial_params"] for r in children} == grid

        search = mlflow.get_run(search.info.run_id)
        best = mlflow.get_run(search.data.tags["mlship.best_run_id"])
        scores = {r.info.run_id: r.data.metrics["cv_accuracy_mean"] for r in children}
        assert scores[best.info.run_id] == max(scores.values()), scores
        (train,) = by_step["train"]
        assert train.data.params["tuned"] == "True"
        assert json.loads(train.data.params["hyperparameters"]) == json.loads(
            best.data.params["hyperparameters"])
        assert mlflow.get_registered_model(MODEL).latest_versions, "nothing registered"
