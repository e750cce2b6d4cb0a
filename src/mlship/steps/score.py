"""score: score a dataset with a registered model version; log the predictions to MLflow.

The version is the one `--version` names, else the one `--alias` points to. Its compiled form
(when its parity held at registration: mlship.mlflow_io.compiled, as serving chooses) answers a
single row 50-170x faster than scikit-learn, but scikit-learn's Cython can be faster on large
chunks (benchmarks/batch_score.py), so with `--predictor auto` both score the first PROBE_ROWS
rows, their answers are compared, and the faster scores the rest, its answers on the first rows
kept (no row is scored twice by it; when the answers differ scikit-learn scores every row);
`compiled` or `sklearn` insist.

The input is read like ingest's sources (a CSV/Parquet path or URL, a JSON API, a DVC file, a
bundled scikit-learn set); the model's input columns must all be there, any others are carried
through to the output.

Result: the run (in --batch-experiment) holding predictions/predictions.parquet (the input's
columns and `prediction`), tagged with the model version and the input's digest; rows, rows/s.
Run again with the same pipeline run key (an Airflow retry), it returns the finished run's result.
"""

from __future__ import annotations

import argparse
import tempfile
import time
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import mlflow
import numpy as np
import pandas as pd
from mlflow.entities import Run
from mlflow.exceptions import MlflowException
from mlflow.tracking import MlflowClient
from mlflow.utils.mlflow_tags import MLFLOW_RUN_NAME

from mlship import contract, names
from mlship.errors import BadInput, describe
from mlship.ml import datasets
from mlship.ml.compiled import ATOL, RTOL
from mlship.mlflow_io import compiled, tracking
from mlship.mlflow_io.registry import version_by_alias
from mlship.steps import common

STEP = contract.SCORE
PREDICTION = "prediction"
ARTIFACT = "predictions/predictions.parquet"
CHUNK_ROWS = 200_000  # bounds the memory a chunk's features and answers take
PROBE_ROWS = 20_000
TAG_PREDICTOR = names.TAG_PREDICTOR
TAG_PREDICTOR_REASON = names.TAG_PREDICTOR_REASON


def build() -> argparse.ArgumentParser:
    p = common.parser(STEP, __doc__.splitlines()[0])
    p.add_argument("--model-name", required=True, help="registered model to score with")
    p.add_argument(
        "--alias", default=contract.default(STEP, "--alias"),
        help="alias of the version to score with, unless --version is given (default: %(default)s)",
    )
    p.add_argument(
        "--version", type=_version, default=contract.default(STEP, "--version"),
        help="a version number; none (the default): the version --alias points to",
    )
    p.add_argument(
        "--input", default=contract.default(STEP, "--input"),
        help="the dataset to score, any source ingest reads (default: %(default)s)",
    )
    p.add_argument(
        "--predictor", choices=contract.PREDICTORS, default=contract.default(STEP, "--predictor"),
        help="auto: the faster of the compiled form and scikit-learn on the first rows, answers "
        "compared (default: %(default)s)",
    )
    p.add_argument(
        "--batch-experiment", default=contract.default(STEP, "--batch-experiment"),
        help="where the predictions are logged (default: %(default)s)",
    )
    return p


def _version(text: str) -> int | None:
    if text.strip().lower() in ("", "none", "null"):
        return None
    if not text.strip().isdigit() or int(text) < 1:
        raise argparse.ArgumentTypeError(f"{text!r} is not a version number (or none: the alias's)")
    return int(text)


def model_version(client: MlflowClient, name: str, alias: str, version: int | None) -> Any:
    if version is not None:
        try:
            return client.get_model_version(name, str(version))
        except MlflowException as exc:
            raise BadInput(f"model {name!r} has no version {version}: {describe(exc)}") from exc
    try:
        found = version_by_alias(client, name, alias)
    except MlflowException as exc:
        raise tracking.StepError(f"cannot look up {name!r}@{alias}: {describe(exc)}") from exc
    if found is None:
        raise BadInput(f"model {name!r} has no version with alias {alias!r}")
    return found


def input_columns(pyfunc: Any) -> list[str] | None:
    schema = pyfunc.metadata.get_input_schema()
    return None if schema is None or not schema.has_input_names() else list(schema.input_names())


def score(
    frame: pd.DataFrame, pyfunc: Any, choice: compiled.Choice, columns: list[str] | None, start: int = 0
) -> pd.Series:
    """The predictions for the rows of `frame` from row `start` on, chunk by chunk, in its order; the
    chunks are those of the whole frame (every CHUNK_ROWS rows from row 0), the first cut at `start`."""
    parts = []
    first = start
    while first < len(frame):
        last = (first // CHUNK_ROWS + 1) * CHUNK_ROWS
        chunk = frame.iloc[first:last]
        first = last
        fast = choice.predictor
        if fast is not None:
            parts.append(pd.Series(fast.predict({c: chunk[c].to_numpy() for c in fast.columns})))
        else:
            parts.append(pd.Series(pyfunc.predict(chunk if columns is None else chunk[columns])))
    if not parts:
        return pd.Series([], dtype=float, name=PREDICTION)
    return pd.concat(parts, ignore_index=True).rename(PREDICTION)


@dataclass(frozen=True)
class Probe:
    """The chosen predictor's answers on the first rows, and the seconds it took to give them."""

    answers: pd.Series
    seconds: float


def _differ(a: Any, b: Any) -> int:
    a, b = np.asarray(a), np.asarray(b)
    if a.dtype.kind in "fc" or b.dtype.kind in "fc":
        return int((~np.isclose(a.astype(float), b.astype(float), rtol=RTOL, atol=ATOL)).sum())
    return int((a != b).sum())


def pick(
    requested: str, choice: compiled.Choice, frame: pd.DataFrame, pyfunc: Any, columns: list[str] | None
) -> tuple[compiled.Choice, dict[str, float], Probe | None]:
    """What scores `frame` (see the module docstring), the probe's rows/s per predictor, and the
    chosen predictor's probe answers when they can stand for the first rows (None: score them)."""
    if choice.predictor is None:
        if requested == compiled.COMPILED:
            raise BadInput(f"--predictor compiled: the version has no usable compiled form ({choice.reason})")
        return choice, {}, None
    if requested == compiled.SKLEARN:
        return compiled.Choice(None, "asked", "scikit-learn, as asked (--predictor sklearn)"), {}, None
    if requested == compiled.COMPILED or frame.empty:
        return choice, {}, None
    probe = frame.iloc[:PROBE_ROWS]
    sklearn = compiled.Choice(None, "", "")
    answers, rates, seconds = {}, {}, {}
    for c in (choice, sklearn):
        started = time.perf_counter()
        answers[c.kind] = score(probe, pyfunc, c, columns)
        seconds[c.kind] = time.perf_counter() - started
        rates[c.kind] = len(probe) / max(seconds[c.kind], 1e-9)
    differ = _differ(answers[compiled.COMPILED].to_numpy(), answers[compiled.SKLEARN].to_numpy())
    if differ:
        return compiled.Choice(None, "parity_failed", (
            f"the compiled form answered {differ} of the first {len(probe)} rows otherwise than "
            "scikit-learn, which scores")), rates, None
    fast, slow = rates[compiled.COMPILED], rates[compiled.SKLEARN]
    measured = f"on the first {len(probe)} rows ({fast:,.0f} rows/s compiled, {slow:,.0f} scikit-learn)"
    if slow > fast:
        why = f"{choice.reason}; scikit-learn faster {measured}"
        chosen = compiled.Choice(None, "sklearn_faster", why)
    else:
        chosen = compiled.Choice(choice.predictor, choice.code, f"{choice.reason}; faster {measured}")
    return chosen, rates, Probe(answers[chosen.kind], seconds[chosen.kind])


def predictions(
    frame: pd.DataFrame, pyfunc: Any, choice: compiled.Choice, columns: list[str] | None, probe: Probe | None
) -> tuple[pd.Series, float]:
    """Every row's prediction by `choice`, the probe's answers (pick's) standing for the first rows,
    and the seconds `choice` took over all rows (its probe's included)."""
    if probe is None:
        started = time.perf_counter()
        answers = score(frame, pyfunc, choice, columns)
        return answers, time.perf_counter() - started
    done = len(probe.answers)
    if done >= len(frame):
        return probe.answers, probe.seconds
    started = time.perf_counter()
    rest = score(frame, pyfunc, choice, columns, start=done)
    seconds = probe.seconds + time.perf_counter() - started
    return pd.concat([probe.answers, rest], ignore_index=True).rename(PREDICTION), seconds


def finished_run(client: MlflowClient, experiment: str, key: str) -> Run | None:
    exp = client.get_experiment_by_name(experiment)
    if exp is None:
        return None
    runs = client.search_runs(
        [exp.experiment_id],
        filter_string=(f"tags.`{tracking.TAG_RUN_KEY}` = '{tracking.check_run_key(key)}' "
                       "and attributes.status = 'FINISHED'"),
        max_results=1,
    )
    return runs[0] if runs else None


def result_of(run: Run) -> dict[str, Any]:
    tags, params, metrics = run.data.tags, run.data.params, run.data.metrics
    return {
        "run_id": run.info.run_id,
        "predictions_uri": tracking.runs_uri(run.info.run_id, ARTIFACT),
        "model_name": tags[names.TAG_MODEL_NAME],
        "version": tags[names.TAG_MODEL_VERSION],
        "predictor": tags[TAG_PREDICTOR],
        "predictor_reason": tags[TAG_PREDICTOR_REASON],
        "input": tags[names.TAG_DATASET_SOURCE],
        "input_digest": tags[names.TAG_DATASET_DIGEST],
        "rows": int(params["rows"]),
        "rows_per_second": metrics.get("rows_per_second"),
    }


def body(args: argparse.Namespace) -> dict[str, Any]:
    client = tracking.connect(args.tracking_uri)
    done = finished_run(client, args.batch_experiment, args.pipeline_run_key)
    if done is not None:
        print(f"already scored by run {done.info.run_id}; nothing done", flush=True)
        return result_of(done)
    version = model_version(client, args.model_name, args.alias, args.version)
    data = datasets.load(args.input)
    frame = data.frame
    uri = f"models:/{version.name}/{version.version}"
    try:
        pyfunc = mlflow.pyfunc.load_model(uri)
    except Exception as exc:
        raise tracking.StepError(f"cannot load {uri}: {describe(exc)}") from exc
    columns = input_columns(pyfunc)
    missing = [c for c in columns or [] if c not in frame.columns]
    if missing:
        raise BadInput(
            f"{args.input!r} lacks the model's input column(s) {', '.join(missing)} "
            f"({version.name} v{version.version} reads {', '.join(columns or [])})"
        )
    if PREDICTION in frame.columns:
        raise BadInput(f"{args.input!r} already has a {PREDICTION!r} column, the one the output adds")
    choice, probe_rates, probe = pick(
        args.predictor, compiled.choose(version.tags, columns, args.tracking_uri), frame, pyfunc, columns
    )
    print(f"scoring {len(frame)} rows of {args.input} with {uri} by {choice.kind}: {choice.reason}",
          flush=True)
    answers, seconds = predictions(frame, pyfunc, choice, columns, probe)
    out = frame.assign(**{PREDICTION: answers.to_numpy()})
    rate = len(frame) / seconds if seconds > 0 else 0.0
    tags = {
        MLFLOW_RUN_NAME: f"{version.name} v{version.version} batch {datetime.now(UTC):%Y-%m-%d %H:%M}",
        tracking.TAG_RUN_KEY: args.pipeline_run_key,
        names.TAG_MODEL_NAME: version.name,
        names.TAG_MODEL_VERSION: str(version.version),
        names.TAG_DATASET_SOURCE: args.input,
        names.TAG_DATASET_DIGEST: data.digest,
        TAG_PREDICTOR: choice.kind,
        TAG_PREDICTOR_REASON: choice.reason[:5000],
    }
    if args.version is None:
        tags[names.TAG_ALIAS] = args.alias
    mlflow.set_experiment(args.batch_experiment)
    with mlflow.start_run(tags=tags) as run, tempfile.TemporaryDirectory() as tmp:
        mlflow.log_params({"rows": len(frame), "chunk_rows": CHUNK_ROWS, "model_uri": uri,
                           "predictor": args.predictor})
        mlflow.log_metrics({"rows_per_second": rate, "score_seconds": seconds,
                            **{f"probe_rows_per_second.{k}": v for k, v in probe_rates.items()}})
        path = Path(tmp) / Path(ARTIFACT).name
        out.to_parquet(path, index=False)
        tracking.log_file(run.info.run_id, path, str(Path(ARTIFACT).parent))
    print(f"scored {len(frame)} rows in {seconds:.2f}s ({rate:,.0f} rows/s)", flush=True)
    return result_of(client.get_run(run.info.run_id))


def main(argv: list[str] | None = None) -> int:
    return common.run(STEP, build, body, argv)


if __name__ == "__main__":
    raise SystemExit(main())
