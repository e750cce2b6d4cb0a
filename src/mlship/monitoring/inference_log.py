"""The inference log: what serving was asked and answered, stored in MLflow, and its reader.

Serving (mlship.serving.recorder) writes it; the drift step reads it with `load_records`. This
module holds the format both sides agree on and imports nothing from serving.

Layout. One MLflow run per serving process, in experiment `mlship-inference` (by default),
tagged `mlship.inference_log=true`, `mlship.model_name`, `mlship.model_version` and `mlship.pod`.
Its start time is the time of its first record (so a search by start time never misses rows).
Its artifacts are JSON-lines files:

    inference/<UTC hour YYYY-MM-DDTHH>/<first record, unix ms>-<sequence>.jsonl

Every record in a file lies in the hour of its folder (a flush that spans hours writes one file
per hour), so a reader of a time range lists only the hour folders that overlap it. One line
per scored row:

    {"ts": <epoch seconds, float>, "inputs": {<column>: <value>, ...}, "prediction": <value>}

Only requests parsed against a column signature are logged (see the serving recorder).
"""

from __future__ import annotations

import re
import tempfile
from collections.abc import Iterable, Iterator, Mapping
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Any

import orjson

from mlship import names

if TYPE_CHECKING:
    import pandas as pd
    from mlflow import MlflowClient

DEFAULT_EXPERIMENT = names.EXPERIMENT_INFERENCE
TAG_LOG = names.TAG_INFERENCE_LOG
TAG_MODEL_NAME = names.TAG_MODEL_NAME
TAG_MODEL_VERSION = names.TAG_MODEL_VERSION  # the bare version ("3")
TAG_POD = names.TAG_POD
ARTIFACT_DIR = "inference"
SUFFIX = ".jsonl"
HOUR_FORMAT = "%Y-%m-%dT%H"
# The frame `load_records` returns has these columns, then one per input feature.
RECORD_COLUMNS = ("ts", "prediction")

_HOUR_DIR = re.compile(r"^\d{4}-\d{2}-\d{2}T\d{2}$")
_FILE = re.compile(r"^(?P<ms>\d+)-(?P<seq>\d+)\.jsonl$")
_HOUR = timedelta(hours=1)


# --- the format ---------------------------------------------------------------------------------


def hour_of(ts: float) -> str:
    """The hour folder name of a record time (epoch seconds)."""
    return datetime.fromtimestamp(ts, UTC).strftime(HOUR_FORMAT)


def artifact_dir(hour: str) -> str:
    return f"{ARTIFACT_DIR}/{hour}"


def file_name(first_ts: float, seq: int) -> str:
    return f"{int(first_ts * 1000)}-{seq}{SUFFIX}"


def run_name(model_name: str, version: str, pod: str) -> str:
    return f"{model_name} v{version} {pod}"


def run_tags(model_name: str, version: str, pod: str) -> dict[str, str]:
    return {TAG_LOG: "true", TAG_MODEL_NAME: model_name, TAG_MODEL_VERSION: version, TAG_POD: pod}


def encode_record(ts: float, inputs: Mapping[str, Any], prediction: Any) -> bytes:
    """One line (with its newline). NaN inputs (missing optional values) become null."""
    return orjson.dumps(
        {"ts": ts, "inputs": inputs, "prediction": prediction}, option=orjson.OPT_SERIALIZE_NUMPY
    ) + b"\n"


def decode_records(data: bytes) -> Iterator[dict[str, Any]]:
    for line in data.splitlines():
        if line.strip():
            yield orjson.loads(line)


# --- the reader ---------------------------------------------------------------------------------


def _utc(when: datetime) -> datetime:
    """Naive datetimes are taken as UTC."""
    return when.replace(tzinfo=UTC) if when.tzinfo is None else when.astimezone(UTC)


def _quote(value: str) -> str:
    if "'" in value and '"' in value:
        raise ValueError(f"cannot search MLflow for {value!r}: it has both kinds of quote")
    return f'"{value}"' if "'" in value else f"'{value}'"


def hours_between(since: datetime, until: datetime) -> list[str]:
    """Names of the hour folders overlapping [since, until)."""
    start, end = _utc(since), _utc(until)
    if start >= end:
        return []
    start = start.replace(minute=0, second=0, microsecond=0)
    hours = []
    while start < end:
        hours.append(start.strftime(HOUR_FORMAT))
        start += _HOUR
    return hours


def find_runs(
    client: MlflowClient,
    model_name: str,
    version: str,
    since: datetime,
    until: datetime,
    experiment: str = DEFAULT_EXPERIMENT,
) -> list[Any]:
    """The inference-log runs of one model version that may hold records in [since, until)."""
    exp = client.get_experiment_by_name(experiment)
    if exp is None:
        return []
    until_ms = int(_utc(until).timestamp() * 1000) + 1  # a run started in until's millisecond may
    since_ms = int(_utc(since).timestamp() * 1000)  # hold earlier rows (start_time is truncated)
    query = (
        f"tags.`{TAG_LOG}` = 'true' AND tags.`{TAG_MODEL_NAME}` = {_quote(model_name)} "
        f"AND tags.`{TAG_MODEL_VERSION}` = {_quote(version)} "
        f"AND attributes.start_time < {until_ms}"
    )
    runs: list[Any] = []
    token = None
    while True:
        page = client.search_runs(
            [exp.experiment_id], filter_string=query, max_results=1000, page_token=token
        )
        # A finished run's records all lie before its end time; a crashed one has none.
        runs.extend(r for r in page if not (r.info.end_time and r.info.end_time < since_ms))
        token = page.token
        if not token:
            return runs


def _hour_dirs(client: MlflowClient, run_id: str, wanted: set[str]) -> list[str]:
    listed = client.list_artifacts(run_id, ARTIFACT_DIR)
    names = (Path(f.path).name for f in listed if f.is_dir)
    return sorted(artifact_dir(n) for n in names if _HOUR_DIR.match(n) and n in wanted)


def _rows(
    files: Iterable[Path], since_s: float, until_s: float, until_ms: int
) -> Iterator[dict[str, Any]]:
    for path in files:
        match = _FILE.match(path.name)
        if match is None or int(match["ms"]) >= until_ms:  # every record in it is later still
            continue
        for record in decode_records(path.read_bytes()):
            if since_s <= record["ts"] < until_s:
                yield record


def records_frame(records: Iterable[Mapping[str, Any]]) -> pd.DataFrame:
    """Records as a frame: `ts`, `prediction`, then one column per input feature (an input
    named like one of RECORD_COLUMNS becomes `inputs.<name>`), ordered by time."""
    import pandas as pd

    rows = []
    for record in records:
        row = {"ts": float(record["ts"]), "prediction": record.get("prediction")}
        for name, value in (record.get("inputs") or {}).items():
            row[f"inputs.{name}" if name in RECORD_COLUMNS else name] = value
        rows.append(row)
    if not rows:
        return pd.DataFrame({"ts": pd.Series(dtype="float64"), "prediction": pd.Series(dtype=object)})
    frame = pd.DataFrame(rows)
    return frame.sort_values("ts", kind="stable", ignore_index=True)


def load_records(
    client: MlflowClient,
    model_name: str,
    version: str,
    since: datetime,
    until: datetime | None = None,
    experiment: str = DEFAULT_EXPERIMENT,
) -> pd.DataFrame:
    """Every logged row of `model_name` version `version` with since <= ts < until (until
    defaults to now; naive datetimes are UTC), from every serving process that served it.

    Returns a frame with columns `ts` (epoch seconds, float), `prediction`, and one per input
    feature, ordered by `ts`; empty (just `ts` and `prediction`) when nothing was logged."""
    until = _utc(until) if until is not None else datetime.now(UTC)
    since = _utc(since)
    wanted = set(hours_between(since, until))
    since_s, until_s = since.timestamp(), until.timestamp()
    until_ms = int(until_s * 1000) + 1  # a file named at until's millisecond may hold earlier rows
    records: list[dict[str, Any]] = []
    if not wanted:
        return records_frame(records)
    with tempfile.TemporaryDirectory(prefix="mlship-inference-") as tmp:
        for run in find_runs(client, model_name, str(version), since, until, experiment):
            for folder in _hour_dirs(client, run.info.run_id, wanted):
                dst = Path(tmp) / run.info.run_id
                dst.mkdir(exist_ok=True)
                local = Path(client.download_artifacts(run.info.run_id, folder, str(dst)))
                files = sorted(p for p in local.iterdir() if p.suffix == SUFFIX)
                records.extend(_rows(files, since_s, until_s, until_ms))
    return records_frame(records)

