"""The gateway floor: the least work the gateway issue asks of every call, written flat.

    python -m bench.gateway_floor --upstream-port P --port-file F --db D --key K   (repo root)

Not a product and not a design: it answers how fast a Python gateway on this machine can be
when it does, per call, what the issue's target requires ("authentication, attribution, usage
recording and audit on") and nothing more, with no layers between the socket and the work:

- raw asyncio (uvloop) protocols on both sides, httptools parsing requests and replies;
- authentication: the bearer token's SHA-256 looked up in a dict of keys (a key cache hit),
  giving the session's attribution (org, user, team, project, repository, labels);
- the body parsed with orjson, its ``model``, ``messages`` and ``stream`` checked, the alias
  resolved and the key's access to it checked, the upstream model put in, the body re-encoded
  (streams ask for ``stream_options.include_usage``);
- a pooled keep-alive upstream connection; the reply parsed; usage read from the JSON body or,
  for a stream, from the events that mention ``"usage"`` (events are relayed as they arrive,
  re-framed chunked; the usage chunk the client did not ask for is hidden);
- a usage row of Pilothouse's 32 columns, priced in integers, written by group commit
  (``executemany`` + ``COMMIT`` on a writer thread's own sqlite3 connection, WAL,
  ``synchronous=NORMAL``), and the call's last bytes (the whole reply, or a stream's
  ``data: [DONE]``) sent only once its row is committed: durable before finished.

It leaves out what a real gateway also does per call (request ids that sort by time, metrics,
spans, retries and fallback, timeouts, error shapes, cancellation on disconnect), so the real
gateway's cost per call can only be above this one's.
"""

from __future__ import annotations

import argparse
import asyncio
import hashlib
import itertools
import queue
import sqlite3
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, cast

import httptools
import orjson

from bench.gateway_upstream import run_on_fastest_loop, serve_until_signalled

HOST = "127.0.0.1"
ALIAS = "bench-model"
UPSTREAM_MODEL = "bench-upstream"
UPSTREAM_KEY = "sk-gateway-bench-upstream"
# Picodollars per token (3 and 15 dollars per million tokens).
PRICE_IN, PRICE_OUT = 3_000_000, 15_000_000
PRICE_VERSION = "bench-floor"
COLUMNS = [
    "request_id",
    "org_id",
    "session_id",
    "key_id",
    "user_id",
    "team_id",
    "project",
    "repository",
    "labels",
    "skills",
    "plugins",
    "client_session",
    "endpoint",
    "model_alias",
    "deployment",
    "upstream_model",
    "stream",
    "input_tokens",
    "output_tokens",
    "cache_read_tokens",
    "cache_write_tokens",
    "reasoning_tokens",
    "cost_picos",
    "price_version",
    "status",
    "http_status",
    "error",
    "retries",
    "estimated",
    "ttfb_ms",
    "latency_ms",
    "created_at",
]
INSERT = (
    f"INSERT INTO usage_records ({', '.join(COLUMNS)}) VALUES ({', '.join('?' * len(COLUMNS))})"
    " ON CONFLICT (request_id) DO NOTHING"
)
UNAUTHORIZED = b'{"error":{"message":"invalid key","type":"authentication_error","code":"bad_key"}}'
BAD_REQUEST = b'{"error":{"message":"bad request","type":"invalid_request_error","code":"bad"}}'


def _reply(status: bytes, body: bytes) -> bytes:
    head = b"HTTP/1.1 %s\r\ncontent-type: application/json\r\ncontent-length: %d\r\n\r\n"
    return head % (status, len(body)) + body


class Writer:
    """Group commit on a thread of its own: every row waiting is written in one transaction,
    then each row's callback runs on the event loop."""

    def __init__(self, path: Path, loop: asyncio.AbstractEventLoop) -> None:
        self._loop = loop
        self._queue: queue.SimpleQueue[tuple[tuple[Any, ...], Callable[[], None]]] = (
            queue.SimpleQueue()
        )
        conn = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
        conn.execute("PRAGMA journal_mode=WAL")
        conn.execute("PRAGMA synchronous=NORMAL")
        columns = ", ".join(
            f"{c} TEXT PRIMARY KEY" if c == "request_id" else f"{c}" for c in COLUMNS
        )
        conn.execute(f"CREATE TABLE IF NOT EXISTS usage_records ({columns})")
        self._conn = conn
        self.rows = 0
        threading.Thread(target=self._run, name="usage-writer", daemon=True).start()

    def put(self, row: tuple[Any, ...], done: Callable[[], None]) -> None:
        """Queue a row; ``done`` runs on the loop once it is committed."""
        self._queue.put((row, done))

    def _run(self) -> None:
        while True:
            batch = [self._queue.get()]
            while True:
                try:
                    batch.append(self._queue.get_nowait())
                except queue.Empty:
                    break
            self._conn.execute("BEGIN IMMEDIATE")
            self._conn.executemany(INSERT, [row for row, _ in batch])
            self._conn.execute("COMMIT")
            self.rows += len(batch)
            self._loop.call_soon_threadsafe(_run_all, [done for _, done in batch])


def _run_all(callbacks: list[Callable[[], None]]) -> None:
    for callback in callbacks:
        callback()


class Key:
    """What the key cache holds for a session key: its attribution, and the models it may use."""

    def __init__(self, token: str) -> None:
        self.key_id = "key_" + hashlib.sha256(token.encode()).hexdigest()[:16]
        self.org_id = "org_bench"
        self.session_id = "ses_bench"
        self.user_id = "usr_bench"
        self.team_id = "team_bench"
        self.project = "gateway-bench"
        self.repository = "pilothouse/gateway-bench"
        self.labels = {"bench": "gateway", "target": "floor", "use_case": "benchmark"}
        self.models = frozenset({ALIAS})


class Gateway:
    """Keys, the upstream pool and the writer, shared by every connection."""

    def __init__(self, upstream_port: int, writer: Writer, token: str) -> None:
        self.port = upstream_port
        self.writer = writer
        self.keys = {hashlib.sha256(token.encode()).digest(): Key(token)}
        self.idle: list[UpstreamSide] = []
        self.ids = itertools.count(1)
        self.head = (
            f"POST /v1/chat/completions HTTP/1.1\r\nhost: {HOST}:{upstream_port}\r\n"
            f"authorization: Bearer {UPSTREAM_KEY}\r\ncontent-type: application/json\r\n"
            "user-agent: pilothouse-bench-floor\r\ncontent-length: "
        ).encode()

    def send(self, call: Call, payload: bytes) -> None:
        """Forward on an idle connection, or a new one."""
        request = self.head + b"%d\r\n\r\n" % len(payload) + payload
        if self.idle:
            self.idle.pop().send(call, request)
            return
        task = asyncio.ensure_future(self._connect(call, request))
        _TASKS.add(task)
        task.add_done_callback(_TASKS.discard)

    async def _connect(self, call: Call, request: bytes) -> None:
        loop = asyncio.get_running_loop()
        try:
            _, side = await loop.create_connection(lambda: UpstreamSide(self), HOST, self.port)
        except OSError:
            call.client.write(_reply(b"502 Bad Gateway", b"{}"))
            return
        side.send(call, request)


_TASKS: set[asyncio.Future[None]] = set()


class Call:
    """One call in flight."""

    __slots__ = (
        "asked_usage",
        "buffer",
        "client",
        "key",
        "parts",
        "request_id",
        "started",
        "status",
        "stream",
        "terminal",
        "ttfb",
        "usage",
    )  # fmt: skip

    def __init__(self, client: ClientSide, key: Key, request_id: str, stream: bool) -> None:
        self.client = client
        self.key = key
        self.request_id = request_id
        self.stream = stream
        self.asked_usage = False
        self.started = time.monotonic()
        self.ttfb = 0.0
        self.status = 0
        self.parts: list[bytes] = []
        self.buffer = b""
        self.usage: dict[str, Any] = {}
        self.terminal = b""

    def head(self) -> None:
        """The reply's status line is in."""
        self.ttfb = (time.monotonic() - self.started) * 1000
        if self.stream and self.status == 200:
            self.client.write(
                b"HTTP/1.1 200 OK\r\ncontent-type: text/event-stream\r\n"
                b"transfer-encoding: chunked\r\nx-request-id: %s\r\n\r\n" % self.request_id.encode()
            )

    def body(self, data: bytes) -> None:
        """Reply body bytes: collected, or for a stream relayed event by event."""
        if not (self.stream and self.status == 200):
            self.parts.append(data)
            return
        self.buffer += data
        if b"\n\n" not in self.buffer:
            return
        complete, _, self.buffer = self.buffer.rpartition(b"\n\n")
        out = []
        for event in complete.split(b"\n\n"):
            if event == b"data: [DONE]":
                self.terminal = event + b"\n\n"
                continue
            if b'"usage"' in event:
                data_ = orjson.loads(event[6:])
                if data_.get("usage"):
                    self.usage = data_["usage"]
                    if not self.asked_usage and not data_.get("choices"):
                        continue
            out.append(event + b"\n\n")
        if out:
            piece = b"".join(out)
            self.client.write(b"%x\r\n%s\r\n" % (len(piece), piece))

    def complete(self, gateway: Gateway) -> None:
        """The reply is whole: price it, write its row, finish the reply once it is durable."""
        if not self.stream or self.status != 200:
            body = b"".join(self.parts)
            if self.status == 200:
                self.usage = orjson.loads(body).get("usage") or {}
        usage = self.usage
        inp, out = usage.get("prompt_tokens", 0), usage.get("completion_tokens", 0)
        key = self.key
        row = (
            self.request_id, key.org_id, key.session_id, key.key_id, key.user_id, key.team_id,
            key.project, key.repository, orjson.dumps(key.labels).decode(), "[]", "[]", None,
            "/v1/chat/completions", ALIAS, "bench-upstream", UPSTREAM_MODEL, int(self.stream),
            inp, out, 0, 0, 0, inp * PRICE_IN + out * PRICE_OUT, PRICE_VERSION,
            "ok" if self.status == 200 else "upstream_error", self.status, None, 0, 0,
            self.ttfb, (time.monotonic() - self.started) * 1000, time.time_ns(),
        )  # fmt: skip
        if self.stream and self.status == 200:
            tail = self.terminal
            last = b"%x\r\n%s\r\n0\r\n\r\n" % (len(tail), tail) if tail else b"0\r\n\r\n"
        else:
            head = (
                b"HTTP/1.1 %d OK\r\ncontent-type: application/json\r\ncontent-length: %d\r\n"
                b"x-request-id: %s\r\n\r\n"
            )
            last = head % (self.status, len(body), self.request_id.encode()) + body
        client = self.client
        gateway.writer.put(row, lambda: client.write(last))


class UpstreamSide(asyncio.Protocol):
    """One pooled keep-alive connection to the upstream."""

    def __init__(self, gateway: Gateway) -> None:
        self._gateway = gateway
        self._parser = httptools.HttpResponseParser(self)
        self._transport: asyncio.Transport | None = None
        self._call: Call | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        """Keep the transport."""
        self._transport = cast(asyncio.Transport, transport)

    def send(self, call: Call, request: bytes) -> None:
        """Send one request; its reply goes to ``call``."""
        assert self._transport is not None
        self._call = call
        self._transport.write(request)

    def data_received(self, data: bytes) -> None:
        """Feed the reply parser."""
        try:
            self._parser.feed_data(data)
        except httptools.HttpParserError:
            self.connection_lost(None)

    def on_headers_complete(self) -> None:
        """Parser callback."""
        call = self._call
        if call is not None:
            call.status = self._parser.get_status_code()
            call.head()

    def on_body(self, data: bytes) -> None:
        """Parser callback."""
        if self._call is not None:
            self._call.body(data)

    def on_message_complete(self) -> None:
        """Parser callback: settle the call and go back to the pool."""
        call, self._call = self._call, None
        self._gateway.idle.append(self)
        if call is not None:
            call.complete(self._gateway)

    def connection_lost(self, exc: Exception | None) -> None:
        """Leave the pool; a call still waiting gets a 502."""
        if self in self._gateway.idle:
            self._gateway.idle.remove(self)
        call, self._call = self._call, None
        if call is not None:
            call.client.abort()
        if self._transport is not None:
            self._transport.close()


class ClientSide(asyncio.Protocol):
    """One client connection: parse, authenticate, check, forward."""

    def __init__(self, gateway: Gateway) -> None:
        self._gateway = gateway
        self._parser = httptools.HttpRequestParser(self)
        self._transport: asyncio.Transport | None = None
        self._auth = b""
        self._body: list[bytes] = []

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        """Keep the transport."""
        self._transport = cast(asyncio.Transport, transport)

    def data_received(self, data: bytes) -> None:
        """Feed the request parser."""
        try:
            self._parser.feed_data(data)
        except httptools.HttpParserError:
            self.abort()

    def on_header(self, name: bytes, value: bytes) -> None:
        """Parser callback: the key."""
        if len(name) == 13 and name.lower() == b"authorization":
            self._auth = value

    def on_body(self, data: bytes) -> None:
        """Parser callback."""
        self._body.append(data)

    def on_message_complete(self) -> None:
        """Parser callback: a whole request; refuse it or forward it."""
        auth, raw = self._auth, b"".join(self._body)
        self._auth, self._body = b"", []
        gateway = self._gateway
        key = None
        if auth[:7] == b"Bearer ":
            key = gateway.keys.get(hashlib.sha256(auth[7:]).digest())
        if key is None:
            self.write(_reply(b"401 Unauthorized", UNAUTHORIZED))
            return
        try:
            body = orjson.loads(raw)
        except orjson.JSONDecodeError:
            body = None
        if not isinstance(body, dict):
            self.write(_reply(b"400 Bad Request", BAD_REQUEST))
            return
        model, stream = body.get("model"), body.get("stream", False)
        if (
            not isinstance(model, str)
            or not isinstance(body.get("messages"), list)
            or not isinstance(stream, bool)
        ):
            self.write(_reply(b"400 Bad Request", BAD_REQUEST))
            return
        if model not in key.models:
            self.write(_reply(b"403 Forbidden", BAD_REQUEST))
            return
        call = Call(self, key, f"req_{next(gateway.ids):016x}", stream)
        if stream:
            options = body.get("stream_options") or {}
            call.asked_usage = bool(options.get("include_usage"))
            body["stream_options"] = {**options, "include_usage": True}
        body["model"] = UPSTREAM_MODEL
        gateway.send(call, orjson.dumps(body))

    def write(self, data: bytes) -> None:
        """Bytes to the client."""
        if self._transport is not None:
            self._transport.write(data)

    def abort(self) -> None:
        """Close the client connection."""
        if self._transport is not None:
            self._transport.close()


async def serve(upstream_port: int, port_file: Path, db: Path, key: str) -> None:
    """Listen on a free loopback port until SIGTERM or SIGINT."""
    gateway = Gateway(upstream_port, Writer(db, asyncio.get_running_loop()), key)
    await serve_until_signalled(lambda: ClientSide(gateway), port_file)


def main() -> None:
    """Parse the command line and serve."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--upstream-port", type=int, required=True)
    parser.add_argument("--port-file", type=Path, required=True)
    parser.add_argument("--db", type=Path, required=True)
    parser.add_argument("--key", required=True, help="the session key callers present")
    args = parser.parse_args()
    run_on_fastest_loop(serve(args.upstream_port, args.port_file, args.db, args.key))


if __name__ == "__main__":
    main()
