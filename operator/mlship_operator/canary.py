"""A staged rollout (strategy Shadow or Canary) as a pure step machine: from where it stands
(status.rollout), the candidate's Deployment and the traffic figures the stable pods report, to
what to do next.

Starting: the candidate runs in its own Deployment, taking no traffic, until it is ready.
Analysing: step after step of spec.rollout.steps, the stable pods send each step's share of
requests to it (a canary step: those clients get its answers) or a copy of them (a shadow step:
clients get the stable version's answers); a step is judged once the candidate answered the
step's minimum of requests, and left once its duration passed too. A failed analysis aborts at
once; a pod that cannot become ready aborts as a rollout does today.
Promoting: the routing stops and the candidate's Deployment goes, while the stable Deployment
rolls to the candidate's version as any rollout does (its new pods gated on a real prediction).

A person steers it with annotations (spec.Steering): paused holds the current step, promote
skips to Promoting, abort aborts; the last two name the candidate version they mean.

Events and the Ready/Progressing reason are named for the strategy: CanaryStep or ShadowStep,
CanaryInProgress or ShadowInProgress.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
from collections.abc import Mapping
from typing import Any

from mlship.traffic import SHADOW as SHADOW_MODE
from mlship.traffic import Report

from .events import EventSpec
from .resource import ANNOTATION_ABORT, ANNOTATION_PAUSED, ANNOTATION_PROMOTE
from .rollout import Observed, Phase
from .spec import CANARY, Analysis, Rollout, Steering

STARTING, ANALYSING, PROMOTING = "Starting", "Analysing", "Promoting"
ANALYSIS_FAILED = "AnalysisFailed"
ABORT_REQUESTED = "AbortRequested"
NO_STEERING = Steering()
# Event reasons and the conditions' reason, after the strategy: CanaryStarted, ShadowStarted...
STARTED, STEP, PROMOTING_EVENT, PROMOTED = "Started", "Step", "Promoting", "Promoted"
CANCELLED, ABORTED, IN_PROGRESS = "Cancelled", "Aborted", "InProgress"


@dataclasses.dataclass(frozen=True)
class State:
    """Where a canary stands; kept in status.rollout, so a restarted operator resumes it."""

    candidate: str
    phase: str
    step: int = 0
    step_started: str = ""
    """RFC 3339: when the current step's share was first sent."""
    strategy: str = CANARY
    """spec.rollout.strategy when the rollout started: a change cancels it."""

    @property
    def rollout_id(self) -> str:
        """The id the stable pods count the current step's figures under (a switch of strategy
        restarts at step 0, and must not inherit the other strategy's figures)."""
        return f"{self.strategy}/{self.candidate}/{self.step}"


def state_from_status(status: Mapping[str, Any] | None) -> State | None:
    rollout = (status or {}).get("rollout") or {}
    if not rollout.get("candidate") or rollout.get("phase") not in (STARTING, ANALYSING, PROMOTING):
        return None
    return State(
        candidate=str(rollout["candidate"]), phase=rollout["phase"],
        step=int(rollout.get("step") or 0), step_started=str(rollout.get("stepStartedAt") or ""),
        strategy=str(rollout.get("strategy") or CANARY),
    )


@dataclasses.dataclass(frozen=True)
class Plan:
    state: State | None
    """None: no canary under way (the candidate Deployment must not exist)."""
    weight: int = 0
    """Percent of requests the stable pods send (or copy) to the candidate now."""
    mode: str = ""
    """How they do: mlship.traffic's CANARY or SHADOW; empty with no weight."""
    promote: bool = False
    """Roll the stable Deployment to the candidate's version on this tick."""
    failure: Mapping[str, Any] | None = None
    """Set on the tick that aborts: the candidate's status.lastFailure."""
    message: str = ""
    figures: Mapping[str, Any] = dataclasses.field(default_factory=dict)
    events: tuple[EventSpec, ...] = ()

    @property
    def candidate(self) -> str | None:
        """The version the candidate Deployment runs; None: it must not exist."""
        return self.state.candidate if self.state and self.state.phase != PROMOTING else None

    @property
    def holds_back(self) -> bool:
        """The stable Deployment keeps its version on this tick (the canary decides when not)."""
        return self.state is not None and self.state.phase in (STARTING, ANALYSING)

    def status(self) -> dict[str, Any] | None:
        """status.rollout."""
        if self.state is None:
            return None
        status = {
            "strategy": self.state.strategy,
            "candidate": self.state.candidate,
            "phase": self.state.phase,
            "step": self.state.step,
            "mode": self.mode.capitalize() or None,
            "weight": self.weight,
            "stepStartedAt": self.state.step_started or None,
            **self.figures,
            "message": self.message or None,
        }
        return {k: v for k, v in status.items() if v is not None}


def _seconds_between(start: str, end: str) -> float:
    parse = dt.datetime.fromisoformat
    try:
        return (parse(end) - parse(start)).total_seconds()
    except ValueError:
        return 0.0  # an unreadable start (edited by hand): the step's time starts again


def figures(report: Report | None) -> dict[str, Any]:
    """The candidate's figures for status.rollout (rounded for people)."""
    if report is None:
        return {}
    cand, stable = report.candidate, report.stable
    out: dict[str, Any] = {"requests": cand.requests, "errors": cand.errors}
    if cand.agreement is not None:
        out["agreement"] = round(cand.agreement, 4)
    for key, counts in (("candidateP99Ms", cand), ("stableP99Ms", stable)):
        p99 = counts.quantile_ms(0.99)
        if p99 is not None and p99 != float("inf"):
            out[key] = round(p99, 3)
    return out


def judge(analysis: Analysis, report: Report) -> list[str]:
    """What fails in the candidate's figures so far (empty: nothing does)."""
    cand, stable = report.candidate, report.stable
    failures = []
    rate = cand.error_rate
    if rate is not None and rate > analysis.max_error_rate:
        failures.append(
            f"error rate {rate:.2%} ({cand.errors} of {cand.requests}) is above"
            f" {analysis.max_error_rate:.2%}"
        )
    agreement = cand.agreement
    if agreement is not None and agreement < analysis.min_agreement:
        failures.append(
            f"agreement with the stable version {agreement:.2%} ({cand.agreed} of {cand.compared}"
            f" rows) is below {analysis.min_agreement:.2%}"
        )
    cand_p99, stable_p99 = cand.quantile_ms(0.99), stable.quantile_ms(0.99)
    if cand_p99 is not None and stable_p99 is not None:
        limit = stable_p99 * analysis.max_latency_ratio + analysis.latency_slack_ms
        if cand_p99 > limit:
            failures.append(
                f"p99 latency {cand_p99:g} ms is above {limit:g} ms ({analysis.max_latency_ratio:g}"
                f" × the stable version's {stable_p99:g} ms + {analysis.latency_slack_ms:g} ms)"
            )
    return failures


def plan(
    rollout: Rollout,
    state: State | None,
    *,
    want: str | None,
    stable: str | None,
    promoted: bool,
    candidate: Observed,
    routable: bool,
    report: Report | None,
    now: str,
    steering: Steering = NO_STEERING,
) -> Plan:
    """The next move.

    want: the version the registry (or the pin) names, when it differs from what serves.
    stable: the version that serves and is known good; None when there is none to compare with
    (then nothing is staged: the version rolls out as with Replace).
    promoted: the stable Deployment runs `state.candidate`, rolled out.
    routable: the canary's Service has a ready endpoint: its pod being ready is not enough, the
    stable pods reach it through the Service.
    report: the stable pods' figures summed for the current step (None: not read yet).
    steering: what a person asked for (only promote and abort naming the candidate count).
    """
    events: list[EventSpec] = []
    if state is not None and (state.strategy != rollout.strategy or want != state.candidate):
        if state.phase == PROMOTING and promoted:
            pass  # finished below, not cancelled
        else:
            why = (f"the strategy is {rollout.strategy} now" if state.strategy != rollout.strategy
                   else f"the registry now names version {want}" if want
                   else "no version is wanted")
            events.append(_event(state.strategy, CANCELLED,
                                 f"{_noun(state)} of version {state.candidate} stopped: {why}"))
            state = None
    if state is None:
        if not rollout.staged or want is None or stable is None or want == stable:
            return Plan(None, events=tuple(events))
        state = State(want, STARTING, 0, now, rollout.strategy)
        events.append(_event(state.strategy, STARTED,
                             f"{_noun(state)} of version {want} started next to version {stable}"))

    steps = rollout.steps
    # the steps may have been edited since the rollout started: there may be fewer now
    state = dataclasses.replace(state, step=min(state.step, max(len(steps) - 1, 0)))
    if state.phase == PROMOTING:
        if promoted:
            message = f"version {state.candidate} passed every {_noun(state)} step and serves"
            return Plan(None, events=(*events, _event(state.strategy, PROMOTED, message)))
        return Plan(state, message=f"promoting version {state.candidate}",
                    figures=figures(report), events=tuple(events))

    if steering.abort == state.candidate:
        return _abort(state, ABORT_REQUESTED, f"asked for (annotation {ANNOTATION_ABORT})",
                      report, events)
    if steering.promote == state.candidate:
        message = (f"version {state.candidate} promoted by hand at {_where(state)} (annotation"
                   f" {ANNOTATION_PROMOTE}): promoting it")
        events.append(_event(state.strategy, PROMOTING_EVENT, message))
        return Plan(dataclasses.replace(state, phase=PROMOTING), promote=True, message=message,
                    figures=figures(report), events=tuple(events))
    if candidate.phase is Phase.FAILED:
        return _abort(state, candidate.reason, candidate.message, report, events)

    if state.phase == STARTING:
        ready = candidate.exists and candidate.version == state.candidate and (
            candidate.phase is Phase.COMPLETE)
        if not (ready and routable):
            detail = candidate.message if not ready else "its Service has no ready endpoint yet"
            message = f"starting version {state.candidate} as the candidate"
            return Plan(state, 0, message=f"{message} ({detail})" if detail else message,
                        events=tuple(events))
        state = dataclasses.replace(state, phase=ANALYSING, step=0, step_started=now)
        events.append(_step_event(state, rollout))
        report = None  # figures of an earlier try are not this step's

    step = steps[state.step]
    if report is not None and report.rollout != state.rollout_id:
        report = None
    requests = report.candidate.requests if report else 0
    if report is not None and requests >= step.min_requests:
        failures = judge(rollout.analysis, report)
        if failures:
            return _abort(state, ANALYSIS_FAILED, "; ".join(failures), report, events)
        if _seconds_between(state.step_started, now) >= step.seconds and not steering.paused:
            if state.step + 1 < len(steps):
                state = dataclasses.replace(state, step=state.step + 1, step_started=now)
                events.append(_step_event(state, rollout))
                nxt = steps[state.step]
                return Plan(state, nxt.weight, nxt.mode, message=_step_message(state, rollout),
                            events=tuple(events))
            promoting = dataclasses.replace(state, phase=PROMOTING)
            message = (f"version {state.candidate} passed {len(steps)} {_noun(state)} step(s):"
                       " promoting it")
            events.append(_event(state.strategy, PROMOTING_EVENT, message))
            return Plan(promoting, promote=True, message=message, figures=figures(report),
                        events=tuple(events))
    message = _step_message(state, rollout)
    if requests < step.min_requests:
        message += f"; {requests} of the {step.min_requests} requests to judge it"
    if steering.paused:
        message += f"; paused (annotation {ANNOTATION_PAUSED}): the step is held"
    return Plan(state, step.weight, step.mode, message=message, figures=figures(report),
                events=tuple(events))


def _where(state: State) -> str:
    return f"step {state.step + 1}" if state.phase == ANALYSING else "start"


def _noun(state: State) -> str:
    return state.strategy.lower()


def _event(strategy: str, what: str, message: str, kind: str = "Normal") -> EventSpec:
    return EventSpec(kind, strategy + what, message)


def _step_message(state: State, rollout: Rollout) -> str:
    step = rollout.steps[state.step]
    where = f"{_noun(state)} of version {state.candidate}: step {state.step + 1} of {len(rollout.steps)}"
    if step.mode == SHADOW_MODE:
        return (f"{where}, a copy of {step.weight}% of requests (clients get the stable version's"
                f" answers) for at least {step.seconds}s")
    return f"{where}, {step.weight}% of requests for at least {step.seconds}s"


def _step_event(state: State, rollout: Rollout) -> EventSpec:
    return _event(state.strategy, STEP, _step_message(state, rollout))


def _abort(
    state: State, reason: str, detail: str, report: Report | None, events: list[EventSpec]
) -> Plan:
    message = f"{_noun(state)} of version {state.candidate} aborted at {_where(state)}: {detail}"
    failure = {"version": state.candidate, "reason": reason, "message": message}
    return Plan(None, 0, failure=failure, message=message, figures=figures(report),
                events=(*events, _event(state.strategy, ABORTED, message, "Warning")))
