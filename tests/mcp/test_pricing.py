"""Priced MCP tools through ``/mcp``: a call's price is reserved on the caller's budgets before
it is forwarded (a hard budget it would pass refuses it, audited, and the upstream never sees
it), settled as a usage row the spend views count, and a call the upstream failed costs
nothing."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest
from mcp.shared.exceptions import MCPError
from pydantic import ValidationError
from sqlalchemy import select

from pilothouse.gateway.tables import usage_records
from pilothouse.mcp.config import McpServerConfig
from pilothouse.services import Services
from pilothouse.settings import Settings
from tests.budgets.test_ledger import counter
from tests.conftest import Api
from tests.mcp.test_gateway import RugPull, connected, events, rugpull, text_of  # noqa: F401

QUARTER = 250_000  # micro-dollars: $0.25 a call


@pytest.fixture
def settings(database_url: str, tmp_path: Path, rugpull: RugPull) -> Settings:  # noqa: F811
    crash = McpServerConfig(
        name="crash",
        transport="stdio",
        command=sys.executable,
        args=["-m", "tests.mcp.servers", "crash"],
        timeout_seconds=5,
        restart_backoff_seconds=0.05,
        restart_backoff_max_seconds=0.1,
        prices={"crash": 1_000_000},  # its echo tool is not priced
    )
    adder = McpServerConfig(name="adder", transport="http", url=rugpull.url, prices={"*": QUARTER})
    return Settings(
        database_url=database_url,
        data_dir=tmp_path / "data",
        mcp_servers=[adder, crash],
        mcp_list_cache_seconds=0,
    )


async def usage(services: Services) -> list[dict[str, object]]:
    await services.usage_settled()
    async with services.store.read() as conn:
        rows = await conn.execute(select(usage_records).order_by(usage_records.c.created_at))
        return [dict(r) for r in rows.mappings()]


async def test_a_priced_call_is_charged_to_the_budget_and_refused_past_a_hard_one(
    api: Api,
    services: Services,
    rugpull: RugPull,  # noqa: F811
) -> None:
    session = await api.session(project="tools")
    budget = await api.ok(
        "POST",
        "/api/v1/budgets",
        json={"scope_kind": "project", "scope_value": "tools", "window": "day", "limit_usd": "0.6"},
    )
    async with connected(services, session["key"]["token"]) as agent:
        for _ in range(2):
            added = await agent.call_tool("adder__add", {"a": 2, "b": 3})
            assert not added.is_error and text_of(added) == "5"
        refused = await agent.call_tool("adder__add", {"a": 2, "b": 3})
    assert refused.is_error and "budget" in text_of(refused).lower()
    assert rugpull.calls == 2  # the refused call never reached the upstream
    assert await counter(services, budget["id"]) == {
        "spent_picos": 2 * QUARTER * 10**6,
        "reserved_picos": 0,
        "calls": 2,
    }
    rows = await usage(services)
    assert [(r["model_alias"], r["cost_picos"], r["status"]) for r in rows] == [
        ("mcp:adder__add", QUARTER * 10**6, "ok")
    ] * 2
    assert {r["session_id"] for r in rows} == {session["session"]["id"]}
    assert all(r["endpoint"] == "/mcp" and r["project"] == "tools" for r in rows)
    audited = await events(services, "mcp.call")
    assert [e["outcome"] for e in audited] == ["success", "success", "denied"]
    first = json.loads(audited[0]["details"])
    assert first["cost_usd"] == "0.250000000000"
    assert first["usage_request_id"] == rows[0]["request_id"]
    # The spend views count tool calls with model calls.
    report = await api.ok("GET", "/api/v1/spend", params={"group_by": "model"})
    (group,) = report["groups"]
    assert group["keys"] == {"model": "mcp:adder__add"} and group["calls"] == 2
    assert group["cost"] == "0.500000000000"


async def test_a_failed_call_costs_nothing_and_an_unpriced_tool_makes_no_row(
    api: Api, services: Services
) -> None:
    session = await api.session(project="tools")
    budget = await api.ok(
        "POST",
        "/api/v1/budgets",
        json={"scope_kind": "project", "scope_value": "tools", "window": "day", "limit_usd": "5"},
    )
    assert services.mcp is not None
    upstream = services.mcp.registry.get("crash")
    assert await upstream.wait_ready(15)
    async with connected(services, session["key"]["token"]) as agent:
        with pytest.raises(MCPError):
            await agent.call_tool("crash__crash", {})
        assert await upstream.wait_ready(15)
        echoed = await agent.call_tool("crash__echo", {"text": "free"})
    assert text_of(echoed) == "free"
    (row,) = await usage(services)
    assert (row["model_alias"], row["status"], row["cost_picos"]) == (
        "mcp:crash__crash",
        "upstream_failed",
        0,
    )
    assert row["error"] and "crash" in str(row["error"])
    assert await counter(services, budget["id"]) == {
        "spent_picos": 0,
        "reserved_picos": 0,
        "calls": 1,
    }


def test_a_negative_price_is_refused_by_name() -> None:
    with pytest.raises(ValidationError, match="price of 'add' is negative"):
        McpServerConfig(name="adder", transport="http", url="http://x/mcp", prices={"add": -1})
