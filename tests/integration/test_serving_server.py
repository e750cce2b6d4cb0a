"""The model server as a user meets it: a real MLflow server holds registered sklearn Pipelines,
`python -m mlship.serving` runs as a subprocess and is spoken to over HTTP."""

from __future__ import annotations

import io
import json
import shutil
import signal
import threading
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import mlflow
import mlflow.sklearn
import numpy as np
import pandas as pd
import pytest
import requests
from _serving_process import Server
from prometheus_client.parser import text_string_to_metric_families
from sklearn.datasets import load_iris
from sklearn.ensemble import RandomForestClassifier
from sklearn.pipeline import Pipeline
from sklearn.preprocessing import StandardScaler

pytestmark = [pytest.mark.integration, pytest.mark.timeout(300)]

MODEL = "iris-serving"
TRUSTED = ["sklearn.tree._tree.Tree"]
X, Y = load_iris(return_X_y=True, as_frame=True)
COLUMNS = list(X.columns)


@dataclass
class Versions:
    skops: str
    cloudpickle: str
    tensor: str  # trained on a numpy array: a tensor signature, parsed by MLflow's own parser
    broken: str  # the artifact cannot be deserialized
    wrong_example: str  # loads, but cannot score its own input example
    pipeline: Pipeline


def _pipeline(trees: int = 100) -> Pipeline:
    steps = [("scale", StandardScaler()), ("rf", RandomForestClassifier(trees, random_state=0))]
    return Pipeline(steps).fit(X, Y)


def _register(model: Pipeline, example: object, **kwargs: object) -> str:
    info = mlflow.sklearn.log_model(
        model, name="model", input_example=example, registered_model_name=MODEL, **kwargs
    )
    return str(info.registered_model_version)


@pytest.fixture(scope="module")
def versions(mlflow_server: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Versions]:
    previous = mlflow.get_tracking_uri()
    mlflow.set_tracking_uri(mlflow_server)
    try:
        pipeline = _pipeline()
        with mlflow.start_run():
            skops = _register(pipeline, X.head(3), skops_trusted_types=TRUSTED)
            cloudpickle = _register(pipeline, X.head(3), serialization_format="cloudpickle")
            numeric = _pipeline(10).fit(X.to_numpy(), Y)
            tensor = _register(numeric, X.head(2).to_numpy(), skops_trusted_types=TRUSTED)
            # A broken artifact: a valid model whose serialized estimator was overwritten.
            saved = tmp_path_factory.mktemp("broken") / "model"
            mlflow.sklearn.save_model(pipeline, saved, input_example=X.head(1), skops_trusted_types=TRUSTED)
            (saved / "model.skops").write_bytes(b"this is not a zip file")
            mlflow.log_artifacts(str(saved), artifact_path="broken")
            run_id = mlflow.active_run().info.run_id
            broken = mlflow.register_model(f"runs:/{run_id}/broken", MODEL).version
            # Its example names columns the pipeline was not fitted on.
            renamed = X.head(2).rename(columns=str.upper)
            wrong = _register(pipeline, renamed, skops_trusted_types=TRUSTED)
        yield Versions(skops, cloudpickle, tensor, str(broken), wrong, pipeline)
    finally:
        mlflow.set_tracking_uri(previous)



@pytest.fixture
def start(mlflow_server: str, tmp_path: Path) -> Iterator:
    servers: list[Server] = []

    def _start(**env: str) -> Server:
        server = Server({"MLFLOW_TRACKING_URI": mlflow_server, **env}, tmp_path / f"server{len(servers)}.log")
        servers.append(server)
        return server

    yield _start
    for server in servers:
        server.stop()


@pytest.fixture(scope="module")
def served(
    mlflow_server: str, versions: Versions, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[tuple[Server, list[tuple[int, int]]]]:
    """The skops version, started once for the read-only tests; yields the readiness history."""
    log = tmp_path_factory.mktemp("served") / "server.log"
    server = Server(
        {
            "MLFLOW_TRACKING_URI": mlflow_server,
            "MLSHIP_MODEL_NAME": MODEL,
            "MLSHIP_MODEL_VERSION": versions.skops,
            "MLSHIP_MAX_BATCH_WAIT_MS": "5",
        },
        log,
    )
    try:
        yield server, server.wait_ready()
    finally:
        server.stop()


def expected(pipeline: Pipeline, rows: pd.DataFrame) -> list[int]:
    return pipeline.predict(rows).tolist()


# --- a healthy version ------------------------------------------------------------------------


def test_ready_only_after_load_and_self_test_live_throughout(
    served: tuple[Server, list[tuple[int, int]]],
) -> None:
    server, history = served
    assert history[-1] == (200, 200)
    # While loading: live but not ready (loading imports MLflow and downloads the model, seconds).
    assert (200, 503) in history, history
    assert all(live == 200 for live, _ in history)
    assert server.get("/ping").status_code == 200
    assert "self-test answered" in server.log()


def test_every_json_format_and_csv_give_the_pipelines_predictions(
    served: tuple[Server, list[tuple[int, int]]], versions: Versions
) -> None:
    server, _ = served
    rows = X.iloc[[0, 60, 120, 149]]
    want = {"predictions": expected(versions.pipeline, rows)}
    records = rows.to_dict(orient="records")
    columnar = rows.to_dict(orient="list")
    bodies = [
        {"dataframe_split": rows.to_dict(orient="split")},
        {"dataframe_records": records},
        {"instances": records},
        {"inputs": records},
        {"inputs": columnar},
    ]
    for body in bodies:
        response = server.post(body)
        assert response.status_code == 200, response.text
        assert response.headers["content-type"] == "application/json"
        assert response.json() == want, body
    csv = server.post(data=rows.to_csv(index=False), content_type="text/csv")
    assert csv.status_code == 200 and csv.json() == want
    one = server.post({"inputs": records[0]})
    assert one.json() == {"predictions": want["predictions"][:1]}


@pytest.mark.parametrize(
    ("body", "content_type", "status", "message"),
    [
        (b'{"dataframe_records": [', "application/json", 400, "the body is not valid JSON"),
        (
            b'{"dataframe_records": [{"sepal length (cm)": 5.1}]}',
            "application/json",
            400,
            "row 0 is missing required column(s) 'sepal width (cm)', 'petal length (cm)', 'petal width (cm)'",
        ),
        (
            b'{"dataframe_split": {"columns": ["sepal length (cm)", "sepal width (cm)", '
            b'"petal length (cm)", "petal width (cm)"], "data": [[5.1, 3.5, "long", 0.2]]}}',
            "application/json",
            400,
            "column 'petal length (cm)' (row 0): expected double, got string \"long\"",
        ),
        (
            b'{"instances": [[5.1, 3.5, 1.4, 0.2]]}',
            "application/json",
            400,
            "'instances' rows must name their columns",
        ),
        (b'{"rows": []}', "application/json", 400, "must have exactly one of"),
        (
            b"sepal length (cm)\n5.1\n",
            "text/csv",
            400,
            "missing required column(s) 'sepal width (cm)'",
        ),
        (b"<rows/>", "application/xml", 415, "unsupported Content-Type 'application/xml'"),
    ],
    ids=["bad-json", "missing-column", "wrong-type", "positional", "no-format", "csv", "xml"],
)
def test_bad_input_is_refused_with_a_message(
    served: tuple[Server, list[tuple[int, int]]],
    body: bytes,
    content_type: str,
    status: int,
    message: str,
) -> None:
    server, _ = served
    response = server.post(data=body, content_type=content_type)
    assert response.status_code == status, response.text
    payload = response.json()
    assert message in payload["message"]
    assert payload["error_code"] in ("BAD_REQUEST", "UNSUPPORTED_MEDIA_TYPE")


def test_nan_and_infinity_from_a_python_client(served, versions: Versions) -> None:
    server, _ = served
    rows = X.head(2).copy()
    rows.iloc[0, 0] = float("nan")
    # json.dumps writes the literal NaN: a missing value, as `mlflow models serve` takes it
    body = json.dumps({"dataframe_records": rows.to_dict(orient="records")})
    assert "NaN" in body
    response = server.post(data=body)
    assert response.status_code == 200, response.text
    assert response.json()["predictions"] == expected(versions.pipeline, rows)
    rows.iloc[1, 2] = float("inf")
    refused = server.post(data=json.dumps({"dataframe_records": rows.to_dict(orient="records")}))
    assert refused.status_code == 400
    assert refused.json()["message"].startswith(
        f"column '{COLUMNS[2]}' (row 1): Infinity is not allowed for double")


def test_a_body_over_the_limit_is_refused_in_the_json_error_shape(served) -> None:
    from mlship.serving.app import MAX_BODY_BYTES

    server, _ = served
    body = b" " * (MAX_BODY_BYTES + 1)

    def chunked():  # no Content-Length: the limit is found while reading
        for start in range(0, len(body), 1 << 20):
            yield body[start:start + (1 << 20)]

    for data in (body, chunked()):
        response = requests.post(server.url + "/invocations", data=data, timeout=60,
                                 headers={"Content-Type": "application/json"})
        assert response.status_code == 413
        assert response.headers["content-type"] == "application/json"
        assert response.json() == {
            "error_code": "BAD_REQUEST",
            "message": response.json()["message"],
        }
        assert f"over the limit of {MAX_BODY_BYTES} bytes" in response.json()["message"]
    assert server.post({"inputs": [dict(zip(COLUMNS, X.iloc[0], strict=True))]}).status_code == 200


def test_a_request_without_content_type_is_refused(
    served: tuple[Server, list[tuple[int, int]]],
) -> None:
    server, _ = served
    response = requests.post(
        server.url + "/invocations", data=b"{}", timeout=10, headers={"Content-Type": ""}
    )
    assert response.status_code == 415
    assert "a Content-Type header is required" in response.json()["message"]


def test_version_and_metadata(
    served: tuple[Server, list[tuple[int, int]]], versions: Versions, mlflow_server: str
) -> None:
    server, _ = served
    version = server.get("/version")
    assert version.status_code == 200 and version.text == mlflow.__version__
    meta = server.get("/metadata").json()
    registered = mlflow.MlflowClient(mlflow_server).get_model_version(MODEL, versions.skops)
    assert meta["name"] == MODEL and meta["version"] == versions.skops
    assert meta["uri"] == f"models:/{MODEL}/{versions.skops}"
    assert meta["run_id"] == registered.run_id
    assert meta["ready"] is True
    inputs = meta["signature"]["inputs"]
    assert [c["name"] for c in inputs] == COLUMNS
    assert {c["type"] for c in inputs} == {"double"}


def test_without_kafka_answers_still_name_request_and_version_and_feedback_is_off(
    served: tuple[Server, list[tuple[int, int]]], versions: Versions
) -> None:
    server, _ = served
    response = requests.post(server.url + "/invocations", json={"dataframe_records": [dict(X.iloc[0])]},
                             headers={"X-Request-Id": "r-1"}, timeout=30)
    assert response.status_code == 200
    assert (response.headers["X-Request-Id"], response.headers["X-Model-Name"],
            response.headers["X-Model-Version"]) == ("r-1", MODEL, versions.skops)
    feedback = requests.post(server.url + "/feedback", json={"request_id": "r-1", "label": 0},
                             timeout=30)
    assert feedback.status_code == 404
    assert feedback.json() == {
        "error_code": "ENDPOINT_NOT_FOUND",
        "message": "feedback is off on this server: labels go to Kafka, and "
        "MLSHIP_KAFKA_BOOTSTRAP_SERVERS is not set (docs/events.md)",
    }


def test_concurrent_requests_get_their_own_answers_from_shared_batches(
    served: tuple[Server, list[tuple[int, int]]], versions: Versions
) -> None:
    server, _ = served
    before = _batch_calls(server)
    rng = np.random.default_rng(7)
    picks = rng.integers(0, len(X), size=400)
    want = expected(versions.pipeline, X.iloc[picks])
    session_local = threading.local()

    def ask(i: int) -> int:
        session = getattr(session_local, "s", None) or requests.Session()
        session_local.s = session
        row = X.iloc[[picks[i]]].to_dict(orient="records")
        response = session.post(server.url + "/invocations", json={"dataframe_records": row}, timeout=30)
        assert response.status_code == 200, response.text
        (prediction,) = response.json()["predictions"]
        return prediction

    with ThreadPoolExecutor(32) as pool:
        got = list(pool.map(ask, range(len(picks))))
    assert got == want
    calls = _batch_calls(server) - before
    assert calls < len(picks), "every request got its own model call: no batching happened"


def test_metrics_count_requests_by_version(
    served: tuple[Server, list[tuple[int, int]]], versions: Versions
) -> None:
    server, _ = served
    model = {"model_name": MODEL, "model_version": versions.skops}
    ok = {**model, "endpoint": "/invocations", "status": "200"}
    bad = {**model, "endpoint": "/invocations", "status": "400"}
    before = _metrics(server)
    server.post({"inputs": X.iloc[0].to_dict()})
    server.post(data=b"[", content_type="application/json")
    after = _metrics(server)
    assert (
        after[("mlship_requests_total", _key(ok))] == before.get(("mlship_requests_total", _key(ok)), 0) + 1
    )
    assert (
        after[("mlship_requests_total", _key(bad))] == before.get(("mlship_requests_total", _key(bad)), 0) + 1
    )
    latency = {**model, "endpoint": "/invocations"}
    assert after[("mlship_request_duration_seconds_count", _key(latency))] >= 2
    assert after[("mlship_model_ready", _key(model))] == 1.0


def _key(labels: dict[str, str]) -> frozenset[tuple[str, str]]:
    return frozenset(labels.items())


def _metrics(server: Server) -> dict[tuple[str, frozenset[tuple[str, str]]], float]:
    text = server.get("/metrics").text
    return {
        (sample.name, _key(sample.labels)): sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
    }


def _batch_calls(server: Server) -> float:
    return sum(value for (name, _), value in _metrics(server).items() if name == "mlship_batch_rows_count")


# --- the bearer token ----------------------------------------------------------------------------


def test_with_a_token_scoring_and_labels_need_it_and_probes_do_not(start, versions: Versions) -> None:
    token = "integration-token-0123456789"  # noqa: S105 - a test's own
    server = start(MLSHIP_MODEL_NAME=MODEL, MLSHIP_MODEL_VERSION=versions.skops, MLSHIP_AUTH_TOKEN=token)
    server.wait_ready()  # /livez and /health without a header
    assert server.get("/health").status_code == 200
    assert server.get("/metrics").status_code == 200
    rows = X.iloc[[0, 75]]
    body = {"dataframe_records": rows.to_dict(orient="records")}

    def invoke(**headers: str) -> requests.Response:
        return requests.post(server.url + "/invocations", json=body, headers=headers, timeout=30)

    missing = invoke()
    assert missing.status_code == 401
    assert missing.headers["WWW-Authenticate"] == 'Bearer realm="mlship"'
    assert missing.json()["error_code"] == "UNAUTHENTICATED"
    assert "Authorization: Bearer <token>" in missing.json()["message"]
    wrong = invoke(Authorization="Bearer not-the-token-0123456789")
    assert (wrong.status_code, wrong.json()["error_code"]) == (401, "UNAUTHENTICATED")
    assert "not-the-token" not in wrong.text
    right = invoke(Authorization=f"Bearer {token}")
    assert right.status_code == 200, right.text
    assert right.json() == {"predictions": expected(versions.pipeline, rows)}

    infer = f"{server.url}/v2/models/{MODEL}/infer"
    data = rows.to_numpy().tolist()
    tensor = {"inputs": [{"name": "x", "shape": [2, 4], "datatype": "FP64", "data": data}]}
    assert requests.post(infer, json=tensor, timeout=30).status_code == 401
    scored = requests.post(infer, json=tensor, headers={"Authorization": f"bearer {token}"}, timeout=30)
    assert scored.status_code == 200, scored.text
    assert scored.json()["outputs"][0]["data"] == expected(versions.pipeline, rows)
    # Kafka is off, yet the missing token is what /feedback answers first.
    feedback = requests.post(server.url + "/feedback", json={"request_id": "r-1", "label": 0}, timeout=30)
    assert (feedback.status_code, feedback.json()["error_code"]) == (401, "UNAUTHENTICATED")
    assert token not in server.log()


# --- other versions and start-up failures -----------------------------------------------------


def test_a_cloudpickle_version_loads_and_serves(start, versions: Versions) -> None:
    server = start(MLSHIP_MODEL_NAME=MODEL, MLSHIP_MODEL_VERSION=versions.cloudpickle)
    server.wait_ready()
    rows = X.iloc[[10, 90]]
    response = server.post({"dataframe_split": rows.to_dict(orient="split")})
    assert response.json() == {"predictions": expected(versions.pipeline, rows)}


def test_a_tensor_signature_goes_through_mlflows_parser(start, versions: Versions) -> None:
    server = start(MLSHIP_MODEL_URI=f"models:/{MODEL}/{versions.tensor}")
    server.wait_ready()
    assert server.get("/metadata").json()["version"] == versions.tensor
    response = server.post({"inputs": X.iloc[[0, 149]].to_numpy().tolist()})
    assert response.status_code == 200, response.text
    assert len(response.json()["predictions"]) == 2
    bad = server.post({"inputs": [["a", "b", "c", "d"]]})
    assert bad.status_code == 400, bad.text
    assert bad.json()["error_code"] == "BAD_REQUEST"


def test_an_unloadable_version_exits_3_with_the_reason(start, versions: Versions) -> None:
    server = start(MLSHIP_MODEL_NAME=MODEL, MLSHIP_MODEL_VERSION=versions.broken)
    assert server.wait_exit() == 3
    assert f"cannot load models:/{MODEL}/{versions.broken}" in server.log()


def test_a_version_failing_its_self_test_exits_4_without_becoming_ready(start, versions: Versions) -> None:
    server = start(MLSHIP_MODEL_NAME=MODEL, MLSHIP_MODEL_VERSION=versions.wrong_example)
    ready_seen = False
    while server.proc.poll() is None:
        try:
            ready_seen |= server.get("/health").status_code == 200
        except requests.ConnectionError:
            pass
        time.sleep(0.05)
    assert server.wait_exit() == 4
    assert not ready_seen
    log = server.log()
    assert "self-test of" in log and "on its input example failed" in log
    assert "Feature names unseen at fit time" in log


def test_a_missing_version_exits_3(start) -> None:
    server = start(MLSHIP_MODEL_NAME=MODEL, MLSHIP_MODEL_VERSION="999")
    assert server.wait_exit() == 3
    assert f"cannot load models:/{MODEL}/999" in server.log()


def test_an_unknown_mlflow_host_is_named_first_in_the_reason(start) -> None:
    server = start(MLFLOW_TRACKING_URI="http://no-such-host.invalid:5000",
                   MLFLOW_HTTP_REQUEST_MAX_RETRIES="0",
                   MLSHIP_MODEL_NAME=MODEL, MLSHIP_MODEL_VERSION="1")
    assert server.wait_exit() == 3
    # the reason is also the termination message, which the operator shows clipped
    assert (
        f"cannot load models:/{MODEL}/1: NameResolutionError: Failed to resolve 'no-such-host.invalid'"
    ) in server.log()


def test_bad_configuration_exits_2_naming_every_problem(start) -> None:
    server = start(MLSHIP_MODEL_NAME=MODEL, MLSHIP_MODEL_VERSION="one", PORT="http")
    assert server.wait_exit(timeout=60) == 2
    log = server.log()
    assert "MLSHIP_MODEL_VERSION='one' is not a registry version" in log
    assert "PORT='http' is not an integer" in log


class SentBody(io.BytesIO):
    """A request body that tells when the client has handed its last byte to the socket."""

    def __init__(self, data: bytes) -> None:
        super().__init__(data)
        self.size = len(data)
        self.sent = threading.Event()

    def __len__(self) -> int:  # requests sends it with a Content-Length, not chunked
        return self.size

    def read(self, n: int | None = -1) -> bytes:
        chunk = super().read(n)
        if not chunk:  # asked for more after the last chunk went out
            self.sent.set()
        return chunk


def test_sigterm_finishes_the_request_in_flight_then_exits_0(start, versions: Versions) -> None:
    server = start(MLSHIP_MODEL_NAME=MODEL, MLSHIP_MODEL_VERSION=versions.skops)
    server.wait_ready()
    # Big enough to take a second or more to parse and predict.
    rows = X.sample(300_000, replace=True, random_state=1)
    body = SentBody(json.dumps({"dataframe_split": rows.to_dict(orient="split")}).encode())
    result: dict[str, requests.Response] = {}
    sender = threading.Thread(target=lambda: result.update(r=server.post(data=body)))
    sender.start()
    # SIGTERM once the server has read the request (its last bytes are out of the client), not
    # after a guessed sleep; parsing and predicting 300k rows still takes it a second or more
    assert body.sent.wait(timeout=60), "the request body was not sent within 60 s"
    assert sender.is_alive(), "the request finished before SIGTERM: make it bigger"
    server.proc.send_signal(signal.SIGTERM)
    sender.join(timeout=60)
    assert server.wait_exit(timeout=60) == 0
    response = result["r"]
    assert response.status_code == 200
    assert response.json()["predictions"] == expected(versions.pipeline, rows)
    with pytest.raises(requests.ConnectionError):
        server.get("/livez")
    assert "Shutting down" in server.log()


def test_wrong_local_path_fails_fast(start, tmp_path: Path) -> None:
    missing = tmp_path / "nowhere"
    shutil.rmtree(missing, ignore_errors=True)
    server = start(MLSHIP_MODEL_URI=str(missing))
    assert server.wait_exit() == 3
    assert f"cannot load {missing}" in server.log()
