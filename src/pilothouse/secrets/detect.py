"""Flags credential-shaped strings nobody told Pilothouse about (a cloud key pasted into a prompt,
a token in a tool's output), with the plugins of Yelp's detect-secrets.

Each plugin names a kind of credential (``"AWS Access Key"``, ``"GitHub Token"``) and finds it
with regular expressions; a ``Finding`` is that kind and where it is, never the matched text.

The plugins are used directly, not through detect-secrets' scanning functions, which read and
change its process-wide settings and work line by line. Each expression runs over the whole
text as a multi-line expression (``^`` and ``$`` still mean a line's ends), and a match that
crosses a line is looked for again line by line, as detect-secrets would. Where an expression's
syntax tree shows literals one of which every match contains (``AKC``, ``xox``, the keywords of
``password = "..."`` patterns), only around their occurrences is it tried: from as far before
one as a match can start, when that is bounded, else on its line. Plugins that check what they
match (the JSON Web Token one decodes it) are asked about the match's line. What is found then
goes through detect-secrets' heuristic filters that look at the secret alone (sequential
strings, UUIDs, templates, ``$`` variables, no letter at all).

By default every plugin runs but four: the two high-entropy-string plugins and the keyword one
flag ordinary code (in 33 MB of code and docs, this repository's and seven installed packages',
they flagged 28 and 40 strings: test data, examples, alphabets), and public IPv4 addresses are
not credentials. The default set flagged 140 there: URLs with a password in them (SQLAlchemy's
and httpx's examples) and one Slack webhook placeholder. The others can be chosen
(``CredentialDetector(kinds=...)``); they then read the text line by line, with the filters
detect-secrets applies to them (indirect references, id-like names), at a far higher cost.

Text is scanned as it is given: in a JSON body, the patterns that want a quote around a value
(``ibm_cloud_iam_key = "..."``) do not see ``\\"``; scan the decoded strings where that matters.

Cost (``bench/redact_bench.py``): about 2 ms per 20 KB with the default plugins (9 to 11 MB/s),
17 to 50 ms with all of them (detect-secrets' own ``scan_line``: 43 to 177 ms). A scan is
synchronous CPU work: callers on an event loop bound it with ``limit`` (200,000 characters by
default) or hand big texts to a thread. A detector is immutable once built and safe to share
between threads; it never logs or prints. Importing detect-secrets turns
``logging.captureWarnings`` on as a side effect; this module turns it back off (when it was
off), so the process's warnings go where they went before.
"""

from __future__ import annotations

import importlib
import inspect
import logging
import re
import warnings
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from detect_secrets.plugins.base import BasePlugin

DEFAULT_LIMIT = 200_000  # characters scanned at most
ENTROPY_KINDS = frozenset({"Base64 High Entropy String", "Hex High Entropy String"})
KEYWORD_KIND = "Secret Keyword"
NOT_BY_DEFAULT = ENTROPY_KINDS | {KEYWORD_KIND, "Public IP (ipv4)"}
MIN_GROUP_LENGTH = 8  # a shorter captured group is a tag (GitHub's "ghp"), not the secret
_UNBOUNDED = 100_000  # a width past this is "any length"


@dataclass(frozen=True, slots=True)
class Finding:
    """A credential-shaped string: its kind and where it is (offsets in the scanned text)."""

    kind: str
    start: int
    end: int


@contextmanager
def _warnings_kept() -> Iterator[None]:
    """Undo the ``logging.captureWarnings(True)`` that importing detect-secrets' logger does."""
    showwarning = warnings.showwarning
    try:
        yield
    finally:
        if warnings.showwarning is not showwarning:
            logging.captureWarnings(False)


def _plugin_classes() -> dict[str, type[BasePlugin]]:
    """Every detect-secrets plugin, by kind (its ``secret_type``)."""
    with _warnings_kept():
        import detect_secrets.plugins
        from detect_secrets.plugins.base import BasePlugin
        from detect_secrets.util.importlib import import_types_from_package

        def not_a_plugin(attribute: object) -> bool:
            return not (
                inspect.isclass(attribute)
                and issubclass(attribute, BasePlugin)
                and not inspect.isabstract(attribute)
            )

        classes = import_types_from_package(detect_secrets.plugins, filter=not_a_plugin)
    return {str(cls.secret_type): cls for cls in classes}


@dataclass(frozen=True, slots=True)
class _Expression:
    """One regular expression of a plugin, and how it is searched."""

    kind: str
    whole: re.Pattern[str]  # over the whole text, multi-line
    line: re.Pattern[str]  # the plugin's own, over one line
    # When the plugin checks its matches itself: the values it reports for a line.
    check: Callable[[str], Iterator[str]] | None
    required: re.Pattern[str] | None  # literals every match contains
    # ``required`` is case-folded and searched in the case-folded text: ``re.IGNORECASE``
    # makes literal search about seven times slower.
    folded: bool
    # ``whole`` behind a lazy prefix: one anchored ``match`` from ``back`` characters before a
    # required literal (as far as a match can start before one) finds the first match that
    # starts there or up to the literal's end.
    near: re.Pattern[str] | None
    back: int


@dataclass(frozen=True, slots=True)
class _LinePlugin:
    """A plugin that is not a list of regular expressions: asked line by line."""

    kind: str
    plugin: BasePlugin


class CredentialDetector:
    """Finds credential-shaped strings with detect-secrets' plugins."""

    __slots__ = ("_expressions", "_kinds", "_line_plugins", "_secret_filters")

    def __init__(self, kinds: Iterable[str] | None = None) -> None:
        """The plugins of ``kinds`` (their ``secret_type``); by default all but
        ``NOT_BY_DEFAULT``."""
        classes = _plugin_classes()
        with _warnings_kept():
            from detect_secrets.filters import heuristic
            from detect_secrets.plugins.base import RegexBasedDetector

        chosen = sorted(set(classes) - NOT_BY_DEFAULT if kinds is None else set(kinds))
        unknown = [kind for kind in chosen if kind not in classes]
        if unknown:
            raise ValueError(
                f"no detect-secrets plugin finds {', '.join(map(repr, unknown))}: the kinds are"
                f" {', '.join(map(repr, sorted(classes)))}"
            )
        expressions: list[_Expression] = []
        line_plugins: list[_LinePlugin] = []
        for kind in chosen:
            plugin = classes[kind]()
            if isinstance(plugin, RegexBasedDetector):
                checks = type(plugin).analyze_string is not RegexBasedDetector.analyze_string
                check = plugin.analyze_string if checks else None
                expressions.extend(_expression(kind, p, check) for p in plugin.denylist)
            else:
                line_plugins.append(_LinePlugin(kind, plugin))
        self._kinds = tuple(chosen)
        self._expressions = tuple(expressions)
        self._line_plugins = tuple(line_plugins)
        self._secret_filters: tuple[Callable[[str], bool], ...] = (
            heuristic.is_sequential_string,
            heuristic.is_potential_uuid,
            heuristic.is_templated_secret,
            heuristic.is_prefixed_with_dollar_sign,
            heuristic.is_not_alphanumeric_string,
        )

    @staticmethod
    def available() -> tuple[str, ...]:
        """Every kind detect-secrets' plugins find."""
        return tuple(sorted(_plugin_classes()))

    @property
    def kinds(self) -> tuple[str, ...]:
        """The kinds this detector looks for."""
        return self._kinds

    def __repr__(self) -> str:
        """The kinds looked for."""
        return f"CredentialDetector(kinds={list(self._kinds)!r})"

    def scan(self, text: str, *, limit: int = DEFAULT_LIMIT) -> list[Finding]:
        """The credential-shaped strings in the first ``limit`` characters of ``text``, in
        order of where they start."""
        text = text[:limit]
        found: set[tuple[int, int, str]] = set()
        folded = text.casefold()
        if len(folded) != len(text):  # a letter folded to two: offsets would not agree
            folded = ""
        for expression in self._expressions:
            haystack = text
            if expression.folded:
                haystack = folded or text
            if expression.near is not None:
                self._scan_near(expression, expression.near, text, haystack, found)
            else:
                self._scan_lines_of(expression, text, haystack, found)
        if self._line_plugins:
            self._scan_line_plugins(text, found)
        return [Finding(kind, start, end) for start, end, kind in sorted(found)]

    def _scan_near(
        self,
        expression: _Expression,
        near: re.Pattern[str],
        text: str,
        haystack: str,
        found: set[tuple[int, int, str]],
    ) -> None:
        """Try ``expression`` just before each occurrence of a literal it requires: matches,
        leftmost first and not overlapping, as ``finditer`` over each line finds them.
        ``haystack``: where the literals are looked for (``text``, or it case-folded)."""
        required = _required(expression, haystack is text)
        back = expression.back
        done = 0  # where the last match ended: the search resumes there
        line_start, line_end = 0, -1
        for literal in required.finditer(haystack):
            at = literal.start()
            if at < done:
                continue
            if at > line_end:  # a new line (a JSON body is one long line: find its ends once)
                line_start = text.rfind("\n", max(line_end, 0), at) + 1
                line_end = text.find("\n", at)
                line_end = len(text) if line_end == -1 else line_end
            match = near.match(text, max(line_start, at - back, done), line_end)
            if match is not None:
                self._keep(expression, text, match, line_start, found, group_shift=1)
                done = match.end()

    def _scan_lines_of(
        self,
        expression: _Expression,
        text: str,
        haystack: str,
        found: set[tuple[int, int, str]],
    ) -> None:
        """Search the whole text, or the lines holding a required literal."""
        required = None if expression.required is None else _required(expression, haystack is text)
        for low, high in _ranges(required, haystack):
            for match in expression.whole.finditer(text, low, high):
                start, end = match.span()
                if text.find("\n", start, end) == -1:
                    line_start = text.rfind("\n", 0, start) + 1
                    self._keep(expression, text, match, line_start, found)
                    continue
                # Across lines: detect-secrets reads a line at a time, so read the lines this
                # match touches the same way.
                first = text.rfind("\n", 0, start) + 1
                last = text.find("\n", end)
                for line_start, line in _lines(text, first, len(text) if last == -1 else last):
                    for line_match in expression.line.finditer(line):
                        self._keep(expression, line, line_match, 0, found, shift=line_start)

    def _keep(
        self,
        expression: _Expression,
        text: str,
        match: re.Match[str],
        line_start: int,
        found: set[tuple[int, int, str]],
        *,
        shift: int = 0,
        group_shift: int = 0,
    ) -> None:
        """Add what ``match`` found, unless a filter drops it: as detect-secrets reports it
        (``findall``: each group that matched, or the whole match when there is no group),
        except that groups all shorter than ``MIN_GROUP_LENGTH`` are taken for tags (GitHub's
        ``ghp``), not the secret, and the whole match is reported then. ``group_shift``: the
        groups ``match``'s pattern adds in front of the plugin's."""
        groups = match.re.groups - group_shift
        spans = [match.span(g + group_shift) for g in range(1, groups + 1)]
        if all(end - start < MIN_GROUP_LENGTH for start, end in spans):
            spans = [match.span(group_shift)]
        checked: set[str] | None = None
        for start, end in spans:
            if start >= end:
                continue
            value = text[start:end]
            if expression.check is not None:
                if checked is None:
                    line_end = text.find("\n", line_start)
                    line = text[line_start : len(text) if line_end == -1 else line_end]
                    checked = set(expression.check(line))
                if value not in checked:
                    continue
            if not any(drop(value) for drop in self._secret_filters):
                found.add((start + shift, end + shift, expression.kind))

    def _scan_line_plugins(self, text: str, found: set[tuple[int, int, str]]) -> None:
        with _warnings_kept():
            from detect_secrets.filters.heuristic import is_indirect_reference, is_likely_id_string

        for line_start, line in _lines(text, 0, len(text)):
            if is_indirect_reference(line):
                continue
            for line_plugin in self._line_plugins:
                cursor: dict[str, int] = {}
                for value in _line_values(line_plugin.plugin, line):
                    at = line.find(value, cursor.get(value, 0))
                    if at == -1 or not value:
                        continue
                    cursor[value] = at + len(value)
                    if is_likely_id_string(value, line, line_plugin.plugin) or any(
                        drop(value) for drop in self._secret_filters
                    ):
                        continue
                    found.add((line_start + at, line_start + at + len(value), line_plugin.kind))


def _line_values(plugin: BasePlugin, line: str) -> Iterator[str]:
    """What a line-by-line plugin reports for ``line``, with the entropy bar applied (the
    high-entropy plugins apply it in ``analyze_line``, which reads global settings)."""
    from detect_secrets.plugins.high_entropy_strings import HighEntropyStringsPlugin

    for value in plugin.analyze_string(line):
        if isinstance(plugin, HighEntropyStringsPlugin) and (
            plugin.calculate_shannon_entropy(value) <= plugin.entropy_limit
        ):
            continue
        yield value


def _lines(text: str, start: int, stop: int) -> Iterator[tuple[int, str]]:
    """(offset, line) for each line of ``text[start:stop]`` (``start`` begins a line)."""
    at = start
    while at <= stop:
        end = text.find("\n", at, stop)
        if end == -1:
            end = stop
        yield at, text[at:end]
        at = end + 1


def _required(expression: _Expression, unfolded: bool) -> re.Pattern[str]:
    """The expression for the literals ``expression`` requires, in the text as searched."""
    required = expression.required
    assert required is not None
    if expression.folded and unfolded:  # the text did not fold letter for letter
        return re.compile(required.pattern, re.IGNORECASE)
    return required


def _ranges(required: re.Pattern[str] | None, text: str) -> Iterator[tuple[int, int]]:
    """The spans of ``text`` to search: the lines where ``required`` matches, or all of it."""
    if required is None:
        yield 0, len(text)
        return
    done = 0
    for match in required.finditer(text):
        if match.start() < done:
            continue
        start = text.rfind("\n", done, match.start()) + 1
        end = text.find("\n", match.end())
        done = len(text) if end == -1 else end
        yield start, done


# --- literals every match contains, read off the expression's syntax tree ---------------------

_Literals = tuple[frozenset[str], int | None]  # the literals; how far into a match one starts


def _expression(
    kind: str, pattern: re.Pattern[str], check: Callable[[str], Iterator[str]] | None
) -> _Expression:
    whole = re.compile(pattern.pattern, pattern.flags | re.MULTILINE)
    literals = _required_literals(pattern)
    if literals is None:
        return _Expression(kind, whole, pattern, check, None, False, None, 0)
    strings, offset = literals
    folded = bool(pattern.flags & re.IGNORECASE)
    if folded:
        strings = frozenset(s.casefold() for s in strings)
    required = re.compile("|".join(map(re.escape, sorted(strings, key=len, reverse=True))))
    if offset is None:
        return _Expression(kind, whole, pattern, check, required, folded, None, 0)
    reach = offset + max(map(len, strings))
    end = "\n)" if pattern.flags & re.VERBOSE else ")"  # a trailing comment would eat ")"
    near = re.compile(
        f"(?s:.{{0,{reach}}}?)(" + pattern.pattern + end, pattern.flags | re.MULTILINE
    )
    return _Expression(kind, whole, pattern, check, required, folded, near, offset)


def _required_literals(pattern: re.Pattern[str]) -> _Literals | None:
    """Literals of two characters or more one of which every match of ``pattern`` contains,
    and how far into a match one can start (None: unbounded), when its syntax tree shows
    them; else None.

    The tree is the standard library's (``re._parser``): should it change shape, the answer is
    None and the pattern is searched over the whole text, slower but the same."""
    try:
        parser = importlib.import_module("re._parser")
        tree = parser.parse(pattern.pattern, pattern.flags)

        def width(items: list[Any]) -> int | None:
            high = int(parser.SubPattern(tree.state, items).getwidth()[1])
            return None if high > _UNBOUNDED else high

        literals = _sequence(list(tree), width)
    except (ImportError, AttributeError, TypeError, ValueError, IndexError, re.error):
        return None
    if literals is None or min(map(len, literals[0])) < 2:
        return None
    if any("\n" in s for s in literals[0]):
        return None
    return literals


def _sequence(items: list[Any], width: Callable[[list[Any]], int | None]) -> _Literals | None:
    """The best literals one of which a sequence's every match contains: those whose start is
    bounded first, then the longest shortest literal."""
    candidates: list[_Literals] = []
    run, run_at = "", 0
    for index, (op, argument) in enumerate(items):
        name = str(op)
        if name in ("GROUPREF", "GROUPREF_EXISTS"):
            return None  # the prefix added for searching near literals renumbers groups
        if name == "LITERAL":
            if not run:
                run_at = index
            run += chr(argument)
            continue
        if run:
            candidates.append((frozenset((run,)), width(items[:run_at])))
            run = ""
        inner = _item(name, argument, width)
        if inner is not None:
            before = width(items[:index])
            offset = None if before is None or inner[1] is None else before + inner[1]
            candidates.append((inner[0], offset))
    if run:
        candidates.append((frozenset((run,)), width(items[:run_at])))
    return max(
        candidates,
        key=lambda c: (c[1] is not None, min(map(len, c[0])), -len(c[0])),
        default=None,
    )


def _item(name: str, argument: Any, width: Callable[[list[Any]], int | None]) -> _Literals | None:
    if name == "SUBPATTERN":
        _, add_flags, del_flags, items = argument
        return None if add_flags or del_flags else _sequence(list(items), width)
    if name == "BRANCH":
        branches = [_sequence(list(items), width) for items in argument[1]]
        if any(b is None for b in branches):
            return None
        found = [b for b in branches if b is not None]
        offsets = [b[1] for b in found]
        offset = None if None in offsets else max(o for o in offsets if o is not None)
        return frozenset().union(*(b[0] for b in found)), offset
    if name in ("MAX_REPEAT", "MIN_REPEAT", "POSSESSIVE_REPEAT"):
        low, _, items = argument
        return _sequence(list(items), width) if low >= 1 else None
    if name == "ATOMIC_GROUP":
        return _sequence(list(argument), width)
    return None  # a class, any character, an assertion: no literal
