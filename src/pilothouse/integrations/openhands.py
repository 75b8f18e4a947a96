"""OpenHands: a security analyzer for the ``openhands-sdk`` package that asks Pilothouse about
every action before it runs.

Needs ``openhands-sdk`` installed, and so Python 3.12 or newer (every release of the SDK
requires it)::

    from openhands.sdk import Conversation
    from pilothouse.integrations.openhands import PilothouseAnalyzer

    conversation = Conversation(agent=agent, workspace=".")
    PilothouseAnalyzer(url="http://127.0.0.1:7450", key=session_key).attach(conversation)
    conversation.send_message("fix the failing test")
    conversation.run()

What each action is checked as (by ``ActionEvent.tool_name`` and the action's fields):

- the terminal (``terminal``; ``execute_bash``, ``bash`` in older releases): ``shell`` with
  ``command``;
- the file editor (``file_editor``, ``str_replace_editor``, ``planning_file_editor``):
  ``view`` is ``file_read`` with ``path``; ``create``, ``str_replace``, ``insert`` and
  ``undo_edit`` are ``file_write`` with ``path``;
- ``read_file`` and ``list_directory`` are ``file_read``, ``write_file`` and ``edit`` are
  ``file_write``, with the file they name as ``path``;
- an MCP tool (an ``MCPToolAction``): ``mcp`` with ``tool`` (its name) and ``arguments``;
- any other action with a ``url`` (the browser's ``browser_navigate``, a fetch tool): ``http``
  with ``url``;
- anything else: ``mcp`` with the tool's name as ``tool`` and the action's fields as
  ``arguments``.

``finish`` and ``think``, and a terminal call with an empty command (it only reads the output
so far), act on nothing outside the conversation and are not asked about (LOW).

Decisions: ``allow`` is LOW risk. ``ask`` waits (up to ``approval_wait`` seconds, on the
server) for a person to approve or deny in Pilothouse; approved is LOW. ``deny``, a person's
denial, an approval that expired or is still pending after the wait, and any failure to get an
answer from Pilothouse (fail closed, logged) are HIGH risk **and blocked**. An approval still
pending when the wait ends is remembered: when the agent tries the same action again, the check
names it, so a person's later approval lets that retry through.

How a refused action is blocked: the SDK's analyzer only rates risk (``SecurityRisk``) and a
confirmation policy decides what a person must confirm, and running the conversation again
confirms it. So :meth:`PilothouseAnalyzer.attach` binds the analyzer to the conversation's
``ConversationState`` and each refusal calls ``ConversationState.block_action(action_id,
reason)``, the mechanism the SDK's own PreToolUse hooks use: the agent then never runs the
action and instead emits a ``UserRejectObservation`` (``rejection_source="hook"``) whose text,
``Action rejected: <Pilothouse's reason>``, is what the LLM sees as the tool's result. That
holds under every confirmation policy, ``NeverConfirm`` (the default) included. An analyzer that
was not attached can only rate risk: then the conversation must run with a confirmation policy
that confirms HIGH (``ConfirmRisky()``), and whoever answers must call
``conversation.reject_pending_actions(reason)`` for a HIGH action rather than run it.

Limits: the analyzer runs where the agent loop runs (a ``LocalConversation``); a persisted or
remote copy of it has its key redacted (the key is a ``SecretStr``) and so refuses everything
until a new analyzer is attached. While it waits for a person, the conversation waits too (the
SDK calls analyzers synchronously, so under ``arun()`` the wait also holds up the event loop).
"""

from __future__ import annotations

import json
import logging
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Self

# The SDK is an optional dependency (Python 3.12+): where it is absent mypy sees Any.
from openhands.sdk.conversation import (  # type: ignore[import-not-found, unused-ignore]
    BaseConversation,
    ConversationState,
)
from openhands.sdk.event import ActionEvent  # type: ignore[import-not-found, unused-ignore]
from openhands.sdk.mcp.definition import (  # type: ignore[import-not-found, unused-ignore]
    MCPToolAction,
)
from openhands.sdk.security import (  # type: ignore[import-not-found, unused-ignore]
    SecurityAnalysis,
    SecurityAnalyzerBase,
    SecurityRisk,
)
from openhands.sdk.tool.builtins import (  # type: ignore[import-not-found, unused-ignore]
    FinishAction,
    ThinkAction,
)
from pydantic import Field, PrivateAttr, SecretStr

from pilothouse.client import (
    Channel,
    CheckResult,
    Pilothouse,
    PilothouseError,
    PilothouseUnavailable,
)

__all__ = ["Check", "PilothouseAnalyzer", "check_for"]

log = logging.getLogger(__name__)

CLIENT = "openhands"
SHELL_TOOLS = frozenset({"terminal", "execute_bash", "bash"})
EDITOR_TOOLS = frozenset({"file_editor", "str_replace_editor", "planning_file_editor"})
PATH_TOOLS: Mapping[str, tuple[Channel, str]] = {
    "read_file": ("file_read", "file_path"),
    "list_directory": ("file_read", "dir_path"),
    "write_file": ("file_write", "file_path"),
    "edit": ("file_write", "file_path"),
}
SOURCE_MAX = 200  # the longest source field the server records


@dataclass(frozen=True)
class Check:
    """What Pilothouse is asked about one action: a channel and the action's fields."""

    channel: Channel
    action: dict[str, Any]


def _fields(action: Any) -> dict[str, Any]:
    if action is None:
        return {}
    fields: dict[str, Any] = action.model_dump(mode="json", exclude={"kind"})
    return fields


def check_for(event: ActionEvent) -> Check | None:
    """The check an OpenHands action stands for; None for one that acts on nothing outside."""
    action, tool = event.action, event.tool_name
    if isinstance(action, FinishAction | ThinkAction):
        return None
    if isinstance(action, MCPToolAction):
        return Check("mcp", {"tool": tool, "arguments": dict(action.data)})
    fields = _fields(action)
    command, path, url = fields.get("command"), fields.get("path"), fields.get("url")
    if tool in SHELL_TOOLS and isinstance(command, str):
        return Check("shell", {"command": command}) if command.strip() else None
    if tool in EDITOR_TOOLS and isinstance(path, str):
        return Check("file_read" if command == "view" else "file_write", {"path": path})
    if tool in PATH_TOOLS and isinstance(fields.get(PATH_TOOLS[tool][1]), str):
        channel, field = PATH_TOOLS[tool]
        return Check(channel, {"path": fields[field]})
    if isinstance(url, str):
        return Check("http", {"url": url})
    return Check("mcp", {"tool": tool, "arguments": fields})


def _details(result: CheckResult) -> dict[str, Any]:
    approval = result.approval
    return {
        "pilothouse_check": result.check_id,
        "decision": result.decision,
        "reason": result.reason,
        "rule": result.rule,
        "approval": approval.id if approval else None,
        "approval_status": approval.status if approval else None,
    }


def _refusal(result: CheckResult, wait: float) -> str:
    """Why Pilothouse refused, as the agent will read it."""
    approval = result.approval
    if result.decision == "ask":
        waited = f"approval {approval.id}" if approval else "an approval"
        return (
            f"Pilothouse asks a person to approve this action ({waited}: {result.reason}) and"
            f" no one decided within {wait:g} seconds, so it was not run"
        )
    text = f"Pilothouse denied this action: {result.reason}"
    if approval is not None and approval.status in ("denied", "expired"):
        by = f" by {approval.decided_by}" if approval.decided_by else ""
        comment = f": {approval.comment}" if approval.comment else ""
        text += f" (approval {approval.id} {approval.status}{by}{comment})"
    return text


class PilothouseAnalyzer(SecurityAnalyzerBase):  # type: ignore[misc, unused-ignore]
    """Rates each action by asking Pilothouse: allowed is LOW; refused is HIGH and blocked."""

    url: str = Field(description="the Pilothouse server, e.g. http://127.0.0.1:7450")
    key: SecretStr = Field(description="a session key, or a user/service key with session_id")
    session_id: str | None = Field(
        default=None, description="the session a user or service key checks for"
    )
    approval_wait: float = Field(
        default=600.0,
        ge=0,
        le=3600,
        description="seconds to wait for a person when a rule asks (0: refuse at once)",
    )
    timeout: float = Field(default=30.0, gt=0, description="seconds for each request")

    _client: Pilothouse | None = PrivateAttr(default=None)
    _state: ConversationState | None = PrivateAttr(default=None)
    # Approvals still pending when the wait ran out, by the action they are for: asked again,
    # the same action names its approval, so a person's later "approve" lets it through.
    _waiting: dict[str, str] = PrivateAttr(default_factory=dict)

    def attach(self, conversation: BaseConversation) -> Self:
        """Make this the conversation's analyzer, able to block what Pilothouse refuses."""
        state = conversation.state
        if not isinstance(state, ConversationState):
            raise TypeError(
                "attach needs a conversation whose agent loop runs in this process (a"
                f" LocalConversation), not {type(conversation).__name__}"
            )
        self._state = state
        conversation.set_security_analyzer(self)
        return self

    def close(self) -> None:
        """Close the connections to Pilothouse."""
        if self._client is not None:
            self._client.close()
            self._client = None

    def security_risk(self, action: ActionEvent) -> SecurityRisk:
        """The action's risk as Pilothouse decides it (see :meth:`analyze_action`)."""
        risk: SecurityRisk = self.analyze_action(action).risk
        return risk

    def analyze_action(self, action: ActionEvent) -> SecurityAnalysis:
        """Ask Pilothouse about the action; a refusal is HIGH and blocks the action."""
        check = check_for(action)
        if check is None:
            return SecurityAnalysis(risk=SecurityRisk.LOW, details={"pilothouse": "not asked"})
        try:
            result = self._ask(action, check)
        except (PilothouseError, PilothouseUnavailable) as exc:
            log.error("Pilothouse gave no answer on %s %s: %s", action.tool_name, action.id, exc)
            reason = f"Pilothouse could not be asked whether this may run ({exc})"
            return self._refuse(action, reason, {"error": str(exc)})
        except Exception as exc:
            # The boundary with the SDK: whatever went wrong, the action must not run unasked.
            log.exception("asking Pilothouse about %s %s failed", action.tool_name, action.id)
            reason = f"the Pilothouse analyzer failed ({type(exc).__name__})"
            return self._refuse(action, reason, {"error": repr(exc)})
        if result.decision == "allow":
            return SecurityAnalysis(risk=SecurityRisk.LOW, details=_details(result))
        return self._refuse(action, _refusal(result, self.approval_wait), _details(result))

    def _ask(self, action: ActionEvent, check: Check) -> CheckResult:
        source = {
            "client": CLIENT,
            "tool": action.tool_name[:SOURCE_MAX],
            "tool_use_id": str(action.tool_call_id)[:SOURCE_MAX],
        }
        key = json.dumps([check.channel, check.action], sort_keys=True)
        result = self._pilothouse().check(
            check.channel,
            **check.action,
            wait=self.approval_wait,
            approval_id=self._waiting.get(key),
            session_id=self.session_id,
            source=source,
        )
        if result.decision == "ask" and result.approval is not None:
            self._waiting[key] = result.approval.id
        else:
            self._waiting.pop(key, None)
        return result

    def _pilothouse(self) -> Pilothouse:
        if self._client is None:
            self._client = Pilothouse(self.url, self.key.get_secret_value(), timeout=self.timeout)
        return self._client

    def _refuse(
        self, action: ActionEvent, reason: str, details: dict[str, Any]
    ) -> SecurityAnalysis:
        """HIGH risk, and the action blocked in the attached conversation."""
        if self._state is not None:
            self._state.block_action(action.id, reason)
            log.warning("blocked %s %s: %s", action.tool_name, action.id, reason)
        else:
            log.warning(
                "HIGH risk for %s %s (%s); the analyzer is not attached, so only a confirmation"
                " policy that confirms HIGH stops it",
                action.tool_name,
                action.id,
                reason,
            )
        return SecurityAnalysis(
            risk=SecurityRisk.HIGH, details={**details, "blocked": self._state is not None}
        )
