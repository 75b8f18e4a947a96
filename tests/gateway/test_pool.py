"""The upstream connection pool against raw servers that misbehave in ways HTTP allows.

The fake LLM upstream (``tests/gateway/upstream.py``) covers timeouts, cuts and pooling through
the providers; these servers cover what it cannot: a keep-alive connection the server drops
just as it is reused, bodies delimited by the end of the connection, compressed bodies, and a
reader slower than the upstream.
"""

from __future__ import annotations

import asyncio
import gzip
import zlib
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager

import pytest
import uvloop

from pilothouse.gateway.providers.base import UpstreamBroken
from pilothouse.gateway.providers.pool import HIGH_WATER, HttpClient, Origin, Timeouts

TIMEOUTS = Timeouts(connect=2, first_byte=2, idle=2)
REQUEST = b"POST /x HTTP/1.1\r\nhost: t\r\ncontent-length: 2\r\n\r\n{}"

Handler = Callable[[asyncio.StreamReader, asyncio.StreamWriter, int], Awaitable[None]]


async def _read_request(reader: asyncio.StreamReader) -> bool:
    """Read one request (head and its 2-byte body); False at the end of the connection."""
    try:
        await reader.readuntil(b"\r\n\r\n")
        await reader.readexactly(2)
    except (asyncio.IncompleteReadError, ConnectionError):
        return False
    return True


def _reply(body: bytes, *extra: bytes) -> bytes:
    head = b"HTTP/1.1 200 OK\r\ncontent-type: application/json\r\n" + b"".join(extra)
    return head + b"content-length: %d\r\n\r\n%s" % (len(body), body)


async def keep_answering(
    reader: asyncio.StreamReader, writer: asyncio.StreamWriter, number: int
) -> None:
    """Answer every request on the connection with ``{}``."""
    while await _read_request(reader):
        writer.write(_reply(b"{}"))


@asynccontextmanager
async def serving(handler: Handler) -> AsyncIterator[tuple[Origin, list[int]]]:
    """A server on 127.0.0.1; yields its origin and the list of connection numbers it saw."""
    seen: list[int] = []

    async def on_connection(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        seen.append(len(seen) + 1)
        try:
            await handler(reader, writer, len(seen))
        finally:
            writer.close()

    server = await asyncio.start_server(on_connection, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    async with server:
        yield Origin("http", "127.0.0.1", port), seen


@pytest.fixture
async def pool() -> AsyncIterator[HttpClient]:
    client = HttpClient()
    yield client
    await client.aclose()


async def test_a_keepalive_connection_closed_as_it_is_reused_is_retried_on_a_new_one(
    pool: HttpClient,
) -> None:
    async def answer_once(
        reader: asyncio.StreamReader, writer: asyncio.StreamWriter, number: int
    ) -> None:
        # Each connection answers its first request, then drops the next one unanswered, as
        # a server does that closes an idle connection the moment the client reuses it.
        assert await _read_request(reader)
        writer.write(_reply(b'{"n": %d}' % number))
        await writer.drain()
        await _read_request(reader)
        writer.transport.abort()

    async with serving(answer_once) as (origin, seen):
        first = await pool.request(origin, REQUEST, TIMEOUTS)
        assert await first.read() == b'{"n": 1}'
        second = await pool.request(origin, REQUEST, TIMEOUTS)
        assert await second.read() == b'{"n": 2}'
    assert seen == [1, 2]


async def test_a_connection_idle_past_keepalive_is_not_reused() -> None:
    pool = HttpClient(keepalive_timeout=0.1)
    try:
        async with serving(keep_answering) as (origin, seen):
            await (await pool.request(origin, REQUEST, TIMEOUTS)).read()
            await (await pool.request(origin, REQUEST, TIMEOUTS)).read()
            assert seen == [1]
            await asyncio.sleep(0.2)
            await (await pool.request(origin, REQUEST, TIMEOUTS)).read()
            assert seen == [1, 2]
            assert pool.open_connections == 1
    finally:
        await pool.aclose()


async def test_a_full_pool_closes_another_origins_idle_connection_to_make_room() -> None:
    pool = HttpClient(limit=1)
    try:
        async with serving(keep_answering) as (first, _), serving(keep_answering) as (second, _):
            await (await pool.request(first, REQUEST, TIMEOUTS)).read()
            async with asyncio.timeout(2):
                await (await pool.request(second, REQUEST, TIMEOUTS)).read()
                await (await pool.request(first, REQUEST, TIMEOUTS)).read()
            assert pool.open_connections == 1
    finally:
        await pool.aclose()


async def test_a_body_delimited_by_the_end_of_the_connection_is_read_whole(
    pool: HttpClient,
) -> None:
    async def until_close(
        reader: asyncio.StreamReader, writer: asyncio.StreamWriter, number: int
    ) -> None:
        assert await _read_request(reader)
        writer.write(b"HTTP/1.1 200 OK\r\nconnection: close\r\n\r\n")
        for part in (b'{"a": ', b"1}"):
            writer.write(part)
            await writer.drain()
            await asyncio.sleep(0.01)

    async with serving(until_close) as (origin, _):
        reply = await pool.request(origin, REQUEST, TIMEOUTS)
        assert await reply.read() == b'{"a": 1}'
    assert pool.open_connections == 0


async def test_a_cut_content_length_body_is_broken_not_complete(pool: HttpClient) -> None:
    async def short(
        reader: asyncio.StreamReader, writer: asyncio.StreamWriter, number: int
    ) -> None:
        assert await _read_request(reader)
        writer.write(b"HTTP/1.1 200 OK\r\ncontent-length: 10\r\n\r\n{}")
        await writer.drain()

    async with serving(short) as (origin, _):
        reply = await pool.request(origin, REQUEST, TIMEOUTS)
        with pytest.raises(UpstreamBroken, match="reply body cut"):
            await reply.read()


@pytest.mark.parametrize("encoding", [b"gzip", b"deflate"])
async def test_a_compressed_body_is_decoded(pool: HttpClient, encoding: bytes) -> None:
    body = b'{"text": "' + b"abc " * 5000 + b'"}'
    packed = gzip.compress(body) if encoding == b"gzip" else zlib.compress(body)

    async def compressed(
        reader: asyncio.StreamReader, writer: asyncio.StreamWriter, number: int
    ) -> None:
        assert await _read_request(reader)
        writer.write(_reply(packed, b"content-encoding: " + encoding + b"\r\n"))
        await writer.drain()

    async with serving(compressed) as (origin, _):
        reply = await pool.request(origin, REQUEST, TIMEOUTS)
        assert await reply.read() == body


async def test_a_slow_reader_holds_the_upstream_back_and_still_gets_every_byte(
    pool: HttpClient,
) -> None:
    size = 64 * HIGH_WATER
    wrote = asyncio.Event()

    async def big(reader: asyncio.StreamReader, writer: asyncio.StreamWriter, number: int) -> None:
        assert await _read_request(reader)
        writer.write(b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n")
        for _ in range(size // 4096):
            writer.write(b"1000\r\n" + b"x" * 4096 + b"\r\n")
        writer.write(b"0\r\n\r\n")
        await writer.drain()
        wrote.set()

    async with serving(big) as (origin, _):
        reply = await pool.request(origin, REQUEST, TIMEOUTS)
        await asyncio.sleep(0.2)  # nobody reads: the pool must stop reading the socket
        assert reply.paused
        assert reply.buffered < 2 * HIGH_WATER
        assert not wrote.is_set()  # the server is held back by TCP flow control
        assert len(await reply.read()) == size
        assert wrote.is_set()


def test_the_pool_runs_on_uvloop_as_the_server_does() -> None:
    """uvicorn runs on uvloop, whose transports are not ``asyncio.Transport`` subclasses."""

    async def twice() -> list[bytes]:
        pool = HttpClient()
        try:
            async with serving(keep_answering) as (origin, seen):
                bodies = [await (await pool.request(origin, REQUEST, TIMEOUTS)).read()]
                bodies.append(await (await pool.request(origin, REQUEST, TIMEOUTS)).read())
                assert seen == [1]
                return bodies
        finally:
            await pool.aclose()

    assert uvloop.run(twice()) == [b"{}"] * 2
