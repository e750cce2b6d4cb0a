"""Canary and shadow routing of /invocations on a stable pod (the contract: mlship.traffic).

The operator PUTs a Route to /admin/routing. Then, for a share of the /invocations requests:

- canary: the request goes to the candidate's Service and is scored here at the same time; the
  client gets the candidate's answer when it is the candidate's (its X-Model-Version is the
  route's version: an address without a backend may be answered by an unrelated catch-all
  server) and a success, else this pod's answer. Clients never see a candidate failure.
- shadow: this pod answers; a copy goes to the candidate in the background (at most
  MAX_SHADOW_IN_FLIGHT at a time; copies past that are dropped, not counted).

What is counted (mlship.traffic.Tally), while a route is set: every request this pod answers
without forwarding on the stable side, with the time it took here and ok = status < 500; every
forwarded request or shadow copy on the candidate side, with the candidate call's time, ok as
`judge` says, and the rows of the two answers compared when both are 200 (rows_agree). A request
whose body cannot be read or parsed is answered here and counted on the stable side. Only
/invocations is routed: not the V2 API, not /feedback.

Everything runs on the server's one event loop, so the tallies need no lock.
"""

from __future__ import annotations

import asyncio
import logging
import random
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Protocol, TypeVar
from urllib.parse import urlsplit

from mlship.serving.upstream import Upstream
from mlship.traffic import (
    CANARY,
    FORWARDED_HEADER,
    HANDLING_HEADER,
    SHADOW,
    Report,
    Route,
    Tally,
    rows_agree,
)

log = logging.getLogger(__name__)

CONNECT_TIMEOUT_S = 1.0
TIMEOUT_S = 10.0
MAX_SHADOW_IN_FLIGHT = 64
# Enough for 64 clients' forwarded requests at once, kept alive; more wait for a connection.
MAX_CONNECTIONS = 128
WARN_EVERY_S = 10.0
_PASSED_ON = (b"content-type", b"x-model-name", b"x-model-version")
_HANDLING = HANDLING_HEADER.encode("ascii")


class Local(Protocol):
    """This pod's own answer to a request, as the app scored it."""

    @property
    def status(self) -> int: ...

    @property
    def body(self) -> bytes: ...


L = TypeVar("L", bound=Local)


@dataclass(frozen=True, slots=True)
class Forward:
    """What of a client's request goes to the candidate."""

    body: bytes
    content_type: str | None
    authorization: str | None
    request_id: str


@dataclass(frozen=True, slots=True)
class CandidateAnswer:
    """The candidate's answer, for the client: status, body, and its Content-Type, X-Model-Name
    and X-Model-Version headers as it sent them."""

    status: int
    body: bytes
    headers: list[tuple[bytes, bytes]]


@dataclass(frozen=True, slots=True)
class Reply:
    """What came back from the candidate; status 0 when nothing did (`error` says why)."""

    status: int
    body: bytes
    headers: list[tuple[bytes, bytes]]
    seconds: float
    genuine: bool  # it carries the route's X-Model-Version: the candidate answered
    error: str = ""


def judge(local_status: int, reply: Reply) -> tuple[bool, bool]:
    """(the candidate's answer counts as a success, the client gets it). Only a genuine answer
    can be either. When this pod found the input bad (4xx), its answer stands and a 2xx or 4xx
    from the candidate is no failure of the candidate's; otherwise only a 2xx is a success (a
    4xx is the candidate refusing what the stable version took) and is the client's answer."""
    if not reply.genuine:
        return False, False
    if 400 <= local_status < 500:
        return 200 <= reply.status < 300 or 400 <= reply.status < 500, False
    ok = 200 <= reply.status < 300
    return ok, ok


def _handling_s(header: str | None, round_trip_s: float) -> float:
    """The candidate's own time for a request (HANDLING_HEADER), within the round trip; the round
    trip when it did not say (an older image) or said something unreadable."""
    try:
        handling_s = float(header) / 1000 if header is not None else round_trip_s
    except ValueError:
        return round_trip_s
    return min(max(handling_s, 0.0), round_trip_s) if handling_s == handling_s else round_trip_s


class Router:
    def __init__(
        self,
        *,
        connect_timeout_s: float = CONNECT_TIMEOUT_S,
        timeout_s: float = TIMEOUT_S,
        max_shadow_in_flight: int = MAX_SHADOW_IN_FLIGHT,
        draw: Callable[[], float] = random.random,
    ) -> None:
        # The app's hot path reads only this: None means no routing and no counting.
        self.route: Route | None = None
        self._stable = Tally()
        self._candidate = Tally()
        self._connect_timeout_s = connect_timeout_s
        self._timeout_s = timeout_s
        self._max_shadow = max_shadow_in_flight
        self._draw = draw
        self._client: Upstream | None = None
        self._shadows: set[asyncio.Task[None]] = set()
        self.shadow_dropped = 0
        self._last_warning = -WARN_EVERY_S
        self._unwarned = 0

    # --- the operator's side --------------------------------------------------------------------

    def apply(self, route: Route | None) -> None:
        """Take a pushed route (None: stop). A new rollout id starts new counts; the same id keeps
        them whatever else changed."""
        current = self.route
        if route == current:
            return
        if (route and route.rollout) != (current and current.rollout):
            self._stable, self._candidate = Tally(), Tally()
        self.route = route
        if route is None:
            log.info("routing: stopped (was rollout %s)", current and current.rollout)
        else:
            log.info(
                "routing: rollout %s, %s of %g%% of /invocations to %s (version %s)",
                route.rollout, route.mode, route.share * 100, urlsplit(route.candidate).netloc,
                route.version,
            )  # fmt: skip

    def report(self) -> Report:
        route = self.route
        return Report(
            rollout=route.rollout if route else None,
            share=route.share if route else 0.0,
            mode=route.mode if route else None,
            stable=self._stable.snapshot(),
            candidate=self._candidate.snapshot(),
        )

    # --- the request's side ---------------------------------------------------------------------

    def observe_stable(self, seconds: float, status: int) -> None:
        """A request answered here before routing could start (its body was bad)."""
        if self.route is not None:
            self._stable.observe(seconds, status < 500)

    async def handle(self, local: Awaitable[L], request: Forward, started: float) -> L | CandidateAnswer:
        """The client's answer to a request whose local scoring is `local` (awaited here, always),
        routed as the current route says; `started` is the request's time.perf_counter() start."""
        route, stable, candidate = self.route, self._stable, self._candidate
        if route is None:
            return await local
        if route.mode == CANARY and route.share > 0 and self._draw() < route.share:
            return await self._canary(route, local, request, candidate)
        scored = await local
        stable.observe(time.perf_counter() - started, scored.status < 500)
        if route.mode == SHADOW and route.share > 0 and self._draw() < route.share:
            self._shadow(route, request, scored, candidate)
        return scored

    async def _canary(
        self, route: Route, local: Awaitable[L], request: Forward, tally: Tally
    ) -> L | CandidateAnswer:
        scored, reply = await asyncio.gather(local, self._send(route, request))
        _, answer = self._count(tally, scored, reply)
        if answer:
            passed_on = [(k, v) for k, v in reply.headers if k in _PASSED_ON]
            return CandidateAnswer(reply.status, reply.body, passed_on)
        return scored

    def _shadow(self, route: Route, request: Forward, scored: Local, tally: Tally) -> None:
        if len(self._shadows) >= self._max_shadow:
            self.shadow_dropped += 1
            return
        task = asyncio.create_task(self._copy(route, request, scored, tally))
        self._shadows.add(task)
        task.add_done_callback(self._shadows.discard)

    async def _copy(self, route: Route, request: Forward, scored: Local, tally: Tally) -> None:
        reply = await self._send(route, request)
        self._count(tally, scored, reply)

    def _count(self, tally: Tally, scored: Local, reply: Reply) -> tuple[bool, bool]:
        ok, answer = judge(scored.status, reply)
        tally.observe(reply.seconds, ok)
        if ok and scored.status == 200 and reply.status == 200:
            tally.compare(*rows_agree(scored.body, reply.body))
        if not ok:
            self._warn(reply)
        return ok, answer

    async def _send(self, route: Route, request: Forward) -> Reply:
        """The request, to the candidate; never raises but CancelledError. After a transport error
        or an answer that is not the candidate's, the client's connections are dropped."""
        client = self._client
        if client is None or client.base_url != route.candidate:
            if client is not None:
                client.retire()
            client = self._client = Upstream(
                route.candidate, connect_timeout_s=self._connect_timeout_s,
                timeout_s=self._timeout_s, max_connections=MAX_CONNECTIONS,
            )  # fmt: skip
        headers = [
            ("content-type", request.content_type or "application/json"),
            ("x-request-id", request.request_id),
            (FORWARDED_HEADER, route.rollout),
        ]
        if request.authorization is not None:
            headers.append(("authorization", request.authorization))
        started = time.perf_counter()
        try:
            answer = await client.post("/invocations", request.body, headers)
        except Exception as e:  # anything: the client's answer must not depend on the candidate
            reply = Reply(0, b"", [], time.perf_counter() - started, False, f"{type(e).__name__}: {e}")
        else:
            version = answer.header(b"x-model-version")
            reply = Reply(
                answer.status,
                answer.body,
                answer.headers,
                _handling_s(answer.header(_HANDLING), time.perf_counter() - started),
                genuine=version == route.version,
                error="" if version == route.version else (
                    f"HTTP {answer.status} with X-Model-Version {version!r}, not "
                    f"{route.version!r}: not the candidate"
                ),
            )  # fmt: skip
        if not reply.genuine and client is self._client:
            client.retire()
            self._client = None
        return reply

    def _warn(self, reply: Reply) -> None:
        """A candidate failure, logged at most every WARN_EVERY_S with how many were not."""
        now = time.monotonic()
        if now - self._last_warning < WARN_EVERY_S:
            self._unwarned += 1
            return
        route = self.route
        log.warning(
            "routing: the candidate %s failed a request (%s); %d more failures since the last "
            "warning; the clients got this pod's answers",
            route and urlsplit(route.candidate).netloc, reply.error or f"HTTP {reply.status}",
            self._unwarned,
        )  # fmt: skip
        self._last_warning, self._unwarned = now, 0

    async def close(self) -> None:
        """Drop the shadow copies in flight (they only count) and close the HTTP clients."""
        for task in list(self._shadows):
            task.cancel()
        await asyncio.gather(*self._shadows, return_exceptions=True)
        if self._client is not None:
            self._client.retire()
            self._client = None
