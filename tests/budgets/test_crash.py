"""A `pilothouse serve` killed (SIGKILL) while streams are in flight leaves their reservations;
the next process's sweeper settles each at its reserved cost, once, with a usage row marked
estimated, and nothing is counted twice."""

from __future__ import annotations

import json
import signal
import sqlite3
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from contextlib import closing, contextmanager
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx

from pilothouse.identity.tokens import KeyKind, issue
from tests.conftest import bearer
from tests.gateway.upstream import FakeUpstream
from tests.servers import free_port, wait_ready

STREAMS = 4
TTL_SECONDS = 2.0
BOUND_SECONDS = 20.0


@contextmanager
def server(home: Path, config: Path, owner: str) -> Iterator[tuple[str, subprocess.Popen[bytes]]]:
    """`pilothouse serve` on a SQLite data dir in ``home``; killed at the end if still alive."""
    port = free_port()
    log_path = home / f"server-{port}.log"
    argv = [sys.executable, "-m", "pilothouse", "serve", "--config", str(config)]
    argv += ["--data-dir", str(home / "data"), "--port", str(port)]
    with log_path.open("wb") as log:
        process = subprocess.Popen(
            argv,
            cwd=home,
            stdout=log,
            stderr=subprocess.STDOUT,
            env={"PATH": "/usr/bin:/bin", "PILOTHOUSE_ADMIN_KEY": owner},
        )
    url = f"http://127.0.0.1:{port}"
    try:
        wait_ready(url, process, log_path)
        yield url, process
    finally:
        if process.poll() is None:
            process.kill()
        process.wait(timeout=10)


def query(home: Path, sql: str) -> list[tuple[Any, ...]]:
    with closing(sqlite3.connect(home / "data" / "pilothouse.db")) as conn:
        return conn.execute(sql).fetchall()


def wait_for(check: Any, what: str) -> None:
    deadline = time.monotonic() + BOUND_SECONDS
    while time.monotonic() < deadline:
        if check():
            return
        time.sleep(0.1)
    raise AssertionError(f"not within {BOUND_SECONDS}s: {what}")


def _config(home: Path, upstream: FakeUpstream, **gateway: Any) -> Path:
    config = home / "pilothouse.json"
    deployment = {
        "provider": "openai-compatible",
        "model": "fake-model",
        "base_url": upstream.openai_url,
        "price": {"input": 1_000_000, "output": 2_000_000},
    }
    gateway = {"reservation_ttl_seconds": TTL_SECONDS, "sweep_seconds": 0.2, **gateway}
    config.write_text(
        json.dumps(
            {"models": [{"alias": "budget-model", "deployments": [deployment]}], "gateway": gateway}
        )
    )
    return config


def _killed_mid_stream(
    home: Path, upstream: FakeUpstream, config: Path, owner: str, *, budget: bool
) -> list[tuple[Any, ...]]:
    """Serve, open a session (its project under a hard budget if ``budget``), start STREAMS
    streams, and SIGKILL the process once the upstream has every one of them; the reservations
    the process left (their amounts)."""
    # Events 2 s apart: the process dies with every stream in flight, and the upstream's
    # handlers find the dead connections and end before the test does.
    upstream.slow(2.0, path="/chat/completions", times=STREAMS)
    with server(home, config, owner) as (url, process):
        with httpx.Client(timeout=10) as http:
            org = http.get(f"{url}/api/v1/org", headers=bearer(owner)).json()["id"]
            made = http.post(
                f"{url}/api/v1/sessions", headers=bearer(owner), json={"project": "crash"}
            )
            assert made.status_code == 201, made.text
            key = made.json()["key"]["token"]
        if budget:
            now = datetime.now(UTC).isoformat()
            with closing(sqlite3.connect(home / "data" / "pilothouse.db")) as conn, conn:
                conn.execute(
                    "INSERT INTO budgets (id, org_id, name, scope_kind, scope_value, window,"
                    " limit_picos, enforcement, thresholds, created_at, updated_at) VALUES"
                    " ('bud_crash', ?, 'crash', 'project', 'crash', 'total', ?, 'hard',"
                    " '[100]', ?, ?)",
                    (org, 10**12, now, now),
                )
        body = {
            "model": "budget-model",
            "stream": True,
            "max_tokens": 50,
            "messages": [{"role": "user", "content": "Say something about ledgers please"}],
        }
        threads = [
            threading.Thread(target=_stream, args=(url, key, body), daemon=True)
            for _ in range(STREAMS)
        ]
        for thread in threads:
            thread.start()
        wait_for(lambda: len(upstream.requests) >= STREAMS, "every stream forwarded")
        reserved = query(home, "SELECT amount_picos FROM budget_reservations")
        process.send_signal(signal.SIGKILL)
        process.wait(timeout=10)
    for thread in threads:
        thread.join(timeout=15)
    return reserved


def _swept(home: Path, config: Path, owner: str) -> list[tuple[Any, ...]]:
    """Serve again until the sweeper has settled every reservation, and a few sweeps more
    (nothing is settled twice); the usage rows then."""
    with server(home, config, owner):
        wait_for(
            lambda: query(home, "SELECT count(*) FROM budget_reservations") == [(0,)],
            "the orphaned reservations swept",
        )
        time.sleep(3 * 0.2 + TTL_SECONDS)
        return query(
            home,
            "SELECT status, estimated, cost_picos, project, key_id IS NOT NULL, model_alias,"
            " stream, deployment, input_tokens, latency_ms FROM usage_records",
        )


def test_a_killed_process_s_reservations_are_settled_once_by_the_next(tmp_path: Path) -> None:
    owner = issue(KeyKind.USER).token
    with FakeUpstream.threaded() as upstream:
        config = _config(tmp_path, upstream)
        reserved = _killed_mid_stream(tmp_path, upstream, config, owner, budget=True)
        assert len(reserved) == STREAMS
        amount = reserved[0][0]
        assert query(tmp_path, "SELECT count(*) FROM usage_records") == [(0,)]
        assert query(tmp_path, "SELECT spent_picos, reserved_picos FROM budget_counters") == [
            (0, STREAMS * amount)
        ]
        rows = _swept(tmp_path, config, owner)
        counters = query(tmp_path, "SELECT spent_picos, reserved_picos, calls FROM budget_counters")
    # Each row as the reservation kept it: attributed, the model asked for, a stream; what
    # only the call's end would have told is left empty.
    orphan = ("orphaned", 1, amount, "crash", 1, "budget-model", 1, None, 0, 0)
    assert sorted(rows) == [orphan] * STREAMS
    assert counters == [(STREAMS * amount, 0, STREAMS)]


def test_calls_under_no_budget_are_reserved_too_and_a_crash_loses_none(tmp_path: Path) -> None:
    """No budget or rate limit applies, yet every call forwarded has a durable reservation
    (at its worst-case cost, on no counter), so the calls in flight when the process died are
    in the usage table afterwards, estimated."""
    owner = issue(KeyKind.USER).token
    with FakeUpstream.threaded() as upstream:
        config = _config(tmp_path, upstream)
        reserved = _killed_mid_stream(tmp_path, upstream, config, owner, budget=False)
        assert len(reserved) == STREAMS
        assert query(tmp_path, "SELECT count(*) FROM usage_records") == [(0,)]
        rows = _swept(tmp_path, config, owner)
        assert query(tmp_path, "SELECT count(*) FROM budget_counters") == [(0,)]
    # The worst case: max_tokens (50) at $2 a million output tokens, and the prompt (estimated
    # from the body's size) at $1 a million input tokens.
    amount = reserved[0][0]
    prompt, rest = divmod(amount - 50 * 2_000_000, 1_000_000)
    assert prompt > 0 and rest == 0
    orphan = ("orphaned", 1, amount, "crash", 1, "budget-model", 1, None, 0, 0)
    assert sorted(rows) == [orphan] * STREAMS


def test_with_reserve_every_call_off_a_call_under_no_budget_writes_nothing_first(
    tmp_path: Path,
) -> None:
    """The setting off: nothing is written before forwarding a call no budget applies to (and
    so a process killed mid-call leaves no trace of it: the trade the setting documents)."""
    owner = issue(KeyKind.USER).token
    with FakeUpstream.threaded() as upstream:
        config = _config(tmp_path, upstream, reserve_every_call=False)
        assert _killed_mid_stream(tmp_path, upstream, config, owner, budget=False) == []
        assert _swept(tmp_path, config, owner) == []


def _stream(url: str, key: str, body: dict[str, Any]) -> None:
    try:
        with (
            httpx.Client(timeout=30) as http,
            http.stream("POST", f"{url}/v1/chat/completions", json=body, headers=bearer(key)) as r,
        ):
            for _ in r.iter_bytes():
                pass
    except httpx.HTTPError:
        pass  # the server was killed mid-stream
