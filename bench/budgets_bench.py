"""What budget enforcement adds to an LLM call, the two servers taking turns a fifth of a second.

The budgets issue's question: budgets on four scopes against none, on SQLite and PostgreSQL,
side by side in one run; target: at most 0.5 ms added p50 at concurrency 32.
``gateway_bench.py --budgets`` answers it with cells of seconds, one target after the other;
on a machine whose speed drifts by tens of percent from one second to the next, such cells
differ by the drift as much as by the targets (its rounds' added p50 ranged from -5 to +5 ms
on one run). Here the two Pilothouse servers, one whose session counts against four hard
budgets (``gateway_targets.BENCH_BUDGETS``) and one with none, take turns of ``--slice``
seconds (``interleave_loadgen.py``), A B, B A, ... for ``--seconds`` of counted turns each, in
chunks between which PostgreSQL's bench databases are vacuumed (as autovacuum would keep them).

Reported per store and mode: each server's calls per second of its turns, p50 and p99 of the
calls counted in its turns pooled, the added p50 (pooled) and the median of the turn pairs'
differences, the mean, and each server's CPU per call during its turns. Afterwards the usage
rows each server recorded are checked against the calls it answered (nothing lost).

    .venv/bin/python bench/budgets_bench.py [--stores sqlite postgresql] [--postgres URL]
        [--seconds 30] [--slice 0.2]
"""

from __future__ import annotations

import argparse
import contextlib
import json
import math
import os
import signal
import statistics
import subprocess
import sys
import tempfile
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path

if not __package__:  # run as a file: make the `bench` package importable
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench import gateway_report as report
from bench import gateway_targets as tg
from bench.gateway_bench import (
    _stop_on_sigterm,
    check_ledger,
    request_body,
    sanity_check,
    upstream_counts,
)
from bench.gateway_cells import Totals
from bench.interleave_loadgen import SideResult

BENCH = Path(__file__).resolve().parent
STORES = {"sqlite": "SQLite", "postgresql": "PostgreSQL"}
# (store, the server compared with, the one compared, what the pair is): budgets on four
# scopes against none (both reserving every call before forwarding, as by default); with
# --unreserved, that default against ``gateway.reserve_every_call`` off (what reserving a call
# no budget applies to costs); with --floors, a further wait before forwarding
# (gateway_targets.WAITS; the server otherwise the default): a batch that writes nothing
# (SQLite: its writes cost only CPU), and a one-row insert and commit per call on PostgreSQL.
COMPARED = [
    ("sqlite", "pilothouse", "pilothouse-budgets", "budgets"),
    ("sqlite", "pilothouse-unreserved", "pilothouse", "reserved"),
    ("sqlite", "pilothouse", "pilothouse-wait", "floor"),
    ("postgresql", "pilothouse-pg", "pilothouse-pg-budgets", "budgets"),
    ("postgresql", "pilothouse-pg-unreserved", "pilothouse-pg", "reserved"),
    ("postgresql", "pilothouse-pg", "pilothouse-pg-durable", "floor"),
]
LABELS = {"budgets": "budgets", "reserved": "every call reserved"}
TARGET_ADDED_P50_MS = 0.5
GRACE_S = 120.0


@dataclass
class Pair:
    """Two servers, measured in one mode."""

    store: str  # the store and what is compared: "SQLite, budgets"
    mode: str
    concurrency: int
    without: SideResult
    with_: SideResult

    @property
    def added_p50(self) -> float:
        """The p50 of the budgeted server's counted calls less the other's."""
        return self.with_.p50_ms - self.without.p50_ms

    @property
    def turn_pairs(self) -> list[float]:
        """Each pair of turns' difference of p50 (pairs where both counted calls)."""
        pairs = zip(self.without.turn_p50_ms, self.with_.turn_p50_ms, strict=False)
        return [b - a for a, b in pairs if not (math.isnan(a) or math.isnan(b))]


def interleaved(
    plain: tg.Target, budgeted: tg.Target, opts: argparse.Namespace, stream: bool, seconds: float
) -> tuple[SideResult, SideResult]:
    """One run of the interleaved load generator (pinned to the load CPU) on the two."""
    spec = {
        "ports": [plain.port, budgeted.port],
        "headers": [plain.headers, budgeted.headers],
        "proxy_pids": [t.process.pid if t.process else None for t in (plain, budgeted)],
        "path": tg.COMPLETIONS_PATH,
        "body": request_body(stream),
        "stream": stream,
        "concurrency": opts.concurrency,
        "warmup": opts.warmup,
        "seconds": seconds,
        "slice": opts.slice,
        "settle": opts.settle,
        "store_command": "postgres" if plain.database_url else "",
    }
    argv = [sys.executable, str(BENCH / "interleave_loadgen.py"), json.dumps(spec)]
    load_cpu = opts.load_cpu
    proc = subprocess.Popen(
        argv,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        preexec_fn=lambda: os.sched_setaffinity(0, {load_cpu}),
    )
    try:
        out, err = proc.communicate(timeout=opts.warmup + 2 * seconds + GRACE_S)
    except BaseException:
        proc.kill()
        proc.wait()
        raise
    if proc.returncode != 0:
        raise RuntimeError(f"the load generator failed ({proc.returncode}):\n{err[-2000:]}")
    a, b = (SideResult(**r) for r in json.loads(out))
    return a, b


def measure(
    store: str,
    plain: tg.Target,
    budgeted: tg.Target,
    opts: argparse.Namespace,
    totals: dict[str, Totals],
) -> list[Pair]:
    """Each mode, in chunks of ``--chunk`` counted seconds a server."""
    pairs = []
    for mode in opts.modes:
        runs: list[tuple[SideResult, SideResult]] = []
        left = opts.seconds
        while left > 0:
            for target in (plain, budgeted):
                if target.database_url is not None:
                    tg.vacuum(target.database_url)
            chunk = min(opts.chunk, left)
            runs.append(interleaved(plain, budgeted, opts, mode == "stream", chunk))
            left -= chunk
        without = SideResult.pooled([r[0] for r in runs])
        with_ = SideResult.pooled([r[1] for r in runs])
        for target, side in ((plain, without), (budgeted, with_)):
            total = totals.setdefault(target.name, Totals())
            total.ok += side.ok_total
            total.errors += side.errors_total
        pair = Pair(store, mode, opts.concurrency, without, with_)
        _progress(pair)
        pairs.append(pair)
    return pairs


def _progress(pair: Pair) -> None:
    print(
        f"  {pair.store:<10} {pair.mode:<10} p50 {pair.without.p50_ms:6.2f} /"
        f" {pair.with_.p50_ms:6.2f} ms  added {pair.added_p50:+.2f}"
        f" (turns' median {statistics.median(pair.turn_pairs):+.2f})"
        f"  CPU µs/call: proxy {_cpus(pair, 'cpu')}, store {_cpus(pair, 'store_cpu')},"
        f" machine {_cpus(pair, 'machine_cpu')}",
        file=sys.stderr,
        flush=True,
    )


def _cpus(pair: Pair, which: str) -> str:
    """``without / with`` of one of SideResult's CPU figures, per call ("-": not measured)."""
    a, b = (getattr(side, f"{which}_us_per_call") for side in (pair.without, pair.with_))
    return "-" if not (a or b) else f"{a:.0f} / {b:.0f}"


def print_report(pairs: Sequence[Pair], opts: argparse.Namespace) -> None:
    """The Markdown table: one row per store and mode."""
    print(
        f"\n### Budget enforcement, interleaved (target: at most {TARGET_ADDED_P50_MS:g} ms"
        f" added p50 at c={opts.concurrency})\n"
    )
    print(
        "| store, with | mode | c | calls/s without / with | ratio | p50 ms without / with"
        " | added p50 ms | turns' median (middle half) | added mean ms | p99 ms without / with"
        " | CPU µs/call without / with: proxy | store | machine | turns |"
    )
    print("|---|---|---:|---|---:|---|---:|---|---:|---|---|---|---|---:|")
    for p in pairs:
        each = sorted(p.turn_pairs)
        q = statistics.quantiles(each, n=4) if len(each) > 1 else [math.nan] * 3
        mark = "✓" if p.added_p50 <= TARGET_ADDED_P50_MS else "✗"
        print(
            f"| {p.store} | {p.mode} | {p.concurrency} | {p.without.rps:,.0f} /"
            f" {p.with_.rps:,.0f} | {p.with_.rps / p.without.rps:.2f}"
            f" | {p.without.p50_ms:.2f} / {p.with_.p50_ms:.2f} | {p.added_p50:+.2f} {mark}"
            f" | {statistics.median(each):+.2f} ({q[0]:+.2f} to {q[2]:+.2f})"
            f" | {p.with_.mean_ms - p.without.mean_ms:+.2f}"
            f" | {p.without.p99_ms:.2f} / {p.with_.p99_ms:.2f}"
            f" | {_cpus(p, 'cpu')} | {_cpus(p, 'store_cpu')} | {_cpus(p, 'machine_cpu')}"
            f" | {len(each)} |"
        )


def parse_args(argv: Sequence[str]) -> argparse.Namespace:
    """The options (see the module)."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--stores", nargs="+", choices=["sqlite", "postgresql"], default=["sqlite", "postgresql"]
    )
    parser.add_argument(
        "--postgres",
        default="postgresql://postgres@127.0.0.1:5432",
        help="the PostgreSQL server, where each server gets a database made for the run",
    )
    parser.add_argument("--modes", nargs="+", default=["non-stream", "stream"])
    parser.add_argument("--concurrency", type=int, default=32)
    parser.add_argument("--seconds", type=float, default=30.0, help="counted seconds a server")
    parser.add_argument("--chunk", type=float, default=10.0, help="counted seconds between vacuums")
    parser.add_argument("--warmup", type=float, default=2.0, help="seconds of turns not counted")
    parser.add_argument("--slice", type=float, default=0.2, help="seconds of one server's turn")
    parser.add_argument("--settle", type=float, default=0.05, help="seconds into a turn to count")
    parser.add_argument(
        "--floors", action="store_true", help="also each store's floor (see COMPARED)"
    )
    parser.add_argument(
        "--unreserved",
        action="store_true",
        help="also each store's default against reserve_every_call off (see COMPARED)",
    )
    parser.add_argument("--proxy-cpu", type=int, default=0)
    parser.add_argument("--load-cpu", type=int, default=1)
    parser.add_argument("--json", type=Path, default=None, dest="json_path")
    return parser.parse_args(argv)


def main(argv: Sequence[str]) -> int:
    """Start the upstream and the servers, measure each store's pair, check, report."""
    opts = parse_args(argv)
    usable = os.sched_getaffinity(0)
    if {opts.proxy_cpu, opts.load_cpu} - usable or opts.proxy_cpu == opts.load_cpu:
        print(f"need two distinct usable CPUs for proxy and load; usable: {sorted(usable)}")
        return 2
    signal.signal(signal.SIGTERM, _stop_on_sigterm)
    os.sched_setaffinity(0, {opts.load_cpu})  # this process only waits: off the proxy's CPU
    wanted = {"budgets"}
    wanted |= {"floor"} if opts.floors else set()
    wanted |= {"reserved"} if opts.unreserved else set()
    compared = [c for c in COMPARED if c[0] in opts.stores and c[3] in wanted]
    pairs: list[Pair] = []
    ledgers = []
    with tempfile.TemporaryDirectory(prefix="pilothouse-budgets-bench-") as tmp:
        workdir = Path(tmp)
        with contextlib.ExitStack() as stack:
            upstream = tg.start_upstream(stack, workdir, opts.load_cpu, 0.0)
            servers: dict[str, tuple[tg.Target, int]] = {}
            for _store, plain, other, _ in compared:
                for name in (plain, other):
                    if name in servers:
                        continue
                    target = tg.start_named(
                        stack, workdir, opts.proxy_cpu, upstream.port, name, opts.postgres
                    )
                    servers[name] = (target, sanity_check(target))
                    print(f"- `{name}`: {target.what}")
            totals: dict[str, Totals] = {}
            for store, plain, other, kind in compared:
                label = f"{STORES[store]}, {LABELS.get(kind, other.removeprefix(plain + '-'))}"
                pairs += measure(label, servers[plain][0], servers[other][0], opts, totals)
            counts = upstream_counts(upstream)
            for name, (target, sanity) in servers.items():
                ledgers.append(check_ledger(target, totals.get(name, Totals()), sanity, counts))
    print_report(pairs, opts)
    report.print_ledgers(ledgers, counts)
    if opts.json_path is not None:
        raw = [
            asdict(side) | {"pair": p.store, "mode": p.mode, "second": second}
            for p in pairs
            for side, second in ((p.without, False), (p.with_, True))
        ]
        options = {k: str(v) for k, v in vars(opts).items()}
        opts.json_path.write_text(json.dumps({"options": options, "sides": raw}))
    lost = [g for g in ledgers if not g.nothing_lost]
    errors = [p for p in pairs if p.without.errors_total or p.with_.errors_total]
    return 1 if lost or errors else 0


if __name__ == "__main__":
    try:
        sys.exit(main(sys.argv[1:]))
    except KeyboardInterrupt:
        sys.exit(130)
