"""A real Pilothouse server on a loopback port, and the CLI invoked against it.

The server runs uvicorn in a background thread on a socket bound here (so its port is known
before it starts), on SQLite in a temporary data directory. Readiness is the app's own
``on_started`` hook followed by one ``/healthz`` request; every wait is bounded.
"""

from __future__ import annotations

import json
import socket
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest
import uvicorn
from typer.testing import CliRunner, Result

from pilothouse.app import build_app
from pilothouse.cli.main import app
from pilothouse.services import Services
from pilothouse.settings import Settings

START_TIMEOUT = 30.0
STOP_TIMEOUT = 15.0
CLIENT_ENV = ("PILOTHOUSE_URL", "PILOTHOUSE_API_KEY")


@dataclass(frozen=True)
class RunningServer:
    """Where a test server listens, its owner key and its SQLite file."""

    url: str
    owner_token: str
    database: Path


@contextmanager
def running_server(data_dir: Path) -> Iterator[RunningServer]:
    """Serve a fresh store in ``data_dir`` on 127.0.0.1 until the block ends."""
    settings = Settings(data_dir=data_dir, log_level="warning")
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


class Cli:
    """Runs ``pilothouse`` commands in-process against one server, as the owner by default."""

    def __init__(self, server: RunningServer) -> None:
        self.server = server
        self.runner = CliRunner()

    def run(self, *args: str, key: str | None = "", env: dict[str, str] | None = None) -> Result:
        """Invoke with ``--url`` and ``--key`` (owner unless given; ``None`` passes none)."""
        argv = [*args, "--url", self.server.url]
        token = self.server.owner_token if key == "" else key
        if token is not None:
            argv += ["--key", token]
        clean: dict[str, str | None] = dict.fromkeys(CLIENT_ENV)
        result = self.runner.invoke(app, argv, env={**clean, **(env or {})})
        if result.exception is not None and not isinstance(result.exception, SystemExit):
            raise result.exception
        return result

    def ok(self, *args: str, key: str | None = "") -> Result:
        """Invoke and require exit status 0."""
        result = self.run(*args, key=key)
        assert result.exit_code == 0, f"{args}: {result.exit_code}\n{result.output}"
        return result

    def json(self, *args: str, key: str | None = "") -> Any:
        """Invoke with ``--json``, require success, and parse stdout."""
        return json.loads(self.ok(*args, "--json", key=key).stdout)


@pytest.fixture(scope="session")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningServer]:
    """One server shared by the CLI tests that do not damage its store."""
    with running_server(tmp_path_factory.mktemp("cli-server")) as running:
        yield running


@pytest.fixture
def fresh_server(tmp_path: Path) -> Iterator[RunningServer]:
    """A server of this test's own, for tests that tamper with the store."""
    with running_server(tmp_path / "data") as running:
        yield running


@pytest.fixture
def cli(server: RunningServer) -> Cli:
    """The CLI against the shared server."""
    return Cli(server)
