"""``pilothouse teams``: teams are created, listed, shown, given members and deleted."""

from __future__ import annotations

import uuid

from tests.cli.conftest import Cli


def _name(tag: str) -> str:
    return f"{tag}-{uuid.uuid4().hex[:8]}"


def test_a_team_gains_and_loses_a_member(cli: Cli) -> None:
    team = cli.json("teams", "create", _name("platform"), "--description", "builds things")
    user = cli.json("users", "create", f"{_name('m')}@example.com")
    added = cli.json("teams", "add-member", team["id"], user["id"])
    assert added["member_ids"] == [user["id"]]
    assert team["id"] in cli.json("users", "show", user["id"])["team_ids"]
    removed = cli.json("teams", "remove-member", team["id"], user["id"])
    assert removed["member_ids"] == []


def test_a_created_team_is_listed_and_shown(cli: Cli) -> None:
    name = _name("data")
    team = cli.json("teams", "create", name, "--description", "pipelines")
    listed = cli.json("teams", "list", "--limit", "500")["data"]
    assert team["id"] in {t["id"] for t in listed}
    table = cli.ok("teams", "show", team["id"]).stdout
    assert name in table
    assert "pipelines" in table


def test_a_deleted_team_is_gone(cli: Cli) -> None:
    team = cli.json("teams", "create", _name("temp"))
    assert cli.json("teams", "delete", team["id"]) == {"id": team["id"], "deleted": True}
    result = cli.run("teams", "show", team["id"])
    assert result.exit_code == 1
    assert result.stderr.startswith("error: not_found: ")


def test_teams_delete_without_json_confirms_in_words(cli: Cli) -> None:
    team = cli.json("teams", "create", _name("words"))
    assert cli.ok("teams", "delete", team["id"]).stdout == f"deleted team {team['id']}\n"


def test_a_team_with_sessions_cannot_be_deleted(cli: Cli) -> None:
    team = cli.json("teams", "create", _name("busy"))
    cli.json("sessions", "create", "--team", team["id"])
    result = cli.run("teams", "delete", team["id"])
    assert result.exit_code == 1
    assert result.stderr.startswith("error: conflict: ")


def test_a_team_name_with_rich_markup_is_printed_literally(cli: Cli) -> None:
    name = _name("[bold]odd[/bold]")
    team = cli.json("teams", "create", name)
    assert name in cli.ok("teams", "show", team["id"]).stdout
