"""Names that cross a process boundary, said once: MLflow tag keys, registry aliases, and the
environment serving reads (which the operator writes on its pods).

Dependency-free on purpose: the steps, serving, the operator and the DAG files all import it, and
the operator and Airflow images must not pull MLflow or serving in to learn a string.
"""

from __future__ import annotations

# --- registry aliases ---------------------------------------------------------------------------

CHAMPION = "champion"
"""The served version: the gate (or a person) moves it; the operator and drift follow it."""
CHALLENGER = "challenger"
"""A version that passed the gate's threshold but did not beat the champion."""

# --- Airflow DAGs ------------------------------------------------------------------------------

DAG_TRAINING = "mlship_training"
DAG_DRIFT = "mlship_drift"
DAG_BATCH_SCORE = "mlship_batch_score"

# --- MLflow experiments (defaults; each can be set per install) -------------------------------

EXPERIMENT_PIPELINE = "mlship"
"""The training pipeline's runs."""
EXPERIMENT_INFERENCE = "mlship-inference"
"""What serving logs of its requests; the drift check reads it."""
EXPERIMENT_DRIFT = "mlship-drift"
"""The drift check's reports."""
EXPERIMENT_BATCH = "mlship-batch"
"""mlship_batch_score's runs: each holds a scored dataset's predictions."""
EXPERIMENT_RECORD = "mlship-record"
"""The event record: prediction events joined with their labels, as Parquet (mlship.events.record)."""

# --- Kafka topics (docs/events.md) --------------------------------------------------------------

TOPIC_PREDICTIONS = "mlship.predictions"
"""Serving's prediction events, one per scored row."""
TOPIC_LABELS = "mlship.labels"
"""Ground-truth labels (serving's /feedback, or any producer)."""

# --- the steps' environment ---------------------------------------------------------------------

SOURCE_HEADERS_ENV = "MLSHIP_SOURCE_HEADERS"
"""A JSON object of hosts (or host:port) to the HTTP headers (API keys) ingest sends with a JSON
API source's request to that host only (mlship.ml.json_source); filled from a Secret, never from
the trigger form."""
ALERT_WEBHOOK_ENV = "MLSHIP_ALERT_WEBHOOK_URL"
"""The URL mlship.alerts posts to (a chat webhook's URL is a credential: filled from a Secret)."""
MLFLOW_UI_ENV = "MLSHIP_MLFLOW_UI_URL"
AIRFLOW_UI_ENV = "MLSHIP_AIRFLOW_UI_URL"
"""Where people open MLflow and Airflow: the bases of mlship.alerts' links."""

# --- MLflow tags --------------------------------------------------------------------------------
# On runs of a pipeline (the parent run and each step's child run).
TAG_RUN_KEY = "mlship.pipeline_run_key"
TAG_STEP = "mlship.step"
TAG_TRIGGER_REASON = "mlship.trigger_reason"
TAG_DATASET_DIGEST = "mlship.dataset_digest"  # also on the registered version
TAG_DATASET_SOURCE = "mlship.dataset_source"
# A DVC source's lineage (mlship.ml.dvc_source): what was read, next to the digest of its bytes.
TAG_DATASET_REPO = "mlship.dataset_repo"
TAG_DATASET_PATH = "mlship.dataset_path"
TAG_DATASET_COMMIT = "mlship.dataset_commit"
TAG_DATASET_DVC_MD5 = "mlship.dataset_dvc_md5"
TAG_VALIDATION = "mlship.validation"
TAG_CHAMPION_ERROR = "mlship.champion_error"
TAG_REGISTER = "mlship.register"

# On a registered model version (its lineage and the gate's verdict).
TAG_PARENT_RUN_ID = "mlship.parent_run_id"
TAG_DATASET_URI = "mlship.dataset_uri"
TAG_EVALUATION_URI = "mlship.evaluation_uri"
TAG_TASK = "mlship.task"
TAG_METRIC_PREFIX = "mlship.metric."
TAG_GATE = "mlship.gate"
TAG_GATE_REASON = "mlship.gate_reason"
# The hyperparameter search (steps/tune.py): a trial's index and error, the search's best trial.
TAG_TRIAL = "mlship.trial"
TAG_TRIAL_ERROR = "mlship.error"
TAG_BEST_RUN = "mlship.best_run_id"

# On a registered model version: its compiled predictor (mlship.ml.compiled), logged with the
# version's run under COMPILED_ARTIFACT, and the parity check against scikit-learn on the holdout.
# Serving may use the compiled form only when TAG_COMPILED is PARITY_HELD.
TAG_COMPILED = "mlship.compiled"
"""PARITY_HELD, PARITY_FAILED or NOT_COMPILED."""
TAG_COMPILED_DETAIL = "mlship.compiled_detail"
"""The parity summary, or "not compiled: <reason>"."""
TAG_COMPILED_URI = "mlship.compiled_uri"
TAG_PARITY_ROWS = "mlship.parity_rows"
TAG_PARITY_MISMATCHES = "mlship.parity_mismatches"
TAG_PARITY_MAX_ERROR = "mlship.parity_max_abs_error"
TAG_PREDICTOR = "mlship.predictor"
"""On a batch scoring run: what scored it, compiled or sklearn (mlship.mlflow_io.compiled)."""
TAG_PREDICTOR_REASON = "mlship.predictor_reason"
PARITY_HELD = "held"
PARITY_FAILED = "failed"
NOT_COMPILED = "not compiled"
COMPILED_ARTIFACT = "compiled"

# Which model version a run is about: on the register step's runs, the inference log's runs and
# the drift reports. TAG_MODEL_VERSION is always the bare registry version ("3"), never "iris/3".
TAG_MODEL_NAME = "mlship.model_name"
TAG_MODEL_VERSION = "mlship.model_version"

# On inference-log runs.
TAG_INFERENCE_LOG = "mlship.inference_log"
TAG_POD = "mlship.pod"

# On the event record's runs (one per model).
TAG_RECORD = "mlship.record"

# On drift reports.
TAG_ALIAS = "mlship.alias"
TAG_DRIFT = "mlship.drift"
TAG_DRIFT_SUMMARY = "mlship.drift_summary"


class ServingEnv:
    """The environment variables serving reads at start-up (mlship.serving.config.load_config);
    the operator sets them on the serving container (mlship_operator.builders)."""

    TRACKING_URI = "MLFLOW_TRACKING_URI"
    MODEL_URI = "MLSHIP_MODEL_URI"
    MODEL_NAME = "MLSHIP_MODEL_NAME"
    MODEL_VERSION = "MLSHIP_MODEL_VERSION"
    HOST = "MLSHIP_HOST"
    PORT = "PORT"
    MAX_BATCH_SIZE = "MLSHIP_MAX_BATCH_SIZE"
    MAX_BATCH_WAIT_MS = "MLSHIP_MAX_BATCH_WAIT_MS"
    SHUTDOWN_TIMEOUT_S = "MLSHIP_SHUTDOWN_TIMEOUT_S"
    LOG_LEVEL = "MLSHIP_LOG_LEVEL"
    INFERENCE_LOG_SAMPLE_RATE = "MLSHIP_INFERENCE_LOG_SAMPLE_RATE"
    INFERENCE_LOG_FLUSH_SECONDS = "MLSHIP_INFERENCE_LOG_FLUSH_SECONDS"
    INFERENCE_LOG_EXPERIMENT = "MLSHIP_INFERENCE_LOG_EXPERIMENT"
    # Prediction events and labels (docs/events.md): set the bootstrap servers to turn them on.
    KAFKA_BOOTSTRAP_SERVERS = "MLSHIP_KAFKA_BOOTSTRAP_SERVERS"
    KAFKA_PREDICTIONS_TOPIC = "MLSHIP_KAFKA_PREDICTIONS_TOPIC"
    KAFKA_LABELS_TOPIC = "MLSHIP_KAFKA_LABELS_TOPIC"
    KAFKA_QUEUE_MAX_MESSAGES = "MLSHIP_KAFKA_QUEUE_MAX_MESSAGES"
    KAFKA_LINGER_MS = "MLSHIP_KAFKA_LINGER_MS"
    # The bearer token /invocations, /feedback and the V2 infer endpoints require; unset: none.
    AUTH_TOKEN = "MLSHIP_AUTH_TOKEN"  # noqa: S105 - a variable's name, not a secret
    # The token the operator's routing pushes carry (PUT/GET /admin/routing, mlship.traffic);
    # unset: no /admin/routing, so no canary or shadow routing on this server.
    ROUTING_TOKEN = "MLSHIP_ROUTING_TOKEN"  # noqa: S105 - a variable's name, not a secret


class RecordEnv:
    """The environment the event record's consumer reads (`python -m mlship.events.record`); each
    has a flag of the same meaning, which wins."""

    TRACKING_URI = "MLFLOW_TRACKING_URI"
    BOOTSTRAP_SERVERS = "MLSHIP_KAFKA_BOOTSTRAP_SERVERS"
    GROUP_ID = "MLSHIP_RECORD_GROUP_ID"
    EXPERIMENT = "MLSHIP_RECORD_EXPERIMENT"
    FLUSH_SECONDS = "MLSHIP_RECORD_FLUSH_SECONDS"
    FLUSH_EVENTS = "MLSHIP_RECORD_FLUSH_EVENTS"
    PARTITIONS = "MLSHIP_KAFKA_PARTITIONS"
    REPLICATION_FACTOR = "MLSHIP_KAFKA_REPLICATION_FACTOR"
    PREDICTIONS_TOPIC = "MLSHIP_KAFKA_PREDICTIONS_TOPIC"  # the names serving reads
    LABELS_TOPIC = "MLSHIP_KAFKA_LABELS_TOPIC"
    LOG_LEVEL = "MLSHIP_LOG_LEVEL"
    ALIVE_FILE = "MLSHIP_RECORD_ALIVE_FILE"  # touched while the loop runs (liveness probe)
