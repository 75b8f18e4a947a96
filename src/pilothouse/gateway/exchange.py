"""One call's state and its client side: the refusal type, the usage row and telemetry record
a settled call makes, and the ASGI messages that answer the client."""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from starlette.types import Message, Receive, Send

from pilothouse.budgets.contexts import CallShape
from pilothouse.budgets.model import Budget
from pilothouse.budgets.reserve import Reservation
from pilothouse.gateway.config import DeploymentConfig, ModelConfig
from pilothouse.gateway.prices import Price
from pilothouse.gateway.providers.base import WireFormat
from pilothouse.gateway.usage import Usage
from pilothouse.gateway.wire import error_body
from pilothouse.identity.principal import Principal
from pilothouse.memo import IdentityMemo
from pilothouse.secrets.redact import Redactor
from pilothouse.telemetry import CallRecord, operation_name

NO_SECRETS = Redactor.empty()  # immutable: one for every call that knows none yet

# The clients' own session ids (Claude Code, Codex, others): recorded as attribution hints.
CLIENT_SESSION_HEADERS = ("x-claude-code-session-id", "session-id", "x-session-id")


class CallRefused(Exception):
    """A call Pilothouse refuses or gives up on: rendered in the client's error shape."""

    def __init__(
        self,
        status: int,
        code: str,
        message: str,
        *,
        retry_after: float | None = None,
        details: Mapping[str, Any] | None = None,
    ) -> None:
        super().__init__(message)
        self.status, self.code, self.message = status, code, message
        self.retry_after = retry_after
        self.details = details


@dataclass(slots=True)
class Call:
    """The state of one call while it is handled."""

    request_id: str
    wire: WireFormat
    endpoint: str
    headers: dict[str, str]
    started: float
    started_ns: int
    principal: Principal | None = None
    body: dict[str, Any] | None = None
    alias: str = ""
    model: ModelConfig | None = None
    deployment: DeploymentConfig | None = None
    upstream_wire: WireFormat | None = None
    price: Price | None = None
    stream: bool = False
    ttfb_ms: int | None = None
    retries: int = 0
    estimated: bool = False
    error: str | None = None
    disconnected: bool = False
    finishing: bool = False
    passthrough: dict[str, str] = field(default_factory=dict)
    body_bytes: int = 0  # the request body's length
    budgets: tuple[Budget, ...] = ()  # the budgets the call counts against
    reservation: Reservation | None = None
    downgraded_from: str | None = None
    headers_out: list[tuple[bytes, bytes]] = field(default_factory=list)
    settled: bool = False
    bodies: dict[WireFormat, dict[str, Any]] = field(default_factory=dict)
    attribution: dict[str, Any] | None = None  # the usage row's fields from the principal
    redactor: Redactor = NO_SECRETS  # until the call is authenticated
    redacted: set[str] = field(default_factory=set)  # the secrets redacted (by name)


def usage_row(
    call: Call, usage: Usage, status: str, http_status: int, now: datetime
) -> dict[str, Any]:
    """The usage row of a settled call: attribution from its principal, cost from its price."""
    deployment = call.deployment
    return {
        **(call.attribution or attribution(call)),
        "model_alias": call.alias[:200],
        "downgraded_from": call.downgraded_from,
        "deployment": deployment.id if deployment else None,
        "upstream_model": deployment.model if deployment else None,
        "stream": int(call.stream),
        "input_tokens": usage.input_tokens,
        "output_tokens": usage.output_tokens,
        "cache_read_tokens": usage.cache_read_tokens,
        "cache_write_tokens": usage.cache_write_tokens,
        "reasoning_tokens": usage.reasoning_tokens,
        "cost_picos": call.price.cost_picos(usage) if call.price else 0,
        "price_version": call.price.version if call.price else None,
        "status": status,
        "http_status": http_status,
        "error": call.redactor.redact(call.error)[:1000] if call.error else None,
        "retries": call.retries,
        "estimated": int(call.estimated),
        "ttfb_ms": call.ttfb_ms,
        "latency_ms": elapsed_ms(call.started),
        "created_at": now,
    }


def call_shape(call: Call, fields: Mapping[str, Any]) -> CallShape:
    """What a budgeted call's reservation keeps of its usage row besides its request id, time
    and the principal's ``fields``: the call's shape, known before it is forwarded. If its
    process stops, the sweeper writes the row from these (the rest are
    ``budgets.ledger.ORPHANED_ROW``'s). Makes the call's attribution, which its usage row
    takes too."""
    attributed = call.attribution or attribution(call, fields)
    return (
        attributed["client_session"],
        attributed["endpoint"],
        call.alias[:200],
        call.downgraded_from,
        int(call.stream),
    )


def attribution(call: Call, fields: Mapping[str, Any] | None = None) -> dict[str, Any]:
    """The fields of the call's usage row that its principal and request decide (made once a
    call: a budgeted call's reservation context takes from it too); ``fields``, the
    principal's, if the caller has them already."""
    principal = call.principal
    assert principal is not None
    call.attribution = {
        "request_id": call.request_id,
        **(fields if fields is not None else principal_fields(principal)),
        "client_session": client_session(call.headers),
        "endpoint": call.endpoint[-40:],
    }
    return call.attribution


_principal_fields_made: IdentityMemo[dict[str, Any]] = IdentityMemo()


def principal_fields(principal: Principal) -> dict[str, Any]:
    """The usage row's fields its principal decides (made once per principal: one object per
    key record, see ``Authenticator``)."""
    found = _principal_fields_made.get(principal)
    if found is not None:
        return found
    session = principal.session
    fields = {
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
    }
    return _principal_fields_made.put(principal, fields)


def call_record(call: Call, row: dict[str, Any], usage: Usage) -> CallRecord:
    """What telemetry is told of a settled call (the same numbers as its usage row)."""
    principal = call.principal
    assert principal is not None
    deployment = call.deployment
    status, http_status = row["status"], row["http_status"]
    return CallRecord(
        request_id=call.request_id,
        operation=operation_name(call.wire),
        provider=deployment.provider if deployment else "",
        deployment=row["deployment"],
        request_model=row["model_alias"],
        response_model=row["upstream_model"],
        status=status,
        http_status=http_status,
        input_tokens=usage.input_tokens,
        output_tokens=usage.output_tokens,
        cache_read_tokens=usage.cache_read_tokens,
        cache_write_tokens=usage.cache_write_tokens,
        reasoning_tokens=usage.reasoning_tokens,
        cost_picos=row["cost_picos"],
        stream=call.stream,
        retries=call.retries,
        ttfb_ms=call.ttfb_ms,
        started_ns=call.started_ns,
        ended_ns=time.time_ns(),
        org_id=principal.org_id,
        session_id=principal.session_id,
        user_id=row["user_id"],
        team_id=row["team_id"],
        project=row["project"],
        repository=row["repository"],
        traceparent=call.headers.get("traceparent"),
        error=row["error"],
        endpoint=call.endpoint,
    )


async def watch_disconnect(receive: Receive, call: Call, task: asyncio.Task[Any] | None) -> None:
    """Cancel the call's task if its client goes away before the reply is finished."""
    while True:
        message: Message = await receive()
        if message["type"] == "http.disconnect":
            if not call.finishing and task is not None:
                call.disconnected = True
                task.cancel()
            return


def uncancel() -> None:
    """Take back the cancellation a client's disconnect caused, to record what was used."""
    task = asyncio.current_task()
    if task is not None:
        task.uncancel()


def client_session(headers: Mapping[str, str]) -> str | None:
    """The client's own session id, if it sent one."""
    for name in CLIENT_SESSION_HEADERS:
        value = headers.get(name)
        if value:
            return value[:100]
    return None


def elapsed_ms(started: float) -> int:
    """Milliseconds since the monotonic time ``started``."""
    return int((time.monotonic() - started) * 1000)


def start_message(
    status: int,
    content_type: str,
    request_id: str,
    retry_after: float | None = None,
    extra: list[tuple[bytes, bytes]] | None = None,
) -> dict[str, Any]:
    """The ASGI message that starts a reply (``extra``: more headers, such as rate limits')."""
    headers = [
        (b"content-type", content_type.encode()),
        (b"x-request-id", request_id.encode()),
    ]
    if extra:
        headers.extend(extra)
    if content_type == "text/event-stream":
        headers.append((b"cache-control", b"no-cache"))
    if retry_after is not None:
        headers.append((b"retry-after", str(max(1, round(retry_after))).encode()))
    return {"type": "http.response.start", "status": status, "headers": headers}


async def reply_error(send: Send, call: Call, refused: CallRefused) -> None:
    """Answer the client with ``refused`` in its API's error shape."""
    call.finishing = True
    start = start_message(
        refused.status, "application/json", call.request_id, refused.retry_after, call.headers_out
    )
    await send(start)
    message = call.redactor.redact(refused.message)  # an upstream's error may echo its key
    body = error_body(call.wire, refused.status, refused.code, message, refused.details)
    await send({"type": "http.response.body", "body": body})
