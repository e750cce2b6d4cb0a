"""The Kubernetes Events a decision is worth: pure. Each says something changed, never that
nothing did, so a steady state posts none."""

from __future__ import annotations

import dataclasses
from collections.abc import Iterable, Mapping
from typing import Any

from . import conditions as c
from .conditions import Report
from .rollout import Observed
from .spec import ServingSpec
from .target import Target


@dataclasses.dataclass(frozen=True)
class EventSpec:
    type: str  # Normal | Warning
    reason: str
    message: str


def rollout_events(
    spec: ServingSpec, observed: Observed, target: Target, degraded: Report
) -> list[EventSpec]:
    """A rollback (with Degraded's message), a rollout started, a rollout complete."""
    model = f"'{spec.model}'"
    events: list[EventSpec] = []
    if target.rolled_back_from:
        events.append(EventSpec("Warning", c.ROLLED_BACK, degraded.message))
    elif target.apply_version is not None and target.apply_version != observed.version:
        msg = f"rolling out version {target.apply_version} of {model}"
        if observed.exists and observed.version:
            msg += f" (replacing version {observed.version})"
        events.append(EventSpec("Normal", "RolloutStarted", msg))
    if target.complete and target.serving_before != target.version:
        msg = f"version {target.version} of {model} is serving"
        events.append(EventSpec("Normal", c.ROLLOUT_COMPLETE, msg))
    return events


def degraded_events(
    previous: Iterable[Mapping[str, Any]] | None,
    new: Iterable[Mapping[str, Any]] | None,
    skip_reason: str | None = None,
) -> list[EventSpec]:
    """A Warning when Degraded turns True or changes reason (unless the reason is
    `skip_reason`, already told by another event); a Normal when it clears."""
    old = c.get_condition(previous, c.DEGRADED) or {}
    cur = c.get_condition(new, c.DEGRADED) or {}
    if cur.get("status") == "True":
        changed = old.get("status") != "True" or old.get("reason") != cur.get("reason")
        if changed and cur.get("reason") != skip_reason:
            return [EventSpec("Warning", cur["reason"], cur["message"])]
    elif old.get("status") == "True":
        return [EventSpec("Normal", "Recovered", f"no longer degraded ({old.get('reason')})")]
    return []
