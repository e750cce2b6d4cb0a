"""Status conditions in the metav1.Condition shape, as pure functions over plain lists."""

from __future__ import annotations

import copy
import dataclasses
import datetime as dt
import re
from collections.abc import Iterable, Mapping
from typing import Any

READY = "Ready"  # the desired version serves
AVAILABLE = "Available"  # some version serves and answers (maybe not the desired one)
PROGRESSING = "Progressing"
DEGRADED = "Degraded"

# Reasons the operator writes (the registry's are in registry.py, the rollout's in rollout.py).
SERVING = "Serving"
ROLLOUT_IN_PROGRESS = "RolloutInProgress"
ROLLING_OUT = "RollingOut"
ROLLING_BACK = "RollingBack"
ROLLOUT_COMPLETE = "RolloutComplete"
ROLLOUT_FAILED = "RolloutFailed"
ROLLED_BACK = "RolledBack"
NAME_CONFLICT = "NameConflict"
AS_EXPECTED = "AsExpected"
NOT_DESIRED_VERSION = "NotDesiredVersion"
NOTHING_SERVING = "NothingServing"
NO_READY_REPLICAS = "NoReadyReplicas"
APPLY_FAILED = "ApplyFailed"
INVALID_SPEC = "InvalidSpec"

MAX_MESSAGE = 32768
_REASON = re.compile(r"^[A-Za-z]([A-Za-z0-9_,:]*[A-Za-z0-9_])?$")


def now_rfc3339(clock: dt.datetime | None = None) -> str:
    moment = clock or dt.datetime.now(dt.UTC)
    return moment.astimezone(dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def _status_word(status: bool | str) -> str:
    if isinstance(status, bool):
        return "True" if status else "False"
    if status not in ("True", "False", "Unknown"):
        raise ValueError(f"condition status must be True, False or Unknown, not {status!r}")
    return status


def get_condition(conditions: Iterable[Mapping[str, Any]] | None, type_: str) -> dict[str, Any] | None:
    for condition in conditions or ():
        if condition.get("type") == type_:
            return dict(condition)
    return None


@dataclasses.dataclass(frozen=True)
class Report:
    """What one condition says: its status, a CamelCase reason and a message."""

    status: bool
    reason: str
    message: str


def set_condition(
    conditions: Iterable[Mapping[str, Any]] | None,
    *,
    type_: str,
    status: bool | str,
    reason: str,
    message: str,
    generation: int,
    now: str,
) -> list[dict[str, Any]]:
    """Return a new list with `type_` set; lastTransitionTime moves only when status changes."""
    if not _REASON.match(reason):
        raise ValueError(f"condition reason {reason!r} is not CamelCase ([A-Za-z][A-Za-z0-9_,:]*)")
    word = _status_word(status)
    result = [copy.deepcopy(dict(c)) for c in conditions or ()]
    new = {
        "type": type_,
        "status": word,
        "observedGeneration": generation,
        "lastTransitionTime": now,
        "reason": reason,
        "message": message[:MAX_MESSAGE],
    }
    for index, old in enumerate(result):
        if old.get("type") == type_:
            if old.get("status") == word and old.get("lastTransitionTime"):
                new["lastTransitionTime"] = old["lastTransitionTime"]
            result[index] = new
            return result
    result.append(new)
    return result


def set_conditions(
    conditions: Iterable[Mapping[str, Any]] | None,
    reports: Mapping[str, Report],
    *,
    generation: int,
    now: str,
) -> list[dict[str, Any]]:
    """`set_condition` for each type in `reports`, in its order."""
    result = [dict(c) for c in conditions or ()]
    for type_, report in reports.items():
        result = set_condition(
            result, type_=type_, status=report.status, reason=report.reason,
            message=report.message, generation=generation, now=now,
        )
    return result
