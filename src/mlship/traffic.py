"""Canary and shadow traffic: the contract between the stable serving pods, which route, and the
operator, which tells them where to route and reads back what they counted.

The operator PUTs a Route to ROUTING_PATH on every stable pod (bearer: MLSHIP_ROUTING_TOKEN); the
pod answers with a Report: what it counted for the current rollout, on its own answers (`stable`)
and on the candidate's (`candidate`). The routing itself is mlship.serving.routing.

Pure and dependency-free (the operator's image imports it without serving's libraries).
"""

from __future__ import annotations

import json
import math
from bisect import bisect_left
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

ROUTING_PATH = "/admin/routing"
# On every request a stable pod forwards (or copies) to the candidate: a server never routes a
# request that carries it, so a candidate URL that leads back to the stable pods cannot loop.
FORWARDED_HEADER = "x-mlship-forwarded"
# The candidate's answer to a forwarded request says how long it took to handle it (ms), timed as
# a stable pod times its own requests: the candidate is judged on its own time, not on the hop
# to it nor on the stable pod's wait for the reply.
HANDLING_HEADER = "x-mlship-handling-ms"
CANARY = "canary"
SHADOW = "shadow"
MODES = (CANARY, SHADOW)
MAX_ID_CHARS = 100
# Two numbers, one of them a float, agree when |a - b| <= AGREEMENT_REL_TOL * max(|a|, |b|).
AGREEMENT_REL_TOL = 0.05

# Latency histogram upper bounds, in ms (inclusive); one more bucket past the last for overflow.
# Steps of about 1.3-2x, fine enough for a p99 of one version against another's.
BOUNDS_MS: tuple[float, ...] = (
    0.25, 0.5, 0.75, 1.0, 1.5, 2.0, 3.0, 4.0, 5.0, 7.5,
    10.0, 15.0, 20.0, 30.0, 40.0, 50.0, 75.0, 100.0, 150.0, 200.0,
    300.0, 400.0, 500.0, 750.0, 1000.0, 1500.0, 2000.0, 3000.0, 5000.0, 10000.0,
)  # fmt: skip
N_BUCKETS = len(BOUNDS_MS) + 1
_COUNT_FIELDS = ("requests", "errors", "compared", "agreed")


def _count(d: Mapping[str, Any], key: str, where: str) -> int:
    if key not in d:
        raise ValueError(f"{where}: {key!r} is missing")
    value = d[key]
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        raise ValueError(f"{where}: {key!r} must be a non-negative integer, not {value!r}")
    return value


def _object(d: object, where: str) -> Mapping[str, Any]:
    if not isinstance(d, Mapping):
        raise ValueError(f"{where}: expected a JSON object, not {type(d).__name__}")
    return d


@dataclass(frozen=True, slots=True)
class Counts:
    """What one pod counted for one side of a rollout. `latency` holds one count per bucket of
    BOUNDS_MS (plus the overflow bucket); every request counted has a latency, so its sum is
    `requests`."""

    requests: int
    errors: int
    compared: int  # rows whose stable and candidate answers were both at hand
    agreed: int  # of those, rows that agree (rows_agree)
    latency: tuple[int, ...]

    def __post_init__(self) -> None:
        if len(self.latency) != N_BUCKETS:
            raise ValueError(f"latency has {len(self.latency)} buckets, not {N_BUCKETS}")
        if self.errors > self.requests:
            raise ValueError(f"errors ({self.errors}) exceed requests ({self.requests})")
        if self.agreed > self.compared:
            raise ValueError(f"agreed ({self.agreed}) exceeds compared ({self.compared})")
        if sum(self.latency) != self.requests:
            raise ValueError(
                f"the latency buckets hold {sum(self.latency)} requests, not {self.requests}"
            )

    @classmethod
    def empty(cls) -> Counts:
        return ZERO

    def merge(self, other: Counts) -> Counts:
        return Counts(
            self.requests + other.requests,
            self.errors + other.errors,
            self.compared + other.compared,
            self.agreed + other.agreed,
            tuple(a + b for a, b in zip(self.latency, other.latency, strict=True)),
        )

    def quantile_ms(self, q: float) -> float | None:
        """The upper bound of the bucket that holds the q-quantile (0 < q <= 1); None with no
        requests; float('inf') when it falls in the overflow bucket (over BOUNDS_MS[-1])."""
        if not 0 < q <= 1:
            raise ValueError(f"q must be in (0, 1], not {q!r}")
        if self.requests == 0:
            return None
        rank = max(1, math.ceil(q * self.requests))
        seen = 0
        for i, n in enumerate(self.latency):
            seen += n
            if seen >= rank:
                return BOUNDS_MS[i] if i < len(BOUNDS_MS) else math.inf
        raise AssertionError("unreachable: the buckets sum to requests")  # pragma: no cover

    @property
    def error_rate(self) -> float | None:
        return self.errors / self.requests if self.requests else None

    @property
    def agreement(self) -> float | None:
        return self.agreed / self.compared if self.compared else None

    def to_json(self) -> dict[str, Any]:
        return {
            "requests": self.requests,
            "errors": self.errors,
            "compared": self.compared,
            "agreed": self.agreed,
            "latency": list(self.latency),
        }

    @classmethod
    def from_json(cls, d: object, where: str = "counts") -> Counts:
        """Counts from their JSON; ValueError naming the field on a bad shape (unknown keys are
        ignored, so a newer pod may add some)."""
        obj = _object(d, where)
        requests, errors, compared, agreed = (_count(obj, key, where) for key in _COUNT_FIELDS)
        latency = obj.get("latency")
        if not isinstance(latency, list) or len(latency) != N_BUCKETS or not all(
            isinstance(n, int) and not isinstance(n, bool) and n >= 0 for n in latency
        ):
            raise ValueError(
                f"{where}: 'latency' must be a list of {N_BUCKETS} non-negative integers "
                f"(one per bucket of BOUNDS_MS, then the overflow)"
            )
        buckets = tuple(latency)
        try:
            return cls(requests, errors, compared, agreed, buckets)
        except ValueError as e:
            raise ValueError(f"{where}: {e}") from None


ZERO = Counts(0, 0, 0, 0, (0,) * N_BUCKETS)


class Tally:
    """Counts as they happen, on one side of a rollout. Serving updates it from its one event
    loop only, so no lock: each method runs to completion without yielding."""

    __slots__ = ("requests", "errors", "compared", "agreed", "latency")

    def __init__(self) -> None:
        self.requests = 0
        self.errors = 0
        self.compared = 0
        self.agreed = 0
        self.latency = [0] * N_BUCKETS

    def observe(self, latency_s: float, ok: bool) -> None:
        self.requests += 1
        self.errors += not ok
        self.latency[bisect_left(BOUNDS_MS, latency_s * 1000.0)] += 1

    def compare(self, n_rows: int, n_agreed: int) -> None:
        self.compared += n_rows
        self.agreed += n_agreed

    def snapshot(self) -> Counts:
        return Counts(self.requests, self.errors, self.compared, self.agreed, tuple(self.latency))


def _text(d: Mapping[str, Any], key: str, where: str) -> str:
    value = d.get(key)
    if not isinstance(value, str) or not value:
        raise ValueError(f"{where}: {key!r} must be a non-empty string, not {value!r}")
    return value


@dataclass(frozen=True, slots=True)
class Route:
    """Where a stable pod sends a share of its /invocations requests."""

    rollout: str  # the rollout step's id, e.g. "7/0"; a new id resets the counters
    candidate: str  # http(s) base URL of the candidate's Service, no trailing slash
    version: str  # the candidate's model version, as its X-Model-Version header says it
    share: float  # of requests, 0..1
    mode: str  # CANARY: forward and answer with the candidate's; SHADOW: copy, answer ourselves

    def __post_init__(self) -> None:
        for name, value in (("rollout", self.rollout), ("version", self.version)):
            if not value or len(value) > MAX_ID_CHARS or not value.isprintable():
                raise ValueError(
                    f"route: {name}={value!r} must be 1-{MAX_ID_CHARS} printable characters"
                )
        url = urlsplit(self.candidate)
        if url.scheme not in ("http", "https") or not url.hostname or url.query or url.fragment:
            raise ValueError(
                f"route: candidate={self.candidate!r} is not an http(s) URL with a host "
                "(and no query or fragment)"
            )
        if self.candidate.endswith("/"):
            raise ValueError(f"route: candidate={self.candidate!r} must not end with '/'")
        if isinstance(self.share, bool) or not isinstance(self.share, int | float):
            raise ValueError(f"route: share must be a number, not {self.share!r}")
        if not 0.0 <= self.share <= 1.0:  # also refuses nan
            raise ValueError(f"route: share={self.share!r} is outside [0, 1]")
        if self.mode not in MODES:
            raise ValueError(f"route: mode={self.mode!r} is not one of {', '.join(MODES)}")

    def to_json(self) -> dict[str, Any]:
        return {
            "rollout": self.rollout,
            "candidate": self.candidate,
            "version": self.version,
            "share": self.share,
            "mode": self.mode,
        }

    @classmethod
    def from_json(cls, d: object) -> Route:
        """A Route from its JSON; ValueError naming the field. Unknown keys are refused: a
        misspelt field must not pass for a default."""
        obj = _object(d, "route")
        unknown = set(obj) - set(cls.__dataclass_fields__)
        if unknown:
            raise ValueError(f"route: unknown field(s) {', '.join(sorted(unknown))}")
        rollout, candidate, version = (_text(obj, k, "route") for k in ("rollout", "candidate", "version"))
        share = obj.get("share")
        if isinstance(share, bool) or not isinstance(share, int | float):
            raise ValueError(f"route: 'share' must be a number in [0, 1], not {share!r}")
        mode = _text(obj, "mode", "route")
        return cls(rollout, candidate, version, float(share), mode)


def parse_push(d: object) -> Route | None:
    """What the operator PUTs: a Route's JSON, or `{"rollout": null}` to stop routing (None).
    A route with share 0 is a pause: nothing is routed, its counters are kept."""
    obj = _object(d, "route")
    if "rollout" in obj and obj["rollout"] is None:
        return None
    return Route.from_json(obj)


@dataclass(frozen=True, slots=True)
class Report:
    """A stable pod's answer to GET and PUT ROUTING_PATH: its route and what it counted for it
    since the rollout id last changed (or the process started). No route: rollout and mode are
    None, share 0, the counts zero."""

    rollout: str | None
    share: float
    mode: str | None
    stable: Counts
    candidate: Counts

    def merge(self, other: Report) -> Report:
        """Two pods' reports of the same route as one: the counts summed."""
        return Report(
            self.rollout, self.share, self.mode,
            self.stable.merge(other.stable), self.candidate.merge(other.candidate),
        )

    def to_json(self) -> dict[str, Any]:
        return {
            "rollout": self.rollout,
            "share": self.share,
            "mode": self.mode,
            "stable": self.stable.to_json(),
            "candidate": self.candidate.to_json(),
        }


def parse_report(d: object) -> Report:
    """A Report from a pod's JSON answer; ValueError naming the field on a bad shape."""
    obj = _object(d, "report")
    rollout, mode, share = obj.get("rollout"), obj.get("mode"), obj.get("share")
    if rollout is not None and not isinstance(rollout, str):
        raise ValueError(f"report: 'rollout' must be a string or null, not {rollout!r}")
    if mode is not None and mode not in MODES:
        raise ValueError(f"report: 'mode' must be one of {', '.join(MODES)} or null, not {mode!r}")
    if isinstance(share, bool) or not isinstance(share, int | float) or not 0 <= share <= 1:
        raise ValueError(f"report: 'share' must be a number in [0, 1], not {share!r}")
    return Report(
        rollout=rollout,
        share=float(share),
        mode=mode,
        stable=Counts.from_json(obj.get("stable"), "report: stable"),
        candidate=Counts.from_json(obj.get("candidate"), "report: candidate"),
    )


# --- agreement ------------------------------------------------------------------------------


def _number(x: object) -> bool:
    return isinstance(x, int | float) and not isinstance(x, bool)


def values_agree(a: object, b: object) -> bool:
    """Two predictions of one row agree when equal; two numbers when, one of them being a float,
    they are within AGREEMENT_REL_TOL of each other (regression; two integers are class labels,
    compared exactly); lists and objects item by item. null (NaN) agrees with null."""
    if _number(a) and _number(b):
        if isinstance(a, int) and isinstance(b, int):
            return a == b
        fa, fb = float(a), float(b)  # type: ignore[arg-type]
        if fa == fb or (math.isnan(fa) and math.isnan(fb)):
            return True
        if math.isinf(fa) or math.isinf(fb):
            return False
        return abs(fa - fb) <= AGREEMENT_REL_TOL * max(abs(fa), abs(fb))
    if isinstance(a, list) and isinstance(b, list):
        return len(a) == len(b) and all(values_agree(x, y) for x, y in zip(a, b, strict=True))
    if isinstance(a, dict) and isinstance(b, dict):
        return a.keys() == b.keys() and all(values_agree(a[k], b[k]) for k in a)
    return type(a) is type(b) and a == b


def _rows(answer: bytes) -> list[Any] | None:
    """The rows of an MLflow scoring answer ({"predictions": rows}, or a dict of equal-length
    columns, which is turned into rows); None when it is not one."""
    try:
        parsed = json.loads(answer)
    except (ValueError, UnicodeDecodeError):
        return None
    predictions = parsed.get("predictions") if isinstance(parsed, dict) else None
    if isinstance(predictions, list):
        return predictions
    if isinstance(predictions, dict) and predictions:
        columns = list(predictions.values())
        if all(isinstance(c, list) and len(c) == len(columns[0]) for c in columns):
            return [dict(zip(predictions, row, strict=True)) for row in zip(*columns, strict=True)]
    return None


def rows_agree(stable_answer: bytes, candidate_answer: bytes) -> tuple[int, int]:
    """(rows compared, rows that agree) of two answers to one request, row by row (values_agree).
    Answers that cannot be compared row by row, with different row counts or one that is not a
    scoring answer, count as all their rows compared and none agreed: the larger row count of the
    two, and at least 1."""
    stable, candidate = _rows(stable_answer), _rows(candidate_answer)
    if stable is None or candidate is None or len(stable) != len(candidate):
        return max(1, len(stable or ()), len(candidate or ())), 0
    return len(stable), sum(values_agree(a, b) for a, b in zip(stable, candidate, strict=True))
