"""``pilothouse policy``: show, store, validate and simulate the policy; check an action."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any

import typer

from pilothouse.cli.client import JsonOption, KeyOption, UrlOption, connect, route
from pilothouse.cli.output import fail, print_json, show_record, show_table, when
from pilothouse.errors import PolicyInvalid
from pilothouse.policy.document import load

app = typer.Typer(
    name="policy",
    help="The policy on agents' actions: show, set, validate, simulate, check.",
    no_args_is_help=True,
)

FileArg = Annotated[
    Path,
    typer.Argument(metavar="FILE", help="A policy document (YAML).", exists=True, dir_okay=False),
]


def _read(path: Path) -> str:
    try:
        return path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        fail(f"cannot read {path}: {exc}", status=2)


@app.command("show")
def show(
    version: Annotated[
        int | None, typer.Option("--version", metavar="N", help="This version, not the active one.")
    ] = None,
    url: UrlOption = None,
    key: KeyOption = None,
    json_out: JsonOption = False,
) -> None:
    """Print the active policy's YAML (or one version's)."""
    path = route("policy") if version is None else route("policy", "versions", str(version))
    with connect(url, key) as api:
        found = api.get(path)
    if json_out:
        print_json(found)
        return
    typer.echo(f"# version {found['version']} ({found['origin']}, {when(found['created_at'])})")
    typer.echo(found["source"], nl=False)


@app.command("set")
def set_policy(
    file: FileArg,
    comment: Annotated[str, typer.Option("--comment", metavar="TEXT", help="Why.")] = "",
    base: Annotated[
        int | None,
        typer.Option("--base", metavar="N", help="Refuse if the active version is no longer N."),
    ] = None,
    url: UrlOption = None,
    key: KeyOption = None,
    json_out: JsonOption = False,
) -> None:
    """Store FILE as the next version of the policy."""
    body: dict[str, Any] = {"source": _read(file), "comment": comment, "base_version": base}
    with connect(url, key) as api:
        stored = api.put(route("policy"), body)
    if json_out:
        print_json(stored)
        return
    typer.echo(f"stored policy version {stored['version']}")


@app.command("validate")
def validate(file: FileArg) -> None:
    """Check FILE offline: each problem with its line (exit 1 if there are any)."""
    try:
        document = load(_read(file))
    except PolicyInvalid as exc:
        for problem in exc.details["problems"]:
            where = f"{file}:{problem['line']}" if problem["line"] else str(file)
            path = f" {problem['path']}:" if problem["path"] else ""
            typer.echo(f"{where}:{path} {problem['message']}", err=True)
        raise typer.Exit(1) from None
    typer.echo(
        f"{file}: valid ({len(document.rules)} rules, {len(document.exceptions)} exceptions)"
    )


@app.command("versions")
def versions(url: UrlOption = None, key: KeyOption = None, json_out: JsonOption = False) -> None:
    """List the stored versions, newest first."""
    with connect(url, key) as api:
        page = api.get(route("policy", "versions"), {"limit": 100})
    if json_out:
        print_json(page)
        return
    show_table(
        ["VERSION", "ORIGIN", "AUTHOR", "CREATED", "COMMENT"],
        (
            [
                v["version"],
                v["origin"],
                v["author_id"] or v["author_kind"],
                when(v["created_at"]),
                v["comment"],
            ]
            for v in page["data"]
        ),
        title="policy versions",
    )


@app.command("simulate")
def simulate(
    file: FileArg,
    limit: Annotated[
        int, typer.Option("--limit", metavar="N", help="Replay this many checks.")
    ] = 5000,
    url: UrlOption = None,
    key: KeyOption = None,
    json_out: JsonOption = False,
) -> None:
    """Replay recent checks through FILE and show which decisions would change."""
    with connect(url, key) as api:
        report = api.post(route("policy", "simulate"), {"source": _read(file), "limit": limit})
    if json_out:
        print_json(report)
        return
    show_record(
        {
            "active version": report["active_version"],
            "checks replayed": report["replayed"],
            "would change": report["changed"],
            "transitions": report["transitions"],
            "by rule": report["by_rule"],
        }
    )
    show_table(
        ["CHECK", "CHANNEL", "ACTION", "NOW", "WOULD BE", "RULE"],
        (
            [
                e["check_id"],
                e["channel"],
                str(next(iter(e["action"].values()), ""))[:60],
                e["active"]["decision"],
                e["candidate"]["decision"],
                e["candidate"]["rule"] or e["active"]["rule"],
            ]
            for e in report["examples"]
        ),
        title="examples",
    )


@app.command("check")
def check(
    channel: Annotated[str, typer.Argument(metavar="CHANNEL", help="shell, file_read, http, ...")],
    target: Annotated[
        str, typer.Argument(metavar="ACTION", help="The command, path, URL, tool...")
    ],
    session: Annotated[
        str | None, typer.Option("--session", metavar="SESSION_ID", help="For this session.")
    ] = None,
    url: UrlOption = None,
    key: KeyOption = None,
    json_out: JsonOption = False,
) -> None:
    """Ask the policy about one action (recorded and audited like any check)."""
    from pilothouse.policy.checks import NEEDS
    from pilothouse.policy.document import Channel

    try:
        field = NEEDS[Channel(channel)]
    except ValueError:
        fail(f"no channel {channel!r}; the channels are {[c.value for c in Channel]}", status=2)
    body = {"channel": channel, "action": {field: target}, "session_id": session}
    with connect(url, key) as api:
        result = api.post(route("check"), body)
    if json_out:
        print_json(result)
        return
    rule = f" [{result['rule']}]" if result["rule"] else ""
    approval = f" (approval {result['approval']['id']})" if result["approval"] else ""
    typer.echo(f"{result['decision']}{rule}: {result['reason']}{approval}")
