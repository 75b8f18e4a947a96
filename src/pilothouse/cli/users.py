"""``pilothouse users``: list, create, show and update the people of an organization."""

from __future__ import annotations

import sys
from typing import Annotated, Any

import typer

from pilothouse.cli.client import JsonOption, KeyOption, LimitOption, UrlOption, connect, route
from pilothouse.cli.output import emit_record, fail, print_json, show_table, when
from pilothouse.identity.roles import Role

app = typer.Typer(name="users", help="List, create and update users.", no_args_is_help=True)

UserId = Annotated[str, typer.Argument(metavar="USER_ID", help="The user's id (usr_...).")]


def user_fields(user: dict[str, Any]) -> dict[str, Any]:
    """The fields of a user worth showing a person."""
    return {
        "id": user["id"],
        "email": user["email"],
        "name": user["name"],
        "role": user["role"],
        "disabled": user["disabled"],
        "teams": user["team_ids"],
        "created": when(user["created_at"]),
    }


@app.command("list")
def list_users(
    role: Annotated[
        Role | None, typer.Option("--role", help="Only users with this role.", show_default=False)
    ] = None,
    include_disabled: Annotated[
        bool, typer.Option("--include-disabled", help="Include disabled users.")
    ] = False,
    limit: LimitOption = 50,
    url: UrlOption = None,
    key: KeyOption = None,
    json_out: JsonOption = False,
) -> None:
    """List users of your organization, newest first."""
    params = {"role": role.value if role else None, "include_disabled": include_disabled}
    with connect(url, key) as api:
        page = api.pages("/users", params, limit)
    if json_out:
        print_json(page)
        return
    show_table(
        ["ID", "EMAIL", "NAME", "ROLE", "DISABLED", "TEAMS", "CREATED"],
        (
            [
                u["id"],
                u["email"],
                u["name"],
                u["role"],
                u["disabled"],
                len(u["team_ids"]),
                when(u["created_at"]),
            ]
            for u in page["data"]
        ),
        title="users",
    )


@app.command("create")
def create(
    email: Annotated[
        str, typer.Argument(metavar="EMAIL", help="The user's email address (unique).")
    ],
    name: Annotated[str, typer.Option("--name", metavar="NAME", help="Display name.")] = "",
    role: Annotated[Role, typer.Option("--role", help="What the user may do.")] = Role.MEMBER,
    url: UrlOption = None,
    key: KeyOption = None,
    json_out: JsonOption = False,
) -> None:
    """Add a user to your organization (give them a key with `keys create --user`)."""
    with connect(url, key) as api:
        user = api.post("/users", {"email": email, "name": name, "role": role.value})
    emit_record(user, json_out, user_fields, title="User created")


@app.command("show")
def show(
    user_id: UserId,
    url: UrlOption = None,
    key: KeyOption = None,
    json_out: JsonOption = False,
) -> None:
    """Show one user."""
    with connect(url, key) as api:
        user = api.get(route("users", user_id))
    emit_record(user, json_out, user_fields)


@app.command("update")
def update(
    user_id: UserId,
    name: Annotated[
        str | None,
        typer.Option("--name", metavar="NAME", help="New display name.", show_default=False),
    ] = None,
    role: Annotated[
        Role | None, typer.Option("--role", help="New role.", show_default=False)
    ] = None,
    disabled: Annotated[
        bool | None,
        typer.Option(
            "--disable/--enable",
            help="Disable the user (their keys stop working at once), or enable them again.",
            show_default=False,
        ),
    ] = None,
    url: UrlOption = None,
    key: KeyOption = None,
    json_out: JsonOption = False,
) -> None:
    """Change a user's name or role, or disable or enable them."""
    changes = {"name": name, "role": role.value if role else None, "disabled": disabled}
    body = {k: v for k, v in changes.items() if v is not None}
    if not body:
        fail("nothing to change: give --name, --role, --disable or --enable", status=2)
    with connect(url, key) as api:
        user = api.patch(route("users", user_id), body)
    emit_record(user, json_out, user_fields, title="User updated")


@app.command("set-password")
def set_password(
    user_id: UserId,
    stdin: Annotated[
        bool, typer.Option("--stdin", help="Read the password from standard input.")
    ] = False,
    url: UrlOption = None,
    key: KeyOption = None,
) -> None:
    """Set the password a person signs in to the dashboard with (at least 12 characters): your
    own, or another's with users:write. Asked for twice, hidden, unless --stdin; never an
    argument. Their signed-in dashboard sessions end."""
    if stdin:
        password = sys.stdin.read().rstrip("\r\n")
    else:
        password = str(typer.prompt("password", hide_input=True, confirmation_prompt=True))
    with connect(url, key) as api:
        api.post(route("users", user_id, "password"), {"password": password})
    typer.echo(f"password set for {user_id}")
