"""Deciding an agent's action: every rule that matches, the strongest decision wins.

``Policy`` is a document made ready to decide: its own rules and the built-in packs' rules it
leaves on (``policy/packs.py``). ``decide`` reads the action once (a shell line's programs and
the SQL they send; a URL's host), tries every rule of the action's channel, and answers
``deny`` if any enforced rule denies, else ``ask`` if any asks, else ``allow`` if one allows,
else the document's default. Rules in report mode are matched and returned (``hits``) but never
decide.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from fnmatch import translate
from functools import cached_property
from typing import Any
from urllib.parse import urlsplit

from pilothouse.policy.document import Channel, Document, Exception_, Rule, Verdict
from pilothouse.policy.shell import Invocation, Parsed, invocations
from pilothouse.policy.sql import Statement, sql_of, statements


@dataclass(frozen=True)
class Subject:
    """Who acts, as rules see them (a session's context and its key)."""

    team: str | None = None  # the team's name
    user: str | None = None  # the user's email
    project: str | None = None
    repository: str | None = None
    labels: Mapping[str, str] = field(default_factory=dict)
    key_kind: str = "session"
    tainted: bool = False
    team_id: str | None = None
    user_id: str | None = None


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
    excepted: str | None = None  # the exception that lifts this hit: recorded, not enforced


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
        self._rules: dict[Channel, _Index] = {}
        for position, rule in enumerate(document.rules):
            self._rules.setdefault(rule.channel, _Index()).add(_Compiled(position, rule))
        self._exceptions: dict[str, list[_Compiled]] = {}
        for position, exception in enumerate(document.exceptions):
            self._exceptions.setdefault(exception.rule, []).append(_Compiled(position, exception))

    def decide(self, subject: Subject, action: Action) -> Decision:
        """The decision on ``action`` by ``subject`` (see the module)."""
        facts = Facts(subject, action)
        hits = [
            Hit(builtin.id, builtin.decision, builtin.reason, builtin.pack)
            for builtin in self.builtin
            if action.channel in builtin.channels and builtin.test(facts)
        ]
        for channel in _SEEN_BY.get(action.channel, (action.channel,)):
            index = self._rules.get(channel)
            if index is not None:
                hits += [
                    Hit(c.id, c.decision, c.reason, None, c.report)
                    for c in index.candidates(facts)
                    if c.applies(subject) and c.matches(facts)
                ]
        if self._exceptions:
            hits = [self._lifted(hit, facts) for hit in hits]
        enforced = [h for h in hits if not h.report and h.excepted is None]
        if not enforced:
            default = self.document.default
            reason = f"no rule matched: the default is {default}"
            return Decision(default, reason, None, tuple(hits))
        strongest = max(enforced, key=lambda h: h.decision.weight)  # the first of the strongest
        return Decision(strongest.decision, strongest.reason, strongest.rule, tuple(hits))

    def _lifted(self, hit: Hit, facts: Facts) -> Hit:
        """``hit``, marked with the first exception for its rule that applies to this action."""
        for exception in self._exceptions.get(hit.rule, ()):
            if (
                exception.channel in _SEEN_BY.get(facts.action.channel, (facts.action.channel,))
                and exception.applies(facts.subject)
                and exception.matches(facts)
            ):
                return replace(hit, excepted=exception.id)
        return hit


# A git command is a command line, whichever way it comes: git rules see the shell's command
# lines (a `git push` run through Bash included), and shell rules see git actions.
_SEEN_BY = {Channel.SHELL: (Channel.SHELL, Channel.GIT), Channel.GIT: (Channel.GIT, Channel.SHELL)}


# --- rules compiled once: globs as regular expressions, shell rules indexed by program ------

Test = Callable[[str], bool]
_GLOB = re.compile(r"[*?\[]")


def _test(patterns: str | Sequence[str] | None, *, lower: bool = False) -> Test | None:
    """A test of a value against globs (any one of them); None when there are none. Globs
    without a wildcard are compared as text; the others run as one regular expression."""
    if patterns is None:
        return None
    items = [patterns] if isinstance(patterns, str) else list(patterns)
    if lower:
        items = [p.lower() for p in items]
    literals = frozenset(p for p in items if not _GLOB.search(p))
    wild = [p for p in items if _GLOB.search(p)]
    if not wild:
        return literals.__contains__
    match = re.compile("|".join(f"(?:{translate(p)})" for p in wild)).match
    if not literals:
        return lambda value: match(value) is not None
    return lambda value: value in literals or match(value) is not None


def _literal_words(patterns: str | Sequence[str] | None, *, first_word: bool) -> set[str] | None:
    """The program names a shell rule can only match (its globs' literal programs, or the
    literal first words of its command globs); None if any glob could match others."""
    if patterns is None:
        return None
    names = set()
    for pattern in [patterns] if isinstance(patterns, str) else patterns:
        word = pattern.split(" ", 1)[0] if first_word else pattern
        if not word or _GLOB.search(word):
            return None
        names.add(word)
    return names


class _Compiled:
    """A rule or exception of the document, ready to test."""

    def __init__(self, position: int, item: Rule | Exception_) -> None:
        self.position = position
        self.id = item.id
        self.channel = item.channel
        self.decision = item.decision if isinstance(item, Rule) else Verdict.ALLOW
        self.reason = item.reason
        self.report = isinstance(item, Rule) and item.mode == "report"
        when, match = item.when, item.match
        self._team, self._user = _test(when.team), _test(when.user)
        self._project, self._repository = _test(when.project), _test(when.repository)
        self._key_kind = _test(when.key_kind)
        self._tainted = when.tainted
        self._labels = tuple((when.labels or {}).items())
        self._program, self._args = _test(match.program), _test(match.args)
        self._command, self._line = _test(match.command), _test(match.line)
        self._shell = (
            match.program is not None or match.args is not None or match.command is not None
        )
        self._domain = _test(match.domain, lower=True)
        self._fields = [
            (name, test)
            for name in ("path", "url", "tool", "model", "secret")
            if (test := _test(getattr(match, name))) is not None
        ]
        self._arguments = [(k, _test(v)) for k, v in (match.arguments or {}).items()]
        programs = _literal_words(match.program, first_word=False)
        if programs is None and match.program is None:
            programs = _literal_words(match.command, first_word=True)
        self.programs = programs  # None: a candidate for every command line

    def applies(self, subject: Subject) -> bool:
        """Whether the rule is about this subject (its ``when``)."""
        return (
            _either(self._team, subject.team, subject.team_id)
            and _either(self._user, subject.user, subject.user_id)
            and _value(self._project, subject.project)
            and _value(self._repository, subject.repository)
            and _value(self._key_kind, subject.key_kind)
            and (self._tainted is None or self._tainted == subject.tainted)
            and all(subject.labels.get(k) == v for k, v in self._labels)
        )

    def matches(self, facts: Facts) -> bool:
        """Whether the action is the rule's (its ``match``)."""
        action = facts.action
        if self._shell and not any(self._runs(inv) for inv in facts.programs):
            return False
        if self._line is not None and not _value(self._line, action.command):
            return False
        if self._domain is not None and not self._domain(facts.domain):
            return False
        if self._arguments:
            given = action.arguments or {}
            for name, test in self._arguments:
                if name not in given or test is None or not test(str(given[name])):
                    return False
        return all(_value(test, getattr(action, name)) for name, test in self._fields)

    def _runs(self, inv: Invocation) -> bool:
        return (
            (self._program is None or self._program(inv.name) or self._program(inv.argv[0]))
            and _value(self._args, " ".join(inv.args))
            and _value(self._command, " ".join((inv.name, *inv.args)))
        )


class _Index:
    """A channel's rules; shell rules that can only match named programs are found by name."""

    def __init__(self) -> None:
        self._every: list[_Compiled] = []
        self._by_program: dict[str, list[_Compiled]] = {}

    def add(self, rule: _Compiled) -> None:
        if rule.programs is None:
            self._every.append(rule)
        else:
            for name in rule.programs:
                self._by_program.setdefault(name, []).append(rule)

    def candidates(self, facts: Facts) -> list[_Compiled]:
        """The rules that could match, in the document's order."""
        if not self._by_program:
            return self._every
        found = {id(r): r for r in self._every}
        for inv in facts.programs:
            for name in (inv.name, inv.argv[0]):
                for rule in self._by_program.get(name, ()):
                    found[id(rule)] = rule
        return sorted(found.values(), key=lambda r: r.position)


def _value(test: Test | None, value: str | None) -> bool:
    """No test, or a value that passes it."""
    return test is None or (value is not None and test(value))


def _either(test: Test | None, name: str | None, object_id: str | None) -> bool:
    """No test, or the name or the id passes it."""
    return (
        test is None
        or (name is not None and test(name))
        or (object_id is not None and test(object_id))
    )
