"""``pilothouse hook claude-code|codex``: the command hook both clients run before and after
each tool. It sends the hook's JSON (stdin) to the server's ``/hooks/claude-code`` and prints
the answer.

It fails closed. Both clients run the tool when a hook crashes, times out or prints something
that is not its JSON; only exit status 2 always blocks. So any failure here (no key, the server
unreachable or answering with an error, an answer that is not a JSON object) exits 2 with the
reason on stderr, which both clients show the model. Configure it as
``pilothouse hook claude-code || exit 2`` so that even a crash of this program blocks.

Kept light: it imports nothing of the server, so a tool call waits for Python's start-up and
one HTTP round trip (plus a person's decision when the policy asks).
"""

from __future__ import annotations

import json
import sys
from typing import Annotated, Literal, NoReturn

import typer

from pilothouse.cli.client import KeyOption, UrlOption

DEFAULT_WAIT = 300.0
BLOCK = 2


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
    """Answer a PreToolUse/PostToolUse hook from stdin through the Pilothouse server."""
    import httpx

    from pilothouse.settings import load_client_settings

    raw = sys.stdin.buffer.read()
    try:
        event = str(json.loads(raw).get("hook_event_name") or "")
    except (ValueError, AttributeError):
        event = ""
    settings = load_client_settings(url, key)
    if settings.api_key is None:
        _failed(event, "no session key (PILOTHOUSE_API_KEY is not set)")
        return
    try:
        reply = httpx.post(
            f"{settings.url}/hooks/claude-code",
            params={"client": client, "wait": wait},
            content=raw,
            headers={
                "authorization": f"Bearer {settings.api_key.get_secret_value()}",
                "content-type": "application/json",
            },
            timeout=httpx.Timeout(wait + 30, connect=5.0),
        )
    except httpx.HTTPError as exc:
        _failed(event, f"cannot reach the Pilothouse server at {settings.url}: {exc}")
    if reply.status_code != 200:
        _failed(event, f"the Pilothouse server answered HTTP {reply.status_code}")
    try:
        answer = reply.json()
        if not isinstance(answer, dict):
            raise ValueError("not a JSON object")
    except ValueError:
        _failed(event, "the Pilothouse server's answer is not a JSON object")
    sys.stdout.write(json.dumps(answer))
    sys.stdout.flush()


def _failed(event: str, reason: str) -> NoReturn:
    """Before a tool runs, block: exit 2 with the reason on stderr. After it ran, warn: a
    ``systemMessage`` and exit 0 (any other status would become 2 through ``|| exit 2``, and
    Codex would then replace the tool's real output with the message)."""
    if event in ("PreToolUse", ""):
        sys.stderr.write(f"Pilothouse policy check failed, so the action is blocked: {reason}\n")
        sys.stderr.flush()
        raise typer.Exit(BLOCK)
    message = f"Pilothouse could not scan this tool's output: {reason}"
    sys.stdout.write(json.dumps({"systemMessage": message}))
    sys.stdout.flush()
    raise typer.Exit(0)
