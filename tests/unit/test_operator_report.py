"""What the four conditions say about a chosen target, on its own: report.condition_reports."""

from __future__ import annotations

import pytest
from _operator_fixtures import CONFIG, make_cr
from mlship_operator.conditions import Report
from mlship_operator.registry import Resolution
from mlship_operator.report import apply_failed_reports, condition_reports, conflict_reports
from mlship_operator.rollout import Observed, Phase
from mlship_operator.spec import serving_spec
from mlship_operator.target import Target

pytestmark = pytest.mark.unit

SPEC = serving_spec(make_cr({"model": "iris", "replicas": 2}), CONFIG)
OK = Resolution("2", "Resolved", "alias 'champion' is version 2")
DOWN = Resolution(None, "MlflowUnreachable", "cannot query MLflow")


def target(version="2", *, apply_version=None, phase=Phase.COMPLETE, desired="2", serving="2",
           failure=None, rolled_back_from=None, blocked=False) -> Target:
    return Target(version=version, apply_version=apply_version, phase=phase, desired=desired,
                  serving=serving, serving_before=serving, last_good=serving, failure=failure,
                  rolled_back_from=rolled_back_from, blocked=blocked)


def running(ready: int = 2, reason: str = "", message: str = "") -> Observed:
    return Observed(exists=True, version="2", phase=Phase.COMPLETE, ready_replicas=ready,
                    reason=reason, message=message)


def reports(t: Target, observed: Observed | None = None, resolution=OK, spec=SPEC) -> dict:
    return condition_reports(spec, resolution, observed or running(), t)


def reasons(got: dict) -> tuple:
    return tuple((k, r.status, r.reason) for k, r in got.items())


def test_all_four_in_order_when_the_desired_version_serves() -> None:
    assert reports(target()) == {
        "Ready": Report(True, "Serving", "version 2 of 'iris' is serving (2/2 replicas ready)"),
        "Available": Report(True, "Serving", "version 2 of 'iris' answers (2/2 replicas ready)"),
        "Progressing": Report(False, "RolloutComplete", "version 2 is rolled out"),
        "Degraded": Report(False, "AsExpected", "no problem detected"),
    }


def test_nothing_to_deploy_says_what_the_registry_said() -> None:
    got = reports(target(None, phase=None, desired=None, serving=None), Observed(), DOWN)
    assert got["Ready"] == got["Progressing"] == Report(
        False, "MlflowUnreachable", "nothing to deploy: cannot query MLflow")
    assert got["Available"] == Report(False, "NothingServing", "no version of the model is serving")
    assert got["Degraded"] == Report(True, "MlflowUnreachable",
                                     "cannot query MLflow; nothing is serving")


def test_rolling_out_names_what_serves_meanwhile_and_the_rollouts_own_words() -> None:
    fresh = reports(target("3", apply_version="3", phase=Phase.PROGRESSING, desired="3"))
    assert fresh["Ready"] == Report(False, "RolloutInProgress",
                                    "rolling out version 3 of 'iris'; version 2 serves meanwhile")
    assert fresh["Progressing"] == Report(True, "RollingOut", fresh["Ready"].message)
    # applied on an earlier tick: the Deployment's progress is quoted
    later = reports(target("3", phase=Phase.PROGRESSING, desired="3"),
                    running(message="1 of 2 replicas run version 3"))
    assert later["Ready"].message == (
        "rolling out version 3 of 'iris'; version 2 serves meanwhile"
        " (1 of 2 replicas run version 3)")
    first = reports(target("3", phase=Phase.PROGRESSING, desired="3", serving=None), Observed())
    assert first["Ready"].message == "rolling out version 3 of 'iris'"


def test_a_version_other_than_the_desired_one_serves() -> None:
    got = reports(target("1", desired="2", serving="1"))
    assert got["Ready"] == Report(
        False, "NotDesiredVersion",
        "version 1 of 'iris' serves, not the desired version 2 (2/2 replicas ready)")
    assert got["Available"].status is True


def test_after_a_rollback_ready_says_the_desired_version_failed() -> None:
    failure = {"version": "2", "reason": "CrashLoopBackOff", "message": "m"}
    got = reports(target("1", desired="2", serving="1", failure=failure, blocked=True))
    assert got["Ready"] == Report(
        False, "RolledBack",
        "desired version 2 of 'iris' failed (CrashLoopBackOff); version 1 serves instead"
        " (2/2 replicas ready)")
    assert got["Degraded"] == Report(
        True, "RolledBack",
        "version 2 failed (CrashLoopBackOff: m); serving version 1 instead;"
        " it is not retried until alias 'champion' moves or the spec changes")


def test_the_rollback_tick() -> None:
    got = reports(target("1", apply_version="1", phase=Phase.PROGRESSING, serving="1",
                         rolled_back_from="2"),
                  running(reason="ImagePullBackOff", message="no such image"))
    assert reasons(got) == (("Ready", False, "RollingBack"), ("Available", True, "Serving"),
                            ("Progressing", True, "RollingBack"), ("Degraded", True, "RolledBack"))
    assert got["Ready"].message == "version 2 failed (ImagePullBackOff); rolling back to 1"
    assert got["Degraded"].message == (
        "version 2 could not become ready (ImagePullBackOff: no such image); rolled back to"
        " version 1; it is not retried until alias 'champion' moves or the spec changes")


def test_a_pinned_version_is_retried_only_on_a_spec_change() -> None:
    pinned = serving_spec(make_cr({"model": "iris", "version": "2"}), CONFIG)
    got = reports(target("1", rolled_back_from="2", phase=Phase.PROGRESSING), spec=pinned)
    assert got["Degraded"].message.endswith("; it is not retried until the spec changes")


def test_a_failure_with_nothing_to_roll_back_to() -> None:
    got = reports(target(phase=Phase.FAILED, serving=None),
                  running(ready=0, reason="CrashLoopBackOff", message="restarted 2 times"))
    assert got["Ready"] == Report(False, "CrashLoopBackOff", "restarted 2 times")
    assert got["Progressing"] == Report(False, "RolloutFailed", "restarted 2 times")
    assert got["Degraded"] == Report(
        True, "RolloutFailed",
        "version 2 cannot become ready (CrashLoopBackOff: restarted 2 times); no other version is"
        " known to be good, so there is nothing to roll back to")


@pytest.mark.parametrize(("ready", "expected"), [
    (1, Report(True, "Serving", "version 2 of 'iris' answers (1/2 replicas ready)")),
    (0, Report(False, "NoReadyReplicas", "no replica of version 2 is ready")),
])
def test_available_needs_one_ready_replica(ready: int, expected: Report) -> None:
    assert reports(target(), running(ready=ready))["Available"] == expected


def test_registry_trouble_is_degraded_but_what_serves_stays_ready() -> None:
    got = reports(target(desired="2"), running(), DOWN)
    assert got["Ready"].status is True
    assert got["Degraded"] == Report(True, "MlflowUnreachable",
                                     "cannot query MLflow; still serving version 2")


def test_a_failed_rollout_outranks_registry_trouble() -> None:
    got = reports(target(phase=Phase.FAILED), running(reason="X", message="y"), DOWN)
    assert got["Degraded"].reason == "RolloutFailed"


def test_a_name_conflict_says_the_same_everywhere() -> None:
    assert conflict_reports("taken") == {
        "Ready": Report(False, "NameConflict", "taken"),
        "Available": Report(False, "NameConflict", "taken"),
        "Progressing": Report(False, "NameConflict", "taken"),
        "Degraded": Report(True, "NameConflict", "taken"),
    }


def test_a_refused_apply_leaves_available_alone() -> None:
    assert apply_failed_reports("refused") == {
        "Ready": Report(False, "ApplyFailed", "refused"),
        "Progressing": Report(False, "ApplyFailed", "refused"),
        "Degraded": Report(True, "ApplyFailed", "refused"),
    }
