"""Connecting: flags or environment, the error envelope, unreachable servers, a missing key."""

from __future__ import annotations

import socket
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from http.server import BaseHTTPRequestHandler, HTTPServer

from pilothouse.cli.main import app
from tests.cli.conftest import Cli


def test_whoami_json_names_the_owner_of_the_root_org(cli: Cli) -> None:
    me = cli.json("whoami")
    assert me["role"] == "owner"
    assert me["kind"] == "user"
    assert cli.server.owner_token.startswith(me["key_prefix"])


def test_whoami_table_shows_the_key_prefix_but_never_the_secret(cli: Cli) -> None:
    me = cli.json("whoami")
    output = cli.ok("whoami").stdout
    assert me["key_prefix"] in output
    assert "owner" in output
    assert cli.server.owner_token not in output


def test_missing_key_exits_2_with_a_message_naming_the_fix(cli: Cli) -> None:
    result = cli.run("whoami", key=None)
    assert result.exit_code == 2
    assert "no API key" in result.stderr
    assert "PILOTHOUSE_API_KEY" in result.stderr


def test_url_and_key_fall_back_to_the_environment(cli: Cli) -> None:
    env = {"PILOTHOUSE_URL": cli.server.url, "PILOTHOUSE_API_KEY": cli.server.owner_token}
    result = cli.runner.invoke(app, ["whoami", "--json"], env=env)
    assert result.exit_code == 0, result.output
    assert '"role": "owner"' in result.stdout


def test_an_unknown_key_prints_the_error_envelope_and_exits_1(cli: Cli) -> None:
    result = cli.run("whoami", key="phk_notakey_notasecret")
    assert result.exit_code == 1
    assert result.stderr.startswith("error: invalid_key: ")
    assert result.stdout == ""


def test_an_unreachable_server_is_named_in_the_message_and_exits_1(cli: Cli) -> None:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    url = f"http://127.0.0.1:{port}"
    result = cli.runner.invoke(app, ["whoami", "--url", url, "--key", cli.server.owner_token])
    assert result.exit_code == 1
    assert f"cannot connect to the Pilothouse server at {url}" in result.stderr
    assert "Traceback" not in result.output


def test_a_missing_object_renders_not_found_on_stderr(cli: Cli) -> None:
    result = cli.run("teams", "show", "team_doesnotexist")
    assert result.exit_code == 1
    assert result.stderr.startswith("error: not_found: ")
    assert "team_doesnotexist" in result.stderr


def test_an_id_with_a_slash_cannot_reach_another_route(cli: Cli) -> None:
    result = cli.run("users", "show", "../whoami")
    assert result.exit_code == 1
    assert result.stderr.startswith("error: not_found: ")


@contextmanager
def _foreign_server(status: int, body: bytes) -> Iterator[str]:
    """A plain HTTP server (not Pilothouse) answering every GET with ``status`` and ``body``."""

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            self.send_response(status)
            self.send_header("content-type", "text/html")
            self.send_header("content-length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, format: str, *args: object) -> None:
            pass

    httpd = HTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=httpd.serve_forever)
    thread.start()
    try:
        yield f"http://127.0.0.1:{httpd.server_address[1]}"
    finally:
        httpd.shutdown()
        thread.join(10)
        httpd.server_close()


def test_a_server_that_is_not_pilothouse_is_reported_without_a_traceback(cli: Cli) -> None:
    with _foreign_server(200, b"<html>welcome</html>") as url:
        result = cli.runner.invoke(app, ["whoami", "--url", url, "--key", "phk_a_b"])
    assert result.exit_code == 1
    assert result.stderr.startswith("error: not_json: GET /api/v1/whoami answered with")
    assert result.exception is None or isinstance(result.exception, SystemExit)


def test_an_error_without_the_envelope_is_shown_with_its_status(cli: Cli) -> None:
    with _foreign_server(502, b"<h1>Bad   Gateway</h1>") as url:
        result = cli.runner.invoke(app, ["whoami", "--url", url, "--key", "phk_a_b"])
    assert result.exit_code == 1
    assert result.stderr == "error: http_502: <h1>Bad Gateway</h1>\n"
