"""drift: compare a served model's recent inputs with its training data; report to MLflow.

The model version is the one the alias points to (what a ModelDeployment tracking that alias
serves); its training data is the dataset its pipeline ingested (the version's
`mlship.dataset_uri` tag); its recent inputs are what serving logged (mlship.monitoring.recent:
the event record when it has rows of the version, else the inference log).

Result: status "drift" | "no_drift" | "not_enough_data", a one-line reason, the report's run.
Fewer than --min-rows recent rows: says so and reports nothing (no run, no trigger).
"""

from __future__ import annotations

import argparse
import os
import re
import tempfile
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import mlflow
import mlflow.artifacts
import pandas as pd
from mlflow.entities import RunInfo
from mlflow.exceptions import MlflowException
from mlflow.utils.mlflow_tags import MLFLOW_RUN_NAME

from mlship import alerts, contract, names
from mlship.errors import describe
from mlship.mlflow_io import tracking
from mlship.monitoring import drift, drift_plot, inference_log
from mlship.monitoring.recent import load_recent
from mlship.steps import common

STEP = "drift"
DEFAULT_REPORT_EXPERIMENT = names.EXPERIMENT_DRIFT
TAG_DATASET_URI = names.TAG_DATASET_URI


def build() -> argparse.ArgumentParser:
    p = common.parser(STEP, __doc__.splitlines()[0])
    p.add_argument("--model-name", required=True, help="registered model to check")
    p.add_argument(
        "--alias", default=contract.default(STEP, "--alias"),
        help="alias of the served version (default: %(default)s)",
    )
    p.add_argument(
        "--window-minutes", type=_positive(int), default=contract.default(STEP, "--window-minutes"),
        help="how far back recent inputs go (default: %(default)s)",
    )
    p.add_argument(
        "--min-rows", type=_positive(int), default=contract.default(STEP, "--min-rows"),
        help="fewer recent rows than this: not enough data, nothing done (default: %(default)s)",
    )
    p.add_argument(
        "--threshold", type=_share, default=contract.default(STEP, "--threshold"),
        help="share of drifted features that means the inputs drifted (default: %(default)s)",
    )
    p.add_argument(
        "--alpha", type=_share, default=drift.DEFAULT_ALPHA,
        help="significance level over all features, Bonferroni-corrected (default: %(default)s)",
    )
    p.add_argument(
        "--min-effect", type=_share, default=drift.DEFAULT_MIN_EFFECT,
        help="smallest KS statistic / PSI that counts as drift (default: %(default)s)",
    )
    p.add_argument(
        "--inference-experiment", default=contract.default(STEP, "--inference-experiment"),
        help="where serving logs its inputs (default: %(default)s)",
    )
    p.add_argument(
        "--report-experiment", default=contract.default(STEP, "--report-experiment"),
        help="where drift reports are logged (default: %(default)s)",
    )
    return p


def _positive(kind: type) -> Any:
    def parse(text: str) -> Any:
        value = kind(text)
        if value <= 0:
            raise argparse.ArgumentTypeError(f"{text!r} must be > 0")
        return value

    return parse


def _share(text: str) -> float:
    value = float(text)
    if not 0 < value <= 1:
        raise argparse.ArgumentTypeError(f"{text!r} must be in (0, 1]")
    return value


def served_version(client: mlflow.MlflowClient, name: str, alias: str) -> Any:
    try:
        return client.get_model_version_by_alias(name, alias)
    except MlflowException as exc:
        raise tracking.StepError(
            f"model {name!r} has no version with alias {alias!r}, so nothing is served to check: "
            f"{describe(exc)}"
        ) from exc


def training_data(version: Any) -> pd.DataFrame:
    uri = version.tags.get(TAG_DATASET_URI)
    if not uri:
        raise tracking.StepError(
            f"model {version.name!r} v{version.version} has no {TAG_DATASET_URI} tag: it was not "
            "registered by the mlship pipeline, so its training data is unknown"
        )
    with tempfile.TemporaryDirectory() as tmp:
        return pd.read_parquet(mlflow.artifacts.download_artifacts(artifact_uri=uri, dst_path=tmp))


def metric_key(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9_\-. /]", "_", text)


def log_report(
    args: argparse.Namespace, version: Any, report: drift.DriftReport,
    reference: pd.DataFrame, recent: pd.DataFrame,
) -> RunInfo:
    mlflow.set_experiment(args.report_experiment)
    name = f"{version.name} v{version.version} {datetime.now(UTC):%Y-%m-%d %H:%M}"
    tags = {
        MLFLOW_RUN_NAME: name,
        tracking.TAG_RUN_KEY: args.pipeline_run_key,
        names.TAG_MODEL_NAME: version.name,
        names.TAG_MODEL_VERSION: str(version.version),
        names.TAG_ALIAS: args.alias,
        names.TAG_DRIFT: "drift" if report.drifted else "no_drift",
        names.TAG_DRIFT_SUMMARY: report.summary()[:5000],
    }
    with mlflow.start_run(tags=tags) as run:
        mlflow.log_params({
            "window_minutes": args.window_minutes, "min_rows": args.min_rows,
            "threshold": args.threshold, "alpha": args.alpha, "min_effect": args.min_effect,
            "reference_rows": len(reference), "recent_rows": len(recent),
            "dataset_uri": version.tags.get(TAG_DATASET_URI),
        })
        metrics = {"drifted_share": report.drifted_share, "drifted_features": len(report.drifted_features)}
        for f in report.features:
            key = metric_key(f.feature)
            metrics |= {f"{key}.statistic": f.statistic, f"{key}.p_value": f.p_value, f"{key}.psi": f.psi}
        mlflow.log_metrics(metrics)
        mlflow.log_table(report.table(), artifact_file="drift_report.json")
        fig = drift_plot.figure(report, reference, recent)
        with tempfile.TemporaryDirectory() as tmp:
            path = Path(tmp) / "drift.png"
            fig.savefig(path, dpi=110)
            mlflow.log_artifact(str(path))
        info: RunInfo = run.info  # (mlflow's ActiveRun is untyped)
        return info


def body(args: argparse.Namespace) -> dict[str, Any]:
    client = tracking.connect(args.tracking_uri)
    version = served_version(client, args.model_name, args.alias)
    since = datetime.now(UTC) - timedelta(minutes=args.window_minutes)
    recent = load_recent(
        client, version.name, str(version.version), since=since, experiment=args.inference_experiment
    )
    result: dict[str, Any] = {
        "model_name": version.name, "version": str(version.version), "alias": args.alias,
        "rows": len(recent), "window_minutes": args.window_minutes,
    }
    if len(recent) < args.min_rows:
        reason = (
            f"not enough data: {len(recent)} inputs to {version.name} v{version.version} logged in the "
            f"last {args.window_minutes} min, {args.min_rows} needed; nothing compared or triggered"
        )
        print(reason, flush=True)
        return result | {"status": "not_enough_data", "drifted": False, "reason": reason}
    reference = training_data(version)
    features = [c for c in recent.columns if c not in inference_log.RECORD_COLUMNS]
    report = drift.compare(
        reference, recent[features], alpha=args.alpha, threshold=args.threshold, min_effect=args.min_effect
    )
    report_run = log_report(args, version, report, reference, recent[features])
    run_id = str(report_run.run_id)
    status = "drift" if report.drifted else "no_drift"
    reason = (
        f"{status.replace('_', ' ')} in {len(recent)} inputs to {version.name} v{version.version} "
        f"over the last {args.window_minutes} min: {report.summary()}"
    )
    print(reason, flush=True)
    if report.drifted:
        alerts.send(alerts.Alert(
            "drift", version.name, str(version.version), report.summary(),
            alerts.links(
                os.environ, args.tracking_uri,
                experiment_id=report_run.experiment_id, run_id=run_id,
                dag_id=names.DAG_DRIFT, dag_run_id=args.pipeline_run_key,
            ),
        ))  # fmt: skip
    return result | {
        "status": status, "drifted": report.drifted, "reason": reason, "report_run_id": run_id,
        "drifted_features": report.drifted_features, "drifted_share": report.drifted_share,
    }


def main(argv: list[str] | None = None) -> int:
    return common.run(STEP, build, body, argv)


if __name__ == "__main__":
    raise SystemExit(main())
