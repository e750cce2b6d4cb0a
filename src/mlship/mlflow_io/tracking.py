"""MLflow plumbing shared by the steps: reachability, the pipeline's parent run, step runs,
artifact URIs.

One pipeline run (one Airflow DAG run, one `mlship run`) is one MLflow parent run, found by the
tag `mlship.pipeline_run_key`; each step attempt is a nested run under it. Steps hand each other
`runs:/<run_id>/<path>` URIs, resolved through the tracking server, so pods share no volume.
"""

from __future__ import annotations

import os
import re
import socket
import tempfile
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from urllib.parse import urlparse

import mlflow
from mlflow.entities import Run, RunStatus
from mlflow.tracking import MlflowClient
from mlflow.utils.mlflow_tags import MLFLOW_PARENT_RUN_ID, MLFLOW_RUN_NAME

from mlship import names
from mlship.errors import Explained, describe

TAG_RUN_KEY = names.TAG_RUN_KEY
TAG_STEP = names.TAG_STEP
DEFAULT_EXPERIMENT = names.EXPERIMENT_PIPELINE
_KEY_PATTERN = re.compile(r"^[A-Za-z0-9_.:+\-]{1,250}$")


class StepError(Explained, RuntimeError):
    """An expected failure with a message meant for the person reading the task log."""


def check_run_key(key: str) -> str:
    # Airflow run ids look like manual__2025-01-01T00:00:00+00:00; the key ends up inside an
    # MLflow filter string, so quotes and spaces are refused rather than escaped.
    if not _KEY_PATTERN.match(key):
        raise StepError(
            f"pipeline run key {key!r} is invalid: use letters, digits and _ . : + - only"
        )
    return key


def wait_for_server(tracking_uri: str, timeout: float | None = None) -> None:
    """Fail fast with a clear message when an HTTP tracking server does not answer.

    MLflow's own client retries connection errors with exponential back-off for minutes;
    a step pod should instead fail within seconds and let Airflow's retry policy decide.
    """
    if urlparse(tracking_uri).scheme not in ("http", "https"):
        return
    if timeout is None:
        timeout = float(os.environ.get("MLSHIP_MLFLOW_WAIT_SECONDS", "10"))
    deadline = time.monotonic() + timeout
    url = tracking_uri.rstrip("/") + "/health"
    last: Exception | None = None
    while True:
        try:
            with urllib.request.urlopen(url, timeout=5) as resp:  # noqa: S310 - http(s) checked
                if resp.status == 200:
                    return
        except (urllib.error.URLError, OSError) as exc:
            last = exc
        if time.monotonic() >= deadline:
            break
        time.sleep(1)
    reason = getattr(last, "reason", last)
    if isinstance(reason, socket.gaierror):
        reason = f"cannot resolve host {urlparse(tracking_uri).hostname!r} ({reason})"
    raise StepError(f"cannot reach MLflow tracking server at {tracking_uri}: {reason}")


def connect(tracking_uri: str | None) -> MlflowClient:
    uri = tracking_uri or os.environ.get("MLFLOW_TRACKING_URI")
    if not uri:
        raise StepError("no MLflow tracking URI: pass --tracking-uri or set MLFLOW_TRACKING_URI")
    wait_for_server(uri)
    mlflow.set_tracking_uri(uri)
    mlflow.set_registry_uri(uri)
    return MlflowClient(tracking_uri=uri, registry_uri=uri)


def experiment_id(client: MlflowClient, name: str, artifact_location: str | None = None) -> str:
    exp = client.get_experiment_by_name(name)
    if exp is not None:
        if exp.lifecycle_stage == "deleted":
            raise StepError(f"MLflow experiment {name!r} is deleted; restore it or pick another")
        return exp.experiment_id
    return client.create_experiment(name, artifact_location=artifact_location)


def find_parent_run(client: MlflowClient, exp_id: str, key: str) -> Run | None:
    runs = client.search_runs(
        [exp_id],
        filter_string=f"tags.`{TAG_RUN_KEY}` = '{check_run_key(key)}'",
        max_results=1,
        order_by=["attributes.start_time ASC"],
    )
    return runs[0] if runs else None


def parent_run(client: MlflowClient, exp_id: str, key: str) -> Run:
    """The parent run of this pipeline run: reused when it exists (a re-run), else created."""
    run = find_parent_run(client, exp_id, key)
    if run is None:
        run = client.create_run(
            exp_id, tags={TAG_RUN_KEY: key, MLFLOW_RUN_NAME: f"pipeline {key}"}
        )
    elif run.info.status != RunStatus.to_string(RunStatus.RUNNING):
        client.update_run(run.info.run_id, status="RUNNING")
    return run


@contextmanager
def step_run(
    client: MlflowClient, experiment: str, key: str, step: str
) -> Iterator[tuple[Run, mlflow.ActiveRun]]:
    """A nested run for one attempt of `step`; the parent is marked FAILED if the step fails."""
    exp_id = experiment_id(client, experiment)
    parent = parent_run(client, exp_id, key)
    child = client.create_run(
        exp_id,
        tags={
            MLFLOW_PARENT_RUN_ID: parent.info.run_id,
            TAG_STEP: step,
            TAG_RUN_KEY: key,
            MLFLOW_RUN_NAME: step,
        },
    )
    try:
        with mlflow.start_run(run_id=child.info.run_id) as active:
            yield parent, active
    except BaseException:
        client.set_terminated(parent.info.run_id, status="FAILED")
        raise


def runs_uri(run_id: str, artifact_path: str) -> str:
    return f"runs:/{run_id}/{artifact_path}"


def log_file(run_id: str, local_path: Path, artifact_dir: str) -> str:
    """Upload one file into the run's artifacts; return its `runs:/` URI."""
    mlflow.log_artifact(str(local_path), artifact_path=artifact_dir)
    return runs_uri(run_id, f"{artifact_dir}/{local_path.name}")


def fetch(uri: str, dst: Path | None = None) -> Path:
    """Download an artifact URI to a local path."""
    dst = dst or Path(tempfile.mkdtemp(prefix="mlship-"))
    try:
        return Path(mlflow.artifacts.download_artifacts(artifact_uri=uri, dst_path=str(dst)))
    except Exception as exc:
        raise StepError(f"cannot download artifact {uri}: {describe(exc)}") from exc
