"""``pilothouse keys`` and ``whoami``: keys are created, listed, shown and revoked."""

from __future__ import annotations

import shlex
import uuid

from tests.cli.conftest import Cli


def _user(cli: Cli, role: str = "member") -> str:
    email = f"{role}-{uuid.uuid4().hex[:8]}@example.com"
    return str(cli.json("users", "create", email, "--role", role)["id"])


def test_a_created_key_appears_by_prefix_in_keys_list(cli: Cli) -> None:
    created = cli.json("keys", "create", "--name", "ci-laptop")
    listed = cli.json("keys", "list")
    prefixes = [k["prefix"] for k in listed["data"]]
    assert created["prefix"] in prefixes
    assert created["token"].startswith(created["prefix"])


def test_keys_create_prints_the_token_once_and_list_never_prints_secrets(cli: Cli) -> None:
    result = cli.ok("keys", "create", "--name", "shown-once")
    token_lines = [line for line in result.stdout.splitlines() if line.startswith("token: ")]
    assert len(token_lines) == 1
    token = token_lines[0].removeprefix("token: ")
    assert "shown this once" in result.stderr
    listing = cli.ok("keys", "list", "--limit", "500").stdout
    assert token.rsplit("_", 1)[0] in listing  # the prefix is listed
    assert token not in listing
    assert cli.server.owner_token not in listing


def test_a_revoked_key_is_refused_by_whoami_with_key_revoked(cli: Cli) -> None:
    created = cli.json("keys", "create", "--name", "to-revoke")
    assert cli.json("whoami", key=created["token"])["key_id"] == created["id"]
    revoked = cli.ok("keys", "revoke", created["id"])
    assert f"revoked key {created['id']}" in revoked.stdout
    result = cli.run("whoami", key=created["token"])
    assert result.exit_code == 1
    assert result.stderr.startswith("error: key_revoked: ")


def test_revoked_keys_are_listed_only_with_include_revoked(cli: Cli) -> None:
    created = cli.json("keys", "create", "--name", "gone")
    cli.ok("keys", "revoke", created["id"])
    default_ids = {k["id"] for k in cli.json("keys", "list", "--limit", "500")["data"]}
    all_ids = {
        k["id"] for k in cli.json("keys", "list", "--include-revoked", "--limit", "500")["data"]
    }
    assert created["id"] not in default_ids
    assert created["id"] in all_ids


def test_a_service_key_carries_its_scopes_and_allowed_labels(cli: Cli) -> None:
    created = cli.json(
        *shlex.split(
            "keys create --service --name ci --scope sessions:write"
            " --allow-label team --allow-label env --expires-in 3600"
        )
    )
    assert created["kind"] == "service"
    assert created["scopes"] == ["sessions:write"]
    assert created["allowed_labels"] == ["env", "team"]
    assert created["expires_at"] is not None
    me = cli.json("whoami", key=created["token"])
    assert me["kind"] == "service"
    assert me["scopes"] == ["sessions:write"]


def test_scopes_on_a_user_key_are_refused_with_the_servers_message(cli: Cli) -> None:
    result = cli.run("keys", "create", "--scope", "sessions:write")
    assert result.exit_code == 1
    assert "error: validation_error: scopes and allowed_labels apply only to service keys" in (
        result.stderr
    )


def test_keys_for_another_user_are_filtered_by_user(cli: Cli) -> None:
    user_id = _user(cli)
    created = cli.json("keys", "create", "--user", user_id)
    listed = cli.json("keys", "list", "--user", user_id)
    assert [k["id"] for k in listed["data"]] == [created["id"]]
    assert cli.json("keys", "show", created["id"])["user_id"] == user_id


def test_session_keys_are_listed_only_with_all_kinds_or_kind_session(cli: Cli) -> None:
    opened = cli.json("sessions", "create", "--project", "keys-listing")
    key_id = opened["key"]["id"]
    default_ids = {k["id"] for k in cli.json("keys", "list", "--limit", "500")["data"]}
    every_ids = {k["id"] for k in cli.json("keys", "list", "--all-kinds", "--limit", "500")["data"]}
    session_keys = cli.json("keys", "list", "--kind", "session", "--limit", "500")["data"]
    assert key_id not in default_ids
    assert key_id in every_ids
    assert key_id in {k["id"] for k in session_keys}
    assert {k["kind"] for k in session_keys} == {"session"}


def test_keys_list_limit_caps_the_rows_and_gives_a_cursor_to_read_on(cli: Cli) -> None:
    for _ in range(3):
        cli.json("keys", "create")
    page = cli.json("keys", "list", "--limit", "2")
    assert len(page["data"]) == 2
    assert page["next_cursor"] == page["data"][-1]["id"]
    assert [k["id"] for k in page["data"]] == sorted((k["id"] for k in page["data"]), reverse=True)
