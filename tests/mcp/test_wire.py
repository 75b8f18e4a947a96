"""``/mcp`` on the wire: ``tools/list`` and ``tools/call`` answered on Pilothouse's fast path
exactly as the SDK's stateless transport answers them, and everything else (a parse error, a
notification, a newer protocol revision) still the SDK's, with the body read once given
again; a body over ``max_body_bytes`` refused."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
import orjson
import pytest

from pilothouse.app import build_app
from pilothouse.mcp import gateway
from pilothouse.mcp.config import McpServerConfig
from pilothouse.services import Services
from pilothouse.settings import Settings
from tests.conftest import Api
from tests.mcp.test_gateway import RugPull, rugpull  # noqa: F401

HEADERS = {
    "accept": "application/json, text/event-stream",
    "content-type": "application/json",
    "mcp-protocol-version": "2025-11-25",
}


@pytest.fixture
def settings(database_url: str, tmp_path: Path, rugpull: RugPull) -> Settings:  # noqa: F811
    return Settings(
        database_url=database_url,
        data_dir=tmp_path / "data",
        mcp_servers=[McpServerConfig(name="adder", transport="http", url=rugpull.url)],
        mcp_list_cache_seconds=0,
        max_body_bytes=10_000,
    )


@pytest.fixture
async def mcp(api: Api, services: Services) -> AsyncIterator[httpx.AsyncClient]:
    token = (await api.session())["key"]["token"]
    transport = httpx.ASGITransport(app=build_app(services.settings, services=services))
    headers = {**HEADERS, "authorization": f"Bearer {token}"}
    async with httpx.AsyncClient(
        transport=transport, base_url="http://pilothouse.test", headers=headers
    ) as client:
        yield client


def rpc(method: str, params: dict[str, Any] | None = None, ident: int | str = 7) -> bytes:
    message: dict[str, Any] = {"jsonrpc": "2.0", "id": ident, "method": method}
    if params is not None:
        message["params"] = params
    return orjson.dumps(message)


async def test_the_fast_path_answers_as_the_sdk_does(
    mcp: httpx.AsyncClient, monkeypatch: pytest.MonkeyPatch
) -> None:
    requests = [
        rpc("tools/list"),
        rpc("tools/call", {"name": "adder__add", "arguments": {"a": 2, "b": 40}}, "x-1"),
        rpc("tools/call", {"name": "adder__nothing", "arguments": {}}),
        rpc("tools/call", {"arguments": {}}),  # no name: invalid params
    ]
    fast = [await mcp.post("/mcp", content=body) for body in requests]
    monkeypatch.setattr(gateway, "FAST_METHODS", frozenset())  # every request to the SDK
    sdk = [await mcp.post("/mcp", content=body) for body in requests]
    for ours, theirs in zip(fast, sdk, strict=True):
        assert (ours.status_code, ours.headers["content-type"]) == (
            theirs.status_code,
            theirs.headers["content-type"],
        )
        assert ours.json() == theirs.json()
    assert fast[1].json()["result"]["content"][0]["text"] == "42"
    assert fast[2].json()["error"]["code"] == -32602
    assert fast[3].json()["error"]["code"] == -32602


async def test_what_the_fast_path_does_not_answer_reaches_the_sdk_with_its_body(
    mcp: httpx.AsyncClient,
) -> None:
    garbled = await mcp.post("/mcp", content=b'{"jsonrpc": "2.0", "id": 1, "method"')
    assert garbled.status_code == 400 and garbled.json()["error"]["code"] == -32700
    note = orjson.dumps({"jsonrpc": "2.0", "method": "notifications/initialized"})
    assert (await mcp.post("/mcp", content=note)).status_code == 202
    pinged = await mcp.post("/mcp", content=rpc("ping"))
    assert pinged.json() == {"jsonrpc": "2.0", "id": 7, "result": {}}


async def test_a_body_over_the_limit_is_refused_by_name(mcp: httpx.AsyncClient) -> None:
    body = rpc("tools/call", {"name": "adder__add", "arguments": {"pad": "x" * 20_000}})
    refused = await mcp.post("/mcp", content=body)
    assert refused.status_code == 413
    assert refused.json()["error"]["code"] == "body_too_large"
    assert "10000 bytes" in refused.json()["error"]["message"]
