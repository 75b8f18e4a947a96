"""Which ASGI server should run Pilothouse? uvicorn and granian measured side by side in one run.

    .venv/bin/python bench/server_bench.py [--seconds N] [--warmup N] [--concurrency C ...]
        [--targets healthz whoami stream raw denied] [--servers uvicorn granian ...] [--rounds N]

Every server serves the same app (``bench.app_factory:create_app``: Pilothouse on a fresh SQLite
data dir in a temporary directory, with a fixed admin key), one worker on a free loopback port,
pinned to one CPU; the load generator (wrk if installed, else this script's closed-loop asyncio +
httptools client in its own process) is pinned to another. The servers run side by side and take
turns cell by cell (a cell is one target at one concurrency: a warm-up, then a fixed-duration
closed-loop run), so each ratio compares runs made seconds apart; the order flips every round.
What else ran on either CPU is measured, and a contended group of cells is measured again. The
report gives requests/s, p50/p99 latency, the server's CPU per request, and each server's ratios
to the first one (uvicorn), as Markdown tables to paste into bench/README.md.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import datetime as dt
import http.client
import json
import math
import os
import platform
import resource
import shutil
import signal
import socket
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import asdict, dataclass, field
from importlib import metadata
from pathlib import Path
from types import FrameType, TracebackType
from typing import Any, cast

REPO = Path(__file__).resolve().parent.parent
HOST = "127.0.0.1"
APP_TARGET = "bench.app_factory:create_app"
STREAM_PATH = "/_bench/stream"  # both added by bench/app_factory.py
RAW_PATH = "/_bench/raw"
STREAM_EVENTS = 18  # 16 chunks, the usage event and [DONE]

# A fixed owner key, installed at first start through PILOTHOUSE_ADMIN_KEY (phk_<12>_<40>).
ADMIN_LOOKUP = "benchADMIN01"
ADMIN_KEY = f"phk_{ADMIN_LOOKUP}_0123456789abcdefghijABCDEFGHIJ0123456789"
UNKNOWN_KEY = "phk_benchNOBODY1_ZYXWVUTSRQPONMLKJIHGzyxwvutsrqponmlkjihg9876"

READY_TIMEOUT_S = 60.0
STOP_TIMEOUT_S = 20.0
HTTP_TIMEOUT_S = 5.0
LOAD_GRACE_S = 30.0
GENERATOR_BOUND = 0.9  # above this share of its CPU, the load generator may be the bottleneck


# --- what is measured -------------------------------------------------------------------------


@dataclass(frozen=True)
class Target:
    """One request shape sent in a closed loop."""

    name: str
    path: str
    headers: tuple[tuple[str, str], ...]
    expect_status: int
    what: str
    method: str = "GET"
    body: str = ""  # JSON, sent with its length


TARGETS = {
    t.name: t
    for t in (
        Target("healthz", "/healthz", (), 200, "framework + server"),
        Target(
            "whoami",
            "/api/v1/whoami",
            (("Authorization", f"Bearer {ADMIN_KEY}"),),
            200,
            "auth + key cache",
        ),
        Target("stream", STREAM_PATH, (), 200, "SSE response, 18 events; bench-only route"),
        Target("raw", RAW_PATH, (), 200, "plain ASGI before FastAPI: the server's floor"),
        Target(
            "denied",
            "/api/v1/whoami",
            (("Authorization", f"Bearer {UNKNOWN_KEY}"),),
            401,
            "unknown key: refused and audited",
        ),
    )
}
DEFAULT_TARGETS = ("healthz", "whoami")


@dataclass(frozen=True)
class ServerSpec:
    """How to start one server on a port, serving :data:`APP_TARGET`."""

    name: str
    what: str
    argv: Callable[[int], list[str]]


def _uvicorn(port: int, *, access_log: bool = False) -> list[str]:
    """uvicorn as ``pilothouse serve`` runs it (uvloop, httptools, no proxy/server headers)."""
    argv = [sys.executable, "-m", "uvicorn", APP_TARGET, "--factory"]
    argv += ["--host", HOST, "--port", str(port), "--loop", "uvloop", "--http", "httptools"]
    argv += ["--lifespan", "on", "--no-proxy-headers", "--no-server-header"]
    if access_log:
        return [*argv, "--log-level", "info", "--access-log"]
    return [*argv, "--log-level", "warning", "--no-access-log"]


def _granian(port: int, *, task_impl: str = "asyncio") -> list[str]:
    """granian's ASGI interface (with lifespan), one worker, one runtime thread, uvloop."""
    argv = [sys.executable, "-m", "granian", "--interface", "asgi", "--factory"]
    argv += ["--host", HOST, "--port", str(port), "--workers", "1", "--runtime-threads", "1"]
    argv += ["--loop", "uvloop", "--task-impl", task_impl, "--http", "1", "--no-ws"]
    argv += ["--log-level", "warning", "--no-access-log", "--working-dir", str(REPO)]
    return [*argv, APP_TARGET]


SERVERS = {
    s.name: s
    for s in (
        ServerSpec("uvicorn", "uvicorn, uvloop + httptools, access log off", _uvicorn),
        ServerSpec("granian", "granian ASGI, uvloop, asyncio tasks, HTTP/1", _granian),
        ServerSpec(
            "uvicorn-accesslog",
            "uvicorn exactly as `pilothouse serve` configures it today (access log on)",
            lambda port: _uvicorn(port, access_log=True),
        ),
        ServerSpec(
            "granian-rust-tasks",
            "granian ASGI, uvloop, --task-impl rust",
            lambda port: _granian(port, task_impl="rust"),
        ),
    )
}
DEFAULT_SERVERS = ("uvicorn", "granian")


@dataclass
class Cell:
    """One measured (round, server, target, concurrency) run."""

    round: int
    server: str
    target: str
    concurrency: int
    requests: int
    seconds: float
    rps: float
    p50_ms: float
    p99_ms: float
    server_cpu_s: float
    others_cpu_s: float
    gen_cpu_s: float
    load_others_cpu_s: float
    errors: int
    wrong_status: int
    attempts: int = 1

    @property
    def cpu_us_per_request(self) -> float:
        """Server CPU time (all its processes and threads) per completed request."""
        return self.server_cpu_s / self.requests * 1e6 if self.requests else float("nan")

    @property
    def others_share(self) -> float:
        """Fraction of the server's CPU that anything else (other processes, steal) used."""
        return self.others_cpu_s / self.seconds

    @property
    def load_others_share(self) -> float:
        """Fraction of the load generator's CPU that anything else used."""
        return self.load_others_cpu_s / self.seconds

    def contended(self, limit: float) -> bool:
        """Whether something else took more than ``limit`` of either CPU."""
        return max(self.others_share, self.load_others_share) > limit


@dataclass
class Lifecycle:
    """How a server started and stopped."""

    server: str
    startup_s: float
    stop_s: float = float("nan")
    graceful: bool = False
    lifespan_shutdown_ran: bool = False


@dataclass
class LoadResult:
    """What a load generator reports for one run."""

    requests: int
    seconds: float
    p50_ms: float
    p99_ms: float
    errors: int
    wrong_status: int
    gen_cpu_s: float = 0.0


# --- processes ----------------------------------------------------------------------------------


def _pinned(cpu: int) -> Callable[[], None]:
    def pin() -> None:
        os.sched_setaffinity(0, {cpu})

    return pin


def free_port() -> int:
    """A loopback TCP port nobody is listening on right now."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((HOST, 0))
        port: int = sock.getsockname()[1]
        return port


def http_get(port: int, path: str, headers: Sequence[tuple[str, str]] = ()) -> tuple[int, bytes]:
    """One GET to the server on ``port``, bounded by a timeout."""
    conn = http.client.HTTPConnection(HOST, port, timeout=HTTP_TIMEOUT_S)
    try:
        conn.request("GET", path, headers=dict(headers))
        response = conn.getresponse()
        return response.status, response.read()
    finally:
        conn.close()


def tree_cpu_seconds(root: int) -> float:
    """User + system CPU seconds of ``root`` and its live descendants (all threads)."""
    parents: dict[int, int] = {}
    ticks: dict[int, int] = {}
    for entry in os.scandir("/proc"):
        if not entry.name.isdigit():
            continue
        try:
            stat = Path(entry.path, "stat").read_text()
        except OSError:
            continue
        fields = stat[stat.rindex(")") + 2 :].split()
        pid = int(entry.name)
        parents[pid] = int(fields[1])
        ticks[pid] = int(fields[11]) + int(fields[12])
    tree, frontier = {root}, [root]
    while frontier:
        parent = frontier.pop()
        children = [pid for pid, ppid in parents.items() if ppid == parent and pid not in tree]
        tree.update(children)
        frontier.extend(children)
    return sum(ticks.get(pid, 0) for pid in tree) / os.sysconf("SC_CLK_TCK")


def cpu_busy_seconds(cpu: int) -> float:
    """Seconds ``cpu`` spent neither idle nor waiting for I/O (includes steal), since boot."""
    for line in Path("/proc/stat").read_text().splitlines():
        if line.startswith(f"cpu{cpu} "):
            ticks = [int(x) for x in line.split()[1:9]]
            idle = ticks[3] + ticks[4]
            return (sum(ticks) - idle) / os.sysconf("SC_CLK_TCK")
    raise RuntimeError(f"cpu{cpu} is not in /proc/stat")


class ServerRun:
    """A server process serving the bench app on a fresh data dir; stopped by PID on exit."""

    def __init__(self, spec: ServerSpec, cpu: int, extra_env: dict[str, str] | None = None) -> None:
        self.spec = spec
        self.cpu = cpu
        self.extra_env = extra_env or {}
        self.port = free_port()
        self._tmp = tempfile.TemporaryDirectory(prefix=f"pilothouse-bench-{spec.name}-")
        self.data_dir = Path(self._tmp.name, "data")
        self.log_path = Path(self._tmp.name, "server.log")
        self.lifecycle = Lifecycle(server=spec.name, startup_s=float("nan"))
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def pid(self) -> int:
        """The server's main process id."""
        assert self.proc is not None
        return self.proc.pid

    def _env(self) -> dict[str, str]:
        env = {k: v for k, v in os.environ.items() if not k.startswith("PILOTHOUSE_")}
        env.update(
            PILOTHOUSE_DATA_DIR=str(self.data_dir),
            PILOTHOUSE_ADMIN_KEY=ADMIN_KEY,
            PILOTHOUSE_LOG_LEVEL="warning",
            # Only the lifespan shutdown writes last-used times, which shows it ran.
            PILOTHOUSE_LAST_USED_FLUSH_SECONDS="3600",
            PYTHONPATH=os.pathsep.join(filter(None, [str(REPO), env.get("PYTHONPATH")])),
        )
        env.update(self.extra_env)
        return env

    def __enter__(self) -> ServerRun:
        started = time.perf_counter()
        with self.log_path.open("wb") as log:
            self.proc = subprocess.Popen(
                self.spec.argv(self.port),
                cwd=REPO,
                env=self._env(),
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
                preexec_fn=_pinned(self.cpu),
            )
        try:
            self._wait_ready()
            # Use the admin key once, so there is a last-used time for the shutdown to flush.
            sanity_check(self, [TARGETS["whoami"]])
        except BaseException:
            self._stop()
            raise
        self.lifecycle.startup_s = time.perf_counter() - started
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self._stop()
        self.lifecycle.lifespan_shutdown_ran = self._last_used_written()
        self._tmp.cleanup()

    def _wait_ready(self) -> None:
        assert self.proc is not None
        deadline = time.monotonic() + READY_TIMEOUT_S
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"{self.spec.name} exited early:\n{self.log_tail()}")
            with contextlib.suppress(OSError):
                if http_get(self.port, "/healthz")[0] == 200:
                    return
            time.sleep(0.05)
        raise RuntimeError(f"{self.spec.name} not ready in {READY_TIMEOUT_S}s:\n{self.log_tail()}")

    def _stop(self) -> None:
        if self.proc is None or self.proc.returncode is not None:
            return
        started = time.perf_counter()
        self.proc.send_signal(signal.SIGTERM)
        try:
            self.proc.wait(timeout=STOP_TIMEOUT_S)
            self.lifecycle.graceful = True
            self.lifecycle.stop_s = time.perf_counter() - started
        except subprocess.TimeoutExpired:
            print(f"! {self.spec.name} ignored SIGTERM for {STOP_TIMEOUT_S}s; killing it")
        # The server leads its own process group: this reaches its workers and nothing else.
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.proc.pid, signal.SIGKILL)
        with contextlib.suppress(subprocess.TimeoutExpired):
            self.proc.wait(timeout=5)

    def _last_used_written(self) -> bool:
        db = self.data_dir / "pilothouse.db"
        if not db.exists():
            return False
        with contextlib.closing(sqlite3.connect(db)) as conn:
            row = conn.execute(
                "SELECT last_used_at FROM api_keys WHERE lookup = ?", (ADMIN_LOOKUP,)
            ).fetchone()
        return bool(row and row[0])

    def log_tail(self, lines: int = 30) -> str:
        """The end of the server's output."""
        try:
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return "(no log)"


def sanity_check(run: ServerRun, targets: Sequence[Target]) -> None:
    """Each target answers as expected once before it is measured."""
    for target in targets:
        status, body = http_get(run.port, target.path, target.headers)
        if status != target.expect_status:
            raise RuntimeError(
                f"{run.spec.name} {target.path}: status {status}, expected "
                f"{target.expect_status}: {body[:300]!r}\n{run.log_tail()}"
            )
        if target.name == "whoami" and json.loads(body).get("key_prefix") != f"phk_{ADMIN_LOOKUP}":
            raise RuntimeError(f"whoami did not authenticate as the admin key: {body[:300]!r}")
        if target.name == "stream" and body.count(b"data: ") != STREAM_EVENTS:
            raise RuntimeError(f"stream sent {body.count(b'data: ')} events: {body[:300]!r}")


# --- load generators ----------------------------------------------------------------------------

_WRK_LUA = """
done = function(summary, latency, requests)
  local e = summary.errors
  io.write(string.format(
    'BENCHJSON {"requests":%d,"duration_us":%.0f,"p50_us":%.1f,"p99_us":%.1f,' ..
    '"connect":%d,"read":%d,"write":%d,"status":%d,"timeout":%d}\\n',
    summary.requests, summary.duration, latency:percentile(50), latency:percentile(99),
    e.connect, e.read, e.write, e.status, e.timeout))
end
"""


class Wrk:
    """wrk, one thread, closed loop: each connection sends its next request on a response."""

    name = "wrk"

    def __init__(self, binary: str, workdir: Path) -> None:
        self.binary = binary
        self.script = workdir / "report.lua"
        self.script.write_text(_WRK_LUA)
        probe = subprocess.run([binary, "-v"], capture_output=True, text=True, timeout=10)
        first = (probe.stdout + probe.stderr).splitlines()[0]
        self.version = first.split(" [")[0].removeprefix("wrk ")

    def run(
        self, port: int, target: Target, concurrency: int, seconds: int, cpu: int
    ) -> LoadResult:
        """Load ``target`` for ``seconds`` at ``concurrency`` connections."""
        argv = [self.binary, "-t1", f"-c{concurrency}", f"-d{seconds}s", "--timeout", "10s"]
        for name, value in target.headers:
            argv += ["-H", f"{name}: {value}"]
        argv += ["-s", str(self.script), f"http://{HOST}:{port}{target.path}"]
        before = resource.getrusage(resource.RUSAGE_CHILDREN)
        done = subprocess.run(
            argv,
            capture_output=True,
            text=True,
            timeout=seconds + LOAD_GRACE_S,
            preexec_fn=_pinned(cpu),
            check=True,
        )
        after = resource.getrusage(resource.RUSAGE_CHILDREN)
        line = next(x for x in done.stdout.splitlines() if x.startswith("BENCHJSON "))
        report = json.loads(line.removeprefix("BENCHJSON "))
        # wrk counts every status >= 400 as an error; the "denied" target expects 401s.
        failed_status = int(report["status"])
        wrong = report["requests"] - failed_status if target.expect_status >= 400 else failed_status
        return LoadResult(
            requests=int(report["requests"]),
            seconds=report["duration_us"] / 1e6,
            p50_ms=report["p50_us"] / 1e3,
            p99_ms=report["p99_us"] / 1e3,
            errors=sum(int(report[k]) for k in ("connect", "read", "write", "timeout")),
            wrong_status=wrong,
            gen_cpu_s=_cpu(after) - _cpu(before),
        )


def _cpu(usage: resource.struct_rusage) -> float:
    return usage.ru_utime + usage.ru_stime


class PythonLoad:
    """This script's own closed-loop generator (asyncio + httptools, uvloop) in a subprocess."""

    name = "python (asyncio + httptools, uvloop)"
    version = ""

    def run(
        self, port: int, target: Target, concurrency: int, seconds: int, cpu: int
    ) -> LoadResult:
        """Load ``target`` for ``seconds`` at ``concurrency`` connections."""
        spec = {
            "port": port,
            "path": target.path,
            "headers": target.headers,
            "concurrency": concurrency,
            "seconds": seconds,
            "expect_status": target.expect_status,
            "method": target.method,
            "body": target.body,
        }
        argv = [sys.executable, str(Path(__file__).resolve()), "_loadgen", json.dumps(spec)]
        before = resource.getrusage(resource.RUSAGE_CHILDREN)
        done = subprocess.run(
            argv,
            capture_output=True,
            text=True,
            timeout=seconds + LOAD_GRACE_S,
            preexec_fn=_pinned(cpu),
            check=True,
        )
        after = resource.getrusage(resource.RUSAGE_CHILDREN)
        result = LoadResult(**json.loads(done.stdout))
        result.gen_cpu_s = _cpu(after) - _cpu(before)
        return result


LoadGenerator = Wrk | PythonLoad


class _Client(asyncio.Protocol):
    """One keep-alive HTTP/1.1 connection; ``request`` resolves to the response status."""

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        import httptools

        self._loop = loop
        self._parser = httptools.HttpResponseParser(self)
        self._parser_error = httptools.HttpParserError
        self._transport: asyncio.Transport | None = None
        self._waiter: asyncio.Future[int] | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        """Keep the transport (uvloop's is not an asyncio.Transport subclass, hence the cast)."""
        self._transport = cast(asyncio.Transport, transport)

    def data_received(self, data: bytes) -> None:
        """Feed the response parser."""
        try:
            self._parser.feed_data(data)
        except self._parser_error as exc:
            self._fail(exc)

    def on_message_complete(self) -> None:
        """Parser callback: a whole response has arrived."""
        if self._waiter is not None and not self._waiter.done():
            self._waiter.set_result(self._parser.get_status_code())

    def connection_lost(self, exc: Exception | None) -> None:
        """Fail the request in flight, if any."""
        self._fail(exc or ConnectionResetError("the server closed the connection"))

    def _fail(self, exc: BaseException) -> None:
        if self._waiter is not None and not self._waiter.done():
            self._waiter.set_exception(exc)

    def request(self, raw: bytes) -> asyncio.Future[int]:
        """Send one request; the future resolves to its status code."""
        assert self._transport is not None
        self._waiter = self._loop.create_future()
        self._transport.write(raw)
        return self._waiter

    def close(self) -> None:
        """Close the connection."""
        if self._transport is not None:
            self._transport.close()


async def closed_loop(spec: dict[str, Any]) -> LoadResult:
    """Keep ``concurrency`` connections busy for ``seconds``; latency is per response."""
    loop = asyncio.get_running_loop()
    port, concurrency, seconds = spec["port"], spec["concurrency"], spec["seconds"]
    body = spec.get("body", "").encode()
    lines = [f"{spec.get('method', 'GET')} {spec['path']} HTTP/1.1", f"Host: {HOST}:{port}"]
    lines += [f"{name}: {value}" for name, value in spec["headers"]]
    if body:
        lines += ["Content-Type: application/json", f"Content-Length: {len(body)}"]
    raw = ("\r\n".join(lines) + "\r\n\r\n").encode() + body
    clients: list[_Client] = []
    for _ in range(concurrency):
        _, proto = await loop.create_connection(lambda: _Client(loop), HOST, port)
        clients.append(proto)
    latencies: list[float] = []
    statuses: list[int] = []
    errors = 0
    end = time.perf_counter() + seconds

    async def drive(client: _Client) -> None:
        nonlocal errors
        while True:
            sent = time.perf_counter()
            try:
                status = await client.request(raw)
            except (OSError, ValueError):
                errors += 1
                return
            received = time.perf_counter()
            if received > end:
                return
            latencies.append(received - sent)
            statuses.append(status)

    tasks = [asyncio.create_task(drive(c)) for c in clients]
    done, pending = await asyncio.wait(tasks, timeout=seconds + 10)
    for task in pending:
        task.cancel()
    for task in done:
        if task.exception() is not None:
            errors += 1
            print(f"load generator connection failed: {task.exception()!r}", file=sys.stderr)
    for client in clients:
        client.close()
    latencies.sort()
    return LoadResult(
        requests=len(latencies),
        seconds=float(seconds),
        p50_ms=_percentile(latencies, 0.50) * 1e3,
        p99_ms=_percentile(latencies, 0.99) * 1e3,
        errors=errors + len(pending),
        wrong_status=sum(s != spec["expect_status"] for s in statuses),
    )


def _percentile(ordered: Sequence[float], q: float) -> float:
    if not ordered:
        return float("nan")
    return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))]


def loadgen_main(spec_json: str) -> int:
    """Entry point of the Python load generator subprocess: prints one JSON result."""
    spec = json.loads(spec_json)
    try:
        import uvloop

        factory: Callable[[], asyncio.AbstractEventLoop] | None = uvloop.new_event_loop
    except ImportError:
        factory = None
    with asyncio.Runner(loop_factory=factory) as runner:
        result = runner.run(closed_loop(spec))
    print(json.dumps(asdict(result)))
    return 0


# --- the run ------------------------------------------------------------------------------------


@dataclass
class Options:
    """Parsed command line."""

    seconds: int
    warmup: int
    concurrency: list[int]
    targets: list[str]
    servers: list[str]
    rounds: int
    retries: int
    max_others: float
    server_cpu: int
    load_cpu: int
    python_loadgen: bool
    json_path: Path | None
    argv: list[str] = field(default_factory=list)


def parse_args(argv: Sequence[str]) -> Options:
    """Read the command line."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--seconds", type=int, default=6, help="measured seconds per cell")
    parser.add_argument("--warmup", type=int, default=2, help="warm-up seconds per cell")
    parser.add_argument("--concurrency", type=int, nargs="+", default=[1, 32])
    parser.add_argument(
        "--targets", nargs="+", choices=sorted(TARGETS), default=list(DEFAULT_TARGETS)
    )
    parser.add_argument(
        "--servers",
        nargs="+",
        choices=list(SERVERS),
        default=list(DEFAULT_SERVERS),
        help="the first is the baseline of the ratios",
    )
    parser.add_argument("--rounds", type=int, default=1, help="repeat every cell, alternating")
    parser.add_argument(
        "--retries",
        type=int,
        default=2,
        help="re-measure a (target, c) group when something else used either CPU",
    )
    parser.add_argument(
        "--max-others",
        type=float,
        default=0.10,
        help="share of the server or generator CPU others may use before a cell is contended",
    )
    parser.add_argument("--server-cpu", type=int, default=0)
    parser.add_argument("--load-cpu", type=int, default=1)
    parser.add_argument(
        "--python-loadgen", action="store_true", help="use the Python generator even if wrk exists"
    )
    parser.add_argument("--json", type=Path, dest="json_path", help="also write raw results here")
    ns = parser.parse_args(argv)
    if ns.seconds < 1 or ns.warmup < 0 or ns.rounds < 1 or min(ns.concurrency) < 1:
        parser.error("--seconds, --rounds and --concurrency must be positive, --warmup >= 0")
    if ns.retries < 0:
        parser.error("--retries must be >= 0")
    return Options(**vars(ns), argv=list(argv))


def _versions(generator: LoadGenerator) -> dict[str, str]:
    found = {"python": platform.python_version()}
    for dist in ("uvicorn", "granian", "uvloop", "httptools", "fastapi", "starlette"):
        with contextlib.suppress(metadata.PackageNotFoundError):
            found[dist] = metadata.version(dist)
    found["load generator"] = f"{generator.name} {generator.version}".strip()
    return found


def _cpu_model() -> str:
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    return platform.processor() or "unknown"


def measure_cell(
    run: ServerRun,
    target: Target,
    concurrency: int,
    opts: Options,
    generator: LoadGenerator,
    round_no: int,
) -> Cell:
    """Warm up, then load one server with one target at one concurrency."""
    if opts.warmup:
        generator.run(run.port, target, concurrency, opts.warmup, opts.load_cpu)
    cpu_before, busy_before = tree_cpu_seconds(run.pid), cpu_busy_seconds(opts.server_cpu)
    load_busy_before = cpu_busy_seconds(opts.load_cpu)
    result = generator.run(run.port, target, concurrency, opts.seconds, opts.load_cpu)
    load_busy_after = cpu_busy_seconds(opts.load_cpu)
    cpu_after, busy_after = tree_cpu_seconds(run.pid), cpu_busy_seconds(opts.server_cpu)
    server_cpu = cpu_after - cpu_before
    cell = Cell(
        round=round_no,
        server=run.spec.name,
        target=target.name,
        concurrency=concurrency,
        requests=result.requests,
        seconds=result.seconds,
        rps=result.requests / result.seconds,
        p50_ms=result.p50_ms,
        p99_ms=result.p99_ms,
        server_cpu_s=server_cpu,
        others_cpu_s=max(0.0, (busy_after - busy_before) - server_cpu),
        gen_cpu_s=result.gen_cpu_s,
        load_others_cpu_s=max(0.0, (load_busy_after - load_busy_before) - result.gen_cpu_s),
        errors=result.errors,
        wrong_status=result.wrong_status,
    )
    print(
        f"  r{round_no} {cell.server:<18} {target.name:<8} c={concurrency:<3} "
        f"{cell.rps:9.0f} req/s  p50 {cell.p50_ms:7.2f} ms  p99 {cell.p99_ms:7.2f} ms"
        f"  CPU {cell.cpu_us_per_request:5.0f} us/req  server CPU "
        f"{cell.server_cpu_s / cell.seconds:4.0%}  others {cell.others_share:4.0%}"
        f"  generator {cell.gen_cpu_s / cell.seconds:4.0%}  others {cell.load_others_share:4.0%}",
        file=sys.stderr,
        flush=True,
    )
    return cell


def measure_group(
    order: Sequence[ServerRun],
    target: Target,
    concurrency: int,
    opts: Options,
    generator: LoadGenerator,
    round_no: int,
) -> list[Cell]:
    """One cell per server, back to back; again if anything else used the server CPU."""
    attempts = 0
    while True:
        attempts += 1
        group = [measure_cell(run, target, concurrency, opts, generator, round_no) for run in order]
        if attempts > opts.retries or not any(c.contended(opts.max_others) for c in group):
            break
        print("  (contended: measuring the group again)", file=sys.stderr)
    for cell in group:
        cell.attempts = attempts
    return group


def measure_all(
    runs: Sequence[ServerRun], opts: Options, generator: LoadGenerator
) -> Iterator[Cell]:
    """Every (round, target, concurrency) group; the order of the servers flips every round."""
    for round_no in range(1, opts.rounds + 1):
        order = list(runs) if round_no % 2 else list(reversed(runs))
        for name in opts.targets:
            for concurrency in opts.concurrency:
                yield from measure_group(
                    order, TARGETS[name], concurrency, opts, generator, round_no
                )


def _yes(flag: bool) -> str:
    return "yes" if flag else "NO"


def _ratio(a: float, b: float) -> str:
    return f"{a / b:.2f}" if b and math.isfinite(a) and math.isfinite(b) else "n/a"


def print_cells(opts: Options, cells: Sequence[Cell]) -> None:
    """Every measured cell as a Markdown table."""
    print("\n### Cells\n")
    print(
        "| round | server | target | c | req/s | p50 ms | p99 ms | CPU µs/req | server CPU "
        "| others on server CPU | generator CPU | others on generator CPU | errors |"
    )
    print("|---:|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|")

    def order(c: Cell) -> tuple[int, int, int, int]:
        return (c.round, opts.targets.index(c.target), c.concurrency, opts.servers.index(c.server))

    for c in sorted(cells, key=order):
        flag = " (contended)" if c.contended(opts.max_others) else ""
        if c.gen_cpu_s / c.seconds > GENERATOR_BOUND:
            flag += " (generator-bound: the server was not the limit)"
        print(
            f"| {c.round} | {c.server} | {c.target} | {c.concurrency} | {c.rps:,.0f} "
            f"| {c.p50_ms:.2f} | {c.p99_ms:.2f} | {c.cpu_us_per_request:,.0f} "
            f"| {c.server_cpu_s / c.seconds:.0%} | {c.others_share:.0%} "
            f"| {c.gen_cpu_s / c.seconds:.0%} | {c.load_others_share:.0%}{flag} "
            f"| {c.errors + c.wrong_status} |"
        )


def print_ratios(opts: Options, cells: Sequence[Cell]) -> None:
    """Each server against the first one, cell by cell within a round, then summarised."""
    base = opts.servers[0]
    index = {(c.round, c.server, c.target, c.concurrency): c for c in cells}
    for other in opts.servers[1:]:
        print(
            f"\n### Ratios {other} / {base}, same round "
            f"(req/s above 1 and the others below 1 favour {other})\n"
        )
        print("| round | target | c | req/s | p50 | p99 | CPU per request | note |")
        print("|---:|---|---:|---:|---:|---:|---:|---|")
        rps: dict[tuple[str, int], list[float]] = {}
        cpu: dict[tuple[str, int], list[float]] = {}
        for round_no in range(1, opts.rounds + 1):
            for target in opts.targets:
                for conc in opts.concurrency:
                    b = index.get((round_no, base, target, conc))
                    o = index.get((round_no, other, target, conc))
                    if b is None or o is None:
                        continue
                    contended = b.contended(opts.max_others) or o.contended(opts.max_others)
                    if b.rps and b.requests and not contended:
                        rps.setdefault((target, conc), []).append(o.rps / b.rps)
                        cpu.setdefault((target, conc), []).append(
                            o.cpu_us_per_request / b.cpu_us_per_request
                        )
                    print(
                        f"| {round_no} | {target} | {conc} | {_ratio(o.rps, b.rps)} "
                        f"| {_ratio(o.p50_ms, b.p50_ms)} | {_ratio(o.p99_ms, b.p99_ms)} "
                        f"| {_ratio(o.cpu_us_per_request, b.cpu_us_per_request)} "
                        f"| {'contended' if contended else ''} |"
                    )
        if opts.rounds > 1:
            print(
                f"\n{other}/{base} over {opts.rounds} rounds, median (min-max), "
                "uncontended pairs only:\n"
            )
            print("| target | c | req/s | CPU per request |")
            print("|---|---:|---:|---:|")
            for target in opts.targets:
                for conc in opts.concurrency:
                    r, u = rps.get((target, conc), []), cpu.get((target, conc), [])
                    print(f"| {target} | {conc} | {_spread(r)} | {_spread(u)} |")


def _spread(values: Sequence[float]) -> str:
    finite = [v for v in values if math.isfinite(v)]
    if not finite:
        return "n/a"
    return f"{statistics.median(finite):.2f} ({min(finite):.2f}-{max(finite):.2f})"


def print_lifecycles(lifecycles: Sequence[Lifecycle]) -> None:
    """Start-up and SIGTERM behaviour of each server."""
    print("\n### Start and stop\n")
    print("| server | ready after s | SIGTERM to exit s | graceful | lifespan shutdown ran |")
    print("|---|---:|---:|---|---|")
    for life in lifecycles:
        print(
            f"| {life.server} | {life.startup_s:.2f} | {life.stop_s:.2f} "
            f"| {_yes(life.graceful)} | {_yes(life.lifespan_shutdown_ran)} |"
        )


def print_header(opts: Options, generator: LoadGenerator) -> None:
    """What was run, where, with which versions."""
    print("## Pilothouse ASGI server benchmark\n")
    print(f"- command: `.venv/bin/python bench/server_bench.py {' '.join(opts.argv)}`".rstrip())
    print(f"- date: {dt.datetime.now(dt.UTC):%Y-%m-%d %H:%M} UTC")
    print(f"- machine: {os.cpu_count()} vCPUs, {_cpu_model()}, {platform.platform()}")
    print(f"- server pinned to CPU {opts.server_cpu}; load generator to CPU {opts.load_cpu}")
    print(
        f"- cells: {opts.warmup} s warm-up, then {opts.seconds} s closed loop; servers take "
        f"turns cell by cell; a group is re-measured (up to {opts.retries}x) when others used "
        f"more than {opts.max_others:.0%} of the server's or the generator's CPU"
    )
    for name, version in _versions(generator).items():
        print(f"- {name}: {version}")
    for name in opts.servers:
        print(f"- server `{name}`: {SERVERS[name].what}")
    for name in opts.targets:
        print(f"- target `{name}`: GET {TARGETS[name].path} ({TARGETS[name].what})")
    sys.stdout.flush()


def _stop_on_sigterm(signum: int, _frame: FrameType | None) -> None:
    raise KeyboardInterrupt(f"signal {signum}")


def main(argv: Sequence[str]) -> int:
    """Run every server through every cell and print the report."""
    if argv[:1] == ["_loadgen"]:
        return loadgen_main(argv[1])
    opts = parse_args(argv)
    usable = os.sched_getaffinity(0)
    if {opts.server_cpu, opts.load_cpu} - usable or opts.server_cpu == opts.load_cpu:
        print(f"need two distinct usable CPUs for server and load; usable: {sorted(usable)}")
        return 2
    signal.signal(signal.SIGTERM, _stop_on_sigterm)
    # This process only waits; keep it off the server's CPU.
    os.sched_setaffinity(0, {opts.load_cpu})
    with tempfile.TemporaryDirectory(prefix="pilothouse-bench-") as work:
        wrk = None if opts.python_loadgen else shutil.which("wrk")
        generator: LoadGenerator = Wrk(wrk, Path(work)) if wrk else PythonLoad()
        print_header(opts, generator)
        runs = [ServerRun(SERVERS[name], opts.server_cpu) for name in opts.servers]
        with contextlib.ExitStack() as stack:
            for run in runs:
                stack.enter_context(run)
                sanity_check(run, [TARGETS[t] for t in opts.targets])
            cells = list(measure_all(runs, opts, generator))
    print_cells(opts, cells)
    print_ratios(opts, cells)
    print_lifecycles([run.lifecycle for run in runs])
    if opts.json_path is not None:
        raw = {
            "options": {k: v for k, v in asdict(opts).items() if k != "json_path"},
            "cells": [
                asdict(c)
                | {
                    "cpu_us_per_request": c.cpu_us_per_request,
                    "others_share": c.others_share,
                    "load_others_share": c.load_others_share,
                }
                for c in cells
            ],
            "lifecycles": [asdict(run.lifecycle) for run in runs],
        }
        opts.json_path.write_text(json.dumps(raw, indent=2))
    failed = [c for c in cells if c.errors or c.wrong_status or not c.requests]
    for c in failed:
        print(
            f"! {c.server} {c.target} c={c.concurrency}: {c.errors} errors, "
            f"{c.wrong_status} unexpected statuses, {c.requests} requests"
        )
    return 1 if failed else 0


if __name__ == "__main__":
    try:
        sys.exit(main(sys.argv[1:]))
    except KeyboardInterrupt as stop:
        print(f"interrupted ({stop}); servers stopped", file=sys.stderr)
        sys.exit(130)
