"""The inference log's format and the pure parts of its reader (the MLflow round trip is in
tests/integration/test_inference_log.py)."""

from __future__ import annotations

import math
from datetime import UTC, datetime, timedelta, timezone
from pathlib import Path

import pandas as pd
import pytest

from mlship import inference_log as fmt

pytestmark = pytest.mark.unit


def test_paths_and_names() -> None:
    ts = datetime(2026, 11, 22, 18, 5, 30, 250000, tzinfo=UTC).timestamp()
    assert fmt.hour_of(ts) == "2026-11-22T18"
    assert fmt.artifact_dir(fmt.hour_of(ts)) == "inference/2026-11-22T18"
    assert fmt.file_name(ts, 12) == f"{int(ts * 1000)}-12.jsonl"
    assert fmt.run_name("iris", "3", "iris-6f9c-abcde") == "iris v3 iris-6f9c-abcde"
    assert fmt.run_tags("iris", "3", "p") == {
        "mlship.inference_log": "true",
        "mlship.model_name": "iris",
        "mlship.model_version": "3",
        "mlship.pod": "p",
    }


def test_a_record_is_one_json_line_and_reads_back() -> None:
    line = fmt.encode_record(1.5, {"x": 1.0, "y": math.nan, "s": "a"}, [0.2, 0.8])
    assert line.endswith(b"\n") and line.count(b"\n") == 1
    (back,) = fmt.decode_records(line + b"\n")
    assert back == {"ts": 1.5, "inputs": {"x": 1.0, "y": None, "s": "a"}, "prediction": [0.2, 0.8]}


def test_hours_between_covers_the_range_half_open() -> None:
    since = datetime(2026, 11, 22, 22, 30, tzinfo=UTC)
    assert fmt.hours_between(since, since + timedelta(hours=2)) == [
        "2026-11-22T22", "2026-11-22T23", "2026-11-23T00",
    ]
    # an until exactly on the hour does not include that hour
    assert fmt.hours_between(since, datetime(2026, 11, 23, 0, tzinfo=UTC)) == [
        "2026-11-22T22", "2026-11-22T23",
    ]
    assert fmt.hours_between(since, since) == []
    # other time zones and naive (UTC) datetimes name the same hours
    cet = timezone(timedelta(hours=1))
    assert fmt.hours_between(since.astimezone(cet), since.replace(tzinfo=None) + timedelta(minutes=1)) == [
        "2026-11-22T22"
    ]


def test_rows_are_filtered_to_the_range_and_late_files_skipped(tmp_path: Path) -> None:
    base = datetime(2026, 11, 22, 18, tzinfo=UTC).timestamp()
    early = tmp_path / fmt.file_name(base, 1)
    early.write_bytes(b"".join(fmt.encode_record(base + s, {"x": s}, s) for s in (0, 10, 20)))
    late = tmp_path / fmt.file_name(base + 30, 2)
    late.write_bytes(fmt.encode_record(base + 30, {"x": 30}, 30))
    (tmp_path / "notes.txt").write_text("not a log file")
    until_ms = int((base + 30) * 1000) + 1
    rows = list(fmt._rows(sorted(tmp_path.iterdir()), base + 10, base + 30, until_ms))
    assert [r["prediction"] for r in rows] == [10, 20]


def test_records_frame_has_ts_prediction_and_one_column_per_feature() -> None:
    frame = fmt.records_frame([
        {"ts": 2.0, "inputs": {"a": 1.0, "b": "x"}, "prediction": 1},
        {"ts": 1.0, "inputs": {"a": 2.0, "b": "y"}, "prediction": 0},
    ])
    assert list(frame.columns) == ["ts", "prediction", "a", "b"]
    assert frame["ts"].tolist() == [1.0, 2.0]  # ordered by time
    assert frame["a"].tolist() == [2.0, 1.0]
    assert frame["ts"].dtype == "float64"


def test_records_frame_keeps_a_feature_named_like_a_record_column() -> None:
    frame = fmt.records_frame([{"ts": 1.0, "inputs": {"ts": 5, "z": 1}, "prediction": 0}])
    assert list(frame.columns) == ["ts", "prediction", "inputs.ts", "z"]
    assert frame["ts"].tolist() == [1.0] and frame["inputs.ts"].tolist() == [5]


def test_no_records_is_an_empty_frame_with_the_record_columns() -> None:
    frame = fmt.records_frame([])
    assert isinstance(frame, pd.DataFrame) and frame.empty
    assert tuple(frame.columns) == fmt.RECORD_COLUMNS


def test_names_with_quotes_are_quoted_for_the_search() -> None:
    assert fmt._quote("iris") == "'iris'"
    assert fmt._quote("o'brien") == '"o\'brien"'
    with pytest.raises(ValueError, match="both kinds of quote"):
        fmt._quote("""a'b"c""")
