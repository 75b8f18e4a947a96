"""Reservations, group-committed: the one write a call makes before it is forwarded.

Calls that arrive together are reserved in one transaction. The transaction makes the counters
it needs, locks and reads them (PostgreSQL: ``SELECT ... FOR UPDATE`` in key order, so writers
on several replicas queue instead of deadlocking; SQLite: ``BEGIN IMMEDIATE``), decides each
call in arrival order against the counters as the calls before it in the batch left them,
writes the counters back and inserts the admitted calls' reservation rows. A call is admitted
only if every rate limit and hard budget it counts against has room for it; a refused call
changes nothing. Each caller resumes when the batch has committed, so an admitted call's
reservation is durable before it is forwarded (invariant 3), and a replica never admits against
counters another replica is changing (invariant 2).

On SQLite the batch runs on a thread of its own with its own ``sqlite3`` connection, under the
store's writer queue (one hop per batch); on PostgreSQL on one pooled asyncpg connection.
"""

from __future__ import annotations

import logging
import sqlite3
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from pilothouse.budgets.limits import LimitHit, LimitKind
from pilothouse.budgets.model import Budget, Enforcement, window_end
from pilothouse.budgets.tables import budget_reservations
from pilothouse.errors import BudgetExceeded, PilothouseError, RateLimited
from pilothouse.gateway.usage_rows import dollars
from pilothouse.store.bulk import BulkInsert, OwnWriter, numbered
from pilothouse.store.engine import Store
from pilothouse.store.group import GroupCommit

log = logging.getLogger(__name__)

PICOS_PER_USD = 10**12
BudgetKey = tuple[str, int]  # (budget id, window start)

# A budget deleted since the cache read it gets no counter, and the call is not held to it.
NEW_BUDGET_COUNTER = (
    "INSERT INTO budget_counters (budget_id, window_start, spent_picos, reserved_picos, calls)"
    " SELECT ?, ?, 0, 0, 0 WHERE EXISTS (SELECT 1 FROM budgets WHERE id = ?)"
    " ON CONFLICT DO NOTHING"
)
NEW_RATE_COUNTER = (
    "INSERT INTO rate_counters (key, count, expires_at) VALUES (?, 0, ?) ON CONFLICT DO NOTHING"
)
SET_BUDGET_COUNTER = (
    "UPDATE budget_counters SET reserved_picos = ? WHERE budget_id = ? AND window_start = ?"
)
SET_RATE_COUNTER = "UPDATE rate_counters SET count = ? WHERE key = ?"


@dataclass(frozen=True, slots=True)
class Refusal:
    """Why a budget refused a call: everything the agent is told."""

    budget: Budget
    spent_picos: int
    reserved_picos: int
    requested_picos: int
    resets_at: datetime | None

    def details(self) -> dict[str, Any]:
        """The fields added to the error body (amounts as the API's exact dollar strings)."""
        return {
            "budget_id": self.budget.id,
            "scope": self.budget.scope,
            "window": self.budget.window.value,
            "limit_usd": dollars(self.budget.limit_picos),
            "spent_usd": dollars(self.spent_picos),
            "reserved_usd": dollars(self.reserved_picos),
            "requested_usd": dollars(self.requested_picos),
            "resets_at": self.resets_at.isoformat() if self.resets_at else None,
        }

    def message(self) -> str:
        """One sentence naming the budget, the numbers and the reset."""
        b = self.budget
        when = (
            f"; the {b.window.value} window resets at {self.resets_at.isoformat()}"
            if (self.resets_at)
            else "; it is a total budget and does not reset"
        )
        return (
            f"budget {b.name!r} ({b.scope}, {b.window.value}) would be exceeded: limit"
            f" ${usd(b.limit_picos)}, spent ${usd(self.spent_picos)}, reserved by calls in"
            f" flight ${usd(self.reserved_picos)}, this call may cost up to"
            f" ${usd(self.requested_picos)}{when}"
        )


def usd(picos: int) -> str:
    """Exact dollars for people to read: ``1.5`` for 1.5e12 picos (data fields use the API's
    twelve-place ``dollars``)."""
    sign = "-" if picos < 0 else ""
    whole, frac = divmod(abs(picos), PICOS_PER_USD)
    text = f"{frac:012d}".rstrip("0")
    return f"{sign}{whole}.{text}" if text else f"{sign}{whole}"


@dataclass(slots=True)
class RateAsk:
    """One rate-limit counter a call asks a slot of."""

    hit: LimitHit
    key: str
    amount: int
    expires_at: int | None
    reset_at: int | None


@dataclass(slots=True)
class Ask:
    """One call's reservation request, and what the batch decided."""

    request_id: str
    amount_picos: int
    budgets: list[tuple[Budget, BudgetKey]]
    rates: list[RateAsk]
    row: dict[str, Any]  # the budget_reservations row
    now: datetime
    counts: list[int] = field(default_factory=list)  # each rate counter once admitted
    refusal: PilothouseError | None = None


def decide(asks: Sequence[Ask], spent: dict[BudgetKey, list[int]], rates: dict[str, int]) -> None:
    """Admit or refuse each ask in order, updating ``spent`` ([spent, reserved] per counter)
    and ``rates`` (count per counter) for every admitted one."""
    for ask in asks:
        ask.refusal = _refusal(ask, spent, rates)
        if ask.refusal is not None:
            continue
        for rate in ask.rates:
            rates[rate.key] += rate.amount
            ask.counts.append(rates[rate.key])
        for _, key in ask.budgets:
            if key in spent:
                spent[key][1] += ask.amount_picos


def _refusal(
    ask: Ask, spent: dict[BudgetKey, list[int]], rates: dict[str, int]
) -> PilothouseError | None:
    for rate in ask.rates:
        used = rates[rate.key]
        if used + rate.amount > rate.hit.limit:
            return rate_limited(rate, used, ask.now)
    for budget, key in ask.budgets:
        if key not in spent:  # deleted since the cache read it
            continue
        done, held = spent[key]
        if budget.enforcement is Enforcement.HARD and (
            done + held + ask.amount_picos > budget.limit_picos
        ):
            refusal = Refusal(
                budget, done, held, ask.amount_picos, window_end(budget.window, ask.now)
            )
            return BudgetExceeded(refusal.message(), **refusal.details())
    return None


def rate_limited(rate: RateAsk, used: int, now: datetime) -> RateLimited:
    """The refusal of a call by the rate limit ``rate`` with ``used`` already taken."""
    hit, reset = rate.hit, rate.reset_at
    wait = max(1.0, reset - now.timestamp()) if reset is not None else 1.0
    what = {
        LimitKind.RPM: "calls a minute",
        LimitKind.TPM: "tokens a minute",
        LimitKind.CONCURRENT: "calls at once",
    }[hit.kind]
    needs = f", this call needs {rate.amount}" if hit.kind == LimitKind.TPM else ""
    return RateLimited(
        f"rate limit of {hit.scope} reached: {hit.limit} {what}, {used} used{needs};"
        f" retry in {wait:.0f}s",
        wait,
        scope=hit.scope,
        limit_kind=hit.kind,
        limit=hit.limit,
        used=used,
        resets_at=datetime.fromtimestamp(reset, UTC).isoformat() if reset else None,
    )


class ReservationWriter(GroupCommit[Ask]):
    """Group-commits reservation requests; ``await reserve(ask)`` resumes once decided."""

    name = "reservations"

    def __init__(self, store: Store) -> None:
        super().__init__()
        self._store = store
        self._rows = BulkInsert(store, budget_reservations, key="request_id")
        self._writer = OwnWriter(store, "reservations")

    async def reserve(self, ask: Ask) -> None:
        """Queue ``ask``; return once its batch committed (``ask.refusal`` says if refused).
        Raise StoreUnavailable if the batch could not be written."""
        await self.submit(ask)

    async def _write(self, asks: list[Ask]) -> None:
        if self._store.dialect == "postgresql":
            await self._writer.postgres(lambda driver: self._postgres(driver, asks))
        else:
            await self._writer.sqlite(lambda conn: self._sqlite(conn, asks))

    async def _close(self) -> None:
        await self._writer.close()

    # -- the two engines -------------------------------------------------------------------

    def _sqlite(self, conn: sqlite3.Connection, asks: list[Ask]) -> None:
        budget_keys, rate_keys = _keys(asks)
        conn.executemany(NEW_BUDGET_COUNTER, [(b, w, b) for b, w in budget_keys])
        conn.executemany(NEW_RATE_COUNTER, rate_keys)
        spent = {}
        for key in budget_keys:
            found = conn.execute(
                "SELECT spent_picos, reserved_picos FROM budget_counters"
                " WHERE budget_id = ? AND window_start = ?",
                key,
            ).fetchone()
            if found is not None:
                spent[key] = list(found)
        rates = {
            key: conn.execute("SELECT count FROM rate_counters WHERE key = ?", (key,)).fetchone()[0]
            for key, _ in rate_keys
        }
        for sql, params in self._writes(asks, spent, rates):
            conn.executemany(sql, params)

    async def _postgres(self, driver: Any, asks: list[Ask]) -> None:
        budget_keys, rate_keys = _keys(asks)
        if budget_keys:
            await driver.executemany(
                numbered(NEW_BUDGET_COUNTER), [(b, w, b) for b, w in budget_keys]
            )
        if rate_keys:
            await driver.executemany(numbered(NEW_RATE_COUNTER), rate_keys)
        spent: dict[BudgetKey, list[int]] = {}
        if budget_keys:
            found = await driver.fetch(
                "SELECT budget_id, window_start, spent_picos, reserved_picos"
                " FROM budget_counters WHERE (budget_id, window_start) IN"
                " (SELECT * FROM unnest($1::text[], $2::bigint[]))"
                " ORDER BY budget_id, window_start FOR UPDATE",
                [k[0] for k in budget_keys],
                [k[1] for k in budget_keys],
            )
            spent = {(r[0], r[1]): [r[2], r[3]] for r in found}
        rates: dict[str, int] = {}
        if rate_keys:
            found = await driver.fetch(
                "SELECT key, count FROM rate_counters WHERE key = ANY($1::text[])"
                " ORDER BY key FOR UPDATE",
                [k for k, _ in rate_keys],
            )
            rates = {r[0]: r[1] for r in found}
        for sql, params in self._writes(asks, spent, rates):
            if params:
                await driver.executemany(numbered(sql), params)

    def _writes(
        self, asks: list[Ask], spent: dict[BudgetKey, list[int]], rates: dict[str, int]
    ) -> list[tuple[str, list[tuple[Any, ...]]]]:
        """Decide the batch; the statements that write its outcome."""
        decide(asks, spent, rates)
        admitted = [ask for ask in asks if ask.refusal is None]
        touched_budgets = {key for ask in admitted for _, key in ask.budgets if key in spent}
        touched_rates = {rate.key for ask in admitted for rate in ask.rates}
        return [
            (SET_BUDGET_COUNTER, [(spent[k][1], k[0], k[1]) for k in sorted(touched_budgets)]),
            (SET_RATE_COUNTER, [(rates[k], k) for k in sorted(touched_rates)]),
            (self._rows.sql, [self._rows.values(ask.row) for ask in admitted]),
        ]


def _keys(asks: Sequence[Ask]) -> tuple[list[BudgetKey], list[tuple[str, int | None]]]:
    """Every budget counter and rate counter the batch touches, sorted (the lock order)."""
    budget_keys = sorted({key for ask in asks for _, key in ask.budgets})
    rate_keys = sorted({(r.key, r.expires_at) for ask in asks for r in ask.rates})
    return budget_keys, rate_keys
