"""One LLM call through the gateway, in the order every endpoint follows:

read -> authenticate -> parse -> resolve the model -> check access -> forward (retries, fallback,
translation) -> relay -> settle -> finish the reply.

Every call is reserved before it is forwarded (its worst-case cost, on the counters of the
budgets and rate limits that apply, if any; ``gateway.reserve_every_call`` off: only calls
that some apply to). Settling writes the call's usage row and settles its reservation in the
same transaction, queued for the ledger's next tick without waiting for it: the reservation,
durable before the call was forwarded, already counts the call at its worst case, and the
sweeper settles it, estimated, should this process die first. The reply waits for the row to
be durable only where the call has no reservation (the row is its only record) or holds a slot
of a concurrent-calls limit (the slot comes back before the client hears the end, on every
replica, so a client that calls one at a time is never refused by its own last call).

Written against raw ASGI: the hot path does not pay for the admin API's framework layers.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

import orjson
from starlette.types import Receive, Scope, Send

from pilothouse.audit import chain
from pilothouse.budgets.ledger import Ledger, limit_headers, refused_headers
from pilothouse.budgets.limits import limits_for
from pilothouse.errors import (
    BudgetExceeded,
    PilothouseError,
    RateLimited,
    SecretNotGranted,
    StoreUnavailable,
)
from pilothouse.gateway.access import ModelAccess
from pilothouse.gateway.config import DeploymentConfig, ModelConfig
from pilothouse.gateway.exchange import (
    Call,
    CallRefused,
    call_record,
    call_shape,
    elapsed_ms,
    principal_fields,
    reply_error,
    start_message,
    uncancel,
    usage_row,
    watch_disconnect,
)
from pilothouse.gateway.prices import PriceBook
from pilothouse.gateway.providers.base import (
    PASS_THROUGH_HEADERS,
    Provider,
    UpstreamBroken,
    UpstreamCall,
    UpstreamError,
    UpstreamReply,
    UpstreamTimeout,
    WireFormat,
)
from pilothouse.gateway.replies import (
    ERROR_DETAIL_BYTES,
    close_reply,
    error_detail,
    prepend,
    retry_after_seconds,
)
from pilothouse.gateway.routing import Router
from pilothouse.gateway.translate import (
    StreamTranslator,
    TranslationError,
    tool_map,
    translate_error,
    translate_reply,
    translate_request,
)
from pilothouse.gateway.usage import Usage, estimate_tokens
from pilothouse.gateway.wire import StreamWatcher, sse_error, usage_of_body
from pilothouse.identity.principal import Principal
from pilothouse.ids import new_id
from pilothouse.memo import IdentityMemo
from pilothouse.secrets.redact import Redactor
from pilothouse.secrets.stream import SseRedactor, labels_in

if TYPE_CHECKING:
    from pilothouse.services import Services

log = logging.getLogger(__name__)

PASS_THROUGH = tuple(name for names in PASS_THROUGH_HEADERS.values() for name in names)
RETRYABLE_STATUS = frozenset({408, 409, 429, 500, 502, 503, 504, 529})
# Request wires a chat-like call may be translated to, by the client's wire, best first.
TRANSLATIONS: dict[WireFormat, tuple[WireFormat, ...]] = {
    WireFormat.ANTHROPIC_MESSAGES: (WireFormat.OPENAI_CHAT,),
    WireFormat.OPENAI_CHAT: (WireFormat.ANTHROPIC_MESSAGES,),
    WireFormat.OPENAI_RESPONSES: (WireFormat.OPENAI_CHAT, WireFormat.ANTHROPIC_MESSAGES),
}
# What each endpoint's body must hold.
REQUIRED_FIELD: dict[WireFormat, tuple[str, type | tuple[type, ...]]] = {
    WireFormat.OPENAI_CHAT: ("messages", list),
    WireFormat.ANTHROPIC_MESSAGES: ("messages", list),
    WireFormat.ANTHROPIC_COUNT_TOKENS: ("messages", list),
    WireFormat.OPENAI_RESPONSES: ("input", (list, str)),
    WireFormat.OPENAI_EMBEDDINGS: ("input", (list, str)),
}
# Where each wire format names the most output a call may produce.
OUTPUT_CAPS = ("max_tokens", "max_completion_tokens", "max_output_tokens")
NEVER_STREAMED = (WireFormat.OPENAI_EMBEDDINGS, WireFormat.ANTHROPIC_COUNT_TOKENS)


class _Skip(Exception):
    """This deployment cannot take this call at all (no provider, no price, no such wire)."""


class Gateway:
    """The gateway's pipeline, shared by every LLM endpoint."""

    def __init__(
        self,
        services: Services,
        router: Router,
        providers: Mapping[str, Provider],
        prices: PriceBook,
        access: ModelAccess,
        ledger: Ledger,
    ) -> None:
        self._svc = services
        self._router = router
        self._providers = providers
        self._prices = prices
        self._access = access
        self._ledger = ledger
        self._dearest_prices: IdentityMemo[tuple[tuple[int, int], ...]] = IdentityMemo()

    @property
    def router(self) -> Router:
        """The model router."""
        return self._router

    async def aclose(self) -> None:
        """Close every provider's connections."""
        for provider in self._providers.values():
            await provider.aclose()

    async def handle(self, scope: Scope, receive: Receive, send: Send, wire: WireFormat) -> None:
        """Serve one LLM call end to end."""
        headers = {k.decode("latin-1"): v.decode("latin-1") for k, v in scope["headers"]}
        call = Call(
            request_id=new_id("req"),
            wire=wire,
            endpoint=scope["path"],
            headers=headers,
            started=time.monotonic(),
            started_ns=time.time_ns(),
        )
        try:
            raw = await self._read_body(receive)
            call.principal = await self._authenticate(call, scope)
            call.redactor = await self._redactor()
            self._parse(call, raw)
            await self._admit(call)
            if wire is WireFormat.ANTHROPIC_COUNT_TOKENS:
                await self._count_tokens(call, send)
                return
            await self._reserve(call)
        except CallRefused as refused:
            await reply_error(send, call, refused)
            return
        # The loop looked up once: on Python 3.11 each lookup asks the kernel for the pid.
        loop = asyncio.get_running_loop()
        watcher = loop.create_task(watch_disconnect(receive, call, asyncio.current_task(loop)))
        try:
            await self._serve(call, send)
        except asyncio.CancelledError:
            if not call.disconnected:
                raise
            uncancel()
            if call.deployment is not None:  # the upstream had the call: count it, estimated
                usage = self._estimate(call, Usage())
                await self._settle_quietly(call, usage, "client_disconnected")
        finally:
            watcher.cancel()
            if call.redacted:
                await self._audit_redacted(call)
            if call.reservation is not None:
                if not call.settled and call.deployment is None:
                    await self._release(call)  # never forwarded: give the reservation back
                # Settled, released, or (if the store failed) left to expire and be swept.
                self._ledger.forget(call.request_id)

    async def models_for(self, headers: dict[str, str], scope: Scope) -> list[str]:
        """The exact aliases the caller of ``GET /v1/models`` may use."""
        call = Call(
            new_id("req"), WireFormat.OPENAI_CHAT, scope["path"], headers, time.monotonic(), 0
        )
        principal = await self._authenticate(call, scope)
        exact = [m for m in self._router.models() if not any(c in m.alias for c in "*?[")]
        return [m.alias for m in exact if await self._may_use(m, principal)]

    async def _serve(self, call: Call, send: Send) -> None:
        try:
            reply = await self._forward(call)
        except CallRefused as refused:
            if call.deployment is not None:  # forwarded and failed: the call is still recorded
                call.error = refused.message
                await self._settle_quietly(call, Usage(), "upstream_failed", refused.status)
            await reply_error(send, call, refused)
            return
        if call.stream and reply.status == 200:
            await self._relay_stream(call, reply, send)
        else:
            await self._relay_whole(call, reply, send)

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

    async def _redactor(self) -> Redactor:
        """The redactor of every secret value known now (refuses if the secrets cannot be
        read: a call is never forwarded unredacted)."""
        book = self._svc.secrets
        if book is None:
            return Redactor.empty()
        try:
            await book.fresh()
        except PilothouseError as exc:
            raise CallRefused(exc.status, exc.code, exc.message) from exc
        return book.redactor

    def _parse(self, call: Call, raw: bytes) -> None:
        try:
            parsed = orjson.loads(raw)
        except orjson.JSONDecodeError as exc:
            raise CallRefused(400, "invalid_json", "the request body is not valid JSON") from exc
        if not isinstance(parsed, dict):
            raise CallRefused(400, "invalid_request", "the request body must be a JSON object")
        # A known secret in a prompt or a tool result never leaves: nor does it reach usage
        # rows or audit events through the model name.
        body = call.redactor.redact_json(parsed)
        if body is not parsed:
            call.redacted.update(call.redactor.found(raw.decode("utf-8", "replace")))
        model = body.get("model")
        if not isinstance(model, str) or not model:
            raise CallRefused(400, "invalid_request", "'model' is required and must be a string")
        name, kind = REQUIRED_FIELD[call.wire]
        if not isinstance(body.get(name), kind):
            shape = "a list" if kind is list else "a string or a list"
            raise CallRefused(400, "invalid_request", f"'{name}' is required and must be {shape}")
        stream = body.get("stream", False)
        if not isinstance(stream, bool):
            raise CallRefused(400, "invalid_request", "'stream' must be true or false")
        if stream and call.wire in (
            WireFormat.OPENAI_EMBEDDINGS,
            WireFormat.ANTHROPIC_COUNT_TOKENS,
        ):
            raise CallRefused(400, "invalid_request", "this endpoint does not stream")
        call.body = body
        call.body_bytes = len(raw)
        call.alias = model
        call.stream = stream

    async def _admit(self, call: Call) -> None:
        """Resolve the model and check the caller may use it (a refusal is audited)."""
        assert call.principal is not None
        await self._downgrade(call)
        model = self._router.resolve(call.alias)
        if model is None:
            raise CallRefused(
                404, "model_not_found", f"model {call.alias!r} is not served by this gateway"
            )
        if not await self._may_use(model, call.principal):
            message = f"model {call.alias!r} is not allowed for this key"
            await self._audit_denied(call, message)
            raise CallRefused(403, "model_not_allowed", message)
        call.model = model
        call.passthrough = {n: call.headers[n] for n in PASS_THROUGH if n in call.headers}

    async def _downgrade(self, call: Call) -> None:
        """Send the call to a cheaper alias if a budget it counts against is past the share of
        its limit its downgrade rule names (as last read by the alert check)."""
        assert call.principal is not None
        book = self._ledger.book
        try:
            call.budgets, downgrading = await book.chosen(call.principal)
        except PilothouseError as exc:
            raise CallRefused(exc.status, exc.code, exc.message) from exc
        for budget in downgrading:  # the budgets with a rule: most calls have none
            rule = budget.downgrade
            if (
                rule is not None
                and rule.target != call.alias
                and rule.source in (None, call.alias)
                and book.used_percent(budget.id) >= rule.at_percent
            ):
                target = self._router.resolve(rule.target)
                if target is None or not await self._may_use(target, call.principal):
                    log.warning("budget %s cannot downgrade to %r", budget.id, rule.target)
                    continue
                call.downgraded_from, call.alias = call.alias, rule.target
                return

    async def _reserve(self, call: Call) -> None:
        """Reserve the call's worst-case cost on every budget it counts against, durably, even
        if none (unless ``gateway.reserve_every_call`` is off): fail closed, a reservation that
        cannot be written refuses the call."""
        assert call.principal is not None and call.model is not None
        settings = self._svc.settings
        configs = settings.rate_limits
        limits = limits_for(configs, call.principal) if configs else ()
        # The budgets were read once, by _downgrade.
        if not call.budgets and not limits and not settings.gateway.reserve_every_call:
            return
        now = self._svc.clock.now()  # the reservation's instant (read once: it costs)
        ledger = self._ledger
        try:
            amount, tokens = self._worst_case(call, call.model)
            fields = principal_fields(call.principal)
            shape = call_shape(call, fields)
            ask = ledger.ask(
                call.budgets, call.request_id, amount, fields, shape, limits, tokens, now
            )
            await ledger.decide(ask)
            call.reservation = ledger.reserved(ask)
        except BudgetExceeded as exc:
            raise CallRefused(exc.status, exc.code, exc.message, details=exc.details) from exc
        except RateLimited as exc:
            call.headers_out = refused_headers(exc, call.wire.is_anthropic)
            raise CallRefused(
                exc.status, exc.code, exc.message, retry_after=exc.retry_after, details=exc.details
            ) from exc
        except PilothouseError as exc:
            raise CallRefused(exc.status, exc.code, exc.message) from exc
        if call.reservation.limits:
            call.headers_out = limit_headers(call.reservation.limits, now, call.wire.is_anthropic)

    def _worst_case(self, call: Call, model: ModelConfig) -> tuple[int, int]:
        """The most the call can cost on any of the model's deployments, and its most tokens:
        its prompt (estimated as a token per 4 bytes of the request body, which holds the
        prompt's text and more; priced as input or as a cache write, whichever is dearer) and
        its output cap."""
        body = call.body or {}
        prompt = (call.body_bytes + 3) // 4
        output = self._svc.settings.gateway.reserve_output_tokens
        if call.wire is WireFormat.OPENAI_EMBEDDINGS:  # embeddings produce no output tokens
            output = 0
        for name in OUTPUT_CAPS:
            cap = body.get(name)
            if type(cap) is int and cap > 0:  # an int, not a bool
                output = cap
                break
        worst = 0
        for per_prompt_token, per_output_token in self._dearest(model):
            cost = prompt * per_prompt_token + output * per_output_token
            if cost > worst:
                worst = cost
        return worst, prompt + output

    def _dearest(self, model: ModelConfig) -> tuple[tuple[int, int], ...]:
        """Per priced deployment of ``model``: the dearer of its input and cache-write prices,
        and its output price (worked out once per model)."""
        found = self._dearest_prices.get(model)
        if found is not None:
            return found
        prices = [self._prices.for_deployment(d) for d in model.deployments]
        dearest = tuple((max(p.input, p.cache_write), p.output) for p in prices if p is not None)
        return self._dearest_prices.put(model, dearest)

    async def _release(self, call: Call) -> None:
        assert call.reservation is not None
        try:
            await self._ledger.release(call.reservation)
        except PilothouseError as exc:  # the sweeper settles it later, at its reserved cost
            log.error("budget reservation of %s not released: %s", call.request_id, exc)

    async def _may_use(self, model: ModelConfig, principal: Principal) -> bool:
        try:
            return await self._access.allows(model, principal)
        except PilothouseError as exc:  # the store could not be read: refuse
            raise CallRefused(exc.status, exc.code, exc.message) from exc

    async def _audit_denied(self, call: Call, reason: str) -> None:
        try:
            await self._audit(
                call,
                "access.denied",
                outcome="denied",
                target=("model", call.alias[:200]),
                details={"reason": reason, "method": "POST", "path": call.endpoint},
            )
        except PilothouseError as exc:  # not recorded: refuse with the store's error
            raise CallRefused(exc.status, exc.code, exc.message) from exc

    async def _audit(
        self,
        call: Call,
        action: str,
        *,
        outcome: str = "success",
        target: tuple[str | None, str | None],
        details: dict[str, Any],
    ) -> None:
        """Append an audit event of the call's principal."""
        principal = call.principal
        assert principal is not None
        async with self._svc.store.write() as conn:
            await chain.append(
                conn,
                self._svc.clock,
                org_id=principal.org_id,
                actor=chain.Actor(principal.actor_kind, principal.actor_id),
                action=action,
                outcome=outcome,
                target_type=target[0],
                target_id=target[1],
                request_id=call.request_id,
                details=details,
            )

    # -- forwarding -------------------------------------------------------------------------

    async def _forward(self, call: Call) -> UpstreamReply:
        """Try the model's deployments in strategy order, retrying and falling back."""
        model = call.model
        assert model is not None
        config = self._router.config
        plan = self._router.order(model)
        if not plan:
            wait = self._router.cooling(model)
            raise CallRefused(
                503,
                "upstream_unavailable",
                f"every deployment of {call.alias!r} is cooling down after failures;"
                f" the next is tried in {wait:.0f}s",
                retry_after=wait,
            )
        tries: dict[str, int] = {}
        waits: dict[str, float] = {}
        failures: list[str] = []
        skipped: list[str] = []
        last_status, last_retry_after, timeouts_only = 0, None, True
        budget = 1 + model.retries
        while budget > 0 and plan:
            deployment = min(plan, key=lambda d: tries.get(d.id, 0))
            done = tries.get(deployment.id, 0)
            if done:
                backoff = min(
                    config.backoff_base_seconds * 2 ** (done - 1), config.backoff_max_seconds
                )
                await asyncio.sleep(max(backoff, waits.pop(deployment.id, 0.0)))
            try:
                reply = await self._attempt(call, deployment)
                if reply.status not in RETRYABLE_STATUS:
                    return await self._first_chunk(call, reply, deployment)
            except _Skip as skip:
                skipped.append(f"{deployment.id}: {skip}")
                plan.remove(deployment)
                continue
            except UpstreamError as exc:
                retry_after = None
                failures.append(f"{deployment.id}: {exc}")
                timeouts_only = timeouts_only and isinstance(exc, UpstreamTimeout)
                last_status = 504 if isinstance(exc, UpstreamTimeout) else 502
            else:
                retry_after = retry_after_seconds(reply.headers)
                detail = await error_detail(reply)
                failures.append(f"{deployment.id}: HTTP {reply.status} {detail}".rstrip())
                timeouts_only = False
                last_status = reply.status
                last_retry_after = retry_after
            budget -= 1
            tries[deployment.id] = done + 1
            self._router.failed(deployment, retry_after)
            if self._router.health(deployment).cooling_until > time.monotonic():
                plan.remove(deployment)
            elif retry_after is not None:
                waits[deployment.id] = retry_after
            if budget > 0 and plan:
                call.retries += 1
        if not failures:
            raise CallRefused(
                503,
                "model_unavailable",
                f"no deployment of {call.alias!r} can serve this call: " + "; ".join(skipped),
            )
        tried = sum(tries.values())
        summary = f"{call.alias!r} failed after {tried} {'try' if tried == 1 else 'tries'}: " + (
            "; ".join(failures + skipped)
        )
        if last_status == 429:
            raise CallRefused(429, "upstream_rate_limited", summary, retry_after=last_retry_after)
        if timeouts_only:
            raise CallRefused(504, "upstream_timeout", summary)
        raise CallRefused(502, "upstream_failed", summary)

    async def _attempt(self, call: Call, deployment: DeploymentConfig) -> UpstreamReply:
        provider = self._providers.get(deployment.provider)
        if provider is None:
            raise _Skip(f"provider {deployment.provider!r} is not available")
        price = self._prices.for_deployment(deployment)
        if price is None:
            raise _Skip(
                f"model {deployment.model!r} has no price: set a price on the deployment or"
                " gateway.default_price (calls are never served for free)"
            )
        wire = self._wire_for(call.wire, provider, deployment)
        if wire is None:
            raise _Skip(f"it does not serve {call.wire.value} calls")
        credentials = await self._credentials(call, deployment)
        body = self._upstream_body(call, deployment, wire)
        call.deployment, call.price, call.upstream_wire = deployment, price, wire
        upstream = UpstreamCall(deployment, wire, body, call.stream, call.passthrough, credentials)
        reply = await provider.send(upstream)
        call.ttfb_ms = elapsed_ms(call.started)
        return reply

    async def _credentials(self, call: Call, deployment: DeploymentConfig) -> dict[str, str] | None:
        """The values of the secrets the deployment names, injected for this caller: a
        secret not granted to it refuses the call; one that cannot be read skips the
        deployment."""
        refs = deployment.secret_refs
        if not refs:
            return None
        book = self._svc.secrets
        assert call.principal is not None
        if book is None:
            raise _Skip("it uses secrets, and this server holds none")
        values = {}
        for where, ref in refs.items():
            try:
                values[where] = await book.inject(
                    self._svc.root_org_id,
                    ref.secret,
                    call.principal,
                    f"deployment {deployment.id!r} ({where})",
                )
            except SecretNotGranted as exc:
                raise CallRefused(exc.status, exc.code, exc.message) from exc
            except PilothouseError as exc:  # corrupt, or its backend cannot be read
                raise _Skip(exc.message) from exc
        return values

    async def _audit_redacted(self, call: Call) -> None:
        """Record which secrets were redacted from the call (never their values)."""
        session = call.principal.session_id if call.principal is not None else None
        try:
            await self._audit(
                call,
                "secret.redacted",
                target=("session" if session else None, session),
                details={"secrets": sorted(call.redacted), "path": call.endpoint},
            )
        except PilothouseError as exc:  # the call is answered; the record is what failed
            log.error("redaction in %s not audited: %s", call.request_id, exc)

    async def _first_chunk(
        self, call: Call, reply: UpstreamReply, deployment: DeploymentConfig
    ) -> UpstreamReply:
        """For a stream, wait for its first bytes before relaying anything: a stream that
        stalls or breaks before its first byte is retried like any failed attempt."""
        if not (call.stream and reply.status == 200):
            self._router.succeeded(deployment, call.ttfb_ms or 0)
            return reply
        try:
            first = await anext(reply.chunks)
        except StopAsyncIteration:
            first = b""
        except UpstreamError:
            await close_reply(reply)
            raise
        call.ttfb_ms = elapsed_ms(call.started)
        self._router.succeeded(deployment, call.ttfb_ms)
        return UpstreamReply(reply.status, reply.content_type, prepend(first, reply.chunks))

    def _wire_for(
        self, wire: WireFormat, provider: Provider, deployment: DeploymentConfig
    ) -> WireFormat | None:
        if provider.speaks(wire, deployment):
            return wire
        return next((w for w in TRANSLATIONS.get(wire, ()) if provider.speaks(w, deployment)), None)

    def _upstream_body(
        self, call: Call, deployment: DeploymentConfig, wire: WireFormat
    ) -> dict[str, Any]:
        assert call.body is not None
        base = call.bodies.get(wire)
        if base is None:
            if wire is call.wire:
                base = call.body
            else:
                try:
                    base = translate_request(call.body, call.wire, wire)
                except TranslationError as exc:
                    raise CallRefused(400, "invalid_request", str(exc)) from exc
            if call.stream and wire is WireFormat.OPENAI_CHAT:
                # Usage must come from the stream itself: ask for it, hide it if not asked.
                options = {**(base.get("stream_options") or {}), "include_usage": True}
                base = {**base, "stream_options": options}
            call.bodies[wire] = base
        return {**base, "model": deployment.model}

    # -- relaying ---------------------------------------------------------------------------

    async def _relay_whole(self, call: Call, reply: UpstreamReply, send: Send) -> None:
        assert call.upstream_wire is not None
        try:
            body = b"".join([chunk async for chunk in reply.chunks])
        except UpstreamError as exc:
            call.error = f"{call.deployment.id if call.deployment else '?'}: {exc}"
            await self._settle_quietly(call, self._estimate(call, Usage()), "upstream_failed", 502)
            status = 504 if isinstance(exc, UpstreamTimeout) else 502
            code = "upstream_timeout" if status == 504 else "upstream_failed"
            await reply_error(send, call, CallRefused(status, code, call.error))
            return
        ok = reply.status == 200
        usage = usage_of_body(call.upstream_wire, body) if ok else Usage()
        if call.upstream_wire is not call.wire:
            try:
                if ok:
                    tools = tool_map(call.body or {}, call.wire)
                    body = translate_reply(
                        body, call.upstream_wire, call.wire, call.alias, tools=tools
                    )
                else:
                    body = translate_error(body, reply.status, call.upstream_wire, call.wire)
            except TranslationError as exc:  # the upstream's 200 is not a reply: still recorded
                call.error = f"{call.deployment.id if call.deployment else '?'}: {exc}"
                await self._settle_quietly(call, usage, "upstream_error", 502)
                await reply_error(send, call, CallRefused(502, "upstream_failed", call.error))
                return
        body = _noted(call, body, call.redactor.redact_bytes(body))
        if not ok:
            call.error = body[:ERROR_DETAIL_BYTES].decode("utf-8", "replace")
        try:
            await self._settle(call, usage, "ok" if ok else "upstream_error", reply.status)
        except StoreUnavailable as exc:
            await reply_error(send, call, CallRefused(503, exc.code, exc.message))
            return
        content_type = "application/json" if call.upstream_wire is not call.wire else None
        await send(
            start_message(
                reply.status,
                content_type or reply.content_type,
                call.request_id,
                extra=call.headers_out,
            )
        )
        await send({"type": "http.response.body", "body": body})

    async def _relay_stream(self, call: Call, reply: UpstreamReply, send: Send) -> None:
        assert call.upstream_wire is not None and call.body is not None
        asked = bool((call.body.get("stream_options") or {}).get("include_usage"))
        translator = None
        if call.upstream_wire is not call.wire:
            translator = StreamTranslator(
                call.upstream_wire,
                call.wire,
                call.alias,
                include_usage=asked,
                tools=tool_map(call.body, call.wire),
            )
        watcher = StreamWatcher(
            call.upstream_wire, hide_usage_chunk=translator is None and not asked
        )
        redacting = SseRedactor(call.redactor, call.wire)
        status, failure = "ok", None
        try:
            await send(
                start_message(200, "text/event-stream", call.request_id, extra=call.headers_out)
            )
            async for chunk in reply.chunks:
                if translator is None:
                    out = watcher.feed(chunk)
                else:
                    out = b"".join([translator.event(e) for e in watcher.events(chunk)])
                if out:
                    out = _noted(call, out, redacting.feed(out))
                    await send({"type": "http.response.body", "body": out, "more_body": True})
        except UpstreamError as exc:
            failure = exc
            status = "upstream_timeout" if isinstance(exc, UpstreamTimeout) else "upstream_cut"
            call.error = f"{call.deployment.id if call.deployment else '?'}: {exc}"
        except OSError:
            status = "client_disconnected"
        except asyncio.CancelledError:
            if not call.disconnected:
                raise
            uncancel()
            status = "client_disconnected"
        finally:
            await close_reply(reply)
        if status == "ok" and not watcher.finished:
            status = "upstream_cut"
            failure = UpstreamBroken("the upstream ended the stream before it finished")
            call.error = str(failure)
        usage = watcher.usage
        if not watcher.finished:
            usage = self._estimate(call, usage, output_chars=watcher.output_chars())
        call.finishing = True
        try:
            await self._settle(call, usage, status, 200)
        except StoreUnavailable as exc:
            log.error("usage of %s not recorded: %s", call.request_id, exc)
            if status != "client_disconnected":
                tail = sse_error(call.wire, 503, exc.code, exc.message)
                await send({"type": "http.response.body", "body": tail, "more_body": False})
            return
        if status == "client_disconnected":
            return
        if failure is None:
            tail = translator.finish() if translator else watcher.terminal + watcher.rest()
        else:
            code = "upstream_timeout" if isinstance(failure, UpstreamTimeout) else "upstream_failed"
            message = f"the upstream stream failed: {failure}"
            tail = (
                translator.error(502, code, message)
                if translator
                else sse_error(call.wire, 502, code, message)
            )
        tail = _noted(call, tail, redacting.finish(tail))
        await send({"type": "http.response.body", "body": tail, "more_body": False})

    async def _count_tokens(self, call: Call, send: Send) -> None:
        """``/v1/messages/count_tokens``: an Anthropic deployment counts; otherwise estimate.

        Counting is free upstream, so it makes no usage row.
        """
        assert call.model is not None and call.body is not None
        for deployment in self._router.order(call.model):
            provider = self._providers.get(deployment.provider)
            if provider is None or not provider.speaks(call.wire, deployment):
                continue
            upstream = UpstreamCall(
                deployment,
                call.wire,
                {**call.body, "model": deployment.model},
                False,
                call.passthrough,
            )
            try:
                reply = await provider.send(upstream)
                body = b"".join([chunk async for chunk in reply.chunks])
            except UpstreamError:
                continue
            await send(start_message(reply.status, "application/json", call.request_id))
            await send({"type": "http.response.body", "body": body})
            return
        count = estimate_tokens(
            [call.body.get("system"), call.body.get("messages"), call.body.get("tools")]
        )
        await send(start_message(200, "application/json", call.request_id))
        await send({"type": "http.response.body", "body": orjson.dumps({"input_tokens": count})})

    # -- settling ---------------------------------------------------------------------------

    def _estimate(self, call: Call, usage: Usage, output_chars: int = 0) -> Usage:
        """Fill in what a call that ended early never reported, marking the row estimated."""
        call.estimated = True
        if not (usage.input_tokens or usage.cache_read_tokens or usage.cache_write_tokens):
            body = call.body or {}
            usage.input_tokens = estimate_tokens(
                [body.get("system"), body.get("messages"), body.get("input"), body.get("tools")]
            )
        usage.output_tokens = max(usage.output_tokens, (output_chars + 3) // 4)
        return usage

    async def _settle_quietly(
        self, call: Call, usage: Usage, status: str, http_status: int = 499
    ) -> None:
        try:
            await self._settle(call, usage, status, http_status)
        except StoreUnavailable as exc:
            log.error("usage of %s not recorded: %s", call.request_id, exc)

    async def _settle(self, call: Call, usage: Usage, status: str, http_status: int) -> None:
        call.finishing = True
        row = usage_row(call, usage, status, http_status, self._svc.clock.now())
        reservation = call.reservation
        if reservation is None or reservation.holds_slot:
            await self._ledger.record(row, reservation)
        else:
            self._ledger.settle(row, reservation)
        call.settled = True
        self._svc.telemetry.call_finished(call_record(call, row, usage))


def _noted(call: Call, given: bytes, redacted: bytes) -> bytes:
    """``redacted`` (``given`` with known secrets replaced), the secrets it names noted on the
    call for its audit event."""
    if redacted is not given and b"[REDACTED:" in redacted:
        call.redacted.update(labels_in(redacted) - labels_in(given))
    return redacted
