"""Shared fixtures: real servers, started as local processes, never mocks."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from testkit import MLSHIP, clean_env, free_port, wait_http


@pytest.fixture(scope="session")
def mlflow_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """A real `mlflow server` (SQLite backend, proxied artifacts); yields its tracking URI."""
    root: Path = tmp_path_factory.mktemp("mlflow")
    port = free_port()
    log = open(root / "server.log", "wb")  # noqa: SIM115 - closed below
    proc = subprocess.Popen(
        [
            sys.executable, "-m", "mlflow", "server",
            "--host", "127.0.0.1", "--port", str(port),
            "--backend-store-uri", f"sqlite:///{root / 'mlflow.db'}",
            "--artifacts-destination", str(root / "artifacts"),
            "--workers", "1",
        ],
        stdout=log, stderr=subprocess.STDOUT,
        env={**os.environ, "MLFLOW_SERVER_ENABLE_JOB_EXECUTION": "false"},
    )
    uri = f"http://127.0.0.1:{port}"
    try:
        wait_http(f"{uri}/health", timeout=120, proc=proc)
        yield uri
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            proc.kill()
        log.close()


@pytest.fixture(scope="session")
def run_mlship() -> Callable[..., subprocess.CompletedProcess[str]]:
    """Runs the `mlship` console script as a user would (the integration and images tiers)."""
    def run(*args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [str(MLSHIP), *args], cwd=cwd, capture_output=True, text=True, env=clean_env(),
            timeout=600, check=False,
        )

    return run


@pytest.fixture(scope="session")
def release() -> Iterator[Any]:
    """The chart installed once per session, shared by the e2e and faults tiers (e2e/release.py)."""
    from e2e.release import installed

    with installed("e2e") as rel:  # the faults tier needs e2e's prerequisites
        yield rel
