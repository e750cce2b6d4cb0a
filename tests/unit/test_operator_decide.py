"""The reconciliation decision, tick by tick: rollouts, rollbacks, registry trouble."""

from __future__ import annotations

import copy

import pytest
from _operator_fixtures import CONFIG, deployment_config_hash, make_cr
from mlship_operator import conditions as c
from mlship_operator.decide import decide, status_patch
from mlship_operator.registry import Resolution
from mlship_operator.rollout import Observed, Phase
from mlship_operator.spec import redact_uri, serving_spec

pytestmark = pytest.mark.unit

URL = "http://iris.models.svc.cluster.local"
NOW = "2026-01-01T00:00:00Z"
LATER = "2026-01-01T00:01:00Z"


def ok(version: str) -> Resolution:
    return Resolution(version, "Resolved", f"alias 'champion' of 'iris' is version {version}")


DOWN = Resolution(None, "MlflowUnreachable", "cannot query MLflow at http://mlflow: refused")


def run(status=None, resolution=None, observed=None, *, cr=None, now=NOW, conflict=None):
    cr = cr or make_cr()
    return decide(
        spec=serving_spec(cr, CONFIG), status=status, resolution=resolution or ok("1"),
        observed=observed or Observed(), config_hash=deployment_config_hash(cr, CONFIG),
        url=URL, now=now, conflict=conflict,
    )


def dep(version: str, phase: Phase = Phase.COMPLETE, *, cr=None, reason="", message="",
        ready: int = 1, replicas: int | None = None) -> Observed:
    cr = cr or make_cr()
    return Observed(
        exists=True, owned=True, version=version,
        config_hash=deployment_config_hash(cr, CONFIG), phase=phase,
        reason=reason, message=message, ready_replicas=ready,
        replicas=ready if replicas is None else replicas,
    )


def cond(status: dict, type_: str) -> tuple[str, str]:
    found = c.get_condition(status["conditions"], type_)
    assert found is not None
    return found["status"], found["reason"]


def events(decision) -> list[tuple[str, str]]:
    return [(e.type, e.reason) for e in decision.events]


def serving(version: str) -> dict:
    """Status after version `version` rolled out and became ready."""
    first = run(resolution=ok(version))
    return run(first.status, ok(version), dep(version)).status


def test_first_tick_creates_the_deployment_and_reports_progress() -> None:
    d = run()
    assert d.apply_version == "1"
    s = d.status
    assert cond(s, "Ready") == ("False", "RolloutInProgress")
    assert cond(s, "Progressing") == ("True", "RollingOut")
    assert cond(s, "Degraded") == ("False", "AsExpected")
    assert (s["desiredVersion"], s.get("servingVersion"), s.get("lastGoodVersion")) == (
        "1", None, None)
    assert (s["alias"], s["model"], s["url"], s["observedGeneration"]) == (
        "champion", "iris", URL, 1)
    assert events(d) == [("Normal", "RolloutStarted")]


def test_ready_once_the_new_pods_are_ready() -> None:
    first = run()
    progressing = run(first.status, ok("1"), dep("1", Phase.PROGRESSING, message="0 of 1 ready"))
    assert progressing.apply_version is None
    assert cond(progressing.status, "Ready") == ("False", "RolloutInProgress")
    assert "0 of 1 ready" in c.get_condition(progressing.status["conditions"], "Ready")["message"]
    done = run(progressing.status, ok("1"), dep("1"))
    assert done.apply_version is None
    assert cond(done.status, "Ready") == ("True", "Serving")
    assert cond(done.status, "Progressing") == ("False", "RolloutComplete")
    assert (done.status["servingVersion"], done.status["lastGoodVersion"]) == ("1", "1")
    assert events(done) == [("Normal", "RolloutComplete")]


def test_steady_state_is_idempotent() -> None:
    status = serving("1")
    again = run(status, ok("1"), dep("1"), now=LATER)
    assert again.apply_version is None and again.events == ()
    assert again.status == status  # lastTransitionTime kept: nothing to patch
    assert status_patch(status, again.status) == {}


def test_alias_move_rolls_out_the_new_version_while_the_old_serves() -> None:
    d = run(serving("1"), ok("2"), dep("1"))
    assert d.apply_version == "2"
    assert d.status["desiredVersion"] == "2" and d.status["servingVersion"] == "1"
    msg = c.get_condition(d.status["conditions"], "Ready")["message"]
    assert "rolling out version 2" in msg and "version 1 serves meanwhile" in msg
    assert d.events[0].reason == "RolloutStarted" and "replacing version 1" in d.events[0].message
    done = run(d.status, ok("2"), dep("2"))
    assert (done.status["servingVersion"], done.status["lastGoodVersion"]) == ("2", "2")


def test_failed_new_version_is_rolled_back_once_and_not_retried() -> None:
    rolling = run(serving("1"), ok("2"), dep("1")).status
    failed = run(rolling, ok("2"), dep("2", Phase.FAILED, reason="CrashLoopBackOff",
                                        message="pod x restarted 2 times"), now=LATER)
    assert failed.apply_version == "1"
    s = failed.status
    assert s["lastFailure"] == {
        "version": "2", "reason": "CrashLoopBackOff", "message": "pod x restarted 2 times",
        "generation": 1, "configHash": deployment_config_hash(make_cr(), CONFIG), "time": LATER,
    }
    assert cond(s, "Degraded") == ("True", "RolledBack")
    assert cond(s, "Ready") == ("False", "RollingBack")
    assert cond(s, "Progressing") == ("True", "RollingBack")
    assert cond(s, "Available") == ("True", "Serving")  # version 1 answers throughout
    assert events(failed) == [("Warning", "RolledBack")]
    assert "not retried until alias 'champion' moves" in failed.events[0].message

    # the rollback proceeds, and the registry still says 2: version 1 stays
    back = run(s, ok("2"), dep("1", Phase.PROGRESSING))
    assert back.apply_version is None
    restored = run(back.status, ok("2"), dep("1"))
    assert restored.apply_version is None
    # Ready means the desired version serves: it does not; Available says something does
    assert cond(restored.status, "Ready") == ("False", "RolledBack")
    assert c.get_condition(restored.status["conditions"], "Ready")["message"] == (
        "desired version 2 of 'iris' failed (CrashLoopBackOff); version 1 serves instead"
        " (1/1 replicas ready)"
    )
    assert cond(restored.status, "Available") == ("True", "Serving")
    assert cond(restored.status, "Degraded") == ("True", "RolledBack")
    assert restored.status["servingVersion"] == "1"
    assert restored.status["desiredVersion"] == "2"
    assert ("Warning", "RolledBack") not in events(restored)  # no event storm
    # and again, and again: never version 2
    for _ in range(3):
        restored = run(restored.status, ok("2"), dep("1"))
        assert restored.apply_version is None and restored.events == ()


def test_alias_moving_on_clears_the_failure() -> None:
    rolling = run(serving("1"), ok("2"), dep("1")).status
    failed = run(rolling, ok("2"), dep("2", Phase.FAILED, reason="X", message="y"))
    settled = run(run(failed.status, ok("2"), dep("1")).status, ok("2"), dep("1")).status
    moved = run(settled, ok("3"), dep("1"))
    assert moved.apply_version == "3"
    assert "lastFailure" not in moved.status
    assert cond(moved.status, "Degraded") == ("False", "AsExpected")
    assert ("Normal", "Recovered") in events(moved)
    assert status_patch(settled, moved.status)["lastFailure"] is None


def test_a_spec_change_retries_the_failed_version() -> None:
    rolling = run(serving("1"), ok("2"), dep("1")).status
    failed = run(rolling, ok("2"), dep("2", Phase.FAILED, reason="X", message="y")).status
    cr2 = make_cr({"model": "iris", "resources": {"requests": {"cpu": "1"}}}, generation=2)
    retried = run(failed, ok("2"), dep("1"), cr=cr2)
    assert retried.apply_version == "2"
    assert "lastFailure" not in retried.status


@pytest.mark.parametrize("replicas", [2, 5])
def test_scaling_alone_does_not_retry_the_failed_version(replicas: int) -> None:
    """A new generation that only moves spec.replicas (kubectl scale, the autoscaler) leaves the
    config hash, and so the failure, as it was."""
    rolling = run(serving("1"), ok("2"), dep("1")).status
    failed = run(rolling, ok("2"), dep("2", Phase.FAILED, reason="X", message="y")).status
    restored = run(run(failed, ok("2"), dep("1")).status, ok("2"), dep("1")).status
    scaled = make_cr({"model": "iris", "replicas": replicas}, generation=2)
    d = run(restored, ok("2"), dep("1", cr=scaled, ready=replicas), cr=scaled)
    assert d.apply_version is None
    assert d.status["lastFailure"] == failed["lastFailure"]
    assert cond(d.status, "Degraded") == ("True", "RolledBack")
    assert d.status["servingVersion"] == "1" and d.status["observedGeneration"] == 2
    assert d.events == ()


def test_an_old_failure_without_a_config_hash_falls_back_to_the_generation() -> None:
    """A lastFailure written by an operator before configHash: only a new generation retries."""
    status = {**serving("1"), "desiredVersion": "2",
              "lastFailure": {"version": "2", "reason": "X", "message": "y", "generation": 1,
                              "time": NOW}}
    same = run(status, ok("2"), dep("1"))
    assert same.apply_version is None and same.status["lastFailure"] == status["lastFailure"]
    scaled = make_cr({"model": "iris", "replicas": 2}, generation=2)
    retried = run(status, ok("2"), dep("1", cr=scaled), cr=scaled)
    assert retried.apply_version == "2" and "lastFailure" not in retried.status


def test_failure_without_a_good_version_is_reported_not_looped() -> None:
    first = run().status
    failed = run(first, ok("1"), dep("1", Phase.FAILED, reason="ImagePullBackOff",
                                     message="pod p: no such image"))
    assert failed.apply_version is None
    assert cond(failed.status, "Ready") == ("False", "ImagePullBackOff")
    assert cond(failed.status, "Progressing") == ("False", "RolloutFailed")
    assert cond(failed.status, "Degraded") == ("True", "RolloutFailed")
    assert "nothing to roll back to" in c.get_condition(failed.status["conditions"],
                                                        "Degraded")["message"]
    assert "lastFailure" not in failed.status
    assert events(failed) == [("Warning", "RolloutFailed")]
    assert run(failed.status, ok("1"), dep("1", Phase.FAILED, reason="ImagePullBackOff",
                                           message="pod p: no such image")).events == ()


def test_mlflow_down_keeps_serving_and_says_so() -> None:
    status = serving("1")
    d = run(status, DOWN, dep("1"))
    assert d.apply_version is None  # nothing deleted, nothing changed
    assert cond(d.status, "Ready") == ("True", "Serving")
    assert cond(d.status, "Degraded") == ("True", "MlflowUnreachable")
    msg = c.get_condition(d.status["conditions"], "Degraded")["message"]
    assert "cannot query MLflow" in msg and "still serving version 1" in msg
    assert d.status["desiredVersion"] == "1"
    assert events(d) == [("Warning", "MlflowUnreachable")]
    assert run(d.status, DOWN, dep("1")).events == ()
    back = run(d.status, ok("1"), dep("1"))
    assert cond(back.status, "Degraded") == ("False", "AsExpected")
    assert events(back) == [("Normal", "Recovered")]


def test_mlflow_down_and_nothing_deployed_yet() -> None:
    d = run(None, DOWN, Observed())
    assert d.apply_version is None
    assert cond(d.status, "Ready") == ("False", "MlflowUnreachable")
    assert cond(d.status, "Progressing") == ("False", "MlflowUnreachable")
    assert "url" not in d.status


@pytest.mark.parametrize("reason", ["ModelNotFound", "AliasNotFound", "VersionNotReady"])
def test_registry_answers_without_a_version_keep_what_runs(reason: str) -> None:
    d = run(serving("1"), Resolution(None, reason, "exactly what is wrong"), dep("1"))
    assert d.apply_version is None
    assert cond(d.status, "Degraded") == ("True", reason)
    assert cond(d.status, "Ready") == ("True", "Serving")


def test_deleted_deployment_is_recreated_with_the_last_good_version_while_mlflow_is_down() -> None:
    d = run(serving("1"), DOWN, Observed())
    assert d.apply_version == "1"


def test_spec_edits_apply_to_the_running_version_while_mlflow_is_down() -> None:
    cr2 = make_cr({"model": "iris", "image": "reg/serving:2"}, generation=2)
    old_hash = dep("1")  # built from the old spec
    d = run(serving("1"), DOWN, old_hash, cr=cr2)
    assert d.apply_version == "1"


def test_an_inference_log_edit_rolls_the_running_version() -> None:
    cr2 = make_cr({"model": "iris", "inferenceLog": {"sampleRate": 0.1}}, generation=2)
    d = run(serving("1"), ok("1"), dep("1"), cr=cr2)  # dep built from the old spec
    assert d.apply_version == "1"
    same = run(serving("1"), ok("1"), dep("1", cr=cr2), cr=cr2)
    assert same.apply_version is None  # applied once, then left alone


def test_changing_the_model_forgets_version_history() -> None:
    other = make_cr({"model": "fraud"}, generation=2)
    d = run(serving("1"), DOWN, dep("1"), cr=other)
    assert d.apply_version is None  # version 1 of iris is not version 1 of fraud
    assert cond(d.status, "Ready") == ("False", "MlflowUnreachable")
    assert "lastGoodVersion" not in d.status
    d2 = run(serving("1"), ok("4"), dep("1"), cr=other)
    assert d2.apply_version == "4" and d2.status["model"] == "fraud"


def test_changing_the_registry_forgets_version_history() -> None:
    # trackingUri is part of the spec: same model name, another registry, so version 1 there is
    # not version 1 here. Edited with no other change, generation alone would not tell.
    rolling = run(serving("1"), ok("2"), dep("1")).status
    failed = run(rolling, ok("2"), dep("2", Phase.FAILED, reason="X", message="y")).status
    other = make_cr({"model": "iris", "trackingUri": "http://other-mlflow:5000"})
    down = run(failed, DOWN, dep("1", cr=other), cr=other)
    assert down.apply_version is None  # nothing known to run from this registry
    assert not {"lastGoodVersion", "lastFailure", "desiredVersion", "servingVersion"} & set(
        down.status)
    up = run(failed, ok("2"), dep("1", cr=other), cr=other)
    assert up.apply_version == "2"  # version 2 failed in the other registry, not this one
    broken = run(up.status, ok("2"), dep("2", Phase.FAILED, reason="X", message="y", cr=other),
                 cr=other)
    assert broken.apply_version is None  # nothing from this registry to roll back to
    assert cond(broken.status, "Degraded") == ("True", "RolloutFailed")


def test_a_failing_last_good_version_is_not_rolled_back_onto_itself() -> None:
    status = serving("1")
    crashing = run(status, ok("1"), dep("1", Phase.FAILED, reason="CrashLoopBackOff",
                                        message="pod p restarted 2 times"))
    assert crashing.apply_version is None
    assert "lastFailure" not in crashing.status
    assert cond(crashing.status, "Degraded") == ("True", "RolloutFailed")
    assert cond(crashing.status, "Ready") == ("False", "CrashLoopBackOff")
    assert ("Warning", "RolledBack") not in events(crashing)


def test_available_says_whether_anything_answers() -> None:
    first = run()
    assert cond(first.status, "Available") == ("False", "NothingServing")
    status = serving("1")
    assert cond(status, "Ready") == ("True", "Serving")
    assert cond(status, "Available") == ("True", "Serving")
    no_pods = run(status, ok("1"), dep("1", Phase.PROGRESSING, ready=0))
    assert cond(no_pods.status, "Available") == ("False", "NoReadyReplicas")
    assert run(None, DOWN).status["conditions"][1]["reason"] == "NothingServing"


def test_after_a_rollback_ready_stays_false_while_mlflow_is_down() -> None:
    rolling = run(serving("1"), ok("2"), dep("1")).status
    failed = run(rolling, ok("2"), dep("2", Phase.FAILED, reason="X", message="y")).status
    restored = run(run(failed, ok("2"), dep("1")).status, ok("2"), dep("1")).status
    down = run(restored, DOWN, dep("1")).status
    assert down["desiredVersion"] == "2" and down["servingVersion"] == "1"
    assert cond(down, "Ready") == ("False", "RolledBack")
    assert cond(down, "Available") == ("True", "Serving")


def test_the_registry_back_on_a_failed_version_warns_that_the_last_good_one_still_serves() -> None:
    # Degraded changes reason (MlflowUnreachable -> RolledBack) without a rollback on this tick:
    # no RolledBack event has told it, so the Degraded Warning does.
    rolling = run(serving("1"), ok("2"), dep("1")).status
    failed = run(rolling, ok("2"), dep("2", Phase.FAILED, reason="X", message="y")).status
    restored = run(run(failed, ok("2"), dep("1")).status, ok("2"), dep("1")).status
    down = run(restored, DOWN, dep("1"))
    assert events(down) == [("Warning", "MlflowUnreachable")]
    back = run(down.status, ok("2"), dep("1"))
    assert back.apply_version is None
    assert cond(back.status, "Degraded") == ("True", "RolledBack")
    assert events(back) == [("Warning", "RolledBack")]
    assert "version 2 failed (X: y); serving version 1 instead" in back.events[0].message
    assert run(back.status, ok("2"), dep("1")).events == ()


def test_a_version_other_than_the_desired_one_is_not_ready() -> None:
    # MLflow down, and the Deployment runs a version the status did not put there (edited by hand)
    status = {**serving("1"), "desiredVersion": "3"}
    d = run(status, DOWN, dep("1"))
    assert cond(d.status, "Ready") == ("False", "NotDesiredVersion")
    assert "not the desired version 3" in c.get_condition(d.status["conditions"], "Ready")["message"]


def test_name_conflict_touches_nothing() -> None:
    d = run(None, ok("1"), Observed(exists=True, owned=False), conflict="a Deployment named iris")
    assert d.apply_version is None
    for type_, state in (("Ready", "False"), ("Available", "False"), ("Progressing", "False"),
                         ("Degraded", "True")):
        assert cond(d.status, type_) == (state, "NameConflict")
    assert events(d) == [("Warning", "NameConflict")]


def test_a_lasting_name_conflict_warns_once_and_its_end_recovers() -> None:
    taken = Observed(exists=True, owned=False)
    first = run(None, ok("1"), taken, conflict="a Deployment named iris")
    again = run(first.status, ok("1"), taken, conflict="a Deployment named iris", now=LATER)
    assert again.events == ()  # Degraded was NameConflict already
    assert again.status == first.status
    freed = run(again.status, ok("1"), Observed())
    assert freed.apply_version == "1"
    assert events(freed) == [("Normal", "RolloutStarted"), ("Normal", "Recovered")]


def test_ready_replicas_is_the_observed_count() -> None:
    assert run().status["readyReplicas"] == 0
    status = serving("1")
    assert status["readyReplicas"] == 1
    assert run(status, ok("1"), dep("1", ready=3)).status["readyReplicas"] == 3
    lost = run(status, ok("1"), dep("1", Phase.PROGRESSING, ready=0)).status
    assert lost["readyReplicas"] == 0


def test_pinned_version() -> None:
    cr = make_cr({"model": "iris", "version": "3"})
    d = run(None, Resolution("3", "Resolved", "pinned"), Observed(), cr=cr)
    assert d.apply_version == "3" and "alias" not in d.status
    rolling = run(serving("2"), Resolution("3", "Resolved", "pinned"), dep("2", cr=cr), cr=cr)
    failed = run(rolling.status, Resolution("3", "Resolved", "p"),
                 dep("3", Phase.FAILED, cr=cr, reason="X", message="y"), cr=cr)
    assert failed.apply_version == "2"
    assert "not retried until the spec changes" in failed.events[0].message


def test_spec_change_of_same_version_updates_without_a_rollout_event() -> None:
    cr2 = make_cr({"model": "iris", "image": "reg/serving:2"}, generation=2)
    d = run(serving("1"), ok("1"), dep("1"), cr=cr2)
    assert d.apply_version == "1"
    assert events(d) == []
    assert d.status["observedGeneration"] == 2


def test_a_replicas_change_is_not_a_rollout() -> None:
    """The Deployment's config hash leaves the replicas out: decide applies no version (the tick
    re-applies the same Deployment with the new replicas, see test_operator_reconcile)."""
    cr2 = make_cr({"model": "iris", "replicas": 3}, generation=2)
    d = run(serving("1"), ok("1"), dep("1"), cr=cr2)
    assert d.apply_version is None
    assert events(d) == []
    assert cond(d.status, "Ready") == ("True", "Serving")
    assert d.status["observedGeneration"] == 2


def test_a_scale_up_of_the_serving_version_keeps_it_ready() -> None:
    status = serving("1")
    cr2 = make_cr({"model": "iris", "replicas": 3}, generation=2)
    starting = dep("1", Phase.PROGRESSING, cr=cr2, reason="ReplicasNotReady",
                   message="1 of 3 replicas of version 1 are ready", ready=1, replicas=3)
    d = run(status, ok("1"), starting, cr=cr2)
    assert d.apply_version is None and d.events == ()
    assert cond(d.status, "Ready") == ("True", "Serving")
    assert cond(d.status, "Available") == ("True", "Serving")
    assert cond(d.status, "Progressing") == ("False", "RolloutComplete")
    assert (d.status["servingVersion"], d.status["lastGoodVersion"]) == ("1", "1")
    assert (d.status["readyReplicas"], d.status["replicas"]) == (1, 3)


def test_not_ready_replicas_of_a_first_rollout_stay_progressing() -> None:
    first = run().status
    starting = dep("1", Phase.PROGRESSING, reason="ReplicasNotReady",
                   message="1 of 2 replicas of version 1 are ready", ready=1, replicas=2)
    d = run(first, ok("1"), starting)
    assert cond(d.status, "Ready") == ("False", "RolloutInProgress")
    assert cond(d.status, "Progressing") == ("True", "RollingOut")
    assert "servingVersion" not in d.status and "lastGoodVersion" not in d.status


def test_not_ready_replicas_of_a_new_version_are_not_its_completion() -> None:
    rolling = run(serving("1"), ok("2"), dep("1")).status
    starting = dep("2", Phase.PROGRESSING, reason="ReplicasNotReady",
                   message="1 of 2 replicas of version 2 are ready", ready=1, replicas=2)
    d = run(rolling, ok("2"), starting)
    assert cond(d.status, "Ready") == ("False", "RolloutInProgress")
    assert (d.status["servingVersion"], d.status["lastGoodVersion"]) == ("1", "1")


def test_a_serving_version_with_no_ready_replica_left_is_not_ready() -> None:
    status = serving("1")
    none_ready = dep("1", Phase.PROGRESSING, reason="ReplicasNotReady",
                     message="0 of 2 replicas of version 1 are ready", ready=0, replicas=2)
    d = run(status, ok("1"), none_ready)
    assert cond(d.status, "Ready")[0] == "False"
    assert cond(d.status, "Available") == ("False", "NoReadyReplicas")


def test_the_status_carries_the_scale_subresources_fields() -> None:
    first = run().status
    assert (first["replicas"], first["selector"]) == (
        0, "app.kubernetes.io/instance=iris,app.kubernetes.io/name=mlship-serving")
    d = run(serving("1"), ok("1"), dep("1", ready=2, replicas=3))
    assert (d.status["replicas"], d.status["readyReplicas"]) == (3, 2)
    assert d.status["selector"] == first["selector"]
    other = run(cr=make_cr(name="wine")).status
    assert other["selector"] == "app.kubernetes.io/instance=wine,app.kubernetes.io/name=mlship-serving"


def test_unknown_status_keys_are_preserved_and_input_not_mutated() -> None:
    status = {**serving("1"), "kopf": {"progress": {}}}
    frozen = copy.deepcopy(status)
    d = run(status, ok("2"), dep("1"))
    assert d.status["kopf"] == {"progress": {}}
    assert status == frozen


def test_status_patch_sets_changed_and_removes_absent_keys() -> None:
    assert status_patch({"a": 1, "b": 2}, {"a": 1, "c": 3}) == {"c": 3, "b": None}
    assert status_patch(None, {"a": 1}) == {"a": 1}


def test_credentials_never_reach_the_status() -> None:
    assert redact_uri("https://user:secret@mlflow.example:443/x") == "https://mlflow.example:443/x"
    assert redact_uri("http://mlflow:5000") == "http://mlflow:5000"
    cr = make_cr({"model": "iris", "trackingUri": "https://u:p@mlflow.example"})
    assert run(cr=cr).status["trackingUri"] == "https://mlflow.example"
