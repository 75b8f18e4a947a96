"""The real Claude Code under ``pilothouse run``, given Pilothouse's ``/mcp`` as its MCP server
(``--mcp-config``): it lists the permitted tools, calls one that really runs (``mcp-server-time``
over stdio, behind Pilothouse), is refused a call the policy denies (the reason reaches the
model as the tool's result), and is never offered a tool the policy denies it.

The CLI is the pinned npm package under ``$PILOTHOUSE_CLIENTS_DIR``; without it this skips.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest

from pilothouse.gateway.config import GatewayConfig
from pilothouse.mcp.config import McpServerConfig
from tests.gateway.test_real_clients import model_posts, serving
from tests.gateway.upstream import FakeUpstream, Turn
from tests.policy.test_real_clients import (
    FINAL_TEXT,
    admin,
    claude,
    claude_tool_results,
    pilothouse_run,
    report,
    result_text,
)
from tests.servers import running_server

pytestmark = pytest.mark.timeout(240)

POLICY = """\
default: allow
rules:
  - id: no-reading-env
    channel: mcp
    match: {tool: "echo__env"}
    decision: deny
    reason: environment variables stay on the server
  - id: no-launch-codes
    channel: mcp
    match: {tool: "echo__echo", arguments: {text: "launch*"}}
    decision: deny
    reason: launch codes are not echoed
"""


def test_claude_code_lists_and_calls_a_permitted_mcp_tool_and_is_refused_a_forbidden_one(
    tmp_path: Path,
) -> None:
    script = [
        Turn(tool="mcp__pilothouse__time__get_current_time", arguments={"timezone": "UTC"}),
        Turn(tool="mcp__pilothouse__echo__echo", arguments={"text": "launch codes"}),
        Turn(tool="mcp__pilothouse__echo__env", arguments={"name": "HOME"}),
        Turn(text=FINAL_TEXT),
    ]
    servers = [
        McpServerConfig(
            name="time", transport="stdio", command=sys.executable, args=["-m", "mcp_server_time"]
        ),
        McpServerConfig(
            name="echo",
            transport="stdio",
            command=sys.executable,
            args=["-m", "tests.mcp.servers", "echo"],
        ),
    ]
    quick = GatewayConfig(backoff_base_seconds=0.01, backoff_max_seconds=0.05)
    with (
        FakeUpstream.threaded(script=script) as up,
        running_server(
            tmp_path / "data",
            models=[serving("claude-*", "anthropic", up, "upstream-claude")],
            gateway=quick,
            mcp_servers=servers,
        ) as server,
    ):
        admin(server, "PUT", "/api/v1/policy", json={"source": POLICY})
        prompt = "What time is it? Echo the codes, read HOME."
        agent = pilothouse_run(server, tmp_path, claude(prompt))
        assert agent.run.returncode == 0, report(agent, up)
        assert json.loads(agent.run.stdout)["result"] == FINAL_TEXT, report(agent, up)

        posts = model_posts(up)
        offered = {t["name"] for t in posts[0].body.get("tools", [])}
        assert "mcp__pilothouse__time__get_current_time" in offered, offered
        assert "mcp__pilothouse__echo__echo" in offered, offered
        assert "mcp__pilothouse__echo__env" not in offered, offered  # denied: not even listed
        (clock,) = claude_tool_results(posts[1])
        assert clock.get("is_error") in (None, False), clock
        assert "UTC" in result_text(clock), clock
        (refused,) = claude_tool_results(posts[2])
        assert refused["is_error"] is True, refused
        assert "launch codes are not echoed" in result_text(refused), refused
        (unlisted,) = claude_tool_results(posts[3])
        assert unlisted["is_error"] is True, unlisted

        params = {"action": "mcp.call", "target_id": agent.session_id, "limit": 50}
        calls = admin(server, "GET", "/api/v1/audit/events", params=params)["data"]
        assert [c["details"]["tool"] for c in calls] == ["time__get_current_time"]
