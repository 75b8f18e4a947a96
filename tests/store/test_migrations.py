"""Migrations run forward and back on SQLite and PostgreSQL, and match the tables in code."""

from __future__ import annotations

import asyncio
import json
import os
import uuid
from collections.abc import AsyncIterator, Iterator
from datetime import UTC, datetime
from pathlib import Path

import pytest
from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext
from sqlalchemy import Connection, inspect, text
from sqlalchemy.engine import make_url

from pilothouse.budgets.contexts import created_at, read
from pilothouse.store import migrate
from pilothouse.store.engine import Store
from pilothouse.store.schema import metadata
from tests.conftest import PG_ENV, _pg_create, _pg_drop


@pytest.fixture(params=["sqlite", "postgresql"])
def empty_url(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    """An empty database on each engine."""
    if request.param == "sqlite":
        yield f"sqlite+aiosqlite:///{tmp_path / 'empty.db'}"
        return
    admin = os.environ.get(PG_ENV)
    if not admin:
        pytest.skip(f"PostgreSQL tests need {PG_ENV} (set by .ci/run)")
    from pilothouse.settings import normalise_database_url

    admin = normalise_database_url(admin)
    name = f"pilothouse_mig_{uuid.uuid4().hex[:10]}"
    asyncio.run(_pg_create(admin, name))
    yield make_url(admin).set(database=name).render_as_string(hide_password=False)
    asyncio.run(_pg_drop(admin, name))


@pytest.fixture
async def store(empty_url: str) -> AsyncIterator[Store]:
    """A Store on the empty database."""
    s = Store(empty_url)
    yield s
    await s.dispose()


def _tables(conn: Connection) -> set[str]:
    return set(inspect(conn).get_table_names()) - {"alembic_version"}


def _diff(conn: Connection) -> list[object]:
    return list(compare_metadata(MigrationContext.configure(conn), metadata))


async def test_upgrade_creates_every_table_and_reaches_head(store: Store) -> None:
    assert await migrate.current_revision(store) is None
    await migrate.upgrade(store)
    assert await migrate.current_revision(store) == migrate.head_revision()
    async with store.read() as conn:
        assert await conn.run_sync(_tables) == set(metadata.tables)


async def test_migrations_match_the_tables_defined_in_code(store: Store) -> None:
    await migrate.upgrade(store)
    async with store.read() as conn:
        assert await conn.run_sync(_diff) == []


async def test_downgrade_to_base_removes_everything_and_upgrade_again_works(store: Store) -> None:
    await migrate.upgrade(store)
    await migrate.downgrade(store, "base")
    async with store.read() as conn:
        assert await conn.run_sync(_tables) == set()
    await migrate.upgrade(store)
    assert await migrate.current_revision(store) == migrate.head_revision()


async def test_upgrade_twice_is_a_no_op(store: Store) -> None:
    await migrate.upgrade(store)
    await migrate.upgrade(store)
    assert await migrate.current_revision(store) == migrate.head_revision()


async def test_reservations_in_flight_survive_the_narrowing_both_ways(store: Store) -> None:
    """0005 keeps reservation rows: the expiry becomes epoch seconds, and back."""
    await migrate.upgrade(store, "0004")
    async with store.write() as conn:
        org = await conn.scalar(text("SELECT id FROM organizations LIMIT 1"))
        if org is None:
            org = "org_mig"
            await conn.execute(
                text(
                    "INSERT INTO organizations (id, name, is_root, created_at)"
                    " VALUES (:id, 'mig', :root, :t)"
                ),
                {"id": org, "root": False, "t": datetime(2026, 11, 24, tzinfo=UTC)},
            )
        await conn.execute(
            text(
                "INSERT INTO budget_reservations (request_id, org_id, amount_picos, charges,"
                " rate_charges, usage_row, expires_at, created_at)"
                " VALUES ('req_mig', :org, 7, '[]', '[]', :row, :expires, :expires)"
            ),
            {
                "org": org,
                "row": f'{{"org_id": "{org}"}}',
                "expires": datetime(2026, 11, 24, 12, 30, 5, tzinfo=UTC),
            },
        )
    await migrate.upgrade(store)
    async with store.read() as conn:
        found = (
            await conn.execute(
                text("SELECT request_id, amount_picos, expires_at FROM budget_reservations")
            )
        ).all()
    assert [tuple(r) for r in found] == [("req_mig", 7, 1795523405)]  # 2026-11-24 12:30:05 UTC
    await migrate.downgrade(store, "0004")
    async with store.read() as conn:
        back = (
            await conn.execute(text("SELECT org_id, expires_at FROM budget_reservations"))
        ).one()
    assert back[0] == org
    expires = back[1] if isinstance(back[1], datetime) else datetime.fromisoformat(back[1])
    assert expires.replace(tzinfo=UTC) == datetime(2026, 11, 24, 12, 30, 5, tzinfo=UTC)


async def test_reservations_in_flight_get_a_context_and_give_it_back(store: Store) -> None:
    """0006 moves a reservation's counters and usage-row fields into a context the row names
    (its time kept to the microsecond), and back."""
    await migrate.upgrade(store, "0005")
    held = {
        "request_id": "req_ctx",
        "org_id": "org_mig",
        "session_id": "ses_1",
        "project": "ledger",
        "endpoint": "/v1/messages",
        "model_alias": "claude-x",
        "stream": 1,
        "created_at": "2026-12-06T09:00:00.250000+00:00",
    }
    charges = [["bud_1", 1764979200], ["bud_2", 0]]
    async with store.write() as conn:
        await conn.execute(
            text(
                "INSERT INTO budget_reservations (request_id, amount_picos, charges,"
                " rate_charges, usage_row, expires_at)"
                " VALUES ('req_ctx', 9, :charges, '[]', :row, 1795523405)"
            ),
            {"charges": json.dumps(charges), "row": json.dumps(held)},
        )
    await migrate.upgrade(store)
    async with store.read() as conn:
        row = (await conn.execute(text("SELECT * FROM budget_reservations"))).mappings().one()
        body = await conn.scalar(
            text("SELECT body FROM budget_contexts WHERE id = :id"), {"id": row["context_id"]}
        )
    assert (row["request_id"], row["amount_picos"], row["expires_at"]) == ("req_ctx", 9, 1795523405)
    assert created_at(row["created_us"]) == datetime(2026, 12, 6, 9, 0, 0, 250_000, tzinfo=UTC)
    kept, fields = read(body)
    assert kept == [("bud_1", 1764979200), ("bud_2", 0)]
    assert fields == {k: v for k, v in held.items() if k not in ("request_id", "created_at")}
    await migrate.downgrade(store, "0005")
    async with store.read() as conn:
        back = (
            await conn.execute(text("SELECT charges, usage_row FROM budget_reservations"))
        ).one()
    assert json.loads(back[0]) == charges
    assert json.loads(back[1]) == held
