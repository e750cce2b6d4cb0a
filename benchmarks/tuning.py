"""Hyperparameter search benchmark: the same trials fanned out over pods against run one after
another in one pod.

On an installed release (`make up`, or any namespace running the chart; KUBECONFIG set):

    .venv/bin/python benchmarks/tuning.py [--namespace mlship | --install] [--trials 8] [--parallel 4]

Each round triggers mlship_training runs with the same search (`--estimator` on `--dataset`,
`--trials` seeded random draws from `--space`, 3-fold CV): one per `--parallel` value (that many
trial pods) and one with `max_parallel=1` (one pod runs every trial in turn), in alternating order
across rounds. For each run it prints the search's wall time (tune_plan started
→ tune_best ended, from Airflow's task instances), the trial pods, the trials that finished in
MLflow's search run, and the whole run's time. The runs register versions of their own model
(`--model`), never the champion a ModelDeployment serves. It prints figures; it asserts nothing.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
from datetime import datetime
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(REPO / "tests"), str(REPO / "hack")]

from e2e.kit import EXPERIMENT, TAG_RUN_KEY, Release  # noqa: E402
from kubernetes import config  # noqa: E402

DAG = "mlship_training"


def seconds(start: str | None, end: str | None) -> float | None:
    if not start or not end:
        return None
    return (datetime.fromisoformat(end) - datetime.fromisoformat(start)).total_seconds()


def one_run(release: Release, args: argparse.Namespace, parallel: int) -> dict:
    conf = {"dataset": args.dataset, "estimator": args.estimator, "model_name": args.model,
            "tune_trials": args.trials, "tune_search": "random", "tune_space": json.loads(args.space),
            "max_parallel": parallel, "seed": 42}
    with release.airflow() as airflow:
        run_id = airflow.trigger(conf)
        state = airflow.wait_run(run_id, timeout=args.timeout)
        run = airflow.get(f"/dags/{DAG}/dagRuns/{run_id}")
        tis = airflow.get(f"/dags/{DAG}/dagRuns/{run_id}/taskInstances")["task_instances"]
    by_task: dict[str, list[dict]] = {}
    for ti in tis:
        by_task.setdefault(ti["task_id"], []).append(ti)
    plan, best = by_task.get("tune_plan", [{}])[0], by_task.get("tune_best", [{}])[0]
    trial_tis = by_task.get("tune_trial", [])
    with release.mlflow_client() as mlflow:
        experiment = mlflow.get_experiment_by_name(EXPERIMENT)
        runs = mlflow.search_runs([experiment.experiment_id] if experiment else [],
                                  filter_string=f"tags.`{TAG_RUN_KEY}` = '{run_id}'", max_results=500)
    trials = [r for r in runs if r.data.tags.get("mlship.trial") is not None]
    return {
        "parallel": parallel,
        "state": state,
        "search_s": seconds(plan.get("start_date"), best.get("end_date")),
        "trials_s": seconds(min((t["start_date"] for t in trial_tis if t.get("start_date")), default=None),
                            max((t["end_date"] for t in trial_tis if t.get("end_date")), default=None)),
        "pods": len(trial_tis),
        "finished": sum(r.info.status == "FINISHED" for r in trials),
        "cv_s": sum(r.data.metrics.get("cv_seconds", 0.0) for r in trials),
        "run_s": seconds(run.get("start_date"), run.get("end_date")),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--namespace", default="mlship")
    parser.add_argument("--trials", type=int, default=8)
    parser.add_argument("--parallel", type=int, nargs="+", default=[4],
                        help="max_parallel values to compare with 1 (one pod)")
    parser.add_argument("--dataset", default="sklearn:iris")
    parser.add_argument("--estimator", default="random_forest")
    parser.add_argument("--space", default="{}", help="tune_space as JSON; {}: the estimator's default")
    parser.add_argument("--rounds", type=int, default=1)
    parser.add_argument("--model", default="iris-tuning-bench")
    parser.add_argument("--timeout", type=float, default=1800)
    parser.add_argument("--install", action="store_true",
                        help="install the chart in a fresh namespace for the run (needs the images "
                             "in the cluster), instead of using --namespace's release")
    args = parser.parse_args()
    config.load_kube_config()
    if args.install:  # the chart in a fresh namespace, as the e2e tier installs it; removed after
        from e2e.release import installed

        with installed("bench") as release:
            measure(release, args)
    else:
        measure(Release(args.namespace), args)


def measure(release: Release, args: argparse.Namespace) -> None:
    print(f"load average at start: {os.getloadavg()}; {vars(args)}", flush=True)
    results = []
    for r in range(args.rounds):
        order = (*args.parallel, 1) if r % 2 == 0 else (1, *reversed(args.parallel))
        for parallel in order:
            got = one_run(release, args, parallel)
            results.append(got)
            print(got, flush=True)
    print(f"\n{'max_parallel':>12} {'state':>8} {'pods':>5} {'trials ok':>9} {'search s':>9} "
          f"{'trial tasks s':>13} {'CV s (sum)':>10} {'run s':>7}")
    for g in results:
        def f(v: float | None) -> str:
            return f"{v:.1f}" if v is not None else "-"
        print(f"{g['parallel']:>12} {g['state']:>8} {g['pods']:>5} {g['finished']:>9} "
              f"{f(g['search_s']):>9} {f(g['trials_s']):>13} {f(g['cv_s']):>10} {f(g['run_s']):>7}")
    for parallel in sorted({g["parallel"] for g in results}, reverse=True):
        values = [g["search_s"] for g in results if g["parallel"] == parallel and g["search_s"]]
        if values:
            print(f"max_parallel={parallel}: search wall time median {statistics.median(values):.1f} s"
                  f" (n={len(values)})")
    print(f"load average at end: {os.getloadavg()}")


if __name__ == "__main__":
    main()
