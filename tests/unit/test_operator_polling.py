"""Registry polling schedule, backoff, and the classification of MLflow errors."""

from __future__ import annotations

import pytest
from _operator_fixtures import CONFIG, make_cr
from mlship_operator import polling
from mlship_operator.registry import Resolution, classify_error
from mlship_operator.spec import serving_spec

pytestmark = pytest.mark.unit

KEY = ("http://mlflow", "iris", "champion", None)
GOOD = Resolution("3", "Resolved", "ok")
BAD = Resolution(None, "MlflowUnreachable", "cannot query MLflow")


def test_first_poll_and_question_changes_are_due_immediately() -> None:
    assert polling.is_due(None, KEY, now=0)
    state = polling.after_poll(None, KEY, GOOD, now=100, interval=5, max_backoff=60)
    assert not polling.is_due(state, KEY, now=104.9)
    assert polling.is_due(state, KEY, now=105)
    assert polling.is_due(state, ("http://mlflow", "iris", "canary", None), now=101)


def test_errors_back_off_exponentially_up_to_the_cap_and_reset_on_success() -> None:
    state = None
    delays = []
    for step in range(7):
        state = polling.after_poll(state, KEY, BAD, now=step * 1000, interval=5, max_backoff=60)
        delays.append(state.next_at - step * 1000)
    assert delays == [5, 10, 20, 40, 60, 60, 60]
    assert state.failures == 7
    assert state.resolution.message == "cannot query MLflow; retrying in 60s (attempt 7)"
    state = polling.after_poll(state, KEY, GOOD, now=9000, interval=5, max_backoff=60)
    assert (state.failures, state.next_at, state.resolution) == (0, 9005, GOOD)


def test_a_new_question_starts_a_fresh_backoff() -> None:
    state = polling.after_poll(None, KEY, BAD, now=0, interval=5, max_backoff=60)
    state = polling.after_poll(state, KEY, BAD, now=5, interval=5, max_backoff=60)
    other = ("http://mlflow", "iris", "canary", None)
    assert polling.after_poll(state, other, BAD, now=6, interval=5, max_backoff=60).failures == 1


def test_backoff_never_shorter_than_the_interval() -> None:
    assert polling.backoff_delay(120, 1, 60) == 120
    assert polling.backoff_delay(2, 0, 60) == 2


ALIAS = serving_spec(make_cr(), CONFIG)
PINNED = serving_spec(make_cr({"model": "iris", "version": "7"}), CONFIG)


@pytest.mark.parametrize(
    ("spec", "code", "status", "text", "reason", "says"),
    [
        (ALIAS, "RESOURCE_DOES_NOT_EXIST", 404,
         "RESOURCE_DOES_NOT_EXIST: Registered Model with name=iris not found",
         "ModelNotFound", "registered model 'iris' does not exist in MLflow at"),
        (ALIAS, "INVALID_PARAMETER_VALUE", 400,
         "INVALID_PARAMETER_VALUE: Registered model alias champion not found.",
         "AliasNotFound", "registered model 'iris' has no alias 'champion'"),
        (PINNED, "RESOURCE_DOES_NOT_EXIST", 404,
         "RESOURCE_DOES_NOT_EXIST: Model Version (name=iris, version=7) not found",
         "VersionNotFound", "version 7 of registered model 'iris' does not exist"),
        (PINNED, "RESOURCE_DOES_NOT_EXIST", 404,
         "RESOURCE_DOES_NOT_EXIST: Registered Model with name=iris not found",
         "ModelNotFound", "registered model 'iris' does not exist"),
        (ALIAS, "INTERNAL_ERROR", 500,
         "API request to http://mlflow/api/2.0/mlflow/registered-models/alias failed with "
         "exception HTTPConnectionPool: Connection refused",
         "MlflowUnreachable", "cannot query MLflow at http://mlflow.mlship:5000: API request"),
        (ALIAS, None, None, "ConnectionError('boom')", "MlflowUnreachable", "boom"),
        (ALIAS, "PERMISSION_DENIED", 403, "no", "MlflowAccessDenied", "refused access"),
    ],
)
def test_errors_say_exactly_what_is_wrong(spec, code, status, text, reason, says) -> None:
    result = classify_error(spec, error_code=code, http_status=status, text=text)
    assert not result.ok
    assert result.reason == reason
    assert says in result.message


def test_long_transport_errors_are_clipped() -> None:
    result = classify_error(ALIAS, error_code=None, http_status=None, text="x" * 5000)
    assert len(result.message) < 400
