"""``pilothouse run [--team ... --label k=v] -- <agent command>``: run an agent inside a session.

1. Opens a session with the context given (the key given must be allowed to: a person's key or
   a service key with ``sessions:write``).
2. Starts the agent with the session key as its only credential: ``ANTHROPIC_BASE_URL`` /
   ``ANTHROPIC_API_KEY`` and ``OPENAI_BASE_URL`` / ``OPENAI_API_KEY`` point at the gateway,
   ``PILOTHOUSE_URL`` / ``PILOTHOUSE_API_KEY`` / ``PILOTHOUSE_SESSION_ID`` at the session. The
   key that opened the session is not passed on.
3. Configures the agent's hooks so each tool call is checked first (``pilothouse hook``):
   - ``claude``: a settings file passed with ``--settings`` (PreToolUse and PostToolUse
     command hooks).
   - ``codex``: a ``CODEX_HOME`` of the run's own, with a ``config.toml`` whose model provider is
     the gateway (Responses API) and a ``hooks.json``; ``codex exec`` gets
     ``--dangerously-bypass-hook-trust``, without which Codex does not run hooks it has not
     been told to trust.
   Any other command gets the environment only (its harness can call ``pilothouse.client``).
4. If the server has MCP upstreams (``/mcp`` answers 401 to no key), gives the agent
   Pilothouse's MCP endpoint as its MCP server ``pilothouse``, authenticated by the session key
   from its environment (the key is written nowhere): ``claude`` with ``--mcp-config``,
   ``codex`` in its ``config.toml``.
5. Waits for it (signals are passed on), then ends the session with its exit status and the
   work tree's git state, and exits with the agent's status.
"""

from __future__ import annotations

import json
import shlex
import shutil
import signal
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Annotated, Any
from urllib.parse import urlsplit

import httpx
import typer

from pilothouse.cli.client import KeyOption, UrlOption, connect, route
from pilothouse.cli.output import fail, note
from pilothouse.cli.sessions import LabelsOption, parse_labels
from pilothouse.settings import inherited_environment, load_client_settings

HOOK_MARGIN_S = 30  # the client's hook timeout over the hook's own wait


def _opt(name: str, metavar: str, help_text: str) -> Any:
    return typer.Option(name, metavar=metavar, help=help_text, show_default=False)


def hook_command(client: str, wait: float) -> str:
    """The shell command a client runs as its hook: this Python's ``pilothouse hook``, and a
    block (exit 2) if even that fails to start."""
    return f"{shlex.quote(sys.executable)} -m pilothouse hook {client} --wait {wait:g} || exit 2"


def hook_settings(client: str, wait: float) -> dict[str, Any]:
    """The ``hooks`` settings both clients read (Claude Code's settings, Codex's
    ``hooks.json``): every tool call checked before it runs and scanned after."""
    entry = {
        "type": "command",
        "command": hook_command(client, wait),
        "timeout": int(wait) + HOOK_MARGIN_S,
    }
    return {
        "hooks": {
            "PreToolUse": [{"matcher": "*", "hooks": [entry]}],
            "PostToolUse": [{"matcher": "*", "hooks": [entry]}],
        }
    }


def mcp_config(url: str) -> dict[str, Any]:
    """Claude Code's MCP configuration: Pilothouse's endpoint, with the session key that
    ``pilothouse run`` puts in the agent's environment."""
    return {
        "mcpServers": {
            "pilothouse": {
                "type": "http",
                "url": f"{url}/mcp",
                "headers": {"Authorization": "Bearer ${PILOTHOUSE_API_KEY}"},
            }
        }
    }


def serves_mcp(url: str) -> bool:
    """Whether the server has an MCP endpoint (it asks for a key; without upstreams: 404)."""
    try:
        reply = httpx.post(f"{url}/mcp", json={}, timeout=5)
    except httpx.HTTPError:
        return False
    return reply.status_code == 401


def codex_home(base: Path, url: str, wait: float, mcp: bool) -> Path:
    """A CODEX_HOME whose model provider is the gateway, whose hooks check every tool and,
    with ``mcp``, whose MCP server is Pilothouse's endpoint."""
    home = base / "codex-home"
    home.mkdir()
    servers = (
        "[mcp_servers.pilothouse]\n"
        f"url = {json.dumps(url + '/mcp')}\n"
        'bearer_token_env_var = "PILOTHOUSE_API_KEY"\n'
        # Pilothouse checks every call itself (policy, asks a person when a rule says so):
        # Codex's own prompt would refuse any tool not marked read-only under `codex exec`.
        'default_tools_approval_mode = "approve"\n'
        if mcp
        else ""
    )
    (home / "config.toml").write_text(
        'model_provider = "pilothouse"\n'
        "analytics.enabled = false\n"
        "features.plugins = false\n"
        "[model_providers.pilothouse]\n"
        'name = "Pilothouse"\n'
        f"base_url = {json.dumps(url + '/v1')}\n"
        'env_key = "PILOTHOUSE_API_KEY"\n'
        'wire_api = "responses"\n'
        "request_max_retries = 1\n"
        "stream_max_retries = 1\n"
        "[model_providers.pilothouse.env_http_headers]\n"
        '"X-Pilothouse-Session" = "PILOTHOUSE_SESSION_ID"\n' + servers
    )
    (home / "hooks.json").write_text(json.dumps(hook_settings("codex", wait), indent=2))
    return home


def _no_proxy(env: dict[str, str], url: str) -> None:
    """Keep the agent's calls to Pilothouse off any HTTP(S) proxy it has."""
    host = urlsplit(url).hostname or ""
    current = [h for h in env.get("NO_PROXY", env.get("no_proxy", "")).split(",") if h]
    merged = ",".join(dict.fromkeys([*current, host, "127.0.0.1", "localhost", "::1"]))
    env["NO_PROXY"] = env["no_proxy"] = merged


def agent_argv(
    argv: list[str], scratch: Path, env: dict[str, str], url: str, wait: float, mcp: bool
) -> list[str]:
    """``argv`` set up for its agent (see the module), changing ``env`` as it needs."""
    name = Path(argv[0]).name
    if name in ("claude", "claude.exe"):
        settings = scratch / "claude-settings.json"
        settings.write_text(json.dumps(hook_settings("claude-code", wait), indent=2))
        extra = ["--settings", str(settings)]
        if mcp:
            servers = scratch / "claude-mcp.json"
            servers.write_text(json.dumps(mcp_config(url), indent=2))
            extra += ["--mcp-config", str(servers)]
        return [argv[0], *extra, *argv[1:]]
    if name == "codex":
        env["CODEX_HOME"] = str(codex_home(scratch, url, wait, mcp))
        if "exec" in argv[1:2] and "--dangerously-bypass-hook-trust" not in argv:
            return [argv[0], "exec", "--dangerously-bypass-hook-trust", *argv[2:]]
    return argv


def git_state(cwd: Path) -> str:
    """``branch@commit, N changed files`` of the work tree, or why there is none."""
    if shutil.which("git") is None:
        return "no git"

    def git(*args: str) -> str:
        done = subprocess.run(["git", *args], cwd=cwd, capture_output=True, text=True, timeout=10)
        if done.returncode != 0:
            raise RuntimeError(done.stderr.strip())
        return done.stdout.strip()

    try:
        branch = git("rev-parse", "--abbrev-ref", "HEAD")
        commit = git("rev-parse", "--short", "HEAD")
        changed = len([line for line in git("status", "--porcelain").splitlines() if line])
    except (RuntimeError, OSError, subprocess.TimeoutExpired):
        return "not a git work tree"
    return f"{branch}@{commit}, {changed} changed file{'s' if changed != 1 else ''}"


def run(
    command: Annotated[
        list[str], typer.Argument(metavar="-- COMMAND...", help="The agent and its arguments.")
    ],
    team: Annotated[
        str | None, _opt("--team", "TEAM_ID", "The team the session works for.")
    ] = None,
    user: Annotated[str | None, _opt("--user", "USER_ID", "The user the session acts for.")] = None,
    project: Annotated[str | None, _opt("--project", "PROJECT", "Project name.")] = None,
    use_case: Annotated[str | None, _opt("--use-case", "USE_CASE", "What it is for.")] = None,
    repo: Annotated[str | None, _opt("--repo", "REPOSITORY", "The repository it works in.")] = None,
    branch: Annotated[str | None, _opt("--branch", "BRANCH", "The branch it works on.")] = None,
    ticket: Annotated[str | None, _opt("--ticket", "TICKET", "Ticket or issue reference.")] = None,
    label: LabelsOption = None,
    wait: Annotated[
        float,
        typer.Option(
            "--wait",
            metavar="SECONDS",
            min=0,
            max=3600,
            help="How long an action the policy asks about waits for a person.",
        ),
    ] = 300.0,
    url: UrlOption = None,
    key: KeyOption = None,
) -> None:
    """Run an agent in a new session, with its hooks checking every tool call."""
    if not command:
        fail("give the agent's command after --", status=2)
    server = load_client_settings(url, key).url
    body: dict[str, Any] = {
        "team_id": team,
        "user_id": user,
        "project": project,
        "use_case": use_case,
        "repository": repo,
        "branch": branch,
        "ticket": ticket,
        "labels": parse_labels(label),
        "agent": {"kind": Path(command[0]).name[:200]},
    }
    with connect(url, key) as api:
        opened = api.post(route("sessions"), {k: v for k, v in body.items() if v is not None})
    session_id, token = opened["session"]["id"], opened["key"]["token"]
    scratch = Path(tempfile.mkdtemp(prefix="pilothouse-run-"))
    env = inherited_environment()
    env.pop("ANTHROPIC_AUTH_TOKEN", None)
    env.update(
        PILOTHOUSE_URL=server,
        PILOTHOUSE_API_KEY=token,
        PILOTHOUSE_SESSION_ID=session_id,
        ANTHROPIC_BASE_URL=server,
        ANTHROPIC_API_KEY=token,
        OPENAI_BASE_URL=f"{server}/v1",
        OPENAI_API_KEY=token,
    )
    _no_proxy(env, server)
    argv = agent_argv(list(command), scratch, env, server, wait, serves_mcp(server))
    note(f"pilothouse: session {session_id}")
    try:
        status = _child(argv, env)
    finally:
        shutil.rmtree(scratch, ignore_errors=True)
    detail = f"exit {status}; {git_state(Path.cwd())}"
    outcome = "succeeded" if status == 0 else "cancelled" if status in (130, 143) else "failed"
    try:
        with connect(url, key) as api:
            api.post(route("sessions", session_id, "end"), {"outcome": outcome, "detail": detail})
    except typer.Exit:  # connect printed why; the agent's own status is what run exits with
        note(f"pilothouse: could not end session {session_id}; it expires on its own")
    else:
        note(f"pilothouse: session {session_id} ended ({outcome}: {detail})")
    raise typer.Exit(status)


def _child(argv: list[str], env: dict[str, str]) -> int:
    """Run the agent to its end, passing SIGINT and SIGTERM on; its exit status (128+N for a
    signal, as a shell reports it)."""
    # `codex exec` reads a stdin that is not a terminal into its prompt.
    quiet = Path(argv[0]).name == "codex" and "exec" in argv[1:2] and not sys.stdin.isatty()
    try:
        child = subprocess.Popen(argv, env=env, stdin=subprocess.DEVNULL if quiet else None)
    except OSError as exc:
        note(f"pilothouse: cannot start {argv[0]}: {exc}")
        return 127
    previous = {
        sig: signal.signal(sig, lambda s, _f: child.send_signal(s))
        for sig in (signal.SIGINT, signal.SIGTERM)
    }
    try:
        status = child.wait()
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
    return 128 - status if status < 0 else status
