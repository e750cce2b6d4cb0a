"""The routing contract between the stable serving pods and the operator (mlship.traffic)."""

from __future__ import annotations

import json
import math
import subprocess
import sys

import pytest

from mlship.traffic import (
    AGREEMENT_REL_TOL,
    BOUNDS_MS,
    N_BUCKETS,
    ZERO,
    Counts,
    Report,
    Route,
    Tally,
    parse_push,
    parse_report,
    rows_agree,
    values_agree,
)

pytestmark = pytest.mark.unit

ROUTE = {
    "rollout": "7/0",
    "candidate": "http://iris-canary.ml.svc.cluster.local",
    "version": "7",
    "share": 0.1,
    "mode": "canary",
}


def _counts(latencies_ms: list[float], errors: int = 0, compared: int = 0, agreed: int = 0) -> Counts:
    tally = Tally()
    for i, ms in enumerate(latencies_ms):
        tally.observe(ms / 1000, ok=i >= errors)
    tally.compare(compared, agreed)
    return tally.snapshot()


# --- the buckets ------------------------------------------------------------------------------


def test_the_bounds_rise_from_a_quarter_ms_to_ten_seconds() -> None:
    assert BOUNDS_MS[0] == 0.25 and BOUNDS_MS[-1] == 10_000.0
    assert 25 <= len(BOUNDS_MS) <= 35 and N_BUCKETS == len(BOUNDS_MS) + 1
    assert all(1.2 <= b / a <= 2.0 for a, b in zip(BOUNDS_MS, BOUNDS_MS[1:], strict=False))


def test_a_latency_falls_in_the_first_bucket_whose_bound_holds_it() -> None:
    counts = _counts([0.0, 0.25, 0.26, 10.0, 10_000.0, 10_001.0])
    assert counts.latency[0] == 2  # 0 and exactly 0.25 ms: the bounds are inclusive
    assert counts.latency[1] == 1
    assert counts.latency[BOUNDS_MS.index(10.0)] == 1
    assert counts.latency[-2] == 1 and counts.latency[-1] == 1  # 10 s, and the overflow
    assert counts.requests == 6 == sum(counts.latency)


# --- Counts -----------------------------------------------------------------------------------


def test_merge_sums_every_field() -> None:
    a = _counts([1.0, 2.0, 400.0], errors=1, compared=3, agreed=2)
    b = _counts([2.0, 20_000.0], compared=5, agreed=5)
    merged = a.merge(b)
    assert (merged.requests, merged.errors, merged.compared, merged.agreed) == (5, 1, 8, 7)
    assert merged.latency == tuple(x + y for x, y in zip(a.latency, b.latency, strict=True))
    assert a.merge(ZERO) == a == ZERO.merge(a)
    assert Counts.empty() == ZERO


def test_two_pods_reports_of_one_route_merge_into_their_summed_counts() -> None:
    a = Report("7/0", 0.1, "canary", _counts([1.0]), _counts([2.0], compared=1, agreed=1))
    b = Report("7/0", 0.1, "canary", _counts([3.0, 4.0], errors=1), _counts([5.0], compared=1))
    merged = a.merge(b)
    assert (merged.rollout, merged.share, merged.mode) == ("7/0", 0.1, "canary")
    assert merged.stable == a.stable.merge(b.stable) and merged.stable.requests == 3
    assert merged.candidate == a.candidate.merge(b.candidate)
    assert (merged.candidate.compared, merged.candidate.agreed) == (2, 1)


def test_quantile_is_the_upper_bound_of_the_bucket_holding_it() -> None:
    counts = _counts([0.9] * 98 + [45.0, 45.0])
    assert counts.quantile_ms(0.5) == 1.0
    assert counts.quantile_ms(0.98) == 1.0
    assert counts.quantile_ms(0.99) == 50.0
    assert counts.quantile_ms(1.0) == 50.0
    assert _counts([3.0]).quantile_ms(0.01) == 3.0


def test_quantile_in_the_overflow_bucket_is_infinite_and_none_without_samples() -> None:
    assert _counts([1.0, 60_000.0]).quantile_ms(0.99) == math.inf
    assert ZERO.quantile_ms(0.99) is None
    for q in (0.0, -0.1, 1.01, math.nan):
        with pytest.raises(ValueError, match="q must be in"):
            _counts([1.0]).quantile_ms(q)


def test_rates_are_none_without_a_denominator() -> None:
    assert ZERO.error_rate is None and ZERO.agreement is None
    counts = _counts([1.0] * 4, errors=1, compared=10, agreed=9)
    assert counts.error_rate == 0.25 and counts.agreement == 0.9


def test_counts_round_trip_through_json() -> None:
    counts = _counts([0.3, 7.0, 7.0, 99_999.0], errors=2, compared=3, agreed=1)
    assert Counts.from_json(json.loads(json.dumps(counts.to_json()))) == counts
    # A newer pod may add fields: they are ignored.
    assert Counts.from_json({**counts.to_json(), "shadow_dropped": 3}) == counts


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"requests": -1}, "'requests' must be a non-negative integer, not -1"),
        ({"errors": True}, "'errors' must be a non-negative integer, not True"),
        ({"agreed": 1.0}, "'agreed' must be a non-negative integer, not 1.0"),
        ({"compared": None}, "'compared' must be a non-negative integer"),
        ({"latency": [0] * (N_BUCKETS - 1)}, f"'latency' must be a list of {N_BUCKETS} non-negative"),
        ({"latency": "0"}, "'latency' must be a list"),
        ({"latency": [-1] + [0] * (N_BUCKETS - 1)}, "'latency' must be a list"),
        ({"errors": 5}, r"errors \(5\) exceed requests \(2\)"),
        ({"agreed": 4}, r"agreed \(4\) exceeds compared \(3\)"),
        ({"requests": 3}, "the latency buckets hold 2 requests, not 3"),
    ],
)
def test_bad_counts_are_refused_naming_the_field(change: dict[str, object], message: str) -> None:
    good = _counts([1.0, 2.0], compared=3, agreed=3).to_json()
    with pytest.raises(ValueError, match=message):
        Counts.from_json({**good, **change})


def test_counts_with_a_field_missing_or_not_an_object_are_refused() -> None:
    good = ZERO.to_json()
    del good["errors"]
    with pytest.raises(ValueError, match="counts: 'errors' is missing"):
        Counts.from_json(good)
    with pytest.raises(ValueError, match="counts: expected a JSON object, not list"):
        Counts.from_json([])


# --- Route ------------------------------------------------------------------------------------


def test_a_route_round_trips_through_json() -> None:
    route = Route.from_json(ROUTE)
    assert route == Route("7/0", ROUTE["candidate"], "7", 0.1, "canary")
    assert route.to_json() == ROUTE
    assert Route.from_json({**ROUTE, "share": 1, "mode": "shadow"}).share == 1.0
    assert Route.from_json({**ROUTE, "candidate": "https://c.example:8443/prefix"}).candidate


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"rollout": ""}, "'rollout' must be a non-empty string"),
        ({"rollout": 7}, "'rollout' must be a non-empty string, not 7"),
        ({"rollout": "x" * 101}, "rollout='x+' must be 1-100 printable characters"),
        ({"rollout": "7\n0"}, "must be 1-100 printable characters"),
        ({"version": None}, "'version' must be a non-empty string"),
        ({"candidate": "iris-canary:80"}, "is not an http\\(s\\) URL with a host"),
        ({"candidate": "ftp://iris-canary"}, "is not an http\\(s\\) URL"),
        ({"candidate": "http://"}, "is not an http\\(s\\) URL with a host"),
        ({"candidate": "http://c/?x=1"}, "no query or fragment"),
        ({"candidate": "http://c/"}, "must not end with '/'"),
        ({"share": 1.5}, r"share=1.5 is outside \[0, 1\]"),
        ({"share": -0.1}, "is outside"),
        ({"share": math.nan}, "is outside"),
        ({"share": "0.5"}, "'share' must be a number in \\[0, 1\\], not '0.5'"),
        ({"share": True}, "'share' must be a number"),
        ({"mode": "mirror"}, "mode='mirror' is not one of canary, shadow"),
        ({"weight": 3}, "unknown field\\(s\\) weight"),
    ],
)
def test_a_bad_route_is_refused_naming_the_field(change: dict[str, object], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        Route.from_json({**ROUTE, **change})


def test_a_route_missing_a_field_is_refused() -> None:
    for key in ROUTE:
        with pytest.raises(ValueError, match=f"route: '{key}'"):
            Route.from_json({k: v for k, v in ROUTE.items() if k != key})


def test_a_push_is_a_route_or_a_stop() -> None:
    assert parse_push({"rollout": None}) is None
    assert parse_push({"rollout": None, "share": 0}) is None
    assert parse_push(ROUTE) == Route.from_json(ROUTE)
    with pytest.raises(ValueError, match="expected a JSON object, not str"):
        parse_push("stop")
    with pytest.raises(ValueError, match="'rollout' must be a non-empty string, not None"):
        parse_push({})  # no rollout key at all is no stop: too easy to send by mistake


# --- Report -----------------------------------------------------------------------------------


def test_a_report_round_trips_and_bad_ones_name_the_side() -> None:
    report = Report("7/0", 0.1, "canary", _counts([1.0]), _counts([2.0, 3.0], 1, 2, 2))
    assert parse_report(json.loads(json.dumps(report.to_json()))) == report
    idle = Report(None, 0.0, None, ZERO, ZERO)
    assert parse_report(idle.to_json()) == idle
    bad = report.to_json()
    bad["candidate"]["errors"] = 3
    with pytest.raises(ValueError, match=r"report: candidate: errors \(3\) exceed requests \(2\)"):
        parse_report(bad)
    with pytest.raises(ValueError, match="report: stable: expected a JSON object, not NoneType"):
        parse_report({**report.to_json(), "stable": None})
    with pytest.raises(ValueError, match="report: 'mode'"):
        parse_report({**report.to_json(), "mode": "mirror"})
    with pytest.raises(ValueError, match="report: 'share'"):
        parse_report({**report.to_json(), "share": 2})
    with pytest.raises(ValueError, match="report: 'rollout'"):
        parse_report({**report.to_json(), "rollout": 7})


# --- agreement --------------------------------------------------------------------------------


def _answer(predictions: object) -> bytes:
    return json.dumps({"predictions": predictions}).encode()


@pytest.mark.parametrize(
    ("stable", "candidate", "want"),
    [
        ([0, 1, 2, 2], [0, 1, 2, 2], (4, 4)),
        ([0, 1, 2, 2], [0, 2, 2, 1], (4, 2)),
        (["setosa", "virginica"], ["setosa", "versicolor"], (2, 1)),
        ([20, 21], [21, 21], (2, 1)),  # integers are classes: 20 is not 21, however close
        ([100.0, 100.0], [104.9, 94.0], (2, 1)),  # 4.7% and 6% apart
        ([1.0], [1], (1, 1)),
        ([0.0], [0.0], (1, 1)),
        ([0.0], [1e-9], (1, 0)),  # relative: nothing is near zero but zero
        ([None, 1.5], [None, None], (2, 1)),  # NaN is null on the wire
        ([True], [1], (1, 0)),
        ([[0.9, 0.1], [0.5, 0.5]], [[0.91, 0.09], [0.1, 0.9]], (2, 0)),  # 0.09 is 10% off 0.1
        ([[0.9, 0.1]], [[0.92, 0.099]], (1, 1)),
        ([[1, 2]], [[1, 2, 3]], (1, 0)),
        ([{"label": 1, "score": 0.8}], [{"label": 1, "score": 0.81}], (1, 1)),
        ([{"label": 1}], [{"label": 1, "score": 0.8}], (1, 0)),
        ({"label": [1, 2], "score": [0.5, 0.5]}, {"label": [1, 3], "score": [0.5, 0.5]}, (2, 1)),
        ([], [], (0, 0)),
        ([0, 1, 2], [0, 1], (3, 0)),  # another row count: every row disagrees
    ],
)
def test_rows_agree_row_by_row(stable: object, candidate: object, want: tuple[int, int]) -> None:
    assert rows_agree(_answer(stable), _answer(candidate)) == want


@pytest.mark.parametrize(
    "garbage",
    [b"", b"not json", b"\xff\xfe", b'{"error_code": "BAD_REQUEST"}', b"[1, 2]", b'{"predictions": 3}',
     b'{"predictions": {"a": [1, 2], "b": [1]}}'],
)
def test_an_answer_that_is_not_a_scoring_answer_agrees_with_nothing(garbage: bytes) -> None:
    assert rows_agree(_answer([0, 1, 2]), garbage) == (3, 0)
    assert rows_agree(garbage, _answer([0, 1])) == (2, 0)
    assert rows_agree(garbage, garbage) == (1, 0)


def test_the_tolerance_is_inclusive_and_symmetric() -> None:
    assert AGREEMENT_REL_TOL == 0.05
    assert values_agree(95.0, 100.0) and values_agree(100.0, 95.0)  # 5% of the larger one
    assert not values_agree(94.9, 100.0) and not values_agree(-95.0, 100.0)
    assert values_agree(math.inf, math.inf) and not values_agree(math.inf, 1e308)
    assert values_agree(math.nan, math.nan) and not values_agree(math.nan, 1.0)


# --- the operator's side ----------------------------------------------------------------------


def test_the_contract_imports_without_serving_libraries() -> None:
    code = (
        "import sys; import mlship.traffic; "
        "bad = {'starlette', 'httpx', 'orjson', 'numpy', 'mlflow'} & {m.split('.')[0] for m in sys.modules}; "
        "assert not bad, bad"
    )
    subprocess.run([sys.executable, "-c", code], check=True)
