"""Writing usage rows: grouped commits, idempotent by request id, durable before 'finished'.

Callers ``await record(row)``: the row joins the next batch, one transaction writes the batch,
and every caller in it resumes once it has committed. Under load many calls share one commit;
alone, a call waits only for its own write. A row whose request id exists is skipped. Budget
reservations of the calls in a batch are settled in its transaction (``budgets/ledger.py``).

Batches go through ``BulkInsert`` (``store/bulk.py``): one thread hop per batch on SQLite, one
asyncpg ``executemany`` on PostgreSQL, and no per-row work in SQLAlchemy.
"""

from __future__ import annotations

import asyncio
import logging
from typing import Any

from pilothouse.budgets.ledger import Ledger, Reservation
from pilothouse.errors import StoreUnavailable
from pilothouse.gateway.tables import usage_records
from pilothouse.store.bulk import BulkInsert
from pilothouse.store.engine import Store

log = logging.getLogger(__name__)

MAX_BATCH = 256


class UsageRecorder:
    """Group-commits usage rows."""

    def __init__(self, store: Store) -> None:
        self._insert = BulkInsert(store, usage_records, key="request_id")
        self._pending: list[tuple[dict[str, Any], Reservation | None, asyncio.Future[None]]] = []
        self._wake = asyncio.Event()
        self._task: asyncio.Task[None] | None = None

    def start(self) -> None:
        """Begin the writer task."""
        self._task = asyncio.create_task(self._run(), name="usage-recorder")

    async def stop(self) -> None:
        """Write what is queued, then stop."""
        if self._task is not None:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)
            self._task = None
        while self._pending:
            await self._flush()
        await self._insert.close()

    async def record(self, row: dict[str, Any], reservation: Reservation | None = None) -> None:
        """Queue ``row`` and return once it is committed (raise StoreUnavailable if not).

        A call's budget ``reservation`` is settled to the row's cost in the same transaction.
        """
        if self._task is None:
            raise StoreUnavailable("the usage recorder is not running")
        future: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        # If the caller went away (a cancelled request), nobody else reads the outcome.
        future.add_done_callback(_consume)
        self._pending.append((row, reservation, future))
        self._wake.set()
        await asyncio.shield(future)

    async def _run(self) -> None:
        while True:
            await self._wake.wait()
            self._wake.clear()
            while self._pending:
                await self._flush()

    async def _flush(self) -> None:
        batch, self._pending = self._pending[:MAX_BATCH], self._pending[MAX_BATCH:]
        settled = [
            (res, row["cost_picos"], _tokens(row)) for row, res, _ in batch if res is not None
        ]
        try:
            await self._insert([row for row, _, _ in batch], Ledger.settlements(settled))
        except Exception as exc:  # the writer must outlive any batch, and no caller may hang
            if not isinstance(exc, StoreUnavailable):
                log.exception("usage rows not written (%d calls)", len(batch))
                exc = StoreUnavailable(f"usage rows not written: {type(exc).__name__}")
            else:
                log.error("usage rows not written (%d calls): %s", len(batch), exc)
            for _, _, future in batch:
                if not future.done():
                    future.set_exception(exc)
            return
        for _, _, future in batch:
            if not future.done():
                future.set_result(None)


def _consume(future: asyncio.Future[None]) -> None:
    if not future.cancelled():
        future.exception()


def _tokens(row: dict[str, Any]) -> int:
    """Every token of a call, as the per-minute token limits count them."""
    return int(
        row["input_tokens"]
        + row["output_tokens"]
        + row["cache_read_tokens"]
        + row["cache_write_tokens"]
    )
