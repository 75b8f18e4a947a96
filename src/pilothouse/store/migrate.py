"""Alembic migrations, run programmatically on SQLite and PostgreSQL."""

from __future__ import annotations

import functools
import logging

from alembic import command
from alembic.config import Config
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy import Connection, text
from sqlalchemy.ext.asyncio import AsyncConnection

from pilothouse.store.engine import Store

log = logging.getLogger(__name__)

# Any fixed number: replicas starting together take turns to migrate and bootstrap.
_STARTUP_LOCK = 7_450_001


def alembic_config(connection: Connection | None = None) -> Config:
    """An Alembic Config pointing at the packaged migration scripts."""
    config = Config()
    config.set_main_option("script_location", "pilothouse.store:migrations")
    if connection is not None:
        config.attributes["connection"] = connection
    return config


@functools.cache
def head_revision() -> str:
    """The newest migration the code knows."""
    head = ScriptDirectory.from_config(alembic_config()).get_current_head()
    assert head is not None
    return head


def _current(connection: Connection) -> str | None:
    return MigrationContext.configure(connection).get_current_revision()


async def current_revision(store: Store) -> str | None:
    """The migration the database is at (None for an empty database)."""
    async with store.read() as conn:
        return await conn.run_sync(_current)


async def hold_startup_lock(store: Store, conn: AsyncConnection) -> None:
    """Serialise replicas' start-up steps (migrate, bootstrap) until ``conn`` commits."""
    if store.dialect == "postgresql":
        await conn.execute(text("SELECT pg_advisory_xact_lock(:k)"), {"k": _STARTUP_LOCK})


async def upgrade(store: Store, revision: str = "head") -> None:
    """Bring the database to ``revision``; replicas serialise on an advisory lock."""
    async with store.write() as conn:
        await hold_startup_lock(store, conn)
        before = await conn.run_sync(_current)
        await conn.run_sync(lambda c: command.upgrade(alembic_config(c), revision))
        after = await conn.run_sync(_current)
    if before != after:
        log.info("store migrated from %s to %s", before or "empty", after)


async def downgrade(store: Store, revision: str) -> None:
    """Take the database back to ``revision`` (``base`` empties it)."""
    async with store.write() as conn:
        await conn.run_sync(lambda c: command.downgrade(alembic_config(c), revision))
