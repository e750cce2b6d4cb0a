"""register: register the new version with its lineage tags and apply the quality gate.

Idempotent per pipeline run: when a version registered by this pipeline run key already went
through the gate, nothing is registered again and the existing version is returned.
"""

from __future__ import annotations

import argparse
import json
import os
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

import mlflow
import mlflow.sklearn
import pandas as pd
from mlflow.entities.model_registry import ModelVersion
from mlflow.tracking import MlflowClient

from mlship import alerts, contract, names
from mlship.errors import BadInput, clip, describe
from mlship.ml import compiled, gate, metrics
from mlship.mlflow_io import registry, tracking
from mlship.steps import common

STEP = "register"
TAG_GATE = names.TAG_GATE
TAG_GATE_REASON = names.TAG_GATE_REASON


def parse_bool(text: str) -> bool:
    v = text.strip().lower()
    if v in ("1", "true", "yes", "on"):
        return True
    if v in ("0", "false", "no", "off"):
        return False
    raise argparse.ArgumentTypeError(f"expected true or false, got {text!r}")


def optional_float(text: str) -> float | None:
    if text.strip().lower() in ("", "none", "null"):
        return None
    try:
        return float(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(f"expected a number or 'none', got {text!r}") from exc


def build() -> argparse.ArgumentParser:
    p = common.parser(STEP, __doc__.splitlines()[0])
    p.add_argument("--model-uri", required=True, help="the new model (train's model_uri)")
    p.add_argument("--evaluation-uri", required=True, help="runs:/ URI of evaluation.json")
    p.add_argument(
        "--holdout-uri", required=True,
        help="runs:/ URI of featurize's holdout.parquet: the compiled predictor's parity check",
    )
    p.add_argument("--model-name", required=True, help="registered model name")
    p.add_argument("--dataset-digest", required=True, help="ingest's dataset digest")
    p.add_argument("--dataset-uri", required=True, help="ingest's dataset URI")
    p.add_argument(
        "--metric", default=contract.default(STEP, "--metric"),
        help="gate metric: accuracy|f1|roc_auc or rmse|mae|r2 (auto: accuracy / r2)",
    )
    p.add_argument(
        "--threshold", type=optional_float, default=contract.default(STEP, "--threshold"),
        help="quality bar: minimum (maximum for rmse/mae); none = no bar",
    )
    p.add_argument(
        "--margin", type=float, default=contract.default(STEP, "--margin"),
        help="how much better than the champion to replace it (default: %(default)s, strict)",
    )
    p.add_argument(
        "--auto-promote", type=parse_bool, default=contract.default(STEP, "--auto-promote"),
        help="move `champion` automatically when the gate allows it (default: true)",
    )
    return p


def gate_input(args: argparse.Namespace, evaluation: dict[str, Any], metric: str) -> gate.GateInput:
    champ_metrics = evaluation.get("champion_metrics") or {}
    return gate.GateInput(
        metric=metric,
        higher_is_better=metrics.HIGHER_IS_BETTER[metric],
        score=evaluation["metrics"].get(metric),
        threshold=args.threshold,
        champion_version=evaluation.get("champion_version"),
        champion_score=champ_metrics.get(metric),
        margin=args.margin,
        auto_promote=args.auto_promote,
    )


def lineage_tags(
    args: argparse.Namespace, evaluation: dict[str, Any], parent_id: str
) -> dict[str, str]:
    tags = {
        tracking.TAG_RUN_KEY: args.pipeline_run_key,
        names.TAG_PARENT_RUN_ID: parent_id,
        names.TAG_DATASET_DIGEST: args.dataset_digest,
        names.TAG_DATASET_URI: args.dataset_uri,
        names.TAG_EVALUATION_URI: args.evaluation_uri,
        names.TAG_TASK: evaluation["task"],
    }
    tags.update(
        {f"{names.TAG_METRIC_PREFIX}{k}": f"{v:.6g}" for k, v in evaluation["metrics"].items()}
    )
    return tags


def version_description(
    source: str, digest: str, evaluation: dict[str, Any], metric: str, decision: gate.Decision
) -> str:
    """What a person reads first on the version's page in the MLflow UI (its many tags are cut
    off there): what it was trained on, how it scored on the holdout, what the gate decided."""
    scores = evaluation["metrics"]
    order = [metric, *sorted(k for k in scores if k != metric)]
    holdout = ", ".join(f"{k} {scores[k]:.4g}" for k in order if scores.get(k) is not None)
    return (
        f"Trained on {source} (digest {digest[:12]}) as a "
        f"{evaluation['task']} model. On its holdout: {holdout or 'no metric could be computed'}. "
        f"Gate on {metric}: {decision.reason}."
    )


def apply(
    client: MlflowClient, name: str, version: ModelVersion, decision: gate.Decision,
    evaluated_champion: str | None, description_of: Callable[[gate.Decision], str],
) -> gate.Decision:
    if gate.CHAMPION in decision.aliases:
        current = registry.champion(client, name)
        now = current.version if current else None
        if now != evaluated_champion:  # another run moved it since evaluate: compare again
            decision = gate.Decision(
                tuple(a for a in decision.aliases if a != gate.CHAMPION),
                f"{decision.reason}; but champion moved to v{now} after evaluation: not promoted",
            )
    for alias in decision.aliases:
        client.set_registered_model_alias(name, alias, version.version)
    client.update_model_version(name, version.version, description=description_of(decision))
    client.set_model_version_tag(name, version.version, TAG_GATE_REASON, decision.reason)
    # Written last: its presence marks the gate as done for this pipeline run (see idempotence).
    client.set_model_version_tag(name, version.version, TAG_GATE, decision.verdict)
    return decision


def parity_rows(
    pipeline: Any, fast: compiled.CompiledPredictor, X: pd.DataFrame
) -> tuple[pd.DataFrame, str]:
    """The holdout rows, and the same rows as probes (missing numbers, unseen and missing
    categories: compiled.probe_rows) when scikit-learn scores them; and which rows those are."""
    probes = compiled.probe_rows(X, fast)
    try:
        pipeline.predict(probes)
    except Exception as exc:
        return X, f"the {len(X)} holdout rows (scikit-learn refuses the probes: {clip(describe(exc), 200)})"
    return (
        pd.concat([X, probes], ignore_index=True),
        f"the {len(X)} holdout rows, and each again with its numbers missing and its categories "
        "unseen or missing",
    )


def compile_version(
    client: MlflowClient, version: ModelVersion, model_uri: str, holdout_uri: str, task: str
) -> dict[str, str]:
    """Compiles the version's pipeline (mlship.ml.compiled), checks parity with it on the holdout
    and logs the compiled form (and parity.json) with the version's run under `compiled/`.
    Returns the version's tags saying how it went. Never raises: a model that does not compile,
    or whose parity fails, is served by scikit-learn, and registration goes on."""
    try:
        if not version.run_id:
            raise compiled.NotCompilable("the version has no run to log the compiled form with")
        pipeline = mlflow.sklearn.load_model(model_uri)
        fast = compiled.compile_pipeline(pipeline, task)
        holdout = pd.read_parquet(tracking.fetch(holdout_uri))
        X = holdout[compiled.input_columns(pipeline, fast)]
        rows, checked = parity_rows(pipeline, fast, X)
        parity = compiled.check_parity(pipeline, fast, rows, task)
        with tempfile.TemporaryDirectory() as tmp:
            fast.save(tmp)
            figures = {"verdict": parity.verdict, "rows": parity.rows, "checked": checked,
                       "mismatches": parity.mismatches, "max_abs_error": parity.max_abs_error,
                       "tolerance": parity.tolerance, "holdout_uri": holdout_uri}
            (Path(tmp) / "parity.json").write_text(json.dumps(figures, indent=1))
            client.log_artifacts(version.run_id, tmp, names.COMPILED_ARTIFACT)
    except Exception as exc:  # recorded on the version; serving falls back to scikit-learn
        return {
            names.TAG_COMPILED: names.NOT_COMPILED,
            names.TAG_COMPILED_DETAIL: clip(f"{names.NOT_COMPILED}: {describe(exc)}", 5000),
        }
    return {
        names.TAG_COMPILED: parity.verdict,
        names.TAG_COMPILED_DETAIL: f"{parity.summary()}; rows: {checked}",
        names.TAG_COMPILED_URI: tracking.runs_uri(version.run_id, names.COMPILED_ARTIFACT),
        names.TAG_PARITY_ROWS: str(parity.rows),
        names.TAG_PARITY_MISMATCHES: str(parity.mismatches),
        names.TAG_PARITY_MAX_ERROR: f"{parity.max_abs_error:.6g}",
    }


def aliases_of(client: MlflowClient, name: str, version: str) -> list[str]:
    return sorted(client.get_model_version(name, version).aliases)


def body(args: argparse.Namespace) -> dict[str, Any]:
    if args.margin < 0:
        raise BadInput(f"--margin must be >= 0, got {args.margin}")
    client = tracking.connect(args.tracking_uri)
    key = args.pipeline_run_key
    with tracking.step_run(client, args.experiment, key, STEP) as (parent, run):
        parent_id = parent.info.run_id
        existing = registry.versions_for_run_key(client, args.model_name, key)
        done = [v for v in existing if TAG_GATE in v.tags]
        if done:
            v = done[0]
            mlflow.set_tag(names.TAG_REGISTER, f"no-op: v{v.version} already registered")
            client.set_terminated(parent_id, status="FINISHED")
            return {
                "model_name": args.model_name,
                "version": str(v.version),
                "aliases": aliases_of(client, args.model_name, v.version),
                "decision": v.tags[TAG_GATE],
                "reason": v.tags.get(TAG_GATE_REASON, ""),
                "already_registered": True,
                "compiled": v.tags.get(names.TAG_COMPILED, names.NOT_COMPILED),
                "compiled_detail": v.tags.get(names.TAG_COMPILED_DETAIL, ""),
                "run_id": run.info.run_id,
            }
        evaluation = json.loads(tracking.fetch(args.evaluation_uri).read_text())
        # The source as given (ingest tagged the pipeline's run with it), else the stored copy.
        source = parent.data.tags.get(names.TAG_DATASET_SOURCE, args.dataset_uri)
        metric = args.metric
        if metric == "auto":
            metric = metrics.DEFAULT_METRIC[evaluation["task"]]
        metrics.check_metric(evaluation["task"], metric)
        decision = gate.decide(gate_input(args, evaluation, metric))
        if existing:  # registered by an attempt that died before the gate finished
            version = existing[0]
        else:
            version = mlflow.register_model(
                args.model_uri, args.model_name, tags=lineage_tags(args, evaluation, parent_id)
            )
        # Before the gate's tags: TAG_GATE, written last, marks the version as done.
        compiled_tags = compile_version(
            client, version, args.model_uri, args.holdout_uri, evaluation["task"]
        )
        for tag, value in compiled_tags.items():
            client.set_model_version_tag(args.model_name, version.version, tag, value)
        decision = apply(
            client, args.model_name, version, decision, evaluation.get("champion_version"),
            lambda final: version_description(
                source, args.dataset_digest, evaluation, metric, final
            ),
        )  # fmt: skip
        if decision.verdict == gate.REJECTED:
            alerts.send(alerts.Alert(
                "gate_failed", args.model_name, str(version.version), decision.reason,
                alerts.links(
                    os.environ, args.tracking_uri,
                    experiment_id=parent.info.experiment_id, run_id=parent_id,
                    model=args.model_name, version=str(version.version),
                    dag_id=names.DAG_TRAINING, dag_run_id=key,
                ),
            ))  # fmt: skip
        mlflow.log_params(
            {"metric": metric, "threshold": args.threshold, "margin": args.margin,
             "auto_promote": args.auto_promote}
        )
        mlflow.log_dict(
            {"version": str(version.version), "aliases": list(decision.aliases),
             "reason": decision.reason},
            "gate/decision.json",
        )
        for rid in (run.info.run_id, parent_id):
            client.set_tag(rid, TAG_GATE_REASON, decision.reason)
            # The bare version, as on inference-log runs and drift reports; the name beside it.
            client.set_tag(rid, names.TAG_MODEL_NAME, args.model_name)
            client.set_tag(rid, names.TAG_MODEL_VERSION, str(version.version))
        client.set_terminated(parent_id, status="FINISHED")
        return {
            "model_name": args.model_name,
            "version": str(version.version),
            "aliases": aliases_of(client, args.model_name, version.version),
            "decision": decision.verdict,
            "reason": decision.reason,
            "already_registered": False,
            "compiled": compiled_tags[names.TAG_COMPILED],
            "compiled_detail": compiled_tags[names.TAG_COMPILED_DETAIL],
            "run_id": run.info.run_id,
        }


def main(argv: list[str] | None = None) -> int:
    return common.run(STEP, build, body, argv)


if __name__ == "__main__":
    raise SystemExit(main())
