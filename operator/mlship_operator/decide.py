"""The reconciliation decision: pure function from what is known to what to do and report.

Inputs: the CR's spec and previous status, the registry's answer, the observed rollout.
Output: which version to write into the Deployment (if any), the complete new status,
and the Kubernetes Events worth emitting. No I/O here.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from typing import Any
from urllib.parse import urlsplit, urlunsplit

from . import conditions as c
from .registry import Resolution
from .rollout import Observed, Phase
from .spec import ServingSpec

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


@dataclasses.dataclass(frozen=True)
class EventSpec:
    type: str  # Normal | Warning
    reason: str
    message: str


@dataclasses.dataclass(frozen=True)
class Decision:
    apply_version: str | None
    """Write the Deployment with this version now; None leaves it as it is."""
    status: dict[str, Any]
    events: tuple[EventSpec, ...] = ()


def redact_uri(uri: str) -> str:
    """Drop user:password@ from a URI before it goes into the status."""
    parts = urlsplit(uri)
    if "@" not in parts.netloc:
        return uri
    return urlunsplit(parts._replace(netloc=parts.netloc.rsplit("@", 1)[1]))


def _retry_hint(spec: ServingSpec) -> str:
    if spec.pinned_version:
        return "it is not retried until the spec changes"
    return f"it is not retried until alias '{spec.alias}' moves or the spec changes"


def _with_conditions(
    status: dict[str, Any],
    *,
    generation: int,
    now: str,
    ready: tuple[bool, str, str],
    available: tuple[bool, str, str],
    progressing: tuple[bool, str, str],
    degraded: tuple[bool, str, str],
) -> dict[str, Any]:
    reports = {
        c.READY: c.Report(*ready), c.AVAILABLE: c.Report(*available),
        c.PROGRESSING: c.Report(*progressing), c.DEGRADED: c.Report(*degraded),
    }
    conds = c.set_conditions(status.get("conditions"), reports, generation=generation, now=now)
    return {**status, "conditions": conds}


def _degraded_events(
    previous: Mapping[str, Any], new: Mapping[str, Any], skip_reason: str | None
) -> list[EventSpec]:
    """A Warning when Degraded turns True or changes reason; a Normal when it clears."""
    old = c.get_condition(previous.get("conditions"), c.DEGRADED) or {}
    cur = c.get_condition(new.get("conditions"), c.DEGRADED) or {}
    if cur.get("status") == "True":
        changed = old.get("status") != "True" or old.get("reason") != cur.get("reason")
        if changed and cur.get("reason") != skip_reason:
            return [EventSpec("Warning", cur["reason"], cur["message"])]
    elif old.get("status") == "True":
        return [EventSpec("Normal", "Recovered", f"no longer degraded ({old.get('reason')})")]
    return []


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
) -> Decision:
    prev = dict(status or {})
    gen = spec.generation
    uri = redact_uri(spec.tracking_uri)
    base = {
        **{k: v for k, v in prev.items() if k != "conditions"},
        "conditions": prev.get("conditions") or [],
        "observedGeneration": gen,
        "model": spec.model,
        "trackingUri": uri,
        "alias": spec.alias,
    }

    if conflict:
        new = _with_conditions(
            base, generation=gen, now=now,
            ready=(False, NAME_CONFLICT, conflict),
            available=(False, NAME_CONFLICT, conflict),
            progressing=(False, NAME_CONFLICT, conflict),
            degraded=(True, NAME_CONFLICT, conflict),
        )
        return Decision(None, _compact(new), tuple(_degraded_events(prev, new, None)))

    # Version numbers only mean something for one model in one registry.
    same_source = prev.get("model") == spec.model and prev.get("trackingUri") == uri
    last_good = prev.get("lastGoodVersion") if same_source else None
    failure = prev.get("lastFailure") if same_source else None
    serving_before = prev.get("servingVersion") if same_source else None
    if failure and (
        failure.get("generation") != gen
        or (resolution.ok and resolution.version != failure.get("version"))
    ):
        failure = None  # the alias moved or the spec changed: the bad version may be retried
    blocked = resolution.ok and failure is not None and failure.get("version") == resolution.version

    if resolution.ok and not blocked:
        target = resolution.version
    elif blocked:
        target = last_good
    elif observed.exists:
        # Registry trouble: keep what runs (spec edits still apply to that version).
        target = observed.version if same_source else None
    else:
        target = last_good  # the Deployment vanished: bring back the last good version

    apply_version: str | None = None
    rolled_back_from: str | None = None
    phase: Phase | None = None
    if target is not None:
        in_sync = (
            observed.exists and observed.version == target and observed.config_hash == config_hash
        )
        if not in_sync:
            apply_version, phase = target, Phase.PROGRESSING
        else:
            phase = observed.phase
            if phase is Phase.FAILED and last_good and target != last_good:
                failure = {
                    "version": target,
                    "reason": observed.reason,
                    "message": observed.message,
                    "generation": gen,
                    "time": now,
                }
                rolled_back_from, target = target, last_good
                apply_version, phase = last_good, Phase.PROGRESSING

    complete = phase is Phase.COMPLETE
    serving = target if complete else (serving_before if observed.exists else None)
    if complete:
        last_good = target
    if resolution.ok:
        desired = resolution.version
    else:
        desired = prev.get("desiredVersion") if same_source else None
    model = f"'{spec.model}'"

    # Ready / Progressing
    if target is None:
        why = f"nothing to deploy: {resolution.message}"
        ready = (False, resolution.reason, why)
        progressing = (False, resolution.reason, why)
    elif rolled_back_from:
        msg = f"version {rolled_back_from} failed ({observed.reason}); rolling back to {target}"
        ready = (False, ROLLING_BACK, msg)
        progressing = (True, ROLLING_BACK, msg)
    elif complete:
        replicas = f"({observed.ready_replicas}/{spec.replicas} replicas ready)"
        if desired is None or desired == target:
            ready = (True, SERVING, f"version {target} of {model} is serving {replicas}")
        elif failure and failure.get("version") == desired:
            ready = (
                False, ROLLED_BACK,
                f"desired version {desired} of {model} failed ({failure.get('reason')});"
                f" version {target} serves instead {replicas}",
            )
        else:
            ready = (
                False, NOT_DESIRED_VERSION,
                f"version {target} of {model} serves, not the desired version {desired} {replicas}",
            )
        progressing = (False, ROLLOUT_COMPLETE, f"version {target} is rolled out")
    elif phase is Phase.FAILED:
        ready = (False, observed.reason, observed.message)
        progressing = (False, ROLLOUT_FAILED, observed.message)
    else:
        msg = f"rolling out version {target} of {model}"
        if serving and serving != target:
            msg += f"; version {serving} serves meanwhile"
        if apply_version is None and observed.message:
            msg += f" ({observed.message})"
        ready = (False, ROLLOUT_IN_PROGRESS, msg)
        progressing = (True, ROLLING_OUT, msg)

    # Available: something answers, whether or not it is the desired version
    if serving and observed.ready_replicas > 0:
        available = (
            True, SERVING,
            f"version {serving} of {model} answers"
            f" ({observed.ready_replicas}/{spec.replicas} replicas ready)",
        )
    elif serving:
        available = (False, NO_READY_REPLICAS, f"no replica of version {serving} is ready")
    else:
        available = (False, NOTHING_SERVING, "no version of the model is serving")

    # Degraded, most urgent first
    if rolled_back_from:
        degraded = (
            True, ROLLED_BACK,
            f"version {rolled_back_from} could not become ready ({observed.reason}:"
            f" {observed.message}); rolled back to version {target}; {_retry_hint(spec)}",
        )
    elif phase is Phase.FAILED:
        alternative = "no other version is known to be good, so there is nothing to roll back to"
        degraded = (
            True, ROLLOUT_FAILED,
            f"version {target} cannot become ready ({observed.reason}: {observed.message});"
            f" {alternative}",
        )
    elif not resolution.ok:
        still = f"still serving version {serving}" if serving else "nothing is serving"
        degraded = (True, resolution.reason, f"{resolution.message}; {still}")
    elif blocked and failure:
        degraded = (
            True, ROLLED_BACK,
            f"version {failure['version']} failed ({failure.get('reason')}:"
            f" {failure.get('message')}); serving version {target} instead; {_retry_hint(spec)}",
        )
    else:
        degraded = (False, AS_EXPECTED, "no problem detected")

    new = _with_conditions(
        {
            **base,
            "desiredVersion": desired,
            "servingVersion": serving,
            "lastGoodVersion": last_good,
            "lastFailure": failure,
            "readyReplicas": observed.ready_replicas,
            "url": url if (target is not None or observed.exists) else None,
        },
        generation=gen, now=now, ready=ready, available=available, progressing=progressing,
        degraded=degraded,
    )

    events: list[EventSpec] = []
    if rolled_back_from:
        events.append(EventSpec("Warning", ROLLED_BACK, degraded[2]))
    elif apply_version is not None and apply_version != observed.version:
        msg = f"rolling out version {apply_version} of {model}"
        if observed.exists and observed.version:
            msg += f" (replacing version {observed.version})"
        events.append(EventSpec("Normal", "RolloutStarted", msg))
    if complete and serving_before != target:
        msg = f"version {target} of {model} is serving"
        events.append(EventSpec("Normal", ROLLOUT_COMPLETE, msg))
    events.extend(_degraded_events(prev, new, ROLLED_BACK if rolled_back_from else None))
    return Decision(apply_version, _compact(new), tuple(events))


def status_patch(old: Mapping[str, Any] | None, new: Mapping[str, Any]) -> dict[str, Any]:
    """A JSON merge patch turning `old` into `new` at the top level ({} when equal)."""
    old = old or {}
    patch: dict[str, Any] = {k: v for k, v in new.items() if old.get(k) != v}
    patch.update({k: None for k in old if k not in new})
    return patch
