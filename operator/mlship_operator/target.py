"""Which version should run, and whether to write the Deployment now: pure.

From the previous status (what was good, what failed), the registry's answer and the
observed rollout. A version that fails to roll out is replaced by the last good one and
remembered as failed, so it is not retried until the registry points elsewhere or the
spec changes.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from typing import Any

from .registry import Resolution
from .rollout import Observed, Phase
from .spec import ServingSpec, redact_uri


@dataclasses.dataclass(frozen=True)
class Target:
    version: str | None
    """The version that should run; None when there is nothing to deploy."""
    apply_version: str | None
    """Write the Deployment with this version now; None leaves it as it is."""
    phase: Phase | None
    """The rollout of `version`: Progressing when it is (re)applied now."""
    desired: str | None
    """The version the registry names (or last named, while it cannot answer)."""
    serving: str | None
    """The version that serves, as far as is known."""
    serving_before: str | None
    last_good: str | None
    failure: Mapping[str, Any] | None
    """status.lastFailure: a version that failed and is not retried."""
    rolled_back_from: str | None = None
    """Set on the tick that rolls a failed version back."""
    blocked: bool = False
    """The registry names a version that failed before: the last good one runs instead."""

    @property
    def complete(self) -> bool:
        return self.phase is Phase.COMPLETE


def choose_target(
    *,
    spec: ServingSpec,
    previous: Mapping[str, Any],
    resolution: Resolution,
    observed: Observed,
    config_hash: str,
    now: str,
) -> Target:
    gen = spec.generation
    # Version numbers only mean something for one model in one registry.
    same_source = (
        previous.get("model") == spec.model
        and previous.get("trackingUri") == redact_uri(spec.tracking_uri)
    )
    last_good = previous.get("lastGoodVersion") if same_source else None
    failure = previous.get("lastFailure") if same_source else None
    serving_before = previous.get("servingVersion") if same_source else None
    if failure and (
        _spec_changed_since(failure, gen, config_hash)
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
            if phase is Phase.PROGRESSING and target == serving_before and observed.ready_replicas:
                # Scaled (or its pods re-rolled): the version serves while the new pods start.
                phase = Phase.COMPLETE
            if phase is Phase.FAILED and last_good and target != last_good:
                failure = {
                    "version": target,
                    "reason": observed.reason,
                    "message": observed.message,
                    "generation": gen,
                    "configHash": config_hash,
                    "time": now,
                }
                rolled_back_from, target = target, last_good
                apply_version, phase = last_good, Phase.PROGRESSING

    complete = phase is Phase.COMPLETE
    if resolution.ok:
        desired = resolution.version
    else:
        desired = previous.get("desiredVersion") if same_source else None
    return Target(
        version=target,
        apply_version=apply_version,
        phase=phase,
        desired=desired,
        serving=target if complete else (serving_before if observed.exists else None),
        serving_before=serving_before,
        last_good=target if complete else last_good,
        failure=failure,
        rolled_back_from=rolled_back_from,
        blocked=blocked,
    )


def _spec_changed_since(failure: Mapping[str, Any], generation: int, config_hash: str) -> bool:
    """Whether the spec changed since `failure`: its Deployment's config hash, which leaves the
    replicas out (an autoscaler scaling must not let a failed version be retried). A failure
    recorded before the hash was (an older operator) falls back to the generation."""
    if "configHash" in failure:
        return bool(failure["configHash"] != config_hash)
    return failure.get("generation") != generation
