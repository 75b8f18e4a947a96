"""The ASGI layer in front of every route: request ids, the body limit, and authentication.

Written as plain ASGI (not BaseHTTPMiddleware) so it adds no task or buffering per request.
Authentication happens here, before the body is parsed, so an unauthenticated caller learns
nothing about a route's schema; every failure is an audit event.
"""

from __future__ import annotations

import logging
import re
from typing import TYPE_CHECKING

from starlette.datastructures import Headers
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from pilothouse.api.errors import error_response
from pilothouse.errors import BodyTooLarge, PilothouseError
from pilothouse.ids import new_id

if TYPE_CHECKING:
    from pilothouse.services import Services

log = logging.getLogger(__name__)

REQUEST_ID_HEADER = "x-request-id"
_REQUEST_ID_RE = re.compile(r"^[A-Za-z0-9._:\-]{1,64}$")
AUTHENTICATED_PREFIXES = ("/api/v1/",)


class ApiMiddleware:
    """Assigns request ids, enforces the body limit and authenticates ``/api/v1``."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        """Handle one ASGI call."""
        if scope["type"] != "http":
            # (The gateway's /v1/ calls never get here: PilothouseApp dispatches them first.)
            await self.app(scope, receive, send)
            return
        services: Services = scope["app"].state.services
        headers = Headers(scope=scope)
        given = headers.get(REQUEST_ID_HEADER, "")
        request_id = given if _REQUEST_ID_RE.match(given) else new_id("req")
        state = scope.setdefault("state", {})
        state["request_id"] = request_id
        send = _with_request_id(send, request_id)

        limit = services.settings.max_body_bytes
        declared = headers.get("content-length")
        if declared is not None and declared.isdigit() and int(declared) > limit:
            await _reply(scope, receive, send, _too_large(limit), request_id)
            return
        receive = _limited(receive, limit)

        if scope["path"].startswith(AUTHENTICATED_PREFIXES):
            try:
                state["principal"] = await services.authenticate(headers, scope, request_id)
            except PilothouseError as exc:
                await _reply(scope, receive, send, exc, request_id)
                return
        await self.app(scope, receive, send)


def _too_large(limit: int) -> BodyTooLarge:
    return BodyTooLarge(f"the request body is larger than the limit of {limit} bytes")


def _with_request_id(send: Send, request_id: str) -> Send:
    async def wrapped(message: Message) -> None:
        if message["type"] == "http.response.start":
            headers = list(message.get("headers", []))
            headers.append((REQUEST_ID_HEADER.encode(), request_id.encode()))
            message = {**message, "headers": headers}
        await send(message)

    return wrapped


def _limited(receive: Receive, limit: int) -> Receive:
    seen = 0

    async def wrapped() -> Message:
        nonlocal seen
        message = await receive()
        if message["type"] == "http.request":
            seen += len(message.get("body", b""))
            if seen > limit:
                raise _too_large(limit)
        return message

    return wrapped


async def _reply(
    scope: Scope, receive: Receive, send: Send, exc: PilothouseError, request_id: str
) -> None:
    response = error_response(exc, request_id)
    await response(scope, receive, send)
