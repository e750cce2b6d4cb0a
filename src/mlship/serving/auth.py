"""Optional bearer-token auth on the endpoints that score or take labels.

When MLSHIP_AUTH_TOKEN is set (the operator fills it from the Secret a ModelDeployment's
spec.auth.tokenSecretRef names), /invocations, /feedback and the V2 infer routes answer 401
unless the request says `Authorization: Bearer <token>`. Probes, metadata and metrics stay open:
kubelet and Prometheus call them without a token. Unset, the handlers are not wrapped at all.
"""

from __future__ import annotations

import hmac
from collections.abc import Awaitable, Callable
from enum import Enum

from starlette.requests import Request
from starlette.responses import Response

from mlship.serving.protocol import encode_error

Handler = Callable[[Request], Awaitable[Response]]

JSON_TYPE = "application/json"
ERROR_CODE = "UNAUTHENTICATED"
CHALLENGE = 'Bearer realm="mlship"'
MISSING_MESSAGE = (
    "this endpoint needs the header Authorization: Bearer <token>, the token in the Secret "
    "the ModelDeployment's spec.auth.tokenSecretRef names"
)
REFUSED_MESSAGE = "the bearer token is not this server's (Authorization: Bearer <token>)"


class Verdict(Enum):
    ALLOWED = "allowed"
    MISSING = "missing"  # no Authorization header
    REFUSED = "refused"  # another scheme, or another token


def check(authorization: str | None, token: str) -> Verdict:
    """The verdict on an Authorization header value for the server's `token`: the scheme is
    case-insensitive (RFC 9110), the token compared in constant time."""
    if authorization is None:
        return Verdict.MISSING
    scheme, _, given = authorization.strip().partition(" ")
    if scheme.lower() != "bearer":
        return Verdict.REFUSED
    # Starlette decodes header values as latin-1: encoding back gives the bytes as sent.
    if not hmac.compare_digest(given.strip().encode("latin-1"), token.encode()):
        return Verdict.REFUSED
    return Verdict.ALLOWED


def unauthorized(verdict: Verdict, missing: str = MISSING_MESSAGE) -> Response:
    """The 401: MLflow's error shape, with the challenge saying which scheme is wanted;
    `missing` is the message when no Authorization header came (it says which token)."""
    message = missing if verdict is Verdict.MISSING else REFUSED_MESSAGE
    return Response(
        encode_error(message, ERROR_CODE),
        status_code=401,
        media_type=JSON_TYPE,
        headers={"WWW-Authenticate": CHALLENGE},
    )


def require_token(token: str | None, handler: Handler, missing: str = MISSING_MESSAGE) -> Handler:
    """`handler` as is when `token` is None (no cost per request), else guarded by it."""
    if token is None:
        return handler

    async def guarded(request: Request) -> Response:
        verdict = check(request.headers.get("authorization"), token)
        if verdict is not Verdict.ALLOWED:
            return unauthorized(verdict, missing)
        return await handler(request)

    return guarded
