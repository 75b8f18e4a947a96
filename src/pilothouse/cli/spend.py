"""``pilothouse spend`` and ``pilothouse usage``: what LLM calls cost, by group or one by one."""

from __future__ import annotations

from typing import Annotated, Any

import typer

from pilothouse.cli.client import JsonOption, KeyOption, LimitOption, UrlOption, connect
from pilothouse.cli.output import note, print_json, show_table, when
from pilothouse.gateway.spend import Interval


def _opt(name: str, metavar: str, help_text: str) -> Any:
    return typer.Option(name, metavar=metavar, help=help_text, show_default=False)


Since = Annotated[str | None, _opt("--since", "TIME", "Calls at or after this ISO 8601 time.")]
Until = Annotated[str | None, _opt("--until", "TIME", "Calls before this ISO 8601 time.")]
User = Annotated[str | None, _opt("--user", "USER_ID", "Only this user's calls.")]
Team = Annotated[str | None, _opt("--team", "TEAM_ID", "Only this team's calls.")]
Project = Annotated[str | None, _opt("--project", "PROJECT", "Only this project.")]
Repo = Annotated[str | None, _opt("--repo", "REPOSITORY", "Only this repository.")]
Model = Annotated[str | None, _opt("--model", "ALIAS", "Only calls that asked for this model.")]
Session = Annotated[str | None, _opt("--session", "SESSION_ID", "Only this session's calls.")]
Labels = Annotated[
    list[str] | None, _opt("--label", "KEY=VALUE", "Only calls with this label; repeat to AND.")
]


def money(cost: str) -> str:
    """The API's exact dollar string for people: ``0.000123450000`` -> ``$0.00012345``."""
    whole, _, fraction = cost.partition(".")
    return f"${whole}.{fraction.rstrip('0').ljust(2, '0')}"


def _count(value: int) -> str:
    return f"{value:,}"


def _filters(
    since: str | None,
    until: str | None,
    user: str | None,
    team: str | None,
    project: str | None,
    repo: str | None,
    model: str | None,
    session: str | None,
    label: list[str] | None,
) -> dict[str, Any]:
    return {
        "since": since,
        "until": until,
        "user_id": user,
        "team_id": team,
        "project": project,
        "repository": repo,
        "model": model,
        "session_id": session,
        "label": label or None,
    }


def spend(
    by: Annotated[
        str | None,
        _opt(
            "--by",
            "FIELDS",
            "Group by up to 4 of these, comma-separated: user, team, project, repo, session,"
            " key, model, deployment, status, endpoint, skill, plugin, label:<name>.",
        ),
    ] = None,
    interval: Annotated[
        Interval | None,
        typer.Option("--interval", help="Also split into UTC time buckets.", show_default=False),
    ] = None,
    since: Since = None,
    until: Until = None,
    user: User = None,
    team: Team = None,
    project: Project = None,
    repo: Repo = None,
    model: Model = None,
    session: Session = None,
    label: Labels = None,
    url: UrlOption = None,
    key: KeyOption = None,
    json_out: JsonOption = False,
) -> None:
    """Sum LLM calls, tokens and exact cost by group and time.

    Grouped by skill or plugin, a call that used several counts under each, so the groups can
    add up to more than the total, which counts every call once. Needs the usage:read
    permission (owner, admin, finance, auditor).
    """
    params = {
        **_filters(since, until, user, team, project, repo, model, session, label),
        "group_by": by,
        "interval": interval.value if interval else None,
    }
    with connect(url, key) as api:
        report = api.get("/spend", params)
    if json_out:
        print_json(report)
        return
    keys = report["group_by"]
    columns = [*(["BUCKET"] if interval else []), *(k.upper() for k in keys)]
    columns += ["CALLS", "INPUT", "OUTPUT", "CACHE READ", "CACHE WRITE", "REASONING", "COST"]
    show_table(columns, (_spend_row(g, keys, interval) for g in report["groups"]), title="spend")
    totals = report["totals"]
    typer.echo(
        f"total: {_count(totals['calls'])} calls, {_count(totals['tokens']['input'])} input and"
        f" {_count(totals['tokens']['output'])} output tokens, {money(totals['cost'])}"
    )
    if report["truncated"]:
        note("more groups matched than were returned; narrow the filters or the interval")


def _spend_row(group: dict[str, Any], keys: list[str], interval: Interval | None) -> list[Any]:
    tokens = group["tokens"]
    bucket = [when(group["bucket"])] if interval else []
    return [
        *bucket,
        *(group["keys"][k] for k in keys),
        _count(group["calls"]),
        _count(tokens["input"]),
        _count(tokens["output"]),
        _count(tokens["cache_read"]),
        _count(tokens["cache_write"]),
        _count(tokens["reasoning"]),
        money(group["cost"]),
    ]


def usage(
    since: Since = None,
    until: Until = None,
    user: User = None,
    team: Team = None,
    project: Project = None,
    repo: Repo = None,
    model: Model = None,
    session: Session = None,
    label: Labels = None,
    status: Annotated[
        str | None, _opt("--status", "STATUS", "Only calls that ended so (ok, ...).")
    ] = None,
    limit: LimitOption = 50,
    url: UrlOption = None,
    key: KeyOption = None,
    json_out: JsonOption = False,
) -> None:
    """List LLM calls, newest first, with their tokens and exact cost.

    Needs the usage:read permission (owner, admin, finance, auditor).
    """
    params = {
        **_filters(since, until, user, team, project, repo, model, session, label),
        "status": status,
    }
    with connect(url, key) as api:
        page = api.pages("/usage", params, limit)
    if json_out:
        print_json(page)
        return
    show_table(
        ["TIME", "MODEL", "STATUS", "SESSION", "REPOSITORY", "INPUT", "OUTPUT", "COST", "MS"],
        (
            [
                when(r["created_at"]),
                r["model"],
                r["status"],
                r["session_id"],
                r["repository"],
                _count(r["tokens"]["input"]),
                _count(r["tokens"]["output"]),
                money(r["cost"]),
                r["latency_ms"],
            ]
            for r in page["data"]
        ),
        title="LLM calls",
    )
