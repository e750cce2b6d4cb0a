"""What the child Deployment (and its pods) say about the rollout: pure observation."""

from __future__ import annotations

import dataclasses
import enum
from collections.abc import Iterable, Mapping
from typing import Any

from mlship.errors import clip

from . import resource as r

# Waiting reasons that mean the container will not start without a change to the pod.
_HOPELESS_WAITING = frozenset(
    {"ImagePullBackOff", "InvalidImageName", "ErrImageNeverPull", "CreateContainerConfigError"}
)
_MAX_DETAIL = 400
REPLICAS_NOT_READY = "ReplicasNotReady"


class Phase(enum.StrEnum):
    ABSENT = "Absent"
    PROGRESSING = "Progressing"
    COMPLETE = "Complete"
    FAILED = "Failed"


@dataclasses.dataclass(frozen=True)
class Observed:
    exists: bool = False
    owned: bool = True
    """False when an object of that name exists but another owner controls it."""
    version: str | None = None
    """The model version in the Deployment's pod template."""
    config_hash: str | None = None
    phase: Phase = Phase.ABSENT
    reason: str = ""
    message: str = ""
    ready_replicas: int = 0
    replicas: int = 0
    """The Deployment's pods (status.replicas): what the scale subresource reports."""
    desired_replicas: int | None = None
    """The Deployment's spec.replicas."""


def controlled_by(obj: Mapping[str, Any] | None, uid: str) -> bool:
    refs = ((obj or {}).get("metadata") or {}).get("ownerReferences") or []
    return any(ref.get("uid") == uid and ref.get("controller") for ref in refs)


def needs_pod_check(deployment: Mapping[str, Any] | None) -> bool:
    """Whether pods must be inspected: only while some replica is not updated and available."""
    if not deployment:
        return False
    meta, spec, status = (deployment.get(k) or {} for k in ("metadata", "spec", "status"))
    desired = int(spec.get("replicas", 1))
    return (
        int(status.get("observedGeneration") or 0) < int(meta.get("generation") or 0)
        or int(status.get("updatedReplicas") or 0) < desired
        or int(status.get("availableReplicas") or 0) < desired
        or int(status.get("replicas") or 0) != int(status.get("updatedReplicas") or 0)
        or int(status.get("unavailableReplicas") or 0) > 0
    )


def pod_failure(pod: Mapping[str, Any], crashloop_restarts: int) -> tuple[str, str] | None:
    """(reason, message) when a pod's serving container cannot become ready without help."""
    if (pod.get("metadata") or {}).get("deletionTimestamp"):
        return None
    pod_name = (pod.get("metadata") or {}).get("name", "?")
    for cs in (pod.get("status") or {}).get("containerStatuses") or []:
        waiting = (cs.get("state") or {}).get("waiting") or {}
        reason = waiting.get("reason", "")
        if reason in _HOPELESS_WAITING:
            detail = clip(waiting.get("message", ""), _MAX_DETAIL)
            return reason, f"pod {pod_name}: container {cs.get('name')} is {reason}: {detail}"
        restarts = int(cs.get("restartCount") or 0)
        if restarts >= crashloop_restarts and not cs.get("ready"):
            last = (cs.get("lastState") or {}).get("terminated") or {}
            exit_info = ""
            if last:
                exit_info = f"; last exit code {last.get('exitCode')} ({last.get('reason', '?')})"
                if last.get("message"):
                    exit_info += f": {clip(last['message'], _MAX_DETAIL)}"
            return (
                "CrashLoopBackOff",
                f"pod {pod_name}: container {cs.get('name')} restarted {restarts} times"
                f"{exit_info}",
            )
    return None


def observe(
    deployment: Mapping[str, Any] | None,
    pods: Iterable[Mapping[str, Any]] | None,
    *,
    owner_uid: str,
    crashloop_restarts: int,
) -> Observed:
    """Summarise the Deployment's rollout of its current pod template.

    `pods` are the pods of this instance (None when they were not listed); only those
    running the template's version are judged.
    """
    if not deployment:
        return Observed()
    if not controlled_by(deployment, owner_uid):
        return Observed(exists=True, owned=False)
    meta, spec, status = (deployment.get(k) or {} for k in ("metadata", "spec", "status"))
    template_labels = ((spec.get("template") or {}).get("metadata") or {}).get("labels") or {}
    version = template_labels.get(r.LABEL_MODEL_VERSION)
    desired = int(spec.get("replicas", 1))

    def result(phase: Phase, reason: str, message: str) -> Observed:
        return Observed(
            exists=True,
            version=version,
            config_hash=(meta.get("annotations") or {}).get(r.ANNOTATION_CONFIG_HASH),
            phase=phase,
            reason=reason,
            message=message,
            ready_replicas=int(status.get("readyReplicas") or 0),
            replicas=int(status.get("replicas") or 0),
            desired_replicas=desired,
        )

    generation = int(meta.get("generation") or 0)
    if int(status.get("observedGeneration") or 0) < generation:
        return result(
            Phase.PROGRESSING, "WaitingForController",
            f"the Deployment controller has not yet observed generation {generation}",
        )
    for pod in pods or ():
        labels = (pod.get("metadata") or {}).get("labels") or {}
        if labels.get(r.LABEL_MODEL_VERSION) != version:
            continue
        failure = pod_failure(pod, crashloop_restarts)
        if failure:
            return result(Phase.FAILED, *failure)
    for condition in status.get("conditions") or []:
        if condition.get("type") == "Progressing" and condition.get("reason") == (
            "ProgressDeadlineExceeded"
        ):
            return result(
                Phase.FAILED, "ProgressDeadlineExceeded",
                clip(condition.get("message") or "the rollout made no progress in time", _MAX_DETAIL),
            )
    updated = int(status.get("updatedReplicas") or 0)
    total = int(status.get("replicas") or 0)
    available = int(status.get("availableReplicas") or 0)
    if updated < desired:
        return result(
            Phase.PROGRESSING, "RollingOut",
            f"{updated} of {desired} replicas run version {version}",
        )
    if total > updated:
        return result(
            Phase.PROGRESSING, "RollingOut",
            f"{total - updated} replica(s) of the previous version are still terminating",
        )
    if available < updated:  # every pod runs the template: more were added, or one restarts
        return result(
            Phase.PROGRESSING, REPLICAS_NOT_READY,
            f"{available} of {updated} replicas of version {version} are ready",
        )
    return result(Phase.COMPLETE, "RolloutComplete", f"{available} of {desired} replicas ready")
