"""``pilothouse sessions``: open, list, show and end agent sessions."""

from __future__ import annotations

from typing import Annotated, Any

import typer

from pilothouse.cli.client import JsonOption, KeyOption, LimitOption, UrlOption, connect, route
from pilothouse.cli.output import emit_record, print_json, show_once, show_table, when
from pilothouse.identity.sessions import Outcome, SessionStatus

app = typer.Typer(
    name="sessions", help="Open, list, show and end agent sessions.", no_args_is_help=True
)


def _opt(name: str, metavar: str, help_text: str) -> Any:
    return typer.Option(name, metavar=metavar, help=help_text, show_default=False)


SessionId = Annotated[str, typer.Argument(metavar="SESSION_ID", help="The session's id (ses_...).")]
LabelsOption = Annotated[
    list[str] | None,
    _opt("--label", "KEY=VALUE", "A label; repeat for more."),
]


def parse_labels(values: list[str] | None) -> dict[str, str]:
    """``["k=v", ...]`` -> mapping; a value without ``=`` is a usage error."""
    labels: dict[str, str] = {}
    for item in values or []:
        name, sep, value = item.partition("=")
        if not sep or not name:
            raise typer.BadParameter(f"{item!r} must look like key=value", param_hint="--label")
        labels[name] = value
    return labels


def session_fields(session: dict[str, Any]) -> dict[str, Any]:
    """The fields of a session worth showing a person."""
    agent = session["agent"]
    return {
        "id": session["id"],
        "status": session["status"],
        "team": session["team_id"],
        "user": session["user_id"],
        "project": session["project"],
        "use case": session["use_case"],
        "repository": session["repository"],
        "branch": session["branch"],
        "ticket": session["ticket"],
        "agent": " ".join(v for v in (agent["kind"], agent["version"]) if v),
        "skills": session["skills"],
        "plugins": session["plugins"],
        "labels": session["labels"],
        "key prefix": session["key_prefix"],
        "created": when(session["created_at"]),
        "expires": when(session["expires_at"]),
        "ended": when(session["ended_at"]),
        "outcome": session["outcome"],
        "outcome detail": session["outcome_detail"],
    }


@app.command("list")
def list_sessions(
    status: Annotated[
        SessionStatus | None,
        typer.Option("--status", help="Only sessions in this state.", show_default=False),
    ] = None,
    team: Annotated[str | None, _opt("--team", "TEAM_ID", "Only this team's sessions.")] = None,
    user: Annotated[str | None, _opt("--user", "USER_ID", "Only this user's sessions.")] = None,
    project: Annotated[str | None, _opt("--project", "PROJECT", "Only this project.")] = None,
    use_case: Annotated[str | None, _opt("--use-case", "USE_CASE", "Only this use case.")] = None,
    repo: Annotated[str | None, _opt("--repo", "REPOSITORY", "Only this repository.")] = None,
    agent_kind: Annotated[
        str | None, _opt("--agent-kind", "KIND", "Only this kind of agent.")
    ] = None,
    label: LabelsOption = None,
    created_after: Annotated[
        str | None,
        _opt("--created-after", "TIME", "Only sessions created after this ISO 8601 time."),
    ] = None,
    created_before: Annotated[
        str | None,
        _opt("--created-before", "TIME", "Only sessions created before this ISO 8601 time."),
    ] = None,
    limit: LimitOption = 50,
    url: UrlOption = None,
    key: KeyOption = None,
    json_out: JsonOption = False,
) -> None:
    """List agent sessions, newest first; every filter given must match."""
    parse_labels(label)
    params = {
        "status": status.value if status else None,
        "team_id": team,
        "user_id": user,
        "project": project,
        "use_case": use_case,
        "repository": repo,
        "agent_kind": agent_kind,
        "label": label or None,
        "created_after": created_after,
        "created_before": created_before,
    }
    with connect(url, key) as api:
        page = api.pages("/sessions", params, limit)
    if json_out:
        print_json(page)
        return
    show_table(
        ["ID", "STATUS", "PROJECT", "REPOSITORY", "AGENT", "LABELS", "CREATED", "OUTCOME"],
        (
            [
                s["id"],
                s["status"],
                s["project"],
                s["repository"],
                s["agent"]["kind"],
                s["labels"],
                when(s["created_at"]),
                s["outcome"],
            ]
            for s in page["data"]
        ),
        title="sessions",
    )


@app.command("show")
def show(
    session_id: SessionId,
    url: UrlOption = None,
    key: KeyOption = None,
    json_out: JsonOption = False,
) -> None:
    """Show one agent session (never its key's secret)."""
    with connect(url, key) as api:
        session = api.get(route("sessions", session_id))
    emit_record(session, json_out, session_fields)


@app.command("end")
def end(
    session_id: SessionId,
    outcome: Annotated[
        Outcome, typer.Option("--outcome", help="How the session ended.")
    ] = Outcome.SUCCEEDED,
    detail: Annotated[str | None, _opt("--detail", "TEXT", "Free text about the outcome.")] = None,
    url: UrlOption = None,
    key: KeyOption = None,
    json_out: JsonOption = False,
) -> None:
    """End an agent session with its outcome; its session key stops working."""
    body: dict[str, Any] = {"outcome": outcome.value}
    if detail is not None:
        body["detail"] = detail
    with connect(url, key) as api:
        session = api.post(route("sessions", session_id, "end"), body)
    if json_out:
        print_json(session)
        return
    typer.echo(f"ended session {session['id']}: {session['outcome']}")


@app.command("create")
def create(
    team: Annotated[
        str | None, _opt("--team", "TEAM_ID", "The team the session works for.")
    ] = None,
    user: Annotated[str | None, _opt("--user", "USER_ID", "The user the session acts for.")] = None,
    project: Annotated[str | None, _opt("--project", "PROJECT", "Project name.")] = None,
    use_case: Annotated[
        str | None, _opt("--use-case", "USE_CASE", "What the session is for.")
    ] = None,
    repo: Annotated[
        str | None, _opt("--repo", "REPOSITORY", "Repository the agent works in.")
    ] = None,
    branch: Annotated[str | None, _opt("--branch", "BRANCH", "Branch the agent works on.")] = None,
    ticket: Annotated[str | None, _opt("--ticket", "TICKET", "Ticket or issue reference.")] = None,
    agent_kind: Annotated[str | None, _opt("--agent-kind", "KIND", "Which agent runs it.")] = None,
    agent_version: Annotated[
        str | None, _opt("--agent-version", "VERSION", "The agent's version.")
    ] = None,
    skill: Annotated[
        list[str] | None, _opt("--skill", "NAME", "A skill in use; repeatable.")
    ] = None,
    plugin: Annotated[
        list[str] | None, _opt("--plugin", "NAME", "A plugin in use; repeatable.")
    ] = None,
    label: LabelsOption = None,
    ttl: Annotated[
        int | None,
        _opt("--ttl", "SECONDS", "Seconds until the session expires [default: server's]."),
    ] = None,
    url: UrlOption = None,
    key: KeyOption = None,
    json_out: JsonOption = False,
) -> None:
    """Open an agent session and print its id and session key (the key is shown this once).

    Give the key to the agent: it authenticates as the session and carries its context.
    """
    context = {
        "team_id": team,
        "user_id": user,
        "project": project,
        "use_case": use_case,
        "repository": repo,
        "branch": branch,
        "ticket": ticket,
        "ttl_seconds": ttl,
    }
    body: dict[str, Any] = {k: v for k, v in context.items() if v is not None}
    body["agent"] = {"kind": agent_kind, "version": agent_version}
    body["skills"] = skill or []
    body["plugins"] = plugin or []
    body["labels"] = parse_labels(label)
    with connect(url, key) as api:
        created = api.post("/sessions", body)
    if json_out:
        print_json(created)
        return
    typer.echo(f"session: {created['session']['id']}")
    show_once("session key", created["key"]["token"])
