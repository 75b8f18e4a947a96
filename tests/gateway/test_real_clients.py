"""Acceptance with the real agent CLIs: Claude Code (``claude -p``) and Codex (``codex exec``) run a
tool-using task through a real Pilothouse server with a session key, against a scripted upstream.

Each run must really execute the scripted shell command (a proof file appears in the work tree),
and every call the upstream received must be one usage row of the session, with the tokens the
upstream reported, a cost, and the client's own session id in ``client_session``.

The CLIs are the pinned npm packages CI installs under ``$PILOTHOUSE_CLIENTS_DIR`` (default
``<repo>/.cache/clients``); without them these tests skip. They run offline: the clients get a
clean environment, a throwaway HOME and the settings that stop their outside lookups.
Select them alone with ``pytest tests/gateway/test_real_clients.py``.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
from collections.abc import Iterator, Sequence
from contextlib import contextmanager, suppress
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest
from pydantic import SecretStr

from pilothouse.gateway.config import (
    DeploymentConfig,
    GatewayConfig,
    ModelConfig,
    PriceOverride,
    ProviderName,
    Timeouts,
)
from tests.conftest import bearer
from tests.gateway.upstream import FakeUpstream, Received, Turn, prompt_tokens
from tests.servers import RunningServer, running_server

pytestmark = pytest.mark.timeout(240)

REPO_ROOT = Path(__file__).resolve().parents[2]
# A relative PILOTHOUSE_CLIENTS_DIR (as .ci/run sets it) is relative to the repository.
CLIENTS_DIR = REPO_ROOT / (os.environ.get("PILOTHOUSE_CLIENTS_DIR") or ".cache/clients")
INSTALL_HINT = (
    "npm install --prefix .cache/clients @anthropic-ai/claude-code@2.1.197 @openai/codex@0.169.0"
    " (or set PILOTHOUSE_CLIENTS_DIR)"
)
CLIENT_TIMEOUT = 120.0
PRICE = PriceOverride(input=3_000_000, output=15_000_000)
UPSTREAM_KEY = "sk-upstream-deployment-key"
TIMEOUTS = Timeouts(connect=2.0, first_byte=30.0, idle=30.0)
PROOF = "pilothouse-was-here"
FINAL_TEXT = "The proof file is written."
SESSION_CONTEXT: dict[str, Any] = {
    "project": "acceptance",
    "repository": "acme/agents",
    "labels": {"use_case": "real-clients"},
}
NO_PROXY = "127.0.0.1,localhost,::1"


# --- the clients ----------------------------------------------------------------------------


def _bin(name: str) -> Path:
    """The CLI ``name`` under the clients dir, or skip saying how to install it."""
    path = CLIENTS_DIR / "node_modules" / ".bin" / name
    if not path.exists():
        pytest.skip(f"the {name} CLI is not installed at {path}: {INSTALL_HINT}")
    return path


def claude_bin() -> Path:
    """Claude Code's executable (the native binary when npm skipped its postinstall)."""
    path = _bin("claude")
    if path.stat().st_size < 4096:  # the stub left by --ignore-scripts
        native = CLIENTS_DIR / "node_modules/@anthropic-ai/claude-code-linux-x64/claude"
        if not native.exists():
            pytest.skip(f"{path} is npm's stub and {native} is missing: {INSTALL_HINT}")
        return native
    return path


def codex_bin() -> Path:
    """Codex's launcher (a Node script, so Node must be on PATH)."""
    path = _bin("codex")
    if shutil.which("node") is None:
        pytest.skip("the Codex CLI's launcher needs node on PATH")
    return path


def client_path() -> str:
    """PATH for a client: Node's dir, git and a shell."""
    dirs = [str(Path(found).parent) for tool in ("node", "git") if (found := shutil.which(tool))]
    return ":".join(dict.fromkeys([*dirs, "/usr/local/bin", "/usr/bin", "/bin"]))


def git_repo(path: Path) -> Path:
    """A throwaway git repository with one commit."""
    path.mkdir(parents=True)
    env = {"PATH": client_path(), "HOME": str(path), "GIT_CONFIG_NOSYSTEM": "1"}

    def git(*args: str) -> None:
        subprocess.run(["git", *args], cwd=path, env=env, check=True, capture_output=True)

    git("init", "-q", ".")
    git("config", "user.email", "ci@example.invalid")
    git("config", "user.name", "ci")
    (path / "README.md").write_text("scratch repo\n")
    git("add", "README.md")
    git("commit", "-qm", "init")
    return path


@dataclass(frozen=True)
class Run:
    """What a client run left: its exit code and output."""

    returncode: int
    stdout: str
    stderr: str

    def report(self, up: FakeUpstream) -> str:
        """Everything needed to see why a run failed."""
        seen = "\n".join(f"  {r.method} {r.path} {r.query}" for r in up.requests)
        return (
            f"exit {self.returncode}\n--- stdout\n{self.stdout[-4000:]}\n"
            f"--- stderr\n{self.stderr[-4000:]}\n--- upstream saw\n{seen}"
        )


def run_client(argv: Sequence[str], cwd: Path, env: dict[str, str]) -> Run:
    """Run a client to the end (bounded); its whole process group is killed afterwards."""
    with subprocess.Popen(
        list(argv),
        cwd=cwd,
        env=env,
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        start_new_session=True,
    ) as process:
        try:
            out, err = process.communicate(timeout=CLIENT_TIMEOUT)
        except subprocess.TimeoutExpired:
            os.killpg(process.pid, signal.SIGKILL)
            out, err = process.communicate(timeout=10)
            pytest.fail(
                f"{argv[0]} ran over {CLIENT_TIMEOUT}s\n--- stdout\n{out}\n--- stderr\n{err}"
            )
        finally:
            with suppress(ProcessLookupError):  # tools the client left running
                os.killpg(process.pid, signal.SIGKILL)
    return Run(process.returncode, out, err)


# --- Pilothouse and the upstream ------------------------------------------------------------


def serving(alias: str, provider: ProviderName, up: FakeUpstream, model: str) -> ModelConfig:
    """``alias`` served by one deployment of ``provider`` at the fake upstream."""
    base_url = up.url if provider == "anthropic" else up.openai_url
    deployment = DeploymentConfig(
        name=f"fake-{provider}",
        provider=provider,
        model=model,
        base_url=base_url,
        api_key=SecretStr(UPSTREAM_KEY),
        price=PRICE,
        timeouts=TIMEOUTS,
    )
    return ModelConfig(alias=alias, retries=0, deployments=[deployment])


@dataclass(frozen=True)
class Gateway:
    """A running Pilothouse and an open session's key."""

    server: RunningServer
    session_id: str
    key: str

    @property
    def url(self) -> str:
        """The server's root URL."""
        return self.server.url

    def usage(self) -> list[dict[str, Any]]:
        """The session's usage rows, oldest first, read through the API as the owner."""
        reply = httpx.get(
            f"{self.url}/api/v1/usage",
            params={"session_id": self.session_id, "limit": 100},
            headers=bearer(self.server.owner_token),
            timeout=10,
        )
        assert reply.status_code == 200, reply.text
        page = reply.json()
        assert page["next_cursor"] is None
        rows: list[dict[str, Any]] = page["data"]
        return rows[::-1]


@contextmanager
def pilothouse(data_dir: Path, model: ModelConfig) -> Iterator[Gateway]:
    """A real server serving ``model``, and a session opened through the admin API."""
    quick = GatewayConfig(backoff_base_seconds=0.01, backoff_max_seconds=0.05)
    with running_server(data_dir, models=[model], gateway=quick) as server:
        opened = httpx.post(
            f"{server.url}/api/v1/sessions",
            headers=bearer(server.owner_token),
            json=SESSION_CONTEXT,
            timeout=10,
        )
        assert opened.status_code == 201, opened.text
        body = opened.json()
        yield Gateway(server, body["session"]["id"], body["key"]["token"])


def model_posts(up: FakeUpstream) -> list[Received]:
    """The model calls the upstream received, in order."""
    return [r for r in up.requests if r.method == "POST"]


def assert_recorded(
    gw: Gateway,
    posts: list[Received],
    script: list[Turn],
    *,
    endpoint: str,
    model: str,
    client_session: str,
) -> None:
    """One ok usage row per upstream call, with the upstream's tokens, a cost and the context."""
    rows = gw.usage()
    assert len(rows) == len(posts) == len(script), (rows, [p.path for p in posts])
    for row, post, turn in zip(rows, posts, script, strict=True):
        tokens = row["tokens"]
        assert (row["status"], row["http_status"], row["error"]) == ("ok", 200, None), row
        assert (row["endpoint"], row["stream"], row["estimated"]) == (endpoint, True, False)
        assert row["session_id"] == gw.session_id
        assert row["client_session"] == client_session
        assert row["project"] == SESSION_CONTEXT["project"]
        assert row["repository"] == SESSION_CONTEXT["repository"]
        assert row["labels"] == SESSION_CONTEXT["labels"]
        assert (row["model"], row["upstream_model"]) == (model, post.body["model"])
        assert tokens["input"] == prompt_tokens(post.body) > 0
        assert tokens["output"] == turn.output_tokens > 0
        cost = tokens["input"] * PRICE.input + tokens["output"] * PRICE.output
        assert row["cost_picos"] == cost > 0


def assert_key_stays_home(gw: Gateway, up: FakeUpstream, expected: dict[str, str]) -> None:
    """The upstream got the deployment's key and never the session key."""
    for received in up.requests:
        assert not any(gw.key in value for value in received.headers.values()), received.path
    for post in model_posts(up):
        for name, value in expected.items():
            assert post.headers.get(name) == value, (name, post.headers)


# --- Claude Code ----------------------------------------------------------------------------

CLAUDE_SCRIPT = [
    Turn(
        text="I will write the proof file.",
        tool="Bash",
        arguments={"command": f"echo {PROOF} > proof.txt", "description": "Write the proof file"},
    ),
    Turn(text=FINAL_TEXT),
]
CLAUDE_MODEL = "claude-opus-4-8"  # what Claude Code 2.1.197 asks for by default
CLAUDE_UPSTREAMS: dict[str, tuple[ProviderName, str]] = {
    "anthropic": ("anthropic", "/v1/messages"),
    "openai-compatible": ("openai-compatible", "/v1/chat/completions"),
}


def run_claude(gw: Gateway, work: Path) -> tuple[Run, Path]:
    """``claude -p`` with a Bash tool allowed, in a fresh git repo, through Pilothouse."""
    binary = claude_bin()
    home, repo = work / "home", git_repo(work / "repo")
    home.mkdir()
    env = {
        "PATH": client_path(),
        "HOME": str(home),
        "TERM": "dumb",
        "ANTHROPIC_BASE_URL": gw.url,
        "ANTHROPIC_API_KEY": gw.key,
        "CLAUDE_CODE_DISABLE_NONESSENTIAL_TRAFFIC": "1",
        "CLAUDE_CODE_MAX_RETRIES": "0",
        "NO_PROXY": NO_PROXY,
        "no_proxy": NO_PROXY,
    }
    prompt = f"Write {PROOF} into proof.txt with Bash."
    argv = [str(binary), "-p", prompt, "--output-format", "json", "--allowedTools", "Bash"]
    return run_client(argv, repo, env), repo


@pytest.mark.parametrize("upstream_kind", list(CLAUDE_UPSTREAMS))
def test_claude_code_runs_a_tool_task_through_pilothouse_and_each_call_is_a_usage_row(
    tmp_path: Path, upstream_kind: str
) -> None:
    provider, upstream_path = CLAUDE_UPSTREAMS[upstream_kind]
    with (
        FakeUpstream.threaded(script=CLAUDE_SCRIPT) as up,
        pilothouse(tmp_path / "data", serving("claude-*", provider, up, "upstream-model")) as gw,
    ):
        run, repo = run_claude(gw, tmp_path)
        assert run.returncode == 0, run.report(up)
        result = json.loads(run.stdout)
        assert result["is_error"] is False, run.report(up)
        assert result["result"] == FINAL_TEXT
        assert (repo / "proof.txt").read_text() == f"{PROOF}\n"

        posts = model_posts(up)
        assert [p.path for p in posts] == [upstream_path] * len(CLAUDE_SCRIPT), run.report(up)
        if provider == "anthropic":
            auth = {"x-api-key": UPSTREAM_KEY}
            assert all("claude-code-20250219" in p.headers["anthropic-beta"] for p in posts)
            # Claude Code puts role "system" messages inside messages; they pass through.
            assert "system" in [m["role"] for m in posts[0].body["messages"]]
        else:
            auth = {"authorization": f"Bearer {UPSTREAM_KEY}"}
        assert_key_stays_home(gw, up, auth)
        assert_recorded(
            gw,
            posts,
            CLAUDE_SCRIPT,
            endpoint="/v1/messages",
            model=CLAUDE_MODEL,
            client_session=result["session_id"],
        )


# --- Codex ----------------------------------------------------------------------------------

CODEX_SCRIPT = [
    Turn(tool="exec_command", arguments={"cmd": f"echo {PROOF} > proof.txt"}),
    Turn(text=FINAL_TEXT),
]
CODEX_KEY_VAR = "PILOTHOUSE_SESSION_KEY"
CODEX_MODEL = "gpt-5.5"  # a slug Codex knows, so it sends its full tool set
CODEX_UPSTREAMS: dict[str, tuple[ProviderName, str]] = {
    "openai": ("openai", "/v1/responses"),
    "openai-compatible": ("openai-compatible", "/v1/chat/completions"),
    "anthropic": ("anthropic", "/v1/messages"),
}


def codex_config(gw: Gateway) -> str:
    """config.toml: Pilothouse as the model provider, and no lookups outside."""
    return f"""\
model = "{CODEX_MODEL}"
model_provider = "pilothouse"
analytics.enabled = false
features.plugins = false

[model_providers.pilothouse]
name = "Pilothouse"
base_url = "{gw.url}/v1"
env_key = "{CODEX_KEY_VAR}"
wire_api = "responses"
request_max_retries = 0
stream_max_retries = 0
"""


def run_codex(gw: Gateway, work: Path) -> tuple[Run, Path]:
    """``codex exec`` with a writable workspace, in a fresh git repo, through Pilothouse."""
    binary = codex_bin()
    home, codex_home, repo = work / "home", work / "codex-home", git_repo(work / "repo")
    home.mkdir()
    codex_home.mkdir()
    (codex_home / "config.toml").write_text(codex_config(gw))
    env = {
        "PATH": client_path(),
        "HOME": str(home),
        "TERM": "dumb",
        "CODEX_HOME": str(codex_home),
        CODEX_KEY_VAR: gw.key,
        "NO_PROXY": NO_PROXY,
        "no_proxy": NO_PROXY,
    }
    prompt = f"Write {PROOF} into proof.txt."
    argv = [str(binary), "exec", "--json", "-s", "workspace-write", prompt]
    return run_client(argv, repo, env), repo


def events(stdout: str) -> list[dict[str, Any]]:
    """``codex exec --json`` output: one event per line."""
    return [json.loads(line) for line in stdout.splitlines() if line.startswith("{")]


@pytest.mark.parametrize("upstream_kind", list(CODEX_UPSTREAMS))
def test_codex_runs_a_tool_task_through_pilothouse_responses_and_each_call_is_a_usage_row(
    tmp_path: Path, upstream_kind: str
) -> None:
    provider, upstream_path = CODEX_UPSTREAMS[upstream_kind]
    with (
        FakeUpstream.threaded(script=CODEX_SCRIPT) as up,
        pilothouse(tmp_path / "data", serving("gpt-*", provider, up, "upstream-model")) as gw,
    ):
        run, repo = run_codex(gw, tmp_path)
        assert run.returncode == 0, run.report(up)
        seen = events(run.stdout)
        (thread_id,) = [e["thread_id"] for e in seen if e["type"] == "thread.started"]
        items = [e["item"] for e in seen if e["type"] == "item.completed"]
        commands = [i for i in items if i["type"] == "command_execution"]
        assert [c["exit_code"] for c in commands] == [0], run.report(up)
        assert [i["text"] for i in items if i["type"] == "agent_message"] == [FINAL_TEXT]
        assert (repo / "proof.txt").read_text() == f"{PROOF}\n"

        posts = model_posts(up)
        assert [p.path for p in posts] == [upstream_path] * len(CODEX_SCRIPT), run.report(up)
        if provider == "anthropic":
            auth = {"x-api-key": UPSTREAM_KEY}
        else:
            auth = {"authorization": f"Bearer {UPSTREAM_KEY}"}
        assert_key_stays_home(gw, up, auth)
        # Codex's thread id is the session-id header it sends with every call.
        assert_recorded(
            gw,
            posts,
            CODEX_SCRIPT,
            endpoint="/v1/responses",
            model=CODEX_MODEL,
            client_session=thread_id,
        )
