"""``pilothouse secrets``: set, list, grant, revoke, rotate and re-wrap secrets; a session
reads one it is granted with ``get``.

A value is never taken as an argument (it would sit in the shell's history and the process
list): it comes from standard input, an environment variable, or a hidden prompt.
"""

from __future__ import annotations

import sys
from typing import Annotated, Any, Literal

import typer

from pilothouse.cli.client import JsonOption, KeyOption, UrlOption, connect, route
from pilothouse.cli.output import emit_record, fail, print_json, show_table, when
from pilothouse.errors import ConfigError
from pilothouse.secrets.crypto import generate
from pilothouse.settings import inherited_environment

app = typer.Typer(
    name="secrets",
    help="Secrets: sealed values, who may use them, and how (values go in, never come out).",
    no_args_is_help=True,
)

Name = Annotated[str, typer.Argument(metavar="NAME", help="The secret's name.")]
FromEnv = Annotated[
    str | None,
    typer.Option("--from-env", metavar="VAR", help="Take the value from this variable."),
]
Stdin = Annotated[bool, typer.Option("--stdin", help="Read the value from standard input.")]
Ref = Annotated[
    str | None,
    typer.Option(
        "--ref",
        metavar="REF",
        help="env, file, vault: where the value lives (variable, path, <path>#<field>).",
    ),
]


def _value(from_env: str | None, stdin: bool) -> str:
    """The value to seal, from the one source given (a hidden prompt if none)."""
    if from_env is not None and stdin:
        fail("give --from-env or --stdin, not both")
    if from_env is not None:
        value = inherited_environment().get(from_env)
        if not value:
            fail(f"environment variable {from_env} is unset or empty")
        return value
    if stdin:
        return sys.stdin.read().rstrip("\r\n")
    return str(typer.prompt("value", hide_input=True, confirmation_prompt=True))


def secret_fields(s: dict[str, Any]) -> dict[str, Any]:
    """The fields of a secret worth showing a person."""
    return {
        "name": s["name"],
        "backend": s["backend"],
        "ref": s["ref"],
        "version": s["version"],
        "master key": s["key_id"],
        "description": s["description"],
        "created": when(s["created_at"]),
        "rotated": when(s["rotated_at"]),
        "grants": ", ".join(_grant_text(g) for g in s["grants"]) or "-",
    }


def _grant_text(grant: dict[str, Any]) -> str:
    ttl = f" {grant['ttl_seconds']}s" if grant["ttl_seconds"] else ""
    return f"{grant['id']} {grant['use']}{ttl} to {grant['subject']}"


@app.command("set")
def set_secret(
    name: Name,
    description: Annotated[str, typer.Option("--description", help="What it is for.")] = "",
    backend: Annotated[
        Literal["builtin", "env", "file", "vault"],
        typer.Option("--backend", help="builtin (sealed here) or where it lives."),
    ] = "builtin",
    ref: Ref = None,
    from_env: FromEnv = None,
    stdin: Stdin = False,
    url: UrlOption = None,
    key: KeyOption = None,
    json_out: JsonOption = False,
) -> None:
    """Create a secret: a value sealed here, or (--backend, --ref) a reference."""
    body: dict[str, Any] = {"name": name, "description": description, "backend": backend}
    if backend == "builtin":
        body["value"] = _value(from_env, stdin)
    elif ref is None:
        fail(f"a {backend} secret needs --ref")
    else:
        body["ref"] = ref
    with connect(url, key) as api:
        created = api.post("/secrets", body)
    emit_record(created, json_out, secret_fields)


@app.command("list")
def list_secrets(
    url: UrlOption = None, key: KeyOption = None, json_out: JsonOption = False
) -> None:
    """List the organization's secrets and their grants (never a value)."""
    with connect(url, key) as api:
        found = api.get("/secrets")
    if json_out:
        print_json(found)
        return
    show_table(
        ["NAME", "BACKEND", "VERSION", "ROTATED", "GRANTS"],
        (
            [
                s["name"],
                s["backend"],
                s["version"],
                when(s["rotated_at"]),
                "; ".join(_grant_text(g) for g in s["grants"]) or "-",
            ]
            for s in found
        ),
        title="secrets",
    )


@app.command("rotate")
def rotate(
    name: Name,
    ref: Ref = None,
    from_env: FromEnv = None,
    stdin: Stdin = False,
    url: UrlOption = None,
    key: KeyOption = None,
    json_out: JsonOption = False,
) -> None:
    """Give a secret a new value (or, external, a new --ref); injection uses it at once."""
    body = {"ref": ref} if ref is not None else {"value": _value(from_env, stdin)}
    with connect(url, key) as api:
        rotated = api.post(route("secrets", name, "rotate"), body)
    emit_record(rotated, json_out, secret_fields)


@app.command("grant")
def grant(
    name: Name,
    subject: Annotated[
        str,
        typer.Argument(
            metavar="WHO",
            help="*, team:<id or name>, project:<name>, repo:<owner/name>,"
            " label:<name>=<value>, session:<id>, user:<id>, key:<id>, org:<id>.",
        ),
    ],
    use: Annotated[
        Literal["inject", "lease"],
        typer.Option("--use", help="inject: Pilothouse uses it for them; lease: they read it."),
    ],
    ttl: Annotated[
        int | None,
        typer.Option("--ttl", metavar="SECONDS", help="lease: how long a lease lasts."),
    ] = None,
    url: UrlOption = None,
    key: KeyOption = None,
    json_out: JsonOption = False,
) -> None:
    """Let WHO use the secret."""
    body = {"subject": subject, "use": use, "ttl_seconds": ttl}
    with connect(url, key) as api:
        made = api.post(route("secrets", name, "grants"), body)
    if json_out:
        print_json(made)
        return
    typer.echo(f"granted {name}: {_grant_text(made)}")


@app.command("revoke")
def revoke(
    name: Name,
    grant_id: Annotated[
        str | None,
        typer.Option("--grant", metavar="GRANT_ID", help="Revoke only this grant."),
    ] = None,
    yes: Annotated[bool, typer.Option("--yes", help="Delete the secret without asking.")] = False,
    url: UrlOption = None,
    key: KeyOption = None,
) -> None:
    """Revoke one grant (--grant), or delete the secret with all its grants; leases end at
    once either way."""
    with connect(url, key) as api:
        if grant_id is not None:
            api.delete(route("secrets", name, "grants", grant_id))
            typer.echo(f"revoked grant {grant_id} of {name}")
            return
        if not yes and not typer.confirm(f"delete secret {name} and every grant of it?"):
            fail("nothing deleted")
        api.delete(route("secrets", name))
    typer.echo(f"deleted secret {name}")


@app.command("rewrap")
def rewrap(url: UrlOption = None, key: KeyOption = None, json_out: JsonOption = False) -> None:
    """Re-wrap every secret under the current (first) master key, after every replica's key
    file holds it first; then the old key can go."""
    with connect(url, key) as api:
        done = api.post("/secrets/rewrap")
    if json_out:
        print_json(done)
        return
    typer.echo(
        f"re-wrapped {done['rewrapped']} secret(s) under {done['key_id']}"
        f" ({done['already']} already were)"
    )


@app.command("get")
def get(name: Name, url: UrlOption = None, key: KeyOption = None) -> None:
    """With a session key: print a secret this session may lease (the read is audited)."""
    with connect(url, key) as api:
        leased = api.get(route("secrets", name))
    typer.echo(leased["value"])


@app.command("keygen")
def keygen(
    key_id: Annotated[str, typer.Argument(metavar="KEY_ID", help="The new key's id (k2, ...).")],
) -> None:
    """Print a new master key line (<id>:<base64>) for the key file; nothing is sent."""
    try:
        typer.echo(generate(key_id))
    except ConfigError as exc:
        fail(exc.message)
