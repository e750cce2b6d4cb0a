"""Prediction events and labels with a real Kafka broker (tests/kafkakit.py), a real MLflow server
and `python -m mlship.serving` as a subprocess: every answer's events consumed back, /feedback,
the broker stopped (and a stranger answering on its port) mid-traffic, a graceful stop."""

from __future__ import annotations

import signal
import socket
import threading
import time
import uuid
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path

import mlflow
import mlflow.sklearn
import orjson
import pytest
import requests
from _serving_process import Server
from confluent_kafka import Consumer
from devkit import wait_for
from kafkakit import KafkaBroker
from mlflow import MlflowClient
from prometheus_client.parser import text_string_to_metric_families
from sklearn.datasets import load_iris
from sklearn.ensemble import RandomForestClassifier

from mlship.events import schema
from mlship.names import TAG_TASK

pytestmark = [pytest.mark.integration, pytest.mark.timeout(300)]

X, Y = load_iris(return_X_y=True, as_frame=True)
ROWS = X.to_dict(orient="records")


@dataclass(frozen=True)
class Registered:
    name: str
    tagged: str  # a version with mlship.task = classification
    untagged: str  # registered by hand: the task comes from its output signature


@pytest.fixture(scope="module")
def model(mlflow_server: str) -> Registered:
    name = f"iris-events-{uuid.uuid4().hex[:6]}"
    previous = mlflow.get_tracking_uri()
    mlflow.set_tracking_uri(mlflow_server)
    try:
        forest = RandomForestClassifier(10, random_state=0).fit(X, Y)
        versions = []
        with mlflow.start_run():
            for _ in range(2):
                info = mlflow.sklearn.log_model(
                    forest, name="model", input_example=X.head(2), registered_model_name=name,
                    skops_trusted_types=["sklearn.tree._tree.Tree"],
                )  # fmt: skip
                versions.append(str(info.registered_model_version))
    finally:
        mlflow.set_tracking_uri(previous)
    MlflowClient(mlflow_server).set_model_version_tag(name, versions[0], TAG_TASK, "classification")
    return Registered(name, *versions)


def topics() -> dict[str, str]:
    tag = uuid.uuid4().hex[:8]
    return {
        "MLSHIP_KAFKA_PREDICTIONS_TOPIC": f"predictions-{tag}",
        "MLSHIP_KAFKA_LABELS_TOPIC": f"labels-{tag}",
    }


def start(
    mlflow_server: str, kafka: KafkaBroker, name: str, version: str, log: Path, **extra: str
) -> Server:
    server = Server(
        {
            "MLFLOW_TRACKING_URI": mlflow_server,
            "MLSHIP_MODEL_NAME": name,
            "MLSHIP_MODEL_VERSION": version,
            "MLSHIP_KAFKA_BOOTSTRAP_SERVERS": kafka.bootstrap,
            "MLSHIP_INFERENCE_LOG_SAMPLE_RATE": "1",
            **extra,
        },
        log,
    )
    server.wait_ready()
    return server


@dataclass
class Served:
    server: Server
    env: dict[str, str]

    @property
    def predictions(self) -> str:
        return self.env["MLSHIP_KAFKA_PREDICTIONS_TOPIC"]

    @property
    def labels(self) -> str:
        return self.env["MLSHIP_KAFKA_LABELS_TOPIC"]


@pytest.fixture(scope="module")
def served(
    mlflow_server: str, kafka: KafkaBroker, model: Registered,
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[Served]:  # fmt: skip
    env = topics()
    log = tmp_path_factory.mktemp("serving-events") / "server.log"
    server = start(mlflow_server, kafka, model.name, model.tagged, log, **env)
    try:
        yield Served(server, env)
    finally:
        server.stop()


def consume(
    kafka: KafkaBroker, topic: str, done: Callable[[list[bytes]], bool], timeout: float = 90
) -> list[tuple[bytes, bytes]]:
    """(key, value) of every message on `topic` from the start, read until `done(values)` holds,
    then one quiet second more (so a duplicate arriving late is seen too)."""
    consumer = Consumer({
        "bootstrap.servers": kafka.bootstrap, "group.id": uuid.uuid4().hex,
        "auto.offset.reset": "earliest", "enable.auto.commit": False,
    })  # fmt: skip
    consumer.subscribe([topic])
    got: list[tuple[bytes, bytes]] = []
    deadline, quiet_until = time.monotonic() + timeout, None
    try:
        while time.monotonic() < deadline:
            message = consumer.poll(0.5)
            if message is not None and message.error() is None:
                got.append((message.key() or b"", message.value() or b""))
            if quiet_until is None and done([v for _, v in got]):
                quiet_until = time.monotonic() + 1.0
            if quiet_until is not None and time.monotonic() > quiet_until:
                return got
        return got
    finally:
        consumer.close()


def predictions_in(values: Iterable[bytes]) -> list[schema.Prediction]:
    """The prediction events of messages (serving writes many to a message)."""
    return [event for value in values for event in schema.read_predictions(value)]


def metrics(server: Server) -> dict[str, float]:
    out: dict[str, float] = {}
    for family in text_string_to_metric_families(server.get("/metrics").text):
        for sample in family.samples:
            if sample.name.startswith(("mlship_events", "mlship_inference_log")):
                labels = ",".join(f"{k}={v}" for k, v in sorted(sample.labels.items())
                                  if k in ("topic", "reason"))  # fmt: skip
                out[f"{sample.name}{{{labels}}}" if labels else sample.name] = sample.value
    return out


def invoke(server: Server, rows: list[dict], request_id: str | None = None) -> requests.Response:
    headers = {"X-Request-Id": request_id} if request_id is not None else {}
    return requests.post(
        server.url + "/invocations", json={"dataframe_records": rows}, headers=headers, timeout=30
    )


# --- headers ------------------------------------------------------------------------------------


def test_every_answer_names_its_request_and_the_version(served: Served, model: Registered) -> None:
    server = served.server
    given = invoke(server, ROWS[:1], "client-id:17")
    assert given.status_code == 200
    assert given.headers["X-Request-Id"] == "client-id:17"
    assert (given.headers["X-Model-Name"], given.headers["X-Model-Version"]) == (
        model.name, model.tagged,
    )  # fmt: skip
    made = invoke(server, ROWS[:1])
    assert len(made.headers["X-Request-Id"]) == 32 and int(made.headers["X-Request-Id"], 16) >= 0
    # An answer that is an error still says which request it was and who answered.
    bad = requests.post(server.url + "/invocations", json={"dataframe_records": [{"x": 1}]},
                        headers={"X-Request-Id": "bad-body"}, timeout=30)  # fmt: skip
    assert bad.status_code == 400 and bad.headers["X-Request-Id"] == "bad-body"
    assert bad.headers["X-Model-Version"] == model.tagged


@pytest.mark.parametrize(
    ("given", "message"),
    [
        ("x" * 129, "the X-Request-Id header: request_id is 129 characters long; the limit is 128"),
        ("a/b", "the X-Request-Id header: request_id 'a/b' must be printable ASCII without "
         "spaces or '/'"),
    ],
)
def test_a_request_id_that_cannot_key_an_event_gets_400(
    served: Served, given: str, message: str
) -> None:
    response = invoke(served.server, ROWS[:1], given)
    assert response.status_code == 400
    assert response.json() == {"error_code": "BAD_REQUEST", "message": message}
    assert len(response.headers["X-Request-Id"]) == 32  # a fresh one: the answer is still traced
    assert invoke(served.server, ROWS[:1], "x" * 128).status_code == 200  # the limit itself


# --- prediction events --------------------------------------------------------------------------


def test_n_requests_give_n_events_with_their_request_ids(
    served: Served, kafka: KafkaBroker, model: Registered
) -> None:
    server = served.server
    answers: dict[str, list] = {}
    sent: dict[str, list[dict]] = {}
    sizes: dict[str, int] = {}
    session = requests.Session()
    for i in range(200):
        rows = ROWS[i % 150 : i % 150 + (3 if i % 10 == 0 else 1)]
        response = session.post(server.url + "/invocations", json={"dataframe_records": rows},
                                timeout=30)  # fmt: skip
        assert response.status_code == 200, response.text
        rid = response.headers["X-Request-Id"]
        answers[rid], sent[rid], sizes[rid] = response.json()["predictions"], rows, len(rows)
    want = sum(sizes.values())  # 20 requests of 3 rows, 180 of 1: 240 events
    ids = set(answers)

    def mine(values: Iterable[bytes]) -> list[schema.Prediction]:
        return [e for e in predictions_in(values) if e.request_id in ids]

    got = consume(kafka, served.predictions, lambda vs: len(mine(vs)) >= want)
    events = mine(v for _, v in got)
    assert len(events) == want == 240  # none lost, none twice
    assert {(e.request_id, e.row) for e in events} == {
        (rid, row) for rid, n in sizes.items() for row in range(n)
    }
    # Many requests' events to a message (schema 2, no key), not one message per row.
    assert all(orjson.loads(v)["schema"] == 2 and k == b"" for k, v in got)
    assert len(got) < want
    for e in events:
        assert (e.model, e.version) == (model.name, model.tagged)
        assert e.prediction == answers[e.request_id][e.row]
        assert e.inputs == sent[e.request_id][e.row]
    counts = metrics(server)
    assert counts[f"mlship_events_produced_total{{topic={served.predictions}}}"] >= want
    assert counts[f"mlship_events_dropped_total{{reason=queue_full,topic={served.predictions}}}"] == 0
    # Every event taken is counted delivered once the broker acknowledged its message.
    produced, delivered = (f"mlship_events_{c}_total{{topic={served.predictions}}}"
                           for c in ("produced", "delivered"))  # fmt: skip
    wait_for("every event counted delivered",
             lambda: (c := metrics(server))[delivered] == c[produced], 10, 0.2, retry=())  # fmt: skip
    assert metrics(server)["mlship_events_queued"] == 0


def test_with_kafka_the_mlflow_inference_log_is_off(served: Served) -> None:
    invoke(served.server, ROWS[:5])
    time.sleep(0.5)
    assert "mlship_inference_log_rows_total" not in metrics(served.server) or (
        metrics(served.server)["mlship_inference_log_rows_total"] == 0
    )
    assert "inference log" not in served.server.log()


# --- feedback -----------------------------------------------------------------------------------


def post_feedback(server: Server, body: object | bytes) -> requests.Response:
    data = body if isinstance(body, bytes) else orjson.dumps(body)
    return requests.post(server.url + "/feedback", data=data, timeout=30,
                         headers={"Content-Type": "application/json"})  # fmt: skip


def test_feedback_labels_reach_the_labels_topic(
    served: Served, kafka: KafkaBroker, model: Registered
) -> None:
    rid = invoke(served.server, ROWS[:2]).headers["X-Request-Id"]
    many = post_feedback(served.server, [
        {"request_id": rid, "row": 0, "label": 0},
        {"request_id": rid, "row": 1, "label": 2.0, "ts": 1796127000.5},
    ])  # fmt: skip
    assert (many.status_code, many.json()) == (202, {"accepted": 2})
    one = post_feedback(served.server, {"request_id": "answered-by-another-pod", "label": 1})
    assert (one.status_code, one.json()) == (202, {"accepted": 1})  # unknown ids are taken

    wanted = {rid, "answered-by-another-pod"}
    got = consume(
        kafka, served.labels,
        lambda vs: sum(orjson.loads(v)["request_id"] in wanted for v in vs) >= 3,
    )  # fmt: skip
    labels = {
        (label.request_id, label.row): label
        for label in (schema.read_label(v) for _, v in got)
        if label.request_id in wanted
    }
    assert sorted(labels) == sorted([(rid, 0), (rid, 1), ("answered-by-another-pod", 0)])
    assert labels[(rid, 1)].label == 2 and labels[(rid, 1)].ts == 1796127000.5  # 2.0 is class 2
    assert {label.model for label in labels.values()} == {model.name}
    produced, delivered = (f"mlship_events_{c}_total{{topic={served.labels}}}"
                           for c in ("produced", "delivered"))  # fmt: skip
    wait_for("every label counted delivered",
             lambda: (c := metrics(served.server))[delivered] == c[produced] >= 3,
             10, 0.2, retry=())  # fmt: skip
    for key, value in got:
        label = schema.read_label(value)
        assert key == schema.key(label.request_id, label.row)


@pytest.mark.parametrize(
    ("body", "message"),
    [
        (b"{not json", "the body is not valid JSON: "),
        ([], "the body is an empty list; send one label or a list of them"),
        ([{"request_id": "a", "label": 1}, {"request_id": "b", "label": 1.5}],
         "item 1: label 1.5 is not a class: a classification model takes an integer, string or "
         "boolean label"),
        ({"request_id": "a"}, "a label needs a 'label' field"),
        ({"request_id": "a/1", "label": 1}, "request_id 'a/1' must be printable ASCII without "
         "spaces or '/'"),
        ({"request_id": "a", "label": 1, "score": 0.3}, "unknown field(s) score; a label has "
         "request_id, row, label"),
    ],
)
def test_malformed_feedback_gets_400_with_the_reason_and_nothing_is_taken(
    served: Served, body: object, message: str
) -> None:
    before = metrics(served.server)[f"mlship_events_produced_total{{topic={served.labels}}}"]
    response = post_feedback(served.server, body)
    assert response.status_code == 400
    assert response.json()["error_code"] == "BAD_REQUEST"
    assert response.json()["message"].startswith(message)
    after = metrics(served.server)[f"mlship_events_produced_total{{topic={served.labels}}}"]
    assert after == before  # the valid first item of a bad list was not sent either


def test_metadata_says_where_the_task_came_from(served: Served) -> None:
    meta = served.server.get("/metadata").json()
    assert (meta["task"], meta["task_source"]) == ("classification", "the version's mlship.task tag")


# --- the broker away mid-traffic ----------------------------------------------------------------


class CatchAll:
    """Something else answering on the broker's address while it is away: every connection gets
    an HTTP 404 (as a cluster's catch-all backend would) and is closed."""

    def __init__(self, port: int) -> None:
        self.sock = socket.socket()
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.sock.bind(("127.0.0.1", port))
        self.sock.listen(64)
        self.sock.settimeout(0.2)
        self.connections = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._serve, daemon=True)
        self._thread.start()

    def _serve(self) -> None:
        while not self._stop.is_set():
            try:
                conn, _ = self.sock.accept()
            except TimeoutError:
                continue
            self.connections += 1
            with conn:
                conn.settimeout(1)
                try:
                    conn.recv(65536)
                    conn.sendall(b"HTTP/1.1 404 Not Found\r\nContent-Length: 9\r\n\r\nnot found")
                except OSError:
                    pass

    def stop(self) -> None:
        self._stop.set()
        self._thread.join()
        self.sock.close()


class Traffic:
    """Requests sent one after another from two threads until stopped; every answer kept."""

    def __init__(self, server: Server) -> None:
        self.server = server
        self.answers: list[tuple[int, str, int]] = []  # status, request id, rows
        self.errors: list[str] = []
        self._stop = threading.Event()
        self._threads = [threading.Thread(target=self._send, args=(i,)) for i in range(2)]
        for thread in self._threads:
            thread.start()

    def _send(self, seed: int) -> None:
        session, i = requests.Session(), seed
        while not self._stop.is_set():
            rows = ROWS[i % 150 : i % 150 + 1 + i % 2]
            i += 2
            try:
                response = session.post(self.server.url + "/invocations",
                                        json={"dataframe_records": rows}, timeout=30)  # fmt: skip
            except requests.RequestException as e:
                self.errors.append(repr(e))
                continue
            self.answers.append((response.status_code, response.headers.get("X-Request-Id", ""),
                                 len(rows)))  # fmt: skip

    def __len__(self) -> int:
        return len(self.answers)

    def stop(self) -> None:
        self._stop.set()
        for thread in self._threads:
            thread.join()


def _rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return 0.0


def test_the_broker_away_mid_traffic_fails_no_request_and_loses_no_event(
    mlflow_server: str, kafka: KafkaBroker, model: Registered, tmp_path: Path
) -> None:
    env = topics()
    server = start(mlflow_server, kafka, model.name, model.tagged, tmp_path / "server.log", **env)
    traffic = Traffic(server)
    catch_all: CatchAll | None = None
    try:
        wait_for("100 answers before the broker stops", lambda: len(traffic) >= 100, 60, 0.2, retry=())
        kafka.stop()
        stopped_at = len(traffic)
        rss = _rss_mb(server.proc.pid)
        time.sleep(3)
        # While it is away, a stranger answers HTTP on its port: a failed connect, retried.
        catch_all = CatchAll(kafka.port)
        time.sleep(4)
        catch_all.stop()
        during = len(traffic) - stopped_at
        waiting = metrics(server)["mlship_events_queued"]
        kafka.restart()
        wait_for("100 answers after the restart",
                 lambda: len(traffic) >= stopped_at + during + 100, 60, 0.2, retry=())
    finally:
        traffic.stop()
        if catch_all is not None and not catch_all._stop.is_set():
            catch_all.stop()
        if kafka.proc is None or kafka.proc.poll() is not None:
            kafka.restart()  # the broker is shared: leave it running, whatever happened
    try:
        assert traffic.errors == [] and {s for s, _, _ in traffic.answers} == {200}
        assert during > 50 and waiting > 50, (during, waiting)  # the outage had traffic queued
        # Bounded: about 2 attempts a second per broker handle (bootstrap, broker 1) of each
        # producer (prediction events, labels) for 4 s; librdkafka's default would be ~20.
        assert catch_all is not None and 0 < catch_all.connections <= 80, catch_all.connections
        assert _rss_mb(server.proc.pid) < rss + 100
        want = {(rid, row) for _, rid, n in traffic.answers for row in range(n)}
        wait_for("the queue drained", lambda: metrics(server)["mlship_events_queued"] == 0, 60, 0.2, retry=())
        got = consume(kafka, env["MLSHIP_KAFKA_PREDICTIONS_TOPIC"],
                      lambda vs: len(predictions_in(vs)) >= len(want))  # fmt: skip
        keys = [(e.request_id, e.row) for e in predictions_in(v for _, v in got)]
        assert len(keys) == len(want), (len(keys), len(want))  # none lost, none twice
        assert set(keys) == want
        counts = metrics(server)
        topic = env["MLSHIP_KAFKA_PREDICTIONS_TOPIC"]
        assert counts[f"mlship_events_delivered_total{{topic={topic}}}"] == len(want)
        assert counts[f"mlship_events_produced_total{{topic={topic}}}"] == len(want)
        assert counts["mlship_events_queued"] == 0
        assert "events: Kafka answers again" in server.log()
        assert sum(v for k, v in counts.items() if k.startswith("mlship_events_dropped")) == 0
        assert counts[f"mlship_events_delivery_failures_total{{topic={topic}}}"] == 0
    finally:
        server.stop()


# --- a graceful stop ----------------------------------------------------------------------------


def test_a_graceful_stop_sends_every_queued_event_first(
    mlflow_server: str, kafka: KafkaBroker, model: Registered, tmp_path: Path
) -> None:
    env = topics()
    # Events linger 5 s before going out: at SIGTERM they are all still queued.
    server = start(mlflow_server, kafka, model.name, model.untagged, tmp_path / "server.log",
                   MLSHIP_KAFKA_LINGER_MS="5000", **env)  # fmt: skip
    try:
        meta = server.get("/metadata").json()
        assert (meta["task"], meta["task_source"]) == (
            "classification", "the output signature (long)",
        )  # fmt: skip
        ids = [invoke(server, ROWS[i : i + 1]).headers["X-Request-Id"] for i in range(50)]
        assert metrics(server)["mlship_events_queued"] >= 50
        server.proc.send_signal(signal.SIGTERM)
        assert server.wait_exit(60) == 0
    finally:
        if server.proc.poll() is None:
            server.stop()
    assert "events: 50 queued events sent before stopping" in server.log()
    got = consume(kafka, env["MLSHIP_KAFKA_PREDICTIONS_TOPIC"],
                  lambda vs: len(predictions_in(vs)) >= 50)  # fmt: skip
    assert sorted(e.request_id for e in predictions_in(v for _, v in got)) == sorted(ids)
