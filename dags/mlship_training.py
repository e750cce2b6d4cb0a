"""mlship_training: dataset -> validated, trained, evaluated, registered model.

One KubernetesPodOperator per step, each from its own image (`python -m mlship.steps.<step>`).
Steps share nothing but MLflow: artifacts go through the tracking server, small results through
XCom. Configuration comes from MLSHIP_* environment variables (see mlship_dagspec.py); a run is
started from the trigger form, whose fields are the Params below.
"""

from __future__ import annotations

import os

import mlship_dagspec as spec
from airflow.sdk import DAG, Param, chain
from mlship_pods import step_task

settings = spec.settings_from_env(os.environ)

with DAG(
    dag_id="mlship_training",
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
    chain(*[step_task(settings, step) for step in spec.STEPS])
