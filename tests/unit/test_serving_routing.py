"""The stable pod's router (mlship.serving.routing) against a real candidate HTTP server in the
same event loop, and the /admin/routing endpoint of the app (no model loaded)."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import Any

import httpx
import orjson
import pytest
import uvicorn
from devkit import free_port
from prometheus_client.parser import text_string_to_metric_families
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route as StarletteRoute

from mlship.serving.app import create_app
from mlship.serving.config import load_config
from mlship.serving.routing import CandidateAnswer, Forward, Reply, Router, judge
from mlship.traffic import FORWARDED_HEADER, HANDLING_HEADER, ROUTING_PATH, Route, parse_report

pytestmark = pytest.mark.unit

TOKEN = "routing-token-0123456789"  # noqa: S105 - a test's own
ANSWER = b'{"predictions":[0,1,2]}'


@dataclass(frozen=True)
class Local:
    status: int = 200
    body: bytes = ANSWER


def _reply(status: int, genuine: bool = True) -> Reply:
    return Reply(status, b"", [], 0.001, genuine)


# --- judge ------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("local", "reply", "want"),
    [
        (200, _reply(200), (True, True)),
        (200, _reply(200, genuine=False), (False, False)),  # someone else answered
        (200, _reply(0, genuine=False), (False, False)),  # nobody did
        (200, _reply(500), (False, False)),
        (200, _reply(400), (False, False)),  # it refuses what the stable version took
        (200, _reply(302), (False, False)),
        (400, _reply(400), (True, False)),  # bad input both sides: the local answer stands
        (415, _reply(200), (True, False)),
        (400, _reply(503), (False, False)),
        (503, _reply(200), (True, True)),  # this pod is shutting down: the candidate's is better
    ],
)
def test_judge(local: int, reply: Reply, want: tuple[bool, bool]) -> None:
    assert judge(local, reply) == want


# --- the router against a real candidate ------------------------------------------------------


@dataclass
class Candidate:
    url: str
    seen: list[dict[str, str]]
    status: int = 200
    body: bytes = ANSWER
    version: str = "7"
    handling_ms: str | None = None  # the candidate's own time, as a serving pod reports it
    delay_s: float = 0.0  # before it answers


@asynccontextmanager
async def candidate_server() -> AsyncIterator[Candidate]:
    """A candidate model server, as far as the router can tell: answers /invocations with the
    status, body and X-Model-Version it is told to, and keeps the headers it got."""
    port = free_port()
    candidate = Candidate(f"http://127.0.0.1:{port}", [])

    async def invocations(request: Request) -> Response:
        await request.body()
        candidate.seen.append(dict(request.headers))
        await asyncio.sleep(candidate.delay_s)
        headers = {"x-model-name": "iris", "x-model-version": candidate.version}
        if candidate.handling_ms is not None:
            headers[HANDLING_HEADER] = candidate.handling_ms
        return Response(candidate.body, candidate.status, headers, media_type="application/json")

    app = Starlette(routes=[StarletteRoute("/invocations", invocations, methods=["POST"])])
    config = uvicorn.Config(app, host="127.0.0.1", port=port, lifespan="off", log_level="warning")
    server = uvicorn.Server(config)
    task = asyncio.create_task(server.serve())
    while not server.started:
        await asyncio.sleep(0.01)
    try:
        yield candidate
    finally:
        server.should_exit = True
        await task


def _route(url: str, share: float = 1.0, mode: str = "canary", rollout: str = "7/0") -> Route:
    return Route(rollout=rollout, candidate=url, version="7", share=share, mode=mode)


FORWARD = Forward(b'{"inputs": [[1, 2]]}', "application/json", "Bearer client-token", "rid-1")


async def _local(local: Local = Local()) -> Local:  # noqa: B008 - frozen
    return local


def run(main: Callable[[], Awaitable[Any]]) -> Any:
    return asyncio.run(main())


def test_a_canary_request_gets_the_candidates_answer_and_is_compared() -> None:
    async def main() -> None:
        async with candidate_server() as candidate:
            router = Router()
            router.apply(_route(candidate.url))
            answer = await router.handle(_local(), FORWARD, 0.0)
            assert isinstance(answer, CandidateAnswer)
            assert (answer.status, answer.body) == (200, ANSWER)
            assert dict(answer.headers) == {
                b"content-type": b"application/json", b"x-model-name": b"iris", b"x-model-version": b"7"
            }
            (headers,) = candidate.seen
            assert headers["x-request-id"] == "rid-1"
            assert headers["authorization"] == "Bearer client-token"
            assert headers[FORWARDED_HEADER] == "7/0"
            report = router.report()
            assert (report.stable.requests, report.candidate.requests) == (0, 1)
            assert (report.candidate.compared, report.candidate.agreed) == (3, 3)
            # Another answer: rows compared one by one.
            candidate.body = b'{"predictions":[0,1,1]}'
            await router.handle(_local(), FORWARD, 0.0)
            report = router.report()
            assert (report.candidate.compared, report.candidate.agreed) == (6, 5)
            await router.close()

    run(main)


@pytest.mark.parametrize(
    ("said", "p99_ms"),
    [("2", 2.0),  # its own time counts, not the wait for its reply (the 0.3 s delay)
     ("-3", 0.25),  # clamped to 0
     ("9999", 400.0), (None, 400.0), ("soon", 400.0), ("nan", 400.0)],  # else the round trip
)
def test_the_candidate_is_timed_by_what_it_says_its_handling_took(said, p99_ms) -> None:
    async def main() -> float | None:
        async with candidate_server() as candidate:
            candidate.handling_ms, candidate.delay_s = said, 0.3
            router = Router()
            router.apply(_route(candidate.url))
            await router.handle(_local(), FORWARD, 0.0)
            p99 = router.report().candidate.quantile_ms(0.99)
            await router.close()
            return p99

    assert run(main) == p99_ms  # a bucket's upper bound: 300-400 ms holds the round trip


@pytest.mark.parametrize(
    ("status", "version", "local"),
    [(500, "7", Local()), (400, "7", Local()), (200, "6", Local()), (404, "", Local())],
)
def test_a_failed_or_foreign_answer_is_counted_and_the_client_gets_the_local_one(
    status: int, version: str, local: Local
) -> None:
    async def main() -> None:
        async with candidate_server() as candidate:
            candidate.status, candidate.version = status, version
            router = Router()
            router.apply(_route(candidate.url))
            assert await router.handle(_local(local), FORWARD, 0.0) == local
            report = router.report()
            assert (report.candidate.requests, report.candidate.errors) == (1, 1)
            assert report.candidate.compared == 0 and report.stable.requests == 0
            await router.close()

    run(main)


def test_bad_input_on_both_sides_is_no_candidate_error() -> None:
    async def main() -> None:
        async with candidate_server() as candidate:
            candidate.status, candidate.body = 400, b'{"error_code": "BAD_REQUEST"}'
            router = Router()
            router.apply(_route(candidate.url))
            bad = Local(400, b'{"error_code": "BAD_REQUEST", "message": "no column x"}')
            assert await router.handle(_local(bad), FORWARD, 0.0) == bad
            report = router.report()
            assert (report.candidate.requests, report.candidate.errors) == (1, 0)
            await router.close()

    run(main)


def test_nothing_listening_is_a_candidate_error_and_the_client_is_replaced() -> None:
    async def main() -> None:
        router = Router(connect_timeout_s=0.5)
        router.apply(_route(f"http://127.0.0.1:{free_port()}"))
        for _ in range(3):
            assert await router.handle(_local(), FORWARD, 0.0) == Local()
            assert router._client is None  # dropped with its connections after each failure
        report = router.report()
        assert (report.candidate.requests, report.candidate.errors) == (3, 3)
        await router.close()

    run(main)


def test_requests_past_the_share_are_counted_on_the_stable_side() -> None:
    draws = iter([0.2, 0.7, 0.49])

    async def main() -> None:
        async with candidate_server() as candidate:
            router = Router(draw=lambda: next(draws))
            router.apply(_route(candidate.url, share=0.5))
            answers = [await router.handle(_local(), FORWARD, 0.0) for _ in range(3)]
            assert [isinstance(a, CandidateAnswer) for a in answers] == [True, False, True]
            report = router.report()
            assert (report.stable.requests, report.candidate.requests) == (1, 2)
            await router.close()

    run(main)


def test_shadow_answers_locally_and_copies_in_the_background_up_to_a_bound() -> None:
    async def main() -> None:
        async with candidate_server() as candidate:
            router = Router(max_shadow_in_flight=2)
            router.apply(_route(candidate.url, mode="shadow"))
            answers = [await router.handle(_local(), FORWARD, 0.0) for _ in range(3)]
            assert answers == [Local()] * 3
            assert router.shadow_dropped == 1  # the third came while two copies were in flight
            while router._shadows:
                await asyncio.sleep(0.01)
            report = router.report()
            assert (report.stable.requests, report.candidate.requests) == (3, 2)
            assert report.candidate.agreement == 1.0
            assert len(candidate.seen) == 2
            await router.close()

    run(main)


def test_counts_are_kept_for_the_same_rollout_and_reset_for_another(
    caplog: pytest.LogCaptureFixture,
) -> None:
    async def main() -> None:
        router = Router()
        router.apply(_route("http://c", share=0.0))
        await router.handle(_local(), FORWARD, 0.0)
        router.apply(_route("http://c", share=0.0))
        router.apply(_route("http://c2", share=0.0))  # same rollout, another URL: still counted
        assert router.report().stable.requests == 1
        router.apply(_route("http://c2", share=0.0, rollout="7/1"))
        assert router.report().stable.requests == 0
        await router.handle(_local(), FORWARD, 0.0)
        router.apply(None)
        report = router.report()
        assert (report.rollout, report.mode, report.share, report.stable.requests) == (None, None, 0.0, 0)
        assert await router.handle(_local(), FORWARD, 0.0) == Local()  # no route: not counted
        assert router.report().stable.requests == 0

    with caplog.at_level(logging.INFO, logger="mlship.serving.routing"):
        run(main)
    # A log line for each change, none for the identical push.
    assert [r.getMessage() for r in caplog.records] == [
        "routing: rollout 7/0, canary of 0% of /invocations to c (version 7)",
        "routing: rollout 7/0, canary of 0% of /invocations to c2 (version 7)",
        "routing: rollout 7/1, canary of 0% of /invocations to c2 (version 7)",
        "routing: stopped (was rollout 7/1)",
    ]


# --- the admin endpoint -----------------------------------------------------------------------

ENV = {"MLSHIP_MODEL_NAME": "iris", "MLSHIP_MODEL_VERSION": "6", "MLFLOW_TRACKING_URI": "http://mlflow.invalid"}
ROUTE = {"rollout": "7/0", "candidate": "http://iris-canary.ml.svc.cluster.local", "version": "7",
         "share": 0.1, "mode": "canary"}  # fmt: skip


Call = tuple[str, str, dict[str, str], bytes | None]  # method, path, headers, body


def _calls(env: dict[str, str], calls: list[Call]) -> list[httpx.Response]:
    def fatal(code: int, message: str) -> None:
        raise AssertionError(message)

    app = create_app(load_config(env), fatal)  # no lifespan: the model never loads

    async def main() -> list[httpx.Response]:
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://serving") as client:
            return [
                await client.request(method, path, headers=headers, content=body)
                for method, path, headers, body in calls
            ]

    return asyncio.run(main())


BEARER = {"Authorization": f"Bearer {TOKEN}"}


def test_without_a_routing_token_there_is_no_admin_endpoint() -> None:
    (get, put) = _calls(ENV, [("GET", ROUTING_PATH, BEARER, None),
                              ("PUT", ROUTING_PATH, BEARER, orjson.dumps(ROUTE))])  # fmt: skip
    assert (get.status_code, put.status_code) == (404, 404)


def test_the_admin_endpoint_wants_the_routing_token_not_the_scoring_one() -> None:
    env = ENV | {"MLSHIP_ROUTING_TOKEN": TOKEN, "MLSHIP_AUTH_TOKEN": "scoring-token-0123456789"}
    missing, wrong, scoring, right = _calls(env, [
        ("GET", ROUTING_PATH, {}, None),
        ("GET", ROUTING_PATH, {"Authorization": f"Bearer {TOKEN}x"}, None),
        ("PUT", ROUTING_PATH, {"Authorization": "Bearer scoring-token-0123456789"}, orjson.dumps(ROUTE)),
        ("GET", ROUTING_PATH, BEARER, None),
    ])  # fmt: skip
    assert [r.status_code for r in (missing, wrong, scoring, right)] == [401, 401, 401, 200]
    assert missing.headers["www-authenticate"] == 'Bearer realm="mlship"'
    assert missing.json()["error_code"] == "UNAUTHENTICATED"
    assert "MLSHIP_ROUTING_TOKEN" in missing.json()["message"]
    assert parse_report(right.json()).rollout is None  # the refused push changed nothing


def test_pushes_apply_bad_ones_change_nothing_and_the_endpoint_has_its_own_metrics() -> None:
    env = ENV | {"MLSHIP_ROUTING_TOKEN": TOKEN}
    pushes = [
        orjson.dumps(ROUTE),
        b"{not json",
        orjson.dumps({**ROUTE, "share": 1.5}),
        orjson.dumps({**ROUTE, "mode": "mirror"}),
        orjson.dumps([ROUTE]),
    ]
    answers = _calls(env, [
        *[("PUT", ROUTING_PATH, BEARER, body) for body in pushes],
        ("GET", ROUTING_PATH, BEARER, None),
        ("POST", ROUTING_PATH, BEARER, b"{}"),
        ("PUT", ROUTING_PATH, BEARER, b'{"rollout": null}'),
        ("GET", "/metrics", {}, None),
    ])  # fmt: skip
    first, not_json, share, mode, a_list, got, post, stop, metrics = answers
    assert first.status_code == 200
    assert first.json() == {"rollout": "7/0", "share": 0.1, "mode": "canary",
                            "stable": parse_report(first.json()).stable.to_json(),
                            "candidate": parse_report(first.json()).candidate.to_json()}  # fmt: skip
    assert [r.status_code for r in (not_json, share, mode, a_list)] == [400] * 4
    assert not_json.json()["message"].startswith("the body is not JSON: ")
    assert share.json() == {"error_code": "BAD_REQUEST", "message": "route: share=1.5 is outside [0, 1]"}
    assert mode.json()["message"] == "route: mode='mirror' is not one of canary, shadow"
    assert a_list.json()["message"] == "route: expected a JSON object, not list"
    assert got.json() == first.json()  # the bad pushes changed nothing
    assert post.status_code == 405
    assert stop.status_code == 200 and parse_report(stop.json()).rollout is None
    counted = {
        (s.labels["endpoint"], s.labels["status"]): s.value
        for family in text_string_to_metric_families(metrics.text)
        for s in family.samples
        if s.name == "mlship_requests_total"
    }
    assert counted == {(ROUTING_PATH, "200"): 3.0, (ROUTING_PATH, "400"): 4.0}
