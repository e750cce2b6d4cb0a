"""When to ask the registry next: the spec's interval, or an exponential backoff on errors."""

from __future__ import annotations

import dataclasses
from collections.abc import Hashable

from .registry import Resolution


@dataclasses.dataclass(frozen=True)
class PollState:
    key: Hashable = None
    """What the last answer was for (tracking URI, model, alias, version)."""
    resolution: Resolution | None = None
    next_at: float = 0.0
    failures: int = 0


def is_due(state: PollState | None, key: Hashable, now: float) -> bool:
    """Ask now if we never asked, the question changed, or the scheduled time came."""
    return state is None or state.resolution is None or state.key != key or now >= state.next_at


def backoff_delay(interval: float, failures: int, max_backoff: float) -> float:
    """interval, 2×, 4×, … capped at max_backoff (but never below the interval)."""
    if failures <= 0:
        return interval
    return max(interval, min(max_backoff, interval * 2.0 ** (failures - 1)))


def after_poll(
    state: PollState | None,
    key: Hashable,
    resolution: Resolution,
    *,
    now: float,
    interval: float,
    max_backoff: float,
) -> PollState:
    """The state after an answer; a failed answer's message says when the next try is."""
    previous = state.failures if state is not None and state.key == key else 0
    failures = 0 if resolution.ok else previous + 1
    delay = backoff_delay(interval, failures, max_backoff)
    if not resolution.ok:
        resolution = dataclasses.replace(
            resolution,
            message=f"{resolution.message}; retrying in {delay:g}s (attempt {failures})",
        )
    return PollState(key=key, resolution=resolution, next_at=now + delay, failures=failures)
