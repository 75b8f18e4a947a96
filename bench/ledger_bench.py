"""What the budget ledger costs per call, without HTTP: the floor under budget enforcement.

``gateway_bench.py --budgets`` measures budget enforcement end to end, where one CPU also
serves HTTP, forwards and writes usage rows. This isolates the ledger. In one process pinned
to one CPU (uvloop), ``--concurrency`` tasks loop over what a call does to the store:

- ``rows``: write the call's usage row (the ledger writer, group-committed), as every call
  does without budgets;
- ``budgets``: reserve the call's worst case on four budgets, then write its usage row settling
  the reservation, as every budgeted call does.

On SQLite two more, the floor (``Floor``): the same store work written flat, a batch per
transaction on the event loop's thread with nothing but the SQL, a minimal reservation row
(request id, amount) and the four counters moved once per batch:

- ``floor-rows``: the usage row alone;
- ``floor-budgets``: a reservation before, the usage row and its settlement after.

It prints the CPU per call of each, measured in alternating rounds, and the differences: what
budget enforcement costs per call in the store and in Python, and the least a durable
reservation can cost. At concurrency 32 on one saturated CPU the added p50 is about 32 times
that difference (Little's law). On PostgreSQL it also prints the server's CPU per call (every
``postgres`` process on the machine, from /proc): the other half of the cost there.

    .venv/bin/python bench/ledger_bench.py [--postgres URL] [--seconds 3] [--rounds 5]
"""

from __future__ import annotations

import argparse
import asyncio
import os
import sqlite3
import statistics
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import uvloop
from sqlalchemy import text

if not __package__:  # run as a file: make the `bench` package importable
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench import gateway_targets as tg
from pilothouse.budgets.contexts import CallContext
from pilothouse.budgets.model import Budget, Enforcement, ScopeKind, Window
from pilothouse.budgets.tables import budgets
from pilothouse.services import Services, build_services
from pilothouse.settings import Settings
from pilothouse.store.bulk import sqlite_path
from pilothouse.store.engine import Store

SCOPES = [
    (ScopeKind.ORG, "", Window.MONTH),
    (ScopeKind.PROJECT, "ledger-bench", Window.DAY),
    (ScopeKind.SESSION, "ses_bench", Window.TOTAL),
    (ScopeKind.LABEL, "bench=ledger", Window.WEEK),
]


def usage_row(org_id: str, request_id: str) -> dict[str, Any]:
    """A usage row shaped like a gateway call's."""
    return {
        "request_id": request_id,
        "org_id": org_id,
        "session_id": None,
        "key_id": None,
        "user_id": None,
        "team_id": None,
        "project": "ledger-bench",
        "repository": "example/repo",
        "labels": '{"bench": "ledger"}',
        "skills": "[]",
        "plugins": "[]",
        "client_session": None,
        "endpoint": "/v1/chat/completions",
        "model_alias": "demo",
        "downgraded_from": None,
        "deployment": "demo/demo-1",
        "upstream_model": "demo-1",
        "stream": 0,
        "input_tokens": 256,
        "output_tokens": 16,
        "cache_read_tokens": 0,
        "cache_write_tokens": 0,
        "reasoning_tokens": 0,
        "cost_picos": 288_000_000,
        "price_version": "bench",
        "status": "ok",
        "http_status": 200,
        "error": None,
        "retries": 0,
        "estimated": 0,
        "ttfb_ms": 1,
        "latency_ms": 2,
        "created_at": None,
    }


async def make_budgets(services: Services) -> tuple[Budget, ...]:
    """Four hard budgets far from their limits, written to the store."""
    made = []
    now = services.clock.now()
    async with services.store.write() as conn:
        for i, (kind, value, window) in enumerate(SCOPES):
            budget = Budget(
                id=f"bud_bench{i}",
                org_id=services.root_org_id,
                name=f"bench {kind.value}",
                scope_kind=kind,
                scope_value=value,
                window=window,
                limit_picos=10**18,
                enforcement=Enforcement.HARD,
            )
            await conn.execute(
                budgets.insert().values(
                    id=budget.id,
                    org_id=budget.org_id,
                    name=budget.name,
                    scope_kind=kind.value,
                    scope_value=value,
                    window=window.value,
                    limit_picos=budget.limit_picos,
                    enforcement="hard",
                    thresholds="[50, 80, 100]",
                    downgrade=None,
                    created_by=None,
                    created_at=now,
                    updated_at=now,
                )
            )
            made.append(budget)
    return tuple(made)


async def measure(
    one_call: Callable[[str], Awaitable[None]], mode: str, concurrency: int, seconds: float
) -> tuple[int, float]:
    """Calls done and CPU seconds used by ``concurrency`` tasks calling ``one_call`` (with a
    new request id each time) for ``seconds``."""
    stop = time.monotonic() + seconds
    done = 0

    async def worker(n: int) -> None:
        nonlocal done
        i = 0
        while time.monotonic() < stop:
            await one_call(f"{mode}_{n}_{i}_{time.monotonic_ns()}")
            i += 1
            done += 1

    cpu, server = time.process_time(), server_cpu()
    await asyncio.gather(*(worker(n) for n in range(concurrency)))
    SERVER_CPU.append(server_cpu() - server)
    return done, time.process_time() - cpu


SERVER_CPU: list[float] = []  # each measured run's PostgreSQL server CPU seconds, in order


def server_cpu() -> float:
    """CPU seconds so far of every PostgreSQL server process on this machine (0 without any)."""
    ticks = sum(t for name, t in tg.cpu_snapshot().values() if name == "postgres")
    return ticks / os.sysconf("SC_CLK_TCK")


async def run(
    services: Services,
    applicable: tuple[Budget, ...],
    mode: str,
    concurrency: int,
    seconds: float,
) -> tuple[int, float]:
    """What a call does to the store through the ledger: ``rows`` or ``budgets``."""
    ledger = services.ledger
    assert ledger is not None
    # One principal's calls: its fields made once, as the gateway makes them once per principal.
    context = CallContext.of_row(usage_row(services.root_org_id, ""))

    async def one_call(request_id: str) -> None:
        row = usage_row(services.root_org_id, request_id)
        row["created_at"] = services.clock.now()
        if mode == "budgets":
            held = await ledger.reserve(applicable, request_id, 10**9, context)
            ledger.settle(row, held)  # as the gateway settles a call with a reservation
            ledger.forget(request_id)
        else:
            await ledger.record(row)

    measured = await measure(one_call, mode, concurrency, seconds)
    await ledger.settled()  # the last settlements (at most a tick's) before the next run
    return measured


class Floor:
    """The least a durable reservation can cost, SQLite: no Python beyond the batch itself, no
    thread, no decision, no JSON. Calls queue; one task writes each batch in one transaction on
    the event loop's own thread: a usage row per ended call (the real table, its values made
    once), and in ``budgets`` mode a minimal reservation row inserted before the call and deleted
    after, with the four counters changed once per batch."""

    def __init__(self, store: Store, org_id: str, keys: list[tuple[str, int]]) -> None:
        self._store = store
        self._conn = sqlite3.connect(sqlite_path(store), isolation_level=None)
        # As the ledger's writer: never wait for the lock on the loop (the store's own writers,
        # on aiosqlite's thread, need the loop to finish their transactions).
        for pragma in ("PRAGMA busy_timeout=0", "PRAGMA synchronous=NORMAL"):
            self._conn.execute(pragma)
        self._conn.execute(
            "CREATE TABLE IF NOT EXISTS floor_reservations"
            " (request_id TEXT PRIMARY KEY, amount INTEGER NOT NULL) WITHOUT ROWID"
        )
        self._keys = keys
        template = usage_row(org_id, "")
        template["created_at"] = "2026-11-24 00:00:00.000000"
        self._columns = list(template)
        self._values = list(template.values())
        self._insert = (
            f"INSERT INTO usage_records ({', '.join(self._columns)})"
            f" VALUES ({', '.join('?' for _ in self._columns)}) ON CONFLICT DO NOTHING"
        )
        self._pending: list[tuple[str, str, asyncio.Future[None]]] = []
        self._wake = asyncio.Event()
        self._task = asyncio.create_task(self._run())

    async def submit(self, kind: str, request_id: str) -> None:
        future = asyncio.get_running_loop().create_future()
        self._pending.append((kind, request_id, future))
        self._wake.set()
        await future

    async def _run(self) -> None:
        while True:
            await self._wake.wait()
            self._wake.clear()
            while self._pending:
                batch, self._pending = self._pending, []
                held = [(rid, 1000) for kind, rid, _ in batch if kind == "reserve"]
                ended = [rid for kind, rid, _ in batch if kind != "reserve"]
                settled = [(rid,) for kind, rid, _ in batch if kind == "settle"]
                try:
                    async with self._store.serial_writes():
                        self._write(held, ended, settled)
                except Exception as exc:  # a broken floor fails its calls, never hangs them
                    for _, _, future in batch:
                        future.set_exception(exc)
                    continue
                for _, _, future in batch:
                    future.set_result(None)

    def _write(
        self, held: list[tuple[str, int]], ended: list[str], settled: list[tuple[str]]
    ) -> None:
        conn = self._conn
        conn.execute("BEGIN IMMEDIATE")
        try:
            if ended:
                conn.executemany(self._insert, [(rid, *self._values[1:]) for rid in ended])
            if settled:
                conn.executemany("DELETE FROM floor_reservations WHERE request_id = ?", settled)
            if held:
                conn.executemany("INSERT INTO floor_reservations VALUES (?, ?)", held)
            if held or settled:
                delta = 1000 * (len(held) - len(settled))
                for budget_id, start in self._keys:
                    conn.execute(
                        "UPDATE budget_counters SET reserved_picos = reserved_picos + ?"
                        " WHERE budget_id = ? AND window_start = ?",
                        (delta, budget_id, start),
                    )
        except BaseException:
            conn.execute("ROLLBACK")
            raise
        conn.execute("COMMIT")

    async def close(self) -> None:
        self._task.cancel()
        await asyncio.gather(self._task, return_exceptions=True)
        self._conn.close()


async def run_floor(floor: Floor, mode: str, concurrency: int, seconds: float) -> tuple[int, float]:
    """Like ``run``, through the floor: ``floor-rows`` or ``floor-budgets``."""

    async def one_call(request_id: str) -> None:
        if mode == "floor-budgets":
            await floor.submit("reserve", request_id)
            await floor.submit("settle", request_id)
        else:
            await floor.submit("row", request_id)

    return await measure(one_call, mode, concurrency, seconds)


async def main(opts: argparse.Namespace) -> int:
    with tempfile.TemporaryDirectory(prefix="pilothouse-ledger-bench-") as tmp:
        settings = Settings(database_url=opts.postgres, data_dir=Path(tmp) / "data")
        services = build_services(settings)
        await services.start()
        try:
            if opts.postgres:
                async with services.store.write() as conn:
                    await conn.execute(text("DELETE FROM budget_counters"))
            applicable = await make_budgets(services)
            await run(services, applicable, "budgets", opts.concurrency, opts.warmup)
            modes = ["rows", "budgets"]
            floor = None
            if not opts.postgres:  # the counters exist now (the warm-up made them)
                async with services.store.read() as conn:
                    found = await conn.execute(
                        text("SELECT budget_id, window_start FROM budget_counters")
                    )
                    keys = [(r[0], r[1]) for r in found]
                floor = Floor(services.store, services.root_org_id, keys)
                modes += ["floor-rows", "floor-budgets"]
            per_call: dict[str, list[float]] = {mode: [] for mode in modes}
            on_server: dict[str, list[float]] = {mode: [] for mode in modes}
            rates: dict[str, list[float]] = {mode: [] for mode in modes}
            for _ in range(opts.rounds):
                if opts.postgres:  # as autovacuum would (the server here may run without it)
                    await tg.run_sql(opts.postgres, "VACUUM ANALYZE")
                for mode in modes:
                    if mode.startswith("floor"):
                        assert floor is not None
                        calls, cpu = await run_floor(floor, mode, opts.concurrency, opts.seconds)
                    else:
                        calls, cpu = await run(
                            services, applicable, mode, opts.concurrency, opts.seconds
                        )
                    per_call[mode].append(cpu / calls * 1e6)
                    on_server[mode].append(SERVER_CPU[-1] / calls * 1e6)
                    rates[mode].append(calls / opts.seconds)
            if floor is not None:
                await floor.close()
        finally:
            if opts.postgres:
                async with services.store.write() as conn:
                    for table in ("budget_reservations", "budget_counters", "budgets"):
                        await conn.execute(text(f"DELETE FROM {table}"))
                    await conn.execute(
                        text("DELETE FROM usage_records WHERE project = 'ledger-bench'")
                    )
            await services.close()
    store = "PostgreSQL" if opts.postgres else "SQLite"
    rows, held = statistics.median(per_call["rows"]), statistics.median(per_call["budgets"])
    print(
        f"store: {store}; concurrency {opts.concurrency}; {opts.rounds} rounds of {opts.seconds} s"
    )
    server = bool(opts.postgres)  # the server's CPU is the other half of the cost there
    head = " | server CPU µs per call (median; each round)" if server else ""
    print(f"| what each call does | calls/s | CPU µs per call (median; each round){head} |")
    print("|---|---:|---|" + ("---|" if server else ""))
    labels = {
        "rows": "usage row",
        "budgets": "reserve on 4 budgets + usage row",
        "floor-rows": "floor: usage row",
        "floor-budgets": "floor: minimal reservation row + usage row",
    }
    for mode in per_call:
        each = " ".join(f"{v:.0f}" for v in per_call[mode])
        rate, cpu = statistics.median(rates[mode]), statistics.median(per_call[mode])
        cells = f"| {labels[mode]} | {rate:,.0f} | {cpu:.1f} ({each}) |"
        if server:
            each = " ".join(f"{v:.0f}" for v in on_server[mode])
            cells += f" {statistics.median(on_server[mode]):.1f} ({each}) |"
        print(cells)
    print(
        f"\nbudget enforcement: +{held - rows:.1f} µs of CPU per call;"
        f" at c=32 on one saturated CPU about +{(held - rows) * 32 / 1000:.2f} ms p50"
    )
    if server:
        added = statistics.median(on_server["budgets"]) - statistics.median(on_server["rows"])
        print(f"and +{added:.1f} µs of the PostgreSQL server's CPU per call")
    if "floor-rows" in per_call:
        least = statistics.median(per_call["floor-budgets"]) - statistics.median(
            per_call["floor-rows"]
        )
        print(f"the floor: +{least:.1f} µs of CPU per call, about +{least * 32 / 1000:.2f} ms p50")
    return 0


def parse_args(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--postgres", default=None, help="a PostgreSQL URL (default: SQLite)")
    parser.add_argument("--concurrency", type=int, default=32)
    parser.add_argument("--seconds", type=float, default=3.0)
    parser.add_argument("--warmup", type=float, default=1.0)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--cpu", type=int, default=0, help="the one CPU to pin to")
    return parser.parse_args(argv)


if __name__ == "__main__":
    options = parse_args(sys.argv[1:])
    os.sched_setaffinity(0, {options.cpu})
    sys.exit(uvloop.run(main(options)))
