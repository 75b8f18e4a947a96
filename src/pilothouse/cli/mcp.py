"""``pilothouse mcp``: the upstream MCP servers, their tools, and pinned tool definitions."""

from __future__ import annotations

from typing import Annotated

import typer

from pilothouse.cli.client import JsonOption, KeyOption, UrlOption, connect, route
from pilothouse.cli.output import emit_record, print_json, show_table, when

app = typer.Typer(
    name="mcp",
    help="MCP upstream servers, their tools, and pinned tool definitions.",
    no_args_is_help=True,
)


@app.command("servers")
def servers(url: UrlOption = None, key: KeyOption = None, json_out: JsonOption = False) -> None:
    """List the upstream servers and their state."""
    with connect(url, key) as api:
        found = api.get("/mcp/servers")
    if json_out:
        print_json(found)
        return
    show_table(
        ["NAME", "TRANSPORT", "STATE", "RESTARTS", "TOOLS", "LAST ERROR"],
        (
            [s["name"], s["transport"], s["state"], s["restarts"], s["tools"], s["last_error"]]
            for s in found
        ),
        title="MCP servers",
    )


@app.command("tools")
def tools(url: UrlOption = None, key: KeyOption = None, json_out: JsonOption = False) -> None:
    """List every tool the upstreams serve, with its pin (approved, changed, pending)."""
    with connect(url, key) as api:
        found = api.get("/mcp/tools")
    if json_out:
        print_json(found)
        return
    show_table(
        ["NAME", "PIN", "SHA-256", "DESCRIPTION"],
        ([t["name"], t["pin"], t["sha256"][:16], (t["description"] or "")[:60]] for t in found),
        title="MCP tools",
    )


@app.command("pins")
def pins(url: UrlOption = None, key: KeyOption = None, json_out: JsonOption = False) -> None:
    """List pinned definitions; a changed tool shows the definition served instead."""
    with connect(url, key) as api:
        found = api.get("/mcp/pins")
    if json_out:
        print_json(found)
        return
    show_table(
        ["TOOL", "STATUS", "PINNED", "SEEN", "CHANGED", "APPROVED BY"],
        (
            [
                f"{p['server']}__{p['tool']}",
                p["status"],
                p["sha256"][:16],
                (p["seen_sha256"] or "")[:16],
                when(p["changed_at"]),
                p["approved_by"],
            ]
            for p in found
        ),
        title="MCP pins",
    )


@app.command("approve")
def approve(
    server: Annotated[str, typer.Argument(metavar="SERVER")],
    tool: Annotated[str, typer.Argument(metavar="TOOL", help="The upstream's name for it.")],
    sha256: Annotated[
        str | None,
        typer.Option("--sha256", help="The definition you reviewed (pins shows it)."),
    ] = None,
    url: UrlOption = None,
    key: KeyOption = None,
    json_out: JsonOption = False,
) -> None:
    """Approve the definition a withheld tool is served with now: it is listed again."""
    with connect(url, key) as api:
        pin = api.post(route("mcp", "pins", server, tool, "approve"), {"sha256": sha256})
    emit_record(
        pin,
        json_out,
        lambda p: {
            "tool": f"{p['server']}__{p['tool']}",
            "status": p["status"],
            "sha256": p["sha256"],
            "approved by": p["approved_by"],
            "approved": when(p["approved_at"]),
        },
    )
