"""The Events a decision posts, on their own: events.rollout_events and degraded_events."""

from __future__ import annotations

import pytest
from _operator_fixtures import CONFIG, make_cr
from mlship_operator.conditions import Report
from mlship_operator.events import EventSpec, degraded_events, rollout_events
from mlship_operator.rollout import Observed, Phase
from mlship_operator.spec import serving_spec
from mlship_operator.target import Target

pytestmark = pytest.mark.unit

SPEC = serving_spec(make_cr(), CONFIG)
FINE = Report(False, "AsExpected", "no problem detected")


def target(version="2", *, apply_version=None, phase=Phase.PROGRESSING, serving_before="1",
           rolled_back_from=None) -> Target:
    return Target(version=version, apply_version=apply_version, phase=phase, desired=version,
                  serving=None, serving_before=serving_before, last_good=None, failure=None,
                  rolled_back_from=rolled_back_from)


def running(version: str | None) -> Observed:
    return Observed(exists=True, version=version)


def degraded(status: str, reason: str, message: str = "m") -> list[dict]:
    return [{"type": "Ready", "status": "True", "reason": "Serving"},
            {"type": "Degraded", "status": status, "reason": reason, "message": message}]


def test_a_rollout_started_names_the_version_it_replaces() -> None:
    assert rollout_events(SPEC, running("1"), target(apply_version="2"), FINE) == [
        EventSpec("Normal", "RolloutStarted", "rolling out version 2 of 'iris' (replacing version 1)")]
    assert rollout_events(SPEC, Observed(), target(apply_version="2"), FINE) == [
        EventSpec("Normal", "RolloutStarted", "rolling out version 2 of 'iris'")]
    assert rollout_events(SPEC, running(None), target(apply_version="2"), FINE)[0].message == (
        "rolling out version 2 of 'iris'")


def test_reapplying_the_running_version_is_no_rollout() -> None:
    assert rollout_events(SPEC, running("2"), target(apply_version="2"), FINE) == []
    assert rollout_events(SPEC, running("1"), target(apply_version=None), FINE) == []


def test_a_rollback_is_one_warning_with_degradeds_message_and_no_rollout_started() -> None:
    why = Report(True, "RolledBack", "version 2 could not become ready; rolled back to version 1")
    t = target("1", apply_version="1", rolled_back_from="2")
    assert rollout_events(SPEC, running("2"), t, why) == [
        EventSpec("Warning", "RolledBack", why.message)]


def test_complete_is_told_once_when_the_serving_version_changes() -> None:
    done = target(phase=Phase.COMPLETE, serving_before="1")
    assert rollout_events(SPEC, running("2"), done, FINE) == [
        EventSpec("Normal", "RolloutComplete", "version 2 of 'iris' is serving")]
    first = target(phase=Phase.COMPLETE, serving_before=None)
    assert [e.reason for e in rollout_events(SPEC, running("2"), first, FINE)] == ["RolloutComplete"]
    again = target(phase=Phase.COMPLETE, serving_before="2")
    assert rollout_events(SPEC, running("2"), again, FINE) == []


def test_degraded_turning_true_or_changing_reason_warns_once() -> None:
    assert degraded_events(None, degraded("True", "MlflowUnreachable", "down")) == [
        EventSpec("Warning", "MlflowUnreachable", "down")]
    assert degraded_events(degraded("False", "AsExpected"), degraded("True", "X")) == [
        EventSpec("Warning", "X", "m")]
    assert degraded_events(degraded("True", "X"), degraded("True", "Y", "n")) == [
        EventSpec("Warning", "Y", "n")]
    assert degraded_events(degraded("True", "X"), degraded("True", "X", "other words")) == []


def test_a_reason_told_by_another_event_is_not_told_twice() -> None:
    assert degraded_events([], degraded("True", "RolledBack"), skip_reason="RolledBack") == []
    assert degraded_events([], degraded("True", "X"), skip_reason="RolledBack") != []


def test_degraded_clearing_is_a_recovery() -> None:
    assert degraded_events(degraded("True", "MlflowUnreachable"), degraded("False", "AsExpected")) == [
        EventSpec("Normal", "Recovered", "no longer degraded (MlflowUnreachable)")]
    assert degraded_events(degraded("True", "X"), []) == [
        EventSpec("Normal", "Recovered", "no longer degraded (X)")]
    assert degraded_events(degraded("False", "AsExpected"), degraded("False", "AsExpected")) == []
    assert degraded_events(None, None) == []
