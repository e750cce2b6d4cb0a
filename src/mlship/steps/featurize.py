"""featurize: seeded train/holdout split and the feature layout the model's preprocessing uses.

The preprocessing itself is fitted in `train` as the first stage of the model's scikit-learn
Pipeline, so it is saved *with* the model and serving needs no feature code.
"""

from __future__ import annotations

import argparse
import tempfile
from pathlib import Path
from typing import Any

import mlflow
import pandas as pd

from mlship import contract
from mlship.ml import datasets, features
from mlship.mlflow_io import tracking
from mlship.steps import common

STEP = "featurize"


def build() -> argparse.ArgumentParser:
    p = common.parser(STEP, __doc__.splitlines()[0])
    p.add_argument("--dataset-uri", required=True, help="runs:/ URI of ingest's dataset.parquet")
    p.add_argument(
        "--target", default=contract.default(STEP, "--target"),
        help="target column (default: %(default)s)",
    )
    p.add_argument("--task", required=True, choices=datasets.TASKS)
    p.add_argument(
        "--holdout-fraction", type=float, default=contract.default(STEP, "--holdout-fraction"),
        help="default: %(default)s",
    )
    p.add_argument(
        "--seed", type=int, default=contract.default(STEP, "--seed"),
        help="split seed (default: %(default)s)",
    )
    return p


def body(args: argparse.Namespace) -> dict[str, Any]:
    client = tracking.connect(args.tracking_uri)
    with tracking.step_run(client, args.experiment, args.pipeline_run_key, STEP) as (_, run):
        run_id = run.info.run_id
        frame = pd.read_parquet(tracking.fetch(args.dataset_uri))
        spec = features.feature_spec(frame, args.target, args.task)
        train, holdout = features.split(frame, spec, args.holdout_fraction, args.seed)
        mlflow.log_params({"holdout_fraction": args.holdout_fraction, "seed": args.seed})
        mlflow.log_metrics({"train_rows": len(train), "holdout_rows": len(holdout)})
        mlflow.log_dict(spec.to_dict(), "features/features.json")
        with tempfile.TemporaryDirectory() as tmp:
            uris = {}
            for name, part in (("train", train), ("holdout", holdout)):
                path = Path(tmp) / f"{name}.parquet"
                part.to_parquet(path, index=False)
                uris[f"{name}_uri"] = tracking.log_file(run_id, path, "features")
    return {
        **uris,
        "features_uri": tracking.runs_uri(run_id, "features/features.json"),
        "train_rows": len(train),
        "holdout_rows": len(holdout),
        "run_id": run_id,
    }


def main(argv: list[str] | None = None) -> int:
    return common.run(STEP, build, body, argv)


if __name__ == "__main__":
    raise SystemExit(main())
