"""The Open Inference Protocol (V2) as a KServe/Triton client meets it: a real MLflow server holds
registered sklearn Pipelines, `python -m mlship.serving` runs as a subprocess, and tritonclient
(an independent implementation of the protocol) speaks to it; /invocations is the reference."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import mlflow
import mlflow.sklearn
import numpy as np
import pandas as pd
import pytest
import tritonclient.http as triton
from _serving_process import Server
from prometheus_client.parser import text_string_to_metric_families
from sklearn.compose import ColumnTransformer
from sklearn.datasets import load_iris
from sklearn.ensemble import RandomForestClassifier
from sklearn.pipeline import Pipeline
from sklearn.preprocessing import OneHotEncoder, StandardScaler
from tritonclient.utils import InferenceServerException

pytestmark = [pytest.mark.integration, pytest.mark.timeout(300)]

IRIS = "iris-v2"
SHOP = "shop-v2"
TRUSTED = ["sklearn.tree._tree.Tree"]
X, Y = load_iris(return_X_y=True, as_frame=True)
COLUMNS = list(X.columns)
# Every column kind but float32: a string, an integer, a boolean and a double column.
SHOP_X = pd.DataFrame({
    "city": ["Oslo", "Bergen", "Ås", "Oslo", "Bergen", "Ås", "Oslo", "Bergen"] * 5,
    "age": np.arange(40, dtype=np.int64) % 17 + 18,
    "member": [True, False, False, True, True, False, True, False] * 5,
    "spend": np.linspace(0.0, 390.0, 40),
})  # fmt: skip
SHOP_Y = np.where((SHOP_X["spend"] > 150) & SHOP_X["member"], "churn", "stay")


@dataclass
class Served:
    server: Server
    client: Any  # tritonclient.http.InferenceServerClient
    model: str
    version: str
    pipeline: Pipeline

    def invocations(self, rows: pd.DataFrame) -> list[Any]:
        response = self.server.post({"dataframe_split": rows.to_dict(orient="split")})
        assert response.status_code == 200, response.text
        return list(response.json()["predictions"])


def _shop_pipeline() -> Pipeline:
    encode = ColumnTransformer(
        [("city", OneHotEncoder(handle_unknown="ignore"), ["city"])], remainder="passthrough"
    )
    return Pipeline([("encode", encode), ("rf", RandomForestClassifier(20, random_state=0))]).fit(
        SHOP_X, SHOP_Y
    )


@pytest.fixture(scope="module")
def registered(mlflow_server: str) -> Iterator[dict[str, tuple[str, Pipeline]]]:
    previous = mlflow.get_tracking_uri()
    mlflow.set_tracking_uri(mlflow_server)
    try:
        iris = Pipeline(
            [("scale", StandardScaler()), ("rf", RandomForestClassifier(50, random_state=0))]
        ).fit(X, Y)
        shop = _shop_pipeline()
        with mlflow.start_run():
            iris_info = mlflow.sklearn.log_model(
                iris, name="iris", input_example=X.head(3), registered_model_name=IRIS,
                skops_trusted_types=TRUSTED,
            )  # fmt: skip
            shop_info = mlflow.sklearn.log_model(
                shop, name="shop", input_example=SHOP_X.head(3), registered_model_name=SHOP,
                serialization_format="cloudpickle",
            )  # fmt: skip
        yield {
            IRIS: (str(iris_info.registered_model_version), iris),
            SHOP: (str(shop_info.registered_model_version), shop),
        }
    finally:
        mlflow.set_tracking_uri(previous)


def _serve(
    mlflow_server: str, registered: dict[str, tuple[str, Pipeline]], model: str, log: Path
) -> Iterator[Served]:
    version, pipeline = registered[model]
    server = Server(
        {"MLFLOW_TRACKING_URI": mlflow_server, "MLSHIP_MODEL_NAME": model,
         "MLSHIP_MODEL_VERSION": version, "MLSHIP_MAX_BATCH_SIZE": "16"},
        log,
    )  # fmt: skip
    client = triton.InferenceServerClient(url=f"127.0.0.1:{server.port}")
    try:
        server.wait_ready()
        yield Served(server, client, model, version, pipeline)
    finally:
        client.close()
        server.stop()


@pytest.fixture(scope="module")
def iris(
    mlflow_server: str, registered: dict[str, tuple[str, Pipeline]],
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[Served]:  # fmt: skip
    yield from _serve(mlflow_server, registered, IRIS, tmp_path_factory.mktemp("iris") / "log")


@pytest.fixture(scope="module")
def shop(
    mlflow_server: str, registered: dict[str, tuple[str, Pipeline]],
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[Served]:  # fmt: skip
    yield from _serve(mlflow_server, registered, SHOP, tmp_path_factory.mktemp("shop") / "log")


def column_inputs(rows: pd.DataFrame, datatypes: dict[str, str]) -> list[Any]:
    inputs = []
    for name in rows.columns:
        values = rows[name].to_numpy()
        if datatypes[name] == "BYTES":
            values = values.astype(object)
        elif datatypes[name] == "FP64":
            values = values.astype(np.float64)
        tensor = triton.InferInput(name, [len(rows)], datatypes[name])
        inputs.append(tensor.set_data_from_numpy(values, binary_data=False))
    return inputs


PREDICT = [triton.InferRequestedOutput("predict", binary_data=False)]


# --- health and metadata -----------------------------------------------------------------------


def test_live_ready_and_server_metadata(iris: Served) -> None:
    client = iris.client
    assert client.is_server_live() and client.is_server_ready()
    assert client.is_model_ready(IRIS) and client.is_model_ready(IRIS, iris.version)
    assert not client.is_model_ready(IRIS, str(int(iris.version) + 1))
    assert not client.is_model_ready("someone-else")
    meta = client.get_server_metadata()
    assert meta["name"] == "mlship" and meta["extensions"] == []


def test_model_metadata_lists_the_signature_columns(iris: Served, shop: Served) -> None:
    for version in ("", iris.version):
        meta = iris.client.get_model_metadata(IRIS, version)
        assert meta["name"] == IRIS and meta["versions"] == [iris.version]
        assert meta["inputs"] == [{"name": c, "datatype": "FP64", "shape": [-1]} for c in COLUMNS]
        assert meta["outputs"] == [{"name": "predict", "datatype": "INT64", "shape": [-1]}]
    shop_inputs = shop.client.get_model_metadata(SHOP)["inputs"]
    assert [(t["name"], t["datatype"]) for t in shop_inputs] == [
        ("city", "BYTES"), ("age", "INT64"), ("member", "BOOL"), ("spend", "FP64"),
    ]  # fmt: skip


def test_unknown_model_or_version_is_404_with_a_message(iris: Served) -> None:
    with pytest.raises(InferenceServerException) as e:
        iris.client.get_model_metadata("someone-else")
    assert e.value.status() == "404"
    assert e.value.message() == f"unknown model 'someone-else': this server serves '{IRIS}'"
    with pytest.raises(InferenceServerException) as e:
        iris.client.infer(IRIS, column_inputs(X.head(1), dict.fromkeys(COLUMNS, "FP64")), "99")
    assert e.value.status() == "404"
    assert e.value.message() == (
        f"unknown version '99' of model '{IRIS}': it serves version '{iris.version}'"
    )


# --- infer: the same predictions as /invocations -----------------------------------------------


def test_one_tensor_per_column_gives_the_invocations_predictions(iris: Served) -> None:
    rows = X  # 150 rows: over MLSHIP_MAX_BATCH_SIZE, and a request is never split
    inputs = column_inputs(rows, dict.fromkeys(COLUMNS, "FP64"))
    result = iris.client.infer(IRIS, inputs, outputs=PREDICT, request_id="all-rows")
    want = iris.invocations(rows)
    assert want == iris.pipeline.predict(rows).tolist()
    assert result.as_numpy("predict").tolist() == want
    response = result.get_response()
    assert (response["model_name"], response["model_version"], response["id"]) == (
        IRIS, iris.version, "all-rows",
    )  # fmt: skip
    assert response["outputs"][0]["datatype"] == "INT64"
    assert response["outputs"][0]["shape"] == [150]


def test_one_2d_tensor_gives_the_same_predictions(iris: Served) -> None:
    for rows in (X.iloc[[0, 60, 120, 149]], X.iloc[[77]]):
        tensor = triton.InferInput("input-0", list(rows.shape), "FP64")
        tensor.set_data_from_numpy(rows.to_numpy(), binary_data=False)
        # with the version in the path, and without requested outputs (tritonclient then asks
        # for binary outputs; the answer is JSON, which it reads all the same)
        result = iris.client.infer(IRIS, [tensor], model_version=iris.version)
        assert result.as_numpy("predict").tolist() == iris.invocations(rows)


def test_strings_integers_and_booleans(shop: Served) -> None:
    rows = SHOP_X.iloc[[0, 3, 9, 17, 30, 39]]
    datatypes = {"city": "BYTES", "age": "INT64", "member": "BOOL", "spend": "FP64"}
    result = shop.client.infer(SHOP, column_inputs(rows, datatypes), outputs=PREDICT)
    want = shop.invocations(rows)
    assert sorted(set(want)) == ["churn", "stay"]
    assert result.as_numpy("predict").tolist() == want  # JSON BYTES: str
    assert result.get_response()["outputs"][0]["datatype"] == "BYTES"


# --- bad tensors: 400 with the message -----------------------------------------------------------


def test_bad_tensors_are_400_with_a_message(iris: Served, shop: Served) -> None:
    def refused(served: Served, inputs: list[Any]) -> str:
        with pytest.raises(InferenceServerException) as e:
            served.client.infer(served.model, inputs, outputs=PREDICT)
        assert e.value.status() == "400", e.value
        return str(e.value.message())

    fp64 = dict.fromkeys(COLUMNS, "FP64")
    short = column_inputs(X.head(3), fp64)
    short[1] = triton.InferInput(COLUMNS[1], [2], "FP64").set_data_from_numpy(
        X[COLUMNS[1]].head(2).to_numpy(), binary_data=False
    )
    assert refused(iris, short) == (
        f"input tensors have different lengths: '{COLUMNS[1]}' has 2 value(s), '{COLUMNS[0]}' has 3"
    )
    assert refused(iris, column_inputs(X.head(3), fp64)[:3]) == (
        f"missing input tensor(s) '{COLUMNS[3]}'"
    )
    wide = triton.InferInput("input-0", [2, 3], "FP64")
    wide.set_data_from_numpy(X.iloc[:2, :3].to_numpy(), binary_data=False)
    assert refused(iris, [wide]).startswith(
        "input 'input-0': shape [2, 3] has 3 column(s), the model takes 4"
    )
    binary = triton.InferInput("input-0", [2, 4], "FP64")
    binary.set_data_from_numpy(X.head(2).to_numpy(), binary_data=True)
    assert refused(iris, [binary]).startswith("binary tensor data (Inference-Header-Content-Length)")
    datatypes = {"city": "BYTES", "age": "FP64", "member": "BOOL", "spend": "FP64"}
    assert refused(shop, column_inputs(SHOP_X.head(2), datatypes)) == (
        "input 'age': datatype FP64 does not fit column 'age' (long); send INT64"
    )
    # and the server still answers
    assert iris.client.is_server_ready()


def test_v2_requests_are_in_the_request_metrics(iris: Served) -> None:
    iris.client.infer(IRIS, column_inputs(X.head(2), dict.fromkeys(COLUMNS, "FP64")), outputs=PREDICT)
    counts = {
        (sample.labels["endpoint"], sample.labels["status"]): sample.value
        for family in text_string_to_metric_families(iris.server.get("/metrics").text)
        for sample in family.samples
        if sample.name == "mlship_requests_total"
    }
    assert counts[("/v2/models/{name}/infer", "200")] >= 1
