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


def test_audit_tail_follow_streams_new_events_and_stops_cleanly_on_ctrl_c(
    server: RunningServer,
) -> None:
    before = _make_team(server)
    argv = ["audit", "tail", "--follow", "--json", "--limit", "1", "--poll-interval", "0.05"]
    proc = subprocess.Popen(
        [*_command(), *argv],
        env=_env(server),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    assert proc.stdout is not None and proc.stderr is not None
    lines: queue.Queue[str] = queue.Queue()
    reader = threading.Thread(target=_pump, args=(proc.stdout, lines))
    reader.start()
    try:
        assert _next_event(lines)["target"]["id"] == before
        after = _make_team(server)
        assert _next_event(lines)["target"]["id"] == after
        proc.send_signal(signal.SIGINT)
        assert proc.wait(WAIT) == 0
        stderr = proc.stderr.read()
    finally:
        if proc.poll() is None:
            proc.kill()
        proc.wait(WAIT)
        reader.join(WAIT)
        proc.stdout.close()
        proc.stderr.close()
    assert "Traceback" not in stderr
    assert "Aborted" not in stderr
