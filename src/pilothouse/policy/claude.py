"""Claude Code's permission rules, imported into the policy engine.

A ``settings.json`` says, under ``permissions``, which tool uses Claude Code allows, asks about
or denies: ``Bash(git push:*)``, ``Read(./.env)``, ``Edit(src/**)``,
``WebFetch(domain:example.com)``, ``mcp__github__create_issue``. ``import_permissions`` makes
each one a rule of the same engine, so that the rules a team already wrote hold for every
harness that asks Pilothouse, not only in Claude Code:

- ``Bash(CMD)`` matches a program the command line runs with exactly those words;
  ``Bash(CMD:*)`` and ``Bash(CMD *)`` the words and anything after them; a bare ``Bash`` every
  command. The engine reads the line with the shell parser, so the rule holds through
  ``&&``, pipes, ``sh -c`` and wrappers.
- ``Read(PATH)`` is the ``file_read`` channel; ``Edit``, ``Write``, ``MultiEdit`` and
  ``NotebookEdit`` the ``file_write`` one. Paths are read as Claude Code reads them: ``//x``
  is the absolute path ``/x``, ``~/x`` is in a home directory, and ``x``, ``./x`` (from the
  current directory) and ``/x`` (from the settings file's) are relative; neither directory is
  known here, so those match ``x`` under any directory. ``**`` is any depth.
- ``WebFetch(domain:HOST)`` is the ``http`` channel (a bare ``WebFetch``: every host).
- ``mcp__SERVER`` and ``mcp__SERVER__TOOL`` (``*`` allowed) are the ``mcp`` channel.

Entries of other tools (``WebSearch``, ``Task``, ...) have no channel here and are returned as
skipped, with the reason.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from pilothouse.policy.document import Channel, Match, Rule, Verdict

LISTS = {"deny": Verdict.DENY, "ask": Verdict.ASK, "allow": Verdict.ALLOW}
FILE_TOOLS = {
    "Read": Channel.FILE_READ,
    "Edit": Channel.FILE_WRITE,
    "Write": Channel.FILE_WRITE,
    "MultiEdit": Channel.FILE_WRITE,
    "NotebookEdit": Channel.FILE_WRITE,
}
HOMES = ("/home/*/", "/root/", "/Users/*/")
_ENTRY = re.compile(r"^(?P<tool>[A-Za-z][A-Za-z0-9_]*)(?:\((?P<spec>.*)\))?$", re.DOTALL)


@dataclass
class Imported:
    """The rules made, and the entries skipped with why."""

    rules: list[Rule] = field(default_factory=list)
    skipped: list[tuple[str, str]] = field(default_factory=list)


def import_permissions(settings: Mapping[str, Any], prefix: str = "claude") -> Imported:
    """Rules from a Claude Code ``settings.json`` (its ``permissions`` lists), with ids
    ``PREFIX.LIST.N``."""
    imported = Imported()
    permissions = settings.get("permissions")
    if permissions is None:
        return imported
    if not isinstance(permissions, Mapping):
        imported.skipped.append(("permissions", "is not an object"))
        return imported
    for name, verdict in LISTS.items():
        entries = permissions.get(name) or []
        if not isinstance(entries, list):
            imported.skipped.append((name, "is not a list"))
            continue
        for i, entry in enumerate(entries):
            if not isinstance(entry, str):
                imported.skipped.append((repr(entry), "is not text"))
                continue
            made = _rule(entry.strip(), verdict, f"{prefix}.{name}.{i}")
            if isinstance(made, str):
                imported.skipped.append((entry, made))
            else:
                imported.rules.append(made)
    return imported


def _rule(entry: str, verdict: Verdict, rule_id: str) -> Rule | str:
    """The rule ``entry`` makes, or why it makes none."""
    reason = f"Claude Code permission rule {entry!r} ({verdict.value} list)"
    if entry.startswith("mcp__"):
        server, _, tool = entry.removeprefix("mcp__").partition("__")
        if not server:
            return "names no MCP server"
        match = Match(tool=f"{server}__{tool or '*'}")
        return Rule(id=rule_id, channel=Channel.MCP, match=match, decision=verdict, reason=reason)
    found = _ENTRY.match(entry)
    if found is None:
        return "is not a tool rule (Tool or Tool(specifier))"
    tool, spec = found["tool"], found["spec"]
    if tool == "Bash":
        channel, match = Channel.SHELL, Match(command=_commands(spec) if spec else None)
    elif tool in FILE_TOOLS:
        channel, match = FILE_TOOLS[tool], Match(path=_paths(spec) if spec else None)
    elif tool == "WebFetch":
        if spec and not spec.startswith("domain:"):
            return "WebFetch rules name a domain (domain:HOST)"
        host = spec.removeprefix("domain:") if spec else "*"
        channel, match = Channel.HTTP, Match(domain=host)
    else:
        return f"{tool} has no channel in Pilothouse's policy"
    return Rule(id=rule_id, channel=channel, match=match, decision=verdict, reason=reason)


def _commands(spec: str) -> list[str]:
    """The command globs of ``Bash(spec)``."""
    if spec.endswith(":*"):  # the legacy prefix form
        words = spec.removesuffix(":*").strip()
        return [words, f"{words} *"]
    if spec.endswith(" *"):
        words = spec.removesuffix(" *").strip()
        return [words, f"{words} *"]
    return [spec]


def _paths(spec: str) -> list[str]:
    """The path globs of ``Read(spec)`` (see the module): ``*`` crosses directories here."""
    glob = spec.replace("**", "*")
    if glob.startswith("//"):
        return [glob[1:]]
    if glob.startswith("~/"):
        return [home + glob[2:] for home in HOMES]
    if glob.startswith("./"):
        glob = glob[2:]
    elif glob.startswith("/"):
        glob = glob[1:]
    return [glob, f"*/{glob}"]
