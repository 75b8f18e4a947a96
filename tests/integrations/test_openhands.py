"""The OpenHands security analyzer with the real ``openhands-sdk`` (its ActionEvent, MCPToolAction,
analyzer base, Agent and LocalConversation, and its scripted TestLLM as the model) against a real
Pilothouse server on a loopback port.

openhands-sdk requires Python 3.12 or newer; on an older Python this module is skipped.
The terminal, file editor and browser tools live in the separate ``openhands-tools`` package,
which is not installed: the actions below stand in for them with the SDK's ``Action`` base and
the same tool names and fields, which is all the analyzer reads.
"""

from __future__ import annotations

import json
import logging
import os
import subprocess
import sys
import uuid
from collections.abc import Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar, Literal, Self

import httpx
import pytest

if sys.version_info < (3, 12):
    pytest.skip(
        "openhands-sdk requires Python >= 3.12 (every release); this is "
        f"{sys.version_info.major}.{sys.version_info.minor}",
        allow_module_level=True,
    )
# LiteLLM, which the SDK imports, would fetch a price list over the network at import.
os.environ.setdefault("LITELLM_LOCAL_MODEL_COST_MAP", "True")
os.environ.setdefault("OPENHANDS_SUPPRESS_BANNER", "1")
pytest.importorskip("openhands.sdk", reason="install openhands-sdk (Python >= 3.12)")

from openhands.sdk import (
    Agent,
    Conversation,
    LocalConversation,
    Tool,
    register_tool,
)
from openhands.sdk.conversation import ConversationExecutionStatus
from openhands.sdk.event import (
    ActionEvent,
    SecurityAnalysisEvent,
    UserRejectObservation,
)
from openhands.sdk.llm import Message, MessageToolCall, TextContent
from openhands.sdk.mcp.definition import MCPToolAction
from openhands.sdk.security import ConfirmRisky, SecurityAnalyzerBase, SecurityRisk
from openhands.sdk.testing import TestLLM
from openhands.sdk.tool import (
    Action,
    Observation,
    ToolDefinition,
    ToolExecutor,
)
from openhands.sdk.tool.builtins import FinishAction, ThinkAction
from pydantic import Field

from pilothouse.client import Pilothouse
from pilothouse.integrations.openhands import Check, PilothouseAnalyzer, check_for
from tests.servers import free_port, running_server

pytestmark = [
    # Pydantic warns about the OpenAI SDK's types when the SDK first builds a model request.
    pytest.mark.filterwarnings("ignore:Item .* is using the `ReadOnly` qualifier:UserWarning"),
]

POLICY = """
approvals:
  timeout_seconds: 120
rules:
  - id: no-denied-proof
    channel: shell
    match: {program: touch, args: denied-proof}
    decision: deny
    reason: that file is off limits
  - id: ask-deploy
    channel: shell
    match: {program: deploy}
    decision: ask
    reason: deploys need a person
  - id: no-secret-reads
    channel: file_read
    match: {path: /srv/secrets/*}
    decision: deny
    reason: secrets are brokered, not read
  - id: no-etc-writes
    channel: file_write
    match: {path: /etc/*}
    decision: deny
    reason: the system's files are not the agent's
  - id: no-paste-sites
    channel: http
    match: {domain: paste.example}
    decision: deny
    reason: paste sites take data out
  - id: no-drop
    channel: mcp
    match: {tool: db__query, arguments: {sql: "DROP *"}}
    decision: deny
    reason: dropping tables needs a migration
  - id: no-patches
    channel: mcp
    match: {tool: apply_patch}
    decision: deny
    reason: patches go through the file editor
"""
WAIT_BOUND = 60.0
LOGGER = "pilothouse.integrations.openhands"


# --- stand-ins for openhands-tools' actions (same tool names and fields) ----------------------


class CommandAction(Action):
    """The terminal's action: a shell command."""

    command: str = Field(description="the shell command")
    is_input: bool = False


class EditorAction(Action):
    """The file editor's action."""

    command: Literal["view", "create", "str_replace", "insert", "undo_edit"]
    path: str
    file_text: str | None = None


class NavigateAction(Action):
    """The browser's go-to-URL action."""

    url: str
    new_tab: bool = False


class FilePathAction(Action):
    """read_file / write_file / edit: a file by ``file_path``."""

    file_path: str
    content: str | None = None


class PatchAction(Action):
    """apply_patch: a patch whose paths are inside its text."""

    patch: str


class CommandObservation(Observation):
    """What a command printed."""


class CommandExecutor(ToolExecutor):
    """Runs the command with bash in the work directory, for real."""

    def __init__(self, cwd: str) -> None:
        self.cwd = cwd

    def __call__(self, action: Any, conversation: Any = None) -> CommandObservation:
        done = subprocess.run(
            ["bash", "-c", action.command],
            cwd=self.cwd,
            capture_output=True,
            text=True,
            timeout=30,
            check=False,
        )
        return CommandObservation.from_text(done.stdout + done.stderr)


class ShellTool(ToolDefinition[CommandAction, CommandObservation]):
    """A terminal tool named as the real one is."""

    name: ClassVar[str] = "terminal"

    @classmethod
    def create(cls, conv_state: Any = None, **params: Any) -> Sequence[Self]:
        """One tool running commands in ``params['cwd']``."""
        return [
            cls(
                description="Run a shell command.",
                action_type=CommandAction,
                observation_type=CommandObservation,
                executor=CommandExecutor(params["cwd"]),
            )
        ]


register_tool("terminal", ShellTool)


# --- arranging --------------------------------------------------------------------------------


@dataclass(frozen=True)
class Server:
    """A running server with the test policy, its owner and a person who decides approvals."""

    url: str
    owner: str
    approver: str

    def session_key(self) -> str:
        """A new session's key."""
        with Pilothouse(self.url, self.owner) as ph:
            return ph.open_session(project="openhands", agent={"kind": "openhands"}).token


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    """One real server for the module; each test opens a session of its own."""
    with running_server(tmp_path_factory.mktemp("openhands-server")) as running:
        auth = {"authorization": f"Bearer {running.owner_token}"}
        with httpx.Client(base_url=running.url, headers=auth) as http:
            assert http.put("/api/v1/policy", json={"source": POLICY}).status_code == 200
            email = f"security-{uuid.uuid4().hex[:8]}@example.com"
            user = http.post("/api/v1/users", json={"email": email, "role": "security"}).json()
            key = http.post("/api/v1/keys", json={"user_id": user["id"]}).json()
        yield Server(running.url, running.owner_token, key["token"])


def tool_call(name: str, arguments: dict[str, Any]) -> MessageToolCall:
    """A model's call of tool ``name``."""
    return MessageToolCall(
        id=f"call_{uuid.uuid4().hex[:12]}",
        name=name,
        arguments=json.dumps(arguments),
        origin="completion",
    )


def action_event(tool: str, action: Action | None) -> ActionEvent:
    """The ActionEvent the agent emits before running ``action`` with ``tool``."""
    arguments = action.model_dump(mode="json", exclude={"kind"}) if action is not None else {}
    call = tool_call(tool, arguments)
    return ActionEvent(
        thought=[],
        action=action,
        tool_name=tool,
        tool_call_id=call.id,
        tool_call=call,
        llm_response_id="resp_test",
    )


def model_turn(name: str, arguments: dict[str, Any]) -> Message:
    """A scripted model reply that calls one tool."""
    return Message(
        role="assistant", content=[TextContent(text="")], tool_calls=[tool_call(name, arguments)]
    )


def conversation(work: Path, turns: list[Message]) -> LocalConversation:
    """A real conversation whose model replies with ``turns`` and whose terminal runs in
    ``work``."""
    agent = Agent(
        llm=TestLLM.from_messages(list(turns)),
        tools=[Tool(name="terminal", params={"cwd": str(work)})],
    )
    made = Conversation(agent=agent, workspace=str(work), visualizer=None)
    assert isinstance(made, LocalConversation)
    return made


def analyzed(analyzer: PilothouseAnalyzer, event: ActionEvent) -> tuple[SecurityRisk, Any]:
    """What the SDK's entry point makes of one action: (risk, details)."""
    ((_, analysis),) = analyzer.analyze_actions([event])
    return analysis.risk, analysis.details


def rejections(conv: LocalConversation) -> list[UserRejectObservation]:
    """The conversation's rejected actions."""
    return [e for e in conv.state.events if isinstance(e, UserRejectObservation)]


# --- which channel each action is checked on --------------------------------------------------


@pytest.mark.parametrize(
    ("tool", "action", "expected"),
    [
        ("terminal", CommandAction(command="make test"), Check("shell", {"command": "make test"})),
        ("execute_bash", CommandAction(command="ls"), Check("shell", {"command": "ls"})),
        (
            "file_editor",
            EditorAction(command="view", path="/w/a.py"),
            Check("file_read", {"path": "/w/a.py"}),
        ),
        (
            "file_editor",
            EditorAction(command="create", path="/w/b.py", file_text="x = 1"),
            Check("file_write", {"path": "/w/b.py"}),
        ),
        (
            "file_editor",
            EditorAction(command="str_replace", path="/w/c.py"),
            Check("file_write", {"path": "/w/c.py"}),
        ),
        (
            "file_editor",
            EditorAction(command="insert", path="/w/d.py"),
            Check("file_write", {"path": "/w/d.py"}),
        ),
        ("read_file", FilePathAction(file_path="/w/e.md"), Check("file_read", {"path": "/w/e.md"})),
        (
            "write_file",
            FilePathAction(file_path="/w/f.md", content="hi"),
            Check("file_write", {"path": "/w/f.md"}),
        ),
        (
            "browser_navigate",
            NavigateAction(url="https://example.com/a"),
            Check("http", {"url": "https://example.com/a"}),
        ),
        (
            "db__query",
            MCPToolAction(data={"sql": "select 1"}),
            Check("mcp", {"tool": "db__query", "arguments": {"sql": "select 1"}}),
        ),
        (
            "apply_patch",
            PatchAction(patch="*** a"),
            Check("mcp", {"tool": "apply_patch", "arguments": {"patch": "*** a"}}),
        ),
        ("finish", FinishAction(message="done"), None),
        ("think", ThinkAction(thought="hmm"), None),
        ("terminal", CommandAction(command="  "), None),
    ],
)
def test_each_kind_of_action_is_checked_on_the_channel_of_its_effect(
    tool: str, action: Action, expected: Check | None
) -> None:
    assert check_for(action_event(tool, action)) == expected


def test_the_analyzer_is_an_sdk_security_analyzer_that_keeps_its_key_out_of_dumps() -> None:
    analyzer = PilothouseAnalyzer(url="http://127.0.0.1:1", key="ph_secret_value")
    assert isinstance(analyzer, SecurityAnalyzerBase)
    dumped = analyzer.model_dump_json()
    assert "ph_secret_value" not in dumped and "ph_secret_value" not in repr(analyzer)
    assert json.loads(dumped)["kind"] == "PilothouseAnalyzer"


# --- decisions as risks -----------------------------------------------------------------------


def test_an_allowed_action_is_low_risk_and_not_blocked(server: Server, tmp_path: Path) -> None:
    conv = conversation(tmp_path, [])
    analyzer = PilothouseAnalyzer(url=server.url, key=server.session_key()).attach(conv)
    event = action_event("terminal", CommandAction(command="ls -la"))
    risk, details = analyzed(analyzer, event)
    assert risk is SecurityRisk.LOW
    assert details["decision"] == "allow"
    assert details["pilothouse_check"].startswith("chk_")
    assert event.id not in conv.state.blocked_actions


@pytest.mark.parametrize(
    ("tool", "action", "rule_reason"),
    [
        ("terminal", CommandAction(command="touch denied-proof"), "that file is off limits"),
        (
            "file_editor",
            EditorAction(command="view", path="/srv/secrets/db"),
            "secrets are brokered",
        ),
        (
            "file_editor",
            EditorAction(command="create", path="/etc/hosts", file_text="x"),
            "system's files",
        ),
        ("browser_navigate", NavigateAction(url="https://paste.example/new"), "paste sites"),
        ("db__query", MCPToolAction(data={"sql": "DROP TABLE users"}), "needs a migration"),
        ("apply_patch", PatchAction(patch="*** Begin Patch"), "through the file editor"),
    ],
)
def test_a_denied_action_is_high_risk_and_blocked_with_pilothouses_reason(
    server: Server, tmp_path: Path, tool: str, action: Action, rule_reason: str
) -> None:
    conv = conversation(tmp_path, [])
    analyzer = PilothouseAnalyzer(url=server.url, key=server.session_key()).attach(conv)
    event = action_event(tool, action)
    risk, details = analyzed(analyzer, event)
    assert risk is SecurityRisk.HIGH
    assert details["decision"] == "deny" and details["blocked"] is True
    blocked = conv.state.blocked_actions[event.id]
    assert blocked.startswith("Pilothouse denied this action: ")
    assert rule_reason in blocked


def test_an_ask_no_one_answers_in_time_is_blocked_and_a_later_approval_lets_it_run(
    server: Server, tmp_path: Path
) -> None:
    conv = conversation(tmp_path, [])
    analyzer = PilothouseAnalyzer(url=server.url, key=server.session_key(), approval_wait=0)
    analyzer.attach(conv)
    first = action_event("terminal", CommandAction(command="deploy web"))
    risk, details = analyzed(analyzer, first)
    assert risk is SecurityRisk.HIGH
    assert details["decision"] == "ask" and details["approval_status"] == "pending"
    assert "no one decided within 0 seconds" in conv.state.blocked_actions[first.id]
    with Pilothouse(server.url, server.approver) as person:
        person.approve(details["approval"], comment="ok")
    retried = action_event("terminal", CommandAction(command="deploy web"))
    risk, details = analyzed(analyzer, retried)
    assert risk is SecurityRisk.LOW
    assert details["approval_status"] == "approved"
    assert retried.id not in conv.state.blocked_actions


def test_an_ask_waits_for_the_person_who_approves_it(server: Server, tmp_path: Path) -> None:
    conv = conversation(tmp_path, [])
    analyzer = PilothouseAnalyzer(url=server.url, key=server.session_key(), approval_wait=0)
    analyzer.attach(conv)
    _, details = analyzed(analyzer, action_event("terminal", CommandAction(command="deploy api")))
    analyzer.approval_wait = WAIT_BOUND  # the retry waits on the approval it remembers
    with ThreadPoolExecutor(1) as pool, Pilothouse(server.url, server.approver) as person:
        retried = action_event("terminal", CommandAction(command="deploy api"))
        waiting = pool.submit(analyzed, analyzer, retried)
        person.approve(details["approval"])
        risk, after = waiting.result(timeout=WAIT_BOUND + 10)
    assert risk is SecurityRisk.LOW
    assert after["decision"] == "allow" and after["approval_status"] == "approved"


def test_a_persons_denial_is_high_risk_and_blocked_with_their_comment(
    server: Server, tmp_path: Path
) -> None:
    conv = conversation(tmp_path, [])
    analyzer = PilothouseAnalyzer(url=server.url, key=server.session_key(), approval_wait=0)
    analyzer.attach(conv)
    _, details = analyzed(analyzer, action_event("terminal", CommandAction(command="deploy db")))
    with Pilothouse(server.url, server.approver) as person:
        person.deny(details["approval"], comment="not during the freeze")
    retried = action_event("terminal", CommandAction(command="deploy db"))
    risk, after = analyzed(analyzer, retried)
    assert risk is SecurityRisk.HIGH
    assert after["decision"] == "deny" and after["approval_status"] == "denied"
    assert "not during the freeze" in conv.state.blocked_actions[retried.id]


def test_an_unreachable_pilothouse_fails_closed_and_says_why(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    conv = conversation(tmp_path, [])
    url = f"http://127.0.0.1:{free_port()}"
    analyzer = PilothouseAnalyzer(url=url, key="ph_key", timeout=5).attach(conv)
    event = action_event("terminal", CommandAction(command="ls"))
    with caplog.at_level(logging.ERROR, logger=LOGGER):
        risk, details = analyzed(analyzer, event)
    assert risk is SecurityRisk.HIGH
    assert url in details["error"]
    assert "could not be asked" in conv.state.blocked_actions[event.id]
    assert any(url in r.getMessage() for r in caplog.records if r.levelno == logging.ERROR)


def test_a_key_pilothouse_refuses_fails_closed(server: Server, tmp_path: Path) -> None:
    conv = conversation(tmp_path, [])
    analyzer = PilothouseAnalyzer(url=server.url, key="ph_unknown").attach(conv)
    event = action_event("terminal", CommandAction(command="ls"))
    risk, details = analyzed(analyzer, event)
    assert risk is SecurityRisk.HIGH
    assert "401" in details["error"] or "invalid_key" in details["error"]
    assert event.id in conv.state.blocked_actions


# --- a whole conversation ---------------------------------------------------------------------


def test_a_conversation_never_runs_a_denied_command_and_the_agent_reads_why(
    server: Server, tmp_path: Path
) -> None:
    turns = [
        model_turn("terminal", {"command": "touch denied-proof"}),
        model_turn("terminal", {"command": "touch allowed-proof"}),
        model_turn("finish", {"message": "done"}),
    ]
    conv = conversation(tmp_path, turns)
    PilothouseAnalyzer(url=server.url, key=server.session_key()).attach(conv)
    conv.send_message("make the proof files")
    conv.run()
    assert conv.state.execution_status == ConversationExecutionStatus.FINISHED
    assert not (tmp_path / "denied-proof").exists()
    assert (tmp_path / "allowed-proof").exists()
    (rejected,) = rejections(conv)
    told = rejected.to_llm_message().content[0].text
    assert told == "Action rejected: Pilothouse denied this action: that file is off limits"
    risks = [
        r
        for e in conv.state.events
        if isinstance(e, SecurityAnalysisEvent)
        for r in e.risks.values()
    ]
    assert risks == [SecurityRisk.HIGH, SecurityRisk.LOW]


def test_confirming_a_denied_command_under_confirm_risky_still_does_not_run_it(
    server: Server, tmp_path: Path
) -> None:
    turns = [
        model_turn("terminal", {"command": "touch denied-proof"}),
        model_turn("finish", {"message": "done"}),
    ]
    conv = conversation(tmp_path, turns)
    PilothouseAnalyzer(url=server.url, key=server.session_key()).attach(conv)
    conv.set_confirmation_policy(ConfirmRisky())
    conv.send_message("make the proof file")
    conv.run()
    assert conv.state.execution_status == ConversationExecutionStatus.WAITING_FOR_CONFIRMATION
    conv.run()  # running again is how a person confirms the pending action
    assert not (tmp_path / "denied-proof").exists()
    assert [r.rejection_source for r in rejections(conv)] == ["hook"]
    assert conv.state.execution_status == ConversationExecutionStatus.FINISHED


def test_a_conversation_whose_pilothouse_is_down_runs_nothing(tmp_path: Path) -> None:
    turns = [
        model_turn("terminal", {"command": "touch allowed-proof"}),
        model_turn("finish", {"message": "done"}),
    ]
    conv = conversation(tmp_path, turns)
    PilothouseAnalyzer(url=f"http://127.0.0.1:{free_port()}", key="ph_key", timeout=5).attach(conv)
    conv.send_message("make the proof file")
    conv.run()
    assert not (tmp_path / "allowed-proof").exists()
    (rejected,) = rejections(conv)
    assert "Pilothouse could not be asked" in rejected.rejection_reason


def test_an_analyzer_that_is_not_attached_leaves_a_denial_to_confirm_risky(
    server: Server, tmp_path: Path
) -> None:
    turns = [
        model_turn("terminal", {"command": "touch denied-proof"}),
        model_turn("finish", {"message": "done"}),
    ]
    conv = conversation(tmp_path, turns)
    conv.set_security_analyzer(PilothouseAnalyzer(url=server.url, key=server.session_key()))
    conv.set_confirmation_policy(ConfirmRisky())
    conv.send_message("make the proof file")
    conv.run()
    assert conv.state.execution_status == ConversationExecutionStatus.WAITING_FOR_CONFIRMATION
    assert conv.state.blocked_actions == {}
    conv.reject_pending_actions("Pilothouse denied it")
    conv.run()
    assert not (tmp_path / "denied-proof").exists()
    assert [r.rejection_source for r in rejections(conv)] == ["user"]
