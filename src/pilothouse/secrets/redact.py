"""Redaction of known secret values: every occurrence of a value, raw or encoded, becomes a marker
that names the secret (``[REDACTED:github-token]``), never its content.

What is found, for each value (at least ``MIN_SECRET_LENGTH`` characters):

- the value itself, and its JSON-escaped forms (``json.dumps(value)[1:-1]``, ASCII or not);
- base64 of its UTF-8 bytes, standard and URL-safe alphabets, padded or not, and for each of the
  three alignments the part of the encoding that does not depend on its neighbours, so a value
  inside a longer base64 string (``base64("user:" + value)``, HTTP Basic auth) is found too
  (fragments shorter than ``MIN_FRAGMENT_LENGTH`` are left out: too likely by chance);
- its URL encodings (``quote(value, safe="")``, ``quote_plus``) and its hex, lower and upper case.

Where matches overlap, the longest of those starting earliest wins (leftmost-longest), and
matches are replaced left to right without overlapping.

How it stays cheap as secrets grow: matching runs on UTF-8 bytes, with one Aho-Corasick
automaton (pyahocorasick) over one short *anchor* per form, each hit then compared with the
whole form. pyahocorasick looks a character up among a node's children one by one, so an
automaton over whole forms costs more per character of text the more distinct characters the
forms start with (about 6 µs per 20 KB of text for each one: ten random tokens already make it
four times as slow as one). Each anchor starts at the rarest byte of its form instead (by how
often bytes occur in code and prose), and the text is translated (``bytes.translate``) so that
all those start bytes become one sentinel byte: the automaton's root has a single child, most
bytes of ordinary text leave it at once, and the cost per byte of text hardly depends on the
number of secrets (``bench/redact_bench.py``).

A ``Redactor`` is immutable once built, and safe to share between threads and tasks. A
``StreamRedactor`` redacts one stream of text arriving in pieces (it holds the undecided tail).
"""

from __future__ import annotations

import base64
import bisect
import json
import re
from collections.abc import Mapping
from itertools import islice
from typing import Any
from urllib.parse import quote, quote_plus

import ahocorasick

MIN_SECRET_LENGTH = 8  # shorter values would redact ordinary words
MIN_FRAGMENT_LENGTH = 16  # shortest aligned base64 fragment worth looking for
ANCHOR_LENGTH = 6  # bytes of each form the automaton looks for before comparing the rest

_LABEL = re.compile(r"[\w.:/@+-]{1,128}")
_URLSAFE = bytes.maketrans(b"+/", b"-_")
# Translated, every anchor's first byte is _SENTINEL, and the text's own _SENTINEL bytes are
# _OTHER (they would only make hits to compare and drop).
_SENTINEL, _OTHER = 0x01, 0x02
_SURROGATES = "surrogatepass"  # text -> UTF-8 -> text keeps lone surrogates as they were

# Printable ASCII, most frequent first, in code, Markdown and JSON bodies of both (this
# repository's sources and docs, measured once). Anchors start at their form's rarest byte.
_COMMON_FIRST = (
    " ent\\soraild\"cu\npm,.h_f():gyw=-b`vk\t\rNx[]SEA|TC0OIRPL{}>qUFD'/Mj1*#KH2B;+W4?zVG5Y36<J7"
    "@Q$X!8%9&^Z~"
)


def _rank_table() -> bytes:
    """Each byte's rank by rarity (0 the rarest): a ``bytes.translate`` table."""
    common = [ord(c) for c in _COMMON_FIRST]
    # Non-ASCII bytes rank as fairly common: they are most of the bytes of text in many
    # languages, and anchors starting there would be reached often.
    at = _COMMON_FIRST.index("k") + 1
    common[at:at] = range(0x80, 0x100)
    rarest_first = [b for b in range(256) if b not in common] + common[::-1]
    ranks = bytearray(256)
    for rank, byte in enumerate(rarest_first):
        ranks[byte] = rank
    return bytes(ranks)


_RANK = _rank_table()


def encoded_forms(value: str) -> set[str]:
    """Every form of ``value`` a redactor looks for: the value and its encodings."""
    raw = value.encode()
    forms = {value, raw.hex(), raw.hex().upper()}
    standard = base64.b64encode(raw)
    for encoded in (standard, standard.translate(_URLSAFE)):
        forms.update((encoded.decode(), encoded.rstrip(b"=").decode()))
    for offset in range(3):
        # The characters that encode this value's bits only, whatever surrounds it.
        encoded = base64.b64encode(bytes(offset) + raw)
        fragment = encoded[-(-8 * offset // 6) : 8 * (offset + len(raw)) // 6]
        if len(fragment) >= MIN_FRAGMENT_LENGTH:
            forms.update((fragment.decode(), fragment.translate(_URLSAFE).decode()))
    forms.update((quote(value, safe=""), quote_plus(value)))
    forms.update((json.dumps(value)[1:-1], json.dumps(value, ensure_ascii=False)[1:-1]))
    return forms


def _check(value: str, label: str) -> None:
    if not isinstance(value, str) or not isinstance(label, str):
        raise TypeError("secret values and their labels are str")
    if not _LABEL.fullmatch(label):
        raise ValueError(
            "a secret's label must be 1 to 128 letters, digits or . _ - : / @ +"
            " (it is the secret's name, shown in place of its value)"
        )
    if len(value) < MIN_SECRET_LENGTH:
        raise ValueError(
            f"the value of secret {label!r} is shorter than {MIN_SECRET_LENGTH} characters:"
            " too short to redact without destroying ordinary text"
        )
    try:
        value.encode()
    except UnicodeEncodeError:
        raise ValueError(f"the value of secret {label!r} is not valid Unicode text") from None


class Redactor:
    """Replaces every known secret value, raw or encoded, with ``[REDACTED:<label>]``."""

    __slots__ = (
        "_automaton",
        "_count",
        "_firsts",
        "_forms",
        "_labels",
        "_longest",
        "_markers",
        "_pairs",
        "_shortest",
        "_table",
    )

    def __init__(self, secrets: Mapping[str, str]) -> None:
        """Build from ``{value: label}``; the label is the secret's name."""
        labels: list[str] = []
        index: dict[str, int] = {}
        owner: dict[bytes, int] = {}  # every form's UTF-8 bytes -> its label's index
        for value, label in secrets.items():
            _check(value, label)
            if label not in index:
                index[label] = len(labels)
                labels.append(label)
            owner.setdefault(value.encode(), index[label])
        # Raw values first: a value's raw text is never claimed by another's encoding.
        for value, label in secrets.items():
            for form in encoded_forms(value):
                owner.setdefault(form.encode(), index[label])
        self._count = len(secrets)
        self._labels = tuple(labels)
        self._markers = tuple(f"[REDACTED:{label}]".encode() for label in labels)
        self._forms = sorted(owner)
        self._firsts = frozenset(form[0] for form in owner)
        self._pairs = frozenset(form[:2] for form in owner)
        self._shortest = min(map(len, secrets), default=0)
        self._longest = max(map(len, owner), default=0)
        self._automaton, self._table = _anchored_automaton(owner)
        if any(self.found(label) for label in labels):
            raise ValueError(
                "a secret's label contains a secret's value (labels name secrets, they are"
                " shown in place of values and must not hold them)"
            )

    @classmethod
    def empty(cls) -> Redactor:
        """A redactor that knows no secret: every method returns its input."""
        return cls({})

    def __len__(self) -> int:
        """The number of secret values known."""
        return self._count

    def __repr__(self) -> str:
        """The count only, never a value."""
        return f"<Redactor of {self._count} secret(s)>"

    def redact(self, text: str) -> str:
        """``text`` with every secret replaced; ``text`` itself when none occurs."""
        if self._automaton is None or len(text) < self._shortest:
            return text
        data = text.encode("utf-8", _SURROGATES)
        spans = self._spans(data)
        if not spans:
            return text
        return self._splice(data, spans).decode("utf-8", _SURROGATES)

    def redact_bytes(self, data: bytes) -> bytes:
        """``data`` (UTF-8 text, any bytes survive) with every secret replaced; ``data``
        itself when none occurs."""
        if self._automaton is None or len(data) < self._shortest:
            return data
        spans = self._spans(data)
        return self._splice(data, spans) if spans else data

    def redact_json(self, obj: Any) -> Any:
        """A copy of a JSON value (dicts, lists, strings; keys too) with every secret replaced;
        ``obj`` itself, not a copy, when none occurs."""
        if self._automaton is None:
            return obj
        return self._walk(obj)

    def found(self, text: str) -> list[str]:
        """The labels of the secrets in ``text``, in order of first occurrence (for audit)."""
        if self._automaton is None or len(text) < self._shortest:
            return []
        spans = self._spans(text.encode("utf-8", _SURROGATES))
        return list(dict.fromkeys(self._labels[label] for _, _, label in spans))

    def stream(self) -> StreamRedactor:
        """A redactor for one stream of text arriving in pieces."""
        return StreamRedactor(self)

    # --- matching -------------------------------------------------------------------------

    def _spans(self, data: bytes) -> list[tuple[int, int, int]]:
        """(start, end, label index) of each match, leftmost-longest, not overlapping."""
        automaton = self._automaton
        assert automaton is not None
        hits: list[tuple[int, int, int]] = []
        text = data.translate(self._table).decode("latin-1")
        for end, by_anchor in automaton.iter(text):
            anchor = end - ANCHOR_LENGTH + 1
            for offset, form, label in by_anchor.get(data[anchor : end + 1], ()):
                start = anchor - offset
                if start >= 0 and data.startswith(form, start):
                    hits.append((start, -len(form), label))
        if not hits:
            return []
        hits.sort()  # earliest first, and the longest first among those
        spans = []
        done = 0
        for start, minus_length, label in hits:
            if start >= done:
                done = start - minus_length
                spans.append((start, done, label))
        return spans

    def _splice(self, data: bytes, spans: list[tuple[int, int, int]]) -> bytes:
        parts: list[bytes] = []
        done = 0
        for start, end, label in spans:
            parts += (data[done:start], self._markers[label])
            done = end
        parts.append(data[done:])
        return b"".join(parts)

    def _walk(self, obj: Any) -> Any:
        if isinstance(obj, str):
            return self.redact(obj)
        if isinstance(obj, list):
            out: list[Any] | None = None
            for i, item in enumerate(obj):
                new = self._walk(item)
                if out is None and new is not item:
                    out = obj[:i]
                if out is not None:
                    out.append(new)
            return obj if out is None else out
        if isinstance(obj, dict):
            copy: dict[Any, Any] | None = None
            for i, (key, item) in enumerate(obj.items()):
                new_key = self.redact(key) if isinstance(key, str) else key
                new = self._walk(item)
                if copy is None and (new_key is not key or new is not item):
                    copy = dict(islice(obj.items(), i))
                if copy is not None:
                    copy[new_key] = new
            return obj if copy is None else copy
        return obj

    def _release(self, data: bytes) -> tuple[bytes, int]:
        """What of ``data`` (the head of a stream's text) can be emitted, redacted, and the
        index where the held-back tail starts: the earliest byte from which the tail could
        still become, or grow into, a form once more text comes."""
        parts: list[bytes] = []
        done = 0
        for start, end, label in self._spans(data):
            held = self._held(data, done, start + 1)
            if held is not None:
                parts.append(data[done:held])
                return b"".join(parts), held
            parts += (data[done:start], self._markers[label])
            done = end
        held = self._held(data, done, len(data))
        if held is None:
            held = len(data)
        parts.append(data[done:held])
        return b"".join(parts), held

    def _held(self, data: bytes, low: int, high: int) -> int | None:
        """The first index in [low, high) whose tail is a proper prefix of a form."""
        size = len(data)
        for at in range(max(low, size - self._longest + 1), high):
            if data[at] not in self._firsts:
                continue
            if at + 1 < size and data[at : at + 2] not in self._pairs:
                continue
            if self._extends(data[at:]):
                return at
        return None

    def _extends(self, tail: bytes) -> bool:
        """Whether some form is longer than ``tail`` and starts with it."""
        at = bisect.bisect_left(self._forms, tail)
        return any(
            len(form) > len(tail) and form.startswith(tail) for form in self._forms[at : at + 2]
        )


class StreamRedactor:
    """Redacts text that arrives in pieces (LLM streaming deltas): the concatenation of what
    ``feed`` and ``flush`` return is ``Redactor.redact`` of the concatenated pieces."""

    __slots__ = ("_pending", "_redactor")

    def __init__(self, redactor: Redactor) -> None:
        """A stream redacted by ``redactor``."""
        self._redactor = redactor
        self._pending = b""

    def feed(self, piece: str) -> str:
        """The text that is safe to emit now; a tail that could begin a secret is held back."""
        redactor = self._redactor
        if redactor._automaton is None:
            return piece
        data = self._pending + piece.encode("utf-8", _SURROGATES)
        out, held = redactor._release(data)
        self._pending = data[held:]
        return out.decode("utf-8", _SURROGATES)

    def flush(self) -> str:
        """The held-back rest, redacted: call once the stream ends."""
        data, self._pending = self._pending, b""
        return self._redactor.redact_bytes(data).decode("utf-8", _SURROGATES)

    @property
    def held(self) -> int:
        """How many bytes are held back."""
        return len(self._pending)


def _anchored_automaton(owner: Mapping[bytes, int]) -> tuple[Any, bytes]:
    """The automaton over every form's anchor, and the table that translates text for it."""
    if not owner:
        return None, b""
    chosen: list[tuple[int, bytes, int]] = []
    starts: set[int] = set()
    for form, label in owner.items():
        ranks = form[: len(form) - ANCHOR_LENGTH + 1].translate(_RANK)
        offset = ranks.index(min(ranks))
        chosen.append((offset, form, label))
        starts.add(form[offset])
    table = bytes(
        _SENTINEL if byte in starts else _OTHER if byte == _SENTINEL else byte
        for byte in range(256)
    )
    # Anchors that differ only in start bytes look alike once translated: a hit looks its
    # untranslated bytes up, so it is compared with its own forms only.
    anchors: dict[str, dict[bytes, list[tuple[int, bytes, int]]]] = {}
    for offset, form, label in chosen:
        anchor = form[offset : offset + ANCHOR_LENGTH]
        key = anchor.translate(table).decode("latin-1")
        anchors.setdefault(key, {}).setdefault(anchor, []).append((offset, form, label))
    automaton = ahocorasick.Automaton()
    for key, by_anchor in anchors.items():
        automaton.add_word(key, {anchor: tuple(e) for anchor, e in by_anchor.items()})
    automaton.make_automaton()
    return automaton, table


__all__ = [
    "ANCHOR_LENGTH",
    "MIN_FRAGMENT_LENGTH",
    "MIN_SECRET_LENGTH",
    "Redactor",
    "StreamRedactor",
    "encoded_forms",
]
