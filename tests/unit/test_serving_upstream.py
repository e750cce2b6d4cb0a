"""The router's HTTP/1.1 client (mlship.serving.upstream) against a raw asyncio server whose
every byte the test chooses: keep-alive, a connection closed while idle or mid-answer, chunked
answers, silence."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass, field

import pytest

from mlship.serving.upstream import Upstream, UpstreamError

pytestmark = pytest.mark.unit

OK = (b"HTTP/1.1 200 OK\r\ncontent-type: application/json\r\nX-Model-Version: 7\r\n"
      b"content-length: 2\r\n\r\n{}")
CHUNKED = (b"HTTP/1.1 503 Service Unavailable\r\ntransfer-encoding: chunked\r\n\r\n"
           b"3\r\nabc\r\n2\r\nde\r\n0\r\n\r\n")

# What the server does with each request it reads, in order: bytes to send, or a callable.
Act = bytes | Callable[[asyncio.StreamWriter], Awaitable[None]]


@dataclass
class Server:
    url: str
    acts: list[Act]
    requests: list[bytes] = field(default_factory=list)
    connections: int = 0
    closed_by_client: int = 0


async def _read_request(reader: asyncio.StreamReader) -> bytes:
    head = await reader.readuntil(b"\r\n\r\n")
    length = next(int(line.split(b":")[1]) for line in head.split(b"\r\n")
                  if line.lower().startswith(b"content-length:"))
    return head + await reader.readexactly(length)


@asynccontextmanager
async def server(*acts: Act) -> AsyncIterator[Server]:
    srv = Server("", list(acts))

    async def serve(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        srv.connections += 1
        try:
            while srv.acts:
                srv.requests.append(await _read_request(reader))
                act = srv.acts.pop(0)
                if isinstance(act, bytes):
                    writer.write(act)
                    await writer.drain()
                else:
                    await act(writer)
        except (asyncio.IncompleteReadError, ConnectionError):
            srv.closed_by_client += 1
        finally:
            writer.close()

    listening = await asyncio.start_server(serve, "127.0.0.1", 0)
    port = listening.sockets[0].getsockname()[1]
    srv.url = f"http://127.0.0.1:{port}"
    try:
        yield srv
    finally:
        listening.close()


def upstream(url: str, timeout_s: float = 5.0) -> Upstream:
    return Upstream(url, connect_timeout_s=1.0, timeout_s=timeout_s, max_connections=4)


HEADERS = [("content-type", "application/json"), ("authorization", "Bearer t")]


def test_answers_are_parsed_and_the_connection_is_kept_alive() -> None:
    async def main() -> None:
        async with server(OK, OK) as srv:
            client = upstream(srv.url + "/base")
            for _ in range(2):
                answer = await client.post("/invocations", b'{"x": 1}', HEADERS)
                assert (answer.status, answer.body) == (200, b"{}")
                assert answer.header(b"x-model-version") == "7" and answer.header(b"nope") is None
            assert srv.connections == 1
            first = srv.requests[0]
            assert first.startswith(b"POST /base/invocations HTTP/1.1\r\n")
            assert b"\r\nhost: 127.0.0.1:" in first and b"\r\nauthorization: Bearer t\r\n" in first
            assert first.endswith(b'content-length: 8\r\ncontent-type: application/json\r\n'
                                  b'authorization: Bearer t\r\n\r\n{"x": 1}')
            client.retire()

    asyncio.run(main())


def test_a_chunked_answer_is_read_whole() -> None:
    async def main() -> None:
        async with server(CHUNKED) as srv:
            answer = await upstream(srv.url).post("/invocations", b"{}", [])
            assert (answer.status, answer.body) == (503, b"abcde")

    asyncio.run(main())


def test_a_connection_closed_while_idle_is_replaced_once() -> None:
    async def close(writer: asyncio.StreamWriter) -> None:
        writer.write(OK.replace(b"content-length", b"connection: keep-alive\r\ncontent-length"))
        await writer.drain()
        writer.close()  # after answering: the client's pooled connection is dead

    async def main() -> None:
        async with server(close, OK) as srv:
            client = upstream(srv.url)
            await client.post("/invocations", b"{}", [])
            await asyncio.sleep(0.05)
            assert (await client.post("/invocations", b"{}", [])).status == 200
            assert srv.connections == 2

    asyncio.run(main())


def test_an_answer_cut_short_is_an_error_and_not_sent_again() -> None:
    async def cut(writer: asyncio.StreamWriter) -> None:
        writer.write(OK[:-1])
        await writer.drain()
        writer.close()

    async def main() -> None:
        async with server(cut, OK) as srv:
            with pytest.raises(UpstreamError, match="closed the connection"):
                await upstream(srv.url).post("/invocations", b"{}", [])
            await asyncio.sleep(0.05)
            assert len(srv.requests) == 1

    asyncio.run(main())


def test_silence_times_out() -> None:
    async def silent(writer: asyncio.StreamWriter) -> None:
        await asyncio.sleep(5)

    async def main() -> None:
        async with server(silent) as srv:
            with pytest.raises(TimeoutError):
                await upstream(srv.url, timeout_s=0.2).post("/invocations", b"{}", [])

    asyncio.run(main())


def test_nothing_listening_is_an_upstream_error() -> None:
    async def main() -> None:
        async with server() as srv:
            url = srv.url
        with pytest.raises(UpstreamError, match="cannot connect"):
            await upstream(url).post("/invocations", b"{}", [])

    asyncio.run(main())


def test_connection_close_and_retire_drop_connections() -> None:
    closing = OK.replace(b"content-length", b"connection: close\r\ncontent-length")

    async def main() -> None:
        async with server(closing) as srv:
            client = upstream(srv.url)
            await client.post("/invocations", b"{}", [])
            assert client._idle == []
        async with server(OK, OK) as srv:
            client = upstream(srv.url)
            await client.post("/invocations", b"{}", [])
            client.retire()
            await asyncio.sleep(0.05)
            assert srv.closed_by_client == 1  # the idle connection went at once
            await client.post("/invocations", b"{}", [])  # a retired client still works ...
            assert client._idle == [] and srv.connections == 2  # ... but keeps nothing

    asyncio.run(main())


def test_a_line_break_in_a_header_is_refused() -> None:
    async def main() -> None:
        client = upstream("http://127.0.0.1:9")
        with pytest.raises(UpstreamError, match="line break"):
            await client.post("/invocations", b"{}", [("x-request-id", "a\r\nx-evil: 1")])

    asyncio.run(main())


@pytest.mark.parametrize("url", ["ftp://host", "http://", "host:80"])
def test_only_http_urls(url: str) -> None:
    with pytest.raises(ValueError, match="not an http"):
        Upstream(url, connect_timeout_s=1, timeout_s=1, max_connections=1)
