"""Three `pilothouse serve` processes sharing one PostgreSQL, 300 concurrent calls from six
sessions against hard budgets on a session, a user and a team that allow about a third of them:
no budget's settled spend goes over its limit, every served call has one usage row, and a
refused call never reaches the upstream."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Iterator
from contextlib import ExitStack
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx
import pytest
from sqlalchemy import func, select
from sqlalchemy.ext.asyncio import create_async_engine

from pilothouse.budgets.tables import budget_counters, budget_reservations, budgets
from pilothouse.gateway.tables import usage_records
from pilothouse.identity.tokens import KeyKind, issue
from tests.conftest import _truncate, bearer
from tests.gateway.upstream import FakeUpstream
from tests.servers import pilothouse_process

MAX_TOKENS = 5  # the fake upstream's reply is 5 words (5 tokens): the cap is the actual output
PROMPT = "Say something about ledgers please"
# Picodollars per token: input 1 µ$, output 2 µ$. The gateway reserves the prompt's estimate
# (4 characters a token over every string: 10 tokens) and max_tokens of output.
WORST = 10 * 1_000_000 + MAX_TOKENS * 2_000_000
CALLS = 300


@dataclass
class Cluster:
    urls: list[str]
    owner: str
    database_url: str
    upstream: FakeUpstream


@pytest.fixture
def cluster(pg_url: str, tmp_path: Path) -> Iterator[Cluster]:
    asyncio.run(_truncate(pg_url))
    owner = issue(KeyKind.USER).token
    with ExitStack() as stack:
        upstream = stack.enter_context(FakeUpstream.threaded())
        config = tmp_path / "pilothouse.json"
        deployment = {
            "provider": "openai-compatible",
            "model": "fake-model",
            "base_url": upstream.openai_url,
            "price": {"input": 1_000_000, "output": 2_000_000},
        }
        config.write_text(
            json.dumps({"models": [{"alias": "budget-model", "deployments": [deployment]}]})
        )
        env = {
            "PILOTHOUSE_DATABASE_URL": pg_url,
            "PILOTHOUSE_ADMIN_KEY": owner,
            "PILOTHOUSE_LOG_LEVEL": "warning",
        }
        args = ["serve", "--config", str(config)]
        urls = [stack.enter_context(pilothouse_process(args, tmp_path, env))[0] for _ in range(3)]
        yield Cluster(urls, owner, pg_url, upstream)


async def _ok(http: httpx.AsyncClient, method: str, url: str, token: str, **kw: Any) -> Any:
    reply = await http.request(method, url, headers=bearer(token), **kw)
    assert reply.status_code in (200, 201), reply.text
    return reply.json()


async def _scenario(cluster: Cluster) -> None:
    a, owner = cluster.urls[0], cluster.owner
    async with httpx.AsyncClient(timeout=60, limits=httpx.Limits(max_connections=400)) as http:
        team = await _ok(http, "POST", f"{a}/api/v1/teams", owner, json={"name": "ledger"})
        users = [
            await _ok(
                http,
                "POST",
                f"{a}/api/v1/users",
                owner,
                json={"email": f"dev{i}@example.com", "role": "member"},
            )
            for i in range(2)
        ]
        sessions = [
            await _ok(
                http,
                "POST",
                f"{a}/api/v1/sessions",
                owner,
                json={"team_id": team["id"], "user_id": users[i % 2]["id"], "project": "race"},
            )
            for i in range(6)
        ]
        org_id = (await _ok(http, "GET", f"{a}/api/v1/org", owner))["id"]
        limits = {
            ("team", team["id"]): 100 * WORST,
            ("user", users[0]["id"]): 60 * WORST,
            ("session", sessions[2]["session"]["id"]): 15 * WORST,
        }
        await _add_budgets(cluster.database_url, org_id, limits)

        body = {
            "model": "budget-model",
            "max_tokens": MAX_TOKENS,
            "messages": [{"role": "user", "content": PROMPT}],
        }

        async def call(i: int) -> int:
            url = cluster.urls[i % 3]
            key = sessions[i % 6]["key"]["token"]
            reply = await http.post(f"{url}/v1/chat/completions", json=body, headers=bearer(key))
            if reply.status_code == 402:
                assert reply.json()["error"]["code"] == "budget_exceeded"
            return reply.status_code

        statuses = await asyncio.gather(*(call(i) for i in range(CALLS)))
        # A replica's reads wait for the settlements it has queued (a reply does not): once
        # each has answered one, every call it served is written.
        for url in cluster.urls:
            await _ok(http, "GET", f"{url}/api/v1/usage?limit=1", owner)

    assert set(statuses) <= {200, 402}, statuses
    served = statuses.count(200)
    # The team's limit is 100 worst cases; actual calls cost a little less (a 5-token prompt,
    # reserved as 10), so about a third of the 300 are served.
    assert 80 <= served <= 150, served

    engine = create_async_engine(cluster.database_url)
    try:
        async with engine.connect() as conn:
            rows = [dict(r) for r in (await conn.execute(select(usage_records))).mappings()]
            counters = {
                r["budget_id"]: r for r in (await conn.execute(select(budget_counters))).mappings()
            }
            by_scope = {
                (r["scope_kind"], r["scope_value"]): r["id"]
                for r in (await conn.execute(select(budgets))).mappings()
            }
            left = await conn.scalar(select(func.count()).select_from(budget_reservations))
    finally:
        await engine.dispose()
    forwarded = [r for r in cluster.upstream.requests if r.path.endswith("/chat/completions")]
    assert len(rows) == served == len(forwarded)  # refused calls reached no upstream
    assert all(r["status"] == "ok" and r["output_tokens"] <= MAX_TOKENS for r in rows)
    assert left == 0
    column = {"team": "team_id", "user": "user_id", "session": "session_id"}
    for (kind, value), limit in limits.items():
        spent = sum(r["cost_picos"] for r in rows if r[column[kind]] == value)
        counted = counters[by_scope[(kind, value)]]
        assert spent <= limit, (kind, spent, limit)  # invariant 2, with no slack at all here
        assert counted["spent_picos"] == spent and counted["reserved_picos"] == 0
        assert counted["calls"] == sum(1 for r in rows if r[column[kind]] == value)


async def _add_budgets(url: str, org_id: str, limits: dict[tuple[str, str], int]) -> None:
    """Written straight to the database before any call (each replica loads them lazily)."""
    engine = create_async_engine(url)
    now = datetime.now(UTC)
    try:
        async with engine.begin() as conn:
            for i, ((kind, value), limit) in enumerate(limits.items()):
                await conn.execute(
                    budgets.insert().values(
                        id=f"bud_race{i}",
                        org_id=org_id,
                        name=f"{kind} limit",
                        scope_kind=kind,
                        scope_value=value,
                        window="day",
                        limit_picos=limit,
                        enforcement="hard",
                        thresholds="[100]",
                        created_at=now,
                        updated_at=now,
                    )
                )
    finally:
        await engine.dispose()


def test_three_replicas_never_overspend_a_budget_and_lose_nothing(cluster: Cluster) -> None:
    asyncio.run(_scenario(cluster))
