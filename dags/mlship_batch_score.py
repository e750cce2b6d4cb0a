"""mlship_batch_score: score a dataset with a registered model version, predictions into MLflow.

`score` runs `python -m mlship.steps.score` in its own pod and image: the version the form names
(else the one its alias points to) scores the dataset, by its compiled form when its parity held
at registration, and the predictions (the input's columns and `prediction`) are logged as Parquet
in the run, tagged with the model version and the input's digest. Triggered by hand or by another
DAG (Airflow's REST API, TriggerDagRunOperator); it has no schedule of its own.
"""

from __future__ import annotations

import os

import mlship_dagspec as spec
from airflow.sdk import DAG, Param
from mlship_pods import step_task

from mlship import contract, names

settings = spec.settings_from_env(os.environ)

with DAG(
    dag_id=names.DAG_BATCH_SCORE,
    description="Score a dataset with a registered model version; predictions logged to MLflow",
    schedule=None,
    catchup=False,
    default_args={"owner": "mlship", "retries": settings.retries, "retry_delay": settings.retry_delay},
    params={name: Param(p.pop("default"), **p) for name, p in spec.score_params_schema(settings).items()},
    tags=["mlship", "batch"],
    doc_md=__doc__,
) as dag:
    step_task(settings, contract.SCORE)
