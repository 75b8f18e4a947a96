"""What a shell command line runs, read with a real parser (tree-sitter's bash grammar).

A rule about ``rm`` must see the ``rm`` in ``sudo env X=1 rm -rf /``, in ``sh -c "rm -rf /"``,
in ``find . -exec rm {} \\;``, in ``xargs rm``, in ``$(rm -rf /)`` and in ``(cd / && rm -r x)``,
and must not see one in ``echo "rm -rf /"``. ``invocations`` turns a command line into every
program it would start, each with its arguments as the program receives them (quotes removed,
escapes resolved; a ``$VAR`` or ``$(...)`` the shell would expand is kept as written, since its
value is not known here), found through every wrapper that runs another command:

- lists, pipelines, subshells, ``{ ...; }``, ``if``/``while``/``for``/``case`` bodies, functions;
- command and process substitutions (``$(...)``, backticks, ``<(...)``);
- ``sh -c``/``bash -c``/... strings and ``eval``, parsed again (to ``MAX_DEPTH`` levels);
- ``env``, ``sudo``, ``doas``, ``nohup``, ``time``, ``nice``, ``timeout``, ``stdbuf``,
  ``command``, ``exec``, ``xargs``, ``watch``, ``find -exec`` and ``kubectl exec ... --``: the
  command they run, their own options skipped; ``ssh``'s remote command, parsed again.

Each invocation says what feeds its standard input through a pipe (``curl ... | sh``) and which
files its output is redirected to. A line the grammar cannot read completely is reported so
(``Parsed.complete``): a policy should not trust what it could not read.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field, replace
from functools import cache

import tree_sitter_bash
from tree_sitter import Language, Node, Parser

MAX_DEPTH = 8  # nested ``sh -c`` strings read again, at most
SHELLS = frozenset({"sh", "bash", "zsh", "dash", "ksh", "ash", "fish", "busybox"})


@dataclass(frozen=True)
class Invocation:
    """One program the command line would start."""

    argv: tuple[str, ...]
    # What the program was found through, outermost first ("sudo", "sh -c", "xargs", ...).
    via: tuple[str, ...] = ()
    # The program whose output is piped into this one's input (None: no pipe).
    piped_from: str | None = None
    # Files its output is redirected to (``>``, ``>>``, ``&>``).
    writes: tuple[str, ...] = ()
    # Where its command was read: (how many ``sh -c`` strings deep, first byte, end byte).
    span: tuple[int, int, int] = field(default=(0, 0, 0), compare=False)

    @property
    def name(self) -> str:
        """The program's name without its directory (``/bin/rm`` -> ``rm``)."""
        return self.argv[0].rsplit("/", 1)[-1] if self.argv else ""

    @property
    def args(self) -> tuple[str, ...]:
        return self.argv[1:]


@dataclass
class Parsed:
    """Every program a command line would start, and whether all of it could be read."""

    invocations: list[Invocation] = field(default_factory=list)
    complete: bool = True


@cache
def _parser() -> Parser:
    return Parser(Language(tree_sitter_bash.language()))


def invocations(command: str) -> Parsed:
    """Every program ``command`` would start (see the module)."""
    parsed = Parsed()
    _read(command, (), parsed, 0)
    return parsed


def _read(source: str, via: tuple[str, ...], parsed: Parsed, depth: int) -> None:
    if depth > MAX_DEPTH:
        parsed.complete = False
        return
    tree = _parser().parse(source.encode())
    if tree.root_node.has_error:
        parsed.complete = False
    _walk(tree.root_node, via, parsed, depth, None, ())


def _walk(
    node: Node,
    via: tuple[str, ...],
    parsed: Parsed,
    depth: int,
    piped_from: str | None,
    writes: tuple[str, ...],
) -> None:
    kind = node.type
    if kind == "command":
        _command(node, via, parsed, depth, piped_from, writes)
        return
    if kind == "pipeline":
        before: str | None = piped_from
        for child in node.named_children:
            found = len(parsed.invocations)
            _walk(child, via, parsed, depth, before, writes)
            mine = parsed.invocations[found:]
            before = mine[0].name if mine else before
        return
    if kind == "redirected_statement":
        body, targets = node.child_by_field_name("body"), _redirect_targets(node)
        if body is not None:
            # The grammar hangs ``a && b > f`` on the whole list; the shell, on ``b`` alone.
            found = len(parsed.invocations)
            _walk(body, via, parsed, depth, piped_from, writes)
            if targets:
                _redirect_last(parsed, found, body, targets)
        for child in node.named_children:  # a here-string or here-doc's substitutions
            if body is None or child.id != body.id:
                _substitutions(child, via, parsed, depth)
        return
    if kind == "variable_assignment" or kind == "declaration_command":
        _substitutions(node, via, parsed, depth)
        return
    for child in node.named_children:
        _walk(child, via, parsed, depth, piped_from if kind != "list" else None, writes)


def _redirect_last(parsed: Parsed, found: int, body: Node, targets: tuple[str, ...]) -> None:
    """Add ``targets`` to what the invocations of ``body`` that the redirection applies to
    write: all of a compound statement's (``( ... ) > f``, ``{ ...; } > f``), only the last
    command's of a list or pipeline."""
    mine = parsed.invocations[found:]
    if not mine:
        return
    if body.type in ("list", "pipeline"):
        last = body.named_children[-1]
        while last.type in ("list", "pipeline") and last.named_children:
            last = last.named_children[-1]
        start, end = last.start_byte, last.end_byte
        depth = mine[0].span[0]
        chosen = [
            i
            for i, inv in enumerate(mine)
            if inv.span[0] == depth and start <= inv.span[1] and inv.span[2] <= end
        ]
    else:
        chosen = list(range(len(mine)))
    for i in chosen:
        parsed.invocations[found + i] = replace(mine[i], writes=mine[i].writes + targets)


def _redirect_targets(node: Node) -> tuple[str, ...]:
    return tuple(filter(None, (_written_file(c) for c in node.named_children)))


def _written_file(redirect: Node) -> str | None:
    """The file an output redirection (``>``, ``>>``, ``&>``, ``2>``) writes; None for any
    other."""
    if redirect.type != "file_redirect" or not redirect.children:
        return None
    dest = redirect.child_by_field_name("destination")
    operators = [_text(c) for c in redirect.children if not c.is_named]  # after any "2"
    if dest is None or not any(">" in op for op in operators):
        return None
    return _word(dest)


def _command(
    node: Node,
    via: tuple[str, ...],
    parsed: Parsed,
    depth: int,
    piped_from: str | None,
    writes: tuple[str, ...],
) -> None:
    words: list[str] = []
    for child in node.named_children:
        if child.type == "file_redirect":
            target = _written_file(child)
            if target is not None:
                writes = (*writes, target)
        elif child.type not in ("variable_assignment", "herestring_redirect", "heredoc_redirect"):
            words.append(_word(child.named_children[0] if child.type == "command_name" else child))
    if words:
        span = (depth, node.start_byte, node.end_byte)
        _invoke(tuple(words), via, parsed, depth, piped_from, writes, span)
    # After the command itself, so that a pipeline's element is known by its own program
    # (``curl "$(cat url)" | sh`` pipes curl, not cat, into sh).
    for child in node.named_children:
        _substitutions(child, via, parsed, depth)


def _substitutions(node: Node, via: tuple[str, ...], parsed: Parsed, depth: int) -> None:
    """The commands inside ``$(...)``, backticks and ``<(...)`` in ``node``, at any depth."""
    if node.type in ("command_substitution", "process_substitution"):
        for inner in node.named_children:
            _walk(inner, via, parsed, depth, None, ())
        return
    for child in node.named_children:
        _substitutions(child, via, parsed, depth)


def _invoke(
    argv: tuple[str, ...],
    via: tuple[str, ...],
    parsed: Parsed,
    depth: int,
    piped_from: str | None,
    writes: tuple[str, ...],
    span: tuple[int, int, int],
) -> None:
    """Record ``argv``, and what it runs in turn if it is a wrapper."""
    parsed.invocations.append(Invocation(argv, via, piped_from, writes, span))
    name = argv[0].rsplit("/", 1)[-1]
    if name in SHELLS:
        script = _shell_script(argv)
        if script is not None:
            _read(script, (*via, f"{name} -c"), parsed, depth + 1)
        return
    if name == "eval" and len(argv) > 1:
        _read(" ".join(argv[1:]), (*via, "eval"), parsed, depth + 1)
        return
    if name == "ssh":  # the remote command, run by the remote shell
        remote = _skip(argv[1:], _SSH_WITH_VALUE)[1:]
        if remote:
            _read(" ".join(remote), (*via, "ssh"), parsed, depth + 1)
        return
    if name == "kubectl" and "exec" in argv and "--" in argv:
        inner = argv[argv.index("--") + 1 :]
        if inner:
            _invoke(inner, (*via, "kubectl exec"), parsed, depth, None, (), span)
        return
    if name == "find":
        for inner in _find_exec(argv):
            _invoke(inner, (*via, "find -exec"), parsed, depth, None, (), span)
        return
    unwrap = _WRAPPERS.get(name)
    if unwrap is not None:
        inner = unwrap(argv[1:])
        if inner:
            _invoke(inner, (*via, name), parsed, depth, piped_from, writes, span)


def _shell_script(argv: tuple[str, ...]) -> str | None:
    """The string ``sh -c STRING`` (also ``-xc``, ``-lc``, ``--login -c``) runs."""
    args = argv[1:]
    if argv[0].rsplit("/", 1)[-1] == "busybox":  # busybox sh -c ...
        if not args or args[0] not in SHELLS:
            return None
        args = args[1:]
    for i, arg in enumerate(args):
        if arg.startswith("-") and not arg.startswith("--") and "c" in arg[1:]:
            return args[i + 1] if i + 1 < len(args) else None
        if not arg.startswith("-"):
            return None  # a script file: not read here
    return None


def _find_exec(argv: tuple[str, ...]) -> Iterator[tuple[str, ...]]:
    """The commands of ``find ... -exec CMD ... ;`` (and ``-execdir``, ``-ok``, ``+``)."""
    args = list(argv[1:])
    i = 0
    while i < len(args):
        if args[i] in ("-exec", "-execdir", "-ok", "-okdir"):
            j = i + 1
            while j < len(args) and args[j] not in (";", "+"):
                j += 1
            if j > i + 1:
                yield tuple(args[i + 1 : j])
            i = j
        i += 1


def _skip(
    args: tuple[str, ...], with_value: frozenset[str], *, env: bool = False
) -> tuple[str, ...]:
    """``args`` after the wrapper's own options (``with_value`` take the next word too) and,
    for ``env``, its ``NAME=value`` settings."""
    i = 0
    while i < len(args):
        arg = args[i]
        if arg == "--":
            return args[i + 1 :]
        if env and _ASSIGNMENT.match(arg):
            i += 1
        elif arg.startswith("-") and len(arg) > 1:
            flag = arg.split("=", 1)[0]
            i += 2 if flag in with_value and "=" not in arg else 1
        else:
            return args[i:]
    return ()


_SSH_WITH_VALUE = frozenset(
    {"-b", "-c", "-D", "-E", "-e", "-F", "-I", "-i", "-J", "-L", "-l", "-m", "-O", "-o", "-p"}
    | {"-Q", "-R", "-S", "-W", "-w", "-B"}
)
_ASSIGNMENT = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*=")


def _timeout(args: tuple[str, ...]) -> tuple[str, ...]:
    rest = _skip(args, frozenset({"-s", "--signal", "-k", "--kill-after"}))
    return rest[1:]  # the duration


_WRAPPERS: dict[str, Callable[[tuple[str, ...]], tuple[str, ...]]] = {
    "env": lambda a: _skip(a, frozenset({"-u", "--unset", "-C", "--chdir", "-S"}), env=True),
    "sudo": lambda a: _skip(a, frozenset({"-u", "-g", "-h", "-p", "-C", "-D", "-r", "-t", "-U"})),
    "doas": lambda a: _skip(a, frozenset({"-u", "-C"})),
    "nohup": lambda a: _skip(a, frozenset()),
    "time": lambda a: _skip(a, frozenset({"-f", "-o"})),
    "nice": lambda a: _skip(a, frozenset({"-n", "--adjustment"})),
    "ionice": lambda a: _skip(a, frozenset({"-c", "-n", "-p"})),
    "stdbuf": lambda a: _skip(a, frozenset({"-i", "-o", "-e"})),
    "command": lambda a: _skip(a, frozenset()),
    "exec": lambda a: _skip(a, frozenset({"-a"})),
    "builtin": lambda a: _skip(a, frozenset()),
    "timeout": _timeout,
    "xargs": lambda a: _skip(
        a, frozenset({"-I", "-i", "-n", "-P", "-d", "-L", "-l", "-s", "-E", "-e", "-a"})
    ),
    "watch": lambda a: _skip(a, frozenset({"-n", "-d"})),
}


def _word(node: Node) -> str:
    """A word as the program receives it: quotes removed, escapes resolved, expansions kept
    as written."""
    kind = node.type
    text = _text(node)
    if kind == "raw_string":
        return text[1:-1]
    if kind == "string":
        parts = []
        for child in node.children:
            if child.type == "string_content":
                parts.append(re.sub(r'\\([\\"$`])', r"\1", _text(child)))
            elif child.type != '"':
                parts.append(_text(child))
        return "".join(parts)
    if kind == "ansi_c_string":
        return text[2:-1].encode().decode("unicode_escape", errors="replace")
    if kind == "concatenation":
        return "".join(_word(child) for child in node.children)
    if kind == "word":
        return re.sub(r"\\(.)", r"\1", text)
    return text


def _text(node: Node) -> str:
    return node.text.decode() if node.text is not None else ""
