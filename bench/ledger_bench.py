"""What the budget ledger costs per call, without HTTP: the floor under budget enforcement.

``gateway_bench.py --budgets`` measures budget enforcement end to end, where one CPU also
serves HTTP, forwards and writes usage rows. This isolates the ledger. In one process pinned
to one CPU (uvloop), ``--concurrency`` tasks loop over what a call does to the store:

- ``rows``: write the call's usage row (the ledger writer, group-committed), as every call
  does without budgets;
- ``budgets``: reserve the call's worst case on four budgets, then write its usage row settling
  the reservation, as every budgeted call does.

It prints the CPU per call of each, measured in alternating rounds, and the difference: what
budget enforcement costs per call in the store and in Python. At concurrency 32 on one
saturated CPU the added p50 is about 32 times that difference (Little's law).

    .venv/bin/python bench/ledger_bench.py [--postgres URL] [--seconds 3] [--rounds 5]
"""

from __future__ import annotations

import argparse
import asyncio
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import uvloop
from sqlalchemy import text

from pilothouse.budgets.model import Budget, Enforcement, ScopeKind, Window
from pilothouse.budgets.tables import budgets
from pilothouse.services import Services, build_services
from pilothouse.settings import Settings

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


async def make_budgets(services: Services) -> list[Budget]:
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
    return made


async def run(
    services: Services, applicable: list[Budget], mode: str, concurrency: int, seconds: float
) -> tuple[int, float]:
    """Calls done and CPU seconds used by ``concurrency`` tasks looping for ``seconds``."""
    ledger = services.ledger
    assert ledger is not None
    stop = time.monotonic() + seconds
    done = 0

    async def worker(n: int) -> None:
        nonlocal done
        i = 0
        while time.monotonic() < stop:
            request_id = f"{mode}_{n}_{i}_{time.monotonic_ns()}"
            row = usage_row(services.root_org_id, request_id)
            row["created_at"] = services.clock.now()
            if mode == "budgets":
                held = await ledger.reserve(applicable, request_id, 10**9, row)
                await ledger.record(row, held)
                ledger.forget(request_id)
            else:
                await ledger.record(row)
            i += 1
            done += 1

    cpu = time.process_time()
    await asyncio.gather(*(worker(n) for n in range(concurrency)))
    return done, time.process_time() - cpu


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
            per_call: dict[str, list[float]] = {"rows": [], "budgets": []}
            rates: dict[str, list[float]] = {"rows": [], "budgets": []}
            for _ in range(opts.rounds):
                for mode in ("rows", "budgets"):
                    calls, cpu = await run(
                        services, applicable, mode, opts.concurrency, opts.seconds
                    )
                    per_call[mode].append(cpu / calls * 1e6)
                    rates[mode].append(calls / opts.seconds)
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
    print("| what each call does | calls/s | CPU µs per call (median; each round) |")
    print("|---|---:|---|")
    for mode, label in (("rows", "usage row"), ("budgets", "reserve on 4 budgets + usage row")):
        each = " ".join(f"{v:.0f}" for v in per_call[mode])
        rate, cpu = statistics.median(rates[mode]), statistics.median(per_call[mode])
        print(f"| {label} | {rate:,.0f} | {cpu:.1f} ({each}) |")
    print(
        f"\nbudget enforcement: +{held - rows:.1f} µs of CPU per call;"
        f" at c=32 on one saturated CPU about +{(held - rows) * 32 / 1000:.2f} ms p50"
    )
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
