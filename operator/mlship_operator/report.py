"""What the four conditions say about a chosen target: pure."""

from __future__ import annotations

from . import conditions as c
from .conditions import Report
from .registry import Resolution
from .rollout import Observed, Phase
from .spec import ServingSpec
from .target import Target

_NOTHING_SERVING = Report(False, c.NOTHING_SERVING, "no version of the model is serving")


def _retry_hint(spec: ServingSpec) -> str:
    if spec.pinned_version:
        return "it is not retried until the spec changes"
    return f"it is not retried until alias '{spec.alias}' moves or the spec changes"


def conflict_reports(message: str) -> dict[str, Report]:
    """Another owner's object has the name: nothing is touched, and every condition says why."""
    return {
        c.READY: Report(False, c.NAME_CONFLICT, message),
        c.AVAILABLE: Report(False, c.NAME_CONFLICT, message),
        c.PROGRESSING: Report(False, c.NAME_CONFLICT, message),
        c.DEGRADED: Report(True, c.NAME_CONFLICT, message),
    }


def apply_failed_reports(message: str) -> dict[str, Report]:
    """The API server refused the Deployment: Available still says what serves."""
    return {
        c.READY: Report(False, c.APPLY_FAILED, message),
        c.PROGRESSING: Report(False, c.APPLY_FAILED, message),
        c.DEGRADED: Report(True, c.APPLY_FAILED, message),
    }


def invalid_spec_reports(message: str, *, first: bool) -> dict[str, Report]:
    """The operator will not act on the spec: nothing is touched, so Available still says what
    serves, or, on a CR never acted on (`first`), that nothing does."""
    return {
        c.READY: Report(False, c.INVALID_SPEC, message),
        **({c.AVAILABLE: _NOTHING_SERVING} if first else {}),
        c.PROGRESSING: Report(False, c.INVALID_SPEC, message),
        c.DEGRADED: Report(True, c.INVALID_SPEC, message),
    }


def condition_reports(
    spec: ServingSpec, resolution: Resolution, observed: Observed, target: Target
) -> dict[str, Report]:
    """Ready, Available, Progressing and Degraded, in that order."""
    ready, progressing = _ready_and_progressing(spec, resolution, observed, target)
    return {
        c.READY: ready,
        c.AVAILABLE: _available(spec, observed, target),
        c.PROGRESSING: progressing,
        c.DEGRADED: _degraded(spec, resolution, observed, target),
    }


def _ready_and_progressing(
    spec: ServingSpec, resolution: Resolution, observed: Observed, target: Target
) -> tuple[Report, Report]:
    """Ready: the desired version serves. Progressing: a rollout or rollback is under way."""
    version, desired, failure = target.version, target.desired, target.failure
    model = f"'{spec.model}'"
    if version is None:
        why = f"nothing to deploy: {resolution.message}"
        return Report(False, resolution.reason, why), Report(False, resolution.reason, why)
    if target.rolled_back_from:
        msg = (
            f"version {target.rolled_back_from} failed ({observed.reason});"
            f" rolling back to {version}"
        )
        return Report(False, c.ROLLING_BACK, msg), Report(True, c.ROLLING_BACK, msg)
    if target.complete:
        replicas = f"({observed.ready_replicas}/{spec.replicas} replicas ready)"
        if desired is None or desired == version:
            ready = Report(True, c.SERVING, f"version {version} of {model} is serving {replicas}")
        elif failure and failure.get("version") == desired:
            ready = Report(
                False, c.ROLLED_BACK,
                f"desired version {desired} of {model} failed ({failure.get('reason')});"
                f" version {version} serves instead {replicas}",
            )
        else:
            ready = Report(
                False, c.NOT_DESIRED_VERSION,
                f"version {version} of {model} serves, not the desired version {desired}"
                f" {replicas}",
            )
        return ready, Report(False, c.ROLLOUT_COMPLETE, f"version {version} is rolled out")
    if target.phase is Phase.FAILED:
        return (
            Report(False, observed.reason, observed.message),
            Report(False, c.ROLLOUT_FAILED, observed.message),
        )
    msg = f"rolling out version {version} of {model}"
    if target.serving and target.serving != version:
        msg += f"; version {target.serving} serves meanwhile"
    if target.apply_version is None and observed.message:
        msg += f" ({observed.message})"
    return Report(False, c.ROLLOUT_IN_PROGRESS, msg), Report(True, c.ROLLING_OUT, msg)


def _available(spec: ServingSpec, observed: Observed, target: Target) -> Report:
    """Something answers, whether or not it is the desired version."""
    serving = target.serving
    if serving and observed.ready_replicas > 0:
        return Report(
            True, c.SERVING,
            f"version {serving} of '{spec.model}' answers"
            f" ({observed.ready_replicas}/{spec.replicas} replicas ready)",
        )
    if serving:
        return Report(False, c.NO_READY_REPLICAS, f"no replica of version {serving} is ready")
    return _NOTHING_SERVING


def _degraded(
    spec: ServingSpec, resolution: Resolution, observed: Observed, target: Target
) -> Report:
    """Something needs attention; the most urgent first."""
    if target.rolled_back_from:
        return Report(
            True, c.ROLLED_BACK,
            f"version {target.rolled_back_from} could not become ready ({observed.reason}:"
            f" {observed.message}); rolled back to version {target.version}; {_retry_hint(spec)}",
        )
    if target.phase is Phase.FAILED:
        alternative = "no other version is known to be good, so there is nothing to roll back to"
        return Report(
            True, c.ROLLOUT_FAILED,
            f"version {target.version} cannot become ready ({observed.reason}:"
            f" {observed.message}); {alternative}",
        )
    if not resolution.ok:
        still = f"still serving version {target.serving}" if target.serving else "nothing is serving"
        return Report(True, resolution.reason, f"{resolution.message}; {still}")
    if target.blocked and target.failure:
        failure = target.failure
        return Report(
            True, c.ROLLED_BACK,
            f"version {failure['version']} failed ({failure.get('reason')}:"
            f" {failure.get('message')}); serving version {target.version} instead;"
            f" {_retry_hint(spec)}",
        )
    return Report(False, c.AS_EXPECTED, "no problem detected")
