"""``tools/call`` to a streamable-HTTP upstream as one plain HTTP POST on the gateway's
connection pool, beside the SDK's client session.

The SDK's client session costs about a millisecond of CPU a call (its streams, tasks and httpx
client); a POST on the pool (httptools, ``gateway/providers/pool.py``) costs a tenth of that
(bench/README, *MCP*). The session still makes the connection: its ``initialize`` handshake,
listings, prompts, resources and the session's end. Its HTTP client's event hooks tell this
path what the session negotiated: the ``Mcp-Session-Id`` the server gave it and the
``MCP-Protocol-Version`` it sends, which every POST here carries, with the upstream's
configured headers (its credentials) and nothing of the agent's.

A revision after the handshake's (2026-07-28 on) has no session: every request carries its
envelope instead (``params._meta``: the revision, the client's name and capabilities, and the
``Mcp-Method`` and ``Mcp-Name`` headers), which this path copies from the session's own last
request.

The answer is the JSON-RPC response, as JSON or as the one event of an SSE stream that holds
it (other events, notifications, are skipped); a result that asks for more input (after 2025)
is refused, as the session refuses it. Until the session has negotiated a revision (and, for
a revision without the handshake, sent a request with its envelope), or if a header value
could not be written as it is, calls take the SDK's path.
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

import httpx2
import orjson
from mcp_types.version import HANDSHAKE_PROTOCOL_VERSIONS, MODERN_PROTOCOL_VERSIONS

from pilothouse.gateway.providers.pool import HttpClient, Origin, Reply, Timeouts

MAX_ANSWER_BYTES = 32 * 1024 * 1024
SESSION_HEADER = "mcp-session-id"
VERSION_HEADER = "mcp-protocol-version"


class DirectFailed(Exception):
    """The POST got no usable answer; ``status`` is the HTTP status if one came."""

    def __init__(self, message: str, status: int = 0) -> None:
        super().__init__(message)
        self.status = status


class DirectRejected(Exception):
    """The server answered with a JSON-RPC error."""

    def __init__(self, code: int, message: str) -> None:
        super().__init__(message)
        self.code = code
        self.message = message


@dataclass(slots=True)
class Negotiated:
    """What the SDK's session negotiated, as its requests and the server's answers show it."""

    session_id: str | None = None
    version: str | None = None
    envelope: dict[str, Any] | None = None  # a revision without the handshake: params._meta

    async def saw_request(self, request: httpx2.Request) -> None:
        """An httpx event hook: the revision the session sends, and its envelope."""
        version = request.headers.get(VERSION_HEADER)
        if version is not None:
            self.version = version
        if version in MODERN_PROTOCOL_VERSIONS:
            try:
                meta = orjson.loads(request.content)["params"]["_meta"]
            except (orjson.JSONDecodeError, KeyError, TypeError):
                return
            if isinstance(meta, dict):
                self.envelope = {k: v for k, v in meta.items() if k != "progressToken"}

    async def saw_response(self, response: httpx2.Response) -> None:
        """An httpx event hook: the session id the server gave."""
        session = response.headers.get(SESSION_HEADER)
        if session is not None:
            self.session_id = session


class DirectPost:
    """POSTs JSON-RPC requests to one upstream's URL, as the session negotiated them."""

    def __init__(
        self, pool: HttpClient, url: str, headers: dict[str, str], negotiated: Negotiated
    ) -> None:
        parts = urlsplit(url)
        default = 443 if parts.scheme == "https" else 80
        self._origin = Origin(parts.scheme, parts.hostname or "", parts.port or default)
        host = parts.netloc.rpartition("@")[2]
        path = (parts.path or "/") + (f"?{parts.query}" if parts.query else "")
        self._pool = pool
        self.negotiated = negotiated
        fixed = {
            "accept": "application/json, text/event-stream",
            "content-type": "application/json",
            **{name.lower(): value for name, value in headers.items()},
        }
        # A value that would break the request's framing is left to the SDK's client (which
        # refuses it); nothing is written as given.
        self.usable = all(_plain(n) and _plain(v) for n, v in fixed.items()) and _plain(path)
        lines = "".join(f"{n}: {v}\r\n" for n, v in fixed.items() if n != "host")
        self._head = f"POST {path} HTTP/1.1\r\nhost: {host}\r\n{lines}"
        self._ids = itertools.count(1)

    @property
    def ready(self) -> bool:
        """Whether calls may take this path: the session negotiated a handshake revision, or
        a later one whose envelope it has sent."""
        negotiated = self.negotiated
        if negotiated.version in HANDSHAKE_PROTOCOL_VERSIONS:
            return self.usable
        return self.usable and negotiated.envelope is not None

    def ready_for(self, name: str) -> bool:
        """``ready``, for a request that names ``name``: after 2025 in a header, which is
        ASCII (a name beyond it is left to the SDK's session, as the header values are)."""
        if self.negotiated.version in HANDSHAKE_PROTOCOL_VERSIONS:
            return self.usable
        return self.ready and _plain(name)

    async def request(self, method: str, params: dict[str, Any], timeouts: Timeouts) -> Any:
        """The ``result`` of one JSON-RPC request. Raises DirectRejected (a JSON-RPC error),
        DirectFailed (no usable answer), or the pool's UpstreamError (connect, timeout)."""
        ident = next(self._ids)
        negotiated = self.negotiated
        head = f"{self._head}{VERSION_HEADER}: {negotiated.version}\r\n"
        if negotiated.version not in HANDSHAKE_PROTOCOL_VERSIONS:
            params = {**params, "_meta": negotiated.envelope}
            head += f"mcp-method: {method}\r\n"
            if "name" in params:
                head += f"mcp-name: {params['name']}\r\n"
        if negotiated.session_id is not None:
            head += f"{SESSION_HEADER}: {negotiated.session_id}\r\n"
        body = orjson.dumps({"jsonrpc": "2.0", "id": ident, "method": method, "params": params})
        data = f"{head}content-length: {len(body)}\r\n\r\n".encode("latin-1") + body
        reply = await self._pool.request(self._origin, data, timeouts)
        try:
            if reply.status != 200:
                text = (await _read(reply)).decode("utf-8", "replace")
                raise DirectFailed(f"HTTP {reply.status}: {text[:200]}", reply.status)
            if reply.content_type == "text/event-stream":
                answer = await _from_events(reply, ident)
            else:
                answer = _parsed(await _read(reply))
        finally:
            await reply.aclose()
        return _result(answer, ident)


def _plain(text: str) -> bool:
    """Whether ``text`` goes into a request's head as it is: printable ASCII (what the SDK's
    client encodes a header in)."""
    return text.isascii() and text.isprintable()


async def _read(reply: Reply) -> bytes:
    chunks, size = [], 0
    async for chunk in reply:
        size += len(chunk)
        if size > MAX_ANSWER_BYTES:
            raise DirectFailed(f"the answer is larger than {MAX_ANSWER_BYTES} bytes")
        chunks.append(chunk)
    return b"".join(chunks)


async def _from_events(reply: Reply, ident: int) -> dict[str, Any]:
    """The response to ``ident`` among the SSE events of ``reply``."""
    pending = b""
    async for chunk in reply:
        pending += chunk.replace(b"\r\n", b"\n")
        if len(pending) > MAX_ANSWER_BYTES:
            raise DirectFailed(f"an event is larger than {MAX_ANSWER_BYTES} bytes")
        *events, pending = pending.split(b"\n\n")
        for event in events:
            data = b"\n".join(
                line[5:].removeprefix(b" ")
                for line in event.split(b"\n")
                if line.startswith(b"data:")
            )
            if not data:
                continue
            message = _parsed(data)
            if message.get("id") == ident and ("result" in message or "error" in message):
                return message
    raise DirectFailed("the event stream ended without the answer")


def _parsed(data: bytes) -> dict[str, Any]:
    try:
        message = orjson.loads(data)
    except orjson.JSONDecodeError as exc:
        raise DirectFailed(f"the answer is not JSON: {exc}") from exc
    if not isinstance(message, dict) or message.get("jsonrpc") != "2.0":
        raise DirectFailed("the answer is not a JSON-RPC 2.0 message")
    return message


def _result(answer: dict[str, Any], ident: int) -> Any:
    if answer.get("id") != ident:
        raise DirectFailed(f"the answer is to request {answer.get('id')!r}, not {ident}")
    error = answer.get("error")
    if error is not None:
        if not isinstance(error, dict) or not isinstance(error.get("code"), int):
            raise DirectFailed("the answer's error is not a JSON-RPC error")
        raise DirectRejected(error["code"], str(error.get("message", "")))
    result = answer.get("result")
    if not isinstance(result, dict):
        raise DirectFailed("the answer has neither a result object nor an error")
    if result.get("resultType", "complete") != "complete":
        raise DirectFailed(
            f"the server asks for input ({result['resultType']!r}), which /mcp cannot give"
        )
    return result
