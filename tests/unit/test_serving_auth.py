"""The bearer token on the scoring and label endpoints: the verdict on a header, the guard around a
handler, and which of the app's routes it guards (no model, no process: the app is not started,
so a request that gets past the guard meets 'loading')."""

from __future__ import annotations

import asyncio
from typing import Any

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families
from starlette.requests import Request
from starlette.responses import Response

from mlship.serving.app import create_app
from mlship.serving.auth import (
    CHALLENGE,
    MISSING_MESSAGE,
    REFUSED_MESSAGE,
    Verdict,
    check,
    require_token,
)
from mlship.serving.config import load_config

pytestmark = pytest.mark.unit

TOKEN = "s3cret-token-0123456789"  # noqa: S105 - a test's own
MISSING = {"error_code": "UNAUTHENTICATED", "message": MISSING_MESSAGE}
REFUSED = {"error_code": "UNAUTHENTICATED", "message": REFUSED_MESSAGE}


@pytest.mark.parametrize(
    ("header", "verdict"),
    [
        (None, Verdict.MISSING),
        ("", Verdict.REFUSED),
        (f"Bearer {TOKEN}", Verdict.ALLOWED),
        (f"bearer {TOKEN}", Verdict.ALLOWED),
        (f"BEARER  {TOKEN} ", Verdict.ALLOWED),
        (f"Basic {TOKEN}", Verdict.REFUSED),
        (TOKEN, Verdict.REFUSED),  # no scheme
        ("Bearer", Verdict.REFUSED),
        ("Bearer ", Verdict.REFUSED),
        (f"Bearer {TOKEN}x", Verdict.REFUSED),
        (f"Bearer {TOKEN[:-1]}", Verdict.REFUSED),
        (f"Bearer {TOKEN.upper()}", Verdict.REFUSED),  # the token itself is case-sensitive
        ("Bearer tökén-ünïcode-0123456789", Verdict.REFUSED),  # as Starlette decodes: latin-1
    ],
)
def test_the_verdict_on_an_authorization_header(header: str | None, verdict: Verdict) -> None:
    assert check(header, TOKEN) is verdict


def test_a_non_ascii_token_matches_the_bytes_sent() -> None:
    token = "tökén-ünïcode-0123456789"  # noqa: S105 - a test's own
    # A client sending the token's UTF-8 bytes: Starlette hands them over decoded as latin-1.
    assert check("Bearer " + token.encode().decode("latin-1"), token) is Verdict.ALLOWED


async def _echo(request: Request) -> Response:
    return Response(b"scored", media_type="text/plain")


def _call(handler: Any, authorization: str | None = None) -> Response:
    headers = [] if authorization is None else [(b"authorization", authorization.encode("latin-1"))]
    scope = {"type": "http", "method": "POST", "path": "/invocations", "headers": headers}
    return asyncio.run(handler(Request(scope)))  # type: ignore[no-any-return]


def test_without_a_token_the_handler_is_returned_unchanged() -> None:
    assert require_token(None, _echo) is _echo


@pytest.mark.parametrize(
    ("header", "body"),
    [(None, MISSING), ("Basic dXNlcjpwYXNz", REFUSED), ("Bearer wrong-token-0123456789", REFUSED)],
)
def test_the_guard_answers_401_with_the_challenge_and_never_the_token(
    header: str | None, body: dict[str, str]
) -> None:
    response = _call(require_token(TOKEN, _echo), header)
    assert response.status_code == 401
    assert response.headers["www-authenticate"] == CHALLENGE == 'Bearer realm="mlship"'
    assert response.media_type == "application/json"
    assert httpx.Response(401, content=response.body).json() == body
    assert TOKEN.encode() not in response.body
    assert b"wrong-token" not in response.body


def test_the_guard_lets_the_right_token_through() -> None:
    response = _call(require_token(TOKEN, _echo), f"Bearer {TOKEN}")
    assert (response.status_code, response.body) == (200, b"scored")


def test_the_messages_say_what_to_send() -> None:
    assert "Authorization: Bearer <token>" in MISSING_MESSAGE
    assert "spec.auth.tokenSecretRef" in MISSING_MESSAGE
    assert "not this server's" in REFUSED_MESSAGE


# --- the app's routes -------------------------------------------------------------------------

ENV = {
    "MLSHIP_MODEL_NAME": "shop",
    "MLSHIP_MODEL_VERSION": "3",
    "MLFLOW_TRACKING_URI": "http://mlflow.invalid",
}
GUARDED = ["/invocations", "/feedback", "/v2/models/shop/infer", "/v2/models/shop/versions/3/infer"]
OPEN = ["/health", "/ping", "/livez", "/version", "/metadata", "/metrics", "/v2/health/live",
        "/v2/health/ready", "/v2", "/v2/models/shop", "/v2/models/shop/ready"]  # fmt: skip


def _statuses(env: dict[str, str], requests: list[tuple[str, str, dict[str, str]]]) -> list[int]:
    def fatal(code: int, message: str) -> None:
        raise AssertionError(f"the app is not started here, yet it failed: {code} {message}")

    app = create_app(load_config(env), fatal)  # no lifespan: the model never loads

    async def main() -> list[int]:
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://serving") as client:
            return [
                (await client.request(method, path, headers=headers, json={})).status_code
                for method, path, headers in requests
            ]

    return asyncio.run(main())


def test_with_a_token_only_scoring_and_labels_are_guarded() -> None:
    env = ENV | {"MLSHIP_AUTH_TOKEN": TOKEN}
    bearer = {"Authorization": f"Bearer {TOKEN}"}
    assert _statuses(env, [("POST", path, {}) for path in GUARDED]) == [401] * len(GUARDED)
    # Past the guard: loading (503), and /feedback says Kafka is off (404).
    assert _statuses(env, [("POST", path, bearer) for path in GUARDED]) == [503, 404, 503, 503]
    assert 401 not in _statuses(env, [("GET", path, {}) for path in OPEN])


def test_without_a_token_nothing_is_guarded() -> None:
    assert _statuses(ENV, [("POST", path, {}) for path in GUARDED]) == [503, 404, 503, 503]


def test_401s_are_counted_in_the_request_metrics() -> None:
    env = ENV | {"MLSHIP_AUTH_TOKEN": TOKEN}

    def fatal(code: int, message: str) -> None:
        raise AssertionError(message)

    app = create_app(load_config(env), fatal)

    async def main() -> str:
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://serving") as client:
            await client.post("/invocations", json={})
            await client.post("/v2/models/shop/infer", json={})
            return (await client.get("/metrics")).text

    counted = {
        (sample.labels["endpoint"], sample.labels["status"]): sample.value
        for family in text_string_to_metric_families(asyncio.run(main()))
        for sample in family.samples
        if sample.name == "mlship_requests_total"
    }
    assert counted == {("/invocations", "401"): 1.0, ("/v2/models/{name}/infer", "401"): 1.0}
