"""The faults tier runs on the release the e2e tier installs (tests/conftest.py: `release`), with
the cluster tier's in-cluster client (tests/cluster/operator_harness.py). Each fault's figures are
printed again at the end of the run, green or not."""

from __future__ import annotations

import json
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "cluster"))

_FIGURES = pytest.StashKey[list[dict[str, Any]]]()


@pytest.fixture
def report(request: pytest.FixtureRequest) -> Callable[..., None]:
    """report(fault, **figures): keep one fault's figures for the run's summary."""
    figures = request.config.stash.setdefault(_FIGURES, [])

    def add(fault: str, **values: Any) -> None:
        line = {"fault": fault, **values}
        figures.append(line)
        print(f"\nmlship fault: {json.dumps(line)}")

    return add


def pytest_terminal_summary(terminalreporter: Any, config: pytest.Config) -> None:
    figures = config.stash.get(_FIGURES, [])
    if figures:
        terminalreporter.section("mlship fault figures")
        for line in figures:
            terminalreporter.write_line(json.dumps(line))
