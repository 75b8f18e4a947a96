"""The MCP endpoint: one streamable-HTTP MCP server at ``/mcp`` that holds exactly the tools
its caller may use, from every upstream server, and puts every call through the same steps as
any other action.

Per request: authenticate the bearer key (a session key, or a service key with the
``policy:check`` scope acting for the session it declares), then

- ``tools/list``: every ready upstream's tools, named ``<server>__<tool>``, less those the
  policy denies to this caller on channel ``mcp`` (by team, project, repository, labels, taint);
- ``tools/call``: refused as unknown unless the tool is listed for this caller; then the policy
  check (allow, deny, or ask and wait for a person: recorded and audited like every check); the
  caller's grants for the secrets the upstream uses; the call, bounded by the upstream's
  timeout; the result redacted of known secret values, scanned for prompt injection and
  credential-shaped strings (either taints the session), and audited as ``mcp.call`` with its
  arguments and the SHA-256 of its result.

The server is stateless (a new transport per HTTP request, no session id), so any replica can
answer any request: no sticky sessions. Upstream credentials come from the secrets broker and
are held by Pilothouse; the agent's own token never reaches an upstream.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import logging
import time
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, TypeVar

import anyio
import mcp_types as types
import orjson
from mcp.server.lowlevel.server import Server
from mcp.server.streamable_http_manager import StreamableHTTPSessionManager
from mcp.shared.exceptions import MCPError
from mcp.shared.jsonrpc_dispatcher import handler_exception_to_error_data
from mcp_types import DEFAULT_NEGOTIATED_VERSION
from mcp_types import methods as wire
from mcp_types.version import HANDSHAKE_PROTOCOL_VERSIONS
from pydantic import BaseModel, ValidationError
from starlette.types import Message, Receive, Scope, Send

from pilothouse import __version__
from pilothouse.audit import chain
from pilothouse.context import RequestContext
from pilothouse.errors import (
    BodyTooLarge,
    BudgetExceeded,
    Forbidden,
    PilothouseError,
    SecretNotGranted,
    Unauthenticated,
)
from pilothouse.gateway.usage_rows import dollars
from pilothouse.identity.principal import Principal
from pilothouse.identity.tokens import KeyKind
from pilothouse.ids import new_id
from pilothouse.mcp.config import McpServerConfig
from pilothouse.mcp.metering import Metered, ToolMeter
from pilothouse.mcp.pins import PinBook
from pilothouse.mcp.upstreams import UpstreamError, UpstreamRegistry
from pilothouse.policy.checks import ActionIn, CheckRequest, ScanRequest
from pilothouse.policy.document import Channel, Verdict
from pilothouse.policy.engine import Action, Subject
from pilothouse.policy.versions import Active

if TYPE_CHECKING:
    from pilothouse.services import Services

log = logging.getLogger(__name__)
ModelT = TypeVar("ModelT", bound=BaseModel)

SEPARATOR = "__"
PRINCIPAL_KEY = "pilothouse.principal"
REQUEST_ID_KEY = "pilothouse.request_id"
AUDITED_CHARS = 2000
SCANNED_CHARS = 200_000
INVALID_PARAMS, INTERNAL_ERROR = -32602, -32603
UPSTREAM_ERROR = -32000  # the implementation-defined server error range
REFUSED = -32001  # the policy refused (a prompt, a resource; a tool's refusal is its result)
FAST_METHODS = frozenset({"tools/list", "tools/call"})  # answered without the SDK's transport


Served = tuple[dict[str, list[types.Tool]], dict[str, dict[str, types.Tool]]]
"""Every ready upstream's tools, by server: as listed, and by name."""


@dataclass(frozen=True, slots=True)
class Listed:
    """A tool as the caller sees it: its server, its upstream name, its definition."""

    server: McpServerConfig
    name: str
    tool: types.Tool


class McpGateway:
    """The ``/mcp`` endpoint (an ASGI app) over the upstream registry."""

    def __init__(self, services: Services, registry: UpstreamRegistry, pins: PinBook) -> None:
        self._svc = services
        self.registry = registry
        self.pins = pins
        self._meter = ToolMeter(services)
        self.server: Server[Any] = Server(
            "pilothouse",
            version=__version__,
            on_list_tools=self._list_tools,
            on_call_tool=self._call_tool,
            on_list_prompts=self._list_prompts,
            on_get_prompt=self._get_prompt,
            on_list_resources=self._list_resources,
            on_read_resource=self._read_resource,
        )
        self._manager = StreamableHTTPSessionManager(
            self.server, stateless=True, json_response=True
        )
        self._ready = asyncio.Event()
        self._stop = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self._listed: tuple[float, Served] | None = None
        self._listing = asyncio.Lock()
        self._catalog: dict[str, tuple[float, dict[str, list[Any]]]] = {}

    async def start(self) -> None:
        """Start the upstreams and the MCP server."""
        await self.registry.start()
        self._task = asyncio.create_task(self._serve(), name="mcp server")
        ready = asyncio.create_task(self._ready.wait())
        await asyncio.wait({self._task, ready}, return_when=asyncio.FIRST_COMPLETED)
        ready.cancel()
        if self._task.done():
            self._task.result()  # raises what stopped it

    async def _serve(self) -> None:
        # The manager's task group is entered and left by this one task, as anyio requires.
        async with self._manager.run():
            self._ready.set()
            await self._stop.wait()

    async def stop(self) -> None:
        """Stop the MCP server and the upstreams."""
        self._stop.set()
        if self._task is not None:
            await self._task
        await self.registry.stop()

    # --- HTTP -----------------------------------------------------------------------------

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        """Authenticate, then hand the request to the MCP server."""
        headers = {k.decode("latin-1"): v.decode("latin-1") for k, v in scope["headers"]}
        request_id = new_id("req")
        try:
            principal = await self._svc.authenticate(headers, scope, request_id)
            if principal.kind is KeyKind.USER:
                raise Forbidden("/mcp takes a session key (or a service key acting for one)")
            if principal.kind is KeyKind.SERVICE and "policy:check" not in principal.scopes:
                raise Forbidden("/mcp takes a service key with the policy:check scope")
        except (Unauthenticated, Forbidden) as exc:
            await _refuse(send, exc, request_id)
            return
        except PilothouseError as exc:  # the store cannot be read: refused, never waved through
            await _refuse(send, exc, request_id)
            return
        if scope["method"] == "POST" and _plain_json_rpc(headers):
            limit = self._svc.settings.max_body_bytes
            try:
                body = await _body(receive, limit)
            except _TooLarge:
                message = f"the request body is larger than the limit of {limit} bytes"
                await _refuse(send, BodyTooLarge(message), request_id)
                return
            if await self._answered(body, headers, principal, request_id, send):
                return
            receive = _replaying(body, receive)
        state = {**scope.get("state", {}), PRINCIPAL_KEY: principal, REQUEST_ID_KEY: request_id}
        await self._manager.handle_request({**scope, "state": state}, receive, send)

    async def _answered(
        self,
        body: bytes,
        headers: Mapping[str, str],
        principal: Principal,
        request_id: str,
        send: Send,
    ) -> bool:
        """Answer a ``tools/list`` or ``tools/call`` request here, as the SDK's stateless
        transport would, without its per-request task, streams and dispatcher (the calls
        agents make most: that machinery was about a quarter of /mcp's CPU a call). False
        for anything else, which the SDK answers."""
        try:
            message = orjson.loads(body)
        except orjson.JSONDecodeError:
            return False
        if not isinstance(message, dict) or message.get("jsonrpc") != "2.0":
            return False
        method, ident, params = message.get("method"), message.get("id"), message.get("params")
        if (
            method not in FAST_METHODS
            or isinstance(ident, bool)
            or not isinstance(ident, int | str)
            or not isinstance(params, dict | None)
        ):
            return False
        version = headers.get("mcp-protocol-version", DEFAULT_NEGOTIATED_VERSION)
        ctx = RequestContext(principal, request_id, self._svc.clock)
        answer: dict[str, Any] = {"jsonrpc": "2.0", "id": ident}
        try:
            wire.validate_client_request(method, version, params)
            if method == "tools/list":
                result: BaseModel = await self._tools_for(ctx)
            else:
                called = types.CallToolRequestParams.model_validate(params, by_name=False)
                result = await self._tool_called(ctx, called)
            dumped = result.model_dump(by_alias=True, mode="json", exclude_none=True)
            answer["result"] = wire.serialize_server_result(method, version, dumped)
        except (MCPError, ValidationError) as exc:  # as the SDK's dispatcher words them
            error = handler_exception_to_error_data(exc)
            assert error is not None
            answer["error"] = error.model_dump(by_alias=True, mode="json", exclude_none=True)
        except Exception:  # a fault of ours: logged, and nothing of it on the wire
            log.exception("MCP %s failed", method)
            answer["error"] = {"code": INTERNAL_ERROR, "message": "Internal server error"}
        start = {
            "type": "http.response.start",
            "status": 200,
            "headers": [
                (b"content-type", b"application/json"),
                (b"x-request-id", request_id.encode()),
            ],
        }
        await send(start)
        await send({"type": "http.response.body", "body": orjson.dumps(answer)})
        return True

    # --- tools ----------------------------------------------------------------------------

    async def _list_tools(
        self, ctx: Any, params: types.PaginatedRequestParams | None
    ) -> types.ListToolsResult:
        return await self._tools_for(_context(ctx, self._svc))

    async def _tools_for(self, request: RequestContext) -> types.ListToolsResult:
        """``tools/list``: the caller's tools."""
        listed = await self._visible(request)
        tools = [item.tool.model_copy(update={"name": name}) for name, item in listed.items()]
        return types.ListToolsResult(tools=tools)

    async def _visible(self, ctx: RequestContext) -> dict[str, Listed]:
        """The tools ``ctx``'s principal may see, by their names here."""
        subject, active = await self._policy_of(ctx)
        visible: dict[str, Listed] = {}
        for server, served in (await self._served())[0].items():
            config = self.registry.get(server).config
            for tool in await self.pins.allowed(server, served):
                name = f"{server}{SEPARATOR}{tool.name}"
                decision = active.policy.decide(subject, Action(Channel.MCP, tool=name))
                if decision.decision is not Verdict.DENY:
                    visible[name] = Listed(config, tool.name, tool)
        return visible

    async def _callable(self, ctx: RequestContext, name: str) -> Listed | None:
        """The tool ``name`` (``server__tool``) if ``ctx``'s principal may see it: what
        ``_visible`` would hold under that name, worked out for the one tool."""
        server, separator, tool_name = name.partition(SEPARATOR)
        if not separator:
            return None
        tool = (await self._served())[1].get(server, {}).get(tool_name)
        if tool is None or not await self.pins.allowed(server, [tool]):
            return None
        subject, active = await self._policy_of(ctx)
        decision = active.policy.decide(subject, Action(Channel.MCP, tool=name))
        if decision.decision is Verdict.DENY:
            return None
        return Listed(self.registry.get(server).config, tool.name, tool)

    async def _policy_of(self, ctx: RequestContext) -> tuple[Subject, Active]:
        """Who calls, as rules see them, and the organization's policy (fail closed: neither
        can be read, nothing is listed)."""
        checker = self._svc.checker
        assert checker is not None
        try:
            subject, _ = await checker.subject(ctx, ctx.principal.session_id)
            return subject, await checker.book.active(ctx.org_id)
        except PilothouseError as exc:
            raise MCPError(INTERNAL_ERROR, f"{exc.code}: {exc.message}") from exc

    async def _served(self) -> Served:
        """Every ready upstream's tools (also by server and name), asked again after
        ``mcp_list_cache_seconds``."""
        ttl = self._svc.settings.mcp_list_cache_seconds
        listed = self._listed
        if listed is None or time.monotonic() - listed[0] >= ttl:
            async with self._listing:  # one listing for the calls that find it stale together
                listed = self._listed
                if listed is None or time.monotonic() - listed[0] >= ttl:
                    tools = await self.registry.tools()
                    named = {server: {t.name: t for t in ts} for server, ts in tools.items()}
                    listed = self._listed = (time.monotonic(), (tools, named))
        return listed[1]

    async def _call_tool(
        self, ctx: Any, params: types.CallToolRequestParams
    ) -> types.CallToolResult:
        return await self._tool_called(_context(ctx, self._svc), params)

    async def _tool_called(
        self, request: RequestContext, params: types.CallToolRequestParams
    ) -> types.CallToolResult:
        """``tools/call``: through every step of ``_forwarded``."""
        arguments = await self._redacted(params.arguments or {})
        listed = await self._callable(request, params.name)
        if listed is None:
            raise MCPError(INVALID_PARAMS, f"no tool {params.name!r} is available to this caller")
        upstream = self.registry.get(listed.server.name)
        try:
            return await self._forwarded(
                request,
                listed.server,
                params.name,
                arguments,
                lambda: upstream.call_tool(listed.name, arguments),
                method="tools/call",
                action="mcp.call",
                text_of=_tool_text,
                price=listed.server.price_of(listed.name),
            )
        except _Refused as refused:  # a tool's refusal is its result: the model reads why
            return types.CallToolResult(
                content=[types.TextContent(text=refused.reason)], is_error=True
            )

    # --- prompts and resources --------------------------------------------------------------

    async def _list_prompts(
        self, ctx: Any, params: types.PaginatedRequestParams | None
    ) -> types.ListPromptsResult:
        visible = await self._visible_items(_context(ctx, self._svc), "prompts")
        prompts = [item.model_copy(update={"name": name}) for name, (_, item) in visible.items()]
        return types.ListPromptsResult(prompts=prompts)

    async def _get_prompt(
        self, ctx: Any, params: types.GetPromptRequestParams
    ) -> types.GetPromptResult:
        request = _context(ctx, self._svc)
        found = (await self._visible_items(request, "prompts")).get(params.name)
        if found is None:
            raise MCPError(INVALID_PARAMS, f"no prompt {params.name!r} is available to this caller")
        server, prompt = found
        arguments = await self._redacted(params.arguments or {})
        upstream = self.registry.get(server)
        return await self._refused_as_error(
            self._forwarded(
                request,
                upstream.config,
                params.name,
                arguments,
                lambda: upstream.get_prompt(prompt.name, arguments),
                method="prompts/get",
                action="mcp.prompt",
                text_of=_dumped_text,
            )
        )

    async def _list_resources(
        self, ctx: Any, params: types.PaginatedRequestParams | None
    ) -> types.ListResourcesResult:
        visible = await self._visible_items(_context(ctx, self._svc), "resources")
        resources = [
            item.model_copy(update={"uri": uri, "name": f"{server}{SEPARATOR}{item.name}"})
            for uri, (server, item) in visible.items()
        ]
        return types.ListResourcesResult(resources=resources)

    async def _read_resource(
        self, ctx: Any, params: types.ReadResourceRequestParams
    ) -> types.ReadResourceResult:
        request = _context(ctx, self._svc)
        found = (await self._visible_items(request, "resources")).get(str(params.uri))
        if found is None:
            raise MCPError(
                INVALID_PARAMS, f"no resource {params.uri!r} is available to this caller"
            )
        server, resource = found
        arguments = {"uri": str(resource.uri)}
        upstream = self.registry.get(server)
        return await self._refused_as_error(
            self._forwarded(
                request,
                upstream.config,
                f"{server}{SEPARATOR}{resource.name}",
                arguments,
                lambda: upstream.read_resource(str(resource.uri)),
                method="resources/read",
                action="mcp.read",
                text_of=_dumped_text,
            )
        )

    async def _visible_items(self, ctx: RequestContext, kind: str) -> dict[str, tuple[str, Any]]:
        """The prompts (by ``server__name``) or resources (by ``server+uri``) the caller may
        see: a policy rule on channel ``mcp`` whose ``tool`` matches ``server__name`` decides
        them as it decides tools."""
        subject, active = await self._policy_of(ctx)
        visible: dict[str, tuple[str, Any]] = {}
        for server, items in (await self._served_items(kind)).items():
            for item in items:
                name = f"{server}{SEPARATOR}{item.name}"
                decision = active.policy.decide(subject, Action(Channel.MCP, tool=name))
                if decision.decision is not Verdict.DENY:
                    key = name if kind == "prompts" else f"{server}+{item.uri}"
                    visible[key] = (server, item)
        return visible

    async def _served_items(self, kind: str) -> dict[str, list[Any]]:
        """Every ready upstream's prompts or resources (asked again like tools); a server that
        offers none (or does not answer for them) is left out."""
        ttl = self._svc.settings.mcp_list_cache_seconds
        cached = self._catalog.get(kind)
        if cached is not None and time.monotonic() - cached[0] < ttl:
            return cached[1]
        async with self._listing:
            found: dict[str, list[Any]] = {}
            for upstream in self.registry.all():
                if upstream.status.state != "ready":
                    continue
                try:
                    if kind == "prompts":
                        found[upstream.name] = list(await upstream.list_prompts())
                    else:
                        found[upstream.name] = list(await upstream.list_resources())
                except UpstreamError as exc:
                    log.debug("MCP server %r lists no %s: %s", upstream.name, kind, exc)
            self._catalog[kind] = (time.monotonic(), found)
        return found

    async def _redacted(self, arguments: Mapping[str, Any]) -> dict[str, Any]:
        """Arguments with every known secret value redacted: an upstream that needs a secret
        is given it by Pilothouse (its configuration's {"$secret": ...}), never by the agent,
        and no record holds one."""
        checker = self._svc.checker
        assert checker is not None
        return dict((await checker.redactor()).redact_json(dict(arguments)))

    async def _forwarded(
        self,
        ctx: RequestContext,
        server: McpServerConfig,
        name: str,
        arguments: dict[str, Any],
        send: Callable[[], Awaitable[ModelT]],
        *,
        method: str,
        action: str,
        text_of: Callable[[ModelT], str],
        price: int | None = None,
    ) -> ModelT:
        """One call to an upstream, in the order every MCP method takes: the policy's check,
        the caller's grants for the upstream's secrets, the reservation of its ``price`` (in
        micro-dollars, if it has one), the call (bounded by its timeout), the answer redacted
        and scanned, then audited and traced, and the price settled. A deny, an unanswered
        ask, a missing grant or a hard budget it would pass is ``_Refused``; an upstream that
        fails is an MCP error naming it."""
        checker = self._svc.checker
        assert checker is not None
        action_in = ActionIn(tool=name, arguments=arguments)
        wait = self._svc.settings.hook_wait_seconds
        try:
            check = await checker.check(
                ctx, CheckRequest(channel=Channel.MCP, action=action_in, wait=wait)
            )
            await self._may_use_credentials(ctx, server)
        except SecretNotGranted as exc:
            raise _Refused(exc.message) from exc
        except PilothouseError as exc:
            raise MCPError(INTERNAL_ERROR, f"{exc.code}: {exc.message}") from exc
        if check.decision is Verdict.DENY:
            raise _Refused(f"Pilothouse refused {name}: {check.reason}")
        if check.decision is Verdict.ASK:
            approval = check.approval.id if check.approval else "?"
            raise _Refused(
                f"{name} waits for a person's approval ({check.reason}; approval {approval}):"
                " ask again once it is approved"
            )
        started, started_ns = time.monotonic(), time.time_ns()
        metered = None if price is None else await self._reserved(ctx, name, arguments, price)
        trace = {"tool": name, "server": server.name, "method": method}
        status, error = "client_disconnected", None  # unless the call ends otherwise
        try:
            result = await send()
            status = "ok"
        except UpstreamError as exc:
            # Its last error may quote the server's output: what it was given, say.
            status, error = "upstream_failed", (await checker.redactor()).redact(str(exc))
            await self._audit(ctx, name, arguments, None, error, started, action, metered)
            self._span(ctx, started_ns, error, **trace)
            raise MCPError(UPSTREAM_ERROR, f"{name}: {error}") from exc
        finally:
            if metered is not None:
                await self._settled(metered, status, error)
        result = await self._screened(ctx, name, result, text_of)
        await self._audit(ctx, name, arguments, result, None, started, action, metered)
        self._span(ctx, started_ns, None, **trace)
        return result

    async def _reserved(
        self, ctx: RequestContext, name: str, arguments: Mapping[str, Any], price: int
    ) -> Metered:
        """The reservation of a priced call on the caller's budgets; one a hard budget refuses
        is audited (``denied``) and ``_Refused``; a store that cannot be written refuses."""
        try:
            return await self._meter.reserve(ctx.principal, name, price)
        except BudgetExceeded as exc:
            started = time.monotonic()
            await self._audit(ctx, name, arguments, None, exc.message, started, outcome="denied")
            raise _Refused(f"Pilothouse refused {name}: {exc.message}") from exc
        except PilothouseError as exc:
            raise MCPError(INTERNAL_ERROR, f"{exc.code}: {exc.message}") from exc

    async def _settled(self, metered: Metered, status: str, error: str | None) -> None:
        """Settle a priced call, even as its caller leaves (the upstream had the call); a row
        that cannot be written leaves the durable reservation to the sweeper, at the price."""
        with anyio.CancelScope(shield=True):
            try:
                await self._meter.settle(metered, status, error)
            except PilothouseError as exc:
                log.error("usage of MCP call %s not recorded: %s", metered.request_id, exc)

    @staticmethod
    async def _refused_as_error(forwarding: Awaitable[ModelT]) -> ModelT:
        """A prompt's or a resource's refusal: an MCP error naming why (they have no result
        that could say it)."""
        try:
            return await forwarding
        except _Refused as refused:
            raise MCPError(REFUSED, refused.reason) from refused

    def _span(
        self,
        ctx: RequestContext,
        started_ns: int,
        error: str | None,
        *,
        tool: str,
        server: str,
        method: str,
    ) -> None:
        principal = ctx.principal
        self._svc.telemetry.tool_called(
            method=method,
            tool=tool,
            server=server,
            started_ns=started_ns,
            ended_ns=time.time_ns(),
            session_id=principal.session_id,
            org_id=principal.org_id,
            request_id=ctx.request_id,
            error=error,
        )

    async def _may_use_credentials(self, ctx: RequestContext, server: McpServerConfig) -> None:
        """Every secret the upstream is given must be granted (inject) to the caller."""
        book = self._svc.secrets
        for where, ref in server.secret_refs.items():
            assert book is not None
            purpose = f"MCP server {server.name!r} ({where})"
            await book.may_inject(self._svc.root_org_id, ref.secret, ctx.principal, purpose)

    async def _screened(
        self, ctx: RequestContext, name: str, result: ModelT, text_of: Callable[[ModelT], str]
    ) -> ModelT:
        """``result`` with known secrets redacted, after scanning what the agent will read of
        it (``text_of``) for prompt injection and credentials."""
        checker = self._svc.checker
        assert checker is not None
        redactor = await checker.redactor()
        dumped = result.model_dump(mode="json", by_alias=True, exclude_none=True)
        redacted = redactor.redact_json(dumped)
        if redacted is not dumped:
            result = type(result).model_validate(redacted)
        text = text_of(result)
        if text.strip() and ctx.principal.session_id is not None:
            scan = ScanRequest(content=text[:SCANNED_CHARS], source=name[:200])
            await checker.scan(ctx, scan)
        return result

    async def _audit(
        self,
        ctx: RequestContext,
        name: str,
        arguments: Mapping[str, Any],
        result: BaseModel | None,
        error: str | None,
        started: float,
        action: str = "mcp.call",
        metered: Metered | None = None,
        outcome: str | None = None,
    ) -> None:
        digest = None
        if result is not None:
            body = orjson.dumps(result.model_dump(mode="json", by_alias=True, exclude_none=True))
            digest = hashlib.sha256(body).hexdigest()
        shown = json.dumps(arguments, ensure_ascii=False, sort_keys=True)
        details = {
            "tool": name,
            "arguments": shown[:AUDITED_CHARS],
            "result_sha256": digest,
            "is_error": getattr(result, "is_error", None),
            "error": error,
            "ms": round((time.monotonic() - started) * 1000),
        }
        if metered is not None:  # priced: its usage row, and what it cost
            details["usage_request_id"] = metered.request_id
            details["cost_usd"] = dollars(metered.cost_picos if error is None else 0)
        checker = self._svc.checker
        assert checker is not None
        principal = ctx.principal
        if outcome is None:
            outcome = "failed" if error else "success"
        event = chain.Event(
            actor=chain.Actor(principal.actor_kind, principal.actor_id),
            action=action,
            outcome=outcome,
            target_type="session" if principal.session_id else None,
            target_id=principal.session_id,
            request_id=ctx.request_id,
            details=details,
        )
        # Group-committed with the checks (one transaction for many calls): durable before
        # the result is answered.
        await checker.recorder.record(ctx.org_id, None, event)


def _context(ctx: Any, services: Services) -> RequestContext:
    """The request context of the authenticated principal behind an MCP request."""
    state = ctx.request.scope["state"] if ctx.request is not None else {}
    principal = state.get(PRINCIPAL_KEY)
    if not isinstance(principal, Principal):
        raise MCPError(INTERNAL_ERROR, "the request was not authenticated")
    return RequestContext(principal, state.get(REQUEST_ID_KEY, new_id("req")), services.clock)


class _Refused(Exception):
    """The policy or the grants refused a call; ``reason`` says why, for the model."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


def _plain_json_rpc(headers: Mapping[str, str]) -> bool:
    """A POST the fast path may answer: JSON in, JSON accepted, a protocol revision of the
    initialize handshake (or none, which means the oldest). The rest (a newer revision, an
    SSE-only client) is the SDK's."""
    version = headers.get("mcp-protocol-version")
    if version is not None and version not in HANDSHAKE_PROTOCOL_VERSIONS:
        return False
    if not headers.get("content-type", "").lower().startswith("application/json"):
        return False
    accepted = [t.split(";")[0].strip().lower() for t in headers.get("accept", "").split(",")]
    return any(t in ("application/json", "application/*", "*/*") for t in accepted)


class _TooLarge(Exception):
    """A request body longer than ``max_body_bytes``."""


async def _body(receive: Receive, limit: int) -> bytes:
    """The request's body (at most ``limit`` bytes, or ``_TooLarge``)."""
    chunks: list[bytes] = []
    size = 0
    while True:
        message = await receive()
        if message["type"] != "http.request":
            return b"".join(chunks)  # the client left: the SDK sees the same
        chunk = message.get("body", b"")
        size += len(chunk)
        if size > limit:
            raise _TooLarge
        chunks.append(chunk)
        if not message.get("more_body", False):
            return b"".join(chunks)


def _replaying(body: bytes, receive: Receive) -> Receive:
    """``receive`` with the body already read given again first."""
    given = False

    async def replay() -> Message:
        nonlocal given
        if given:
            return await receive()
        given = True
        return {"type": "http.request", "body": body, "more_body": False}

    return replay


def _tool_text(result: types.CallToolResult) -> str:
    """What the model reads of a tool's result: its text blocks and structured content."""
    text = "\n".join(b.text for b in result.content if isinstance(b, types.TextContent))
    if result.structured_content is not None:
        text += "\n" + json.dumps(result.structured_content, ensure_ascii=False)
    return text


def _dumped_text(result: BaseModel) -> str:
    """A prompt's or a resource's content, as the JSON the model is given."""
    return json.dumps(result.model_dump(mode="json", exclude_none=True), ensure_ascii=False)


async def _refuse(send: Send, exc: PilothouseError, request_id: str) -> None:
    headers = [(b"content-type", b"application/json"), (b"x-request-id", request_id.encode())]
    if exc.status == 401:
        headers.append((b"www-authenticate", b'Bearer realm="pilothouse"'))
    await send({"type": "http.response.start", "status": exc.status, "headers": headers})
    await send({"type": "http.response.body", "body": orjson.dumps(exc.body(request_id))})
