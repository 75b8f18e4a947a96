"""A fake LLM upstream for tests: OpenAI and Anthropic wire formats on 127.0.0.1, with faults.

Serves (matching the path's end, so any prefix works, e.g. ``/v1/...``):

- ``POST .../chat/completions``: stream or not; ``stream_options.include_usage`` honoured;
- ``POST .../responses``: stream or not (the event sequence Codex accepts);
- ``POST .../embeddings``: ``encoding_format`` float or base64 (the OpenAI SDK's default);
- ``POST .../messages``: stream or not (the event sequence Claude Code accepts);
- ``POST .../messages/count_tokens``; ``GET .../models``; anything else: 404.

It answers like a small model: the ``reply`` text, or, when the request has tools and the last
user text names one (and the last message is not a tool result), a call of that tool with
``{}`` arguments. With a ``script`` (a list of ``Turn``) it instead serves turn N, where N is
the number of assistant turns already in the history; past the end, the ``reply`` text.

Usage is exact and predictable:

- input tokens (``prompt_tokens(body)``): one per whitespace-separated word of the text the
  model reads (strings under system, instructions, messages/input content, text, tool output
  and arguments), at least 1. Anthropic's ``input_tokens`` and the OpenAI wires' uncached input
  are this number; with ``cached_tokens=N`` Anthropic also reports N
  ``cache_read_input_tokens`` and the OpenAI wires add N to prompt/input tokens and report them
  as ``cached_tokens``;
- output tokens: one per word of the reply text (each streamed text delta is one word) plus
  ``TOOL_CALL_TOKENS`` per tool call, at least 1;
- embeddings: one token per word of every input.

Every request is recorded in ``requests`` (``Received``: method, path, query, lower-cased
headers, parsed body, peer); ``connections`` counts the distinct client connections seen.

Faults, queued and consumed one per request in order (``path=`` restricts one to requests
whose path ends with it; ``times=`` repeats it):

- ``fail(status, message=..., body=..., headers=..., retry_after=...)``: answer ``status``
  with an error body in the shape of the API called (or ``body``);
- ``stall_headers(seconds=FOREVER)``: wait before sending the status and headers;
- ``stall_stream(after, seconds=FOREVER)``: send the headers and ``after`` events (pieces of
  a non-stream body), then wait; after ``seconds`` the reply finishes normally;
- ``cut(after)``: send the headers and ``after`` events, then abort the connection (RST);
- ``drop()``: abort the connection before any reply;
- ``garbage(data)``: write ``data`` (not HTTP) instead of a reply, then close;
- ``slow(chunk_delay)``: wait ``chunk_delay`` seconds between events;
- ``inject(Fault(...))``: any combination of the above.

A non-stream body is sent as two pieces (halves) with a Content-Length, so ``stall_stream``
and ``cut`` with ``after=1`` leave it half sent. ``free_port()`` names a port nothing listens
on (for "connection refused").

In a test: ``async with FakeUpstream() as up: ... up.openai_url ...``. From synchronous code
(a server under test running in another thread): ``with FakeUpstream.threaded() as up: ...``.
As a process: ``python -m tests.gateway.upstream --port-file F [--script turns.json]``.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import hashlib
import itertools
import math
import re
import socket
import struct
import threading
import time
from collections import deque
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager, suppress
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import orjson
from aiohttp import web

FOREVER = math.inf
TOOL_CALL_TOKENS = 10
DEFAULT_REPLY = "Hello from the fake upstream."
EMBEDDING_SIZE = 8
_TEXT_KEYS = frozenset(
    {"content", "text", "system", "instructions", "input", "output", "arguments", "thinking"}
)
_OPENAI_ERROR_TYPES = {400: "invalid_request_error", 401: "authentication_error"}
_ANTHROPIC_ERROR_TYPES = {
    400: "invalid_request_error",
    401: "authentication_error",
    429: "rate_limit_error",
    529: "overloaded_error",
}


def free_port() -> int:
    """A loopback TCP port nothing listens on right now (connections to it are refused)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def words(text: str) -> int:
    """Whitespace-separated words in ``text``."""
    return len(text.split())


def _text_words(value: Any, is_text: bool = True) -> int:
    if isinstance(value, str):
        return words(value) if is_text else 0
    if isinstance(value, list):
        return sum(_text_words(v, is_text) for v in value)
    if isinstance(value, dict):
        return sum(_text_words(v, k in _TEXT_KEYS) for k, v in value.items())
    return 0


def prompt_tokens(body: Mapping[str, Any]) -> int:
    """The input tokens the fake reports for a request body (see the module docstring)."""
    total = sum(_text_words(body.get(k)) for k in ("system", "instructions", "messages", "input"))
    return max(1, total)


@dataclass(frozen=True, slots=True)
class Turn:
    """One scripted reply: some text, and optionally one tool call."""

    text: str = ""
    tool: str | None = None
    arguments: Mapping[str, Any] | str = field(default_factory=dict)
    namespace: str | None = None  # Responses only: Codex's MCP tools are namespaced

    @property
    def arguments_json(self) -> str:
        """The tool arguments as the JSON string the OpenAI wires carry."""
        if isinstance(self.arguments, str):
            return self.arguments
        return orjson.dumps(self.arguments).decode()

    @property
    def output_tokens(self) -> int:
        """Output tokens of this reply."""
        return max(1, words(self.text) + (TOOL_CALL_TOKENS if self.tool else 0))

    def pieces(self) -> list[str]:
        """The text as streamed: one word (with its trailing space) per event."""
        return re.findall(r"\S+\s*", self.text)


@dataclass(frozen=True, slots=True)
class Fault:
    """A scripted misbehaviour for one request (see the module docstring)."""

    status: int | None = None
    message: str = "injected failure"
    body: Any = None
    headers: Mapping[str, str] = field(default_factory=dict)
    delay: float = 0.0
    drop: bool = False
    raw: bytes | None = None
    stall_after: int | None = None
    stall_for: float = FOREVER
    cut_after: int | None = None
    chunk_delay: float = 0.0
    path: str | None = None
    times: int = 1


NO_FAULT = Fault()


@dataclass(frozen=True, slots=True)
class Received:
    """One request as the fake upstream received it."""

    method: str
    path: str
    query: dict[str, str]
    headers: dict[str, str]
    body: Any
    peer: tuple[str, int]


@dataclass(slots=True)
class _Reply:
    status: int
    content_type: str
    pieces: list[bytes]
    stream: bool


class FakeUpstream:
    """A fake OpenAI/Anthropic server on 127.0.0.1 with recorded requests and queued faults."""

    def __init__(
        self,
        *,
        reply: str = DEFAULT_REPLY,
        script: list[Turn] | None = None,
        cached_tokens: int = 0,
        port: int = 0,
    ) -> None:
        self.reply = reply
        self.script = script
        self.cached_tokens = cached_tokens
        self.requests: list[Received] = []
        self.port = port
        self._faults: deque[Fault] = deque()
        self._ids = itertools.count(1)
        self._runner: web.AppRunner | None = None
        self._closing: asyncio.Event | None = None

    # ---- the fault API

    def inject(self, fault: Fault) -> None:
        """Queue ``fault`` for the next request(s) matching its path."""
        self._faults.append(fault)

    def fail(
        self,
        status: int = 500,
        *,
        message: str = "injected failure",
        body: Any = None,
        headers: Mapping[str, str] | None = None,
        retry_after: float | None = None,
        path: str | None = None,
        times: int = 1,
    ) -> None:
        """Answer the next request with ``status`` and an error body."""
        extra = dict(headers or {})
        if retry_after is not None:
            extra["Retry-After"] = f"{retry_after:g}"
        self.inject(Fault(status, message, body, extra, path=path, times=times))

    def stall_headers(
        self, seconds: float = FOREVER, *, path: str | None = None, times: int = 1
    ) -> None:
        """Wait ``seconds`` before sending the next reply's headers."""
        self.inject(Fault(delay=seconds, path=path, times=times))

    def stall_stream(
        self, after: int, seconds: float = FOREVER, *, path: str | None = None, times: int = 1
    ) -> None:
        """Send headers and ``after`` events, then wait ``seconds`` before the rest."""
        self.inject(Fault(stall_after=after, stall_for=seconds, path=path, times=times))

    def cut(self, after: int = 0, *, path: str | None = None, times: int = 1) -> None:
        """Send headers and ``after`` events, then abort the connection."""
        self.inject(Fault(cut_after=after, path=path, times=times))

    def drop(self, *, path: str | None = None, times: int = 1) -> None:
        """Abort the connection before any reply."""
        self.inject(Fault(drop=True, path=path, times=times))

    def garbage(self, data: bytes = b"NOT HTTP AT ALL\r\n\r\n", *, path: str | None = None) -> None:
        """Write ``data`` instead of an HTTP reply, then close the connection."""
        self.inject(Fault(raw=data, path=path))

    def slow(self, chunk_delay: float, *, path: str | None = None, times: int = 1) -> None:
        """Wait ``chunk_delay`` seconds between the events of the next reply."""
        self.inject(Fault(chunk_delay=chunk_delay, path=path, times=times))

    def _take_fault(self, path: str) -> Fault:
        for fault in self._faults:
            if fault.path is None or path.endswith(fault.path):
                self._faults.remove(fault)
                if fault.times > 1:
                    self._faults.appendleft(replace(fault, times=fault.times - 1))
                return fault
        return NO_FAULT

    # ---- where it is, what it saw

    @property
    def url(self) -> str:
        """The server's root URL (an Anthropic base URL)."""
        return f"http://127.0.0.1:{self.port}"

    @property
    def openai_url(self) -> str:
        """The server's OpenAI base URL (with ``/v1``)."""
        return f"{self.url}/v1"

    @property
    def connections(self) -> int:
        """Distinct client connections that sent requests."""
        return len({r.peer for r in self.requests})

    @property
    def last(self) -> Received:
        """The most recent request."""
        return self.requests[-1]

    # ---- lifecycle

    async def start(self) -> None:
        """Listen on 127.0.0.1 (on a free port unless one was given)."""
        self._closing = asyncio.Event()
        app = web.Application(client_max_size=64 * 1024 * 1024)
        app.router.add_route("*", "/{tail:.*}", self._handle)
        self._runner = web.AppRunner(
            app, access_log=None, handle_signals=False, shutdown_timeout=1.0
        )
        await self._runner.setup()
        site = web.TCPSite(self._runner, "127.0.0.1", self.port)
        await site.start()
        self.port = int(self._runner.addresses[0][1])

    async def stop(self) -> None:
        """Wake stalled replies (they abort) and close the server."""
        if self._closing is not None:
            self._closing.set()
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None

    async def __aenter__(self) -> FakeUpstream:
        await self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.stop()

    @classmethod
    @contextmanager
    def threaded(cls, **kwargs: Any) -> Iterator[FakeUpstream]:
        """Run a FakeUpstream in its own thread and event loop for the block."""
        upstream = cls(**kwargs)
        loop = asyncio.new_event_loop()
        thread = threading.Thread(target=loop.run_forever, name="fake-upstream", daemon=True)
        thread.start()
        try:
            asyncio.run_coroutine_threadsafe(upstream.start(), loop).result(timeout=10)
            yield upstream
        finally:
            asyncio.run_coroutine_threadsafe(upstream.stop(), loop).result(timeout=10)
            loop.call_soon_threadsafe(loop.stop)
            thread.join(timeout=10)
            loop.close()

    # ---- serving

    async def _handle(self, request: web.Request) -> web.StreamResponse:
        raw = await request.read()
        body: Any = raw
        if raw:
            with suppress(orjson.JSONDecodeError):
                body = orjson.loads(raw)
        peer = request.transport.get_extra_info("peername") if request.transport else None
        self.requests.append(
            Received(
                request.method,
                request.path,
                dict(request.query),
                {k.lower(): v for k, v in request.headers.items()},
                body,
                tuple(peer[:2]) if peer else ("?", 0),
            )
        )
        fault = self._take_fault(request.path)
        if fault.delay and not await self._pause(fault.delay):
            return self._abort(request)
        if fault.drop:
            return self._abort(request)
        if fault.raw is not None and request.transport is not None:
            request.transport.write(fault.raw)
            request.transport.close()
            return web.Response(status=499)
        reply = self._answer(request, body if isinstance(body, dict) else {}, fault)
        return await self._send(request, reply, fault)

    def _answer(self, request: web.Request, body: dict[str, Any], fault: Fault) -> _Reply:
        path = request.path.rstrip("/")
        anthropic = path.endswith(("/messages", "/messages/count_tokens"))
        if fault.status is not None:
            payload = fault.body if fault.body is not None else _error(fault, anthropic)
            data = payload if isinstance(payload, bytes) else orjson.dumps(payload)
            return _Reply(fault.status, "application/json", _halves(data), False)
        route = self._routes(request.method, path)
        if route is None:
            error = Fault(404, f"fake upstream: no route {request.method} {path}")
            return _Reply(
                404, "application/json", _halves(orjson.dumps(_error(error, True))), False
            )
        return route(body)

    def _routes(self, method: str, path: str) -> Callable[[dict[str, Any]], _Reply] | None:
        if method == "GET" and path.endswith("/models"):
            return self._models
        if method != "POST":
            return None
        for suffix, route in (
            ("/messages/count_tokens", self._count_tokens),
            ("/messages", self._messages),
            ("/chat/completions", self._chat),
            ("/responses", self._responses),
            ("/embeddings", self._embeddings),
        ):
            if path.endswith(suffix):
                return route
        return None

    async def _send(self, request: web.Request, reply: _Reply, fault: Fault) -> web.StreamResponse:
        n = next(self._ids)
        resp = web.StreamResponse(
            status=reply.status,
            headers={
                **fault.headers,
                "x-request-id": f"req_fake{n:06d}",
                "request-id": f"req_fake{n:06d}",
            },
        )
        resp.content_type = reply.content_type
        if reply.stream:
            resp.headers["Cache-Control"] = "no-cache"
        else:
            resp.content_length = sum(len(p) for p in reply.pieces)
        await resp.prepare(request)
        for index, piece in enumerate(reply.pieces):
            if index == fault.cut_after:
                return self._abort(request, resp)
            if index == fault.stall_after and not await self._pause(fault.stall_for):
                return self._abort(request, resp)
            if fault.chunk_delay and index:
                await asyncio.sleep(fault.chunk_delay)
            await resp.write(piece)
        if fault.cut_after is not None and fault.cut_after >= len(reply.pieces):
            return self._abort(request, resp)
        await resp.write_eof()
        return resp

    async def _pause(self, seconds: float) -> bool:
        """Wait ``seconds`` (or until the server stops); whether the reply should go on."""
        assert self._closing is not None
        try:
            await asyncio.wait_for(self._closing.wait(), None if seconds == FOREVER else seconds)
        except TimeoutError:
            return True
        return False

    @staticmethod
    def _abort(request: web.Request, resp: web.StreamResponse | None = None) -> web.StreamResponse:
        if request.transport is not None:
            request.transport.abort()
        return resp if resp is not None else web.Response(status=499)

    # ---- the model

    def _turn(self, body: dict[str, Any], assistant_turns: int) -> Turn:
        if self.script is not None:
            if assistant_turns < len(self.script):
                return self.script[assistant_turns]
            return Turn(self.reply)
        if not _last_is_tool_result(body):
            asked = _last_user_text(body)
            tool = next((n for n in _tool_names(body) if n in asked), None)
            if tool:
                return Turn(tool=tool)
        return Turn(self.reply)

    def _usage_numbers(self, body: dict[str, Any], turn: Turn) -> tuple[int, int, int]:
        return prompt_tokens(body), self.cached_tokens, turn.output_tokens

    def _models(self, body: dict[str, Any]) -> _Reply:
        names = ["fake-model", "claude-fake", "gpt-fake"]
        data = [{"id": m, "object": "model", "type": "model", "created": 0} for m in names]
        return _json({"object": "list", "data": data, "has_more": False})

    def _count_tokens(self, body: dict[str, Any]) -> _Reply:
        return _json({"input_tokens": prompt_tokens(body)})

    def _embeddings(self, body: dict[str, Any]) -> _Reply:
        raw = body.get("input")
        inputs: list[Any] = raw if isinstance(raw, list) else [raw]
        base64_format = body.get("encoding_format") == "base64"
        data = []
        for index, item in enumerate(inputs):
            vector = _vector(orjson.dumps(item))
            embedding: Any = vector
            if base64_format:
                embedding = base64.b64encode(struct.pack(f"<{len(vector)}f", *vector)).decode()
            data.append({"object": "embedding", "index": index, "embedding": embedding})
        tokens = max(1, sum(words(i) if isinstance(i, str) else len(i or ()) for i in inputs))
        usage = {"prompt_tokens": tokens, "total_tokens": tokens}
        return _json({"object": "list", "data": data, "model": body.get("model"), "usage": usage})

    def _messages(self, body: dict[str, Any]) -> _Reply:
        turn = self._turn(body, _runs(body.get("messages"), _is_assistant_message))
        uncached, cached, output = self._usage_numbers(body, turn)
        n = next(self._ids)
        blocks: list[dict[str, Any]] = []
        if turn.text:
            blocks.append({"type": "text", "text": turn.text})
        if turn.tool:
            arguments = orjson.loads(turn.arguments_json)
            blocks.append(
                {
                    "type": "tool_use",
                    "id": f"toolu_fake{n:06d}",
                    "name": turn.tool,
                    "input": arguments,
                }
            )
        stop = "tool_use" if turn.tool else "end_turn"
        usage = {
            "input_tokens": uncached,
            "output_tokens": output,
            "cache_creation_input_tokens": 0,
            "cache_read_input_tokens": cached,
        }
        message = {
            "id": f"msg_fake{n:06d}",
            "type": "message",
            "role": "assistant",
            "model": body.get("model", "fake-model"),
            "content": blocks,
            "stop_reason": stop,
            "stop_sequence": None,
            "usage": usage,
        }
        if not body.get("stream"):
            return _json(message)
        start = {
            **message,
            "content": [],
            "stop_reason": None,
            "usage": {**usage, "output_tokens": 1},
        }
        events = [_sse("message_start", {"type": "message_start", "message": start})]
        events.append(_sse("ping", {"type": "ping"}))
        for index, block in enumerate(blocks):
            events.extend(_anthropic_block(index, block, turn))
        delta = {"stop_reason": stop, "stop_sequence": None}
        end_usage = {"output_tokens": output}
        events.append(
            _sse("message_delta", {"type": "message_delta", "delta": delta, "usage": end_usage})
        )
        events.append(_sse("message_stop", {"type": "message_stop"}))
        return _Reply(200, "text/event-stream", events, True)

    def _chat(self, body: dict[str, Any]) -> _Reply:
        turn = self._turn(body, _runs(body.get("messages"), _is_assistant_message))
        uncached, cached, output = self._usage_numbers(body, turn)
        n = next(self._ids)
        usage = {
            "prompt_tokens": uncached + cached,
            "completion_tokens": output,
            "total_tokens": uncached + cached + output,
            "prompt_tokens_details": {"cached_tokens": cached},
            "completion_tokens_details": {"reasoning_tokens": 0},
        }
        calls = []
        if turn.tool:
            function = {"name": turn.tool, "arguments": turn.arguments_json}
            calls.append({"id": f"call_fake{n:06d}", "type": "function", "function": function})
        finish = "tool_calls" if calls else "stop"
        base = {
            "id": f"chatcmpl-fake{n:06d}",
            "created": int(time.time()),
            "model": body.get("model", "fake-model"),
        }
        if not body.get("stream"):
            message: dict[str, Any] = {"role": "assistant", "content": turn.text or None}
            if calls:
                message["tool_calls"] = calls
            choice = {"index": 0, "message": message, "finish_reason": finish, "logprobs": None}
            return _json({**base, "object": "chat.completion", "choices": [choice], "usage": usage})
        chunk = {**base, "object": "chat.completion.chunk"}

        def event(delta: dict[str, Any], reason: str | None = None) -> bytes:
            choice = {"index": 0, "delta": delta, "finish_reason": reason}
            return _sse(None, {**chunk, "choices": [choice]})

        events = [event({"role": "assistant", "content": ""})]
        events.extend(event({"content": piece}) for piece in turn.pieces())
        events.extend(event({"tool_calls": [{"index": 0, **call}]}) for call in calls)
        events.append(event({}, finish))
        if (body.get("stream_options") or {}).get("include_usage"):
            events.append(_sse(None, {**chunk, "choices": [], "usage": usage}))
        events.append(b"data: [DONE]\n\n")
        return _Reply(200, "text/event-stream", events, True)

    def _responses(self, body: dict[str, Any]) -> _Reply:
        turn = self._turn(body, _runs(body.get("input"), _is_assistant_item))
        uncached, cached, output = self._usage_numbers(body, turn)
        n = next(self._ids)
        items: list[dict[str, Any]] = []
        if turn.text:
            part = {"type": "output_text", "text": turn.text, "annotations": []}
            items.append(
                {
                    "type": "message",
                    "id": f"msg_fake{n:06d}",
                    "status": "completed",
                    "role": "assistant",
                    "content": [part],
                }
            )
        if turn.tool:
            call = {
                "type": "function_call",
                "id": f"fc_fake{n:06d}",
                "status": "completed",
                "call_id": f"call_fake{n:06d}",
                "name": turn.tool,
                "arguments": turn.arguments_json,
            }
            if turn.namespace:
                call["namespace"] = turn.namespace
            items.append(call)
        usage = {
            "input_tokens": uncached + cached,
            "input_tokens_details": {"cached_tokens": cached},
            "output_tokens": output,
            "output_tokens_details": {"reasoning_tokens": 0},
            "total_tokens": uncached + cached + output,
        }
        response = {
            "id": f"resp_fake{n:06d}",
            "object": "response",
            "created_at": int(time.time()),
            "model": body.get("model", "fake-model"),
            "parallel_tool_calls": True,
            "tool_choice": "auto",
            "tools": [],
            "error": None,
            "incomplete_details": None,
        }
        done = {**response, "status": "completed", "output": items, "usage": usage}
        if not body.get("stream"):
            return _json(done)
        return _Reply(200, "text/event-stream", _responses_events(response, items, done), True)


def _json(payload: Any) -> _Reply:
    return _Reply(200, "application/json", _halves(orjson.dumps(payload)), False)


def _halves(data: bytes) -> list[bytes]:
    middle = len(data) // 2
    return [data[:middle], data[middle:]] if middle else [data]


def _sse(name: str | None, data: Any) -> bytes:
    head = b"event: " + name.encode() + b"\n" if name else b""
    return head + b"data: " + orjson.dumps(data) + b"\n\n"


def _error(fault: Fault, anthropic: bool) -> dict[str, Any]:
    status = fault.status or 500
    if anthropic:
        kind = _ANTHROPIC_ERROR_TYPES.get(status, "api_error")
        return {"type": "error", "error": {"type": kind, "message": fault.message}}
    kind = _OPENAI_ERROR_TYPES.get(status, "server_error" if status >= 500 else "invalid_request")
    return {"error": {"message": fault.message, "type": kind, "param": None, "code": None}}


def _vector(seed: bytes) -> list[float]:
    digest = hashlib.sha256(seed).digest()
    return [round(b / 255, 4) for b in digest[:EMBEDDING_SIZE]]


def _anthropic_block(index: int, block: dict[str, Any], turn: Turn) -> list[bytes]:
    def delta(payload: dict[str, Any]) -> bytes:
        return _sse(
            "content_block_delta",
            {"type": "content_block_delta", "index": index, "delta": payload},
        )

    start: dict[str, Any]
    if block["type"] == "text":
        start = {"type": "text", "text": ""}
        deltas = [delta({"type": "text_delta", "text": p}) for p in turn.pieces()]
    else:
        start = {**block, "input": {}}
        deltas = [delta({"type": "input_json_delta", "partial_json": turn.arguments_json})]
    opened = {"type": "content_block_start", "index": index, "content_block": start}
    closed = {"type": "content_block_stop", "index": index}
    return [_sse("content_block_start", opened), *deltas, _sse("content_block_stop", closed)]


def _responses_events(
    response: dict[str, Any], items: list[dict[str, Any]], done: dict[str, Any]
) -> list[bytes]:
    sequence = itertools.count()

    def event(name: str, payload: dict[str, Any]) -> bytes:
        return _sse(name, {"type": name, "sequence_number": next(sequence), **payload})

    pending = {**response, "status": "in_progress", "output": [], "usage": None}
    events = [
        event("response.created", {"response": pending}),
        event("response.in_progress", {"response": pending}),
    ]
    for oi, item in enumerate(items):
        where = {"item_id": item["id"], "output_index": oi}
        if item["type"] == "message":
            part = item["content"][0]
            text = part["text"]
            added = {**item, "status": "in_progress", "content": []}
            events.append(event("response.output_item.added", {"output_index": oi, "item": added}))
            empty = {**part, "text": ""}
            events.append(
                event("response.content_part.added", {**where, "content_index": 0, "part": empty})
            )
            events.extend(
                event("response.output_text.delta", {**where, "content_index": 0, "delta": piece})
                for piece in re.findall(r"\S+\s*", text)
            )
            events.append(
                event("response.output_text.done", {**where, "content_index": 0, "text": text})
            )
            events.append(
                event("response.content_part.done", {**where, "content_index": 0, "part": part})
            )
        else:
            added = {**item, "status": "in_progress", "arguments": ""}
            args = item["arguments"]
            events.append(event("response.output_item.added", {"output_index": oi, "item": added}))
            events.append(event("response.function_call_arguments.delta", {**where, "delta": args}))
            events.append(
                event("response.function_call_arguments.done", {**where, "arguments": args})
            )
        events.append(event("response.output_item.done", {"output_index": oi, "item": item}))
    events.append(event("response.completed", {"response": done}))
    return events


def _runs(history: Any, is_assistant: Callable[[Any], bool]) -> int:
    """Assistant turns in a history: maximal runs of assistant entries."""
    if not isinstance(history, list):
        return 0
    runs, previous = 0, False
    for entry in history:
        current = is_assistant(entry)
        runs += current and not previous
        previous = current
    return runs


def _is_assistant_message(message: Any) -> bool:
    return isinstance(message, dict) and message.get("role") == "assistant"


def _is_assistant_item(item: Any) -> bool:
    if not isinstance(item, dict):
        return False
    kind = item.get("type")
    if kind in ("function_call", "custom_tool_call", "local_shell_call", "reasoning"):
        return True
    return kind in ("message", None) and item.get("role") == "assistant"


def _history(body: dict[str, Any]) -> list[Any]:
    history = body.get("messages")
    if history is None:
        history = body.get("input")
    if isinstance(history, str):
        return [{"role": "user", "content": history}]
    return history if isinstance(history, list) else []


def _last_user_text(body: dict[str, Any]) -> str:
    for entry in reversed(_history(body)):
        if isinstance(entry, dict) and entry.get("role") == "user":
            content = entry.get("content")
            if isinstance(content, str):
                return content
            if isinstance(content, list):
                texts = [b.get("text") for b in content if isinstance(b, dict)]
                return " ".join(t for t in texts if isinstance(t, str))
    return ""


def _last_is_tool_result(body: dict[str, Any]) -> bool:
    history = _history(body)
    last = history[-1] if history else None
    if not isinstance(last, dict):
        return False
    if last.get("role") == "tool" or last.get("type") in (
        "function_call_output",
        "custom_tool_call_output",
    ):
        return True
    content = last.get("content")
    return isinstance(content, list) and any(
        isinstance(b, dict) and b.get("type") == "tool_result" for b in content
    )


def _tool_names(body: dict[str, Any]) -> list[str]:
    names = []
    for tool in body.get("tools") or []:
        if isinstance(tool, dict):
            name = tool.get("name") or (tool.get("function") or {}).get("name")
            if isinstance(name, str):
                names.append(name)
    return names


def load_script(path: Path) -> list[Turn]:
    """Turns from a JSON file: ``[{"text": ...}, {"tool": ..., "arguments": {...}}, ...]``."""
    return [Turn(**turn) for turn in orjson.loads(path.read_bytes())]


async def _serve(args: argparse.Namespace) -> None:
    script = load_script(args.script) if args.script else None
    async with FakeUpstream(reply=args.reply, script=script, port=args.port) as upstream:
        if args.port_file:
            tmp = args.port_file.with_suffix(".tmp")
            tmp.write_text(str(upstream.port))
            tmp.replace(args.port_file)
        print(f"fake upstream on {upstream.url}", flush=True)
        await asyncio.Event().wait()


def main(argv: list[str] | None = None) -> None:
    """Run the fake upstream until interrupted."""
    parser = argparse.ArgumentParser(description="A fake LLM upstream on 127.0.0.1.")
    parser.add_argument("--port", type=int, default=0)
    parser.add_argument("--port-file", type=Path)
    parser.add_argument("--reply", default=DEFAULT_REPLY)
    parser.add_argument("--script", type=Path, help="JSON list of turns")
    args = parser.parse_args(argv)
    with suppress(KeyboardInterrupt):
        asyncio.run(_serve(args))


if __name__ == "__main__":
    main()
