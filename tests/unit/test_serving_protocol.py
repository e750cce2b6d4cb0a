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


def test_a_bad_request_is_its_message_with_status_400_unless_told() -> None:
    err = BadRequest("nope")
    assert (str(err), err.message, err.status) == ("nope", "nope", 400)
    assert BadRequest("big", 413).status == 413


# --- signatures: which ones are tables ----------------------------------------------------------


@pytest.mark.parametrize("kind", ["double", "float", "long", "integer", "boolean", "string"])
def test_every_scalar_type_makes_a_column_required_unless_said(kind: str) -> None:
    assert columns_from_signature([{"type": kind, "name": "c"}]) == (Column("c", kind, True),)
    optional = [{"type": kind, "name": "c", "required": False}]
    assert columns_from_signature(optional) == (Column("c", kind, False),)


@pytest.mark.parametrize(
    "spec",
    [
        [],
        [{"type": "tensor", "name": "x"}],  # named, but not a scalar column
        [{"type": "double", "name": 5}],
        [{"type": "double", "name": ""}],
        [{"type": "double", "name": "a"}, {"type": "binary", "name": "b"}],
    ],
    ids=["empty", "named-tensor", "number-name", "empty-name", "one-unsupported"],
)
def test_signatures_that_are_not_tables_of_named_scalars(spec: list[dict]) -> None:
    assert columns_from_signature(spec) is None


# --- Content-Type ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("header", "kind"),
    [
        ("text/CSV", "text/csv"),
        ("application/json;charset=utf8", JSON),
        ('application/json; charset="UTF-8"', JSON),
        ("text/csv ; charset = UTF8 ", "text/csv"),
    ],
)
def test_utf8_spellings_are_accepted(header: str, kind: str) -> None:
    assert media_type(header) == kind


@pytest.mark.parametrize(
    ("header", "message"),
    [
        ("", "a Content-Type header is required: application/json or text/csv"),
        ("text/plain", "unsupported Content-Type 'text/plain': send application/json or text/csv"),
        ("text/csv; charset=latin-1", "unsupported charset 'latin-1': only UTF-8 is accepted"),
        ('text/csv; charset="utf-16"', "unsupported charset '\"utf-16\"': only UTF-8 is accepted"),
        ("text/csv; charset=utf-8=x", "unsupported charset 'utf-8=x': only UTF-8 is accepted"),
        ("text/csv; charset=XUTF-8X", "unsupported charset 'XUTF-8X': only UTF-8 is accepted"),
        ("application/json; Format=split", "unsupported Content-Type parameter 'format'"),
    ],
)
def test_content_type_messages(header: str, message: str) -> None:
    with pytest.raises(BadRequest) as info:
        media_type(header)
    assert (info.value.message, info.value.status) == (message, 415)


# --- JSON documents: exact messages ----------------------------------------------------------------

FORMATS = "dataframe_split, dataframe_records, instances, inputs"
AB = (Column("a", "double"), Column("b", "long"))


def test_invalid_json_is_named_with_the_parsers_own_words() -> None:
    body = b'{"inputs": [1,'
    with pytest.raises(orjson.JSONDecodeError) as orjson_says:
        orjson.loads(body)
    assert bad(body).message == f"the body is not valid JSON: {orjson_says.value}"
    literal = b'{"inputs": [{"x": NaN]'  # the stdlib parser's words when a literal sent it there
    assert bad(literal).message == (
        "the body is not valid JSON: Expecting ',' delimiter: line 1 column 22 (char 21)"
    )
    not_utf8 = b'{"inputs": [{"x": NaN, "s": "\xff"}]}'
    assert bad(not_utf8).message.startswith("the body is not valid JSON: 'utf-8' codec can't decode")


@pytest.mark.parametrize(
    ("body", "message"),
    [
        (b"[]", f"the JSON body must be an object with one of {FORMATS}; got array"),
        (b"null", f"the JSON body must be an object with one of {FORMATS}; got null"),
        (b"NaN", f"the JSON body must be an object with one of {FORMATS}; got NaN"),
        (b"{}", f"the JSON body must have exactly one of {FORMATS}; found keys: none"),
        (
            b'{"data": [], "inputs": [], "instances": []}',
            f"the JSON body must have exactly one of {FORMATS}; found keys: 'data', 'inputs', 'instances'",
        ),
        (b'{"inputs": [], "zeta": 1, "alpha": 2}', "unexpected top-level JSON keys: 'alpha', 'zeta'"),
        (b'{"inputs": [], "params": {"k": 1}}', "'params' are not supported by this model server"),
        (b'{"dataframe_split": null}', "'dataframe_split' must be an object, got null"),
        (b'{"dataframe_split": [[1, 2]]}', "'dataframe_split' must be an object, got array"),
        (
            b'{"dataframe_split": {"columns": ["a", 1], "data": []}}',
            "'dataframe_split' needs 'columns', a list of column names for the values in 'data'",
        ),
        (
            b'{"dataframe_split": {"columns": "a", "data": []}}',
            "'dataframe_split' needs 'columns', a list of column names for the values in 'data'",
        ),
        (b'{"dataframe_split": {"columns": ["a", "b"]}}', "'dataframe_split' needs 'data', a list of rows"),
        (
            b'{"dataframe_split": {"columns": ["a", "b", "a"], "data": []}}',
            "'dataframe_split' has duplicate column names: ['a', 'b', 'a']",
        ),
        (
            b'{"dataframe_split": {"columns": ["a", "b"], "data": [[1, 2], {"a": 1}]}}',
            "'dataframe_split' row 1 must be a list of 2 values (one per column), got object",
        ),
        (
            b'{"dataframe_split": {"columns": ["a", "b"], "data": [[1, 2], [1, 2, 3]]}}',
            "'dataframe_split' row 1 must be a list of 2 values (one per column), got 3 values",
        ),
        (b'{"dataframe_split": {"columns": ["a", "b"], "data": []}}', "the request has no rows to score"),
        (b'{"dataframe_records": "a"}', "'dataframe_records' must be a list of objects, got string"),
        (
            b'{"dataframe_records": [{"a": 1, "b": 2}, null]}',
            "'dataframe_records' row 1 must be an object, got null",
        ),
        (
            b'{"dataframe_records": [{"a": 1, "b": 2}, {"a": 1}]}',
            "row 1 is missing required column(s) 'b'",
        ),
        (
            b'{"instances": [[1, 2]]}',
            "'instances' rows must name their columns (a list of objects or an object of columns);"
            " got a list of arrays, but the model expects columns 'a', 'b'",
        ),
        (
            b'{"inputs": [NaN]}',
            "'inputs' rows must name their columns (a list of objects or an object of columns);"
            " got a list of NaNs, but the model expects columns 'a', 'b'",
        ),
        (b'{"instances": []}', "the request has no rows to score"),
        (b'{"inputs": "a"}', "'inputs' must be a list of objects, got string"),
        (b'{"instances": [{"a": 1, "b": 2}, 3]}', "'instances' row 1 must be an object, got number"),
        (b'{"inputs": {"a": [1]}}', "missing required column(s) 'b'"),
        (
            b'{"instances": {"a": [1, 2], "b": [1]}}',
            "'instances' columns have different lengths: 'b' has 1 values, expected 2",
        ),
        (
            b'{"inputs": {"a": 1, "b": [1]}}',
            "'inputs' must map every column to a list of values, or every column to one value",
        ),
        (b'{"inputs": {"a": [], "b": []}}', "the request has no rows to score"),
    ],
)
def test_document_messages(body: bytes, message: str) -> None:
    err = bad(body, AB)
    assert err.status == 400
    assert err.message == message


def test_params_that_are_empty_are_not_params() -> None:
    for params in ("{}", "null", "[]"):
        body = f'{{"inputs": [{{"a": 1, "b": 2}}], "params": {params}}}'.encode()
        assert rows(parse_invocation(body, JSON, AB)) == [[1.0, 2]]


def test_a_column_dict_with_only_optional_columns_must_have_one() -> None:
    cols = (Column("a", "double", required=False), Column("b", "long", required=False))
    err = bad({"instances": {"c": [1]}}, cols)
    assert err.message == "'instances' has none of the model's columns 'a', 'b'"
    # a list for the model's columns decides, whatever the other entries hold
    assert rows(parse({"inputs": {"a": [1, 2], "note": "hi"}}, cols)) == [[1.0, None], [2.0, None]]


# --- missing optional columns, in each layout -----------------------------------------------------

OPTIONAL = (
    Column("x", "long"),
    Column("d", "double", required=False),
    Column("f", "float", required=False),
    Column("s", "string", required=False),
    Column("n", "long", required=False),
    Column("b", "boolean", required=False),
)


def filled(table: Table) -> list[list[object]]:
    """rows(), with NaN spelled "nan" so rows compare equal."""
    return [["nan" if isinstance(v, float) and math.isnan(v) else v for v in row] for row in rows(table)]


@pytest.mark.parametrize(
    "body",
    [
        b'{"dataframe_split": {"columns": ["x"], "data": [[1], [2]]}}',
        b'{"inputs": {"x": [1, 2]}}',
        b'{"dataframe_records": [{"x": 1}, {"x": 2, "s": null}]}',
        b'{"instances": [{"x": 1, "d": null}, {"x": 2, "f": NaN}]}',
    ],
    ids=["split", "columns", "records", "instances"],
)
def test_missing_optional_columns_are_nan_for_floats_and_null_otherwise(body: bytes) -> None:
    table = parse_invocation(body, JSON, OPTIONAL)
    assert isinstance(table, Table) and table.n_rows == 2
    assert filled(table) == [[1, "nan", "nan", None, None, None], [2, "nan", "nan", None, None, None]]


def test_an_optional_column_left_out_is_not_a_null_sent() -> None:
    # left out of a record, a long column is missing (as in the other layouts); sent as null,
    # it is refused, as in every layout
    assert filled(parse({"dataframe_records": [{"x": 1}]}, OPTIONAL)) == [
        [1, "nan", "nan", None, None, None]
    ]
    err = bad({"dataframe_records": [{"x": 1}, {"x": 2, "n": None}]}, OPTIONAL)
    assert err.message == "column 'n' (row 1): null is not allowed for long"


def test_missing_optional_columns_in_one_row_of_scalars_and_in_csv() -> None:
    table = parse({"inputs": {"x": 7}}, OPTIONAL)
    assert table.n_rows == 1 and filled(table) == [[7, "nan", "nan", None, None, None]]
    table = parse_invocation(b"x\n1\n2\n3\n", "text/csv", OPTIONAL)
    assert isinstance(table, Table) and table.n_rows == 3
    assert filled(table)[2] == [3, "nan", "nan", None, None, None]


# --- values: each type's edges, in JSON -----------------------------------------------------------


@pytest.mark.parametrize(
    ("kind", "value", "expected"),
    [
        ("float", 2, 2.0),
        ("float", 0.5, 0.5),
        ("float", None, "nan"),
        ("double", -3, -3.0),
        ("integer", 4, 4),
        ("integer", -2.0, -2),
        ("long", 2**53, 2**53),
        ("boolean", False, False),
        ("boolean", True, True),
        ("string", "", ""),
    ],
)
def test_json_values_each_type_takes(kind: str, value: object, expected: object) -> None:
    table = parse({"dataframe_records": [{"c": value}]}, (Column("c", kind),))
    assert filled(table) == [[expected]]
    assert type(table.columns[0][0]) is type(expected) or expected == "nan"


GOOD = {"double": 1.0, "float": 1.0, "long": 1, "integer": 1, "boolean": True, "string": "ok"}


@pytest.mark.parametrize(
    ("kind", "value", "shown"),
    [
        ("float", "1.5", 'string "1.5"'),
        ("integer", 0.5, "number 0.5"),
        ("integer", "3", 'string "3"'),
        ("long", True, "boolean true"),
        ("boolean", "true", 'string "true"'),
        ("boolean", 0, "number 0"),
        ("string", False, "boolean false"),
        ("string", {"k": [1, 2]}, 'object {"k":[1,2]}'),
        ("double", "x" * 50, 'string "' + "x" * 39),  # the value is cut at 40 characters
    ],
)
def test_json_values_a_type_refuses(kind: str, value: object, shown: str) -> None:
    err = bad({"dataframe_records": [{"c": GOOD[kind]}, {"c": value}]}, (Column("c", kind),))
    assert err.message == f"column 'c' (row 1): expected {kind}, got {shown}"


def test_the_row_is_named_in_every_layout() -> None:
    cols = (Column("a", "double"), Column("b", "long"))
    expected = "column 'b' (row 2): expected long, got number 0.5"
    for doc in (
        {"dataframe_split": {"columns": ["a", "b"], "data": [[1, 1], [2, 2], [3, 0.5]]}},
        {"inputs": {"a": [1, 2, 3], "b": [1, 2, 0.5]}},
        {"instances": [{"a": 1, "b": 1}, {"a": 2, "b": 2}, {"a": 3, "b": 0.5}]},
    ):
        assert bad(doc, cols).message == expected
    csv_says = bad(b"a,b\n1,1\n2,2\n3,0.5\n", cols, content_type="text/csv").message
    assert csv_says == expected


def test_a_literal_inside_an_array_is_shown_as_sent() -> None:
    err = bad(b'{"dataframe_records": [{"x": [1, NaN, -Infinity]}]}', (Column("x", "double"),))
    assert err.message == "column 'x' (row 0): expected double, got array [1,\"NaN\",\"-Infinity\"]"


def test_nan_and_null_in_an_optional_string_column_are_missing_in_every_layout() -> None:
    cols = (Column("s", "string", required=False), Column("x", "double"))
    body = b'{"dataframe_split": {"columns": ["s", "x"], "data": [[NaN, 1], [null, 2], ["a", 3]]}}'
    table = parse_invocation(body, JSON, cols)
    assert isinstance(table, Table) and table.columns[0] == [None, None, "a"]


# --- CSV ---------------------------------------------------------------------------------------------


def csv_table(body: bytes, columns: tuple[Column, ...]) -> Table:
    table = parse_invocation(body, "text/csv", columns)
    assert isinstance(table, Table)
    return table


@pytest.mark.parametrize(
    ("kind", "text", "expected"),
    [
        ("float", "1e3", 1000.0),
        ("float", "", "nan"),
        ("double", " 2.5 ", 2.5),
        ("double", "nan", "nan"),
        ("integer", "3.0", 3),
        ("integer", " -4 ", -4),
        ("long", "1e2", 100),
        ("boolean", "TRUE", True),
        ("boolean", "False", False),
        ("boolean", "1", True),
        ("boolean", "0", False),
        ("string", "  padded  ", "padded"),
        ("string", "", ""),
        ("string", "nan", "nan"),
    ],
)
def test_csv_values_each_type_takes(kind: str, text: str, expected: object) -> None:
    # a second column: a lone empty field would be a blank line, which CSV readers skip
    table = csv_table(f"c,k\n{text},1\n".encode(), (Column("c", kind),))
    assert filled(table) == [[expected]]
    assert type(table.columns[0][0]) is type(expected) or expected == "nan"


@pytest.mark.parametrize(
    ("kind", "text", "message"),
    [
        ("long", "2.5", "column 'c' (row 1): expected long, got number 2.5"),
        ("integer", "x", "column 'c' (row 1): expected integer, got 'x'"),
        ("long", "", "column 'c' (row 1): null is not allowed for long"),
        ("float", "1,5", None),  # a quoted comma: one field, not a number
        ("float", "one", "column 'c' (row 1): expected float, got 'one'"),
        ("boolean", "yes", "column 'c' (row 1): expected boolean, got 'yes'"),
        ("boolean", "", "column 'c' (row 1): null is not allowed for boolean"),
        ("double", "-inf", "column 'c' (row 1): -Infinity is not allowed for double"),
        ("float", "Infinity", "column 'c' (row 1): Infinity is not allowed for float"),
        ("integer", "-Infinity", "column 'c' (row 1): -Infinity is not allowed for integer"),
        ("long", "inf", "column 'c' (row 1): Infinity is not allowed for long"),
        ("integer", "NaN", "column 'c' (row 1): NaN (a missing value) is not allowed for integer"),
    ],
)
def test_csv_values_a_type_refuses(kind: str, text: str, message: str | None) -> None:
    first = "true" if kind == "boolean" else "1"
    err = bad(f'c\n{first}\n"{text}"\n'.encode(), (Column("c", kind),), content_type="text/csv")
    assert err.status == 400
    assert err.message.startswith(message or "column 'c' (row 1): expected float, got '1,5'")


def test_csv_blank_lines_are_skipped_and_quoted_newlines_kept() -> None:
    cols = (Column("s", "string"), Column("n", "long"))
    table = csv_table(b'\r\ns,n\r\n\r\n"a\r\nb",1\r\n\n"c\nd",2\r\n\r\n', cols)
    assert table.n_rows == 2 and rows(table) == [["a\r\nb", 1], ["c\nd", 2]]


def test_csv_lines_may_end_in_a_lone_carriage_return() -> None:
    table = csv_table(b"s,n\ra,1\rb,2\r", (Column("s", "string"), Column("n", "long")))
    assert rows(table) == [["a", 1], ["b", 2]]


def test_long_integers_are_exact_in_csv_as_in_json() -> None:
    big = 2**53 + 1  # the first integer a float cannot hold
    cols = (Column("n", "long"), Column("i", "integer"))
    table = csv_table(f"n,i\n{big},-{big}\n".encode(), cols)
    assert rows(table) == [[big, -big]]
    assert rows(parse({"dataframe_records": [{"n": big, "i": -big}]}, cols)) == [[big, -big]]


def test_csv_messages() -> None:
    cols = (Column("s", "string"),)
    err = bad(b's\n"a"b\n', cols, content_type="text/csv")  # text after a closing quote
    assert err.message == "the body is not valid CSV: ',' expected after '\"'"
    err = bad(b"\r\n\n", cols, content_type="text/csv")
    assert err.message == "the CSV body is empty: expected a header line and rows"
    assert bad(b"s\n", cols, content_type="text/csv").message == "the request has no rows to score"
    err = bad(b"s,t\n1,2\n3\n", cols, content_type="text/csv")
    assert err.message == "CSV row 1 has 1 fields, the header has 2"
    err = bad(b"a\xff", cols, content_type="text/csv")
    assert err.message == (
        "the CSV body is not valid UTF-8: 'utf-8' codec can't decode byte 0xff in position 1:"
        " invalid start byte"
    )


# --- responses ---------------------------------------------------------------------------------------


def test_split_rows_cuts_lists_and_series_by_position() -> None:
    assert split_rows([1, 2, 3, 4], [1, 0, 3]) == [[1], [], [2, 3, 4]]
    series = pd.Series([1, 2, 3], index=[30.0, 20.0, 10.0])
    assert [p.tolist() for p in split_rows(series, [2, 1])] == [[1, 2], [3]]
    assert split_rows({"a": [1, 2], "b": [3, 4]}, [1, 1]) == [{"a": [1], "b": [3]}, {"a": [2], "b": [4]}]
    with pytest.raises(ValueError, match=r"^the model returned 3 predictions for 2 input rows$"):
        split_rows({"a": [1, 2], "b": [3, 4, 5]}, [2])


def test_encode_predictions_inside_a_dict_of_outputs() -> None:
    out = {
        "frame": pd.DataFrame({"a": [1]}),
        "series": pd.Series([2, 3], name="y"),
        "objects": np.array([1, "b"], dtype=object),
        "when": [pd.Timestamp("2024-01-02 03:04:05")],
    }
    assert orjson.loads(encode_predictions(out)) == {"predictions": {
        "frame": [{"a": 1}],
        "series": [{"y": 2}, {"y": 3}],
        "objects": [1, "b"],
        "when": ["2024-01-02T03:04:05"],
    }}
    with pytest.raises(TypeError) as info:
        encode_predictions([pd.Period("2024-01")])
    assert str(info.value.__cause__) == "cannot serialise Period to JSON"


class _NotAFrame:
    """Has to_dict like a pandas frame, but no iloc (as a polars frame): not taken for records."""

    def to_dict(self, **kwargs: object) -> object:
        raise AssertionError("not a pandas frame: to_dict must not be called")

    def tolist(self) -> list[int]:
        return [1, 2]


class _IndexedOnly:
    """Has iloc, but no to_dict: not taken for a pandas frame either."""

    iloc = None

    def tolist(self) -> list[int]:
        return [3]


def test_only_pandas_shaped_outputs_become_records() -> None:
    assert orjson.loads(encode_predictions(_NotAFrame())) == {"predictions": [1, 2]}
    assert orjson.loads(encode_predictions({"a": _NotAFrame(), "b": _IndexedOnly()})) == {
        "predictions": {"a": [1, 2], "b": [3]}
    }


def test_numpy_arrays_are_serialised_by_orjson_itself() -> None:
    # orjson's numpy support (the fast path) writes float32 at float32 precision; a detour
    # through tolist() would write 0.10000000149011612
    assert encode_predictions(np.array([0.1], dtype=np.float32)) == b'{"predictions":[0.1]}'


def test_encode_error_with_a_code() -> None:
    assert orjson.loads(encode_error("gone", "RESOURCE_DOES_NOT_EXIST")) == {
        "error_code": "RESOURCE_DOES_NOT_EXIST", "message": "gone"
    }
