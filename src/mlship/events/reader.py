"""Reading the event record (mlship.events.record): a model's predictions in a time window, each
with its label when one arrived within the horizon.

    from mlship.events.reader import read_record
    rec = read_record("http://mlflow:5000", "iris", version="3", since=datetime(2026, 12, 1))
    rec.rows              # request_id, row, ts, model, version, <one column per input>,
                          # prediction, label, label_ts (label and label_ts empty when unlabelled)
    rec.unmatched_labels  # labels of the model that match no prediction read

Only the date folders that can hold rows of the window are downloaded (for labels, up to
`horizon_s` after it).

Joining. A prediction's label is a label of the same model with the same (request_id, row) whose
time is no earlier than the prediction's (less CLOCK_SKEW_S, as serving pods' clocks differ) and
no later than `horizon_s` after it; of several, the last one received (a correction wins). A
label with the key of a prediction read but outside that range counts as late; one whose key
matches no prediction of the model in the window counts as unmatched (an unknown request id, or,
when `since` is set, a label of a prediction before it). Predictions are deduplicated on
(request_id, row), the first kept: a second guard, after the record's own exactly-once writes,
against an event produced twice.
"""

from __future__ import annotations

import tempfile
import time
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

from mlship.events import record

if TYPE_CHECKING:
    import pandas as pd
    from mlflow import MlflowClient

DEFAULT_HORIZON_S = 7 * 24 * 3600.0
CLOCK_SKEW_S = 60.0
KEY = ["request_id", "row"]
HEAD = ("request_id", "row", "ts", "model", "version")
TAIL = ("prediction", "label", "label_ts")
_DTYPES = {"row": "int64", "ts": "float64", "label_ts": "float64"}


@dataclass(frozen=True)
class Record:
    rows: pd.DataFrame
    """One row per prediction, ordered by time; columns HEAD, the inputs, TAIL."""
    unmatched_labels: int
    """Labels (received from `since` to `horizon_s` after `until`) matching no prediction read."""
    late_labels: int
    """Labels of a prediction read that arrived outside its horizon (or before it)."""


def _seconds(when: datetime | float | None) -> float | None:
    if when is None or isinstance(when, int | float):
        return None if when is None else float(when)
    return (when.replace(tzinfo=UTC) if when.tzinfo is None else when).timestamp()


def _frame(columns: list[dict[str, list[Any]]], names: tuple[str, ...]) -> pd.DataFrame:
    import pandas as pd

    frames = [pd.DataFrame(c) for c in columns if c and len(next(iter(c.values())))]
    if not frames:
        return pd.DataFrame({n: pd.Series(dtype=_DTYPES.get(n, object)) for n in names})
    return pd.concat(frames, ignore_index=True)


def join(
    predictions: pd.DataFrame,
    labels: pd.DataFrame,
    *,
    version: str | None = None,
    since: float | None = None,
    until: float | None = None,
    horizon_s: float = DEFAULT_HORIZON_S,
) -> Record:
    """The record's rows from stored prediction and label rows (any versions, any times): the
    window [since, until), deduplication, the join within the horizon, the column order."""
    import pandas as pd

    preds = predictions
    if since is not None:
        preds = preds[preds["ts"] >= since]
    if until is not None:
        preds = preds[preds["ts"] < until]
    preds = preds.sort_values("ts", kind="stable").drop_duplicates(KEY, keep="first")
    labels = labels.drop_duplicates([*KEY, "ts"], keep="last")  # the same label delivered twice
    keyed = labels.merge(preds[[*KEY, "ts"]], on=KEY, how="left", suffixes=("_label", ""),
                         indicator=True)
    known = keyed["_merge"] == "both"
    unmatched = int((~known).sum())
    keyed = keyed[known]
    delay = keyed["ts_label"] - keyed["ts"]
    in_time = (delay >= -CLOCK_SKEW_S) & (delay <= horizon_s)
    late = int((~in_time).sum())
    chosen = (
        keyed[in_time].sort_values("ts_label", kind="stable").drop_duplicates(KEY, keep="last")
        .rename(columns={"ts_label": "label_ts"})[[*KEY, "label", "label_ts"]]
    )
    if version is not None:
        preds = preds[preds["version"].astype(str) == str(version)]
    rows = preds.merge(chosen, on=KEY, how="left")
    renames = {}
    for column in rows.columns:
        if column.startswith(record.INPUT_PREFIX):
            name = column[len(record.INPUT_PREFIX):]
            renames[column] = f"inputs.{name}" if name in HEAD + TAIL else name
    rows = rows.rename(columns=renames)
    inputs = [c for c in rows.columns if c in renames.values()]
    for column in HEAD + TAIL:
        if column not in rows.columns:
            rows[column] = pd.Series(dtype=_DTYPES.get(column, object))
    rows = rows[[*HEAD, *inputs, *TAIL]].sort_values(["ts", *KEY], kind="stable", ignore_index=True)
    rows["row"] = rows["row"].astype("int64")
    rows["version"] = rows["version"].astype(str) if len(rows) else rows["version"]
    return Record(rows=rows, unmatched_labels=unmatched, late_labels=late)


def _date_range(since: float | None, until: float) -> tuple[str, str]:
    return (record.date_of(since) if since is not None else "0000-00-00", record.date_of(until))


def _folders(client: MlflowClient, run_id: str, path: str, key: str) -> list[tuple[str, str]]:
    """(value, path) of the `key=value` folders under `path`."""
    out = []
    for f in client.list_artifacts(run_id, path):
        value = record.partition_value(f.path, key)
        if f.is_dir and value is not None:
            out.append((value, f.path))
    return out


def _read_folders(
    client: MlflowClient, run_id: str, folders: list[str], tmp: Path
) -> list[dict[str, list[Any]]]:
    import pyarrow.parquet as pq

    columns = []
    for folder in folders:
        dst = tempfile.mkdtemp(dir=tmp)
        local = Path(client.download_artifacts(run_id, folder, dst))
        for path in sorted(local.rglob(f"*{record.SUFFIX}")):
            if record.parse_file_name(path.name) is not None:
                columns.append(record.from_table(pq.read_table(path)))
    return columns


def read_record(
    source: str | MlflowClient,
    model: str,
    version: str | None = None,
    since: datetime | float | None = None,
    until: datetime | float | None = None,
    horizon_s: float = DEFAULT_HORIZON_S,
    experiment: str = record.EXPERIMENT,
    labels: bool = True,
) -> Record:
    """The predictions of `model` (of `version`, or every version) with since <= ts < until
    (datetimes, naive ones UTC, or epoch seconds; since None: from the start, until None: now),
    joined with their labels within `horizon_s` seconds. See the module's docstring. `labels`
    False reads no label (the columns stay empty): for a reader of inputs only."""
    from mlflow import MlflowClient

    client = MlflowClient(tracking_uri=source) if isinstance(source, str) else source
    since_s = _seconds(since)
    until_s = _seconds(until) or time.time()
    p_lo, p_hi = _date_range(since_s, until_s)
    l_lo, l_hi = _date_range(since_s, until_s + horizon_s)
    pred_columns: list[dict[str, list[Any]]] = []
    label_columns: list[dict[str, list[Any]]] = []
    with tempfile.TemporaryDirectory(prefix="mlship-record-read-") as tmp:
        for run in record.find_runs(client, experiment, model):
            run_id = run.info.run_id
            folders = [
                d_path
                for _, v_path in _folders(client, run_id, record.model_dir(record.PREDICTIONS_DIR, model),
                                          "version")
                for date, d_path in _folders(client, run_id, v_path, "date")
                if p_lo <= date <= p_hi
            ]
            pred_columns += _read_folders(client, run_id, folders, Path(tmp))
            if labels:
                dates = _folders(client, run_id, record.model_dir(record.LABELS_DIR, model), "date")
                folders = [path for date, path in dates if l_lo <= date <= l_hi]
                label_columns += _read_folders(client, run_id, folders, Path(tmp))
    return join(
        _frame(pred_columns, ("request_id", "row", "ts", "model", "version", "prediction")),
        _frame(label_columns, ("request_id", "row", "ts", "model", "label")),
        version=version, since=since_s, until=until_s, horizon_s=horizon_s,
    )
