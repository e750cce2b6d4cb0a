"""ingest: read a source, record it in MLflow as a versioned dataset, store it as an artifact.

Result: dataset_uri (runs:/ URI of the stored Parquet), dataset_digest, task, rows, run ids.
"""

from __future__ import annotations

import argparse
import os
import tempfile
from pathlib import Path
from typing import Any

import mlflow
from mlflow.data.code_dataset_source import CodeDatasetSource
from mlflow.data.dataset_source import DatasetSource
from mlflow.data.dataset_source_registry import resolve_dataset_source
from mlflow.data.http_dataset_source import HTTPDatasetSource
from mlflow.data.pandas_dataset import from_pandas
from mlflow.entities import DatasetInput, InputTag
from mlflow.utils.mlflow_tags import MLFLOW_DATASET_CONTEXT

from mlship import contract, names
from mlship.errors import BadInput
from mlship.ml import datasets
from mlship.mlflow_io import tracking
from mlship.steps import common

STEP = "ingest"
TAG_DIGEST = names.TAG_DATASET_DIGEST
TAG_SOURCE = names.TAG_DATASET_SOURCE
TAG_REASON = names.TAG_TRIGGER_REASON


def build() -> argparse.ArgumentParser:
    p = common.parser(STEP, __doc__.splitlines()[0])
    p.add_argument(
        "--source", required=True,
        help="sklearn:iris|wine|breast_cancer|diabetes, a .csv/.parquet path or http(s) URL, or a "
        "JSON API: json+https://host/path#records=<path>&columns=<name>:<path>,... "
        f"(request headers from ${names.SOURCE_HEADERS_ENV}), or a DVC-tracked .csv/.parquet "
        "in a git repo: dvc:<repo>#<path>[@<rev>]",
    )
    p.add_argument(
        "--target", default=contract.default(STEP, "--target"),
        help="target column (default: %(default)s)",
    )
    p.add_argument(
        "--task", default=contract.default(STEP, "--task"), choices=["auto", *datasets.TASKS],
        help="auto: known for sklearn sets, inferred from the target otherwise",
    )
    p.add_argument(
        "--reason", default=contract.default(STEP, "--reason"),
        help="why the pipeline runs, e.g. the drift that triggered it (default: %(default)s)",
    )
    return p


def mlflow_source(source: str, lineage: dict[str, str] | None = None) -> DatasetSource:
    kind = datasets.source_kind(source)
    if kind in ("sklearn", "dvc"):
        return CodeDatasetSource(tags={TAG_SOURCE: source, **(lineage or {})})
    if kind == "http":
        return HTTPDatasetSource(source)  # type: ignore[no-untyped-call]
    if kind == "json":
        # the fetched URL, its fragment still saying which records and columns were read
        return HTTPDatasetSource(source.removeprefix("json+"))  # type: ignore[no-untyped-call]
    return resolve_dataset_source(os.path.abspath(source))


def body(args: argparse.Namespace) -> dict[str, Any]:
    loaded = datasets.load(args.source)
    frame = loaded.frame
    if args.target not in frame.columns:
        cols = ", ".join(map(str, frame.columns[:20]))
        raise BadInput(f"target column {args.target!r} not in {args.source} (columns: {cols})")
    task = args.task
    if task == "auto":
        task = loaded.task_hint or datasets.infer_task(frame[args.target])
    frame.columns = [str(c) for c in frame.columns]

    client = tracking.connect(args.tracking_uri)
    with tracking.step_run(client, args.experiment, args.pipeline_run_key, STEP) as (parent, run):
        run_id = run.info.run_id
        ds = from_pandas(
            frame, source=mlflow_source(args.source, loaded.lineage), targets=args.target,
            name=loaded.name, digest=loaded.digest,
        )
        mlflow.log_input(ds, context=STEP)
        # The parent run carries the dataset too: a model version's run leads up to it.
        client.log_inputs(
            parent.info.run_id,
            datasets=[
                DatasetInput(ds._to_mlflow_entity(), [InputTag(MLFLOW_DATASET_CONTEXT, "training")])
            ],
        )
        for rid in (run_id, parent.info.run_id):
            client.set_tag(rid, TAG_DIGEST, loaded.digest)
            client.set_tag(rid, TAG_SOURCE, args.source)
            for tag, value in loaded.lineage.items():
                client.set_tag(rid, tag, value)
        client.set_tag(parent.info.run_id, TAG_REASON, args.reason[:5000])
        mlflow.log_params({"source": args.source, "target": args.target, "task": task})
        mlflow.log_metrics({"rows": len(frame), "columns": frame.shape[1]})
        with tempfile.TemporaryDirectory() as tmp:
            path = Path(tmp) / "dataset.parquet"
            frame.to_parquet(path, index=False)
            uri = tracking.log_file(run_id, path, "data")
    return {
        "dataset_uri": uri,
        "dataset_digest": loaded.digest,
        "dataset_name": loaded.name,
        "task": task,
        "target": args.target,
        "rows": len(frame),
        "run_id": run_id,
        "parent_run_id": parent.info.run_id,
    }


def main(argv: list[str] | None = None) -> int:
    return common.run(STEP, build, body, argv)


if __name__ == "__main__":
    raise SystemExit(main())
