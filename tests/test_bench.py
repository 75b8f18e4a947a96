"""Bench scripts that replay the ledger writer's own statements still run against them.

``bench/ledger_sql_bench.py`` sends ``OPTIMISTIC_POSTGRES`` with parameters it builds itself and
rewrites it into a candidate shape; a change to the statement must not leave it failing (or,
worse, silently measuring something else) until someone next runs it.
"""

from __future__ import annotations

import asyncio

import pytest
from bench import ledger_sql_bench


def test_the_ledger_sql_bench_runs_the_writer_s_statements(
    pg_url: str, capsys: pytest.CaptureFixture[str]
) -> None:
    opts = ledger_sql_bench.parse_args(["--postgres", pg_url, "--rounds", "1", "--ticks", "3"])
    assert asyncio.run(ledger_sql_bench.main(opts)) == 0
    lines = capsys.readouterr().out.splitlines()
    shapes = [line.split(" | ")[0] for line in lines if line.startswith("| ") and "µs" not in line]
    assert shapes == [
        "| jsonb (before)",
        "| json (now)",
        "| a reservation row per call (now)",
        "| a reservation row per tick (candidate)",
    ]
