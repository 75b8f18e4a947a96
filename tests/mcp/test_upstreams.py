"""Upstream MCP servers: real reference servers over stdio, test servers over stdio, streamable
HTTP and SSE, and what each fault (exit, hang, garbage, refused connection) turns into."""

from __future__ import annotations

import asyncio
import os
import shutil
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Iterator, Mapping
from contextlib import asynccontextmanager
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import mcp_types as types
import pytest
from pydantic import ValidationError

from pilothouse.gateway.providers.pool import HttpClient
from pilothouse.mcp.config import McpServerConfig
from pilothouse.mcp.upstreams import Upstream, UpstreamError, UpstreamRegistry
from pilothouse.secrets.refs import SecretRef
from tests.mcp.servers import http_server

ROOT = Path(__file__).resolve().parents[2]
READY_SECONDS = 15.0


def stdio(name: str, mode: str, **overrides: Any) -> McpServerConfig:
    """A test server of ``tests.mcp.servers`` run over stdio."""
    args = ["-m", "tests.mcp.servers", mode]
    return McpServerConfig(
        name=name, transport="stdio", command=sys.executable, args=args, cwd=str(ROOT), **overrides
    )


class Vault:
    """Credentials that answer fixed values and count how often they are asked."""

    def __init__(self, values: Mapping[str, str] | None = None) -> None:
        self.values = dict(values or {})
        self.asked: list[str] = []

    async def __call__(self, config: McpServerConfig) -> Mapping[str, str]:
        self.asked.append(config.name)
        return self.values


@asynccontextmanager
async def running(config: McpServerConfig, vault: Vault | None = None) -> AsyncIterator[Upstream]:
    """A started upstream (an http server's tool calls as plain POSTs, as in a registry),
    stopped when the block ends."""
    upstream = Upstream(config, vault or Vault(), HttpClient())
    await upstream.start()
    try:
        yield upstream
    finally:
        await upstream.stop()


def text(result: types.CallToolResult) -> str:
    """The text blocks of a tool result, joined."""
    return "".join(block.text for block in result.content if isinstance(block, types.TextContent))


def gone(pid: int) -> bool:
    """Whether no live process has this pid (a zombie left to an init that does not reap counts)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return True
    try:
        state = Path(f"/proc/{pid}/stat").read_bytes().rsplit(b")", 1)[1].split()[0]
    except OSError:
        return True
    return state == b"Z"


async def until(condition: Any, seconds: float = 10.0) -> bool:
    """Poll ``condition()`` until it holds, for at most ``seconds``."""
    deadline = time.monotonic() + seconds
    while not condition():
        if time.monotonic() > deadline:
            return False
        await asyncio.sleep(0.02)
    return True


@pytest.fixture
def git_repo(tmp_path: Path) -> Iterator[Path]:
    """A git repository with one commit and one untracked file."""
    if shutil.which("git") is None:
        pytest.skip("git is not installed")
    repo = tmp_path / "repo"
    repo.mkdir()
    env = {
        "PATH": os.environ.get("PATH", ""),
        "HOME": str(tmp_path),
        "GIT_AUTHOR_NAME": "t",
        "GIT_AUTHOR_EMAIL": "t@example.org",
        "GIT_COMMITTER_NAME": "t",
        "GIT_COMMITTER_EMAIL": "t@example.org",
    }
    (repo / "README.md").write_text("hello\n")
    for args in (["init", "-q"], ["add", "README.md"], ["commit", "-q", "-m", "first"]):
        subprocess.run(["git", *args], cwd=repo, env=env, check=True, timeout=30)
    (repo / "untracked-notes.txt").write_text("not yet added\n")
    yield repo


# --- configuration ------------------------------------------------------------------------


def test_a_server_name_that_could_not_prefix_tool_names_is_refused() -> None:
    for name in ("git__x", "Git", "-git", "a" * 41, "git_x"):
        with pytest.raises(ValidationError):
            McpServerConfig(name=name, transport="stdio", command="x")


def test_each_transport_needs_its_own_fields() -> None:
    with pytest.raises(ValidationError, match="needs a command"):
        McpServerConfig(name="a", transport="stdio")
    with pytest.raises(ValidationError, match="needs a url"):
        McpServerConfig(name="a", transport="http")
    with pytest.raises(ValidationError, match="are for stdio servers"):
        McpServerConfig(name="a", transport="sse", url="https://x.example/sse", command="x")
    with pytest.raises(ValidationError, match="are for http and sse servers"):
        McpServerConfig(name="a", transport="stdio", command="x", url="https://x.example/mcp")
    with pytest.raises(ValidationError):
        McpServerConfig(name="a", transport="http", url="ftp://x.example/mcp")


def test_secret_refs_name_the_variables_and_headers_that_hold_secrets() -> None:
    stdio_config = McpServerConfig.model_validate(
        {
            "name": "gh",
            "transport": "stdio",
            "command": "github-mcp-server",
            "env": {"GITHUB_TOKEN": {"$secret": "github-token"}, "LOG": "debug"},
        }
    )
    http_config = McpServerConfig.model_validate(
        {
            "name": "tickets",
            "transport": "http",
            "url": "https://tickets.example/mcp",
            "headers": {"Authorization": {"$secret": "tickets"}, "X-Team": "infra"},
        }
    )
    assert stdio_config.secret_refs == {"env:GITHUB_TOKEN": SecretRef(secret="github-token")}
    assert http_config.secret_refs == {"header:authorization": SecretRef(secret="tickets")}
    assert http_config.model_dump(by_alias=True)["headers"]["Authorization"] == {
        "$secret": "tickets"
    }


# --- the reference servers ------------------------------------------------------------------


async def test_the_time_reference_server_lists_its_tools_and_tells_the_time() -> None:
    config = McpServerConfig(
        name="time",
        transport="stdio",
        command=sys.executable,
        args=["-m", "mcp_server_time", "--local-timezone", "UTC"],
    )
    async with running(config) as time_server:
        names = {tool.name for tool in await time_server.list_tools()}
        result = await time_server.call_tool("get_current_time", {"timezone": "Asia/Tokyo"})
    assert {"get_current_time", "convert_time"} <= names
    assert not result.is_error
    answer = result.structured_content
    assert answer is not None and answer["timezone"] == "Asia/Tokyo"
    told = datetime.fromisoformat(answer["datetime"])
    assert told.utcoffset() == timedelta(hours=9)
    assert abs(told - datetime.now(UTC)) < timedelta(minutes=5)


async def test_the_git_reference_server_reports_the_status_of_a_repository(
    git_repo: Path,
) -> None:
    config = McpServerConfig(
        name="git",
        transport="stdio",
        command=sys.executable,
        args=["-m", "mcp_server_git", "--repository", str(git_repo)],
    )
    async with running(config) as git_server:
        names = {tool.name for tool in await git_server.list_tools()}
        result = await git_server.call_tool("git_status", {"repo_path": str(git_repo)})
        outside = await git_server.call_tool("git_status", {"repo_path": str(ROOT)})
        with pytest.raises(UpstreamError) as unknown:
            await git_server.call_tool("git_frobnicate", {"repo_path": str(git_repo)})
    assert {"git_status", "git_log", "git_diff"} <= names
    assert not result.is_error
    assert "untracked-notes.txt" in text(result)
    # A tool's own failure is its result; a JSON-RPC error answer is an UpstreamError.
    assert outside.is_error and "outside the allowed repository" in text(outside)
    assert unknown.value.kind == "rejected" and unknown.value.code == -32602


# --- credentials ----------------------------------------------------------------------------


async def test_a_secret_reaches_a_stdio_server_as_an_environment_variable() -> None:
    config = stdio(
        "echo", "echo", env={"UPSTREAM_TOKEN": SecretRef(secret="token"), "PLAIN": "plain-value"}
    )
    vault = Vault({"env:UPSTREAM_TOKEN": "s3cr3t-value"})
    async with running(config, vault) as upstream:
        token = await upstream.call_tool("env", {"name": "UPSTREAM_TOKEN"})
        plain = await upstream.call_tool("env", {"name": "PLAIN"})
    assert text(token) == "s3cr3t-value"
    assert text(plain) == "plain-value"
    assert vault.asked == ["echo"]


async def test_a_missing_credential_keeps_the_upstream_down_and_says_which() -> None:
    config = stdio("echo", "echo", env={"UPSTREAM_TOKEN": SecretRef(secret="token")})
    async with running(config, Vault()) as upstream:
        with pytest.raises(UpstreamError) as caught:
            await upstream.call_tool("echo", {"text": "hi"})
        status = upstream.status
    assert caught.value.kind == "unavailable"
    assert status.state == "restarting"
    assert status.last_error is not None and "env:UPSTREAM_TOKEN" in status.last_error


@pytest.mark.parametrize("transport", ["http", "sse"])
async def test_a_secret_reaches_an_http_server_as_a_header_and_nothing_else_is_added(
    transport: str,
) -> None:
    vault = Vault({"header:authorization": "Bearer upstream-secret"})
    with http_server(transport) as url:
        secured = McpServerConfig(
            name="secured",
            transport=transport,
            url=url,
            headers={"Authorization": SecretRef(secret="tickets"), "X-Team": "infra"},
        )
        bare = McpServerConfig(name="bare", transport=transport, url=url)
        async with running(secured, vault) as with_headers, running(bare) as without:
            seen = (await with_headers.call_tool("whoami")).structured_content
            seen_bare = (await without.call_tool("whoami")).structured_content
    assert seen is not None and seen_bare is not None
    assert seen["authorization"] == "Bearer upstream-secret"
    assert seen["x-team"] == "infra"
    assert "authorization" not in seen_bare
    assert "x-team" not in seen_bare


# --- faults ---------------------------------------------------------------------------------


async def test_a_crashed_server_fails_calls_fast_then_is_restarted_with_its_stderr_kept() -> None:
    vault = Vault()
    async with running(stdio("crashy", "crash", restart_backoff_seconds=1.0), vault) as upstream:
        first_pid = upstream.status.pid
        with pytest.raises(UpstreamError) as crashed:
            await upstream.call_tool("crash")
        started = time.monotonic()
        with pytest.raises(UpstreamError) as meanwhile:
            await upstream.call_tool("echo", {"text": "hello"})
        failed_after = time.monotonic() - started
        assert await upstream.wait_ready(READY_SECONDS)
        back = await upstream.call_tool("echo", {"text": "back"})
        status = upstream.status
        tail = upstream.stderr_tail()
    assert crashed.value.kind == "unavailable"
    assert meanwhile.value.kind == "unavailable"
    assert "'crashy'" in str(meanwhile.value) and "restarting" in str(meanwhile.value)
    assert failed_after < 0.5  # not queued behind the restart (its back-off alone is 1 s)
    assert text(back) == "back"
    assert status.restarts == 1 and status.pid not in (None, first_pid)
    assert status.last_error is not None and "exiting on purpose" in status.last_error
    assert "crash mode: exiting on purpose" in tail
    assert vault.asked == ["crashy", "crashy"]  # credentials are fetched again for the restart


async def test_a_server_that_does_not_answer_times_out_and_is_restarted() -> None:
    config = stdio("hangs", "hang", timeout_seconds=0.5, restart_backoff_seconds=0.1)
    async with running(config) as upstream:
        first_pid = upstream.status.pid
        assert first_pid is not None
        started = time.monotonic()
        with pytest.raises(UpstreamError) as caught:
            await upstream.call_tool("hang")
        waited = time.monotonic() - started
        assert await upstream.wait_ready(READY_SECONDS)
        back = await upstream.call_tool("echo", {"text": "back"})
        status = upstream.status
    assert caught.value.kind == "timeout"
    assert "within 0.5 s" in str(caught.value)
    assert waited < 3.0
    assert await until(lambda: gone(first_pid)), "the hung process was not killed"
    assert text(back) == "back"
    assert status.restarts == 1 and status.pid != first_pid


async def test_garbage_on_stdout_is_a_protocol_error_and_other_upstreams_keep_working() -> None:
    registry = UpstreamRegistry(
        [stdio("garbled", "garbage", restart_backoff_seconds=0.1), stdio("fine", "echo")],
        Vault(),
    )
    async with registry:
        with pytest.raises(UpstreamError) as caught:
            await registry.get("garbled").call_tool("garble")
        fine = await registry.get("fine").call_tool("echo", {"text": "still here"})
        listed = await registry.tools()
        assert await registry.get("garbled").wait_ready(READY_SECONDS)
        again = await registry.get("garbled").call_tool("echo", {"text": "recovered"})
        restarts = registry.get("garbled").status.restarts
    assert caught.value.kind == "protocol"
    assert "not JSON-RPC" in str(caught.value)
    assert text(fine) == "still here"
    assert "fine" in listed
    assert text(again) == "recovered" and restarts == 1


async def test_an_http_upstream_whose_server_went_away_reconnects_when_it_is_back() -> None:
    upstream: Upstream | None = None
    try:
        with http_server("http") as url:
            config = McpServerConfig(
                name="web",
                transport="http",
                url=url,
                restart_backoff_seconds=0.1,
                restart_backoff_max_seconds=0.5,
            )
            upstream = Upstream(config, Vault(), HttpClient())
            await upstream.start()
            before = await upstream.call_tool("echo", {"text": "before"})
        with pytest.raises(UpstreamError) as caught:
            await upstream.call_tool("echo", {"text": "nobody there"})
        with http_server("http", port=urlsplit(url).port or 0):
            assert await upstream.wait_ready(READY_SECONDS)
            after = await upstream.call_tool("echo", {"text": "back"})
        status = upstream.status
    finally:
        if upstream is not None:
            await upstream.stop()
    assert text(before) == "before"
    assert caught.value.kind == "unavailable"
    assert text(after) == "back"
    assert status.restarts >= 1


async def test_twenty_concurrent_calls_on_one_upstream_all_answer() -> None:
    async with running(stdio("echo", "echo", timeout_seconds=15)) as upstream:
        # Each call answers only once all twenty are in flight at the same time.
        results = await asyncio.gather(
            *(upstream.call_tool("meet", {"text": f"call {i}", "count": 20}) for i in range(20))
        )
    assert [text(result) for result in results] == [f"call {i}" for i in range(20)]


async def test_an_upstream_that_is_down_does_not_stop_the_others_being_listed(
    tmp_path: Path,
) -> None:
    with http_server("http") as url:
        pass  # the port is closed again: connections are refused
    registry = UpstreamRegistry(
        [
            stdio("fine", "echo"),
            McpServerConfig(name="refused", transport="http", url=url, connect_timeout_seconds=2),
            McpServerConfig(name="missing", transport="stdio", command=str(tmp_path / "nope")),
        ],
        Vault(),
    )
    async with registry:
        listed = await registry.tools()
        started = time.monotonic()
        with pytest.raises(UpstreamError) as caught:
            await registry.get("missing").call_tool("anything")
        failed_after = time.monotonic() - started
        states = {upstream.name: upstream.status for upstream in registry.all()}
    assert list(listed) == ["fine"]
    assert {tool.name for tool in listed["fine"]} >= {"echo", "env"}
    assert caught.value.kind == "unavailable" and failed_after < 0.5
    assert states["fine"].state == "ready"
    assert states["refused"].state == "restarting"
    assert states["missing"].state == "restarting"
    missing_error = states["missing"].last_error
    assert missing_error is not None and "FileNotFoundError" in missing_error
    assert states["refused"].last_error is not None


async def test_stop_ends_the_server_process_and_its_children() -> None:
    upstream = Upstream(stdio("echo", "echo"), Vault())
    await upstream.start()
    pid = upstream.status.pid
    assert pid is not None and not gone(pid)
    spawned = await upstream.call_tool("spawn")
    child = int(text(spawned))
    assert not gone(child)
    await upstream.stop()
    assert upstream.status.state == "stopped" and upstream.status.pid is None
    assert await until(lambda: gone(pid) and gone(child), seconds=5)
    with pytest.raises(UpstreamError) as caught:
        await upstream.call_tool("echo", {"text": "late"})
    assert caught.value.kind == "unavailable"
