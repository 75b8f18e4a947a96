"""Faulty upstreams through ``/mcp``: one that hangs, crashes or answers garbage gives the
caller a clear MCP error within its timeout and is restarted; the other upstreams keep
working throughout."""

from __future__ import annotations

import sys
import time
from pathlib import Path

import pytest
from mcp.shared.exceptions import MCPError

from pilothouse.mcp.config import McpServerConfig
from pilothouse.services import Services
from pilothouse.settings import Settings
from tests.conftest import Api
from tests.mcp.test_gateway import connected, text_of

TIMEOUT = 0.5


def faulty(mode: str) -> McpServerConfig:
    return McpServerConfig(
        name=mode,
        transport="stdio",
        command=sys.executable,
        args=["-m", "tests.mcp.servers", mode],
        timeout_seconds=TIMEOUT,
        restart_backoff_seconds=0.05,
        restart_backoff_max_seconds=0.1,
    )


@pytest.fixture
def settings(database_url: str, tmp_path: Path) -> Settings:
    python = sys.executable
    time_server = McpServerConfig(
        name="time", transport="stdio", command=python, args=["-m", "mcp_server_time"]
    )
    return Settings(
        database_url=database_url,
        data_dir=tmp_path / "data",
        mcp_servers=[time_server, faulty("hang"), faulty("crash"), faulty("garbage")],
        mcp_list_cache_seconds=0,
    )


@pytest.mark.parametrize(
    ("mode", "tool"), [("hang", "hang"), ("crash", "crash"), ("garbage", "garble")]
)
async def test_a_faulty_upstream_is_a_clear_error_in_time_and_comes_back(
    api: Api, services: Services, mode: str, tool: str
) -> None:
    session = await api.session()
    assert services.mcp is not None
    upstream = services.mcp.registry.get(mode)
    assert await upstream.wait_ready(15)
    async with connected(services, session["key"]["token"]) as agent:
        started = time.monotonic()
        with pytest.raises(MCPError) as failed:
            await agent.call_tool(f"{mode}__{tool}", {})
        assert time.monotonic() - started < TIMEOUT + 5
        assert failed.value.code == -32000 and mode in failed.value.message
        clock = await agent.call_tool("time__get_current_time", {"timezone": "UTC"})
        assert not clock.is_error  # the others kept working
        assert await upstream.wait_ready(15)
        again = await agent.call_tool(f"{mode}__echo", {"text": "back"})
    assert text_of(again) == "back" and upstream.status.restarts >= 1
