"""Two targets' closed loops, interleaved slice by slice: what each costs under the same drift.

    python bench/interleave_loadgen.py '<json spec>'     (prints one JSON result)

``gateway_loadgen.py`` measures one target for seconds at a time; on a machine whose speed
drifts by tens of percent from one second to the next (another tenant on the same cores), two
targets measured seconds apart differ by the drift as much as by themselves. Here each target
has its own ``concurrency`` keep-alive connections (the same closed loop, the same
``Connection``), and only one target's are live at a time: the targets take turns of ``slice``
seconds, A B, B A, A B, ... so that each pair of turns sees the same machine. A reply counts
if its request was sent at least ``settle`` seconds into its target's turn (the calls of the
turn before have ended by then, or are ending on the other target) and it ended in the turn.

For each target it reports the counted calls' latencies pooled (p50, p99, mean) and each
turn's p50, the calls it finished per second of its turns, and the CPU time of its process
tree during its turns per call it finished then.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import statistics
import sys
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

if not __package__:  # run as a file: make the `bench` package importable
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.gateway_loadgen import (
    Connection,
    Spec,
    Tally,
    _percentile,
    _pid_tree,
    _pids_cpu,
    request_bytes,
)


@dataclass
class PairSpec:
    """Two targets, loaded in turns."""

    ports: list[int]
    headers: list[list[tuple[str, str]]]
    proxy_pids: list[int | None]
    path: str
    body: str
    stream: bool
    concurrency: int
    warmup: float  # seconds of turns before any is counted
    seconds: float  # counted seconds of turns per target
    slice: float = 0.2
    settle: float = 0.05
    drain_timeout: float = 60.0
    store_command: str = ""  # the shared store's processes (``postgres``), whose CPU is kept


@dataclass
class SideResult:
    """What one target's turns measured; times in milliseconds."""

    calls: int  # replies counted (sent after the settle time of a turn, ended in it)
    finished: int  # replies that ended in its turns, counted or not
    turn_seconds: float
    p50_ms: float
    p99_ms: float
    mean_ms: float
    turn_p50_ms: list[float]
    latencies_ms: list[float]  # every counted call's, to pool runs
    cpu_s: float  # its process tree's CPU time during its turns
    store_cpu_s: float  # the store's processes' CPU time during its turns (0: not asked)
    machine_cpu_s: float  # every CPU's busy time (interrupts too) during its turns
    ok_total: int
    errors_total: int
    error_samples: list[str]

    @classmethod
    def pooled(cls, runs: Sequence[SideResult]) -> SideResult:
        """Several runs of one target as one."""
        latencies = sorted(x for r in runs for x in r.latencies_ms)
        return cls(
            calls=len(latencies),
            finished=sum(r.finished for r in runs),
            turn_seconds=sum(r.turn_seconds for r in runs),
            p50_ms=_percentile(latencies, 0.50),
            p99_ms=_percentile(latencies, 0.99),
            mean_ms=statistics.fmean(latencies) if latencies else float("nan"),
            turn_p50_ms=[p for r in runs for p in r.turn_p50_ms],
            latencies_ms=latencies,
            cpu_s=sum(r.cpu_s for r in runs),
            store_cpu_s=sum(r.store_cpu_s for r in runs),
            machine_cpu_s=sum(r.machine_cpu_s for r in runs),
            ok_total=sum(r.ok_total for r in runs),
            errors_total=sum(r.errors_total for r in runs),
            error_samples=[e for r in runs for e in r.error_samples][:5],
        )

    @property
    def rps(self) -> float:
        """Replies per second of its turns."""
        return self.finished / self.turn_seconds if self.turn_seconds else 0.0

    @property
    def cpu_us_per_call(self) -> float:
        """CPU per reply finished in its turns."""
        return self._per_call(self.cpu_s)

    @property
    def store_cpu_us_per_call(self) -> float:
        """The store's CPU per reply finished in its turns."""
        return self._per_call(self.store_cpu_s)

    @property
    def machine_cpu_us_per_call(self) -> float:
        """The machine's busy CPU time per reply finished in its turns."""
        return self._per_call(self.machine_cpu_s)

    def _per_call(self, seconds: float) -> float:
        return seconds / self.finished * 1e6 if self.finished else float("nan")


@dataclass
class Side:
    """One target's connections, its turn, and what its turns saw."""

    spec: Spec
    pids: list[int]
    tally: Tally
    live: bool = False
    count_from: float = 0.0
    counting: bool = False
    parked: list[Connection] = field(default_factory=list)
    turn: list[float] = field(default_factory=list)
    turns: list[list[float]] = field(default_factory=list)
    finished: int = 0
    turn_seconds: float = 0.0
    cpu_s: float = 0.0
    store_cpu_s: float = 0.0
    machine_cpu_s: float = 0.0


class TurnTally(Tally):
    """A tally that counts a reply only in its target's turn, after the settle time."""

    side: Side

    def finished(self, sent: float, first: float, ended: float, ok: bool, why: str) -> None:
        """Record one reply (or failure)."""
        side = self.side
        if ok:
            self.ok_total += 1
            if side.live:
                side.finished += 1
                if side.counting and sent >= side.count_from:
                    side.turn.append(ended - sent)
        else:
            self.errors_total += 1
            if len(self.error_samples) < 5:
                self.error_samples.append(why[:300])


class TurnConnection(Connection):
    """A connection that waits, between replies, while its target is not in its turn."""

    def __init__(self, side: Side, request: bytes) -> None:
        super().__init__(side.tally, request)
        self._side = side

    def send_next(self) -> None:
        """Send the next request in the target's turn; park it otherwise."""
        side = self._side
        if not side.live and not side.tally.stopping:
            side.parked.append(self)
            return
        super().send_next()


def _side(spec: PairSpec, i: int) -> Side:
    one = Spec(
        port=spec.ports[i],
        path=spec.path,
        body=spec.body,
        stream=spec.stream,
        concurrency=spec.concurrency,
        warmup=0.0,
        seconds=0.0,
        headers=spec.headers[i],
    )
    tally = TurnTally(one, time.perf_counter())
    tally.stop_at = float("inf")
    pid = spec.proxy_pids[i]
    side = Side(one, _pid_tree(pid) if pid else [], tally)
    tally.side = side
    return side


async def _connect(side: Side) -> None:
    """Open the target's connections (parked until its first turn)."""
    loop = asyncio.get_running_loop()
    request = request_bytes(side.spec)
    for _ in range(side.spec.concurrency):
        await loop.create_connection(
            lambda: TurnConnection(side, request), "127.0.0.1", side.spec.port
        )


async def _turn(
    side: Side, seconds: float, settle: float, counted: bool, store: Sequence[int] = ()
) -> None:
    """Give ``side`` a turn of ``seconds`` (``store``: the shared store's processes)."""
    started = time.perf_counter()
    cpu, store_cpu, machine = _pids_cpu(side.pids), _pids_cpu(store), _machine_busy()
    side.live, side.counting, side.count_from = True, counted, started + settle
    side.turn = []
    parked, side.parked = side.parked, []
    for conn in parked:
        conn.send_next()
    await asyncio.sleep(seconds)
    side.live = False
    if counted:
        side.turns.append(side.turn)
        side.turn_seconds += time.perf_counter() - started
        side.cpu_s += _pids_cpu(side.pids) - cpu
        side.store_cpu_s += _pids_cpu(store) - store_cpu
        side.machine_cpu_s += _machine_busy() - machine
    else:
        side.finished = 0


async def run(spec: PairSpec) -> list[SideResult]:
    """Warm up, measure turn by turn, drain; each target's result."""
    sides = [_side(spec, 0), _side(spec, 1)]
    for side in sides:
        await _connect(side)
    warm_turns = max(1, round(spec.warmup / spec.slice / 2))
    for _ in range(warm_turns):
        for side in sides:
            await _turn(side, spec.slice, spec.settle, counted=False)
    # Found once the warm-up has opened the servers' connections (a backend each).
    store = _named(spec.store_command) if spec.store_command else []
    pairs = max(1, round(spec.seconds / spec.slice))
    for n in range(pairs):
        for side in sides if n % 2 == 0 else sides[::-1]:
            await _turn(side, spec.slice, spec.settle, counted=True, store=store)
    for side in sides:
        side.tally.stopping = True
        for conn in side.parked:
            conn.send_next()  # closes it
        side.parked = []
    with contextlib.suppress(TimeoutError):  # each closes its connection once its reply ends
        await asyncio.wait_for(_drained(sides), spec.drain_timeout)
    return [_result(side) for side in sides]


async def _drained(sides: Sequence[Side]) -> None:
    for side in sides:  # stopping: the last reply to end sets ``idle``
        if side.tally.in_flight:
            await side.tally.idle.wait()


def _named(command: str) -> list[int]:
    """The processes running ``command``."""
    found = []
    for entry in os.scandir("/proc"):
        if entry.name.isdigit():
            with contextlib.suppress(OSError):
                if Path(entry.path, "comm").read_text().strip() == command:
                    found.append(int(entry.name))
    return found


def _machine_busy() -> float:
    """Seconds every CPU has spent busy (in processes or interrupts) so far."""
    with open("/proc/stat") as f:
        fields = f.readline().split()  # the "cpu" line: every CPU's sum
    user, nice, system, _idle, _iowait, irq, softirq, steal = (int(x) for x in fields[1:9])
    return (user + nice + system + irq + softirq + steal) / os.sysconf("SC_CLK_TCK")


def _result(side: Side) -> SideResult:
    pooled = sorted(x for turn in side.turns for x in turn)
    return SideResult(
        calls=len(pooled),
        finished=side.finished,
        turn_seconds=side.turn_seconds,
        p50_ms=_percentile(pooled, 0.50) * 1e3,
        p99_ms=_percentile(pooled, 0.99) * 1e3,
        mean_ms=statistics.fmean(pooled) * 1e3 if pooled else float("nan"),
        turn_p50_ms=[_percentile(sorted(t), 0.50) * 1e3 for t in side.turns],  # nan: none
        latencies_ms=[round(x * 1e3, 3) for x in pooled],
        cpu_s=side.cpu_s,
        store_cpu_s=side.store_cpu_s,
        machine_cpu_s=side.machine_cpu_s,
        ok_total=side.tally.ok_total,
        errors_total=side.tally.errors_total,
        error_samples=side.tally.error_samples,
    )


def main(argv: Sequence[str]) -> int:
    """Run the spec given as JSON; print both results as JSON."""
    raw: dict[str, Any] = json.loads(argv[0])
    raw["headers"] = [[tuple(h) for h in side] for side in raw["headers"]]
    spec = PairSpec(**raw)
    import uvloop

    results = uvloop.run(run(spec))
    print(json.dumps([asdict(r) for r in results]))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
