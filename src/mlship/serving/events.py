"""Prediction events and labels, produced to Kafka (the format: mlship.events.schema; for people:
docs/events.md).

Each scored row of a sampled `/invocations` request becomes one prediction event on the
predictions topic, and each label posted to `/feedback` one event on the labels topic, both keyed
`<request_id>/<row>`. This replaces the MLflow inference log (serving.recorder) when
MLSHIP_KAFKA_BOOTSTRAP_SERVERS is set.

Cost on the request path: one `orjson.dumps` per row and librdkafka's `produce()`, which only
appends to its local queue (a few microseconds for a one-row request). Batching (`linger.ms`),
lz4 compression, sending and retrying happen in librdkafka's own threads; delivery reports are
served by a background thread of ours (`poll()`), never by a request.

Durability. The producer is idempotent and its messages never time out (`message.timeout.ms=0`):
while the broker is away they wait in the local queue and go out, in order and without
duplicates, when it answers again. The queue is bounded (MLSHIP_KAFKA_QUEUE_MAX_MESSAGES); an
event that finds it full is dropped and counted (`mlship_events_dropped_total{reason=
"queue_full"}`): a request is never delayed or failed for its event. A graceful stop (SIGTERM:
rollout, scale-down, drain) flushes the queue before the process exits, within its timeout, so
it loses nothing while the broker answers; a crash loses what was queued.

Two producers, so that a delivered prediction event costs no Python after `produce()`. Prediction
events go through one with `delivery.report.only.error`: the poll thread runs a Python callback
only for a failure (confluent-kafka still takes librdkafka's report of each delivered message in
C, then skips the call) — a Python callback per event was most of the events' cost to serving
(+0.041 ms CPU per request at 64 clients against +0.008 ms without; benchmarks/README.md). What
was delivered is then derived, not counted: taken − still in librdkafka's queue (`len(producer)`:
a message leaves it only once its report is served, after our callback for a failure) − failed,
advanced by the poll thread after each poll. Labels (a few per /feedback request) keep a
producer of their own with a report per label: their delivered count stays a plain count, and
/feedback's all-or-nothing check needs exact room. That check counts both queues against
MLSHIP_KAFKA_QUEUE_MAX_MESSAGES, so labels get no room the prediction events do not have; each
producer is bounded by it in librdkafka too.
"""

from __future__ import annotations

import asyncio
import logging
import os
import random
import re
import socket
import threading
import time
from collections.abc import Callable, Sequence
from typing import Any

import orjson
from confluent_kafka import KafkaError, KafkaException, Message, Producer

from mlship.events import schema
from mlship.serving.metrics import ServingMetrics, TopicMetrics
from mlship.serving.protocol import Table
from mlship.serving.recorder import per_row

log = logging.getLogger(__name__)
kafka_log = logging.getLogger("mlship.serving.kafka")  # librdkafka's own log lines

POLL_S = 0.1
WARN_EVERY_S = 10.0  # at most one warning per reason in this many seconds


class QueueFull(Exception):
    """The local queue has no room for the labels of one /feedback request (none were queued)."""


def producer_config(
    bootstrap: str, *, queue_max_messages: int, linger_ms: float
) -> dict[str, Any]:
    """librdkafka's settings: what makes the producer lose nothing and never block."""
    return {
        "bootstrap.servers": bootstrap,
        "client.id": f"mlship-serving-{os.environ.get('HOSTNAME') or socket.gethostname()}",
        # Retries cannot duplicate or reorder: the broker drops a batch it already has.
        "enable.idempotence": True,
        "acks": "all",
        # Never give up on a queued event: it waits for the broker however long it is away.
        "message.timeout.ms": 0,
        # The bound on what waits: produce() raises BufferError beyond it, and we drop and count.
        "queue.buffering.max.messages": queue_max_messages,
        "linger.ms": linger_ms,
        "compression.type": "lz4",
        # The key's partition as Java clients pick it (librdkafka's default hashes otherwise), so
        # a label produced by any client lands where serving would have put it.
        "partitioner": "murmur2_random",
        # Try a lost broker again within a second (default: up to 10 s), but not more than about
        # twice a second: something else answering on its address (a catch-all responder, a
        # recycled IP) accepts the TCP connection, which resets librdkafka's backoff to this
        # floor (default 100 ms: ~20 attempts a second per broker, measured).
        "reconnect.backoff.ms": 500,
        "reconnect.backoff.max.ms": 1000,
        "log.connection.close": False,  # idle connections closed by the broker are not news
    }


class _Warn:
    """A warning per key at most every WARN_EVERY_S seconds, with how many were held back."""

    def __init__(self) -> None:
        self._last: dict[str, float] = {}
        self._held: dict[str, int] = {}

    def held_or_pass(self, key: str, now: float) -> int | None:
        """None when `key` was let through less than WARN_EVERY_S ago (now held back), else how
        many were held back since."""
        if now - self._last.get(key, -WARN_EVERY_S) < WARN_EVERY_S:
            self._held[key] = self._held.get(key, 0) + 1
            return None
        self._last[key] = now
        return self._held.pop(key, 0)

    def __call__(self, key: str, message: str, *args: object) -> None:
        held = self.held_or_pass(key, time.monotonic())
        if held is None:
            return
        suffix = f" ({held} more like it in the last {WARN_EVERY_S:g}s)" if held else ""
        log.warning(message + suffix, *args)


class _OncePerInterval(logging.Filter):
    """librdkafka says the same thing on every reconnect attempt ("Connect to ... failed",
    "Invalid response size" from a stranger on the broker's address): one line per kind per
    WARN_EVERY_S, with how many were held back. A kind is the message without its numbers."""

    def __init__(self) -> None:
        super().__init__()
        self._warn = _Warn()

    def filter(self, record: logging.LogRecord) -> bool:
        text = record.getMessage()
        kind = re.sub(r"\d+", "#", text)
        now = time.monotonic()
        held = self._warn.held_or_pass(kind, now)
        if held is None:
            return False
        if held:
            record.msg, record.args = f"{text} ({held} more like it in the last {WARN_EVERY_S:g}s)", ()
        return True


kafka_log.addFilter(_OncePerInterval())


class EventProducer:
    """One process's Kafka producer for prediction events and labels."""

    def __init__(
        self,
        config: dict[str, Any],
        metrics: ServingMetrics,
        *,
        model: str,
        version: str,
        columns: Sequence[str] | None,
        predictions_topic: str,
        labels_topic: str,
        sample_rate: float,
        rand: Callable[[], float] = random.random,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self._queue_max = int(config["queue.buffering.max.messages"])
        common = {"error_cb": self._on_error, "logger": kafka_log}
        # Prediction events: only failures are reported (delivered is derived: _advance()).
        self._producer = Producer({
            **config, **common, "on_delivery": self._on_prediction_failed,
            "delivery.report.only.error": True,
        })  # fmt: skip
        # Labels: every delivery reported.
        self._labels_producer = Producer({
            **config, **common, "on_delivery": self._on_label_delivery,
            "client.id": f"{config.get('client.id', 'mlship-serving')}-labels",
        })  # fmt: skip
        self._model, self._version = model, version
        self._columns = tuple(columns) if columns is not None else None
        self._predictions_topic, self._labels_topic = predictions_topic, labels_topic
        self._rate = sample_rate
        self._rand, self._clock = rand, clock
        self._predictions = metrics.events(predictions_topic)
        self._labels = metrics.events(labels_topic)
        metrics.set_events_queued(self.queued)
        self._warn = _Warn()
        self._brokers_down = False
        # Each written by one thread only (the event loop; the poll thread), so no lock.
        self._taken_total = 0  # prediction events produce() took (event loop)
        self._failed_total = 0  # prediction events Kafka refused for good (poll thread)
        self._delivered_total = 0  # prediction events counted as delivered (poll thread)
        self._labels_taken = 0  # labels produce() took (event loop)
        self._labels_reported = 0  # labels' delivery reports served (poll thread)
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def queued(self) -> int:
        """Events in the local queues: waiting, in flight, or delivered but not yet counted (by
        the next poll, within POLL_S). For prediction events, taken − delivered − failed, as of
        the poll thread's last count; for labels, taken − reported. Not len(Producer) itself:
        that also counts librdkafka's other reports waiting for poll(), such as logs and errors
        (and this is never below what librdkafka holds, so /feedback's room check is safe)."""
        return (
            self._taken_total - self._delivered_total - self._failed_total
            + self._labels_taken - self._labels_reported
        )  # fmt: skip

    def _advance(self) -> None:
        """Count the prediction events delivered since the last call: taken − still in
        librdkafka's queue − failed. `taken` is read first: an event produced after that is in
        neither or (still queued) makes the difference smaller, never larger, and a failure is
        counted (by its report, served by this thread) before librdkafka lets go of its message.
        So the count never runs ahead of the broker; a report of another kind waiting in the
        queue (a log line, an error) only holds it back until the next poll."""
        taken = self._taken_total
        delivered = taken - len(self._producer) - self._failed_total
        if delivered > self._delivered_total:
            self._predictions.delivered.inc(delivered - self._delivered_total)
            self._delivered_total = delivered
            self._answers_again()

    def _answers_again(self) -> None:
        if self._brokers_down:
            self._brokers_down = False
            log.info("events: Kafka answers again; %d events wait in the queue", self.queued())

    # --- request path (event loop) ---------------------------------------------------------

    def predictions(self, request_id: str, table: Table, answer: bytes) -> None:
        """The events of one answered request (if sampled): one per row. Never raises."""
        if self._columns is None or (self._rate < 1 and self._rand() >= self._rate):
            return
        n, names, columns = table.n_rows, self._columns, table.columns
        try:
            ts = self._clock()
            values = per_row(orjson.loads(answer).get("predictions"), n)
            # (a Table's columns are the signature's, in its order: zip needs no strict check)
            events = [
                schema.prediction(
                    request_id, row, ts, self._model, self._version,
                    {name: column[row] for name, column in zip(names, columns)},  # noqa: B905
                    values[row],
                )
                for row in range(n)
            ]  # fmt: skip
        except Exception as e:  # a bug, not an outage: the request is answered all the same
            self._drop(self._predictions, "unencodable", n, e)
            return
        produce = self._producer.produce
        topic = self._predictions_topic
        for row, event in enumerate(events):
            try:
                produce(topic, event, schema.key(request_id, row))
            except BufferError as e:
                self._taken(row)
                self._drop(self._predictions, "queue_full", n - row, e)
                return
            except KafkaException as e:  # e.g. larger than message.max.bytes
                self._taken(row)
                self._drop(self._predictions, "rejected", n - row, e)
                return
        self._taken(n)

    def _taken(self, n: int) -> None:
        self._taken_total += n
        self._predictions.produced.inc(n)

    def labels(self, labels: Sequence[schema.Label]) -> None:
        """Queue all the labels of one /feedback request, or none: QueueFull when there is no
        room for all of them. Only the event loop produces, so nothing takes the room between
        the check and the produce calls."""
        n = len(labels)
        if self.queued() + n > self._queue_max:
            self._labels.dropped("queue_full").inc(n)
            raise QueueFull(
                f"the event queue is full ({self.queued()} of {self._queue_max} events wait for "
                f"Kafka): none of the {n} labels were accepted; send them again later"
            )
        produce = self._labels_producer.produce
        for i, label in enumerate(labels):
            try:
                produce(
                    self._labels_topic, label.encode(), schema.key(label.request_id, label.row)
                )
            except (BufferError, KafkaException) as e:  # not expected after the check above
                self._labels_taken_n(i)
                self._labels.dropped("queue_full").inc(n - i)
                raise QueueFull(
                    f"the event queue took {i} of {n} labels, then refused the rest: {e}"
                ) from e
        self._labels_taken_n(n)

    def _labels_taken_n(self, n: int) -> None:
        self._labels_taken += n
        self._labels.produced.inc(n)

    def _drop(self, metrics: TopicMetrics, reason: str, n: int, error: BaseException) -> None:
        metrics.dropped(reason).inc(n)
        self._warn(
            reason, "events: %d event(s) dropped (%s: %s); %d wait in the queue",
            n, reason, error, self.queued(),
        )  # fmt: skip

    # --- librdkafka's callbacks (the poll thread) ------------------------------------------

    def _on_prediction_failed(self, err: KafkaError | None, msg: Message) -> None:
        if err is None:  # not expected: delivery.report.only.error
            return
        self._failed_total += 1
        self._predictions.delivery_failures.inc()
        self._warn("delivery", "events: Kafka refused an event for %s: %s", msg.topic(), err)

    def _on_label_delivery(self, err: KafkaError | None, msg: Message) -> None:
        self._labels_reported += 1
        if err is None:
            self._labels.delivered.inc()
            self._answers_again()
            return
        self._labels.delivery_failures.inc()
        self._warn("delivery", "events: Kafka refused an event for %s: %s", msg.topic(), err)

    def _on_error(self, err: KafkaError) -> None:
        if err.code() == KafkaError._ALL_BROKERS_DOWN:
            if not self._brokers_down:
                self._brokers_down = True
                log.warning(
                    "events: no Kafka broker answers (%s); events wait in the queue "
                    "(%d now, %d at most, then new ones are dropped)",
                    err.str(), self.queued(), self._queue_max,
                )  # fmt: skip
            return
        self._warn("error", "events: Kafka: %s", err.str())

    # --- lifecycle ---------------------------------------------------------------------------

    def start(self) -> None:
        self._thread = threading.Thread(target=self._poll, name="kafka-poll", daemon=True)
        self._thread.start()

    def _poll(self) -> None:
        while not self._stop.is_set():
            self._producer.poll(POLL_S)  # only failures and errors: mostly a wait
            self._labels_producer.poll(0)
            self._advance()

    async def close(self, timeout: float) -> int:
        """Send what is queued within `timeout` seconds; what is left then is lost, counted as
        dropped ("unflushed"). Returns how many were left."""
        self._stop.set()
        started = time.monotonic()
        if self._thread is not None:
            await asyncio.to_thread(self._thread.join)
        queued = self.queued()
        deadline = started + timeout

        def flush() -> None:
            for producer in (self._producer, self._labels_producer):
                producer.flush(max(0.0, deadline - time.monotonic()))

        await asyncio.to_thread(flush)
        for producer in (self._producer, self._labels_producer):
            producer.poll(0)  # a report that came after flush() returned
        self._advance()
        left = self.queued()
        if left:
            self._predictions.dropped("unflushed").inc(left)  # mostly predictions; cannot tell
            log.error(
                "events: Kafka did not take the last %d events within %gs; they are lost",
                left, timeout,
            )  # fmt: skip
        else:
            log.info("events: %d queued events sent before stopping", queued)
        return left
