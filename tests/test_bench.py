"""Bench scripts that replay the ledger writer's own statements still run against them.

``bench/ledger_sql_bench.py`` sends ``OPTIMISTIC_POSTGRES`` with parameters it builds itself and
rewrites it into a candidate shape; a change to the statement must not leave it failing (or,
worse, silently measuring something else) until someone next runs it.
"""

from __future__ import annotations

import asyncio

import pytest
from bench import gateway_report, ledger_sql_bench
from bench.gateway_cells import Cell
from bench.gateway_loadgen import Result


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
        "| a reservation row with its counters and usage fields (before 0006)",
        "| a reservation row naming its context (now)",
    ]


def _cell(target: str, p50_each: list[float], reported: int = 0) -> Cell:
    """A cell of rounds with these p50s, reporting round ``reported`` (its median calls/s)."""
    result = Result(
        calls=1,
        seconds=1.0,
        p50_ms=p50_each[reported],
        p99_ms=0.0,
        ttfb_p50_ms=0.0,
        ttfb_p99_ms=0.0,
        errors=0,
        ok_total=1,
        errors_total=0,
        unfinished=0,
        events_min=0,
        events_max=0,
        proxy_cpu_s=0.0,
        upstream_cpu_s=0.0,
        generator_cpu_s=0.0,
        proxy_cpu_busy_s=0.0,
        proxy_cpu_irq_s=0.0,
        load_cpu_busy_s=0.0,
        load_cpu_irq_s=0.0,
        error_samples=[],
    )
    return Cell(target, "stream", 32, result, round_p50_ms=p50_each)


def test_the_added_p50_pairs_each_round_so_the_machine_s_drift_cancels() -> None:
    # The machine slows down round after round, and budgets add 0.3 ms to every round. Each
    # target's reported round (its median calls/s) fell at a different point of the drift:
    # their difference carries the drift (1.3 ms); the rounds' differences do not.
    without = _cell("pilothouse", [5.0, 5.5, 6.0, 6.5, 7.0], reported=1)
    with_ = _cell("pilothouse-budgets", [5.3, 5.8, 6.3, 6.8, 7.3], reported=3)
    assert with_.result.p50_ms - without.result.p50_ms == pytest.approx(1.3)
    added, each = gateway_report.added_p50(without, with_)
    assert added == pytest.approx(0.3) and each == pytest.approx([0.3] * 5)
    # One round: its own difference.
    assert gateway_report.added_p50(_cell("a", [5.0]), _cell("b", [5.4])) == (
        pytest.approx(0.4),
        [],
    )
