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
    rules: list[Rule] = Field(default_factory=list)


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
    seen: set[str] = set()
    for i, rule in enumerate(document.rules):
        if rule.id in seen:
            line = lines.get(("rules", i, "id"), 0)
            raise _invalid([Problem(line, f"rules[{i}].id", f"{rule.id!r} is used twice")])
        seen.add(rule.id)
    return document


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
