"""Budget thresholds: each fires once per window, is recorded and audited, and is posted to the
webhooks (JSON and Slack formats) with retries; a downgrade rule sends calls to a cheaper alias
past its threshold, and the usage row says so."""

from __future__ import annotations

import asyncio
import sqlite3
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest
from aiohttp import web
from sqlalchemy import select, update

from pilothouse.audit.tables import audit_events
from pilothouse.budgets.alerts import AlertWebhook
from pilothouse.budgets.model import Window, epoch, window_start
from pilothouse.budgets.tables import budget_alerts, budget_counters, budgets
from pilothouse.gateway.config import DeploymentConfig, ModelConfig
from pilothouse.services import Services
from pilothouse.settings import Settings
from pilothouse.store.bulk import sqlite_path
from tests.budgets.test_ledger import add_budget, rows
from tests.conftest import Api, MutableClock, bearer

BODY = {"model": "big", "max_tokens": 16, "messages": [{"role": "user", "content": "hi"}]}


class Hook:
    """A webhook receiver on 127.0.0.1 that answers with the statuses it is told to."""

    def __init__(self) -> None:
        self.received: list[dict[str, Any]] = []
        self.statuses: list[int] = []
        self.url = ""
        self._runner: web.AppRunner | None = None

    async def _handle(self, request: web.Request) -> web.Response:
        self.received.append({"path": request.path, "body": await request.json()})
        status = self.statuses.pop(0) if self.statuses else 200
        return web.Response(status=status)

    async def start(self) -> None:
        app = web.Application()
        app.router.add_post("/{name}", self._handle)
        self._runner = web.AppRunner(app)
        await self._runner.setup()
        site = web.TCPSite(self._runner, "127.0.0.1", 0)
        await site.start()
        port = self._runner.addresses[0][1]
        self.url = f"http://127.0.0.1:{port}"

    async def stop(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()


@pytest.fixture
async def hook() -> AsyncIterator[Hook]:
    receiver = Hook()
    await receiver.start()
    try:
        yield receiver
    finally:
        await receiver.stop()


@pytest.fixture
def settings(database_url: str, tmp_path: Path, hook: Hook) -> Settings:
    big = DeploymentConfig(provider="demo", model="demo-1", price={"input": 10**6, "output": 10**6})
    cheap = DeploymentConfig(provider="demo", model="demo-1", price={"input": 1, "output": 1})
    return Settings(
        database_url=database_url,
        data_dir=tmp_path / "data",
        models=[
            ModelConfig(alias="big", deployments=[big]),
            ModelConfig(alias="cheap", deployments=[cheap]),
        ],
        alert_webhooks=[
            AlertWebhook(url=f"{hook.url}/generic"),
            AlertWebhook(url=f"{hook.url}/slack", format="slack"),
        ],
        alert_check_seconds=3600,  # the tests run the checks themselves
    )


async def set_spent(services: Services, budget_id: str, spent: int) -> None:
    start = epoch(window_start(Window.DAY, services.clock.now()))
    async with services.store.write() as conn:
        await conn.execute(
            budget_counters.insert().values(
                budget_id=budget_id,
                window_start=start,
                spent_picos=spent,
                reserved_picos=0,
                calls=1,
            )
        )


async def set_spent_to(services: Services, spent: int) -> None:
    async with services.store.write() as conn:
        await conn.execute(update(budget_counters).values(spent_picos=spent))


async def alerts(services: Services) -> list[dict[str, Any]]:
    async with services.store.read() as conn:
        found = await conn.execute(select(budget_alerts).order_by(budget_alerts.c.threshold))
        return [dict(r) for r in found.mappings()]


async def test_each_threshold_fires_once_per_window_and_is_audited(
    services: Services, clock: MutableClock
) -> None:
    assert services.alerts is not None
    clock.moment = datetime(2026, 11, 24, 12, 0, tzinfo=UTC)
    budget = await add_budget(services, scope_kind="org", scope_value="", limit_picos=1000)
    await set_spent(services, budget, 810)
    assert await services.alerts.check() == 2  # 50% and 80%, not 100%
    assert await services.alerts.check() == 0  # once per window
    assert [(a["threshold"], a["spent_picos"]) for a in await alerts(services)] == [
        (50, 810),
        (80, 810),
    ]
    async with services.store.read() as conn:
        events = (
            await conn.execute(
                select(audit_events.c.action, audit_events.c.details).where(
                    audit_events.c.action == "budget.threshold_reached"
                )
            )
        ).all()
    assert len(events) == 2 and '"threshold":80' in str(events)
    clock.moment += timedelta(days=1)  # a new window: its own alerts
    await set_spent(services, budget, 1000)
    assert await services.alerts.check() == 3


async def test_a_check_with_nothing_new_to_fire_reads_and_takes_no_write_lock(
    services: Services, clock: MutableClock
) -> None:
    # SQLite's one write lock is the ledger's too: a check every few seconds that took it for
    # nothing would hold up the ticks of every call.
    if services.store.dialect != "sqlite":
        pytest.skip("SQLite's one write lock (PostgreSQL's writers do not queue on one)")
    assert services.alerts is not None
    clock.moment = datetime(2026, 11, 24, 12, 0, tzinfo=UTC)
    budget = await add_budget(services, scope_kind="org", scope_value="", limit_picos=1000)
    await set_spent(services, budget, 600)
    assert await services.alerts.check() == 1  # 50%
    await set_spent_to(services, 700)  # more spent, no new threshold crossed
    other = sqlite3.connect(sqlite_path(services.store), isolation_level=None)
    other.execute("BEGIN IMMEDIATE")  # another process holds the write lock
    try:
        fired = await asyncio.wait_for(services.alerts.check(), timeout=2)
    finally:
        other.execute("ROLLBACK")
        other.close()
    assert fired == 0
    assert services.ledger.book.used_percent(budget) == 70.0  # the share was still read
    await set_spent_to(services, 850)  # a new threshold: now it writes
    assert await services.alerts.check() == 1
    assert [a["threshold"] for a in await alerts(services)] == [50, 80]


async def test_alerts_are_posted_in_both_formats_and_retried_until_delivered(
    services: Services, clock: MutableClock, hook: Hook
) -> None:
    assert services.alerts is not None
    budget = await add_budget(services, scope_kind="team", scope_value="tm_x", limit_picos=10**12)
    await set_spent(services, budget, 10**12)
    hook.statuses = [500] * 3  # each alert's first post fails: each is tried again later
    await services.alerts.check()
    assert await services.alerts.deliver() == 0
    failed = await alerts(services)
    assert len(failed) == 3
    assert all(a["attempts"] == 1 and "HTTP 500" in a["last_error"] for a in failed)
    assert await services.alerts.deliver() == 0  # not due before its backoff
    clock.advance(seconds=3)
    assert await services.alerts.deliver() == 3  # 50, 80 and 100%
    assert await services.alerts.deliver() == 0
    delivered = await alerts(services)
    assert all(a["delivered_at"] is not None for a in delivered)
    generic = [r["body"] for r in hook.received if r["path"] == "/generic"]
    slack = [r["body"] for r in hook.received if r["path"] == "/slack"]
    hundred = next(b for b in generic if b["threshold_percent"] == 100)
    assert hundred["type"] == "budget.threshold_reached" and hundred["scope"] == "team:tm_x"
    assert hundred["spent_usd"] == "1.000000000000" and hundred["limit_usd"] == "1.000000000000"
    assert len(slack) == 3 and "reached 100%: $1 of $1" in " ".join(s["text"] for s in slack)


async def test_an_undeliverable_alert_is_given_up_after_its_attempts(
    services: Services, clock: MutableClock, hook: Hook
) -> None:
    assert services.alerts is not None
    budget = await add_budget(services, scope_kind="org", scope_value="", limit_picos=100)
    await set_spent(services, budget, 60)
    hook.statuses = [503] * 100
    await services.alerts.check()
    for _ in range(10):
        await services.alerts.deliver()
        clock.advance(seconds=600)
    [alert] = await alerts(services)
    assert alert["attempts"] == 8 and alert["delivered_at"] is None
    assert alert["next_attempt_at"] is None and alert["last_error"].endswith("(gave up)")


async def test_a_downgrade_rule_sends_calls_to_the_cheaper_alias_past_its_threshold(
    services: Services, client: httpx.AsyncClient, api: Api
) -> None:
    assert services.alerts is not None
    session = await api.session(project="dg")
    key = session["key"]["token"]
    budget = await add_budget(services, scope_kind="project", scope_value="dg", limit_picos=10**12)
    # A call before the budget has its rule: the gateway keeps the caller's budgets, which
    # have no rule yet; the rule, once made, must reach its next calls all the same.
    before = await client.post("/v1/chat/completions", json=BODY, headers=bearer(key))
    assert before.status_code == 200
    async with services.store.write() as conn:
        await conn.execute(
            budgets.update()
            .where(budgets.c.id == budget)
            .values(downgrade='{"at_percent": 50, "to": "cheap", "from": "big"}')
        )
        await services.invalidations.publish(conn, "budget", services.root_org_id)
    first = await client.post("/v1/chat/completions", json=BODY, headers=bearer(key))
    assert first.status_code == 200
    async with services.store.write() as conn:  # the calls made the counter: raise it
        await conn.execute(budget_counters.update().values(spent_picos=6 * 10**11))
    await services.alerts.check()  # reads the budget at 60%
    second = await client.post("/v1/chat/completions", json=BODY, headers=bearer(key))
    assert second.status_code == 200
    made = await rows(services)
    made.sort(key=lambda r: r["created_at"])
    assert [(r["model_alias"], r["downgraded_from"]) for r in made] == [
        ("big", None),
        ("big", None),
        ("cheap", "big"),
    ]
    assert made[2]["cost_picos"] < made[1]["cost_picos"]
