"""Daily roll-ups: spend read from them is the spend the usage rows add up to, exactly.

Rows are placed over six weeks with every attribution a report groups or filters by; some are
summed, some are not, some arrive late for a day already summed. Every report is then asked
twice, from the roll-ups and from the rows alone (which ``test_spend.py`` checks against sums
computed here), on SQLite and PostgreSQL.
"""

from __future__ import annotations

import asyncio
import itertools
import json
import random
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
import pytest
from sqlalchemy import delete, func, select

from pilothouse.budgets.model import Window, window_start
from pilothouse.context import RequestContext
from pilothouse.gateway import rollups, spend
from pilothouse.gateway.tables import usage_records, usage_rollups
from pilothouse.gateway.usage_rows import UsageFilters
from pilothouse.identity.principal import Principal
from pilothouse.identity.roles import Role
from pilothouse.identity.tokens import KeyKind
from pilothouse.services import Services
from pilothouse.settings import Settings
from pilothouse.store.engine import Store
from tests.api.test_spend import _row, _spend, fleet, http2, insert_rows  # noqa: F401  (fixtures)
from tests.conftest import Api, MutableClock, another_replica
from tests.gateway.conftest import usage_rows

T0 = datetime(2026, 3, 2, tzinfo=UTC)  # a Monday
DAYS = 42
GROUPINGS = [
    "",
    "user",
    "team",
    "project",
    "repo",
    "key",
    "model",
    "deployment",
    "status",
    "endpoint",
    "skill",
    "plugin",
    "label:use_case",
    "team,label:env",
    "model,skill,plugin",
    "session",
]
INTERVALS = [None, *spend.Interval]


def _ctx(services: Services) -> RequestContext:
    owner = Principal(
        org_id=services.root_org_id,
        key_id="key_rollup_test",
        kind=KeyKind.USER,
        key_prefix="ph_test",
        role=Role.OWNER,
    )
    return RequestContext(owner, "req_rollup_test", services.clock)


def _random_rows(org_id: str, count: int, seed: int, *, days: int = DAYS) -> list[dict[str, Any]]:
    """Calls over ``days`` days from ``T0``, each with one of a dozen attributions that cover
    every kind a report groups by, NULLs included (as a fleet's sessions would)."""
    rng = random.Random(seed)
    labels = [{}, {"use_case": "bugfix"}, {"use_case": "feature", "env": "ci"}, {"env": "prod"}]
    skills = [[], ["git"], ["git", "python"]]
    profiles = [
        {
            "session_id": rng.choice([None, "ses_a", "ses_b", "ses_c"]),
            "key_id": rng.choice([None, "key_1", "key_2"]),
            "user_id": rng.choice([None, "usr_ada", "usr_bob"]),
            "team_id": rng.choice([None, "team_pay", "team_search"]),
            "project": rng.choice([None, "checkout"]),
            "repository": rng.choice([None, "acme/pay", "acme/search"]),
            "labels": json.dumps(rng.choice(labels), sort_keys=True),
            "skills": json.dumps(rng.choice(skills)),
            "plugins": json.dumps(rng.choice([[], ["reviewer"]])),
            "endpoint": rng.choice(["/v1/messages", "/v1/chat/completions", "/mcp"]),
            "deployment": rng.choice([None, "demo/demo-1"]),
        }
        for _ in range(12)
    ]
    rows = []
    for _ in range(count):
        moment = T0 + timedelta(seconds=rng.randrange(days * 86_400))
        rows.append(
            _row(
                org_id,
                moment,
                **rng.choice(profiles),
                model_alias=rng.choice(["demo", "gpt-4o"]),
                status=rng.choice(["ok", "ok", "ok", "upstream_failed"]),
                input_tokens=rng.randrange(10_000),
                output_tokens=rng.randrange(2_000),
                cache_read_tokens=rng.randrange(500),
                cache_write_tokens=rng.randrange(500),
                reasoning_tokens=rng.randrange(100),
                # Some past 64 bits in a day's sum, if summed as one number.
                cost_picos=rng.choice([rng.randrange(10**9), rng.randrange(4 * 10**18)]),
            )
        )
    return rows


async def _both(
    services: Services, group_by: str, interval: spend.Interval | None, filters: UsageFilters
) -> tuple[spend.SpendReport, spend.SpendReport]:
    keys = spend.parse_group_by(group_by)
    args = (services.store, _ctx(services), filters, keys, interval)
    summed = await spend.spend_report(*args, limit=10_000)
    rows = await spend.spend_report(*args, limit=10_000, summed=False)
    return summed, rows


WINDOWS = [
    UsageFilters(),
    UsageFilters(since=T0 + timedelta(days=3, hours=5, minutes=7)),
    UsageFilters(until=T0 + timedelta(days=30, hours=13)),
    UsageFilters(
        since=T0 + timedelta(days=1, seconds=1), until=T0 + timedelta(days=40, seconds=-1)
    ),
    UsageFilters(since=T0 + timedelta(days=7), until=T0 + timedelta(days=14)),  # whole days
    UsageFilters(since=T0 + timedelta(days=9, hours=2), until=T0 + timedelta(days=9, hours=20)),
    UsageFilters(since=T0 + timedelta(days=9, hours=2), until=T0 + timedelta(days=10, hours=1)),
]


async def test_every_report_from_rollups_equals_the_report_from_rows(
    services: Services,
) -> None:
    org = services.root_org_id
    early = _random_rows(org, 600, seed=1)
    await insert_rows(services, early)
    assert await rollups.roll_up(services.store, batch=97) == 600
    # Rows that arrive after their days were summed (the sweeper's, say) and rows not summed.
    late = _random_rows(org, 150, seed=2)
    await insert_rows(services, late)
    async with services.store.read() as conn:
        summed_rows = await conn.scalar(select(func.count()).select_from(usage_rollups))
    assert 0 < summed_rows < 600  # calls of a day with the same attribution share a row

    compared = 0
    for group_by, interval, filters in itertools.product(GROUPINGS, INTERVALS, WINDOWS[:4]):
        summed, rows = await _both(services, group_by, interval, filters)
        assert summed == rows, (group_by, interval, filters)
        compared += 1
    narrowed = [
        UsageFilters(equal={"user_id": "usr_ada"}),
        UsageFilters(equal={"team_id": "team_pay", "model": "demo", "status": "ok"}),
        UsageFilters(equal={"key_id": "key_2", "deployment": "demo/demo-1"}),
        UsageFilters(equal={"project": "checkout", "repository": "acme/pay"}),
        UsageFilters(labels=(("use_case", "feature"),)),
        UsageFilters(labels=(("env", "prod"),), equal={"session_id": "ses_a"}),
    ]
    for base, narrow in itertools.product(WINDOWS, narrowed):
        filters = UsageFilters(base.since, base.until, narrow.equal, narrow.labels)
        for group_by, interval in (("model,label:env", spend.Interval.WEEK), ("user", None)):
            summed, rows = await _both(services, group_by, interval, filters)
            assert summed == rows, (group_by, interval, filters)
            compared += 1
    assert compared == len(GROUPINGS) * len(INTERVALS) * 4 + len(WINDOWS) * len(narrowed) * 2

    totals, _ = await _both(services, "", None, UsageFilters())
    assert totals.totals.calls == 750
    assert totals.totals.cost_picos == sum(r["cost_picos"] for r in [*early, *late])


async def test_whole_days_are_read_from_the_rollups(services: Services) -> None:
    """Delete the summed rows: reports of whole days still count them (from the roll-ups),
    the partial days at a window's ends do not, and reports by session or hour read rows."""
    org = services.root_org_id
    rows = _random_rows(org, 300, seed=3)
    await insert_rows(services, rows)
    await rollups.roll_up(services.store)
    async with services.store.write() as conn:
        await conn.execute(delete(usage_records))

    whole = UsageFilters(since=T0 + timedelta(days=7), until=T0 + timedelta(days=14))
    report, from_rows = await _both(services, "model", spend.Interval.DAY, whole)
    inside = [r for r in rows if whole.since <= r["created_at"] < whole.until]  # type: ignore[operator]
    assert report.totals.calls == len(inside) > 0
    assert report.totals.cost_picos == sum(r["cost_picos"] for r in inside)
    assert from_rows.totals.calls == 0

    ragged = UsageFilters(since=T0 + timedelta(days=6, hours=12), until=T0 + timedelta(days=14))
    report, _ = await _both(services, "", None, ragged)
    assert report.totals.calls == len(inside)  # the half day before is read from rows: gone
    for group_by, interval in (("session", None), ("user", spend.Interval.HOUR)):
        report, _ = await _both(services, group_by, interval, whole)
        assert report.totals.calls == 0


async def test_a_pass_sums_each_row_once_and_late_rows_join_their_day(
    services: Services,
) -> None:
    org = services.root_org_id
    rows = _random_rows(org, 200, seed=4)
    await insert_rows(services, rows)
    assert await rollups.roll_up(services.store, batch=50) == 200
    assert await rollups.roll_up(services.store) == 0  # nothing left to sum
    # A call of ten days ago, written now (the sweeper settling an orphaned reservation).
    day = T0 + timedelta(days=10)
    late = _row(org, day + timedelta(hours=3), user_id="usr_ada", cost_picos=777)
    await insert_rows(services, [late])
    filters = UsageFilters(since=day, until=day + timedelta(days=1))
    before, _ = await _both(services, "user", None, filters)
    assert await rollups.roll_up(services.store) == 1
    after, rows_only = await _both(services, "user", None, filters)
    assert before == after == rows_only
    expected = [r for r in [*rows, late] if day <= r["created_at"] < day + timedelta(days=1)]
    assert after.totals.calls == len(expected)

    async with services.store.read() as conn:
        summed = (await conn.execute(select(usage_rollups))).mappings().all()
        unsummed = await conn.scalar(
            select(func.count()).where(usage_records.c.rolled_up.is_(None))
        )
    assert unsummed == 0
    assert sum(r["calls"] for r in summed) == 201
    by_day: dict[datetime, int] = {}
    for r in summed:
        by_day[r["day"]] = by_day.get(r["day"], 0) + r["calls"]
    for r in [*rows, late]:
        by_day[window_start(Window.DAY, r["created_at"])] -= 1
    assert set(by_day.values()) == {0}
    assert all(r["day"] == window_start(Window.DAY, r["day"]) for r in summed)


async def test_a_pass_stops_between_batches_when_asked(services: Services) -> None:
    await insert_rows(services, _random_rows(services.root_org_id, 250, seed=7))
    asked = 0

    def stopping() -> bool:
        nonlocal asked
        asked += 1
        return asked > 2  # two batches, then the server is shutting down

    assert await rollups.roll_up(services.store, batch=100, stopping=stopping) == 200
    assert await rollups.roll_up(services.store, batch=100) == 50  # the rest, next time


async def test_passes_side_by_side_sum_every_row_exactly_once(
    settings: Settings, services: Services
) -> None:
    """Two stores (two replicas' pools) roll up the same rows at once: on PostgreSQL each
    batch skips the rows the other holds, and adds to the same roll-up rows in key order."""
    org = services.root_org_id
    rows = _random_rows(org, 3_000, seed=5, days=3)  # few days: the passes meet on rows
    await insert_rows(services, rows)
    other = Store(settings.database_url)
    try:
        counts = await asyncio.gather(
            rollups.roll_up(services.store, batch=100), rollups.roll_up(other, batch=100)
        )
    finally:
        await other.dispose()
    assert sum(counts) == 3_000
    report, from_rows = await _both(services, "user,model", spend.Interval.DAY, UsageFilters())
    assert report == from_rows
    assert report.totals.calls == 3_000
    assert report.totals.cost_picos == sum(r["cost_picos"] for r in rows)


@pytest.mark.usefixtures("fleet")
async def test_calls_through_the_gateway_are_summed_by_the_background_pass(
    settings: Settings, clock: MutableClock, api: Api, services: Services
) -> None:
    """The ledger's writer stores rows unsummed; a server's pass sums them on its own."""
    rows = await usage_rows(services)
    assert len(rows) == 6
    assert {r["rolled_up"] for r in rows} == {None}
    before = await _spend(api, group_by="repo,model")
    fast = settings.model_copy(update={"usage_rollup_seconds": 0.05})
    async with another_replica(fast, clock):
        for _ in range(200):
            if {r["rolled_up"] for r in await usage_rows(services)} == {1}:
                break
            await asyncio.sleep(0.05)
        else:
            pytest.fail("the background pass did not sum the rows")
    assert await _spend(api, group_by="repo,model") == before
    async with services.store.read() as conn:
        summed = await conn.scalar(select(func.sum(usage_rollups.c.calls)))
        if services.store.dialect == "sqlite":  # and the planner's statistics were taken
            analyzed = await conn.exec_driver_sql("SELECT DISTINCT tbl FROM sqlite_stat1")
            assert "usage_records" in {row[0] for row in analyzed}
    assert summed == 6


async def test_sqlite_reads_a_session_by_its_own_index_once_statistics_are_taken(
    services: Services,
) -> None:
    """Without statistics SQLite reads a session's calls through the organization's index in
    time order (every call of the organization); with them, through the session's index."""
    if services.store.dialect != "sqlite":
        pytest.skip("SQLite's planner; PostgreSQL's autovacuum keeps its statistics")
    org = services.root_org_id
    rows = [_row(org, T0 + timedelta(seconds=i), session_id=f"ses_{i % 200}") for i in range(4000)]
    await insert_rows(services, rows)
    u = usage_records.c
    newest = (
        select(usage_records)
        .where(u.org_id == org, u.session_id == "ses_7")
        .order_by(u.created_at.desc())
        .limit(501)
    )
    sql = str(newest.compile(services.store.engine, compile_kwargs={"literal_binds": True}))

    async def plan() -> str:
        async with services.store.read() as conn:
            steps = await conn.exec_driver_sql(f"EXPLAIN QUERY PLAN {sql}")
            return " ".join(str(step[3]) for step in steps)

    assert "ix_usage_org_created" in await plan()
    await rollups.refresh_statistics(services.store)
    assert "ix_usage_session" in await plan()


async def test_spend_api_reads_the_same_after_rolling_up(
    api: Api, services: Services, client: httpx.AsyncClient
) -> None:
    org = services.root_org_id
    await insert_rows(services, _random_rows(org, 120, seed=6))
    queries = [
        {"group_by": "team,label:use_case", "interval": "week"},
        {"group_by": "skill", "since": (T0 + timedelta(days=2, hours=3)).isoformat()},
        {"group_by": "session", "interval": "day"},
    ]
    before = [await _spend(api, **q) for q in queries]
    await rollups.roll_up(services.store)
    assert [await _spend(api, **q) for q in queries] == before


async def test_a_session_timeline_totals_costs_past_64_bits_exactly(
    api: Api, services: Services
) -> None:
    """SQLite sums 64-bit integers: two calls of $6M each (in pico-dollars) overflow one sum."""
    session = (await api.session())["session"]
    big = 6 * 10**18
    await insert_rows(
        services,
        [
            _row(services.root_org_id, T0, session_id=session["id"], cost_picos=big),
            _row(services.root_org_id, T0, session_id=session["id"], cost_picos=big + 1),
        ],
    )
    timeline = await api.ok("GET", f"/api/v1/sessions/{session['id']}/timeline")
    assert timeline["totals"]["cost_picos"] == 2 * big + 1
    assert timeline["totals"]["llm_calls"] == 2
