"""The environment the operator puts on the serving container is what serving's load_config reads:
the contract between the two images, tied without a cluster."""

from __future__ import annotations

import dataclasses
from typing import Any

import pytest
from _operator_fixtures import CONFIG, build_deployment, make_cr
from mlship_operator import resource

from mlship.names import ServingEnv
from mlship.serving.config import load_config

pytestmark = pytest.mark.unit


def serving_env(cr: dict[str, Any], version: str, config: Any = CONFIG) -> dict[str, str]:
    dep = build_deployment(cr, config, version)
    (container,) = dep["spec"]["template"]["spec"]["containers"]
    return {e["name"]: e["value"] for e in container["env"] if "value" in e}


@pytest.mark.parametrize(
    ("spec", "rate", "flush"),
    [
        ({"model": "iris"}, 1.0, 10.0),
        ({"model": "fraud", "inferenceLog": {"sampleRate": 0.25, "flushSeconds": 3}}, 0.25, 3.0),
        ({"model": "iris", "inferenceLog": {"sampleRate": 0}}, 0.0, 10.0),
        ({"model": "iris", "trackingUri": "http://other-mlflow:5000/"}, 1.0, 10.0),
    ],
)
def test_serving_accepts_what_the_operator_sets(
    spec: dict[str, Any], rate: float, flush: float
) -> None:
    cr = make_cr(spec)
    env = serving_env(cr, "7")
    config = load_config(env)  # raises ConfigError if the two sides disagree
    assert (config.model_name, config.model_version) == (spec["model"], "7")
    assert config.model_uri == f"models:/{spec['model']}/7"
    assert config.tracking_uri == (spec.get("trackingUri") or CONFIG.serving_tracking_uri).rstrip("/")
    assert config.port == resource.CONTAINER_PORT
    assert (config.inference_log_sample_rate, config.inference_log_flush_s) == (rate, flush)


def test_the_operator_sets_only_names_serving_reads() -> None:
    read = {v for k, v in vars(ServingEnv).items() if k.isupper()}
    set_ = set(serving_env(make_cr(), "1")) - {"HOME"}  # HOME: for libraries, not for serving
    assert set_ <= read, set_ - read


def test_kafka_reaches_serving_only_when_the_operator_has_it() -> None:
    assert ServingEnv.KAFKA_BOOTSTRAP_SERVERS not in serving_env(make_cr(), "1")
    assert load_config(serving_env(make_cr(), "1")).kafka_bootstrap_servers is None
    with_kafka = dataclasses.replace(CONFIG, kafka_bootstrap_servers="mlship-kafka.ns.svc:9092")
    env = serving_env(make_cr(), "1", with_kafka)
    assert env[ServingEnv.KAFKA_BOOTSTRAP_SERVERS] == "mlship-kafka.ns.svc:9092"
    assert load_config(env).kafka_bootstrap_servers == "mlship-kafka.ns.svc:9092"


def test_the_token_reaches_serving_from_the_secret_the_spec_names() -> None:
    assert ServingEnv.AUTH_TOKEN not in serving_env(make_cr(), "1")
    cr = make_cr({"model": "iris", "auth": {"tokenSecretRef": {"name": "iris-token"}}})
    (container,) = build_deployment(cr, CONFIG, "1")["spec"]["template"]["spec"]["containers"]
    [auth] = [e for e in container["env"] if e["name"] == ServingEnv.AUTH_TOKEN]
    # the kubelet reads the Secret; the operator never sees the token
    assert auth == {"name": ServingEnv.AUTH_TOKEN, "valueFrom": {"secretKeyRef": {
        "name": "iris-token", "key": "token", "optional": False}}}
    resolved = {e["name"]: e.get("value", "t" * 24) for e in container["env"]}  # as the pod sees it
    assert load_config(resolved).auth_token == "t" * 24
