"""Prometheus metrics of one server process, in its own registry (several apps can coexist in
one process, e.g. in tests)."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from prometheus_client import (
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    PlatformCollector,
    ProcessCollector,
    disable_created_metrics,
    generate_latest,
)
from prometheus_client.exposition import CONTENT_TYPE_LATEST

LATENCY_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)
BATCH_BUCKETS = (1, 2, 4, 8, 16, 32, 64, 128, 256, 512, 1024)
CONTENT_TYPE = CONTENT_TYPE_LATEST

# Why an event was not handed to Kafka (or not sent before the process stopped).
DROP_REASONS = ("queue_full", "rejected", "unencodable", "unflushed")

disable_created_metrics()  # type: ignore[no-untyped-call]  # the *_created series only double the scrape size


@dataclass(frozen=True, slots=True)
class TopicMetrics:
    """The event counters of one topic."""

    produced: Counter
    delivered: Counter
    delivery_failures: Counter
    by_reason: dict[str, Counter]  # dropped, one of DROP_REASONS

    def dropped(self, reason: str) -> Counter:
        return self.by_reason[reason]


class ServingMetrics:
    def __init__(self, model_name: str, model_version: str) -> None:
        self.registry = CollectorRegistry()
        ProcessCollector(registry=self.registry)
        PlatformCollector(registry=self.registry)
        self._model = {"model_name": model_name, "model_version": model_version or "unknown"}
        labels = ["model_name", "model_version"]
        self._requests = Counter(
            "mlship_requests",
            "HTTP requests answered, by endpoint and status code.",
            [*labels, "endpoint", "status"],
            registry=self.registry,
        )
        self._latency = Histogram(
            "mlship_request_duration_seconds",
            "Time from receiving a request to its response, by endpoint.",
            [*labels, "endpoint"],
            buckets=LATENCY_BUCKETS,
            registry=self.registry,
        )
        self._batch_rows = Histogram(
            "mlship_batch_rows",
            "Rows per model call (micro-batching at work when above 1).",
            labels,
            buckets=BATCH_BUCKETS,
            registry=self.registry,
        ).labels(**self._model)
        self._batch_requests = Histogram(
            "mlship_batch_requests",
            "Requests combined into one model call.",
            labels,
            buckets=BATCH_BUCKETS,
            registry=self.registry,
        ).labels(**self._model)
        self._predict = Histogram(
            "mlship_predict_duration_seconds",
            "Time of one model call on a batch.",
            labels,
            buckets=LATENCY_BUCKETS,
            registry=self.registry,
        ).labels(**self._model)
        self._ready = Gauge(
            "mlship_model_ready",
            "1 once the model is loaded and passed its self-test.",
            labels,
            registry=self.registry,
        ).labels(**self._model)
        self._ready.set(0)
        self._predictor = Gauge(
            "mlship_model_predictor",
            "1 for what scores parsed requests: predictor=compiled (the version's compiled form, "
            "its parity with scikit-learn held at registration) or sklearn (with the reason: "
            "no_record, not_compiled, parity_failed, load_failed).",
            [*labels, "predictor", "reason"],
            registry=self.registry,
        )
        self.log_rows = Counter(
            "mlship_inference_log_rows",
            "Scored rows written to the inference log in MLflow.",
            labels,
            registry=self.registry,
        ).labels(**self._model)
        self.log_dropped = Counter(
            "mlship_inference_log_dropped_rows",
            "Sampled rows dropped unwritten: the buffer was full while MLflow could not be "
            "reached, or the final flush at shutdown failed.",
            labels,
            registry=self.registry,
        ).labels(**self._model)
        self.log_flush_failures = Counter(
            "mlship_inference_log_flush_failures",
            "Flushes of the inference log that failed (their rows stay buffered for the next).",
            labels,
            registry=self.registry,
        ).labels(**self._model)
        self.log_buffered = Gauge(
            "mlship_inference_log_buffered_rows",
            "Sampled rows not yet written to MLflow, as of the last flush.",
            labels,
            registry=self.registry,
        ).labels(**self._model)

        self._events_produced = Counter(
            "mlship_events_produced",
            "Events handed to the Kafka producer's queue, by topic (prediction events: one per "
            "scored row of a sampled request; labels: one per label accepted by /feedback).",
            [*labels, "topic"],
            registry=self.registry,
        )
        self._events_delivered = Counter(
            "mlship_events_delivered",
            "Events the Kafka broker acknowledged, by topic.",
            [*labels, "topic"],
            registry=self.registry,
        )
        self._events_failed = Counter(
            "mlship_events_delivery_failures",
            "Events the Kafka broker refused for good (e.g. unknown topic, not authorised), by "
            "topic; a broker that is away is no failure: the events wait in the queue.",
            [*labels, "topic"],
            registry=self.registry,
        )
        self._events_dropped = Counter(
            "mlship_events_dropped",
            "Events never handed to Kafka, by topic and reason: queue_full (the queue was full "
            "while Kafka could not keep up or was away), rejected (the producer refused it, e.g. "
            "too large), unencodable (a bug), unflushed (still queued when the process stopped).",
            [*labels, "topic", "reason"],
            registry=self.registry,
        )
        self._events_queued = Gauge(
            "mlship_events_queued",
            "Events in the Kafka producer's local queue: waiting, in flight or just delivered.",
            labels,
            registry=self.registry,
        ).labels(**self._model)

    def events(self, topic: str) -> TopicMetrics:
        """The counters of one topic, every series created (at 0) so alerts see it at once."""
        return TopicMetrics(
            produced=self._events_produced.labels(**self._model, topic=topic),
            delivered=self._events_delivered.labels(**self._model, topic=topic),
            delivery_failures=self._events_failed.labels(**self._model, topic=topic),
            by_reason={
                reason: self._events_dropped.labels(**self._model, topic=topic, reason=reason)
                for reason in DROP_REASONS
            },
        )

    def set_events_queued(self, count: Callable[[], float]) -> None:
        self._events_queued.set_function(count)

    def observe_request(self, endpoint: str, status: int, seconds: float) -> None:
        self._requests.labels(**self._model, endpoint=endpoint, status=str(status)).inc()
        self._latency.labels(**self._model, endpoint=endpoint).observe(seconds)

    def observe_batch(self, requests: int, rows: int, seconds: float) -> None:
        self._batch_requests.observe(requests)
        self._batch_rows.observe(rows)
        self._predict.observe(seconds)

    def set_predictor(self, predictor: str, reason: str) -> None:
        self._predictor.labels(**self._model, predictor=predictor, reason=reason).set(1)

    def set_ready(self, ready: bool) -> None:
        self._ready.set(1 if ready else 0)

    def render(self) -> bytes:
        return generate_latest(self.registry)
