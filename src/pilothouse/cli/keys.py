"""``pilothouse keys``: create, list, show and revoke API keys on a running server."""

from __future__ import annotations

from typing import Annotated, Any

import typer

from pilothouse.cli.client import (
    ApiClient,
    JsonOption,
    KeyOption,
    LimitOption,
    Params,
    UrlOption,
    connect,
    route,
)
from pilothouse.cli.output import emit_record, print_json, show_once, show_record, show_table, when
from pilothouse.identity.tokens import KeyKind

app = typer.Typer(name="keys", help="Create, list and revoke API keys.", no_args_is_help=True)

DEFAULT_KINDS = (KeyKind.USER, KeyKind.SERVICE)


def key_fields(key: dict[str, Any]) -> dict[str, Any]:
    """The fields of a key worth showing a person (never a secret: the API has none)."""
    return {
        "id": key["id"],
        "kind": key["kind"],
        "name": key["name"],
        "prefix": key["prefix"],
        "user": key["user_id"],
        "session": key["session_id"],
        "scopes": key["scopes"],
        "allowed labels": key["allowed_labels"],
        "created": when(key["created_at"]),
        "expires": when(key["expires_at"]),
        "last used": when(key["last_used_at"]),
        "revoked": when(key["revoked_at"]),
    }


@app.command("create")
def create(
    name: Annotated[
        str, typer.Option("--name", metavar="NAME", help="A label to recognise the key by.")
    ] = "",
    user: Annotated[
        str | None,
        typer.Option(
            "--user",
            metavar="USER_ID",
            help="User id to make the key for (owner/admin); default: you.",
        ),
    ] = None,
    service: Annotated[
        bool, typer.Option("--service", help="Make a service key (owner/admin) instead.")
    ] = False,
    scope: Annotated[
        list[str] | None,
        typer.Option(
            "--scope",
            metavar="SCOPE",
            help="Service key scope: sessions:write, sessions:declare, usage:read,"
            " budgets:read, budgets:write or policy:check.",
        ),
    ] = None,
    allow_label: Annotated[
        list[str] | None,
        typer.Option(
            "--allow-label",
            metavar="LABEL_KEY",
            help="Label key a service key may set; '*' for any.",
        ),
    ] = None,
    expires_in: Annotated[
        int | None,
        typer.Option(
            "--expires-in",
            metavar="SECONDS",
            min=60,
            help="Seconds until the key expires; default never.",
        ),
    ] = None,
    url: UrlOption = None,
    key: KeyOption = None,
    json_out: JsonOption = False,
) -> None:
    """Create an API key and print its token, which is shown this once.

    A user key acts as its user with that user's role. A service key (--service) acts for
    automation with only the scopes given (--scope, repeatable) and may set only the labels
    named by --allow-label (repeatable).
    """
    body: dict[str, Any] = {
        "kind": "service" if service else "user",
        "name": name,
        "scopes": scope or [],
        "allowed_labels": allow_label or [],
    }
    if user is not None:
        body["user_id"] = user
    if expires_in is not None:
        body["expires_in_seconds"] = expires_in
    with connect(url, key) as api:
        created = api.post("/keys", body)
    if json_out:
        print_json(created)
        return
    show_record(key_fields(created), title="Key created")
    show_once("token", created["token"])


@app.command("list")
def list_keys(
    kind: Annotated[
        KeyKind | None, typer.Option("--kind", help="Only keys of this kind.", show_default=False)
    ] = None,
    all_kinds: Annotated[
        bool, typer.Option("--all-kinds", help="Include session keys (hidden by default).")
    ] = False,
    user: Annotated[
        str | None, typer.Option("--user", metavar="USER_ID", help="Only this user's keys.")
    ] = None,
    include_revoked: Annotated[
        bool, typer.Option("--include-revoked", help="Include revoked keys.")
    ] = False,
    limit: LimitOption = 50,
    url: UrlOption = None,
    key: KeyOption = None,
    json_out: JsonOption = False,
) -> None:
    """List API keys, newest first: yours, or everyone's with the owner/admin/security role.

    Session keys are left out unless --all-kinds or --kind session is given: each agent
    session has one and they are managed with `pilothouse sessions`.
    """
    params: Params = {"user_id": user, "include_revoked": include_revoked}
    with connect(url, key) as api:
        if kind is not None or all_kinds:
            page = api.pages("/keys", {**params, "kind": kind.value if kind else None}, limit)
        else:
            page = _of_kinds(api, params, limit, DEFAULT_KINDS)
    if json_out:
        print_json(page)
        return
    show_table(
        ["ID", "KIND", "NAME", "PREFIX", "USER", "CREATED", "EXPIRES", "LAST USED", "REVOKED"],
        (
            [
                k["id"],
                k["kind"],
                k["name"],
                k["prefix"],
                k["user_id"],
                when(k["created_at"]),
                when(k["expires_at"]),
                when(k["last_used_at"]),
                when(k["revoked_at"]),
            ]
            for k in page["data"]
        ),
        title="keys",
    )


def _of_kinds(
    api: ApiClient, params: Params, limit: int, kinds: tuple[KeyKind, ...]
) -> dict[str, Any]:
    """Newest ``limit`` keys of several kinds: one filtered read per kind, merged by id."""
    pages = [api.pages("/keys", {**params, "kind": k.value}, limit) for k in kinds]
    merged = sorted((k for p in pages for k in p["data"]), key=lambda k: k["id"], reverse=True)
    more = len(merged) > limit or any(p["next_cursor"] for p in pages)
    kept = merged[:limit]
    return {"data": kept, "next_cursor": kept[-1]["id"] if more and kept else None}


@app.command("show")
def show(
    key_id: Annotated[str, typer.Argument(metavar="KEY_ID", help="The key's id (key_...).")],
    url: UrlOption = None,
    key: KeyOption = None,
    json_out: JsonOption = False,
) -> None:
    """Show one API key (never its secret)."""
    with connect(url, key) as api:
        found = api.get(route("keys", key_id))
    emit_record(found, json_out, key_fields)


@app.command("revoke")
def revoke(
    key_id: Annotated[str, typer.Argument(metavar="KEY_ID", help="The key's id (key_...).")],
    url: UrlOption = None,
    key: KeyOption = None,
    json_out: JsonOption = False,
) -> None:
    """Revoke an API key: the server refuses it from now on."""
    with connect(url, key) as api:
        revoked = api.post(route("keys", key_id, "revoke"))
    if json_out:
        print_json(revoked)
        return
    typer.echo(
        f"revoked key {revoked['id']} ({revoked['prefix']}) at {when(revoked['revoked_at'])}"
    )


def whoami(url: UrlOption = None, key: KeyOption = None, json_out: JsonOption = False) -> None:
    """Show who the presented key authenticates as (user, service or session key)."""
    with connect(url, key) as api:
        me = api.get("/whoami")
    if json_out:
        print_json(me)
        return
    show_record(
        {
            "organization": me["org_id"],
            "kind": me["kind"],
            "key": f"{me['key_id']} ({me['key_prefix']})",
            "user": me["user_id"],
            "role": me["role"],
            "scopes": me["scopes"],
            "session": me["session_id"],
            "labels": me["labels"],
        }
    )
