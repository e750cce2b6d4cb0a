"""The prediction-event producer without a broker (librdkafka's local queue is real; nothing
listens at its address), the task a /feedback label is checked against, and the request-id and
model headers. With a real broker: tests/integration/test_serving_events.py."""

from __future__ import annotations

import asyncio

import orjson
import pytest
from confluent_kafka import KafkaError

from mlship.events import schema
from mlship.serving import events as events_module
from mlship.serving.app import model_headers, request_id
from mlship.serving.events import EventProducer, QueueFull, producer_config
from mlship.serving.metrics import ServingMetrics
from mlship.serving.model import model_task
from mlship.serving.protocol import BadRequest, Table

pytestmark = pytest.mark.unit

NOWHERE = "127.0.0.1:1"  # refused at once: events stay queued
COLUMNS = ("a", "b")


def table(n: int) -> Table:
    return Table((list(range(n)), [float(i) / 2 for i in range(n)]), n)


def answer(n: int) -> bytes:
    return orjson.dumps({"predictions": list(range(n))})


def producer(queue: int = 100, rate: float = 1.0, columns=COLUMNS, rand=lambda: 0.0):
    metrics = ServingMetrics("iris", "3")
    events = EventProducer(
        producer_config(NOWHERE, queue_max_messages=queue),
        metrics,
        model="iris", version="3", columns=columns,
        predictions_topic="p", labels_topic="l", sample_rate=rate, linger_s=0.05, rand=rand,
    )  # fmt: skip
    return events, metrics


def sample(metrics: ServingMetrics, name: str, topic: str, **labels: str) -> float:
    value = metrics.registry.get_sample_value(
        name, {"model_name": "iris", "model_version": "3", "topic": topic, **labels}
    )
    assert value is not None, name
    return value


def test_the_producer_never_gives_up_nor_duplicates_and_its_queue_is_bounded() -> None:
    config = producer_config("k:9092", queue_max_messages=7)
    assert config["enable.idempotence"] is True and config["acks"] == "all"
    assert config["message.timeout.ms"] == 0
    assert config["queue.buffering.max.messages"] == 7
    assert (config["linger.ms"], config["compression.type"]) == (5, "lz4")
    assert config["bootstrap.servers"] == "k:9092"
    assert config["partitioner"] == "murmur2_random"  # as Java clients: labels land alike


def test_each_row_is_one_event_and_a_full_queue_drops_and_counts_the_rest() -> None:
    events, metrics = producer(queue=5)
    events.predictions("r1", table(3), answer(3))
    assert events.queued() == 3
    events.predictions("r2", table(3), answer(3))  # room for 2 of its 3 rows: never raises
    assert events.queued() == 5
    assert sample(metrics, "mlship_events_produced_total", "p") == 5
    assert sample(metrics, "mlship_events_dropped_total", "p", reason="queue_full") == 1
    queued = metrics.registry.get_sample_value(
        "mlship_events_queued", {"model_name": "iris", "model_version": "3"}
    )
    assert queued == 5


def test_sampling_is_per_request() -> None:
    draws = iter([0.3, 0.7])
    events, metrics = producer(rate=0.5, rand=lambda: next(draws))
    events.predictions("kept", table(2), answer(2))  # 0.3 < 0.5
    events.predictions("skipped", table(2), answer(2))  # 0.7 >= 0.5
    assert events.queued() == 2
    assert sample(metrics, "mlship_events_produced_total", "p") == 2


def test_no_columns_no_prediction_events() -> None:
    events, metrics = producer(columns=None)
    events.predictions("r", table(1), answer(1))
    assert events.queued() == 0


def test_an_answer_that_cannot_be_read_is_dropped_and_counted_not_raised() -> None:
    events, metrics = producer()
    events.predictions("r", table(2), b"not json")
    assert events.queued() == 0
    assert sample(metrics, "mlship_events_dropped_total", "p", reason="unencodable") == 2


def labels(n: int) -> list[schema.Label]:
    return [schema.Label(f"r{i}", 0, i, 1.0, "iris") for i in range(n)]


def test_labels_are_taken_all_or_none() -> None:
    events, metrics = producer(queue=4)
    events.predictions("r", table(2), answer(2))
    with pytest.raises(QueueFull) as info:
        events.labels(labels(3))
    assert str(info.value) == (
        "the event queue is full (2 of 4 events wait for Kafka): none of the 3 labels were "
        "accepted; send them again later"
    )
    assert events.queued() == 2  # nothing partially accepted
    assert sample(metrics, "mlship_events_dropped_total", "l", reason="queue_full") == 3
    events.labels(labels(2))  # exactly the room left
    assert events.queued() == 4
    assert sample(metrics, "mlship_events_produced_total", "l") == 2


def test_what_cannot_be_sent_at_stop_is_counted_as_unflushed() -> None:
    events, metrics = producer()
    events.start()
    events.predictions("r", table(3), answer(3))
    left = asyncio.run(events.close(0.5))
    assert left == 3
    assert sample(metrics, "mlship_events_dropped_total", "p", reason="unflushed") == 3


class Refused:
    def topic(self) -> str:
        return "p"


class Recorded:
    """Stands in for librdkafka's producer: keeps what was produced."""

    def __init__(self) -> None:
        self.values: list[bytes] = []
        self.keys: list[bytes | None] = []

    def produce(self, topic: str, value: bytes, key: bytes | None = None, on_delivery=None) -> None:
        self.values.append(value)
        self.keys.append(key)


def test_the_events_of_many_requests_leave_as_one_message_settled_by_its_report() -> None:
    events, metrics = producer()
    recorded = Recorded()
    events._producer = recorded  # type: ignore[assignment]
    events.predictions("r1", table(2), answer(2))
    events.predictions("r2", table(1), answer(1))
    assert events.send() == 3
    assert recorded.keys == [None]  # one message, not three, and no one key
    assert [(e.request_id, e.row) for e in schema.read_predictions(recorded.values[0])] == [
        ("r1", 0), ("r1", 1), ("r2", 0)
    ]
    assert events.queued() == 3 and events.send() == 0
    events._on_report("p", 3, None, Refused())
    assert sample(metrics, "mlship_events_delivered_total", "p") == 3
    assert events.queued() == 0
    events.predictions("r3", table(2), answer(2))
    events.send()
    events._on_report("p", 2, KafkaError(KafkaError.TOPIC_AUTHORIZATION_FAILED), Refused())
    assert sample(metrics, "mlship_events_delivery_failures_total", "p") == 2
    assert sample(metrics, "mlship_events_delivered_total", "p") == 3
    assert events.queued() == 0


def test_events_beyond_the_message_size_go_out_as_several_messages_in_order(monkeypatch) -> None:
    monkeypatch.setattr(events_module, "MAX_MESSAGE_BYTES", 400)
    events, _ = producer()
    recorded = Recorded()
    events._producer = recorded  # type: ignore[assignment]
    for i in range(10):
        events.predictions(f"r{i}", table(1), answer(1))
    assert events.send() == 10
    assert len(recorded.values) > 1
    assert all(len(v) <= 400 for v in recorded.values)
    got = [e.request_id for v in recorded.values for e in schema.read_predictions(v)]
    assert got == [f"r{i}" for i in range(10)]


def test_labels_are_one_message_each_with_a_report_each() -> None:
    events, metrics = producer()
    recorded = Recorded()
    events._producer = recorded  # type: ignore[assignment]
    events.labels(labels(2))
    assert recorded.keys == [b"r0/0", b"r1/0"] and events.queued() == 2
    events._on_report("l", 1, None, Refused())
    assert events.queued() == 1
    assert sample(metrics, "mlship_events_delivered_total", "l") == 1


def test_every_drop_reason_is_a_series_from_the_start() -> None:
    _, metrics = producer()
    for topic in ("p", "l"):
        for reason in ("queue_full", "rejected", "unencodable", "unflushed"):
            assert sample(metrics, "mlship_events_dropped_total", topic, reason=reason) == 0
        assert sample(metrics, "mlship_events_delivered_total", topic) == 0
        assert sample(metrics, "mlship_events_delivery_failures_total", topic) == 0


# --- the task /feedback checks labels against ---------------------------------------------------


@pytest.mark.parametrize(
    ("tag", "outputs", "task", "source"),
    [
        ("regression", [{"type": "long"}], "regression", "the version's mlship.task tag"),
        ("classification", None, "classification", "the version's mlship.task tag"),
        (None, [{"type": "long"}], "classification", "the output signature (long)"),
        ("", [{"type": "string", "name": "y"}], "classification", "the output signature (string)"),
        ("other", [{"type": "boolean"}], "classification", "the output signature (boolean)"),
        (None, [{"type": "integer"}], "classification", "the output signature (integer)"),
        (None, [{"type": "double"}], "regression", "the output signature (double)"),
        (None, [{"type": "float"}, {"type": "double"}], "regression",
         "the output signature (double, float)"),
        (None, [{"type": "tensor", "tensor-spec": {"dtype": "int64", "shape": [-1]}}],
         "classification", "the output signature (int64)"),
        (None, [{"type": "tensor", "tensor-spec": {"dtype": "float64", "shape": [-1]}}],
         "regression", "the output signature (float64)"),
        (None, [{"type": "long"}, {"type": "double"}], None, ""),  # classes and numbers
        (None, [{"type": "binary"}], None, ""),
        (None, [], None, ""),
        (None, None, None, ""),
    ],
)
def test_the_task_comes_from_the_tag_else_the_output_signature(tag, outputs, task, source) -> None:
    assert model_task(tag, outputs) == (task, source)


# --- headers --------------------------------------------------------------------------------


def test_a_clients_request_id_is_kept_and_a_missing_one_made() -> None:
    assert request_id("order-17:line.3") == "order-17:line.3"
    made = request_id(None)
    assert len(made) == 32 and int(made, 16) >= 0
    assert made != request_id(None)


@pytest.mark.parametrize(
    ("given", "message"),
    [
        ("", "the X-Request-Id header: request_id must be a non-empty string, got ''"),
        ("a/b", "the X-Request-Id header: request_id 'a/b' must be printable ASCII without "
         "spaces or '/'"),
        ("x" * 129, "the X-Request-Id header: request_id is 129 characters long; the limit is 128"),
    ],
)
def test_a_request_id_that_cannot_key_an_event_is_refused(given: str, message: str) -> None:
    with pytest.raises(BadRequest) as info:
        request_id(given)
    assert (info.value.message, info.value.status) == (message, 400)


def test_model_headers() -> None:
    assert model_headers("iris", "3") == [(b"x-model-name", b"iris"), (b"x-model-version", b"3")]
    assert model_headers("iris", "") == [(b"x-model-name", b"iris")]  # an alias, not loaded yet
    assert model_headers("müsli", "1")[0] == (b"x-model-name", b"m%C3%BCsli")
