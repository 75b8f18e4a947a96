"""Keep-alive HTTP/1.1 to the upstreams, on asyncio protocols and httptools.

The gateway's upstream client. It does what relaying LLM calls needs and nothing else: POST a
prepared request, hand back the status and headers as soon as they are in, then the body as it
arrives. Measured in ``bench/`` (the *Gateway* section of its README), aiohttp's client cost
about a quarter of Pilothouse's CPU per relayed call; this one costs a few microseconds, because
parsing is httptools' C and a call makes one future for the headers and, only when the body is
not already in, one per wait for more.

- **Pool**: idle connections per origin (scheme, host, port), the most recently used first; a
  connection idle longer than ``keepalive`` seconds is closed instead of reused. At most
  ``limit`` connections are open; a call over that closes an idle connection of another origin
  or waits for one to come back.
- **Stale connections**: a server may close an idle keep-alive connection just as we reuse it.
  When a reused connection ends before a single byte of the reply, the request is sent once more
  on a new connection (the upstream cannot have answered it).
- **Timeouts**: ``connect`` bounds the TCP and TLS handshake (and a wait for a free connection);
  ``first_byte`` runs from the request's write to the reply's headers; ``idle`` bounds the
  upstream's silence while the body arrives. The idle timer is armed once and, when it fires,
  re-armed for what remains if bytes came meanwhile, so a stream costs no timer per chunk; it is
  held while we stop reading because our client is slow, so it never times our own slowness.
- **Back-pressure**: past ``HIGH_WATER`` bytes not yet taken, the socket stops being read until
  the reader catches up.
- A reply that is not HTTP, or an error from the parser, fails the call and drops the connection.
  ``gzip`` and ``deflate`` bodies are decoded (we never ask for them, but a server may send them).
"""

from __future__ import annotations

import asyncio
import ssl
import zlib
from collections import deque
from typing import NamedTuple, cast

import httptools

from pilothouse.gateway.providers.base import (
    UpstreamBroken,
    UpstreamConnectError,
    UpstreamError,
    UpstreamTimeout,
)

POOL_LIMIT = 1024
KEEPALIVE_SECONDS = 30.0
HIGH_WATER = 256 * 1024
NO_BODY_STATUS = frozenset({204, 304})


class Origin(NamedTuple):
    """Where a connection goes."""

    scheme: str
    host: str
    port: int


class Timeouts(NamedTuple):
    """Seconds for the handshake, the reply's headers, and silence within the body."""

    connect: float
    first_byte: float
    idle: float


class _Stale(Exception):
    """A reused connection closed before the reply's first byte."""


class HttpClient:
    """The process's pool of upstream connections; share one among all HTTP providers."""

    def __init__(
        self, *, limit: int = POOL_LIMIT, keepalive_timeout: float = KEEPALIVE_SECONDS
    ) -> None:
        self._limit = limit
        self._keepalive = keepalive_timeout
        self._idle: dict[Origin, list[Connection]] = {}
        self._open: set[Connection] = set()
        self._connecting = 0
        self._waiters: deque[asyncio.Future[None]] = deque()
        self._tls: ssl.SSLContext | None = None

    @property
    def open_connections(self) -> int:
        """Connections open now, idle or busy."""
        return len(self._open)

    async def request(self, origin: Origin, data: bytes, timeouts: Timeouts) -> Reply:
        """Send ``data`` (a whole HTTP/1.1 request) to ``origin``; the reply once its headers
        are in. Raises ``UpstreamConnectError`` or ``UpstreamTimeout``."""
        conn = self._take_idle(origin)
        if conn is None:
            conn = await self._connect(origin, timeouts.connect)
            return await conn.exchange(data, timeouts)
        try:
            return await conn.exchange(data, timeouts)
        except _Stale:
            conn = await self._connect(origin, timeouts.connect)
            return await conn.exchange(data, timeouts)

    async def aclose(self) -> None:
        """Close every connection (idempotent); the pool may be used again afterwards."""
        for conn in list(self._open):
            conn.close()
        self._open.clear()
        self._idle.clear()

    # -- the pool ---------------------------------------------------------------------------

    def _take_idle(self, origin: Origin) -> Connection | None:
        idle = self._idle.get(origin)
        if not idle:
            return None
        # The time on the connections' own loop, which is the running one: on Python 3.11 each
        # lookup of the running loop is a getpid system call.
        loop_time = idle[-1].loop.time()
        while idle:
            conn = idle.pop()
            if conn.usable and loop_time - conn.idle_since < self._keepalive:
                return conn
            conn.close()
        return None

    def release(self, conn: Connection) -> None:
        """Take ``conn`` back after a complete reply (called by the connection)."""
        if conn not in self._open:  # the pool was closed meanwhile
            conn.close()
            return
        conn.idle_since = conn.loop.time()
        self._idle.setdefault(conn.origin, []).append(conn)
        self._wake()

    def forget(self, conn: Connection) -> None:
        """Drop ``conn`` from the pool (called when its socket closes)."""
        self._open.discard(conn)
        idle = self._idle.get(conn.origin)
        if idle and conn in idle:
            idle.remove(conn)
        self._wake()

    def _wake(self) -> None:
        while self._waiters:
            waiter = self._waiters.popleft()
            if not waiter.done():
                waiter.set_result(None)
                return

    async def _connect(self, origin: Origin, seconds: float) -> Connection:
        loop = asyncio.get_running_loop()
        try:
            async with asyncio.timeout(seconds):
                await self._room(origin)
                self._connecting += 1
                try:
                    tls = self._context() if origin.scheme == "https" else None
                    _, conn = await loop.create_connection(
                        lambda: Connection(self, origin, loop),
                        origin.host,
                        origin.port,
                        ssl=tls,
                        server_hostname=origin.host if tls else None,
                    )
                finally:
                    self._connecting -= 1
        except TimeoutError:
            raise UpstreamTimeout("connect", seconds) from None
        except OSError as exc:
            # Raised bare: the socket error is the whole story, and no request is attached.
            where = f"{origin.host}:{origin.port}"
            raise UpstreamConnectError(f"cannot connect ({where}): {_os_error(exc)}") from None
        self._open.add(conn)
        return conn

    async def _room(self, origin: Origin) -> None:
        """Wait until one more connection may open, closing another origin's idle one if
        that makes room."""
        while len(self._open) + self._connecting >= self._limit:
            victim = next((c for o, idle in self._idle.items() if o != origin for c in idle), None)
            if victim is not None:
                self.forget(victim)  # at once: its socket reports closing only later
                victim.close()
                continue
            waiter = asyncio.get_running_loop().create_future()
            self._waiters.append(waiter)
            await waiter

    def _context(self) -> ssl.SSLContext:
        if self._tls is None:
            self._tls = ssl.create_default_context()
            self._tls.set_alpn_protocols(["http/1.1"])
        return self._tls


class Connection(asyncio.Protocol):
    """One keep-alive connection; it carries one exchange at a time."""

    def __init__(self, pool: HttpClient, origin: Origin, loop: asyncio.AbstractEventLoop) -> None:
        self.pool = pool
        self.origin = origin
        self.loop = loop  # the loop its socket belongs to
        self.idle_since = 0.0
        self.transport: asyncio.Transport | None = None
        self._parser = httptools.HttpResponseParser(self)
        self._reply: Reply | None = None
        self._used = False
        self._lost = False

    @property
    def usable(self) -> bool:
        """Open and idle."""
        transport = self.transport
        return (
            not self._lost
            and self._reply is None
            and transport is not None
            and not transport.is_closing()
        )

    async def exchange(self, data: bytes, timeouts: Timeouts) -> Reply:
        """Write one request; return its reply once the headers are in."""
        assert self.transport is not None
        reused, self._used = self._used, True
        loop = self.loop
        reply = self._reply = Reply(self, loop, timeouts.idle)
        self.transport.write(data)
        timer = loop.call_later(timeouts.first_byte, reply.expire_first_byte, timeouts.first_byte)
        try:
            await reply.headers_in
        except UpstreamConnectError:
            if reused and not reply.seen:
                raise _Stale from None
            raise
        except asyncio.CancelledError:
            self.abandon()
            raise
        finally:
            timer.cancel()
        return reply

    def close(self) -> None:
        """Close the socket at once (an unfinished reply fails)."""
        if self.transport is not None:
            self.transport.abort()

    def abandon(self) -> None:
        """Give up the exchange in progress: the socket closes, its reply hears nothing more."""
        self._reply = None
        self.close()

    # -- asyncio.Protocol -------------------------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # uvloop's transports do not subclass asyncio.Transport, but behave as one.
        self.transport = cast(asyncio.Transport, transport)

    def data_received(self, data: bytes) -> None:
        reply = self._reply
        if reply is None:  # bytes nobody asked for: the connection cannot be trusted
            self.close()
            return
        reply.seen = True
        reply.last = reply.loop.time()
        try:
            self._parser.feed_data(data)
        except httptools.HttpParserError:
            self.abandon()
            if reply.headers_in.done():
                reply.fail(UpstreamBroken, "reply body cut: the body is not valid HTTP")
            else:
                reply.fail(UpstreamConnectError, "the reply is not HTTP")

    def connection_lost(self, exc: Exception | None) -> None:
        self._lost = True
        self.pool.forget(self)
        reply, self._reply = self._reply, None
        if reply is None:
            return
        if reply.headers_in.done() and reply.until_close:
            reply.complete()  # a body delimited by the end of the connection
        elif reply.headers_in.done():
            reply.fail(UpstreamBroken, "reply body cut", exc)
        else:
            reply.fail(UpstreamConnectError, "the connection closed before a reply", exc)

    def pause_writing(self) -> None:  # requests are written whole; the transport buffers them
        pass

    def resume_writing(self) -> None:
        pass

    # -- httptools callbacks ----------------------------------------------------------------

    def on_header(self, name: bytes, value: bytes) -> None:
        assert self._reply is not None
        self._reply.headers[name.decode("latin-1").lower()] = value.decode("latin-1")

    def on_headers_complete(self) -> None:
        reply = self._reply
        assert reply is not None
        status = self._parser.get_status_code()
        if 100 <= status < 200:  # an interim reply: the real one follows
            reply.headers.clear()
            return
        reply.status = status
        headers = reply.headers
        encoding = headers.get("content-encoding", "").strip().lower()
        if encoding in ("gzip", "deflate"):
            reply.decoder = zlib.decompressobj(wbits=47)  # gzip or zlib, by its header
        reply.until_close = (
            status not in NO_BODY_STATUS
            and "content-length" not in headers
            and "chunked" not in headers.get("transfer-encoding", "").lower()
        )
        if not reply.headers_in.done():
            reply.headers_in.set_result(None)

    def on_body(self, body: bytes) -> None:
        reply = self._reply
        assert reply is not None
        reply.push(body)
        if reply.buffered > HIGH_WATER and not reply.paused and self.transport is not None:
            reply.paused = True
            self.transport.pause_reading()

    def on_message_complete(self) -> None:
        reply, self._reply = self._reply, None
        assert reply is not None
        if reply.status < 200:
            self._reply = reply  # the end of an interim reply
            return
        if reply.paused:  # what is buffered stays with the reply; the socket may read again
            reply.paused = False
            self.resume()
        reply.complete()
        if self._parser.should_keep_alive():
            self.pool.release(self)
        else:
            self.close()

    def resume(self) -> None:
        """Read again once the reader has taken the buffered body."""
        if self.transport is not None and not self.transport.is_closing():
            self.transport.resume_reading()


class Reply:
    """A reply: status and headers once ``headers_in`` is done, then the body as it arrives.

    As an async iterator it yields the body's bytes (what has arrived since the last step,
    joined); it raises ``UpstreamBroken`` or ``UpstreamTimeout`` (idle) if the body stops early.
    Read it to the end, or ``aclose()`` it: an unfinished reply's connection is closed.
    """

    __slots__ = (
        "buffered",
        "chunks",
        "conn",
        "decoder",
        "done",
        "error",
        "headers",
        "headers_in",
        "idle",
        "last",
        "loop",
        "paused",
        "seen",
        "status",
        "timer",
        "until_close",
        "waiter",
    )

    def __init__(self, conn: Connection, loop: asyncio.AbstractEventLoop, idle: float) -> None:
        self.conn = conn
        self.loop = loop
        self.idle = idle
        self.status = 0
        self.headers: dict[str, str] = {}
        self.headers_in: asyncio.Future[None] = loop.create_future()
        self.chunks: list[bytes] = []
        self.buffered = 0
        self.decoder: zlib._Decompress | None = None
        self.done = False
        self.error: UpstreamError | None = None
        self.waiter: asyncio.Future[None] | None = None
        self.timer: asyncio.TimerHandle | None = None
        self.last = 0.0
        self.seen = False
        self.paused = False
        self.until_close = False

    @property
    def content_type(self) -> str:
        """The media type, without parameters."""
        value = self.headers.get("content-type", "application/octet-stream")
        return value.split(";", 1)[0].strip().lower()

    # -- fed by the connection --------------------------------------------------------------

    def push(self, data: bytes) -> None:
        if self.decoder is not None:
            data = self.decoder.decompress(data)
            if not data:
                return
        self.chunks.append(data)
        self.buffered += len(data)
        self._wake()

    def complete(self) -> None:
        if self.decoder is not None:
            tail = self.decoder.flush()
            if tail:
                self.chunks.append(tail)
        self.done = True
        self._stop_timer()
        self._wake()

    def fail(
        self, kind: type[UpstreamError], what: str, cause: BaseException | None = None
    ) -> None:
        if self.done or self.error is not None:
            return
        origin = self.conn.origin
        detail = f"{what} ({origin.host}:{origin.port})"
        if cause is not None:
            detail += f": {_os_error(cause)}"
        self.error = kind(detail)
        self._stop_timer()
        if not self.headers_in.done():
            self.headers_in.set_exception(self.error)
            # Nobody may await it if the caller was cancelled meanwhile.
            self.headers_in.exception()
        self._wake()

    def expire_first_byte(self, seconds: float) -> None:
        if self.headers_in.done():
            return
        self.error = UpstreamTimeout("first_byte", seconds)
        self.headers_in.set_exception(self.error)
        self.headers_in.exception()
        self.conn.abandon()

    def _wake(self) -> None:
        waiter = self.waiter
        if waiter is not None and not waiter.done():
            waiter.set_result(None)

    def _stop_timer(self) -> None:
        if self.timer is not None:
            self.timer.cancel()
            self.timer = None

    def _check_idle(self) -> None:
        self.timer = None
        if self.done or self.error is not None:
            return
        now = self.loop.time()
        if self.paused:  # the silence is ours: wait a whole idle period from here
            self.timer = self.loop.call_at(now + self.idle, self._check_idle)
        elif now - self.last < self.idle:
            self.timer = self.loop.call_at(self.last + self.idle, self._check_idle)
        else:
            self.error = UpstreamTimeout("idle", self.idle)
            self.conn.abandon()
            self._wake()

    # -- read by the pipeline ---------------------------------------------------------------

    def __aiter__(self) -> Reply:
        return self

    async def __anext__(self) -> bytes:
        while True:
            chunks = self.chunks
            if chunks:
                data = chunks[0] if len(chunks) == 1 else b"".join(chunks)
                chunks.clear()
                self.buffered = 0
                if self.paused:
                    self.paused = False
                    self.conn.resume()
                return data
            if self.error is not None:
                raise self.error
            if self.done:
                raise StopAsyncIteration
            if self.timer is None:
                self.timer = self.loop.call_at(self.last + self.idle, self._check_idle)
            waiter = self.waiter = self.loop.create_future()
            try:
                await waiter
            finally:
                self.waiter = None

    async def read(self) -> bytes:
        """The whole body."""
        parts = [chunk async for chunk in self]
        return parts[0] if len(parts) == 1 else b"".join(parts)

    async def aclose(self) -> None:
        """Stop reading: an unfinished reply's connection is closed."""
        self.chunks.clear()
        if not self.done and self.error is None:
            self.error = UpstreamBroken("reply closed before its end")
            self._stop_timer()
            self.conn.abandon()


def _os_error(exc: BaseException | None) -> str:
    if exc is None:
        return ""
    if isinstance(exc, OSError) and exc.strerror:
        return exc.strerror
    return str(exc) or type(exc).__name__
