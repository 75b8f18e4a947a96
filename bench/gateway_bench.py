"""How much does Pilothouse's LLM gateway add? Measured beside the floor, the ceiling and LiteLLM.

    .venv/bin/python bench/gateway_bench.py [--seconds N] [--warmup N] [--concurrency C ...]
        [--targets direct bare floor pilothouse litellm] [--postgres [URL]] [--profile] [--quick]

One run, side by side, against the same fast fake upstream (``gateway_upstream.py``: 16-token
completions, no delay), non-streaming and streaming, closed loop at each concurrency:

- ``direct``: the load generator calls the upstream itself (the floor the others are compared
  with: "added" latency is a target's minus direct's at the same concurrency);
- ``bare``: the thinnest asyncio forwarder (``gateway_forwarder.py``): the ceiling for Python;
- ``floor``: the issue's per-call work (key cache, checks, a usage row durable by group commit
  before the reply ends) written flat with no layers (``gateway_floor.py``): the least a gateway
  that meets the issue can cost;
- ``pilothouse``: ``pilothouse serve`` with authentication by a session key, attribution, the
  durable usage row of every call, audit; SQLite in a temporary directory (``--postgres`` adds
  ``pilothouse-pg`` on a database made for the run and dropped after);
- ``litellm``: LiteLLM's proxy, pip-installed into its own virtual environment under
  ``--cache-dir`` (the repository's git-ignored ``.cache/`` by default), run as its production
  docs say. If it cannot be installed, the report says so and the rest still runs.

Layout as in the shared PERFORMANCE.md: each proxy pinned to ``--proxy-cpu``; the upstream and
the load generator (``gateway_loadgen.py``, its own process) pinned to ``--load-cpu``. The load
generator records per call the time to the first body byte and to the end, so streams get a
time to first byte. What else used either CPU is measured and a contended cell is measured
again. At the end: peak memory of each proxy, a check that Pilothouse recorded a usage row for
every call it answered (nothing lost under load), and with ``--profile`` where Pilothouse's CPU
goes per call (py-spy during a non-stream run at c=32). Prints Markdown for bench/README.md.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import math
import os
import signal
import sqlite3
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence
from dataclasses import asdict
from pathlib import Path
from types import FrameType
from typing import Any

if not __package__:  # run as a file: make the `bench` package importable
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench import gateway_profile
from bench import gateway_report as report
from bench import gateway_targets as tg
from bench.gateway_cells import (
    ALL_TARGETS,
    MODES,
    TARGET_CONCURRENCY,
    Cell,
    Ledger,
    Options,
    ProfileRun,
    Totals,
    cell_order,
    judged_names,
)
from bench.gateway_loadgen import Result

BENCH = Path(__file__).resolve().parent
REPO = BENCH.parent
DRAIN_TIMEOUT_S = 60.0
LOAD_GRACE_S = 60.0
PROFILE_RATE_HZ = 250

SYSTEM_PROMPT = (
    "You are a coding agent working in a Git repository. Answer briefly, cite file paths, and "
    "never invent APIs. Prefer small, reviewable changes with tests. "
)
USER_PROMPT = (
    "Summarise what this change does, in one sentence.\n\n"
    + (
        "diff --git a/src/app/billing.py b/src/app/billing.py\n"
        "-    total = sum(line.amount for line in lines)\n"
        "+    total = sum((line.amount for line in lines), Decimal(0))\n"
    )
    * 6
)


def request_body(stream: bool) -> str:
    """The ~1 KB chat request every call sends."""
    body: dict[str, Any] = {
        "model": tg.MODEL_ALIAS,
        "messages": [
            {"role": "system", "content": SYSTEM_PROMPT},
            {"role": "user", "content": USER_PROMPT},
        ],
        "max_tokens": 64,
        "temperature": 0,
    }
    if stream:
        body |= {"stream": True, "stream_options": {"include_usage": True}}
    return json.dumps(body)


# --- cells ------------------------------------------------------------------------------------


def run_load(
    target: tg.Target,
    upstream: tg.Target,
    opts: Options,
    stream: bool,
    concurrency: int,
    *,
    seconds: float | None = None,
) -> subprocess.Popen[str]:
    """Start the load generator on ``target`` (pinned to the load CPU); read it with finish_load."""
    spec = {
        "port": target.port,
        "path": tg.COMPLETIONS_PATH,
        "body": request_body(stream),
        "stream": stream,
        "concurrency": concurrency,
        "warmup": opts.warmup,
        "seconds": opts.seconds if seconds is None else seconds,
        "drain_timeout": DRAIN_TIMEOUT_S,
        "headers": target.headers,
        "proxy_pid": target.process.pid if target.process and target.name != "direct" else None,
        "upstream_pid": upstream.process.pid if upstream.process else None,
        "proxy_cpu": opts.proxy_cpu,
        "load_cpu": opts.load_cpu,
    }
    argv = [sys.executable, str(BENCH / "gateway_loadgen.py"), json.dumps(spec)]
    load_cpu = opts.load_cpu
    return subprocess.Popen(
        argv,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        preexec_fn=lambda: os.sched_setaffinity(0, {load_cpu}),
    )


def finish_load(proc: subprocess.Popen[str], opts: Options) -> Result:
    """Wait (bounded) for the load generator and parse its result."""
    try:
        out, err = proc.communicate(timeout=opts.warmup + opts.seconds + LOAD_GRACE_S)
    except BaseException:
        proc.kill()
        proc.wait()
        raise
    if proc.returncode != 0:
        raise RuntimeError(f"the load generator failed ({proc.returncode}):\n{err[-2000:]}")
    return Result(**json.loads(out))


def load_once(
    target: tg.Target,
    upstream: tg.Target,
    opts: Options,
    mode: str,
    concurrency: int,
    totals: dict[str, Totals],
) -> Cell:
    """One load generator run, with the processes that are not ours and used CPU meanwhile."""
    before, started = tg.cpu_snapshot(), time.monotonic()
    proc = run_load(target, upstream, opts, mode == "stream", concurrency)
    result = finish_load(proc, opts)
    after, elapsed = tg.cpu_snapshot(), time.monotonic() - started
    totals.setdefault(target.name, Totals()).add(result)
    ours = {os.getpid(), proc.pid}
    for t in (target, upstream):
        if t.process is not None:
            ours.update(t.process.tree())
    others = tg.busiest_others(before, after, ours, top=50)
    store = 0.0
    if target.name.startswith("pilothouse-pg"):  # spread evenly over the run: scale to window
        store = sum(s for n, s in others if n.startswith("postgres[")) * result.seconds / elapsed
    return Cell(target.name, mode, concurrency, result, others=others[:3], store_cpu_s=store)


def measure_cell(
    target: tg.Target,
    upstream: tg.Target,
    opts: Options,
    mode: str,
    concurrency: int,
    totals: dict[str, Totals],
) -> Cell:
    """One cell, measured again (up to --retries) while something else used our CPUs."""
    if target.database_url is not None:
        tg.vacuum(target.database_url)
    best = load_once(target, upstream, opts, mode, concurrency, totals)
    _print_progress(best)
    attempts = 1
    while best.contention() > opts.max_others and attempts <= opts.retries:
        busiest = ", ".join(f"{name} {secs:.1f}s" for name, secs in best.others)
        print(f"    (contended: measuring again; busiest others: {busiest})", file=sys.stderr)
        cell = load_once(target, upstream, opts, mode, concurrency, totals)
        _print_progress(cell)
        attempts += 1
        if cell.contention() < best.contention():
            best = cell
    best.attempts = attempts
    return best


def _print_progress(cell: Cell) -> None:
    r = cell.result
    ttfb = f"  ttfb p50 {r.ttfb_p50_ms:7.2f}" if cell.mode == "stream" else ""
    print(
        f"  {cell.mode:<10} c={cell.concurrency:<3} {cell.target:<13} {cell.rps:9,.0f} calls/s"
        f"  p50 {r.p50_ms:8.2f}  p99 {r.p99_ms:8.2f} ms{ttfb}  CPU {cell.cpu_us_per_call:6.0f}"
        f" us/call  proxy CPU {cell.proxy_share:4.0%}  load CPU {cell.load_share:4.0%}"
        f"  others {cell.contention():4.0%}  errors {r.errors}",
        file=sys.stderr,
        flush=True,
    )


def measure_all(
    targets: Sequence[tg.Target], upstream: tg.Target, opts: Options, totals: dict[str, Totals]
) -> list[Cell]:
    """Every mode and concurrency; the targets take turns within each, cell by cell, for
    --rounds rounds; each cell reported is the target's round of median calls/s (this
    machine's speed drifts by tens of percent over minutes: alternating short rounds
    compares targets under the same drift)."""
    cells = []
    for mode in opts.modes:
        for concurrency in opts.concurrency:
            rounds: dict[str, list[Cell]] = {t.name: [] for t in targets}
            for _ in range(opts.rounds):
                for target in targets:
                    cell = measure_cell(target, upstream, opts, mode, concurrency, totals)
                    rounds[target.name].append(cell)
            for target in targets:
                measured = sorted(rounds[target.name], key=lambda c: c.rps)
                median = measured[(len(measured) - 1) // 2]
                median.round_rps = [c.rps for c in rounds[target.name]]
                median.round_p50_ms = [c.result.p50_ms for c in rounds[target.name]]
                cells.append(median)
    return cells


# --- checks -----------------------------------------------------------------------------------


def sanity_check(target: tg.Target) -> int:
    """One non-stream and one stream call answer correctly; the number of calls made."""
    headers = dict(target.headers)
    for stream in (False, True):
        status, body = tg.request(
            target.port, "POST", tg.COMPLETIONS_PATH, request_body(stream).encode(), headers
        )
        whole = b'"completion_tokens"' in body and (
            not stream or body.rstrip().endswith(b"data: [DONE]")
        )
        if status != 200 or not whole:
            raise tg.TargetUnavailable(
                f"{target.name}: a {'stream' if stream else 'non-stream'} call answered {status}:"
                f" {body[:400]!r}"
            )
    return 2


def upstream_counts(upstream: tg.Target) -> dict[str, int]:
    """Completions the fake upstream served, by user agent."""
    status, body = tg.request(upstream.port, "GET", "/_bench/counts")
    counts: dict[str, int] = json.loads(body) if status == 200 else {}
    return counts


def check_ledger(
    target: tg.Target, totals: Totals, sanity_calls: int, counts: dict[str, int]
) -> Ledger:
    """Usage rows (from the API, and the SQLite file) against the calls the client completed."""
    ledger = Ledger(
        target.name,
        client_ok=sanity_calls + totals.ok,
        client_errors=totals.errors,
        unfinished=totals.unfinished,
    )
    if target.name == "floor":  # no API: its own SQLite file is its ledger
        assert target.sqlite_path is not None
        with contextlib.closing(sqlite3.connect(target.sqlite_path)) as conn:
            count = "SELECT count(*) FROM usage_records"
            ledger.rows = ledger.sqlite_rows = conn.execute(count).fetchone()[0]
            ledger.rows_ok = conn.execute(count + " WHERE status = 'ok'").fetchone()[0]
        ledger.upstream_calls = counts.get(target.upstream_agent or "", 0)
        return ledger
    for status_filter in ("", "ok"):
        query = f"?status={status_filter}" if status_filter else ""
        status, body = tg.request(
            target.port, "GET", f"/api/v1/spend{query}", headers=target.owner_headers
        )
        if status != 200:
            ledger.problem = f"GET /api/v1/spend answered {status}: {body[:200]!r}"
            return ledger
        calls = int(json.loads(body)["totals"]["calls"])
        if status_filter:
            ledger.rows_ok = calls
        else:
            ledger.rows = calls
    if target.sqlite_path is not None and target.sqlite_path.exists():
        with contextlib.closing(sqlite3.connect(target.sqlite_path)) as conn:
            ledger.sqlite_rows = conn.execute("SELECT count(*) FROM usage_records").fetchone()[0]
    if target.upstream_agent is not None:
        ledger.upstream_calls = counts.get(target.upstream_agent, 0)
    return ledger


# --- the profile ------------------------------------------------------------------------------


def py_spy_binary(venv: Path | None) -> str | None:
    """py-spy from the bench's virtual environment, beside this Python, or on PATH."""
    import shutil

    for folder in (venv / "bin" if venv is not None else None, Path(sys.executable).parent):
        if folder is not None and (folder / "py-spy").exists():
            return str(folder / "py-spy")
    return shutil.which("py-spy")


def profile_pilothouse(
    target: tg.Target,
    upstream: tg.Target,
    opts: Options,
    py_spy: str,
    workdir: Path,
    totals: dict[str, Totals],
    concurrency: int,
) -> ProfileRun:
    """Profile a run (non-stream, or stream with --profile-stream); again (up to --retries)
    while others used our CPUs."""
    # py-spy itself runs on the load CPU, so only the proxy's CPU is checked for others.
    run = _profile_once(target, upstream, opts, py_spy, workdir, totals, concurrency)
    for _ in range(opts.retries):
        if run.cell.others_on_proxy_cpu <= opts.max_others:
            break
        print("    (contended: profiling again)", file=sys.stderr, flush=True)
        again = _profile_once(target, upstream, opts, py_spy, workdir, totals, concurrency)
        if again.cell.others_on_proxy_cpu < run.cell.others_on_proxy_cpu:
            run = again
    return run


def _profile_once(
    target: tg.Target,
    upstream: tg.Target,
    opts: Options,
    py_spy: str,
    workdir: Path,
    totals: dict[str, Totals],
    concurrency: int,
) -> ProfileRun:
    """Load Pilothouse while py-spy samples it (after the warm-up)."""
    assert target.process is not None
    output = workdir / f"pilothouse-profile-c{concurrency}.txt"
    output.unlink(missing_ok=True)
    load = run_load(target, upstream, opts, opts.profile_stream, concurrency)
    spy: subprocess.Popen[bytes] | None = None
    try:
        time.sleep(opts.warmup)
        argv = [py_spy, "record", "--pid", str(target.process.pid), "--rate", str(PROFILE_RATE_HZ)]
        argv += ["--duration", str(max(1, math.floor(opts.seconds))), "--nonblocking"]
        argv += ["--format", "raw", "--output", str(output)]
        load_cpu = opts.load_cpu
        spy = subprocess.Popen(
            argv,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            preexec_fn=lambda: os.sched_setaffinity(0, {load_cpu}),
        )
        result = finish_load(load, opts)
        totals.setdefault(target.name, Totals()).add(result)
        _, err = spy.communicate(timeout=opts.seconds + LOAD_GRACE_S)
        if spy.returncode != 0 or not output.exists():
            raise RuntimeError(f"py-spy failed ({spy.returncode}): {err.decode()[-1000:]}")
    finally:
        for proc in (load, spy):
            if proc is not None and proc.poll() is None:
                proc.kill()
                proc.wait()
    cell = Cell(target.name, "stream" if opts.profile_stream else "non-stream", concurrency, result)
    _print_progress(cell)
    if opts.profile_raw is not None:
        opts.profile_raw.mkdir(parents=True, exist_ok=True)
        mode = "-stream" if opts.profile_stream else ""
        kept = opts.profile_raw / f"{target.name}{mode}-c{concurrency}.txt"
        kept.write_bytes(output.read_bytes())
    return ProfileRun(target.name, cell, gateway_profile.read_profile(output), PROFILE_RATE_HZ)


# --- the report -------------------------------------------------------------------------------


# --- the run ----------------------------------------------------------------------------------


def parse_args(argv: Sequence[str]) -> Options:
    """Read the command line."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--seconds", type=float, default=8, help="measured seconds per cell")
    parser.add_argument("--warmup", type=float, default=3, help="warm-up seconds per cell")
    parser.add_argument("--concurrency", type=int, nargs="+", default=[1, 32, 128])
    parser.add_argument("--modes", nargs="+", choices=MODES, default=list(MODES))
    parser.add_argument(
        "--targets",
        nargs="+",
        choices=ALL_TARGETS,
        default=list(ALL_TARGETS),
        help="direct is always measured (the other targets' added latency is against it)",
    )
    parser.add_argument(
        "--postgres",
        nargs="?",
        const="postgresql://postgres@127.0.0.1:5432",
        default=None,
        metavar="SERVER_URL",
        help="also measure Pilothouse on PostgreSQL (a database made for the run, then dropped)",
    )
    parser.add_argument(
        "--profile", action="store_true", help="py-spy Pilothouse in a non-stream c=32 run"
    )
    parser.add_argument(
        "--rounds",
        type=int,
        default=1,
        help="measure every cell this many times, the targets taking turns; report the median",
    )
    parser.add_argument(
        "--profile-target",
        default="pilothouse",
        help="with --profile: which Pilothouse target (pilothouse-budgets, say) is profiled",
    )
    parser.add_argument(
        "--profile-concurrency",
        type=int,
        nargs="+",
        default=[TARGET_CONCURRENCY],
        help="with --profile: one profiled run per concurrency",
    )
    parser.add_argument(
        "--profile-raw",
        type=Path,
        default=None,
        help="with --profile: keep py-spy's raw stacks in this folder (TARGET-cC.txt)",
    )
    parser.add_argument(
        "--profile-stream",
        action="store_true",
        help="with --profile: profile a streaming run instead of a non-stream one",
    )
    parser.add_argument(
        "--gc-freeze",
        action="store_true",
        help="also measure Pilothouse with gc.freeze() called after start (bench-only variant)",
    )
    parser.add_argument(
        "--budgets",
        action="store_true",
        help="also measure Pilothouse (and with --postgres, on PostgreSQL) with hard budgets on"
        " four scopes of every call: the cost of budget enforcement",
    )
    parser.add_argument(
        "--wait-floors",
        action="store_true",
        help="also measure Pilothouse without budgets where every call first waits for one"
        " group-committed batch that writes nothing (and, with --postgres, one that makes one"
        " round trip to PostgreSQL): the least any reservation before forwarding can add",
    )
    parser.add_argument("--retries", type=int, default=2, help="re-measures of a contended cell")
    parser.add_argument("--max-others", type=float, default=0.10)
    parser.add_argument("--proxy-cpu", type=int, default=0)
    parser.add_argument("--load-cpu", type=int, default=1)
    parser.add_argument(
        "--cache-dir",
        type=Path,
        default=REPO / ".cache" / "gateway-bench",
        help="where LiteLLM's virtual environment is kept (default: the repo's .cache/)",
    )
    parser.add_argument(
        "--litellm", dest="litellm_requirement", default="litellm[proxy]", help="pip requirement"
    )
    parser.add_argument(
        "--chunk-gap-ms", type=float, default=0.0, help="upstream's pause between stream events"
    )
    parser.add_argument("--json", type=Path, dest="json_path", help="also write raw cells here")
    parser.add_argument(
        "--quick", action="store_true", help="smoke run: 0.5 s warm-up, 1.5 s cells, c=32 only"
    )
    ns = parser.parse_args(argv)
    if ns.quick:
        ns.seconds, ns.warmup, ns.concurrency = 1.5, 0.5, [TARGET_CONCURRENCY]
    if ns.seconds <= 0 or ns.warmup < 0 or min(ns.concurrency) < 1 or ns.retries < 0:
        parser.error("--seconds and --concurrency must be positive, --warmup and --retries >= 0")
    if "direct" not in ns.targets:
        ns.targets.insert(0, "direct")
    ns.targets = [t for t in ALL_TARGETS if t in ns.targets]
    return Options(**vars(ns), argv=list(argv))


def _stop_on_sigterm(signum: int, _frame: FrameType | None) -> None:
    raise KeyboardInterrupt(f"signal {signum}")


def start_targets(
    stack: contextlib.ExitStack, opts: Options, workdir: Path
) -> tuple[tg.Target, list[tg.Target], dict[str, str], Path | None]:
    """Start the upstream and every target; what could not start is reported, not fatal."""
    upstream = tg.start_upstream(stack, workdir, opts.load_cpu, opts.chunk_gap_ms)
    targets = [upstream]
    skipped: dict[str, str] = {}
    venv: Path | None = None
    for name in cell_order(opts)[1:]:
        print(f"starting {name} ...", file=sys.stderr, flush=True)
        try:
            if name == "bare":
                target = tg.start_forwarder(stack, workdir, opts.proxy_cpu, upstream.port)
            elif name == "floor":
                target = tg.start_floor(stack, workdir, opts.proxy_cpu, upstream.port)
            elif name.startswith("pilothouse"):
                target = tg.start_named(
                    stack,
                    workdir,
                    opts.proxy_cpu,
                    upstream.port,
                    name,
                    opts.postgres,
                    gc_freeze=name == "pilothouse-gcfreeze",
                )
            else:
                venv = tg.litellm_venv(
                    opts.cache_dir, opts.litellm_requirement, workdir / "litellm-install.log"
                )
                target = tg.start_litellm(stack, workdir, opts.proxy_cpu, upstream.port, venv)
        except tg.TargetUnavailable as exc:
            if name.startswith("pilothouse"):
                raise
            skipped[name] = str(exc)
            print(f"! {name} left out: {exc}", file=sys.stderr, flush=True)
            continue
        targets.append(target)
    return upstream, targets, skipped, venv


def main(argv: Sequence[str]) -> int:
    """Start everything, measure every cell, check, report."""
    opts = parse_args(argv)
    usable = os.sched_getaffinity(0)
    if {opts.proxy_cpu, opts.load_cpu} - usable or opts.proxy_cpu == opts.load_cpu:
        print(f"need two distinct usable CPUs for proxy and load; usable: {sorted(usable)}")
        return 2
    signal.signal(signal.SIGTERM, _stop_on_sigterm)
    os.sched_setaffinity(0, {opts.load_cpu})  # this process only waits: off the proxy's CPU
    with tempfile.TemporaryDirectory(prefix="pilothouse-gateway-bench-") as tmp:
        workdir = Path(tmp)
        with contextlib.ExitStack() as stack:
            upstream, targets, skipped, venv = start_targets(stack, opts, workdir)
            sanity = {t.name: sanity_check(t) for t in targets}
            litellm = "not run"
            if venv is not None:
                found = tg.venv_versions(
                    venv, ["litellm", "uvicorn", "uvloop", "fastapi", "httpx", "aiohttp", "openai"]
                )
                litellm = ", ".join(f"{k} {v}" for k, v in found.items())
            for name, why in skipped.items():
                litellm = f"{name} not run: {why.splitlines()[0][:300]}"
            report.print_header(opts, litellm, targets)
            totals: dict[str, Totals] = {}
            cells = measure_all(targets, upstream, opts, totals)
            by_name = {t.name: t for t in targets}
            peaks = {t.name: t.process.memory_kib() for t in targets if t.process}
            profiles = []
            if opts.profile and opts.profile_target in by_name:
                spy = py_spy_binary(venv or opts.cache_dir / "venv")
                if spy is None:
                    print("! --profile: no py-spy (pip install py-spy, or run once with litellm)")
                else:
                    profiles = [
                        profile_pilothouse(
                            by_name[opts.profile_target], upstream, opts, spy, workdir, totals, conc
                        )
                        for conc in opts.profile_concurrency
                    ]
            counts = upstream_counts(upstream)
            ledgers = [
                check_ledger(by_name[n], totals.get(n, Totals()), sanity[n], counts)
                for n in judged_names(opts)
                if n in by_name
            ]
    report.print_summary(cells, opts)
    report.print_cells(cells, opts)
    report.print_ratios(cells, opts)
    report.print_verdicts(report.verdicts(cells, opts))
    report.print_budget_cost(cells, opts)
    report.print_memory(targets, peaks)
    report.print_ledgers(ledgers, counts)
    for name, why in skipped.items():
        print(f"\n**{name} was not measured:** {why}")
    for profile in profiles:
        report.print_profile(profile)
    if opts.json_path is not None:
        raw = {
            "options": {k: str(v) for k, v in asdict(opts).items()},
            "cells": [
                asdict(c) | {"rps": c.rps, "cpu_us_per_call": c.cpu_us_per_call} for c in cells
            ],
            "ledgers": [asdict(g) for g in ledgers],
            "peak_rss_kib": peaks,
        }
        opts.json_path.write_text(json.dumps(raw, indent=2))
    failed = [c for c in cells if c.result.errors or not c.result.calls]
    for c in failed:
        r = c.result
        print(f"! {c.target} {c.mode} c={c.concurrency}: {r.errors} errors, {r.calls} calls")
    lost = [g for g in ledgers if not g.nothing_lost]
    return 1 if failed or lost else 0


if __name__ == "__main__":
    try:
        sys.exit(main(sys.argv[1:]))
    except KeyboardInterrupt as stop:
        print(f"interrupted ({stop}); every process started was stopped", file=sys.stderr)
        sys.exit(130)
