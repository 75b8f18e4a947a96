"""Reservation contexts (``budgets/contexts.py``): what calls alike share is written once, kept
while used, swept once nobody needs it, and lets the sweeper write an orphan's whole row."""

from __future__ import annotations

import logging
from datetime import UTC, datetime, timedelta

import httpx
import pytest
from sqlalchemy import select

from pilothouse.budgets.contexts import (
    KEEP_SECONDS,
    PRINCIPAL_FIELDS,
    REFRESH_SECONDS,
    CallContext,
    created_at,
    read,
)
from pilothouse.budgets.ledger import Ledger
from pilothouse.budgets.model import Window, epoch, window_start
from pilothouse.budgets.tables import budget_contexts, budget_reservations
from pilothouse.gateway.exchange import principal_fields
from pilothouse.services import Services
from tests.budgets.test_ledger import (
    PICOS,
    _project_budget,
    _usage_row,
    add_budget,
    chat,
    counter,
    of,
    rows,
)
from tests.conftest import Api, MutableClock, bearer


async def contexts(services: Services) -> list[tuple[str, str, int]]:
    await services.usage_settled()
    async with services.store.read() as conn:
        found = await conn.execute(select(budget_contexts).order_by(budget_contexts.c.id))
        return [(r.id, r.body, r.seen_at) for r in found]


async def reservation_rows(services: Services) -> list[dict[str, object]]:
    async with services.store.read() as conn:
        found = await conn.execute(select(budget_reservations))
        return [dict(r) for r in found.mappings()]


async def test_calls_alike_share_one_context_and_each_reservation_row_only_names_it(
    services: Services, api: Api
) -> None:
    ledger, _, applicable = await _project_budget(services, api, PICOS)
    row = await _usage_row(services, "req_c1", 0)
    call = of(row)  # one principal's calls: one mapping of its fields, as the gateway has
    for request_id in ("req_c1", "req_c2", "req_c3"):
        await ledger.reserve(applicable, request_id, 10, call)
    [(context_id, body, _)] = await contexts(services)
    held = await reservation_rows(services)
    assert sorted(r["request_id"] for r in held) == ["req_c1", "req_c2", "req_c3"]
    assert {r["context_id"] for r in held} == {context_id}
    assert set(held[0]) == {
        "request_id",
        "amount_picos",
        "context_id",
        "rate_charges",
        "created_us",
        "expires_at",
    }
    charges, fields = read(body)
    assert charges == [(b.id, _window(services)) for b in applicable]
    assert fields == {
        **{name: row[name] for name in PRINCIPAL_FIELDS},
        "client_session": None,
        "endpoint": "/v1/chat/completions",
        "model_alias": "demo",
        "downgraded_from": None,
        "stream": 0,
    }
    # A call of another shape (streamed) is another context.
    await ledger.reserve(applicable, "req_c4", 10, of({**row, "stream": 1}))
    assert len(await contexts(services)) == 2


def _window(services: Services) -> int:
    return epoch(window_start(Window.DAY, services.clock.now()))


async def test_the_same_context_made_twice_is_one_row_with_one_key(
    services: Services, api: Api
) -> None:
    """Contexts are keyed by a hash of their JSON: two ledgers (two replicas) making the same
    context make the same key, and writing it twice leaves one row."""
    ledger, _, applicable = await _project_budget(services, api, PICOS)
    other = Ledger(services.store, services.clock, ledger.book, 120)
    other.start()
    try:
        await ledger.reserve(applicable, "req_r1", 10, of(await _usage_row(services, "req_r1", 0)))
        await other.reserve(applicable, "req_r2", 10, of(await _usage_row(services, "req_r2", 0)))
    finally:
        await other.stop()
    assert len(await contexts(services)) == 1
    assert len({r["context_id"] for r in await reservation_rows(services)}) == 1


async def test_a_context_in_use_is_written_again_each_hour_and_kept(
    services: Services, api: Api, clock: MutableClock
) -> None:
    # The hour must not cross UTC midnight: a new day is a new window, so new counters and a
    # context of their own (the test failed when run between 23:00 and 00:00 UTC).
    tomorrow = (clock.now() + timedelta(days=1)).replace(hour=1, minute=0, second=0)
    clock.advance(seconds=(tomorrow - clock.now()).total_seconds())
    ledger, _, applicable = await _project_budget(services, api, PICOS)
    call = of(await _usage_row(services, "req_h0", 0))
    await ledger.reserve(applicable, "req_h0", 10, call)
    [(_, _, first)] = await contexts(services)
    clock.advance(seconds=REFRESH_SECONDS - 5)
    await ledger.reserve(applicable, "req_h1", 10, call)
    assert [c[2] for c in await contexts(services)] == [first]  # written within the hour
    clock.advance(seconds=10)
    await ledger.reserve(applicable, "req_h2", 10, call)
    assert [c[2] for c in await contexts(services)] == [first + REFRESH_SECONDS + 5]


async def test_the_sweeper_deletes_a_context_only_once_unused_and_a_day_old(
    services: Services, api: Api, clock: MutableClock
) -> None:
    ledger, _, applicable = await _project_budget(services, api, PICOS)
    kept = await _usage_row(services, "req_k", 0)
    gone = await _usage_row(services, "req_g", 0)
    held = await ledger.reserve(applicable, "req_k", 10, of(kept))
    done = await ledger.reserve(applicable, "req_g", 10, of({**gone, "model_alias": "other"}))
    await ledger.record({**gone, "model_alias": "other"}, done)  # its context is unused now
    ledger.forget("req_g")
    clock.advance(seconds=KEEP_SECONDS - 10)
    await ledger.keep_alive()  # req_k is still in flight here
    await ledger.sweep()
    assert len(await contexts(services)) == 2  # neither is a day old
    clock.advance(seconds=20)
    await ledger.keep_alive()
    await ledger.sweep()
    # A day old: the unused one is deleted, the one req_k's reservation names is kept.
    [(context_id, _, _)] = await contexts(services)
    assert [r["context_id"] for r in await reservation_rows(services)] == [context_id]
    await ledger.record(kept, held)
    ledger.forget("req_k")
    await ledger.sweep()
    assert await contexts(services) == []


async def test_an_orphan_s_row_is_written_from_its_context_and_its_time(
    services: Services, client: httpx.AsyncClient, api: Api, clock: MutableClock
) -> None:
    """Through the gateway: the sweeper's row for a call whose process stopped has the
    attribution, endpoint, model and time the call's own row would have had."""
    session = await api.session(project="ledger", repository="acme/api", labels={"team": "x"})
    await add_budget(services, scope_kind="project", scope_value="ledger", limit_picos=PICOS)
    assert (await chat(client, session["key"]["token"])).status_code == 200
    [settled] = await rows(services)
    ledger = services.ledger
    assert ledger is not None
    principal = await services.authenticator.authenticate(bearer(session["key"]["token"]))
    call = CallContext(principal_fields(principal), None, "/v1/chat/completions", "demo", None, 0)
    applicable = await ledger.book.applicable(principal)
    reserved_at = clock.now()
    await ledger.reserve(applicable, "req_orphaned", 5000, call)
    ledger.forget("req_orphaned")  # as if its process had stopped: nobody renews it
    clock.advance(seconds=services.settings.gateway.reservation_ttl_seconds + 1)
    assert await ledger.sweep() == 1
    orphan = next(r for r in await rows(services) if r["request_id"] == "req_orphaned")
    same = (*PRINCIPAL_FIELDS, "endpoint", "model_alias", "client_session", "downgraded_from")
    assert {k: orphan[k] for k in same} == {k: settled[k] for k in same}
    assert orphan["created_at"] == reserved_at
    assert orphan["status"] == "orphaned" and orphan["cost_picos"] == 5000


async def test_a_reservation_whose_context_is_gone_is_left_counted_and_logged(
    services: Services, api: Api, clock: MutableClock, caplog: pytest.LogCaptureFixture
) -> None:
    """Never made by the sweeper's own rules; should it happen, the reservation stays, still
    counting its worst case (without the context its counters are not known), and is said."""
    ledger, budget, applicable = await _project_budget(services, api, PICOS)
    await ledger.reserve(applicable, "req_lost", 700, of(await _usage_row(services, "req_lost", 0)))
    ledger.forget("req_lost")
    async with services.store.write() as conn:
        await conn.execute(budget_contexts.delete())
    clock.advance(seconds=services.settings.gateway.reservation_ttl_seconds + 1)
    with caplog.at_level(logging.ERROR, logger="pilothouse.budgets.ledger"):
        assert await ledger.sweep() == 0
    assert "name a context that is gone" in caplog.text
    assert len(await reservation_rows(services)) == 1
    assert await counter(services, budget) == {"spent_picos": 0, "reserved_picos": 700, "calls": 0}


def test_the_context_keeps_every_field_the_principal_decides() -> None:
    """``CallContext.of_row`` and the sweeper take exactly the fields the gateway fills in
    from a principal (``gateway.exchange.principal_fields``)."""
    from pilothouse.identity.principal import KeyKind, Principal

    fields = principal_fields(Principal("org_1", "key_1", KeyKind.SERVICE, "phs_1"))
    assert tuple(fields) == PRINCIPAL_FIELDS


def test_a_reservation_s_time_is_exact_to_the_microsecond() -> None:
    moment = datetime(2026, 12, 6, 9, 30, 1, 999_999, tzinfo=UTC)
    micros = int(moment.timestamp()) * 1_000_000 + moment.microsecond
    assert created_at(micros) == moment
