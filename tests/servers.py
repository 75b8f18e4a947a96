"""Running real `pilothouse` server processes in tests: free ports, bounded readiness waits."""

from __future__ import annotations

import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import uvicorn

from pilothouse.app import build_app
from pilothouse.services import Services
from pilothouse.settings import Settings

START_TIMEOUT = 30.0
STOP_TIMEOUT = 15.0


def free_port() -> int:
    """A TCP port on loopback that nothing listens on right now."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def wait_ready(
    url: str, process: subprocess.Popen[bytes], log: Path, deadline_s: float = 30
) -> None:
    """Wait (bounded) until ``url``/readyz answers 200; fail with the server's log if it dies."""
    deadline = time.monotonic() + deadline_s
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"server exited with {process.returncode}:\n{log.read_text()}")
        try:
            if httpx.get(f"{url}/readyz", timeout=1).status_code == 200:
                return
        except httpx.TransportError:
            pass
        time.sleep(0.1)
    raise TimeoutError(f"{url} not ready after {deadline_s}s:\n{log.read_text()}")


@contextmanager
def pilothouse_process(
    args: list[str], cwd: Path, env: Mapping[str, str] | None = None
) -> Iterator[tuple[str, Path]]:
    """Run `python -m pilothouse ARGS --port P` until the block ends: (base URL, log path)."""
    port = free_port()
    log_path = cwd / f"pilothouse-{port}.log"
    with log_path.open("wb") as log:
        process = subprocess.Popen(
            [sys.executable, "-m", "pilothouse", *args, "--port", str(port)],
            cwd=cwd,
            stdout=log,
            stderr=subprocess.STDOUT,
            env={"PATH": "/usr/bin:/bin", "COLUMNS": "200", **(env or {})},
        )
    url = f"http://127.0.0.1:{port}"
    try:
        wait_ready(url, process, log_path)
        yield url, log_path
    finally:
        process.terminate()
        try:
            process.wait(timeout=15)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(timeout=5)


@dataclass(frozen=True)
class RunningServer:
    """Where a test server listens, its owner key and its SQLite file."""

    url: str
    owner_token: str
    database: Path


@contextmanager
def running_server(data_dir: Path, **overrides: Any) -> Iterator[RunningServer]:
    """Serve a fresh store in ``data_dir`` on 127.0.0.1 until the block ends."""
    settings = Settings(data_dir=data_dir, log_level="warning", **overrides)
    started: dict[str, Services] = {}
    ready = threading.Event()

    async def on_started(services: Services) -> None:
        started["services"] = services
        ready.set()

    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.bind(("127.0.0.1", 0))
    sock.listen(64)
    config = uvicorn.Config(
        build_app(settings, on_started=on_started),
        lifespan="on",
        loop="asyncio",
        http="h11",
        ws="none",
        log_config=None,
        log_level="warning",
        access_log=False,
    )
    server = uvicorn.Server(config)

    def serve() -> None:
        try:
            server.run(sockets=[sock])
        finally:
            ready.set()  # wake the waiter if start-up failed

    thread = threading.Thread(target=serve, name="pilothouse-test-server")
    thread.start()
    try:
        assert ready.wait(START_TIMEOUT), "the server did not start in time"
        assert "services" in started, "the server stopped during start-up"
        bootstrap = started["services"].bootstrap_result
        assert bootstrap is not None and bootstrap.owner_token is not None
        port = sock.getsockname()[1]
        url = f"http://127.0.0.1:{port}"
        httpx.get(f"{url}/healthz", timeout=START_TIMEOUT).raise_for_status()
        yield RunningServer(url, bootstrap.owner_token, data_dir / "pilothouse.db")
    finally:
        server.should_exit = True
        thread.join(STOP_TIMEOUT)
        sock.close()
        assert not thread.is_alive(), "the server did not stop in time"
