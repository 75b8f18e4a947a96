"""The ledger's writer: one group-committed transaction per tick for all the hot path writes.

Callers queue what they need written: a call about to be forwarded its reservation, a call that
ended its usage row and the settlement of its reservation, a call that was never forwarded the
release of its reservation. A tick takes everything queued since the last one and, in one
transaction:

1. ends the reservations of the calls that ended: ``DELETE ... RETURNING`` says which still
   existed, so a reservation settled before, or taken by the sweeper, changes nothing
   (settlement is idempotent by request id);
2. inserts the ended calls' usage rows (a row whose request id exists is skipped);
3. creates the counters the new reservations need (the first time this writer sees each),
   then reads and locks every counter the tick touches (PostgreSQL: ``SELECT ... FOR UPDATE``
   in key order, budget counters before rate counters, as the sweeper does, so replicas queue
   instead of deadlocking; SQLite: the tick holds the database's one write lock);
4. moves the ended reservations from reserved to spent (or, released, back to nothing), then
   decides the new reservations in arrival order (``budgets/reserve.py``);
5. writes each changed counter once, the contexts of the new reservations this writer has not
   written within the hour (``budgets/contexts.py``), and inserts the admitted reservations.

Each caller resumes when its tick has committed: a reservation is durable before its call is
forwarded (invariant 3). A call that ended settles without waiting (``GroupCommit.enqueue``):
its reservation already counts it at its worst case, and the sweeper settles it should the
tick never commit; only a call with no reservation (its usage row is its only record) or
holding a concurrent-calls slot waits for its row before its end is told to the client (see
``gateway/calls.py``). Ending calls and reserving new ones in the same transaction costs one
commit per tick, not two.

The tick is written once, as a generator of statements (``Tick.steps``), and run by either
engine: on SQLite on the event loop's thread with its own ``sqlite3`` connection (see
``store/bulk.py``); on PostgreSQL on an asyncpg connection the writer keeps, where steps 1-3
are one statement and step 5 another (rows travel as one JSON parameter), so a tick is four
round trips: BEGIN, those two, COMMIT. A tick of usage rows alone is one ``INSERT`` there,
atomic by itself.

On PostgreSQL a tick is first tried **optimistically**, as one statement (one round trip,
committed by itself: ``OPTIMISTIC_POSTGRES``) that admits every new reservation of the tick or
changes nothing. Each counter is moved by what the tick changes it by (settlements, releases,
reservations: additions, which commute), and a counter a new reservation goes to only where it
stays within its hard budget's or rate limit's limit, as PostgreSQL finds it under the row's
lock (a row another transaction is changing is waited for and checked again once that
commits). Admitting all the calls of a tick at once is what deciding them one by one would
give whenever all fit; when one does not, or a counter is missing (a new window) or a
reservation to end is gone (settled before, or swept), the statement fails on purpose and the
tick is written the locking way above, which decides each call on the counters as they are.
After misses in a row the writer tries again after 1, 2, 4 ... 64 ticks (``Optimism``).

Such a tick is checked against the counters as they are, not as this writer last saw them, so
another replica's or the sweeper's changes in between do not make it miss. It updates the
counters in key order (PostgreSQL joins the sorted keys to their rows in a nested loop), as the
locking way locks them, so the two queue on a counter's row lock instead of deadlocking; were a
deadlock ever detected, the tick would only miss. (Ticks written two at once, a connection each,
measured slower, before and after the writer stopped scanning the reservations table
(``store/bulk.py`` ``KEYED_ONLY``): every tick of a budgeted call moves the same few counters,
whose row locks are held until each commits, so the second waits for the first's commit, and
the smaller ticks cost the server more CPU a call (each statement and commit costs it about as
much as ten rows).)
"""

from __future__ import annotations

import sqlite3
from collections.abc import Coroutine, Generator, Iterable
from dataclasses import dataclass
from functools import lru_cache
from typing import Any, TypeVar, cast

import asyncpg
import orjson

from pilothouse.budgets.contexts import Context, Written
from pilothouse.budgets.model import Enforcement, epoch
from pilothouse.budgets.reserve import (
    RESERVATION_COLUMNS,
    Ask,
    BudgetKey,
    Counter,
    RateCharge,
    Reservation,
    decide,
    summed,
)
from pilothouse.budgets.tables import budget_reservations
from pilothouse.gateway.tables import UNSUMMED, usage_records
from pilothouse.store.bulk import OwnWriter, RowInsert, numbered
from pilothouse.store.engine import Store
from pilothouse.store.group import GroupCommit

Ended = tuple[dict[str, Any] | None, Reservation | None]
"""A call that ended: its usage row (None if it was never forwarded: a release) and what was
reserved for it (None for a call under no budget or limit); a plain tuple, made for every
call."""
Item = Ask | Ended


@dataclass(frozen=True, slots=True)
class Many:
    """Run ``sql`` once per parameter tuple."""

    sql: str
    params: list[tuple[Any, ...]]


@dataclass(frozen=True, slots=True)
class Rows:
    """Run ``sql`` once; the rows it returns are sent back into the tick."""

    sql: str
    params: tuple[Any, ...]


@dataclass(frozen=True, slots=True)
class Count:
    """Run ``sql`` once; how many rows it changed is sent back into the tick (SQLite only)."""

    sql: str
    params: tuple[Any, ...]


Step = Many | Rows | Count
Ending = dict[str, tuple[dict[str, Any] | None, Reservation]]
"""The reservations a tick ends, by request id: each with its usage row (None: released)."""
ReadCounters = tuple[list[str], dict[BudgetKey, Counter], dict[str, int]]
"""What a tick's read learns: which reservations still existed, the budget and rate counters."""
KNOWN_COUNTERS_MAX = 100_000
# On SQLite settlements (which nobody waits for) are held until 64 are, or the first has been
# for 20 ms, and then ride together in the next tick: a tick writes the pages of the usage
# table and its indexes that its rows touch, much the same for 16 rows as for 64, so written
# four times rarer they cost about 3 µs less a call (bench/README.md, eleventh pass). On
# PostgreSQL each wakes the writer at once: its tick is then written while the next calls are
# served, not on their reservations' way (tenth pass: holding them measured slower there).
SQLITE_LAZY_SECONDS = 0.02
SQLITE_LAZY_BATCH = 64
OPTIMISTIC_BACKOFF_MAX = 64
RACED = "ledger tick raced"  # what the optimistic tick fails with when a counter moved
S = TypeVar("S")

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
    "UPDATE budget_counters SET spent_picos = ?, reserved_picos = ?, calls = ?"
    " WHERE budget_id = ? AND window_start = ?"
)
SET_RATE_COUNTER = "UPDATE rate_counters SET count = ? WHERE key = ?"
# A context written again says it is still in use (``budgets/contexts.py``).
UPSERT_CONTEXT = (
    "INSERT INTO budget_contexts (id, body, seen_at) VALUES (?, ?, ?)"
    " ON CONFLICT (id) DO UPDATE SET seen_at = excluded.seen_at"
)

# SQLite: lists travel as one JSON parameter.
END_RESERVATIONS = (
    "DELETE FROM budget_reservations WHERE request_id IN"
    " (SELECT value FROM json_each(?)) RETURNING request_id"
)
# A tick first ends its reservations without RETURNING, which costs SQLite less than half the
# CPU; only if fewer existed than it ends (one settled twice, or taken by the sweeper) is that
# undone and they are ended again, learning which existed. The savepoint is let go of at once:
# while one is open SQLite journals every page the transaction changes, to undo it.
SAVE_ENDING = "SAVEPOINT ending"
END_RESERVATIONS_COUNTED = (
    "DELETE FROM budget_reservations WHERE request_id IN (SELECT value FROM json_each(?))"
)
UNDO_ENDING = "ROLLBACK TO ending"
KEEP_ENDING = "RELEASE ending"
# A join, each key looked up by the primary key: the row-value ``IN (SELECT ...)`` it replaces
# searched by the budget id alone and cost nearly twice the CPU (the keys are distinct: each
# counter comes back once either way).
READ_BUDGET_COUNTERS = (
    "SELECT c.budget_id, c.window_start, c.spent_picos, c.reserved_picos, c.calls"
    " FROM json_each(?) AS k JOIN budget_counters AS c"
    " ON c.budget_id = json_extract(k.value, '$[0]')"
    " AND c.window_start = json_extract(k.value, '$[1]')"
)
READ_RATE_COUNTERS = (
    "SELECT key, count FROM rate_counters WHERE key IN (SELECT value FROM json_each(?))"
)

# PostgreSQL (see the module): statements combined as CTEs, rows as one JSON parameter each,
# typed ``json``, not ``jsonb``: read once into the rows, the text need not be made into jsonb
# first (which sorts every object's keys): about 4 µs less of the server's CPU per usage row.
INSERT_USAGE_POSTGRES = (
    "INSERT INTO usage_records SELECT * FROM json_populate_recordset(NULL::usage_records, $1)"
    " ON CONFLICT (request_id) DO NOTHING"
)
READ_POSTGRES = (
    "WITH gone AS (DELETE FROM budget_reservations WHERE request_id = ANY($1::text[])"
    " RETURNING request_id),"
    " used AS (INSERT INTO usage_records"
    " SELECT * FROM json_populate_recordset(NULL::usage_records, $2::json)"
    " ON CONFLICT (request_id) DO NOTHING)"
    " SELECT g.ids, c.budget_id, c.window_start, c.spent_picos, c.reserved_picos, c.calls"
    " FROM (SELECT coalesce(array_agg(request_id), '{}'::text[]) AS ids FROM gone) AS g"
    " LEFT JOIN (SELECT budget_id, window_start, spent_picos, reserved_picos, calls"
    " FROM budget_counters WHERE (budget_id, window_start) IN"
    " (SELECT * FROM unnest($3::text[], $4::bigint[]))"
    " ORDER BY budget_id, window_start FOR UPDATE) AS c ON true"
)
WRITE_POSTGRES = (
    "WITH b AS (UPDATE budget_counters AS c"
    " SET spent_picos = v.s, reserved_picos = v.r, calls = v.n"
    " FROM unnest($1::text[], $2::bigint[], $3::bigint[], $4::bigint[], $5::bigint[])"
    " AS v(id, ws, s, r, n) WHERE c.budget_id = v.id AND c.window_start = v.ws),"
    " r AS (UPDATE rate_counters AS c SET count = v.n"
    " FROM unnest($6::text[], $7::bigint[]) AS v(k, n) WHERE c.key = v.k)"
    " INSERT INTO budget_reservations"
    " SELECT * FROM json_populate_recordset(NULL::budget_reservations, $8::json)"
)
# The whole tick as one statement, without a lock taken ahead: every counter is moved by what
# the tick changes it by, and a counter a new reservation goes to only if it stays within its
# limit (the hard budget's, the rate limit's: checked by PostgreSQL on the counter as it is,
# once any transaction changing it has committed); unless every counter was moved, every ending
# reservation still existed and every new one was inserted, the statement fails (a cast error,
# on purpose) and changes nothing: the tick is then written the locking way. A counter only
# ended reservations go to may be gone (its budget deleted, its minute cleaned up after a long
# call), as the locking way allows too. It returns each rate counter as it left it (for the
# ``x-ratelimit-*`` headers).
# Its arrays travel as array literals in text parameters, cast by the statement: asyncpg encodes
# an array parameter element by element, which cost the proxy about 20 µs a tick more.
# Reservation rows are inserted without ``ON CONFLICT`` (here and in ``WRITE_POSTGRES``): every
# call's request id is new and no tick is written twice (``postgres_once`` never runs one again,
# the locking way only when COMMIT was not sent), so a row already there would be a bug, which
# fails the tick rather than admit a call without its row. It costs the server about 4 µs less
# a call.
OPTIMISTIC_POSTGRES = (
    "WITH gone AS (DELETE FROM budget_reservations WHERE request_id = ANY($1::text::text[])"
    " RETURNING 1),"
    " used AS (INSERT INTO usage_records"
    " SELECT * FROM json_populate_recordset(NULL::usage_records, $2::json)"
    " ON CONFLICT (request_id) DO NOTHING),"
    " b AS (UPDATE budget_counters AS c SET spent_picos = c.spent_picos + v.s,"
    " reserved_picos = c.reserved_picos + v.r, calls = c.calls + v.n"
    " FROM unnest($3::text::text[], $4::text::bigint[], $5::text::bigint[],"
    " $6::text::bigint[], $7::text::bigint[], $8::text::bigint[], $9::text::boolean[])"
    " AS v(id, ws, s, r, n, cap, asked)"
    " WHERE c.budget_id = v.id AND c.window_start = v.ws"
    " AND (v.cap IS NULL OR c.spent_picos + v.s + c.reserved_picos + v.r <= v.cap)"
    " RETURNING v.asked),"
    " r AS (UPDATE rate_counters AS c SET count = c.count + v.n"
    " FROM unnest($10::text::text[], $11::text::bigint[], $12::text::bigint[],"
    " $13::text::boolean[]) AS v(k, n, cap, asked)"
    " WHERE c.key = v.k AND (v.cap IS NULL OR c.count + v.n <= v.cap)"
    " RETURNING c.key, c.count, v.asked),"
    " held AS (INSERT INTO budget_reservations"
    " SELECT * FROM json_populate_recordset(NULL::budget_reservations, $14::json)"
    " RETURNING 1)"
    " SELECT checked.ok, r.key, r.count FROM (SELECT CAST(CASE WHEN"
    " (SELECT count(*) FROM gone) = $15"
    " AND (SELECT count(*) FROM b WHERE b.asked) = $16"
    " AND (SELECT count(*) FROM r WHERE r.asked) = $17"
    " AND (SELECT count(*) FROM held) = $18"
    f" THEN '1' ELSE '{RACED}' END AS integer) AS ok) AS checked LEFT JOIN r ON checked.ok = 1"
)
READ_RATE_COUNTERS_POSTGRES = (
    "SELECT key, count FROM rate_counters WHERE key = ANY($1::text[]) ORDER BY key FOR UPDATE"
)


class Optimism:
    """Whether to write the next tick as one statement first (PostgreSQL): after misses in a
    row (calls near a hard limit, counters of a new window, another replica's sweeper), less
    and less often, each miss having cost a round trip."""

    def __init__(self) -> None:
        self._wait = 0  # ticks to write the locking way before trying again
        self._missed = 0  # optimistic ticks missed in a row
        self.hits = 0  # optimistic ticks written
        self.misses = 0  # optimistic ticks that changed nothing

    def worth_trying(self) -> bool:
        """Whether to try the next tick optimistically."""
        if self._wait:
            self._wait -= 1
            return False
        return True

    def hit(self) -> None:
        """An optimistic tick was written."""
        self._missed = 0
        self.hits += 1

    def missed(self) -> None:
        """An optimistic tick changed nothing: wait 1, 2, 4, ... 64 ticks to try again."""
        self._wait = min(2**self._missed, OPTIMISTIC_BACKOFF_MAX)
        self._missed += 1
        self.misses += 1


class Tick:
    """One transaction's worth of queued items, as the statements that write it."""

    def __init__(
        self,
        items: list[Item],
        dialect: str,
        usage: RowInsert,
        held: RowInsert,
        known: set[BudgetKey],
        written: Written,
    ) -> None:
        self._dialect = dialect
        self._usage = usage
        self._held = held
        self._known = known
        self.asks = [item for item in items if isinstance(item, Ask)]
        self.ended = [item for item in items if not isinstance(item, Ask)]
        self.created: list[BudgetKey] = []  # counters made (or found) by this tick
        # The contexts of the new reservations this writer has not written (within the hour),
        # and the time the tick writes them with.
        self.contexts: list[Context] = []
        self.seen_at = 0
        if self.asks:
            self.seen_at = epoch(max([ask.now for ask in self.asks]))
            contexts = {ask.context.id: ask.context for ask in self.asks}
            self.contexts = written.due(contexts, self.seen_at)

    def context_rows(self) -> list[tuple[str, str, int]]:
        """The contexts to write, as ``UPSERT_CONTEXT``'s parameters."""
        return [(c.id, c.body, self.seen_at) for c in self.contexts]

    @property
    def needs_transaction(self) -> bool:
        """Whether the tick is more than one statement (usage rows alone are one)."""
        return (
            self._dialect != "postgresql"
            or bool(self.asks)
            or any(reservation is not None for _, reservation in self.ended)
        )

    def steps(self) -> Generator[Step, Any, None]:
        """The tick's statements in order; ``Rows`` steps are sent their rows back, ``Count``
        steps how many rows they changed."""
        ending, rows = self._ending()
        if self._dialect == "postgresql" and not self.needs_transaction:
            if rows:
                yield Many(INSERT_USAGE_POSTGRES, [(_json(rows),)])
            return
        asked = {key for charged in _distinct(a.budgets for a in self.asks) for _, key in charged}
        new_rates = sorted({(r.key, r.expires_at) for ask in self.asks for r in ask.rates})
        # A counter, once made, stays until its budget is deleted (then it is not wanted).
        self.created = sorted(asked - self._known)
        if self._dialect == "postgresql":
            read = self._read_postgres(ending, rows, asked, new_rates)
        else:
            read = self._read_sqlite(ending, rows, asked, new_rates)
        gone_ids, spent, rates = yield from read
        gone = [ending[request_id] for request_id in gone_ids]
        before_budgets = {k: tuple(v) for k, v in spent.items()}
        before_rates = dict(rates)

        _move(_settlements(gone, rates, from_zero=False), spent, make=False)
        decide(self.asks, spent, rates)

        changed = sorted(
            (k, v) for k, v in spent.items() if tuple(v) != before_budgets.get(k, tuple(v))
        )
        moved = sorted((k, n) for k, n in rates.items() if n != before_rates.get(k, n))
        admitted = [ask.row for ask in self.asks if ask.refusal is None]
        if self.contexts:  # before the reservations naming them (no foreign key: any order)
            yield Many(UPSERT_CONTEXT, self.context_rows())
        if self._dialect == "postgresql":
            if changed or moved or admitted:
                yield Many(
                    WRITE_POSTGRES,
                    [
                        (
                            [k[0] for k, _ in changed],
                            [k[1] for k, _ in changed],
                            [v[0] for _, v in changed],
                            [v[1] for _, v in changed],
                            [v[2] for _, v in changed],
                            [k for k, _ in moved],
                            [n for _, n in moved],
                            _objects(admitted),
                        )
                    ],
                )
            return
        if changed:
            yield Many(SET_BUDGET_COUNTER, [(*v, *k) for k, v in changed])
        if moved:
            yield Many(SET_RATE_COUNTER, [(n, k) for k, n in moved])
        if admitted:  # rows in the table's column order, no column to process (see __init__)
            yield Many(self._held.sql, cast(list[tuple[Any, ...]], admitted))

    def optimistic(self) -> tuple[Any, ...]:
        """PostgreSQL: the tick as one statement (``OPTIMISTIC_POSTGRES``) that admits every
        new reservation or changes nothing: each counter moved by what the tick's settlements,
        releases and reservations change it by, and the hard budgets and rate limits a new
        reservation goes to checked on the counters as they are. Every call admitted at once
        is the outcome deciding them one by one would give (settlements first, then the calls
        in arrival order: none takes room back), so the locking way decides only when one of
        them would not fit."""
        ending, rows = self._ending()
        rates: dict[str, int] = {}
        budgets: dict[BudgetKey, Counter] = {}  # what each counter moves by: spent, reserved, calls
        _move(_settlements(ending.values(), rates, from_zero=True), budgets, make=True)
        rate_caps: dict[str, int] = {}
        for ask in self.asks:
            for rate in ask.rates:
                rates[rate.key] = rates.get(rate.key, 0) + rate.amount
                rate_caps[rate.key] = rate.hit.limit
        caps: dict[BudgetKey, int] = {}
        asked: set[BudgetKey] = set()
        for charged, amount in summed(self.asks):
            for budget, key in charged:
                asked.add(key)
                counter = budgets.get(key)
                if counter is None:
                    budgets[key] = [0, amount, 0]
                else:
                    counter[1] += amount
                if budget.enforcement is Enforcement.HARD:
                    caps[key] = budget.limit_picos
        keys = sorted(budgets)  # the order the counters are locked in (nested loop over them)
        rate_keys = sorted(rates)
        rates_asked = {rate.key for ask in self.asks for rate in ask.rates}
        admitted = [ask.row for ask in self.asks]
        return (
            _texts(sorted(ending)),
            _json(rows),
            _texts([k[0] for k in keys]),
            _numbers([k[1] for k in keys]),
            _numbers([budgets[k][0] for k in keys]),
            _numbers([budgets[k][1] for k in keys]),
            _numbers([budgets[k][2] for k in keys]),
            _numbers([caps.get(k) for k in keys]),
            _flags([k in asked for k in keys]),
            _texts(rate_keys),
            _numbers([rates[k] for k in rate_keys]),
            _numbers([rate_caps.get(k) for k in rate_keys]),
            _flags([k in rates_asked for k in rate_keys]),
            _objects(admitted),
            len(ending),
            len(asked),
            len(rates_asked),
            len(admitted),
        )

    def admitted(self, rate_counts: dict[str, int]) -> None:
        """The optimistic statement was written: every call is admitted, and each rate counter
        it took was, once it took it, ``rate_counts`` (as the statement left it) less what the
        calls after it took."""
        if not rate_counts:  # no call took a rate limit's slot: none has counts to be told
            return
        later = dict(rate_counts)
        for ask in reversed(self.asks):
            ask.refusal = None
            counts = []
            for rate in reversed(ask.rates):
                counts.append(later[rate.key])
                later[rate.key] -= rate.amount
            ask.counts = counts[::-1]

    def _ending(self) -> tuple[Ending, list[dict[str, Any]]]:
        """The reservations the tick ends (by request id, with their usage rows) and the usage
        rows it inserts."""
        ended = self.ended
        ending = {r.request_id: (row, r) for row, r in ended if r is not None}
        return ending, [row for row, _ in ended if row is not None]

    def _read_sqlite(
        self,
        ending: Ending,
        rows: list[dict[str, Any]],
        asked: set[BudgetKey],
        new_rates: list[tuple[str, int | None]],
    ) -> Generator[Step, Any, ReadCounters]:
        """End the reservations, insert the usage rows, make and read the counters."""
        gone_ids: list[str] = []
        if ending:  # first, as on PostgreSQL
            ids = sorted(ending)
            ids_json = _json(ids)
            yield Rows(SAVE_ENDING, ())
            if (yield Count(END_RESERVATIONS_COUNTED, (ids_json,))) == len(ids):
                gone_ids = ids  # every one still existed
                yield Rows(KEEP_ENDING, ())
            else:
                yield Rows(UNDO_ENDING, ())
                yield Rows(KEEP_ENDING, ())
                found = yield Rows(END_RESERVATIONS, (ids_json,))
                gone_ids = [row[0] for row in found]
        if rows:
            yield Many(self._usage.sql, [self._usage.values(row) for row in rows])
        if self.created:
            yield Many(NEW_BUDGET_COUNTER, [(b, w, b) for b, w in self.created])
        if new_rates:
            yield Many(NEW_RATE_COUNTER, new_rates)
        ended = _distinct(ending[i][1].charges for i in gone_ids)
        budget_keys = sorted(asked.union(*ended))
        spent: dict[BudgetKey, Counter] = {}
        if budget_keys:
            found = yield Rows(READ_BUDGET_COUNTERS, (_json(budget_keys),))
            spent = {(r[0], r[1]): [r[2], r[3], r[4]] for r in found}
        rate_keys = {key for key, _ in new_rates}
        rate_keys |= {c.key for i in gone_ids for c in ending[i][1].rate_charges}
        rates: dict[str, int] = {}
        if rate_keys:
            found = yield Rows(READ_RATE_COUNTERS, (_json(sorted(rate_keys)),))
            rates = {r[0]: r[1] for r in found}
        return gone_ids, spent, rates

    def _read_postgres(
        self,
        ending: Ending,
        rows: list[dict[str, Any]],
        asked: set[BudgetKey],
        new_rates: list[tuple[str, int | None]],
    ) -> Generator[Step, Any, ReadCounters]:
        """The same in one statement (two more the first time a counter is needed, one more
        when rate limits apply). Every counter an ending reservation went to is locked, since
        which of them still exist is learnt in the same statement."""
        if self.created:
            yield Many(NEW_BUDGET_COUNTER, [(b, w, b) for b, w in self.created])
        if new_rates:
            yield Many(NEW_RATE_COUNTER, new_rates)
        budget_keys = sorted(asked.union(*_distinct(r.charges for _, r in ending.values())))
        found = yield Rows(
            READ_POSTGRES,
            (
                sorted(ending),
                _json(rows),
                [k[0] for k in budget_keys],
                [k[1] for k in budget_keys],
            ),
        )
        gone_ids: list[str] = list(found[0][0]) if found else []
        spent = {(r[1], r[2]): [r[3], r[4], r[5]] for r in found if r[1] is not None}
        rate_keys = {key for key, _ in new_rates}
        rate_keys |= {c.key for _, r in ending.values() for c in r.rate_charges}
        rates: dict[str, int] = {}
        if rate_keys:
            found = yield Rows(READ_RATE_COUNTERS_POSTGRES, (sorted(rate_keys),))
            rates = {r[0]: r[1] for r in found}
        return gone_ids, spent, rates


def _json(values: list[Any]) -> str:
    """Values (rows, keys) as one JSON parameter (timestamps in ISO 8601 with their offset)."""
    return orjson.dumps(values, option=orjson.OPT_NON_STR_KEYS).decode()


# List comprehensions, not generators, in these three: one frame a tick, not one a value.
def _texts(values: list[str]) -> str:
    """A PostgreSQL array literal of strings (each quoted, its quotes and backslashes escaped)."""
    if not values:
        return "{}"
    joined = '","'.join(values)
    # Escaped only if a value holds a quote or a backslash (a request id never does): the
    # joined text then has more quotes than its separators' (two scans in C, not two
    # replacements a value in Python).
    if "\\" in joined or joined.count('"') != 2 * (len(values) - 1):
        joined = '","'.join([v.replace("\\", "\\\\").replace('"', '\\"') for v in values])
    return '{"' + joined + '"}'


def _numbers(values: list[int | None]) -> str:
    """A PostgreSQL array literal of integers (None as NULL)."""
    return "{" + ",".join(["NULL" if v is None else str(v) for v in values]) + "}"


def _flags(values: list[bool]) -> str:
    """A PostgreSQL array literal of booleans."""
    return "{" + ",".join(["t" if v else "f" for v in values]) + "}"


def _objects(objects: list[Any]) -> str:
    """PostgreSQL's reservation rows, each made a JSON object by its call (``Ledger.reserve``),
    as one JSON parameter (``json_populate_recordset``)."""
    return "[" + ",".join(objects) + "]"


def _distinct(sequences: Iterable[S]) -> list[S]:
    """Each of ``sequences`` once, by identity: the calls charged to the same budgets share one
    (``Ledger._charges``), so a tick goes through each set of budgets once, not each call's."""
    return list({id(one): one for one in sequences}.values())


Moves = list[tuple[tuple[BudgetKey, ...], Counter]]
"""Settlements summed by the counters they go to: each set of counters with what it moves by
(spent, reserved, calls)."""


def _settlements(
    ending: Iterable[tuple[dict[str, Any] | None, Reservation]],
    rates: dict[str, int],
    *,
    from_zero: bool,
) -> Moves:
    """What settling each reservation to its usage row (None: releasing it) moves the budget
    counters by, summed over the calls charged to the same budgets (they share one tuple of
    counters: ``Ledger._charges`` makes it once per set of budgets and day), so that a tick's
    Python is spent per set of budgets, not per counter of every call. Rate counters in
    ``rates`` are moved as they go (``from_zero``: each one a call took starts at 0, as a
    move; otherwise only those in ``rates`` are, as read)."""
    moves: dict[int, tuple[tuple[BudgetKey, ...], Counter]] = {}  # by id(charges)
    for row, reservation in ending:
        charges = reservation.charges
        same = moves.get(id(charges))
        if same is None:
            same = moves[id(charges)] = (charges, [0, 0, 0])
        move = same[1]
        move[1] -= reservation.amount_picos
        if row is not None:
            move[0] += row["cost_picos"]
            move[2] += 1
        if reservation.rate_charges:
            if from_zero:
                for charge in reservation.rate_charges:
                    rates.setdefault(charge.key, 0)
            _end_rates(row, reservation.rate_charges, rates)
    return list(moves.values())


def _move(moves: Moves, counters: dict[BudgetKey, Counter], *, make: bool) -> None:
    """Add ``moves`` to ``counters`` (a counter not there is made if ``make``, else skipped:
    its budget was deleted)."""
    for charges, (spent, reserved, calls) in moves:
        for key in charges:
            counter = counters.get(key)
            if counter is not None:
                counter[0] += spent
                counter[1] += reserved
                counter[2] += calls
            elif make:
                counters[key] = [spent, reserved, calls]


def _end_rates(
    row: dict[str, Any] | None, charges: tuple[RateCharge, ...], rates: dict[str, int]
) -> None:
    """Settle (None: release) what a call took of its rate limits on the counters."""
    if row is None:
        for rate in charges:
            if rate.key in rates:  # a past minute's counter may be gone
                rates[rate.key] -= rate.taken
        return
    tokens = _tokens(row)
    for rate in charges:
        if rate.key in rates:
            rates[rate.key] += rate.settled(tokens)


def _tokens(row: dict[str, Any]) -> int:
    """Every token of a call, as the per-minute token limits count them."""
    return int(
        row["input_tokens"]
        + row["output_tokens"]
        + row["cache_read_tokens"]
        + row["cache_write_tokens"]
    )


class LedgerWriter(GroupCommit[Item]):
    """Group-commits usage rows, reservations, settlements and releases (see the module)."""

    name = "ledger"
    # One turn of the loop before a tick is taken, so that the calls made ready alongside the
    # first (by one read of the sockets, or by the last tick's commit) join it. On SQLite,
    # where a tick's statements and commit run on the loop's own CPU, ticks grew from 15 to
    # 27 items and cost less CPU a call; PostgreSQL's kept their size (the tick in flight
    # gathers the next one's calls there already) and measured better all the same
    # (bench/README.md, eighth pass: budget enforcement's added p50 at c=32 from +0.46 to
    # +0.15 ms non-stream and +0.65 to +0.07 streamed on SQLite, +0.84 to +0.37 and +1.04 to
    # +0.21 on PostgreSQL). A second turn measured worse on PostgreSQL: each turn adds to
    # every call's wait.
    gather_turns = 1

    def __init__(self, store: Store) -> None:
        super().__init__()
        self._dialect = store.dialect
        # A usage row is written unsummed (``gateway/rollups.py``); on PostgreSQL the rows'
        # JSON has no ``rolled_up`` either, which ``json_populate_recordset`` makes NULL.
        self._usage = RowInsert(store, usage_records, key="request_id", omit=UNSUMMED)
        # Without ON CONFLICT, as on PostgreSQL (see OPTIMISTIC_POSTGRES).
        self._held = RowInsert(store, budget_reservations, key=None)
        # Reservation rows are made as tuples in the table's column order and bound as they
        # are: that holds only while the order is RESERVATION_COLUMNS and no column has a bind
        # processor (none of its types has one).
        if not self._held.as_is(RESERVATION_COLUMNS):
            raise TypeError("budget_reservations no longer matches RESERVATION_COLUMNS")
        self._writer = OwnWriter(store, "ledger")
        if self._dialect != "postgresql":
            self.lazy_seconds = SQLITE_LAZY_SECONDS
            self.lazy_batch = SQLITE_LAZY_BATCH
        self._known: set[BudgetKey] = set()  # budget counters known to exist
        self._written = Written()  # contexts written, and when
        self.optimism = Optimism()

    # These two hand back ``submit``'s coroutine rather than await it in one of their own
    # (a reservation is ``submit`` itself: ``Ledger.decide``): every call goes through one or
    # two of them, and each coroutine between the caller and its future costs CPU when it is
    # made, suspended, resumed and finished.

    def record(
        self, row: dict[str, Any], reservation: Reservation | None = None
    ) -> Coroutine[Any, Any, None]:
        """Write a call's usage ``row``, settling its ``reservation`` to the row's cost; the
        awaitable returns once committed (raises StoreUnavailable if not)."""
        return self.submit((row, reservation))

    def release(self, reservation: Reservation) -> Coroutine[Any, Any, None]:
        """Give back the reservation of a call that was never forwarded (no usage row)."""
        return self.submit((None, reservation))

    async def _write(self, items: list[Item]) -> None:
        tick = Tick(items, self._dialect, self._usage, self._held, self._known, self._written)
        contexts = tick.contexts
        writer = self._writer
        if self._dialect != "postgresql":
            await writer.sqlite(lambda conn: _run_sqlite(conn, tick))
        elif not tick.needs_transaction:
            await writer.postgres(lambda driver: _run_postgres(driver, tick), transaction=False)
            return
        elif not await self._optimistic(tick):
            await writer.postgres(lambda driver: _run_postgres(driver, tick))
        if len(self._known) > KNOWN_COUNTERS_MAX:
            self._known.clear()
        self._known.update(tick.created)
        self._written.wrote(contexts, tick.seen_at)

    async def _optimistic(self, tick: Tick) -> bool:
        """Write ``tick`` as one statement admitting every call, if each fits (if not, or if
        a reservation it ends is gone, nothing is written); whether it was written."""
        optimism = self.optimism
        if not optimism.worth_trying():
            return False
        if tick.contexts:  # first, on their own: the one statement has no room for them
            rows = tick.context_rows()
            await self._writer.postgres(
                lambda driver: driver.executemany(_numbered(UPSERT_CONTEXT), rows),
                transaction=False,
            )
            tick.contexts = []  # written: the locking way, if it comes to that, need not
        params = tick.optimistic()
        counts = await self._writer.postgres_once(lambda driver: _run_optimistic(driver, params))
        if counts is None:
            optimism.missed()
            return False
        optimism.hit()
        tick.admitted(counts)
        return True

    def _abandoned(self, items: list[Item]) -> None:
        # A call cancelled while its reservation was being decided (its client went away)
        # will never be forwarded: give back what was admitted, now, not at its expiry.
        for item in items:
            if isinstance(item, Ask) and item.refusal is None:
                self._enqueue((None, item))

    async def _close(self) -> None:
        await self._writer.close()


def _run_sqlite(conn: sqlite3.Connection, tick: Tick) -> None:
    steps = tick.steps()
    try:
        step = next(steps)
        while True:
            if isinstance(step, Many):
                conn.executemany(step.sql, step.params)
                step = next(steps)
            elif isinstance(step, Count):
                step = steps.send(conn.execute(step.sql, step.params).rowcount)
            else:
                step = steps.send(conn.execute(step.sql, step.params).fetchall())
    except StopIteration:
        pass


async def _run_optimistic(driver: Any, params: tuple[Any, ...]) -> dict[str, int] | None:
    """Each rate counter as the statement left it; None if it wrote nothing."""
    try:
        found = await driver.fetch(OPTIMISTIC_POSTGRES, *params)
    except asyncpg.InvalidTextRepresentationError as exc:
        if RACED not in str(exc):
            raise
        return None  # a call would not fit, a counter is missing, or a reservation is gone
    except asyncpg.DeadlockDetectedError:
        return None  # with a tick locking counters in key order (this one does not promise to)
    return {r[1]: r[2] for r in found if r[1] is not None}


async def _run_postgres(driver: Any, tick: Tick) -> None:
    steps = tick.steps()
    try:
        step = next(steps)
        while True:
            if isinstance(step, Many):
                await driver.executemany(_numbered(step.sql), step.params)
                step = next(steps)
            else:
                step = steps.send(await driver.fetch(step.sql, *step.params))
    except StopIteration:
        pass


@lru_cache(maxsize=64)
def _numbered(sql: str) -> str:
    return numbered(sql)
