"""The gateway benchmark's data: options, measured cells, call ledgers, and the targets' order.

Shared by ``gateway_bench.py`` (which measures) and ``gateway_report.py`` (which prints).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path

from bench import gateway_profile
from bench.gateway_loadgen import Result

MODES = ("non-stream", "stream")
ALL_TARGETS = ("direct", "bare", "floor", "pilothouse", "litellm")
TARGET_CONCURRENCY = 32
TARGET_ADDED_P50_MS = 1.0
TARGET_ADDED_P99_MS = 5.0
TARGET_SHARE_OF_BARE = 0.5
LOAD_FULL = 0.9  # share of the load CPU above which the upstream + generator may be the limit


@dataclass
class Cell:
    """One target at one concurrency in one mode: what the load generator saw."""

    target: str
    mode: str
    concurrency: int
    result: Result
    attempts: int = 1
    others: list[tuple[str, float]] = field(default_factory=list)
    store_cpu_s: float = 0.0  # PostgreSQL's server processes, over the measured window
    round_rps: list[float] = field(default_factory=list)  # calls/s of each round (--rounds)
    round_p50_ms: list[float] = field(default_factory=list)  # p50 of each round, in order

    @property
    def rps(self) -> float:
        """Successful calls per second in the measured window."""
        return self.result.calls / self.result.seconds if self.result.seconds else 0.0

    @property
    def cpu_us_per_call(self) -> float:
        """The proxy process tree's CPU time per call."""
        r = self.result
        return r.proxy_cpu_s / r.calls * 1e6 if r.calls and self.target != "direct" else math.nan

    @property
    def proxy_share(self) -> float:
        """How much of its CPU the proxy used."""
        return self.result.proxy_cpu_s / self.result.seconds

    @property
    def others_on_proxy_cpu(self) -> float:
        """Share of the proxy's CPU that anything else used."""
        r = self.result
        return max(0.0, r.proxy_cpu_busy_s - r.proxy_cpu_s) / r.seconds

    @property
    def others_on_load_cpu(self) -> float:
        """Share of the load CPU used by anything but the upstream and the generator."""
        r = self.result
        return max(0.0, r.load_cpu_busy_s - r.upstream_cpu_s - r.generator_cpu_s) / r.seconds

    @property
    def load_share(self) -> float:
        """How much of the load CPU the upstream, the generator and interrupts used.

        Everything the CPU did, less what others did: a process's own CPU time may include
        interrupt work done in its context, so adding the two would count some of it twice.
        """
        r = self.result
        total = r.load_cpu_busy_s + r.load_cpu_irq_s
        return min(1.0, (total - self.others_on_load_cpu * r.seconds) / r.seconds)

    def contention(self) -> float:
        """The larger share of a CPU of ours that something else took.

        PostgreSQL's server is not pinned: for a Pilothouse on PostgreSQL its CPU is part of
        the system under test, so it is taken out of the others.
        """
        store = self.store_cpu_s / self.result.seconds
        if self.target == "direct":
            return self.others_on_load_cpu
        return max(0.0, max(self.others_on_proxy_cpu, self.others_on_load_cpu) - store)


@dataclass
class Options:
    """The command line."""

    seconds: float
    warmup: float
    concurrency: list[int]
    modes: list[str]
    targets: list[str]
    postgres: str | None
    profile: bool
    profile_concurrency: list[int]
    profile_target: str
    profile_raw: Path | None
    profile_stream: bool
    rounds: int
    gc_freeze: bool
    budgets: bool
    wait_floors: bool
    retries: int
    max_others: float
    proxy_cpu: int
    load_cpu: int
    cache_dir: Path
    litellm_requirement: str
    chunk_gap_ms: float
    json_path: Path | None
    quick: bool
    argv: list[str] = field(default_factory=list)


@dataclass
class Totals:
    """Every call made to one target, over all its runs (re-measures and the profile too)."""

    ok: int = 0
    errors: int = 0
    unfinished: int = 0

    def add(self, result: Result) -> None:
        """Count one load generator run."""
        self.ok += result.ok_total
        self.errors += result.errors_total
        self.unfinished += result.unfinished


@dataclass
class Ledger:
    """Calls made through one Pilothouse, against what it recorded."""

    target: str
    client_ok: int
    client_errors: int
    unfinished: int
    rows: int | None = None
    rows_ok: int | None = None
    sqlite_rows: int | None = None
    upstream_calls: int | None = None
    problem: str | None = None

    @property
    def nothing_lost(self) -> bool:
        """Every call the client got whole has a row, and every forwarded call has one."""
        return (
            self.problem is None
            and self.rows_ok == self.client_ok
            and (self.upstream_calls is None or self.rows == self.upstream_calls)
            and (self.sqlite_rows is None or self.sqlite_rows == self.rows)
        )


@dataclass
class ProfileRun:
    """A py-spy profile of one Pilothouse cell."""

    target: str
    cell: Cell
    profile: gateway_profile.Profile
    rate_hz: int


def cell_order(opts: Options) -> list[str]:
    """The targets in the order of the tables."""
    names = list(opts.targets)
    if "pilothouse" in names:
        at = names.index("pilothouse") + 1
        extra = ["pilothouse-pg"] if opts.postgres is not None else []
        extra += ["pilothouse-gcfreeze"] if opts.gc_freeze else []
        if opts.budgets:
            extra.insert(0, "pilothouse-budgets")
            if opts.postgres is not None:
                extra.append("pilothouse-pg-budgets")
        if opts.wait_floors:
            extra.append("pilothouse-wait")
            if opts.postgres is not None:
                extra += ["pilothouse-pg-roundtrip", "pilothouse-pg-durable"]
        names[at:at] = extra
    return names


def pilothouse_names(opts: Options) -> list[str]:
    """The Pilothouse targets of this run."""
    return [n for n in cell_order(opts) if n.startswith("pilothouse")]


def judged_names(opts: Options) -> list[str]:
    """The targets the issue's goals are checked for: the floor and every Pilothouse."""
    return [n for n in cell_order(opts) if n == "floor" or n.startswith("pilothouse")]
