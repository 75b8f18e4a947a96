"""Helpers for the admin API acceptance tests: store snapshots and audit counts."""

from __future__ import annotations

from collections import Counter
from typing import Any

from sqlalchemy import select

from pilothouse.audit.tables import audit_events
from pilothouse.store.engine import Store
from pilothouse.store.schema import metadata

AUDIT_TABLES = frozenset({"audit_events", "audit_heads"})
"""Left out of snapshots: refused requests are audited on purpose."""
BACKGROUND_TABLES = AUDIT_TABLES | {"usage_rollups"}
"""Left out of snapshots: the audit log, and the roll-ups a background pass writes."""

VOLATILE_COLUMNS = frozenset({("api_keys", "last_used_at"), ("usage_records", "rolled_up")})
"""Left out of snapshots: written in the background (a key's last use, the roll-up pass)."""

Snapshot = dict[str, list[tuple[Any, ...]]]


async def store_snapshot(store: Store) -> Snapshot:
    """Every row of every table but the audit log, in a stable order."""
    snapshot: Snapshot = {}
    async with store.read() as conn:
        for table in metadata.sorted_tables:
            if table.name in BACKGROUND_TABLES:
                continue
            columns = [c for c in table.columns if (table.name, c.name) not in VOLATILE_COLUMNS]
            rows = (await conn.execute(select(*columns))).all()
            snapshot[table.name] = sorted((tuple(r) for r in rows), key=repr)
    return snapshot


async def audit_counts(store: Store) -> Counter[str]:
    """How many audit events of each action the store holds, across organizations."""
    async with store.read() as conn:
        actions = (await conn.execute(select(audit_events.c.action))).scalars().all()
    return Counter(actions)
