"""``pilothouse orgs``: show your organization, or create one (root-organization owners)."""

from __future__ import annotations

from typing import Annotated, Any

import typer

from pilothouse.cli.client import JsonOption, KeyOption, UrlOption, connect
from pilothouse.cli.output import emit_record, print_json, show_once, show_record, when

app = typer.Typer(name="orgs", help="Show or create organizations.", no_args_is_help=True)


def org_fields(org: dict[str, Any]) -> dict[str, Any]:
    """The fields of an organization worth showing a person."""
    return {
        "id": org["id"],
        "name": org["name"],
        "root": org["is_root"],
        "created": when(org["created_at"]),
    }


@app.command("show")
def show(url: UrlOption = None, key: KeyOption = None, json_out: JsonOption = False) -> None:
    """Show the organization your key belongs to."""
    with connect(url, key) as api:
        org = api.get("/org")
    emit_record(org, json_out, org_fields)


@app.command("create")
def create(
    name: Annotated[str, typer.Argument(metavar="NAME", help="The new organization's name.")],
    owner_email: Annotated[
        str,
        typer.Option(
            "--owner-email", metavar="EMAIL", help="Email of its first owner.", show_default=False
        ),
    ],
    owner_name: Annotated[
        str, typer.Option("--owner-name", metavar="NAME", help="Name of its first owner.")
    ] = "",
    url: UrlOption = None,
    key: KeyOption = None,
    json_out: JsonOption = False,
) -> None:
    """Create an organization with its first owner, and print the owner's key (shown once).

    Only owners of the root organization may do this.
    """
    body = {"name": name, "owner_email": owner_email, "owner_name": owner_name}
    with connect(url, key) as api:
        created = api.post("/orgs", body)
    if json_out:
        print_json(created)
        return
    show_record(
        {**org_fields(created["org"]), "owner": created["owner"]["id"]},
        title="Organization created",
    )
    show_once("owner key", created["key"]["token"])
