"""`mlship run`: the whole pipeline without a cluster.

The same step CLIs the Airflow DAG runs in pods, run here in sequence as local processes against
a local MLflow (SQLite + local artifacts under ./.mlship/) or any --tracking-uri. Results pass
between steps exactly as in the cluster: each step writes its result JSON to its --xcom-path.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import os
import subprocess
import sys
import time
import uuid
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from mlship import datasets
from mlship.tracking import DEFAULT_EXPERIMENT

STEPS = ("ingest", "validate", "featurize", "train", "evaluate", "register")


class PipelineFailed(RuntimeError):
    def __init__(self, step: str, message: str, log: Path) -> None:
        super().__init__(f"step {step} failed: {message} (full log: {log})")
        self.step = step


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="mlship", description=__doc__.splitlines()[0])
    sub = p.add_subparsers(dest="command", required=True)
    r = sub.add_parser("run", help="run the training pipeline locally")
    r.add_argument("--dataset", required=True, help="sklearn:iris, a .csv/.parquet path or URL")
    r.add_argument("--target", default="target")
    r.add_argument("--task", default="auto", choices=["auto", *datasets.TASKS])
    r.add_argument("--estimator", default="auto")
    r.add_argument("--hyperparameters", default="{}", help="JSON object or @file.json")
    r.add_argument("--rules", default="{}", help="validation rules, JSON object or @file.json")
    r.add_argument("--seed", type=int, default=42)
    r.add_argument("--holdout-fraction", type=float, default=0.2)
    r.add_argument("--model-name", help="registered model name (default: the dataset's name)")
    r.add_argument("--metric", default="auto")
    r.add_argument("--threshold", default="none", help="quality bar for the gate metric")
    r.add_argument("--margin", type=float, default=0.0)
    r.add_argument("--no-auto-promote", action="store_true", help="never move `champion`")
    r.add_argument(
        "--home", default=".mlship", type=Path,
        help="local state: SQLite DB, artifacts, step logs (default: %(default)s)",
    )
    r.add_argument("--tracking-uri", help="use this MLflow instead of the local SQLite one")
    r.add_argument("--experiment", default=DEFAULT_EXPERIMENT)
    r.add_argument(
        "--run-key", help="pipeline run key; reuse one to resume a failed run (default: new)",
    )
    return p


def local_store(home: Path, experiment: str) -> str:
    """A SQLite tracking URI under `home`, with the experiment's artifacts beside it."""
    if importlib.util.find_spec("sqlalchemy") is None:  # mlflow-skinny alone has no SQL store
        raise SystemExit(
            "mlship run: the local SQLite store needs the full mlflow package "
            "(pip install 'mlship[tracking-server]'), or pass --tracking-uri of an MLflow server"
        )
    home.mkdir(parents=True, exist_ok=True)
    uri = f"sqlite:///{home.resolve() / 'mlflow.db'}"
    from mlflow.tracking import MlflowClient

    from mlship.tracking import experiment_id

    # Created here so artifacts land in home/artifacts, not in ./mlruns of whatever cwd.
    experiment_id(MlflowClient(uri), experiment, (home.resolve() / "artifacts").as_uri())
    return uri


def step_commands(a: argparse.Namespace, out: dict[str, dict[str, Any]]) -> dict[str, list[str]]:
    """The flags of each step, given the results of the steps before it (pure)."""
    ing = out.get("ingest", {})
    fea = out.get("featurize", {})
    trn = out.get("train", {})
    eva = out.get("evaluate", {})
    task = ing.get("task", a.task)
    model_name = a.model_name or datasets.dataset_name(a.dataset)
    return {
        "ingest": ["--source", a.dataset, "--target", a.target, "--task", a.task],
        "validate": [
            "--dataset-uri", ing.get("dataset_uri", ""), "--target", a.target, "--task", task,
            "--rules", a.rules,
        ],
        "featurize": [
            "--dataset-uri", ing.get("dataset_uri", ""), "--target", a.target, "--task", task,
            "--holdout-fraction", str(a.holdout_fraction), "--seed", str(a.seed),
        ],
        "train": [
            "--train-uri", fea.get("train_uri", ""), "--features-uri", fea.get("features_uri", ""),
            "--estimator", a.estimator, "--hyperparameters", a.hyperparameters,
            "--seed", str(a.seed),
        ],
        "evaluate": [
            "--model-uri", trn.get("model_uri", ""), "--holdout-uri", fea.get("holdout_uri", ""),
            "--features-uri", fea.get("features_uri", ""), "--model-name", model_name,
        ],
        "register": [
            "--model-uri", trn.get("model_uri", ""),
            "--evaluation-uri", eva.get("evaluation_uri", ""),
            "--model-name", model_name,
            "--dataset-digest", ing.get("dataset_digest", ""),
            "--dataset-uri", ing.get("dataset_uri", ""),
            "--metric", a.metric, "--threshold", a.threshold, "--margin", str(a.margin),
            "--auto-promote", "false" if a.no_auto_promote else "true",
        ],
    }


def run_step(step: str, flags: list[str], common: list[str], logdir: Path) -> dict[str, Any]:
    result = logdir / f"{step}.json"
    log = logdir / f"{step}.log"
    cmd = [sys.executable, "-m", f"mlship.steps.{step}", *common, "--xcom-path", str(result)]
    with open(log, "wb") as fh:
        proc = subprocess.run([*cmd, *flags], stdout=fh, stderr=subprocess.STDOUT, check=False)  # noqa: S603
    if proc.returncode != 0:
        lines = log.read_text(errors="replace").strip().splitlines()
        errors = [ln for ln in lines if ln.startswith(f"mlship {step} failed:")]
        message = errors[-1].split(": ", 1)[1] if errors else (lines[-1] if lines else "no output")
        raise PipelineFailed(step, message, log)
    return json.loads(result.read_text())


def summary(tracking_uri: str, reg: dict[str, Any], ing: dict[str, Any]) -> str:
    if tracking_uri.startswith("sqlite:"):
        ui = f"mlflow ui --backend-store-uri {tracking_uri}"
        where = f"{ui}   # then open http://127.0.0.1:5000"
    else:
        where = tracking_uri
    aliases = ", ".join(reg["aliases"]) or "none"
    ref = "@champion" if "champion" in reg["aliases"] else f"/{reg['version']}"
    again = ""
    if reg["already_registered"]:
        again = " (already registered by this run key: nothing new)"
    return "\n".join(
        [
            f"model:    {reg['model_name']} version {reg['version']}{again}",
            f"aliases:  {aliases}",
            f"gate:     {reg['reason']}",
            f"dataset:  {ing['dataset_name']} digest {ing['dataset_digest']}",
            f"load it:  mlflow.pyfunc.load_model('models:/{reg['model_name']}{ref}')",
            f"look:     {where}",
        ]
    )


def run(a: argparse.Namespace) -> int:
    key = a.run_key or f"local-{datetime.now(UTC):%Y%m%dT%H%M%S}-{uuid.uuid4().hex[:6]}"
    tracking_uri = a.tracking_uri or local_store(a.home, a.experiment)
    logdir = a.home / "runs" / key
    logdir.mkdir(parents=True, exist_ok=True)
    common = [
        "--tracking-uri", tracking_uri, "--experiment", a.experiment, "--pipeline-run-key", key,
    ]
    out: dict[str, dict[str, Any]] = {}
    print(f"pipeline run {key} -> {tracking_uri}", flush=True)
    try:
        for step in STEPS:
            print(f"  {step:<10}", end="", flush=True)
            started = time.monotonic()
            out[step] = run_step(step, step_commands(a, out)[step], common, logdir)
            print(f"ok  {time.monotonic() - started:.1f}s", flush=True)
    except PipelineFailed as exc:
        print("FAILED", flush=True)
        print(f"mlship run: {exc}", file=sys.stderr)
        return 1
    print(summary(tracking_uri, out["register"], out["ingest"]))
    return 0


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    os.environ.setdefault("PYTHONUNBUFFERED", "1")
    if args.command == "run":
        return run(args)
    return 2  # pragma: no cover - argparse requires a command


if __name__ == "__main__":
    raise SystemExit(main())
