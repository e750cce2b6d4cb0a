"""The two event streams of production, said once: what serving produces for every scored row, and
the ground-truth labels that arrive later (through serving's `POST /feedback`, or produced straight
to the topic by any system). docs/events.md is the reference for people; this module is the one
definition code uses (serving writes with it, the record reads with it).

Both are JSON objects, UTF-8. `schema` is the format's version: a reader refuses a version it does
not know, and fields are only ever added within a version.

    predictions {"schema": 2, "model": "iris", "version": "3", "predictions": [
                   {"request_id": "…", "row": 0, "ts": 1796127118.2,
                    "inputs": {"sepal length (cm)": 5.1, …}, "prediction": 0}, …]}
    label       {"schema": 1, "request_id": "…", "row": 0, "label": 0,
                 "ts": 1796127200.0, "model": "iris"}

Serving writes the prediction events of many requests as one message (version 2, no key): one
message per row cost the broker and the pod as much as the rest of the request did. Version 1,
one prediction event per message keyed `<request_id>/<row>` (the fields of a v2 item plus `model`
and `version`), is still read. A label is one message keyed `<request_id>/<row>`.

`row` is the row's index in its request (0 for a one-row request); `ts` is seconds since the epoch
(the time of the answer, or the time the label was received). A label's `row` defaults to 0 and
its `ts` to the time it is received; `model` is set by serving from the Service it was posted to.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import orjson

from mlship import names

SCHEMA_VERSION = 1  # labels, and single prediction events
PREDICTIONS_VERSION = 2  # a message of many prediction events
PREDICTIONS_TOPIC = names.TOPIC_PREDICTIONS
LABELS_TOPIC = names.TOPIC_LABELS
MAX_REQUEST_ID = 128
CLASSIFICATION = "classification"
REGRESSION = "regression"
TASKS = (CLASSIFICATION, REGRESSION)


class BadEvent(ValueError):
    """An event or label that does not follow the schema, with the reason in the message."""


def key(request_id: str, row: int) -> bytes:
    return f"{request_id}/{row}".encode()


def check_request_id(value: object) -> str:
    """A request id is 1-128 printable ASCII characters without '/' (it is part of the key)."""
    if not isinstance(value, str) or not value:
        raise BadEvent(f"request_id must be a non-empty string, got {_show(value)}")
    if len(value) > MAX_REQUEST_ID:
        raise BadEvent(f"request_id is {len(value)} characters long; the limit is {MAX_REQUEST_ID}")
    if not value.isascii() or not value.isprintable() or "/" in value or " " in value:
        raise BadEvent(
            f"request_id {_show(value)} must be printable ASCII without spaces or '/'"
        )
    return value


# --- predictions --------------------------------------------------------------------------------


def prediction(
    request_id: str,
    row: int,
    ts: float,
    model: str,
    version: str,
    inputs: dict[str, Any],
    value: Any,
) -> bytes:
    """One prediction event as a version-1 message (serving writes version 2; this stays for
    tools and tests). Non-finite floats in inputs are written as null (JSON has no NaN), as
    serving's answers do."""
    return orjson.dumps(
        {
            "schema": SCHEMA_VERSION,
            "request_id": request_id,
            "row": row,
            "ts": ts,
            "model": model,
            "version": version,
            "inputs": inputs,
            "prediction": value,
        },
        option=orjson.OPT_SERIALIZE_NUMPY,
    )


@dataclass(frozen=True, slots=True)
class Prediction:
    request_id: str
    row: int
    ts: float
    model: str
    version: str
    inputs: dict[str, Any]
    prediction: Any


def prediction_item(
    request_id: str, row: int, ts: float, inputs: dict[str, Any], value: Any
) -> bytes:
    """One prediction event of a version-2 message, encoded (model and version are the
    message's). Non-finite floats in inputs are written as null, as in `prediction`."""
    return orjson.dumps(
        {"request_id": request_id, "row": row, "ts": ts, "inputs": inputs, "prediction": value},
        option=orjson.OPT_SERIALIZE_NUMPY,
    )


def predictions_message(model: str, version: str, items: Sequence[bytes]) -> bytes:
    """A version-2 message of `prediction_item`s (at least one), all answered by `version`."""
    head = orjson.dumps({"schema": PREDICTIONS_VERSION, "model": model, "version": version})
    return head[:-1] + b',"predictions":[' + b",".join(items) + b"]}"


def read_predictions(data: bytes) -> list[Prediction]:
    """The prediction events of one message: version 2 (many) or version 1 (one). A message with
    one bad event is refused whole, naming the event (serving writes them; none is expected)."""
    obj = _object(data, "prediction")
    version = obj.get("schema")
    if isinstance(version, bool) or version not in (SCHEMA_VERSION, PREDICTIONS_VERSION):
        raise BadEvent(
            f"schema version {_show(version)} is not supported (this reader knows "
            f"{SCHEMA_VERSION} and {PREDICTIONS_VERSION})"
        )
    model, model_version = _text(obj, "model"), _text(obj, "version")
    if version == SCHEMA_VERSION:
        return [_prediction(obj, model, model_version)]
    items = obj.get("predictions")
    if not isinstance(items, list) or not items:
        raise BadEvent(f"predictions must be a non-empty list of events, got {_show(items)}")
    out = []
    for i, item in enumerate(items):
        if not isinstance(item, dict):
            raise BadEvent(f"prediction {i}: must be a JSON object, got {_show(item)}")
        try:
            out.append(_prediction(item, model, model_version))
        except BadEvent as e:
            raise BadEvent(f"prediction {i}: {e}") from None
    return out


def _prediction(obj: dict[str, Any], model: str, version: str) -> Prediction:
    return Prediction(
        request_id=check_request_id(obj.get("request_id")),
        row=_row(obj.get("row")),
        ts=_ts(obj.get("ts")),
        model=model,
        version=version,
        inputs=_inputs(obj.get("inputs")),
        prediction=obj.get("prediction"),
    )


# --- labels -------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Label:
    request_id: str
    row: int
    label: Any
    ts: float
    model: str

    def encode(self) -> bytes:
        return orjson.dumps(
            {
                "schema": SCHEMA_VERSION,
                "request_id": self.request_id,
                "row": self.row,
                "label": self.label,
                "ts": self.ts,
                "model": self.model,
            }
        )


def check_label(value: object, task: str) -> Any:
    """A label fit for the task: a class (integer, string or boolean) for classification, a finite
    number for regression. Floats with an integral value count as classes (5.0 is class 5)."""
    if task == CLASSIFICATION:
        if isinstance(value, bool | str | int):
            return value
        if isinstance(value, float) and value.is_integer():
            return int(value)
        raise BadEvent(
            f"label {_show(value)} is not a class: a classification model takes an integer, "
            "string or boolean label"
        )
    if task == REGRESSION:
        if isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value):
            return float(value)
        raise BadEvent(
            f"label {_show(value)} is not a finite number, which a regression model needs"
        )
    raise BadEvent(f"unknown task {task!r}; one of: {', '.join(TASKS)}")


def label_from(obj: object, model: str, task: str, received: float) -> Label:
    """A label from one feedback object `{request_id, row?, label, ts?}` (as posted to /feedback
    or produced to the labels topic), checked against the model's task."""
    if not isinstance(obj, dict):
        raise BadEvent(f"a label must be a JSON object, got {_show(obj)}")
    unknown = sorted(set(obj) - {"schema", "request_id", "row", "label", "ts", "model"})
    if unknown:
        raise BadEvent(f"unknown field(s) {', '.join(unknown)}; a label has request_id, row, label")
    if "schema" in obj:
        _version(obj)
    if "label" not in obj:
        raise BadEvent("a label needs a 'label' field")
    return Label(
        request_id=check_request_id(obj.get("request_id")),
        row=_row(obj.get("row", 0)),
        label=check_label(obj["label"], task),
        ts=_ts(obj["ts"]) if obj.get("ts") is not None else received,
        model=model,
    )


def feedback(body: bytes, model: str, task: str, received: float) -> list[Label]:
    """The labels of a /feedback body: one label object, or a JSON array of them (at least one).
    Every problem names the item it is in; nothing is accepted unless all items are valid."""
    try:
        obj = orjson.loads(body)
    except orjson.JSONDecodeError as e:
        raise BadEvent(f"the body is not valid JSON: {e}") from None
    items = obj if isinstance(obj, list) else [obj]
    if not items:
        raise BadEvent("the body is an empty list; send one label or a list of them")
    labels = []
    for i, item in enumerate(items):
        try:
            labels.append(label_from(item, model, task, received))
        except BadEvent as e:
            raise BadEvent(f"item {i}: {e}" if isinstance(obj, list) else str(e)) from None
    return labels


def read_label(data: bytes) -> Label:
    obj = _object(data, "label")
    _version(obj)
    if "label" not in obj:
        raise BadEvent("a label needs a 'label' field")
    return Label(
        request_id=check_request_id(obj.get("request_id")),
        row=_row(obj.get("row", 0)),
        label=obj["label"],
        ts=_ts(obj.get("ts")),
        model=_text(obj, "model"),
    )


# --- field checks -------------------------------------------------------------------------------


def _object(data: bytes, what: str) -> dict[str, Any]:
    try:
        obj = orjson.loads(data)
    except orjson.JSONDecodeError as e:
        raise BadEvent(f"a {what} event is not valid JSON: {e}") from None
    if not isinstance(obj, dict):
        raise BadEvent(f"a {what} event must be a JSON object, got {_show(obj)}")
    return obj


def _version(obj: dict[str, Any]) -> None:
    version = obj.get("schema")
    if version != SCHEMA_VERSION or isinstance(version, bool):
        raise BadEvent(f"schema version {_show(version)} is not supported (this reader knows 1)")


def _row(value: object) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        raise BadEvent(f"row must be an integer >= 0, got {_show(value)}")
    return value


def _ts(value: object) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
        raise BadEvent(f"ts must be seconds since the epoch (a number), got {_show(value)}")
    return float(value)


def _text(obj: dict[str, Any], name: str) -> str:
    value = obj.get(name)
    if not isinstance(value, str) or not value:
        raise BadEvent(f"{name} must be a non-empty string, got {_show(value)}")
    return value


def _inputs(value: object) -> dict[str, Any]:
    if not isinstance(value, dict):
        raise BadEvent(f"inputs must be an object of column: value, got {_show(value)}")
    return value


def _show(value: object) -> str:
    text = repr(value)
    return text if len(text) <= 60 else text[:57] + "..."
