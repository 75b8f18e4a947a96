"""Bench scripts: those that replay the ledger writer's own statements still run against them,
and the pieces that turn measurements into the reported numbers do what they say.

``bench/ledger_sql_bench.py`` sends ``OPTIMISTIC_POSTGRES`` with parameters it builds itself and
rewrites it into a candidate shape; a change to the statement must not leave it failing (or,
worse, silently measuring something else) until someone next runs it.
"""

from __future__ import annotations

import asyncio
import itertools
import math
import statistics
import time
from pathlib import Path

import pytest
from bench import (
    budgets_bench,
    budgets_instructions,
    dashboard_bench,
    gateway_report,
    interleave_loadgen,
    ledger_sql_bench,
    redact_bench,
)
from bench.gateway_cells import Cell
from bench.gateway_loadgen import Result
from bench.interleave_loadgen import SideResult

OWN_COMMAND = Path("/proc/self/comm").read_text().strip()  # this process's name


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


def test_the_redaction_bench_measures_each_of_its_parts(capsys: pytest.CaptureFixture[str]) -> None:
    assert redact_bench.main(["--quick"]) == 0
    out = capsys.readouterr().out
    assert [line.split(":")[0] for line in out.splitlines() if line.startswith("## ")] == [
        "## Building a Redactor",
        "## Redactor.redact throughput (MB/s, median call)",
        "## Added latency",
        "## Against the naive alternatives",
        "## Credential detector",
    ]
    assert "| redact_json(parsed body) |" in out and "Target (added p50 under 0.2 ms" in out
    assert "| 20 KB | 10 |" in out and "| 20 KB | 100 |" in out  # a row per count of secrets


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


async def _fake_upstream(arrivals: list[tuple[float, str]], name: str) -> asyncio.Server:
    """A server answering every POST with a whole chat.completion, noting when each came."""
    reply = b'{"usage": {"completion_tokens": 1}}'
    head = b"HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: %d\r\n\r\n"

    async def serve(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        while True:
            try:
                request = await reader.readuntil(b"\r\n\r\n")
            except (asyncio.IncompleteReadError, ConnectionError):
                break
            length = next(
                int(line.split(b":")[1])
                for line in request.split(b"\r\n")
                if line.lower().startswith(b"content-length")
            )
            await reader.readexactly(length)
            arrivals.append((time.perf_counter(), name))
            writer.write(head % len(reply) + reply)
        writer.close()

    return await asyncio.start_server(serve, "127.0.0.1", 0)


async def test_the_interleaved_load_generator_gives_each_target_turns_and_counts_them() -> None:
    """Each target's calls come in turns (blocks of arrivals, not mixed), both are counted
    in every turn, and every call answered is in ``ok_total``."""
    arrivals: list[tuple[float, str]] = []
    servers = [await _fake_upstream(arrivals, name) for name in "ab"]
    ports = [s.sockets[0].getsockname()[1] for s in servers]
    spec = interleave_loadgen.PairSpec(
        ports=ports,
        headers=[[], []],
        proxy_pids=[None, None],
        path="/v1/chat/completions",
        body="{}",
        stream=False,
        concurrency=4,
        warmup=0.1,
        seconds=0.6,
        slice=0.05,
        settle=0.005,
        # The store's processes, found by name: here this one, which serves both targets.
        store_command=OWN_COMMAND,
    )
    try:
        a, b = await interleave_loadgen.run(spec)
    finally:
        for server in servers:
            server.close()
    assert len(a.turn_p50_ms) == len(b.turn_p50_ms) == 12  # 0.6 s of turns of 0.05 s
    assert a.calls > 12 and b.calls > 12 and not (a.errors_total or b.errors_total)
    assert a.ok_total + b.ok_total == len(arrivals)
    switches = sum(1 for x, y in itertools.pairwise(arrivals) if x[1] != y[1])
    assert switches <= 2 * 12 + 2 * 2 + 1  # a switch per turn (the counted and warm-up ones)
    assert len(arrivals) > 10 * switches  # many calls each turn: not a mix
    # This process did all the work of both targets' turns, and the machine's busy time holds
    # it (per CPU and per process, the kernel counts in ticks taken at different instants: a
    # tick or two either way, so not to the letter).
    mine = a.store_cpu_s + b.store_cpu_s
    assert mine > 0
    assert a.machine_cpu_s + b.machine_cpu_s > mine / 2


def test_the_interleaved_bench_pairs_turns_and_skips_those_without_calls() -> None:
    def side(turns: list[float], latencies: list[float]) -> SideResult:
        return SideResult(
            calls=len(latencies),
            finished=len(latencies),
            turn_seconds=1.0,
            p50_ms=statistics.median(latencies),
            p99_ms=max(latencies),
            mean_ms=statistics.fmean(latencies),
            turn_p50_ms=turns,
            latencies_ms=latencies,
            cpu_s=0.001,
            store_cpu_s=0.002,
            machine_cpu_s=0.003,
            ok_total=len(latencies),
            errors_total=0,
            error_samples=[],
        )

    pair = budgets_bench.Pair(
        "SQLite, budgets",
        "stream",
        32,
        side([5.0, math.nan, 6.0], [5.0, 6.0, 7.0]),
        side([5.5, 9.0, 5.0], [5.5, 7.0, 9.0]),
    )
    assert pair.turn_pairs == [0.5, -1.0]
    assert pair.added_p50 == 1.0
    pooled = SideResult.pooled([side([1.0], [1.0, 3.0]), side([2.0], [2.0])])
    assert (pooled.calls, pooled.p50_ms, pooled.turn_p50_ms) == (3, 2.0, [1.0, 2.0])
    assert (pooled.store_cpu_s, pooled.machine_cpu_s) == (0.004, 0.006)
    assert pooled.machine_cpu_us_per_call == 2000.0  # 6 ms over 3 calls
    assert budgets_bench._cpus(pair, "store_cpu") == "667 / 667"


CALLGRIND_DUMP = """\
# callgrind format
version: 1
creator: callgrind-3.19.0
cmd:  python -m pilothouse serve
part: {part}

desc: I1 cache: 32768 B, 64 B, 8-way associative
positions: line
events: Ir Dr Dw I1mr D1mr D1mw ILmr DLmr DLmw
summary: {ir} 40 20 {i1} {d1r} {d1w} 1 2 3

fl=(1) ceval.c
fn=(1) _PyEval_EvalFrameDefault
15 {ir} 40 20 {i1} {d1r} {d1w} 1 2 3

totals: {ir} 40 20 {i1} {d1r} {d1w} 1 2 3
"""


def _dump(directory: Path, server: str, part: int, ir: int, misses: tuple[int, int, int]) -> None:
    i1, d1r, d1w = misses
    text = CALLGRIND_DUMP.format(part=part, ir=ir, i1=i1, d1r=d1r, d1w=d1w)
    (directory / f"{server}.4242.out.{part}").write_text(text)


def test_the_instruction_bench_reads_the_newest_dump_of_each_counted_window(tmp_path: Path) -> None:
    _dump(tmp_path, "pilothouse-pg", 2, 1_000, (1, 2, 3))
    _dump(tmp_path, "pilothouse-pg", 10, 5_000, (4, 5, 6))  # the tenth window, not the second
    _dump(tmp_path, "pilothouse-pg-budgets", 1, 7, (0, 0, 0))
    newest = budgets_instructions.newest_dump(tmp_path, "pilothouse-pg", 4242)
    assert newest.name == "pilothouse-pg.4242.out.10"
    totals = budgets_instructions.read_totals(newest)
    assert totals["Ir"] == 5_000
    assert (totals["I1mr"], totals["D1mr"], totals["D1mw"], totals["DLmw"]) == (4, 5, 6, 3)
    with pytest.raises(FileNotFoundError, match="no dump for pilothouse-wait"):
        budgets_instructions.newest_dump(tmp_path, "pilothouse-wait", 4242)
    broken = tmp_path / "broken.out.1"
    broken.write_text("events: Ir Dr\n")
    with pytest.raises(ValueError, match="no event totals"):
        budgets_instructions.read_totals(broken)


def test_the_instruction_bench_reports_each_server_s_median_against_the_one_without_budgets() -> (
    None
):
    def count(server: str, rnd: int, calls: int, ir: int) -> budgets_instructions.Count:
        events = {"Ir": ir, "I1mr": calls * 10, "D1mr": calls * 5, "D1mw": calls, "DLmr": calls}
        return budgets_instructions.Count(server, rnd, calls, events)

    counts = [
        count("plain", 1, 100, 100 * 1_000_000),
        count("budgets", 1, 200, 200 * 1_100_000),
        count("budgets", 2, 100, 100 * 1_060_000),
        count("plain", 2, 300, 300 * 1_020_000),
        count("budgets", 3, 100, 100 * 1_300_000),  # a window with a full collection in it
        count("plain", 3, 100, 100 * 1_010_000),
    ]
    assert counts[0].per_call("Ir") == 1_000_000
    assert counts[0].l1_misses == 16
    assert counts[0].ll_misses == 1
    found = budgets_instructions.medians(counts)
    assert found["plain"] == (1_010_000, 16, 1)
    assert found["budgets"][0] == 1_100_000  # the median, not the mean, of the rounds
    table = budgets_instructions.report(counts, "plain")
    assert "| budgets | 1,100,000 | +90,000 | 1.089 | +0 |" in table
    assert "| plain | 1,010,000 | +0 | 1.000 | +0 |" in table
    assert "| plain | 1 | 100 | 1,000,000 | 16 | 1.0 |" in table


def test_the_dashboard_bench_fills_its_store_and_renders_every_page(
    capsys: pytest.CaptureFixture[str],
) -> None:
    argv = ["--rows", "300", "--days", "3", "--repeat", "1", "--unsummed", "40"]
    assert dashboard_bench.main(argv) == 0
    out = capsys.readouterr().out
    assert "summing 260 rows into the roll-ups" in out
    assert "40 left unsummed" in out
    rows = [line for line in out.splitlines() if line.startswith("| `")]
    assert [row.split("`")[1] for row in rows] == dashboard_bench.PAGES
    assert all(row.endswith("| yes |") for row in rows)  # 300 rows: every page is quick
