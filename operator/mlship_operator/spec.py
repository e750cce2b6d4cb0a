"""A ModelDeployment's spec, with the operator's defaults filled in.

The API server has already validated the object against the CRD schema; this applies
defaults, gives the fields types, and refuses what only the operator's configuration forbids.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from typing import Any
from urllib.parse import urlsplit, urlunsplit

from mlship.traffic import CANARY as CANARY_MODE
from mlship.traffic import SHADOW as SHADOW_MODE

from .config import Config
from .resource import ANNOTATION_ABORT, ANNOTATION_PAUSED, ANNOTATION_PROMOTE, DEFAULT_ALIAS

DEFAULT_INFERENCE_LOG_SAMPLE_RATE = 1.0
DEFAULT_INFERENCE_LOG_FLUSH_SECONDS = 10
DEFAULT_RESOURCES: dict[str, dict[str, str]] = {
    "requests": {"cpu": "100m", "memory": "256Mi"},
    "limits": {"memory": "1Gi"},
}


DEFAULT_CPU_UTILIZATION = 80
DEFAULT_AUTH_TOKEN_KEY = "token"  # noqa: S105 - the name of a Secret key


class InvalidSpec(ValueError):
    """The spec passed the CRD's schema but this operator will not act on it; says what to change."""


@dataclasses.dataclass(frozen=True)
class Autoscaling:
    """spec.autoscaling: a HorizontalPodAutoscaler moves spec.replicas (through the CR's scale
    subresource) between these bounds to keep the pods' CPU near the target."""

    min_replicas: int
    max_replicas: int
    cpu_utilization: int
    """Target average CPU use, percent of the serving container's CPU request."""
    scale_down_window: int | None = None
    """Seconds of lower load before scaling in; None keeps the autoscaler's default (300)."""


@dataclasses.dataclass(frozen=True)
class Step:
    """One step of a rollout: the candidate's share of requests, held and judged before the next."""

    weight: int
    """Percent of requests sent (canary) or copied (shadow) to the candidate, 1 to 100."""
    seconds: int
    """The least time the step is held."""
    min_requests: int
    """The step is not judged before the candidate answered this many requests."""
    mode: str = CANARY_MODE
    """mlship.traffic's route mode: CANARY (clients get the candidate's answers) or SHADOW
    (clients get the stable version's; the candidate answers a copy)."""


@dataclasses.dataclass(frozen=True)
class Analysis:
    """spec.rollout.analysis: what the candidate must show at every step to go on."""

    max_error_rate: float = 0.01
    """Share of the candidate's answers that failed (5xx, timeouts), 0 to 1."""
    max_latency_ratio: float = 1.5
    """The candidate's p99 may be at most this times the stable version's p99 ..."""
    latency_slack_ms: float = 10.0
    """... plus this many ms: sub-millisecond p99s are noisy, and the candidate's take one more hop."""
    min_agreement: float = 0.95
    """Share of rows where candidate and stable agree: same class, or numbers within 5 % relative."""


REPLACE, SHADOW, CANARY = "Replace", "Shadow", "Canary"
STRATEGIES = (REPLACE, SHADOW, CANARY)
DEFAULT_STEP_SECONDS = 60
DEFAULT_STEP_MIN_REQUESTS = 100
DEFAULT_CANARY_STEPS = (Step(10, 60, 100), Step(50, 60, 100))
DEFAULT_SHADOW_WEIGHT = 100
DEFAULT_SHADOW_STEP = Step(DEFAULT_SHADOW_WEIGHT, 60, 100, SHADOW_MODE)


@dataclasses.dataclass(frozen=True)
class Rollout:
    """spec.rollout: Replace moves all traffic once the new version is ready (as without the
    field); Shadow copies requests to it first, Canary sends it growing shares of them (after a
    shadow step when spec.rollout.shadow is set), each step judged by the analysis."""

    strategy: str = REPLACE
    steps: tuple[Step, ...] = ()
    """Empty with Replace; with Shadow, the shadow step; with Canary, the shadow step if any,
    then the spec's steps or DEFAULT_CANARY_STEPS."""
    analysis: Analysis = Analysis()

    @property
    def staged(self) -> bool:
        """The new version runs next to the stable one, as the candidate, before it takes over."""
        return self.strategy != REPLACE


@dataclasses.dataclass(frozen=True)
class Steering:
    """A person's hand on a staged rollout: the ModelDeployment's annotations."""

    paused: bool = False
    """mlship.io/paused "true": the rollout does not leave its current step (a failing analysis
    still aborts it)."""
    promote: str | None = None
    """mlship.io/promote: this candidate version goes to Promoting now, whatever its figures."""
    abort: str | None = None
    """mlship.io/abort: this candidate version is aborted now (and wins over promote). Naming the
    version keeps an annotation left in place from acting on the next rollout."""


@dataclasses.dataclass(frozen=True)
class ServingSpec:
    name: str
    namespace: str
    uid: str
    generation: int
    model: str
    alias: str | None
    """The alias followed, or None when a version is pinned."""
    pinned_version: str | None
    tracking_uri: str
    """The URI the operator queries."""
    serving_tracking_uri: str
    """The URI handed to the serving pods."""
    replicas: int
    """Within the autoscaling bounds when there are some."""
    autoscaling: Autoscaling | None
    resources: Mapping[str, Any]
    image: str
    poll_interval: float
    progress_deadline: int
    inference_log_sample_rate: float
    """Share of requests the serving pods log to MLflow (0 = none)."""
    inference_log_flush_seconds: int
    auth_token_secret: tuple[str, str] | None = None
    """(Secret name, key) of the bearer token serving requires (spec.auth); None: no auth."""
    rollout: Rollout = Rollout()
    """How a new version takes over the traffic (spec.rollout)."""
    steering: Steering = Steering()

    @property
    def registry_key(self) -> tuple[str, str, str | None, str | None]:
        """What a registry answer depends on: a change here makes the operator ask again."""
        return (self.tracking_uri, self.model, self.alias, self.pinned_version)


def redact_uri(uri: str) -> str:
    """Drop user:password@ from a URI before it goes into the status."""
    parts = urlsplit(uri)
    if "@" not in parts.netloc:
        return uri
    return urlunsplit(parts._replace(netloc=parts.netloc.rsplit("@", 1)[1]))


def generation(cr: Mapping[str, Any]) -> int:
    """metadata.generation; not yet set counts as the first."""
    return int((cr.get("metadata") or {}).get("generation") or 1)


def check_tracking_uri(uri: str, config: Config) -> None:
    """Raise InvalidSpec unless the operator may use `uri` (credentials in it do not count)."""
    allowed = sorted({redact_uri(u) for u in config.usable_tracking_uris})
    if redact_uri(uri) not in allowed:
        raise InvalidSpec(
            f"spec.trackingUri {redact_uri(uri)!r} is not one this operator may use"
            f" (allowed: {', '.join(allowed)}); an operator admin can add it to"
            " operator.allowedTrackingUris (MLSHIP_ALLOWED_TRACKING_URIS)"
        )


def serving_spec(cr: Mapping[str, Any], config: Config) -> ServingSpec:
    """The spec with defaults filled in; InvalidSpec when this operator must not act on it."""
    meta = cr.get("metadata") or {}
    spec = cr.get("spec") or {}
    pinned = spec.get("version")
    pinned = str(pinned) if pinned not in (None, "") else None
    alias = None if pinned else (spec.get("alias") or DEFAULT_ALIAS)
    uri = (spec.get("trackingUri") or "").rstrip("/")
    if uri:
        check_tracking_uri(uri, config)
    # The API server fills in the CRD's defaults; these cover objects it has not (re)defaulted.
    inference_log = spec.get("inferenceLog") or {}
    sample_rate = inference_log.get("sampleRate")
    autoscaling = _autoscaling(spec.get("autoscaling"))
    replicas = int(spec.get("replicas", 1))
    if autoscaling:
        replicas = min(max(replicas, autoscaling.min_replicas), autoscaling.max_replicas)
    rollout = _rollout(spec.get("rollout"))
    if rollout.staged and not config.routing_key:
        raise InvalidSpec(
            f"spec.rollout.strategy {rollout.strategy} needs the operator's routing key, and this"
            " operator has none: set MLSHIP_ROUTING_KEY (the chart does), or use Replace"
        )
    return ServingSpec(
        name=meta["name"],
        namespace=meta["namespace"],
        uid=meta["uid"],
        generation=generation(cr),
        model=spec["model"],
        alias=alias,
        pinned_version=pinned,
        tracking_uri=uri or config.tracking_uri,
        serving_tracking_uri=uri or config.serving_tracking_uri,
        replicas=replicas,
        autoscaling=autoscaling,
        resources=spec.get("resources") or DEFAULT_RESOURCES,
        image=spec.get("image") or config.serving_image,
        poll_interval=float(spec.get("pollIntervalSeconds") or config.poll_interval),
        progress_deadline=int(spec.get("progressDeadlineSeconds") or config.progress_deadline),
        inference_log_sample_rate=float(
            DEFAULT_INFERENCE_LOG_SAMPLE_RATE if sample_rate is None else sample_rate
        ),
        inference_log_flush_seconds=int(
            inference_log.get("flushSeconds") or DEFAULT_INFERENCE_LOG_FLUSH_SECONDS
        ),
        auth_token_secret=_auth_token_secret(spec.get("auth")),
        rollout=rollout,
        steering=_steering(meta.get("annotations") or {}),
    )


def _steering(annotations: Mapping[str, str]) -> Steering:
    paused = annotations.get(ANNOTATION_PAUSED, "false")
    if paused.lower() not in ("true", "false"):
        raise InvalidSpec(
            f"annotation {ANNOTATION_PAUSED} must be \"true\" or \"false\", not {paused!r}:"
            f" `kubectl annotate mldep <name> {ANNOTATION_PAUSED}-` removes it"
        )
    return Steering(
        paused=paused.lower() == "true",
        promote=annotations.get(ANNOTATION_PROMOTE) or None,
        abort=annotations.get(ANNOTATION_ABORT) or None,
    )


def _auth_token_secret(value: Mapping[str, Any] | None) -> tuple[str, str] | None:
    if not value:
        return None
    ref = value.get("tokenSecretRef") or {}
    if not ref.get("name"):  # the CRD requires it; this covers a CRD older than the field
        raise InvalidSpec("spec.auth.tokenSecretRef.name is required: the Secret that holds the token")
    return str(ref["name"]), str(ref.get("key") or DEFAULT_AUTH_TOKEN_KEY)


def _autoscaling(value: Mapping[str, Any] | None) -> Autoscaling | None:
    if not value:
        return None
    low = int(value.get("minReplicas") or 1)
    high = int(value["maxReplicas"])
    if high < low:  # the CRD's rule says so too; an object stored before the rule still gets it
        raise InvalidSpec(
            f"spec.autoscaling.maxReplicas ({high}) is below minReplicas ({low})"
        )
    target = int(value.get("targetCPUUtilizationPercentage") or DEFAULT_CPU_UTILIZATION)
    window = value.get("scaleDownStabilizationSeconds")
    return Autoscaling(
        min_replicas=low, max_replicas=high, cpu_utilization=target,
        scale_down_window=None if window is None else int(window),
    )


def _rollout(value: Mapping[str, Any] | None) -> Rollout:
    # The CRD's enum and rules refuse all of these; an object stored under an older or newer CRD
    # (or where the API server does not run CEL) could still carry them.
    if not value:
        return Rollout()
    strategy = value.get("strategy") or REPLACE
    if strategy not in STRATEGIES:
        raise InvalidSpec(
            f"spec.rollout.strategy {strategy!r} is not one this operator knows"
            f" ({', '.join(STRATEGIES)})"
        )
    steps = tuple(_step(i, step) for i, step in enumerate(value.get("steps") or ()))
    if steps and strategy != CANARY:
        raise InvalidSpec(
            f"spec.rollout.steps are only for strategy {CANARY} (this one is {strategy}):"
            f" set spec.rollout.strategy to {CANARY} or remove the steps"
        )
    for i in range(1, len(steps)):
        if steps[i].weight <= steps[i - 1].weight:
            raise InvalidSpec(
                f"spec.rollout.steps[{i}].weight ({steps[i].weight}) must be above"
                f" steps[{i - 1}].weight ({steps[i - 1].weight}): the weights must increase"
            )
    if strategy == CANARY and not steps:
        steps = DEFAULT_CANARY_STEPS
    shadow = value.get("shadow")
    if shadow is not None and strategy == REPLACE:
        raise InvalidSpec(
            f"spec.rollout.shadow is only for strategy {SHADOW} or {CANARY} (this one is"
            f" {REPLACE}): set spec.rollout.strategy or remove the shadow"
        )
    if shadow is not None or strategy == SHADOW:
        steps = (_shadow_step(shadow or {}), *steps)
    return Rollout(strategy=strategy, steps=steps, analysis=_analysis(value.get("analysis")))


def _shadow_step(value: Mapping[str, Any]) -> Step:
    weight = value.get("weight", DEFAULT_SHADOW_WEIGHT)
    if not isinstance(weight, int) or not 1 <= weight <= 100:
        raise InvalidSpec(
            f"spec.rollout.shadow.weight must be a whole percent from 1 to 100, not {weight!r}"
        )
    return dataclasses.replace(_timing(weight, value), mode=SHADOW_MODE)


def _step(index: int, value: Mapping[str, Any]) -> Step:
    weight = value.get("weight")
    if not isinstance(weight, int) or not 1 <= weight <= 100:
        raise InvalidSpec(
            f"spec.rollout.steps[{index}].weight must be a whole percent from 1 to 100, not {weight!r}"
        )
    return _timing(weight, value)


def _timing(weight: int, value: Mapping[str, Any]) -> Step:
    seconds, min_requests = value.get("durationSeconds"), value.get("minRequests")
    return Step(
        weight=weight,
        seconds=DEFAULT_STEP_SECONDS if seconds is None else int(seconds),
        min_requests=DEFAULT_STEP_MIN_REQUESTS if min_requests is None else int(min_requests),
    )


def _analysis(value: Mapping[str, Any] | None) -> Analysis:
    value = value or {}
    default = Analysis()
    return Analysis(
        max_error_rate=_number(value, "maxErrorRate", default.max_error_rate),
        max_latency_ratio=_number(value, "maxLatencyRatio", default.max_latency_ratio),
        latency_slack_ms=_number(value, "latencySlackMs", default.latency_slack_ms),
        min_agreement=_number(value, "minAgreement", default.min_agreement),
    )


def _number(value: Mapping[str, Any], key: str, default: float) -> float:
    got = value.get(key)
    return default if got is None else float(got)  # 0 is a threshold, not "unset"
