"""The upstream MCP servers ``/mcp`` aggregates: connecting, supervising and calling them.

An :class:`Upstream` holds one MCP client session (the SDK's ``Client``) to one configured
server, kept by a supervisor task::

    starting ──► ready ──(exit, dropped connection, garbage, stdio timeout)──► restarting
                   ▲                                                              │
                   └───────────── reconnect after the back-off ◄──────────────────┘
    stop(): any state ──► stopped

The back-off starts at ``restart_backoff_seconds`` and doubles up to
``restart_backoff_max_seconds``; a connection that stayed up that long starts it over. Calls
share the live session (the SDK multiplexes requests on it), each bounded by
``timeout_seconds``. Nothing waits for a connection: while the upstream is not ready a call
fails at once. How a request can fail (:class:`UpstreamError` ``kind``):

- ``unavailable``: not ready (starting, restarting, stopped), or the connection ended before
  the answer came; the message names the server and its last error.
- ``timeout``: no answer in time. A stdio server is then restarted (its process group killed):
  a hung server may never read its input again.
- ``protocol``: the server wrote something that is not JSON-RPC (the session is out of step:
  it is restarted), or answered with a result of the wrong shape.
- ``rejected``: the server answered with a JSON-RPC error (unknown tool, invalid arguments).

A tool that runs and fails is not an error here: its result comes back with ``isError`` set.

Credentials are fetched when a connection is made and go only where the configuration puts
them (the process environment, the request headers); nothing of the agent's request reaches an
upstream but the arguments of its calls.
"""

from __future__ import annotations

import asyncio
import contextvars
import logging
import math
import os
from collections import deque
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass
from functools import partial
from types import TracebackType
from typing import Any, Literal, Protocol, Self, TypeVar

import anyio
import anyio.to_thread
import httpx2
import mcp_types as types
from mcp import Client, StdioServerParameters
from mcp.client._transport import ReadStream, TransportStreams
from mcp.client.sse import sse_client
from mcp.client.stdio import stdio_client
from mcp.client.streamable_http import streamable_http_client
from mcp.shared.exceptions import MCPError
from mcp.shared.message import SessionMessage
from mcp_types import CONNECTION_CLOSED, INVALID_REQUEST
from pydantic import ValidationError

from pilothouse import __version__
from pilothouse.errors import PilothouseError
from pilothouse.gateway.providers.base import UpstreamError as PoolError
from pilothouse.gateway.providers.base import UpstreamTimeout as PoolTimeout
from pilothouse.gateway.providers.pool import HttpClient, Timeouts
from pilothouse.mcp.config import McpServerConfig
from pilothouse.mcp.direct import DirectFailed, DirectPost, DirectRejected, Negotiated
from pilothouse.mcp.processes import child_on_pipe, kill_group
from pilothouse.secrets.refs import SecretRef

log = logging.getLogger(__name__)

State = Literal["starting", "ready", "restarting", "stopped"]
ErrorKind = Literal["unavailable", "timeout", "protocol", "rejected"]
Credentials = Callable[[McpServerConfig], Awaitable[Mapping[str, str]]]
"""Called at each (re)connection: secret values keyed like ``secret_refs`` (``env:NAME``,
``header:name``)."""

STDERR_LINES = 200
STDERR_LINE_CHARS = 4000
STOP_GRACE_SECONDS = 8.0  # beyond connect_timeout_seconds: the SDK's stdio shutdown takes up to ~7
STDERR_DRAIN_SECONDS = 1.0
CLOSE_REASON_SECONDS = 1.0
STREAM_READ_SECONDS = 300.0  # an idle event stream (server notifications) may stay silent this long
MAX_PAGES = 100
SESSION_GONE = "Session terminated"  # the SDK's streamable HTTP client: the server forgot us
ERROR_CHARS = 500
EXPECTED: tuple[type[BaseException], ...] = (
    OSError,
    TimeoutError,
    MCPError,
    ValidationError,
    httpx2.HTTPError,
    anyio.BrokenResourceError,
    anyio.ClosedResourceError,
    PilothouseError,
)

_T = TypeVar("_T")
_ItemT = TypeVar("_ItemT")


class UpstreamError(Exception):
    """A request to an upstream MCP server failed; ``kind`` says how (see the module doc)."""

    def __init__(
        self, upstream: str, kind: ErrorKind, message: str, code: int | None = None
    ) -> None:
        super().__init__(f"MCP server {upstream!r}: {message}")
        self.upstream = upstream
        self.kind = kind
        self.detail = message
        self.code = code
        """``rejected`` only: the JSON-RPC error code the server answered with."""


@dataclass(frozen=True, slots=True)
class UpstreamStatus:
    """An upstream's state, restarts so far, last error, and a stdio server's process id."""

    state: State
    restarts: int
    last_error: str | None
    pid: int | None


class _Page(Protocol):
    @property
    def next_cursor(self) -> str | None: ...


_PageT = TypeVar("_PageT", bound=_Page)


class _Link:
    """One connection attempt: its client once ready, and why it ended (the first reason)."""

    def __init__(self, on_end: Callable[[_Link], None]) -> None:
        self.client: Client | None = None
        self.ready_at: float | None = None
        self.pid: int | None = None
        self.pipe: int | None = None  # the inode of the stderr pipe, to recognise the process
        self.stderr_last: str | None = None
        self.scope: anyio.CancelScope | None = None
        self.direct: DirectPost | None = None  # http: tools/call as a plain POST (direct.py)
        self.kind: ErrorKind | Literal["stopped"] | None = None
        self.reason: str | None = None
        self.ended = asyncio.Event()
        self._on_end = on_end

    def end(self, kind: ErrorKind | Literal["stopped"], reason: str) -> None:
        """Mark the connection over (the first call wins) and wake the supervisor."""
        if self.ended.is_set():
            return
        self.kind, self.reason = kind, reason
        self.ended.set()
        self._on_end(self)


class _Watched:
    """A transport's read stream that tells its link when it ends or yields a non-message."""

    def __init__(
        self, inner: ReadStream[SessionMessage | Exception], link: _Link, closed: str
    ) -> None:
        self._inner = inner
        self._link = link
        self._closed = closed

    @property
    def last_context(self) -> contextvars.Context | None:
        """The sender's context, for transports that carry one (streamable HTTP)."""
        context: contextvars.Context | None = getattr(self._inner, "last_context", None)
        return context

    async def receive(self) -> SessionMessage | Exception:
        """The next message, or the parse error a transport yields for a malformed one."""
        try:
            item = await self._inner.receive()
        except (anyio.EndOfStream, anyio.ClosedResourceError, anyio.BrokenResourceError):
            self._link.end("unavailable", self._closed)
            raise
        if isinstance(item, ValueError):  # what a transport yields for a line it cannot parse
            message = f"the server sent something that is not JSON-RPC: {_parse_problem(item)}"
            self._link.end("protocol", message)
        elif isinstance(item, Exception):  # what a transport yields when its stream broke
            self._link.end("unavailable", f"the connection failed: {_describe(item)}")
        return item

    async def aclose(self) -> None:
        """Close the underlying stream."""
        await self._inner.aclose()

    def __aiter__(self) -> Self:
        return self

    async def __anext__(self) -> SessionMessage | Exception:
        try:
            return await self.receive()
        except anyio.EndOfStream:
            raise StopAsyncIteration from None

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc_val: BaseException | None,
        exc_tb: TracebackType | None,
    ) -> None:
        await self.aclose()


class Upstream:
    """One configured MCP server, kept connected by a supervisor task."""

    def __init__(
        self, config: McpServerConfig, credentials: Credentials, pool: HttpClient | None = None
    ) -> None:
        self.config = config
        self.name = config.name
        self._credentials = credentials
        self._pool = pool  # with one, an http server's tools/call skips the SDK's session
        self._log = logging.getLogger(f"pilothouse.mcp.upstream.{config.name}")
        self._state: State = "stopped"
        self._restarts = 0
        self._last_error: str | None = None
        self._stderr: deque[str] = deque(maxlen=STDERR_LINES)
        self._live: _Link | None = None  # ready for calls
        self._current: _Link | None = None  # connecting or ready
        self._task: asyncio.Task[None] | None = None
        self._stopping = asyncio.Event()
        self._ready = asyncio.Event()
        self._first_attempt = asyncio.Event()

    # --- lifecycle ------------------------------------------------------------------------

    async def start(self) -> None:
        """Connect, waiting for the first attempt only; an unreachable server is retried."""
        if self._task is not None:
            return
        self._stopping.clear()
        self._first_attempt.clear()
        self._state = "starting"
        self._task = asyncio.create_task(self._supervise(), name=f"mcp upstream {self.name}")
        with anyio.move_on_after(self.config.connect_timeout_seconds + STOP_GRACE_SECONDS):
            await self._first_attempt.wait()

    async def stop(self) -> None:
        """Close the connection (ending a stdio server's process group), within a bound."""
        task, self._task = self._task, None
        if task is None:
            return
        self._stopping.set()
        link = self._current
        if link is not None:
            if link.ready_at is None and link.scope is not None:
                link.scope.cancel()  # a connection attempt is not waited out
            link.end("stopped", "stopped")
        bound = self.config.connect_timeout_seconds + STOP_GRACE_SECONDS
        done, _ = await asyncio.wait({task}, timeout=bound)
        if not done:
            self._log.warning("MCP server %r did not stop within %g s; cancelled", self.name, bound)
            task.cancel()
            await asyncio.wait({task}, timeout=STOP_GRACE_SECONDS)
        self._state = "stopped"

    async def wait_ready(self, seconds: float) -> bool:
        """Wait up to ``seconds`` for the upstream to be ready; whether it is."""
        with anyio.move_on_after(seconds):
            await self._ready.wait()
        return self._state == "ready"

    async def __aenter__(self) -> Self:
        await self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.stop()

    @property
    def status(self) -> UpstreamStatus:
        """The state, restarts so far, last error, and the pid of a running stdio server."""
        live = self._live
        pid = live.pid if live is not None else None
        return UpstreamStatus(self._state, self._restarts, self._last_error, pid)

    def stderr_tail(self) -> list[str]:
        """The last lines a stdio server wrote to its standard error, across restarts."""
        return list(self._stderr)

    # --- requests -------------------------------------------------------------------------

    async def list_tools(self) -> list[types.Tool]:
        """Every tool the server lists (all pages)."""

        async def page(client: Client, cursor: str | None) -> types.ListToolsResult:
            return await client.list_tools(cursor=cursor, cache_mode="bypass")

        return await self._all_pages("tools/list", page, lambda result: result.tools)

    async def call_tool(
        self, name: str, arguments: Mapping[str, Any] | None = None
    ) -> types.CallToolResult:
        """Call a tool; a tool's own failure comes back as a result with ``isError`` set."""
        what = f"tools/call {name!r}"
        link = self._live
        if link is not None and link.direct is not None and link.direct.ready_for(name):
            params = {"name": name, "arguments": dict(arguments or {})}
            return await self._posted(link, link.direct, what, params)
        return await self._request(
            what, lambda client: client.call_tool(name, dict(arguments or {}))
        )

    async def _posted(
        self, link: _Link, direct: DirectPost, what: str, params: dict[str, Any]
    ) -> types.CallToolResult:
        """``tools/call`` as one POST (``direct.py``), its failures mapped as ``_request``
        maps the session's."""
        timeout = self.config.timeout_seconds
        timeouts = Timeouts(self.config.connect_timeout_seconds, timeout, timeout)
        try:
            with anyio.fail_after(timeout):
                result = await direct.request("tools/call", params, timeouts)
        except (TimeoutError, PoolTimeout):
            message = f"no answer to {what} within {timeout:g} s"
            raise UpstreamError(self.name, "timeout", message) from None
        except PoolError as exc:  # refused, reset, cut off: the session's transport is too
            link.end("unavailable", f"the connection failed: {exc}")
            raise UpstreamError(
                self.name, "unavailable", f"{what}: the connection failed: {exc}; reconnecting"
            ) from exc
        except DirectRejected as exc:
            raise self._answered_with_error(link, what, MCPError(exc.code, exc.message)) from exc
        except DirectFailed as exc:
            if exc.status == 404 and direct.negotiated.session_id is not None:
                link.end("unavailable", "the server no longer knows our session")
                raise UpstreamError(
                    self.name, "unavailable", f"{what}: the server lost the session; reconnecting"
                ) from exc
            if exc.status:  # an HTTP error: credentials refused, the server failing
                message = f"{what}: the server answered {exc}"
                raise UpstreamError(self.name, "unavailable", message) from exc
            message = f"the answer to {what} is not what MCP specifies: {exc}"
            raise UpstreamError(self.name, "protocol", message) from exc
        try:
            return types.CallToolResult.model_validate(result)
        except ValidationError as exc:
            message = f"the answer to {what} is not what MCP specifies: {_one_line(exc)}"
            raise UpstreamError(self.name, "protocol", message) from exc

    async def list_resources(self) -> list[types.Resource]:
        """Every resource the server lists (all pages)."""

        async def page(client: Client, cursor: str | None) -> types.ListResourcesResult:
            return await client.list_resources(cursor=cursor, cache_mode="bypass")

        return await self._all_pages("resources/list", page, lambda result: result.resources)

    async def read_resource(self, uri: str) -> types.ReadResourceResult:
        """Read one resource."""
        return await self._request(
            f"resources/read {uri!r}",
            lambda client: client.read_resource(uri, cache_mode="bypass"),
        )

    async def list_prompts(self) -> list[types.Prompt]:
        """Every prompt the server lists (all pages)."""

        async def page(client: Client, cursor: str | None) -> types.ListPromptsResult:
            return await client.list_prompts(cursor=cursor, cache_mode="bypass")

        return await self._all_pages("prompts/list", page, lambda result: result.prompts)

    async def get_prompt(
        self, name: str, arguments: Mapping[str, str] | None = None
    ) -> types.GetPromptResult:
        """Render one prompt with its arguments."""
        return await self._request(
            f"prompts/get {name!r}", lambda client: client.get_prompt(name, dict(arguments or {}))
        )

    async def _all_pages(
        self,
        method: str,
        fetch: Callable[[Client, str | None], Awaitable[_PageT]],
        items: Callable[[_PageT], list[_ItemT]],
    ) -> list[_ItemT]:
        found: list[_ItemT] = []
        cursor: str | None = None
        for _ in range(MAX_PAGES):
            page = await self._request(method, partial(_with_cursor, fetch, cursor))
            found.extend(items(page))
            cursor = page.next_cursor
            if cursor is None:
                return found
        raise UpstreamError(self.name, "protocol", f"{method} did not end after {MAX_PAGES} pages")

    async def _request(self, what: str, send: Callable[[Client], Awaitable[_T]]) -> _T:
        """Send one request on the live session, bounded, with its failure mapped."""
        link = self._live
        if link is None or link.client is None:
            raise UpstreamError(self.name, "unavailable", self._why_not_ready())
        timeout = self.config.timeout_seconds
        try:
            with anyio.fail_after(timeout):
                return await send(link.client)
        except TimeoutError:
            message = f"no answer to {what} within {timeout:g} s"
            if self.config.transport != "stdio":
                raise UpstreamError(self.name, "timeout", message) from None
            link.end("timeout", message)
            raise UpstreamError(self.name, "timeout", f"{message}; restarting it") from None
        except MCPError as exc:
            if exc.code == CONNECTION_CLOSED and not link.ended.is_set():
                # The transport fails waiting requests before the supervisor learns why.
                with anyio.move_on_after(CLOSE_REASON_SECONDS):
                    await link.ended.wait()
            raise self._answered_with_error(link, what, exc) from exc
        except ValidationError as exc:
            message = f"the answer to {what} is not what MCP specifies: {_one_line(exc)}"
            raise UpstreamError(self.name, "protocol", message) from exc
        except RuntimeError as exc:  # the SDK's checks of a result (output schema, input rounds)
            if link.ended.is_set():
                raise self._ended_during(link, what) from exc
            message = f"unexpected answer to {what}: {_one_line(exc)}"
            raise UpstreamError(self.name, "protocol", message) from exc

    def _answered_with_error(self, link: _Link, what: str, exc: MCPError) -> UpstreamError:
        if link.ended.is_set() or exc.code == CONNECTION_CLOSED:
            if not link.ended.is_set():
                return UpstreamError(self.name, "unavailable", f"{what}: {exc.message}")
            return self._ended_during(link, what)
        if exc.code == INVALID_REQUEST and exc.message == SESSION_GONE:
            link.end("unavailable", "the server no longer knows our session")
            return UpstreamError(
                self.name, "unavailable", f"{what}: the server lost the session; reconnecting"
            )
        message = f"{what} was refused: {exc.message} (JSON-RPC error {exc.code})"
        return UpstreamError(self.name, "rejected", message, code=exc.code)

    def _ended_during(self, link: _Link, what: str) -> UpstreamError:
        if link.kind == "protocol":
            return UpstreamError(self.name, "protocol", f"{what}: {link.reason}; restarting it")
        return UpstreamError(
            self.name, "unavailable", f"the connection ended during {what}: {link.reason}"
        )

    def _why_not_ready(self) -> str:
        if self._state == "restarting":
            restarts = f"{self._restarts} restart{'' if self._restarts == 1 else 's'} so far"
            return f"unavailable, restarting ({restarts}); last error: {self._last_error}"
        if self._state == "starting":
            return "unavailable, still starting"
        return f"unavailable: {self._state}"

    # --- supervision ----------------------------------------------------------------------

    async def _supervise(self) -> None:
        """Connect, wait for the connection to end, back off, and again until stopped."""
        delay = self.config.restart_backoff_seconds
        try:
            while True:
                link = _Link(self._link_ended)
                self._current = link
                try:
                    await self._run_link(link)
                except Exception as exc:  # the supervisor boundary: any failure ends one connection
                    link.end("unavailable", _describe(exc))
                    self._log_failure(exc)
                finally:
                    link.end("unavailable", "the connection closed")
                    self._current = None
                    self._first_attempt.set()
                if self._stopping.is_set():
                    return
                delay = self._after_failure(link, delay)
                with anyio.move_on_after(delay):
                    await self._stopping.wait()
                if self._stopping.is_set():
                    return
                delay = min(delay * 2, self.config.restart_backoff_max_seconds)
                self._restarts += 1
        finally:
            self._live = None
            self._ready.clear()
            self._state = "stopped"

    async def _run_link(self, link: _Link) -> None:
        """Make one connection, serve calls on it until it ends, then close it."""
        with anyio.CancelScope() as scope:
            link.scope = scope
            scope.deadline = anyio.current_time() + self.config.connect_timeout_seconds
            secrets = await self._credentials(self.config)
            async with self._client(link, secrets) as client:
                scope.deadline = math.inf
                if not link.ended.is_set():
                    link.client, link.ready_at = client, anyio.current_time()
                    self._became_ready(link)
                    await link.ended.wait()
                if link.kind in ("timeout", "protocol") and link.pid and link.pipe:
                    await anyio.to_thread.run_sync(kill_group, link.pid, link.pipe)
        if scope.cancelled_caught and link.ready_at is None and not self._stopping.is_set():
            seconds = self.config.connect_timeout_seconds
            raise TimeoutError(f"no connection within connect_timeout_seconds ({seconds:g} s)")

    def _became_ready(self, link: _Link) -> None:
        self._live = link
        self._state = "ready"
        self._ready.set()
        self._first_attempt.set()
        pid = f" (pid {link.pid})" if link.pid else ""
        self._log.info("MCP server %r connected%s", self.name, pid)

    def _link_ended(self, link: _Link) -> None:
        """Stop routing calls to a connection as soon as anything ends it."""
        if self._live is link:
            self._live = None
            self._ready.clear()
        if not self._stopping.is_set() and link.kind != "stopped":
            self._state = "restarting"
            self._last_error = link.reason

    def _after_failure(self, link: _Link, delay: float) -> float:
        """Record why the connection ended; the wait before the next attempt."""
        config = self.config
        error = link.reason or "the connection closed"
        if link.stderr_last:
            error = f"{error}; last stderr line: {link.stderr_last}"
        self._last_error = error[:ERROR_CHARS]
        self._state = "restarting"
        stable = link.ready_at is not None and (
            anyio.current_time() - link.ready_at >= config.restart_backoff_max_seconds
        )
        wait = config.restart_backoff_seconds if stable else delay
        self._log.warning("MCP server %r: %s; reconnecting in %g s", self.name, error, wait)
        return wait

    def _log_failure(self, exc: Exception) -> None:
        if _expected(exc):
            self._log.debug("MCP server %r: connection failed", self.name, exc_info=exc)
        else:
            self._log.exception("MCP server %r: connection failed unexpectedly", self.name)

    # --- transports -----------------------------------------------------------------------

    def _client(self, link: _Link, secrets: Mapping[str, str]) -> Client:
        config = self.config
        transport: Any
        if config.transport == "stdio":
            transport = self._stdio(link, _resolved(config.env, "env", secrets, config.name))
        else:
            headers = _resolved(config.headers, "header", secrets, config.name)
            transport = (self._http if config.transport == "http" else self._sse)(link, headers)
        return Client(
            transport,
            # Every stdio and SSE server answers the initialize handshake; a server/discover
            # probe first costs a round trip and stalls on servers that drop unknown requests.
            mode="auto" if config.transport == "http" else "legacy",
            cache=None,
            client_info=types.Implementation(name="pilothouse", version=__version__),
        )

    @asynccontextmanager
    async def _stdio(self, link: _Link, env: dict[str, str]) -> AsyncIterator[TransportStreams]:
        config = self.config
        assert config.command is not None
        params = StdioServerParameters(
            command=config.command, args=config.args, env=env, cwd=config.cwd
        )
        read_fd, write_fd = os.pipe()
        try:
            os.set_blocking(read_fd, False)
            pipe = link.pipe = os.fstat(read_fd).st_ino
            errlog = os.fdopen(write_fd, "w")
        except OSError:
            os.close(write_fd)
            os.close(read_fd)
            raise
        try:
            async with anyio.create_task_group() as tg:
                drained = anyio.Event()
                tg.start_soon(self._read_stderr, read_fd, link, drained)
                try:
                    async with stdio_client(params, errlog=errlog) as (read, write):
                        errlog.close()  # the process holds its own end: EOF comes when it exits
                        link.pid = await anyio.to_thread.run_sync(child_on_pipe, pipe)
                        yield _Watched(read, link, "the server process exited"), write
                finally:
                    errlog.close()
                    with anyio.CancelScope(shield=True):
                        if link.pid is not None:
                            await anyio.to_thread.run_sync(kill_group, link.pid, pipe)
                        with anyio.move_on_after(STDERR_DRAIN_SECONDS):
                            await drained.wait()
                    tg.cancel_scope.cancel()
        finally:
            os.close(read_fd)

    async def _read_stderr(self, fd: int, link: _Link, drained: anyio.Event) -> None:
        pending = b""
        try:
            while True:
                await anyio.wait_readable(fd)
                try:
                    chunk = os.read(fd, 65536)
                except BlockingIOError:
                    continue
                if not chunk:
                    break
                *lines, pending = (pending + chunk).split(b"\n")
                if len(pending) > STDERR_LINE_CHARS:
                    lines.append(pending)
                    pending = b""
                for line in lines:
                    self._stderr_line(link, line)
        finally:
            if pending:
                self._stderr_line(link, pending)
            drained.set()

    def _stderr_line(self, link: _Link, raw: bytes) -> None:
        line = raw.decode("utf-8", "replace").rstrip("\r")[:STDERR_LINE_CHARS]
        self._stderr.append(line)
        if line.strip():
            link.stderr_last = line
        self._log.debug("stderr: %s", line)

    @asynccontextmanager
    async def _http(self, link: _Link, headers: dict[str, str]) -> AsyncIterator[TransportStreams]:
        config = self.config
        assert config.url is not None
        read_seconds = max(STREAM_READ_SECONDS, config.timeout_seconds)
        timeout = httpx2.Timeout(config.connect_timeout_seconds, read=read_seconds)
        negotiated = Negotiated()  # what the session's requests and answers say it agreed
        hooks: dict[str, list[Callable[..., Any]]] = {
            "request": [negotiated.saw_request],
            "response": [negotiated.saw_response],
        }
        async with (
            httpx2.AsyncClient(headers=headers, timeout=timeout, event_hooks=hooks) as http,
            streamable_http_client(config.url, http_client=http) as (read, write),
        ):
            if self._pool is not None:
                link.direct = DirectPost(self._pool, config.url, headers, negotiated)
            yield _Watched(read, link, "the server closed the connection"), write

    @asynccontextmanager
    async def _sse(self, link: _Link, headers: dict[str, str]) -> AsyncIterator[TransportStreams]:
        config = self.config
        assert config.url is not None
        async with sse_client(
            config.url,
            headers=headers,
            timeout=config.connect_timeout_seconds,
            sse_read_timeout=max(STREAM_READ_SECONDS, config.timeout_seconds),
        ) as (read, write):
            yield _Watched(read, link, "the server closed the event stream"), write


class UpstreamRegistry:
    """Every configured upstream MCP server, started and stopped together."""

    def __init__(self, configs: Sequence[McpServerConfig], credentials: Credentials) -> None:
        names = [config.name for config in configs]
        repeated = sorted({name for name in names if names.count(name) > 1})
        if repeated:
            raise ValueError(f"MCP server names must be unique; repeated: {', '.join(repeated)}")
        self._pool = HttpClient()  # the plain POSTs of every http server's tool calls
        self._upstreams = {
            config.name: Upstream(config, credentials, self._pool) for config in configs
        }

    async def start(self) -> None:
        """Start every upstream at once; one that cannot connect is retried in the background."""
        async with anyio.create_task_group() as tg:
            for upstream in self._upstreams.values():
                tg.start_soon(upstream.start)

    async def stop(self) -> None:
        """Stop every upstream at once."""
        async with anyio.create_task_group() as tg:
            for upstream in self._upstreams.values():
                tg.start_soon(upstream.stop)
        await self._pool.aclose()

    async def __aenter__(self) -> Self:
        await self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.stop()

    def get(self, name: str) -> Upstream:
        """The upstream configured as ``name``; KeyError if there is none."""
        try:
            return self._upstreams[name]
        except KeyError:
            raise KeyError(f"no MCP server is configured as {name!r}") from None

    def all(self) -> list[Upstream]:
        """Every upstream, in configuration order."""
        return list(self._upstreams.values())

    async def tools(self) -> dict[str, list[types.Tool]]:
        """The tools of every ready upstream by server name; those that are down are left out."""
        listed: dict[str, list[types.Tool]] = {}

        async def collect(upstream: Upstream) -> None:
            try:
                listed[upstream.name] = await upstream.list_tools()
            except UpstreamError as exc:
                log.warning("%s; its tools are left out", exc)

        async with anyio.create_task_group() as tg:
            for upstream in self._upstreams.values():
                if upstream.status.state == "ready":
                    tg.start_soon(collect, upstream)
                else:
                    status = upstream.status
                    log.info(
                        "MCP server %r is %s, its tools are left out (last error: %s)",
                        upstream.name,
                        status.state,
                        status.last_error,
                    )
        return {name: listed[name] for name in self._upstreams if name in listed}


async def _with_cursor(
    fetch: Callable[[Client, str | None], Awaitable[_T]], cursor: str | None, client: Client
) -> _T:
    return await fetch(client, cursor)


def _resolved(
    values: Mapping[str, str | SecretRef], prefix: str, secrets: Mapping[str, str], server: str
) -> dict[str, str]:
    """Plain values as configured, secret references replaced by the credentials' values."""
    resolved: dict[str, str] = {}
    for key, value in values.items():
        if isinstance(value, SecretRef):
            where = f"{prefix}:{key.lower() if prefix == 'header' else key}"
            if where not in secrets:
                raise UpstreamError(
                    server, "unavailable", f"no value was provided for {where} ({value.secret!r})"
                )
            resolved[key] = secrets[where]
        else:
            resolved[key] = value
    return resolved


def _leaves(exc: BaseException) -> list[BaseException]:
    if isinstance(exc, BaseExceptionGroup):
        return [leaf for inner in exc.exceptions for leaf in _leaves(inner)]
    return [exc]


def _expected(exc: BaseException) -> bool:
    """Whether a connection failure is an ordinary one (refused, exited, timed out)."""
    return all(isinstance(leaf, (*EXPECTED, UpstreamError)) for leaf in _leaves(exc))


def _describe(exc: BaseException) -> str:
    """One line naming what ended a connection."""
    parts = [
        leaf.detail if isinstance(leaf, UpstreamError) else f"{type(leaf).__name__}: {leaf}"
        for leaf in _leaves(exc)
    ]
    return _one_line("; ".join(parts))


def _parse_problem(error: ValueError) -> str:
    """What was wrong with a message that did not parse, and the start of it."""
    if isinstance(error, ValidationError) and error.errors():
        first = error.errors()[0]
        return _one_line(f"{first['msg']} in {str(first.get('input'))[:120]!r}")
    return _one_line(error)


def _one_line(value: object) -> str:
    return " ".join(str(value).split())[:ERROR_CHARS]
