"""The hyperparameter search's steps as the DAG runs them, each a process against the real
`mlflow server` (the `mlflow_server` fixture): plan -> one process per trial pod (one made to
fail) -> best -> train with the best trial's hyperparameters; and a search whose every trial
fails stops at best with one clear line."""

from __future__ import annotations

import json
import uuid
from typing import Any

import pytest
from mlflow.tracking import MlflowClient

from mlship.cli import without_flag

pytestmark = pytest.mark.integration

BAD_INPUT = 65


def new_key(what: str) -> str:
    return f"it-tune-{what}-{uuid.uuid4().hex[:6]}"


@pytest.fixture(scope="module")
def featurized(steps) -> dict[str, Any]:
    """ingest and featurize of the iris dataset, under a pipeline run key of their own."""
    key = new_key("data")
    ing, _ = steps.run("ingest", "--source", "sklearn:iris", key=key)
    fea, _ = steps.run(
        "featurize", "--dataset-uri", ing["dataset_uri"], "--task", ing["task"], key=key)
    return {"key": key, "ingest": ing, "featurize": fea}


def plan(steps, fea: dict, key: str, *flags: str) -> list[list[str]]:
    result, _ = steps.run(
        "tune", "plan", "--train-uri", fea["train_uri"], "--features-uri", fea["features_uri"],
        "--estimator", "logistic_regression", "--hyperparameters", '{"max_iter": 500}',
        *flags, key=key,
    )
    assert isinstance(result, list)
    return result


def trial_argv(argv: list[str]) -> list[str]:
    """A trial pod's arguments as the plan wrote them; Steps.run gives each its own result file
    (in a pod every step writes the same /airflow/xcom/return.json)."""
    assert argv[0] == "trial"
    return without_flag(argv, "--xcom-path")


def test_a_search_with_a_failed_trial_still_gives_train_the_best_hyperparameters(
    steps, featurized, mlflow_server
):
    key, fea = new_key("one-fails"), featurized["featurize"]
    planned = plan(steps, fea, key, "--trials", "3", "--search", "grid",
                   "--space", '{"C": [0.05, -1.0, 5.0]}', "--max-parallel", "3", "--folds", "3")
    assert len(planned) == 3  # a pod per trial: no more trials than max_parallel
    shares = [json.loads(argv[argv.index("--share") + 1]) for argv in planned]
    assert [s[0]["params"] for s in shares] == [{"C": 0.05}, {"C": -1.0}, {"C": 5.0}]

    results = []
    for argv in planned:
        bad = '"C": -1.0' in argv[argv.index("--share") + 1]
        result, stderr = steps.run("tune", *trial_argv(argv), key=key,
                                   expect_ok=not bad, code=BAD_INPUT)
        if bad:  # sklearn refuses C=-1 when fitting: the pod fails, and only that pod
            last = stderr.strip().splitlines()[-1]
            assert last.startswith("mlship tune_trial failed: every trial of this pod failed (1); trial 1:")
            assert "'C' parameter" in last
        else:
            results.append(result)
    assert all(r["trials"][0]["score"] > 0.5 for r in results)

    best, _ = steps.run("tune", "best", "--plan", json.dumps(planned), key=key)
    assert (best["trials"], best["succeeded"], best["failed"]) == (3, 2, 1)
    assert best["metric"] == "accuracy"  # classification's default
    scores = {r["trials"][0]["params"]["C"]: r["trials"][0]["score"] for r in results}
    winner = max(scores, key=lambda c: (scores[c], -c))
    assert best["params"] == {"C": winner}
    assert best["hyperparameters"] == {"max_iter": 500, "C": winner}  # the fixed ones kept
    assert best["score"] == pytest.approx(scores[winner])

    client = MlflowClient(mlflow_server)
    search = client.get_run(best["search_run_id"])
    assert search.data.tags["mlship.step"] == "tune"
    assert search.data.tags["mlship.pipeline_run_key"] == key
    assert search.data.tags["mlship.best_run_id"] == best["best_run_id"]
    assert search.data.params["space"] == '{"C": [0.05, -1.0, 5.0]}'
    children = client.search_runs(
        [search.info.experiment_id],
        filter_string=f"tags.mlflow.parentRunId = '{search.info.run_id}'",
    )
    by_c = {json.loads(r.data.params["trial_params"])["C"]: r for r in children}
    assert sorted(by_c) == [-1.0, 0.05, 5.0]
    assert by_c[-1.0].info.status == "FAILED" and "'C' parameter" in by_c[-1.0].data.tags["mlship.error"]
    for c in (0.05, 5.0):
        run = by_c[c]
        assert run.info.status == "FINISHED"
        assert run.data.metrics["cv_accuracy_mean"] == pytest.approx(scores[c])
        assert "cv_accuracy_std" in run.data.metrics
        assert run.data.params["hyperparameters"] == json.dumps({"C": c, "max_iter": 500}, sort_keys=True)
        assert run.data.tags["mlship.step"] == "tune_trial"

    trn, _ = steps.run(
        "train", "--train-uri", fea["train_uri"], "--features-uri", fea["features_uri"],
        "--estimator", "logistic_regression", "--hyperparameters", '{"max_iter": 500}',
        "--tuned-hyperparameters", json.dumps(best["hyperparameters"]), key=key,
    )
    params = client.get_run(trn["run_id"]).data.params
    assert params["hp.C"] == str(winner) and params["hp.max_iter"] == "500"
    assert params["tuned"] == "True"
    assert json.loads(params["hyperparameters"]) == best["hyperparameters"]


def test_trials_beyond_max_parallel_share_the_pods(steps, featurized):
    planned = plan(steps, featurized["featurize"], new_key("shared"), "--trials", "5",
                   "--search", "random", "--space", '{"C": [0.1, 0.3, 1.0, 3.0, 10.0, 30.0]}',
                   "--max-parallel", "2")
    shares = [json.loads(argv[argv.index("--share") + 1]) for argv in planned]
    assert [len(s) for s in shares] == [3, 2]
    assert sorted(t["index"] for s in shares for t in s) == [0, 1, 2, 3, 4]


def test_a_search_whose_every_trial_fails_stops_at_best_with_one_clear_line(steps, featurized):
    key, fea = new_key("all-fail"), featurized["featurize"]
    planned = plan(steps, fea, key, "--trials", "2", "--space", '{"C": [-1.0, -2.0]}',
                   "--max-parallel", "1")
    assert len(planned) == 1  # both trials in one pod, one after the other
    _, stderr = steps.run("tune", *trial_argv(planned[0]), key=key, expect_ok=False, code=BAD_INPUT)
    assert "every trial of this pod failed (2)" in stderr
    _, stderr = steps.run("tune", "best", "--plan", json.dumps(planned), key=key,
                          expect_ok=False, code=BAD_INPUT)
    last = stderr.strip().splitlines()[-1]
    assert last.startswith("mlship tune_best failed: all 2 trials of the search failed; trial 0:")


@pytest.mark.parametrize(("flags", "message"), [
    (("--trials", "3", "--space", '{"no_such": [1, 2]}'), "has no hyperparameter(s) no_such"),
    (("--trials", "3", "--search", "grid", "--space", '{"C": [1, 2, 3, 4]}'),
     "the grid has 4 combinations, more than tune_trials=3"),
    (("--trials", "3", "--metric", "rmse"), "metric 'rmse' is not a classification metric"),
])
def test_a_search_that_cannot_work_is_refused_by_the_plan(steps, featurized, flags, message):
    fea = featurized["featurize"]
    _, stderr = steps.run(
        "tune", "plan", "--train-uri", fea["train_uri"], "--features-uri", fea["features_uri"],
        "--estimator", "logistic_regression", *flags, key=new_key("refused"),
        expect_ok=False, code=BAD_INPUT,
    )
    assert message in stderr.strip().splitlines()[-1]


def test_no_trials_plans_nothing(steps, featurized):
    fea = featurized["featurize"]
    assert plan(steps, fea, new_key("none"), "--trials", "0") == []


def test_mlship_run_searches_before_train_when_asked(run_mlship, mlflow_server, tmp_path):
    """The local runner runs the same search, its trial pods one after another."""
    model = f"tuned-{uuid.uuid4().hex[:6]}"
    proc = run_mlship(
        "run", "--dataset", "sklearn:iris", "--model-name", model, "--tracking-uri", mlflow_server,
        "--estimator", "logistic_regression", "--tune-trials", "3", "--tune-search", "grid",
        "--tune-space", '{"C": [0.1, 1.0, -1.0]}', "--max-parallel", "2", cwd=tmp_path,
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr[-3000:]
    assert "tune plan ok  2 trial process(es)" in proc.stdout
    assert "tune best ok  2/3 trials" in proc.stdout
    client = MlflowClient(mlflow_server)
    version = client.get_model_version(model, "1")
    params = client.get_run(version.run_id).data.params
    assert params["tuned"] == "True" and params["hp.C"] in ("0.1", "1.0")
