"""The command hook's work, kept light: ``pilothouse hook claude-code|codex`` runs before and
after every tool call of an agent, so it imports only httpx and the standard library (not the
CLI, the settings or the server), and ``pilothouse.entry`` reaches it before anything else.

It sends the hook's JSON (stdin) to the server's ``/hooks/claude-code`` and prints the answer.
It fails closed: both clients run the tool when a hook crashes, times out or prints something
that is not its JSON, and only exit status 2 always blocks. So before a tool runs, any failure
(no key, the server unreachable or answering with an error, an answer that is not a JSON object)
exits 2 with the reason on stderr, which both clients show the model; configured as
``pilothouse hook claude-code || exit 2``, even a crash of this program blocks. After a tool
ran, a failure is a warning (``systemMessage``, exit 0): the tool cannot be unrun, and any
other status would become 2 through ``|| exit 2`` (Codex would then replace the tool's real
output with the message).
"""

from __future__ import annotations

import json
import os
import sys
from collections.abc import Sequence
from typing import IO, Any

DEFAULT_URL = "http://127.0.0.1:7450"
DEFAULT_WAIT = 300.0
BLOCK = 2
CLIENTS = ("claude-code", "codex")


def connection(url: str | None, key: str | None) -> tuple[str, str | None]:
    """The server's URL and the key: flags win over ``PILOTHOUSE_URL`` / ``PILOTHOUSE_API_KEY``."""
    chosen_url = url or os.environ.get("PILOTHOUSE_URL") or DEFAULT_URL
    return chosen_url.rstrip("/"), key or os.environ.get("PILOTHOUSE_API_KEY") or None


def answer(
    client: str,
    wait: float,
    url: str | None,
    key: str | None,
    stdin: IO[bytes],
    stdout: IO[str],
    stderr: IO[str],
) -> int:
    """Answer one hook: print the server's JSON on ``stdout``; the exit status."""
    raw = stdin.read()
    try:
        event = str(json.loads(raw).get("hook_event_name") or "")
    except (ValueError, AttributeError):
        event = ""
    server, token = connection(url, key)
    if token is None:
        return _failed(event, "no session key (PILOTHOUSE_API_KEY is not set)", stdout, stderr)
    import httpx

    try:
        reply = httpx.post(
            f"{server}/hooks/claude-code",
            params={"client": client, "wait": wait},
            content=raw,
            headers={"authorization": f"Bearer {token}", "content-type": "application/json"},
            timeout=httpx.Timeout(wait + 30, connect=5.0),
        )
    except httpx.HTTPError as exc:
        reason = f"cannot reach the Pilothouse server at {server}: {exc}"
        return _failed(event, reason, stdout, stderr)
    if reply.status_code != 200:
        reason = f"the Pilothouse server answered HTTP {reply.status_code}"
        return _failed(event, reason, stdout, stderr)
    try:
        result: Any = reply.json()
    except ValueError:
        result = None
    if not isinstance(result, dict):
        reason = "the Pilothouse server's answer is not a JSON object"
        return _failed(event, reason, stdout, stderr)
    stdout.write(json.dumps(result))
    stdout.flush()
    return 0


def _failed(event: str, reason: str, stdout: IO[str], stderr: IO[str]) -> int:
    """Before a tool runs, block (exit 2, the reason on stderr); after it ran, warn."""
    if event in ("PreToolUse", ""):
        stderr.write(f"Pilothouse policy check failed, so the action is blocked: {reason}\n")
        stderr.flush()
        return BLOCK
    message = f"Pilothouse could not scan this tool's output: {reason}"
    stdout.write(json.dumps({"systemMessage": message}))
    stdout.flush()
    return 0


def fast(argv: Sequence[str]) -> int | None:
    """Run ``hook CLIENT [--wait N] [--url URL] [--key KEY]`` without loading the CLI; None
    for anything else (``--help``, a mistake), which the full CLI then answers."""
    if len(argv) < 2 or argv[0] != "hook" or argv[1] not in CLIENTS:
        return None
    options: dict[str, str] = {}
    rest = list(argv[2:])
    while rest:
        name = rest.pop(0)
        value = None
        if "=" in name:
            name, value = name.split("=", 1)
        if name not in ("--wait", "--url", "--key"):
            return None
        if value is None:
            if not rest:
                return None
            value = rest.pop(0)
        options[name] = value
    try:
        wait = float(
            options.get("--wait") or os.environ.get("PILOTHOUSE_HOOK_WAIT") or DEFAULT_WAIT
        )
    except ValueError:
        return None
    if not 0 <= wait <= 3600:
        return None
    return answer(
        argv[1],
        wait,
        options.get("--url"),
        options.get("--key"),
        sys.stdin.buffer,
        sys.stdout,
        sys.stderr,
    )
