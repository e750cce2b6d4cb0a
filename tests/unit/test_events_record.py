"""The event record's pure parts: the layout (folders, file names), a batch's grouping, the
exactly-once argument (a batch consumed again, cut differently, overwrites), Parquet columns,
the reader's join (window, horizon, dedup, unmatched and late labels), the consumer's settings,
and the store → commit loop against an in-memory consumer and sink. The real broker and MLflow
server are in tests/integration/test_events_record_server.py."""

from __future__ import annotations

import random
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pandas as pd
import pytest

from mlship.events import reader, record, schema

pytestmark = pytest.mark.unit

P, L = schema.PREDICTIONS_TOPIC, schema.LABELS_TOPIC
DAY1 = datetime(2026, 12, 1, 23, 59, 59, tzinfo=UTC).timestamp()
DAY2 = DAY1 + 2


def pred(rid: str, ts: float = DAY1, model: str = "iris", version: str = "3", row: int = 0,
         inputs: dict[str, Any] | None = None, value: Any = 0) -> bytes:
    return schema.prediction(rid, row, ts, model, version, inputs or {"x": 1.0}, value)


def label(rid: str, value: Any = 0, ts: float = DAY1, model: str = "iris", row: int = 0) -> bytes:
    return schema.Label(rid, row, value, ts, model).encode()


# --- layout -------------------------------------------------------------------------------------


def test_folders_are_hive_style_partitions_with_encoded_values() -> None:
    assert record.date_of(DAY1) == "2026-12-01" and record.date_of(DAY2) == "2026-12-02"
    assert record.prediction_dir("iris", "3", "2026-12-01") == (
        "predictions/model=iris/version=3/date=2026-12-01"
    )
    assert record.label_dir("iris", "2026-12-01") == "labels/model=iris/date=2026-12-01"
    odd = record.prediction_dir("team/a=b c", "1", "2026-12-01")
    assert odd == "predictions/model=team%2Fa%3Db%20c/version=1/date=2026-12-01"
    assert record.partition_value(odd.rsplit("/", 2)[0], "model") == "team/a=b c"
    assert record.partition_value("predictions/model=iris/version=3/", "version") == "3"
    assert record.partition_value("predictions/model=iris/version=3", "date") is None


def test_file_names_come_from_topic_partition_and_first_offset_and_parse_back() -> None:
    name = record.file_name(P, 2, 517)
    assert name == "mlship.predictions+2+00000000000000000517.parquet"
    assert record.parse_file_name(name) == (P, 2, 517)
    assert record.parse_file_name("notes.txt") is None
    assert record.parse_file_name("x+1+2.parquet.tmp") is None
    # zero-padded: names sort in offset order
    assert sorted([record.file_name(P, 0, 10), record.file_name(P, 0, 9)])[0].endswith("09.parquet")


# --- a batch ------------------------------------------------------------------------------------


def test_a_batch_groups_by_folder_and_partition_and_names_each_file_by_its_first_offset() -> None:
    b = record.Batch()
    events = [
        record.Event(P, 0, 10, pred("a", DAY1)),
        record.Event(P, 0, 11, pred("b", DAY2)),  # the next day: another folder
        record.Event(P, 0, 12, pred("c", DAY1)),
        record.Event(P, 1, 40, pred("d", DAY1, version="4")),
        record.Event(P, 1, 41, pred("e", DAY1, model="wine")),
        record.Event(L, 2, 7, label("a", 1, DAY2)),
        record.Event(L, 2, 8, label("q", 1, DAY2, model="wine")),
    ]
    for e in events:
        assert b.add(e, now=100.0) is None
    files = {f.path: [r.request_id for r in f.rows] for f in b.files()}
    assert files == {
        f"predictions/model=iris/version=3/date=2026-12-01/{record.file_name(P, 0, 10)}": ["a", "c"],
        f"predictions/model=iris/version=3/date=2026-12-02/{record.file_name(P, 0, 11)}": ["b"],
        f"predictions/model=iris/version=4/date=2026-12-01/{record.file_name(P, 1, 40)}": ["d"],
        f"predictions/model=wine/version=3/date=2026-12-01/{record.file_name(P, 1, 41)}": ["e"],
        f"labels/model=iris/date=2026-12-02/{record.file_name(L, 2, 7)}": ["a"],
        f"labels/model=wine/date=2026-12-02/{record.file_name(L, 2, 8)}": ["q"],
    }
    assert {f.model for f in b.files()} == {"iris", "wine"}
    assert b.next_offsets == {(P, 0): 13, (P, 1): 42, (L, 2): 9}
    assert b.events == 7 and b.malformed == 0


def test_a_message_of_many_events_goes_to_the_folders_of_its_events_under_its_offset() -> None:
    items = [schema.prediction_item(rid, 0, ts, {"x": 1.0}, 1)
             for rid, ts in (("a", DAY1), ("b", DAY2), ("c", DAY1))]  # fmt: skip
    b = record.Batch()
    assert b.add(record.Event(P, 0, 10, pred("z", DAY1)), 0.0) is None  # schema 1 beside it
    assert b.add(record.Event(P, 0, 11, schema.predictions_message("iris", "3", items)), 0.0) is None
    files = {f.path: [r.request_id for r in f.rows] for f in b.files()}
    assert files == {
        f"predictions/model=iris/version=3/date=2026-12-01/{record.file_name(P, 0, 10)}": ["z", "a", "c"],
        f"predictions/model=iris/version=3/date=2026-12-02/{record.file_name(P, 0, 11)}": ["b"],
    }
    assert b.events == 4 and b.next_offsets == {(P, 0): 12}
    bad = schema.predictions_message("iris", "3", [*items, b'{"request_id":"d"}'])
    assert b.add(record.Event(P, 0, 12, bad), 0.0) == "prediction 3: row must be an integer >= 0, got None"
    assert b.events == 4 and b.malformed == 1  # a bad message is skipped whole


def test_a_malformed_event_is_counted_and_skipped_but_its_offset_is_committed() -> None:
    b = record.Batch()
    assert b.add(record.Event(P, 0, 5, pred("a")), 0.0) is None
    assert "not valid JSON" in b.add(record.Event(P, 0, 6, b"{nope"), 0.0)
    assert "request_id" in b.add(record.Event(P, 0, 7, pred("a").replace(b'"a"', b'""')), 0.0)
    assert "no value" in b.add(record.Event(L, 0, 3, None), 0.0)
    assert "neither" in b.add(record.Event("other", 0, 1, pred("a")), 0.0)
    assert b.malformed == 4 and b.events == 1
    assert b.next_offsets[(P, 0)] == 8 and b.next_offsets[(L, 0)] == 4


def test_only_malformed_events_still_make_a_batch_due_so_the_partition_moves_on() -> None:
    b = record.Batch()
    assert not b.due(1e9, 10, 5)  # empty: never due
    b.add(record.Event(P, 0, 0, b"[]"), now=100.0)
    assert b.events == 0 and not b.empty
    assert not b.due(109.9, 10, 5) and b.due(110.0, 10, 5)
    for i in range(5):
        b.add(record.Event(P, 0, i + 1, pred(f"r{i}")), now=101.0)
    assert b.due(101.0, 10, 5) and not b.due(101.0, 10, 6)


def test_dropping_revoked_partitions_forgets_their_events_and_offsets() -> None:
    b = record.Batch()
    b.add(record.Event(P, 0, 1, pred("a")), 0.0)
    b.add(record.Event(P, 1, 1, pred("b")), 0.0)
    b.add(record.Event(L, 1, 1, label("b")), 0.0)
    assert b.drop([(P, 1), (L, 1)]) == 2
    assert [f.rows[0].request_id for f in b.files()] == ["a"] and set(b.next_offsets) == {(P, 0)}
    assert b.drop([(P, 0)]) == 1 and b.empty and b.started is None


def _consume(log: list[record.Event], committed: int, sizes: list[int], store: dict[str, list[str]],
             crash_after_store: int | None) -> int:
    """Consumes `log` (one partition) from `committed` in batches of `sizes`, storing each batch's
    files in `store` (path -> request ids) and committing after it; the batch numbered
    `crash_after_store` is stored but not committed (the process dies)."""
    i = 0
    for n, size in enumerate(sizes):
        batch = record.Batch()
        for e in log[committed + i: committed + i + size]:
            batch.add(e, 0.0)
        if batch.empty:
            break
        for f in batch.files():
            store[f.path] = [r.request_id for r in f.rows]
        if n == crash_after_store:
            return committed
        committed = batch.next_offsets[(P, 0)]
        i = 0
    return committed


@pytest.mark.parametrize("seed", range(30))
def test_a_batch_consumed_again_after_a_crash_overwrites_its_files_whatever_its_cut(seed: int) -> None:
    rnd = random.Random(seed)  # noqa: S311 - a reproducible test, not a secret
    models = ["iris", "wine"]
    log = [
        record.Event(P, 0, o, pred(f"r{o}", DAY1 + rnd.choice([0, 2]), model=rnd.choice(models),
                                   version=rnd.choice("12")))
        for o in range(200)
    ]
    store: dict[str, list[str]] = {}
    committed = 0
    while committed < len(log):
        sizes = [rnd.randint(1, 40) for _ in range(rnd.randint(1, 6))]
        crash = rnd.choice([None, rnd.randrange(len(sizes))])
        committed = _consume(log, committed, sizes, store, crash)
    stored = [rid for rows in store.values() for rid in rows]
    assert sorted(stored) == sorted(f"r{o}" for o in range(200))  # each exactly once


# --- Parquet ------------------------------------------------------------------------------------


def test_columns_of_mixed_types_are_kept_as_json_and_read_back_as_they_came() -> None:
    preds = [
        schema.read_predictions(pred("a", inputs={"x": 1.0, "c": "red"}, value=1))[0],
        schema.read_predictions(pred("b", row=2, inputs={"x": 2, "y": None}, value="two"))[0],
    ]
    columns = record.prediction_columns(preds)
    assert list(columns) == ["request_id", "row", "ts", "model", "version", "input.x", "input.c",
                             "input.y", "prediction"]
    table = record.to_table(columns)
    assert table.schema.metadata[record.JSON_COLUMNS_KEY] == b"prediction"
    assert str(table.schema.field("input.x").type) == "double"
    back = record.from_table(table)
    assert back["prediction"] == [1, "two"] and back["input.c"] == ["red", None]
    assert back["row"] == [0, 2] and back["input.y"] == [None, None]


def test_write_file_writes_parquet_at_the_files_path(tmp_path: Path) -> None:
    import pyarrow.parquet as pq

    b = record.Batch()
    b.add(record.Event(L, 0, 3, label("a", [1, 2])), 0.0)
    (f,) = b.files()
    path = record.write_file(f, tmp_path)
    assert path == tmp_path / f.path
    assert record.from_table(pq.read_table(path))["label"] == [[1, 2]]


# --- the reader's join --------------------------------------------------------------------------


def frames(preds: list[bytes], labels: list[bytes]) -> tuple[pd.DataFrame, pd.DataFrame]:
    p = record.prediction_columns([p for x in preds for p in schema.read_predictions(x)])
    lb = record.label_columns([schema.read_label(x) for x in labels])
    return pd.DataFrame(p), pd.DataFrame(lb)


def test_join_keeps_labels_within_the_horizon_and_counts_the_others() -> None:
    t = 1_000_000.0
    p, lb = frames(
        [pred("a", t), pred("b", t + 1), pred("c", t + 2), pred("d", t + 3, row=1)],
        [
            label("a", 1, t + 10),  # in time
            label("b", 1, t + 1 + 3601),  # after the horizon: late
            label("c", 0, t + 2 - 30),  # before the prediction, within the clock skew: kept
            label("d", 1, t + 3 - 120, row=1),  # long before it: late
            label("zz", 1, t),  # unknown request id
            label("d", 1, t + 5, row=0),  # d's row 0 was never predicted
        ],
    )
    rec = reader.join(p, lb, horizon_s=3600)
    assert list(rec.rows.columns) == [*reader.HEAD, "x", *reader.TAIL]
    got = dict(zip(rec.rows["request_id"], rec.rows["label"], strict=True))
    assert got["a"] == 1 and got["c"] == 0 and pd.isna(got["b"]) and pd.isna(got["d"])
    assert rec.rows.loc[rec.rows["request_id"] == "a", "label_ts"].item() == t + 10
    assert rec.unmatched_labels == 2 and rec.late_labels == 2


def test_join_deduplicates_predictions_and_labels_and_the_last_label_wins() -> None:
    t = 1_000_000.0
    p, lb = frames(
        [pred("a", t, value=0), pred("a", t + 5, value=1), pred("a", t, row=1), pred("b", t)],
        [label("a", 1, t + 1), label("a", 1, t + 1), label("a", 2, t + 9), label("b", 0, t + 1)],
    )
    rec = reader.join(p, lb)
    assert len(rec.rows) == 3  # (a, 0), (a, 1), (b, 0)
    a0 = rec.rows[(rec.rows["request_id"] == "a") & (rec.rows["row"] == 0)].iloc[0]
    assert a0["prediction"] == 0 and a0["ts"] == t  # the first kept
    assert a0["label"] == 2 and a0["label_ts"] == t + 9  # the correction wins
    assert rec.unmatched_labels == 0 and rec.late_labels == 0


def test_join_filters_window_and_version_but_labels_of_other_versions_are_not_unmatched() -> None:
    t = 1_000_000.0
    p, lb = frames(
        [pred("a", t, version="1"), pred("b", t + 10, version="2"), pred("c", t + 20, version="2"),
         pred("d", t + 30, version="2")],
        [label("a", 1, t + 1), label("b", 1, t + 11), label("d", 1, t + 31)],
    )
    rec = reader.join(p, lb, version="2", since=t + 5, until=t + 30)
    assert list(rec.rows["request_id"]) == ["b", "c"]
    assert list(rec.rows["version"]) == ["2", "2"]
    # a (before since) and d (at until, excluded) are outside the window: their labels match nothing
    assert rec.unmatched_labels == 2
    rec = reader.join(p, lb, version="1")
    assert list(rec.rows["request_id"]) == ["a"] and rec.unmatched_labels == 0


def test_join_of_nothing_has_the_columns_and_an_input_named_like_a_column_is_prefixed() -> None:
    empty = reader._frame([], ("request_id", "row", "ts", "model", "version", "prediction"))
    no_labels = reader._frame([], ("request_id", "row", "ts", "model", "label"))
    rec = reader.join(empty, no_labels)
    assert list(rec.rows.columns) == [*reader.HEAD, *reader.TAIL] and len(rec.rows) == 0
    p, _ = frames([pred("a", inputs={"label": 1.0, "ts": 2.0, "z": 3.0})], [])
    rec = reader.join(p, no_labels)
    assert list(rec.rows.columns) == [*reader.HEAD, "inputs.label", "inputs.ts", "z", *reader.TAIL]
    assert rec.rows["row"].dtype == "int64" and pd.isna(rec.rows["label"].iloc[0])


# --- settings -----------------------------------------------------------------------------------

ENV = {"MLSHIP_KAFKA_BOOTSTRAP_SERVERS": "k:9092", "MLFLOW_TRACKING_URI": "http://m:5000"}


def test_settings_have_working_defaults_and_flags_beat_the_environment() -> None:
    s = record.load_settings([], ENV)
    assert (s.bootstrap_servers, s.tracking_uri, s.group_id, s.experiment) == (
        "k:9092", "http://m:5000", "mlship-record", "mlship-record"
    )
    assert (s.flush_seconds, s.flush_events, s.partitions, s.replication_factor) == (10.0, 20000, 3, 1)
    s = record.load_settings(["--flush-events", "500", "--bootstrap-servers", "b:1"],
                             {**ENV, "MLSHIP_RECORD_FLUSH_EVENTS": "9", "MLSHIP_RECORD_FLUSH_SECONDS": "2.5",
                              "MLSHIP_KAFKA_PARTITIONS": " ", "MLSHIP_LOG_LEVEL": "debug"})
    assert (s.flush_events, s.bootstrap_servers, s.flush_seconds, s.partitions, s.log_level) == (
        500, "b:1", 2.5, 3, "DEBUG"
    )


def test_every_settings_problem_is_reported_at_once_naming_its_flag_and_variable() -> None:
    with pytest.raises(record.ConfigError) as err:
        record.load_settings(["--flush-seconds", "0", "--partitions", "two", "--labels-topic", "a b"],
                             {"MLSHIP_RECORD_FLUSH_EVENTS": "-1"})
    text = str(err.value)
    for part in ("--bootstrap-servers / MLSHIP_KAFKA_BOOTSTRAP_SERVERS: missing",
                 "--tracking-uri / MLFLOW_TRACKING_URI: missing",
                 "--flush-seconds / MLSHIP_RECORD_FLUSH_SECONDS: '0' must be a number of seconds > 0",
                 "--flush-events / MLSHIP_RECORD_FLUSH_EVENTS: '-1' must be a whole number > 0",
                 "--partitions / MLSHIP_KAFKA_PARTITIONS: 'two' must be a whole number > 0",
                 "--labels-topic / MLSHIP_KAFKA_LABELS_TOPIC: 'a b' is not a Kafka topic name"):
        assert part in text, text
    with pytest.raises(record.ConfigError, match="same topic"):
        record.load_settings(["--labels-topic", P], ENV)
    assert record.main(["--flush-seconds", "soon"]) == 2


# --- the loop, against an in-memory consumer and sink ------------------------------------------


class Msg:
    def __init__(self, topic: str, partition: int, offset: int, value: bytes | None) -> None:
        self._t, self._p, self._o, self._v = topic, partition, offset, value

    def error(self) -> None:
        return None

    def topic(self) -> str:
        return self._t

    def partition(self) -> int:
        return self._p

    def offset(self) -> int:
        return self._o

    def value(self) -> bytes | None:
        return self._v


class FakeConsumer:
    def __init__(self, messages: list[Msg]) -> None:
        self.messages, self.commits, self.paused, self.closed = list(messages), [], 0, False

    def subscribe(self, topics: list[str], on_assign: Any = None, on_revoke: Any = None) -> None:
        self.topics = topics

    def consume(self, num_messages: int, timeout: float) -> list[Msg]:
        out, self.messages = self.messages[:num_messages], self.messages[num_messages:]
        return out

    def commit(self, offsets: list[Any], asynchronous: bool) -> None:
        self.commits.append({(o.topic, o.partition): o.offset for o in offsets})

    def assignment(self) -> list[Any]:
        return []

    def pause(self, partitions: list[Any]) -> None:
        self.paused += 1

    def resume(self, partitions: list[Any]) -> None:
        pass

    def close(self) -> None:
        self.closed = True


class FlakySink:
    def __init__(self, failures: int) -> None:
        self.failures, self.stored = failures, {}

    def store(self, files: list[record.BatchFile]) -> None:
        if self.failures:
            self.failures -= 1
            raise ConnectionError("MLflow is away")
        for f in files:
            self.stored[f.path] = [r.request_id for r in f.rows]


class Clock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        self.now += 0.25
        return self.now


def test_mlflow_away_holds_the_batch_and_commits_only_once_it_is_stored(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    monkeypatch.setattr(record, "drop_pooled_connections", lambda: None)
    msgs = [Msg(P, 0, i, pred(f"r{i}")) for i in range(5)] + [Msg(P, 0, 5, b"oops")]
    consumer, sink = FakeConsumer(msgs), FlakySink(failures=2)
    rec = record.Recorder(record.Settings("k", "m", flush_events=6), consumer, sink, clock=Clock())
    rec.take(consumer.consume(100, 0))
    assert rec.flush() is True
    assert consumer.paused == 1 and rec.totals["store_failures"] == 2
    assert consumer.commits == [{(P, 0): 6}]
    assert [rid for rows in sink.stored.values() for rid in rows] == [f"r{i}" for i in range(5)]
    assert rec.totals["malformed"] == 1 and rec.batch.empty
    assert "skipped malformed event at mlship.predictions[0] offset 5" in caplog.text


def test_stop_flushes_and_commits_and_a_sink_that_stays_away_commits_nothing(
    monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(record, "drop_pooled_connections", lambda: None)
    consumer, sink = FakeConsumer([Msg(L, 1, 9, label("a"))]), FlakySink(failures=0)
    rec = record.Recorder(record.Settings("k", "m"), consumer, sink, clock=Clock())
    rec.take(consumer.consume(100, 0))
    rec.stop.set()
    rec.run()
    assert consumer.commits == [{(L, 1): 10}] and consumer.closed and len(sink.stored) == 1

    consumer, sink = FakeConsumer([Msg(L, 1, 9, label("a"))]), FlakySink(failures=10**6)
    rec = record.Recorder(record.Settings("k", "m"), consumer, sink, clock=Clock())
    rec.take(consumer.consume(100, 0))
    rec.stop.set()
    rec.run()  # gives up after the stop grace, in fake time
    assert consumer.commits == [] and consumer.closed and sink.stored == {}
    assert rec.batch.events == 1  # still held when the process ends: consumed again next start


# --- read_record and the drift check's source, against MLflow in this process (a file store) ---


@pytest.fixture
def client(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    from mlflow import MlflowClient

    monkeypatch.setenv("MLFLOW_ALLOW_FILE_STORE", "true")
    return MlflowClient(tracking_uri=(tmp_path / "mlruns").as_uri())


def store(client, events: list[record.Event], experiment: str = record.EXPERIMENT) -> None:
    batch = record.Batch()
    for e in events:
        assert batch.add(e, 0.0) is None
    sink = record.MlflowSink(client.tracking_uri, experiment)
    sink.store(batch.files())


def test_read_record_downloads_only_the_date_folders_of_the_window(client, monkeypatch) -> None:
    day = 24 * 3600.0
    store(client, [record.Event(P, 0, i, pred(f"r{i}", DAY1 - 5 * day + i * day)) for i in range(8)]
          + [record.Event(L, 0, 0, label("r6", 1, DAY1 + day + 1))])
    fetched: list[str] = []
    download = type(client).download_artifacts

    def spy(self, run_id: str, path: str, dst: str | None = None) -> str:
        fetched.append(path)
        return download(self, run_id, path, dst)

    monkeypatch.setattr(type(client), "download_artifacts", spy)
    rec = reader.read_record(client, "iris", since=DAY1 - 0.5 * day, until=DAY1 + 1.5 * day, horizon_s=3600)
    assert list(rec.rows["request_id"]) == ["r5", "r6"] and rec.rows["label"].tolist()[1] == 1
    assert sorted(fetched) == [  # not 11-26 to 11-30
        "labels/model=iris/date=2026-12-03",
        "predictions/model=iris/version=3/date=2026-12-01",
        "predictions/model=iris/version=3/date=2026-12-02",
        "predictions/model=iris/version=3/date=2026-12-03",  # until's day; r7 is later in it
    ]
    fetched.clear()
    assert len(reader.read_record(client, "iris", until=DAY1 + 9 * day, labels=False).rows) == 8
    assert not [f for f in fetched if f.startswith("labels/")]
    assert len(reader.read_record(client, "no-such-model").rows) == 0


def test_the_drift_check_reads_the_record_when_it_has_rows_else_the_inference_log(
    client, monkeypatch, capsys
) -> None:
    from datetime import timedelta

    from mlship.monitoring import inference_log, recent

    monkeypatch.delenv("MLSHIP_RECORD_EXPERIMENT", raising=False)
    since = datetime.fromtimestamp(DAY1 - 60, UTC)
    # nothing anywhere: the inference log's empty frame
    empty = recent.load_recent(client, "iris", "3", since, since + timedelta(minutes=2))
    assert list(empty.columns) == ["ts", "prediction"]
    assert "0 rows from the inference log" in capsys.readouterr().err
    # only the inference log has rows (kafka.enabled=false)
    exp_id = client.create_experiment(inference_log.DEFAULT_EXPERIMENT)
    run = client.create_run(exp_id, tags=inference_log.run_tags("iris", "3", "pod"),
                            start_time=int(DAY1 * 1000))
    folder = Path(client.tracking_uri.replace("file://", "")).parent / "log"
    folder.mkdir()
    lines = [inference_log.encode_record(DAY1 + i, {"x": x}, i) for i, x in enumerate([1.0, 2.0])]
    (folder / inference_log.file_name(DAY1, 0)).write_bytes(b"".join(lines))
    hour = inference_log.artifact_dir(inference_log.hour_of(DAY1))
    client.log_artifacts(run.info.run_id, str(folder), hour)
    frame = recent.load_recent(client, "iris", "3", since, since + timedelta(minutes=2))
    assert frame["x"].tolist() == [1.0, 2.0] and "2 rows from the inference log" in capsys.readouterr().err
    # the record has rows of the version in the window: it wins, in the inference log's shape
    store(client, [record.Event(P, 0, i, pred(f"r{i}", DAY1 + i, inputs={"x": 9.0, "ts": 1.0, "label": 2.0}))
                   for i in range(3)] + [record.Event(P, 0, 3, pred("v4", DAY1, version="4"))])
    frame = recent.load_recent(client, "iris", "3", since, since + timedelta(minutes=2))
    assert list(frame.columns) == ["ts", "prediction", "x", "inputs.ts", "label"]
    assert frame["x"].tolist() == [9.0] * 3 and "3 rows from the event record" in capsys.readouterr().err
    # another record experiment (MLSHIP_RECORD_EXPERIMENT, as the consumer is told): back to the log
    monkeypatch.setenv("MLSHIP_RECORD_EXPERIMENT", "elsewhere")
    assert len(recent.load_recent(client, "iris", "3", since, since + timedelta(minutes=2))) == 2


def test_partitions_assigned_while_a_store_is_retried_are_paused_too() -> None:
    class TP:
        def __init__(self, topic: str, partition: int) -> None:
            self.topic, self.partition = topic, partition

    consumer = FakeConsumer([])
    rec = record.Recorder(record.Settings("k", "m"), consumer, FlakySink(0), clock=Clock())
    rec.on_assign(consumer, [TP(P, 0)])
    assert consumer.paused == 0  # nothing being retried: consume as usual
    rec.pending = record.Batch()
    rec.on_assign(consumer, [TP(P, 1)])
    assert consumer.paused == 1


def test_a_revoked_partition_is_stored_and_committed_once_else_dropped(monkeypatch) -> None:
    class TP:
        def __init__(self, topic: str, partition: int) -> None:
            self.topic, self.partition = topic, partition

    monkeypatch.setattr(record, "drop_pooled_connections", lambda: None)
    consumer, sink = FakeConsumer([Msg(P, 0, 1, pred("a")), Msg(P, 1, 1, pred("b"))]), FlakySink(0)
    rec = record.Recorder(record.Settings("k", "m"), consumer, sink, clock=Clock())
    rec.take(consumer.consume(10, 0))
    rec.on_revoke(consumer, [TP(P, 0), TP(P, 1)])
    assert consumer.commits == [{(P, 0): 2, (P, 1): 2}] and rec.batch.empty and len(sink.stored) == 2

    consumer, sink = FakeConsumer([Msg(P, 0, 1, pred("a")), Msg(P, 1, 1, pred("b"))]), FlakySink(1)
    rec = record.Recorder(record.Settings("k", "m"), consumer, sink, clock=Clock())
    rec.take(consumer.consume(10, 0))
    rec.on_revoke(consumer, [TP(P, 0)])  # MLflow away: p0's events go to its next owner
    assert consumer.commits == [] and set(rec.batch.next_offsets) == {(P, 1)}
    assert [f.rows[0].request_id for f in rec.batch.files()] == ["b"]
