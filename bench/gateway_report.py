"""The gateway benchmark's report: Markdown tables to paste into bench/README.md."""

from __future__ import annotations

import contextlib
import datetime as dt
import json
import math
import os
import platform
import statistics
import subprocess
import sys
from collections.abc import Sequence
from dataclasses import dataclass
from importlib import metadata
from pathlib import Path

from bench import gateway_profile
from bench import gateway_targets as tg
from bench.gateway_cells import (
    LOAD_FULL,
    TARGET_ADDED_P50_MS,
    TARGET_ADDED_P99_MS,
    TARGET_CONCURRENCY,
    TARGET_SHARE_OF_BARE,
    Cell,
    Ledger,
    Options,
    ProfileRun,
    cell_order,
    judged_names,
)

REPO = Path(__file__).resolve().parent.parent


def _ms(value: float) -> str:
    return f"{value:,.2f}" if math.isfinite(value) else "n/a"


def _signed(value: float) -> str:
    return f"{value:+,.2f}" if math.isfinite(value) else "n/a"


def _ratio(a: float, b: float) -> str:
    return f"{a / b:.2f}" if b and math.isfinite(a) and math.isfinite(b) else "n/a"


def _mb(kib: int) -> str:
    return f"{kib / 1024:,.0f}" if kib else "n/a"


def _index(cells: Sequence[Cell]) -> dict[tuple[str, str, int], Cell]:
    return {(c.target, c.mode, c.concurrency): c for c in cells}


def _notes(cell: Cell, opts: Options) -> str:
    notes = []
    if cell.contention() > opts.max_others:
        busiest = ", ".join(name for name, _ in cell.others[:2])
        notes.append(f"contended ({cell.contention():.0%} of a CPU taken by others: {busiest})")
    if cell.target != "direct" and cell.load_share > LOAD_FULL:
        notes.append(f"load CPU {cell.load_share:.0%} busy: upstream + generator may limit")
    if cell.result.errors:
        notes.append("; ".join(cell.result.error_samples[:1]))
    return "; ".join(notes)


def print_summary(cells: Sequence[Cell], opts: Options) -> None:
    """At a glance: calls/s and added p50 / p99 of every target, one row per cell group."""
    index = _index(cells)
    names = [n for n in cell_order(opts) if any(c.target == n for c in cells)]
    print("\n### Summary: calls/s (added p50 / p99 ms)\n")
    print("| mode | c | " + " | ".join(names) + " |")
    print("|---|---:|" + "---:|" * len(names))
    for mode in opts.modes:
        for conc in opts.concurrency:
            direct = index.get(("direct", mode, conc))
            row = []
            for name in names:
                c = index.get((name, mode, conc))
                if c is None:
                    row.append("n/a")
                elif name == "direct" or direct is None:
                    row.append(f"{c.rps:,.0f}")
                else:
                    a50 = c.result.p50_ms - direct.result.p50_ms
                    a99 = c.result.p99_ms - direct.result.p99_ms
                    row.append(f"{c.rps:,.0f} ({a50:+,.2f} / {a99:+,.2f})")
            print(f"| {mode} | {conc} | " + " | ".join(row) + " |")


def print_cells(cells: Sequence[Cell], opts: Options) -> None:
    """One table per mode: every target at every concurrency, with added latency."""
    index = _index(cells)
    for mode in opts.modes:
        stream = mode == "stream"
        print(f"\n### {mode}\n")
        ttfb_head = " TTFB p50 ms | TTFB p99 ms |" if stream else ""
        ttfb_rule = "---:|---:|" if stream else ""
        print(
            "| c | target | calls/s | p50 ms | p99 ms | added p50 ms | added p99 ms |"
            f"{ttfb_head} proxy CPU µs/call | proxy CPU | errors | notes |"
        )
        print(f"|---:|---|---:|---:|---:|---:|---:|{ttfb_rule}---:|---:|---:|---|")
        for concurrency in opts.concurrency:
            direct = index.get(("direct", mode, concurrency))
            for name in [t for t in cell_order(opts) if (t, mode, concurrency) in index]:
                c = index[(name, mode, concurrency)]
                r = c.result
                added50 = r.p50_ms - direct.result.p50_ms if direct else math.nan
                added99 = r.p99_ms - direct.result.p99_ms if direct else math.nan
                if name == "direct":
                    added50 = added99 = math.nan
                ttfb = f" {_ms(r.ttfb_p50_ms)} | {_ms(r.ttfb_p99_ms)} |" if stream else ""
                cpu = f"{c.cpu_us_per_call:,.0f}" if math.isfinite(c.cpu_us_per_call) else "-"
                share = f"{c.proxy_share:.0%}" if name != "direct" else "-"
                print(
                    f"| {concurrency} | {name} | {c.rps:,.0f} | {_ms(r.p50_ms)} | {_ms(r.p99_ms)} "
                    f"| {_signed(added50)} | {_signed(added99)} |{ttfb} {cpu} | {share} "
                    f"| {r.errors} | {_notes(c, opts)} |"
                )


def print_ratios(cells: Sequence[Cell], opts: Options) -> None:
    """Pilothouse against the bare forwarder and LiteLLM, cell by cell."""
    index = _index(cells)
    for name in judged_names(opts):
        print(f"\n### Side by side: {name}\n")
        print(
            "| mode | c | calls/s ÷ bare | calls/s ÷ LiteLLM | CPU per call ÷ bare "
            "| CPU per call ÷ LiteLLM | added p50 ms: this / bare / LiteLLM |"
        )
        print("|---|---:|---:|---:|---:|---:|---|")
        for mode in opts.modes:
            for conc in opts.concurrency:
                p = index.get((name, mode, conc))
                if p is None:
                    continue
                b = index.get(("bare", mode, conc))
                lite = index.get(("litellm", mode, conc))
                d = index.get(("direct", mode, conc))

                print(
                    f"| {mode} | {conc} | {_ratio(p.rps, b.rps) if b else 'n/a'} "
                    f"| {_ratio(p.rps, lite.rps) if lite else 'n/a'} "
                    f"| {_ratio(p.cpu_us_per_call, b.cpu_us_per_call) if b else 'n/a'} "
                    f"| {_ratio(p.cpu_us_per_call, lite.cpu_us_per_call) if lite else 'n/a'} "
                    f"| {_added(p, d)} / {_added(b, d)} / {_added(lite, d)} |"
                )


def _added(cell: Cell | None, direct: Cell | None) -> str:
    if cell is None or direct is None:
        return "n/a"
    return _signed(cell.result.p50_ms - direct.result.p50_ms)


@dataclass
class Verdict:
    """The issue's targets for one Pilothouse target in one mode at c=32."""

    target: str
    mode: str
    added_p50: float
    added_p99: float
    share_of_bare: float

    @property
    def met(self) -> bool:
        """All three targets met."""
        return (
            self.added_p50 <= TARGET_ADDED_P50_MS
            and self.added_p99 <= TARGET_ADDED_P99_MS
            and self.share_of_bare >= TARGET_SHARE_OF_BARE
        )


def verdicts(cells: Sequence[Cell], opts: Options) -> list[Verdict]:
    """The targets, wherever the cells to judge them exist."""
    index = _index(cells)
    found = []
    for name in judged_names(opts):
        for mode in opts.modes:
            key = (mode, TARGET_CONCURRENCY)
            p, d, b = (index.get((t, *key)) for t in (name, "direct", "bare"))
            if p is None or d is None or b is None:
                continue
            found.append(
                Verdict(
                    name,
                    mode,
                    p.result.p50_ms - d.result.p50_ms,
                    p.result.p99_ms - d.result.p99_ms,
                    p.rps / b.rps if b.rps else math.nan,
                )
            )
    return found


def print_verdicts(found: Sequence[Verdict]) -> None:
    """Each target: met, or missed by how much."""
    if not found:
        print(f"\n(no verdict: it needs direct, bare and Pilothouse at c={TARGET_CONCURRENCY})")
        return
    print(f"\n### Targets at c={TARGET_CONCURRENCY}\n")
    print(
        f"| target | mode | added p50 ≤ {TARGET_ADDED_P50_MS:g} ms | added p99 ≤ "
        f"{TARGET_ADDED_P99_MS:g} ms | calls/s ≥ {TARGET_SHARE_OF_BARE:g} x bare | verdict |"
    )
    print("|---|---|---:|---:|---:|---|")
    for v in found:
        p50 = f"{v.added_p50:+.2f} ms {_mark(v.added_p50 <= TARGET_ADDED_P50_MS)}"
        p99 = f"{v.added_p99:+.2f} ms {_mark(v.added_p99 <= TARGET_ADDED_P99_MS)}"
        share = f"{v.share_of_bare:.2f}x {_mark(v.share_of_bare >= TARGET_SHARE_OF_BARE)}"
        misses = []
        if v.added_p50 > TARGET_ADDED_P50_MS:
            misses.append(f"p50 over by {v.added_p50 - TARGET_ADDED_P50_MS:.2f} ms")
        if v.added_p99 > TARGET_ADDED_P99_MS:
            misses.append(f"p99 over by {v.added_p99 - TARGET_ADDED_P99_MS:.2f} ms")
        if v.share_of_bare < TARGET_SHARE_OF_BARE:
            need = TARGET_SHARE_OF_BARE / v.share_of_bare if v.share_of_bare else math.inf
            misses.append(f"needs {need:.1f}x its throughput")
        verdict = "met" if v.met else "missed: " + ", ".join(misses)
        print(f"| {v.target} | {v.mode} | {p50} | {p99} | {share} | {verdict} |")


def _mark(ok: bool) -> str:
    return "✓" if ok else "✗"


def print_memory(targets: Sequence[tg.Target], peaks: dict[str, int]) -> None:
    """Resident memory of each proxy (its whole process tree)."""
    print("\n### Memory and start-up\n")
    print("| target | ready after s | RSS after start MB | peak RSS MB (VmHWM) |")
    print("|---|---:|---:|---:|")
    for t in targets:
        if t.name == "direct":
            continue
        print(f"| {t.name} | {t.ready_s:.2f} | {_mb(t.rss_at_start_kib)} | {_mb(peaks[t.name])} |")


def print_ledgers(ledgers: Sequence[Ledger], counts: dict[str, int]) -> None:
    """Nothing lost: usage rows against the calls the client completed."""
    if not ledgers:
        return
    print("\n### Nothing lost: usage rows against calls\n")
    print(
        "| target | calls answered whole (client) | failed / unfinished (client) "
        "| usage rows (API) | rows with status ok (API) | rows in the SQLite file "
        "| calls the upstream got from it | verdict |"
    )
    print("|---|---:|---:|---:|---:|---:|---:|---|")
    for g in ledgers:
        sqlite_rows = "-" if g.sqlite_rows is None else f"{g.sqlite_rows:,}"
        verdict = "nothing lost" if g.nothing_lost else f"MISMATCH {g.problem or ''}".rstrip()
        print(
            f"| {g.target} | {g.client_ok:,} | {g.client_errors} / {g.unfinished} "
            f"| {_count(g.rows)} | {_count(g.rows_ok)} | {sqlite_rows} "
            f"| {_count(g.upstream_calls)} | {verdict} |"
        )
    print("\nCalls the fake upstream served, by user agent: " + json.dumps(counts))


def _count(value: int | None) -> str:
    return "n/a" if value is None else f"{value:,}"


def print_profile(run: ProfileRun) -> None:
    """Where the profiled Pilothouse spent its CPU, per call."""
    cell = run.cell
    print(f"\n### Where {run.target}'s CPU goes ({cell.mode}, c={cell.concurrency})\n")
    print(
        f"py-spy at {run.rate_hz} Hz over the measured {cell.result.seconds:.0f} s of a separate "
        f"run: {run.profile.samples:,} busy samples; {cell.rps:,.0f} calls/s, "
        f"{cell.cpu_us_per_call:,.0f} µs of CPU per call, p50 {_ms(cell.result.p50_ms)} ms. "
        "Shares are of the busy samples; µs per call = share x CPU per call."
    )
    gateway_profile.print_profile(run.profile, cell.cpu_us_per_call)


def _cpu_model() -> str:
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    return platform.processor() or "unknown"


def _versions() -> dict[str, str]:
    found = {"python": platform.python_version()}
    for dist in ("uvicorn", "uvloop", "httptools", "sqlalchemy", "aiosqlite", "asyncpg", "orjson"):
        with contextlib.suppress(metadata.PackageNotFoundError):
            found[dist] = metadata.version(dist)
    return found


def _source_version() -> str:
    """The commit measured, and whether src/ had uncommitted changes."""
    try:
        head = subprocess.run(
            ["git", "rev-parse", "--short", "HEAD"], cwd=REPO, capture_output=True, text=True
        ).stdout.strip()
        dirty = subprocess.run(
            ["git", "status", "--porcelain", "--", "src"], cwd=REPO, capture_output=True, text=True
        ).stdout.strip()
    except OSError:
        return "unknown (no git)"
    return f"{head or 'unknown'}" + (" + uncommitted changes in src/" if dirty else "")


def print_header(opts: Options, litellm: str, targets: Sequence[tg.Target]) -> None:
    """What was run, where, with which versions."""
    print("## Gateway benchmark\n")
    print(f"- command: `.venv/bin/python bench/gateway_bench.py {' '.join(opts.argv)}`".rstrip())
    print(f"- date: {dt.datetime.now(dt.UTC):%Y-%m-%d %H:%M} UTC")
    print(f"- machine: {os.cpu_count()} vCPUs, {_cpu_model()}, {platform.platform()}")
    print(
        f"- layout: each proxy pinned to CPU {opts.proxy_cpu}; the fake upstream and the load "
        f"generator (own process, closed loop) pinned to CPU {opts.load_cpu}"
    )
    print(
        f"- cells: {opts.warmup:g} s warm-up, then {opts.seconds:g} s measured; a cell is measured "
        f"again (up to {opts.retries}x) when others took more than {opts.max_others:.0%} of a CPU"
    )
    print(
        "- calls: POST /v1/chat/completions, ~1 KB prompt, 16-token reply; streams: 16 chunks, "
        "a usage chunk, [DONE]" + (f", {opts.chunk_gap_ms:g} ms apart" if opts.chunk_gap_ms else "")
    )
    print(f"- Pilothouse: {_source_version()}")
    print("- Pilothouse side: " + ", ".join(f"{k} {v}" for k, v in _versions().items()))
    print(f"- LiteLLM side: {litellm}")
    for t in targets:
        print(f"- target `{t.name}`: {t.what}")
    sys.stdout.flush()


BUDGET_TARGET_P50_MS = 0.5
BUDGET_PAIRS = (
    ("pilothouse", "pilothouse-budgets"),
    ("pilothouse-pg", "pilothouse-pg-budgets"),
    ("pilothouse", "pilothouse-wait"),  # the floors (--wait-floors): a wait, no budgets
    ("pilothouse-pg", "pilothouse-pg-roundtrip"),
    ("pilothouse-pg", "pilothouse-pg-durable"),
)


def _rounds(cell: Cell) -> str:
    return " ".join(f"{rps:,.0f}" for rps in cell.round_rps)


def added_p50(without: Cell, with_: Cell) -> tuple[float, list[float]]:
    """The p50 ``with_`` adds to ``without``, and what each round added. With rounds, the
    median of the rounds' differences: the two targets of a round ran one right after the
    other, so a drift of the machine's speed between rounds cancels out, where the difference
    of each target's own median round would carry it. Without, the one round's."""
    pairs = list(zip(without.round_p50_ms, with_.round_p50_ms, strict=False))
    if len(pairs) < 2:
        return with_.result.p50_ms - without.result.p50_ms, []
    each = [b - p for p, b in pairs]
    return statistics.median(each), each


def print_budget_cost(cells: Sequence[Cell], opts: Options) -> None:
    """What budget enforcement adds: each store with budgets on four scopes against none."""
    index = _index(cells)
    lines = []
    for plain, budgeted in BUDGET_PAIRS:
        for mode in opts.modes:
            for conc in opts.concurrency:
                p, b = index.get((plain, mode, conc)), index.get((budgeted, mode, conc))
                if p is None or b is None:
                    continue
                added, each = added_p50(p, b)
                mark = ""
                if conc == TARGET_CONCURRENCY:
                    mark = " " + _mark(added <= BUDGET_TARGET_P50_MS)
                variant = budgeted.removeprefix(plain + "-")
                line = (
                    f"| {plain} | {variant} | {mode} | {conc} | {p.rps:,.0f} | {b.rps:,.0f} "
                    f"| {_ratio(b.rps, p.rps)} | {p.result.p50_ms:.2f} / {b.result.p50_ms:.2f} "
                    f"| {added:+.2f}{mark} | {p.cpu_us_per_call:,.0f} / {b.cpu_us_per_call:,.0f} |"
                )
                if opts.rounds > 1:
                    spread = " ".join(f"{a:+.2f}" for a in each)
                    line += f" {spread} | {_rounds(p)} / {_rounds(b)} |"
                lines.append(line)
    if not lines:
        return
    print(
        f"\n### Budget enforcement (target: at most {BUDGET_TARGET_P50_MS:g} ms added p50 at"
        f" c={TARGET_CONCURRENCY})\n"
    )
    rounds = (
        " added p50 ms of each round | calls/s of each round, without / with |"
        if opts.rounds > 1
        else ""
    )
    print(
        "| without | with | mode | c | calls/s without | calls/s with | ratio"
        " | p50 ms without / with "
        f"| added p50 ms | CPU µs/call without / with |{rounds}"
    )
    print("|---|---|---|---:|---:|---:|---:|---|---:|---|" + ("---|---|" if rounds else ""))
    for line in lines:
        print(line)
