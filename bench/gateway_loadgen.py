"""The gateway benchmark's load generator: a closed loop over raw keep-alive connections.

    python bench/gateway_loadgen.py '<json spec>'     (prints one JSON result)

Each of ``concurrency`` connections sends its next request as soon as the previous reply has
ended (no think time, no pipelining). uvloop protocols with httptools' response parser, driven
from callbacks (no task per request), so one CPU sustains far more calls than any gateway here
makes; the benchmark shows this with the direct-to-upstream cells and checks this process's CPU.

Per request it notes the time the request was written, the first byte of the response body
(for a stream: the first event, so "time to first byte" is when the first token could be shown)
and the end of the response. The run is a warm-up, then the measured window; a reply counts in
the window if it ended inside it. Afterwards no new request is sent and the replies in flight
are awaited (bounded), so every call the gateway finished is counted in ``ok_total``: the
benchmark compares that with the usage rows the gateway recorded. At the window's edges it
samples the CPU time of the proxy's process tree, of the upstream, of itself and of both CPUs
(time in processes and time in interrupts apart).

A reply is a success when its status is 200 and its body is whole: a ``chat.completion`` with
``completion_tokens``, or a stream that carries a usage event and ends with ``data: [DONE]``.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import resource
import sys
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, cast

import httptools

HOST = "127.0.0.1"
USAGE_MARK = b'"completion_tokens"'
DONE_MARK = b"data: [DONE]"
RECONNECT_DELAY_S = 0.05
MAX_ERROR_SAMPLES = 5


@dataclass
class Spec:
    """What to load, how hard and for how long."""

    port: int
    path: str
    body: str
    stream: bool
    concurrency: int
    warmup: float
    seconds: float
    drain_timeout: float = 60.0
    headers: list[tuple[str, str]] = field(default_factory=list)
    proxy_pid: int | None = None
    upstream_pid: int | None = None
    proxy_cpu: int = 0
    load_cpu: int = 1


@dataclass
class CpuSample:
    """CPU seconds consumed so far, by process and by CPU."""

    proxy: float
    upstream: float
    generator: float
    proxy_cpu_busy: float
    proxy_cpu_irq: float
    load_cpu_busy: float
    load_cpu_irq: float


@dataclass
class Result:
    """What one run measured; times in milliseconds, CPU in seconds over the window."""

    calls: int
    seconds: float
    p50_ms: float
    p99_ms: float
    ttfb_p50_ms: float
    ttfb_p99_ms: float
    errors: int
    ok_total: int
    errors_total: int
    unfinished: int
    events_min: int
    events_max: int
    proxy_cpu_s: float
    upstream_cpu_s: float
    generator_cpu_s: float
    proxy_cpu_busy_s: float
    proxy_cpu_irq_s: float
    load_cpu_busy_s: float
    load_cpu_irq_s: float
    error_samples: list[str]


class Tally:
    """Shared by every connection: the phase boundaries and what has been seen."""

    def __init__(self, spec: Spec, start: float) -> None:
        self.spec = spec
        self.window_start = start + spec.warmup
        self.window_end = self.window_start + spec.seconds
        self.stop_at = self.window_end
        self.stopping = False
        self.latencies: list[float] = []
        self.ttfbs: list[float] = []
        self.errors_in_window = 0
        self.ok_total = 0
        self.errors_total = 0
        self.events_min = sys.maxsize
        self.events_max = 0
        self.error_samples: list[str] = []
        self.in_flight = 0
        self.idle = asyncio.Event()

    def finished(self, sent: float, first: float, ended: float, ok: bool, why: str) -> None:
        """Record one reply (or failure)."""
        in_window = self.window_start <= ended <= self.window_end
        if ok:
            self.ok_total += 1
            if in_window:
                self.latencies.append(ended - sent)
                self.ttfbs.append(first - sent)
        else:
            self.errors_total += 1
            if in_window:
                self.errors_in_window += 1
            if len(self.error_samples) < MAX_ERROR_SAMPLES:
                self.error_samples.append(why[:300])


class Connection(asyncio.Protocol):
    """One keep-alive connection in the closed loop."""

    def __init__(self, tally: Tally, request: bytes) -> None:
        self._tally = tally
        self._request = request
        self._stream = tally.spec.stream
        self._parser = httptools.HttpResponseParser(self)
        self._transport: asyncio.Transport | None = None
        self._sent = 0.0
        self._first = 0.0
        self._parts: list[bytes] = []
        self._busy = False
        self.closed = asyncio.get_running_loop().create_future()

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        """Start the loop on this connection."""
        self._transport = cast(asyncio.Transport, transport)
        self.send_next()

    def send_next(self) -> None:
        """Send the next request, unless the run is over."""
        tally = self._tally
        assert self._transport is not None
        if tally.stopping or time.perf_counter() >= tally.stop_at:
            self._transport.close()
            return
        self._busy = True
        tally.in_flight += 1
        self._first = 0.0
        self._parts = []
        self._sent = time.perf_counter()
        self._transport.write(self._request)

    def data_received(self, data: bytes) -> None:
        """Feed the parser."""
        try:
            self._parser.feed_data(data)
        except httptools.HttpParserError as exc:
            self._fail(f"bad HTTP from the server: {exc}")
            if self._transport is not None:
                self._transport.close()

    def on_body(self, body: bytes) -> None:
        """Parser callback: note the first body byte."""
        if not self._first:
            self._first = time.perf_counter()
        self._parts.append(body)

    def on_message_complete(self) -> None:
        """Parser callback: check the reply, record it, send the next request."""
        ended = time.perf_counter()
        body = b"".join(self._parts)
        status = self._parser.get_status_code()
        why = ""
        if status != 200:
            why = f"HTTP {status}: {body[:200]!r}"
        elif self._stream:
            events = body.count(b"data: ")
            tally = self._tally
            tally.events_min = min(tally.events_min, events)
            tally.events_max = max(tally.events_max, events)
            if USAGE_MARK not in body or not body.rstrip().endswith(DONE_MARK):
                why = f"incomplete stream ({events} events): {body[-200:]!r}"
        elif USAGE_MARK not in body:
            why = f"no usage in the reply: {body[:200]!r}"
        self._done(ended, not why, why)
        self.send_next()

    def _done(self, ended: float, ok: bool, why: str) -> None:
        self._busy = False
        tally = self._tally
        tally.finished(self._sent, self._first or ended, ended, ok, why)
        tally.in_flight -= 1
        if tally.in_flight == 0 and tally.stopping:
            tally.idle.set()

    def _fail(self, why: str) -> None:
        if self._busy:
            self._done(time.perf_counter(), False, why)

    def connection_lost(self, exc: Exception | None) -> None:
        """A reply in flight is an error."""
        self._fail(f"connection lost: {exc or 'closed by the server'}")
        if not self.closed.done():
            self.closed.set_result(None)


def _pid_tree(root: int) -> list[int]:
    parents: dict[int, int] = {}
    for entry in os.scandir("/proc"):
        if entry.name.isdigit():
            try:
                stat = Path(entry.path, "stat").read_text()
            except OSError:
                continue
            parents[int(entry.name)] = int(stat[stat.rindex(")") + 2 :].split()[1])
    tree, frontier = [root], [root]
    while frontier:
        parent = frontier.pop()
        children = [pid for pid, ppid in parents.items() if ppid == parent]
        tree.extend(children)
        frontier.extend(children)
    return tree


def _pids_cpu(pids: Sequence[int]) -> float:
    ticks = 0
    for pid in pids:
        try:
            stat = Path(f"/proc/{pid}/stat").read_text()
        except OSError:
            continue
        fields = stat[stat.rindex(")") + 2 :].split()
        ticks += int(fields[11]) + int(fields[12])
    return ticks / os.sysconf("SC_CLK_TCK")


def _busy(cpus: Sequence[int]) -> list[tuple[float, float]]:
    """Per CPU: seconds in processes (user, nice, system, steal), and in interrupts.

    Interrupt time (irq, softirq) is kept apart: loopback TCP is mostly softirq work that no
    process is charged for, so it is ours, not another session's.
    """
    wanted = {f"cpu{c}": c for c in cpus}
    found: dict[int, tuple[float, float]] = {}
    hz = os.sysconf("SC_CLK_TCK")
    for line in Path("/proc/stat").read_text().splitlines():
        name = line.split(" ", 1)[0]
        if name in wanted:
            user, nice, system, _idle, _iowait, irq, softirq, steal = (
                int(x) for x in line.split()[1:9]
            )
            found[wanted[name]] = ((user + nice + system + steal) / hz, (irq + softirq) / hz)
    return [found[c] for c in cpus]


def _own_cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


class Sampler:
    """CPU samples at the measured window's edges."""

    def __init__(self, spec: Spec) -> None:
        self._spec = spec
        self._proxy = _pid_tree(spec.proxy_pid) if spec.proxy_pid else []
        self._upstream = _pid_tree(spec.upstream_pid) if spec.upstream_pid else []

    def sample(self) -> CpuSample:
        """CPU seconds so far."""
        (proxy_busy, proxy_irq), (load_busy, load_irq) = _busy(
            [self._spec.proxy_cpu, self._spec.load_cpu]
        )
        return CpuSample(
            proxy=_pids_cpu(self._proxy),
            upstream=_pids_cpu(self._upstream),
            generator=_own_cpu(),
            proxy_cpu_busy=proxy_busy,
            proxy_cpu_irq=proxy_irq,
            load_cpu_busy=load_busy,
            load_cpu_irq=load_irq,
        )


def request_bytes(spec: Spec) -> bytes:
    """The request every connection sends, with its headers."""
    body = spec.body.encode()
    lines = [
        f"POST {spec.path} HTTP/1.1",
        f"Host: {HOST}:{spec.port}",
        "User-Agent: gateway-bench",
        "Content-Type: application/json",
        "Accept: application/json" if not spec.stream else "Accept: text/event-stream",
        *(f"{name}: {value}" for name, value in spec.headers),
        f"Content-Length: {len(body)}",
    ]
    return ("\r\n".join(lines) + "\r\n\r\n").encode() + body


async def _keep_connected(tally: Tally, request: bytes) -> None:
    """One slot of the closed loop: reconnect after a lost connection until the run ends."""
    loop = asyncio.get_running_loop()
    while not tally.stopping and time.perf_counter() < tally.stop_at:
        try:
            _, conn = await loop.create_connection(
                lambda: Connection(tally, request), HOST, tally.spec.port
            )
        except OSError as exc:
            tally.finished(0.0, 0.0, time.perf_counter(), False, f"cannot connect: {exc}")
            await asyncio.sleep(RECONNECT_DELAY_S)
            continue
        await conn.closed


def _percentile(ordered: Sequence[float], q: float) -> float:
    if not ordered:
        return float("nan")
    return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))]


async def run(spec: Spec) -> Result:
    """Warm up, measure, drain; return what was seen."""
    sampler = Sampler(spec)
    tally = Tally(spec, time.perf_counter())
    request = request_bytes(spec)
    slots = [
        asyncio.ensure_future(_keep_connected(tally, request)) for _ in range(spec.concurrency)
    ]
    await asyncio.sleep(max(0.0, tally.window_start - time.perf_counter()))
    tally.window_start = time.perf_counter()
    before = sampler.sample()
    tally.window_end = tally.stop_at = tally.window_start + spec.seconds
    await asyncio.sleep(max(0.0, tally.window_end - time.perf_counter()))
    tally.window_end = time.perf_counter()
    after = sampler.sample()
    tally.stopping = True
    if tally.in_flight:
        tally.idle.clear()
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(tally.idle.wait(), spec.drain_timeout)
    unfinished = tally.in_flight
    for slot in slots:
        slot.cancel()
    await asyncio.gather(*slots, return_exceptions=True)
    latencies, ttfbs = sorted(tally.latencies), sorted(tally.ttfbs)
    window = tally.window_end - tally.window_start
    return Result(
        calls=len(latencies),
        seconds=window,
        p50_ms=_percentile(latencies, 0.50) * 1e3,
        p99_ms=_percentile(latencies, 0.99) * 1e3,
        ttfb_p50_ms=_percentile(ttfbs, 0.50) * 1e3,
        ttfb_p99_ms=_percentile(ttfbs, 0.99) * 1e3,
        errors=tally.errors_in_window,
        ok_total=tally.ok_total,
        errors_total=tally.errors_total,
        unfinished=unfinished,
        events_min=tally.events_min if tally.events_max else 0,
        events_max=tally.events_max,
        proxy_cpu_s=after.proxy - before.proxy,
        upstream_cpu_s=after.upstream - before.upstream,
        generator_cpu_s=after.generator - before.generator,
        proxy_cpu_busy_s=after.proxy_cpu_busy - before.proxy_cpu_busy,
        proxy_cpu_irq_s=after.proxy_cpu_irq - before.proxy_cpu_irq,
        load_cpu_busy_s=after.load_cpu_busy - before.load_cpu_busy,
        load_cpu_irq_s=after.load_cpu_irq - before.load_cpu_irq,
        error_samples=tally.error_samples,
    )


def main(argv: Sequence[str]) -> int:
    """Run the spec given as JSON; print the result as JSON."""
    raw: dict[str, Any] = json.loads(argv[0])
    raw["headers"] = [tuple(h) for h in raw.get("headers", [])]
    spec = Spec(**raw)
    try:
        import uvloop
    except ImportError:
        result = asyncio.run(run(spec))
    else:
        result = uvloop.run(run(spec))
    print(json.dumps(asdict(result)))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
