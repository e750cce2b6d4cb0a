"""The event record: every prediction event and every label from Kafka, kept for good as Parquet in
MLflow's artifact store, where the drift check and the monitoring read them (mlship.events.reader).

    python -m mlship.events.record --bootstrap-servers kafka:9092 --tracking-uri http://mlflow:5000

Layout. Experiment `mlship-record`, one run per model (tags `mlship.record=true`,
`mlship.model_name`), created on demand. Its artifacts, partitioned Hive-style (values
percent-encoded, dates UTC):

    predictions/model=<model>/version=<version>/date=<YYYY-MM-DD>/<topic>+<partition>+<offset>.parquet
    labels/model=<model>/date=<YYYY-MM-DD>/<topic>+<partition>+<offset>.parquet

A prediction file holds request_id, row, ts, model, version, one `input.<name>` column per input
and prediction; a label file request_id, row, ts, model, label. A column whose values Parquet
cannot hold as one type (a class that is sometimes a number, sometimes a string) is stored as JSON
text, named in the file's metadata (`mlship.json_columns`).

Exactly once. The consumer (group `mlship-record`, auto-commit off) reads both topics in batches
and commits a batch's offsets only after all its files are stored. A file holds the events of
one partition of one topic that fall into one folder, and is named after the first of their
offsets; a batch always starts at the partition's committed offset. So a batch consumed again
after a crash (or a failed commit) produces the same file names for the same events and
overwrites what the first attempt stored, however differently it is cut: nothing is duplicated,
and nothing is committed before it is stored, so nothing is lost. The reader deduplicates on
(request_id, row) as a second guard (e.g. serving retrying a produce).

A malformed message is counted, logged with its topic, partition and offset, and skipped (its
offset is committed with the batch). MLflow away: the batch is kept, the partitions paused and
the store retried with backoff (1 s doubling to 30 s), nothing committed. SIGTERM: the batch is
flushed and committed, then the process exits (if MLflow stays away for the stop grace, it exits
without committing: the events are consumed again at the next start).
"""

from __future__ import annotations

import argparse
import logging
import os
import re
import signal
import sys
import tempfile
import threading
import time
from collections import defaultdict
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any
from urllib.parse import quote, unquote

import orjson

from mlship import names
from mlship.errors import describe
from mlship.events import schema
from mlship.events.alive import Heartbeat

if TYPE_CHECKING:
    import pyarrow as pa
    from mlflow import MlflowClient

log = logging.getLogger(__name__)

EXPERIMENT = names.EXPERIMENT_RECORD
TAG_RECORD = names.TAG_RECORD
TAG_MODEL_NAME = names.TAG_MODEL_NAME
PREDICTIONS_DIR = "predictions"
LABELS_DIR = "labels"
SUFFIX = ".parquet"
DATE_FORMAT = "%Y-%m-%d"
INPUT_PREFIX = "input."
JSON_COLUMNS_KEY = b"mlship.json_columns"
DEFAULT_GROUP_ID = "mlship-record"
DEFAULT_FLUSH_SECONDS = 10.0
DEFAULT_FLUSH_EVENTS = 20_000
DEFAULT_PARTITIONS = 3
DEFAULT_REPLICATION_FACTOR = 1
STOP_GRACE_S = 20.0
MAX_BACKOFF_S = 30.0

_FILE = re.compile(r"^(?P<topic>[A-Za-z0-9._-]+)\+(?P<partition>\d+)\+(?P<offset>\d+)\.parquet$")


# --- the layout ---------------------------------------------------------------------------------


def date_of(ts: float) -> str:
    """The UTC date folder of an event time (epoch seconds)."""
    return datetime.fromtimestamp(ts, UTC).strftime(DATE_FORMAT)


def _value(text: str) -> str:
    """A partition value, percent-encoded so that '/' or '=' in a name cannot change the path."""
    return quote(text, safe="")


def model_dir(kind: str, model: str) -> str:
    return f"{kind}/model={_value(model)}"


def prediction_dir(model: str, version: str, date: str) -> str:
    return f"{model_dir(PREDICTIONS_DIR, model)}/version={_value(version)}/date={date}"


def label_dir(model: str, date: str) -> str:
    return f"{model_dir(LABELS_DIR, model)}/date={date}"


def partition_value(folder: str, key: str) -> str | None:
    """The value of a `key=value` folder name (decoded), or None when it is another key."""
    name = folder.rstrip("/").rsplit("/", 1)[-1]
    prefix = f"{key}="
    return unquote(name[len(prefix):]) if name.startswith(prefix) else None


def file_name(topic: str, partition: int, first_offset: int) -> str:
    """Named after where its events start in Kafka (as Kafka Connect's sinks name theirs): the same
    events consumed again get the same name, and overwrite rather than duplicate."""
    return f"{topic}+{partition}+{first_offset:020d}{SUFFIX}"


def parse_file_name(name: str) -> tuple[str, int, int] | None:
    match = _FILE.match(name)
    if match is None:
        return None
    return match["topic"], int(match["partition"]), int(match["offset"])


def run_tags(model: str) -> dict[str, str]:
    return {TAG_RECORD: "true", TAG_MODEL_NAME: model}


# --- a batch ------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Event:
    """One Kafka message, as the batch needs it."""

    topic: str
    partition: int
    offset: int
    value: bytes | None


@dataclass(frozen=True, slots=True)
class BatchFile:
    """One Parquet file of a batch: where it goes in the model's run, and its rows."""

    kind: str  # PREDICTIONS_DIR or LABELS_DIR
    model: str
    path: str
    rows: tuple[schema.Prediction, ...] | tuple[schema.Label, ...]


# (model, version, date, topic, partition) and (model, date, topic, partition)
_PredictionGroup = tuple[str, str, str, str, int]
_LabelGroup = tuple[str, str, str, int]


@dataclass
class Batch:
    """Events consumed since the last flush, grouped by the file each goes to."""

    predictions_topic: str = schema.PREDICTIONS_TOPIC
    labels_topic: str = schema.LABELS_TOPIC
    predictions: dict[_PredictionGroup, list[tuple[int, schema.Prediction]]] = field(
        default_factory=lambda: defaultdict(list)
    )
    labels: dict[_LabelGroup, list[tuple[int, schema.Label]]] = field(
        default_factory=lambda: defaultdict(list)
    )
    next_offsets: dict[tuple[str, int], int] = field(default_factory=dict)
    """Per (topic, partition): the offset to commit (the last one taken + 1, malformed included)."""
    malformed: int = 0
    started: float | None = None

    def add(self, event: Event, now: float) -> str | None:
        """Takes one message (a label, or one or many prediction events); returns why it is
        malformed (it is then counted and skipped whole), else None."""
        if self.started is None:
            self.started = now
        tp = (event.topic, event.partition)
        self.next_offsets[tp] = max(self.next_offsets.get(tp, 0), event.offset + 1)
        try:
            if event.value is None:
                raise schema.BadEvent("the message has no value")
            if event.topic == self.predictions_topic:
                for p in schema.read_predictions(event.value):
                    group = (p.model, p.version, date_of(p.ts), event.topic, event.partition)
                    self.predictions[group].append((event.offset, p))
            elif event.topic == self.labels_topic:
                label = schema.read_label(event.value)
                self.labels[(label.model, date_of(label.ts), event.topic, event.partition)].append(
                    (event.offset, label)
                )
            else:
                raise schema.BadEvent(f"topic {event.topic!r} is neither of the record's topics")
        except schema.BadEvent as e:
            self.malformed += 1
            return str(e)
        return None

    @property
    def events(self) -> int:
        """Well-formed events held."""
        return sum(map(len, self.predictions.values())) + sum(map(len, self.labels.values()))

    @property
    def empty(self) -> bool:
        return not self.next_offsets

    def due(self, now: float, flush_seconds: float, flush_events: int) -> bool:
        if self.empty or self.started is None:
            return False
        return self.events >= flush_events or now - self.started >= flush_seconds

    def files(self) -> list[BatchFile]:
        out: list[BatchFile] = []
        for (model, version, date, topic, partition), preds in sorted(self.predictions.items()):
            path = f"{prediction_dir(model, version, date)}/{file_name(topic, partition, preds[0][0])}"
            out.append(BatchFile(PREDICTIONS_DIR, model, path, tuple(p for _, p in preds)))
        for (model, date, topic, partition), labels in sorted(self.labels.items()):
            path = f"{label_dir(model, date)}/{file_name(topic, partition, labels[0][0])}"
            out.append(BatchFile(LABELS_DIR, model, path, tuple(lb for _, lb in labels)))
        return out

    def drop(self, partitions: Iterable[tuple[str, int]]) -> int:
        """Forgets the events of partitions this consumer no longer owns (their next owner consumes
        them again from the committed offset); returns how many were dropped."""
        gone = set(partitions)
        dropped = 0
        for pkey in [k for k in self.predictions if (k[3], k[4]) in gone]:
            dropped += len(self.predictions.pop(pkey))
        for lkey in [k for k in self.labels if (k[2], k[3]) in gone]:
            dropped += len(self.labels.pop(lkey))
        for tp in gone:
            self.next_offsets.pop(tp, None)
        if self.empty:
            self.started = None
        return dropped

    def summary(self) -> str:
        models = {k[0] for k in self.predictions} | {k[0] for k in self.labels}
        n_pred = sum(map(len, self.predictions.values()))
        n_lab = sum(map(len, self.labels.values()))
        return (
            f"{n_pred} predictions and {n_lab} labels of {len(models)} model(s), "
            f"{self.malformed} malformed skipped"
        )


# --- Parquet ------------------------------------------------------------------------------------


def to_table(columns: Mapping[str, Sequence[Any]]) -> pa.Table:
    """A table of these columns, each typed by pyarrow; a column whose values share no Arrow type
    (a class that is 1 in one row and "a" in another) is stored as JSON text instead and named in
    the metadata, so the reader gives back the values as they came."""
    import pyarrow as pa

    arrays, as_json = {}, []
    for name, values in columns.items():
        try:
            arrays[name] = pa.array(values)
        except (pa.ArrowInvalid, pa.ArrowTypeError, OverflowError):
            arrays[name] = pa.array([orjson.dumps(v).decode() for v in values], pa.string())
            as_json.append(name)
    table = pa.table(arrays)
    return table.replace_schema_metadata({JSON_COLUMNS_KEY: ",".join(as_json).encode()})


def from_table(table: pa.Table) -> dict[str, list[Any]]:
    """The columns of a table written by to_table, JSON columns decoded."""
    meta = table.schema.metadata or {}
    as_json = {c for c in meta.get(JSON_COLUMNS_KEY, b"").decode().split(",") if c}
    out: dict[str, list[Any]] = {}
    for name in table.column_names:
        values = table.column(name).to_pylist()
        out[name] = [orjson.loads(v) for v in values] if name in as_json else values
    return out


def prediction_columns(preds: Sequence[schema.Prediction]) -> dict[str, list[Any]]:
    inputs: list[str] = []
    seen: set[str] = set()
    for p in preds:
        for name in p.inputs:
            if name not in seen:
                seen.add(name)
                inputs.append(name)
    columns: dict[str, list[Any]] = {
        "request_id": [p.request_id for p in preds],
        "row": [p.row for p in preds],
        "ts": [p.ts for p in preds],
        "model": [p.model for p in preds],
        "version": [p.version for p in preds],
    }
    for name in inputs:
        columns[INPUT_PREFIX + name] = [p.inputs.get(name) for p in preds]
    columns["prediction"] = [p.prediction for p in preds]
    return columns


def label_columns(labels: Sequence[schema.Label]) -> dict[str, list[Any]]:
    return {
        "request_id": [lb.request_id for lb in labels],
        "row": [lb.row for lb in labels],
        "ts": [lb.ts for lb in labels],
        "model": [lb.model for lb in labels],
        "label": [lb.label for lb in labels],
    }


def write_file(f: BatchFile, root: Path) -> Path:
    import pyarrow.parquet as pq

    columns = (
        prediction_columns(f.rows)  # type: ignore[arg-type]
        if f.kind == PREDICTIONS_DIR
        else label_columns(f.rows)  # type: ignore[arg-type]
    )
    path = root / f.path
    path.parent.mkdir(parents=True, exist_ok=True)
    pq.write_table(to_table(columns), path, compression="zstd")
    return path


# --- MLflow -------------------------------------------------------------------------------------


def find_runs(client: MlflowClient, experiment: str, model: str) -> list[Any]:
    """The record's runs of `model`, oldest first (one, unless two consumers raced to create it)."""
    exp = client.get_experiment_by_name(experiment)
    if exp is None:
        return []
    value = model.replace("\\", "\\\\").replace("'", "\\'")
    return list(
        client.search_runs(
            [exp.experiment_id],
            filter_string=f"tags.`{TAG_RECORD}` = 'true' AND tags.`{TAG_MODEL_NAME}` = '{value}'",
            order_by=["attributes.start_time ASC"],
            max_results=100,
        )
    )


def drop_pooled_connections() -> None:
    """Make MLflow's next request open new connections instead of reusing pooled ones (as the
    operator does, mlship_operator.registry): whatever answered on MLflow's address while it was
    away may hold them open, and every store would fail until a restart."""
    from mlflow.utils import request_utils

    request_utils._cached_get_request_session.cache_clear()


class MlflowSink:
    """Stores a batch's files in the model's record run."""

    def __init__(self, tracking_uri: str, experiment: str = EXPERIMENT) -> None:
        from mlflow import MlflowClient

        self.client = MlflowClient(tracking_uri=tracking_uri)
        self.experiment = experiment
        self._runs: dict[str, str] = {}

    def _experiment_id(self) -> str:
        from mlflow.exceptions import MlflowException

        exp = self.client.get_experiment_by_name(self.experiment)
        if exp is not None:
            return str(exp.experiment_id)
        try:
            return str(self.client.create_experiment(self.experiment))
        except MlflowException:  # another process created it first
            exp = self.client.get_experiment_by_name(self.experiment)
            if exp is None:
                raise
            return str(exp.experiment_id)

    def run_id(self, model: str) -> str:
        if model not in self._runs:
            runs = find_runs(self.client, self.experiment, model)
            if runs:
                self._runs[model] = runs[0].info.run_id
            else:
                from mlflow.utils.mlflow_tags import MLFLOW_RUN_NAME

                run = self.client.create_run(
                    self._experiment_id(), tags={**run_tags(model), MLFLOW_RUN_NAME: f"record {model}"}
                )
                self._runs[model] = run.info.run_id
        return self._runs[model]

    def store(self, files: Sequence[BatchFile]) -> None:
        by_model: dict[str, list[BatchFile]] = defaultdict(list)
        for f in files:
            by_model[f.model].append(f)
        with tempfile.TemporaryDirectory(prefix="mlship-record-") as tmp:
            for i, (model, model_files) in enumerate(sorted(by_model.items())):
                root = Path(tmp) / str(i)
                for f in model_files:
                    write_file(f, root)
                self.client.log_artifacts(self.run_id(model), str(root))


# --- settings -----------------------------------------------------------------------------------


class ConfigError(ValueError):
    """Settings that cannot work; the message names each flag or variable at fault."""


@dataclass(frozen=True)
class Settings:
    bootstrap_servers: str
    tracking_uri: str
    group_id: str = DEFAULT_GROUP_ID
    experiment: str = EXPERIMENT
    flush_seconds: float = DEFAULT_FLUSH_SECONDS
    flush_events: int = DEFAULT_FLUSH_EVENTS
    partitions: int = DEFAULT_PARTITIONS
    replication_factor: int = DEFAULT_REPLICATION_FACTOR
    predictions_topic: str = schema.PREDICTIONS_TOPIC
    labels_topic: str = schema.LABELS_TOPIC
    log_level: str = "INFO"
    alive_file: str = ""


_ENV = names.RecordEnv
# flag, environment variable, Settings field, parser
_OPTIONS: tuple[tuple[str, str, str, str], ...] = (
    ("--bootstrap-servers", _ENV.BOOTSTRAP_SERVERS, "bootstrap_servers", "text"),
    ("--tracking-uri", _ENV.TRACKING_URI, "tracking_uri", "text"),
    ("--group-id", _ENV.GROUP_ID, "group_id", "text"),
    ("--experiment", _ENV.EXPERIMENT, "experiment", "text"),
    ("--flush-seconds", _ENV.FLUSH_SECONDS, "flush_seconds", "seconds"),
    ("--flush-events", _ENV.FLUSH_EVENTS, "flush_events", "count"),
    ("--partitions", _ENV.PARTITIONS, "partitions", "count"),
    ("--replication-factor", _ENV.REPLICATION_FACTOR, "replication_factor", "count"),
    ("--predictions-topic", _ENV.PREDICTIONS_TOPIC, "predictions_topic", "topic"),
    ("--labels-topic", _ENV.LABELS_TOPIC, "labels_topic", "topic"),
    ("--log-level", _ENV.LOG_LEVEL, "log_level", "level"),
    ("--alive-file", _ENV.ALIVE_FILE, "alive_file", "text"),
)
_TOPIC = re.compile(r"^[A-Za-z0-9._-]{1,249}$")
_LEVELS = ("DEBUG", "INFO", "WARNING", "ERROR")


def build() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="python -m mlship.events.record",
        description="Consume prediction events and labels from Kafka into the Parquet record in "
        "MLflow's artifact store. Each flag falls back to its environment variable, then its default.",
    )
    defaults = Settings("", "")
    for flag, env, name, _ in _OPTIONS:
        default = getattr(defaults, name)
        shown = f"; default {default}" if default != "" else ""
        p.add_argument(flag, dest=name, metavar=env, help=f"env {env}{shown}")
    return p


def _parse(kind: str, text: str) -> Any:
    if kind == "seconds":
        try:
            value = float(text)
        except ValueError:
            raise ValueError(f"{text!r} must be a number of seconds > 0") from None
        if not 0 < value < float("inf"):
            raise ValueError(f"{text!r} must be a number of seconds > 0")
        return value
    if kind == "count":
        try:
            number = int(text)
        except ValueError:
            raise ValueError(f"{text!r} must be a whole number > 0") from None
        if number <= 0:
            raise ValueError(f"{text!r} must be a whole number > 0")
        return number
    if kind == "topic" and not _TOPIC.match(text):
        raise ValueError(f"{text!r} is not a Kafka topic name (letters, digits, '.', '_', '-')")
    if kind == "level":
        if text.upper() not in _LEVELS:
            raise ValueError(f"{text!r} is not one of {', '.join(_LEVELS)}")
        return text.upper()
    return text


def load_settings(argv: Sequence[str] | None = None, env: Mapping[str, str] | None = None) -> Settings:
    """Flags, then the environment, then the defaults; every problem reported at once, each naming
    its flag and variable."""
    env = os.environ if env is None else env
    args = build().parse_args(argv)
    values: dict[str, Any] = {}
    problems: list[str] = []
    for flag, var, name, kind in _OPTIONS:
        given = getattr(args, name)
        text = given if given is not None else env.get(var, "")
        text = text.strip()
        if not text:
            continue  # blank means the default
        try:
            values[name] = _parse(kind, text)
        except ValueError as e:
            problems.append(f"{flag} / {var}: {e}")
    for flag, var, name, _ in _OPTIONS[:2]:
        if name not in values and not any(p.startswith(flag) for p in problems):
            what = "Kafka's bootstrap servers (host:port,...)" if name == "bootstrap_servers" else (
                "the MLflow tracking server's URI"
            )
            problems.append(f"{flag} / {var}: missing; {what} is needed")
    if values.get("predictions_topic", schema.PREDICTIONS_TOPIC) == values.get(
        "labels_topic", schema.LABELS_TOPIC
    ):
        problems.append("--predictions-topic and --labels-topic name the same topic")
    if problems:
        raise ConfigError("; ".join(problems))
    return Settings(**values)


# --- the consumer -------------------------------------------------------------------------------


def ensure_topics(settings: Settings, stop: threading.Event, timeout: float = 10) -> None:
    """Creates both topics unless they exist (an existing one is left as it is); waits for the
    broker, retrying with backoff, until it answers or `stop` is set."""
    from confluent_kafka import KafkaError, KafkaException
    from confluent_kafka.admin import AdminClient, NewTopic  # type: ignore[attr-defined]

    admin = AdminClient({"bootstrap.servers": settings.bootstrap_servers})
    delay = 1.0
    while not stop.is_set():
        topics = [
            NewTopic(t, num_partitions=settings.partitions, replication_factor=settings.replication_factor)
            for t in (settings.predictions_topic, settings.labels_topic)
        ]
        failed = []
        for topic, future in admin.create_topics(topics, request_timeout=timeout).items():
            try:
                future.result(timeout=timeout + 5)
                log.info("created topic %s (%d partitions, replication %d)", topic,
                         settings.partitions, settings.replication_factor)
            except KafkaException as e:
                err = e.args[0] if e.args else None
                if isinstance(err, KafkaError) and err.code() == KafkaError.TOPIC_ALREADY_EXISTS:
                    continue
                if isinstance(err, KafkaError) and not err.retriable() and err.code() not in (
                    KafkaError._TRANSPORT, KafkaError._TIMED_OUT, KafkaError.REQUEST_TIMED_OUT,
                    KafkaError.NOT_CONTROLLER,
                ):
                    raise ConfigError(f"cannot create topic {topic}: {err.str()}") from None
                failed.append(f"{topic}: {describe(e, 300)}")
            except Exception as e:  # noqa: BLE001 - a timeout of the future itself: retried
                failed.append(f"{topic}: {describe(e, 300)}")
        if not failed:
            return
        log.warning("Kafka at %s not ready (%s); retrying in %.0fs",
                    settings.bootstrap_servers, "; ".join(failed), delay)
        stop.wait(delay)
        delay = min(delay * 2, MAX_BACKOFF_S)


class Recorder:
    """The consume → batch → store → commit loop around one Kafka consumer and one sink."""

    def __init__(self, settings: Settings, consumer: Any, sink: Any,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.settings, self.consumer, self.sink, self.clock = settings, consumer, sink, clock
        self.batch = self._new_batch()
        self.pending: Batch | None = None  # the batch being stored, while its store is retried
        self.totals = {"predictions": 0, "labels": 0, "malformed": 0, "flushes": 0, "store_failures": 0}
        self.stop = threading.Event()
        self._last_flush = clock()
        self.heartbeat = Heartbeat(settings.alive_file)

    def _new_batch(self) -> Batch:
        return Batch(self.settings.predictions_topic, self.settings.labels_topic)

    # Kafka's rebalance callbacks (called from inside poll/consume) -------------------------------

    def on_assign(self, consumer: Any, partitions: list[Any]) -> None:
        log.info("assigned %s", ", ".join(f"{p.topic}[{p.partition}]" for p in partitions) or "nothing")
        if self.pending is not None and partitions:
            # a store is being retried with the partitions paused: so are these, or a long MLflow
            # outage would fill memory with their events (flush resumes them all)
            consumer.pause(partitions)

    def on_revoke(self, consumer: Any, partitions: list[Any]) -> None:
        gone = [(p.topic, p.partition) for p in partitions]
        if self.pending is None and not self.batch.empty:
            self.pending, self.batch = self.batch, self._new_batch()
            if self._store(self.pending):  # one try: the partitions must go now
                self._commit(self.pending)
            else:
                self.batch = self._merge(self.pending, self.batch)
            self.pending = None
        dropped = self.batch.drop(gone) + (self.pending.drop(gone) if self.pending else 0)
        if dropped:
            log.warning("partitions %s were revoked before %d of their events were stored; their "
                        "next owner consumes them again", gone, dropped)

    @staticmethod
    def _merge(first: Batch, second: Batch) -> Batch:
        for k, v in second.predictions.items():
            first.predictions[k].extend(v)
        for k2, v2 in second.labels.items():
            first.labels[k2].extend(v2)
        for tp, o in second.next_offsets.items():
            first.next_offsets[tp] = max(first.next_offsets.get(tp, 0), o)
        first.malformed += second.malformed
        return first

    # the loop -------------------------------------------------------------------------------

    def take(self, messages: Iterable[Any]) -> None:
        now = self.clock()
        self.heartbeat.beat(now)  # every consume, in the main loop and while a store is retried
        for m in messages:
            err = m.error()
            if err is not None:
                if not err.retriable() and err.fatal():
                    raise RuntimeError(f"Kafka consumer failed: {err.str()}")
                log.warning("Kafka: %s", err.str())
                continue
            event = Event(m.topic(), m.partition(), m.offset(), m.value())
            reason = self.batch.add(event, now)
            if reason is not None:
                log.warning("skipped malformed event at %s[%d] offset %d: %s",
                            event.topic, event.partition, event.offset, reason)

    def run(self) -> None:
        s = self.settings
        self.consumer.subscribe([s.predictions_topic, s.labels_topic],
                                on_assign=self.on_assign, on_revoke=self.on_revoke)
        while not self.stop.is_set():
            room = max(1, min(5000, s.flush_events - self.batch.events))
            self.take(self.consumer.consume(num_messages=room, timeout=0.5))
            if self.batch.due(self.clock(), s.flush_seconds, s.flush_events):
                self.flush()
        if not self.flush(deadline=self.clock() + STOP_GRACE_S):
            log.error("stopping with %s not stored (MLflow did not answer within %.0fs); nothing was "
                      "committed for them, so they are consumed again at the next start",
                      (self.pending or self.batch).summary(), STOP_GRACE_S)
        self.consumer.close()

    def flush(self, deadline: float | None = None) -> bool:
        """Stores the batch, retrying with backoff while MLflow fails (partitions paused, the
        consumer kept in its group), then commits its offsets. False when it gave up: at
        `deadline`, or when asked to stop while retrying without one."""
        if self.batch.empty:
            return True
        self.pending, self.batch = self.batch, self._new_batch()
        delay, attempt, paused = 1.0, 1, False
        try:
            while not self._store(self.pending, attempt):
                if not paused:
                    self.consumer.pause(self.consumer.assignment())
                    paused = True
                if self.pending.empty:  # revoked meanwhile: nothing of ours left to store
                    return True
                if deadline is None and self.stop.is_set():
                    return False
                if deadline is not None and self.clock() + delay > deadline:
                    return False
                log.warning("retrying in %.0fs; the batch is held, nothing committed", delay)
                self._wait(delay, stoppable=deadline is None)
                delay, attempt = min(delay * 2, MAX_BACKOFF_S), attempt + 1
            self._commit(self.pending)
            return True
        finally:
            if paused:
                self.consumer.resume(self.consumer.assignment())
            if self.pending is not None and not self.pending.empty and self.batch is not self.pending:
                # not stored: keep it ahead of what arrived meanwhile
                self.batch = self._merge(self.pending, self.batch)
            self.pending = None

    def _wait(self, seconds: float, stoppable: bool) -> None:
        """Waits while serving the consumer's group membership (paused partitions deliver nothing;
        a partition assigned meanwhile may, and its events join the next batch)."""
        end = self.clock() + seconds
        while self.clock() < end and not (stoppable and self.stop.is_set()):
            self.take(self.consumer.consume(num_messages=100, timeout=min(0.5, max(0.0, end - self.clock()))))

    def _store(self, batch: Batch, attempt: int = 1) -> bool:
        files = batch.files()
        started = self.clock()
        try:
            self.sink.store(files)
        except Exception as e:  # noqa: BLE001 - any failure of MLflow: keep the batch, retry
            self.totals["store_failures"] += 1
            log.warning("could not store a batch (%s) in MLflow (attempt %d): %s", batch.summary(), attempt,
                        describe(e, 500))
            drop_pooled_connections()
            return False
        took = self.clock() - started
        n_pred = sum(len(f.rows) for f in files if f.kind == PREDICTIONS_DIR)
        n_lab = sum(len(f.rows) for f in files if f.kind == LABELS_DIR)
        self.totals["predictions"] += n_pred
        self.totals["labels"] += n_lab
        self.totals["malformed"] += batch.malformed
        self.totals["flushes"] += 1
        since = self.clock() - self._last_flush
        self._last_flush = self.clock()
        log.info(
            "flushed %d predictions and %d labels (%d malformed skipped) into %d file(s) in %.2fs, "
            "%.0f events/s since the last flush; totals: %s",
            n_pred, n_lab, batch.malformed, len(files), took, (n_pred + n_lab) / since if since > 0 else 0,
            ", ".join(f"{k} {v}" for k, v in self.totals.items()),
        )
        return True

    def _commit(self, batch: Batch) -> None:
        from confluent_kafka import KafkaException, TopicPartition

        offsets = [TopicPartition(t, p, o) for (t, p), o in sorted(batch.next_offsets.items())]
        if not offsets:
            return
        try:
            self.consumer.commit(offsets=offsets, asynchronous=False)
        except KafkaException as e:
            log.warning("commit of %s failed (%s): those events will be consumed again and their "
                        "files overwritten, not duplicated", _offsets(offsets), describe(e, 300))
            return
        log.info("committed %s", _offsets(offsets))
        batch.next_offsets.clear()


def _offsets(offsets: Iterable[Any]) -> str:
    return ", ".join(f"{o.topic}[{o.partition}]={o.offset}" for o in offsets)


def consumer_config(settings: Settings) -> dict[str, Any]:
    return {
        "bootstrap.servers": settings.bootstrap_servers,
        "group.id": settings.group_id,
        "enable.auto.commit": False,
        "auto.offset.reset": "earliest",
        "enable.partition.eof": False,
        # a long MLflow outage is waited out with the partitions paused, still polling
        "max.poll.interval.ms": 300_000,
        # a consumer that died (SIGKILL, a lost node) holds its partitions this long before its
        # replacement gets them: 10 s instead of librdkafka's 45
        "session.timeout.ms": 10_000,
    }


def main(argv: list[str] | None = None) -> int:
    try:
        settings = load_settings(argv)
    except ConfigError as e:
        print(f"mlship record: {e}", file=sys.stderr)
        return 2
    logging.basicConfig(level=settings.log_level, stream=sys.stderr,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    # MLflow's own retries would hide an outage for minutes: the recorder retries itself.
    os.environ.setdefault("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "0")
    os.environ.setdefault("MLFLOW_HTTP_REQUEST_TIMEOUT", "30")
    os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")
    from confluent_kafka import Consumer

    stop = threading.Event()

    def stopping(signum: int, _frame: object) -> None:
        log.info("signal %d: flushing and stopping", signum)
        stop.set()

    signal.signal(signal.SIGTERM, stopping)
    signal.signal(signal.SIGINT, stopping)
    try:
        ensure_topics(settings, stop)
    except ConfigError as e:
        log.error("%s", e)
        return 2
    recorder = Recorder(settings, Consumer(consumer_config(settings)),
                        MlflowSink(settings.tracking_uri, settings.experiment))
    recorder.stop = stop
    log.info("recording %s and %s from %s into MLflow %s (experiment %s), group %s, flushing every "
             "%gs or %d events", settings.predictions_topic, settings.labels_topic,
             settings.bootstrap_servers, settings.tracking_uri, settings.experiment, settings.group_id,
             settings.flush_seconds, settings.flush_events)
    recorder.run()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
