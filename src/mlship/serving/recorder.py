"""The inference log's writer: a sample of scored requests, buffered in memory and written to
MLflow in the background (format: mlship.inference_log).

Sampling is per request (all rows of a sampled request are logged, with its time of answer).
Cost on the request path: one random number, one `orjson.dumps` of the validated inputs and an
append to a buffer, about 1 us for a one-row request. Serialising and uploading happen
in a background thread every `flush_s` seconds, or sooner once `flush_rows` rows wait.

Durability. A graceful stop (SIGTERM: a rollout, a scale-down, a node drain) writes what is
buffered before the process exits, within `close()`'s timeout, so it loses nothing while
MLflow answers. A crash (SIGKILL, OOM kill) loses what was buffered: at most one flush interval.
While MLflow cannot be reached, rows stay buffered (at most `max_rows`; beyond that the oldest
are dropped and counted) and every interval tries again; requests are never failed or delayed.
A flush that times out after the server stored the file is written again (at least once).

Only requests parsed against a column signature (`Table`) are logged: requests to models with
a tensor signature or none are not, since their inputs have no column names to log.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import random
import socket
import tempfile
import threading
import time
from collections import deque
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, NamedTuple, Protocol, TypeVar

import orjson

from mlship.monitoring import inference_log as fmt
from mlship.serving.protocol import Table

log = logging.getLogger(__name__)

FLUSH_ROWS = 10_000
MAX_BUFFER_ROWS = 100_000
YIELD_EVERY = 100  # requests encoded between GIL hand-overs in the flush thread
T = TypeVar("T")


class Sink(Protocol):
    """Where files go. `write` and `finish` run in a background thread and may block."""

    def write(self, folder: str, name: str, data: bytes, first_ts: float) -> None: ...

    def finish(self) -> None: ...


class Counters(Protocol):
    def inc(self, amount: float = 1) -> None: ...


class Gauge(Protocol):
    def set(self, value: float) -> None: ...


class RecorderMetrics(Protocol):
    """What the recorder counts (ServingMetrics has these)."""

    @property
    def log_rows(self) -> Counters: ...
    @property
    def log_dropped(self) -> Counters: ...
    @property
    def log_flush_failures(self) -> Counters: ...
    @property
    def log_buffered(self) -> Gauge: ...


class _Entry(NamedTuple):
    # Bytes only: a tuple of untracked values is left alone by the garbage collector, while
    # tens of thousands of buffered Tables (lists in a tuple) made every full collection walk
    # them all (measured: +11 us per request, against ~1 us for the orjson.dumps below).
    ts: float
    n_rows: int
    inputs: bytes  # the Table's columns as a JSON array of arrays
    answer: bytes  # the response body: {"predictions": ...}


@dataclass(frozen=True, slots=True)
class _File:
    folder: str
    name: str
    data: bytes
    first_ts: float
    rows: int
    entries: list[_Entry]


def per_row(predictions: Any, n_rows: int) -> list[Any]:
    """One prediction per input row, from the `predictions` of a response."""
    if isinstance(predictions, list) and len(predictions) == n_rows:
        return predictions
    if (
        isinstance(predictions, dict)
        and predictions
        and all(isinstance(v, list) and len(v) == n_rows for v in predictions.values())
    ):  # several named outputs, one list each
        return [{key: values[i] for key, values in predictions.items()} for i in range(n_rows)]
    if n_rows == 1:
        return [predictions]
    return [None] * n_rows  # a shape that cannot be cut per row: inputs are still worth having


def encode_entry(entry: _Entry, columns: Sequence[str]) -> bytes:
    predictions = per_row(orjson.loads(entry.answer).get("predictions"), entry.n_rows)
    rows = zip(*orjson.loads(entry.inputs), strict=True)  # columns -> rows
    return b"".join(
        fmt.encode_record(entry.ts, dict(zip(columns, row, strict=True)), prediction)
        for row, prediction in zip(rows, predictions, strict=True)
    )


def _in_daemon_thread(fn: Callable[[], T]) -> asyncio.Future[T]:
    """Run `fn` in a daemon thread: unlike the default executor's threads, it cannot keep a
    stopping process alive when MLflow hangs (its client retries for minutes)."""
    loop = asyncio.get_running_loop()
    future: asyncio.Future[T] = loop.create_future()

    def settle(result: Any, error: BaseException | None) -> None:
        if future.done():
            return
        if error is not None:
            future.set_exception(error)
        else:
            future.set_result(result)

    def run() -> None:
        try:
            result, error = fn(), None
        except BaseException as e:  # noqa: BLE001 - handed to the awaiting task
            result, error = None, e
        with contextlib.suppress(RuntimeError):  # the loop closed meanwhile
            loop.call_soon_threadsafe(settle, result, error)

    threading.Thread(target=run, name="inference-log-flush", daemon=True).start()
    return future


class InferenceRecorder:
    def __init__(
        self,
        sink: Sink,
        columns: Sequence[str],
        metrics: RecorderMetrics,
        *,
        sample_rate: float,
        flush_s: float,
        flush_rows: int = FLUSH_ROWS,
        max_rows: int = MAX_BUFFER_ROWS,
        rand: Callable[[], float] = random.random,
        clock: Callable[[], float] = time.time,
    ) -> None:
        if not 0 < sample_rate <= 1:
            raise ValueError(f"sample_rate must be in (0, 1], got {sample_rate}")
        self._sink = sink
        self._columns = tuple(columns)
        self._metrics = metrics
        self._rate = sample_rate
        self._flush_s = flush_s
        self._flush_rows = flush_rows
        self._max_rows = max_rows
        self._rand = rand
        self._clock = clock
        self._buffer: deque[_Entry] = deque()
        self._rows = 0
        self._inflight = 0
        self._seq = 0
        self._wake = asyncio.Event()
        self._stopping = False
        self._task: asyncio.Task[None] | None = None
        self._failing = False

    @property
    def buffered_rows(self) -> int:
        return self._rows

    # --- request path (event loop) ---------------------------------------------------------

    def record(self, table: Table, answer: bytes) -> None:
        if self._rand() >= self._rate:
            return
        # NaN (a missing optional value) is encoded as null, as the log has it anyway.
        inputs = orjson.dumps(table.columns)
        self._buffer.append(_Entry(self._clock(), table.n_rows, inputs, answer))
        self._rows += table.n_rows
        if self._rows > self._max_rows:
            self._drop_oldest()
        if self._rows >= self._flush_rows:
            self._wake.set()

    def _drop_oldest(self) -> None:
        dropped = 0
        while self._rows > self._max_rows and self._buffer:
            entry = self._buffer.popleft()
            self._rows -= entry.n_rows
            dropped += entry.n_rows
        if dropped:
            self._metrics.log_dropped.inc(dropped)

    # --- background -------------------------------------------------------------------------

    def start(self) -> None:
        self._task = asyncio.create_task(self._run(), name="inference-log")

    async def _run(self) -> None:
        while not self._stopping:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wake.wait(), self._flush_s)
            self._wake.clear()
            if self._stopping:
                return
            await self.flush()

    async def flush(self) -> bool:
        """Write everything buffered; on failure keep what was not written. True if all went."""
        if not self._buffer:
            return True
        entries = list(self._buffer)
        self._buffer.clear()
        self._inflight, self._rows = self._rows, 0
        # Cancelled (close() timing out), the rows stay counted in _inflight: they are lost.
        unwritten, error = await _in_daemon_thread(lambda: self._write(entries))
        self._inflight = 0
        if not unwritten:
            if self._failing:
                log.info("inference log: MLflow answers again; buffered rows written")
            self._failing = False
            self._metrics.log_buffered.set(self._rows)
            return True
        self._metrics.log_flush_failures.inc()
        self._buffer.extendleft(reversed(unwritten))
        self._rows += sum(e.n_rows for e in unwritten)
        if self._rows > self._max_rows:
            self._drop_oldest()
        self._metrics.log_buffered.set(self._rows)
        log.warning(
            "inference log: could not write to MLflow (%s); %d rows kept for the next try in %gs",
            error, self._rows, self._flush_s,
        )
        self._failing = True
        return False

    def _encode(self, group: list[_Entry]) -> Iterator[bytes]:
        for i, entry in enumerate(group):
            if i % YIELD_EVERY == 0:
                # Hand the GIL to the event loop now rather than after the 5 ms switch
                # interval: encoding 10,000 rows is ~40 ms of Python that delayed responses.
                time.sleep(0)
            yield encode_entry(entry, self._columns)

    def _files(self, entries: list[_Entry]) -> list[_File]:
        """One file per hour the entries fall in (every record lies in its folder's hour)."""
        by_hour: dict[int, list[_Entry]] = {}
        for entry in entries:  # UTC hours are whole multiples of 3600 epoch seconds
            by_hour.setdefault(int(entry.ts // 3600), []).append(entry)
        files = []
        for hour_number, group in sorted(by_hour.items()):
            hour = fmt.hour_of(hour_number * 3600)
            first = min(e.ts for e in group)
            data = b"".join(self._encode(group))
            self._seq += 1
            files.append(
                _File(
                    fmt.artifact_dir(hour), fmt.file_name(first, self._seq), data, first,
                    sum(e.n_rows for e in group), group,
                )
            )
        return files

    def _write(self, entries: list[_Entry]) -> tuple[list[_Entry], BaseException | None]:
        """(entries not written, the error) — runs in the flush thread."""
        try:
            files = self._files(entries)
        except Exception:  # a bug, not an outage: retrying would fail forever
            log.exception("inference log: could not encode %d requests; dropped", len(entries))
            self._metrics.log_dropped.inc(sum(e.n_rows for e in entries))
            return [], None
        for i, file in enumerate(files):
            try:
                self._sink.write(file.folder, file.name, file.data, file.first_ts)
            except Exception as e:
                return [entry for f in files[i:] for entry in f.entries], e
            self._metrics.log_rows.inc(file.rows)
        return [], None

    async def close(self, timeout: float) -> None:
        """Write what is buffered and finish the run, giving up (and counting the rows as
        dropped) after `timeout` seconds."""
        self._stopping = True
        self._wake.set()
        try:
            await asyncio.wait_for(self._final_flush(), timeout)
        except TimeoutError:
            lost = self._rows + self._inflight
            self._metrics.log_dropped.inc(lost)
            log.error(
                "inference log: MLflow did not take the last %d rows within %gs; they are lost",
                lost, timeout,
            )

    async def _final_flush(self) -> None:
        if self._task is not None:
            await self._task  # lets a flush under way finish
        if not await self.flush():
            lost = self._rows
            self._rows = 0
            self._buffer.clear()
            self._metrics.log_dropped.inc(lost)
            log.error("inference log: the last %d rows could not be written; they are lost", lost)
            return
        try:
            await _in_daemon_thread(self._sink.finish)
        except Exception as e:  # the rows are written; only the run's status is stale
            log.warning("inference log: could not mark the run finished: %s", e)


class MlflowSink:
    """One MLflow run per serving process, created on the first write."""

    def __init__(self, tracking_uri: str, experiment: str, model_name: str, version: str) -> None:
        self._tracking_uri = tracking_uri
        self._experiment = experiment
        self._model_name = model_name
        self._version = version
        self._pod = os.environ.get("HOSTNAME") or socket.gethostname()
        self._client: Any = None
        self.run_id: str | None = None

    def _mlflow(self) -> Any:
        if self._client is None:
            from mlflow import MlflowClient

            self._client = MlflowClient(self._tracking_uri)
        return self._client

    def _experiment_id(self) -> str:
        from mlflow.exceptions import MlflowException

        client = self._mlflow()
        found = client.get_experiment_by_name(self._experiment)
        if found is not None:
            return str(found.experiment_id)
        try:
            return str(client.create_experiment(self._experiment))
        except MlflowException:  # another pod created it first
            found = client.get_experiment_by_name(self._experiment)
            if found is None:
                raise
            return str(found.experiment_id)

    def write(self, folder: str, name: str, data: bytes, first_ts: float) -> None:
        client = self._mlflow()
        if self.run_id is None:
            run = client.create_run(
                self._experiment_id(),
                start_time=int(first_ts * 1000),
                tags=fmt.run_tags(self._model_name, self._version, self._pod),
                run_name=fmt.run_name(self._model_name, self._version, self._pod),
            )
            self.run_id = run.info.run_id
            log.info(
                "inference log: writing to run %s in experiment %r", self.run_id, self._experiment
            )
        with tempfile.TemporaryDirectory(prefix="mlship-inference-") as tmp:
            path = Path(tmp) / name
            path.write_bytes(data)
            client.log_artifact(self.run_id, str(path), artifact_path=folder)

    def finish(self) -> None:
        if self.run_id is not None:
            self._mlflow().set_terminated(self.run_id, "FINISHED")
