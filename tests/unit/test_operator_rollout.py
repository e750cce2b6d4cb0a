"""Reading the Deployment and pods: rollout phases and failure detection."""

from __future__ import annotations

import copy

import pytest
from _operator_fixtures import CONFIG, UID, make_cr
from mlship_operator import builders
from mlship_operator.rollout import Phase, needs_pod_check, observe, pod_failure

pytestmark = pytest.mark.unit


def deployment(version: str = "2", *, generation: int = 5, **status) -> dict:
    """A built Deployment (spec.replicas 2) with the given status fields."""
    dep = builders.build_deployment(make_cr({"model": "iris", "replicas": 2}), CONFIG, version)
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
    assert (result.version, result.ready_replicas, result.replicas) == ("2", 2, 2)
    assert result.config_hash == builders.deployment_config_hash(
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
