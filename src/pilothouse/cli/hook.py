"""``pilothouse hook claude-code|codex``: the command hook both clients run before and after
each tool call (see ``pilothouse.hook``, which does the work and which ``pilothouse.entry`` runs
without loading this CLI; this command is what ``--help`` and the docs show)."""

from __future__ import annotations

import sys
from typing import Annotated, Literal

import typer

from pilothouse.cli.client import KeyOption, UrlOption
from pilothouse.hook import DEFAULT_WAIT, answer


def hook(
    client: Annotated[
        Literal["claude-code", "codex"],
        typer.Argument(metavar="CLIENT", help="claude-code or codex (the hook JSON is the same)."),
    ],
    wait: Annotated[
        float,
        typer.Option(
            "--wait",
            envvar="PILOTHOUSE_HOOK_WAIT",
            metavar="SECONDS",
            min=0,
            max=3600,
            help="How long an ask waits for a person before it denies (keep the client's hook"
            " timeout above it).",
        ),
    ] = DEFAULT_WAIT,
    url: UrlOption = None,
    key: KeyOption = None,
) -> None:
    """Answer a PreToolUse/PostToolUse hook from stdin through the Pilothouse server.

    Fails closed: before a tool runs, any failure exits 2 (a block in both clients) with the
    reason on stderr; after it ran, a failure is a warning. Configure it as
    `pilothouse hook claude-code || exit 2` so that even a crash blocks."""
    status = answer(client, wait, url, key, sys.stdin.buffer, sys.stdout, sys.stderr)
    raise typer.Exit(status)
