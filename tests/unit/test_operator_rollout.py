"""Reading the Deployment and pods: rollout phases and failure detection."""

from __future__ import annotations

import copy

import pytest
from _operator_fixtures import CONFIG, UID, build_deployment, deployment_config_hash, make_cr
from mlship_operator.rollout import (
    REPLICAS_NOT_READY,
    Observed,
    Phase,
    needs_pod_check,
    observe,
    pod_failure,
)

pytestmark = pytest.mark.unit


def deployment(version: str = "2", *, generation: int = 5, **status) -> dict:
    """A built Deployment (spec.replicas 2) with the given status fields."""
    dep = build_deployment(make_cr({"model": "iris", "replicas": 2}), CONFIG, version)
    dep["metadata"]["generation"] = generation
    dep["status"] = {"observedGeneration": generation, **status}
    return dep


def pod(version: str, *, restarts: int = 0, ready: bool = False, waiting: str | None = None,
        last_exit: dict | None = None, deleting: bool = False) -> dict:
    cs: dict = {"name": "server", "restartCount": restarts, "ready": ready, "state": {}}
    if waiting:
        cs["state"] = {"waiting": {"reason": waiting, "message": f"{waiting} details"}}
    if last_exit:
        cs["lastState"] = {"terminated": last_exit}
    meta: dict = {"name": f"iris-{version}-abc", "labels": {"mlship.io/model-version": version}}
    if deleting:
        meta["deletionTimestamp"] = "2026-01-01T00:00:00Z"
    return {"metadata": meta, "status": {"containerStatuses": [cs]}}


def seen(dep, pods=None, restarts: int = 2):
    return observe(dep, pods, owner_uid=UID, crashloop_restarts=restarts)


def test_absent_deployment() -> None:
    result = seen(None)
    assert result.phase is Phase.ABSENT and not result.exists and result.version is None


def test_foreign_deployment_is_reported_not_owned() -> None:
    dep = deployment()
    dep["metadata"]["ownerReferences"][0]["uid"] = "someone-else"
    result = seen(dep)
    assert result.exists and not result.owned


def test_complete_rollout() -> None:
    dep = deployment(replicas=2, updatedReplicas=2, availableReplicas=2, readyReplicas=2)
    result = seen(dep)
    assert result.phase is Phase.COMPLETE
    assert (result.version, result.ready_replicas, result.message) == ("2", 2, "2 of 2 replicas ready")
    assert result.config_hash == deployment_config_hash(
        make_cr({"model": "iris", "replicas": 2}), CONFIG)
    assert not needs_pod_check(dep)


@pytest.mark.parametrize(
    ("status", "expected"),
    [
        ({"observedGeneration": 4}, "has not yet observed generation 5"),
        ({"updatedReplicas": 1, "replicas": 3, "availableReplicas": 2}, "1 of 2 replicas run"),
        ({"updatedReplicas": 2, "replicas": 3, "availableReplicas": 2}, "still terminating"),
        ({"updatedReplicas": 2, "replicas": 2, "availableReplicas": 1}, "1 of 2 replicas of"),
    ],
)
def test_progressing_phases(status: dict, expected: str) -> None:
    dep = deployment()
    dep["status"].update(status)
    result = seen(dep)
    assert result.phase is Phase.PROGRESSING
    assert expected in result.message
    assert needs_pod_check(dep)


def test_progress_deadline_exceeded_fails_the_rollout() -> None:
    dep = deployment(updatedReplicas=1, replicas=3, availableReplicas=2, conditions=[
        {"type": "Available", "status": "True", "reason": "MinimumReplicasAvailable"},
        {"type": "Progressing", "status": "False", "reason": "ProgressDeadlineExceeded",
         "message": 'ReplicaSet "iris-7d" has timed out progressing.'},
    ])
    result = seen(dep)
    assert (result.phase, result.reason) == (Phase.FAILED, "ProgressDeadlineExceeded")
    assert "timed out progressing" in result.message


def test_deadline_of_an_unobserved_generation_does_not_count() -> None:
    dep = deployment(conditions=[{"type": "Progressing", "reason": "ProgressDeadlineExceeded"}])
    dep["status"]["observedGeneration"] = 4  # our rollback was not yet seen by the controller
    assert seen(dep).phase is Phase.PROGRESSING


def test_crash_looping_new_version_fails_the_rollout() -> None:
    dep = deployment("3", updatedReplicas=1, replicas=3, availableReplicas=2)
    pods = [
        pod("2", ready=True), pod("2", ready=True),
        pod("3", restarts=2, waiting="CrashLoopBackOff",
            last_exit={"exitCode": 1, "reason": "Error", "message": "cannot load model\n x"}),
    ]
    result = seen(dep, pods)
    assert (result.phase, result.reason) == (Phase.FAILED, "CrashLoopBackOff")
    assert "restarted 2 times; last exit code 1 (Error): cannot load model x" in result.message


def test_one_crash_is_not_yet_a_failure_and_old_pods_are_not_judged() -> None:
    dep = deployment("3", updatedReplicas=1, replicas=3, availableReplicas=2)
    pods = [pod("2", restarts=9), pod("3", restarts=1, waiting="CrashLoopBackOff")]
    assert seen(dep, pods).phase is Phase.PROGRESSING
    assert seen(dep, pods, restarts=1).phase is Phase.FAILED


@pytest.mark.parametrize("reason", ["ImagePullBackOff", "InvalidImageName",
                                    "CreateContainerConfigError", "ErrImageNeverPull"])
def test_hopeless_waiting_reasons_fail_at_once(reason: str) -> None:
    failure = pod_failure(pod("3", waiting=reason), crashloop_restarts=5)
    assert failure is not None and failure[0] == reason
    assert f"is {reason}: {reason} details" in failure[1]


def test_healthy_restarted_terminating_and_pulling_pods_are_not_failures() -> None:
    assert pod_failure(pod("3", restarts=5, ready=True), 2) is None
    assert pod_failure(pod("3", restarts=5, deleting=True), 2) is None
    assert pod_failure(pod("3", waiting="ContainerCreating"), 2) is None
    assert pod_failure(pod("3", waiting="ErrImagePull"), 2) is None  # retried by kubelet
    assert pod_failure({"metadata": {"name": "p"}, "status": {}}, 2) is None


def test_observe_does_not_mutate_its_input() -> None:
    dep = deployment(updatedReplicas=2, replicas=2, availableReplicas=2)
    before = copy.deepcopy(dep)
    seen(dep, [pod("2")])
    assert dep == before


# ------------------------------------------------------------------ boundaries (mutation testing)
HASH = deployment_config_hash(make_cr({"model": "iris", "replicas": 2}), CONFIG)


def bare(status: dict, *, generation: int | None = 1, replicas: int | None = None) -> dict:
    """A Deployment with only what observe reads: fields Kubernetes omits when zero are absent."""
    meta: dict = {"ownerReferences": [{"uid": UID, "controller": True}]}
    if generation is not None:
        meta["generation"] = generation
    spec: dict = {"template": {"metadata": {"labels": {"mlship.io/model-version": "4"}}}}
    if replicas is not None:
        spec["replicas"] = replicas
    return {"metadata": meta, "spec": spec, "status": status}


def observed(phase: Phase, reason: str, message: str, *, ready: int = 0, replicas: int = 0,
             desired: int = 1) -> Observed:
    return Observed(exists=True, owned=True, version="4", config_hash=None, phase=phase, reason=reason,
                    message=message, ready_replicas=ready, replicas=replicas, desired_replicas=desired)


def test_every_result_in_full() -> None:
    assert seen(bare({})) == observed(
        Phase.PROGRESSING, "WaitingForController",
        "the Deployment controller has not yet observed generation 1")
    assert seen(bare({"observedGeneration": 1})) == observed(
        Phase.PROGRESSING, "RollingOut", "0 of 1 replicas run version 4")  # spec.replicas defaults to 1
    assert seen(bare({"observedGeneration": 1, "updatedReplicas": 1, "replicas": 3})) == observed(
        Phase.PROGRESSING, "RollingOut", "2 replica(s) of the previous version are still terminating",
        replicas=3)
    # every pod runs the template but not all are ready: new ones of a scale-up, or one restarts
    assert seen(bare({"observedGeneration": 1, "updatedReplicas": 1, "replicas": 1})) == observed(
        Phase.PROGRESSING, "ReplicasNotReady", "0 of 1 replicas of version 4 are ready", replicas=1)
    done = {"observedGeneration": 1, "updatedReplicas": 1, "replicas": 1, "availableReplicas": 1,
            "readyReplicas": 1}
    assert seen(bare(done)) == observed(Phase.COMPLETE, "RolloutComplete", "1 of 1 replicas ready",
                                        ready=1, replicas=1)
    assert seen(bare({"observedGeneration": 1}, replicas=0)) == observed(
        Phase.COMPLETE, "RolloutComplete", "0 of 0 replicas ready", desired=0)
    # no generation at all (never set) counts as 0: nothing to wait for
    assert seen(bare({}, generation=None)).reason == "RollingOut"


def test_the_config_hash_comes_from_the_deployments_annotation() -> None:
    dep = deployment(replicas=2, updatedReplicas=2, availableReplicas=2, readyReplicas=1)
    assert seen(dep) == Observed(exists=True, owned=True, version="2", config_hash=HASH,
                                 phase=Phase.COMPLETE, reason="RolloutComplete",
                                 message="2 of 2 replicas ready", ready_replicas=1,
                                 replicas=2, desired_replicas=2)


def test_a_foreign_deployment_is_only_that() -> None:
    dep = bare({})
    dep["metadata"]["ownerReferences"] = [{"uid": UID, "controller": False}]
    assert seen(dep) == Observed(exists=True, owned=False)


def test_only_a_progressing_deadline_fails_and_its_message_is_clipped() -> None:
    status = {"observedGeneration": 1, "conditions": [
        {"type": "Available", "reason": "ProgressDeadlineExceeded"},
        {"type": "Progressing", "reason": "NewReplicaSetAvailable"},
    ]}
    assert seen(bare(status)).phase is Phase.PROGRESSING
    status["conditions"] = [{"type": "Progressing", "reason": "ProgressDeadlineExceeded"}]
    assert seen(bare(status)) == observed(
        Phase.FAILED, "ProgressDeadlineExceeded", "the rollout made no progress in time")
    status["conditions"][0]["message"] = "x" * 400
    assert seen(bare(status)).message == "x" * 400
    status["conditions"][0]["message"] = "x" * 401
    assert seen(bare(status)).message == "x" * 399 + "…"


@pytest.mark.parametrize(
    ("status", "due"),
    [
        ({"observedGeneration": 5, "replicas": 2, "updatedReplicas": 2, "availableReplicas": 2}, False),
        ({"observedGeneration": 4, "replicas": 2, "updatedReplicas": 2, "availableReplicas": 2}, True),
        ({"observedGeneration": 5, "replicas": 2, "updatedReplicas": 1, "availableReplicas": 2}, True),
        ({"observedGeneration": 5, "replicas": 2, "updatedReplicas": 2, "availableReplicas": 1}, True),
        ({"observedGeneration": 5, "replicas": 3, "updatedReplicas": 2, "availableReplicas": 2}, True),
        ({"observedGeneration": 5, "replicas": 2, "updatedReplicas": 2, "availableReplicas": 2,
          "unavailableReplicas": 1}, True),
    ],
)
def test_pods_are_checked_exactly_while_something_is_not_updated_and_available(status, due) -> None:
    assert needs_pod_check(deployment(**status)) is due


def test_needs_pod_check_reads_omitted_fields_as_zero_and_replicas_as_one() -> None:
    assert needs_pod_check(None) is False
    assert needs_pod_check(bare({}, generation=None, replicas=0)) is False  # scaled to zero, settled
    assert needs_pod_check(bare({"updatedReplicas": 1, "availableReplicas": 1, "replicas": 1},
                                generation=None)) is False  # spec.replicas omitted: 1
    assert needs_pod_check(bare({}, generation=None)) is True  # 0 of 1 updated
    assert needs_pod_check(bare({"updatedReplicas": 1, "availableReplicas": 1, "replicas": 1},
                                generation=2)) is True  # generation 2 not observed (0)
    full = {"updatedReplicas": 1, "availableReplicas": 1}
    assert needs_pod_check(bare(full, generation=None)) is True  # status.replicas 0 != 1 updated


def test_failure_messages_in_full() -> None:
    waiting = pod("3", waiting="ImagePullBackOff")
    assert pod_failure(waiting, 5) == (
        "ImagePullBackOff", "pod iris-3-abc: container server is ImagePullBackOff: ImagePullBackOff details")
    del waiting["status"]["containerStatuses"][0]["state"]["waiting"]["message"]
    del waiting["metadata"]["name"]
    assert pod_failure(waiting, 5) == ("ImagePullBackOff", "pod ?: container server is ImagePullBackOff: ")
    crashed = pod("3", restarts=3, last_exit={"exitCode": 137})
    assert pod_failure(crashed, 3) == (
        "CrashLoopBackOff", "pod iris-3-abc: container server restarted 3 times; last exit code 137 (?)")
    assert pod_failure(pod("3", restarts=3), 3) == (
        "CrashLoopBackOff", "pod iris-3-abc: container server restarted 3 times")
    assert pod_failure(pod("3", restarts=2), 3) is None  # one restart short
    no_count = pod("3")
    del no_count["status"]["containerStatuses"][0]["restartCount"]
    assert pod_failure(no_count, 1) is None  # an omitted restartCount is 0
    empty_reason = pod("3")
    empty_reason["status"]["containerStatuses"][0]["state"] = {"waiting": {}}
    assert pod_failure(empty_reason, 1) is None


def test_a_failing_pod_makes_the_whole_result_failed() -> None:
    status = {"observedGeneration": 1, "updatedReplicas": 1, "replicas": 1}
    assert seen(bare(status), [pod("4", waiting="InvalidImageName")]) == observed(
        Phase.FAILED, "InvalidImageName", "pod iris-4-abc: container server is InvalidImageName: "
        "InvalidImageName details", replicas=1)


@pytest.mark.parametrize(
    "status",
    [
        {"updatedReplicas": 1, "availableReplicas": 1, "replicas": 1},  # generation 1 never observed
        {"observedGeneration": 1, "availableReplicas": 1},  # none updated yet
        {"observedGeneration": 1, "updatedReplicas": 1, "replicas": 1},  # none available yet
    ],
)
def test_an_omitted_status_count_is_zero_not_one(status) -> None:
    assert needs_pod_check(bare(status)) is True


def test_a_scale_up_of_the_running_version_is_replicas_not_ready_and_reports_the_counts() -> None:
    """spec.replicas went from 2 to 4: every pod runs the template, two are still starting."""
    dep = deployment("2", replicas=4, updatedReplicas=4, availableReplicas=2, readyReplicas=2)
    dep["spec"]["replicas"] = 4
    result = seen(dep)
    assert (result.phase, result.reason, result.message) == (
        Phase.PROGRESSING, REPLICAS_NOT_READY, "2 of 4 replicas of version 2 are ready")
    assert REPLICAS_NOT_READY == "ReplicasNotReady"
    assert (result.ready_replicas, result.replicas, result.desired_replicas) == (2, 4, 4)


def test_replicas_still_being_created_are_rolling_out_not_replicas_not_ready() -> None:
    dep = deployment("2", replicas=2, updatedReplicas=2, availableReplicas=2, readyReplicas=2)
    dep["spec"]["replicas"] = 4  # the controller has not created the new pods yet
    result = seen(dep)
    assert (result.phase, result.reason) == (Phase.PROGRESSING, "RollingOut")
    assert (result.replicas, result.desired_replicas) == (2, 4)
