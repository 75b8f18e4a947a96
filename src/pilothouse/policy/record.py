"""Recording checks, group-committed: many checks' rows and audit events in one transaction.

A check is answered only after its ``policy_checks`` row and its ``policy.check`` audit event
are durable (nothing is lost if the process dies after answering). Writing them one transaction
per check would make checks wait on each other for the store's write lock; instead a check
queues its record and waits, and one writer takes everything queued, writes it in one
transaction (one chain-head read and write per organization, however many events), commits and
wakes every check it carried. Under load a transaction carries many checks; alone, a check
waits for its own transaction only. The transaction runs on the raw drivers, as the ledger's
(``store/bulk.py`` ``OwnWriter``: ``sqlite3`` on the loop's thread under the store's writer
queue, or an asyncpg connection of its own): through SQLAlchemy and aiosqlite's thread a lone
check's transaction cost about 1.5 ms of CPU (bench/README, *Checks*).

If the transaction fails, every check it carried is refused with the store's error (fail
closed: no check is answered that is not recorded).
"""

from __future__ import annotations

import asyncio
import logging
import sqlite3
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from pilothouse.audit import chain
from pilothouse.audit.tables import audit_events
from pilothouse.clock import Clock, to_micros
from pilothouse.errors import StoreUnavailable
from pilothouse.policy.tables import policy_checks
from pilothouse.store.bulk import OwnWriter, RowInsert, numbered
from pilothouse.store.engine import Store

log = logging.getLogger(__name__)

MAX_BATCH = 500
HEAD = "SELECT seq, hash FROM audit_heads WHERE org_id = ?"
MOVE_HEAD = "UPDATE audit_heads SET seq = ?, hash = ? WHERE org_id = ?"


@dataclass
class _Queued:
    org_id: str
    row: Mapping[str, Any] | None
    event: chain.Event
    done: asyncio.Future[None] = field(
        default_factory=lambda: asyncio.get_running_loop().create_future()
    )


class CheckRecorder:
    """Writes checks' rows and audit events, many to a transaction."""

    def __init__(self, store: Store, clock: Clock) -> None:
        self._store = store
        self._clock = clock
        self._writer = OwnWriter(store, "policy-checks")
        self._checks = RowInsert(store, policy_checks, key=None)
        self._events = RowInsert(store, audit_events, key=None)
        self._queue: list[_Queued] = []
        self._wake = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self._stopping = False

    async def record(self, org_id: str, row: Mapping[str, Any] | None, event: chain.Event) -> None:
        """Queue one check's row (or none: an audit event alone, such as an MCP call's) and
        event; return once both are committed (raises the store's error if they could not
        be)."""
        if self._stopping:
            raise StoreUnavailable("the server is stopping; the check was not recorded")
        queued = _Queued(org_id, row, event)
        self._queue.append(queued)
        if self._task is None:
            self._task = asyncio.create_task(self._run(), name="policy check recorder")
        self._wake.set()
        await queued.done

    async def _run(self) -> None:
        while True:
            await self._wake.wait()
            self._wake.clear()
            while self._queue:
                batch, self._queue = self._queue[:MAX_BATCH], self._queue[MAX_BATCH:]
                await self._write(batch)
            if self._stopping:
                return

    async def _write(self, batch: list[_Queued]) -> None:
        try:
            await self._commit(batch)
        except Exception as exc:  # every check it carried is refused, never answered
            log.warning("%d checks could not be recorded: %s", len(batch), exc)
            failure = (
                exc
                if isinstance(exc, StoreUnavailable)
                else StoreUnavailable(f"the check could not be recorded: {type(exc).__name__}")
            )
            for queued in batch:
                if not queued.done.done():
                    queued.done.set_exception(failure)
            return
        for queued in batch:
            if not queued.done.done():
                queued.done.set_result(None)

    async def _commit(self, batch: list[_Queued]) -> None:
        checks = [self._checks.values(q.row) for q in batch if q.row is not None]
        by_org: dict[str, list[chain.Event]] = {}
        for queued in sorted(batch, key=lambda q: q.org_id):  # heads locked in one order
            by_org.setdefault(queued.org_id, []).append(queued.event)
        ts_us = to_micros(self._clock.now())
        if self._store.dialect == "sqlite":

            def work(conn: sqlite3.Connection) -> None:
                if checks:
                    conn.executemany(self._checks.sql, checks)
                for org_id, events in by_org.items():
                    seq, head = conn.execute(HEAD, (org_id,)).fetchone()
                    rows = chain.chained_rows(org_id, seq, head, ts_us, events)
                    conn.executemany(self._events.sql, [self._events.values(r) for r in rows])
                    conn.execute(MOVE_HEAD, (rows[-1]["seq"], rows[-1]["hash"], org_id))

            await self._writer.sqlite(work)
            return

        async def pg_work(conn: Any) -> None:
            if checks:
                await conn.executemany(numbered(self._checks.sql), checks)
            for org_id, events in by_org.items():
                head = await conn.fetchrow(numbered(HEAD + " FOR UPDATE"), org_id)
                rows = chain.chained_rows(org_id, head["seq"], head["hash"], ts_us, events)
                await conn.executemany(
                    numbered(self._events.sql), [self._events.values(r) for r in rows]
                )
                await conn.execute(numbered(MOVE_HEAD), rows[-1]["seq"], rows[-1]["hash"], org_id)

        await self._writer.postgres(pg_work)

    async def stop(self) -> None:
        """Write what is queued, then stop and close the writer's connection."""
        self._stopping = True
        if self._task is not None:
            self._wake.set()
            await asyncio.gather(self._task, return_exceptions=True)
        await self._writer.close()
