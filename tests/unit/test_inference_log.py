"""The inference log's format and its reader: the pure parts, then load_records against an
in-process MLflow client on a directory (no server; the served round trip is in
tests/integration/test_inference_log_server.py)."""

from __future__ import annotations

import math
from datetime import UTC, datetime, timedelta, timezone
from pathlib import Path

import pandas as pd
import pytest

from mlship.monitoring import inference_log as fmt

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


# ------------------------------------------------------------------ boundaries (mutation testing)


def test_hours_start_at_the_top_of_the_first_hour() -> None:
    since = datetime(2026, 11, 22, 22, 30, 15, 250000, tzinfo=UTC)
    until = datetime(2026, 11, 23, 0, 0, 0, 1, tzinfo=UTC)  # one microsecond into midnight's hour
    assert fmt.hours_between(since, until) == ["2026-11-22T22", "2026-11-22T23", "2026-11-23T00"]


def test_naive_datetimes_are_utc_whatever_the_local_zone(monkeypatch: pytest.MonkeyPatch) -> None:
    import time

    monkeypatch.setenv("TZ", "America/New_York")
    time.tzset()
    try:
        naive = datetime(2026, 11, 22, 22, 30)
        assert fmt._utc(naive) == datetime(2026, 11, 22, 22, 30, tzinfo=UTC)
        aware = datetime(2026, 11, 22, 23, 30, tzinfo=timezone(timedelta(hours=1)))
        assert fmt._utc(aware).tzinfo is UTC and fmt._utc(aware) == naive.replace(tzinfo=UTC)
        assert fmt.hours_between(naive, naive + timedelta(minutes=1)) == ["2026-11-22T22"]
        assert fmt.hour_of(aware.timestamp()) == "2026-11-22T22"  # UTC hours, not local ones
    finally:
        monkeypatch.undo()
        time.tzset()


def test_a_stray_file_does_not_hide_the_files_after_it(tmp_path: Path) -> None:
    base = datetime(2026, 11, 22, 18, tzinfo=UTC).timestamp()
    stray = tmp_path / "0.jsonl"  # sorts before every real file name, matches no pattern
    stray.write_bytes(fmt.encode_record(base, {"x": 0}, "stray"))
    real = tmp_path / fmt.file_name(base, 1)
    real.write_bytes(fmt.encode_record(base, {"x": 1}, "real"))
    rows = list(fmt._rows([stray, real], base, base + 1, int((base + 1) * 1000)))
    assert [r["prediction"] for r in rows] == ["real"]


def test_records_frame_keeps_predictions_and_orders_equal_times_stably() -> None:
    records = [{"ts": float(i % 2), "inputs": {"i": i}, "prediction": [i]} for i in range(200)]
    frame = fmt.records_frame(records)
    assert list(frame.index) == list(range(200))
    assert frame["i"].tolist() == [*range(0, 200, 2), *range(1, 200, 2)]  # arrival order kept
    assert frame["prediction"].tolist()[:2] == [[0], [2]]
    missing = fmt.records_frame([{"ts": 1.0, "inputs": {}}])
    assert missing["prediction"].tolist() == [None]


def test_no_records_has_typed_columns() -> None:
    frame = fmt.records_frame([])
    assert (str(frame["ts"].dtype), frame["prediction"].dtype) == ("float64", object)


# ----------------------------------------- the reader against a real MLflow client (file store)


@pytest.fixture
def client(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    """MLflow in this process on a directory: the same client API, no server."""
    from mlflow import MlflowClient

    monkeypatch.setenv("MLFLOW_ALLOW_FILE_STORE", "true")
    return MlflowClient(tracking_uri=(tmp_path / "mlruns").as_uri())


T = datetime(2026, 11, 22, 18, 50, tzinfo=UTC)


def log_run(client, tmp_path: Path, version: str, records: list[float], *, model: str = "iris",
            end: bool = False, experiment: str = fmt.DEFAULT_EXPERIMENT) -> str:
    """A serving process's run: one file per hour its records fall in, like the recorder writes."""
    exp = client.get_experiment_by_name(experiment)
    exp_id = exp.experiment_id if exp else client.create_experiment(experiment)
    run = client.create_run(exp_id, tags=fmt.run_tags(model, version, "pod"),
                            start_time=int(min(records) * 1000))
    by_hour: dict[str, list[float]] = {}
    for ts in records:
        by_hour.setdefault(fmt.hour_of(ts), []).append(ts)
    for hour, stamps in by_hour.items():
        local = tmp_path / "out" / run.info.run_id / hour
        local.mkdir(parents=True)
        path = local / fmt.file_name(stamps[0], 1)
        path.write_bytes(b"".join(fmt.encode_record(ts, {"x": ts - T.timestamp()}, version) for ts in stamps))
        client.log_artifact(run.info.run_id, str(path), fmt.artifact_dir(hour))
    if end:
        client.set_terminated(run.info.run_id, end_time=int(max(records) * 1000) + 1)
    return run.info.run_id


def test_load_records_reads_one_version_in_a_half_open_range_across_hours(client, tmp_path: Path) -> None:
    t = T.timestamp()
    log_run(client, tmp_path, "3", [t, t + 600, t + 1200, t + 3 * 3600])  # 18:50, 19:00, 19:10, 21:50
    log_run(client, tmp_path, "3", [t + 900])  # another pod of the same version
    log_run(client, tmp_path, "4", [t + 600])  # another version
    log_run(client, tmp_path, "3", [t + 600], model="wine")  # another model
    frame = fmt.load_records(client, "iris", "3", since=T + timedelta(minutes=10),
                             until=T + timedelta(minutes=20))
    assert frame["x"].tolist() == [600.0, 900.0]  # 19:00 and 19:05; 19:10 is the (open) end
    assert list(frame.columns) == ["ts", "prediction", "x"] and set(frame["prediction"]) == {"3"}
    whole = fmt.load_records(client, "iris", 3, since=T, until=T + timedelta(hours=4))
    assert whole["x"].tolist() == [0.0, 600.0, 900.0, 1200.0, 3 * 3600.0]


def test_load_records_skips_runs_that_ended_before_the_range_and_started_after_it(
    client, tmp_path: Path
) -> None:
    t = T.timestamp()
    log_run(client, tmp_path, "3", [t], end=True)  # ended at 18:50
    log_run(client, tmp_path, "3", [t + 7201])  # started 20:50:01, after the range
    log_run(client, tmp_path, "3", [t + 1800], end=True)  # 19:20, ended just after
    frame = fmt.load_records(client, "iris", "3", since=T + timedelta(minutes=1),
                             until=T + timedelta(hours=2))
    assert frame["x"].tolist() == [1800.0]
    runs = fmt.find_runs(client, "iris", "3", T + timedelta(minutes=1), T + timedelta(hours=2))
    assert len(runs) == 1


def test_load_records_without_the_experiment_or_range_is_empty(client, tmp_path: Path) -> None:
    assert fmt.load_records(client, "iris", "3", since=T, until=T + timedelta(hours=1)).empty
    log_run(client, tmp_path, "3", [T.timestamp()])
    assert fmt.load_records(client, "iris", "3", since=T, until=T).empty
    assert fmt.find_runs(client, "iris", "3", T, T + timedelta(hours=1), experiment="other") == []
    other = fmt.load_records(client, "iris", "3", since=T - timedelta(hours=1), until=T + timedelta(hours=1),
                             experiment="elsewhere")
    assert other.empty
    until_now = fmt.load_records(client, "iris", "3", since=T - timedelta(minutes=1))  # until: now
    assert until_now["x"].tolist() == [0.0]


def test_only_hour_folders_in_the_range_are_downloaded(client, tmp_path: Path) -> None:
    t = T.timestamp()
    run_id = log_run(client, tmp_path, "3", [t, t + 3 * 3600])
    (tmp_path / "junk").mkdir()
    (tmp_path / "junk" / "x.jsonl").write_bytes(fmt.encode_record(t, {"x": -1.0}, "3"))
    client.log_artifact(run_id, str(tmp_path / "junk" / "x.jsonl"), "inference/not-an-hour")
    assert fmt._hour_dirs(client, run_id, {"2026-11-22T18", "2026-11-22T19"}) == ["inference/2026-11-22T18"]
    assert fmt._hour_dirs(client, run_id, {"not-an-hour", "2026-11-22T21"}) == ["inference/2026-11-22T21"]


def test_a_file_named_in_until_s_millisecond_is_read(client, tmp_path: Path) -> None:
    t = T.timestamp()
    log_run(client, tmp_path, "3", [t + 0.0003])  # named t's millisecond, the row just after
    frame = fmt.load_records(client, "iris", "3", since=T, until=T + timedelta(microseconds=500))
    assert frame["x"].tolist() == [pytest.approx(0.0003, abs=1e-6)]  # its run started in that ms too


def test_until_defaults_to_now_whatever_the_local_zone(client, tmp_path: Path, monkeypatch) -> None:
    import time

    now = datetime.now(UTC)
    log_run(client, tmp_path, "3", [(now - timedelta(hours=1)).timestamp()])
    monkeypatch.setenv("TZ", "America/New_York")
    time.tzset()
    try:
        frame = fmt.load_records(client, "iris", "3", since=now - timedelta(hours=2))
    finally:
        monkeypatch.undo()
        time.tzset()
    assert len(frame) == 1
