"""Choosing the version that should run, on its own: target.choose_target."""

from __future__ import annotations

import pytest
from _operator_fixtures import CONFIG, make_cr
from mlship_operator.registry import Resolution
from mlship_operator.rollout import Observed, Phase
from mlship_operator.spec import serving_spec
from mlship_operator.target import Target, choose_target

pytestmark = pytest.mark.unit

SPEC = serving_spec(make_cr(), CONFIG)
URI = SPEC.tracking_uri
H = "hash-of-the-spec"
NOW = "2026-01-01T00:00:00Z"
DOWN = Resolution(None, "MlflowUnreachable", "down")


def ok(version: str) -> Resolution:
    return Resolution(version, "Resolved", "")


def prev(**fields) -> dict:
    """A previous status written for this model and registry."""
    return {"model": "iris", "trackingUri": URI, **fields}


def running(version: str, phase: Phase = Phase.COMPLETE, config_hash: str = H, **kw) -> Observed:
    return Observed(exists=True, version=version, config_hash=config_hash, phase=phase, **kw)


def choose(previous=None, resolution=None, observed=None, spec=SPEC) -> Target:
    return choose_target(spec=spec, previous=previous or {}, resolution=resolution or ok("1"),
                         observed=observed or Observed(), config_hash=H, now=NOW)


def test_a_first_answer_is_applied() -> None:
    assert choose() == Target(version="1", apply_version="1", phase=Phase.PROGRESSING, desired="1",
                              serving=None, serving_before=None, last_good=None, failure=None)


def test_in_sync_and_complete_touches_nothing_and_becomes_good() -> None:
    t = choose(prev(servingVersion="1", lastGoodVersion="1"), ok("1"), running("1"))
    assert (t.version, t.apply_version, t.phase, t.complete) == ("1", None, Phase.COMPLETE, True)
    assert (t.serving, t.serving_before, t.last_good) == ("1", "1", "1")


@pytest.mark.parametrize("observed", [
    running("1", config_hash="older-spec"),  # a spec edit: same version, applied again
    running("2"),                            # the registry moved on
    Observed(),                              # the Deployment is gone
])
def test_out_of_sync_is_applied_and_progressing(observed: Observed) -> None:
    t = choose(prev(lastGoodVersion="2"), ok("1"), observed)
    assert (t.version, t.apply_version, t.phase, t.complete) == ("1", "1", Phase.PROGRESSING, False)
    assert t.last_good == "2"


def test_while_rolling_out_the_previous_version_serves_if_the_deployment_exists() -> None:
    t = choose(prev(servingVersion="1", lastGoodVersion="1"), ok("2"), running("1"))
    assert (t.apply_version, t.serving, t.serving_before) == ("2", "1", "1")
    progressing = choose(prev(servingVersion="1"), ok("2"), running("2", Phase.PROGRESSING))
    assert (progressing.apply_version, progressing.serving) == (None, "1")
    gone = choose(prev(servingVersion="1"), ok("2"), Observed())
    assert gone.serving is None


def test_a_failed_version_is_rolled_back_to_the_last_good_one_and_remembered() -> None:
    t = choose(prev(servingVersion="1", lastGoodVersion="1"), ok("2"),
               running("2", Phase.FAILED, reason="CrashLoopBackOff", message="m"))
    assert (t.rolled_back_from, t.version, t.apply_version, t.phase) == (
        "2", "1", "1", Phase.PROGRESSING)
    assert t.failure == {"version": "2", "reason": "CrashLoopBackOff", "message": "m",
                         "generation": 1, "configHash": H, "time": NOW}
    assert (t.desired, t.serving, t.last_good, t.blocked) == ("2", "1", "1", False)


@pytest.mark.parametrize("last_good", [None, "2"])  # nothing known good, or the failing one itself
def test_a_failure_with_nothing_else_to_run_is_left_failed(last_good) -> None:
    t = choose(prev(lastGoodVersion=last_good), ok("2"), running("2", Phase.FAILED, reason="X"))
    assert (t.rolled_back_from, t.version, t.apply_version, t.phase) == (
        None, "2", None, Phase.FAILED)
    assert t.failure is None


def test_a_version_that_failed_is_not_retried_while_the_registry_names_it() -> None:
    failure = {"version": "2", "reason": "X", "message": "y", "generation": 1, "time": "t"}
    t = choose(prev(lastGoodVersion="1", servingVersion="1", lastFailure=failure), ok("2"),
               running("1"))
    assert (t.blocked, t.version, t.apply_version, t.failure) == (True, "1", None, failure)
    assert (t.desired, t.serving) == ("2", "1")
    # the Deployment vanished meanwhile: the last good version comes back, not the failed one
    assert choose(prev(lastGoodVersion="1", lastFailure=failure), ok("2")).apply_version == "1"


def test_a_failure_is_forgotten_when_the_registry_or_the_spec_moves_on() -> None:
    failure = {"version": "2", "generation": 1}
    moved = choose(prev(lastGoodVersion="1", lastFailure=failure), ok("3"), running("1"))
    assert (moved.failure, moved.blocked, moved.apply_version) == (None, False, "3")
    edited = serving_spec(make_cr(generation=2), CONFIG)
    retried = choose(prev(lastGoodVersion="1", lastFailure=failure), ok("2"), running("1"),
                     spec=edited)
    assert (retried.failure, retried.apply_version) == (None, "2")
    # the registry cannot answer: nothing says the alias moved, so the failure stays
    down = choose(prev(lastGoodVersion="1", lastFailure=failure), DOWN, running("1"))
    assert down.failure == failure and down.blocked is False


def test_registry_trouble_keeps_what_runs_or_brings_back_the_last_good_version() -> None:
    kept = choose(prev(lastGoodVersion="1", desiredVersion="2"), DOWN, running("3"))
    assert (kept.version, kept.apply_version, kept.desired) == ("3", None, "2")
    spec_edit = choose(prev(lastGoodVersion="1"), DOWN, running("3", config_hash="older"))
    assert spec_edit.apply_version == "3"
    restored = choose(prev(lastGoodVersion="1"), DOWN, Observed())
    assert (restored.version, restored.apply_version) == ("1", "1")
    nothing = choose(prev(), DOWN, Observed())
    assert (nothing.version, nothing.apply_version, nothing.phase, nothing.desired) == (
        None, None, None, None)


@pytest.mark.parametrize("other", [{"model": "fraud"}, {"trackingUri": "http://other:5000"}])
def test_history_of_another_model_or_registry_is_ignored(other: dict) -> None:
    failure = {"version": "2", "generation": 1}
    previous = {**prev(lastGoodVersion="1", servingVersion="1", desiredVersion="1",
                       lastFailure=failure), **other}
    t = choose(previous, DOWN, running("1"))
    assert (t.version, t.last_good, t.failure, t.desired, t.serving) == (None, None, None, None, None)
    assert choose(previous, ok("2"), running("1")).apply_version == "2"  # not blocked here


def test_history_is_matched_on_the_redacted_registry_uri() -> None:
    spec = serving_spec(make_cr({"model": "iris", "trackingUri": "https://u:p@mlflow.x"}), CONFIG)
    previous = {"model": "iris", "trackingUri": "https://mlflow.x", "lastGoodVersion": "1"}
    assert choose(previous, DOWN, Observed(), spec=spec).apply_version == "1"


def test_a_failure_stays_while_only_the_generation_moved() -> None:
    """A new generation with the same config hash is a scale (replicas are not in the hash)."""
    failure = {"version": "2", "generation": 1, "configHash": H}
    scaled = serving_spec(make_cr({"model": "iris", "replicas": 3}, generation=2), CONFIG)
    t = choose(prev(lastGoodVersion="1", servingVersion="1", lastFailure=failure), ok("2"),
               running("1"), spec=scaled)
    assert (t.failure, t.blocked, t.version, t.apply_version) == (failure, True, "1", None)


def test_a_failure_is_forgotten_when_the_config_hash_moved_even_in_the_same_generation() -> None:
    failure = {"version": "2", "generation": 1, "configHash": "an-older-hash"}
    t = choose(prev(lastGoodVersion="1", servingVersion="1", lastFailure=failure), ok("2"),
               running("1"))
    assert (t.failure, t.blocked, t.apply_version) == (None, False, "2")


def test_a_failure_without_a_config_hash_falls_back_to_the_generation() -> None:
    failure = {"version": "2", "generation": 1}
    kept = choose(prev(lastGoodVersion="1", servingVersion="1", lastFailure=failure), ok("2"),
                  running("1"))
    assert (kept.failure, kept.blocked) == (failure, True)
    edited = serving_spec(make_cr({"model": "iris", "replicas": 3}, generation=2), CONFIG)
    retried = choose(prev(lastGoodVersion="1", servingVersion="1", lastFailure=failure), ok("2"),
                     running("1"), spec=edited)
    assert (retried.failure, retried.apply_version) == (None, "2")


def not_ready(version: str, ready: int) -> Observed:
    return running(version, Phase.PROGRESSING, reason="ReplicasNotReady", ready_replicas=ready,
                   message=f"{ready} of 3 replicas of version {version} are ready")


@pytest.mark.parametrize("observed", [
    not_ready("1", 1),
    # the moments before: the controller has not seen the new replicas, or made their pods
    running("1", Phase.PROGRESSING, reason="WaitingForController", ready_replicas=1),
    running("1", Phase.PROGRESSING, reason="RollingOut", ready_replicas=1),
])
def test_a_scale_up_of_the_version_that_served_is_complete(observed: Observed) -> None:
    t = choose(prev(servingVersion="1", lastGoodVersion="1"), ok("1"), observed)
    assert (t.phase, t.complete, t.serving, t.last_good, t.apply_version) == (
        Phase.COMPLETE, True, "1", "1", None)


@pytest.mark.parametrize(("previous", "observed"), [
    (prev(), not_ready("1", 1)),                                    # a first rollout
    (prev(servingVersion="1", lastGoodVersion="1"), not_ready("1", 0)),  # nothing ready left
    (prev(servingVersion="2", lastGoodVersion="2"), not_ready("1", 2)),  # another version served
])
def test_not_ready_replicas_are_progressing_otherwise(previous: dict, observed: Observed) -> None:
    t = choose(previous, ok("1"), observed)
    assert (t.phase, t.complete, t.apply_version) == (Phase.PROGRESSING, False, None)
