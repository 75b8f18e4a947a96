"""The real Claude Code and Codex under ``pilothouse run``, given Pilothouse's ``/mcp`` as
their MCP server (Claude Code with ``--mcp-config``, Codex in its ``config.toml``): each lists
the permitted tools, calls one that really runs (``mcp-server-time`` over stdio, behind
Pilothouse), is refused a call the policy denies (the reason reaches the model as the tool's
result), and is never offered a tool the policy denies it.

The CLIs are the pinned npm packages under ``$PILOTHOUSE_CLIENTS_DIR``; without them this
skips.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest

from pilothouse.gateway.config import GatewayConfig
from pilothouse.mcp.config import McpServerConfig
from tests.gateway.test_real_clients import events, model_posts, serving
from tests.gateway.upstream import FakeUpstream, Turn
from tests.policy.test_real_clients import (
    CODEX_MODEL,
    FINAL_TEXT,
    admin,
    claude,
    claude_tool_results,
    codex,
    codex_outputs,
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


QUICK = GatewayConfig(backoff_base_seconds=0.01, backoff_max_seconds=0.05)


def upstreams() -> list[McpServerConfig]:
    """The real time server and the test echo server, over stdio."""
    python = sys.executable
    return [
        McpServerConfig(
            name="time", transport="stdio", command=python, args=["-m", "mcp_server_time"]
        ),
        McpServerConfig(
            name="echo", transport="stdio", command=python, args=["-m", "tests.mcp.servers", "echo"]
        ),
    ]


def test_claude_code_lists_and_calls_a_permitted_mcp_tool_and_is_refused_a_forbidden_one(
    tmp_path: Path,
) -> None:
    script = [
        Turn(tool="mcp__pilothouse__time__get_current_time", arguments={"timezone": "UTC"}),
        Turn(tool="mcp__pilothouse__echo__echo", arguments={"text": "launch codes"}),
        Turn(tool="mcp__pilothouse__echo__env", arguments={"name": "HOME"}),
        Turn(text=FINAL_TEXT),
    ]
    with (
        FakeUpstream.threaded(script=script) as up,
        running_server(
            tmp_path / "data",
            models=[serving("claude-*", "anthropic", up, "upstream-claude")],
            gateway=QUICK,
            mcp_servers=upstreams(),
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


# A model slug Codex does not know: it then offers MCP tools to the model directly (for the
# slugs it knows that support it, they wait behind its tool_search tool, which a scripted
# model cannot drive).
CODEX_MCP_MODEL = "gpt-4.1"


def test_codex_lists_and_calls_a_permitted_mcp_tool_and_is_refused_a_forbidden_one(
    tmp_path: Path,
) -> None:
    ours = "mcp__pilothouse"  # the namespace Codex gives the tools of its server "pilothouse"
    script = [
        Turn(tool="time__get_current_time", namespace=ours, arguments={"timezone": "UTC"}),
        Turn(tool="echo__echo", namespace=ours, arguments={"text": "launch codes"}),
        Turn(text=FINAL_TEXT),
    ]
    with (
        FakeUpstream.threaded(script=script) as up,
        running_server(
            tmp_path / "data",
            models=[serving("gpt-*", "openai", up, "upstream-gpt")],
            gateway=QUICK,
            mcp_servers=upstreams(),
        ) as server,
    ):
        admin(server, "PUT", "/api/v1/policy", json={"source": POLICY})
        argv = codex("What time is it? Then echo the launch codes.")
        argv[argv.index(CODEX_MODEL)] = CODEX_MCP_MODEL
        agent = pilothouse_run(server, tmp_path, argv)
        assert agent.run.returncode == 0, report(agent, up)
        messages = [
            e["item"]["text"]
            for e in events(agent.run.stdout)
            if e["type"] == "item.completed" and e["item"]["type"] == "agent_message"
        ]
        assert messages == [FINAL_TEXT], report(agent, up)

        posts = model_posts(up)
        assert len(posts) == len(script), report(agent, up)
        (namespace,) = [t for t in posts[0].body["tools"] if t.get("name") == ours]
        offered = {t["name"] for t in namespace["tools"]}
        assert {"time__get_current_time", "echo__echo"} <= offered, offered
        assert "echo__env" not in offered, offered  # denied: not even listed
        (clock,) = codex_outputs(posts[1])
        assert "UTC" in clock and "launch" not in clock, clock
        refused = codex_outputs(posts[2])[-1]  # the history holds the first call's output too
        assert "launch codes are not echoed" in refused, refused

        params = {"action": "mcp.call", "target_id": agent.session_id, "limit": 50}
        calls = admin(server, "GET", "/api/v1/audit/events", params=params)["data"]
        assert [c["details"]["tool"] for c in calls] == ["time__get_current_time"]
