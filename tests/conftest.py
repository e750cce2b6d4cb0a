"""Shared fixtures: real servers, started as local processes, never mocks."""

from __future__ import annotations

import subprocess
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from devkit import MlflowServer
from testkit import MLSHIP, clean_env


@pytest.fixture(scope="session")
def mlflow_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """A real `mlflow server` (SQLite backend, proxied artifacts); yields its tracking URI."""
    with MlflowServer(tmp_path_factory.mktemp("mlflow"), timeout=120) as server:
        yield server.uri


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
