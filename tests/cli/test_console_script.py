"""The installed ``pilothouse`` script, run as a real process, reads its connection from the
environment, and ``audit tail --follow`` streams new events until Ctrl-C stops it cleanly."""

from __future__ import annotations

import json
import os
import queue
import signal
import subprocess
import sys
import threading
import time
import uuid
from pathlib import Path
from typing import IO, Any

import httpx

from tests.cli.conftest import RunningServer

WAIT = 20.0


def _command() -> list[str]:
    script = Path(sys.executable).parent / "pilothouse"
    return [str(script)] if script.exists() else [sys.executable, "-m", "pilothouse"]


def _env(server: RunningServer) -> dict[str, str]:
    return {
        **os.environ,
        "PILOTHOUSE_URL": server.url,
        "PILOTHOUSE_API_KEY": server.owner_token,
    }


def _make_team(server: RunningServer) -> str:
    response = httpx.post(
        f"{server.url}/api/v1/teams",
        json={"name": f"proc-{uuid.uuid4().hex[:8]}"},
        headers={"authorization": f"Bearer {server.owner_token}"},
        timeout=WAIT,
    )
    response.raise_for_status()
    return str(response.json()["id"])


def _pump(stream: IO[str], lines: queue.Queue[str]) -> None:
    """Move each line of ``stream`` into ``lines`` until the stream ends."""
    for line in stream:
        lines.put(line)


def _next_event(lines: queue.Queue[str]) -> Any:
    return json.loads(lines.get(timeout=WAIT))


def test_console_script_takes_url_and_key_from_the_environment(server: RunningServer) -> None:
    done = subprocess.run(
        [*_command(), "whoami", "--json"],
        env=_env(server),
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    me = json.loads(done.stdout)
    assert me["role"] == "owner"
    assert server.owner_token.startswith(me["key_prefix"])


class _Follow:
    """``pilothouse audit tail --follow --json`` as a process, its lines read on a thread."""

    def __init__(self, server: RunningServer, poll_interval: str) -> None:
        argv = ["audit", "tail", "--follow", "--json", "--limit", "1"]
        self.proc = subprocess.Popen(
            [*_command(), *argv, "--poll-interval", poll_interval],
            env=_env(server),
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        assert self.proc.stdout is not None and self.proc.stderr is not None
        self.lines: queue.Queue[str] = queue.Queue()
        self.reader = threading.Thread(target=_pump, args=(self.proc.stdout, self.lines))
        self.reader.start()

    def next_event(self) -> Any:
        return _next_event(self.lines)

    def interrupt(self, times: int = 1) -> None:
        """Press Ctrl-C ``times``, 2 ms apart."""
        for _ in range(times):
            self.proc.send_signal(signal.SIGINT)
            time.sleep(0.002)

    def assert_exits_cleanly(self) -> None:
        """The process ends by itself, with status 0 and neither a traceback nor click's
        "Aborted!"."""
        assert self.proc.stderr is not None
        status = self.proc.wait(WAIT)
        stderr = self.proc.stderr.read()
        assert status == 0, stderr
        assert "Traceback" not in stderr
        assert "Aborted" not in stderr

    def __enter__(self) -> _Follow:
        return self

    def __exit__(self, *_: object) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
        self.proc.wait(WAIT)
        self.reader.join(WAIT)
        for stream in (self.proc.stdout, self.proc.stderr):
            assert stream is not None
            stream.close()


def test_audit_tail_follow_streams_new_events_and_stops_cleanly_on_ctrl_c(
    server: RunningServer,
) -> None:
    before = _make_team(server)
    with _Follow(server, "0.05") as follow:
        assert follow.next_event()["target"]["id"] == before
        after = _make_team(server)
        assert follow.next_event()["target"]["id"] == after
        follow.interrupt()
        follow.assert_exits_cleanly()


def test_audit_tail_follow_stops_cleanly_on_ctrl_c_pressed_mid_request(
    server: RunningServer,
) -> None:
    """Polling without a pause, a Ctrl-C lands inside the HTTP client; pressed again while the
    follow ends and its client closes, it still exits 0 (it once could leave the client's pool
    lock held, and the process waited on it for ever)."""
    before = _make_team(server)
    with _Follow(server, "0") as follow:
        assert follow.next_event()["target"]["id"] == before
        follow.interrupt(times=20)  # over some 40 ms: while polling, and while exiting
        follow.assert_exits_cleanly()
