"""Tampering with any audit row (edit, delete, swap, truncate) fails verification, named."""

from __future__ import annotations

from typing import Any

import pytest
from sqlalchemy import delete, insert, select, text, update
from sqlalchemy.exc import DBAPIError

from pilothouse.audit import chain
from pilothouse.audit.tables import audit_events, audit_heads
from pilothouse.services import Services
from tests.conftest import Api


async def _make_events(api: Api, count: int) -> None:
    for i in range(count):
        await api.ok("POST", "/api/v1/teams", json={"name": f"team-{i}"})


async def _verify(api: Api, checkpoint: str | None = None) -> dict[str, Any]:
    params = {"checkpoint": checkpoint} if checkpoint else None
    result: dict[str, Any] = await api.ok("GET", "/api/v1/audit/verify", params=params)
    return result


async def _rows(services: Services) -> list[dict[str, Any]]:
    async with services.store.read() as conn:
        rows = await conn.execute(select(audit_events).order_by(audit_events.c.seq))
        return [dict(r) for r in rows.mappings()]


async def _raw(services: Services, *statements: Any) -> None:
    """Run statements as someone with direct database access, append-only triggers disabled."""
    async with services.store.write() as conn:
        if services.store.dialect == "postgresql":
            await conn.execute(text("ALTER TABLE audit_events DISABLE TRIGGER USER"))
        else:
            await conn.execute(text("DROP TRIGGER IF EXISTS audit_events_no_update"))
            await conn.execute(text("DROP TRIGGER IF EXISTS audit_events_no_delete"))
        for statement in statements:
            await conn.execute(statement)
        if services.store.dialect == "postgresql":
            await conn.execute(text("ALTER TABLE audit_events ENABLE TRIGGER USER"))


async def test_an_untouched_chain_verifies(api: Api, services: Services) -> None:
    await _make_events(api, 4)
    result = await _verify(api)
    assert result["ok"] is True
    assert result["checked"] == len(await _rows(services)) == result["head_seq"]
    assert result["first_break"] is None


async def test_editing_any_event_is_reported_at_that_event(api: Api, services: Services) -> None:
    await _make_events(api, 4)
    for row in await _rows(services):
        await _raw(
            services,
            update(audit_events)
            .where(audit_events.c.id == row["id"])
            .values(details='{"name":"forged"}'),
        )
        result = await _verify(api)
        assert result["ok"] is False
        assert result["first_break"]["seq"] == row["seq"]
        assert result["first_break"]["event_id"] == row["id"]
        assert result["first_break"]["kind"] == "altered"
        assert row["id"] in result["first_break"]["message"]
        await _raw(
            services,
            update(audit_events)
            .where(audit_events.c.id == row["id"])
            .values(details=row["details"]),
        )
        assert (await _verify(api))["ok"] is True


async def test_deleting_any_event_is_reported_at_its_place(api: Api, services: Services) -> None:
    await _make_events(api, 4)
    rows = await _rows(services)
    for row in rows:
        await _raw(services, delete(audit_events).where(audit_events.c.id == row["id"]))
        result = await _verify(api)
        assert result["ok"] is False
        assert result["first_break"]["seq"] == row["seq"]
        expected = "truncated" if row is rows[-1] else "missing"
        assert result["first_break"]["kind"] == expected
        assert str(row["seq"]) in result["first_break"]["message"]
        await _raw(services, insert(audit_events).values(**row))
        assert (await _verify(api))["ok"] is True


async def test_swapping_two_events_is_reported_at_the_first(api: Api, services: Services) -> None:
    await _make_events(api, 4)
    rows = await _rows(services)
    first, second = rows[1], rows[3]
    await _raw(
        services,
        update(audit_events).where(audit_events.c.id == first["id"]).values(seq=-1),
        update(audit_events).where(audit_events.c.id == second["id"]).values(seq=first["seq"]),
        update(audit_events).where(audit_events.c.id == first["id"]).values(seq=second["seq"]),
    )
    result = await _verify(api)
    assert result["ok"] is False
    assert result["first_break"]["seq"] == first["seq"]
    assert result["first_break"]["event_id"] == second["id"]


async def test_an_edit_with_a_recomputed_hash_breaks_the_next_link(
    api: Api, services: Services
) -> None:
    await _make_events(api, 3)
    rows = await _rows(services)
    victim, successor = rows[1], rows[2]
    forged = {**victim, "details": '{"name":"forged"}'}
    forged["hash"] = chain.event_hash(forged)
    await _raw(
        services,
        update(audit_events)
        .where(audit_events.c.id == victim["id"])
        .values(details=forged["details"], hash=forged["hash"]),
    )
    result = await _verify(api)
    assert result["ok"] is False
    assert result["first_break"]["seq"] == successor["seq"]
    assert result["first_break"]["kind"] == "relinked"


async def test_a_checkpoint_catches_a_rewritten_tail(api: Api, services: Services) -> None:
    await _make_events(api, 3)
    pinned = await _verify(api)
    checkpoint = f"{pinned['head_seq']}:{pinned['head_hash']}"
    rows = await _rows(services)
    # Rewrite the last event and its head consistently: only the checkpoint can tell.
    last = {**rows[-1], "details": '{"name":"forged"}'}
    last["hash"] = chain.event_hash(last)
    await _raw(
        services,
        update(audit_events)
        .where(audit_events.c.id == last["id"])
        .values(details=last["details"], hash=last["hash"]),
        update(audit_heads).where(audit_heads.c.org_id == last["org_id"]).values(hash=last["hash"]),
    )
    assert (await _verify(api))["ok"] is True
    result = await _verify(api, checkpoint)
    assert result["ok"] is False
    assert result["first_break"]["kind"] == "checkpoint"
    assert result["first_break"]["event_id"] == last["id"]


async def test_the_database_refuses_to_update_or_delete_audit_rows(
    api: Api, services: Services
) -> None:
    await _make_events(api, 1)
    row = (await _rows(services))[0]
    for statement in (
        update(audit_events).where(audit_events.c.id == row["id"]).values(outcome="forged"),
        delete(audit_events).where(audit_events.c.id == row["id"]),
    ):
        with pytest.raises(DBAPIError, match="append-only"):
            async with services.store.write() as conn:
                await conn.execute(statement)
    assert (await _rows(services))[0] == row


async def test_a_malformed_checkpoint_is_refused(api: Api) -> None:
    response = await api.call("GET", "/api/v1/audit/verify", params={"checkpoint": "x:y"})
    assert response.status_code == 422
    assert response.json()["error"]["code"] == "validation_error"
    assert "SEQ:HASH" in response.json()["error"]["message"]
