"""tune: hyperparameter search, run only when the trigger form's tune_trials is above 0.

Three commands, each a pod of train's image (python -m mlship.steps.tune <command>):

  plan   open the search's MLflow run (a child of the pipeline run, step "tune"), expand the
         search space into trials (mlship.ml.tuning) and share them out among at most
         max_parallel pods. Result: a JSON list, one entry per trial pod, each that pod's whole
         command line (the DAG maps the trial task over it: .expand(arguments=...)).
  trial  cross-validate the estimator on featurize's training split once per trial of its share,
         each trial a child run of the search run (params, cv_<metric>_mean/_std, or FAILED with
         its error). A trial that fails does not stop the others; the pod fails only when every
         trial of its share failed (exit 65 when they failed on their values).
  best   read the search run's trials from MLflow, skip the failed ones, and give train the best
         trial's hyperparameters (result key `hyperparameters`: the form's fixed ones with the
         trial's on top). Fails (65, one line) only when no trial succeeded.
"""

from __future__ import annotations

import argparse
import json
import math
import sys
import time
from collections.abc import Sequence
from typing import Any

import mlflow
import numpy as np
import pandas as pd
from mlflow.entities import Metric, Param, RunStatus
from mlflow.tracking import MlflowClient
from mlflow.utils.mlflow_tags import MLFLOW_PARENT_RUN_ID, MLFLOW_RUN_NAME
from sklearn.model_selection import KFold, StratifiedKFold

from mlship import contract
from mlship.errors import BadInput, describe
from mlship.ml import estimators, features, metrics, tuning
from mlship.mlflow_io import tracking
from mlship.names import TAG_BEST_RUN, TAG_TRIAL, TAG_TRIAL_ERROR
from mlship.steps import common

STEP = contract.TUNE_MODULE
COMMANDS = {c: step for step, c in contract.TUNE_COMMANDS.items()}  # plan -> tune_plan, ...
PARAM_TRIAL = "trial_params"  # the trial's own hyperparameters, JSON


def _plan(flag: str) -> Any:
    return contract.default(contract.TUNE_PLAN, flag)


def build() -> argparse.ArgumentParser:
    p = common.parser(STEP, __doc__.splitlines()[0])
    p.add_argument("command", choices=list(COMMANDS), help="plan | trial | best")
    p.add_argument("--train-uri", help="plan, trial: runs:/ URI of featurize's train.parquet")
    p.add_argument("--features-uri", help="plan, trial: runs:/ URI of features.json")
    p.add_argument(
        "--estimator", default=_plan("--estimator"),
        help="plan, trial: the estimator searched (auto: the task's default)",
    )
    p.add_argument(
        "--hyperparameters", type=common.json_arg, default=_plan("--hyperparameters"),
        help="plan, trial: hyperparameters every trial keeps (JSON or @file.json)",
    )
    p.add_argument("--seed", type=int, default=_plan("--seed"), help="draws, folds, estimator")
    p.add_argument(
        "--metric", default=_plan("--metric"),
        help="plan, trial: the cross-validated metric (auto: the task's default)",
    )
    p.add_argument("--trials", type=int, default=_plan("--trials"),
                   help="plan: how many trials (0: none, the plan is empty)")
    p.add_argument("--search", default=_plan("--search"), choices=list(tuning.SEARCHES))
    p.add_argument(
        "--space", type=common.json_arg, default=_plan("--space"),
        help="plan: hyperparameter -> list of values, JSON or @file.json ({}: the default space)",
    )
    p.add_argument("--folds", type=int, default=_plan("--folds"), help="cross-validation folds")
    p.add_argument("--max-parallel", type=int, default=_plan("--max-parallel"),
                   help="plan: at most this many trial pods")
    p.add_argument("--search-run-id", help="trial: the search's MLflow run (the plan's)")
    p.add_argument("--share", help='trial: its trials, JSON [{"index": n, "params": {...}}, ...]')
    p.add_argument("--plan", type=common.json_arg, help="best: the plan's result, JSON")
    return p


def _need(args: argparse.Namespace, *names: str) -> None:
    missing = [f"--{n.replace('_', '-')}" for n in names if not getattr(args, n)]
    if missing:
        raise BadInput(f"{args.command} needs {', '.join(missing)}")


def _object(value: Any, flag: str) -> dict[str, Any]:
    if not isinstance(value, dict):
        raise BadInput(f"{flag} must be a JSON object")
    return value


def _spec(uri: str) -> features.FeatureSpec:
    return features.FeatureSpec.from_dict(json.loads(tracking.fetch(uri).read_text()))


def _metric(task: str, metric: str) -> str:
    if metric == contract.AUTO:
        return metrics.DEFAULT_METRIC[task]
    try:
        return metrics.check_metric(task, metric)
    except ValueError as exc:
        raise BadInput(str(exc)) from exc


# --- plan --------------------------------------------------------------------------------------

def plan(args: argparse.Namespace) -> list[list[str]]:
    _need(args, "train_uri", "features_uri")
    base = _object(args.hyperparameters, "--hyperparameters")
    trials = args.trials
    if trials == 0:
        return []  # no search: nothing to run
    if args.folds < 2:
        raise BadInput(f"tune_folds must be at least 2, not {args.folds}")
    client = tracking.connect(args.tracking_uri)
    spec = _spec(args.features_uri)
    name = estimators.DEFAULT_ESTIMATOR[spec.task] if args.estimator == contract.AUTO else args.estimator
    metric = _metric(spec.task, args.metric)
    space = _object(args.space, "--space") or estimators.DEFAULT_SPACES.get(name, {})
    space = tuning.check_space(space)
    # unknown names fail here, once, rather than in every trial (values are checked by fitting)
    estimators.build_estimator(spec.task, name, {**base, **{k: v[0] for k, v in space.items()}}, args.seed)
    chosen = tuning.expand(space, args.search, trials, args.seed)
    shares = tuning.batches(chosen, args.max_parallel)
    with tracking.step_run(client, args.experiment, args.pipeline_run_key, STEP) as (_, run):
        mlflow.log_params({
            "estimator": name, "task": spec.task, "metric": metric, "search": args.search,
            "trials_asked": trials, "trials": len(chosen), "folds": args.folds, "seed": args.seed,
            "max_parallel": args.max_parallel, "pods": len(shares),
            "space": json.dumps(space, sort_keys=True)[:6000],
            "hyperparameters": json.dumps(base, sort_keys=True),
        })
        search_run_id = run.info.run_id
    tail = ["--pipeline-run-key", args.pipeline_run_key]
    if args.xcom_path:
        tail += ["--xcom-path", args.xcom_path]
    return [
        [
            contract.TUNE_COMMANDS[contract.TUNE_TRIAL], "--search-run-id", search_run_id,
            "--train-uri", args.train_uri, "--features-uri", args.features_uri,
            "--estimator", name, "--hyperparameters", json.dumps(base, sort_keys=True),
            "--seed", str(args.seed), "--metric", metric, "--folds", str(args.folds),
            "--share", json.dumps(share, sort_keys=True), *tail,
        ]
        for share in shares
    ]


# --- trial -------------------------------------------------------------------------------------

def cv_scores(
    task: str, spec: features.FeatureSpec, name: str, params: dict[str, Any], train: pd.DataFrame,
    metric: str, folds: int, seed: int,
) -> list[float]:
    """The metric on each held-out fold of the training split, the model refitted per fold
    (the same pipeline train fits: preprocessing + estimator)."""
    X, y = train[spec.columns], train[spec.target]
    splitter = (StratifiedKFold if task == "classification" else KFold)(
        n_splits=folds, shuffle=True, random_state=seed
    )
    scores = []
    for fit_rows, score_rows in splitter.split(X, y):
        model = estimators.model_pipeline(
            spec.numeric, spec.categorical, estimators.build_estimator(task, name, params, seed)
        )
        model.fit(X.iloc[fit_rows], y.iloc[fit_rows])
        score = metrics.evaluate(task, model, X.iloc[score_rows], y.iloc[score_rows])[metric]
        if not math.isfinite(score):
            raise BadInput(f"{metric} is undefined on a fold (too few rows of a class?)")
        scores.append(float(score))
    return scores


def _share(text: str) -> list[dict[str, Any]]:
    try:
        share = json.loads(text)
    except json.JSONDecodeError as exc:
        raise BadInput(f"trial: --share is not JSON: {exc}") from exc
    if not isinstance(share, list) or not all(
        isinstance(t, dict) and isinstance(t.get("params"), dict) and isinstance(t.get("index"), int)
        for t in share
    ):
        raise BadInput('trial: --share must be a JSON list of {"index": n, "params": {...}}')
    return share


def trial(args: argparse.Namespace) -> dict[str, Any]:
    _need(args, "search_run_id", "train_uri", "features_uri", "share")
    share = _share(args.share)
    base = _object(args.hyperparameters, "--hyperparameters")
    client = tracking.connect(args.tracking_uri)
    search = client.get_run(args.search_run_id)
    spec = _spec(args.features_uri)
    metric = _metric(spec.task, args.metric)
    # the plan names the estimator; auto is the task's default here too, as in train
    name = estimators.DEFAULT_ESTIMATOR[spec.task] if args.estimator == contract.AUTO else args.estimator
    train = pd.read_parquet(tracking.fetch(args.train_uri))
    done: list[dict[str, Any]] = []
    failures: list[Exception] = []
    for t in share:
        index, params = t["index"], t["params"]
        run = client.create_run(search.info.experiment_id, run_name=f"trial-{index}", tags={
            MLFLOW_PARENT_RUN_ID: args.search_run_id, MLFLOW_RUN_NAME: f"trial-{index}",
            tracking.TAG_STEP: contract.TUNE_TRIAL, tracking.TAG_RUN_KEY: args.pipeline_run_key,
            TAG_TRIAL: str(index),
        })
        run_id = run.info.run_id
        merged = {**base, **params}
        client.log_batch(run_id, params=[
            Param(PARAM_TRIAL, json.dumps(params, sort_keys=True)),
            Param("hyperparameters", json.dumps(merged, sort_keys=True)),
            Param("estimator", name), Param("metric", metric),
            Param("folds", str(args.folds)),
            *(Param(f"hp.{k}", str(v)) for k, v in params.items()),
        ])
        started = time.monotonic()
        try:
            scores = cv_scores(spec.task, spec, name, merged, train, metric, args.folds, args.seed)
        except Exception as exc:  # the trial's own failure: recorded, and the next one runs
            failures.append(exc)
            message = describe(exc)
            print(f"trial {index} {json.dumps(params)} failed: {message}", file=sys.stderr, flush=True)
            client.set_tag(run_id, TAG_TRIAL_ERROR, message)
            client.set_terminated(run_id, RunStatus.to_string(RunStatus.FAILED))
            done.append({"index": index, "run_id": run_id, "params": params, "error": message})
            continue
        now = int(time.time() * 1000)
        mean, std = float(np.mean(scores)), float(np.std(scores))
        client.log_batch(run_id, metrics=[
            Metric(f"cv_{metric}_mean", mean, now, 0), Metric(f"cv_{metric}_std", std, now, 0),
            Metric("cv_seconds", time.monotonic() - started, now, 0),
            *(Metric(f"cv_{metric}", s, now, fold) for fold, s in enumerate(scores)),
        ])
        client.set_terminated(run_id)
        print(f"trial {index} {json.dumps(params)}: {metric} {mean:.4f} ± {std:.4f}", flush=True)
        done.append({"index": index, "run_id": run_id, "params": params, "score": mean})
    if share and len(failures) == len(share):
        first = describe(failures[0])
        message = f"every trial of this pod failed ({len(share)}); trial {share[0]['index']}: {first}"
        if all(isinstance(e, ValueError | TypeError) for e in failures):  # BadInput is a ValueError
            raise BadInput(message)
        raise tracking.StepError(message)
    return {"search_run_id": args.search_run_id, "metric": metric, "trials": done}


# --- best --------------------------------------------------------------------------------------

def search_run_id(planned: Any) -> tuple[str, int]:
    """The search run and the number of trials a plan's result names (pure)."""
    if not isinstance(planned, list):
        raise BadInput("best: --plan must be the plan's result, a JSON list")
    if not planned:
        raise BadInput("best: the plan has no trials (tune_trials is 0): nothing to choose from")
    ids, count = set(), 0
    for argv in planned:
        if not isinstance(argv, list) or "--search-run-id" not in argv or "--share" not in argv:
            raise BadInput("best: --plan is not a plan's result (no --search-run-id/--share)")
        ids.add(argv[argv.index("--search-run-id") + 1])
        count += len(_share(argv[argv.index("--share") + 1]))
    if len(ids) != 1:
        raise BadInput(f"best: the plan names {len(ids)} search runs, not one")
    return ids.pop(), count


def recorded_trials(client: MlflowClient, search: Any, metric: str) -> list[tuning.Trial]:
    """The search run's trials as MLflow has them; one that did not finish has no score."""
    runs = client.search_runs(
        [search.info.experiment_id],
        filter_string=f"tags.{MLFLOW_PARENT_RUN_ID} = '{search.info.run_id}'",
        max_results=5000,
    )
    out = []
    for r in runs:
        finished = r.info.status == RunStatus.to_string(RunStatus.FINISHED)
        score = r.data.metrics.get(f"cv_{metric}_mean") if finished else None
        out.append(tuning.Trial(
            index=int(r.data.tags.get(TAG_TRIAL, "-1")),
            params=json.loads(r.data.params.get(PARAM_TRIAL, "{}")),
            score=score, run_id=r.info.run_id,
            error=r.data.tags.get(TAG_TRIAL_ERROR, "" if finished else f"run {r.info.status}"),
        ))
    return sorted(out, key=lambda t: (t.index, t.run_id))


def best(args: argparse.Namespace) -> dict[str, Any]:
    if args.plan is None:
        raise BadInput("best needs --plan")
    run_id, planned = search_run_id(args.plan)
    client = tracking.connect(args.tracking_uri)
    search = client.get_run(run_id)
    metric = search.data.params["metric"]
    base = json.loads(search.data.params.get("hyperparameters", "{}"))
    trials = recorded_trials(client, search, metric)
    winner = tuning.best(trials, metrics.HIGHER_IS_BETTER[metric])
    succeeded = len({t.index for t in trials if t.score is not None})
    if winner is None:
        errors = [t for t in trials if t.error]
        why = f"; trial {errors[0].index}: {errors[0].error}" if errors else " (none was recorded)"
        client.set_terminated(run_id, RunStatus.to_string(RunStatus.FAILED))
        parent = search.data.tags.get(MLFLOW_PARENT_RUN_ID)
        if parent:
            client.set_terminated(parent, RunStatus.to_string(RunStatus.FAILED))
        raise BadInput(f"all {planned} trials of the search failed{why}")
    assert winner.score is not None  # noqa: S101 - tuning.best returns scored trials only
    client.set_tag(run_id, TAG_BEST_RUN, winner.run_id)
    client.log_batch(run_id, metrics=[
        Metric(f"best_cv_{metric}_mean", winner.score, int(time.time() * 1000), 0),
        Metric("trials_succeeded", succeeded, int(time.time() * 1000), 0),
    ])
    print(f"best of {succeeded}/{planned} trials: trial {winner.index} {json.dumps(winner.params)} "
          f"{metric} {winner.score:.4f}", flush=True)
    return {
        "hyperparameters": {**base, **winner.params},
        "params": winner.params,
        "best_run_id": winner.run_id,
        "search_run_id": run_id,
        "metric": metric,
        "score": winner.score,
        "trials": planned,
        "succeeded": succeeded,
        "failed": planned - succeeded,
    }


def body(args: argparse.Namespace) -> Any:
    if args.command == "plan":
        return plan(args)
    if args.command == "trial":
        return trial(args)
    return best(args)


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    command = next((a for a in argv if a in COMMANDS), "")  # no flag of tune takes these values
    return common.run(COMMANDS.get(command, STEP), build, body, argv)


if __name__ == "__main__":
    raise SystemExit(main())
