"""Deciding an agent's action: every rule that matches, the strongest decision wins.

``Policy`` is a document made ready to decide: its own rules and the built-in packs' rules it
leaves on (``policy/packs.py``). ``decide`` reads the action once (a shell line's programs and
the SQL they send; a URL's host), tries every rule of the action's channel, and answers
``deny`` if any enforced rule denies, else ``ask`` if any asks, else ``allow`` if one allows,
else the document's default. Rules in report mode are matched and returned (``hits``) but never
decide.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from fnmatch import fnmatchcase
from functools import cached_property
from typing import Any
from urllib.parse import urlsplit

from pilothouse.policy.document import Channel, Document, Match, Rule, Verdict, When
from pilothouse.policy.shell import Invocation, Parsed, invocations
from pilothouse.policy.sql import Statement, sql_of, statements


@dataclass(frozen=True)
class Subject:
    """Who acts, as rules see them (a session's context and its key)."""

    team: str | None = None
    user: str | None = None
    project: str | None = None
    repository: str | None = None
    labels: Mapping[str, str] = field(default_factory=dict)
    key_kind: str = "session"
    tainted: bool = False


@dataclass(frozen=True)
class Action:
    """What the agent is about to do; the fields its channel uses."""

    channel: Channel
    command: str | None = None  # shell, git: the command line
    path: str | None = None  # file_read, file_write
    url: str | None = None  # http
    tool: str | None = None  # mcp: server__tool
    arguments: Mapping[str, Any] | None = None  # mcp
    model: str | None = None  # llm
    secret: str | None = None  # secret


class Facts:
    """An action read once for every rule: the programs a command line runs, the SQL they
    send, the URL's host."""

    def __init__(self, subject: Subject, action: Action) -> None:
        self.subject = subject
        self.action = action

    @cached_property
    def shell(self) -> Parsed:
        if self.action.command is None:
            return Parsed()
        return invocations(self.action.command)

    @property
    def programs(self) -> list[Invocation]:
        return self.shell.invocations

    @cached_property
    def sql(self) -> list[Statement]:
        found = []
        for inv in self.programs:
            for text, dialect in sql_of(inv):
                parsed = statements(text, dialect)
                found += parsed.statements
                if not parsed.complete:
                    found.append(Statement("unreadable"))
        return found

    @cached_property
    def domain(self) -> str:
        if not self.action.url:
            return ""
        return (urlsplit(self.action.url).hostname or "").lower()


@dataclass(frozen=True)
class Hit:
    """A rule that matched."""

    rule: str
    decision: Verdict
    reason: str
    pack: str | None = None  # a built-in rule's pack; None: the document's own
    report: bool = False  # report mode: recorded, not enforced


@dataclass(frozen=True)
class Decision:
    """The answer to a check."""

    decision: Verdict
    reason: str
    rule: str | None  # the rule that decided; None: the document's default
    hits: tuple[Hit, ...] = ()


class Policy:
    """A document, ready to decide."""

    def __init__(self, document: Document) -> None:
        from pilothouse.policy.packs import BUILTIN  # the packs import this module's types

        self.document = document
        packs, rules = set(document.packs.disabled), set(document.packs.disabled_rules)
        self.builtin = [r for r in BUILTIN if r.pack not in packs and r.id not in rules]
        self._by_channel: dict[Channel, list[Rule]] = {}
        for rule in document.rules:
            self._by_channel.setdefault(rule.channel, []).append(rule)

    def decide(self, subject: Subject, action: Action) -> Decision:
        """The decision on ``action`` by ``subject`` (see the module)."""
        facts = Facts(subject, action)
        hits = [
            Hit(builtin.id, builtin.decision, builtin.reason, builtin.pack)
            for builtin in self.builtin
            if action.channel in builtin.channels and builtin.test(facts)
        ]
        hits += [
            Hit(rule.id, rule.decision, rule.reason, None, rule.mode == "report")
            for rule in self._by_channel.get(action.channel, ())
            if _applies(rule.when, subject) and _matches(rule.match, facts)
        ]
        enforced = [h for h in hits if not h.report]
        if not enforced:
            default = self.document.default
            reason = f"no rule matched: the default is {default}"
            return Decision(default, reason, None, tuple(hits))
        strongest = max(enforced, key=lambda h: h.decision.weight)  # the first of the strongest
        return Decision(strongest.decision, strongest.reason, strongest.rule, tuple(hits))


def _any(patterns: Sequence[str] | None, value: str | None) -> bool:
    """No patterns, or ``value`` matches one."""
    if patterns is None:
        return True
    return value is not None and any(fnmatchcase(value, p) for p in patterns)


def _applies(when: When, subject: Subject) -> bool:
    return (
        _any(when.team, subject.team)
        and _any(when.user, subject.user)
        and _any(when.project, subject.project)
        and _any(when.repository, subject.repository)
        and _any(when.key_kind, subject.key_kind)
        and (when.tainted is None or when.tainted == subject.tainted)
        and all(subject.labels.get(k) == v for k, v in (when.labels or {}).items())
    )


def _glob(pattern: str | list[str] | None, value: str | None) -> bool:
    """No pattern, or ``value`` matches it (a list: any one of them)."""
    if pattern is None:
        return True
    if value is None:
        return False
    if isinstance(pattern, str):
        return fnmatchcase(value, pattern)
    return any(fnmatchcase(value, p) for p in pattern)


def _matches(match: Match, facts: Facts) -> bool:
    action = facts.action
    shell = match.program is not None or match.args is not None or match.command is not None
    if shell and not any(_runs(match, inv) for inv in facts.programs):
        return False
    if match.domain is not None and not fnmatchcase(facts.domain, match.domain.lower()):
        return False
    if match.arguments is not None:
        given = action.arguments or {}
        for name, pattern in match.arguments.items():
            if name not in given or not fnmatchcase(str(given[name]), pattern):
                return False
    return (
        _glob(match.path, action.path)
        and _glob(match.url, action.url)
        and _glob(match.tool, action.tool)
        and _glob(match.model, action.model)
        and _glob(match.secret, action.secret)
    )


def _runs(match: Match, inv: Invocation) -> bool:
    return (
        _glob(match.program, inv.name)
        and _glob(match.args, " ".join(inv.args))
        and _glob(match.command, " ".join((inv.name, *inv.args)))
    )
