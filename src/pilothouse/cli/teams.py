"""``pilothouse teams``: list, create, show and delete teams, and manage their members."""

from __future__ import annotations

from typing import Annotated, Any

import typer

from pilothouse.cli.client import JsonOption, KeyOption, LimitOption, UrlOption, connect, route
from pilothouse.cli.output import print_json, show_record, show_table, when
from pilothouse.cli.users import UserId

app = typer.Typer(name="teams", help="Manage teams and their members.", no_args_is_help=True)

TeamId = Annotated[str, typer.Argument(metavar="TEAM_ID", help="The team's id (team_...).")]


def team_fields(team: dict[str, Any]) -> dict[str, Any]:
    """The fields of a team worth showing a person."""
    return {
        "id": team["id"],
        "name": team["name"],
        "description": team["description"],
        "members": team["member_ids"],
        "created": when(team["created_at"]),
    }


def _print_team(team: dict[str, Any], json_out: bool, title: str | None = None) -> None:
    if json_out:
        print_json(team)
    else:
        show_record(team_fields(team), title=title)


@app.command("list")
def list_teams(
    limit: LimitOption = 50,
    url: UrlOption = None,
    key: KeyOption = None,
    json_out: JsonOption = False,
) -> None:
    """List teams of your organization, newest first."""
    with connect(url, key) as api:
        page = api.pages("/teams", {}, limit)
    if json_out:
        print_json(page)
        return
    show_table(
        ["ID", "NAME", "MEMBERS", "DESCRIPTION", "CREATED"],
        (
            [t["id"], t["name"], len(t["member_ids"]), t["description"], when(t["created_at"])]
            for t in page["data"]
        ),
        title="teams",
    )


@app.command("create")
def create(
    name: Annotated[str, typer.Argument(metavar="NAME", help="The team's name (unique).")],
    description: Annotated[
        str, typer.Option("--description", metavar="TEXT", help="What the team does.")
    ] = "",
    url: UrlOption = None,
    key: KeyOption = None,
    json_out: JsonOption = False,
) -> None:
    """Create a team."""
    with connect(url, key) as api:
        team = api.post("/teams", {"name": name, "description": description})
    _print_team(team, json_out, "Team created")


@app.command("show")
def show(
    team_id: TeamId,
    url: UrlOption = None,
    key: KeyOption = None,
    json_out: JsonOption = False,
) -> None:
    """Show one team and its members."""
    with connect(url, key) as api:
        team = api.get(route("teams", team_id))
    _print_team(team, json_out)


@app.command("delete")
def delete(
    team_id: TeamId,
    url: UrlOption = None,
    key: KeyOption = None,
    json_out: JsonOption = False,
) -> None:
    """Delete a team that has no sessions.

    The server answers with no body; with --json this prints {"id": ..., "deleted": true}.
    """
    with connect(url, key) as api:
        api.delete(route("teams", team_id))
    if json_out:
        print_json({"id": team_id, "deleted": True})
        return
    typer.echo(f"deleted team {team_id}")


@app.command("add-member")
def add_member(
    team_id: TeamId,
    user_id: UserId,
    url: UrlOption = None,
    key: KeyOption = None,
    json_out: JsonOption = False,
) -> None:
    """Put a user in a team."""
    with connect(url, key) as api:
        team = api.post(route("teams", team_id, "members"), {"user_id": user_id})
    _print_team(team, json_out, "Member added")


@app.command("remove-member")
def remove_member(
    team_id: TeamId,
    user_id: UserId,
    url: UrlOption = None,
    key: KeyOption = None,
    json_out: JsonOption = False,
) -> None:
    """Take a user out of a team."""
    with connect(url, key) as api:
        team = api.delete(route("teams", team_id, "members", user_id))
    _print_team(team, json_out, "Member removed")
