"""The Open Inference Protocol (V2) conversions: infer request -> Table, predictions -> response,
model and server metadata (pure functions)."""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import orjson
import pandas as pd
import pytest

from mlship.serving.protocol import BadRequest, Column, Table
from mlship.serving.v2 import (
    InferRequest,
    encode_error,
    infer_response,
    model_metadata,
    parse_infer,
    server_metadata,
)

pytestmark = pytest.mark.unit

IRIS = (
    Column("sl", "double"),
    Column("sw", "double"),
    Column("pl", "double"),
    Column("pw", "double"),
)
MIXED = (
    Column("age", "long"),
    Column("score", "float"),
    Column("member", "boolean"),
    Column("city", "string"),
    Column("n", "integer"),
)
ROWS = [[5.1, 3.5, 1.4, 0.2], [6.7, 3.0, 5.2, 2.3]]


def body(inputs: list[dict[str, Any]], **extra: Any) -> bytes:
    return orjson.dumps({"inputs": inputs, **extra})


def tensor(name: str, shape: list[int], datatype: str, data: Any) -> dict[str, Any]:
    return {"name": name, "shape": shape, "datatype": datatype, "data": data}


def per_column(rows: list[list[float]], datatype: str = "FP64") -> bytes:
    return body(
        [tensor(c.name, [len(rows)], datatype, [r[j] for r in rows]) for j, c in enumerate(IRIS)]
    )


def parse(raw: bytes, columns: tuple[Column, ...] | None = IRIS) -> InferRequest:
    return parse_infer(raw, columns)


def refused(raw: bytes, columns: tuple[Column, ...] | None = IRIS, **kwargs: Any) -> str:
    with pytest.raises(BadRequest) as e:
        parse_infer(raw, columns, **kwargs)
    assert e.value.status == 400
    return e.value.message


def as_columns(rows: list[list[Any]]) -> tuple[list[Any], ...]:
    return tuple(list(col) for col in zip(*rows, strict=True))


# --- requests that parse -----------------------------------------------------------------------


def test_one_1d_tensor_per_column_gives_the_table_in_signature_order() -> None:
    # tensors in another order than the signature's: matched by name
    given = reversed(list(enumerate(IRIS)))
    raw = body([tensor(c.name, [2], "FP64", [r[j] for r in ROWS]) for j, c in given])
    assert parse(raw) == InferRequest(None, Table(as_columns(ROWS), 2))


def test_one_2d_tensor_flat_or_nested_gives_the_same_table() -> None:
    want = Table(as_columns(ROWS), 2)
    flat = body([tensor("input-0", [2, 4], "FP32", [v for r in ROWS for v in r])])
    nested = body([tensor("input-0", [2, 4], "FP64", ROWS)])
    assert parse(flat).table == want
    assert parse(nested).table == want
    assert parse(per_column(ROWS)).table == want


def test_one_row() -> None:
    assert parse(per_column(ROWS[:1])).table == Table(as_columns(ROWS[:1]), 1)
    one = body([tensor("x", [1, 4], "FP64", [ROWS[0]])])
    assert parse(one).table == Table(as_columns(ROWS[:1]), 1)


def test_integers_widen_to_floats() -> None:
    table = parse(per_column([[5, 3, 1, 0]], "INT64")).table
    assert table.columns == ([5.0], [3.0], [1.0], [0.0])
    assert all(type(col[0]) is float for col in table.columns)


def test_every_column_kind_from_its_datatype() -> None:
    raw = body([
        tensor("age", [2], "INT64", [31, 42]),
        tensor("score", [2], "FP32", [0.5, 1]),
        tensor("member", [2], "BOOL", [True, False]),
        tensor("city", [2], "BYTES", ["Oslo", "Ås"]),
        tensor("n", [2], "INT32", [1, 2]),
    ])  # fmt: skip
    assert parse(raw, MIXED).table == Table(
        ([31, 42], [0.5, 1.0], [True, False], ["Oslo", "Ås"], [1, 2]), 2
    )


def test_id_is_kept_and_parameters_and_the_predict_output_are_tolerated() -> None:
    raw = per_column(ROWS)[:-1] + b', "id": "req-1", "parameters": {"binary_data_output": true},' \
        b' "outputs": [{"name": "predict", "parameters": {"binary_data": false}}]}'
    assert parse(raw).id == "req-1"


def test_nan_is_a_missing_value_and_an_optional_column_may_be_left_out() -> None:
    columns = (Column("a", "double"), Column("b", "double", required=False))
    raw = b'{"inputs": [{"name": "a", "shape": [2], "datatype": "FP64", "data": [NaN, 1]}]}'
    table = parse(raw, columns).table
    assert math.isnan(table.columns[0][0]) and table.columns[0][1] == 1.0
    assert all(math.isnan(v) for v in table.columns[1])


# --- requests refused, each with its message ---------------------------------------------------


@pytest.mark.parametrize(
    ("raw", "message"),
    [
        (b"{", "the body is not valid JSON: unexpected end of data: line 1 column 2 (char 1)"),
        (b"[]", "the infer request must be a JSON object, got array"),
        (b'{"inputs": [], "model": "x"}',
         "unexpected key(s) in the infer request: 'model'; it takes 'id', 'parameters', 'inputs', 'outputs'"),
        (b'{"inputs": []}', "'inputs' must be a non-empty array of tensors"),
        (b'{"id": 7, "inputs": []}', "'id' must be a string, got number"),
        (b'{"parameters": [], "inputs": []}', "'parameters' must be an object, got array"),
        (b'{"outputs": [{"name": "proba"}], "inputs": []}',
         "unknown output 'proba': the model's one output is 'predict'"),
        (b'{"outputs": {}, "inputs": []}', "'outputs' must be an array, got object"),
        (b'{"inputs": [3]}', "input 0 must be an object with name, shape, datatype and data, got number"),
        (b'{"inputs": [{"shape": [1]}]}', "input 0 needs a 'name', a non-empty string"),
    ],
    ids=["bad-json", "not-object", "unknown-key", "no-inputs", "id", "parameters", "output",
         "outputs", "input-not-object", "no-name"],
)  # fmt: skip
def test_malformed_requests(raw: bytes, message: str) -> None:
    assert refused(raw) == message


@pytest.mark.parametrize(
    ("t", "message"),
    [
        (tensor("x", [2, -1], "FP64", []),
         "input 'x': 'shape' must be a non-empty list of non-negative integers, got [2,-1]"),
        (tensor("x", [], "FP64", []),
         "input 'x': 'shape' must be a non-empty list of non-negative integers, got []"),
        (tensor("x", [1, 4], "FLOAT", [ROWS[0]]),
         "input 'x': unknown datatype \"FLOAT\"; the V2 datatypes are BOOL, UINT8, UINT16, UINT32, "
         "UINT64, INT8, INT16, INT32, INT64, FP16, FP32, FP64, BYTES"),
        ({"name": "x", "shape": [1, 4], "datatype": "FP64"}, "input 'x' has no 'data'"),
        (tensor("x", [1, 4], "FP64", "5.1"), "input 'x': 'data' must be an array, got string"),
        (tensor("x", [2, 4], "FP64", ROWS[0]), "input 'x': shape [2, 4] holds 8 value(s), 'data' has 4"),
        (tensor("x", [2, 4], "FP64", [ROWS[0], ROWS[1][:3]]),
         "input 'x': the nested 'data' does not match shape [2, 4]; send it flat (row-major) or nested "
         "to exactly that shape"),
        (tensor("x", [1, 4], "FP64", [[5.1, 3.5], [1.4, 0.2]]),
         "input 'x': the nested 'data' does not match shape [1, 4]; send it flat (row-major) or nested "
         "to exactly that shape"),
        (tensor("x", [3, 4], "FP64", ROWS),
         "input 'x': the nested 'data' does not match shape [3, 4]; send it flat (row-major) or nested "
         "to exactly that shape"),
        (tensor("x", [1, 3], "FP64", [ROWS[0][:3]]),
         "input 'x': shape [1, 3] has 3 column(s), the model takes 4: 'sl', 'sw', 'pl', 'pw'"),
        (tensor("x", [1, 4], "FP64", [5.1, "3.5", 1.4, 0.2]),
         "input 'x': FP64 data must hold numbers; element 1 is string \"3.5\""),
        (tensor("x", [1, 4], "FP64", [5.1, True, 1.4, 0.2]),
         "input 'x': FP64 data must hold numbers; element 1 is boolean true"),
        (tensor("x", [1, 4], "FP64", [5.1, None, 1.4, 0.2]),
         "input 'x': FP64 data must hold numbers; element 1 is null"),
        (tensor("x", [1, 4], "INT64", [5, 3.5, 1, 0]),
         "input 'x': INT64 data must hold integers; element 1 is number 3.5"),
        (tensor("x", [1, 4], "UINT8", [5, -3, 1, 0]),
         "input 'x': UINT8 data must hold non-negative integers; element 1 is number -3"),
        (tensor("x", [1, 4], "BYTES", ["5.1", "3.5", "1.4", "0.2"]),
         "input 'x': datatype BYTES does not fit column 'sl' (double); send FP64"),
        (tensor("x", [1, 4], "BOOL", [True, False, True, False]),
         "input 'x': datatype BOOL does not fit column 'sl' (double); send FP64"),
        (tensor("x", [0, 4], "FP64", []), "the request has no rows to score"),
    ],
    ids=["negative-dim", "empty-shape", "datatype", "no-data", "data-not-array", "flat-length",
         "ragged", "nested-wrong-width", "nested-wrong-rows", "width", "string-in-fp", "bool-in-fp",
         "null", "float-in-int", "negative-uint", "bytes-for-double", "bool-for-double", "zero-rows"],
)  # fmt: skip
def test_a_bad_2d_tensor(t: dict[str, Any], message: str) -> None:
    assert refused(body([t])) == message


def test_a_2d_tensor_for_mixed_columns_says_to_send_one_per_column() -> None:
    raw = body([tensor("x", [1, 5], "INT64", [1, 2, 3, 4, 5])])
    assert refused(raw, MIXED) == (
        "input 'x': datatype INT64 does not fit column 'member' (boolean); send BOOL "
        "(one 1-D tensor per column lets each column have its own datatype)"
    )


def test_infinity_names_the_column_and_row() -> None:
    raw = b'{"inputs": [{"name": "x", "shape": [1, 4], "datatype": "FP64", "data": [5.1, Infinity, 1, 2]}]}'
    assert refused(raw) == (
        "column 'sw' (row 0): Infinity is not allowed for double: send a finite number, "
        "or NaN or null for a missing value"
    )


def columns_body(**overrides: dict[str, Any] | None) -> bytes:
    tensors = {c.name: tensor(c.name, [2], "FP64", [r[j] for r in ROWS]) for j, c in enumerate(IRIS)}
    for name, t in overrides.items():
        if t is None:
            del tensors[name]
        else:
            tensors[name] = t
    return body(list(tensors.values()))


@pytest.mark.parametrize(
    ("raw", "message"),
    [
        (columns_body(sw=None, pw=None), "missing input tensor(s) 'sw', 'pw'"),
        (columns_body(petal=tensor("petal", [2], "FP64", [1, 2])),
         "unknown input tensor(s) 'petal': the model's inputs are 'sl', 'sw', 'pl', 'pw', one 1-D tensor "
         "each, or one 2-D tensor [n, 4]"),
        (body([tensor("input-0", [4], "FP64", ROWS[0])]),
         "unknown input tensor(s) 'input-0': the model's inputs are 'sl', 'sw', 'pl', 'pw', one 1-D tensor "
         "each, or one 2-D tensor [n, 4]"),
        (columns_body(sw=tensor("sw", [3], "FP64", [1, 2, 3])),
         "input tensors have different lengths: 'sw' has 3 value(s), 'sl' has 2"),
        (columns_body(sw=tensor("sw", [2], "FP64", [1, 2, 3])),
         "input 'sw': shape [2] holds 2 value(s), 'data' has 3"),
        (columns_body(sw=tensor("sw", [2, 1], "FP64", [[1], [2]])),
         "input 'sw': shape [2, 1] is not 1-D: send one tensor [n] per column, or one 2-D tensor [n, 4] "
         "with the columns in signature order"),
        (columns_body(sw=tensor("sw", [2], "BYTES", ["a", "b"])),
         "input 'sw': datatype BYTES does not fit column 'sw' (double); send FP64"),
        (body([*[tensor(c.name, [0], "FP64", []) for c in IRIS]]), "the request has no rows to score"),
        (body([tensor("sl", [1], "FP64", [1]), tensor("sl", [1], "FP64", [1])]),
         "input 'sl' is given twice"),
    ],
    ids=["missing", "extra", "2d-as-1d", "lengths", "shape-vs-data", "not-1d", "datatype", "zero-rows",
         "twice"],
)  # fmt: skip
def test_bad_per_column_tensors(raw: bytes, message: str) -> None:
    assert refused(raw) == message


@pytest.mark.parametrize(
    ("t", "message"),
    [
        (tensor("age", [1], "FP64", [31.0]),
         "input 'age': datatype FP64 does not fit column 'age' (long); send INT64"),
        (tensor("member", [1], "INT64", [1]),
         "input 'member': datatype INT64 does not fit column 'member' (boolean); send BOOL"),
        (tensor("member", [1], "BOOL", [1]),
         "input 'member': BOOL data must hold booleans (true or false); element 0 is number 1"),
        (tensor("city", [1], "BYTES", [3]),
         "input 'city': BYTES data must hold strings; element 0 is number 3"),
        (tensor("n", [1], "FP32", [1.0]),
         "input 'n': datatype FP32 does not fit column 'n' (integer); send INT32"),
    ],
    ids=["fp-for-long", "int-for-bool", "number-as-bool", "number-as-bytes", "fp-for-integer"],
)  # fmt: skip
def test_datatypes_that_do_not_convert(t: dict[str, Any], message: str) -> None:
    good = {
        "age": tensor("age", [1], "INT64", [31]), "score": tensor("score", [1], "FP32", [0.5]),
        "member": tensor("member", [1], "BOOL", [True]), "city": tensor("city", [1], "BYTES", ["Oslo"]),
        "n": tensor("n", [1], "INT32", [1]),
    }  # fmt: skip
    good[t["name"]] = t
    assert refused(body(list(good.values())), MIXED) == message


def test_binary_data_and_models_without_columns_are_refused() -> None:
    assert refused(per_column(ROWS), binary=True) == (
        "binary tensor data (Inference-Header-Content-Length) is not supported: send each tensor's "
        "'data' as JSON (tritonclient: binary_data=False)"
    )
    shm = tensor("x", [1, 4], "FP64", [ROWS[0]]) | {"parameters": {"binary_data_size": 32}}
    assert refused(body([shm])) == (
        "input 'x': binary and shared-memory tensor data are not supported: send 'data' as JSON"
    )
    assert refused(per_column(ROWS), None) == (
        "the model has no column signature, so V2 tensors cannot be matched to its inputs: "
        "use /invocations"
    )


# --- responses ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("predictions", "datatype", "data"),
    [
        (np.array([0, 2, 1]), "INT64", [0, 2, 1]),
        (np.array([0, 2, 1], dtype=np.int32), "INT32", [0, 2, 1]),
        (np.array([0.5, 1.5, 2.0], dtype=np.float32), "FP32", [0.5, 1.5, 2.0]),
        (np.array([0.5, 1.5, 2.0]), "FP64", [0.5, 1.5, 2.0]),
        (np.array([True, False, True]), "BOOL", [True, False, True]),
        (np.array(["setosa", "x", "y"], dtype=object), "BYTES", ["setosa", "x", "y"]),
        (np.array(["a", "b", "c"]), "BYTES", ["a", "b", "c"]),
        (np.array([b"a", b"b", b"c"]), "BYTES", ["a", "b", "c"]),
        (pd.Series([1, 2, 3]), "INT64", [1, 2, 3]),
        (pd.DataFrame({"p": [1.0, 2.0, 3.0]}), "FP64", [1.0, 2.0, 3.0]),
        ([1, 2, 3], "INT64", [1, 2, 3]),
        (np.array([1, 2.5, 3], dtype=object), "FP64", [1, 2.5, 3]),
    ],
    ids=["int64", "int32", "fp32", "fp64", "bool", "object-str", "unicode", "bytes", "series", "frame-1col",
         "list", "object-numbers"],
)  # fmt: skip
def test_predictions_become_one_tensor(predictions: Any, datatype: str, data: list[Any]) -> None:
    assert infer_response(predictions, "iris", "3", "req-1") == {
        "model_name": "iris",
        "model_version": "3",
        "id": "req-1",
        "outputs": [{"name": "predict", "datatype": datatype, "shape": [3], "data": data}],
    }


def test_one_prediction_and_2d_predictions_keep_their_shape() -> None:
    one = infer_response(np.array([2]), "iris", "", "r")
    assert one == {
        "model_name": "iris",
        "id": "r",
        "outputs": [{"name": "predict", "datatype": "INT64", "shape": [1], "data": [2]}],
    }
    proba = infer_response(np.array([[0.25, 0.75], [1.0, 0.0]]), "iris", "3", "r")["outputs"][0]
    assert proba["shape"] == [2, 2] and proba["data"] == [0.25, 0.75, 1.0, 0.0]


def test_nan_predictions_are_written_as_null() -> None:
    out = infer_response(np.array([1.0, math.nan]), "m", "1", "r")
    assert orjson.loads(orjson.dumps(out))["outputs"][0]["data"] == [1.0, None]


@pytest.mark.parametrize(
    ("predictions", "message"),
    [
        ({"a": [1], "b": [2]}, "the model returned 2 named outputs; V2 serving writes one"),
        (np.zeros((1, 2, 2)), "the model's predictions have 3 dimensions, not 1 or 2"),
        (np.array([{"a": 1}], dtype=object),
         "the model's predictions (dict) cannot be written as a V2 tensor"),
    ],
    ids=["dict", "3d", "objects"],
)
def test_predictions_that_make_no_tensor(predictions: Any, message: str) -> None:
    with pytest.raises(ValueError) as e:
        infer_response(predictions, "m", "1", "r")
    assert str(e.value) == message


# --- metadata ----------------------------------------------------------------------------------


def test_model_metadata_from_the_signature() -> None:
    tensor_output = [{"type": "tensor", "tensor-spec": {"dtype": "int64", "shape": [-1]}}]
    assert model_metadata("shop", "7", MIXED, tensor_output) == {
        "name": "shop",
        "versions": ["7"],
        "platform": "mlflow_pyfunc",
        "inputs": [
            {"name": "age", "datatype": "INT64", "shape": [-1]},
            {"name": "score", "datatype": "FP32", "shape": [-1]},
            {"name": "member", "datatype": "BOOL", "shape": [-1]},
            {"name": "city", "datatype": "BYTES", "shape": [-1]},
            {"name": "n", "datatype": "INT32", "shape": [-1]},
        ],
        "outputs": [{"name": "predict", "datatype": "INT64", "shape": [-1]}],
    }
    column_output = model_metadata("m", "", IRIS, [{"type": "double", "required": True}])
    assert column_output["versions"] == []
    assert column_output["outputs"] == [{"name": "predict", "datatype": "FP64", "shape": [-1]}]
    two = [{"type": "long"}, {"type": "long"}]
    objects = [{"type": "tensor", "tensor-spec": {"dtype": "object"}}]
    for unknown in (None, [], two, objects):
        assert model_metadata("m", "1", IRIS, unknown)["outputs"] == []
    assert model_metadata("m", "1", None, None)["inputs"] == []


def test_server_metadata_and_error_body() -> None:
    meta = server_metadata()
    assert meta["name"] == "mlship" and meta["extensions"] == [] and isinstance(meta["version"], str)
    assert orjson.loads(encode_error("no")) == {"error": "no"}
