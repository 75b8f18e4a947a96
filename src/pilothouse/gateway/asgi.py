"""The gateway's ASGI endpoints, matched by path suffix so any base-URL prefix works."""

from __future__ import annotations

import time

import orjson
from starlette.types import Receive, Scope, Send

from pilothouse.gateway.calls import Gateway
from pilothouse.gateway.exchange import CallRefused
from pilothouse.gateway.providers.base import WireFormat
from pilothouse.gateway.wire import error_body

# Longest suffix first: /messages/count_tokens must not be taken for /messages.
ENDPOINTS = {
    "/chat/completions": WireFormat.OPENAI_CHAT,
    "/responses": WireFormat.OPENAI_RESPONSES,
    "/embeddings": WireFormat.OPENAI_EMBEDDINGS,
    "/messages/count_tokens": WireFormat.ANTHROPIC_COUNT_TOKENS,
    "/messages": WireFormat.ANTHROPIC_MESSAGES,
}


class GatewayASGI:
    """Dispatches ``/v1/...`` requests to the gateway pipeline."""

    def __init__(self, gateway: Gateway) -> None:
        self._gateway = gateway

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        """Serve one request."""
        path, method = scope["path"], scope["method"]
        for suffix, wire in ENDPOINTS.items():
            if path.endswith(suffix):
                if method != "POST":
                    await _plain(send, 405, error_body(wire, 405, "method_not_allowed", "use POST"))
                    return
                await self._gateway.handle(scope, receive, send, wire)
                return
        if path.endswith("/models") and method == "GET":
            await self._models(scope, send)
            return
        message = f"no gateway endpoint {method} {path}"
        await _plain(send, 404, error_body(WireFormat.OPENAI_CHAT, 404, "not_found", message))

    async def _models(self, scope: Scope, send: Send) -> None:
        headers = {k.decode("latin-1"): v.decode("latin-1") for k, v in scope["headers"]}
        try:
            aliases = await self._gateway.models_for(headers, scope)
        except CallRefused as refused:
            body = error_body(WireFormat.OPENAI_CHAT, refused.status, refused.code, refused.message)
            await _plain(send, refused.status, body)
            return
        created = int(time.time())
        data = [
            {"id": alias, "object": "model", "created": created, "owned_by": "pilothouse"}
            for alias in aliases
        ]
        await _plain(send, 200, orjson.dumps({"object": "list", "data": data}))


async def _plain(send: Send, status: int, body: bytes) -> None:
    await send(
        {
            "type": "http.response.start",
            "status": status,
            "headers": [(b"content-type", b"application/json")],
        }
    )
    await send({"type": "http.response.body", "body": body})
