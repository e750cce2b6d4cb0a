"""The reconciliation decision with spec.rollout Canary, tick by tick: the stable Deployment keeps
its version while the canary is judged, takes the new one when it passes, and keeps the old one,
Degraded with the figures, when it fails."""

from __future__ import annotations

import bisect
import dataclasses

import pytest
from _operator_fixtures import CONFIG, make_cr
from mlship_operator import builders
from mlship_operator import conditions as c
from mlship_operator.decide import decide
from mlship_operator.registry import Resolution
from mlship_operator.rollout import Observed, Phase
from mlship_operator.spec import serving_spec

from mlship.traffic import BOUNDS_MS, N_BUCKETS, Counts, Report

pytestmark = pytest.mark.unit

CR = make_cr({"model": "iris", "rollout": {"strategy": "Canary", "steps": [
    {"weight": 10, "durationSeconds": 30, "minRequests": 100}]}})
SPEC = serving_spec(CR, CONFIG)
HASH = builders.deployment_template(SPEC, CONFIG).config_hash
T0, T1, T2 = "2026-01-01T00:00:00Z", "2026-01-01T00:00:10Z", "2026-01-01T00:01:00Z"


def ok(version: str) -> Resolution:
    return Resolution(version, "Resolved", f"alias 'champion' of 'iris' is version {version}")


def dep(version: str, phase: Phase = Phase.COMPLETE) -> Observed:
    return Observed(exists=True, version=version, config_hash=HASH, phase=phase,
                    ready_replicas=1, replicas=1, desired_replicas=1)


def run(status, version, stable, *, candidate=None, report=None, now=T0, routable=True):
    return decide(spec=SPEC, status=status, resolution=ok(version), observed=stable,
                  config_hash=HASH, url="http://iris", now=now, candidate=candidate,
                  routable=routable, report=report)


def counts(requests: int, agreed: int) -> Counts:
    latency = [0] * N_BUCKETS
    latency[bisect.bisect_left(BOUNDS_MS, 2.0)] = requests
    return Counts(requests, 0, requests, agreed, tuple(latency))


def cond(status: dict, type_: str) -> tuple[str, str]:
    found = c.get_condition(status["conditions"], type_)
    assert found is not None
    return found["status"], found["reason"]


def serving_v1() -> dict:
    first = run(None, "1", Observed())
    assert first.apply_version == "1" and first.candidate is None  # nothing to compare with
    return run(first.status, "1", dep("1")).status


def test_a_passing_canary_is_promoted() -> None:
    start = run(serving_v1(), "2", dep("1"))
    assert (start.apply_version, start.candidate, start.route) == (None, "2", None)
    assert cond(start.status, "Ready") == ("False", "CanaryInProgress")
    assert cond(start.status, "Available") == ("True", c.SERVING)
    assert start.status["servingVersion"] == "1" and start.status["rollout"]["phase"] == "Starting"

    unreachable = run(start.status, "2", dep("1"), candidate=dep("2"), now=T1, routable=False)
    assert unreachable.route is None and unreachable.status["rollout"]["phase"] == "Starting"
    step = run(start.status, "2", dep("1"), candidate=dep("2"), now=T1)
    assert step.route == ("Canary/2/0", "2", 10, "canary") and step.status["rollout"]["weight"] == 10

    good = Report("Canary/2/0", 0.1, "canary", counts(900, 900), counts(100, 99))
    promote = run(step.status, "2", dep("1"), candidate=dep("2"), report=good, now=T2)
    assert promote.apply_version == "2" and promote.candidate is None
    assert promote.status["rollout"]["phase"] == "Promoting"

    rolling = run(promote.status, "2", dep("2", Phase.PROGRESSING), report=good, now=T2)
    assert rolling.apply_version is None and rolling.route is None  # the routing stopped
    done = run(rolling.status, "2", dep("2"), now=T2)
    assert "rollout" not in done.status and done.route is None
    assert done.status["lastGoodVersion"] == done.status["servingVersion"] == "2"
    assert cond(done.status, "Ready") == ("True", c.SERVING)
    assert [e.reason for e in done.events] == ["CanaryPromoted", c.ROLLOUT_COMPLETE]


def test_a_failing_canary_is_aborted_and_not_tried_again() -> None:
    step = run(run(serving_v1(), "2", dep("1")).status, "2", dep("1"), candidate=dep("2"), now=T1)
    bad = Report("Canary/2/0", 0.1, "canary", counts(900, 900), counts(100, 30))
    aborted = run(step.status, "2", dep("1"), candidate=dep("2"), report=bad, now=T1)
    assert (aborted.apply_version, aborted.candidate, aborted.route) == (None, None, None)
    status = aborted.status
    assert "rollout" not in status and status["servingVersion"] == "1"
    assert status["lastFailure"]["version"] == "2"
    assert status["lastFailure"]["reason"] == "AnalysisFailed"
    degraded = c.get_condition(status["conditions"], c.DEGRADED)
    assert degraded["status"] == "True" and "agreement" in degraded["message"]
    assert "30.00% (30 of 100 rows)" in degraded["message"]
    assert [e.reason for e in aborted.events] == ["CanaryAborted"]  # not twice

    again = run(status, "2", dep("1"), now=T2)
    assert (again.apply_version, again.candidate, again.route) == (None, None, None)
    assert "rollout" not in again.status and again.events == ()
    moved = run(status, "3", dep("1"), now=T2)  # the alias moves on: a new canary
    assert moved.candidate == "3" and moved.status["rollout"]["candidate"] == "3"


def test_a_shadow_is_copied_traffic_and_an_abort_annotation_stops_it() -> None:
    shadow = {"model": "iris", "rollout": {"strategy": "Shadow"}}
    spec = serving_spec(make_cr(shadow), CONFIG)
    hash_ = builders.deployment_template(spec, CONFIG).config_hash
    stable = dataclasses.replace(dep("1"), config_hash=hash_)

    def tick(spec, status, *, candidate=None, now=T1):
        return decide(spec=spec, status=status, resolution=ok("2"), observed=stable,
                      config_hash=hash_, url="http://iris", now=now, candidate=candidate,
                      routable=True)

    first = decide(spec=spec, status=None, resolution=ok("1"), observed=Observed(),
                   config_hash=hash_, url="http://iris", now=T0)
    serving = decide(spec=spec, status=first.status, resolution=ok("1"), observed=stable,
                     config_hash=hash_, url="http://iris", now=T0)
    start = tick(spec, serving.status, now=T0)
    assert cond(start.status, "Ready") == ("False", "ShadowInProgress")
    step = tick(spec, start.status, candidate=dataclasses.replace(dep("2"), config_hash=hash_))
    assert step.route == ("Shadow/2/0", "2", 100, "shadow") and step.apply_version is None
    assert step.status["rollout"]["mode"] == "Shadow"

    annotated = make_cr(shadow, annotations={"mlship.io/abort": "2"})
    aborted = tick(serving_spec(annotated, CONFIG), step.status, now=T2)
    assert (aborted.apply_version, aborted.candidate, aborted.route) == (None, None, None)
    assert aborted.status["lastFailure"]["reason"] == "AbortRequested"
    assert [e.reason for e in aborted.events] == ["ShadowAborted"]
    assert aborted.status["servingVersion"] == "1" and "rollout" not in aborted.status
