"""metav1.Condition handling: transitions, preserved timestamps, validation."""

from __future__ import annotations

import datetime as dt
import time

import pytest
from mlship_operator import conditions as c

pytestmark = pytest.mark.unit

T0, T1 = "2026-01-01T00:00:00Z", "2026-01-01T00:05:00Z"


def test_adding_a_condition_sets_every_field() -> None:
    conds = c.set_condition(
        None, type_=c.READY, status=True, reason="Serving", message="ok", generation=3, now=T0
    )
    assert conds == [{
        "type": "Ready", "status": "True", "observedGeneration": 3,
        "lastTransitionTime": T0, "reason": "Serving", "message": "ok",
    }]


def test_same_status_keeps_the_transition_time_but_updates_the_rest() -> None:
    first = c.set_condition(
        [], type_=c.READY, status=False, reason="A", message="m1", generation=1, now=T0
    )
    second = c.set_condition(
        first, type_=c.READY, status="False", reason="B", message="m2", generation=2, now=T1
    )
    assert second[0]["lastTransitionTime"] == T0
    assert (second[0]["reason"], second[0]["message"], second[0]["observedGeneration"]) == (
        "B", "m2", 2
    )


def test_changed_status_moves_the_transition_time() -> None:
    first = c.set_condition(
        [], type_=c.READY, status=False, reason="A", message="", generation=1, now=T0
    )
    second = c.set_condition(
        first, type_=c.READY, status=True, reason="A", message="", generation=1, now=T1
    )
    assert second[0]["lastTransitionTime"] == T1


def test_other_conditions_and_order_are_untouched_and_input_not_mutated() -> None:
    conds = []
    for type_ in (c.READY, c.AVAILABLE, c.PROGRESSING, c.DEGRADED):
        conds = c.set_condition(
            conds, type_=type_, status=False, reason="Init", message="", generation=1, now=T0
        )
    before = [dict(x) for x in conds]
    after = c.set_condition(
        conds, type_=c.PROGRESSING, status=True, reason="RollingOut", message="",
        generation=1, now=T1,
    )
    assert conds == before
    assert [x["type"] for x in after] == ["Ready", "Available", "Progressing", "Degraded"]
    assert after[:2] == before[:2] and after[3] == before[3]
    assert c.get_condition(after, c.PROGRESSING)["status"] == "True"
    assert c.get_condition(after, c.READY)["status"] == "False"
    assert c.get_condition(after, "Nope") is None


def test_set_conditions_sets_each_reported_type_in_order_and_leaves_the_rest() -> None:
    conds = c.set_conditions(None, {
        c.READY: c.Report(False, "A", "a"), c.AVAILABLE: c.Report(True, "B", "b"),
    }, generation=1, now=T0)
    assert [(x["type"], x["status"], x["reason"], x["message"]) for x in conds] == [
        ("Ready", "False", "A", "a"), ("Available", "True", "B", "b")]
    before = [dict(x) for x in conds]
    after = c.set_conditions(conds, {
        c.DEGRADED: c.Report(True, "D", "d"), c.READY: c.Report(True, "R", "r"),
    }, generation=2, now=T1)
    assert conds == before  # input not mutated
    assert [x["type"] for x in after] == ["Ready", "Available", "Degraded"]
    assert after[0] == {"type": "Ready", "status": "True", "observedGeneration": 2,
                        "lastTransitionTime": T1, "reason": "R", "message": "r"}
    assert after[1] == before[1]  # not reported: untouched, generation included
    assert after[2]["lastTransitionTime"] == T1
    assert c.set_conditions(after, {}, generation=3, now=T1) == after


def test_set_conditions_keeps_the_transition_time_of_an_unchanged_status() -> None:
    first = c.set_conditions([], {c.READY: c.Report(True, "A", "m")}, generation=1, now=T0)
    second = c.set_conditions(first, {c.READY: c.Report(True, "B", "n")}, generation=2, now=T1)
    assert second[0]["lastTransitionTime"] == T0 and second[0]["reason"] == "B"


def test_set_conditions_checks_each_reason() -> None:
    with pytest.raises(ValueError, match="reason"):
        c.set_conditions([], {c.READY: c.Report(True, "not ok", "")}, generation=1, now=T0)


@pytest.mark.parametrize("reason", ["", "has space", "1Starts", "trailing,", "dash-ed"])
def test_reasons_must_be_camel_case_tokens(reason: str) -> None:
    with pytest.raises(ValueError, match="reason"):
        c.set_condition([], type_=c.READY, status=True, reason=reason, message="",
                        generation=1, now=T0)


def test_status_must_be_a_condition_status() -> None:
    with pytest.raises(ValueError, match="True, False or Unknown"):
        c.set_condition([], type_=c.READY, status="yes", reason="R", message="",
                        generation=1, now=T0)


@pytest.mark.parametrize("word", ["True", "False", "Unknown"])
def test_status_words_are_taken_as_they_are(word: str) -> None:
    conds = c.set_condition([], type_=c.READY, status=word, reason="R", message="",
                            generation=1, now=T0)
    assert conds[0]["status"] == word


def test_long_messages_are_cut_to_the_api_limit() -> None:
    conds = c.set_condition([], type_=c.READY, status=True, reason="R", message="x" * 40000,
                            generation=1, now=T0)
    assert len(conds[0]["message"]) == c.MAX_MESSAGE


def test_timestamps_are_rfc3339_utc_seconds() -> None:
    moment = dt.datetime(2026, 3, 4, 5, 6, 7, 891011, tzinfo=dt.timezone(dt.timedelta(hours=2)))
    assert c.now_rfc3339(moment) == "2026-03-04T03:06:07Z"


@pytest.fixture
def machine_five_hours_east_of_utc(monkeypatch: pytest.MonkeyPatch):
    monkeypatch.setenv("TZ", "XYZ-5")  # POSIX: local time is UTC+5
    time.tzset()
    yield
    monkeypatch.undo()
    time.tzset()


@pytest.mark.usefixtures("machine_five_hours_east_of_utc")
def test_timestamps_are_utc_whatever_the_machines_time_zone() -> None:
    moment = dt.datetime(2026, 3, 4, 5, 6, 7, tzinfo=dt.timezone(dt.timedelta(hours=2)))
    assert c.now_rfc3339(moment) == "2026-03-04T03:06:07Z"
    before = dt.datetime.now(dt.UTC).replace(microsecond=0)
    stamp = dt.datetime.strptime(c.now_rfc3339(), "%Y-%m-%dT%H:%M:%SZ").replace(tzinfo=dt.UTC)
    assert before <= stamp <= dt.datetime.now(dt.UTC)
