"""Claude Code's permission rules, imported into the policy engine, decide as Claude Code's
lists would, and hold through what the shell parser sees."""

from __future__ import annotations

from typing import Any

import pytest

from pilothouse.policy.claude import import_permissions
from pilothouse.policy.document import Channel, Document, Packs, Verdict
from pilothouse.policy.engine import Action, Policy, Subject
from pilothouse.policy.packs import PACKS

SETTINGS: dict[str, Any] = {
    "permissions": {
        "deny": [
            "Bash(curl:*)",
            "Read(./.env)",
            "Read(~/.ssh/**)",
            "Read(//etc/shadow)",
            "WebFetch(domain:pastebin.com)",
            "mcp__github__delete_repo",
        ],
        "ask": ["Bash(git push:*)", "Bash(terraform *)"],
        "allow": [
            "Bash(npm run test:*)",
            "Bash(git status)",
            "Edit(src/**)",
            "mcp__linear",
            "WebSearch",
        ],
    }
}


@pytest.fixture
def policy() -> Policy:
    imported = import_permissions(SETTINGS)
    assert imported.skipped == [("WebSearch", "WebSearch has no channel in Pilothouse's policy")]
    # The built-in packs off: only the imported rules decide here.
    return Policy(Document(rules=imported.rules, packs=Packs(disabled=sorted(PACKS))))


CASES: list[tuple[Action, Verdict, str | None]] = [
    (Action(Channel.SHELL, command="curl -s https://example.com"), Verdict.DENY, "claude.deny.0"),
    (Action(Channel.SHELL, command="sh -c 'curl x | jq .'"), Verdict.DENY, "claude.deny.0"),
    (Action(Channel.SHELL, command="curl"), Verdict.DENY, "claude.deny.0"),
    (Action(Channel.SHELL, command="curlie x"), Verdict.ALLOW, None),
    (Action(Channel.SHELL, command="cd app && git push origin main"), Verdict.ASK, "claude.ask.0"),
    (Action(Channel.SHELL, command="git pushy"), Verdict.ALLOW, None),
    (Action(Channel.SHELL, command="terraform apply"), Verdict.ASK, "claude.ask.1"),
    (Action(Channel.SHELL, command="npm run test -- --watch"), Verdict.ALLOW, "claude.allow.0"),
    (Action(Channel.SHELL, command="npm run test"), Verdict.ALLOW, "claude.allow.0"),
    (Action(Channel.SHELL, command="npm run testing"), Verdict.ALLOW, None),
    (Action(Channel.SHELL, command="git status"), Verdict.ALLOW, "claude.allow.1"),
    (Action(Channel.SHELL, command="git status && curl x"), Verdict.DENY, "claude.deny.0"),
    (Action(Channel.FILE_READ, path="/work/app/.env"), Verdict.DENY, "claude.deny.1"),
    (Action(Channel.FILE_READ, path=".env"), Verdict.DENY, "claude.deny.1"),
    (Action(Channel.FILE_READ, path="/work/app/.env.example"), Verdict.ALLOW, None),
    (Action(Channel.FILE_READ, path="/home/ana/.ssh/id_rsa"), Verdict.DENY, "claude.deny.2"),
    (Action(Channel.FILE_READ, path="/root/.ssh/config"), Verdict.DENY, "claude.deny.2"),
    (Action(Channel.FILE_READ, path="/etc/shadow"), Verdict.DENY, "claude.deny.3"),
    (Action(Channel.FILE_READ, path="/srv/etc/shadow"), Verdict.ALLOW, None),
    (Action(Channel.FILE_WRITE, path="/repo/src/app/main.py"), Verdict.ALLOW, "claude.allow.2"),
    (Action(Channel.FILE_WRITE, path="/repo/tests/test_x.py"), Verdict.ALLOW, None),
    (Action(Channel.HTTP, url="https://pastebin.com/raw/1"), Verdict.DENY, "claude.deny.4"),
    (Action(Channel.HTTP, url="https://example.com/"), Verdict.ALLOW, None),
    (Action(Channel.MCP, tool="github__delete_repo"), Verdict.DENY, "claude.deny.5"),
    (Action(Channel.MCP, tool="github__get_issue"), Verdict.ALLOW, None),
    (Action(Channel.MCP, tool="linear__create_issue"), Verdict.ALLOW, "claude.allow.3"),
]


@pytest.mark.parametrize(("action", "verdict", "rule"), CASES)
def test_imported_rules_decide_as_claude_code_s_lists_would(
    policy: Policy, action: Action, verdict: Verdict, rule: str | None
) -> None:
    decided = policy.decide(Subject(), action)
    assert (decided.decision, decided.rule) == (verdict, rule)
    if rule is not None:
        assert "Claude Code permission rule" in decided.reason


def test_entries_that_make_no_rule_are_skipped_with_the_reason() -> None:
    imported = import_permissions(
        {
            "permissions": {
                "deny": ["Bash(", "WebFetch(example.com)", "mcp__", 7, "Task"],
                "ask": "Bash(ls)",
            }
        }
    )
    assert imported.rules == []
    assert [why for _, why in imported.skipped] == [
        "is not a tool rule (Tool or Tool(specifier))",
        "WebFetch rules name a domain (domain:HOST)",
        "names no MCP server",
        "is not text",
        "Task has no channel in Pilothouse's policy",
        "is not a list",
    ]
    assert import_permissions({}).rules == []
    assert import_permissions({"permissions": []}).skipped == [("permissions", "is not an object")]


def test_a_bare_tool_covers_its_whole_channel() -> None:
    imported = import_permissions({"permissions": {"ask": ["Bash", "Read", "WebFetch"]}})
    policy = Policy(Document(rules=imported.rules, packs=Packs(disabled=sorted(PACKS))))
    for action in (
        Action(Channel.SHELL, command="ls"),
        Action(Channel.FILE_READ, path="/any/file"),
        Action(Channel.HTTP, url="https://any.example/"),
    ):
        assert policy.decide(Subject(), action).decision == Verdict.ASK
