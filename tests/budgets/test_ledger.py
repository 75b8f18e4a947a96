"""The budget ledger through the gateway: reserve before forwarding, settle with the usage row,
refuse over a hard limit, release what was never forwarded, sweep what a dead process left."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
import pytest
from sqlalchemy import func, select, text

from pilothouse.budgets.contexts import CallContext
from pilothouse.budgets.ledger import Ledger
from pilothouse.budgets.limits import LimitHit, LimitKind
from pilothouse.budgets.model import Budget, Enforcement, ScopeKind, Window, epoch, window_start
from pilothouse.budgets.reserve import Ask, Reservation
from pilothouse.budgets.tables import (
    budget_counters,
    budget_reservations,
    budgets,
    rate_counters,
)
from pilothouse.budgets.writer import (
    OPTIMISTIC_POSTGRES,
    READ_POSTGRES,
    READ_RATE_COUNTERS_POSTGRES,
    WRITE_POSTGRES,
    _flags,
    _numbered,
    _numbers,
    _texts,
)
from pilothouse.errors import BudgetExceeded, StoreUnavailable
from pilothouse.gateway.config import DeploymentConfig, GatewayConfig, ModelConfig
from pilothouse.gateway.exchange import Call
from pilothouse.gateway.providers.base import WireFormat
from pilothouse.gateway.tables import usage_records
from pilothouse.gateway.usage_rows import dollars
from pilothouse.identity.tables import agent_sessions
from pilothouse.services import Services
from pilothouse.settings import Settings
from tests.conftest import Api, MutableClock, bearer

PICOS = 10**12
PROMPT = "Say something about ledgers please"
BODY = {"model": "demo", "max_tokens": 16, "messages": [{"role": "user", "content": PROMPT}]}
RAW = json.dumps(BODY, separators=(",", ":")).encode()  # as chat() sends it: 108 bytes
# The worst case reserves a token per 4 bytes of the body (27) as prompt, priced as a cache
# write, the dearest (demo prices: input 1 USD, cache write 1.25, output 2 per million tokens),
# and max_tokens=16 of output.
WORST = (len(RAW) + 3) // 4 * 1_250_000 + 16 * 2_000_000
ACTUAL = 10 * 1_000_000 + 16 * 2_000_000  # the demo provider counts 10 prompt tokens


async def add_budget(
    services: Services,
    *,
    scope_kind: str,
    scope_value: str,
    limit_picos: int,
    window: str = "day",
    enforcement: str = "hard",
    budget_id: str = "bud_test1",
) -> str:
    """A budget written straight to the store (its API is tested elsewhere)."""
    now = services.clock.now()
    async with services.store.write() as conn:
        await conn.execute(
            budgets.insert().values(
                id=budget_id,
                org_id=services.root_org_id,
                name=f"{scope_kind} budget",
                scope_kind=scope_kind,
                scope_value=scope_value,
                window=window,
                limit_picos=limit_picos,
                enforcement=enforcement,
                thresholds="[50, 80, 100]",
                downgrade=None,
                created_by=None,
                created_at=now,
                updated_at=now,
            )
        )
        await services.invalidations.publish(conn, "budget", services.root_org_id)
    return budget_id


async def counter(services: Services, budget_id: str) -> dict[str, int]:
    """The budget's counter in the current window (zeros if there is none)."""
    await services.usage_settled()  # what the calls already answered queued
    start = epoch(window_start(Window.DAY, services.clock.now()))
    async with services.store.read() as conn:
        row = (
            (
                await conn.execute(
                    select(budget_counters).where(
                        budget_counters.c.budget_id == budget_id,
                        budget_counters.c.window_start == start,
                    )
                )
            )
            .mappings()
            .first()
        )
    if row is None:
        return {"spent_picos": 0, "reserved_picos": 0, "calls": 0}
    return {k: int(row[k]) for k in ("spent_picos", "reserved_picos", "calls")}


async def rows(services: Services) -> list[dict[str, Any]]:
    await services.usage_settled()  # what the calls already answered queued
    async with services.store.read() as conn:
        return [dict(r) for r in (await conn.execute(select(usage_records))).mappings()]


async def reservations(services: Services) -> int:
    await services.usage_settled()  # what the calls already answered queued
    async with services.store.read() as conn:
        return int(await conn.scalar(select(func.count()).select_from(budget_reservations)) or 0)


async def chat(client: httpx.AsyncClient, key: str, body: dict[str, Any] | None = None) -> Any:
    raw = RAW if body is None else json.dumps(body, separators=(",", ":")).encode()
    headers = {**bearer(key), "content-type": "application/json"}
    return await client.post("/v1/chat/completions", content=raw, headers=headers)


async def test_calls_settle_to_their_actual_cost_and_the_call_over_the_limit_is_refused(
    services: Services, client: httpx.AsyncClient, api: Api
) -> None:
    session = await api.session(project="ledger")
    key = session["key"]["token"]
    budget = await add_budget(
        services,
        scope_kind="session",
        scope_value=session["session"]["id"],
        limit_picos=2 * ACTUAL + WORST,  # room for the third call's worst case, not a fourth's
    )
    served = []
    for _ in range(3):
        reply = await chat(client, key)
        assert reply.status_code == 200, reply.text
        served.append(reply.json())
        # Settled, not reserved: the reservation is gone and the counter holds the actual cost.
        assert await reservations(services) == 0
    written = await rows(services)
    actual = sum(r["cost_picos"] for r in written)
    assert len(written) == 3 and actual == 3 * ACTUAL
    assert await counter(services, budget) == {
        "spent_picos": actual,
        "reserved_picos": 0,
        "calls": 3,
    }
    # What is left (WORST - ACTUAL) is less than one call's worst case: refused, unforwarded.
    refused = await chat(client, key)
    assert refused.status_code == 402, refused.text
    error = refused.json()["error"]
    assert error["code"] == "budget_exceeded" and error["type"] == "insufficient_quota"
    assert error["scope"] == f"session:{session['session']['id']}" and error["window"] == "day"
    assert error["limit_usd"] == f"0.{2 * ACTUAL + WORST:012d}"  # exact, twelve places
    assert error["spent_usd"] == f"0.{actual:012d}"
    tomorrow = window_start(Window.DAY, services.clock.now()) + timedelta(days=1)
    assert error["resets_at"] == tomorrow.isoformat()
    assert "would be exceeded" in error["message"] and session["session"]["id"] in error["message"]
    assert len(await rows(services)) == 3  # no row for the refused call
    assert await counter(services, budget) == {
        "spent_picos": actual,
        "reserved_picos": 0,
        "calls": 3,
    }


async def test_the_anthropic_sdk_gets_the_refusal_in_its_own_shape(
    services: Services, client: httpx.AsyncClient, api: Api
) -> None:
    session = await api.session(project="ledger")
    await add_budget(
        services, scope_kind="session", scope_value=session["session"]["id"], limit_picos=1
    )
    reply = await client.post(
        "/v1/messages",
        json={**BODY, "model": "claude-sonnet-4"},
        headers={"x-api-key": session["key"]["token"], "anthropic-version": "2023-06-01"},
    )
    assert reply.status_code == 402
    body = reply.json()
    assert body["type"] == "error" and body["error"]["type"] == "billing_error"
    assert (
        body["error"]["code"] == "budget_exceeded"
        and body["error"]["limit_usd"] == "0.000000000001"
    )


async def test_a_soft_budget_counts_but_never_refuses(
    services: Services, client: httpx.AsyncClient, api: Api
) -> None:
    session = await api.session(project="ledger")
    budget = await add_budget(
        services, scope_kind="project", scope_value="ledger", limit_picos=1, enforcement="soft"
    )
    for _ in range(2):
        assert (await chat(client, session["key"]["token"])).status_code == 200
    spent = sum(r["cost_picos"] for r in await rows(services))
    assert await counter(services, budget) == {
        "spent_picos": spent,
        "reserved_picos": 0,
        "calls": 2,
    }


async def test_budgets_of_other_scopes_are_not_charged(
    services: Services, client: httpx.AsyncClient, api: Api
) -> None:
    session = await api.session(project="ledger", labels={"use_case": "review"})
    mine = await add_budget(
        services, scope_kind="label", scope_value="use_case=review", limit_picos=PICOS
    )
    other = await add_budget(
        services,
        scope_kind="label",
        scope_value="use_case=bugfix",
        limit_picos=1,
        budget_id="bud_test2",
    )
    assert (await chat(client, session["key"]["token"])).status_code == 200
    assert (await counter(services, mine))["calls"] == 1
    assert await counter(services, other) == {"spent_picos": 0, "reserved_picos": 0, "calls": 0}


async def test_a_budget_made_after_a_principal_s_calls_counts_its_next_call(
    services: Services, client: httpx.AsyncClient, api: Api
) -> None:
    # A principal's budgets are worked out once, and again when the organization's change.
    session = await api.session(project="ledger")
    key = session["key"]["token"]
    first = await add_budget(
        services, scope_kind="project", scope_value="ledger", limit_picos=PICOS
    )
    assert (await chat(client, key)).status_code == 200
    second = await add_budget(
        services,
        scope_kind="session",
        scope_value=session["session"]["id"],
        limit_picos=PICOS,
        budget_id="bud_test2",
    )
    assert (await chat(client, key)).status_code == 200
    assert (await counter(services, first))["calls"] == 2
    assert (await counter(services, second))["calls"] == 1


# Each scope kind: one call in the scope and one outside it, both before the budget is made.
EARLIER_SCOPES = [
    "org",
    "team",
    "user",
    "project",
    "use_case",
    "repository",
    "session",
    "key",
    "label",
]


@pytest.mark.parametrize("kind", EARLIER_SCOPES)
async def test_a_budget_made_mid_window_counts_what_its_scope_spent_in_it_already(
    services: Services, client: httpx.AsyncClient, api: Api, kind: str
) -> None:
    team = await api.ok("POST", "/api/v1/teams", json={"name": f"earlier-{kind}"})
    user, _ = await api.user_with_key("member")
    inside = await api.session(
        team_id=team["id"],
        user_id=user,
        project="inside",
        use_case="review",
        repository="acme/inside",
        labels={"tier": "gold"},
    )
    outside = await api.session(
        project="outside", use_case="triage", repository="acme/outside", labels={"tier": "tin"}
    )
    for opened in (inside, outside):
        assert (await chat(client, opened["key"]["token"])).status_code == 200
    value = {
        "org": "",
        "team": team["id"],
        "user": user,
        "project": "inside",
        "use_case": "review",
        "repository": "acme/inside",
        "session": inside["session"]["id"],
        "key": inside["key"]["id"],
        "label": "tier=gold",
    }[kind]
    made = await api.ok(
        "POST",
        "/api/v1/budgets",
        json={"scope_kind": kind, "scope_value": value, "window": "day", "limit_usd": "1"},
    )
    calls = 2 if kind == "org" else 1  # the organization's budget counts both
    assert await counter(services, made["id"]) == {
        "spent_picos": calls * ACTUAL,
        "reserved_picos": 0,
        "calls": calls,
    }
    assert made["current"]["spent_usd"] == f"{calls * ACTUAL / PICOS:.12f}"


async def test_earlier_windows_do_not_count_and_a_budget_may_count_from_now_instead(
    services: Services, client: httpx.AsyncClient, api: Api, clock: MutableClock
) -> None:
    clock.moment = datetime(2026, 11, 23, 23, 0, tzinfo=UTC)
    key = (await api.session(project="earlier", ttl_seconds=86_400))["key"]["token"]
    assert (await chat(client, key)).status_code == 200  # yesterday's: not in today's window
    clock.moment = datetime(2026, 11, 24, 9, 0, tzinfo=UTC)
    for _ in range(2):
        assert (await chat(client, key)).status_code == 200
    clock.moment = datetime(2026, 11, 24, 9, 30, tzinfo=UTC)  # read before the write
    # Room for the two calls already made and less than the next call's worst case.
    limit = 2 * ACTUAL + WORST - 1
    body = {
        "scope_kind": "project",
        "scope_value": "earlier",
        "window": "day",
        "limit_usd": f"{limit / PICOS:.12f}",
    }
    counted = await api.ok("POST", "/api/v1/budgets", json=body)
    assert await counter(services, counted["id"]) == {
        "spent_picos": 2 * ACTUAL,
        "reserved_picos": 0,
        "calls": 2,
    }
    refused = await chat(client, key)
    assert refused.status_code == 402, refused.text
    assert refused.json()["error"]["spent_usd"] == f"{2 * ACTUAL / PICOS:.12f}"
    (event,) = (await api.ok("GET", "/api/v1/audit/events", params={"action": "budget.created"}))[
        "data"
    ]
    assert event["details"]["earlier_spend_usd"] == f"{2 * ACTUAL / PICOS:.12f}"
    assert event["details"]["earlier_calls"] == 2
    # The same budget counting from now: the next call fits.
    await api.ok("DELETE", f"/api/v1/budgets/{counted['id']}")
    fresh = await api.ok("POST", "/api/v1/budgets", json={**body, "count_earlier_spend": False})
    assert await counter(services, fresh["id"]) == {
        "spent_picos": 0,
        "reserved_picos": 0,
        "calls": 0,
    }
    assert (await chat(client, key)).status_code == 200
    assert (await counter(services, fresh["id"]))["calls"] == 1


async def test_concurrent_calls_never_overspend_a_hard_budget(
    services: Services, client: httpx.AsyncClient, api: Api
) -> None:
    sessions = [await api.session(project="race") for _ in range(3)]
    budget = await add_budget(
        services, scope_kind="project", scope_value="race", limit_picos=20 * WORST
    )
    replies = await asyncio.gather(
        *(chat(client, sessions[i % 3]["key"]["token"]) for i in range(60))
    )
    statuses = [r.status_code for r in replies]
    assert set(statuses) <= {200, 402}
    served = statuses.count(200)
    # Calls in flight hold their worst case, so a call may be refused that would have fitted
    # once the others settled lower: refusals are conservative, never the other way round.
    assert served >= 10 and statuses.count(402) > 0
    written = await rows(services)
    assert len(written) == served  # a row per served call, none for a refused one
    spent = sum(r["cost_picos"] for r in written)
    assert spent <= 20 * WORST  # reservations bound every call's cost: no overspend at all
    assert await counter(services, budget) == {
        "spent_picos": spent,
        "reserved_picos": 0,
        "calls": served,
    }
    assert await reservations(services) == 0


async def test_a_daily_budget_admits_again_at_utc_midnight_with_no_job(
    services: Services, client: httpx.AsyncClient, api: Api, clock: MutableClock
) -> None:
    clock.moment = datetime(2026, 11, 24, 23, 59, 0, tzinfo=UTC)
    session = await api.session(project="ledger")
    key = session["key"]["token"]
    budget = await add_budget(
        services, scope_kind="session", scope_value=session["session"]["id"], limit_picos=WORST
    )
    first = await chat(client, key)
    assert first.status_code == 200, first.text
    refused = await chat(client, key)
    assert refused.status_code == 402
    assert refused.json()["error"]["resets_at"] == "2026-11-25T00:00:00+00:00"
    clock.moment = datetime(2026, 11, 25, 0, 0, 0, tzinfo=UTC)
    assert (await chat(client, key)).status_code == 200
    assert (await counter(services, budget))["calls"] == 1  # the new day's counter
    async with services.store.read() as conn:
        windows = (await conn.execute(select(budget_counters.c.window_start))).scalars().all()
    assert sorted(windows) == [
        epoch(datetime(2026, 11, 24, tzinfo=UTC)),
        epoch(datetime(2026, 11, 25, tzinfo=UTC)),
    ]


async def test_a_call_shape_s_counters_and_context_are_worked_out_once_a_day_and_budget_set(
    services: Services, api: Api
) -> None:
    """``Ledger.ask`` keeps what calls of one shape charge (the counters and the context) and
    works it out again for a new UTC day or a changed set of budgets, never reusing another's."""
    ledger, budget, applicable = await _project_budget(services, api, PICOS)
    call = of(await _usage_row(services, "req_shape", 0))
    evening = datetime(2026, 11, 24, 23, 59, tzinfo=UTC)
    first = ledger.ask(applicable, "req_s1", 1, call.fields, call.shape, now=evening)
    again = ledger.ask(
        applicable, "req_s2", 1, call.fields, call.shape, now=evening + timedelta(seconds=30)
    )
    assert first.charges == ((budget, epoch(datetime(2026, 11, 24, tzinfo=UTC))),)
    assert again.charges is first.charges  # one tuple: a tick sums them as one
    assert again.context is first.context
    morning = ledger.ask(
        applicable, "req_s3", 1, call.fields, call.shape, now=evening + timedelta(minutes=1)
    )
    assert morning.charges == ((budget, epoch(datetime(2026, 11, 25, tzinfo=UTC))),)
    assert morning.context.id != first.context.id  # the context names the counters
    back = ledger.ask(applicable, "req_s5", 1, call.fields, call.shape, now=evening)
    # An injected clock moved back: the evening's counters and context again.
    assert back.charges == first.charges and back.context.id == first.context.id
    monthly = Budget(
        "bud_month", services.root_org_id, "m", ScopeKind.PROJECT, "ledger", Window.MONTH, 5,
        Enforcement.HARD,
    )  # fmt: skip
    wider = ledger.ask((*applicable, monthly), "req_s4", 1, call.fields, call.shape, now=evening)
    assert wider.charges == (  # in id order, the order a tick locks them in
        ("bud_month", epoch(datetime(2026, 11, 1, tzinfo=UTC))),
        (budget, epoch(datetime(2026, 11, 24, tzinfo=UTC))),
    )


@pytest.mark.parametrize(
    ("caps", "output"),
    [
        ({"max_tokens": 16}, 16),
        ({"max_completion_tokens": 40}, 40),
        ({"max_output_tokens": 7}, 7),
        ({"max_tokens": True}, None),  # a boolean is not a cap: the configured one holds
        ({"max_tokens": 0, "max_completion_tokens": 9}, 9),  # nor is zero
        ({"max_tokens": "16"}, None),
    ],
)
async def test_the_worst_case_takes_the_first_output_cap_the_body_names(
    services: Services, caps: dict[str, Any], output: int | None
) -> None:
    gateway = services.gateway
    assert gateway is not None
    body = {"model": "demo", "messages": [], **caps}
    call = Call("req_w", WireFormat.OPENAI_CHAT, "/v1/chat/completions", {}, 0.0, 0, body=body)
    call.body_bytes = 400  # 100 tokens of prompt
    model = gateway.router.resolve("demo")
    assert model is not None
    expected = services.settings.gateway.reserve_output_tokens if output is None else output
    worst, tokens = gateway._worst_case(call, model)
    assert tokens == 100 + expected
    assert worst == 100 * 1_250_000 + expected * 2_000_000  # demo prices, as WORST


async def test_settling_twice_counts_once(services: Services, api: Api) -> None:
    session = await api.session(project="ledger")
    budget = await add_budget(
        services, scope_kind="project", scope_value="ledger", limit_picos=PICOS
    )
    assert services.ledger is not None
    applicable = await services.ledger.book.applicable(
        await services.authenticator.authenticate(bearer(session["key"]["token"]))
    )
    row = await _usage_row(services, "req_twice", cost=777)
    reservation = await services.ledger.reserve(applicable, "req_twice", 1000, of(row))
    assert await counter(services, budget) == {"spent_picos": 0, "reserved_picos": 1000, "calls": 0}
    await services.ledger.record(row, reservation)
    await services.ledger.record(row, reservation)
    assert await counter(services, budget) == {"spent_picos": 777, "reserved_picos": 0, "calls": 1}
    assert len(await rows(services)) == 1


async def test_a_request_id_that_needs_escaping_reserves_and_settles(
    services: Services, api: Api
) -> None:
    """The gateway's request ids need no escaping in the reservation row's JSON or the tick's
    array literals, and are written as they are; any other id is escaped (the settlement and
    the sweep find it again by the id as given)."""
    ledger, budget, applicable = await _project_budget(services, api, PICOS)
    warm = await _usage_row(services, "req_warm", cost=0)  # the counter made, as by calls before
    await ledger.record(warm, await ledger.reserve(applicable, "req_warm", 1000, of(warm)))
    optimism = ledger._writer.optimism
    hits = optimism.hits
    odd = 'req-"odd\\id\u00e9'
    row = await _usage_row(services, odd, cost=300)
    reservation = await ledger.reserve(applicable, odd, 1000, of(row))
    async with services.store.read() as conn:
        held = await conn.scalar(select(budget_reservations.c.request_id))
    assert held == odd
    await ledger.record(row, reservation)
    if services.store.dialect == "postgresql":  # the one statement, with its array literals
        assert optimism.hits == hits + 2
    assert await reservations(services) == 0
    assert sorted(r["request_id"] for r in await rows(services)) == [odd, "req_warm"]
    assert await counter(services, budget) == {"spent_picos": 300, "reserved_picos": 0, "calls": 2}


async def test_a_request_id_reserved_twice_fails_its_tick_and_changes_nothing(
    services: Services, api: Api
) -> None:
    """Request ids are new to every call and no tick is written twice, so a second reservation
    of one would be a bug: it is refused as the store failing, never admitted without its row
    (a reservation with no row could never be swept)."""
    ledger, budget, applicable = await _project_budget(services, api, PICOS)
    row = await _usage_row(services, "req_again", cost=777)
    await ledger.reserve(applicable, "req_again", 1000, of(row))
    before = await counter(services, budget)
    with pytest.raises(StoreUnavailable):
        await ledger.reserve(applicable, "req_again", 2000, of(row))
    assert before == {"spent_picos": 0, "reserved_picos": 1000, "calls": 0}
    assert await counter(services, budget) == before
    assert await reservations(services) == 1


async def test_calls_admitted_together_each_see_the_rate_counter_as_they_left_it(
    services: Services, api: Api
) -> None:
    """Calls decided in one tick take a rate limit's slots in arrival order, and each is told
    the count it left (the ``x-ratelimit-remaining-*`` headers): on PostgreSQL also when the
    tick is one statement that only returns the count the last of them left."""
    session = await api.session(project="ledger")
    ledger = services.ledger
    assert ledger is not None
    applicable = await ledger.book.applicable(
        await services.authenticator.authenticate(bearer(session["key"]["token"]))
    )
    rpm = [LimitHit(LimitKind.RPM, "project:ledger", 100)]

    async def reserve(request_id: str, row: dict[str, Any]) -> Reservation:
        return await ledger.reserve(applicable, request_id, 10, of(row), rpm, 1)

    for request_id in ("req_w1", "req_w2", "req_w3"):  # the counter exists, misses are over
        await reserve(request_id, await _usage_row(services, request_id, 0))
    rows = {f"req_t{i}": await _usage_row(services, f"req_t{i}", 0) for i in range(4)}
    ticks = count_ticks(ledger)
    together = await asyncio.gather(*(reserve(rid, row) for rid, row in rows.items()))
    assert ticks == [4]  # one tick
    assert [r.limits[0].count for r in together] == [4, 5, 6, 7]
    if services.store.dialect == "postgresql":
        assert ledger._writer.optimism.hits >= 1


async def test_a_long_call_whose_minute_was_cleaned_up_settles_in_one_statement(
    services: Services, api: Api
) -> None:
    """A call that outlives its per-minute rate counter (cleaned up two minutes on) settles
    all the same, and on PostgreSQL in the one-statement tick: only the counters a new
    reservation goes to must exist."""
    ledger, budget, applicable = await _project_budget(services, api, PICOS)
    rpm = [LimitHit(LimitKind.RPM, "project:ledger", 100)]
    for request_id in ("req_w1", "req_w2", "req_w3"):  # the counters exist, misses are over
        await ledger.reserve(
            applicable, request_id, 10, of(await _usage_row(services, request_id, 0)), rpm, 1
        )
    row = await _usage_row(services, "req_long", 7)
    held = await ledger.reserve(applicable, "req_long", 10, of(row), rpm, 1)
    async with services.store.write() as conn:  # the sweeper's clean-up of past minutes
        await conn.execute(rate_counters.delete())
    misses = ledger._writer.optimism.misses
    await ledger.record(row, held)
    assert ledger._writer.optimism.misses == misses
    assert await counter(services, budget) == {"spent_picos": 7, "reserved_picos": 30, "calls": 1}
    assert [r["request_id"] for r in await rows(services)] == ["req_long"]


async def test_a_call_another_replica_s_reservation_leaves_no_room_for_is_refused(
    services: Services, api: Api
) -> None:
    """PostgreSQL writes a tick as one statement that admits its calls only if each counter,
    as it is (another replica's reservations included), has room for them; a call that does
    not fit makes it change nothing, and the tick is decided again, refusing that call."""
    if services.store.dialect != "postgresql":
        pytest.skip("the optimistic tick is PostgreSQL's (SQLite has one writer)")
    ledger, budget, applicable = await _project_budget(services, api, 3999)
    other = Ledger(services.store, services.clock, ledger.book, 120)  # another replica's
    other.start()
    try:
        for writer, request_id in ((ledger, "req_a1"), (ledger, "req_a2"), (other, "req_b1")):
            await writer.reserve(
                applicable, request_id, 1000, of(await _usage_row(services, request_id, 0))
            )
        optimism = ledger._writer.optimism
        # a1 found no counter for the window (the locking way made it; a2 went that way too)
        assert (optimism.hits, optimism.misses) == (0, 1)
        with pytest.raises(BudgetExceeded):  # 3000 reserved by both replicas: 1000 more is over
            await ledger.reserve(
                applicable, "req_a3", 1000, of(await _usage_row(services, "req_a3", 0))
            )
        assert optimism.misses == 2
        assert await counter(services, budget) == {
            "spent_picos": 0,
            "reserved_picos": 3000,
            "calls": 0,
        }
    finally:
        await other.stop()


async def test_the_ledger_writer_finds_rows_by_key_where_the_tables_look_empty(
    services: Services, api: Api
) -> None:
    """A vacuumed, emptied reservations table looks empty to PostgreSQL's planner, which then
    plans a sequential scan to find the reservations a tick ends; the plan is kept on the
    writer's connection while the table fills with the dead rows of every ended call, so each
    tick read them all (half the server's CPU in the ledger bench). The writer's connection
    finds reservations and counters by their keys whatever the statistics say."""
    if services.store.dialect != "postgresql":
        pytest.skip("PostgreSQL's planner (SQLite's writer looks rows up by key)")
    ledger, _, _ = await _project_budget(services, api, PICOS)
    writer = ledger._writer._writer
    tables = ("budget_reservations", "budget_counters", "rate_counters")
    await writer.postgres_once(lambda driver: driver.execute(f"VACUUM ANALYZE {', '.join(tables)}"))
    keys = (["bud_x"], [0])
    tick = (_texts(["req_x"]), "[]", _texts(["bud_x"]), *map(_numbers, ([0], [0], [1], [0])))
    tick += (_numbers([None]), _flags([True]), _texts(["k"]), _numbers([1]), _numbers([None]))
    tick += (_flags([True]),)
    statements = [  # each with the tables it finds rows of by key
        (OPTIMISTIC_POSTGRES, (*tick, "[]", 1, 1, 1, 0), set(tables)),
        (READ_POSTGRES, (["req_x"], "[]", *keys), {"budget_reservations", "budget_counters"}),
        (READ_RATE_COUNTERS_POSTGRES, (["k"],), {"rate_counters"}),
        (
            _numbered(WRITE_POSTGRES),
            (*keys, [0], [0], [0], ["k"], [1], "[]"),
            {"budget_counters", "rate_counters"},
        ),
    ]
    for sql, params, keyed in statements:
        plan = await writer.postgres_once(
            lambda driver, sql=sql, params=params: driver.fetchval(
                f"EXPLAIN (FORMAT JSON) {sql}", *params
            )
        )
        scans = list(_scans(json.loads(plan)[0]["Plan"]))
        assert {table for _, table in scans} >= keyed, plan
        assert [t for node, t in scans if node == "Seq Scan" and t in tables] == [], plan


async def test_the_optimistic_tick_s_array_literals_carry_any_text_exactly(
    services: Services,
) -> None:
    """The optimistic tick sends its arrays as literals in text parameters (asyncpg encodes
    arrays slowly); a rate counter's key may hold a label value with any character."""
    if services.store.dialect != "postgresql":
        pytest.skip("the optimistic tick is PostgreSQL's")
    awkward = ["a,b", "{c}", 'say "hi"', "back\\slash", "NULL", "", " pad ", "é ✓ 🚀", "x|y=z"]
    numbers = [0, -1, 2**63 - 1, None, -(2**63)]
    async with services.store.read() as conn:
        found = await conn.exec_driver_sql(
            "SELECT CAST(CAST($1 AS text) AS text[]), CAST(CAST($2 AS text) AS bigint[]),"
            " CAST(CAST($3 AS text) AS boolean[]), CAST(CAST($4 AS text) AS text[])",
            (_texts(awkward), _numbers(numbers), _flags([True, False]), _texts([])),
        )
        assert list(found.one()) == [awkward, numbers, [True, False], []]


def _scans(node: dict[str, Any]) -> Iterator[tuple[str, str]]:
    """Each table a plan reads or writes, with the node that does: (node type, table)."""
    if "Relation Name" in node:
        yield node["Node Type"], node["Relation Name"]
    for child in node.get("Plans", ()):
        yield from _scans(child)


async def test_a_call_ending_frees_room_for_a_call_reserved_in_the_same_transaction(
    services: Services, api: Api
) -> None:
    """One tick settles the calls that ended before it decides the new ones: the room a
    settlement gives back is there for the call queued alongside it."""
    ledger, budget, applicable = await _project_budget(services, api, 1000)
    first = await _usage_row(services, "req_first", cost=100)
    held = await ledger.reserve(applicable, "req_first", 900, of(first))
    with pytest.raises(BudgetExceeded):  # alone, the second call does not fit
        await ledger.reserve(
            applicable, "req_early", 800, of(await _usage_row(services, "req_early", 0))
        )
    second = await _usage_row(services, "req_second", 0)
    ticks = count_ticks(ledger)
    _, reservation = await asyncio.gather(
        ledger.record(first, held), ledger.reserve(applicable, "req_second", 800, of(second))
    )
    assert ticks == [2]  # both in one transaction
    assert reservation.amount_picos == 800
    assert await counter(services, budget) == {
        "spent_picos": 100,
        "reserved_picos": 800,
        "calls": 1,
    }


async def test_a_settlement_made_twice_in_a_tick_with_others_counts_once_and_they_all_count(
    services: Services, api: Api
) -> None:
    """A tick whose reservations did not all still exist (one was settled before) settles the
    others all the same, and the one settled before once."""
    ledger, budget, applicable = await _project_budget(services, api, PICOS)
    once = await _usage_row(services, "req_once", cost=100)
    twice = await _usage_row(services, "req_twice", cost=200)
    held_once = await ledger.reserve(applicable, "req_once", 1000, of(once))
    held_twice = await ledger.reserve(applicable, "req_twice", 1000, of(twice))
    await ledger.record(twice, held_twice)
    ticks = count_ticks(ledger)
    await asyncio.gather(ledger.record(once, held_once), ledger.record(twice, held_twice))
    assert ticks == [2]  # both in one transaction
    assert await counter(services, budget) == {"spent_picos": 300, "reserved_picos": 0, "calls": 2}
    assert len(await rows(services)) == 2
    assert await reservations(services) == 0


async def test_one_tick_of_calls_charged_to_different_budgets_moves_each_counter_by_their_sum(
    services: Services, api: Api
) -> None:
    """A tick that settles, releases and reserves calls charged to different sets of budgets
    (sharing one) moves each counter by what its own calls change it by, and a per-minute
    token limit from the reserved estimate to the tokens used; on PostgreSQL as one statement
    (the writer sums calls charged to the same budgets before it adds them to the counters)."""
    ledger, project, _ = await _project_budget(services, api, PICOS)
    org = await add_budget(
        services, scope_kind="org", scope_value="", limit_picos=PICOS, budget_id="bud_test0"
    )
    both = await ledger.book.applicable(
        await services.authenticator.authenticate(
            bearer((await api.session(project="ledger"))["key"]["token"])
        )
    )
    assert sorted(b.id for b in both) == [org, project]
    org_only = tuple(b for b in both if b.id == org)
    tpm = (LimitHit(LimitKind.TPM, "project:ledger", 10**6),)

    async def reserve(
        request_id: str, charged: tuple[Budget, ...], amount: int, limits: tuple[LimitHit, ...] = ()
    ) -> tuple[dict[str, Any], Reservation]:
        row = await _usage_row(services, request_id, amount // 10)
        return row, await ledger.reserve(charged, request_id, amount, of(row), limits, 50)

    await reserve("req_w1", both, 10)
    d = await reserve("req_d", both, 70, tpm)
    await reserve("req_w2", org_only, 10)  # the counters exist: the optimistic way is tried
    a, b = await reserve("req_a", both, 1000), await reserve("req_b", org_only, 400)
    c = await reserve("req_c", both, 300)
    e, f = await _usage_row(services, "req_e", 0), await _usage_row(services, "req_f", 0)
    hits = ledger._writer.optimism.hits
    ticks = count_ticks(ledger)
    await asyncio.gather(
        ledger.record(*a),
        ledger.record(*b),
        ledger.release(c[1]),
        ledger.record(*d),
        ledger.reserve(both, "req_e", 200, of(e)),
        ledger.reserve(org_only, "req_f", 60, of(f)),
    )
    assert ticks == [6]
    if services.store.dialect == "postgresql":
        assert ledger._writer.optimism.hits == hits + 1
    # spent: a 100, b 40, d 7; reserved: w1 10, w2 10, e 200, f 60 (a, b, c and d ended)
    assert await counter(services, org) == {"spent_picos": 147, "reserved_picos": 280, "calls": 3}
    assert await counter(services, project) == {
        "spent_picos": 107,
        "reserved_picos": 210,
        "calls": 2,
    }
    async with services.store.read() as conn:  # d reserved 50 tokens and used 2
        assert (await conn.execute(select(rate_counters.c.count))).scalars().all() == [2]
    assert await reservations(services) == 4


async def test_calls_that_end_a_turn_of_the_event_loop_apart_share_a_tick(
    services: Services, api: Api
) -> None:
    """The ledger's writer lets one turn of the event loop pass before it takes a tick, so a
    call made ready alongside it (by the same read of the sockets, or the same commit) shares
    the tick instead of paying for a transaction of its own."""
    ledger, _, _ = await _project_budget(services, api, PICOS)
    first, second = [await _usage_row(services, f"req_{n}", 1) for n in ("one", "two")]
    ticks = count_ticks(ledger)

    async def a_turn_later() -> None:
        await asyncio.sleep(0)
        await ledger.record(second)

    await asyncio.gather(ledger.record(first), a_turn_later())
    assert ticks == [2]
    assert len(await rows(services)) == 2


async def test_a_call_cancelled_while_its_reservation_is_decided_gives_it_back(
    services: Services, api: Api
) -> None:
    """A client that goes away while its call waits for the reservation's transaction: the
    call is never forwarded, so what was admitted for it is released at once (not left to
    expire and be swept as if it had been spent)."""
    ledger, budget, applicable = await _project_budget(services, api, PICOS)
    row = await _usage_row(services, "req_gone", 0)
    call = asyncio.create_task(ledger.reserve(applicable, "req_gone", 500, of(row)))
    await asyncio.sleep(0)  # its reservation is queued
    call.cancel()
    with pytest.raises(asyncio.CancelledError):
        await call
    # The reservation's transaction was under way: its release goes with the next one.
    await ledger.record(await _usage_row(services, "req_next", 7))
    async with services.store.read() as conn:  # it was admitted: its counter was made
        assert await conn.scalar(select(func.count()).select_from(budget_counters)) == 1
    assert await reservations(services) == 0
    assert await counter(services, budget) == {"spent_picos": 0, "reserved_picos": 0, "calls": 0}
    assert [r["request_id"] for r in await rows(services)] == ["req_next"]


async def test_the_sweeper_settles_what_a_dead_process_left_at_its_reserved_cost(
    services: Services, api: Api, clock: MutableClock
) -> None:
    session = await api.session(project="ledger")
    budget = await add_budget(
        services, scope_kind="project", scope_value="ledger", limit_picos=PICOS
    )
    assert services.ledger is not None
    applicable = await services.ledger.book.applicable(
        await services.authenticator.authenticate(bearer(session["key"]["token"]))
    )
    row = await _usage_row(services, "req_orphan", cost=0)
    reservation = await services.ledger.reserve(applicable, "req_orphan", 5000, of(row))
    assert await services.ledger.sweep() == 0  # not expired yet
    clock.advance(seconds=services.settings.gateway.reservation_ttl_seconds + 1)
    assert await services.ledger.sweep() == 1
    assert await services.ledger.sweep() == 0
    [orphan] = await rows(services)
    assert orphan["request_id"] == "req_orphan" and orphan["status"] == "orphaned"
    assert orphan["estimated"] == 1 and orphan["cost_picos"] == 5000
    assert orphan["session_id"] == session["session"]["id"] and orphan["project"] == "ledger"
    assert await counter(services, budget) == {"spent_picos": 5000, "reserved_picos": 0, "calls": 1}
    # The call's own settlement, arriving after the sweep, changes nothing.
    await services.ledger.record({**row, "cost_picos": 42}, reservation)
    assert await counter(services, budget) == {"spent_picos": 5000, "reserved_picos": 0, "calls": 1}
    assert [r["cost_picos"] for r in await rows(services)] == [5000]


@pytest.fixture
def settings(database_url: str, tmp_path: Any, request: pytest.FixtureRequest) -> Settings:
    """Demo models, and one served only by an Anthropic deployment: an embeddings call for it
    is admitted and reserved, and no deployment can take it (never forwarded). Parametrized
    indirectly, ``gateway.reserve_every_call`` (on by default)."""
    demo = DeploymentConfig(provider="demo", model="demo-1")
    anthropic_only = DeploymentConfig(
        provider="anthropic",
        model="claude-x",
        base_url="http://127.0.0.1:9",
        price={"input": 3_000_000, "output": 15_000_000},
    )
    return Settings(
        database_url=database_url,
        data_dir=tmp_path / "data",
        models=[
            ModelConfig(alias="demo", deployments=[demo]),
            ModelConfig(alias="claude-*", deployments=[demo]),
            ModelConfig(alias="nowhere", deployments=[anthropic_only]),
            ModelConfig(
                alias="slow",
                deployments=[DeploymentConfig(**{**demo.model_dump(), "latency_ms": 300})],
            ),
        ],
        gateway=GatewayConfig(reserve_every_call=getattr(request, "param", True)),
    )


def _noting_asks(services: Services) -> asyncio.Event:
    """An event set once the ledger writer has written a tick that reserved a call."""
    assert services.ledger is not None
    writer = services.ledger._writer
    write, asked = writer._write, asyncio.Event()

    async def noted(items: list[Any]) -> None:
        await write(items)
        if any(isinstance(i, Ask) for i in items):
            asked.set()

    writer._write = noted  # type: ignore[method-assign]
    return asked


@pytest.mark.parametrize("settings", [True, False], ids=["reserved", "unreserved"], indirect=True)
async def test_a_call_under_no_budget_is_answered_before_its_row_unless_it_is_unreserved(
    services: Services, client: httpx.AsyncClient, api: Api, settings: Settings
) -> None:
    """Reserved (the default), a call under no budget is answered while its usage row waits
    for the store, as a budgeted call is; with ``reserve_every_call`` off its row is its only
    record, and the client hears the end only once the row is written."""
    session = await api.session(project="ledger")
    reserved = settings.gateway.reserve_every_call
    asked = _noting_asks(services)
    call = asyncio.create_task(chat(client, session["key"]["token"], {**BODY, "model": "slow"}))
    if reserved:
        await asyncio.wait_for(asked.wait(), timeout=5)  # reserved; the upstream takes 300 ms
    async with services.store.write() as blocker:  # the store's writes are held up
        if services.store.dialect == "postgresql":  # (SQLite: by its one write lock)
            await blocker.execute(text("LOCK TABLE usage_records IN SHARE MODE"))
        done, _ = await asyncio.wait({call}, timeout=2)
        assert bool(done) is reserved
        async with services.store.read() as conn:
            assert await conn.scalar(select(func.count()).select_from(usage_records)) == 0
            held = await conn.scalar(select(func.count()).select_from(budget_reservations))
        assert held == int(reserved)
    assert asked.is_set() is reserved
    assert (await asyncio.wait_for(call, timeout=5)).status_code == 200
    assert len(await rows(services)) == 1
    assert await reservations(services) == 0


async def test_the_reply_does_not_wait_for_the_settlement_and_reads_of_spend_do(
    services: Services, client: httpx.AsyncClient, api: Api
) -> None:
    # The reservation, durable before forwarding, already counts the call: the client hears
    # the end while the settlement waits for the store; a read of usage or budgets then waits
    # for it, so this replica's reads see every call it answered.
    session = await api.session(project="ledger")
    key = session["key"]["token"]
    budget = await add_budget(
        services, scope_kind="project", scope_value="ledger", limit_picos=PICOS
    )
    reserved = _noting_asks(services)
    call = asyncio.create_task(chat(client, key, {**BODY, "model": "slow"}))
    await asyncio.wait_for(reserved.wait(), timeout=5)  # reserved; the upstream takes 300 ms
    async with services.store.write() as blocker:  # the store's writes are held up
        if services.store.dialect == "postgresql":  # (SQLite: by its one write lock)
            await blocker.execute(select(budget_counters).with_for_update())
        reply = await asyncio.wait_for(call, timeout=5)
        assert reply.status_code == 200, reply.text
        async with services.store.read() as conn:  # not settled yet: reserved, no row
            assert await conn.scalar(select(func.count()).select_from(usage_records)) == 0
            assert await conn.scalar(select(func.count()).select_from(budget_reservations)) == 1
        listed = asyncio.create_task(api.call("GET", "/api/v1/usage"))
        shown = asyncio.create_task(api.call("GET", f"/api/v1/budgets/{budget}"))
        await asyncio.sleep(0.3)
        assert not listed.done() and not shown.done()  # waiting for the settlement
    usage = (await listed).json()["data"]
    assert [u["request_id"] for u in usage] == [reply.headers["x-request-id"]]
    current = (await shown).json()["current"]
    assert current["spent_usd"] == dollars(ACTUAL) and current["reserved_usd"] == dollars(0)
    assert await counter(services, budget) == {
        "spent_picos": ACTUAL,
        "reserved_picos": 0,
        "calls": 1,
    }


async def test_a_settlement_that_fails_after_the_reply_leaves_the_call_to_the_sweeper(
    services: Services, client: httpx.AsyncClient, api: Api, clock: MutableClock
) -> None:
    session = await api.session(project="ledger")
    budget = await add_budget(
        services, scope_kind="project", scope_value="ledger", limit_picos=PICOS
    )
    assert services.ledger is not None
    writer = services.ledger._writer
    write = writer._write

    async def failing(items: list[Any]) -> None:
        if any(isinstance(i, tuple) for i in items):  # an ended call (``writer.Ended``)
            raise StoreUnavailable("the store went away")
        await write(items)

    writer._write = failing  # type: ignore[method-assign]
    reply = await chat(client, session["key"]["token"])
    assert reply.status_code == 200, reply.text  # the client had its answer
    assert await rows(services) == [] and await reservations(services) == 1
    writer._write = write  # type: ignore[method-assign]
    clock.advance(seconds=services.settings.gateway.reservation_ttl_seconds + 1)
    assert await services.ledger.sweep() == 1  # counted at its worst case, marked estimated
    [orphan] = await rows(services)
    assert orphan["request_id"] == reply.headers["x-request-id"]
    assert orphan["estimated"] == 1 and orphan["cost_picos"] == WORST
    assert await counter(services, budget) == {
        "spent_picos": WORST,
        "reserved_picos": 0,
        "calls": 1,
    }


async def test_a_call_that_is_never_forwarded_gives_its_reservation_back(
    services: Services, client: httpx.AsyncClient, api: Api
) -> None:
    session = await api.session(project="ledger")
    budget = await add_budget(
        services, scope_kind="project", scope_value="ledger", limit_picos=PICOS
    )
    reply = await client.post(
        "/v1/embeddings",
        json={"model": "nowhere", "input": "x" * 4000},
        headers=bearer(session["key"]["token"]),
    )
    assert reply.status_code == 503 and reply.json()["error"]["code"] == "model_unavailable"
    assert await reservations(services) == 0
    assert await counter(services, budget) == {"spent_picos": 0, "reserved_picos": 0, "calls": 0}
    assert await rows(services) == []


async def test_an_unreadable_budget_store_refuses_the_call(
    services: Services, client: httpx.AsyncClient, api: Api
) -> None:
    if services.store.dialect != "sqlite":
        pytest.skip("drops a table: only in a database of the test's own (SQLite)")
    session = await api.session(project="ledger")
    await add_budget(services, scope_kind="project", scope_value="ledger", limit_picos=PICOS)
    async with services.store.write() as conn:  # drop the table: the budgets cannot be read
        await conn.exec_driver_sql("DROP TABLE budget_counters")
    reply = await chat(client, session["key"]["token"])
    assert reply.status_code == 503 and reply.json()["error"]["code"] == "store_unavailable"
    assert await rows(services) == []


async def test_a_call_under_no_budget_that_cannot_be_reserved_is_refused(
    services: Services, client: httpx.AsyncClient, api: Api
) -> None:
    """No budget applies, yet the call is reserved before it is forwarded (so that a crash
    cannot lose it): a store where that cannot be written refuses the call, and nothing is
    recorded."""
    if services.store.dialect != "sqlite":
        pytest.skip("drops a table: only in a database of the test's own (SQLite)")
    session = await api.session(project="ledger")
    assert (await chat(client, session["key"]["token"])).status_code == 200
    assert len(await rows(services)) == 1  # settled (and its reservation gone) before the drop
    async with services.store.write() as conn:
        await conn.exec_driver_sql("DROP TABLE budget_reservations")
    reply = await chat(client, session["key"]["token"])
    assert reply.status_code == 503 and reply.json()["error"]["code"] == "store_unavailable"
    assert len(await rows(services)) == 1  # no row of the refused call


async def _project_budget(
    services: Services, api: Api, limit_picos: int
) -> tuple[Ledger, str, tuple[Budget, ...]]:
    """A session of project ``ledger`` with a hard budget on the project: the ledger, the
    budget's id, and the budgets the session's calls count against."""
    session = await api.session(project="ledger")
    budget = await add_budget(
        services, scope_kind="project", scope_value="ledger", limit_picos=limit_picos
    )
    ledger = services.ledger
    assert ledger is not None
    applicable = await ledger.book.applicable(
        await services.authenticator.authenticate(bearer(session["key"]["token"]))
    )
    return ledger, budget, applicable


def count_ticks(ledger: Ledger) -> list[int]:
    """From now on, the number of items of each tick ``ledger``'s writer writes."""
    ticks: list[int] = []
    write = ledger._writer._write

    async def counted(items: list[Any]) -> None:
        ticks.append(len(items))
        await write(items)

    ledger._writer._write = counted  # type: ignore[method-assign]
    return ticks


def of(row: dict[str, Any]) -> CallContext:
    """What a reservation keeps of the call whose usage row is ``row``."""
    return CallContext.of_row(row)


async def _usage_row(services: Services, request_id: str, cost: int) -> dict[str, Any]:
    """A usage row as the gateway writes it, for a session call."""
    return {
        "request_id": request_id,
        "org_id": services.root_org_id,
        "session_id": await _only_session(services),
        "key_id": None,
        "user_id": None,
        "team_id": None,
        "project": "ledger",
        "repository": None,
        "labels": "{}",
        "skills": "[]",
        "plugins": "[]",
        "client_session": None,
        "endpoint": "/v1/chat/completions",
        "model_alias": "demo",
        "downgraded_from": None,
        "deployment": None,
        "upstream_model": None,
        "stream": 0,
        "input_tokens": 1,
        "output_tokens": 1,
        "cache_read_tokens": 0,
        "cache_write_tokens": 0,
        "reasoning_tokens": 0,
        "cost_picos": cost,
        "price_version": None,
        "status": "ok",
        "http_status": 200,
        "error": None,
        "retries": 0,
        "estimated": 0,
        "ttfb_ms": 1,
        "latency_ms": 2,
        "created_at": services.clock.now(),
    }


async def _only_session(services: Services) -> str:
    async with services.store.read() as conn:
        return str(await conn.scalar(select(agent_sessions.c.id).limit(1)))


async def test_a_live_call_keeps_its_reservation_and_a_dead_one_is_swept(
    services: Services, api: Api, clock: MutableClock
) -> None:
    session = await api.session(project="ledger")
    await add_budget(services, scope_kind="project", scope_value="ledger", limit_picos=PICOS)
    assert services.ledger is not None
    ledger = services.ledger
    applicable = await ledger.book.applicable(
        await services.authenticator.authenticate(bearer(session["key"]["token"]))
    )
    ttl = services.settings.gateway.reservation_ttl_seconds
    await ledger.reserve(applicable, "req_live", 10, of(await _usage_row(services, "req_live", 0)))
    await ledger.reserve(applicable, "req_dead", 10, of(await _usage_row(services, "req_dead", 0)))
    ledger.forget("req_dead")  # as if its process had stopped renewing it
    clock.advance(seconds=ttl * 0.9)
    assert await ledger.keep_alive() == 1
    clock.advance(seconds=ttl * 0.2)  # past both first expiries; the live one was renewed
    assert await ledger.sweep() == 1
    assert [r["request_id"] for r in await rows(services)] == ["req_dead"]
    assert await reservations(services) == 1


async def test_a_budget_deleted_behind_the_cache_does_not_fail_calls(
    services: Services, client: httpx.AsyncClient, api: Api
) -> None:
    session = await api.session(project="ledger")
    key = session["key"]["token"]
    budget = await add_budget(services, scope_kind="project", scope_value="ledger", limit_picos=1)
    assert (await chat(client, key)).status_code == 402  # cached, and enforced
    async with services.store.write() as conn:  # gone, with no invalidation: still cached
        await conn.execute(budgets.delete().where(budgets.c.id == budget))
    reply = await chat(client, key)
    assert reply.status_code == 200, reply.text
    assert await reservations(services) == 0 and len(await rows(services)) == 1


async def test_settlements_are_held_and_written_together_on_sqlite_and_at_once_on_postgres(
    services: Services, api: Api
) -> None:
    """On SQLite a tick costs the event loop's own CPU, and much the same for 16 usage rows as
    for 64 (the pages of the table and its indexes): settlements are held and written together;
    on PostgreSQL each wakes the writer at once. Either way a read of spend waits for them."""
    ledger, budget, applicable = await _project_budget(services, api, PICOS)
    rows_of = {rid: await _usage_row(services, rid, 5) for rid in ("req_s1", "req_s2", "req_s3")}
    held = {rid: await ledger.reserve(applicable, rid, 10, of(row)) for rid, row in rows_of.items()}
    ticks = count_ticks(ledger)
    ledger.settle(rows_of["req_s1"], held["req_s1"])
    ledger.settle(rows_of["req_s2"], held["req_s2"])
    await ledger.reserve(applicable, "req_s4", 10, of(await _usage_row(services, "req_s4", 0)))
    if services.store.dialect == "postgresql":
        assert sum(ticks) == 3  # both settlements written by the time the reservation was
    else:
        assert ticks == [1]  # the reservation alone: the settlements are held
    assert await counter(services, budget) == {"spent_picos": 10, "reserved_picos": 20, "calls": 2}
    assert sum(ticks) == 3
