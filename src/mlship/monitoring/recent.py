"""A served version's recent inputs, for the drift check, from wherever this install keeps them:
the event record (mlship.events.reader: Kafka on, the chart's default) when it holds rows of the
version in the window, else the inference log (mlship.monitoring.inference_log: `kafka.enabled`
false, serving logging to MLflow itself).

Either way the frame is the inference log's: `ts`, `prediction`, then one column per input, ordered
by time, so the drift check does not care which it came from.
"""

from __future__ import annotations

import os
import sys
from datetime import datetime
from typing import TYPE_CHECKING

from mlship import names
from mlship.monitoring import inference_log

if TYPE_CHECKING:
    import pandas as pd
    from mlflow import MlflowClient

RECORD = "the event record"
INFERENCE_LOG = "the inference log"


def record_experiment() -> str:
    """The record's experiment: the consumer's setting (MLSHIP_RECORD_EXPERIMENT), else the default."""
    return os.environ.get(names.RecordEnv.EXPERIMENT, "").strip() or names.EXPERIMENT_RECORD


def as_inference_log(rows: pd.DataFrame) -> pd.DataFrame:
    """The record's rows in the inference log's shape: ts, prediction, the inputs (an input the
    record had to prefix because it is named like one of its own columns gets its name back,
    except `ts` and `prediction`, which the inference log prefixes too)."""
    from mlship.events import reader

    inputs = [c for c in rows.columns if c not in reader.HEAD + reader.TAIL]
    frame = rows[["ts", "prediction", *inputs]]
    renames = {
        c: c[len("inputs."):]
        for c in inputs
        if c.startswith("inputs.") and c[len("inputs."):] not in inference_log.RECORD_COLUMNS
    }
    return frame.rename(columns=renames).reset_index(drop=True)


def load_recent(
    client: MlflowClient,
    model_name: str,
    version: str,
    since: datetime,
    until: datetime | None = None,
    experiment: str = inference_log.DEFAULT_EXPERIMENT,
) -> pd.DataFrame:
    """`inference_log.load_records`'s arguments and frame; the rows come from the event record
    when it has any of this version in [since, until), else from the inference log
    (`experiment`). Says on stderr which it read."""
    from mlship.events import reader

    rec = reader.read_record(client, model_name, version=str(version), since=since, until=until,
                             experiment=record_experiment(), labels=False)
    if len(rec.rows):
        frame, source = as_inference_log(rec.rows), RECORD
    else:
        frame = inference_log.load_records(client, model_name, str(version), since, until, experiment)
        source = INFERENCE_LOG
    print(f"recent inputs of {model_name} v{version}: {len(frame)} rows from {source}",
          file=sys.stderr, flush=True)
    return frame
