"""The canary step machine: one test per transition (pure, no cluster)."""

from __future__ import annotations

import bisect

import pytest
from mlship_operator import canary
from mlship_operator.rollout import Observed, Phase
from mlship_operator.spec import CANARY, SHADOW, Analysis, Rollout, Steering, Step

from mlship.traffic import BOUNDS_MS, N_BUCKETS, Counts, Report
from mlship.traffic import CANARY as CANARY_MODE
from mlship.traffic import SHADOW as SHADOW_MODE

T0 = "2026-01-01T00:00:00Z"
T_LATER = "2026-01-01T00:00:30Z"  # 30 s on
STEPS = (Step(10, 30, 100), Step(50, 30, 100))
ROLLOUT = Rollout(CANARY, STEPS, Analysis())
SHADOW_STEP = Step(100, 30, 100, SHADOW_MODE)
SHADOW_ROLLOUT = Rollout(SHADOW, (SHADOW_STEP,), Analysis())
READY = Observed(exists=True, version="2", phase=Phase.COMPLETE, ready_replicas=1, replicas=1)
STARTING_UP = Observed(exists=True, version="2", phase=Phase.PROGRESSING, message="0 of 1 ready")


def counts(requests: int, *, errors: int = 0, agreed: int | None = None, ms: float = 2.0) -> Counts:
    latency = [0] * N_BUCKETS
    latency[bisect.bisect_left(BOUNDS_MS, ms)] = requests
    agreed = requests if agreed is None else agreed
    return Counts(requests, errors, requests, agreed, tuple(latency))


def report(rollout: str, cand: Counts, stable: Counts | None = None) -> Report:
    return Report(rollout, 0.1, "canary", stable or counts(1000), cand)


def plan(state: canary.State | None, *, want: str | None = "2", stable: str | None = "1",
         promoted: bool = False, candidate: Observed = READY, routable: bool = True,
         rep: Report | None = None, now: str = T0, rollout: Rollout = ROLLOUT,
         steering: Steering = canary.NO_STEERING) -> canary.Plan:
    return canary.plan(rollout, state, want=want, stable=stable, promoted=promoted,
                       candidate=candidate, routable=routable, report=rep, now=now,
                       steering=steering)


ANALYSING = canary.State("2", canary.ANALYSING, 0, T0)


def reasons(p: canary.Plan) -> list[str]:
    return [e.reason for e in p.events]


@pytest.mark.parametrize("kwargs", [
    {"rollout": Rollout()},  # Replace
    {"stable": None},  # nothing known good serves: the version rolls out as with Replace
    {"want": "1"},  # the registry names what serves
    {"want": None},
])
def test_no_canary_without_a_new_version_next_to_a_stable_one(kwargs):
    p = plan(None, **kwargs)
    assert p.state is None and p.candidate is None and not p.holds_back and p.events == ()


def test_a_new_version_starts_as_the_canary_with_no_traffic():
    p = plan(None, candidate=Observed())
    assert p.state == canary.State("2", canary.STARTING, 0, T0)
    assert (p.candidate, p.weight, p.holds_back, p.promote) == ("2", 0, True, False)
    assert reasons(p) == ["CanaryStarted"]


def test_the_canary_waits_until_its_pod_is_ready():
    p = plan(canary.State("2", canary.STARTING, 0, T0), candidate=STARTING_UP)
    assert p.state.phase == canary.STARTING and p.weight == 0 and "0 of 1 ready" in p.message


def test_the_canary_waits_until_its_service_has_a_ready_endpoint():
    p = plan(canary.State("2", canary.STARTING, 0, T0), candidate=READY, routable=False)
    assert p.state.phase == canary.STARTING and p.weight == 0
    assert "its Service has no ready endpoint yet" in p.message


def test_a_ready_canary_gets_the_first_steps_share():
    p = plan(canary.State("2", canary.STARTING, 0, T0), candidate=READY, now=T_LATER)
    assert p.state == canary.State("2", canary.ANALYSING, 0, T_LATER)
    assert p.weight == 10 and reasons(p) == ["CanaryStep"]


@pytest.mark.parametrize("phase", [canary.STARTING, canary.ANALYSING])
def test_a_canary_that_cannot_become_ready_is_aborted(phase):
    failed = Observed(exists=True, version="2", phase=Phase.FAILED, reason="CrashLoopBackOff",
                      message="pod x restarted 2 times")
    p = plan(canary.State("2", phase, 0, T0), candidate=failed)
    assert p.state is None and p.candidate is None and p.weight == 0
    assert p.failure["version"] == "2" and p.failure["reason"] == "CrashLoopBackOff"
    assert reasons(p) == ["CanaryAborted"]


def test_a_step_is_not_judged_before_its_minimum_of_requests():
    bad = counts(99, agreed=0)
    p = plan(ANALYSING, rep=report("Canary/2/0", bad), now=T_LATER)
    assert p.state == ANALYSING and p.failure is None and p.weight == 10
    assert "99 of the 100 requests" in p.message and p.figures["requests"] == 99


def test_low_agreement_aborts_with_the_figures():
    p = plan(ANALYSING, rep=report("Canary/2/0", counts(200, agreed=20)))
    assert p.state is None and p.failure["reason"] == canary.ANALYSIS_FAILED
    assert "agreement with the stable version 10.00% (20 of 200 rows) is below 95.00%" in (
        p.failure["message"])
    assert p.figures["agreement"] == 0.1


def test_errors_abort():
    p = plan(ANALYSING, rep=report("Canary/2/0", counts(200, errors=10)))
    assert "error rate 5.00% (10 of 200)" in p.failure["message"]


def test_a_slow_canary_aborts_on_its_p99():
    p = plan(ANALYSING, rep=report("Canary/2/0", counts(200, ms=100.0), counts(1000, ms=2.0)))
    assert "p99 latency 100 ms is above 13 ms" in p.failure["message"]
    ok = plan(ANALYSING, rep=report("Canary/2/0", counts(200, ms=10.0), counts(1000, ms=2.0)))
    assert ok.failure is None  # within 1.5 × 2 ms + 10 ms


def test_a_passing_step_is_held_for_its_duration():
    p = plan(ANALYSING, rep=report("Canary/2/0", counts(200)), now="2026-01-01T00:00:29Z")
    assert p.state == ANALYSING and p.events == ()


def test_a_passing_step_that_was_held_long_enough_moves_on():
    p = plan(ANALYSING, rep=report("Canary/2/0", counts(200)), now=T_LATER)
    assert p.state == canary.State("2", canary.ANALYSING, 1, T_LATER)
    assert p.weight == 50 and reasons(p) == ["CanaryStep"]


def test_figures_of_another_step_do_not_count():
    p = plan(canary.State("2", canary.ANALYSING, 1, T0), rep=report("Canary/2/0", counts(500)),
             now=T_LATER)
    assert p.state.step == 1 and p.figures == {} and "0 of the 100" in p.message


def test_passing_the_last_step_promotes():
    last = canary.State("2", canary.ANALYSING, 1, T0)
    p = plan(last, rep=report("Canary/2/1", counts(200)), now=T_LATER)
    assert p.promote and p.state.phase == canary.PROMOTING and not p.holds_back
    assert p.candidate is None  # the stable Deployment takes the version over
    assert p.weight == 0 and reasons(p) == ["CanaryPromoting"]


def test_promotion_ends_when_the_stable_deployment_runs_the_version():
    promoting = canary.State("2", canary.PROMOTING, 1, T0)
    waiting = plan(promoting, stable=None, promoted=False)
    assert waiting.state == promoting and waiting.weight == 0 and not waiting.promote
    done = plan(promoting, stable=None, promoted=True)
    assert done.state is None and reasons(done) == ["CanaryPromoted"]


def test_the_alias_moving_on_starts_over_with_the_new_version():
    p = plan(ANALYSING, want="3", rep=report("Canary/2/0", counts(200)))
    assert p.state == canary.State("3", canary.STARTING, 0, T0)
    assert reasons(p) == ["CanaryCancelled", "CanaryStarted"]


def test_the_alias_moving_back_ends_the_canary():
    p = plan(ANALYSING, want="1")
    assert p.state is None and p.failure is None and reasons(p) == ["CanaryCancelled"]


def test_leaving_the_canary_strategy_ends_the_canary():
    p = plan(ANALYSING, rollout=Rollout())
    assert p.state is None and reasons(p) == ["CanaryCancelled"]
    assert "stopped: the strategy is Replace now" in p.events[0].message


def test_switching_between_staged_strategies_starts_over():
    p = plan(ANALYSING, rollout=SHADOW_ROLLOUT, rep=report("Canary/2/0", counts(200)))
    # the candidate's pods are ready already: the first step starts at once, with none of the
    # canary's figures (the stable pods count under another rollout id)
    assert p.state == canary.State("2", canary.ANALYSING, 0, T0, SHADOW)
    assert p.state.rollout_id == "Shadow/2/0" and p.figures == {}
    assert reasons(p) == ["CanaryCancelled", "ShadowStarted", "ShadowStep"]
    assert "canary of version 2 stopped: the strategy is Shadow now" in p.events[0].message


def test_a_shadow_rollout_copies_requests_then_promotes():
    start = plan(None, candidate=Observed(), rollout=SHADOW_ROLLOUT)
    assert start.state == canary.State("2", canary.STARTING, 0, T0, SHADOW)
    assert reasons(start) == ["ShadowStarted"] and start.weight == 0
    first = plan(start.state, rollout=SHADOW_ROLLOUT, now=T_LATER)
    assert (first.weight, first.mode, reasons(first)) == (100, SHADOW_MODE, ["ShadowStep"])
    assert "a copy of 100% of requests (clients get the stable version's answers)" in first.message
    assert first.status()["mode"] == "Shadow" and first.status()["strategy"] == SHADOW
    done = plan(first.state, rollout=SHADOW_ROLLOUT, rep=report("Shadow/2/0", counts(200)),
                now="2026-01-01T00:01:00Z")
    assert done.promote and done.state.phase == canary.PROMOTING
    assert reasons(done) == ["ShadowPromoting"] and "passed 1 shadow step(s)" in done.message


def test_a_slow_shadow_aborts_on_its_p99():
    shadowing = canary.State("2", canary.ANALYSING, 0, T0, SHADOW)
    p = plan(shadowing, rollout=SHADOW_ROLLOUT,
             rep=report("Shadow/2/0", counts(200, ms=500.0), counts(1000, ms=2.0)))
    assert p.state is None and p.failure["reason"] == canary.ANALYSIS_FAILED
    assert p.failure["message"].startswith("shadow of version 2 aborted at step 1: p99 latency")
    assert reasons(p) == ["ShadowAborted"]


def test_a_shadow_step_hands_over_to_the_canary_steps():
    rollout = Rollout(CANARY, (SHADOW_STEP, *STEPS), Analysis())
    shadowing = canary.State("2", canary.ANALYSING, 0, T0)
    p = plan(shadowing, rollout=rollout, rep=report("Canary/2/0", counts(200)), now=T_LATER)
    assert p.state == canary.State("2", canary.ANALYSING, 1, T_LATER)
    assert (p.weight, p.mode, reasons(p)) == (10, CANARY_MODE, ["CanaryStep"])
    assert "step 2 of 3, 10% of requests" in p.message


def test_steps_removed_mid_rollout_leave_it_at_the_last_one():
    third = canary.State("2", canary.ANALYSING, 2, T0)
    p = plan(third, rep=report("Canary/2/1", counts(200)), now="2026-01-01T00:00:10Z")
    assert p.state == canary.State("2", canary.ANALYSING, 1, T0) and p.weight == 50


def test_the_state_survives_a_round_trip_through_the_status():
    p = plan(ANALYSING, rep=report("Canary/2/0", counts(50)))
    status = p.status()
    assert status["weight"] == 10 and status["candidate"] == "2" and status["requests"] == 50
    assert canary.state_from_status({"rollout": status}) == ANALYSING
    assert canary.state_from_status({}) is None
    assert canary.state_from_status({"rollout": {"candidate": "2", "phase": "Bogus"}}) is None


# --- a person's hand (annotations) ---------------------------------------------------------------

def test_a_paused_rollout_holds_a_step_that_passed():
    p = plan(ANALYSING, rep=report("Canary/2/0", counts(200)), now=T_LATER,
             steering=Steering(paused=True))
    assert p.state == ANALYSING and p.weight == 10 and p.events == ()
    assert "paused (annotation mlship.io/paused): the step is held" in p.message
    resumed = plan(ANALYSING, rep=report("Canary/2/0", counts(200)), now=T_LATER)
    assert resumed.state.step == 1


def test_a_paused_rollout_still_aborts_on_its_figures():
    p = plan(ANALYSING, rep=report("Canary/2/0", counts(200, agreed=20)),
             steering=Steering(paused=True))
    assert p.state is None and p.failure["reason"] == canary.ANALYSIS_FAILED


@pytest.mark.parametrize("state", [ANALYSING, canary.State("2", canary.STARTING, 0, T0)])
def test_promote_by_hand_skips_the_remaining_steps(state):
    p = plan(state, candidate=STARTING_UP, rep=report("Canary/2/0", counts(5, agreed=0)),
             steering=Steering(promote="2"))
    assert p.promote and p.state.phase == canary.PROMOTING and p.failure is None
    assert reasons(p) == ["CanaryPromoting"] and "promoted by hand" in p.message


def test_abort_by_hand_aborts_and_wins_over_promote():
    p = plan(ANALYSING, rep=report("Canary/2/0", counts(200)),
             steering=Steering(promote="2", abort="2"))
    assert p.state is None and p.failure["reason"] == canary.ABORT_REQUESTED
    assert p.failure["message"] == (
        "canary of version 2 aborted at step 1: asked for (annotation mlship.io/abort)")
    assert reasons(p) == ["CanaryAborted"]


def test_steering_that_names_another_version_changes_nothing():
    steer = Steering(promote="1", abort="3")
    p = plan(ANALYSING, rep=report("Canary/2/0", counts(200)), now=T_LATER, steering=steer)
    assert p.state == canary.State("2", canary.ANALYSING, 1, T_LATER) and p.failure is None


def test_a_rollout_already_promoting_cannot_be_aborted():
    promoting = canary.State("2", canary.PROMOTING, 1, T0)
    p = plan(promoting, stable=None, steering=Steering(abort="2"))
    assert p.state == promoting and p.failure is None
