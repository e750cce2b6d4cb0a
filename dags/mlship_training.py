"""mlship_training: dataset -> validated, trained, evaluated, registered model.

One KubernetesPodOperator per step, each from its own image (`python -m mlship.steps.<step>`).
Steps share nothing but MLflow: artifacts go through the tracking server, small results through
XCom. Configuration comes from MLSHIP_* environment variables (see mlship_dagspec.py); a run is
started from the trigger form, whose fields are the Params below.

Hyperparameter search (form field tune_trials above 0), between featurize and train, all from
train's image (`python -m mlship.steps.tune plan|trial|best`):

    featurize -> tune_needed -> tune_plan -> tune_trial (mapped) -> tune_best -> train
    featurize -------------------------------------------------------------> train

- tune_needed (a ShortCircuitOperator, no pod) skips the search when tune_trials is 0: train
  then runs as it always has (trigger rule none_failed_min_one_success), with the form's
  hyperparameters.
- tune_plan opens the search's MLflow run and returns one argument list per trial pod: at most
  the form's max_parallel of them, the trials shared out among them round robin.
  max_parallel is a run-time value and Airflow's max_active_tis_per_dagrun a parse-time one,
  so the limit is the number of mapped pods itself: never more than max_parallel exist.
- tune_trial is mapped over that list (.expand(arguments=...)): one pod per share.
- tune_best (all_done_min_one_success) runs once every trial pod is done and at least one
  succeeded, so a failed trial never fails the search; when all failed it is upstream_failed and
  so is train (each trial task says why). Its result's hyperparameters replace the form's in
  train (--tuned-hyperparameters; null without a search).
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from typing import Any

import mlship_dagspec as spec
from airflow.providers.standard.operators.python import ShortCircuitOperator
from airflow.sdk import DAG, Param, TriggerRule, XComArg, chain
from mlship_pods import mapped_step_task, step_task

from mlship import contract, names

settings = spec.settings_from_env(os.environ)


def tune_needed(params: Mapping[str, Any]) -> bool:
    """Go on to the search only when the form asks for trials (else its tasks are skipped)."""
    return spec.tune_requested(params)


with DAG(
    dag_id=names.DAG_TRAINING,
    description="Ingest, validate, featurize, train, evaluate and register a model",
    schedule=settings.schedule,
    catchup=False,
    max_active_runs=1,  # two runs racing for the champion alias would compare stale scores
    default_args={
        "owner": "mlship",
        "retries": settings.retries,
        "retry_delay": settings.retry_delay,
    },
    params={
        name: Param(p.pop("default"), **p)
        for name, p in spec.params_schema(settings).items()
    },
    tags=["mlship", "training"],
    doc_md=__doc__,
    render_template_as_native_obj=False,
) as dag:
    # train runs after the search, or without it when it was skipped
    after_search = {"train": {"trigger_rule": TriggerRule.NONE_FAILED_MIN_ONE_SUCCESS}}
    tasks = {step: step_task(settings, step, **after_search.get(step, {})) for step in spec.STEPS}
    chain(*tasks.values())
    # the search: only between featurize and train, and only when asked for
    needed = ShortCircuitOperator(
        task_id="tune_needed",
        python_callable=tune_needed,
        ignore_downstream_trigger_rules=False,  # skip the plan; the rest follow trigger rules
        retries=0,
    )
    plan = step_task(settings, contract.TUNE_PLAN)
    trials = mapped_step_task(settings, contract.TUNE_TRIAL, XComArg(plan))
    best = step_task(settings, contract.TUNE_BEST, trigger_rule=TriggerRule.ALL_DONE_MIN_ONE_SUCCESS)
    chain(tasks["featurize"], needed, plan, trials, best, tasks["train"])

