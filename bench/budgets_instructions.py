"""What budget enforcement costs a call in CPU instructions, counted by valgrind's callgrind.

``budgets_bench.py`` answers the budgets issue's question in milliseconds, but on these shared
machines two runs of one build differ by 0.3-0.5 ms, as much as the changes being tried. The
instructions a server executes per call hardly move from run to run: each Pilothouse server
here runs under callgrind (``--instr-atstart=no``: not instrumented until counted), is warmed
up, and then, one server at a time, counted while the load generator drives it for
``--seconds`` (``callgrind_control -i on``, then ``-d``, then ``-i off``). Rounds alternate the
servers' order.

Reported per server and round: calls answered while counted, and per call the instructions
(Ir), first-level cache misses (instruction and data, as callgrind's cache model counts them)
and last-level misses; then per server the median over rounds and its difference from the
server without budgets. Two things differ from a server at full speed: under callgrind a server
answers 20 to 30 calls a second, so a ledger tick carries a few calls rather than a dozen (its
fixed cost weighs more per call), and work done every so many seconds would weigh a hundred
times more per call than at full speed (one alert check, every 5 s by default, counted as
40,000 instructions a call), so here it all runs at most hourly (``QUIET``): the alert check,
the key cache's re-reads, the last-used flush, the reservations' renewal and sweep. And a
budgeted call's settlement is written after its reply: for the last calls of a window (a tick
or two of the few hundred calls counted) it falls outside the count.

    .venv/bin/python bench/budgets_instructions.py [--store sqlite|postgresql] [--postgres URL]
        [--mode stream|non-stream] [--seconds 15] [--rounds 2] [--floor] [--keep-dumps DIR]

Needs ``valgrind`` (``apt-get install -y valgrind``).
"""

from __future__ import annotations

import argparse
import contextlib
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

if not __package__:  # run as a file: make the `bench` package importable
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench import gateway_bench as gb
from bench import gateway_targets as tg

# (store, servers): the one without budgets first (the baseline), then budgets on four scopes,
# then with --floor the least a reservation before forwarding adds (gateway_targets.WAITS).
SERVERS = {
    "sqlite": ("pilothouse", "pilothouse-budgets", "pilothouse-wait"),
    "postgresql": ("pilothouse-pg", "pilothouse-pg-budgets", "pilothouse-pg-durable"),
}
EVENTS = ("Ir", "I1mr", "D1mr", "D1mw", "ILmr", "DLmr", "DLmw")
READY_TIMEOUT_S = 600.0  # start-up under valgrind, uncounted, takes a few times longer
QUIET = {  # the settings of work that runs every so many seconds, not per call
    "PILOTHOUSE_ALERT_CHECK_SECONDS": "3600",
    "PILOTHOUSE_KEY_CACHE_TTL_SECONDS": "86400",
    "PILOTHOUSE_LAST_USED_FLUSH_SECONDS": "3600",
    "PILOTHOUSE_GATEWAY": '{"sweep_seconds": 3600, "reservation_ttl_seconds": 10800}',
}


@dataclass
class Count:
    """One counted window of one server."""

    server: str
    round: int
    calls: int
    events: dict[str, int]

    def per_call(self, event: str) -> float:
        """``event`` per call answered."""
        return self.events.get(event, 0) / self.calls if self.calls else 0.0

    @property
    def l1_misses(self) -> float:
        """First-level misses per call: instruction reads, data reads and data writes."""
        return sum(self.per_call(e) for e in ("I1mr", "D1mr", "D1mw"))

    @property
    def ll_misses(self) -> float:
        """Last-level misses per call."""
        return sum(self.per_call(e) for e in ("ILmr", "DLmr", "DLmw"))


def read_totals(path: Path) -> dict[str, int]:
    """The event totals of one callgrind dump (its ``events:`` and ``totals:`` or ``summary:``
    lines)."""
    names: list[str] = []
    values: list[int] = []
    with path.open() as lines:
        for line in lines:
            if line.startswith("events:"):
                names = line.split()[1:]
            elif line.startswith(("totals:", "summary:")):
                values = [int(v) for v in line.split()[1:]]
    if not names or len(values) != len(names):
        raise ValueError(f"{path}: no event totals")
    return dict(zip(names, values, strict=True))


def newest_dump(directory: Path, server: str, pid: int) -> Path:
    """The last dump callgrind wrote for ``server`` (``<server>.<pid>.out.<n>``)."""
    dumps = list(directory.glob(f"{server}.{pid}.out.*"))
    if not dumps:
        raise FileNotFoundError(f"callgrind wrote no dump for {server} in {directory}")
    return max(dumps, key=lambda p: int(p.suffix.lstrip(".")))


def medians(counts: Sequence[Count]) -> dict[str, tuple[float, float, float]]:
    """Per server: the median over rounds of Ir, L1 misses and LL misses per call."""
    servers = dict.fromkeys(c.server for c in counts)
    found = {}
    for server in servers:
        mine = [c for c in counts if c.server == server]
        found[server] = (
            statistics.median(c.per_call("Ir") for c in mine),
            statistics.median(c.l1_misses for c in mine),
            statistics.median(c.ll_misses for c in mine),
        )
    return found


def report(counts: Sequence[Count], baseline: str) -> str:
    """The Markdown tables: every counted window, then each server's medians against the
    baseline's."""
    lines = [
        "| server | round | calls | Ir/call | L1 misses/call | LL misses/call |",
        "|---|---:|---:|---:|---:|---:|",
    ]
    lines.extend(
        f"| {c.server} | {c.round} | {c.calls} | {c.per_call('Ir'):,.0f} |"
        f" {c.l1_misses:,.0f} | {c.ll_misses:,.1f} |"
        for c in counts
    )
    found = medians(counts)
    base = found[baseline]
    lines += [
        "",
        "| server (median of rounds) | Ir/call | added Ir/call | ratio | added L1 misses/call |",
        "|---|---:|---:|---:|---:|",
    ]
    for server, (ir, l1, _) in found.items():
        lines.append(
            f"| {server} | {ir:,.0f} | {ir - base[0]:+,.0f} | {ir / base[0]:.3f} |"
            f" {l1 - base[1]:+,.0f} |"
        )
    return "\n".join(lines)


def _control(*args: str) -> None:
    subprocess.run(["callgrind_control", *args], check=True, capture_output=True, timeout=60)


def _load_options(opts: argparse.Namespace, seconds: float) -> gb.Options:
    """The load generator's options: ``seconds`` of load, no warm-up, on our CPUs."""
    cpus = ["--proxy-cpu", str(opts.proxy_cpu), "--load-cpu", str(opts.load_cpu)]
    return gb.parse_args(["--seconds", str(seconds), "--warmup", "0", *cpus])


def count_window(
    target: tg.Target, upstream: tg.Target, opts: argparse.Namespace, dumps: Path, rnd: int
) -> Count:
    """Count ``target`` while the load generator drives it for ``opts.seconds``."""
    assert target.process is not None
    pid = str(target.process.pid)
    load = _load_options(opts, opts.seconds)
    _control("-i", "on", pid)
    try:
        proc = gb.run_load(target, upstream, load, opts.mode == "stream", opts.concurrency)
        result = gb.finish_load(proc, load)
    finally:
        _control("-d", pid)  # writes the counts so far, and zeroes them
        _control("-i", "off", pid)
    if result.errors_total:
        raise RuntimeError(f"{target.name}: {result.errors_total} calls failed while counted")
    events = read_totals(newest_dump(dumps, target.name, target.process.pid))
    return Count(target.name, rnd, result.ok_total, events)


def parse_args(argv: Sequence[str]) -> argparse.Namespace:
    """Read the command line."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--store", choices=sorted(SERVERS), default="postgresql")
    parser.add_argument("--postgres", default="postgresql://postgres@127.0.0.1:5432")
    parser.add_argument("--mode", choices=("stream", "non-stream"), default="stream")
    parser.add_argument("--concurrency", type=int, default=32)
    parser.add_argument("--seconds", type=float, default=15.0, help="counted seconds a window")
    parser.add_argument("--warmup", type=float, default=5.0, help="uncounted seconds a server")
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--floor", action="store_true", help="also the store's floor server")
    parser.add_argument(
        "--keep-dumps",
        type=Path,
        default=None,
        help="copy callgrind's dumps here (one per counted window: callgrind_annotate reads them)",
    )
    parser.add_argument("--proxy-cpu", type=int, default=0)
    parser.add_argument("--load-cpu", type=int, default=1)
    return parser.parse_args(argv)


def main(argv: Sequence[str]) -> int:
    """Start the upstream and the servers under callgrind, count, report."""
    opts = parse_args(argv)
    if shutil.which("valgrind") is None or shutil.which("callgrind_control") is None:
        print("needs valgrind and callgrind_control on PATH (apt-get install -y valgrind)")
        return 2
    signal.signal(signal.SIGTERM, gb._stop_on_sigterm)
    names = SERVERS[opts.store][: 3 if opts.floor else 2]
    counts: list[Count] = []
    with tempfile.TemporaryDirectory(prefix="pilothouse-instructions-") as tmp:
        workdir, dumps = Path(tmp), Path(tmp) / "callgrind"
        dumps.mkdir()
        with contextlib.ExitStack() as stack:
            upstream = tg.start_upstream(stack, workdir, opts.load_cpu, 0.0)
            servers: list[tg.Target] = []
            for name in names:
                wrapper = ["valgrind", "--tool=callgrind", "--instr-atstart=no", "--cache-sim=yes"]
                wrapper.append(f"--callgrind-out-file={dumps}/{name}.%p.out")
                target = tg.start_named(
                    stack,
                    workdir,
                    opts.proxy_cpu,
                    upstream.port,
                    name,
                    opts.postgres,
                    wrapper=wrapper,
                    settings_env=QUIET,
                    ready_timeout=READY_TIMEOUT_S,
                )
                gb.sanity_check(target)
                warm = _load_options(opts, opts.warmup)
                stream = opts.mode == "stream"
                gb.finish_load(gb.run_load(target, upstream, warm, stream, opts.concurrency), warm)
                print(f"- `{name}`: {target.what}; under callgrind", flush=True)
                servers.append(target)
            for rnd in range(1, opts.rounds + 1):
                order = servers if rnd % 2 else servers[::-1]
                for target in order:
                    count = count_window(target, upstream, opts, dumps, rnd)
                    counts.append(count)
                    print(
                        f"  round {rnd} {target.name}: {count.calls} calls,"
                        f" {count.per_call('Ir'):,.0f} Ir/call",
                        flush=True,
                    )
                    time.sleep(1.0)  # the dump is written before the next window starts
            if opts.keep_dumps is not None:  # for callgrind_annotate: which functions count
                opts.keep_dumps.mkdir(parents=True, exist_ok=True)
                for dump in dumps.iterdir():
                    shutil.copy2(dump, opts.keep_dumps / dump.name)
    print(f"\n### Instructions per call, {opts.store}, {opts.mode}, c={opts.concurrency}\n")
    print(report(counts, names[0]))
    return 0


if __name__ == "__main__":
    try:
        sys.exit(main(sys.argv[1:]))
    except KeyboardInterrupt:
        sys.exit(130)
