"""Writing usage rows: grouped commits, idempotent by request id, durable before 'finished'.

Callers ``await record(row)``: the row joins the next batch, one transaction writes the batch,
and every caller in it resumes once it has committed. Under load many calls share one commit;
alone, a call waits only for its own write. A row whose request id exists is skipped. Budget
reservations of the calls in a batch are settled in its transaction (``budgets/ledger.py``).

Batches go through ``BulkInsert`` (``store/bulk.py``): one thread hop per batch on SQLite, one
asyncpg ``executemany`` on PostgreSQL, and no per-row work in SQLAlchemy.
"""

from __future__ import annotations

from typing import Any

from pilothouse.budgets.ledger import Ledger, Reservation
from pilothouse.gateway.tables import usage_records
from pilothouse.store.bulk import BulkInsert
from pilothouse.store.engine import Store
from pilothouse.store.group import GroupCommit

Item = tuple[dict[str, Any], Reservation | None]


class UsageRecorder(GroupCommit[Item]):
    """Group-commits usage rows (and settles their calls' reservations)."""

    name = "usage rows"

    def __init__(self, store: Store) -> None:
        super().__init__()
        self._insert = BulkInsert(store, usage_records, key="request_id")

    async def record(self, row: dict[str, Any], reservation: Reservation | None = None) -> None:
        """Queue ``row`` and return once it is committed (raise StoreUnavailable if not).

        A call's budget ``reservation`` is settled to the row's cost in the same transaction.
        """
        await self.submit((row, reservation))

    async def _write(self, items: list[Item]) -> None:
        settled = [(r, row["cost_picos"], _tokens(row)) for row, r in items if r is not None]
        await self._insert([row for row, _ in items], Ledger.settlements(settled))

    async def _close(self) -> None:
        await self._insert.close()


def _tokens(row: dict[str, Any]) -> int:
    """Every token of a call, as the per-minute token limits count them."""
    return int(
        row["input_tokens"]
        + row["output_tokens"]
        + row["cache_read_tokens"]
        + row["cache_write_tokens"]
    )
