"""The budget ledger: reserve a call's worst-case cost before it is forwarded, settle it after.

- **Reserve** (the one write before forwarding): for every budget whose scope the call is
  charged to, the counter of the current window is created if missing and its reserved amount
  raised by the call's worst-case cost; for a hard budget only if spent + reserved + this stays
  within the limit; every rate limit likewise takes its slot. If any refuses, the call changes
  nothing. The reservation row (the amount, the time, and its context: the counters it went
  to and what the usage row a sweeper would write says of the call, kept once for the calls
  alike: ``budgets/contexts.py``) commits with it.
- **Settle** (the usage row's own transaction): the reservation row is deleted, and only if it
  still existed does each counter's reserved amount go down by the reservation and its spent
  amount up by the actual cost, so settling twice, or after the sweeper, changes nothing
  (idempotent by request id). A call never forwarded is released: its reservation is given back.

All three go through one group-committed writer (``budgets/writer.py``): what callers queue
together, reservations of new calls and usage rows of ended ones, commits in one transaction.
- **Sweep**: the process serving a call renews its reservation's expiry every third of the
  time to live; a reservation past its expiry belongs to a process that stopped, and is settled
  at its reserved amount: its usage row is written marked estimated, with status ``orphaned``.

A window's counter is keyed by the window's first instant, computed from the clock, so a new
day, week or month starts from zero with no reset job. A budget made mid-window starts from
what its scope spent in the window before it existed (``budgets/service.py``
``create_budget``), unless it is made to count from then on.
"""

from __future__ import annotations

import json
import logging
import math
from collections.abc import Callable, Coroutine, Mapping, Sequence
from datetime import UTC, datetime
from typing import Any

import orjson
from sqlalchemy import delete, select, update
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.ext.asyncio import AsyncConnection

from pilothouse.budgets.contexts import (
    KEEP_SECONDS,
    MEMO_MAX,
    CallContext,
    CallShape,
    Context,
    created_at,
    make,
    read,
)
from pilothouse.budgets.limits import LimitHit, LimitKind
from pilothouse.budgets.model import (
    SECONDS_A_DAY,
    Budget,
    Window,
    applies,
    budget_from_row,
    day_window_starts,
    epoch,
    scope_values,
)
from pilothouse.budgets.reserve import (
    Ask,
    BudgetKey,
    LimitState,
    RateAsk,
    RateCharge,
    Reservation,
    holds_slot,
)
from pilothouse.budgets.tables import (
    budget_contexts,
    budget_counters,
    budget_reservations,
    budgets,
    rate_counters,
)
from pilothouse.budgets.writer import LedgerWriter
from pilothouse.clock import Clock
from pilothouse.errors import RateLimited
from pilothouse.gateway.tables import usage_records
from pilothouse.identity.principal import Principal
from pilothouse.memo import IdentityMemo
from pilothouse.store.engine import Store
from pilothouse.store.notify import ALL, Invalidations

log = logging.getLogger(__name__)

Charged = tuple[list[tuple[Budget, BudgetKey]], tuple[BudgetKey, ...]]
"""A call's budgets with the counter each goes to, and the counters."""
Shaped = tuple[
    Mapping[str, Any],
    Sequence[Budget],
    dict[Window, int],
    tuple[list[tuple[Budget, BudgetKey]], tuple[BudgetKey, ...], Context],
]
"""What ``Ledger.ask`` keeps per call shape: the principal's fields, the budgets and the window
starts it was worked out for, and the counters charged and the context."""

Chosen = tuple[tuple[Budget, ...], tuple[Budget, ...]]
"""A principal's budgets, and those of them with a downgrade rule (``BudgetBook.chosen``)."""
NONE_CHOSEN: Chosen = ((), ())

SWEEP_BATCH = 500
# An orphaned call's usage row: what its reservation does not say (its context kept the
# attribution and the call's shape, the row the time; see ``budgets.contexts.CallContext``).
ORPHANED_ROW: dict[str, Any] = {
    "deployment": None,
    "upstream_model": None,
    "input_tokens": 0,
    "output_tokens": 0,
    "cache_read_tokens": 0,
    "cache_write_tokens": 0,
    "reasoning_tokens": 0,
    "price_version": None,
    "http_status": 0,
    "retries": 0,
    "ttfb_ms": None,
    "latency_ms": 0,
}


class BudgetBook:
    """Each organization's budgets, cached and dropped when any of them changes."""

    def __init__(self, store: Store, invalidations: Invalidations) -> None:
        self._store = store
        self._by_org: dict[str, tuple[Budget, ...]] = {}
        # Each principal's budgets and those of them with a downgrade rule, with the
        # organization's budgets they were chosen from (a principal is one object per key
        # record: see ``Authenticator``).
        self._applicable: IdentityMemo[tuple[tuple[Budget, ...], Chosen]] = IdentityMemo()
        self._used: dict[str, float] = {}
        invalidations.subscribe(self._invalidate)

    def set_used(self, used: dict[str, float]) -> None:
        """Each budget's spent share (percent) of its current window, as last read."""
        self._used = used

    def used_percent(self, budget_id: str) -> float:
        """The budget's spent share of its limit as last read (0 before the first reading)."""
        return self._used.get(budget_id, 0.0)

    def _invalidate(self, kind: str, ref: str) -> None:
        if kind == ALL:
            self._by_org.clear()
        elif kind == "budget":
            self._by_org.pop(ref, None)

    async def for_org(self, org_id: str) -> tuple[Budget, ...]:
        """The organization's budgets (raises StoreUnavailable if they cannot be read)."""
        found = self._by_org.get(org_id)
        if found is None:
            async with self._store.read() as conn:
                rows = await conn.execute(
                    select(budgets).where(budgets.c.org_id == org_id).order_by(budgets.c.id)
                )
                found = tuple(budget_from_row(r._mapping) for r in rows)
            self._by_org[org_id] = found
        return found

    async def applicable(self, principal: Principal) -> tuple[Budget, ...]:
        """The budgets a call by ``principal`` counts against, in id order (worked out once
        per principal and set of budgets)."""
        return (await self.chosen(principal))[0]

    async def chosen(self, principal: Principal) -> Chosen:
        """``applicable``, and those of them with a downgrade rule (most calls have none: the
        gateway then looks at no budget's rule), worked out together."""
        every = self._by_org.get(principal.org_id)
        if every is None:
            every = await self.for_org(principal.org_id)
        if not every:
            return NONE_CHOSEN
        found = self._applicable.get(principal)
        if found is not None and found[0] is every:
            return found[1]
        scopes = scope_values(principal)
        mine = tuple(b for b in every if applies(b, scopes))
        chosen = (mine, tuple(b for b in mine if b.downgrade is not None))
        self._applicable.put(principal, (every, chosen))
        return chosen


class Ledger:
    """Reservations and their settlement against budget counters."""

    def __init__(
        self, store: Store, clock: Clock, book: BudgetBook, reservation_ttl_seconds: float
    ) -> None:
        self._store = store
        self._clock = clock
        self.book = book
        self._ttl = math.ceil(reservation_ttl_seconds)  # whole seconds, as the row keeps it
        self._live: set[str] = set()  # reservations of calls in flight here: kept alive
        self._charged: IdentityMemo[tuple[dict[Window, int], Charged]] = IdentityMemo()
        # Per call shape (``ask``): its fields and budgets, the day's window starts, and what
        # they give (the counters charged and the context), kept by the objects' identities.
        self._shapes: dict[tuple[Any, ...], Shaped] = {}
        # The UTC day of the last reservation: its first second, the next day's, and its
        # windows' starts (one object a day, which the memos check by identity).
        self._today: tuple[int, int, dict[Window, int]] = (0, 0, {})
        self._writer = LedgerWriter(store)
        # Have the writer decide an ask, durably: the awaitable returns once its tick committed
        # (``ask.refusal`` says if refused; a caller gone meanwhile: the writer releases what
        # it was admitted). The writer's own ``submit``: no frame of ours between a call and
        # its future.
        self.decide: Callable[[Ask], Coroutine[Any, Any, None]] = self._writer.submit
        self._postgres = store.dialect == "postgresql"

    def start(self) -> None:
        """Begin group-committing usage rows and reservations."""
        self._writer.start()

    async def stop(self) -> None:
        """Write what is queued, then stop."""
        await self._writer.stop()

    def record(
        self, row: dict[str, Any], reservation: Reservation | None = None
    ) -> Coroutine[Any, Any, None]:
        """Write a call's usage ``row`` and settle its ``reservation`` to the row's cost, in
        one transaction, durably (group-committed); settling twice counts once. The awaitable
        raises StoreUnavailable if it could not be written. (The writer's coroutine itself:
        one coroutine less between every call and its write.)"""
        return self._writer.record(row, reservation)

    def settle(self, row: dict[str, Any], reservation: Reservation) -> None:
        """Queue a call's usage ``row`` and the settlement of its ``reservation`` for the next
        tick, without waiting for it: the reservation, durable since before the call was
        forwarded, already counts the call at its worst case, and is what the sweeper settles,
        marked estimated, if this process dies before the tick commits (invariant 3). If the
        tick fails, the writer logs it and the reservation is left to the sweeper likewise.
        ``settled`` waits for it."""
        self._writer.enqueue((row, reservation))

    def settled(self) -> Coroutine[Any, Any, None]:
        """Wait until every usage row and settlement queued here so far has been written (or
        its tick failed): what a read of this replica's usage or spend waits for first."""
        return self._writer.drained()

    async def reserve(
        self,
        applicable: Sequence[Budget],
        request_id: str,
        amount_picos: int,
        call: CallContext,
        limits: Sequence[LimitHit] = (),
        tokens: int = 0,
        now: datetime | None = None,
    ) -> Reservation:
        """Take a slot of every rate limit in ``limits`` (``tokens`` of each per-minute token
        limit) and reserve ``amount_picos`` on every budget in ``applicable``, at once, durably
        (group-committed with the calls that arrive alongside: ``budgets/reserve.py``), with
        what the sweeper needs to write the call's usage row (``call``, kept as a context).

        Raises RateLimited or BudgetExceeded (with the numbers of the first limit or hard budget
        that refuses) and changes nothing if any would be exceeded. ``now`` (the clock's by
        default) decides the windows and the minute. (``ask``, ``decide`` and ``reserved`` in
        turn: the gateway calls those three itself, one coroutine fewer a call.)
        """
        ask = self.ask(
            applicable, request_id, amount_picos, call.fields, call.shape, limits, tokens, now
        )
        await self.decide(ask)
        return self.reserved(ask)

    def ask(
        self,
        applicable: Sequence[Budget],
        request_id: str,
        amount_picos: int,
        fields: Mapping[str, Any],
        shape: CallShape,
        limits: Sequence[LimitHit] = (),
        tokens: int = 0,
        now: datetime | None = None,
    ) -> Ask:
        """The request ``reserve`` hands the writer, which is also the reservation it holds if
        admitted, for a call by the principal whose usage-row fields are ``fields`` (one
        mapping per principal) shaped ``shape``."""
        if now is None:
            now = self._clock.now()
        seconds = int(now.timestamp())
        today = self._today
        if not today[0] <= seconds < today[1]:  # a new UTC day (or an injected clock's jump)
            today = self._today = _day_of(seconds)
        starts = today[2]
        key = (id(fields), id(applicable), shape)
        shaped = self._shapes.get(key)
        # Made anew for other objects of the same ids, and on a new UTC day (new ``starts``).
        if (
            shaped is None
            or shaped[0] is not fields
            or shaped[1] is not applicable
            or shaped[2] is not starts
        ):
            shaped = self._shape(key, CallContext(fields, *shape), applicable, starts)
        budgets_asked, charges, context = shaped[3]
        rates: Sequence[RateAsk] = ()  # a tuple, not a new list, for a call under no limit
        rate_charges: tuple[RateCharge, ...] = ()
        rate_json = "[]"
        if limits:
            rates = _rate_asks(limits, fields["org_id"], seconds - seconds % 60, tokens)
            rate_charges = tuple(RateCharge(r.key, r.amount, r.hit.kind) for r in rates)
            rate_json = orjson.dumps([[r.key, r.taken, r.kind] for r in rate_charges]).decode()
        # The budget_reservations row. SQLite binds it as it is, a tuple in the table's column
        # order (``RESERVATION_COLUMNS``); PostgreSQL reads it from a JSON object, made here
        # (an f-string: every value is a number, a JSON array, or a string that needs no
        # escaping or is escaped), so that a tick only joins its calls' objects.
        created_us = seconds * 1_000_000 + now.microsecond
        row: tuple[Any, ...] | str
        if self._postgres:
            # The gateway's request ids need no escaping (checked here, not in a function:
            # once a call).
            quoted = (
                f'"{request_id}"'
                if request_id.isascii() and request_id.isidentifier()
                else orjson.dumps(request_id).decode()
            )
            row = (
                f'{{"request_id":{quoted},"amount_picos":{amount_picos},'
                f'"context_id":"{context.id}","rate_charges":{rate_json},'
                f'"created_us":{created_us},"expires_at":{seconds + self._ttl}}}'
            )
        else:
            row = (
                request_id,
                amount_picos,
                context.id,
                rate_json,
                created_us,
                seconds + self._ttl,
            )
        return Ask(
            request_id,
            amount_picos,
            charges,
            rate_charges,
            (),
            bool(rate_charges) and holds_slot(rate_charges),
            budgets_asked,
            rates,
            row,
            now,
            context,
        )

    def reserved(self, ask: Ask) -> Reservation:
        """What ``ask``, decided, reserved (kept alive from now on): ``ask`` itself, with the
        rate limits as they stood once it was admitted; raises its refusal."""
        if ask.refusal is not None:
            raise ask.refusal
        self._live.add(ask.request_id)
        if ask.rates:
            ask.limits = tuple(
                LimitState(r.hit.kind, r.hit.limit, count, r.reset_at)
                for r, count in zip(ask.rates, ask.counts, strict=True)
            )
        return ask

    def _shape(
        self,
        key: tuple[Any, ...],
        call: CallContext,
        applicable: Sequence[Budget],
        starts: dict[Window, int],
    ) -> Shaped:
        """Work out, and keep under ``key``, what calls shaped ``call`` charged to
        ``applicable`` in the windows ``starts`` reserve with: the counters and the context.
        Holding the fields and the budgets keeps their ids from being reused."""
        budgets_asked, charges = self._charges(applicable, starts)
        shaped = (call.fields, applicable, starts, (budgets_asked, charges, make(call, charges)))
        if len(self._shapes) >= MEMO_MAX:
            self._shapes.clear()
        self._shapes[key] = shaped
        return shaped

    def _charges(self, applicable: Sequence[Budget], starts: dict[Window, int]) -> Charged:
        """The counters a call charged to ``applicable`` goes to in the windows ``starts`` (in
        id order, the order they are locked in), with their budgets. Worked out once per set
        of budgets and UTC day (``Ledger._today`` keeps ``starts``): the tuple of counters is
        then one object, which a tick and the contexts key on."""
        found = self._charged.get(applicable)
        if found is not None and found[0] is starts:
            return found[1]
        asked = [(b, (b.id, starts[b.window])) for b in sorted(applicable, key=_by_id)]
        worked = (asked, tuple(key for _, key in asked))
        self._charged.put(applicable, (starts, worked))
        return worked

    def forget(self, request_id: str) -> None:
        """The call ended (settled, released, or left to the sweeper): stop keeping it alive."""
        self._live.discard(request_id)

    async def keep_alive(self) -> int:
        """Push back the expiry of every reservation of a call still in flight here, so that
        only a stopped process's reservations expire; how many were renewed."""
        live = list(self._live)
        if not live:
            return 0
        expires = epoch(self._clock.now()) + self._ttl
        async with self._store.write() as conn:
            for start in range(0, len(live), SWEEP_BATCH):
                await conn.execute(
                    update(budget_reservations)
                    .where(budget_reservations.c.request_id.in_(live[start : start + SWEEP_BATCH]))
                    .values(expires_at=expires)
                )
        return len(live)

    def release(self, reservation: Reservation) -> Coroutine[Any, Any, None]:
        """Give back a reservation whose call was never forwarded (no usage row is written)."""
        return self._writer.release(reservation)

    async def sweep(self) -> int:
        """Settle every expired reservation at its reserved amount; how many were settled.
        Then delete the contexts no reservation names that no writer has written for a day.

        Counters are changed once each, budget counters before rate counters, each in key
        order: the order the ledger writer locks them in, so the two never deadlock."""
        now = self._clock.now()
        moment = epoch(now)
        async with self._store.write() as conn:
            found = await self._expired(conn, moment)
            spent: dict[tuple[str, int], list[int]] = {}
            slots: dict[str, int] = {}
            orphans = []
            for request_id, amount, rate_json, created_us, body in found:
                charges, fields = read(body)
                for key in charges:
                    counter = spent.setdefault(key, [0, 0])
                    counter[0] += amount
                    counter[1] += 1
                for rate_key, _taken, kind in json.loads(rate_json):
                    if kind == LimitKind.CONCURRENT:  # its slot; tokens stay as reserved
                        slots[rate_key] = slots.get(rate_key, 0) + 1
                orphans.append(
                    {
                        **ORPHANED_ROW,
                        **fields,
                        "request_id": request_id,
                        "cost_picos": int(amount),
                        "status": "orphaned",
                        "estimated": 1,
                        "error": "the process serving this call stopped before it finished;"
                        " settled at its reserved cost",
                        "created_at": created_at(int(created_us)),
                    }
                )
            for (budget_id, start), (amount, calls) in sorted(spent.items()):
                await conn.execute(
                    update(budget_counters)
                    .where(
                        budget_counters.c.budget_id == budget_id,
                        budget_counters.c.window_start == start,
                    )
                    .values(
                        reserved_picos=budget_counters.c.reserved_picos - amount,
                        spent_picos=budget_counters.c.spent_picos + amount,
                        calls=budget_counters.c.calls + calls,
                    )
                )
            for rate_key, count in sorted(slots.items()):
                await conn.execute(
                    update(rate_counters)
                    .where(rate_counters.c.key == rate_key)
                    .values(count=rate_counters.c.count - count)
                )
            await conn.execute(delete(rate_counters).where(rate_counters.c.expires_at < moment))
            if orphans:
                insert = postgresql.insert if self._postgres else sqlite.insert
                await conn.execute(insert(usage_records).on_conflict_do_nothing(), orphans)
            await conn.execute(
                delete(budget_contexts).where(
                    budget_contexts.c.seen_at < moment - KEEP_SECONDS,
                    budget_contexts.c.id.not_in(select(budget_reservations.c.context_id)),
                )
            )
        if found:
            log.warning("settled %d orphaned reservations at their reserved cost", len(found))
        return len(found)

    async def _expired(self, conn: AsyncConnection, moment: int) -> list[Any]:
        """Take (delete) up to ``SWEEP_BATCH`` expired reservations, each with its context's
        JSON. One whose context is missing, which the sweeper's own rules never allow, is left
        in place, still counted at its worst case, and logged: without its context its
        counters are not known."""
        r = budget_reservations.c
        expired = select(r.request_id, r.amount_picos, r.rate_charges, r.created_us, r.context_id)
        expired = expired.where(r.expires_at < moment).limit(SWEEP_BATCH)
        if self._postgres:  # replicas sweep side by side
            expired = expired.with_for_update(skip_locked=True)
        taken = (await conn.execute(expired)).all()
        if not taken:
            return []
        bodies = dict(
            (
                await conn.execute(
                    select(budget_contexts.c.id, budget_contexts.c.body).where(
                        budget_contexts.c.id.in_({row[4] for row in taken})
                    )
                )
            ).all()
        )
        found = [(*row[:4], bodies[row[4]]) for row in taken if row[4] in bodies]
        if len(found) < len(taken):
            log.error(
                "%d expired reservations name a context that is gone; left counted at their"
                " reserved cost",
                len(taken) - len(found),
            )
        if found:
            await conn.execute(
                delete(budget_reservations).where(r.request_id.in_([row[0] for row in found]))
            )
        return found


def _by_id(budget: Budget) -> str:
    return budget.id


def _day_of(seconds: int) -> tuple[int, int, dict[Window, int]]:
    """The UTC day the instant ``seconds`` since the epoch falls in, as ``Ledger._today``."""
    day = seconds - seconds % SECONDS_A_DAY
    return day, day + SECONDS_A_DAY, day_window_starts(day)


def _rate_asks(limits: Sequence[LimitHit], org_id: str, minute: int, tokens: int) -> list[RateAsk]:
    """The rate-limit counters a call takes a slot of (``tokens`` of each per-minute token
    limit), in the order they are locked in."""
    rates = []
    for hit in sorted(limits, key=lambda h: (h.kind, h.scope)):
        if hit.kind == LimitKind.CONCURRENT:
            rates.append(RateAsk(hit, f"{org_id}|conc|{hit.scope}", 1, None, None))
        else:
            amount = 1 if hit.kind == LimitKind.RPM else tokens
            key = f"{org_id}|{hit.kind}|{hit.scope}|{minute}"
            rates.append(RateAsk(hit, key, amount, minute + 120, minute + 60))
    return rates


_HEADER_SUFFIX = {LimitKind.RPM: "requests", LimitKind.TPM: "tokens"}


def limit_headers(
    states: Sequence[LimitState], now: datetime, anthropic: bool = False
) -> list[tuple[bytes, bytes]]:
    """``x-ratelimit-{limit,remaining,reset}-{requests,tokens}`` of the tightest per-minute
    limits a call was admitted under (the names OpenAI's API uses; the reset in seconds);
    with ``anthropic``, also ``anthropic-ratelimit-{requests,tokens}-{limit,remaining,reset}``
    (the names Anthropic's API uses; the reset as an RFC 3339 instant)."""
    headers: list[tuple[bytes, bytes]] = []
    for kind, suffix in _HEADER_SUFFIX.items():
        mine = [s for s in states if s.kind == kind]
        if not mine:
            continue
        tight = min(mine, key=lambda s: s.limit - s.count)
        reset_at = tight.reset_at or 0
        remaining = max(0, tight.limit - tight.count)
        reset = max(0, reset_at - int(now.timestamp()))
        headers += [
            (f"x-ratelimit-limit-{suffix}".encode(), str(tight.limit).encode()),
            (f"x-ratelimit-remaining-{suffix}".encode(), str(remaining).encode()),
            (f"x-ratelimit-reset-{suffix}".encode(), f"{reset}s".encode()),
        ]
        if anthropic:
            headers += _anthropic_headers(suffix, tight.limit, remaining, reset_at)
    return headers


def refused_headers(exc: RateLimited, anthropic: bool = False) -> list[tuple[bytes, bytes]]:
    """The ``x-ratelimit-*`` headers of the limit that refused a call (with ``anthropic``,
    the ``anthropic-ratelimit-*`` ones too)."""
    suffix = _HEADER_SUFFIX.get(exc.details.get("limit_kind", ""))
    if suffix is None:
        return []
    limit = exc.details["limit"]
    headers = [
        (f"x-ratelimit-limit-{suffix}".encode(), str(limit).encode()),
        (f"x-ratelimit-remaining-{suffix}".encode(), b"0"),
        (f"x-ratelimit-reset-{suffix}".encode(), f"{round(exc.retry_after)}s".encode()),
    ]
    resets_at = exc.details.get("resets_at")
    if anthropic and resets_at:
        reset_at = int(datetime.fromisoformat(resets_at).timestamp())
        headers += _anthropic_headers(suffix, limit, 0, reset_at)
    return headers


def _anthropic_headers(
    suffix: str, limit: int, remaining: int, reset_at: int
) -> list[tuple[bytes, bytes]]:
    reset = datetime.fromtimestamp(reset_at, UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
    return [
        (f"anthropic-ratelimit-{suffix}-limit".encode(), str(limit).encode()),
        (f"anthropic-ratelimit-{suffix}-remaining".encode(), str(remaining).encode()),
        (f"anthropic-ratelimit-{suffix}-reset".encode(), reset.encode()),
    ]
