"""Prediction events and labels, produced to Kafka (the format: mlship.events.schema; for people:
docs/events.md).

Each scored row of a sampled `/invocations` request becomes one prediction event, and each label
posted to `/feedback` one message on the labels topic, keyed `<request_id>/<row>`. This replaces
the MLflow inference log (serving.recorder) when MLSHIP_KAFKA_BOOTSTRAP_SERVERS is set.

Cost on the request path: one `orjson.dumps` per row and a list append under a lock. The events
of every request answered within `linger` seconds leave as **one** Kafka message (schema version
2): a background thread of ours takes them every `linger`, joins them and hands the message to
librdkafka, whose own threads compress (lz4), send and retry it. One message per row cost the
broker ~40 µs of CPU per event and the pod a librdkafka report per event — on serving's cores,
as much as 13 % of its requests/s at 64 clients (benchmarks/README.md); one message per
micro-batch costs both per message, a few dozen a second.

Durability. The producer is idempotent and its messages never time out (`message.timeout.ms=0`):
while the broker is away they wait in librdkafka's queue and go out, in order and without
duplicates, when it answers again. The events waiting, in our list or in librdkafka's queue, are
bounded (MLSHIP_KAFKA_QUEUE_MAX_MESSAGES counts events): one that finds no room is dropped and
counted (`mlship_events_dropped_total{reason="queue_full"}`); a request is never delayed or
failed for its events. A graceful stop (SIGTERM: rollout, scale-down, drain) sends what waits
before the process exits, within its timeout, so it loses nothing while the broker answers; a
crash loses what was waiting.

Counting. Every message has a delivery report (served by the same thread) that settles all its
events at once: delivered or failed. What waits is taken − settled, per topic; /feedback's
all-or-nothing check counts both topics against the bound.
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

WARN_EVERY_S = 10.0  # at most one warning per reason in this many seconds


class QueueFull(Exception):
    """The local queue has no room for the labels of one /feedback request (none were queued)."""


MAX_MESSAGE_BYTES = 900_000
"""A message of prediction events stays under this (librdkafka's and the broker's default limit
is 1,000,000 bytes); more events waiting go out as several messages."""


def producer_config(bootstrap: str, *, queue_max_messages: int) -> dict[str, Any]:
    """librdkafka's settings: what makes the producer lose nothing and never block."""
    return {
        "bootstrap.servers": bootstrap,
        "client.id": f"mlship-serving-{os.environ.get('HOSTNAME') or socket.gethostname()}",
        # Retries cannot duplicate or reorder: the broker drops a batch it already has.
        "enable.idempotence": True,
        "acks": "all",
        # Never give up on a queued event: it waits for the broker however long it is away.
        "message.timeout.ms": 0,
        # A bound of librdkafka's own; ours (in events, >= messages) is reached first.
        "queue.buffering.max.messages": queue_max_messages,
        # Prediction events are gathered into one message per linger by us; this only lets the
        # labels of one /feedback request go out together.
        "linger.ms": 5,
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
        linger_s: float,
        rand: Callable[[], float] = random.random,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self._queue_max = int(config["queue.buffering.max.messages"])
        self._producer = Producer({**config, "error_cb": self._on_error, "logger": kafka_log})
        self._model, self._version = model, version
        self._columns = tuple(columns) if columns is not None else None
        self._predictions_topic, self._labels_topic = predictions_topic, labels_topic
        self._rate, self._linger_s = sample_rate, linger_s
        self._rand, self._clock = rand, clock
        self._predictions = metrics.events(predictions_topic)
        self._labels = metrics.events(labels_topic)
        metrics.set_events_queued(self.queued)
        self._warn = _Warn()
        self._brokers_down = False
        # Encoded prediction events not yet in a message: appended by the event loop, taken by
        # the send thread.
        self._lock = threading.Lock()
        self._pending: list[bytes] = []
        # Events, per topic. `taken` is written by the event loop only, `settled` (delivered,
        # failed or dropped after being taken) by the send thread only, so neither needs a lock.
        self._taken = {predictions_topic: 0, labels_topic: 0}
        self._settled = {predictions_topic: 0, labels_topic: 0}
        self._overhead = len(schema.predictions_message(model, version, [b""]))
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def queued(self) -> int:
        """Events taken and not yet delivered, failed or dropped: waiting in our list or in
        librdkafka's queue, or in flight."""
        return sum(self._taken.values()) - sum(self._settled.values())

    # --- request path (event loop) ---------------------------------------------------------

    def predictions(self, request_id: str, table: Table, answer: bytes) -> None:
        """The events of one answered request (if sampled): one per row, as many as there is
        room for. Never raises."""
        if self._columns is None or (self._rate < 1 and self._rand() >= self._rate):
            return
        n, names, columns = table.n_rows, self._columns, table.columns
        try:
            ts = self._clock()
            values = per_row(orjson.loads(answer).get("predictions"), n)
            # (a Table's columns are the signature's, in its order: zip needs no strict check)
            items = [
                schema.prediction_item(
                    request_id, row, ts,
                    {name: column[row] for name, column in zip(names, columns)},  # noqa: B905
                    values[row],
                )
                for row in range(n)
            ]  # fmt: skip
        except Exception as e:  # a bug, not an outage: the request is answered all the same
            self._drop(self._predictions, "unencodable", n, e)
            return
        room = self._queue_max - self.queued()
        if room < n:
            items = items[: max(room, 0)]
            self._drop(self._predictions, "queue_full", n - len(items), BufferError("no room"))
        if items:
            with self._lock:
                self._pending.extend(items)
            self._taken[self._predictions_topic] += len(items)
            self._predictions.produced.inc(len(items))

    def labels(self, labels: Sequence[schema.Label]) -> None:
        """Queue all the labels of one /feedback request, or none: QueueFull when there is no
        room for all of them. Only the event loop takes events, so nothing takes the room between
        the check and the produce calls."""
        n = len(labels)
        if self.queued() + n > self._queue_max:
            self._labels.dropped("queue_full").inc(n)
            raise QueueFull(
                f"the event queue is full ({self.queued()} of {self._queue_max} events wait for "
                f"Kafka): none of the {n} labels were accepted; send them again later"
            )
        topic = self._labels_topic
        for i, label in enumerate(labels):
            try:
                self._producer.produce(
                    topic, label.encode(), schema.key(label.request_id, label.row),
                    on_delivery=lambda err, msg: self._on_report(topic, 1, err, msg),
                )  # fmt: skip
            except (BufferError, KafkaException) as e:  # not expected after the check above
                self._labels_taken(i)
                self._labels.dropped("queue_full").inc(n - i)
                raise QueueFull(
                    f"the event queue took {i} of {n} labels, then refused the rest: {e}"
                ) from e
        self._labels_taken(n)

    def _labels_taken(self, n: int) -> None:
        self._taken[self._labels_topic] += n
        self._labels.produced.inc(n)

    def _drop(self, metrics: TopicMetrics, reason: str, n: int, error: BaseException) -> None:
        metrics.dropped(reason).inc(n)
        self._warn(
            reason, "events: %d event(s) dropped (%s: %s); %d wait in the queue",
            n, reason, error, self.queued(),
        )  # fmt: skip

    # --- the send thread -----------------------------------------------------------------------

    def send(self) -> int:
        """Hands the prediction events waiting in our list to librdkafka, as few messages as fit
        MAX_MESSAGE_BYTES; returns how many events. Called by the send thread every linger, and
        at stop."""
        with self._lock:
            items, self._pending = self._pending, []
        start, size = 0, self._overhead
        for i, item in enumerate(items):
            if i > start and size + len(item) + 1 > MAX_MESSAGE_BYTES:
                self._produce(items[start:i])
                start, size = i, self._overhead
            size += len(item) + 1
        if start < len(items):
            self._produce(items[start:])
        return len(items)

    def _produce(self, items: list[bytes]) -> None:
        n = len(items)
        try:
            self._producer.produce(
                self._predictions_topic,
                schema.predictions_message(self._model, self._version, items),
                on_delivery=lambda err, msg: self._on_report(self._predictions_topic, n, err, msg),
            )
        except BufferError as e:  # librdkafka's own bound: not expected before ours
            self._settle_dropped("queue_full", n, e)
        except KafkaException as e:  # e.g. one event larger than message.max.bytes
            self._settle_dropped("rejected", n, e)

    def _settle_dropped(self, reason: str, n: int, error: BaseException) -> None:
        self._settled[self._predictions_topic] += n
        self._drop(self._predictions, reason, n, error)

    # --- librdkafka's reports (the send thread, or close()) --------------------------------

    def _on_report(self, topic: str, n: int, err: KafkaError | None, msg: Message) -> None:
        """A message's delivery report settles its `n` events: delivered, or refused for good."""
        self._settled[topic] += n
        metrics = self._predictions if topic == self._predictions_topic else self._labels
        if err is None:
            metrics.delivered.inc(n)
            self._answers_again()
            return
        metrics.delivery_failures.inc(n)
        self._warn("delivery", "events: Kafka refused %d event(s) for %s: %s", n, msg.topic(), err)

    def _answers_again(self) -> None:
        if self._brokers_down:
            self._brokers_down = False
            log.info("events: Kafka answers again; %d events wait in the queue", self.queued())

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
        self._thread = threading.Thread(target=self._run, name="kafka-send", daemon=True)
        self._thread.start()

    def _run(self) -> None:
        # The wait ends at once at stop (close() sends what is left itself).
        while not self._stop.wait(max(self._linger_s, 0.001)):
            self.send()
            self._producer.poll(0)  # the reports and errors that came since

    async def close(self, timeout: float) -> int:
        """Send what waits within `timeout` seconds; what is left then is lost, counted as
        dropped ("unflushed"). Returns how many were left."""
        self._stop.set()
        started = time.monotonic()
        if self._thread is not None:
            await asyncio.to_thread(self._thread.join)
        await asyncio.to_thread(self.send)
        queued = self.queued()
        deadline = started + timeout
        await asyncio.to_thread(lambda: self._producer.flush(max(0.0, deadline - time.monotonic())))
        self._producer.poll(0)  # a report that came after flush() returned
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
