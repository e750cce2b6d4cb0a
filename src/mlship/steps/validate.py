"""validate: check the ingested dataset against the schema and rules; fail loudly on violations.

A failure names the column, the rule and the offending count, and fails the pipeline run, so
nothing downstream is trained, registered or promoted.
"""

from __future__ import annotations

import argparse
from typing import Any

import mlflow
import pandas as pd

from mlship import contract, names
from mlship.errors import BadInput
from mlship.ml import datasets, validation
from mlship.mlflow_io import tracking
from mlship.steps import common

STEP = "validate"


def build() -> argparse.ArgumentParser:
    p = common.parser(STEP, __doc__.splitlines()[0])
    p.add_argument("--dataset-uri", required=True, help="runs:/ URI of ingest's dataset.parquet")
    p.add_argument(
        "--target", default=contract.default(STEP, "--target"),
        help="target column (default: %(default)s)",
    )
    p.add_argument("--task", required=True, choices=datasets.TASKS)
    p.add_argument(
        "--rules", type=common.json_arg, default=contract.default(STEP, "--rules"),
        help="validation rules as JSON or @file.json (see mlship.validation); default: no nulls",
    )
    return p


def body(args: argparse.Namespace) -> dict[str, Any]:
    rules = validation.check_rules(args.rules)
    client = tracking.connect(args.tracking_uri)
    with tracking.step_run(client, args.experiment, args.pipeline_run_key, STEP) as (parent, run):
        frame = pd.read_parquet(tracking.fetch(args.dataset_uri))
        violations = validation.validate(frame, args.target, args.task, rules)
        mlflow.log_dict(
            {"rules": rules, "violations": [v.to_dict() for v in violations]},
            "validation/report.json",
        )
        mlflow.log_metrics({"rows": len(frame), "violations": len(violations)})
        status = "failed" if violations else "passed"
        for rid in (run.info.run_id, parent.info.run_id):
            client.set_tag(rid, names.TAG_VALIDATION, status)
        if violations:
            raise BadInput("validation failed: " + "; ".join(v.message() for v in violations))
    return {"rows": len(frame), "violations": 0, "run_id": run.info.run_id}


def main(argv: list[str] | None = None) -> int:
    return common.run(STEP, build, body, argv)


if __name__ == "__main__":
    raise SystemExit(main())
