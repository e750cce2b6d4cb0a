"""The reconciliation decision: pure function from what is known to what to do and report.

Inputs: the CR's spec and previous status, the registry's answer, the observed rollout.
Output: which version to write into the Deployment (if any), the complete new status,
and the Kubernetes Events worth emitting. No I/O here; the parts are `target` (which
version), `report` (the conditions) and `events`.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from typing import Any

from mlship.traffic import Report

from . import canary
from . import conditions as c
from .builders import selector_string
from .events import EventSpec, degraded_events, rollout_events
from .registry import Resolution
from .report import condition_reports, conflict_reports, invalid_spec_reports
from .rollout import Observed
from .spec import ServingSpec, redact_uri
from .target import choose_target


@dataclasses.dataclass(frozen=True)
class Decision:
    apply_version: str | None
    """Write the Deployment with this version now; None leaves it as it is."""
    status: dict[str, Any]
    events: tuple[EventSpec, ...] = ()
    candidate: str | None = None
    """The version the canary Deployment runs; None: there must be none."""
    route: tuple[str, str, int, str] | None = None
    """(rollout id, candidate version, percent, mlship.traffic mode) the stable pods send or copy
    to the candidate; None: none."""


def _compact(status: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in status.items() if v is not None}


def decide(
    *,
    spec: ServingSpec,
    status: Mapping[str, Any] | None,
    resolution: Resolution,
    observed: Observed,
    config_hash: str,
    url: str,
    now: str,
    conflict: str | None = None,
    candidate: Observed | None = None,
    routable: bool = False,
    report: Report | None = None,
) -> Decision:
    """`candidate` is the canary's Deployment as observed, `routable` whether its Service has a
    ready endpoint, `report` the stable pods' traffic figures of the current canary step."""
    prev = dict(status or {})

    def new_status(reports: Mapping[str, c.Report], **fields: Any) -> dict[str, Any]:
        conds = c.set_conditions(
            prev.get("conditions") or [], reports, generation=spec.generation, now=now
        )
        return _compact({
            **{k: v for k, v in prev.items() if k != "conditions"},
            "conditions": conds,
            "observedGeneration": spec.generation,
            "model": spec.model,
            "trackingUri": redact_uri(spec.tracking_uri),
            "alias": spec.alias,
            **fields,
        })

    if conflict:
        new = new_status(conflict_reports(conflict))
        return Decision(None, new, tuple(degraded_events(prev.get("conditions"), new["conditions"])))

    target = choose_target(
        spec=spec, previous=prev, resolution=resolution, observed=observed,
        config_hash=config_hash, now=now,
    )
    state = canary.state_from_status(prev)
    serving = target.serving_before
    stable = serving if (
        observed.exists and observed.owned and observed.version == serving
        and observed.config_hash == config_hash and observed.ready_replicas > 0
    ) else None
    plan = canary.plan(
        spec.rollout, state,
        want=None if target.rolled_back_from else target.version,
        stable=stable,
        promoted=bool(state and target.complete and target.version == state.candidate),
        candidate=candidate or Observed(), routable=routable, report=report, now=now,
        steering=spec.steering,
    )
    if plan.holds_back or plan.failure:
        failure = plan.failure and {
            **plan.failure, "generation": spec.generation, "configHash": config_hash, "time": now}
        target = dataclasses.replace(
            target, version=stable, apply_version=None, phase=observed.phase, serving=stable,
            last_good=stable, failure=failure or target.failure, blocked=bool(failure),
        )
    reports = condition_reports(spec, resolution, observed, target)
    if plan.holds_back:
        assert plan.state is not None  # noqa: S101 - holds_back says so
        reason = plan.state.strategy + canary.IN_PROGRESS
        reports = {
            **reports,
            c.READY: c.Report(False, reason, plan.message),
            c.PROGRESSING: c.Report(True, reason, plan.message),
        }
    new = new_status(
        reports,
        desiredVersion=target.desired,
        servingVersion=target.serving,
        lastGoodVersion=target.last_good,
        lastFailure=target.failure,
        readyReplicas=observed.ready_replicas,
        # the scale subresource's: `kubectl scale` and a HorizontalPodAutoscaler read them
        replicas=observed.replicas,
        selector=selector_string(spec.name),
        url=url if (target.version is not None or observed.exists) else None,
        rollout=plan.status(),
    )
    skip = c.ROLLED_BACK if target.rolled_back_from or plan.failure else None
    events = (
        *plan.events,
        *rollout_events(spec, observed, target, reports[c.DEGRADED]),
        *degraded_events(prev.get("conditions"), new["conditions"], skip),
    )
    route = None
    if plan.state and plan.weight:
        route = (plan.state.rollout_id, plan.state.candidate, plan.weight, plan.mode)
    return Decision(target.apply_version, new, events, candidate=plan.candidate, route=route)


def refuse(
    *, status: Mapping[str, Any] | None, message: str, generation: int, now: str
) -> Decision:
    """The spec is one the operator will not act on: only the conditions change. The rest of the
    status still describes what runs, from the last spec acted on."""
    prev = dict(status or {})
    first = c.get_condition(prev.get("conditions"), c.AVAILABLE) is None
    conds = c.set_conditions(
        prev.get("conditions") or [], invalid_spec_reports(message, first=first),
        generation=generation, now=now,
    )
    new = {**prev, "conditions": conds, "observedGeneration": generation}
    return Decision(None, new, tuple(degraded_events(prev.get("conditions"), conds)))


def status_patch(old: Mapping[str, Any] | None, new: Mapping[str, Any]) -> dict[str, Any]:
    """A JSON merge patch turning `old` into `new` at the top level ({} when equal)."""
    old = old or {}
    patch: dict[str, Any] = {k: v for k, v in new.items() if old.get(k) != v}
    patch.update({k: None for k in old if k not in new})
    return patch
