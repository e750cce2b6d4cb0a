"""A lean HTTP/1.1 client for the router's calls to the candidate: POSTs to one origin over
kept-alive asyncio connections, answers parsed by httptools (as the server parses requests).

httpx cost about 3.5 ms of CPU per forwarded request on the stable pod, nine times what the
pod spends answering one itself; this spends a small fraction of that (benchmarks/serving.py,
mlship-routed). It does only what the router needs: POST, http or https, answers with a
Content-Length or chunked, no redirects, no proxies, no cookies.

A connection is reused only after a complete answer that allows it. A reused connection the
server had already closed (the keep-alive race) is retried once on a new one, before any byte
of the answer arrived; nothing else is retried. `retire` drops the pooled connections at once
and the ones in use when they come back: after a failure the next request connects anew, as a
client that kept failing must (an address with no backend may be answered by a catch-all server).
"""

from __future__ import annotations

import asyncio
import ssl
from dataclasses import dataclass
from urllib.parse import urlsplit

import httptools

Headers = list[tuple[bytes, bytes]]


class UpstreamError(Exception):
    """The exchange failed: no (complete) answer."""


@dataclass(frozen=True, slots=True)
class Answer:
    status: int
    headers: Headers
    """As received, names lower-cased."""
    body: bytes

    def header(self, name: bytes) -> str | None:
        """The first value of header `name` (lower-case), as text; None when absent."""
        for key, value in self.headers:
            if key == name:
                return value.decode("latin-1")
        return None


class _Reading:
    """httptools' callbacks: what has arrived of one answer."""

    __slots__ = ("body", "done", "headers", "keep_alive", "parser", "started", "status")

    def __init__(self) -> None:
        self.headers: Headers = []
        self.body: list[bytes] = []
        self.done = False
        self.started = False
        self.keep_alive = False
        self.status = 0
        self.parser = httptools.HttpResponseParser(self)

    def on_message_begin(self) -> None:
        self.started = True

    def on_header(self, name: bytes, value: bytes) -> None:
        self.headers.append((name.lower(), value))

    def on_headers_complete(self) -> None:
        # asked here: once the message is complete the parser has reset for the next one
        self.keep_alive = self.parser.should_keep_alive()
        self.status = self.parser.get_status_code()

    def on_body(self, body: bytes) -> None:
        self.body.append(body)

    def on_message_complete(self) -> None:
        self.done = True


_Connection = tuple[asyncio.StreamReader, asyncio.StreamWriter]


class Upstream:
    """Kept-alive connections to the origin of `base_url` (scheme://host[:port][/prefix]); paths
    posted to are under its path."""

    def __init__(
        self, base_url: str, *, connect_timeout_s: float, timeout_s: float, max_connections: int
    ) -> None:
        parts = urlsplit(base_url)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise ValueError(f"not an http(s) URL: {base_url!r}")
        self.base_url = base_url
        self._host = parts.hostname
        self._port = parts.port or (443 if parts.scheme == "https" else 80)
        self._ssl = ssl.create_default_context() if parts.scheme == "https" else None
        self._host_header = parts.netloc.rsplit("@", 1)[-1].encode("ascii")
        self._prefix = parts.path.rstrip("/")
        self._connect_timeout_s = connect_timeout_s
        self._timeout_s = timeout_s
        self._slots = asyncio.Semaphore(max_connections)
        self._idle: list[_Connection] = []
        self.retired = False

    async def post(self, path: str, body: bytes, headers: list[tuple[str, str]]) -> Answer:
        """POST `body` to `path`; UpstreamError (or TimeoutError) when no complete answer came."""
        request = self._request(path, body, headers)
        async with self._slots, asyncio.timeout(self._timeout_s):
            if self._idle:
                connection = self._idle.pop()
                answer = await self._exchange(connection, request, reused=True)
                if answer is not None:
                    return answer
            connection = await self._connect()
            answer = await self._exchange(connection, request, reused=False)
            assert answer is not None  # noqa: S101 - only a reused connection answers None
            return answer

    def retire(self) -> None:
        """No more pooling: idle connections close now, the ones in use when they are done."""
        self.retired = True
        while self._idle:
            self._idle.pop()[1].close()

    def _request(self, path: str, body: bytes, headers: list[tuple[str, str]]) -> bytes:
        target = (self._prefix + path).encode("ascii")
        lines = [b"POST " + target + b" HTTP/1.1", b"host: " + self._host_header,
                 b"content-length: " + str(len(body)).encode("ascii")]
        for name, value in headers:
            if "\r" in value or "\n" in value or "\r" in name or "\n" in name:
                raise UpstreamError(f"header {name!r}: a line break in a header")
            lines.append(name.encode("latin-1") + b": " + value.encode("latin-1"))
        return b"\r\n".join(lines) + b"\r\n\r\n" + body

    async def _connect(self) -> _Connection:
        try:
            async with asyncio.timeout(self._connect_timeout_s):
                return await asyncio.open_connection(self._host, self._port, ssl=self._ssl)
        except TimeoutError:
            raise UpstreamError(
                f"no connection to {self._host}:{self._port} within {self._connect_timeout_s:g}s"
            ) from None
        except OSError as e:
            raise UpstreamError(f"cannot connect to {self._host}:{self._port}: {e}") from e

    async def _exchange(self, connection: _Connection, request: bytes, *, reused: bool) -> Answer | None:
        """The answer; None when a reused connection turned out closed before answering."""
        reader, writer = connection
        reading = _Reading()
        parser = reading.parser
        try:
            writer.write(request)
            while not reading.done:
                data = await reader.read(65536)
                if not data:
                    raise ConnectionResetError("the server closed the connection")
                parser.feed_data(data)
        except (OSError, httptools.HttpParserError) as e:
            writer.close()
            if reused and not reading.started:
                return None  # it was closed while idle: the caller tries a new connection
            raise UpstreamError(f"{type(e).__name__}: {e}") from e
        except BaseException:  # a timeout or a cancellation mid-answer: the connection is unusable
            writer.close()
            raise
        if reading.keep_alive and not self.retired:
            self._idle.append(connection)
        else:
            writer.close()
        return Answer(reading.status, reading.headers, b"".join(reading.body))
