"""The bare pass-through for the gateway benchmark: the thinnest asyncio forwarder there is.

    python -m bench.gateway_forwarder --upstream-port P --port-file F   (from the repo root)

Raw asyncio (uvloop) protocols on both sides. httptools finds where each request and each
reply ends, nothing more: the request's bytes go upstream as they came, on a keep-alive
connection from a pool, and the reply's bytes come back as they arrive (a stream is relayed
packet by packet). No authentication, no parsing of bodies, no headers rewritten, nothing
recorded. This is the ceiling for a Python gateway on this machine, not a product.
"""

from __future__ import annotations

import argparse
import asyncio
from pathlib import Path
from typing import cast

import httptools

from bench.gateway_upstream import run_on_fastest_loop, serve_until_signalled

HOST = "127.0.0.1"
BAD_GATEWAY = b"HTTP/1.1 502 Bad Gateway\r\ncontent-length: 0\r\nconnection: close\r\n\r\n"


class Pool:
    """Idle keep-alive connections to the upstream."""

    def __init__(self, port: int) -> None:
        self.port = port
        self.idle: list[UpstreamSide] = []

    async def connect(self) -> UpstreamSide:
        """A new connection to the upstream."""
        loop = asyncio.get_running_loop()
        _, proto = await loop.create_connection(lambda: UpstreamSide(self), HOST, self.port)
        return proto


class UpstreamSide(asyncio.Protocol):
    """One pooled connection to the upstream; copies each reply to the client that asked."""

    def __init__(self, pool: Pool) -> None:
        self._pool = pool
        self._parser = httptools.HttpResponseParser(self)
        self._transport: asyncio.Transport | None = None
        self._client: ClientSide | None = None
        self._done = False

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        """Keep the transport."""
        self._transport = cast(asyncio.Transport, transport)

    def send(self, client: ClientSide, request: bytes) -> None:
        """Forward one whole request; the reply goes to ``client``."""
        assert self._transport is not None
        self._client = client
        self._transport.write(request)

    def data_received(self, data: bytes) -> None:
        """Relay the bytes, then hand the connection back once the reply is complete."""
        client = self._client
        if client is not None:
            client.write(data)
        try:
            self._parser.feed_data(data)
        except httptools.HttpParserError:
            self._broken()
            return
        if self._done:
            self._done = False
            self._client = None
            if client is not None:
                client.reply_finished()
            self._pool.idle.append(self)

    def on_message_complete(self) -> None:
        """Parser callback: the reply is complete."""
        self._done = True

    def connection_lost(self, exc: Exception | None) -> None:
        """Leave the pool; a client still waiting on this connection is cut off."""
        self._broken()

    def _broken(self) -> None:
        if self in self._pool.idle:
            self._pool.idle.remove(self)
        client, self._client = self._client, None
        if client is not None:
            client.abort()
        if self._transport is not None:
            self._transport.close()


class ClientSide(asyncio.Protocol):
    """One client connection: gathers each request's bytes and forwards them."""

    def __init__(self, pool: Pool) -> None:
        self._pool = pool
        self._parser = httptools.HttpRequestParser(self)
        self._transport: asyncio.Transport | None = None
        self._parts: list[bytes] = []
        self._complete = False

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        """Keep the transport."""
        self._transport = cast(asyncio.Transport, transport)

    def data_received(self, data: bytes) -> None:
        """Collect the request; forward it once whole."""
        self._parts.append(data)
        try:
            self._parser.feed_data(data)
        except httptools.HttpParserError:
            self.abort()
            return
        if self._complete:
            self._complete = False
            request, self._parts = b"".join(self._parts), []
            if self._pool.idle:
                self._pool.idle.pop().send(self, request)
            else:
                task = asyncio.ensure_future(self._forward_new(request))
                _CONNECTING.add(task)
                task.add_done_callback(_CONNECTING.discard)

    async def _forward_new(self, request: bytes) -> None:
        try:
            upstream = await self._pool.connect()
        except OSError:
            self.write(BAD_GATEWAY)
            self.abort()
            return
        upstream.send(self, request)

    def on_message_complete(self) -> None:
        """Parser callback: the request is complete."""
        self._complete = True

    def write(self, data: bytes) -> None:
        """Relay reply bytes to the client."""
        if self._transport is not None:
            self._transport.write(data)

    def reply_finished(self) -> None:
        """The upstream finished this client's reply (keep-alive: wait for the next request)."""

    def abort(self) -> None:
        """Close the client connection."""
        if self._transport is not None:
            self._transport.close()


_CONNECTING: set[asyncio.Future[None]] = set()


async def serve(upstream_port: int, port_file: Path) -> None:
    """Listen on a free loopback port until SIGTERM or SIGINT."""
    pool = Pool(upstream_port)
    await serve_until_signalled(lambda: ClientSide(pool), port_file)


def main() -> None:
    """Parse the command line and serve."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--upstream-port", type=int, required=True)
    parser.add_argument("--port-file", type=Path, required=True)
    args = parser.parse_args()
    run_on_fastest_loop(serve(args.upstream_port, args.port_file))


if __name__ == "__main__":
    main()
