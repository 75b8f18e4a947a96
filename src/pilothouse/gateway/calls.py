"""One LLM call through the gateway, in the order every channel follows:

authenticate -> resolve the model -> forward -> relay -> settle (usage row) -> reply.

Written against raw ASGI: the hot path does not pay for the admin API's framework layers.
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import orjson
from starlette.types import Receive, Scope, Send

from pilothouse.errors import PilothouseError, StoreUnavailable
from pilothouse.gateway.config import DeploymentConfig
from pilothouse.gateway.prices import Price, PriceBook
from pilothouse.gateway.providers.base import Provider, UpstreamCall, UpstreamReply, WireFormat
from pilothouse.gateway.recorder import UsageRecorder
from pilothouse.gateway.routing import Router
from pilothouse.gateway.usage import Usage
from pilothouse.gateway.wire import StreamWatcher, error_body, usage_of_body
from pilothouse.identity.principal import Principal
from pilothouse.ids import new_id

if TYPE_CHECKING:
    from pilothouse.services import Services

log = logging.getLogger(__name__)

CLIENT_SESSION_HEADERS = ("x-claude-code-session-id", "session-id", "x-session-id")


class CallRefused(Exception):
    """A call Pilothouse refuses before forwarding: rendered in the client's error shape."""

    def __init__(self, status: int, code: str, message: str) -> None:
        super().__init__(message)
        self.status, self.code, self.message = status, code, message


@dataclass(slots=True)
class Call:
    """The state of one call while it is handled."""

    request_id: str
    wire: WireFormat
    endpoint: str
    headers: dict[str, str]
    started: float
    principal: Principal | None = None
    body: dict[str, Any] | None = None
    alias: str = ""
    deployment: DeploymentConfig | None = None
    price: Price | None = None
    stream: bool = False
    ttfb_ms: int | None = None
    retries: int = 0


class Gateway:
    """The gateway's pipeline, shared by every LLM endpoint."""

    def __init__(
        self,
        services: Services,
        router: Router,
        providers: Mapping[str, Provider],
        prices: PriceBook,
        recorder: UsageRecorder,
    ) -> None:
        self._svc = services
        self._router = router
        self._providers = providers
        self._prices = prices
        self._recorder = recorder

    @property
    def router(self) -> Router:
        """The model router."""
        return self._router

    async def handle(self, scope: Scope, receive: Receive, send: Send, wire: WireFormat) -> None:
        """Serve one LLM call end to end."""
        headers = {k.decode("latin-1"): v.decode("latin-1") for k, v in scope["headers"]}
        call = Call(
            request_id=new_id("req"),
            wire=wire,
            endpoint=scope["path"],
            headers=headers,
            started=time.monotonic(),
        )
        try:
            raw = await self._read_body(receive)
            call.principal = await self._authenticate(call, scope)
            self._parse(call, raw)
            reply = await self._forward(call)
        except CallRefused as refused:
            await _reply_error(send, call, refused.status, refused.code, refused.message)
            return
        if call.stream and reply.status == 200:
            await self._relay_stream(call, reply, send)
        else:
            await self._relay_whole(call, reply, send)

    async def authenticate_only(self, headers: dict[str, str], scope: Scope) -> Principal:
        """Authenticate a gateway request that forwards nothing (``GET /v1/models``)."""
        call = Call(new_id("req"), WireFormat.OPENAI_CHAT, scope["path"], headers, time.monotonic())
        return await self._authenticate(call, scope)

    async def _read_body(self, receive: Receive) -> bytes:
        limit = self._svc.settings.max_body_bytes
        parts, size = [], 0
        while True:
            message = await receive()
            if message["type"] == "http.disconnect":
                raise CallRefused(400, "client_disconnected", "the client went away")
            chunk = message.get("body", b"")
            size += len(chunk)
            if size > limit:
                raise CallRefused(413, "body_too_large", f"the body is over {limit} bytes")
            parts.append(chunk)
            if not message.get("more_body"):
                return b"".join(parts)

    async def _authenticate(self, call: Call, scope: Scope) -> Principal:
        try:
            return await self._svc.authenticate(call.headers, scope, call.request_id)
        except PilothouseError as exc:
            raise CallRefused(exc.status, exc.code, exc.message) from exc

    def _parse(self, call: Call, raw: bytes) -> None:
        try:
            body = orjson.loads(raw)
        except orjson.JSONDecodeError as exc:
            raise CallRefused(400, "invalid_json", "the request body is not valid JSON") from exc
        if not isinstance(body, dict):
            raise CallRefused(400, "invalid_request", "the request body must be a JSON object")
        model = body.get("model")
        if not isinstance(model, str) or not model:
            raise CallRefused(400, "invalid_request", "'model' is required and must be a string")
        if not isinstance(body.get("messages"), list):
            raise CallRefused(400, "invalid_request", "'messages' is required and must be a list")
        call.body = body
        call.alias = model
        call.stream = body.get("stream") is True

    async def _forward(self, call: Call) -> UpstreamReply:
        assert call.body is not None
        model = self._router.resolve(call.alias)
        if model is None:
            raise CallRefused(
                404, "model_not_found", f"model {call.alias!r} is not served by this gateway"
            )
        failures: list[str] = []
        for deployment in self._router.order(model):
            provider = self._providers.get(deployment.provider)
            if provider is None:
                failures.append(f"{deployment.id}: provider not available")
                continue
            price = self._prices.for_deployment(deployment)
            if price is None:
                failures.append(f"{deployment.id}: no price configured")
                continue
            call.deployment, call.price = deployment, price
            upstream = UpstreamCall(deployment, call.wire, self._upstream_body(call), call.stream)
            try:
                reply = await provider.send(upstream)
            except OSError as exc:
                failures.append(f"{deployment.id}: {exc}")
                call.retries += 1
                continue
            call.ttfb_ms = _ms(call.started)
            return reply
        raise CallRefused(
            502,
            "upstream_failed",
            f"no deployment of {call.alias!r} answered: {'; '.join(failures)}",
        )

    def _upstream_body(self, call: Call) -> dict[str, Any]:
        assert call.body is not None and call.deployment is not None
        body = {**call.body, "model": call.deployment.model}
        if call.stream and call.wire is WireFormat.OPENAI_CHAT:
            # Usage must come from the stream itself: ask for it, hide it if the client did not.
            body["stream_options"] = {**(body.get("stream_options") or {}), "include_usage": True}
        return body

    async def _relay_whole(self, call: Call, reply: UpstreamReply, send: Send) -> None:
        body = b"".join([chunk async for chunk in reply.chunks])
        usage = usage_of_body(call.wire, body) if reply.status == 200 else Usage()
        status = "ok" if reply.status == 200 else "upstream_error"
        try:
            await self._settle(call, usage, status, reply.status)
        except StoreUnavailable as exc:
            await _reply_error(send, call, 503, exc.code, exc.message)
            return
        await send(_start(reply.status, reply.content_type, call.request_id))
        await send({"type": "http.response.body", "body": body})

    async def _relay_stream(self, call: Call, reply: UpstreamReply, send: Send) -> None:
        asked = bool(((call.body or {}).get("stream_options") or {}).get("include_usage"))
        watcher = StreamWatcher(call.wire, hide_usage_chunk=not asked)
        status = "ok"
        try:
            await send(_start(200, "text/event-stream", call.request_id))
            async for chunk in reply.chunks:
                out = watcher.feed(chunk)
                if out:
                    await send({"type": "http.response.body", "body": out, "more_body": True})
        except OSError:
            status = "client_disconnected"
        finally:
            await reply.chunks.aclose()  # type: ignore[attr-defined]
        if status == "ok" and not watcher.finished:
            status = "upstream_incomplete"
        try:
            await self._settle(call, watcher.usage, status, 200)
        except StoreUnavailable as exc:
            log.error("usage of %s not recorded: %s", call.request_id, exc)
            return
        if status != "client_disconnected":
            tail = watcher.terminal + watcher.rest()
            await send({"type": "http.response.body", "body": tail, "more_body": False})

    async def _settle(self, call: Call, usage: Usage, status: str, http_status: int) -> None:
        principal = call.principal
        assert principal is not None and call.deployment is not None and call.price is not None
        session = principal.session
        await self._recorder.record(
            {
                "request_id": call.request_id,
                "org_id": principal.org_id,
                "session_id": principal.session_id,
                "key_id": principal.key_id,
                "user_id": (session.user_id if session else None) or principal.user_id,
                "team_id": session.team_id if session else None,
                "project": session.project if session else None,
                "repository": session.repository if session else None,
                "labels": json.dumps(dict(principal.labels), sort_keys=True),
                "skills": json.dumps(list(session.skills) if session else []),
                "plugins": json.dumps(list(session.plugins) if session else []),
                "client_session": _client_session(call.headers),
                "endpoint": call.endpoint,
                "model_alias": call.alias,
                "deployment": call.deployment.id,
                "upstream_model": call.deployment.model,
                "stream": int(call.stream),
                "input_tokens": usage.input_tokens,
                "output_tokens": usage.output_tokens,
                "cache_read_tokens": usage.cache_read_tokens,
                "cache_write_tokens": usage.cache_write_tokens,
                "reasoning_tokens": usage.reasoning_tokens,
                "cost_picos": call.price.cost_picos(usage),
                "price_version": call.price.version,
                "status": status,
                "http_status": http_status,
                "error": None,
                "retries": call.retries,
                "ttfb_ms": call.ttfb_ms,
                "latency_ms": _ms(call.started),
                "created_at": self._svc.clock.now(),
            }
        )


def _client_session(headers: Mapping[str, str]) -> str | None:
    for name in CLIENT_SESSION_HEADERS:
        value = headers.get(name)
        if value:
            return value[:100]
    return None


def _ms(started: float) -> int:
    return int((time.monotonic() - started) * 1000)


def _start(status: int, content_type: str, request_id: str) -> dict[str, Any]:
    headers = [
        (b"content-type", content_type.encode()),
        (b"x-request-id", request_id.encode()),
    ]
    if content_type == "text/event-stream":
        headers.append((b"cache-control", b"no-cache"))
    return {"type": "http.response.start", "status": status, "headers": headers}


async def _reply_error(send: Send, call: Call, status: int, code: str, message: str) -> None:
    await send(_start(status, "application/json", call.request_id))
    await send({"type": "http.response.body", "body": error_body(call.wire, status, code, message)})
