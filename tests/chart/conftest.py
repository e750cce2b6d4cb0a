"""Chart render tests: `helm template` only, no cluster (see chart_helpers)."""

from __future__ import annotations

import pytest
from chart_helpers import helm_missing_reason
from testkit import require_or_skip


@pytest.fixture(scope="session")
def helm_on_path() -> None:
    reason = helm_missing_reason()
    if reason:
        require_or_skip(reason, "chart")
