"""What the gateway benchmark calls: the fake upstream, the bare forwarder, Pilothouse, LiteLLM.

Every server is a process of its own, started pinned to one CPU (``sched_setaffinity`` before
exec, inherited by any workers) as the leader of its own process group, logging to a file in the
run's temporary directory. ``Process.stop`` sends SIGTERM, waits, then SIGKILLs the group: it
reaches the process's own children and nothing else.

- the fake upstream (``gateway_upstream.py``) and the bare forwarder (``gateway_forwarder.py``)
  write the port they listen on to a file;
- Pilothouse runs as ``python -m pilothouse serve --config <file>``: one model alias served by an
  ``openai-compatible`` deployment at the fake upstream, with a price override; the owner key is
  installed at first start, and the benchmark calls with the key of a session it opens through
  the admin API, as an agent would;
- LiteLLM is installed with pip into its own virtual environment under the cache directory
  (once; reused afterwards) and run as its production docs say: ``litellm --config config.yaml
  --num_workers 1`` with a master key, no database, ``LITELLM_LOG=ERROR``.
"""

from __future__ import annotations

import asyncio
import contextlib
import http.client
import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from types import TracebackType
from typing import Any

import asyncpg  # Pilothouse's own PostgreSQL driver

from bench.server_bench import ADMIN_KEY, HOST, free_port

BENCH = Path(__file__).resolve().parent
REPO = BENCH.parent
READY_TIMEOUT_S = 60.0
LITELLM_READY_TIMEOUT_S = 240.0
STOP_TIMEOUT_S = 20.0
HTTP_TIMEOUT_S = 30.0
INSTALL_TIMEOUT_S = 1800.0
MODEL_ALIAS = "bench-model"
UPSTREAM_MODEL = "bench-upstream"
COMPLETIONS_PATH = "/v1/chat/completions"
LITELLM_MASTER_KEY = "sk-gateway-bench-master-0123456789"
UPSTREAM_KEY = "sk-gateway-bench-upstream"
# Price override of the Pilothouse deployment, micro-dollars per million tokens.
PRICE = {"input": 3_000_000, "output": 15_000_000}


class TargetUnavailable(RuntimeError):
    """A target could not be set up; the report says why and the rest still runs."""


def _pinned(cpu: int) -> Callable[[], None]:
    def pin() -> None:
        os.sched_setaffinity(0, {cpu})

    return pin


class Process:
    """A server process pinned to one CPU, stopped by PID (then its process group) on exit."""

    def __init__(
        self,
        name: str,
        argv: Sequence[str],
        *,
        cpu: int,
        log: Path,
        env: Mapping[str, str] | None = None,
    ) -> None:
        self.name = name
        self.argv = list(argv)
        self.cpu = cpu
        self.log = log
        self.env = dict(env) if env is not None else None
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def pid(self) -> int:
        """The process id."""
        assert self.proc is not None
        return self.proc.pid

    def __enter__(self) -> Process:
        with self.log.open("wb") as out:
            self.proc = subprocess.Popen(
                self.argv,
                cwd=REPO,
                env=self.env,
                stdin=subprocess.DEVNULL,
                stdout=out,
                stderr=subprocess.STDOUT,
                start_new_session=True,
                preexec_fn=_pinned(self.cpu),
            )
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()

    def check_alive(self) -> None:
        """Raise with the log's end if the process has exited."""
        if self.proc is not None and self.proc.poll() is not None:
            raise TargetUnavailable(
                f"{self.name} exited with {self.proc.returncode}:\n{self.log_tail()}"
            )

    def stop(self) -> None:
        """SIGTERM, a bounded wait, then SIGKILL to the process group."""
        proc = self.proc
        if proc is None:
            return
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(timeout=STOP_TIMEOUT_S)
            except subprocess.TimeoutExpired:
                print(f"! {self.name} ignored SIGTERM for {STOP_TIMEOUT_S:.0f}s; killing it")
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(proc.pid, signal.SIGKILL)  # its own group: its workers, nothing else
        with contextlib.suppress(subprocess.TimeoutExpired):
            proc.wait(timeout=5)

    def log_tail(self, lines: int = 40) -> str:
        """The end of the process's output."""
        try:
            return "\n".join(self.log.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return "(no log)"

    def tree(self) -> list[int]:
        """This process and its live descendants."""
        parents: dict[int, int] = {}
        for entry in os.scandir("/proc"):
            if entry.name.isdigit():
                with contextlib.suppress(OSError, ValueError):
                    stat = Path(entry.path, "stat").read_text()
                    parents[int(entry.name)] = int(stat[stat.rindex(")") + 2 :].split()[1])
        found, frontier = [self.pid], [self.pid]
        while frontier:
            parent = frontier.pop()
            children = [pid for pid, ppid in parents.items() if ppid == parent]
            found.extend(children)
            frontier.extend(children)
        return found

    def memory_kib(self, field_name: str = "VmHWM") -> int:
        """``field_name`` of /proc/<pid>/status summed over the process tree, in KiB."""
        total = 0
        for pid in self.tree():
            with contextlib.suppress(OSError):
                for line in Path(f"/proc/{pid}/status").read_text().splitlines():
                    if line.startswith(field_name + ":"):
                        total += int(line.split()[1])
        return total


def cpu_snapshot() -> dict[int, tuple[str, int]]:
    """Every process and kernel thread: (name, CPU ticks so far)."""
    found: dict[int, tuple[str, int]] = {}
    for entry in os.scandir("/proc"):
        if entry.name.isdigit():
            with contextlib.suppress(OSError, ValueError, IndexError):
                stat = Path(entry.path, "stat").read_text()
                name = stat[stat.index("(") + 1 : stat.rindex(")")]
                fields = stat[stat.rindex(")") + 2 :].split()
                found[int(entry.name)] = (name, int(fields[11]) + int(fields[12]))
    return found


def busiest_others(
    before: Mapping[int, tuple[str, int]],
    after: Mapping[int, tuple[str, int]],
    ours: set[int],
    top: int = 3,
) -> list[tuple[str, float]]:
    """The processes, not ours, that used the most CPU between two snapshots: (name, seconds)."""
    hz = os.sysconf("SC_CLK_TCK")
    used = [
        (f"{name}[{pid}]", (ticks - before.get(pid, (name, 0))[1]) / hz)
        for pid, (name, ticks) in after.items()
        if pid not in ours
    ]
    return sorted((u for u in used if u[1] > 0), key=lambda u: -u[1])[:top]


def request(
    port: int,
    method: str,
    path: str,
    body: Any = None,
    headers: Mapping[str, str] | None = None,
    timeout: float = HTTP_TIMEOUT_S,
) -> tuple[int, bytes]:
    """One HTTP request to 127.0.0.1:``port``; a JSON body if ``body`` is not None."""
    conn = http.client.HTTPConnection(HOST, port, timeout=timeout)
    try:
        all_headers = dict(headers or {})
        data = None
        if body is not None:
            data = body if isinstance(body, bytes) else json.dumps(body).encode()
            all_headers.setdefault("Content-Type", "application/json")
        conn.request(method, path, body=data, headers=all_headers)
        response = conn.getresponse()
        return response.status, response.read()
    finally:
        conn.close()


def wait_http(process: Process, port: int, path: str, timeout: float = READY_TIMEOUT_S) -> float:
    """Poll GET ``path`` until it answers 200; the seconds it took."""
    started = time.monotonic()
    deadline = started + timeout
    while time.monotonic() < deadline:
        process.check_alive()
        with contextlib.suppress(OSError, http.client.HTTPException):
            if request(port, "GET", path, timeout=2)[0] == 200:
                return time.monotonic() - started
        time.sleep(0.1)
    raise TargetUnavailable(
        f"{process.name} did not answer GET {path} in {timeout:.0f}s:\n{process.log_tail()}"
    )


def wait_port_file(process: Process, path: Path, timeout: float = READY_TIMEOUT_S) -> int:
    """The port a server of ours wrote to ``path`` once it listens."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        process.check_alive()
        with contextlib.suppress(OSError, ValueError):
            return int(path.read_text())
        time.sleep(0.02)
    raise TargetUnavailable(f"{process.name} wrote no port in {timeout:.0f}s")


@dataclass
class Target:
    """Something the load generator calls: where, with which headers, and its process."""

    name: str
    what: str
    port: int
    process: Process | None
    headers: list[tuple[str, str]] = field(default_factory=list)
    ready_s: float = float("nan")
    rss_at_start_kib: int = 0
    owner_headers: dict[str, str] = field(default_factory=dict)
    sqlite_path: Path | None = None
    upstream_agent: str | None = None
    database_url: str | None = None  # Pilothouse on PostgreSQL: its database


def _server_env(extra: Mapping[str, str]) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("PILOTHOUSE_", "LITELLM_"))}
    env.update(extra)
    return env


def start_upstream(stack: contextlib.ExitStack, workdir: Path, cpu: int, gap_ms: float) -> Target:
    """The fake upstream, pinned to ``cpu`` (the load generator's)."""
    port_file = workdir / "upstream.port"
    argv = [sys.executable, "-m", "bench.gateway_upstream", "--port-file", str(port_file)]
    argv += ["--chunk-gap-ms", str(gap_ms)]
    proc = stack.enter_context(Process("upstream", argv, cpu=cpu, log=workdir / "upstream.log"))
    port = wait_port_file(proc, port_file)
    return Target("direct", "the fake upstream itself, no proxy", port, proc)


def start_forwarder(
    stack: contextlib.ExitStack, workdir: Path, cpu: int, upstream_port: int
) -> Target:
    """The bare pass-through in front of the upstream."""
    port_file = workdir / "forwarder.port"
    argv = [sys.executable, "-m", "bench.gateway_forwarder", "--port-file", str(port_file)]
    argv += ["--upstream-port", str(upstream_port)]
    proc = stack.enter_context(Process("bare", argv, cpu=cpu, log=workdir / "forwarder.log"))
    started = time.monotonic()
    port = wait_port_file(proc, port_file)
    target = Target(
        "bare", "raw asyncio forwarder, keep-alive pool, no checks", port, proc, ready_s=0.0
    )
    target.ready_s = time.monotonic() - started
    target.rss_at_start_kib = proc.memory_kib("VmRSS")
    return target


FLOOR_KEY = "phk_benchFLOOR01_0123456789abcdefghijABCDEFGHIJ0123456789"


def start_floor(stack: contextlib.ExitStack, workdir: Path, cpu: int, upstream_port: int) -> Target:
    """The gateway floor (``gateway_floor.py``): the issue's per-call work, written flat."""
    home = workdir / "floor"
    home.mkdir()
    port_file = home / "floor.port"
    db = home / "usage.db"
    argv = [sys.executable, "-m", "bench.gateway_floor", "--port-file", str(port_file)]
    argv += ["--upstream-port", str(upstream_port), "--db", str(db), "--key", FLOOR_KEY]
    proc = stack.enter_context(Process("floor", argv, cpu=cpu, log=home / "floor.log"))
    started = time.monotonic()
    port = wait_port_file(proc, port_file)
    return Target(
        "floor",
        "the issue's per-call work with no layers: key cache, checks, usage row by group commit",
        port,
        proc,
        headers=[("Authorization", f"Bearer {FLOOR_KEY}")],
        ready_s=time.monotonic() - started,
        rss_at_start_kib=proc.memory_kib("VmRSS"),
        sqlite_path=db,
        upstream_agent="pilothouse-bench-floor",
    )


def pilothouse_config(upstream_port: int, data_dir: Path | None, agent: str) -> str:
    """The YAML settings file Pilothouse runs with (secrets come from the environment)."""
    deployment = {
        "name": "bench-upstream",
        "provider": "openai-compatible",
        "model": UPSTREAM_MODEL,
        "base_url": f"http://{HOST}:{upstream_port}/v1",
        # Lets the fake upstream count what this Pilothouse forwarded.
        "headers": {"user-agent": agent},
        "price": PRICE,
    }
    settings: dict[str, Any] = {
        "log_level": "warning",
        "models": [{"alias": MODEL_ALIAS, "deployments": [deployment]}],
    }
    if data_dir is not None:
        settings["data_dir"] = str(data_dir)
    # JSON is YAML, and needs no YAML library here.
    return json.dumps(settings, indent=2) + "\n"


# The "-unreserved" variants: a call no budget or rate limit applies to is not reserved before
# it is forwarded (``gateway.reserve_every_call`` off), and its reply waits for its usage row.
UNRESERVED = "-unreserved"
UNRESERVED_ENV = {"PILOTHOUSE_GATEWAY": '{"reserve_every_call": false}'}
# (scope kind, value, window) of the budgets the "-budgets" variants put on every call.
BENCH_BUDGETS = [
    ("org", "", "month"),
    ("project", "gateway-bench", "day"),
    ("session", "", "total"),
    ("label", "bench=gateway", "week"),
]
GC_FREEZE_DELAY_S = 2.0
_GC_FREEZE_SITE = """\
# Bench-only (gateway_bench.py's gc-freeze variant): once the server has started, move every
# object made so far out of the garbage collector's sight, as gc.freeze() after start-up would.
import gc
import os
import threading


def _freeze():
    gc.freeze()
    with open({marker!r} + ".tmp", "w") as out:
        out.write(str(gc.get_freeze_count()))
    os.replace({marker!r} + ".tmp", {marker!r})


_timer = threading.Timer({delay!r}, _freeze)
_timer.daemon = True
_timer.start()
"""


# Bench-only (gateway_bench.py --wait-floors): Pilothouse without budgets, where every call first
# waits for one group-committed batch (the ledger writer's machinery) that writes nothing, that
# makes one round trip to PostgreSQL and writes nothing, or that inserts one small row per call
# into a table of its own and commits (one statement, durable as a reservation is): the least
# that any reservation made before forwarding can add to a call, without and with the durable
# write a reservation needs.
WAITS = {
    "pilothouse-wait": "batch",
    "pilothouse-pg-roundtrip": "roundtrip",
    "pilothouse-pg-durable": "durable",
}
_WAIT_SITE = """\
# Bench-only (gateway_bench.py --wait-floors): every call waits for one group-committed batch
# before it is forwarded ({wait!r}: "batch" writes nothing, "roundtrip" sends SELECT 1 to the
# store's PostgreSQL, "durable" inserts a row per call there and commits).
import itertools
import os

import asyncpg

from pilothouse.budgets.writer import LedgerWriter
from pilothouse.gateway import calls
from pilothouse.store.group import GroupCommit

WAIT = {wait!r}
HOLDS = "CREATE TABLE IF NOT EXISTS bench_holds (request_id text PRIMARY KEY)"
HOLD = "INSERT INTO bench_holds SELECT unnest($1::text[])"


class _Wait(GroupCommit):
    name = "bench-wait"
    gather_turns = LedgerWriter.gather_turns  # batches made as the ledger's are
    conn = None

    async def _write(self, items):
        if WAIT == "batch":
            return
        if self.conn is None:
            url = os.environ["PILOTHOUSE_DATABASE_URL"].replace("+asyncpg", "")
            self.conn = await asyncpg.connect(url)
            await self.conn.execute(HOLDS)
        if WAIT == "roundtrip":
            await self.conn.fetchval("SELECT 1")
        else:
            await self.conn.execute(HOLD, items)


_waits = []
_ids = itertools.count()
_reserve = calls.Gateway._reserve


async def _wait_then_reserve(self, call):
    if not _waits:
        _waits.append(_Wait())
        _waits[0].start()
    await _waits[0].submit(str(next(_ids)))
    await _reserve(self, call)


calls.Gateway._reserve = _wait_then_reserve
"""


def start_pilothouse(
    stack: contextlib.ExitStack,
    workdir: Path,
    cpu: int,
    upstream_port: int,
    *,
    name: str,
    database_url: str | None,
    gc_freeze: bool = False,
    budgets: bool = False,
    wait: str | None = None,
    wrapper: Sequence[str] = (),
    settings_env: Mapping[str, str] | None = None,
    ready_timeout: float = READY_TIMEOUT_S,
) -> Target:
    """``pilothouse serve`` on a fresh store, and a session key to call it with.

    ``wrapper`` goes before the command (``valgrind ...``); ``settings_env`` adds ``PILOTHOUSE_*``
    settings; ``ready_timeout`` bounds the wait for ``/readyz``.

    With ``gc_freeze``, a ``sitecustomize`` calls ``gc.freeze()`` two seconds after the process
    starts (the code of Pilothouse is unchanged): what that one call at start-up would give.
    With ``wait`` (``WAITS``), one makes every call wait for a batch that writes nothing.
    """
    home = workdir / name
    home.mkdir()
    agent = f"pilothouse-bench-{name}"
    data_dir = None if database_url else home / "data"
    config = home / "pilothouse.yaml"
    config.write_text(pilothouse_config(upstream_port, data_dir, agent))
    env = {**(settings_env or {}), "PILOTHOUSE_ADMIN_KEY": ADMIN_KEY}
    if database_url:
        env["PILOTHOUSE_DATABASE_URL"] = database_url
    marker = home / "gc-frozen"
    if gc_freeze:
        site = home / "site"
        site.mkdir()
        code = _GC_FREEZE_SITE.format(marker=str(marker), delay=GC_FREEZE_DELAY_S)
        (site / "sitecustomize.py").write_text(code)
        env["PYTHONPATH"] = str(site)
    elif wait is not None:
        site = home / "site"
        site.mkdir()
        (site / "sitecustomize.py").write_text(_WAIT_SITE.format(wait=wait))
        env["PYTHONPATH"] = str(site)
    port = free_port()
    argv = [*wrapper, sys.executable, "-m", "pilothouse", "serve", "--config", str(config)]
    argv += ["--host", HOST, "--port", str(port)]
    proc = stack.enter_context(
        Process(name, argv, cpu=cpu, log=home / "server.log", env=_server_env(env))
    )
    ready = wait_http(proc, port, "/readyz", ready_timeout)
    owner = {"Authorization": f"Bearer {ADMIN_KEY}"}
    session = {
        "project": "gateway-bench",
        "repository": "pilothouse/gateway-bench",
        "use_case": "benchmark",
        "agent": {"kind": "gateway-bench", "version": "1"},
        "labels": {"bench": "gateway", "target": name},
        "ttl_seconds": 86_400,
    }
    status, body = request(port, "POST", "/api/v1/sessions", session, owner)
    if status != 201:
        raise TargetUnavailable(f"{name}: POST /api/v1/sessions answered {status}: {body[:300]!r}")
    token = json.loads(body)["key"]["token"]
    if budgets:  # hard budgets on four scopes of every call, far from their limits
        session_id = json.loads(body)["session"]["id"]
        for scope_kind, scope_value, window in BENCH_BUDGETS:
            budget = {
                "scope_kind": scope_kind,
                "scope_value": session_id if scope_kind == "session" else scope_value,
                "window": window,
                "limit_usd": "1000000",
            }
            status, made = request(port, "POST", "/api/v1/budgets", budget, owner)
            if status != 201:
                raise TargetUnavailable(f"{name}: POST /api/v1/budgets answered {status}: {made!r}")
    store = "PostgreSQL" if database_url else "SQLite"
    what = f"`pilothouse serve`, {store} store, session key"
    if budgets:
        what += "; hard budgets on org, project, session and label (reserved and settled)"
    if name.endswith(UNRESERVED):
        what += "; reserve_every_call off (a call is recorded only when it ends)"
    if wait == "batch":
        what += "; no budgets, every call first waits for a group-committed batch writing nothing"
    elif wait == "roundtrip":
        what += "; no budgets, every call first waits for a batch making one round trip (SELECT 1)"
    elif wait == "durable":
        what += (
            "; no budgets, every call first waits for a batch inserting a row per call and"
            " committing (one statement)"
        )
    if gc_freeze:
        deadline = time.monotonic() + READY_TIMEOUT_S
        while not marker.exists():
            proc.check_alive()
            if time.monotonic() > deadline:
                raise TargetUnavailable(f"{name}: gc.freeze() did not run")
            time.sleep(0.05)
        what += f"; gc.freeze() {GC_FREEZE_DELAY_S:g} s after start ({marker.read_text()} objects)"
    return Target(
        name,
        what,
        port,
        proc,
        headers=[("Authorization", f"Bearer {token}")],
        ready_s=ready,
        rss_at_start_kib=proc.memory_kib("VmRSS"),
        owner_headers=owner,
        sqlite_path=None if database_url else home / "data" / "pilothouse.db",
        upstream_agent=agent,
        database_url=database_url,
    )


def start_named(
    stack: contextlib.ExitStack,
    workdir: Path,
    cpu: int,
    upstream_port: int,
    name: str,
    postgres: str | None,
    **options: Any,
) -> Target:
    """The Pilothouse bench server ``name`` says: a ``pilothouse-pg*`` one on a database of its
    own on the PostgreSQL server ``postgres``, a ``*-budgets`` one with hard budgets on four
    scopes, a floor of ``WAITS`` waiting as its name says, a ``*-unreserved`` one with
    ``gateway.reserve_every_call`` off; ``options`` go to ``start_pilothouse``."""
    url = None
    if name.startswith("pilothouse-pg"):
        if postgres is None:
            raise TargetUnavailable(f"{name}: needs a PostgreSQL server (--postgres)")
        url = stack.enter_context(bench_database(postgres, name))
    if name.endswith(UNRESERVED):
        options["settings_env"] = {**options.get("settings_env", {}), **UNRESERVED_ENV}
    return start_pilothouse(
        stack,
        workdir,
        cpu,
        upstream_port,
        name=name,
        database_url=url,
        budgets=name.endswith("-budgets"),
        wait=WAITS.get(name),
        **options,
    )


# --- LiteLLM ----------------------------------------------------------------------------------


def litellm_venv(cache_dir: Path, requirement: str, log: Path) -> Path:
    """A virtual environment with LiteLLM's proxy (and py-spy), made once under ``cache_dir``."""
    venv = cache_dir / "venv"
    marker = venv / "gateway-bench-requirement.txt"
    if (
        marker.exists()
        and marker.read_text() == requirement
        and (venv / "bin" / "litellm").exists()
    ):
        return venv
    cache_dir.mkdir(parents=True, exist_ok=True)
    print(f"installing {requirement} into {venv} (log: {log}) ...", file=sys.stderr, flush=True)
    steps = [
        [sys.executable, "-m", "venv", "--clear", str(venv)],
        [str(venv / "bin" / "pip"), "install", "-q", "--upgrade", "pip"],
        [str(venv / "bin" / "pip"), "install", "-q", requirement, "py-spy"],
    ]
    with log.open("ab") as out:
        for step in steps:
            try:
                subprocess.run(
                    step,
                    stdout=out,
                    stderr=subprocess.STDOUT,
                    timeout=INSTALL_TIMEOUT_S,
                    check=True,
                )
            except (subprocess.CalledProcessError, subprocess.TimeoutExpired, OSError) as exc:
                tail = log.read_text(errors="replace").splitlines()[-5:]
                raise TargetUnavailable(
                    f"could not install {requirement}: {exc}; " + " | ".join(tail)
                ) from exc
    marker.write_text(requirement)
    return venv


def venv_versions(venv: Path, dists: Sequence[str]) -> dict[str, str]:
    """Versions of ``dists`` installed in ``venv``."""
    code = (
        "import json, importlib.metadata as m, sys\n"
        "out = {}\n"
        "for d in sys.argv[1:]:\n"
        "    try: out[d] = m.version(d)\n"
        "    except m.PackageNotFoundError: pass\n"
        "print(json.dumps(out))\n"
    )
    done = subprocess.run(
        [str(venv / "bin" / "python"), "-c", code, *dists],
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )
    versions: dict[str, str] = json.loads(done.stdout)
    return versions


def litellm_config(upstream_port: int) -> str:
    """LiteLLM's config.yaml: the production settings of its docs, without a database."""
    config = {
        "model_list": [
            {
                "model_name": MODEL_ALIAS,
                "litellm_params": {
                    "model": f"openai/{UPSTREAM_MODEL}",
                    "api_base": f"http://{HOST}:{upstream_port}/v1",
                    "api_key": "os.environ/BENCH_UPSTREAM_KEY",
                },
            }
        ],
        "general_settings": {"master_key": "os.environ/LITELLM_MASTER_KEY"},
        "litellm_settings": {"request_timeout": 600, "set_verbose": False, "json_logs": True},
    }
    return json.dumps(config, indent=2) + "\n"


def start_litellm(
    stack: contextlib.ExitStack, workdir: Path, cpu: int, upstream_port: int, venv: Path
) -> Target:
    """LiteLLM's proxy, one worker, master key, no database."""
    home = workdir / "litellm"
    home.mkdir()
    config = home / "config.yaml"
    config.write_text(litellm_config(upstream_port))
    env = _server_env(
        {
            "LITELLM_MASTER_KEY": LITELLM_MASTER_KEY,
            "BENCH_UPSTREAM_KEY": UPSTREAM_KEY,
            "LITELLM_LOG": "ERROR",
            # Read the model price map shipped in the package instead of fetching it at start.
            "LITELLM_LOCAL_MODEL_COST_MAP": "True",
            "HOME": str(home),
        }
    )
    env.pop("VIRTUAL_ENV", None)
    port = free_port()
    argv = [str(venv / "bin" / "litellm"), "--config", str(config), "--host", HOST]
    argv += ["--port", str(port), "--num_workers", "1"]
    proc = stack.enter_context(Process("litellm", argv, cpu=cpu, log=home / "server.log", env=env))
    ready = wait_http(proc, port, "/health/liveliness", LITELLM_READY_TIMEOUT_S)
    return Target(
        "litellm",
        "`litellm --config --num_workers 1`, master key, no database",
        port,
        proc,
        headers=[("Authorization", f"Bearer {LITELLM_MASTER_KEY}")],
        ready_s=ready,
        rss_at_start_kib=proc.memory_kib("VmRSS"),
        upstream_agent="AsyncOpenAI/Python",
    )


# --- PostgreSQL -------------------------------------------------------------------------------


async def run_sql(url: str, statement: str) -> None:
    """Run one ``statement`` on the PostgreSQL database at ``url`` (a SQLAlchemy URL's driver
    suffix is dropped), on a connection of its own."""
    conn = await asyncpg.connect(url.replace("+asyncpg", ""), timeout=10)
    try:
        await conn.execute(statement)
    finally:
        await conn.close()


def _admin_sql(server_url: str, statement: str) -> None:
    asyncio.run(run_sql(server_url.rstrip("/") + "/postgres", statement))


def vacuum(database_url: str) -> None:
    """``VACUUM ANALYZE`` a bench database: what autovacuum keeps done between cells on a server
    that runs it (the one here may not: the ledger's rows, inserted and deleted by the thousand
    a second, would otherwise slow each round more than the last)."""
    asyncio.run(run_sql(database_url, "VACUUM ANALYZE"))


@contextlib.contextmanager
def bench_database(server_url: str, target: str = "pg") -> Iterator[str]:
    """A fresh PostgreSQL database for ``target`` in this run, dropped at the end: its URL."""
    name = f"pilothouse_gateway_bench_{os.getpid()}_{target.replace('-', '_')}"
    _admin_sql(server_url, f'DROP DATABASE IF EXISTS "{name}"')
    _admin_sql(server_url, f'CREATE DATABASE "{name}"')
    try:
        yield f"{server_url.rstrip('/')}/{name}"
    finally:
        try:
            _admin_sql(server_url, f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        except (OSError, asyncpg.PostgresError) as exc:
            print(f"! could not drop the bench database {name}: {exc}", file=sys.stderr)
