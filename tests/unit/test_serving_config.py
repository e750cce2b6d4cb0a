"""The serving environment contract, validated at start-up."""

from __future__ import annotations

import pytest

from mlship.serving.config import ConfigError, load_config

pytestmark = pytest.mark.unit

REGISTRY = {
    "MLFLOW_TRACKING_URI": "http://mlflow:5000",
    "MLSHIP_MODEL_NAME": "iris",
    "MLSHIP_MODEL_VERSION": "3",
}


def test_name_and_version_make_a_registry_uri_with_defaults() -> None:
    config = load_config(REGISTRY)
    assert config.model_uri == "models:/iris/3"
    assert (config.model_name, config.model_version) == ("iris", "3")
    assert config.tracking_uri == "http://mlflow:5000"
    assert (config.host, config.port) == ("0.0.0.0", 8080)  # noqa: S104
    assert (config.max_batch_size, config.max_batch_wait_s) == (64, 0.002)
    assert config.log_level == "INFO"


def test_knobs() -> None:
    config = load_config(
        REGISTRY
        | {
            "PORT": "9000",
            "MLSHIP_MAX_BATCH_SIZE": "128",
            "MLSHIP_MAX_BATCH_WAIT_MS": "5",
            "MLSHIP_LOG_LEVEL": "debug",
            "MLSHIP_SHUTDOWN_TIMEOUT_S": "10",
        }
    )
    assert (config.port, config.max_batch_size, config.max_batch_wait_s) == (9000, 128, 0.005)
    assert (config.log_level, config.shutdown_timeout_s) == ("DEBUG", 10.0)


def test_models_uri_gives_name_and_version() -> None:
    config = load_config({"MLFLOW_TRACKING_URI": "http://m", "MLSHIP_MODEL_URI": "models:/iris/7"})
    assert (config.model_name, config.model_version) == ("iris", "7")
    alias = load_config(
        {"MLFLOW_TRACKING_URI": "http://m", "MLSHIP_MODEL_URI": "models:/iris@champion"}
    )
    assert (alias.model_name, alias.model_version) == ("iris", "")


def test_a_local_path_needs_no_tracking_server() -> None:
    config = load_config({"MLSHIP_MODEL_URI": "/models/iris-rf"})
    assert (config.model_uri, config.model_name, config.tracking_uri) == (
        "/models/iris-rf",
        "iris-rf",
        None,
    )


def test_every_problem_is_reported_at_once() -> None:
    with pytest.raises(ConfigError) as info:
        load_config(
            {
                "MLSHIP_MODEL_NAME": "iris",
                "PORT": "http",
                "MLSHIP_MAX_BATCH_SIZE": "0",
                "MLSHIP_MAX_BATCH_WAIT_MS": "nan",
                "MLSHIP_LOG_LEVEL": "loud",
            }
        )
    message = str(info.value)
    for fragment in [
        "MLSHIP_MODEL_VERSION is required",
        "MLFLOW_TRACKING_URI is required to load models:/iris/",
        "PORT='http' is not an integer",
        "MLSHIP_MAX_BATCH_SIZE=0 is out of range [1, 100000]",
        "MLSHIP_MAX_BATCH_WAIT_MS=nan is out of range",
        "MLSHIP_LOG_LEVEL='LOUD' is not one of DEBUG, INFO",
    ]:
        assert fragment in message


def test_two_bad_variables_are_named_together_in_the_shared_style() -> None:
    # The style of the operator's and the DAG spec's configuration: "; "-separated, each naming
    # its variable (serving prefixes the whole with what it configures).
    with pytest.raises(ConfigError) as info:
        load_config(REGISTRY | {"PORT": "70000", "MLSHIP_LOG_LEVEL": "loud"})
    prefix = "invalid serving configuration: "
    assert str(info.value).startswith(prefix)
    assert str(info.value).removeprefix(prefix).split("; ") == [
        "PORT=70000 is out of range [1, 65535]",
        "MLSHIP_LOG_LEVEL='LOUD' is not one of DEBUG, INFO, WARNING, ERROR, CRITICAL",
    ]


@pytest.mark.parametrize(
    ("env", "fragment"),
    [
        ({}, "MLSHIP_MODEL_NAME is required"),
        (REGISTRY | {"MLSHIP_MODEL_VERSION": "latest"}, "'latest' is not a registry version"),
        (REGISTRY | {"MLSHIP_MODEL_VERSION": "0"}, "'0' is not a registry version"),
        (REGISTRY | {"MLSHIP_MODEL_URI": "models:/iris/3"}, "not both"),
        ({"MLSHIP_MODEL_URI": "models:/iris"}, "is not models:/<name>/<version>"),
        (
            {"MLSHIP_MODEL_URI": "models:/iris/2", "MLSHIP_MODEL_NAME": "wine"},
            "MLSHIP_MODEL_NAME='wine' does not match",
        ),
        ({"MLSHIP_MODEL_URI": "runs:/abc/model"}, "MLFLOW_TRACKING_URI is required"),
        (REGISTRY | {"PORT": "70000"}, "PORT=70000 is out of range"),
    ],
)
def test_invalid(env: dict[str, str], fragment: str) -> None:
    with pytest.raises(ConfigError, match="invalid serving configuration") as info:
        load_config(env)
    assert fragment in str(info.value)


# --- the inference log --------------------------------------------------------------------------


def test_the_inference_log_is_off_unless_a_rate_is_set() -> None:
    config = load_config(REGISTRY)
    assert config.inference_log_sample_rate == 0.0
    assert config.inference_log_flush_s == 10.0
    assert config.inference_log_experiment == "mlship-inference"


def test_inference_log_knobs() -> None:
    config = load_config(
        REGISTRY
        | {
            "MLSHIP_INFERENCE_LOG_SAMPLE_RATE": "0.25",
            "MLSHIP_INFERENCE_LOG_FLUSH_SECONDS": "2.5",
            "MLSHIP_INFERENCE_LOG_EXPERIMENT": "iris-traffic",
        }
    )
    assert config.inference_log_sample_rate == 0.25
    assert config.inference_log_flush_s == 2.5
    assert config.inference_log_experiment == "iris-traffic"


def test_bad_inference_log_values_are_named() -> None:
    with pytest.raises(ConfigError) as err:
        load_config(
            REGISTRY
            | {
                "MLSHIP_INFERENCE_LOG_SAMPLE_RATE": "1.5",
                "MLSHIP_INFERENCE_LOG_FLUSH_SECONDS": "soon",
            }
        )
    message = str(err.value)
    assert "MLSHIP_INFERENCE_LOG_SAMPLE_RATE=1.5 is out of range [0.0, 1.0]" in message
    assert "MLSHIP_INFERENCE_LOG_FLUSH_SECONDS='soon' is not a number" in message
    with pytest.raises(ConfigError, match="MLSHIP_INFERENCE_LOG_FLUSH_SECONDS=0.0 is out of range"):
        load_config(REGISTRY | {"MLSHIP_INFERENCE_LOG_FLUSH_SECONDS": "0"})


def test_logging_needs_a_tracking_server() -> None:
    local = {"MLSHIP_MODEL_URI": "/models/iris-rf"}
    assert load_config(local | {"MLSHIP_INFERENCE_LOG_SAMPLE_RATE": "0"}).tracking_uri is None
    with pytest.raises(ConfigError, match="MLSHIP_INFERENCE_LOG_SAMPLE_RATE=1 logs requests to "
                       "MLflow, which needs MLFLOW_TRACKING_URI"):
        load_config(local | {"MLSHIP_INFERENCE_LOG_SAMPLE_RATE": "1"})


# ------------------------------------------------------------------ boundaries (mutation testing)

RANGES = [  # variable, lowest accepted, highest accepted, just below, just above, what it sets
    ("PORT", "1", "65535", "0", "65536", "port"),
    ("MLSHIP_MAX_BATCH_SIZE", "1", "100000", "0", "100001", "max_batch_size"),
    ("MLSHIP_MAX_BATCH_WAIT_MS", "0", "1000", "-0.001", "1000.001", "max_batch_wait_s"),
    ("MLSHIP_SHUTDOWN_TIMEOUT_S", "0", "3600", "-0.001", "3600.001", "shutdown_timeout_s"),
    ("MLSHIP_INFERENCE_LOG_SAMPLE_RATE", "0", "1", "-0.001", "1.001", "inference_log_sample_rate"),
    ("MLSHIP_INFERENCE_LOG_FLUSH_SECONDS", "0.05", "3600", "0.049", "3600.001", "inference_log_flush_s"),
    ("MLSHIP_KAFKA_QUEUE_MAX_MESSAGES", "1", "10000000", "0", "10000001", "kafka_queue_max_messages"),
    ("MLSHIP_KAFKA_LINGER_MS", "0", "60000", "-0.001", "60000.001", "kafka_linger_ms"),
]
INTEGERS = ("PORT", "MLSHIP_MAX_BATCH_SIZE", "MLSHIP_KAFKA_QUEUE_MAX_MESSAGES")


@pytest.mark.parametrize(("key", "low", "high", "below", "above", "field"), RANGES)
def test_each_range_includes_its_ends_and_nothing_past_them(key, low, high, below, above, field) -> None:
    for accepted in (low, high):
        value = getattr(load_config(REGISTRY | {key: accepted}), field)
        scale = 1000.0 if key == "MLSHIP_MAX_BATCH_WAIT_MS" else 1.0
        assert value * scale == float(accepted)
    for rejected in (below, above):
        with pytest.raises(ConfigError) as info:
            load_config(REGISTRY | {key: rejected})
        low_n, high_n = (int(low), int(high)) if key in INTEGERS else (
            float(low), float(high))
        shown = int(rejected) if isinstance(low_n, int) else float(rejected)
        assert str(info.value) == (
            f"invalid serving configuration: {key}={shown} is out of range [{low_n}, {high_n}]")


def test_the_defaults_of_every_knob() -> None:
    config = load_config(REGISTRY)
    assert (config.shutdown_timeout_s, config.inference_log_flush_s) == (25.0, 10.0)
    assert config.inference_log_sample_rate == 0.0
    assert config.host == "0.0.0.0"  # noqa: S104
    assert load_config(REGISTRY | {"MLSHIP_HOST": " 127.0.0.1 "}).host == "127.0.0.1"


def test_version_one_is_the_first_registry_version() -> None:
    assert load_config(REGISTRY | {"MLSHIP_MODEL_VERSION": "1"}).model_uri == "models:/iris/1"
    with pytest.raises(ConfigError) as info:
        load_config(REGISTRY | {"MLSHIP_MODEL_VERSION": "0"})
    assert str(info.value) == (
        "invalid serving configuration: MLSHIP_MODEL_VERSION='0' is not a registry version (1, 2, ...)")


def test_a_file_uri_is_local_and_names_the_model_after_its_last_folder() -> None:
    config = load_config({"MLSHIP_MODEL_URI": "file:///models/iris-v2/"})
    assert (config.model_name, config.model_version, config.tracking_uri) == ("iris-v2", "", None)
    assert load_config({"MLSHIP_MODEL_URI": "/srv/models/a/b"}).model_name == "b"
    with pytest.raises(ConfigError, match="MLFLOW_TRACKING_URI is required to load s3://bucket/m"):
        load_config({"MLSHIP_MODEL_URI": "s3://bucket/m"})


def test_every_message_in_full_joined_by_semicolons() -> None:
    with pytest.raises(ConfigError) as info:
        load_config({"MLSHIP_MODEL_URI": "models:/a", "MLSHIP_MODEL_VERSION": "2",
                     "MLSHIP_INFERENCE_LOG_SAMPLE_RATE": "0.5"})
    assert str(info.value) == (
        "invalid serving configuration: "
        "set either MLSHIP_MODEL_URI or MLSHIP_MODEL_NAME + MLSHIP_MODEL_VERSION, not both; "
        "MLSHIP_MODEL_URI='models:/a' is not models:/<name>/<version> or models:/<name>@<alias>; "
        "MLFLOW_TRACKING_URI is required to load models:/a; "
        "MLSHIP_INFERENCE_LOG_SAMPLE_RATE=0.5 logs requests to MLflow, which needs "
        "MLFLOW_TRACKING_URI: set it (or MLSHIP_KAFKA_BOOTSTRAP_SERVERS to send them to Kafka), "
        "or set the rate to 0 to log nothing"
    )
    with pytest.raises(ConfigError) as info:
        load_config({})
    assert str(info.value) == (
        "invalid serving configuration: MLSHIP_MODEL_NAME is required (or MLSHIP_MODEL_URI); "
        "MLSHIP_MODEL_VERSION is required (or MLSHIP_MODEL_URI); "
        "MLFLOW_TRACKING_URI is required to load models://"
    )


@pytest.mark.parametrize(("uri", "name"), [("mymodel", "mymodel"), ("/models/BOX/", "BOX"), ("./a/b", "b")])
def test_a_local_models_name_is_its_last_path_part(uri: str, name: str) -> None:
    assert load_config({"MLSHIP_MODEL_URI": uri}).model_name == name


# ------------------------------------------------------------------ Kafka (prediction events, labels)


def test_kafka_is_off_by_default_with_the_schemas_topics() -> None:
    config = load_config(REGISTRY)
    assert config.kafka_bootstrap_servers is None
    assert (config.predictions_topic, config.labels_topic) == ("mlship.predictions", "mlship.labels")
    assert (config.kafka_queue_max_messages, config.kafka_linger_ms) == (100_000, 50.0)


def test_kafka_knobs() -> None:
    config = load_config(REGISTRY | {
        "MLSHIP_KAFKA_BOOTSTRAP_SERVERS": " kafka-0.kafka:9092 , [::1]:9093,10.0.0.7:19092 ",
        "MLSHIP_KAFKA_PREDICTIONS_TOPIC": "iris.predictions",
        "MLSHIP_KAFKA_LABELS_TOPIC": "iris_labels-v1",
        "MLSHIP_KAFKA_QUEUE_MAX_MESSAGES": "5000",
        "MLSHIP_KAFKA_LINGER_MS": "20",
    })
    assert config.kafka_bootstrap_servers == "kafka-0.kafka:9092,[::1]:9093,10.0.0.7:19092"
    assert (config.predictions_topic, config.labels_topic) == ("iris.predictions", "iris_labels-v1")
    assert (config.kafka_queue_max_messages, config.kafka_linger_ms) == (5000, 20.0)


def test_kafka_takes_the_sample_without_a_tracking_server() -> None:
    local = {"MLSHIP_MODEL_URI": "/models/iris-rf", "MLSHIP_INFERENCE_LOG_SAMPLE_RATE": "1"}
    config = load_config(local | {"MLSHIP_KAFKA_BOOTSTRAP_SERVERS": "kafka:9092"})
    assert (config.tracking_uri, config.inference_log_sample_rate) == (None, 1.0)


def test_every_kafka_problem_at_once_each_naming_its_variable() -> None:
    with pytest.raises(ConfigError) as info:
        load_config(REGISTRY | {
            "MLSHIP_KAFKA_BOOTSTRAP_SERVERS": "kafka:9092,kafka",
            "MLSHIP_KAFKA_PREDICTIONS_TOPIC": "my topic",
            "MLSHIP_KAFKA_LABELS_TOPIC": "x" * 250,
            "MLSHIP_KAFKA_QUEUE_MAX_MESSAGES": "lots",
            "MLSHIP_KAFKA_LINGER_MS": "soon",
        })
    assert str(info.value) == (
        "invalid serving configuration: "
        "MLSHIP_KAFKA_BOOTSTRAP_SERVERS='kafka:9092,kafka': 'kafka' is not host:port "
        "(a comma-separated list of them); "
        "MLSHIP_KAFKA_PREDICTIONS_TOPIC='my topic' is not a Kafka topic name "
        "(1-249 of a-z A-Z 0-9 . _ -); "
        f"MLSHIP_KAFKA_LABELS_TOPIC='{'x' * 250}' is not a Kafka topic name "
        "(1-249 of a-z A-Z 0-9 . _ -); "
        "MLSHIP_KAFKA_QUEUE_MAX_MESSAGES='lots' is not an integer; "
        "MLSHIP_KAFKA_LINGER_MS='soon' is not a number"
    )


@pytest.mark.parametrize("servers", [":9092", "kafka:", "kafka:0", "kafka:65536", "kafka:x", "a:1,,b:2"])
def test_a_bootstrap_server_must_be_host_and_port(servers: str) -> None:
    with pytest.raises(ConfigError, match="MLSHIP_KAFKA_BOOTSTRAP_SERVERS=.* is not host:port"):
        load_config(REGISTRY | {"MLSHIP_KAFKA_BOOTSTRAP_SERVERS": servers})


@pytest.mark.parametrize("topic", [".", "..", "a/b", "ä", "x" * 250])
def test_topic_names_follow_kafkas_rule(topic: str) -> None:
    with pytest.raises(ConfigError, match="MLSHIP_KAFKA_LABELS_TOPIC=.* is not a Kafka topic name"):
        load_config(REGISTRY | {"MLSHIP_KAFKA_LABELS_TOPIC": topic})
    assert load_config(REGISTRY | {"MLSHIP_KAFKA_LABELS_TOPIC": "x" * 249}).labels_topic == "x" * 249


def test_predictions_and_labels_need_topics_of_their_own() -> None:
    with pytest.raises(ConfigError, match="MLSHIP_KAFKA_PREDICTIONS_TOPIC and MLSHIP_KAFKA_LABELS_TOPIC "
                       "are both 'events': predictions and labels need topics of their own"):
        load_config(REGISTRY | {"MLSHIP_KAFKA_PREDICTIONS_TOPIC": "events",
                                "MLSHIP_KAFKA_LABELS_TOPIC": "events"})


def test_no_auth_token_unless_one_is_set() -> None:
    assert load_config(REGISTRY).auth_token is None
    assert load_config(REGISTRY | {"MLSHIP_AUTH_TOKEN": "  "}).auth_token is None


def test_the_auth_token_is_stripped_and_kept_out_of_the_repr() -> None:
    config = load_config(REGISTRY | {"MLSHIP_AUTH_TOKEN": " \tabcdefghijklmnop-1234\n"})
    assert config.auth_token == "abcdefghijklmnop-1234"  # noqa: S105 - a test's own
    assert "abcdefghijklmnop" not in repr(config)
    assert load_config(REGISTRY | {"MLSHIP_AUTH_TOKEN": "x" * 16}).auth_token == "x" * 16


@pytest.mark.parametrize("token", ["x" * 15, "short", "sixteen-chars-or more", "tab\tinside-0123456789"])
def test_an_auth_token_too_short_or_with_whitespace_is_refused_without_showing_it(token: str) -> None:
    with pytest.raises(ConfigError) as info:
        load_config(REGISTRY | {"MLSHIP_AUTH_TOKEN": token, "MLSHIP_MAX_BATCH_SIZE": "0"})
    assert str(info.value) == (
        "invalid serving configuration: MLSHIP_MAX_BATCH_SIZE=0 is out of range [1, 100000]; "
        "MLSHIP_AUTH_TOKEN must be at least 16 characters with no whitespace inside "
        "(the value is not shown)"
    )
    assert token not in str(info.value)


def test_the_routing_token_is_read_like_the_auth_token_and_kept_out_of_the_repr() -> None:
    assert load_config(REGISTRY).routing_token is None
    assert load_config(REGISTRY | {"MLSHIP_ROUTING_TOKEN": " "}).routing_token is None
    config = load_config(REGISTRY | {"MLSHIP_ROUTING_TOKEN": " routing-token-0123456789 "})
    assert config.routing_token == "routing-token-0123456789"  # noqa: S105 - a test's own
    assert "routing-token" not in repr(config)
    with pytest.raises(ConfigError, match="MLSHIP_ROUTING_TOKEN must be at least 16 characters") as info:
        load_config(REGISTRY | {"MLSHIP_ROUTING_TOKEN": "short one"})
    assert "short one" not in str(info.value)
