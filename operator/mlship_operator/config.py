"""Operator configuration: read once from the environment, validated at start-up."""

from __future__ import annotations

import dataclasses
import re
from collections.abc import Mapping
from urllib.parse import urlparse

_DNS1123_LABEL = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$")
_PULL_POLICIES = ("Always", "IfNotPresent", "Never")


class ConfigError(ValueError):
    """Settings in the environment are missing or invalid; the message names each, "; "-separated."""


@dataclasses.dataclass(frozen=True)
class Config:
    tracking_uri: str
    """MLflow the operator asks (and the default for CRs that name none)."""
    serving_tracking_uri: str
    """MLflow URI handed to serving pods of CRs that name none (defaults to tracking_uri)."""
    allowed_tracking_uris: frozenset[str] = frozenset()
    """Further URIs a CR's spec.trackingUri may name (see usable_tracking_uris)."""
    serving_image: str = "mlship-serving:dev"
    image_pull_policy: str = "IfNotPresent"
    poll_interval: float = 5.0
    """Seconds between registry checks for CRs that set no spec.pollIntervalSeconds."""
    max_backoff: float = 5.0
    """Upper bound of the retry delay while MLflow fails or the model/alias is missing. By default
    the poll interval (no backoff): a poll is one light GET, and waiting longer would only keep a
    CR Degraded after MLflow answers again."""
    registry_timeout: float = 5.0
    progress_deadline: int = 180
    """Seconds a rollout may make no progress before it is rolled back."""
    crashloop_restarts: int = 2
    """Restarts of a new-version container after which the rollout counts as failed."""
    namespaces: tuple[str, ...] = ()
    """Namespaces to watch; empty means all namespaces."""
    cluster_domain: str = "cluster.local"
    liveness_endpoint: str = "http://0.0.0.0:8081/healthz"
    watch_server_timeout: int = 300
    """Seconds one watch request may last (the API server wants a whole number)."""
    log_level: str = "INFO"
    kafka_bootstrap_servers: str = ""
    """Kafka for the serving pods' prediction events and /feedback (docs/events.md); empty: none,
    and serving logs a sample of requests to MLflow instead."""
    routing_key: str = ""
    """The key the stable pods' routing tokens are derived from (spec.rollout Shadow or Canary);
    empty: this operator stages no versions."""

    @property
    def clusterwide(self) -> bool:
        return not self.namespaces

    @property
    def usable_tracking_uris(self) -> frozenset[str]:
        """Every URI a CR's spec.trackingUri may name: the operator's own two and the listed ones.
        Anyone who may create a ModelDeployment would otherwise choose what the operator and the
        serving pods fetch from."""
        return frozenset({self.tracking_uri, self.serving_tracking_uri, *self.allowed_tracking_uris})


_HOST_PORT = re.compile(r"^[^\s,:/]+:[0-9]{1,5}$")


def _bootstrap_servers(env: Mapping[str, str], name: str, errs: list[str]) -> str:
    value = env.get(name, "").strip()
    servers = [s.strip() for s in value.split(",")] if value else []
    bad = [s for s in servers if not _HOST_PORT.match(s)]
    if bad:
        errs.append(f"{name}={value!r} must be host:port[,host:port...] (not {', '.join(map(repr, bad))})")
        return ""
    return ",".join(servers)


def _http_url(
    env: Mapping[str, str], name: str, errs: list[str], default: str | None = None
) -> str:
    value = env.get(name, "").strip() or default
    if not value:
        errs.append(f"{name} is required: the MLflow tracking URI, e.g. http://mlflow:5000")
        return ""
    if not _is_http_url(value):
        errs.append(f"{name}={value!r} must be an http:// or https:// URL with a host")
        return ""
    return value.rstrip("/")


def _is_http_url(value: str) -> bool:
    parsed = urlparse(value)
    return parsed.scheme in ("http", "https") and bool(parsed.netloc)


def _http_urls(env: Mapping[str, str], name: str, errs: list[str]) -> frozenset[str]:
    items = [item.strip() for item in env.get(name, "").split(",") if item.strip()]
    for item in items:
        if not _is_http_url(item):
            errs.append(f"{name} entry {item!r} must be an http:// or https:// URL with a host")
    return frozenset(item.rstrip("/") for item in items if _is_http_url(item))


def _number(
    env: Mapping[str, str], name: str, default: float, low: float, high: float, errs: list[str]
) -> float | None:
    """The value, the default when unset, or None (with the problem in errs)."""
    raw = env.get(name, "").strip()
    if not raw:
        return default
    try:
        value = float(raw)
    except ValueError:
        errs.append(f"{name}={raw!r} is not a number")
        return None
    if not low <= value <= high:
        errs.append(f"{name}={raw} is out of range: it must be between {low:g} and {high:g}")
        return None
    return value


def _integer(
    env: Mapping[str, str], name: str, default: int, low: int, high: int, errs: list[str]
) -> int:
    value = _number(env, name, default, low, high, errs)
    if value is None:
        return default
    if value != int(value):
        errs.append(f"{name}={env[name]!r} must be a whole number")
        return default
    return int(value)


def _namespaces(env: Mapping[str, str], name: str, errs: list[str]) -> tuple[str, ...]:
    items = [item.strip() for item in env.get(name, "").split(",") if item.strip()]
    for item in items:
        # kopf runs with scanning disabled (no cluster-wide namespace list), so no globs.
        if not _DNS1123_LABEL.match(item) or len(item) > 63:
            errs.append(
                f"{name} entry {item!r} is not a namespace name (lowercase letters, digits and"
                " '-', at most 63 characters; patterns are not supported)"
            )
    return tuple(dict.fromkeys(items))


def from_env(env: Mapping[str, str]) -> Config:
    """Build the configuration from environment variables; raise one ConfigError listing every
    problem ("; "-separated, each naming its variable), so a bad install is fixed in one round."""
    errs: list[str] = []
    tracking_uri = _http_url(env, "MLFLOW_TRACKING_URI", errs)
    serving_uri = (
        _http_url(env, "MLSHIP_SERVING_TRACKING_URI", errs, tracking_uri)
        if tracking_uri or env.get("MLSHIP_SERVING_TRACKING_URI", "").strip()
        else ""  # its default is MLFLOW_TRACKING_URI, already reported
    )

    image = env.get("MLSHIP_SERVING_IMAGE", "").strip() or Config.serving_image
    if any(c.isspace() for c in image):
        errs.append(f"MLSHIP_SERVING_IMAGE={image!r} must not contain whitespace")
    pull_policy = env.get("MLSHIP_IMAGE_PULL_POLICY", "").strip() or Config.image_pull_policy
    if pull_policy not in _PULL_POLICIES:
        errs.append(
            f"MLSHIP_IMAGE_PULL_POLICY={pull_policy!r} must be one of {', '.join(_PULL_POLICIES)}"
        )

    poll = _number(env, "MLSHIP_POLL_INTERVAL_SECONDS", Config.poll_interval, 1, 3600, errs)
    backoff = _number(
        env, "MLSHIP_MAX_BACKOFF_SECONDS", poll or Config.poll_interval, 1, 3600, errs
    )
    if poll is not None and backoff is not None and backoff < poll:
        errs.append(
            f"MLSHIP_MAX_BACKOFF_SECONDS={backoff:g} must not be shorter than"
            f" MLSHIP_POLL_INTERVAL_SECONDS={poll:g}"
        )

    domain = env.get("MLSHIP_CLUSTER_DOMAIN", "").strip() or Config.cluster_domain
    if not all(_DNS1123_LABEL.match(part) for part in domain.split(".")):
        errs.append(f"MLSHIP_CLUSTER_DOMAIN={domain!r} is not a DNS domain")

    liveness = env.get("MLSHIP_LIVENESS_ENDPOINT", Config.liveness_endpoint).strip()
    if liveness and urlparse(liveness).scheme not in ("http", "https"):
        errs.append(
            f"MLSHIP_LIVENESS_ENDPOINT={liveness!r} must be an http(s) URL, or empty to disable"
        )

    level = (env.get("MLSHIP_LOG_LEVEL", "").strip() or Config.log_level).upper()
    if level not in ("DEBUG", "INFO", "WARNING", "ERROR"):
        errs.append(f"MLSHIP_LOG_LEVEL={level!r} must be DEBUG, INFO, WARNING or ERROR")

    registry_timeout = _number(
        env, "MLSHIP_REGISTRY_TIMEOUT_SECONDS", Config.registry_timeout, 1, 120, errs
    )
    progress_deadline = _integer(
        env, "MLSHIP_PROGRESS_DEADLINE_SECONDS", Config.progress_deadline, 30, 3600, errs
    )
    crashloop_restarts = _integer(
        env, "MLSHIP_CRASHLOOP_RESTARTS", Config.crashloop_restarts, 1, 20, errs
    )
    namespaces = _namespaces(env, "MLSHIP_WATCH_NAMESPACES", errs)
    watch_server_timeout = _integer(
        env, "MLSHIP_WATCH_TIMEOUT_SECONDS", Config.watch_server_timeout, 10, 3600, errs
    )
    kafka = _bootstrap_servers(env, "MLSHIP_KAFKA_BOOTSTRAP_SERVERS", errs)
    allowed_uris = _http_urls(env, "MLSHIP_ALLOWED_TRACKING_URIS", errs)
    routing_key = env.get("MLSHIP_ROUTING_KEY", "").strip()
    if routing_key and len(routing_key) < 16:
        errs.append(f"MLSHIP_ROUTING_KEY is {len(routing_key)} characters; use at least 16")

    if errs:
        raise ConfigError("; ".join(errs))
    assert poll is not None and backoff is not None and registry_timeout is not None  # noqa: S101
    return Config(
        tracking_uri=tracking_uri,
        serving_tracking_uri=serving_uri,
        allowed_tracking_uris=allowed_uris,
        serving_image=image,
        image_pull_policy=pull_policy,
        poll_interval=poll,
        max_backoff=backoff,
        registry_timeout=registry_timeout,
        progress_deadline=progress_deadline,
        crashloop_restarts=crashloop_restarts,
        namespaces=namespaces,
        cluster_domain=domain,
        liveness_endpoint=liveness,
        watch_server_timeout=watch_server_timeout,
        log_level=level,
        kafka_bootstrap_servers=kafka,
        routing_key=routing_key,
    )
