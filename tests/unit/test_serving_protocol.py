"""Request parsing and validation of the scoring protocol (pure functions)."""

from __future__ import annotations

import math

import numpy as np
import orjson
import pandas as pd
import pytest

from mlship.serving.protocol import (
    BadRequest,
    Column,
    Table,
    Unstructured,
    columns_from_signature,
    encode_error,
    encode_predictions,
    media_type,
    parse_invocation,
    split_rows,
)

pytestmark = pytest.mark.unit

IRIS = (
    Column("sepal length", "double"),
    Column("sepal width", "double"),
    Column("petal length", "double"),
    Column("petal width", "double"),
)
NAMES = [c.name for c in IRIS]
ROW = [5.1, 3.5, 1.4, 0.2]
ROW2 = [6.7, 3.0, 5.2, 2.3]
JSON = "application/json"


def rec(values: list[float]) -> dict[str, float]:
    return dict(zip(NAMES, values, strict=True))


def parse(doc: object, columns=IRIS, content_type: str = JSON) -> Table:
    parsed = parse_invocation(orjson.dumps(doc), content_type, columns)
    assert isinstance(parsed, Table)
    return parsed


def rows(table: Table) -> list[list[object]]:
    return [list(r) for r in zip(*table.columns, strict=True)]


def bad(body: bytes | object, columns=IRIS, content_type: str | None = JSON) -> BadRequest:
    raw = body if isinstance(body, bytes) else orjson.dumps(body)
    with pytest.raises(BadRequest) as info:
        parse_invocation(raw, content_type, columns)
    return info.value


# --- the accepted formats all give the same table ---------------------------------------------


@pytest.mark.parametrize(
    "doc",
    [
        {"dataframe_split": {"columns": NAMES, "data": [ROW, ROW2]}},
        {"dataframe_split": {"index": [7, 8], "columns": NAMES, "data": [ROW, ROW2]}},
        {"dataframe_records": [rec(ROW), rec(ROW2)]},
        {"instances": [rec(ROW), rec(ROW2)]},
        {"inputs": [rec(ROW), rec(ROW2)]},
        {"inputs": {n: [a, b] for n, a, b in zip(NAMES, ROW, ROW2, strict=True)}},
        {"instances": {n: [a, b] for n, a, b in zip(NAMES, ROW, ROW2, strict=True)}},
    ],
    ids=[
        "split",
        "split-index",
        "records",
        "instances",
        "inputs-records",
        "inputs-cols",
        "inst-cols",
    ],
)
def test_formats_give_the_same_rows(doc: object) -> None:
    table = parse(doc)
    assert table.n_rows == 2
    assert rows(table) == [ROW, ROW2]


def test_one_row_as_a_dict_of_scalars() -> None:
    assert rows(parse({"inputs": rec(ROW)})) == [ROW]


def test_split_columns_may_come_in_any_order_and_extra_columns_are_ignored() -> None:
    names = [*reversed(NAMES), "comment"]
    data = [[*reversed(ROW), "hello"]]
    assert rows(parse({"dataframe_split": {"columns": names, "data": data}})) == [ROW]
    record = {**rec(ROW), "id": 17}
    assert rows(parse({"dataframe_records": [record]})) == [ROW]


def test_ints_are_accepted_for_doubles_and_whole_floats_for_longs() -> None:
    cols = (Column("x", "double"), Column("n", "long"))
    table = parse({"dataframe_records": [{"x": 5, "n": 3.0}]}, cols)
    assert rows(table) == [[5.0, 3]]
    assert type(table.columns[0][0]) is float and type(table.columns[1][0]) is int


def test_null_double_becomes_nan() -> None:
    table = parse({"dataframe_records": [{**rec(ROW), "sepal length": None}]})
    assert math.isnan(table.columns[0][0])


def test_optional_columns_may_be_missing() -> None:
    cols = (Column("x", "double"), Column("note", "string", required=False))
    table = parse({"dataframe_records": [{"x": 1.0}]}, cols)
    assert rows(table) == [[1.0, None]]


def test_csv_with_header() -> None:
    body = (",".join(NAMES) + "\n" + ",".join(map(str, ROW)) + "\n").encode()
    table = parse_invocation(body, "text/csv; charset=utf-8", IRIS)
    assert isinstance(table, Table) and rows(table) == [ROW]


def test_csv_converts_each_column_type() -> None:
    cols = (Column("n", "long"), Column("ok", "boolean"), Column("s", "string"))
    body = b'n,ok,s\n3,true,"a, b"\n4,0,c\n'
    table = parse_invocation(body, "text/csv", cols)
    assert isinstance(table, Table) and rows(table) == [[3, True, "a, b"], [4, False, "c"]]


def test_without_a_column_signature_the_payload_goes_to_mlflows_parser() -> None:
    parsed = parse_invocation(b'{"inputs": [[1, 2]]}', JSON, None)
    assert parsed == Unstructured(JSON, {"inputs": [[1, 2]]})
    assert parse_invocation(b"a,b\n1,2\n", "text/csv", None) == Unstructured(
        "text/csv", "a,b\n1,2\n"
    )


# --- bad input: 400 (or 415) with a message naming the problem --------------------------------


def test_missing_column_is_named() -> None:
    record = dict(zip(NAMES[:3], ROW[:3], strict=True))
    err = bad({"dataframe_records": [record]})
    assert err.status == 400
    assert "row 0 is missing required column(s) 'petal width'" in err.message
    err = bad({"dataframe_split": {"columns": NAMES[:2], "data": [ROW[:2]]}})
    assert "missing required column(s) 'petal length', 'petal width'" in err.message


def test_wrong_type_names_column_row_and_value() -> None:
    second = {**rec(ROW), "petal width": "wide"}
    err = bad({"dataframe_records": [rec(ROW), second]})
    assert err.message == "column 'petal width' (row 1): expected double, got string \"wide\""


@pytest.mark.parametrize(
    ("column", "value", "expected"),
    [
        (Column("n", "long"), 2.5, "column 'n' (row 0): expected long, got number 2.5"),
        (Column("n", "long"), None, "column 'n' (row 0): null is not allowed for long"),
        (Column("x", "double"), True, "column 'x' (row 0): expected double, got boolean true"),
        (Column("b", "boolean"), 1, "column 'b' (row 0): expected boolean, got number 1"),
        (Column("s", "string"), 3, "column 's' (row 0): expected string, got number 3"),
        (Column("x", "double"), [1.0], "column 'x' (row 0): expected double, got array [1.0]"),
    ],
)
def test_type_rules(column: Column, value: object, expected: str) -> None:
    assert bad({"dataframe_records": [{column.name: value}]}, (column,)).message == expected


def test_unparseable_json() -> None:
    err = bad(b'{"dataframe_records": [')
    assert err.status == 400 and err.message.startswith("the body is not valid JSON")


@pytest.mark.parametrize(
    ("doc", "fragment"),
    [
        ([1, 2], "must be an object with one of dataframe_split"),
        ({"data": [ROW]}, "must have exactly one of"),
        ({"inputs": [], "instances": []}, "must have exactly one of"),
        (
            {"inputs": [rec(ROW)], "extra": 1},
            "unexpected top-level JSON keys: 'extra'",
        ),
        ({"inputs": [rec(ROW)], "params": {"k": 1}}, "'params' are not supported"),
        ({"dataframe_split": {"data": [ROW]}}, "'dataframe_split' needs 'columns'"),
        ({"dataframe_split": {"columns": NAMES, "data": [ROW[:3]]}}, "row 0 must be a list of 4"),
        ({"dataframe_split": {"columns": NAMES + NAMES[:1], "data": []}}, "duplicate column"),
        ({"dataframe_records": {"a": 1}}, "'dataframe_records' must be a list of objects"),
        ({"dataframe_records": [ROW]}, "'dataframe_records' row 0 must be an object"),
        ({"instances": [ROW]}, "'instances' rows must name their columns"),
        ({"inputs": {n: [1.0] for n in NAMES} | {NAMES[0]: [1.0, 2.0]}}, "different lengths"),
        ({"inputs": {n: 1.0 for n in NAMES} | {NAMES[0]: [1.0]}}, "every column to a list"),
        ({"dataframe_records": []}, "the request has no rows to score"),
    ],
)
def test_malformed_documents(doc: object, fragment: str) -> None:
    err = bad(doc)
    assert err.status == 400
    assert fragment in err.message


@pytest.mark.parametrize(
    ("content_type", "fragment"),
    [
        (None, "a Content-Type header is required"),
        ("text/plain", "unsupported Content-Type 'text/plain'"),
        ("application/json; charset=latin-1", "unsupported charset 'latin-1'"),
        ("application/json; format=pandas-split", "unsupported Content-Type parameter 'format'"),
    ],
)
def test_content_type_is_checked(content_type: str | None, fragment: str) -> None:
    err = bad({"inputs": rec(ROW)}, content_type=content_type)
    assert err.status == 415 and fragment in err.message


def test_content_type_is_case_insensitive() -> None:
    assert media_type("Application/JSON; Charset=UTF-8") == JSON


@pytest.mark.parametrize(
    ("body", "fragment"),
    [
        (b"sepal length,sepal width\n1,2\n", "missing required column(s) 'petal length'"),
        (",".join(NAMES).encode() + b"\n1,2,3\n", "CSV row 0 has 3 fields, the header has 4"),
        (
            ",".join(NAMES).encode() + b"\n1,2,x,4\n",
            "column 'petal length' (row 0): expected double",
        ),
        (b"", "the CSV body is empty"),
        (b"\xff\xfe", "not valid UTF-8"),
    ],
)
def test_bad_csv(body: bytes, fragment: str) -> None:
    err = bad(body, content_type="text/csv")
    assert err.status == 400 and fragment in err.message


# --- signatures and responses -----------------------------------------------------------------


def test_columns_from_signature() -> None:
    spec = [
        {"type": "double", "name": "a", "required": True},
        {"type": "string", "name": "b", "required": False},
    ]
    assert columns_from_signature(spec) == (Column("a", "double"), Column("b", "string", False))
    assert columns_from_signature(None) is None
    tensor = [{"type": "tensor", "tensor-spec": {"dtype": "float64", "shape": [-1, 4]}}]
    assert columns_from_signature(tensor) is None
    assert columns_from_signature([{"type": "double"}]) is None  # unnamed column


def test_split_rows_cuts_arrays_frames_and_dicts() -> None:
    arr = np.arange(6)
    assert [p.tolist() for p in split_rows(arr, [1, 3, 2])] == [[0], [1, 2, 3], [4, 5]]
    frame = pd.DataFrame({"a": [1, 2, 3], "b": [4, 5, 6]})
    parts = split_rows(frame, [2, 1])
    assert [p.to_dict(orient="records") for p in parts] == [
        [{"a": 1, "b": 4}, {"a": 2, "b": 5}],
        [{"a": 3, "b": 6}],
    ]
    out = split_rows({"label": np.array([0, 1]), "p": np.array([0.1, 0.9])}, [1, 1])
    assert [{k: v.tolist() for k, v in part.items()} for part in out] == [
        {"label": [0], "p": [0.1]},
        {"label": [1], "p": [0.9]},
    ]
    with pytest.raises(ValueError, match="returned 2 predictions for 3 input rows"):
        split_rows(np.arange(2), [1, 2])


def test_encode_predictions_matches_mlflow_shapes() -> None:
    assert orjson.loads(encode_predictions(np.array([0, 2]))) == {"predictions": [0, 2]}
    assert orjson.loads(encode_predictions(np.array([[0.1, 0.9]]))) == {"predictions": [[0.1, 0.9]]}
    assert orjson.loads(encode_predictions(np.array(["setosa"], dtype=object))) == {
        "predictions": ["setosa"]
    }
    frame = pd.DataFrame({"label": [1], "score": [0.5]})
    assert orjson.loads(encode_predictions(frame)) == {"predictions": [{"label": 1, "score": 0.5}]}
    series = pd.Series([3, 4], name="y")
    assert orjson.loads(encode_predictions(series)) == {"predictions": [{"y": 3}, {"y": 4}]}
    assert orjson.loads(encode_predictions(np.array([math.nan]))) == {"predictions": [None]}


def test_encode_error_has_mlflows_shape() -> None:
    assert orjson.loads(encode_error("nope")) == {"error_code": "BAD_REQUEST", "message": "nope"}


# --- NaN and Infinity, as Python's json.dumps writes them -------------------------------------


def test_nan_from_a_python_client_is_a_missing_value() -> None:
    import json

    body = json.dumps({"dataframe_records": [rec([math.nan, *ROW[1:]]), rec(ROW2)]}).encode()
    assert b"NaN" in body  # what requests/json send for float("nan")
    table = parse_invocation(body, JSON, IRIS)
    assert isinstance(table, Table)
    assert math.isnan(table.columns[0][0]) and rows(table)[1] == ROW2
    cols = (Column("x", "double"), Column("note", "string", required=False))
    table = parse_invocation(b'{"inputs": {"x": [NaN], "note": [NaN]}}', JSON, cols)
    assert isinstance(table, Table) and math.isnan(table.columns[0][0])
    assert table.columns[1] == [None]


@pytest.mark.parametrize(
    ("column", "literal", "expected"),
    [
        (Column("x", "double"), "Infinity",
         "column 'x' (row 0): Infinity is not allowed for double: send a finite number, or NaN or"
         " null for a missing value"),
        (Column("x", "float"), "-Infinity", "column 'x' (row 0): -Infinity is not allowed for float"),
        (Column("n", "long"), "NaN", "column 'n' (row 0): NaN (a missing value) is not allowed for long"),
        (Column("n", "integer"), "Infinity", "column 'n' (row 0): Infinity is not allowed for integer"),
        (Column("b", "boolean"), "NaN", "column 'b' (row 0): NaN (a missing value) is not allowed"),
        (Column("s", "string"), "NaN", "column 's' (row 0): NaN (a missing value) is not allowed"),
    ],
)
def test_non_finite_literals_a_column_cannot_take_are_refused(
    column: Column, literal: str, expected: str
) -> None:
    err = bad(f'{{"dataframe_records": [{{"{column.name}": {literal}}}]}}'.encode(), (column,))
    assert err.status == 400 and err.message.startswith(expected)


def test_non_finite_values_in_csv() -> None:
    cols = (Column("x", "double"), Column("n", "long"))
    table = parse_invocation(b"x,n\nnan,1\n", "text/csv", cols)
    assert isinstance(table, Table) and math.isnan(table.columns[0][0])
    err = bad(b"x,n\ninf,1\n", cols, content_type="text/csv")
    assert err.message.startswith("column 'x' (row 0): Infinity is not allowed for double")
    err = bad(b"x,n\n1,nan\n", cols, content_type="text/csv")
    assert err.message == "column 'n' (row 0): NaN (a missing value) is not allowed for long"


def test_without_a_column_signature_nan_reaches_mlflows_parser_as_a_float() -> None:
    parsed = parse_invocation(b'{"inputs": [[1.0, NaN]]}', JSON, None)
    assert isinstance(parsed, Unstructured)
    assert math.isnan(parsed.payload["inputs"][0][1])


def test_invalid_json_around_a_literal_is_still_invalid() -> None:
    for body in (b'{"inputs": [{"x": NaN]', b'{"inputs": [{"x": nan}]}', b'{"inputs": -Inf}'):
        err = bad(body, (Column("x", "double"),))
        assert err.status == 400 and err.message.startswith("the body is not valid JSON"), body
    cols = (Column("s", "string"), Column("x", "double"))
    table = parse_invocation('{"inputs": [{"s": "ĉé", "x": NaN}]}'.encode(), JSON, cols)
    assert isinstance(table, Table) and table.columns[0] == ["ĉé"]


# --- boundaries (issue #21's mutation survivors) -----------------------------------------------


@pytest.mark.parametrize("kind", ["long", "integer", "double", "float"])
def test_json_booleans_are_not_numbers(kind: str) -> None:
    err = bad({"dataframe_records": [{"n": True}]}, (Column("n", kind),))
    assert err.message == f"column 'n' (row 0): expected {kind}, got boolean true"


def test_null_in_a_required_string_column_is_refused() -> None:
    err = bad({"dataframe_records": [{"s": None}]}, (Column("s", "string"),))
    assert err.message == "column 's' (row 0): null is not allowed for string"
    optional = (Column("s", "string", required=False),)
    assert rows(parse({"dataframe_records": [{"s": None}]}, optional)) == [[None]]


def test_csv_header_names_are_stripped() -> None:
    body = (" , ".join(NAMES) + "\n" + ",".join(map(str, ROW)) + "\n").encode()
    table = parse_invocation(body, "text/csv", IRIS)
    assert isinstance(table, Table) and rows(table) == [ROW]


def test_a_literal_inside_an_array_is_shown_as_sent() -> None:
    err = bad(b'{"dataframe_records": [{"x": [1, NaN, -Infinity]}]}', (Column("x", "double"),))
    assert err.message == "column 'x' (row 0): expected double, got array [1,\"NaN\",\"-Infinity\"]"


def test_long_integers_are_exact_in_csv_as_in_json() -> None:
    big = 2**53 + 1  # the first integer a float cannot hold
    cols = (Column("n", "long"), Column("i", "integer"))
    table = parse_invocation(f"n,i\n{big},-{big}\n".encode(), "text/csv", cols)
    assert isinstance(table, Table) and rows(table) == [[big, -big]]
    assert rows(parse({"dataframe_records": [{"n": big, "i": -big}]}, cols)) == [[big, -big]]


def test_an_optional_column_left_out_of_a_record_is_missing_not_null() -> None:
    cols = (Column("x", "long"), Column("n", "long", required=False))
    assert rows(parse({"dataframe_records": [{"x": 1}]}, cols)) == [[1, None]]
    assert rows(parse({"dataframe_split": {"columns": ["x"], "data": [[1]]}}, cols)) == [[1, None]]
    err = bad({"dataframe_records": [{"x": 1, "n": None}]}, cols)
    assert err.message == "column 'n' (row 0): null is not allowed for long"
