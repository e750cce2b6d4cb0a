"""mlship_drift: has what the served model is asked drifted from what it was trained on?

`detect` runs the drift check (`python -m mlship.steps.drift`) in its own pod and image: it
compares the recent inputs serving logged for the version the alias points to with that
version's training data, and logs a report (table and plot) to MLflow. When the share of
drifted features passes the threshold, `retrain` triggers mlship_training with the reason in
the run's conf; with too few recent inputs the check says so and nothing is triggered.
"""

from __future__ import annotations

import os
from typing import Any

import mlship_dagspec as spec
from airflow.providers.standard.operators.python import ShortCircuitOperator
from airflow.providers.standard.operators.trigger_dagrun import TriggerDagRunOperator
from airflow.sdk import DAG, Param, chain
from mlship_pods import step_task

from mlship import names

settings = spec.settings_from_env(os.environ)


def drifted(ti: Any) -> bool:
    """Go on to `retrain` only when the check found drift (else the rest is skipped)."""
    result = ti.xcom_pull(task_ids="detect") or {}
    return result.get("status") == "drift"


with DAG(
    dag_id=names.DAG_DRIFT,
    description="Compare recent inputs of the served model with its training data; retrain on drift",
    schedule=settings.drift.schedule,
    catchup=False,
    max_active_runs=1,
    default_args={"owner": "mlship", "retries": settings.retries, "retry_delay": settings.retry_delay},
    params={name: Param(p.pop("default"), **p) for name, p in spec.drift_params_schema(settings).items()},
    tags=["mlship", "monitoring"],
    doc_md=__doc__,
) as dag:
    detect = step_task(settings, "drift", task_id="detect")
    retrain_needed = ShortCircuitOperator(
        task_id="retrain_needed",
        python_callable=drifted,
        retries=0,
    )
    retrain = TriggerDagRunOperator(
        task_id="retrain",
        trigger_dag_id=names.DAG_TRAINING,
        # one training run per drift run, even if this task is cleared and run again
        trigger_run_id="drift__{{ run_id }}",
        skip_when_already_exists=True,
        fail_when_dag_is_paused=True,
        conf={
            "reason": "{{ ti.xcom_pull(task_ids='detect')['reason'] }}",
            "model_name": "{{ params.model_name }}",
        },
    )
    chain(detect, retrain_needed, retrain)
