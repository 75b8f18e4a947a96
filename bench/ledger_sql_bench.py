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
  calls admitted on four budgets, the 8 of the tick before settled with their usage rows) with
  the reservation row as it was before migration 0006, holding its counters and its usage
  row's fields (about 700 bytes), against the row as it is, naming its context (about 100).

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

from bench.ledger_bench import usage_row
from pilothouse.budgets.reserve import RESERVATION_COLUMNS
from pilothouse.budgets.writer import OPTIMISTIC_POSTGRES, _flags, _numbers, _texts

SCHEMA = "ledger_sql_bench"
ROWS_PER_TICK = 16
CALLS_PER_TICK = 8
COUNTERS = [("bud_a", 1764547200), ("bud_b", 1764892800), ("bud_c", 0), ("bud_d", 1764460800)]
ORG = "org_bench"
CONTEXT = "ctx_0123456789abcdef0123456789abcdef"  # a context's key: a hash of its JSON


def _replaced(sql: str, *changes: tuple[str, str]) -> str:
    """``sql`` with each (old, new) replaced; an old text not found is an error, not a no-op."""
    for old, new in changes:
        if old not in sql:
            raise ValueError(f"the writer's statement no longer holds {old!r}")
        sql = sql.replace(old, new)
    return sql


# What a reservation row kept of the usage row before migration 0006, and the statement with
# the table of that shape in place of the store's.
RESERVED_FIELDS = (
    *("request_id", "org_id", "session_id", "key_id", "user_id", "team_id", "project"),
    *("repository", "labels", "skills", "plugins", "client_session", "endpoint"),
    *("model_alias", "downgraded_from", "stream", "created_at"),
)
WIDE = _replaced(
    OPTIMISTIC_POSTGRES,
    (
        "DELETE FROM budget_reservations WHERE",
        "DELETE FROM reservations_wide WHERE",
    ),
    (
        "INSERT INTO budget_reservations"
        " SELECT * FROM json_populate_recordset(NULL::budget_reservations, $14::json)",
        "INSERT INTO reservations_wide"
        " SELECT * FROM json_populate_recordset(NULL::reservations_wide, $14::json)",
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

    def rows(self, ticks: int, wide: bool) -> list[list[Any]]:
        """As the writer sends them: a reservation row per call, naming its context (or, with
        ``wide``, holding its counters and usage fields, as before migration 0006)."""
        made, last = [], []
        for _ in range(ticks):
            new = self._new()
            held = [self._row(i, wide) for i in new]
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

    def _row(self, request_id: str, wide: bool) -> dict[str, Any]:
        if wide:
            row = usage(request_id)
            kept = json_text({k: row[k] for k in RESERVED_FIELDS})
            return {
                "request_id": request_id,
                "amount_picos": 10**9,
                "charges": self._charges,
                "rate_charges": "[]",
                "usage_row": kept,
                "expires_at": 1764030000,
            }
        values = (request_id, 10**9, CONTEXT, "[]", 1764029880123456, 1764030000)
        return dict(zip(RESERVATION_COLUMNS, values, strict=True))


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
        "CREATE TABLE reservations_wide (request_id varchar(64) PRIMARY KEY,"
        " amount_picos bigint NOT NULL, charges text NOT NULL, rate_charges text NOT NULL,"
        " usage_row text NOT NULL, expires_at bigint NOT NULL)"
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
        for table in ("usage_records", "budget_reservations", "reservations_wide"):
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
            "a reservation row with its counters and usage fields (before 0006)": (
                WIDE,
                lambda: ticks.rows(opts.ticks, wide=True),
            ),
            "a reservation row naming its context (now)": (
                OPTIMISTIC_POSTGRES,
                lambda: ticks.rows(opts.ticks, wide=False),
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
