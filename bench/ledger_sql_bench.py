"""What the PostgreSQL server spends on the ledger's statements, shape against shape.

``ledger_bench.py`` measures the whole ledger; this isolates the SQL the writer sends, on one
connection of its own (the server process's CPU read from /proc before and after each run), in
a scratch schema made for the run (the tables copied from the store's, without foreign keys)
and dropped after. Each comparison runs its shapes alternately, ``--rounds`` times, and prints
the server's CPU per row or per call (median and each round) and the ratio (the server must run
on this machine; elsewhere its CPU prints as nan):

- ``usage rows``: a tick's usage rows (16 a statement) as one ``jsonb`` parameter, as the
  writer sent them before, against one ``json`` parameter, as it does now;
- ``budgeted calls``: the optimistic tick (``budgets/writer.py`` ``OPTIMISTIC_POSTGRES``: 8
  calls admitted on four budgets, the 8 of the tick before settled with their usage rows) as it
  is, a reservation row per call, against a candidate: one row per tick holding the tick's
  reservations, deleted once all its calls have ended, each settlement claimed by its usage
  row's key instead of by deleting a row (not built: what it would save the server).

    .venv/bin/python bench/ledger_sql_bench.py [--postgres URL] [--rounds 6] [--ticks 1200]
"""

from __future__ import annotations

import argparse
import asyncio
import math
import os
import statistics
import sys
from collections.abc import Callable
from datetime import UTC, datetime
from itertools import count
from pathlib import Path
from typing import Any

import asyncpg
import orjson

if not __package__:  # run as a file: make the `bench` package importable
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.ledger_bench import RESERVED_FIELDS, usage_row
from pilothouse.budgets.reserve import RESERVATION_COLUMNS
from pilothouse.budgets.writer import OPTIMISTIC_POSTGRES, _flags, _numbers, _texts

SCHEMA = "ledger_sql_bench"
ROWS_PER_TICK = 16
CALLS_PER_TICK = 8
COUNTERS = [("bud_a", 1764547200), ("bud_b", 1764892800), ("bud_c", 0), ("bud_d", 1764460800)]
ORG = "org_bench"


def _replaced(sql: str, *changes: tuple[str, str]) -> str:
    """``sql`` with each (old, new) replaced; an old text not found is an error, not a no-op."""
    for old, new in changes:
        if old not in sql:
            raise ValueError(f"the writer's statement no longer holds {old!r}")
        sql = sql.replace(old, new)
    return sql


# The candidate: one reservation row per tick, ended when its calls all have; a settlement
# counts only if its usage row was inserted (``used`` returns the rows it inserted).
CANDIDATE = _replaced(
    OPTIMISTIC_POSTGRES,
    (
        "DELETE FROM budget_reservations WHERE request_id = ANY($1::text::text[]) RETURNING 1",
        "DELETE FROM reservation_ticks WHERE id = ANY($1::text::text[]) RETURNING 1",
    ),
    (
        "INSERT INTO budget_reservations"
        " SELECT * FROM json_populate_recordset(NULL::budget_reservations, $14::json)"
        " RETURNING 1",
        "INSERT INTO reservation_ticks VALUES ($14::text, $19::bigint, $20::text) RETURNING 1",
    ),
    ("DO NOTHING),", "DO NOTHING RETURNING 1),"),
    (
        "(SELECT count(*) FROM gone) = $15",
        "(SELECT count(*) FROM gone) = $15 AND (SELECT count(*) FROM used) = $21",
    ),
)


def server_cpu(pid: int) -> float:
    """CPU seconds so far of the server process ``pid`` (NaN if it is not on this machine)."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except FileNotFoundError:
        return math.nan
    fields = stat[stat.rindex(")") + 2 :].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def usage(request_id: str) -> dict[str, Any]:
    row = usage_row(ORG, request_id)
    row["created_at"] = datetime(2026, 11, 24, 21, 0, tzinfo=UTC).isoformat()
    return row


def json_text(value: Any) -> str:
    return orjson.dumps(value).decode()


class Ticks:
    """The parameters of successive optimistic ticks, each settling the calls of the last."""

    def __init__(self) -> None:
        self._ids = count()
        self._charges = json_text(COUNTERS)

    def _new(self) -> list[str]:
        return [f"req_{next(self._ids):024d}" for _ in range(CALLS_PER_TICK)]

    def _counters(self, settled: int) -> list[Any]:
        n = len(COUNTERS)
        return [  # as the writer sends them: array literals (``Tick.optimistic``)
            _texts([k[0] for k in COUNTERS]),
            _numbers([k[1] for k in COUNTERS]),
            _numbers([288_000_000 * settled] * n),
            _numbers([10**9 * (CALLS_PER_TICK - settled)] * n),
            _numbers([settled] * n),
            _numbers([10**18] * n),
            _flags([True] * n),
            _texts([]),
            _numbers([]),
            _numbers([]),
            _flags([]),
        ]

    def rows(self, ticks: int) -> list[list[Any]]:
        """As the writer sends them: a reservation row per call."""
        made, last = [], []
        for _ in range(ticks):
            new = self._new()
            held = [
                dict(
                    zip(
                        RESERVATION_COLUMNS,
                        (i, 10**9, self._charges, "[]", self._kept(i), 1764030000),
                        strict=True,
                    )
                )
                for i in new
            ]
            made.append(
                [
                    _texts(sorted(last)),
                    json_text([usage(i) for i in last]),
                    *self._counters(len(last)),
                    json_text(held),
                    len(last),
                    len(COUNTERS),
                    0,
                    len(new),
                ]
            )
            last = new
        return made

    def per_tick(self, ticks: int) -> list[list[Any]]:
        """The candidate: the tick's reservations in one row, the last tick's row ended."""
        made, last = [], []
        for _ in range(ticks):
            new = self._new()
            body = json_text([[i, 10**9, COUNTERS, [], self._kept(i)] for i in new])
            ended = [last[0]] if last else []
            made.append(
                [
                    _texts(ended),
                    json_text([usage(i) for i in last]),
                    *self._counters(len(last)),
                    new[0],
                    len(ended),
                    len(COUNTERS),
                    0,
                    1,
                    1764030000,
                    body,
                    len(last),
                ]
            )
            last = new
        return made

    @staticmethod
    def _kept(request_id: str) -> str:
        row = usage(request_id)
        return json_text({k: row[k] for k in RESERVED_FIELDS})


def usage_batches(ticks: int, ids: count[int]) -> list[list[Any]]:
    return [
        [json_text([usage(f"req_{next(ids):024d}") for _ in range(ROWS_PER_TICK)])]
        for _ in range(ticks)
    ]


async def setup(conn: asyncpg.Connection) -> None:
    await conn.execute(f"DROP SCHEMA IF EXISTS {SCHEMA} CASCADE")
    await conn.execute(f"CREATE SCHEMA {SCHEMA}")
    await conn.execute(f"SET search_path = {SCHEMA}")
    for table in ("usage_records", "budget_reservations", "budget_counters", "rate_counters"):
        await conn.execute(f"CREATE TABLE {table} (LIKE public.{table} INCLUDING ALL)")
    await conn.execute(
        "CREATE TABLE reservation_ticks (id text PRIMARY KEY, expires_at bigint NOT NULL,"
        " body text NOT NULL)"
    )
    await conn.executemany("INSERT INTO budget_counters VALUES ($1, $2, 0, 0, 0)", COUNTERS)
    await conn.execute("SET enable_seqscan = off")  # as the writer's connection (KEYED_ONLY)


async def compare(
    conn: asyncpg.Connection,
    pid: int,
    shapes: dict[str, tuple[str, Callable[[], list[list[Any]]]]],
    per: int,
    rounds: int,
) -> dict[str, list[float]]:
    """Each shape's server CPU (µs) per ``per`` of a statement, round after round."""
    found: dict[str, list[float]] = {name: [] for name in shapes}
    for _ in range(rounds):
        for name, (sql, make) in shapes.items():
            work = make()
            before = server_cpu(pid)
            for params in work:
                await conn.fetch(sql, *params)
            found[name].append((server_cpu(pid) - before) / (len(work) * per) * 1e6)
        for table in ("usage_records", "budget_reservations", "reservation_ticks"):
            await conn.execute(f"TRUNCATE {table}")
        await conn.execute("VACUUM ANALYZE")
    return found


def report(title: str, unit: str, found: dict[str, list[float]]) -> None:
    print(f"\n| {title} | server CPU µs per {unit} (median; each round) | ratio to the first |")
    print("|---|---|---:|")
    first = None
    for name, values in found.items():
        median = statistics.median(values)
        first = first or median
        each = " ".join(f"{v:.0f}" for v in values)
        ratio = f"{median / first:.2f}" if first else "n/a"  # too short to read any CPU
        print(f"| {name} | {median:.1f} ({each}) | {ratio} |")


async def main(opts: argparse.Namespace) -> int:
    conn = await asyncpg.connect(opts.postgres.replace("+asyncpg", ""))
    try:
        pid = await conn.fetchval("SELECT pg_backend_pid()")
        await setup(conn)
        ids = count()
        insert = "INSERT INTO usage_records SELECT * FROM {}(NULL::usage_records, $1::{})"
        insert += " ON CONFLICT (request_id) DO NOTHING"
        rows = {
            "jsonb (before)": (
                insert.format("jsonb_populate_recordset", "jsonb"),
                lambda: usage_batches(opts.ticks, ids),
            ),
            "json (now)": (
                insert.format("json_populate_recordset", "json"),
                lambda: usage_batches(opts.ticks, ids),
            ),
        }
        found = await compare(conn, pid, rows, ROWS_PER_TICK, opts.rounds)
        report(f"usage rows, {ROWS_PER_TICK} a statement", "row", found)
        ticks = Ticks()
        calls = {
            "a reservation row per call (now)": (
                OPTIMISTIC_POSTGRES,
                lambda: ticks.rows(opts.ticks),
            ),
            "a reservation row per tick (candidate)": (
                CANDIDATE,
                lambda: ticks.per_tick(opts.ticks),
            ),
        }
        found = await compare(conn, pid, calls, CALLS_PER_TICK, opts.rounds)
        report(
            f"budgeted calls, {CALLS_PER_TICK} a tick (reserved, then settled with a usage row)",
            "call",
            found,
        )
    finally:
        await conn.execute(f"DROP SCHEMA IF EXISTS {SCHEMA} CASCADE")
        await conn.close()
    return 0


def parse_args(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--postgres", default="postgresql://postgres@127.0.0.1:5432/test")
    parser.add_argument("--rounds", type=int, default=6)
    parser.add_argument("--ticks", type=int, default=1200, help="statements a shape a round")
    return parser.parse_args(argv)


if __name__ == "__main__":
    sys.exit(asyncio.run(main(parse_args(sys.argv[1:]))))
