"""The V2 route handlers over a served model whose scorer is a stand-in (no MLflow, no process):
status codes, the error shape, and that scoring goes through the batcher and predict_many."""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Coroutine
from typing import Any

import httpx
import numpy as np
import pytest
from starlette.applications import Starlette

from mlship.serving import v2
from mlship.serving.app import ServingState, record
from mlship.serving.batcher import MicroBatcher
from mlship.serving.config import load_config
from mlship.serving.metrics import ServingMetrics
from mlship.serving.model import ModelInfo, ServedModel
from mlship.serving.protocol import Column, Table

pytestmark = pytest.mark.unit

COLUMNS = (Column("a", "double"), Column("b", "double"))
SIGNATURE = {"inputs": [], "outputs": [{"type": "tensor", "tensor-spec": {"dtype": "int64", "shape": [-1]}}]}


class Scorer:
    """Stands in for the compiled predictor: class 1 when a > b, and it sees every batch."""

    def __init__(self) -> None:
        self.calls: list[dict[str, Any]] = []

    def predict(self, data: dict[str, Any]) -> Any:
        self.calls.append(data)
        if np.isnan(data["a"]).any():
            raise ValueError("Input contains NaN")
        return (data["a"] > data["b"]).astype(np.int64)


class Recorded:
    def __init__(self) -> None:
        self.rows: list[tuple[str, Table, bytes]] = []

    def predictions(self, rid: str, table: Table, answer: bytes) -> None:
        self.rows.append((rid, table, answer))


def state_of(ready: bool = True) -> tuple[ServingState, Scorer]:
    config = load_config({"MLSHIP_MODEL_NAME": "shop", "MLSHIP_MODEL_VERSION": "3",
                          "MLFLOW_TRACKING_URI": "http://mlflow.invalid"})  # fmt: skip
    state = ServingState(config=config, metrics=ServingMetrics("shop", "3"))
    scorer = Scorer()
    if ready:
        info = ModelInfo("shop", "3", "models:/shop/3", None, None, SIGNATURE, None)
        state.model = ServedModel(pyfunc=None, info=info, columns=COLUMNS, example=None, fast=scorer)
        state.ready = True
    return state, scorer


Call = Callable[[httpx.AsyncClient], Coroutine[Any, Any, Any]]


def run(state: ServingState, call: Call) -> Any:
    async def main() -> Any:
        if state.model is not None:
            state.batcher = MicroBatcher(
                state.model.predict_many, max_batch_size=64, max_wait_s=0.0,
                size_of=lambda p: p.n_rows if isinstance(p, Table) else 1,
            )  # fmt: skip
            state.batcher.start()
        app = Starlette(routes=v2.routes(state, lambda endpoint, handler: handler))
        transport = httpx.ASGITransport(app=app)
        try:
            async with httpx.AsyncClient(transport=transport, base_url="http://v2") as client:
                return await call(client)
        finally:
            if state.batcher is not None:
                await state.batcher.close()

    return asyncio.run(main())


def get(state: ServingState, path: str) -> httpx.Response:
    return run(state, lambda c: c.get(path))  # type: ignore[no-any-return]


def post(state: ServingState, path: str, body: Any, **headers: str) -> httpx.Response:
    return run(state, lambda c: c.post(path, json=body, headers=headers))  # type: ignore[no-any-return]


ROWS = {"inputs": [
    {"name": "a", "shape": [3], "datatype": "FP64", "data": [1, 2, 3]},
    {"name": "b", "shape": [3], "datatype": "FP64", "data": [3, 2, 1]},
]}  # fmt: skip


def test_health_and_server_metadata() -> None:
    state, _ = state_of()
    assert get(state, "/v2/health/live").status_code == 200
    assert get(state, "/v2/health/ready").json() == {"ready": True}
    assert get(state, "/v2").json()["name"] == "mlship"
    assert get(state, "/v2/models/shop/ready").json() == {"name": "shop", "ready": True}
    assert get(state, "/v2/models/shop/versions/3/ready").status_code == 200


def test_model_metadata_with_or_without_the_version() -> None:
    state, _ = state_of()
    want = {
        "name": "shop", "versions": ["3"], "platform": "mlflow_pyfunc",
        "inputs": [{"name": "a", "datatype": "FP64", "shape": [-1]},
                   {"name": "b", "datatype": "FP64", "shape": [-1]}],
        "outputs": [{"name": "predict", "datatype": "INT64", "shape": [-1]}],
    }  # fmt: skip
    assert get(state, "/v2/models/shop").json() == want
    assert get(state, "/v2/models/shop/versions/3").json() == want


@pytest.mark.parametrize(
    ("path", "message"),
    [
        ("/v2/models/other", "unknown model 'other': this server serves 'shop'"),
        ("/v2/models/other/ready", "unknown model 'other': this server serves 'shop'"),
        ("/v2/models/shop/versions/4", "unknown version '4' of model 'shop': it serves version '3'"),
        ("/v2/models/shop/versions/4/ready", "unknown version '4' of model 'shop': it serves version '3'"),
    ],
)
def test_another_model_or_version_is_404(path: str, message: str) -> None:
    state, _ = state_of()
    response = get(state, path)
    assert (response.status_code, response.json()) == (404, {"error": message})
    for infer in (post(state, path + "/infer", ROWS),) if not path.endswith("ready") else ():
        assert (infer.status_code, infer.json()) == (404, {"error": message})


def test_not_ready_is_503_everywhere_but_live() -> None:
    state, _ = state_of(ready=False)
    loading = {"error": "model models:/shop/3 is loading"}
    assert get(state, "/v2/health/live").status_code == 200
    for path in ("/v2/health/ready", "/v2/models/shop", "/v2/models/shop/ready"):
        response = get(state, path)
        assert (response.status_code, response.json()) == (503, loading), path
    infer = post(state, "/v2/models/shop/infer", ROWS)
    assert (infer.status_code, infer.json()) == (503, loading)
    assert get(state, "/v2/models/other/ready").status_code == 404  # the name is known before loading


def test_infer_scores_through_predict_many_and_echoes_the_id() -> None:
    state, scorer = state_of()
    response = post(state, "/v2/models/shop/versions/3/infer", {**ROWS, "id": "order-9"})
    assert response.status_code == 200
    assert response.json() == {
        "model_name": "shop", "model_version": "3", "id": "order-9",
        "outputs": [{"name": "predict", "datatype": "INT64", "shape": [3], "data": [0, 0, 1]}],
    }  # fmt: skip
    assert response.headers["x-request-id"] == "order-9"
    assert [list(call["a"]) for call in scorer.calls] == [[1.0, 2.0, 3.0]]


def test_infer_without_an_id_answers_with_the_event_key() -> None:
    state, _ = state_of()
    response = post(state, "/v2/models/shop/infer", ROWS)
    assert response.json()["id"] == response.headers["x-request-id"]
    assert len(response.headers["x-request-id"]) == 32
    keyed = post(state, "/v2/models/shop/infer", {**ROWS, "id": "has space"}, **{"X-Request-Id": "k-1"})
    assert (keyed.json()["id"], keyed.headers["x-request-id"]) == ("has space", "k-1")


def test_bad_input_is_400_with_the_message() -> None:
    state, scorer = state_of()
    bad = {"inputs": [{"name": "a", "shape": [1], "datatype": "FP64", "data": [1]}]}
    response = post(state, "/v2/models/shop/infer", bad)
    assert (response.status_code, response.json()) == (400, {"error": "missing input tensor(s) 'b'"})
    header = post(state, "/v2/models/shop/infer", ROWS, **{"X-Request-Id": "a/b"})
    assert header.status_code == 400
    assert header.json()["error"] == (
        "the X-Request-Id header: request_id 'a/b' must be printable ASCII without spaces or '/'"
    )
    # the model refusing a signature-valid input is the input's fault too (as on /invocations)
    raw = b'{"inputs": [{"name": "x", "shape": [1, 2], "datatype": "FP64", "data": [NaN, 1]}]}'
    refused = run(state, lambda c: c.post("/v2/models/shop/infer", content=raw))
    assert refused.status_code == 400
    assert refused.json()["error"] == (
        "the model could not score this input: ValueError: Input contains NaN"
    )
    assert len(scorer.calls) == 1


def test_scored_rows_go_to_the_events_as_on_invocations() -> None:
    state, _ = state_of()
    events = Recorded()
    state.events = events  # type: ignore[assignment]
    post(state, "/v2/models/shop/infer", {**ROWS, "id": "order-9"})
    [(rid, table, answer)] = events.rows
    assert (rid, table, answer) == ("order-9", Table(([1.0, 2.0, 3.0], [3.0, 2.0, 1.0]), 3),
                                    b'{"predictions":[0,0,1]}')  # fmt: skip
    record(state, "r", table, answer)  # the helper /invocations uses
    assert len(events.rows) == 2
