"""One tick against a fake API server: what is read, what is written, what is remembered."""

from __future__ import annotations

import copy
from typing import Any

import pytest
from _operator_fixtures import CONFIG, UID, make_cr
from kubernetes.client.exceptions import ApiException
from mlship_operator import conditions as c
from mlship_operator import reconcile
from mlship_operator.registry import Resolution
from mlship_operator.resource import ANNOTATION_CONFIG_HASH, LABEL_MODEL_VERSION

pytestmark = pytest.mark.unit

NOW = "2026-01-01T00:00:00Z"
DOWN = Resolution(None, "MlflowUnreachable", "cannot query MLflow")


def ok(version: str) -> Resolution:
    return Resolution(version, "Resolved", f"alias 'champion' of 'iris' is version {version}")


class FakeKube:
    """The children as the API server holds them, and every call made."""

    def __init__(self) -> None:
        self.objects: dict[str, dict[str, Any]] = {}
        self.calls: list[tuple[str, str]] = []
        self.refuse: ApiException | None = None

    def get_deployment(self, namespace: str, name: str) -> dict[str, Any] | None:
        self.calls.append(("get", "Deployment"))
        return copy.deepcopy(self.objects.get("Deployment"))

    def get_service(self, namespace: str, name: str) -> dict[str, Any] | None:
        self.calls.append(("get", "Service"))
        return copy.deepcopy(self.objects.get("Service"))

    def get(self, kind: str, namespace: str, name: str) -> dict[str, Any] | None:
        self.calls.append(("get", kind))
        return copy.deepcopy(self.objects.get(kind))

    def delete(self, kind: str, namespace: str, name: str, uid: str) -> None:
        self.calls.append(("delete", kind))
        held = self.objects.get(kind)
        if held is not None and held["metadata"].get("uid") == uid:  # the precondition
            del self.objects[kind]

    def list_pods(self, namespace: str, selector: dict[str, str]) -> list[dict[str, Any]]:
        self.calls.append(("list", "Pod"))
        return []

    def apply(self, obj: dict[str, Any]) -> dict[str, Any]:
        self.calls.append(("apply", obj["kind"]))
        if obj["kind"] == "Deployment" and self.refuse is not None:
            raise self.refuse
        held = copy.deepcopy(obj)
        old = self.objects.get(obj["kind"])
        held["metadata"]["uid"] = (old or {}).get("metadata", {}).get("uid") or f"uid-{obj['kind']}"
        if obj["kind"] == "Deployment" and old is not None:
            held["status"] = old.get("status") or {}
        self.objects[obj["kind"]] = held
        return obj

    def roll_out(self, ready: int = 1) -> None:
        """The Deployment controller finishes the rollout of the applied template."""
        dep = self.objects["Deployment"]
        dep["metadata"]["generation"] = 1
        dep["status"] = {"observedGeneration": 1, "replicas": ready, "updatedReplicas": ready,
                         "availableReplicas": ready, "readyReplicas": ready}

    def version(self) -> str:
        return self.objects["Deployment"]["spec"]["template"]["metadata"]["labels"][
            LABEL_MODEL_VERSION]


class Registry:
    def __init__(self, answer: Resolution) -> None:
        self.answer = answer
        self.asked = 0

    def __call__(self, spec: Any) -> Resolution:
        self.asked += 1
        return self.answer


class Clock:
    def __init__(self) -> None:
        self.t = 1000.0

    def __call__(self) -> float:
        return self.t


@pytest.fixture
def world() -> tuple[FakeKube, Registry, Clock]:
    return FakeKube(), Registry(ok("1")), Clock()


def tick(world, memo, cr=None, seen_status=None):
    kube, registry, clock = world
    cr = cr or make_cr()
    if seen_status is not None:
        cr = {**cr, "status": seen_status}
    return reconcile.tick(cr, memo, CONFIG, kube, resolve=registry, clock=clock, now=NOW)


def cond(status: dict, type_: str) -> tuple[str, str]:
    found = c.get_condition(status["conditions"], type_)
    assert found is not None
    return found["status"], found["reason"]


def new_memo() -> reconcile.TickMemory:
    return reconcile.TickMemory()


def test_first_tick_asks_the_registry_and_applies_both_children(world) -> None:
    kube, registry, _ = world
    memo = new_memo()
    result = tick(world, memo)
    assert registry.asked == 1
    assert kube.calls == [("get", "Deployment"), ("get", "Service"), ("apply", "Deployment"),
                          ("apply", "Service"),
                          # one replica, no autoscaling: none wanted, and none there
                          ("get", "PodDisruptionBudget"), ("get", "HorizontalPodAutoscaler")]
    assert kube.version() == "1"
    assert [(e.type, e.reason) for e in result.events] == [("Normal", "RolloutStarted")]
    assert cond(result.status, "Progressing") == ("True", "RollingOut")
    assert result.status_patch == result.status  # nothing was seen before


def test_later_ticks_follow_the_rollout_without_asking_again(world) -> None:
    kube, registry, clock = world
    memo = new_memo()
    first = tick(world, memo)
    kube.roll_out()
    kube.calls.clear()
    clock.t += 2
    done = tick(world, memo, seen_status=first.status)
    assert registry.asked == 1  # not due yet
    assert kube.calls == [("get", "Deployment")]  # the Service is known to be ours and current
    assert cond(done.status, "Ready") == ("True", "Serving")
    assert [(e.type, e.reason) for e in done.events] == [("Normal", "RolloutComplete")]
    kube.calls.clear()
    clock.t += 2
    steady = tick(world, memo, seen_status=done.status)
    assert kube.calls == [("get", "Deployment")] and steady.events == ()
    assert steady.status_patch == {}


def test_a_due_poll_rechecks_the_service_and_restores_it(world) -> None:
    kube, registry, clock = world
    memo = new_memo()
    tick(world, memo)
    kube.roll_out()
    del kube.objects["Service"]  # deleted by hand
    kube.calls.clear()
    clock.t += CONFIG.poll_interval
    tick(world, memo)
    assert registry.asked == 2
    assert kube.calls == [("get", "Deployment"), ("get", "Service"), ("apply", "Service"),
                          ("get", "PodDisruptionBudget"), ("get", "HorizontalPodAutoscaler")]


def test_a_service_edit_is_reapplied_on_the_next_poll(world) -> None:
    kube, _, clock = world
    memo = new_memo()
    tick(world, memo)
    kube.roll_out()
    kube.objects["Service"]["metadata"]["annotations"][ANNOTATION_CONFIG_HASH] = "stale"
    clock.t += CONFIG.poll_interval
    kube.calls.clear()
    tick(world, memo)
    on_a_poll = [("get", "PodDisruptionBudget"), ("get", "HorizontalPodAutoscaler")]  # none asked
    assert kube.calls == [("get", "Deployment"), ("get", "Service"), ("apply", "Service"),
                          *on_a_poll]
    kube.calls.clear()
    clock.t += CONFIG.poll_interval
    tick(world, memo)
    assert kube.calls == [("get", "Deployment"), ("get", "Service"), *on_a_poll]  # read only


def test_our_own_last_status_wins_over_a_stale_one(world) -> None:
    kube, registry, clock = world
    memo = new_memo()
    first = tick(world, memo)
    kube.roll_out()
    clock.t += 2
    # the watch has not delivered our first write yet: the CR still shows no status
    done = tick(world, memo, seen_status={})
    assert [(e.type, e.reason) for e in done.events] == [("Normal", "RolloutComplete")]
    assert done.status["desiredVersion"] == first.status["desiredVersion"] == "1"


def test_a_foreign_deployment_is_a_conflict_and_nothing_is_written(world) -> None:
    kube, _, _ = world
    kube.objects["Deployment"] = {"metadata": {"name": "iris", "ownerReferences": []}}
    result = tick(world, new_memo())
    assert kube.calls == [("get", "Deployment"), ("list", "Pod")]  # no Service read, nothing applied
    assert cond(result.status, "Degraded") == ("True", "NameConflict")
    assert "a Deployment named iris" in c.get_condition(result.status["conditions"],
                                                        "Degraded")["message"]


def test_a_foreign_service_is_a_conflict_and_nothing_is_written(world) -> None:
    kube, _, _ = world
    kube.objects["Service"] = {"metadata": {"name": "iris", "ownerReferences": [
        {"uid": "someone-else", "controller": True}]}}
    result = tick(world, new_memo())
    assert kube.calls == [("get", "Deployment"), ("get", "Service")]
    assert cond(result.status, "Degraded") == ("True", "NameConflict")
    assert "a Service named iris" in c.get_condition(result.status["conditions"],
                                                     "Degraded")["message"]
    assert [(e.type, e.reason) for e in result.events] == [("Warning", "NameConflict")]


def test_a_service_we_control_is_not_a_conflict(world) -> None:
    kube, _, _ = world
    kube.objects["Service"] = {"metadata": {"name": "iris", "ownerReferences": [
        {"uid": UID, "controller": True}]}}
    result = tick(world, new_memo())
    assert cond(result.status, "Degraded") == ("False", "AsExpected")
    assert ("apply", "Service") in kube.calls


EVIL = {"model": "iris", "trackingUri": "http://evil:5000"}


def test_a_tracking_uri_not_allowed_touches_neither_the_registry_nor_the_children(world) -> None:
    kube, registry, clock = world
    memo = new_memo()
    result = tick(world, memo, cr=make_cr(EVIL))
    assert registry.asked == 0 and kube.calls == []
    for type_ in ("Ready", "Progressing"):
        assert cond(result.status, type_) == ("False", "InvalidSpec")
    assert cond(result.status, "Degraded") == ("True", "InvalidSpec")
    assert cond(result.status, "Available") == ("False", "NothingServing")
    message = c.get_condition(result.status["conditions"], "Degraded")["message"]
    assert message.startswith("spec.trackingUri 'http://evil:5000' is not one this operator may use")
    assert [(e.type, e.reason) for e in result.events] == [("Warning", "InvalidSpec")]
    clock.t += 2
    again = tick(world, memo, cr=make_cr(EVIL), seen_status=result.status)
    assert again.events == () and again.status_patch == {} and registry.asked == 0
    fixed = tick(world, memo, cr=make_cr(generation=2), seen_status=again.status)
    assert registry.asked == 1 and kube.version() == "1"
    assert cond(fixed.status, "Degraded") == ("False", "AsExpected")


def test_an_edit_to_a_tracking_uri_not_allowed_keeps_what_serves(world) -> None:
    kube, registry, clock = world
    memo = new_memo()
    first = tick(world, memo)
    kube.roll_out()
    clock.t += 2
    done = tick(world, memo, seen_status=first.status)
    kube.calls.clear()
    refused = tick(world, memo, cr=make_cr(EVIL, generation=2), seen_status=done.status)
    assert kube.calls == [] and registry.asked == 1
    assert cond(refused.status, "Available") == ("True", "Serving")  # still says what serves
    assert cond(refused.status, "Degraded") == ("True", "InvalidSpec")
    assert refused.status["observedGeneration"] == 2
    # the rest describes what runs, from the last spec acted on
    for key in ("trackingUri", "servingVersion", "lastGoodVersion", "url"):
        assert refused.status[key] == done.status[key]


def test_a_refused_deployment_is_reported_and_retried_with_backoff(world) -> None:
    kube, _, clock = world
    kube.refuse = ApiException(status=422, reason="Unprocessable")
    kube.refuse.body = '{"message": "spec.replicas: Invalid value"}'
    memo = new_memo()
    first = tick(world, memo)
    for type_ in ("Ready", "Progressing", "Degraded"):
        assert cond(first.status, type_)[1] == "ApplyFailed"
    assert cond(first.status, "Available") == ("False", "NothingServing")
    message = c.get_condition(first.status["conditions"], "Degraded")["message"]
    assert "spec.replicas: Invalid value" in message and "retrying in 5s" in message
    assert [(e.type, e.reason) for e in first.events][-1] == ("Warning", "ApplyFailed")
    assert ("apply", "Service") in kube.calls  # the Service does not depend on the Deployment
    kube.calls.clear()
    clock.t += 2
    waiting = tick(world, memo, seen_status=first.status)
    assert ("apply", "Deployment") not in kube.calls  # within the backoff: not tried
    assert cond(waiting.status, "Degraded") == ("True", "ApplyFailed")
    clock.t += 5
    kube.refuse = None
    kube.calls.clear()
    tick(world, memo, seen_status=waiting.status)
    assert ("apply", "Deployment") in kube.calls and kube.version() == "1"


@pytest.mark.parametrize("status", [409, 500, None])
def test_a_transient_refusal_raises_and_the_poll_is_not_forgotten(world, status) -> None:
    kube, registry, clock = world
    kube.refuse = ApiException(status=status, reason="busy")
    memo = new_memo()
    with pytest.raises(ApiException):
        tick(world, memo)
    kube.refuse = None
    clock.t += 2
    tick(world, memo)
    assert registry.asked == 1  # the answer of the tick that raised is kept
    assert kube.version() == "1"


def test_registry_trouble_backs_off_and_keeps_what_runs(world) -> None:
    kube, registry, clock = world
    memo = new_memo()
    tick(world, memo)
    kube.roll_out()
    registry.answer = DOWN
    clock.t += CONFIG.poll_interval
    down = tick(world, memo)
    assert registry.asked == 2 and kube.version() == "1"
    assert cond(down.status, "Degraded") == ("True", "MlflowUnreachable")
    clock.t += CONFIG.poll_interval
    tick(world, memo)
    assert registry.asked == 3


def test_what_a_tick_remembers(world) -> None:
    kube, _, clock = world
    memory = new_memo()
    first = tick(world, memory)
    assert memory.status == first.status
    assert memory.poll is not None and memory.poll.resolution == ok("1")
    assert memory.service_hash == kube.objects["Service"]["metadata"]["annotations"][
        ANNOTATION_CONFIG_HASH]
    assert memory.refused is None
    kube.refuse = ApiException(status=422, reason="Unprocessable")
    kube.objects.clear()  # the Deployment is gone: applied again, and refused
    clock.t += 2
    tick(world, memory)
    refused = memory.refused
    assert refused is not None and (refused.key[0], refused.attempts) == ("1", 1)
    assert refused.until == clock.t + 5
    clock.t = refused.until
    tick(world, memory)
    assert memory.refused.attempts == 2 and memory.refused.until == clock.t + CONFIG.max_backoff
    kube.refuse = None
    clock.t = memory.refused.until
    tick(world, memory)
    assert memory.refused is None


# ------------------------------------------------------------------ scaling and optional children (#18)

AUTOSCALED = {"model": "iris", "autoscaling": {"minReplicas": 1, "maxReplicas": 4}}


def writes(kube: FakeKube) -> list[tuple[str, str]]:
    return [call for call in kube.calls if call[0] in ("apply", "delete")]


def serving_one(world, memo, cr=None, ready: int = 1) -> dict:
    """Ticks until version 1 serves; returns the last status."""
    kube, _, clock = world
    first = tick(world, memo, cr=cr)
    kube.roll_out(ready)
    clock.t += 2
    done = tick(world, memo, cr=cr, seen_status=first.status)
    assert cond(done.status, "Ready") == ("True", "Serving")
    return done.status


def test_a_replicas_only_change_rescales_the_deployment_without_a_rollout(world) -> None:
    kube, registry, clock = world
    memo = new_memo()
    status = serving_one(world, memo)
    before = copy.deepcopy(kube.objects["Deployment"])
    kube.calls.clear()
    clock.t += 2
    scaled_cr = make_cr({"model": "iris", "replicas": 3}, generation=2)
    scaled = tick(world, memo, cr=scaled_cr, seen_status=status)
    assert registry.asked == 1  # not a new registry question
    assert kube.calls == [("get", "Deployment"), ("apply", "Deployment"),
                          # more than one replica: a disruption budget (none there yet)
                          ("get", "PodDisruptionBudget"), ("apply", "PodDisruptionBudget")]
    after = kube.objects["Deployment"]
    assert after["spec"]["replicas"] == 3 and kube.version() == "1"
    # the same Deployment but for its replicas: same config hash, same pods
    assert after["metadata"]["annotations"] == before["metadata"]["annotations"]
    assert {**after["spec"], "replicas": 1} == before["spec"]
    assert scaled.events == ()
    assert cond(scaled.status, "Ready") == ("True", "Serving")
    assert scaled.status["observedGeneration"] == 2
    # the Deployment controller adds two pods, one of them ready yet: still serving, nothing written
    kube.objects["Deployment"]["status"] = {
        "observedGeneration": 0, "replicas": 3, "updatedReplicas": 3, "availableReplicas": 1,
        "readyReplicas": 1}
    kube.calls.clear()
    clock.t += 2
    starting = tick(world, memo, cr=scaled_cr, seen_status=scaled.status)
    assert writes(kube) == [] and starting.events == ()
    assert cond(starting.status, "Ready") == ("True", "Serving")
    assert (starting.status["replicas"], starting.status["readyReplicas"]) == (3, 1)
    kube.roll_out(ready=3)
    kube.calls.clear()
    clock.t += 2
    done = tick(world, memo, cr=scaled_cr, seen_status=starting.status)
    assert writes(kube) == [] and done.events == ()
    assert (done.status["replicas"], done.status["readyReplicas"]) == (3, 3)


def test_autoscaling_applies_an_hpa_and_a_pdb_once(world) -> None:
    kube, _, clock = world
    memo = new_memo()
    first = tick(world, memo, cr=make_cr(AUTOSCALED))
    assert kube.calls[-4:] == [("get", "PodDisruptionBudget"), ("apply", "PodDisruptionBudget"),
                               ("get", "HorizontalPodAutoscaler"), ("apply", "HorizontalPodAutoscaler")]
    hpa = kube.objects["HorizontalPodAutoscaler"]
    assert hpa["spec"]["scaleTargetRef"] == {"apiVersion": "mlship.io/v1alpha1",
                                             "kind": "ModelDeployment", "name": "iris"}
    assert (hpa["spec"]["minReplicas"], hpa["spec"]["maxReplicas"]) == (1, 4)
    assert kube.objects["PodDisruptionBudget"]["spec"]["maxUnavailable"] == 1
    assert kube.objects["Deployment"]["spec"]["replicas"] == 1
    kube.roll_out()
    kube.calls.clear()
    clock.t += 2
    tick(world, memo, cr=make_cr(AUTOSCALED), seen_status=first.status)
    assert kube.calls == [("get", "Deployment")]  # remembered: neither read nor written again
    # a due poll does not write them either
    kube.calls.clear()
    clock.t += CONFIG.poll_interval
    tick(world, memo, cr=make_cr(AUTOSCALED))
    assert writes(kube) == []


def test_the_autoscaler_moving_replicas_rescales_without_touching_the_hpa(world) -> None:
    kube, _, clock = world
    memo = new_memo()
    status = serving_one(world, memo, cr=make_cr(AUTOSCALED))
    kube.calls.clear()
    clock.t += 2
    moved = {**AUTOSCALED, "replicas": 3}  # written by the HPA through the scale subresource
    scaled = tick(world, memo, cr=make_cr(moved, generation=2), seen_status=status)
    assert writes(kube) == [("apply", "Deployment")]
    assert kube.objects["Deployment"]["spec"]["replicas"] == 3 and kube.version() == "1"
    assert scaled.events == () and cond(scaled.status, "Ready") == ("True", "Serving")


def test_a_changed_autoscaling_bound_reapplies_only_the_hpa(world) -> None:
    kube, _, clock = world
    memo = new_memo()
    status = serving_one(world, memo, cr=make_cr(AUTOSCALED))
    kube.calls.clear()
    clock.t += 2
    wider = {"model": "iris", "autoscaling": {"minReplicas": 1, "maxReplicas": 8}}
    tick(world, memo, cr=make_cr(wider, generation=2), seen_status=status)
    assert writes(kube) == [("apply", "HorizontalPodAutoscaler")]
    assert kube.objects["HorizontalPodAutoscaler"]["spec"]["maxReplicas"] == 8


def test_removing_autoscaling_deletes_the_hpa_and_with_one_replica_the_pdb(world) -> None:
    kube, _, clock = world
    memo = new_memo()
    status = serving_one(world, memo, cr=make_cr(AUTOSCALED))
    kube.calls.clear()
    clock.t += 2
    tick(world, memo, cr=make_cr(generation=2), seen_status=status)
    assert writes(kube) == [("delete", "PodDisruptionBudget"), ("delete", "HorizontalPodAutoscaler")]
    assert "HorizontalPodAutoscaler" not in kube.objects
    assert "PodDisruptionBudget" not in kube.objects
    kube.calls.clear()
    clock.t += 0.5
    tick(world, memo, cr=make_cr(generation=2), seen_status=status)
    assert writes(kube) == []  # remembered as absent: not even read between polls
    assert not {("get", "HorizontalPodAutoscaler"), ("get", "PodDisruptionBudget")} & set(kube.calls)
    kube.calls.clear()
    clock.t += CONFIG.poll_interval
    tick(world, memo, cr=make_cr(generation=2), seen_status=status)
    assert writes(kube) == []  # a poll reads them again, and finds nothing to do
    assert {("get", "HorizontalPodAutoscaler"), ("get", "PodDisruptionBudget")} <= set(kube.calls)


def test_an_autoscaler_deleted_by_hand_is_restored_on_the_next_poll(world) -> None:
    kube, _, clock = world
    memo = new_memo()
    cr = make_cr(AUTOSCALED)
    status = serving_one(world, memo, cr=cr)
    del kube.objects["HorizontalPodAutoscaler"]
    kube.calls.clear()
    clock.t += CONFIG.poll_interval
    tick(world, memo, cr=cr, seen_status=status)
    assert writes(kube) == [("apply", "HorizontalPodAutoscaler")]
    assert "HorizontalPodAutoscaler" in kube.objects


def test_removing_autoscaling_with_more_than_one_replica_keeps_the_pdb(world) -> None:
    kube, _, clock = world
    memo = new_memo()
    cr = make_cr({**AUTOSCALED, "replicas": 3})
    status = serving_one(world, memo, cr=cr, ready=3)
    kube.calls.clear()
    clock.t += 2
    tick(world, memo, cr=make_cr({"model": "iris", "replicas": 3}, generation=2), seen_status=status)
    assert writes(kube) == [("delete", "HorizontalPodAutoscaler")]
    assert "PodDisruptionBudget" in kube.objects and "HorizontalPodAutoscaler" not in kube.objects


def foreign(kind: str) -> dict[str, Any]:
    return {"kind": kind, "metadata": {"name": "iris", "uid": "theirs", "ownerReferences": [
        {"uid": "someone-else", "controller": True}]}, "spec": {"maxReplicas": 9}}


def test_a_foreign_hpa_of_the_same_name_is_left_alone(world) -> None:
    kube, _, clock = world
    kube.objects["HorizontalPodAutoscaler"] = foreign("HorizontalPodAutoscaler")
    theirs = copy.deepcopy(kube.objects["HorizontalPodAutoscaler"])
    memo = new_memo()
    status = serving_one(world, memo, cr=make_cr(AUTOSCALED))
    assert ("apply", "HorizontalPodAutoscaler") not in kube.calls
    assert ("apply", "PodDisruptionBudget") in kube.calls  # ours is still written
    assert kube.objects["HorizontalPodAutoscaler"] == theirs
    # nor deleted once the spec asks for none
    kube.calls.clear()
    clock.t += 2
    tick(world, memo, cr=make_cr(generation=2), seen_status=status)
    assert ("delete", "HorizontalPodAutoscaler") not in kube.calls
    assert kube.objects["HorizontalPodAutoscaler"] == theirs


def test_a_foreign_hpa_is_not_deleted_when_none_is_wanted(world) -> None:
    kube, _, _ = world
    kube.objects["HorizontalPodAutoscaler"] = foreign("HorizontalPodAutoscaler")
    tick(world, new_memo())
    assert ("get", "HorizontalPodAutoscaler") in kube.calls
    assert writes(kube) == [("apply", "Deployment"), ("apply", "Service")]


def test_a_restarted_operator_reads_its_current_children_and_writes_none(world) -> None:
    kube, _, _ = world
    serving_one(world, new_memo(), cr=make_cr(AUTOSCALED))
    kube.calls.clear()
    tick(world, new_memo(), cr=make_cr(AUTOSCALED))  # a fresh memo: nothing remembered
    assert ("get", "HorizontalPodAutoscaler") in kube.calls
    assert ("get", "PodDisruptionBudget") in kube.calls
    assert writes(kube) == []
