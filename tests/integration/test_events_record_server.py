"""The event record end to end: a real Kafka broker (the session's `kafka` fixture, tests/kafkakit.py),
a real MLflow server, `python -m mlship.events.record` as a process, and read_record reading back
what it stored.

Counts are exact and checked twice: through read_record (which deduplicates) and in the stored
files themselves (which must hold every event once, without the reader's help)."""

from __future__ import annotations

import re
import signal
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import orjson
import pyarrow.parquet as pq
import pytest
from devkit import MlflowServer, stop_process, wait_for
from mlflow import MlflowClient
from testkit import clean_env

from mlship.events import reader, record, schema

pytestmark = [pytest.mark.integration, pytest.mark.timeout(600)]

FEATURES = ["sepal length (cm)", "sepal width (cm)", "petal length (cm)", "petal width (cm)"]


class Consumer:
    """`python -m mlship.events.record` on its own topics, group, experiment and model."""

    def __init__(self, bootstrap: str, uri: str, home: Path, **flags: str) -> None:
        tag = uuid.uuid4().hex[:8]
        self.bootstrap, self.uri, self.home = bootstrap, uri, home
        self.predictions, self.labels = f"p-{tag}", f"l-{tag}"
        self.experiment, self.model = f"record-{tag}", f"iris-{tag}"
        self.flags = {"--flush-seconds": "1", **flags}
        self.log = home / f"record-{tag}.log"
        self.proc: subprocess.Popen[bytes] | None = None
        self.starts = 0

    def start(self) -> Consumer:
        args = [
            sys.executable, "-m", "mlship.events.record", "--bootstrap-servers", self.bootstrap,
            "--tracking-uri", self.uri, "--experiment", self.experiment,
            "--predictions-topic", self.predictions, "--labels-topic", self.labels,
            *[x for kv in self.flags.items() for x in kv],
        ]
        with self.log.open("ab") as out:
            self.proc = subprocess.Popen(args, stdout=out, stderr=subprocess.STDOUT, env=clean_env())
        self.starts += 1
        # subscribed and assigned: the topics exist, produced events will be consumed
        wait_for("the consumer's partitions", lambda: self.text().count(" assigned ") >= self.starts,
                 120, 0.3, retry=())
        return self

    def text(self) -> str:
        if self.proc is not None and self.proc.poll() is not None and self.proc.returncode not in (0, -9):
            tail = self.log.read_text()[-3000:]
            raise AssertionError(f"the consumer exited {self.proc.returncode}:\n{tail}")
        return self.log.read_text() if self.log.exists() else ""

    def flushes(self) -> int:
        return self.text().count("flushed ")

    def kill(self) -> None:
        assert self.proc is not None
        self.proc.send_signal(signal.SIGKILL)
        self.proc.wait(30)

    def stop(self) -> int:
        assert self.proc is not None
        self.proc.send_signal(signal.SIGTERM)
        return self.proc.wait(60)

    def read(self, **kw: Any) -> reader.Record:
        return reader.read_record(self.uri, self.model, experiment=self.experiment, **kw)

    def read_until(self, what: str, ok: Callable[[reader.Record], bool],
                   timeout: float = 120) -> reader.Record:
        def check() -> reader.Record | None:
            rec = self.read()
            return rec if ok(rec) else None

        return wait_for(f"{what} in the record", check, timeout, 1, retry=())

    def stored_keys(self) -> tuple[list[tuple[str, int]], list[tuple[str, int]]]:
        """Every (request_id, row) in the stored prediction and label files, duplicates kept."""
        client = MlflowClient(self.uri)
        preds: list[tuple[str, int]] = []
        labels: list[tuple[str, int]] = []
        with tempfile.TemporaryDirectory() as tmp:
            for run in record.find_runs(client, self.experiment, self.model):
                root = Path(client.download_artifacts(run.info.run_id, "", tmp))
                for path in root.rglob("*.parquet"):
                    cols = record.from_table(pq.read_table(path))
                    keys = list(zip(cols["request_id"], cols["row"], strict=True))
                    (preds if path.parts[len(root.parts)] == "predictions" else labels).extend(keys)
        return preds, labels


class Consumers(list[Consumer]):
    def start(self, c: Consumer) -> Consumer:
        self.append(c)  # first: stopped at the end even when its start fails
        return c.start()


@pytest.fixture
def consumers() -> Iterator[Consumers]:
    made = Consumers()
    yield made
    for c in made:
        if c.proc is not None and c.proc.poll() is None:
            stop_process(c.proc)


class Producer:
    def __init__(self, bootstrap: str) -> None:
        from confluent_kafka import Producer as KafkaProducer

        self.p = KafkaProducer({"bootstrap.servers": bootstrap, "linger.ms": 5})

    def send(self, topic: str, key: bytes, value: bytes) -> None:
        while True:
            try:
                self.p.produce(topic, key=key, value=value)
                self.p.poll(0)
                return
            except BufferError:
                self.p.poll(0.1)

    def flush(self) -> None:
        assert self.p.flush(30) == 0


def predictions(c: Consumer, n: int, start: int = 0, ts: float | None = None) -> list[tuple[bytes, bytes]]:
    """n prediction events: request i has rows 0 and 1 for odd i (a two-row request), else row 0."""
    out, now = [], ts or time.time()
    i = start
    while len(out) < n:
        rid = f"req-{i}"
        for row in range(2 if i % 2 else 1):
            if len(out) < n:
                inputs = dict(zip(FEATURES, (5.1 + row, 3.5, 1.4, 0.2), strict=True))
                out.append((schema.key(rid, row), schema.prediction(rid, row, now + i * 0.001, c.model, "1",
                                                                    inputs, i % 3)))
        i += 1
    return out


def batched(c: Consumer, events: list[tuple[bytes, bytes]], size: int = 50) -> list[tuple[bytes, bytes]]:
    """The same events as serving writes them: schema-2 messages of up to `size` events, no key."""
    out = []
    for i in range(0, len(events), size):
        chunk = [orjson.loads(v) for _, v in events[i : i + size]]
        items = [schema.prediction_item(e["request_id"], e["row"], e["ts"], e["inputs"], e["prediction"])
                 for e in chunk]  # fmt: skip
        out.append((b"", schema.predictions_message(c.model, "1", items)))
    return out


def produce_all(c: Consumer, events: list[tuple[bytes, bytes]], topic: str) -> None:
    producer = Producer(c.bootstrap)
    for key, value in events:
        producer.send(topic, key, value)
    producer.flush()


def test_predictions_and_labels_are_recorded_and_joined(kafka, mlflow_server, consumers, tmp_path) -> None:
    c = consumers.start(Consumer(kafka.bootstrap, mlflow_server, tmp_path))
    preds = predictions(c, 1000)
    # half one event a message (schema 1, as older serving wrote), half many (schema 2)
    produce_all(c, preds[:500] + batched(c, preds[500:]), c.predictions)
    labelled = [schema.read_predictions(v)[0] for _, v in preds[::3]][:300]
    labels = [schema.Label(p.request_id, p.row, p.prediction, p.ts + 5, c.model).encode() for p in labelled]
    labels.append(schema.Label("req-unknown", 0, 1, time.time(), c.model).encode())
    produce_all(c, [(schema.key(p.request_id, p.row), v) for p, v in zip(labelled, labels, strict=False)]
                + [(b"req-unknown/0", labels[-1])], c.labels)

    rec = c.read_until("1,000 predictions, 300 labelled",
                       lambda r: len(r.rows) == 1000 and r.rows["label"].notna().sum() == 300)
    rows = rec.rows
    assert list(rows.columns) == [*reader.HEAD, *FEATURES, *reader.TAIL]
    assert not rows.duplicated(["request_id", "row"]).any()
    assert set(rows["version"]) == {"1"} and set(rows["model"]) == {c.model}
    assert (rows.loc[rows["label"].notna(), "label"] == rows.loc[rows["label"].notna(), "prediction"]).all()
    assert rec.unmatched_labels == 1 and rec.late_labels == 0
    # a version that was never served, and a window before everything: nothing
    assert len(c.read(version="2").rows) == 0
    assert len(c.read(until=time.time() - 3600).rows) == 0
    stored_preds, stored_labels = c.stored_keys()
    assert len(stored_preds) == 1000 and len(set(stored_preds)) == 1000
    assert len(stored_labels) == 301

    assert c.stop() == 0
    text = c.text()
    assert "flushed " in text and "committed " in text and "Traceback" not in text


def test_a_malformed_event_is_skipped_and_named_and_the_rest_recorded(
    kafka, mlflow_server, consumers, tmp_path
) -> None:
    c = consumers.start(Consumer(kafka.bootstrap, mlflow_server, tmp_path))
    preds = predictions(c, 20)
    bad = [(b"x/0", b"{not json"), (b"y/0", preds[0][1].replace(b'"schema":1', b'"schema":9'))]
    produce_all(c, preds[:10] + bad + preds[10:], c.predictions)
    wait_for("20 predictions in the record", lambda: len(c.read().rows) == 20, 120, 2, retry=())
    wait_for("both malformed events logged", lambda: c.text().count("skipped malformed event at") == 2,
             30, 0.5, retry=())
    text = c.text()
    assert f"skipped malformed event at {c.predictions}[" in text and "offset " in text
    assert "not valid JSON" in text and "schema version 9 is not supported" in text
    assert c.stop() == 0
    assert "malformed 2," in c.text()  # the totals of the last flush


def test_a_consumer_killed_mid_stream_and_restarted_loses_and_duplicates_nothing(
    kafka, mlflow_server, consumers, tmp_path
) -> None:
    # small batches, so a kill lands between batches, inside one, or between a store and its commit
    c = consumers.start(Consumer(kafka.bootstrap, mlflow_server, tmp_path,
                                 **{"--flush-events": "150", "--flush-seconds": "0.5"}))
    events = predictions(c, 3000)
    producing = threading.Thread(target=lambda: [produce_all(c, events[i:i + 300], c.predictions)
                                                 for i in range(0, 3000, 300)])
    producing.start()
    for kill in range(2):
        wait_for(f"a few flushes before kill {kill + 1}", lambda k=kill: c.flushes() >= 3 * (k + 1),
                 120, 0.05, retry=())
        c.kill()
        c.start()
    producing.join(120)
    rec = c.read_until("3,000 predictions", lambda r: len(r.rows) >= 3000, timeout=180)
    assert len(rec.rows) == 3000
    stored, _ = c.stored_keys()
    assert len(stored) == 3000 and len(set(stored)) == 3000  # in storage itself, not only after dedup
    assert c.stop() == 0


def _commits(text: str) -> dict[tuple[str, int], list[int]]:
    """Per partition, the offsets the consumer committed, in order (from its log)."""
    out: dict[tuple[str, int], list[int]] = {}
    for line in text.splitlines():
        if " committed " in line:
            committed = line.split(" committed ")[1]
            for topic, partition, offset in re.findall(r"([\w.-]+)\[(\d+)\]=(\d+)", committed):
                out.setdefault((topic, int(partition)), []).append(int(offset))
    return out


def test_the_last_batch_consumed_again_in_other_cuts_overwrites_its_files(
    kafka, mlflow_server, consumers, tmp_path
) -> None:
    """The crash between a batch's store and its commit, made certain: a consumer stores and commits
    everything, then each partition's committed offset is moved back to where its last batch began
    (as if that commit never happened), and a consumer with other batch sizes consumes again."""
    from confluent_kafka import ConsumerGroupTopicPartitions, TopicPartition
    from confluent_kafka.admin import AdminClient

    group = f"record-{uuid.uuid4().hex[:6]}"
    first = consumers.start(Consumer(kafka.bootstrap, mlflow_server, tmp_path, **{
        "--group-id": group, "--flush-events": "100", "--flush-seconds": "0.5"}))
    produce_all(first, predictions(first, 1000), first.predictions)
    first.read_until("1,000 predictions", lambda r: len(r.rows) == 1000)
    assert first.stop() == 0
    back = {tp: offsets[-2] if len(offsets) > 1 else 0 for tp, offsets in _commits(first.text()).items()}
    assert back and any(offsets[-1] > back[tp] for tp, offsets in _commits(first.text()).items())
    admin = AdminClient({"bootstrap.servers": kafka.bootstrap})
    request = ConsumerGroupTopicPartitions(group, [TopicPartition(t, p, o) for (t, p), o in back.items()])
    for future in admin.alter_consumer_group_offsets([request]).values():
        future.result(30)

    again = Consumer(kafka.bootstrap, mlflow_server, tmp_path, **{
        "--group-id": group, "--flush-events": "7", "--flush-seconds": "0.5"})
    again.predictions, again.labels, again.experiment, again.model = (
        first.predictions, first.labels, first.experiment, first.model)
    consumers.start(again)
    end = {tp: offsets[-1] for tp, offsets in _commits(first.text()).items()}
    wait_for("the moved-back partitions consumed again",
             lambda: all(_commits(again.text()).get(tp, [0])[-1] >= end[tp] for tp in back),
             120, 0.5, retry=())
    assert again.stop() == 0
    stored, _ = again.stored_keys()
    assert len(stored) == 1000 and len(set(stored)) == 1000


def test_mlflow_away_and_back_loses_nothing(kafka, consumers, tmp_path) -> None:
    root = tmp_path / "mlflow"
    root.mkdir()
    with MlflowServer(root, timeout=120) as server:
        c = consumers.start(Consumer(kafka.bootstrap, server.uri, tmp_path))
        events = predictions(c, 1000)
        produce_all(c, events[:500], c.predictions)
        wait_for("the first 500 stored", lambda: len(c.read().rows) == 500, 120, 1, retry=())
        server.stop()
        produce_all(c, events[500:], c.predictions)
        wait_for("a failed store", lambda: "could not store" in c.text(), 60, 0.5, retry=())
        time.sleep(3)  # a retry or two against a server that is not there
        server.start()
        rec = c.read_until("1,000 predictions after MLflow is back", lambda r: len(r.rows) >= 1000)
        assert len(rec.rows) == 1000
        stored, _ = c.stored_keys()
        assert len(stored) == 1000 and len(set(stored)) == 1000
        text = c.text()
        assert "nothing committed" in text
        assert c.stop() == 0


def test_a_missing_setting_is_named_and_exits_2() -> None:
    proc = subprocess.run([sys.executable, "-m", "mlship.events.record"], capture_output=True, text=True,
                          env=clean_env(), timeout=120, check=False)
    assert proc.returncode == 2
    assert "--bootstrap-servers / MLSHIP_KAFKA_BOOTSTRAP_SERVERS: missing" in proc.stderr
    assert "--tracking-uri / MLFLOW_TRACKING_URI: missing" in proc.stderr


def test_the_drift_check_reads_the_record(iris_pipeline, mlflow_server, tmp_path) -> None:
    """The drift step on a champion whose recent inputs are only in the event record (as with
    Kafka on): it reads them there, and finds the shift. (tests/integration/test_drift_step.py
    checks the inference log, the kafka.enabled=false path, with no record for its model.)"""
    import json

    from sklearn.datasets import load_iris

    model = iris_pipeline["model"]
    experiment = f"record-{uuid.uuid4().hex[:8]}"
    version = str(MlflowClient(mlflow_server).get_model_version_by_alias(model, "champion").version)
    data = load_iris(as_frame=True).data.sample(300, replace=True, random_state=4) + 1.5
    now = time.time() - 120
    batch = record.Batch()
    for i, row in enumerate(data.to_dict("records")):
        event = schema.prediction(f"drift-{i}", 0, now + i * 0.01, model, version, row, 0)
        assert batch.add(record.Event(schema.PREDICTIONS_TOPIC, i % 3, i // 3, event), 0.0) is None
    record.MlflowSink(mlflow_server, experiment).store(batch.files())

    xcom = tmp_path / "drift.json"
    proc = subprocess.run(
        [sys.executable, "-m", "mlship.steps.drift", "--tracking-uri", mlflow_server,
         "--pipeline-run-key", f"drift-{uuid.uuid4().hex[:6]}", "--xcom-path", str(xcom),
         "--model-name", model, "--inference-experiment", f"nothing-{experiment}",
         "--report-experiment", f"report-{experiment}"],
        capture_output=True, text=True, timeout=300, check=False,
        env=clean_env(MLSHIP_RECORD_EXPERIMENT=experiment),
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    result = json.loads(xcom.read_text())
    assert f"recent inputs of {model} v{version}: 300 rows from the event record" in proc.stderr
    assert result["rows"] == 300 and result["status"] == "drift", result["reason"]
    assert set(result["drifted_features"]) == set(data.columns)
