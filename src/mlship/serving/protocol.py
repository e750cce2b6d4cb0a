"""MLflow's scoring protocol, parsed and validated without MLflow (pure functions).

A request body becomes either a `Table` (the model has a column signature of scalar types: every
value is checked against it here, so the batch sent to the model is always well-formed and a bad
request is refused with a message naming the column and row) or an `Unstructured` payload (tensor
signatures, no signature: MLflow's own parser handles those, one request at a time).

Accepted, as `mlflow models serve` does: `application/json` with exactly one of `dataframe_split`
(with `columns`), `dataframe_records`, `instances` or `inputs` (records, a dict of columns, or a
dict of scalars for one row); `text/csv` with a header line. Columns not in the signature are
ignored, as MLflow does; positional rows (lists without column names) are refused, as MLflow does.
The literal `NaN` (what Python's json.dumps writes for a float NaN, though not JSON) is a missing
value, like null; `Infinity` and `-Infinity` are refused, naming the column.
"""

from __future__ import annotations

import contextlib
import csv
import io
import json
import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import orjson

FORMATS = ("dataframe_split", "dataframe_records", "instances", "inputs")
SCALAR_KINDS = frozenset({"double", "float", "long", "integer", "boolean", "string"})
JSON = "application/json"
CSV = "text/csv"


class BadRequest(Exception):
    """The request cannot be scored as sent; `status` is the HTTP status to answer with."""

    def __init__(self, message: str, status: int = 400) -> None:
        super().__init__(message)
        self.message = message
        self.status = status


@dataclass(frozen=True, slots=True)
class Column:
    name: str
    kind: str  # one of SCALAR_KINDS
    required: bool = True


@dataclass(frozen=True, slots=True)
class Table:
    """Validated rows, stored column-major in signature order (cheap to concatenate)."""

    columns: tuple[list[Any], ...]
    n_rows: int


@dataclass(frozen=True, slots=True)
class Unstructured:
    """A payload for MLflow's parser: the JSON object's format entry, or the CSV text."""

    content_type: str  # JSON or CSV
    payload: dict[str, Any] | str


Parsed = Table | Unstructured


@dataclass(frozen=True, slots=True)
class JsonLiteral:
    """NaN, Infinity or -Infinity in a JSON body, until its column says what it may be."""

    text: str


_NAN = JsonLiteral("NaN")
_LITERALS = {"NaN": _NAN, "Infinity": JsonLiteral("Infinity"), "-Infinity": JsonLiteral("-Infinity")}
_INFINITIES = {math.inf: _LITERALS["Infinity"], -math.inf: _LITERALS["-Infinity"]}


def columns_from_signature(inputs: Sequence[dict[str, Any]] | None) -> tuple[Column, ...] | None:
    """The columns of an MLflow input schema (`Schema.to_dict()`), or None when the schema is
    absent or not a table of named scalar columns (then MLflow's parser is used)."""
    if not inputs:
        return None
    columns = []
    for spec in inputs:
        kind, name = spec.get("type"), spec.get("name")
        if kind not in SCALAR_KINDS or not isinstance(name, str) or not name:
            return None
        columns.append(Column(name, kind, bool(spec.get("required", True))))
    return tuple(columns)


def media_type(content_type: str | None) -> str:
    """The media type of a Content-Type header; only UTF-8 is accepted (415 otherwise)."""
    if not content_type:
        raise BadRequest(f"a Content-Type header is required: {JSON} or {CSV}", 415)
    kind, *params = (part.strip() for part in content_type.split(";"))
    kind = kind.lower()
    for param in params:
        key, _, value = param.partition("=")
        key = key.strip().lower()
        if key == "charset" and value.strip().strip('"').lower() not in ("utf-8", "utf8"):
            raise BadRequest(f"unsupported charset {value.strip()!r}: only UTF-8 is accepted", 415)
        if key != "charset":
            raise BadRequest(f"unsupported Content-Type parameter {key!r}", 415)
    if kind not in (JSON, CSV):
        raise BadRequest(f"unsupported Content-Type {kind!r}: send {JSON} or {CSV}", 415)
    return kind


def parse_invocation(
    body: bytes, content_type: str | None, columns: tuple[Column, ...] | None
) -> Parsed:
    """Parse and validate one /invocations request body."""
    kind = media_type(content_type)
    if kind == CSV:
        try:
            text = body.decode()  # UTF-8
        except UnicodeDecodeError as e:
            raise BadRequest(f"the CSV body is not valid UTF-8: {e}") from e
        return Unstructured(CSV, text) if columns is None else parse_csv(text, columns)
    try:
        doc = orjson.loads(body)
    except orjson.JSONDecodeError as e:
        doc = loads_with_literals(body, e, literals=columns is not None)
    fmt, data = _format_entry(doc)
    if columns is None:
        return Unstructured(JSON, {fmt: data})
    return _table_from_json(fmt, data, columns)


def loads_with_literals(body: bytes, error: orjson.JSONDecodeError, *, literals: bool) -> Any:
    """The slow path, only for a body orjson refused that may hold NaN/Infinity literals.
    `literals`: keep them as JsonLiteral for the column checks; else floats, for MLflow's parser."""
    if b"NaN" not in body and b"Infinity" not in body:
        raise BadRequest(f"the body is not valid JSON: {error}") from error
    try:
        return json.loads(body, parse_constant=_LITERALS.__getitem__ if literals else None)
    except ValueError as e:  # JSONDecodeError, or bytes that are not UTF-8
        raise BadRequest(f"the body is not valid JSON: {e}") from e


def _format_entry(doc: Any) -> tuple[str, Any]:
    if not isinstance(doc, dict):
        raise BadRequest(
            f"the JSON body must be an object with one of {', '.join(FORMATS)}; "
            f"got {json_type(doc)}"
        )
    present = [key for key in FORMATS if key in doc]
    unknown = sorted(set(doc) - set(FORMATS) - {"params"})
    if len(present) != 1:
        found = ", ".join(repr(k) for k in doc) or "none"
        raise BadRequest(
            f"the JSON body must have exactly one of {', '.join(FORMATS)}; found keys: {found}"
        )
    if unknown:
        raise BadRequest(f"unexpected top-level JSON keys: {', '.join(map(repr, unknown))}")
    if doc.get("params"):
        raise BadRequest("'params' are not supported by this model server")
    return present[0], doc[present[0]]


def _table_from_json(fmt: str, data: Any, columns: tuple[Column, ...]) -> Table:
    if fmt == "dataframe_split":
        return _table_from_split(data, columns)
    if fmt == "dataframe_records":
        return _table_from_records(data, columns, fmt)
    # instances / inputs (TF-serving style): records, a dict of columns, or one row as a dict
    if isinstance(data, dict):
        return _table_from_column_dict(data, columns, fmt)
    if isinstance(data, list) and data and not isinstance(data[0], dict):
        raise BadRequest(
            f"'{fmt}' rows must name their columns (a list of objects or an object of columns); "
            f"got a list of {json_type(data[0])}s, but the model expects columns "
            f"{quoted_names(columns)}"
        )
    return _table_from_records(data, columns, fmt)


def _table_from_split(data: Any, columns: tuple[Column, ...]) -> Table:
    if not isinstance(data, dict):
        raise BadRequest(f"'dataframe_split' must be an object, got {json_type(data)}")
    names, rows = data.get("columns"), data.get("data")
    if not isinstance(names, list) or not all(isinstance(n, str) for n in names):
        raise BadRequest(
            "'dataframe_split' needs 'columns', a list of column names for the values in 'data'"
        )
    if not isinstance(rows, list):
        raise BadRequest("'dataframe_split' needs 'data', a list of rows")
    if len(set(names)) != len(names):
        raise BadRequest(f"'dataframe_split' has duplicate column names: {names}")
    position = {name: i for i, name in enumerate(names)}
    _check_present(columns, position)
    width = len(names)
    for r, row in enumerate(rows):
        if not isinstance(row, list) or len(row) != width:
            got = f"{len(row)} values" if isinstance(row, list) else json_type(row)
            raise BadRequest(
                f"'dataframe_split' row {r} must be a list of {width} values "
                f"(one per column), got {got}"
            )
    out = []
    for col in columns:
        i = position.get(col.name)
        if i is None:
            out.append(fill_missing(col, len(rows)))
        else:
            out.append([coerce_value(col, row[i], r) for r, row in enumerate(rows)])
    return table_of(out, len(rows))


def _table_from_records(data: Any, columns: tuple[Column, ...], fmt: str) -> Table:
    if not isinstance(data, list):
        raise BadRequest(f"'{fmt}' must be a list of objects, got {json_type(data)}")
    for r, record in enumerate(data):
        if not isinstance(record, dict):
            raise BadRequest(f"'{fmt}' row {r} must be an object, got {json_type(record)}")
        missing = [c.name for c in columns if c.required and c.name not in record]
        if missing:
            raise BadRequest(f"row {r} is missing required column(s) {quoted(missing)}")
    out = [
        [
            coerce_value(col, record[col.name], r) if col.name in record else _absent(col)
            for r, record in enumerate(data)
        ]
        for col in columns
    ]
    return table_of(out, len(data))


def _table_from_column_dict(data: dict[str, Any], columns: tuple[Column, ...], fmt: str) -> Table:
    _check_present(columns, data)
    wanted = [data[c.name] for c in columns if c.name in data]
    if not wanted:
        raise BadRequest(f"'{fmt}' has none of the model's columns {quoted_names(columns)}")
    as_lists = [isinstance(v, list) for v in wanted]
    if all(as_lists):
        n_rows = len(wanted[0])
        for col in columns:
            if col.name in data and len(data[col.name]) != n_rows:
                raise BadRequest(
                    f"'{fmt}' columns have different lengths: {col.name!r} has "
                    f"{len(data[col.name])} values, expected {n_rows}"
                )
        values = {name: v for name, v in data.items()}
    elif not any(as_lists):  # one row given as {column: scalar}
        n_rows = 1
        values = {name: [v] for name, v in data.items()}
    else:
        raise BadRequest(
            f"'{fmt}' must map every column to a list of values, or every column to one value"
        )
    out = [
        [coerce_value(col, v, r) for r, v in enumerate(values[col.name])]
        if col.name in values
        else fill_missing(col, n_rows)
        for col in columns
    ]
    return table_of(out, n_rows)


def parse_csv(text: str, columns: tuple[Column, ...]) -> Table:
    """CSV with a header line naming the columns (as written by `DataFrame.to_csv(index=False)`)."""
    try:
        lines = list(csv.reader(io.StringIO(text, newline=""), strict=True))
    except csv.Error as e:
        raise BadRequest(f"the body is not valid CSV: {e}") from e
    lines = [line for line in lines if line]  # csv yields [] for blank lines
    if not lines:
        raise BadRequest("the CSV body is empty: expected a header line and rows")
    header, rows = lines[0], lines[1:]
    position = {name.strip(): i for i, name in enumerate(header)}
    _check_present(columns, position)
    for r, row in enumerate(rows):
        if len(row) != len(header):
            raise BadRequest(f"CSV row {r} has {len(row)} fields, the header has {len(header)}")
    out = []
    for col in columns:
        i = position.get(col.name)
        if i is None:
            out.append(fill_missing(col, len(rows)))
        else:
            out.append([coerce_value(col, _from_csv(col, row[i], r), r) for r, row in enumerate(rows)])
    return table_of(out, len(rows))


def _from_csv(col: Column, text: str, row: int) -> Any:
    """A CSV field as the JSON value it stands for (`coerce_value` then checks it like one)."""
    text = text.strip()
    if col.kind == "string":
        return text
    if text == "":
        return None
    try:
        if col.kind == "boolean":
            return {"true": True, "false": False, "1": True, "0": False}[text.lower()]
        if col.kind in ("long", "integer"):
            with contextlib.suppress(ValueError):  # else a float ("3.0", "1e2", "2.5", "inf")
                return int(text)  # exact, however long (a float keeps 53 bits)
        number = float(text)
    except (ValueError, KeyError):
        raise BadRequest(
            f"column {col.name!r} (row {row}): expected {col.kind}, got {text!r}"
        ) from None
    return number if math.isfinite(number) else _non_finite(number)


def _non_finite(number: float) -> JsonLiteral:
    return _NAN if math.isnan(number) else _INFINITIES[number]


def coerce_value(col: Column, value: Any, row: int) -> Any:
    """Check one JSON value against its column's type; ints are accepted for floats and
    whole floats for ints (JSON does not tell them apart reliably); bools are not numbers."""
    kind, vtype = col.kind, type(value)
    if kind in ("double", "float"):
        if vtype is float or vtype is int:
            return float(value)
        if value is None or value is _NAN:
            return math.nan  # a missing value; the pipeline's imputer (or NaN support) decides
    elif kind in ("long", "integer"):
        if vtype is int:
            return value
        if vtype is float and value.is_integer():
            return int(value)
    elif kind == "boolean":
        if vtype is bool:
            return value
    elif kind == "string":
        if vtype is str:
            return value
        if (value is None or value is _NAN) and not col.required:
            return None
    if value is None:
        raise BadRequest(f"column {col.name!r} (row {row}): null is not allowed for {kind}")
    if value is _NAN:
        raise BadRequest(
            f"column {col.name!r} (row {row}): NaN (a missing value) is not allowed for {kind}"
        )
    if vtype is JsonLiteral:
        # Not a number any model input takes (scikit-learn refuses it); NaN is a missing value.
        raise BadRequest(
            f"column {col.name!r} (row {row}): {value.text} is not allowed for {kind}:"
            " send a finite number, or NaN or null for a missing value"
        )
    # orjson would write a JsonLiteral (a dataclass) as {"text": ...}: passed to _literal_text instead
    shown = orjson.dumps(
        value, default=_literal_text, option=orjson.OPT_PASSTHROUGH_DATACLASS
    ).decode()[:40]
    raise BadRequest(
        f"column {col.name!r} (row {row}): expected {kind}, got {json_type(value)} {shown}"
    )


def _literal_text(value: JsonLiteral) -> str:
    # orjson's default=: a JsonLiteral is the one value in parsed JSON orjson does not write itself
    return value.text


def _check_present(columns: tuple[Column, ...], given: Any) -> None:
    missing = [c.name for c in columns if c.required and c.name not in given]
    if missing:
        raise BadRequest(f"missing required column(s) {quoted(missing)}")


def _absent(col: Column) -> Any:
    # The value of an optional column the request leaves out (required ones were checked).
    return math.nan if col.kind in ("double", "float") else None


def fill_missing(col: Column, n_rows: int) -> list[Any]:
    return [_absent(col)] * n_rows


def table_of(columns: list[list[Any]], n_rows: int) -> Table:
    if n_rows == 0:
        raise BadRequest("the request has no rows to score")
    return Table(tuple(columns), n_rows)


def quoted_names(columns: tuple[Column, ...]) -> str:
    return quoted([c.name for c in columns])


def quoted(names: Sequence[str]) -> str:
    return ", ".join(repr(n) for n in names)


def json_type(value: Any) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "boolean"
    if isinstance(value, int | float):
        return "number"
    if isinstance(value, str):
        return "string"
    if isinstance(value, list):
        return "array"
    if isinstance(value, dict):
        return "object"
    return str(value.text)  # a JsonLiteral: nothing else comes out of parsed JSON


# --- responses -------------------------------------------------------------------------------


def split_rows(predictions: Any, sizes: Sequence[int]) -> list[Any]:
    """Cut one model output for a concatenated batch back into per-request outputs.

    Handles what pyfunc models return: numpy arrays, pandas DataFrames/Series, lists, and
    dicts of those (one entry per output)."""
    total = sum(sizes)
    if isinstance(predictions, dict):
        parts = {key: split_rows(value, sizes) for key, value in predictions.items()}
        return [{key: parts[key][i] for key in parts} for i in range(len(sizes))]
    n = len(predictions)
    if n != total:
        raise ValueError(f"the model returned {n} predictions for {total} input rows")
    cut = predictions.iloc if hasattr(predictions, "iloc") else predictions
    out, start = [], 0
    for size in sizes:
        out.append(cut[start : start + size])
        start += size
    return out


def _default(value: Any) -> Any:
    # orjson calls this for what it cannot serialise natively (e.g. object arrays, pandas types).
    if hasattr(value, "to_dict") and hasattr(value, "iloc"):
        return _jsonable(value)
    if hasattr(value, "tolist"):  # numpy arrays and scalars
        return value.tolist()
    if hasattr(value, "isoformat"):
        return value.isoformat()
    raise TypeError(f"cannot serialise {type(value).__name__} to JSON")


def _jsonable(predictions: Any) -> Any:
    # Same shapes as MLflow's _get_jsonable_obj: frames and series become lists of records.
    if hasattr(predictions, "to_frame"):  # Series
        predictions = predictions.to_frame()
    if hasattr(predictions, "to_dict") and hasattr(predictions, "iloc"):
        return predictions.to_dict(orient="records")
    return predictions


def encode_predictions(predictions: Any) -> bytes:
    """`{"predictions": ...}` as MLflow answers it (NaN becomes null, which is valid JSON)."""
    return orjson.dumps(
        {"predictions": _jsonable(predictions)},
        default=_default,
        option=orjson.OPT_SERIALIZE_NUMPY,
    )


def encode_error(message: str, error_code: str = "BAD_REQUEST") -> bytes:
    """The error body shape of MLflow's scoring server."""
    return orjson.dumps({"error_code": error_code, "message": message})
