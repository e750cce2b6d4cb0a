"""The heartbeat file the record consumer touches and its liveness probe reads."""

from __future__ import annotations

import os
import time
from pathlib import Path

import pytest
from test_events_record import Clock, FakeConsumer, FlakySink, Msg, pred

from mlship.events import alive, record, schema

pytestmark = pytest.mark.unit


def test_beats_at_most_every_few_seconds(tmp_path: Path) -> None:
    path = tmp_path / "alive"
    beat = alive.Heartbeat(str(path), every_s=5)
    beat.beat(now=100.0)
    assert path.exists()
    os.utime(path, (0, 0))
    beat.beat(now=104.9)  # too soon: not touched
    assert path.stat().st_mtime == 0
    beat.beat(now=105.0)
    assert path.stat().st_mtime > 0


def test_no_file_no_heartbeat(tmp_path: Path) -> None:
    beat = alive.Heartbeat("")
    beat.beat()
    assert beat.path is None


def test_beats_on_the_monotonic_clock_by_default(tmp_path: Path) -> None:
    path = tmp_path / "alive"
    alive.Heartbeat(str(path)).beat()
    assert path.exists() and alive.age(str(path)) is not None
    assert 0 <= (alive.age(str(path)) or 0) < 1
    assert alive.age(str(tmp_path / "missing")) is None


def test_the_limit_itself_still_passes(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setattr(alive, "age", lambda path: 60.0)
    assert alive.main([str(tmp_path / "alive"), "60"]) == 0
    monkeypatch.setattr(alive, "age", lambda path: 60.5)
    assert alive.main([str(tmp_path / "alive"), "60"]) == 1


def test_the_probe_passes_only_on_a_recent_touch(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = tmp_path / "alive"
    assert alive.main([str(path), "60"]) == 1
    assert capsys.readouterr().err == f"{path} last touched never (limit 60s)\n"
    path.touch()
    assert alive.main([str(path), "60"]) == 0
    old = time.time() - 61
    os.utime(path, (old, old))
    assert alive.main([str(path), "60"]) == 1
    assert capsys.readouterr().err == f"{path} last touched 61s ago (limit 60s)\n"
    assert alive.main([str(path)]) == 2
    assert capsys.readouterr().err == "usage: python -m mlship.events.alive FILE MAX_AGE_SECONDS\n"


def test_the_recorder_beats_while_it_consumes(tmp_path: Path) -> None:
    path = tmp_path / "alive"
    settings = record.Settings("k", "m", alive_file=str(path))
    consumer = FakeConsumer([Msg(schema.PREDICTIONS_TOPIC, 0, 0, pred("r0"))])
    rec = record.Recorder(settings, consumer, FlakySink(failures=0), clock=Clock())
    rec.take(consumer.consume(100, 0))
    assert path.exists()


def test_the_alive_file_is_a_setting(tmp_path: Path) -> None:
    env = {"MLSHIP_KAFKA_BOOTSTRAP_SERVERS": "k:9092", "MLFLOW_TRACKING_URI": "http://m:5000",
           "MLSHIP_RECORD_ALIVE_FILE": "/tmp/record.alive"}  # fmt: skip
    assert record.load_settings([], env).alive_file == "/tmp/record.alive"
