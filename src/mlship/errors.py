"""Error messages for people: the cause first, one line, clipped; and which errors no retry fixes.

Standard library only: the steps, the serving image and the operator all use it.
"""

from __future__ import annotations

import re

# "HTTPConnection(host='h', port=5000): " in front of urllib3's messages: the caller's own
# message names the address already.
_POOL_PREFIX = re.compile(r"^\w*HTTPS?Connection(?:Pool)?\([^)]*\):\s*")


class Explained(Exception):
    """An error whose message was written for a person and already says its cause."""

    permanent = False
    """True when no retry can succeed: the input itself is wrong."""


class BadInput(Explained, ValueError):
    """Input that cannot work however often it is tried: data, flags, rules, names."""

    permanent = True


def clip(text: str, limit: int) -> str:
    """One line (whitespace runs collapsed) of at most `limit` characters; … marks a cut."""
    text = " ".join(str(text).split())
    return text if len(text) <= limit else text[: limit - 1] + "…"


def _chain(exc: BaseException) -> list[BaseException]:
    chain = [exc]
    while True:
        last = chain[-1]
        nxt = last.__cause__ or (None if last.__suppress_context__ else last.__context__)
        if nxt is None or nxt in chain:
            return chain
        chain.append(nxt)


def root_cause(exc: BaseException) -> BaseException:
    """The innermost exception that still says what failed.

    A bare OS error deepest in the chain ("[Errno -2] Name or service not known") is reported
    through the exception that wraps it when that one repeats it with more (the host name).
    """
    chain = _chain(exc)
    cause = chain[-1]
    if len(chain) > 1 and isinstance(cause, OSError) and str(cause) in str(chain[-2]):
        return chain[-2]
    return cause


def describe(exc: BaseException, limit: int = 1000) -> str:
    """`exc` in one line of at most `limit` characters, its root cause (and its type) first.

    Wrapped library errors bury the cause at the end of a long message (MLflow's
    "API request to ... failed with exception HTTPConnectionPool(...): Max retries exceeded ...
    (Caused by NameResolutionError(...))"), which a clipped message would cut off.
    """
    said = " ".join(str(exc).split())
    if isinstance(exc, Explained):
        return clip(said or type(exc).__name__, limit)
    cause = root_cause(exc)
    if cause is exc:
        return clip(f"{type(exc).__name__}: {said}" if said else type(exc).__name__, limit)
    because = _POOL_PREFIX.sub("", " ".join(str(cause).split()))
    because = f"{type(cause).__name__}: {because}" if because else type(cause).__name__
    return clip(f"{clip(because, limit)}; {said or type(exc).__name__}", limit)
