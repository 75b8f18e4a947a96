"""Roll-ups: each UTC day's usage rows summed by attribution, so spend over months reads
thousands of rows instead of millions.

What makes them exact, however late a row arrives:

- A usage row is written unsummed (``rolled_up`` NULL; the writers leave the column out). The
  roll-up takes unsummed rows in batches and, in one transaction, adds each batch's sums to
  ``usage_rollups`` (one row per organization, UTC day and attribution) and marks the rows
  summed. A row is in the sums or unsummed, never both, never neither: a row the sweeper writes
  for a call of last week is summed into last week's day on the next pass, as any other.
- Spend reports (``gateway/spend.py``) read, in one statement (one snapshot): the roll-ups of
  the whole days in the window, the unsummed rows of those days, and the rows of the partial
  days at its ends. A report grouped or filtered by session reads rows only: the roll-ups
  leave the session out (one roll-up row per session would sum little), and a session's rows
  are found by their own index.
- Replicas roll up side by side: on PostgreSQL each batch takes its rows ``FOR UPDATE SKIP
  LOCKED`` (two passes never take the same row) and adds to roll-up rows in key order (two
  passes adding to the same rows queue instead of deadlocking); ``ON CONFLICT DO UPDATE`` adds
  to a row another pass made. On SQLite a batch holds the one write lock.

A batch is small (``BATCH`` rows, some milliseconds) because on SQLite the ledger's writer
waits for it; the pass runs every ``usage_rollup_seconds`` until nothing is left.

On SQLite the pass also keeps the planner's statistics of the tables the dashboard and reports
read (``refresh_statistics``, hourly). Without them SQLite takes every index's first column as
selective, so ``org_id = ? AND session_id = ?`` was read through the organization's index in
time order, every row of the organization, rather than the session's own (a session's page
took 350 ms with a million rows). PostgreSQL's autovacuum keeps its own statistics.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import orjson
from sqlalchemy import select, update
from sqlalchemy.dialects import postgresql, sqlite

from pilothouse.budgets.model import Window, window_start
from pilothouse.gateway.tables import usage_records, usage_rollups
from pilothouse.store.engine import Store

BATCH = 2_000
COST_SPLIT = 1_000_000
"""Cost is summed as whole micro-dollars and the pico-dollars beyond them (as reports sum it)."""
ATTRIBUTION = (
    "key_id",
    "user_id",
    "team_id",
    "project",
    "repository",
    "labels",
    "skills",
    "plugins",
    "endpoint",
    "model_alias",
    "deployment",
    "status",
)
"""The columns a roll-up row keeps of its usage rows: all who, what and how but the session."""
COUNTERS = (
    "input_tokens",
    "output_tokens",
    "cache_read_tokens",
    "cache_write_tokens",
    "reasoning_tokens",
)
SUMS = ("calls", *COUNTERS, "cost_micros", "cost_picos_rest")
DAY = Window.DAY
"""A roll-up's period: ``window_start(DAY, moment)`` is the UTC midnight it starts at."""

u = usage_records.c
r = usage_rollups.c


def attribution_digest(values: Sequence[Any]) -> str:
    """The roll-up key of an attribution: SHA-256 of its values as JSON (NULLs included)."""
    return hashlib.sha256(orjson.dumps(list(values))).hexdigest()


ANALYZED_TABLES = ("usage_records", "usage_rollups", "audit_events", "agent_sessions")
"""The tables read by filters the planner must weigh; the ledger's own tables are left out (its
statements find rows by key, and a table caught empty must not be planned as a scan)."""
ANALYSIS_LIMIT = 1_000
"""Rows of each index ``ANALYZE`` samples: estimates good enough to choose an index by, in
milliseconds however large the table."""


async def refresh_statistics(store: Store) -> None:
    """SQLite: sample the tables reports read for the query planner (PostgreSQL: nothing)."""
    if store.dialect != "sqlite":
        return
    async with store.write() as conn:
        await conn.exec_driver_sql(f"PRAGMA analysis_limit={ANALYSIS_LIMIT}")
        for table in ANALYZED_TABLES:
            await conn.exec_driver_sql(f"ANALYZE {table}")


@dataclass(slots=True)
class _Rollup:
    """One roll-up row being summed: its attribution and running sums."""

    values: tuple[Any, ...]
    sums: list[int]


async def roll_up(
    store: Store, *, batch: int = BATCH, stopping: Callable[[], bool] = lambda: False
) -> int:
    """Sum every unsummed usage row into the roll-ups, a batch per transaction, until none is
    left or ``stopping()`` (asked before each batch: a server shutting down does not wait for
    a backlog); how many were summed."""
    total = 0
    while not stopping():
        taken = await _roll_up_batch(store, batch)
        total += taken
        if taken < batch:
            break
    return total


async def _roll_up_batch(store: Store, batch: int) -> int:
    postgres = store.dialect == "postgresql"
    taken = (
        select(u.request_id, u.org_id, u.created_at, *(u[c] for c in (*ATTRIBUTION, *COUNTERS)))
        .add_columns(u.cost_picos)
        .where(u.rolled_up.is_(None))
        .order_by(u.org_id, u.created_at)  # the partial index's order: read off it
        .limit(batch)
    )
    if postgres:
        taken = taken.with_for_update(skip_locked=True)
    async with store.write() as conn:
        rows = (await conn.execute(taken)).all()
        if not rows:
            return 0
        found: dict[tuple[str, datetime, str], _Rollup] = {}
        counted = len(ATTRIBUTION)
        for row in rows:
            values = tuple(row[3 : 3 + counted])
            key = (row[1], window_start(DAY, row[2]), attribution_digest(values))
            rollup = found.get(key)
            if rollup is None:
                rollup = found[key] = _Rollup(values, [0] * len(SUMS))
            sums = rollup.sums
            sums[0] += 1
            for i, amount in enumerate(row[3 + counted : 3 + counted + len(COUNTERS)], start=1):
                sums[i] += amount
            cost = row[-1]
            sums[-2] += cost // COST_SPLIT
            sums[-1] += cost % COST_SPLIT
        insert = postgresql.insert if postgres else sqlite.insert
        statement = insert(usage_rollups)
        statement = statement.on_conflict_do_update(
            index_elements=[r.org_id, r.day, r.attribution],
            set_={name: r[name] + statement.excluded[name] for name in SUMS},
        )
        await conn.execute(
            statement,
            [
                {
                    "org_id": org_id,
                    "day": day,
                    "attribution": digest,
                    **dict(zip(ATTRIBUTION, rollup.values, strict=True)),
                    **dict(zip(SUMS, rollup.sums, strict=True)),
                }
                for (org_id, day, digest), rollup in sorted(found.items())
            ],
        )
        await conn.execute(
            update(usage_records)
            .where(u.request_id.in_([row[0] for row in rows]))
            .values(rolled_up=1)
        )
    return len(rows)
