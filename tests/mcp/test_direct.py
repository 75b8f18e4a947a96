"""Tool calls to a streamable-HTTP upstream as plain POSTs on the gateway's pool
(``mcp/direct.py``), beside the SDK's session: the same answers and refusals as the session
gives, under the revision after 2025 (no session: the envelope in every request) and under the
initialize handshake (the server's session id in every request), with the configured headers
and nothing else."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import mcp_types as types
import pytest
from mcp import Client
from mcp_types.version import HANDSHAKE_PROTOCOL_VERSIONS, MODERN_PROTOCOL_VERSIONS

from pilothouse.gateway.providers.pool import HttpClient
from pilothouse.mcp import upstreams
from pilothouse.mcp.config import McpServerConfig
from pilothouse.mcp.upstreams import Upstream, UpstreamError
from tests.mcp.servers import http_server
from tests.mcp.test_upstreams import READY_SECONDS, Vault

NEGOTIATIONS = ["auto", "legacy"]  # what the SDK's client is told: probe first, or handshake


@pytest.fixture(params=NEGOTIATIONS)
async def upstream(
    request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch
) -> AsyncIterator[Upstream]:
    if request.param == "legacy":  # as a server that only speaks the handshake makes it
        monkeypatch.setattr(
            upstreams, "Client", lambda *a, **k: Client(*a, **{**k, "mode": "legacy"})
        )
    with http_server("http") as url:  # stateful, answers as SSE events
        config = McpServerConfig(name="web", transport="http", url=url, headers={"X-Team": "infra"})
        found = Upstream(config, Vault(), HttpClient())
        await found.start()
        try:
            assert await found.wait_ready(READY_SECONDS)
            await found.list_tools()  # the session has spoken: its revision is known
            yield found
        finally:
            await found.stop()


def by_session(upstream: Upstream, name: str, arguments: dict[str, Any]) -> Any:
    """The same call through the SDK's client session."""
    return upstream._request(
        f"tools/call {name!r}", lambda client: client.call_tool(name, arguments)
    )


def direct_of(upstream: Upstream) -> Any:
    link = upstream._live
    assert link is not None and link.direct is not None
    return link.direct


async def test_a_call_answers_as_the_session_answers(upstream: Upstream) -> None:
    assert direct_of(upstream).ready
    posted = await upstream.call_tool("echo", {"text": "same"})
    session = await by_session(upstream, "echo", {"text": "same"})
    assert isinstance(posted, types.CallToolResult)
    assert posted.model_dump() == session.model_dump()
    assert posted.structured_content == {"result": "same"}


async def test_a_refusal_is_the_same_error_as_the_sessions(upstream: Upstream) -> None:
    errors = []
    for call in (
        upstream.call_tool("no_such_tool", {}),
        by_session(upstream, "no_such_tool", {}),
    ):
        try:
            result = await call
        except UpstreamError as exc:
            errors.append((exc.kind, exc.code, str(exc)))
        else:
            errors.append(("result", result.is_error, types.CallToolResult.model_dump(result)))
    assert errors[0] == errors[1]


async def test_each_post_carries_what_was_negotiated_and_the_configured_headers(
    upstream: Upstream,
) -> None:
    negotiated = direct_of(upstream).negotiated
    result = await upstream.call_tool("whoami", {})
    seen = result.structured_content
    assert seen is not None
    assert seen["x-team"] == "infra" and "authorization" not in seen
    assert seen["mcp-protocol-version"] == negotiated.version
    if negotiated.version in HANDSHAKE_PROTOCOL_VERSIONS:
        assert negotiated.session_id and seen["mcp-session-id"] == negotiated.session_id
    else:
        assert negotiated.version in MODERN_PROTOCOL_VERSIONS
        assert (seen["mcp-method"], seen["mcp-name"]) == ("tools/call", "whoami")
        assert negotiated.envelope is not None


async def test_a_tool_name_no_header_can_carry_is_called_as_the_session_calls_it(
    upstream: Upstream,
) -> None:
    """The revision after 2025 names the tool in a header, which is ASCII: such a call is left
    to the SDK's session, whatever it answers (it was written as Latin-1, or failed to encode);
    under the handshake the name is only in the body, and the call is posted."""
    direct = direct_of(upstream)
    handshake = direct.negotiated.version in HANDSHAKE_PROTOCOL_VERSIONS  # no name header
    assert direct.ready_for("größe") is handshake
    outcomes = []
    for call in (
        upstream.call_tool("größe", {"text": "Fuß"}),
        by_session(upstream, "größe", {"text": "Fuß"}),
    ):
        try:
            result = await call
        except UpstreamError as exc:
            outcomes.append((exc.kind, str(exc)))
        else:
            outcomes.append(("result", result.model_dump()))
    assert outcomes[0] == outcomes[1]


async def test_a_header_value_that_would_break_the_request_leaves_calls_to_the_session() -> None:
    with http_server("http") as url:
        config = McpServerConfig(
            name="odd", transport="http", url=url, headers={"X-Note": "a\u0007b"}
        )
        odd = Upstream(config, Vault(), HttpClient())
        await odd.start()
        try:
            assert await odd.wait_ready(READY_SECONDS)
            assert not direct_of(odd).usable
        finally:
            await odd.stop()


def refusing_plain_posts(app: Any) -> Any:
    """``app``, refusing (403) the requests that carry no user agent: the pool's POSTs, not
    the SDK session's."""

    async def wrapped(scope: Any, receive: Any, send: Any) -> None:
        headers = dict(scope.get("headers", []))
        if scope["type"] == "http" and b"user-agent" not in headers:
            await send({"type": "http.response.start", "status": 403, "headers": []})
            await send({"type": "http.response.body", "body": b"token revoked"})
            return
        await app(scope, receive, send)

    return wrapped


async def test_an_http_error_is_named_with_its_status() -> None:
    with http_server("http", wrap=refusing_plain_posts) as url:
        web = Upstream(
            McpServerConfig(name="web", transport="http", url=url), Vault(), HttpClient()
        )
        await web.start()
        try:
            assert await web.wait_ready(READY_SECONDS)
            await web.list_tools()
            assert direct_of(web).ready
            with pytest.raises(UpstreamError) as refused:
                await web.call_tool("echo", {"text": "x"})
        finally:
            await web.stop()
    assert refused.value.kind == "unavailable"
    assert "HTTP 403: token revoked" in str(refused.value)
