"""The inference-log recorder: sampling, buffering, bounds, failures and the files it writes,
on a real event loop with a sink that writes the files to a directory."""

from __future__ import annotations

import asyncio
import math
import threading
import time
from datetime import UTC, datetime
from pathlib import Path

import orjson
import pytest

from mlship.monitoring import inference_log as fmt
from mlship.serving.metrics import ServingMetrics
from mlship.serving.protocol import Table
from mlship.serving.recorder import InferenceRecorder, per_row

pytestmark = pytest.mark.unit

COLUMNS = ("a", "b")
T0 = datetime(2026, 3, 1, 9, 59, 58, tzinfo=UTC).timestamp()


class DirSink:
    """Writes each file to root/<folder>/<name>; `down` makes writes fail like an outage."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.down = False
        self.fail_after: int | None = None  # fail once this many files were written
        self.block: threading.Event | None = None
        self.written: list[tuple[str, str, float]] = []
        self.finished = 0

    def write(self, folder: str, name: str, data: bytes, first_ts: float) -> None:
        if self.block is not None:
            self.block.wait()
        if self.down or (self.fail_after is not None and len(self.written) >= self.fail_after):
            raise ConnectionError("MLflow is down")
        path = self.root / folder / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(data)
        self.written.append((folder, name, first_ts))

    def finish(self) -> None:
        self.finished += 1

    def records(self) -> list[dict]:
        return [
            record
            for path in sorted(self.root.rglob("*.jsonl"))
            for record in fmt.decode_records(path.read_bytes())
        ]


class Clock:
    def __init__(self, start: float = T0, step: float = 0.5) -> None:
        self.now, self.step = start, step

    def __call__(self) -> float:
        self.now += self.step
        return self.now


def table(*rows: tuple[float, float]) -> Table:
    return Table(([r[0] for r in rows], [r[1] for r in rows]), len(rows))


def answer(*predictions: object) -> bytes:
    return orjson.dumps({"predictions": list(predictions)})


def make(sink: DirSink, **kw) -> tuple[InferenceRecorder, ServingMetrics]:
    metrics = ServingMetrics("iris", "3")
    kw.setdefault("sample_rate", 1.0)
    kw.setdefault("flush_s", 60.0)
    kw.setdefault("clock", Clock())
    recorder = InferenceRecorder(sink, COLUMNS, metrics, **kw)
    return recorder, metrics


def value(metrics: ServingMetrics, name: str) -> float:
    found = metrics.registry.get_sample_value(name, {"model_name": "iris", "model_version": "3"})
    return found or 0.0


def run(coro):
    return asyncio.run(asyncio.wait_for(coro, timeout=20))


@pytest.fixture
def sink(tmp_path: Path) -> DirSink:
    return DirSink(tmp_path)


def test_each_row_becomes_one_line_with_its_inputs_prediction_and_time(sink: DirSink) -> None:
    async def scenario() -> None:
        recorder, metrics = make(sink)
        recorder.record(table((1.0, 2.0), (3.0, math.nan)), answer(0, 2))
        recorder.record(table((5.0, 6.0)), answer(1))
        assert recorder.buffered_rows == 3 and not sink.written  # nothing leaves before a flush
        assert await recorder.flush()
        assert value(metrics, "mlship_inference_log_rows_total") == 3
        assert value(metrics, "mlship_inference_log_buffered_rows") == 0

    run(scenario())
    assert sink.records() == [
        {"ts": T0 + 0.5, "inputs": {"a": 1.0, "b": 2.0}, "prediction": 0},
        {"ts": T0 + 0.5, "inputs": {"a": 3.0, "b": None}, "prediction": 2},  # NaN is null
        {"ts": T0 + 1.0, "inputs": {"a": 5.0, "b": 6.0}, "prediction": 1},
    ]
    ((folder, name, first_ts),) = sink.written
    assert folder == "inference/2026-03-01T09"
    assert name == f"{int((T0 + 0.5) * 1000)}-1.jsonl"
    assert first_ts == T0 + 0.5


def test_a_flush_across_an_hour_writes_one_file_per_hour(sink: DirSink) -> None:
    async def scenario() -> None:
        recorder, _ = make(sink, clock=Clock(step=1.0))  # 09:59:59, 10:00:00, 10:00:01
        for i in range(3):
            recorder.record(table((float(i), 0.0)), answer(i))
        assert await recorder.flush()

    run(scenario())
    folders = [folder for folder, _, _ in sink.written]
    assert folders == ["inference/2026-03-01T09", "inference/2026-03-01T10"]
    for folder, name, _ in sink.written:
        hour = folder.rsplit("/", 1)[1]
        rows = list(fmt.decode_records((sink.root / folder / name).read_bytes()))
        assert rows and all(fmt.hour_of(r["ts"]) == hour for r in rows)
    assert len({name for _, name, _ in sink.written}) == 2


def test_only_the_sampled_share_of_requests_is_kept(sink: DirSink) -> None:
    draws = iter([0.1, 0.7, 0.49, 0.5, 0.0])

    async def scenario() -> None:
        recorder, _ = make(sink, sample_rate=0.5, rand=lambda: next(draws))
        for i in range(5):
            recorder.record(table((float(i), 0.0)), answer(i))
        await recorder.flush()

    run(scenario())
    assert [r["prediction"] for r in sink.records()] == [0, 2, 4]


def test_sampling_with_the_real_generator_keeps_about_the_rate(sink: DirSink) -> None:
    async def scenario() -> int:
        recorder, _ = make(sink, sample_rate=0.3, flush_rows=10**9, max_rows=10**9)
        for _ in range(20_000):
            recorder.record(table((1.0, 2.0)), answer(0))
        return recorder.buffered_rows

    kept = run(scenario())
    assert abs(kept - 6000) < 5 * math.sqrt(20_000 * 0.3 * 0.7)  # 5 sigma


def test_a_full_buffer_drops_the_oldest_rows_and_counts_them(sink: DirSink) -> None:
    async def scenario() -> ServingMetrics:
        recorder, metrics = make(sink, max_rows=10)
        for i in range(4):  # 12 rows
            recorder.record(table((float(i), 0.0), (float(i), 1.0), (float(i), 2.0)), answer(i, i, i))
        assert recorder.buffered_rows == 9
        await recorder.flush()
        return metrics

    metrics = run(scenario())
    assert value(metrics, "mlship_inference_log_dropped_rows_total") == 3
    assert {r["prediction"] for r in sink.records()} == {1, 2, 3}


def test_an_outage_keeps_the_rows_for_the_next_flush(sink: DirSink) -> None:
    async def scenario() -> ServingMetrics:
        recorder, metrics = make(sink)
        recorder.record(table((1.0, 1.0)), answer(1))
        sink.down = True
        assert not await recorder.flush()
        recorder.record(table((2.0, 2.0)), answer(2))
        assert not await recorder.flush()
        assert recorder.buffered_rows == 2
        assert value(metrics, "mlship_inference_log_buffered_rows") == 2
        sink.down = False
        assert await recorder.flush()
        return metrics

    metrics = run(scenario())
    assert [r["prediction"] for r in sink.records()] == [1, 2]  # in order, each once
    assert value(metrics, "mlship_inference_log_flush_failures_total") == 2
    assert value(metrics, "mlship_inference_log_rows_total") == 2


def test_a_flush_failing_halfway_retries_only_what_was_not_written(sink: DirSink) -> None:
    async def scenario() -> None:
        recorder, _ = make(sink, clock=Clock(step=1.0))  # rows in two hours: two files
        for i in range(3):
            recorder.record(table((float(i), 0.0)), answer(i))
        sink.fail_after = 1
        assert not await recorder.flush()
        assert recorder.buffered_rows == 2
        sink.fail_after = None
        assert await recorder.flush()

    run(scenario())
    assert sorted(r["prediction"] for r in sink.records()) == [0, 1, 2]


def test_the_buffer_stays_bounded_during_an_outage(sink: DirSink) -> None:
    async def scenario() -> ServingMetrics:
        recorder, metrics = make(sink, max_rows=5)
        sink.down = True
        for i in range(8):
            recorder.record(table((float(i), 0.0)), answer(i))
            await recorder.flush()
        assert recorder.buffered_rows == 5
        sink.down = False
        await recorder.flush()
        return metrics

    metrics = run(scenario())
    assert [r["prediction"] for r in sink.records()] == [3, 4, 5, 6, 7]
    assert value(metrics, "mlship_inference_log_dropped_rows_total") == 3


def test_the_background_task_flushes_on_its_interval(sink: DirSink) -> None:
    """Each interval writes what came in, while the recorder runs: close() (which flushes too)
    comes only after both writes were seen, so only the interval flush can pass this."""

    async def written(count: int) -> None:
        while len(sink.written) < count:  # no deadline of its own: run()'s 20 s bounds it
            await asyncio.sleep(0.01)

    async def scenario() -> None:
        recorder, _ = make(sink, flush_s=0.05, clock=time.time)  # flush_rows: the default, far off
        recorder.start()
        recorder.record(table((1.0, 1.0)), answer(1))
        await written(1)
        assert recorder.buffered_rows == 0 and sink.finished == 0
        recorder.record(table((2.0, 2.0)), answer(2))
        await written(2)  # the next interval, again without a close
        await recorder.close(timeout=5)

    run(scenario())
    assert [r["prediction"] for r in sink.records()] == [1, 2] and sink.finished == 1


def test_enough_waiting_rows_flush_before_the_interval(sink: DirSink) -> None:
    async def scenario() -> float:
        recorder, _ = make(sink, flush_s=60, flush_rows=4, clock=time.time)
        recorder.start()
        started = time.monotonic()
        recorder.record(table((1.0, 1.0), (2.0, 2.0)), answer(1, 2))
        await asyncio.sleep(0.2)
        assert not sink.written
        recorder.record(table((3.0, 3.0), (4.0, 4.0)), answer(3, 4))
        while not sink.written:
            await asyncio.sleep(0.01)
        took = time.monotonic() - started
        await recorder.close(timeout=5)
        return took

    assert run(scenario()) < 5
    assert len(sink.records()) == 4


def test_close_writes_what_is_buffered_then_finishes_the_run(sink: DirSink) -> None:
    async def scenario() -> None:
        recorder, _ = make(sink)
        recorder.start()
        recorder.record(table((1.0, 1.0)), answer(1))
        await recorder.close(timeout=5)

    run(scenario())
    assert len(sink.records()) == 1 and sink.finished == 1


def test_close_waits_for_a_flush_under_way_and_writes_the_rest(sink: DirSink) -> None:
    async def scenario() -> None:
        recorder, _ = make(sink, flush_s=0.01, clock=time.time)
        sink.block = threading.Event()
        recorder.start()
        recorder.record(table((1.0, 1.0)), answer(1))
        await asyncio.sleep(0.1)  # the flush of row 1 is under way, blocked in the sink
        recorder.record(table((2.0, 2.0)), answer(2))
        closing = asyncio.create_task(recorder.close(timeout=5))
        await asyncio.sleep(0.05)
        sink.block.set()
        await closing

    run(scenario())
    assert sorted(r["prediction"] for r in sink.records()) == [1, 2]


def test_close_gives_up_after_its_timeout_when_mlflow_hangs(sink: DirSink) -> None:
    async def scenario() -> tuple[float, ServingMetrics]:
        recorder, metrics = make(sink)
        sink.block = threading.Event()  # never set: the write hangs, as on a dead connection
        recorder.start()
        recorder.record(table((1.0, 1.0), (2.0, 2.0)), answer(1, 2))
        started = time.monotonic()
        await recorder.close(timeout=0.3)
        return time.monotonic() - started, metrics

    took, metrics = run(scenario())
    assert took < 2
    assert value(metrics, "mlship_inference_log_dropped_rows_total") == 2
    assert sink.finished == 0


def test_close_with_mlflow_down_counts_the_rows_lost(sink: DirSink) -> None:
    async def scenario() -> ServingMetrics:
        recorder, metrics = make(sink)
        recorder.start()
        recorder.record(table((1.0, 1.0)), answer(1))
        sink.down = True
        await recorder.close(timeout=5)
        return metrics

    metrics = run(scenario())
    assert value(metrics, "mlship_inference_log_dropped_rows_total") == 1
    assert not sink.records()


def test_predictions_are_cut_per_row_whatever_their_shape() -> None:
    assert per_row([1, 2], 2) == [1, 2]
    assert per_row([{"p": 0.1}, {"p": 0.9}], 2) == [{"p": 0.1}, {"p": 0.9}]
    assert per_row({"label": [0, 1], "score": [0.2, 0.8]}, 2) == [
        {"label": 0, "score": 0.2},
        {"label": 1, "score": 0.8},
    ]
    assert per_row([[0.1, 0.9]], 1) == [[0.1, 0.9]]
    assert per_row(7, 1) == [7]
    assert per_row([1, 2, 3], 2) == [None, None]  # cannot be matched to rows


def test_a_rate_outside_0_1_is_refused(sink: DirSink) -> None:
    for rate in (0.0, 1.5):
        with pytest.raises(ValueError, match="sample_rate"):
            make(sink, sample_rate=rate)


# ------------------------------------------------------------------ boundaries (mutation testing)
LOGGER = "mlship.serving.recorder"


def messages(caplog: pytest.LogCaptureFixture) -> list[tuple[str, str]]:
    return [(r.levelname, r.getMessage()) for r in caplog.records if r.name == LOGGER]


def test_an_outage_is_logged_once_per_failed_flush_and_its_end_once(
    sink: DirSink, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level("INFO", logger=LOGGER)

    async def scenario() -> None:
        recorder, _ = make(sink)
        recorder.record(table((1.0, 1.0)), answer(1))
        assert await recorder.flush()  # all well: nothing to say
        recorder.record(table((2.0, 2.0)), answer(2))
        sink.down = True
        assert not await recorder.flush()
        sink.down = False
        assert await recorder.flush()
        recorder.record(table((3.0, 3.0)), answer(3))
        assert await recorder.flush()  # back to normal: said once only

    run(scenario())
    assert messages(caplog) == [
        ("WARNING", "inference log: could not write to MLflow (MLflow is down); 1 rows kept for the "
                    "next try in 60s"),
        ("INFO", "inference log: MLflow answers again; buffered rows written"),
    ]


def test_rows_recorded_during_a_failing_flush_are_kept_with_the_unwritten(sink: DirSink) -> None:
    async def scenario() -> ServingMetrics:
        recorder, metrics = make(sink)
        recorder.record(table((1.0, 1.0), (2.0, 2.0)), answer(1, 2))
        sink.block = threading.Event()
        sink.down = True
        flushing = asyncio.create_task(recorder.flush())
        await asyncio.sleep(0.05)  # the flush took the two rows and waits in the sink
        recorder.record(table((3.0, 3.0)), answer(3))
        sink.block.set()
        assert not await flushing
        assert recorder.buffered_rows == 3
        assert value(metrics, "mlship_inference_log_buffered_rows") == 3
        sink.block, sink.down = None, False
        assert await recorder.flush()
        return metrics

    run(scenario())
    assert [r["prediction"] for r in sink.records()] == [1, 2, 3]


def test_a_failed_flush_exactly_at_the_bound_drops_nothing(sink: DirSink) -> None:
    async def scenario() -> ServingMetrics:
        recorder, metrics = make(sink, max_rows=2)
        recorder.record(table((1.0, 1.0), (2.0, 2.0)), answer(1, 2))
        sink.down = True
        await recorder.flush()
        assert recorder.buffered_rows == 2
        return metrics

    assert value(run(scenario()), "mlship_inference_log_dropped_rows_total") == 0


def test_dropping_several_requests_at_once_counts_all_their_rows(sink: DirSink) -> None:
    async def scenario() -> ServingMetrics:
        recorder, metrics = make(sink, max_rows=3)
        for i in range(3):
            recorder.record(table((float(i), 0.0)), answer(i))
        recorder.record(table((5.0, 0.0), (6.0, 0.0)), answer(5, 6))  # 5 rows: the two oldest go
        assert recorder.buffered_rows == 3
        return metrics

    assert value(run(scenario()), "mlship_inference_log_dropped_rows_total") == 2


def test_one_file_per_hour_and_a_new_sequence_number_per_file(sink: DirSink) -> None:
    async def scenario() -> None:
        recorder, _ = make(sink, clock=Clock(start=T0 - 1000, step=10.0))  # all in hour 09
        for i in range(3):
            recorder.record(table((float(i), 0.0)), answer(i))
        assert await recorder.flush()
        recorder.record(table((9.0, 0.0)), answer(9))
        assert await recorder.flush()

    run(scenario())
    names = [name for _, name, _ in sink.written]
    assert [n.rsplit("-", 1)[1] for n in names] == ["1.jsonl", "2.jsonl"]
    assert len(sink.records()) == 4


def test_requests_that_cannot_be_encoded_are_dropped_not_retried(
    sink: DirSink, caplog: pytest.LogCaptureFixture
) -> None:
    async def scenario() -> ServingMetrics:
        recorder, metrics = make(sink)
        recorder.record(Table(([1.0], [2.0], [3.0]), 1), answer(0))  # 3 columns for 2 names
        assert await recorder.flush()
        assert recorder.buffered_rows == 0
        return metrics

    metrics = run(scenario())
    assert not sink.written
    assert value(metrics, "mlship_inference_log_dropped_rows_total") == 1
    assert ("ERROR", "inference log: could not encode 1 requests; dropped") in messages(caplog)


def test_close_without_start_writes_and_finishes(sink: DirSink) -> None:
    async def scenario() -> None:
        recorder, _ = make(sink)
        recorder.record(table((1.0, 1.0)), answer(1))
        await recorder.close(timeout=5)

    run(scenario())
    assert len(sink.records()) == 1 and sink.finished == 1


def test_a_run_that_cannot_be_finished_is_only_a_warning(
    sink: DirSink, caplog: pytest.LogCaptureFixture
) -> None:
    def broken_finish() -> None:
        raise ConnectionError("MLflow went away")

    sink.finish = broken_finish  # type: ignore[method-assign]

    async def scenario() -> ServingMetrics:
        recorder, metrics = make(sink)
        recorder.record(table((1.0, 1.0)), answer(1))
        await recorder.close(timeout=5)
        return metrics

    metrics = run(scenario())
    assert len(sink.records()) == 1
    assert value(metrics, "mlship_inference_log_dropped_rows_total") == 0
    assert messages(caplog) == [
        ("WARNING", "inference log: could not mark the run finished: MLflow went away")]


def test_what_close_loses_is_said(sink: DirSink, caplog: pytest.LogCaptureFixture) -> None:
    async def down() -> None:
        recorder, _ = make(sink)
        recorder.record(table((1.0, 1.0), (2.0, 2.0)), answer(1, 2))
        sink.down = True
        await recorder.close(timeout=5)
        assert recorder.buffered_rows == 0

    run(down())
    assert messages(caplog)[-1] == (
        "ERROR", "inference log: the last 2 rows could not be written; they are lost")
    caplog.clear()

    async def hangs() -> None:
        recorder, _ = make(sink)
        sink.block, sink.down = threading.Event(), False
        recorder.record(table((1.0, 1.0)), answer(1))
        await recorder.close(timeout=0.2)
        sink.block.set()

    run(hangs())
    assert messages(caplog) == [
        ("ERROR", "inference log: MLflow did not take the last 1 rows within 0.2s; they are lost")]


def test_writes_happen_in_a_named_daemon_thread_and_the_loop_task_is_named(sink: DirSink) -> None:
    seen: list[tuple[str, bool]] = []
    original = sink.write

    def write(*args) -> None:
        seen.append((threading.current_thread().name, threading.current_thread().daemon))
        original(*args)

    sink.write = write  # type: ignore[method-assign]

    async def scenario() -> list[str]:
        recorder, _ = make(sink)
        recorder.start()
        names = [t.get_name() for t in asyncio.all_tasks()]
        recorder.record(table((1.0, 1.0)), answer(1))
        await recorder.close(timeout=5)
        return names

    assert "inference-log" in run(scenario())
    assert seen == [("inference-log-flush", True)]  # never keeps a stopping process alive


# ----------------------------------------- MlflowSink against a real MLflow client (file store)


@pytest.fixture
def mlflow_dir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> str:
    monkeypatch.setenv("MLFLOW_ALLOW_FILE_STORE", "true")
    monkeypatch.setenv("HOSTNAME", "iris-7d-abcde")
    return (tmp_path / "mlruns").as_uri()


def test_the_mlflow_sink_writes_one_run_per_process_that_the_reader_finds(
    mlflow_dir: str, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level("INFO", logger=LOGGER)
    from mlflow import MlflowClient

    from mlship.serving.recorder import MlflowSink

    sink = MlflowSink(mlflow_dir, "inputs", "iris", "3")
    sink.finish()  # nothing written yet: no run to finish
    assert sink.run_id is None
    hour = fmt.hour_of(T0)
    first = fmt.encode_record(T0, {"a": 1.0, "b": 2.0}, 0)
    sink.write(fmt.artifact_dir(hour), fmt.file_name(T0, 1), first, T0)
    second = fmt.encode_record(T0 + 1, {"a": 3.0, "b": 4.0}, 1)
    sink.write(fmt.artifact_dir(hour), fmt.file_name(T0 + 1, 2), second, T0 + 1)
    run_id = sink.run_id
    assert [r.getMessage() for r in caplog.records if r.name == LOGGER] == [
        f"inference log: writing to run {run_id} in experiment 'inputs'"]
    sink.finish()
    client = MlflowClient(mlflow_dir)
    run_ = client.get_run(run_id)
    assert run_.info.status == "FINISHED" and run_.info.start_time == int(T0 * 1000)
    assert run_.info.run_name == "iris v3 iris-7d-abcde"
    assert {k: v for k, v in run_.data.tags.items() if k.startswith("mlship.")} == fmt.run_tags(
        "iris", "3", "iris-7d-abcde")
    frame = fmt.load_records(client, "iris", "3", since=datetime.fromtimestamp(T0 - 1, UTC),
                             until=datetime.fromtimestamp(T0 + 2, UTC), experiment="inputs")
    assert frame["a"].tolist() == [1.0, 3.0] and frame["prediction"].tolist() == [0, 1]
    # a second process (another pod) finds the experiment and makes its own run
    other = MlflowSink(mlflow_dir, "inputs", "iris", "3")
    other.write(fmt.artifact_dir(hour), fmt.file_name(T0, 1), first, T0)
    assert other.run_id != run_id
    assert client.get_run(other.run_id).info.experiment_id == run_.info.experiment_id


def test_named_outputs_must_each_be_a_list_of_one_value_per_row() -> None:
    assert per_row({"label": "ab"}, 2) == [None, None]  # a string of 2 characters is not 2 rows
