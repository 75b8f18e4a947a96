"""The CLI invoked against a real Pilothouse server on a loopback port.

The server runs uvicorn in a background thread on a socket bound here (so its port is known
before it starts), on SQLite in a temporary data directory. Readiness is the app's own
``on_started`` hook followed by one ``/healthz`` request; every wait is bounded.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from typer.testing import CliRunner, Result

from pilothouse.cli.main import app
from tests.servers import RunningServer, running_server

START_TIMEOUT = 30.0
STOP_TIMEOUT = 15.0
CLIENT_ENV = ("PILOTHOUSE_URL", "PILOTHOUSE_API_KEY")


class Cli:
    """Runs ``pilothouse`` commands in-process against one server, as the owner by default."""

    def __init__(self, server: RunningServer) -> None:
        self.server = server
        self.runner = CliRunner()

    def run(
        self,
        *args: str,
        key: str | None = "",
        env: dict[str, str] | None = None,
        stdin: str | None = None,
    ) -> Result:
        """Invoke with ``--url`` and ``--key`` (owner unless given; ``None`` passes none)."""
        argv = [*args, "--url", self.server.url]
        token = self.server.owner_token if key == "" else key
        if token is not None:
            argv += ["--key", token]
        clean: dict[str, str | None] = dict.fromkeys(CLIENT_ENV)
        result = self.runner.invoke(app, argv, env={**clean, **(env or {})}, input=stdin)
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
