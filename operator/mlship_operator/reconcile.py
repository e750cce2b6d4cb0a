"""One reconciliation pass for one ModelDeployment: read, decide (pure), act."""

from __future__ import annotations

import copy
import dataclasses
import logging
import time
from collections.abc import Callable, Mapping
from typing import Any

from kubernetes.client.exceptions import ApiException

from mlship.traffic import Report, Route

from . import builders, canary, conditions, polling, registry, routing
from .config import Config
from .conflict import name_conflict
from .decide import Decision, decide, refuse, status_patch
from .events import EventSpec
from .kube import Kube, api_error_message
from .report import apply_failed_reports
from .rollout import Observed, Phase, controlled_by, needs_pod_check, observe
from .spec import InvalidSpec, ServingSpec, generation, serving_spec

_LOG = logging.getLogger(__name__)
ABSENT = "absent"


@dataclasses.dataclass(frozen=True)
class Refusal:
    """The API server refused a Deployment: the same one is not sent again before `until`."""

    key: tuple[str | None, str | None]
    """The refused Deployment's model version and config hash."""
    until: float
    attempts: int
    message: str


@dataclasses.dataclass
class TickMemory:
    """What one ModelDeployment's ticks remember from one to the next (kept in its kopf memo).

    Mutable on purpose: a tick records what it learns as it goes, so that a registry answer
    or a refusal is not forgotten when a later call of the same tick raises (kopf then retries
    the tick). Each field's value is immutable.
    """

    status: Mapping[str, Any] | None = None
    """The status this operator last wrote: it wins over a watch event not yet arrived."""
    poll: polling.PollState | None = None
    service_hash: str | None = None
    """The config hash of our Service as last applied or read; None when it must be applied."""
    refused: Refusal | None = None
    optional: Mapping[str, str] = dataclasses.field(default_factory=dict)
    """Per kind of optional child (autoscaler, disruption budget): the config hash last applied,
    or ABSENT once it was removed. A kind not in here is read before it is written."""
    report: Report | None = None
    """The stable pods' figures for the canary step last pushed."""
    routed: bool = False
    """A route was pushed to the stable pods and not yet withdrawn."""
    routing_secret: bool = False
    """The Secret of the stable pods' routing token was created (or found)."""
    canary_service_hash: str | None = None
    """The config hash of the canary's Service as last applied; None when it must be applied."""


@dataclasses.dataclass(frozen=True)
class TickResult:
    status: dict[str, Any]
    status_patch: dict[str, Any]
    events: tuple[EventSpec, ...]


def _apply_failure(decision: Decision, message: str, generation: int, now: str) -> Decision:
    """The same decision, but reporting that the API server refused the Deployment."""
    conds = conditions.set_conditions(
        decision.status.get("conditions"), apply_failed_reports(message),
        generation=generation, now=now,
    )
    return dataclasses.replace(decision, status={**decision.status, "conditions": conds})


def tick(
    cr: Mapping[str, Any],
    memory: TickMemory,
    config: Config,
    kube: Kube,
    *,
    resolve: Callable[..., registry.Resolution] = registry.resolve,
    clock: Callable[[], float] = time.monotonic,
    now: str | None = None,
    logger: logging.Logger | logging.LoggerAdapter[logging.Logger] = _LOG,
) -> TickResult:
    # A private copy: what the tick keeps (the status, the spec's resources) must not share
    # structure with kopf's body.
    cr = copy.deepcopy(dict(cr))
    now = now or conditions.now_rfc3339()
    seen_status = cr.get("status") or {}
    # Our own last write wins over a watch event that may not have arrived yet: deciding
    # on a stale status could forget a rollback and retry the bad version.
    previous = memory.status or seen_status
    try:
        spec = serving_spec(cr, config)
    except InvalidSpec as err:
        # Neither the registry nor the children are touched: what runs keeps running.
        refused = refuse(status=previous, message=str(err), generation=generation(cr), now=now)
        if refused.events:
            logger.warning("%s", err)
        memory.status = refused.status
        return TickResult(refused.status, status_patch(seen_status, refused.status),
                          refused.events)

    polled = polling.is_due(memory.poll, spec.registry_key, clock())
    if polled:
        answer = resolve(spec)
        memory.poll = polling.after_poll(
            memory.poll, spec.registry_key, answer,
            now=clock(), interval=spec.poll_interval, max_backoff=config.max_backoff,
        )
    resolution = memory.poll.resolution if memory.poll is not None else None
    if resolution is None:
        raise RuntimeError("no registry answer after polling: this is a bug")
    if polled and not resolution.ok:
        logger.warning("registry: %s", resolution.message)

    deployment = kube.get_deployment(spec.namespace, spec.name)
    pods = None
    if needs_pod_check(deployment):
        pods = kube.list_pods(spec.namespace, builders.selector_labels(spec.name))
    observed = observe(
        deployment, pods, owner_uid=spec.uid, crashloop_restarts=config.crashloop_restarts
    )

    state = canary.state_from_status(previous)
    canary_deployment = None
    if spec.rollout.staged or state is not None or memory.routed:
        canary_deployment = kube.get_deployment(spec.namespace, builders.canary_name(spec.name))
    candidate = observe(
        canary_deployment,
        kube.list_pods(spec.namespace, builders.selector_labels(builders.canary_name(spec.name)))
        if needs_pod_check(canary_deployment) else None,
        owner_uid=spec.uid, crashloop_restarts=config.crashloop_restarts,
    )
    # asked only while it decides anything: before a canary's first step
    routable = (state is not None and state.phase == canary.STARTING
                and candidate.phase is Phase.COMPLETE
                and kube.has_ready_endpoint(spec.namespace, builders.canary_name(spec.name)))
    if spec.rollout.staged and not memory.routing_secret:
        # before any stable pod that needs its token is written
        kube.create(builders.build_routing_secret(spec, config.routing_key))
        memory.routing_secret = True

    template = builders.deployment_template(spec, config)
    service = builders.build_service(spec, config)
    service_hash = builders.config_hash(service)
    # A Service is read on a poll or when ours changed, and not when the Deployment's name
    # is taken already (nothing will be written then).
    read_service = (polled or memory.service_hash != service_hash) and observed.owned
    existing = kube.get_service(spec.namespace, spec.name) if read_service else None
    conflict = name_conflict(spec, observed, existing)
    if read_service and conflict is None:
        current = builders.config_hash(existing) == service_hash
        memory.service_hash = service_hash if current else None

    decision = decide(
        spec=spec, status=previous, resolution=resolution, observed=observed,
        config_hash=template.config_hash,
        url=builders.service_url(spec, config), now=now, conflict=conflict,
        candidate=candidate, routable=routable, report=memory.report,
    )

    if decision.apply_version is not None:
        decision = _apply_deployment(template.for_version(decision.apply_version), config, kube,
                                     memory, decision, spec.generation, now, clock, logger)
    elif _only_scaled(observed, template.config_hash, spec.replicas) and not conflict:
        assert observed.version is not None  # noqa: S101 - _only_scaled checked it
        kube.apply(template.for_version(observed.version))
        logger.info("scaled the Deployment from %s to %d replicas",
                    observed.desired_replicas, spec.replicas)
    deployed = decision.apply_version is not None or observed.exists
    if deployed and not conflict and memory.service_hash != service_hash:
        kube.apply(service)
        memory.service_hash = service_hash
    if polled:
        memory.optional = {}  # read them again: restores one deleted by hand, as the Service
    if deployed and not conflict:
        for kind, child in (("PodDisruptionBudget", builders.build_pdb(spec)),
                            ("HorizontalPodAutoscaler", builders.build_hpa(spec))):
            _sync_optional(kind, child, spec.namespace, spec.name, spec.uid, kube, memory, logger)

    if not conflict:
        _sync_canary(spec, config, kube, memory, decision, candidate, canary_deployment,
                     had_rollout="rollout" in previous, logger=logger)

    memory.status = decision.status
    return TickResult(
        status=decision.status,
        status_patch=status_patch(seen_status, decision.status),
        events=decision.events,
    )


def _sync_canary(
    spec: ServingSpec,
    config: Config,
    kube: Kube,
    memory: TickMemory,
    decision: Decision,
    candidate: Observed,
    canary_deployment: Mapping[str, Any] | None,
    *,
    had_rollout: bool,
    logger: logging.Logger | logging.LoggerAdapter[logging.Logger],
) -> None:
    """The canary's Deployment and Service as the decision wants them, and its share of
    traffic pushed to the stable pods (whose figures the next tick judges)."""
    name = builders.canary_name(spec.name)
    if decision.candidate is not None:
        template = builders.deployment_template(spec, config, canary=True)
        if (candidate.version, candidate.config_hash) != (decision.candidate, template.config_hash):
            kube.apply(template.for_version(decision.candidate))
            logger.info("applied the canary Deployment with model version %s", decision.candidate)
        service = builders.build_service(spec, config, canary=True)
        if memory.canary_service_hash != builders.config_hash(service):
            kube.apply(service)
            memory.canary_service_hash = builders.config_hash(service)
    else:
        if canary_deployment is not None and candidate.owned:
            kube.delete("Deployment", spec.namespace, name, canary_deployment["metadata"]["uid"])
            logger.info("deleted the canary Deployment")
        # The Service stays while the strategy stages versions: deleted and created again, its
        # name would not resolve for as long as the cluster DNS caches the answer that it did not
        # exist.
        if not spec.rollout.staged and memory.canary_service_hash is not None:
            existing = kube.get_service(spec.namespace, name)
            if existing is not None and controlled_by(existing, spec.uid):
                kube.delete("Service", spec.namespace, name, existing["metadata"]["uid"])
                logger.info("deleted the canary Service")
            memory.canary_service_hash = None

    route = None
    if decision.route is not None:
        rollout_id, version, weight, mode = decision.route
        route = Route(rollout=rollout_id, candidate=builders.service_url(spec, config, canary=True),
                      version=version, share=weight / 100, mode=mode)
    elif not (memory.routed or had_rollout):
        return
    token = builders.routing_token(config.routing_key, spec.uid)
    ips = routing.ready_pod_ips(kube.list_pods(spec.namespace, builders.selector_labels(spec.name)))
    memory.report = routing.push(ips, route, token, logger)
    memory.routed = route is not None


def _apply_deployment(
    deployment: dict[str, Any],
    config: Config,
    kube: Kube,
    memory: TickMemory,
    decision: Decision,
    generation: int,
    now: str,
    clock: Callable[[], float],
    logger: logging.Logger | logging.LoggerAdapter[logging.Logger],
) -> Decision:
    """Write the Deployment; a refusal is reported in the status and retried with backoff."""
    key = (decision.apply_version, builders.config_hash(deployment))
    refused = memory.refused if memory.refused and memory.refused.key == key else None
    if refused and clock() < refused.until:
        return _apply_failure(decision, refused.message, generation, now)
    try:
        kube.apply(deployment)
    except ApiException as err:
        if err.status == 409 or err.status is None or err.status >= 500:
            raise  # transient (e.g. the object is being deleted): kopf retries the tick
        attempts = refused.attempts + 1 if refused else 1
        delay = polling.backoff_delay(5.0, attempts, config.max_backoff)
        message = (
            f"the API server refused the Deployment for version {decision.apply_version}:"
            f" {api_error_message(err)}; retrying in {delay:g}s"
        )
        memory.refused = Refusal(key, clock() + delay, attempts, message)
        logger.error("%s", message)
        failed = _apply_failure(decision, message, generation, now)
        return dataclasses.replace(
            failed, events=(*failed.events, EventSpec("Warning", conditions.APPLY_FAILED, message))
        )
    memory.refused = None
    logger.info("applied Deployment with model version %s", decision.apply_version)
    return decision


def _only_scaled(observed: Observed, config_hash: str, replicas: int) -> bool:
    """Our Deployment is in sync with the spec but for its replicas."""
    return (
        observed.exists and observed.owned and observed.version is not None
        and observed.config_hash == config_hash and observed.desired_replicas != replicas
    )


def _sync_optional(
    kind: str,
    child: dict[str, Any] | None,
    namespace: str,
    name: str,
    owner_uid: str,
    kube: Kube,
    memory: TickMemory,
    logger: logging.Logger | logging.LoggerAdapter[logging.Logger],
) -> None:
    """Apply `child`, or delete ours of that kind when the spec wants none. Written (and read
    first) only when it changed since the last tick that wrote it; another owner's object of
    that name is left alone."""
    want = (builders.config_hash(child) if child is not None else None) or ABSENT
    if memory.optional.get(kind) == want:
        return
    existing = kube.get(kind, namespace, name)
    if existing is not None and not controlled_by(existing, owner_uid):
        logger.warning("a %s named %s exists and is not ours: left alone", kind, name)
    elif child is not None:
        if builders.config_hash(existing) != want:
            kube.apply(child)
            logger.info("applied %s %s", kind, name)
    elif existing is not None:
        kube.delete(kind, namespace, name, existing["metadata"]["uid"])
        logger.info("deleted %s %s: the spec no longer asks for one", kind, name)
    memory.optional = {**memory.optional, kind: want}
