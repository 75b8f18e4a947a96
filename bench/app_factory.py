"""The Pilothouse app as an import target (``bench.app_factory:create_app``) for any ASGI server.

Servers that take an import string (uvicorn's and granian's CLIs) build the app in their own
process, so the benchmark passes settings through the ``PILOTHOUSE_*`` environment variables that
:func:`pilothouse.settings.load_settings` reads; every server therefore serves the same
application code with the same settings.

Two bench-only paths are added:

- :data:`STREAM_PATH`: an unauthenticated Server-Sent Events response shaped like a fast LLM
  completion (16 small chunks, a usage event, ``[DONE]``), so the servers' streaming cost can be
  compared before the LLM gateway exists. It is appended after all of Pilothouse's routes, so it
  does not change how ``/healthz`` or ``/api/v1/whoami`` are routed.
- :data:`RAW_PATH`: answered by a plain ASGI function in front of FastAPI, so its cost is the
  server's own floor (what a route that skips the framework layers would pay). Every other
  request pays one extra function call and path comparison to get past it.
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator

from fastapi.responses import StreamingResponse
from starlette.types import ASGIApp, Receive, Scope, Send

from pilothouse.app import build_app
from pilothouse.settings import load_settings

STREAM_PATH = "/_bench/stream"
STREAM_CHUNKS = 16
RAW_PATH = "/_bench/raw"
_RAW_BODY = b'{"status":"ok"}'
_RAW_START = {
    "type": "http.response.start",
    "status": 200,
    "headers": [
        (b"content-type", b"application/json"),
        (b"content-length", str(len(_RAW_BODY)).encode()),
    ],
}
_RAW_BODY_MESSAGE = {"type": "http.response.body", "body": _RAW_BODY}


def _sse_events() -> list[bytes]:
    events = [
        "data: "
        + json.dumps(
            {
                "id": "chatcmpl-bench",
                "object": "chat.completion.chunk",
                "choices": [{"index": 0, "delta": {"content": f"tok{i} "}}],
            }
        )
        + "\n\n"
        for i in range(STREAM_CHUNKS)
    ]
    usage = {"usage": {"prompt_tokens": 256, "completion_tokens": STREAM_CHUNKS}}
    events.append("data: " + json.dumps(usage) + "\n\n")
    events.append("data: [DONE]\n\n")
    return [event.encode() for event in events]


_EVENTS = _sse_events()


async def _relay() -> AsyncIterator[bytes]:
    for event in _EVENTS:
        yield event


def with_raw_route(app: ASGIApp) -> ASGIApp:
    """``app``, except that a request for ``RAW_PATH`` is answered without the framework."""

    async def asgi(scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http" and scope["path"] == RAW_PATH:
            await send(_RAW_START)
            await send(_RAW_BODY_MESSAGE)
            return
        await app(scope, receive, send)

    return asgi


def create_app() -> ASGIApp:
    """Build the Pilothouse app from ``PILOTHOUSE_*`` settings, plus the bench-only paths."""
    app = build_app(load_settings())

    @app.get(STREAM_PATH, include_in_schema=False)
    async def bench_stream() -> StreamingResponse:
        """A fast SSE completion: each event is sent as its own body chunk."""
        return StreamingResponse(_relay(), media_type="text/event-stream")

    return with_raw_route(app)
