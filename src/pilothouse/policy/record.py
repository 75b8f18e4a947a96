"""Recording checks, group-committed: many checks' rows and audit events in one transaction.

A check is answered only after its ``policy_checks`` row and its ``policy.check`` audit event
are durable (nothing is lost if the process dies after answering). Writing them one transaction
per check would make checks wait on each other for the store's write lock; instead a check
queues its record and waits, and one writer takes everything queued, writes it in one
transaction (one chain-head read and write per organization, however many events), commits and
wakes every check it carried. Under load a transaction carries many checks; alone, a check
waits for its own transaction only.

If the transaction fails, every check it carried is refused with the store's error (fail
closed: no check is answered that is not recorded).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from sqlalchemy import insert

from pilothouse.audit import chain
from pilothouse.clock import Clock
from pilothouse.errors import StoreUnavailable
from pilothouse.policy.tables import policy_checks
from pilothouse.store.engine import Store

log = logging.getLogger(__name__)

MAX_BATCH = 500


@dataclass
class _Queued:
    org_id: str
    row: Mapping[str, Any]
    event: chain.Event
    done: asyncio.Future[None] = field(
        default_factory=lambda: asyncio.get_running_loop().create_future()
    )


class CheckRecorder:
    """Writes checks' rows and audit events, many to a transaction."""

    def __init__(self, store: Store, clock: Clock) -> None:
        self._store = store
        self._clock = clock
        self._queue: list[_Queued] = []
        self._wake = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self._stopping = False

    async def record(self, org_id: str, row: Mapping[str, Any], event: chain.Event) -> None:
        """Queue one check's row and event; return once both are committed (raises the
        store's error if they could not be)."""
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
            async with self._store.write() as conn:
                await conn.execute(insert(policy_checks), [q.row for q in batch])
                by_org: dict[str, list[chain.Event]] = {}
                for queued in batch:
                    by_org.setdefault(queued.org_id, []).append(queued.event)
                for org_id, events in by_org.items():
                    await chain.append_many(conn, self._clock, org_id, events)
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

    async def stop(self) -> None:
        """Write what is queued, then stop."""
        self._stopping = True
        if self._task is not None:
            self._wake.set()
            await asyncio.gather(self._task, return_exceptions=True)
