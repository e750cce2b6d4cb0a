"""Fixtures for the pipeline's integration tests: step CLIs and `mlship run` as processes."""

from __future__ import annotations

import json
import re
import subprocess
import sys
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from kafkakit import KafkaBroker, kafka_libs
from testkit import clean_env, require_or_skip


class Steps:
    """Runs `python -m mlship.steps.<step>` the way a pod does, result in the XCom file."""

    def __init__(self, uri: str, workdir: Path) -> None:
        self.uri = uri
        self.workdir = workdir

    def run(
        self, step: str, *flags: str, key: str, uri: str | None = None, expect_ok: bool = True,
        code: int = 1, env: dict[str, str] | None = None,
    ) -> tuple[dict[str, Any] | None, str]:
        """Run a step; when not `expect_ok`, it must exit with `code` (65: bad input)."""
        xcom = self.workdir / f"{key}-{step}-{uuid.uuid4().hex[:6]}.json"
        proc = subprocess.run(
            [sys.executable, "-m", f"mlship.steps.{step}", "--tracking-uri", uri or self.uri,
             "--pipeline-run-key", key, "--xcom-path", str(xcom), *flags],
            capture_output=True, text=True, env=clean_env(**(env or {})), timeout=300, check=False,
        )
        result = json.loads(xcom.read_text()) if xcom.exists() else None
        if expect_ok:
            assert proc.returncode == 0, proc.stderr[-3000:]
            assert result is not None
        else:
            assert proc.returncode == code, proc.stderr[-3000:]
            assert result is None  # a failed step leaves nothing for the next one to pull
        return result, proc.stderr


@pytest.fixture(scope="session")
def steps(mlflow_server: str, tmp_path_factory: pytest.TempPathFactory) -> Steps:
    return Steps(mlflow_server, tmp_path_factory.mktemp("steps"))


@pytest.fixture(scope="session")
def iris_pipeline(
    mlflow_server: str, run_mlship, tmp_path_factory: pytest.TempPathFactory
) -> dict[str, Any]:
    """A first `mlship run --dataset sklearn:iris` against the real MLflow server, plus each
    step's result as the runner recorded it."""
    home = tmp_path_factory.mktemp("iris-pipeline")
    model = f"iris-{uuid.uuid4().hex[:8]}"
    args = ("run", "--dataset", "sklearn:iris", "--model-name", model,
            "--tracking-uri", mlflow_server, "--threshold", "0.8")
    proc = run_mlship(*args, cwd=home)
    assert proc.returncode == 0, proc.stdout + proc.stderr[-3000:]
    key = re.search(r"^pipeline run (\S+) ->", proc.stdout, re.MULTILINE).group(1)
    logdir = home / ".mlship" / "runs" / key
    results = {p.stem: json.loads(p.read_text()) for p in logdir.glob("*.json")}
    return {"proc": proc, "args": args, "home": home, "key": key, "model": model, **results}


@pytest.fixture
def mlflow_here(mlflow_server: str, monkeypatch: pytest.MonkeyPatch) -> Iterator[str]:
    """MLflow calls made in this process go to the session's server: the environment, as a pod
    has it, and the global URI, which another test's mlflow.set_tracking_uri would otherwise
    leave pointing elsewhere (it wins over the environment). Both are unset after."""
    import mlflow

    monkeypatch.setenv("MLFLOW_TRACKING_URI", mlflow_server)
    mlflow.set_tracking_uri(mlflow_server)
    try:
        yield mlflow_server
    finally:
        mlflow.set_tracking_uri(None)


@pytest.fixture(scope="session")
def child_env() -> Callable[..., dict[str, str]]:
    """The environment for a child Python process (see clean_env)."""
    return clean_env


@pytest.fixture(scope="session")
def kafka(tmp_path_factory: pytest.TempPathFactory) -> Iterator[KafkaBroker]:
    """A real Kafka broker (tests/kafkakit.py), shared by the session; a test may stop and
    restart it (same port, same data) but must leave it running."""
    libs = kafka_libs()
    if libs is None:
        require_or_skip("no Java or Kafka jars here (hack/setup test installs them)", "integration")
    with KafkaBroker.start(tmp_path_factory.mktemp("kafka"), libs) as broker:
        yield broker
