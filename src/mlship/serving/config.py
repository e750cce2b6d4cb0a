"""The server's configuration: read from the environment once, validated at start-up.

The variable names are a contract with the operator, which sets them on the serving pods: both
sides take them from mlship.names.ServingEnv.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from urllib.parse import urlparse

from mlship.events import schema
from mlship.monitoring.inference_log import DEFAULT_EXPERIMENT
from mlship.names import ServingEnv as E

DEFAULT_PORT = 8080
DEFAULT_MAX_BATCH_SIZE = 64
DEFAULT_MAX_BATCH_WAIT_MS = 2.0
DEFAULT_SHUTDOWN_TIMEOUT_S = 25.0
DEFAULT_INFERENCE_LOG_FLUSH_S = 10.0
DEFAULT_KAFKA_QUEUE_MAX_MESSAGES = 100_000
# One message of prediction events per 50 ms (mlship.serving.events): at ~2,500 req/s that is ~125
# events a message, 20 messages a second; an event is for analysis, where 50 ms make no difference.
DEFAULT_KAFKA_LINGER_MS = 50.0
MIN_AUTH_TOKEN_CHARS = 16
LOG_LEVELS = ("DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL")

# models:/<name>/<version> or models:/<name>@<alias>
# Kafka's own rule for topic names (kafka.common.internals.Topic): 1-249 of [a-zA-Z0-9._-].
_TOPIC = re.compile(r"^[a-zA-Z0-9._-]{1,249}$")
_MODELS_URI = re.compile(r"^models:/(?P<name>[^/@]+)(?:/(?P<version>\d+)|@(?P<alias>[^/]+))/?$")


class ConfigError(ValueError):
    """One or more environment variables are missing or invalid; the message lists them all."""


@dataclass(frozen=True, slots=True)
class ServingConfig:
    model_uri: str
    model_name: str
    model_version: str  # "" when not known from the configuration (e.g. a local path)
    tracking_uri: str | None
    host: str
    port: int
    max_batch_size: int
    max_batch_wait_s: float
    log_level: str
    shutdown_timeout_s: float
    inference_log_sample_rate: float  # 0 = off
    inference_log_flush_s: float
    inference_log_experiment: str
    # Prediction events and labels on Kafka (mlship.serving.events); None = off, and then the
    # sampled requests go to the MLflow inference log instead.
    kafka_bootstrap_servers: str | None = None
    predictions_topic: str = schema.PREDICTIONS_TOPIC
    labels_topic: str = schema.LABELS_TOPIC
    kafka_queue_max_messages: int = DEFAULT_KAFKA_QUEUE_MAX_MESSAGES
    kafka_linger_ms: float = DEFAULT_KAFKA_LINGER_MS
    # The bearer token the scoring and label endpoints require (mlship.serving.auth); None = off.
    # Out of the repr, so a logged configuration never shows it.
    auth_token: str | None = field(default=None, repr=False)
    # The bearer token of PUT/GET /admin/routing (mlship.serving.routing); None = no routing.
    routing_token: str | None = field(default=None, repr=False)


def _is_local(uri: str) -> bool:
    return urlparse(uri).scheme in ("", "file")


def _int(
    env: Mapping[str, str], key: str, default: int, low: int, high: int, errs: list[str]
) -> int:
    raw = env.get(key, "").strip()
    if not raw:
        return default
    try:
        value = int(raw)
    except ValueError:
        errs.append(f"{key}={raw!r} is not an integer")
        return default
    if not low <= value <= high:
        errs.append(f"{key}={value} is out of range [{low}, {high}]")
    return value


def _float(
    env: Mapping[str, str], key: str, default: float, low: float, high: float, errs: list[str]
) -> float:
    raw = env.get(key, "").strip()
    if not raw:
        return default
    try:
        value = float(raw)
    except ValueError:
        errs.append(f"{key}={raw!r} is not a number")
        return default
    if not low <= value <= high:  # also rejects nan
        errs.append(f"{key}={value} is out of range [{low}, {high}]")
    return value


def _bootstrap(env: Mapping[str, str], errs: list[str]) -> str | None:
    raw = env.get(E.KAFKA_BOOTSTRAP_SERVERS, "").strip()
    if not raw:
        return None
    servers = [part.strip() for part in raw.split(",")]
    for server in servers:
        host, colon, port = server.rpartition(":")
        if not colon or not host or not port.isdigit() or not 1 <= int(port) <= 65535:
            errs.append(
                f"{E.KAFKA_BOOTSTRAP_SERVERS}={raw!r}: {server!r} is not host:port "
                "(a comma-separated list of them)"
            )
            return None
    return ",".join(servers)


def _topic(env: Mapping[str, str], key: str, default: str, errs: list[str]) -> str:
    topic = env.get(key, "").strip() or default
    if not _TOPIC.match(topic) or topic in (".", ".."):
        errs.append(f"{key}={topic!r} is not a Kafka topic name (1-249 of a-z A-Z 0-9 . _ -)")
    return topic


def _token(env: Mapping[str, str], key: str, errs: list[str]) -> str | None:
    """A bearer token, or None when unset or empty; its problems never quote it."""
    token = env.get(key, "").strip()
    if not token:
        return None
    if len(token) < MIN_AUTH_TOKEN_CHARS or any(c.isspace() for c in token):
        errs.append(
            f"{key} must be at least {MIN_AUTH_TOKEN_CHARS} characters with no "
            "whitespace inside (the value is not shown)"
        )
        return None
    return token


def load_config(env: Mapping[str, str]) -> ServingConfig:
    """Build the configuration from `env` (normally os.environ); raise ConfigError listing
    every problem at once so a misconfigured pod is fixed in one round."""
    errs: list[str] = []
    uri = env.get(E.MODEL_URI, "").strip()
    name = env.get(E.MODEL_NAME, "").strip()
    version = env.get(E.MODEL_VERSION, "").strip()
    tracking_uri = env.get(E.TRACKING_URI, "").strip() or None

    if uri:
        if version:
            errs.append(
                f"set either {E.MODEL_URI} or {E.MODEL_NAME} + {E.MODEL_VERSION}, not both"
            )
        match = _MODELS_URI.match(uri)
        if uri.startswith("models:/") and not match:
            errs.append(
                f"{E.MODEL_URI}={uri!r} is not models:/<name>/<version> "
                "or models:/<name>@<alias>"
            )
        if match:
            if name and name != match["name"]:
                errs.append(
                    f"{E.MODEL_NAME}={name!r} does not match the name in "
                    f"{E.MODEL_URI}={uri!r}"
                )
            name = match["name"]
            version = match["version"] or ""
        elif not name:
            name = uri.rstrip("/").rsplit("/", 1)[-1]
    else:
        if not name:
            errs.append(f"{E.MODEL_NAME} is required (or {E.MODEL_URI})")
        if not version:
            errs.append(f"{E.MODEL_VERSION} is required (or {E.MODEL_URI})")
        elif not version.isdigit() or int(version) < 1:
            errs.append(f"{E.MODEL_VERSION}={version!r} is not a registry version (1, 2, ...)")
        uri = f"models:/{name}/{version}"

    if not _is_local(uri) and tracking_uri is None:
        errs.append(f"{E.TRACKING_URI} is required to load {uri}")

    port = _int(env, E.PORT, DEFAULT_PORT, 1, 65535, errs)
    max_batch = _int(env, E.MAX_BATCH_SIZE, DEFAULT_MAX_BATCH_SIZE, 1, 100_000, errs)
    wait_ms = _float(env, E.MAX_BATCH_WAIT_MS, DEFAULT_MAX_BATCH_WAIT_MS, 0.0, 1000.0, errs)
    shutdown_s = _float(env, E.SHUTDOWN_TIMEOUT_S, DEFAULT_SHUTDOWN_TIMEOUT_S, 0.0, 3600.0, errs)
    log_level = env.get(E.LOG_LEVEL, "").strip().upper() or "INFO"
    if log_level not in LOG_LEVELS:
        errs.append(f"{E.LOG_LEVEL}={log_level!r} is not one of {', '.join(LOG_LEVELS)}")

    sample_rate = _float(env, E.INFERENCE_LOG_SAMPLE_RATE, 0.0, 0.0, 1.0, errs)
    flush_s = _float(
        env, E.INFERENCE_LOG_FLUSH_SECONDS, DEFAULT_INFERENCE_LOG_FLUSH_S, 0.05, 3600.0, errs
    )
    experiment = env.get(E.INFERENCE_LOG_EXPERIMENT, "").strip() or DEFAULT_EXPERIMENT
    bootstrap = _bootstrap(env, errs)
    predictions_topic = _topic(env, E.KAFKA_PREDICTIONS_TOPIC, schema.PREDICTIONS_TOPIC, errs)
    labels_topic = _topic(env, E.KAFKA_LABELS_TOPIC, schema.LABELS_TOPIC, errs)
    if predictions_topic == labels_topic:
        errs.append(
            f"{E.KAFKA_PREDICTIONS_TOPIC} and {E.KAFKA_LABELS_TOPIC} are both {labels_topic!r}: "
            "predictions and labels need topics of their own"
        )
    queue_max = _int(
        env, E.KAFKA_QUEUE_MAX_MESSAGES, DEFAULT_KAFKA_QUEUE_MAX_MESSAGES, 1, 10_000_000, errs
    )
    linger_ms = _float(env, E.KAFKA_LINGER_MS, DEFAULT_KAFKA_LINGER_MS, 0.0, 60_000.0, errs)
    auth_token = _token(env, E.AUTH_TOKEN, errs)
    routing_token = _token(env, E.ROUTING_TOKEN, errs)
    if sample_rate > 0 and tracking_uri is None and bootstrap is None:
        errs.append(
            f"{E.INFERENCE_LOG_SAMPLE_RATE}={sample_rate:g} logs requests to MLflow, which needs "
            f"{E.TRACKING_URI}: set it (or {E.KAFKA_BOOTSTRAP_SERVERS} to send them to Kafka), "
            "or set the rate to 0 to log nothing"
        )

    if errs:
        raise ConfigError("invalid serving configuration: " + "; ".join(errs))
    return ServingConfig(
        model_uri=uri,
        model_name=name,
        model_version=version,
        tracking_uri=tracking_uri,
        host=env.get(E.HOST, "").strip() or "0.0.0.0",  # noqa: S104 - a pod serves its IP
        port=port,
        max_batch_size=max_batch,
        max_batch_wait_s=wait_ms / 1000.0,
        log_level=log_level,
        shutdown_timeout_s=shutdown_s,
        inference_log_sample_rate=sample_rate,
        inference_log_flush_s=flush_s,
        inference_log_experiment=experiment,
        kafka_bootstrap_servers=bootstrap,
        predictions_topic=predictions_topic,
        labels_topic=labels_topic,
        kafka_queue_max_messages=queue_max,
        kafka_linger_ms=linger_ms,
        auth_token=auth_token,
        routing_token=routing_token,
    )
