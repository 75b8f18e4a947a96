"""``pilothouse secrets``: a value goes in from stdin or the environment (never an argument)
and never comes back out; grants, rotation, revocation, and a session's ``get``."""

from __future__ import annotations

import uuid

from typer.testing import CliRunner

from pilothouse.cli.main import app
from tests.cli.conftest import Cli


def _name(tag: str) -> str:
    return f"{tag}-{uuid.uuid4().hex[:8]}"


def test_a_secret_is_set_granted_read_by_a_session_rotated_and_revoked(cli: Cli) -> None:
    name, value, newer = _name("deploy"), f"v-{uuid.uuid4().hex}", f"v-{uuid.uuid4().hex}"
    made = cli.run("secrets", "set", name, "--stdin", "--json", stdin=value + "\n")
    assert made.exit_code == 0, made.output
    assert value not in made.output
    granted = cli.json("secrets", "grant", name, "*", "--use", "lease", "--ttl", "60")
    listed = cli.ok("secrets", "list").stdout
    assert name in listed and granted["id"] in listed and value not in listed

    session = cli.json("sessions", "create", "--project", "cli")
    token = session["key"]["token"]
    assert cli.ok("secrets", "get", name, key=token).stdout.strip() == value
    refused = cli.run("secrets", "get", name)  # the owner: values are write-only
    assert refused.exit_code == 1 and value not in refused.output

    rotated = cli.run(
        "secrets", "rotate", name, "--from-env", "NEW_VALUE", "--json", env={"NEW_VALUE": newer}
    )
    assert rotated.exit_code == 0 and newer not in rotated.output
    assert cli.ok("secrets", "get", name, key=token).stdout.strip() == newer

    cli.ok("secrets", "revoke", name, "--grant", granted["id"])
    assert cli.run("secrets", "get", name, key=token).exit_code == 1
    cli.ok("secrets", "revoke", name, "--yes")
    assert name not in cli.ok("secrets", "list").stdout


def test_bad_input_is_refused_with_the_problem_named(cli: Cli) -> None:
    short = cli.run("secrets", "set", _name("short"), "--stdin", stdin="abc")
    assert short.exit_code == 1 and "at least 8" in short.stderr
    unset = cli.run("secrets", "set", _name("env"), "--from-env", "NOT_SET_ANYWHERE")
    assert unset.exit_code == 1 and "NOT_SET_ANYWHERE" in unset.stderr
    both = cli.run("secrets", "set", _name("both"), "--from-env", "X", "--stdin", stdin="x" * 10)
    assert both.exit_code == 1 and "not both" in both.stderr
    offline = CliRunner()  # keygen talks to no server
    assert offline.invoke(app, ["secrets", "keygen", "bad:id"]).exit_code == 1
    line = offline.invoke(app, ["secrets", "keygen", "k7"]).stdout.strip()
    assert line.startswith("k7:") and len(line) == len("k7:") + 44
