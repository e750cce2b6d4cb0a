"""The faults tier runs on the release the e2e tier installs (tests/conftest.py: `release`), with
the cluster tier's in-cluster client (tests/cluster/operator_harness.py)."""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "cluster"))
