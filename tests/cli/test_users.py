"""``pilothouse users``: users are created, shown, listed, updated, disabled and enabled."""

from __future__ import annotations

import uuid

from tests.cli.conftest import Cli


def _email(tag: str) -> str:
    return f"{tag}-{uuid.uuid4().hex[:8]}@example.com"


def test_a_created_user_is_shown_with_its_name_and_role(cli: Cli) -> None:
    email = _email("ada")
    created = cli.json("users", "create", email, "--name", "Ada", "--role", "auditor")
    shown = cli.json("users", "show", created["id"])
    assert (shown["email"], shown["name"], shown["role"]) == (email, "Ada", "auditor")
    table = cli.ok("users", "show", created["id"]).stdout
    assert email in table
    assert "auditor" in table


def test_users_update_changes_the_name_and_role(cli: Cli) -> None:
    created = cli.json("users", "create", _email("bo"))
    assert created["role"] == "member"
    updated = cli.json("users", "update", created["id"], "--name", "Bo", "--role", "admin")
    assert (updated["name"], updated["role"]) == ("Bo", "admin")
    assert cli.json("users", "show", created["id"])["role"] == "admin"


def test_a_disabled_user_is_listed_only_with_include_disabled_and_can_be_enabled(
    cli: Cli,
) -> None:
    created = cli.json("users", "create", _email("cy"))
    assert cli.json("users", "update", created["id"], "--disable")["disabled"] is True
    default_ids = {u["id"] for u in cli.json("users", "list", "--limit", "500")["data"]}
    every = cli.json("users", "list", "--include-disabled", "--limit", "500")["data"]
    assert created["id"] not in default_ids
    assert created["id"] in {u["id"] for u in every}
    assert cli.json("users", "update", created["id"], "--enable")["disabled"] is False


def test_a_disabled_users_key_stops_working(cli: Cli) -> None:
    created = cli.json("users", "create", _email("dee"))
    token = cli.json("keys", "create", "--user", created["id"])["token"]
    assert cli.json("whoami", key=token)["user_id"] == created["id"]
    cli.ok("users", "update", created["id"], "--disable")
    result = cli.run("whoami", key=token)
    assert result.exit_code == 1
    assert result.stderr.startswith("error: ")


def test_users_list_filters_by_role(cli: Cli) -> None:
    created = cli.json("users", "create", _email("fin"), "--role", "finance")
    finance = cli.json("users", "list", "--role", "finance", "--limit", "500")["data"]
    assert created["id"] in {u["id"] for u in finance}
    assert {u["role"] for u in finance} == {"finance"}


def test_users_update_without_a_change_is_a_usage_error(cli: Cli) -> None:
    created = cli.json("users", "create", _email("eve"))
    result = cli.run("users", "update", created["id"])
    assert result.exit_code == 2
    assert "nothing to change" in result.stderr


def test_an_unknown_role_is_refused_before_any_request(cli: Cli) -> None:
    result = cli.run("users", "create", _email("x"), "--role", "emperor")
    assert result.exit_code == 2
    assert "emperor" in result.stderr


def test_a_duplicate_email_renders_the_conflict_envelope(cli: Cli) -> None:
    email = _email("dup")
    cli.ok("users", "create", email)
    result = cli.run("users", "create", email)
    assert result.exit_code == 1
    assert result.stderr.startswith("error: conflict: ")
