"""The policy document: YAML, validated with errors that name the line and the problem.

A document says which built-in rule packs are on (all, by default) and which of their rules are
switched off, the decision when no rule matches, and its own rules::

    default: allow
    packs:
      disabled: [pipe-to-shell]                   # whole packs
      disabled_rules: [fs.find-delete-precious]   # single built-in rules
    rules:
      - id: no-prod-kubectl
        channel: shell
        when: {labels: {env: production}}
        match: {program: kubectl, args: "delete *"}
        decision: ask
        reason: deleting in production needs a second pair of eyes
        mode: enforce                 # or report: recorded, not enforced

``load`` raises ``PolicyInvalid`` naming every problem found with its line (``details``:
``problems``, each ``{line, path, message}``).
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from pilothouse.errors import PolicyInvalid


class Channel(StrEnum):
    """What kind of action a check is about."""

    SHELL = "shell"
    FILE_READ = "file_read"
    FILE_WRITE = "file_write"
    HTTP = "http"
    GIT = "git"
    MCP = "mcp"
    LLM = "llm"
    SECRET = "secret"


class Verdict(StrEnum):
    """A rule's decision; ``DENY`` beats ``ASK`` beats ``ALLOW``."""

    ALLOW = "allow"
    ASK = "ask"
    DENY = "deny"

    @property
    def weight(self) -> int:
        return _WEIGHT[self]


_WEIGHT = {Verdict.ALLOW: 0, Verdict.ASK: 1, Verdict.DENY: 2}


class When(BaseModel):
    """Who a rule is about: every field given must hold (globs for names, exact labels)."""

    model_config = ConfigDict(extra="forbid")

    team: list[str] | None = None
    user: list[str] | None = None
    project: list[str] | None = None
    repository: list[str] | None = None
    labels: dict[str, str] | None = None
    key_kind: list[Literal["user", "service", "session"]] | None = None
    tainted: bool | None = None

    @field_validator("team", "user", "project", "repository", "key_kind", mode="before")
    @classmethod
    def _one_or_many(cls, value: Any) -> Any:
        return [value] if isinstance(value, str) else value


class Match(BaseModel):
    """What a rule's action is: every field given must hold. Globs (``*``, ``?``, ``[..]``)."""

    model_config = ConfigDict(extra="forbid")

    # shell and git: a program the command line runs (any one of them, through any wrapper),
    # and its arguments joined by spaces; or the whole invocation, program and arguments.
    program: str | None = None
    args: str | None = None
    command: str | list[str] | None = None  # any one of the globs
    line: str | list[str] | None = None  # shell, git: the whole command line, as given
    path: str | list[str] | None = None  # file_read, file_write; any one of the globs
    domain: str | None = None  # http (the URL's host)
    url: str | None = None  # http
    tool: str | None = None  # mcp: server__tool
    arguments: dict[str, str] | None = None  # mcp: argument globs
    model: str | None = None  # llm
    secret: str | None = None  # secret


class Rule(BaseModel):
    """One rule of the document."""

    model_config = ConfigDict(extra="forbid")

    id: str = Field(min_length=1, max_length=100, pattern=r"^[A-Za-z0-9_.:-]+$")
    channel: Channel
    when: When = Field(default_factory=When)
    match: Match = Field(default_factory=Match)
    decision: Verdict
    reason: str = Field(min_length=1, max_length=500)
    mode: Literal["enforce", "report"] = "enforce"


class Exception_(BaseModel):
    """An exception to one rule: where it applies, that rule's match does not count (an
    approved action's "approve and add a rule" is one)."""

    model_config = ConfigDict(extra="forbid")

    id: str = Field(min_length=1, max_length=100, pattern=r"^[A-Za-z0-9_.:-]+$")
    rule: str = Field(min_length=1, max_length=100, description="the rule it lifts")
    channel: Channel
    when: When = Field(default_factory=When)
    match: Match = Field(default_factory=Match)
    reason: str = Field(min_length=1, max_length=500)


class Approvals(BaseModel):
    """How actions a rule asks about are approved."""

    model_config = ConfigDict(extra="forbid")

    timeout_seconds: int = Field(600, ge=10, le=7 * 24 * 3600)
    # Whether the user a session acts for may decide that session's approvals.
    self_approval: bool = False


class Packs(BaseModel):
    """Which built-in packs and rules are switched off (every one is on by default)."""

    model_config = ConfigDict(extra="forbid")

    disabled: list[str] = Field(default_factory=list)
    disabled_rules: list[str] = Field(default_factory=list)

    @field_validator("disabled")
    @classmethod
    def _known_packs(cls, names: list[str]) -> list[str]:
        from pilothouse.policy.packs import PACKS  # the packs import this module

        unknown = sorted(set(names) - PACKS)
        if unknown:
            raise ValueError(f"no built-in pack {unknown}; the packs are {sorted(PACKS)}")
        return names

    @field_validator("disabled_rules")
    @classmethod
    def _known_rules(cls, names: list[str]) -> list[str]:
        from pilothouse.policy.packs import BUILTIN

        unknown = sorted(set(names) - {rule.id for rule in BUILTIN})
        if unknown:
            raise ValueError(f"no built-in rule {unknown}")
        return names


class Document(BaseModel):
    """A whole policy document."""

    model_config = ConfigDict(extra="forbid")

    default: Verdict = Verdict.ALLOW
    packs: Packs = Field(default_factory=Packs)
    approvals: Approvals = Field(default_factory=Approvals)
    rules: list[Rule] = Field(default_factory=list)
    exceptions: list[Exception_] = Field(default_factory=list)


@dataclass(frozen=True)
class Problem:
    """One thing wrong with a document: where (1-based line; 0 if unknown) and what."""

    line: int
    path: str
    message: str

    def __str__(self) -> str:
        where = f"line {self.line}" if self.line else "document"
        return f"{where}: {self.path + ': ' if self.path else ''}{self.message}"


def _invalid(problems: list[Problem]) -> PolicyInvalid:
    return PolicyInvalid(
        "; ".join(str(p) for p in problems),
        problems=[{"line": p.line, "path": p.path, "message": p.message} for p in problems],
    )


def load(text: str) -> Document:
    """The document ``text`` holds (raises PolicyInvalid naming each problem's line)."""
    try:
        node = yaml.compose(text, Loader=yaml.SafeLoader)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        line = mark.line + 1 if mark is not None else 0
        problem = getattr(exc, "problem", None) or str(exc)
        raise _invalid([Problem(line, "", f"not valid YAML: {problem}")]) from exc
    if node is None:
        return Document()
    lines: dict[tuple[str | int, ...], int] = {}
    try:
        data = _value(node, (), lines, yaml.SafeLoader(""))
    except _Refused as exc:
        raise _invalid([exc.problem]) from exc
    if not isinstance(data, dict):
        raise _invalid([Problem(node.start_mark.line + 1, "", "must be a mapping")])
    try:
        document = Document.model_validate(data)
    except ValidationError as exc:
        raise _invalid([_problem(e, lines) for e in exc.errors()]) from exc
    problems = []
    named: list[tuple[str, list[str]]] = [
        ("rules", [r.id for r in document.rules]),
        ("exceptions", [e.id for e in document.exceptions]),
    ]
    for part, ids in named:
        seen: set[str] = set()
        for i, item_id in enumerate(ids):
            if item_id in seen:
                line = lines.get((part, i, "id"), 0)
                problems.append(Problem(line, f"{part}[{i}].id", f"{item_id!r} is used twice"))
            seen.add(item_id)
    problems += _unknown_rules(document, lines)
    if problems:
        raise _invalid(problems)
    return document


def _unknown_rules(document: Document, lines: dict[tuple[str | int, ...], int]) -> list[Problem]:
    """An exception must lift a rule that exists: the document's own or a built-in one."""
    from pilothouse.policy.packs import BUILTIN

    known = {rule.id for rule in document.rules} | {rule.id for rule in BUILTIN}
    return [
        Problem(
            lines.get(("exceptions", i, "rule"), 0),
            f"exceptions[{i}].rule",
            f"no rule {exception.rule!r} in this document or the built-in packs",
        )
        for i, exception in enumerate(document.exceptions)
        if exception.rule not in known
    ]


class _Refused(Exception):
    def __init__(self, problem: Problem) -> None:
        self.problem = problem


def _value(
    node: yaml.Node, path: tuple[str | int, ...], lines: dict[Any, int], loader: yaml.SafeLoader
) -> Any:
    """The Python value of ``node``, noting each path's line in ``lines`` (``loader`` makes
    the scalars: YAML's types, as ``safe_load`` would)."""
    lines[path] = node.start_mark.line + 1
    if isinstance(node, yaml.MappingNode):
        result: dict[str, Any] = {}
        for key_node, value_node in node.value:
            key = loader.construct_object(key_node)
            if not isinstance(key, str):
                line = key_node.start_mark.line + 1
                raise _Refused(Problem(line, _dotted(path), "keys are text"))
            if key in result:
                line = key_node.start_mark.line + 1
                raise _Refused(Problem(line, _dotted((*path, key)), "given twice"))
            result[key] = _value(value_node, (*path, key), lines, loader)
        return result
    if isinstance(node, yaml.SequenceNode):
        return [_value(item, (*path, i), lines, loader) for i, item in enumerate(node.value)]
    return loader.construct_object(node)


def _problem(error: Any, lines: dict[tuple[str | int, ...], int]) -> Problem:
    loc = tuple(error["loc"])
    line = 0
    for end in range(len(loc), -1, -1):  # the deepest part of the path the YAML has
        if loc[:end] in lines:
            line = lines[loc[:end]]
            break
    message = error["msg"]
    if error["type"] == "extra_forbidden":
        message = "unknown field"
    return Problem(line, _dotted(loc), message)


def _dotted(path: tuple[Any, ...]) -> str:
    text = ""
    for part in path:
        text += f"[{part}]" if isinstance(part, int) else (f".{part}" if text else str(part))
    return text


def with_item(source: str, key: str, item: dict[str, Any]) -> str:
    """``source`` with ``item`` added at the end of its top-level list ``key`` (``rules`` or
    ``exceptions``), as text: the document's comments, order and layout stay as they were. A
    list written in flow style (``[...]``) is the one case the document is written anew."""
    node = yaml.compose(source, Loader=yaml.SafeLoader) if source.strip() else None
    entry = yaml.safe_dump([item], sort_keys=False, allow_unicode=True)
    if node is None:
        return source + yaml.safe_dump({key: [item]}, sort_keys=False, allow_unicode=True)
    found = next(
        (v for k, v in node.value if isinstance(k, yaml.ScalarNode) and k.value == key), None
    )
    if found is None:
        separator = "" if source.endswith("\n") else "\n"
        return source + separator + f"{key}:\n" + _indented(entry, 2)
    if isinstance(found, yaml.SequenceNode) and not found.flow_style and found.value:
        dash = found.value[0].start_mark.column - 2  # items are "- " then their content
        last_line = found.value[-1].end_mark.line
        lines = source.splitlines(keepends=True)
        at = last_line + (1 if found.value[-1].end_mark.column > 0 else 0)
        # Back over the blank and comment lines that follow the last item (a block mapping
        # ends where the next token starts): they belong to what comes next.
        while 0 < at <= len(lines) and lines[at - 1].strip()[:1] in ("", "#"):
            at -= 1
        head = "".join(lines[:at])
        if head and not head.endswith("\n"):
            head += "\n"
        return head + _indented(entry, dash) + "".join(lines[at:])
    data = yaml.safe_load(source) or {}
    data.setdefault(key, []).append(item)
    return str(yaml.safe_dump(data, sort_keys=False, allow_unicode=True))


def _indented(text: str, spaces: int) -> str:
    pad = " " * max(0, spaces)
    return "".join(pad + line if line.strip() else line for line in text.splitlines(True))
