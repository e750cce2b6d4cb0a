"""The prediction and label schemas (mlship.events.schema): every check with its exact message,
and the boundaries (docs/events.md says the same for people)."""

from __future__ import annotations

import math
import re

import orjson
import pytest

from mlship.events import schema
from mlship.events.schema import BadEvent

pytestmark = pytest.mark.unit

C, R = schema.CLASSIFICATION, schema.REGRESSION


def fails(message: str) -> pytest.RaisesContext[BadEvent]:
    return pytest.raises(BadEvent, match=f"^{re.escape(message)}$")


# --- request ids and keys -----------------------------------------------------------------------


def test_the_key_is_request_id_slash_row_in_utf8() -> None:
    assert schema.key("abc", 0) == b"abc/0"
    assert schema.key("order-17:x", 12) == b"order-17:x/12"


@pytest.mark.parametrize("good", ["a", "x" * 128, "~!#$%&*+-.:;<=>?@[]^_`{|}", "3f0c9e2a" * 4])
def test_request_ids_that_can_key_an_event(good: str) -> None:
    assert schema.check_request_id(good) == good


@pytest.mark.parametrize(
    ("bad", "message"),
    [
        ("", "request_id must be a non-empty string, got ''"),
        (None, "request_id must be a non-empty string, got None"),
        (17, "request_id must be a non-empty string, got 17"),
        (["a"], "request_id must be a non-empty string, got ['a']"),
        ("x" * 129, "request_id is 129 characters long; the limit is 128"),
        ("a/b", "request_id 'a/b' must be printable ASCII without spaces or '/'"),
        ("a b", "request_id 'a b' must be printable ASCII without spaces or '/'"),
        ("ä", "request_id 'ä' must be printable ASCII without spaces or '/'"),
        ("a\tb", "request_id 'a\\tb' must be printable ASCII without spaces or '/'"),
        ("a\nb", "request_id 'a\\nb' must be printable ASCII without spaces or '/'"),
        ("/", "request_id '/' must be printable ASCII without spaces or '/'"),
    ],
)
def test_request_ids_that_cannot(bad: object, message: str) -> None:
    with fails(message):
        schema.check_request_id(bad)


def test_a_long_value_is_shown_cut_to_60_characters() -> None:
    with pytest.raises(BadEvent) as info:
        schema.check_request_id(123456789 * 10**60)
    shown = str(info.value).removeprefix("request_id must be a non-empty string, got ")
    assert len(shown) == 60 and shown.endswith("...")


# --- predictions --------------------------------------------------------------------------------


def one(data: bytes) -> schema.Prediction:
    [event] = schema.read_predictions(data)
    return event


def test_a_prediction_event_round_trips() -> None:
    data = schema.prediction("r1", 2, 1796127118.25, "iris", "3", {"a": 1.5, "b": "x"}, 1)
    assert orjson.loads(data) == {
        "schema": 1, "request_id": "r1", "row": 2, "ts": 1796127118.25, "model": "iris",
        "version": "3", "inputs": {"a": 1.5, "b": "x"}, "prediction": 1,
    }  # fmt: skip
    assert one(data) == schema.Prediction(
        "r1", 2, 1796127118.25, "iris", "3", {"a": 1.5, "b": "x"}, 1
    )


def test_a_message_of_many_prediction_events_round_trips() -> None:
    items = [schema.prediction_item("r1", 0, 1.5, {"a": 1.5}, 1),
             schema.prediction_item("r2", 3, 2.5, {"a": None}, "x")]  # fmt: skip
    data = schema.predictions_message("iris", "3", items)
    assert orjson.loads(data) == {
        "schema": 2, "model": "iris", "version": "3", "predictions": [
            {"request_id": "r1", "row": 0, "ts": 1.5, "inputs": {"a": 1.5}, "prediction": 1},
            {"request_id": "r2", "row": 3, "ts": 2.5, "inputs": {"a": None}, "prediction": "x"},
        ],
    }  # fmt: skip
    assert schema.read_predictions(data) == [
        schema.Prediction("r1", 0, 1.5, "iris", "3", {"a": 1.5}, 1),
        schema.Prediction("r2", 3, 2.5, "iris", "3", {"a": None}, "x"),
    ]


@pytest.mark.parametrize(
    ("message", "error"),
    [
        ({"predictions": []}, "predictions must be a non-empty list of events, got []"),
        ({"predictions": None}, "predictions must be a non-empty list of events, got None"),
        ({"predictions": [1]}, "prediction 0: must be a JSON object, got 1"),
        ({"predictions": [{"request_id": "r", "row": 0, "ts": 1, "inputs": {}}, {"row": 0}]},
         "prediction 1: request_id must be a non-empty string, got None"),
        ({"model": None, "predictions": []}, "model must be a non-empty string, got None"),
        ({"version": 3, "predictions": []}, "version must be a non-empty string, got 3"),
    ],
)
def test_a_message_of_many_with_one_bad_event_is_refused_naming_it(message, error) -> None:
    with fails(error):
        schema.read_predictions(orjson.dumps({"schema": 2, "model": "m", "version": "1", **message}))


def test_non_finite_inputs_are_written_as_null_and_numpy_is_welcome() -> None:
    import numpy as np

    data = schema.prediction("r", 0, 1.0, "m", "1", {"a": math.nan, "b": np.float64(2.5)},
                             np.int64(3))  # fmt: skip
    event = one(data)
    assert event.inputs == {"a": None, "b": 2.5} and event.prediction == 3


def _event(**change: object) -> bytes:
    base: dict[str, object] = {"schema": 1, "request_id": "r", "row": 0, "ts": 1.0, "model": "m",
                               "version": "1", "inputs": {}, "prediction": 0}  # fmt: skip
    base.update(change)
    return orjson.dumps({k: v for k, v in base.items() if v is not ...})


@pytest.mark.parametrize(
    ("data", "message"),
    [
        (b"{", "a prediction event is not valid JSON: unexpected end of data: line 1 column 2 "
         "(char 1)"),
        (b"[1]", "a prediction event must be a JSON object, got [1]"),
        (_event(schema=3), "schema version 3 is not supported (this reader knows 1 and 2)"),
        (_event(schema=...), "schema version None is not supported (this reader knows 1 and 2)"),
        (_event(schema=True), "schema version True is not supported (this reader knows 1 and 2)"),
        (_event(schema="1"), "schema version '1' is not supported (this reader knows 1 and 2)"),
        (_event(request_id="a/b"), "request_id 'a/b' must be printable ASCII without spaces or '/'"),
        (_event(row=-1), "row must be an integer >= 0, got -1"),
        (_event(row=1.0), "row must be an integer >= 0, got 1.0"),
        (_event(row=True), "row must be an integer >= 0, got True"),
        (_event(row=...), "row must be an integer >= 0, got None"),
        (_event(ts="now"), "ts must be seconds since the epoch (a number), got 'now'"),
        (_event(ts=False), "ts must be seconds since the epoch (a number), got False"),
        (_event(ts=...), "ts must be seconds since the epoch (a number), got None"),
        (_event(model=""), "model must be a non-empty string, got ''"),
        (_event(version=3), "version must be a non-empty string, got 3"),
        (_event(inputs=[1]), "inputs must be an object of column: value, got [1]"),
    ],
)
def test_a_prediction_event_that_breaks_the_schema(data: bytes, message: str) -> None:
    with fails(message):
        one(data)


def test_a_prediction_reader_takes_added_fields_and_any_prediction() -> None:
    event = one(_event(extra="added later", prediction={"p": [0.1, 0.9]}))
    assert event.prediction == {"p": [0.1, 0.9]}
    assert one(_event(prediction=...)).prediction is None
    assert one(_event(row=0, ts=0)).ts == 0.0  # the epoch is a time


# --- labels per task ----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("value", "task", "checked"),
    [
        (0, C, 0), (7, C, 7), (-1, C, -1), ("setosa", C, "setosa"), ("", C, ""), (True, C, True),
        (2.0, C, 2), (-0.0, C, 0),
        (1.5, R, 1.5), (3, R, 3.0), (-2.25, R, -2.25), (0, R, 0.0),
    ],
)
def test_labels_fit_for_the_task(value: object, task: str, checked: object) -> None:
    got = schema.check_label(value, task)
    assert got == checked and type(got) is type(checked)


@pytest.mark.parametrize(
    ("value", "task", "message"),
    [
        (1.5, C, "label 1.5 is not a class: a classification model takes an integer, string or "
         "boolean label"),
        (None, C, "label None is not a class: a classification model takes an integer, string or "
         "boolean label"),
        ([1], C, "label [1] is not a class: a classification model takes an integer, string or "
         "boolean label"),
        (math.nan, C, "label nan is not a class: a classification model takes an integer, string "
         "or boolean label"),
        ("1.5", R, "label '1.5' is not a finite number, which a regression model needs"),
        (True, R, "label True is not a finite number, which a regression model needs"),
        (math.inf, R, "label inf is not a finite number, which a regression model needs"),
        (math.nan, R, "label nan is not a finite number, which a regression model needs"),
        (None, R, "label None is not a finite number, which a regression model needs"),
        (1, "ranking", "unknown task 'ranking'; one of: classification, regression"),
    ],
)
def test_labels_unfit_for_the_task(value: object, task: str, message: str) -> None:
    with fails(message):
        schema.check_label(value, task)


# --- feedback bodies ----------------------------------------------------------------------------


def feedback(body: object, task: str = C) -> list[schema.Label]:
    data = body if isinstance(body, bytes) else orjson.dumps(body)
    return schema.feedback(data, "iris", task, 1796127200.0)


def test_one_label_object() -> None:
    assert feedback({"request_id": "r", "label": 1}) == [schema.Label("r", 0, 1, 1796127200.0, "iris")]


def test_a_list_with_rows_times_and_a_schema_version() -> None:
    labels = feedback([
        {"request_id": "r", "row": 3, "label": "b", "ts": 5, "schema": 1},
        {"request_id": "s", "label": 2.0, "ts": None},
    ])  # fmt: skip
    assert labels == [
        schema.Label("r", 3, "b", 5.0, "iris"),
        schema.Label("s", 0, 2, 1796127200.0, "iris"),  # ts null: the time of receipt
    ]


def test_the_model_is_servings_not_the_senders() -> None:
    (label,) = feedback({"request_id": "r", "label": 1, "model": "something-else"})
    assert label.model == "iris"


@pytest.mark.parametrize(
    ("body", "message"),
    [
        (b"{oops", "the body is not valid JSON: unexpected character, expected a string key: line 1 "
         "column 2 (char 1)"),
        (b"", "the body is not valid JSON: Input is a zero-length, empty document: line 1 column "
         "1 (char 0)"),
        ([], "the body is an empty list; send one label or a list of them"),
        ({}, "a label needs a 'label' field"),
        ({"request_id": "r"}, "a label needs a 'label' field"),
        ({"label": 1}, "request_id must be a non-empty string, got None"),
        ({"request_id": "r", "label": 1, "score": 1, "id": 2},
         "unknown field(s) id, score; a label has request_id, row, label"),
        ({"request_id": "r", "label": 1, "schema": 2},
         "schema version 2 is not supported (this reader knows 1)"),
        ({"request_id": "r", "label": 1, "row": "0"}, "row must be an integer >= 0, got '0'"),
        ({"request_id": "r", "label": 1, "ts": "today"},
         "ts must be seconds since the epoch (a number), got 'today'"),
        ({"request_id": "r", "label": 1.5}, "label 1.5 is not a class: a classification model "
         "takes an integer, string or boolean label"),
        ("r", "a label must be a JSON object, got 'r'"),
        (7, "a label must be a JSON object, got 7"),
    ],
)
def test_a_bad_body_says_why(body: object, message: str) -> None:
    with fails(message):
        feedback(body)


def test_in_a_list_the_message_names_the_item_and_nothing_is_taken() -> None:
    body = [{"request_id": "a", "label": 1}, {"request_id": "b", "label": 2}, [1]]
    with fails("item 2: a label must be a JSON object, got [1]"):
        feedback(body)
    with fails("item 0: label 'x' is not a finite number, which a regression model needs"):
        feedback([{"request_id": "a", "label": "x"}], task=R)
    with fails("item 1: request_id is 129 characters long; the limit is 128"):
        feedback([{"request_id": "a", "label": 1}, {"request_id": "x" * 129, "label": 1}])


def test_a_label_event_round_trips_and_its_reader_needs_every_field() -> None:
    (label,) = feedback({"request_id": "r", "row": 1, "label": 0})
    assert orjson.loads(label.encode()) == {
        "schema": 1, "request_id": "r", "row": 1, "label": 0, "ts": 1796127200.0, "model": "iris",
    }  # fmt: skip
    assert schema.read_label(label.encode()) == label
    produced = {"schema": 1, "request_id": "r", "label": 0, "ts": 1.0, "model": "iris"}
    assert schema.read_label(orjson.dumps(produced)).row == 0  # row defaults to 0 here too
    for field, message in [
        ("label", "a label needs a 'label' field"),
        ("ts", "ts must be seconds since the epoch (a number), got None"),
        ("model", "model must be a non-empty string, got None"),
        ("schema", "schema version None is not supported (this reader knows 1)"),
    ]:
        with fails(message):
            schema.read_label(orjson.dumps({k: v for k, v in produced.items() if k != field}))
    with fails("a label event must be a JSON object, got 'x'"):
        schema.read_label(b'"x"')


def test_a_shown_value_is_clipped_only_past_60_characters() -> None:
    from mlship.events.schema import _show

    assert _show("x" * 58) == repr("x" * 58)  # 60 characters with its quotes: whole
    assert _show("x" * 59) == repr("x" * 59)[:57] + "..."
