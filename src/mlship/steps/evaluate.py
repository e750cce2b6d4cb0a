"""evaluate: holdout metrics for the new model and for the current champion, on the same rows.

Result: evaluation_uri (runs:/ URI of evaluation.json), the metrics, the champion's metrics.
"""

from __future__ import annotations

import argparse
import json
from typing import Any

import mlflow
import mlflow.sklearn
import pandas as pd

from mlship import names
from mlship.errors import describe
from mlship.ml import features, metrics
from mlship.mlflow_io import registry, tracking
from mlship.steps import common

STEP = "evaluate"


def build() -> argparse.ArgumentParser:
    p = common.parser(STEP, __doc__.splitlines()[0])
    p.add_argument("--model-uri", required=True, help="the new model (train's model_uri)")
    p.add_argument("--holdout-uri", required=True, help="runs:/ URI of holdout.parquet")
    p.add_argument("--features-uri", required=True, help="runs:/ URI of features.json")
    p.add_argument("--model-name", required=True, help="registered model whose champion to score")
    return p


def score(uri: str, spec: features.FeatureSpec, holdout: pd.DataFrame) -> dict[str, float]:
    # The sklearn flavour (not pyfunc) so that predict_proba is there for ROC-AUC.
    model = mlflow.sklearn.load_model(uri)
    return metrics.finite(
        metrics.evaluate(spec.task, model, holdout[spec.columns], holdout[spec.target])
    )


def body(args: argparse.Namespace) -> dict[str, Any]:
    client = tracking.connect(args.tracking_uri)
    with tracking.step_run(client, args.experiment, args.pipeline_run_key, STEP) as (_, run):
        spec = features.FeatureSpec.from_dict(
            json.loads(tracking.fetch(args.features_uri).read_text())
        )
        holdout = pd.read_parquet(tracking.fetch(args.holdout_uri))
        new = score(args.model_uri, spec, holdout)
        mlflow.log_metrics({f"holdout_{k}": v for k, v in new.items()})

        champ = registry.champion(client, args.model_name)
        champ_scores: dict[str, float] | None = None
        champ_error: str | None = None
        if champ is not None:
            try:
                champ_scores = score(f"models:/{args.model_name}/{champ.version}", spec, holdout)
                mlflow.log_metrics({f"champion_{k}": v for k, v in champ_scores.items()})
            except Exception as exc:  # e.g. trained on other columns: not comparable
                champ_error = describe(exc)
                mlflow.set_tag(names.TAG_CHAMPION_ERROR, champ_error[:5000])
        report = {
            "task": spec.task,
            "model_uri": args.model_uri,
            "holdout_rows": len(holdout),
            "metrics": new,
            "champion_version": champ.version if champ else None,
            "champion_metrics": champ_scores,
            "champion_error": champ_error,
        }
        mlflow.log_dict(report, "evaluation/evaluation.json")
    return {
        **report,
        "evaluation_uri": tracking.runs_uri(run.info.run_id, "evaluation/evaluation.json"),
        "run_id": run.info.run_id,
    }


def main(argv: list[str] | None = None) -> int:
    return common.run(STEP, build, body, argv)


if __name__ == "__main__":
    raise SystemExit(main())
