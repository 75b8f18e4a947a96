"""``pilothouse approvals``: list, show, approve and deny the actions agents wait on."""

from __future__ import annotations

from typing import Annotated, Any, Literal

import typer

from pilothouse.cli.client import JsonOption, KeyOption, LimitOption, UrlOption, connect, route
from pilothouse.cli.output import emit_record, print_json, show_table, when

app = typer.Typer(
    name="approvals",
    help="Approve or deny the actions agents are waiting on.",
    no_args_is_help=True,
)

ApprovalId = Annotated[str, typer.Argument(metavar="APPROVAL_ID", help="The approval (apr_...).")]
Comment = Annotated[
    str | None,
    typer.Option("--comment", metavar="TEXT", help="Why; the agent is told.", show_default=False),
]


def summary(action: dict[str, Any]) -> str:
    """The part of an action a person reads first."""
    for field in ("command", "path", "url", "tool", "model", "secret"):
        if action.get(field):
            return str(action[field])
    return "-"


def approval_fields(a: dict[str, Any]) -> dict[str, Any]:
    """The fields of an approval worth showing a person."""
    return {
        "id": a["id"],
        "status": a["status"],
        "channel": a["channel"],
        "action": summary(a["action"]),
        "reason": a["reason"],
        "rule": a["rule"],
        "session": a["session_id"],
        "requested": when(a["created_at"]),
        "expires": when(a["expires_at"]),
        "decided by": a["decided_by"],
        "decided": when(a["decided_at"]),
        "comment": a["comment"],
        "rule added": a["added_rule"],
        "action hash": a["action_hash"],
    }


@app.command("list")
def list_approvals(
    status: Annotated[
        Literal["pending", "approved", "denied", "expired"] | None,
        typer.Option("--status", help="Only approvals in this state.", show_default=False),
    ] = "pending",
    session: Annotated[
        str | None,
        typer.Option("--session", metavar="SESSION_ID", help="Only this session's."),
    ] = None,
    every: Annotated[bool, typer.Option("--all", help="Every state, not only pending.")] = False,
    limit: LimitOption = 50,
    url: UrlOption = None,
    key: KeyOption = None,
    json_out: JsonOption = False,
) -> None:
    """List approvals, newest first (pending ones unless --status or --all)."""
    params = {"status": None if every else status, "session_id": session}
    with connect(url, key) as api:
        page = api.pages("/approvals", params, limit)
    if json_out:
        print_json(page)
        return
    show_table(
        ["ID", "STATUS", "CHANNEL", "ACTION", "REASON", "SESSION", "EXPIRES"],
        (
            [
                a["id"],
                a["status"],
                a["channel"],
                summary(a["action"])[:80],
                a["reason"][:60],
                a["session_id"],
                when(a["expires_at"]),
            ]
            for a in page["data"]
        ),
        title="approvals",
    )


@app.command("show")
def show(
    approval_id: ApprovalId,
    url: UrlOption = None,
    key: KeyOption = None,
    json_out: JsonOption = False,
) -> None:
    """Show one approval, with the exact action it is for."""
    with connect(url, key) as api:
        approval = api.get(route("approvals", approval_id))
    emit_record(approval, json_out, approval_fields)


@app.command("approve")
def approve(
    approval_id: ApprovalId,
    comment: Comment = None,
    add_rule: Annotated[
        bool,
        typer.Option(
            "--add-rule", help="Also let this exact action through from now on (a policy change)."
        ),
    ] = False,
    url: UrlOption = None,
    key: KeyOption = None,
    json_out: JsonOption = False,
) -> None:
    """Approve a waiting action: it runs once (with --add-rule, from now on)."""
    body = {"comment": comment, "add_rule": add_rule}
    with connect(url, key) as api:
        approval = api.post(route("approvals", approval_id, "approve"), body)
    if json_out:
        print_json(approval)
        return
    added = f"; rule {approval['added_rule']} added" if approval["added_rule"] else ""
    typer.echo(f"approved {approval['id']}: {summary(approval['action'])}{added}")


@app.command("deny")
def deny(
    approval_id: ApprovalId,
    comment: Comment = None,
    url: UrlOption = None,
    key: KeyOption = None,
    json_out: JsonOption = False,
) -> None:
    """Deny a waiting action."""
    with connect(url, key) as api:
        approval = api.post(route("approvals", approval_id, "deny"), {"comment": comment})
    if json_out:
        print_json(approval)
        return
    typer.echo(f"denied {approval['id']}: {summary(approval['action'])}")
