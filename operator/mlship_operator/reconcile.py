"""One reconciliation pass for one ModelDeployment: read, decide (pure), act."""

from __future__ import annotations

import copy
import dataclasses
import logging
import time
from collections.abc import Callable, Mapping, MutableMapping
from typing import Any

from kubernetes.client.exceptions import ApiException

from . import builders, conditions, polling, registry
from .config import Config
from .conflict import name_conflict
from .decide import Decision, decide, status_patch
from .events import EventSpec
from .kube import Kube, api_error_message
from .rollout import needs_pod_check, observe
from .spec import serving_spec

_LOG = logging.getLogger(__name__)


@dataclasses.dataclass(frozen=True)
class TickResult:
    status: dict[str, Any]
    status_patch: dict[str, Any]
    events: tuple[EventSpec, ...]


def _apply_failure(decision: Decision, message: str, generation: int, now: str) -> Decision:
    """The same decision, but reporting that the API server refused the Deployment."""
    reports = {
        type_: conditions.Report(state, conditions.APPLY_FAILED, message)
        for type_, state in (
            (conditions.READY, False), (conditions.PROGRESSING, False), (conditions.DEGRADED, True)
        )
    }
    conds = conditions.set_conditions(
        decision.status.get("conditions"), reports, generation=generation, now=now
    )
    return dataclasses.replace(decision, status={**decision.status, "conditions": conds})


def tick(
    cr: Mapping[str, Any],
    memo: MutableMapping[str, Any],
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
    spec = serving_spec(cr, config)
    now = now or conditions.now_rfc3339()
    seen_status = cr.get("status") or {}
    # Our own last write wins over a watch event that may not have arrived yet: deciding
    # on a stale status could forget a rollback and retry the bad version.
    previous = memo.get("status") or seen_status

    state = memo.get("poll")
    polled = polling.is_due(state, spec.registry_key, clock())
    if polled:
        answer = resolve(spec)
        state = polling.after_poll(
            state, spec.registry_key, answer,
            now=clock(), interval=spec.poll_interval, max_backoff=config.max_backoff,
        )
        memo["poll"] = state
    resolution = state.resolution if state is not None else None
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

    template = builders.deployment_template(spec, config)
    service = builders.build_service(spec, config)
    service_hash = builders.config_hash(service)
    # A Service is read on a poll or when ours changed, and not when the Deployment's name
    # is taken already (nothing will be written then).
    read_service = (polled or memo.get("service_hash") != service_hash) and observed.owned
    existing = kube.get_service(spec.namespace, spec.name) if read_service else None
    conflict = name_conflict(spec, observed, existing)
    if read_service and conflict is None:
        if builders.config_hash(existing) != service_hash:
            memo.pop("service_hash", None)
        else:
            memo["service_hash"] = service_hash

    decision = decide(
        spec=spec, status=previous, resolution=resolution, observed=observed,
        config_hash=template.config_hash,
        url=builders.service_url(spec, config), now=now, conflict=conflict,
    )

    if decision.apply_version is not None:
        decision = _apply_deployment(template.for_version(decision.apply_version), config, kube,
                                     memo, decision, spec.generation, now, clock, logger)
    deployed = decision.apply_version is not None or observed.exists
    if deployed and not conflict and memo.get("service_hash") != service_hash:
        kube.apply(service)
        memo["service_hash"] = service_hash

    memo["status"] = decision.status
    return TickResult(
        status=decision.status,
        status_patch=status_patch(seen_status, decision.status),
        events=decision.events,
    )


def _apply_deployment(
    deployment: dict[str, Any],
    config: Config,
    kube: Kube,
    memo: MutableMapping[str, Any],
    decision: Decision,
    generation: int,
    now: str,
    clock: Callable[[], float],
    logger: logging.Logger | logging.LoggerAdapter[logging.Logger],
) -> Decision:
    """Write the Deployment; a refusal is reported in the status and retried with backoff."""
    key = (decision.apply_version, builders.config_hash(deployment))
    refused = memo.get("apply_refused")
    if refused and refused["key"] == key and clock() < refused["until"]:
        return _apply_failure(decision, refused["message"], generation, now)
    try:
        kube.apply(deployment)
    except ApiException as err:
        if err.status == 409 or err.status is None or err.status >= 500:
            raise  # transient (e.g. the object is being deleted): kopf retries the tick
        attempts = refused["attempts"] + 1 if refused and refused["key"] == key else 1
        delay = polling.backoff_delay(5.0, attempts, config.max_backoff)
        message = (
            f"the API server refused the Deployment for version {decision.apply_version}:"
            f" {api_error_message(err)}; retrying in {delay:g}s"
        )
        memo["apply_refused"] = {
            "key": key, "until": clock() + delay, "attempts": attempts, "message": message
        }
        logger.error("%s", message)
        failed = _apply_failure(decision, message, generation, now)
        return dataclasses.replace(
            failed, events=(*failed.events, EventSpec("Warning", conditions.APPLY_FAILED, message))
        )
    memo.pop("apply_refused", None)
    logger.info("applied Deployment with model version %s", decision.apply_version)
    return decision
