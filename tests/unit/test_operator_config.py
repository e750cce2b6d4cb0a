"""Operator configuration from the environment: defaults, validation, messages naming it."""

from __future__ import annotations

import pytest
from mlship_operator.config import Config, ConfigError, from_env

pytestmark = pytest.mark.unit

BASE = {"MLFLOW_TRACKING_URI": "http://mlflow.mlship:5000/"}


def test_defaults_with_only_the_tracking_uri() -> None:
    config = from_env(BASE)
    assert config.tracking_uri == "http://mlflow.mlship:5000"  # trailing slash dropped
    assert config.serving_tracking_uri == config.tracking_uri
    assert config.serving_image == "mlship-serving:dev"
    assert config.poll_interval == 5.0
    assert config.max_backoff == 5.0  # no backoff: back within a poll interval of MLflow recovering
    assert config.namespaces == ()
    assert config.clusterwide
    assert config.kafka_bootstrap_servers == ""  # no events: serving logs to MLflow
    assert config.allowed_tracking_uris == frozenset()
    assert config.usable_tracking_uris == {"http://mlflow.mlship:5000"}  # only its own


def test_the_default_backoff_cap_follows_the_poll_interval() -> None:
    assert from_env({**BASE, "MLSHIP_POLL_INTERVAL_SECONDS": "30"}).max_backoff == 30.0


def test_every_setting_is_read() -> None:
    config = from_env({
        **BASE,
        "MLSHIP_SERVING_TRACKING_URI": "https://mlflow.internal",
        "MLSHIP_SERVING_IMAGE": "reg.example/serving:1.2",
        "MLSHIP_IMAGE_PULL_POLICY": "Always",
        "MLSHIP_POLL_INTERVAL_SECONDS": "15",
        "MLSHIP_MAX_BACKOFF_SECONDS": "120",
        "MLSHIP_REGISTRY_TIMEOUT_SECONDS": "3",
        "MLSHIP_PROGRESS_DEADLINE_SECONDS": "90",
        "MLSHIP_CRASHLOOP_RESTARTS": "4",
        "MLSHIP_WATCH_NAMESPACES": "models, staging,models",
        "MLSHIP_CLUSTER_DOMAIN": "corp.local",
        "MLSHIP_LIVENESS_ENDPOINT": "",
        "MLSHIP_WATCH_TIMEOUT_SECONDS": "60",
        "MLSHIP_LOG_LEVEL": "debug",
        "MLSHIP_KAFKA_BOOTSTRAP_SERVERS": " k1.kafka:9092, k2.kafka:19092 ",
        "MLSHIP_ALLOWED_TRACKING_URIS": " https://mlflow.team-a/, http://mlflow.team-b:5000,",
    })
    assert config == Config(
        tracking_uri="http://mlflow.mlship:5000",
        serving_tracking_uri="https://mlflow.internal",
        allowed_tracking_uris=frozenset({"https://mlflow.team-a", "http://mlflow.team-b:5000"}),
        serving_image="reg.example/serving:1.2",
        image_pull_policy="Always",
        poll_interval=15.0,
        max_backoff=120.0,
        registry_timeout=3.0,
        progress_deadline=90,
        crashloop_restarts=4,
        namespaces=("models", "staging"),
        cluster_domain="corp.local",
        liveness_endpoint="",
        watch_server_timeout=60,
        log_level="DEBUG",
        kafka_bootstrap_servers="k1.kafka:9092,k2.kafka:19092",
    )
    assert not config.clusterwide
    assert config.usable_tracking_uris == {
        "http://mlflow.mlship:5000", "https://mlflow.internal",
        "https://mlflow.team-a", "http://mlflow.team-b:5000",
    }


@pytest.mark.parametrize(
    ("env", "named"),
    [
        ({}, "MLFLOW_TRACKING_URI is required"),
        ({"MLFLOW_TRACKING_URI": "mlflow:5000"}, "MLFLOW_TRACKING_URI='mlflow:5000'"),
        ({"MLFLOW_TRACKING_URI": "sqlite:///x.db"}, "MLFLOW_TRACKING_URI"),
        ({**BASE, "MLSHIP_SERVING_TRACKING_URI": "ftp://x"}, "MLSHIP_SERVING_TRACKING_URI"),
        ({**BASE, "MLSHIP_ALLOWED_TRACKING_URIS": "http://ok:5000,mlflow:5000"},
         "MLSHIP_ALLOWED_TRACKING_URIS entry 'mlflow:5000' must be an http:// or https:// URL"),
        ({**BASE, "MLSHIP_ALLOWED_TRACKING_URIS": "ftp://x"},
         "MLSHIP_ALLOWED_TRACKING_URIS entry 'ftp://x'"),
        ({**BASE, "MLSHIP_SERVING_IMAGE": "a b"}, "MLSHIP_SERVING_IMAGE"),
        ({**BASE, "MLSHIP_IMAGE_PULL_POLICY": "Sometimes"}, "MLSHIP_IMAGE_PULL_POLICY"),
        ({**BASE, "MLSHIP_POLL_INTERVAL_SECONDS": "soon"}, "MLSHIP_POLL_INTERVAL_SECONDS='soon'"),
        ({**BASE, "MLSHIP_POLL_INTERVAL_SECONDS": "0"}, "between 1 and 3600"),
        ({**BASE, "MLSHIP_POLL_INTERVAL_SECONDS": "30", "MLSHIP_MAX_BACKOFF_SECONDS": "10"},
         "MLSHIP_MAX_BACKOFF_SECONDS=10 must not be shorter"),
        ({**BASE, "MLSHIP_PROGRESS_DEADLINE_SECONDS": "60.5"}, "whole number"),
        ({**BASE, "MLSHIP_CRASHLOOP_RESTARTS": "0"}, "MLSHIP_CRASHLOOP_RESTARTS"),
        ({**BASE, "MLSHIP_WATCH_NAMESPACES": "models,Prod"}, "'Prod' is not a namespace"),
        ({**BASE, "MLSHIP_WATCH_NAMESPACES": "team-*"}, "patterns are not supported"),
        ({**BASE, "MLSHIP_CLUSTER_DOMAIN": "bad_domain"}, "MLSHIP_CLUSTER_DOMAIN"),
        ({**BASE, "MLSHIP_LIVENESS_ENDPOINT": "0.0.0.0:8081"}, "MLSHIP_LIVENESS_ENDPOINT"),
        ({**BASE, "MLSHIP_LOG_LEVEL": "loud"}, "MLSHIP_LOG_LEVEL"),
        ({**BASE, "MLSHIP_KAFKA_BOOTSTRAP_SERVERS": "kafka"},
         "MLSHIP_KAFKA_BOOTSTRAP_SERVERS='kafka' must be host:port[,host:port...] (not 'kafka')"),
        ({**BASE, "MLSHIP_KAFKA_BOOTSTRAP_SERVERS": "k:9092,,k2:x"}, "(not '', 'k2:x')"),
        ({**BASE, "MLSHIP_KAFKA_BOOTSTRAP_SERVERS": "http://k:9092"}, "(not 'http://k:9092')"),
    ],
)
def test_invalid_settings_are_rejected_naming_the_variable(env: dict, named: str) -> None:
    with pytest.raises(ConfigError) as info:
        from_env(env)
    assert named in str(info.value)


def test_every_problem_is_reported_at_once_each_naming_its_variable() -> None:
    with pytest.raises(ConfigError) as info:
        from_env({
            "MLFLOW_TRACKING_URI": "mlflow:5000",
            "MLSHIP_POLL_INTERVAL_SECONDS": "soon",
            "MLSHIP_CRASHLOOP_RESTARTS": "0",
            "MLSHIP_LOG_LEVEL": "loud",
        })
    assert str(info.value).split("; ") == [
        "MLFLOW_TRACKING_URI='mlflow:5000' must be an http:// or https:// URL with a host",
        "MLSHIP_POLL_INTERVAL_SECONDS='soon' is not a number",
        "MLSHIP_LOG_LEVEL='LOUD' must be DEBUG, INFO, WARNING or ERROR",
        "MLSHIP_CRASHLOOP_RESTARTS=0 is out of range: it must be between 1 and 20",
    ]


def test_python_m_entry_exits_2_with_the_message(tmp_path) -> None:
    import subprocess
    import sys

    proc = subprocess.run(
        [sys.executable, "-m", "mlship_operator"],
        env={"PATH": "/usr/bin:/bin", "MLFLOW_TRACKING_URI": "nope"},
        capture_output=True, text=True, timeout=60, cwd=tmp_path,
    )
    assert proc.returncode == 2
    assert "invalid configuration: MLFLOW_TRACKING_URI='nope'" in proc.stderr


# ------------------------------------------------------------------ boundaries (mutation testing)

RANGES = [  # variable, lowest accepted, highest accepted, what it sets
    ("MLSHIP_POLL_INTERVAL_SECONDS", 1, 3600, "poll_interval"),
    ("MLSHIP_MAX_BACKOFF_SECONDS", 5, 3600, "max_backoff"),  # low: not below the 5 s poll
    ("MLSHIP_REGISTRY_TIMEOUT_SECONDS", 1, 120, "registry_timeout"),
    ("MLSHIP_PROGRESS_DEADLINE_SECONDS", 30, 3600, "progress_deadline"),
    ("MLSHIP_CRASHLOOP_RESTARTS", 1, 20, "crashloop_restarts"),
    ("MLSHIP_WATCH_TIMEOUT_SECONDS", 10, 3600, "watch_server_timeout"),
]


@pytest.mark.parametrize(("key", "low", "high", "field"), RANGES)
def test_each_range_includes_its_ends_and_nothing_past_them(key, low, high, field) -> None:
    backoff = key == "MLSHIP_MAX_BACKOFF_SECONDS"
    env = BASE if backoff else {**BASE, "MLSHIP_MAX_BACKOFF_SECONDS": "3600"}
    for accepted in (low, high):
        assert getattr(from_env({**env, key: str(accepted)}), field) == accepted
    lowest = 1 if backoff else low  # the backoff's own range starts at 1 (below the poll: see below)
    for raw in (str(round(lowest - 0.001, 3)), str(round(high + 0.001, 3))):
        with pytest.raises(ConfigError) as info:
            from_env({**env, key: raw})
        assert str(info.value) == f"{key}={raw} is out of range: it must be between {lowest:g} and {high:g}"


def test_a_backoff_equal_to_the_poll_interval_is_allowed() -> None:
    config = from_env({**BASE, "MLSHIP_POLL_INTERVAL_SECONDS": "7", "MLSHIP_MAX_BACKOFF_SECONDS": "7"})
    assert (config.poll_interval, config.max_backoff) == (7.0, 7.0)
    with pytest.raises(ConfigError) as info:
        from_env({**BASE, "MLSHIP_POLL_INTERVAL_SECONDS": "7", "MLSHIP_MAX_BACKOFF_SECONDS": "6.5"})
    assert str(info.value) == (
        "MLSHIP_MAX_BACKOFF_SECONDS=6.5 must not be shorter than MLSHIP_POLL_INTERVAL_SECONDS=7")


def test_a_namespace_name_of_63_characters_is_the_longest() -> None:
    longest = "a" * 63
    listed = from_env({**BASE, "MLSHIP_WATCH_NAMESPACES": f"{longest}, b ,{longest}"}).namespaces
    assert listed == (longest, "b")
    with pytest.raises(ConfigError) as info:
        from_env({**BASE, "MLSHIP_WATCH_NAMESPACES": "a" * 64})
    assert str(info.value) == (
        f"MLSHIP_WATCH_NAMESPACES entry {'a' * 64!r} is not a namespace name (lowercase letters, digits"
        " and '-', at most 63 characters; patterns are not supported)"
    )


def test_the_accepted_spellings() -> None:
    assert from_env({**BASE, "MLFLOW_TRACKING_URI": "https://mlflow//"}).tracking_uri == "https://mlflow"
    assert from_env({**BASE, "MLSHIP_LIVENESS_ENDPOINT": "https://0.0.0.0:8081/h"}).liveness_endpoint == (
        "https://0.0.0.0:8081/h")
    assert from_env({**BASE, "MLSHIP_LIVENESS_ENDPOINT": ""}).liveness_endpoint == ""
    for level in ("debug", "INFO", "warning", "Error"):
        assert from_env({**BASE, "MLSHIP_LOG_LEVEL": level}).log_level == level.upper()
    for policy in ("Always", "IfNotPresent", "Never"):
        assert from_env({**BASE, "MLSHIP_IMAGE_PULL_POLICY": policy}).image_pull_policy == policy
    with pytest.raises(ConfigError) as info:
        from_env({**BASE, "MLSHIP_IMAGE_PULL_POLICY": "always"})
    assert str(info.value) == "MLSHIP_IMAGE_PULL_POLICY='always' must be one of Always, IfNotPresent, Never"
    with pytest.raises(ConfigError) as info:
        from_env({**BASE, "MLSHIP_LOG_LEVEL": "critical"})
    assert str(info.value) == "MLSHIP_LOG_LEVEL='CRITICAL' must be DEBUG, INFO, WARNING or ERROR"


def test_the_registry_timeout_default_and_a_url_ending_in_a_capital() -> None:
    assert from_env(BASE).registry_timeout == 5.0
    assert from_env({"MLFLOW_TRACKING_URI": "http://MLFLOWX/"}).tracking_uri == "http://MLFLOWX"


def test_the_crashloop_and_watch_timeout_defaults() -> None:
    config = from_env(BASE)
    assert (config.crashloop_restarts, config.watch_server_timeout) == (2, 300)
    assert type(config.crashloop_restarts) is int and type(config.watch_server_timeout) is int
    blank = from_env({**BASE, "MLSHIP_CRASHLOOP_RESTARTS": " ", "MLSHIP_WATCH_TIMEOUT_SECONDS": ""})
    assert (blank.crashloop_restarts, blank.watch_server_timeout) == (2, 300)
    # a whole number written as a float is that number, an int
    spelled = from_env({**BASE, "MLSHIP_CRASHLOOP_RESTARTS": " 3.0 ", "MLSHIP_WATCH_TIMEOUT_SECONDS": "6e1"})
    assert (spelled.crashloop_restarts, spelled.watch_server_timeout) == (3, 60)
    assert type(spelled.crashloop_restarts) is int and type(spelled.watch_server_timeout) is int


@pytest.mark.parametrize(
    ("key", "raw", "expected"),
    [
        ("MLSHIP_CRASHLOOP_RESTARTS", "twice", "MLSHIP_CRASHLOOP_RESTARTS='twice' is not a number"),
        ("MLSHIP_CRASHLOOP_RESTARTS", "2.5", "MLSHIP_CRASHLOOP_RESTARTS='2.5' must be a whole number"),
        ("MLSHIP_WATCH_TIMEOUT_SECONDS", "5m", "MLSHIP_WATCH_TIMEOUT_SECONDS='5m' is not a number"),
        ("MLSHIP_WATCH_TIMEOUT_SECONDS", "60.5",
         "MLSHIP_WATCH_TIMEOUT_SECONDS='60.5' must be a whole number"),
    ],
)
def test_the_crashloop_and_watch_timeout_parsing_errors(key: str, raw: str, expected: str) -> None:
    with pytest.raises(ConfigError) as info:
        from_env({**BASE, key: raw})
    assert str(info.value) == expected


def test_a_short_routing_key_is_refused() -> None:
    with pytest.raises(ConfigError, match="MLSHIP_ROUTING_KEY is 5 characters; use at least 16"):
        from_env({"MLFLOW_TRACKING_URI": "http://localhost:5000", "MLSHIP_ROUTING_KEY": "short"})
    assert from_env({"MLFLOW_TRACKING_URI": "http://m:5000"}).routing_key == ""
