"""The inference log end to end: `python -m mlship.serving` logs what it is asked to a real MLflow
server, across a restart and an MLflow outage, and `load_records` reads it all back."""

from __future__ import annotations

import signal
import time
import uuid
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path

import mlflow
import mlflow.sklearn
import pandas as pd
import pytest
from _serving_process import Server
from devkit import MlflowServer, WaitTimeout, wait_for
from mlflow import MlflowClient
from prometheus_client.parser import text_string_to_metric_families
from sklearn.datasets import load_iris
from sklearn.ensemble import RandomForestClassifier

from mlship.monitoring import inference_log

pytestmark = [pytest.mark.integration, pytest.mark.timeout(600)]

MODEL = "iris-logged"
X, Y = load_iris(return_X_y=True, as_frame=True)
COLUMNS = list(X.columns)


@dataclass
class Registered:
    uri: str
    version: str


def _register(uri: str) -> Registered:
    previous = mlflow.get_tracking_uri()
    mlflow.set_tracking_uri(uri)
    try:
        with mlflow.start_run():
            info = mlflow.sklearn.log_model(
                RandomForestClassifier(10, random_state=0).fit(X, Y),
                name="model",
                input_example=X.head(2),
                registered_model_name=MODEL,
                skops_trusted_types=["sklearn.tree._tree.Tree"],
            )
    finally:
        mlflow.set_tracking_uri(previous)
    return Registered(uri, str(info.registered_model_version))


@pytest.fixture(scope="module")
def model(mlflow_server: str) -> Registered:
    return _register(mlflow_server)


@pytest.fixture
def experiment() -> str:
    return f"inference-{uuid.uuid4().hex[:8]}"


@pytest.fixture
def serve(tmp_path: Path) -> Iterator:
    servers: list[Server] = []

    def _serve(model: Registered, experiment: str, **env: str) -> Server:
        server = Server(
            {
                "MLFLOW_TRACKING_URI": model.uri,
                "MLSHIP_MODEL_NAME": MODEL,
                "MLSHIP_MODEL_VERSION": model.version,
                "MLSHIP_INFERENCE_LOG_EXPERIMENT": experiment,
                **env,
            },
            tmp_path / f"server{len(servers)}.log",
        )
        servers.append(server)
        server.wait_ready()
        return server

    yield _serve
    for server in servers:
        server.stop()


def sigterm(server: Server) -> int:
    server.proc.send_signal(signal.SIGTERM)
    return server.wait_exit(timeout=60)


def send(server: Server, rows: pd.DataFrame, how: str = "split") -> list[int]:
    """Score `rows` in one request; return the predictions it answered."""
    if how == "csv":
        response = server.post(data=rows.to_csv(index=False), content_type="text/csv")
    elif how == "records":
        response = server.post({"dataframe_records": rows.to_dict(orient="records")})
    else:
        response = server.post({"dataframe_split": rows.to_dict(orient="split")})
    assert response.status_code == 200, response.text
    return response.json()["predictions"]


def read(model: Registered, experiment: str, since: datetime) -> pd.DataFrame:
    return inference_log.load_records(
        MlflowClient(model.uri), MODEL, model.version, since=since, experiment=experiment
    )


def metric(server: Server, name: str) -> float:
    for family in text_string_to_metric_families(server.get("/metrics").text):
        for sample in family.samples:
            if sample.name == name:
                return sample.value
    raise KeyError(name)


def wait_metric(server: Server, name: str, at_least: float, timeout: float) -> None:
    """Until the server's metric `name` reaches `at_least`; on a timeout, the server's log."""
    try:
        wait_for(f"{name} >= {at_least:g}", lambda: metric(server, name) >= at_least, timeout, 0.2,
                 retry=())
    except WaitTimeout as exc:
        raise AssertionError(f"{exc}\n{server.log()}") from None


def inputs_of(frame: pd.DataFrame) -> list[tuple[float, ...]]:
    return [tuple(row) for row in frame[COLUMNS].itertuples(index=False)]


def test_every_row_survives_a_restart_with_its_prediction_and_version(
    model: Registered, experiment: str, serve
) -> None:
    since = datetime.now(UTC) - timedelta(seconds=1)
    sent: list[pd.DataFrame] = []
    answered: list[int] = []
    for life in range(2):
        # A long interval: nothing is written before SIGTERM, so only the last flush saves them.
        server = serve(model, experiment, MLSHIP_INFERENCE_LOG_SAMPLE_RATE="1",
                       MLSHIP_INFERENCE_LOG_FLUSH_SECONDS="600")
        for i, how in enumerate(["split", "records", "csv", "split"]):
            rows = X.sample(3 + i, random_state=10 * life + i)
            answered += send(server, rows, how)
            sent.append(rows)
        assert metric(server, "mlship_inference_log_rows_total") == 0
        assert sigterm(server) == 0
        assert "inference log: writing to run" in server.log()
    until = datetime.now(UTC)

    frame = read(model, experiment, since)
    expected = pd.concat(sent, ignore_index=True)
    assert len(frame) == len(expected) == 2 * (3 + 4 + 5 + 6)
    assert list(frame.columns[:2]) == ["ts", "prediction"]
    assert sorted(frame.columns[2:]) == sorted(COLUMNS)
    # Order by time is the order sent: rows within a request share their time, so compare
    # as multisets of (inputs, prediction).
    got = sorted(zip(inputs_of(frame), frame["prediction"], strict=True))
    want = sorted(zip(inputs_of(expected), answered, strict=True))
    assert got == want
    assert frame["ts"].between(since.timestamp(), until.timestamp()).all()

    client = MlflowClient(model.uri)
    exp = client.get_experiment_by_name(experiment)
    runs = client.search_runs([exp.experiment_id])
    assert len(runs) == 2  # one per serving process
    for run in runs:
        assert run.info.status == "FINISHED"
        assert run.data.tags[inference_log.TAG_MODEL_NAME] == MODEL
        assert run.data.tags[inference_log.TAG_MODEL_VERSION] == model.version
        assert run.data.tags[inference_log.TAG_LOG] == "true"
        assert run.data.tags[inference_log.TAG_POD]
        assert run.info.run_name.startswith(f"{MODEL} v{model.version} ")

    # Another version's log is another version's: nothing of this one is read for it.
    other = inference_log.load_records(client, MODEL, "999", since=since, experiment=experiment)
    assert other.empty
    # A window that ends before the first request holds nothing.
    assert read(model, experiment, since - timedelta(hours=1)).shape[0] == len(frame)
    early = inference_log.load_records(
        client, MODEL, model.version, since=since - timedelta(hours=1), until=since,
        experiment=experiment,
    )
    assert early.empty


def test_rate_zero_logs_nothing(model: Registered, experiment: str, serve) -> None:
    since = datetime.now(UTC)
    server = serve(model, experiment, MLSHIP_INFERENCE_LOG_SAMPLE_RATE="0",
                   MLSHIP_INFERENCE_LOG_FLUSH_SECONDS="0.2")
    for i in range(5):
        send(server, X.sample(2, random_state=i))
    time.sleep(1)
    assert sigterm(server) == 0
    assert MlflowClient(model.uri).get_experiment_by_name(experiment) is None
    assert read(model, experiment, since).empty
    assert "inference log" not in server.log()


def test_a_half_rate_logs_about_half_the_requests(model: Registered, experiment: str, serve) -> None:
    since = datetime.now(UTC)
    server = serve(model, experiment, MLSHIP_INFERENCE_LOG_SAMPLE_RATE="0.5",
                   MLSHIP_INFERENCE_LOG_FLUSH_SECONDS="1")
    n = 400
    with ThreadPoolExecutor(8) as pool:
        list(pool.map(lambda i: send(server, X.iloc[[i % len(X)]]), range(n)))
    assert sigterm(server) == 0
    logged = len(read(model, experiment, since))
    assert abs(logged - n / 2) < 5 * (n * 0.25) ** 0.5, logged  # 5 sigma of a binomial


@pytest.fixture
def own_mlflow(tmp_path: Path) -> Iterator[MlflowServer]:
    """A tracking server of its own, to be stopped and started again on the same port."""
    with MlflowServer(tmp_path, timeout=180) as server:
        yield server


def test_an_mlflow_outage_fails_no_request_and_loses_no_row(
    own_mlflow: MlflowServer, experiment: str, serve
) -> None:
    registered = _register(own_mlflow.uri)
    since = datetime.now(UTC)
    server = serve(
        registered, experiment,
        MLSHIP_INFERENCE_LOG_SAMPLE_RATE="1",
        MLSHIP_INFERENCE_LOG_FLUSH_SECONDS="0.5",
        # fail fast instead of MLflow's minutes of retries, so the test sees the outage
        MLFLOW_HTTP_REQUEST_MAX_RETRIES="0",
        MLFLOW_HTTP_REQUEST_TIMEOUT="5",
    )
    sent = send(server, X.iloc[[0, 1]])
    wait_metric(server, "mlship_inference_log_rows_total", 2, 30)

    own_mlflow.stop()
    slowest = 0.0
    for i in range(2, 42):
        started = time.monotonic()
        sent += send(server, X.iloc[[i]])
        slowest = max(slowest, time.monotonic() - started)
        time.sleep(0.05)
    # no request waits on MLflow (each ~10 ms here); 3 s, not 1, so that a loaded 2-core machine
    # (a Kubernetes build beside the suite) cannot fail it, while a request stuck behind a flush
    # attempt and its 5 s MLFLOW_HTTP_REQUEST_TIMEOUT still would
    assert slowest < 3.0, f"a request took {slowest:.2f}s while MLflow was down"
    wait_metric(server, "mlship_inference_log_buffered_rows", 40, 30)  # updated by each flush
    assert metric(server, "mlship_inference_log_buffered_rows") == 40
    assert metric(server, "mlship_inference_log_flush_failures_total") >= 1
    assert "could not write to MLflow" in server.log()

    own_mlflow.start()
    wait_metric(server, "mlship_inference_log_rows_total", 42, 60)
    assert metric(server, "mlship_inference_log_dropped_rows_total") == 0
    assert sigterm(server) == 0

    frame = read(registered, experiment, since)
    assert len(frame) == 42
    assert sorted(zip(inputs_of(frame), frame["prediction"], strict=True)) == sorted(
        zip(inputs_of(X.iloc[:42]), sent, strict=True)
    )
