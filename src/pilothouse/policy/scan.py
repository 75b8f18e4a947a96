# ruff: noqa: RUF002  (the point of this module is look-alike characters)
"""Prompt injection in what an agent read ("taint scanning"): tool results, fetched pages, issues.

``Scanner.scan`` reads a text in four steps:

1. **Normalize** (``normalize``): undo what makes an instruction invisible to a plain pattern but
   not to a model. ``\\uXXXX``/``\\xXX`` escapes, percent-escapes and HTML entities are
   decoded; then, only for text that is not ASCII: tags-block characters (U+E0000..U+E007F,
   invisible, each the twin of an ASCII character) are read as the ASCII they stand for, NFKD
   folds full-width and styled letters (``ｉｇｎｏｒｅ``, ``𝐢𝐠𝐧𝐨𝐫𝐞``),
   combining marks, zero-width, bidi and other invisible format characters are dropped, and
   Latin look-alikes from other scripts (Cyrillic ``і``, Greek ``ο``, ...) become the
   Latin letter. The look-alike table is built at import from the Unicode confusables data that
   ``confusable-homoglyphs`` ships (MIT; importing it and building the table costs about 50 ms,
   once). ``decancer`` (Rust) was measured too: fast to import, but it lowercases and
   transliterates everything and costs 0.8 ms per 20 KB; ``anyascii`` transliterates by sound
   (Cyrillic ``р`` becomes ``r``, not the ``p`` it looks like). Here the table is applied only to
   the characters in it, through one compiled character class, so ASCII text pays nothing; it
   covers Latin-like scripts only (Cyrillic, Greek, ...), so Arabic or Japanese is not garbled.
2. **Patterns** over the normalized, lowercased text: instruction overrides ("ignore all previous
   instructions", "you are now ...", "do not tell the user"), fake role markers (``<|im_start|>
   system``, ``[INST]``, "### System:"), and exfiltration (secrets sent to a URL, markdown images
   whose query carries data, curl to request bins, "base64-encode ... and append to the URL").
   Each rule has a weight: specific phrasings flag on their own, looser ones (``[INST]``, "from
   now on, you ...") only with other evidence, and a match inside a quotation or after "such as"
   counts for less (a README explaining prompt injection quotes attacks). Each rule also names
   words the text must hold before its regex runs, and where to run it (at those words), so most
   rules never run over ordinary code: ``re`` walks a text ten times slower than ``str.find``.
3. **Hidden and encoded text**: base64 and hex runs that decode to readable text are normalized
   and matched too; a match inside an HTML comment or a CSS-hidden element, one that appears only
   after normalization (zero-width splits, homoglyphs), and text written in tag characters are
   findings of their own (``hidden-text``, ``encoded``) that add weight: benign text is rarely
   hidden.
4. **Score**: the weights of the distinct rules that matched combine as independent evidence
   (noisy-OR, ``1 - prod(1 - w)``), and so does an optional ``Detector``'s probability. The text is
   flagged when the score reaches ``threshold``. A text longer than ``max_chars`` is read at its
   head and its tail.

What it catches and misses, measured on public corpora, is in ``bench/README.md`` (*Scan*):
rules catch the phrasings they name and every obfuscation of them, not intent.

A ``Detector`` is any object with ``score(text) -> float``; ``load_detector`` reads the one built
in, a logistic regression over word n-grams stored as JSON (see ``WordNgramDetector``), so no ML
dependency is needed. The scanner hands a detector the normalized text.

Precision matters as much as recall: this runs over every tool result, so rules name the object
of an override ("previous instructions", not "the rules"), an exfiltration needs both a secret
and a destination, and a ``<system>`` tag must be followed by words addressed to the model.
"""

from __future__ import annotations

import base64
import binascii
import functools
import html
import json
import math
import re
import unicodedata
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from itertools import accumulate
from pathlib import Path
from typing import Any, Protocol

from confusable_homoglyphs import confusables  # type: ignore[import-untyped]

from pilothouse.errors import ConfigError

EXCERPT_CHARS = 120
MAX_FINDINGS = 20
MAX_ENCODED_CHARS = 65_536  # a longer run is not decoded
DECODE_DEPTH = 2  # base64 inside base64, at most
DETECTOR_FORMAT = "pilothouse-scan-detector"


@dataclass(frozen=True)
class Finding:
    """One piece of evidence: what kind, which rule, and the normalized text around it."""

    kind: str  # "override", "exfiltration", "role-spoof", "hidden-text", "encoded", "model"
    pattern: str  # stable id of the rule, e.g. "override.ignore-previous"
    excerpt: str  # <= EXCERPT_CHARS of the normalized text around the match


@dataclass(frozen=True)
class ScanResult:
    """Whether a text is flagged as a prompt injection, how strongly (0..1), and why."""

    flagged: bool
    score: float
    findings: tuple[Finding, ...]


class Detector(Protocol):
    """An optional local model: probability that text is a prompt injection."""

    def score(self, text: str) -> float: ...


# --- normalization -----------------------------------------------------------------------------

_PERCENT_RUN = re.compile(r"(?:%[0-9A-Fa-f]{2})+")
_ESCAPE = re.compile(r"\\u([0-9a-fA-F]{4})|\\x([0-9a-fA-F]{2})")
_TAG_RUN = re.compile("[\U000e0000-\U000e007f]+")
# Format characters that render as nothing: zero-width, bidi controls, word joiner and invisible
# operators, BOM, soft hyphen, fillers, variation selectors, combining grapheme joiner, and the
# combining marks NFKD splits off accented letters.
_INVISIBLE = re.compile(
    "[\u00ad\u034f\u061c\u115f\u1160\u17b4\u17b5\u180b-\u180f\u200b-\u200f\u202a-\u202e"
    "\u2060-\u206f\u3164\ufe00-\ufe0f\ufeff\uffa0\ufff0-\ufffb\U0001d173-\U0001d17a"
    "\U000e0000-\U000e0fff\u0300-\u036f\u1ab0-\u1aff\u1dc0-\u1dff\u20d0-\u20ff\ufe20-\ufe2f]"
)


# Scripts whose letters stand in for Latin ones; Arabic, CJK and the rest are left alone (some of
# their letters look like Latin ones too, but folding them would garble text in those scripts).
_LOOKALIKE_SCRIPTS = (
    "LATIN",
    "CYRILLIC",
    "GREEK",
    "ARMENIAN",
    "CHEROKEE",
    "COPTIC",
    "LISU",
    "MODIFIER LETTER",
    "SMALL CAPITAL",
)


def _fold_table() -> dict[str, str]:
    """Non-ASCII characters that look like an ASCII letter, mapped to that letter."""
    table: dict[str, str] = {}
    for char, glyphs in confusables.confusables_data.items():
        if (
            len(char) != 1
            or char.isascii()
            or not unicodedata.name(char, "").startswith(_LOOKALIKE_SCRIPTS)
        ):
            continue
        letters = sorted(
            g["c"] for g in glyphs if len(g["c"]) == 1 and g["c"].isascii() and g["c"].isalpha()
        )
        if letters:
            # Unicode's prototype for every capital-I look-alike is "l"; keep it a capital I.
            table[char] = "I" if letters[0] == "l" and char.isupper() else letters[0]
    return table


_FOLD = _fold_table()
_FOLDABLE = re.compile("[" + "".join(re.escape(c) for c in sorted(_FOLD)) + "]")


def _unpercent(match: re.Match[str]) -> str:
    try:
        return bytes.fromhex(match.group().replace("%", "")).decode("utf-8")
    except UnicodeDecodeError:
        return match.group()


def _untag(match: re.Match[str]) -> str:
    text = "".join(chr(ord(c) - 0xE0000) for c in match.group() if 0xE0020 <= ord(c) <= 0xE007E)
    return f" {text} " if text else ""


def _unescape(match: re.Match[str]) -> str:
    code = int(match.group(1) or match.group(2), 16)
    return match.group() if 0xD800 <= code <= 0xDFFF else chr(code)


def normalize(text: str) -> str:
    """``text`` as a model reads it: encodings decoded, Unicode tricks undone (see the module)."""
    if "\\" in text:
        text = _ESCAPE.sub(_unescape, text)
    if "%" in text:
        text = _PERCENT_RUN.sub(_unpercent, text)
    if "&" in text:
        text = html.unescape(text)
    if text.isascii():
        return text
    text = _TAG_RUN.sub(_untag, text)
    text = _INVISIBLE.sub("", unicodedata.normalize("NFKD", text))
    text = unicodedata.normalize("NFKC", text)  # recompose what has no Latin look-alike (kana)
    return _FOLDABLE.sub(lambda m: _FOLD[m.group()], text)


# --- rules -------------------------------------------------------------------------------------


@dataclass(frozen=True)
class _Rule:
    pattern: str  # "kind.name"; several rules may share one
    weight: float
    regex: re.Pattern[str]
    # The regex runs only if every group has one of its words in the text: a word of letters
    # must be a whole word (the first set), anything else a substring (the tuple).
    gate: tuple[tuple[frozenset[bytes], tuple[str, ...]], ...]
    # Where the regex runs: with ``back`` 0, matched at each occurrence of these (which must
    # be where a match starts); otherwise searched from ``back`` before each to ``span`` after;
    # with none, searched over the whole text (for a regex that starts with a literal).
    at: tuple[str, ...]
    back: int
    span: int
    # In match mode, this must also be found in the ``back`` characters before the match.
    before: re.Pattern[str] | None

    @property
    def kind(self) -> str:
        return self.pattern.split(".", 1)[0]


def _rule(
    pattern: str,
    weight: float,
    regex: str,
    gate: str,
    at: str = "",
    back: int = 0,
    span: int = 0,
    before: str | None = None,
) -> _Rule:
    groups = tuple(_group(g.strip().split("|")) for g in gate.split(" & "))
    anchors = tuple(at.split("|")) if at else ()
    return _Rule(
        pattern,
        weight,
        re.compile(regex, re.MULTILINE),
        groups,
        anchors,
        back,
        span,
        re.compile(before) if before else None,
    )


def _group(words: list[str]) -> tuple[frozenset[bytes], tuple[str, ...]]:
    return (
        frozenset(w.encode() for w in words if w.isascii() and w.isalpha()),
        tuple(w for w in words if not (w.isascii() and w.isalpha())),
    )


def _any(words: str) -> str:
    return "(?:" + words + ")"


# Each alternation below comes with the words a text must hold for it to match (``*_WORDS``).
_VERB = _any(
    r"ignore|disregard|forget|discard|override|bypass|set\s+aside|pay\s+no\s+attention\s+to"
    r"|(?:do\s+not|don't|never)\s+(?:follow|obey)|stop\s+following|abandon"
)
VERB_WORDS = (
    "ignore|disregard|forget|discard|override|bypass|aside|attention|follow|obey|following|abandon"
)
VERB_AT = "ignore|disregard|forget|discard|override|bypass|set|pay|do|don't|never|stop|abandon"
_FILLER = (
    r"(?:\s+(?:all|any|each|every|of|the|your|my|these|those|that|what|was|were|is|you|have|been"
    r"|i|we|given|told|said|received))*"
)
_WHEN = _any(
    r"previous(?:ly)?|prior|above|preceding|earlier|former|foregoing|original|initial|system"
    r"|developer|your"
)
_OBJECT = _any(r"instructions?|prompts?|directions|directives?|programming|guardrails")
OBJECT_WORDS = (
    "instruction|instructions|prompt|prompts|directions|directive|directives|programming|guardrails"
)
_LOOSE_OBJECT = _any(r"rules|guidelines|constraints|restrictions|commands|orders|guidance|tasks?")
LOOSE_WORDS = "rules|guidelines|constraints|restrictions|commands|orders|guidance|task|tasks"
_AI = _any(
    r"ai|llm|(?:large\s+)?language\s+model|(?:ai\s+)?assistant|chatbot|(?:ai\s+|llm\s+"
    r"|coding\s+)?agent"
    r"|bot|model|gpt|claude|copilot"
)
AI_WORDS = "ai|llm|language|assistant|chatbot|agent|bot|model|gpt|claude|copilot"
_SECRET_WORD = _any(
    r"api[\s_-]?keys?|access[\s_-]?(?:keys?|tokens?)|secret(?:[\s_-]?(?:access[\s_-]?)?keys?)?s?"
    r"|tokens?|passwords?|credentials?|private[\s_-]?keys?|ssh[\s_-]?keys?"
    r"|env(?:ironment)?[\s_-]?(?:variables?|vars?)|aws_\w+|cookies?|session[\s_-]?(?:ids?|tokens?"
    r"|cookies?)"
    r"|kubeconfig|(?:conversation|chat)\s+history|system\s+prompt"
)
_SECRET_FILE = _any(
    r"~/\.ssh\S*|\$home/\.ssh\S*|\.ssh/\S*|\bid_(?:rsa|ed25519|ecdsa)\b(?!\.pub)|\.env\b"
    r"|\.aws/credentials|\.netrc|\.npmrc|\.pypirc|\.git-credentials|\.kube/config|/etc/(?:passwd"
    r"|shadow)"
)
_SECRET = rf"(?:\b{_SECRET_WORD}\b|{_SECRET_FILE})"
SECRET_WORDS = (
    "api|apikey|access|secret|secrets|token|tokens|password|passwords|credential|credentials"
    "|private"
    "|ssh|env|environment|aws|cookie|cookies|session|kubeconfig|history|prompt|netrc|npmrc|pypirc"
    "|id|passwd|shadow"
)
_SEND = _any(
    r"send|post|upload|transmit|forward|exfiltrate|leak|e-?mail|submit|paste|deliver|relay"
)
SEND_WORDS = (
    "send|post|upload|transmit|forward|exfiltrate|leak|email|mail|submit|paste|deliver|relay"
)
SEND_AT = (
    "send|post|upload|transmit|forward|exfiltrate|leak|email|e-mail|submit|paste|deliver|relay"
)
_DESTINATION = _any(
    r"https?://|[\w.+-]+@[\w-]+\.[a-z]{2,}|webhook"
    r"|(?:the\s+following|this|my|our|attacker'?s?)\s+(?:url|address|endpoint|server|link|webhook)"
)
DESTINATION_WORDS = "http|https|@|webhook|url|address|endpoint|server|link"
_BINS = _any(
    r"webhook\.site|requestbin|pipedream\.net|burpcollaborator\.net|oastify\.com|interact\.sh"
    r"|oast\.(?:fun|pro|live|site|online|me)|requestcatcher\.com|beeceptor\.com|hookbin\.com"
    r"|postb\.in"
    r"|dnslog\.cn|ceye\.io|canarytokens\.com"
)
BIN_WORDS = (
    "webhook|requestbin|pipedream|burpcollaborator|oastify|interact|oast|requestcatcher|beeceptor"
    "|hookbin|postb|dnslog|ceye|canarytokens"
)
_PASTES = _any(
    r"pastebin\.com|paste\.ee|hastebin\.com|termbin\.com|transfer\.sh|0x0\.st|file\.io"
    r"|ngrok(?:-free)?\.(?:io|app|dev)|trycloudflare\.com"
)
PASTE_WORDS = "pastebin|paste|hastebin|termbin|transfer|st|file|ngrok|trycloudflare"
_NET = _any(r"curl|wget|nc|ncat|netcat|invoke-webrequest|invoke-restmethod|iwr")
NET_WORDS = "curl|wget|nc|ncat|netcat|invoke|iwr"
NET_AT = "curl|wget|nc |ncat|netcat|invoke-|iwr"
_PLACEHOLDER = r"(?:\{[^}\s]{0,40}\}|<[^>\s]{1,40}>|\[[a-z_ ]{2,40}\]|\$\{?\w+|%s|\{\{)"

_RULES: tuple[_Rule, ...] = (
    # --- instruction overrides
    _rule(
        "override.ignore-previous",
        0.8,
        rf"\b{_VERB}{_FILLER}\s+(?:{_WHEN}\s+|all\s+)(?:[\w-]+\s+){{0,2}}?{_OBJECT}\b",
        f"{OBJECT_WORDS} & {VERB_WORDS}",
        VERB_AT,
    ),
    _rule(
        "override.ignore-previous",
        0.7,
        rf"\b{_VERB}{_FILLER}\s+{_WHEN}\s+(?:[\w-]+\s+){{0,2}}?{_LOOSE_OBJECT}\b",
        f"{LOOSE_WORDS} & {VERB_WORDS}",
        VERB_AT,
    ),
    _rule(
        "override.ignore-previous",
        0.7,
        rf"\b{_VERB}{_FILLER}\s+(?:[\w-]+\s+){{0,2}}?{_OBJECT}\s+(?:above|before|so\s+far"
        r"|(?:you|i)\s+(?:were|have\s+been|was)\s+given|given\s+(?:to\s+you|above|before"
        r"|earlier))\b",
        f"{OBJECT_WORDS} & {VERB_WORDS} & above|before|far|given",
        VERB_AT,
    ),
    _rule(
        "override.ignore-previous",
        0.6,
        r"\b(?:ignore|disregard|forget)\s+(?:everything|anything|all)\s+(?:that\s+)?(?:you\s+"
        r"(?:were|have\s+been)\s+told|(?:i|we)\s+(?:said|told\s+you)|(?:written\s+)?above|before"
        r"|so\s+far|previously|until\s+now)\b",
        "ignore|disregard|forget & everything|anything|all",
        "ignore|disregard|forget",
    ),
    _rule(
        "override.disregard-above",
        0.55,
        r"\b(?:ignore|disregard|forget)\s+(?:all\s+(?:of\s+)?)?(?:the|that)\s+"
        r"(?:text\s+|content\s+|message\s+)?(?:above|before)\s*(?:[.,;:!]|and\b|$)",
        "ignore|disregard|forget & above|before",
        "ignore|disregard|forget",
    ),
    _rule(
        "override.new-instructions",
        0.7,
        r"\bnew\s+(?:system\s+(?:prompt|message|instructions?)|instructions?|directives?)"
        r"\s*(?::|=|--|is\b|are\b|follows?\b)",
        "new & instructions|instruction|directive|directives|system",
        "new",
    ),
    _rule(
        "override.new-instructions",
        0.3,
        r"\bnew\s+system\s+(?:prompt|message)\b",
        "new & system & prompt|message",
        "new",
    ),
    _rule(
        "override.new-instructions",
        0.5,
        r"\byour\s+(?:new|real|actual|true|updated|revised)\s+(?:instructions?|task|objective|goal"
        r"|mission|directive)s?\s+(?:is|are|will\s+be|now)\b",
        "your & new|real|actual|true|updated|revised & instructions|instruction|task|objective"
        "|goal|mission|directive",
        "your",
    ),
    _rule(
        "override.you-are-now",
        0.7,
        r"\byou\s+are\s+now\s+(?:no\s+longer\b|free\b|unrestricted|unfiltered|uncensored|jailbroken"
        r"|dan\b|evil\b|in\s+(?:developer|god|admin|jailbreak|dan|unrestricted|debug|sudo)\s+mode"
        r"|operating\s+(?:as|in|without)|acting\s+as|called\b|named\b|known\s+as)",
        "now & you & are",
        "you",
    ),
    _rule(
        "override.you-are-now",
        0.6,
        rf"\byou\s+are\s+now\s+(?:a\s+|an\s+|the\s+|my\s+)?(?:[\w-]+\s+){{0,3}}?(?:{_AI}|persona"
        r"|character"
        r"|dan|entity|hacker|admin(?:istrator)?)\b",
        "now & you & are",
        "you",
    ),
    _rule(
        "override.you-are-now",
        0.35,
        r"\bfrom\s+now\s+on,?\s+you\s+(?:are|will|must|shall|should|act|respond|answer|reply"
        r"|only)\b",
        "now & from & on & you",
        "from",
    ),
    _rule(
        "override.jailbreak",
        0.7,
        rf"\b(?:act|behave|respond|answer|pretend)\s+(?:as|like|to\s+be)\s+(?:if\s+you\s+(?:are"
        r"|were)\s+)?"
        rf"(?:an?\s+)?(?:[\w-]+\s+){{0,3}}?{_AI}\s+(?:with(?:out)?|that\s+(?:has|have)\s+no"
        r"|free\s+(?:of|from))\s+(?:any\s+|no\s+)?(?:restrictions|filters|limits|limitations|rules"
        r"|guidelines|censorship|ethics|morals)",
        "restrictions|filters|limits|limitations|rules|guidelines|censorship|ethics|morals"
        f" & act|behave|respond|answer|pretend & {AI_WORDS}",
        "act|behave|respond|answer|pretend",
    ),
    _rule(
        "override.jailbreak",
        0.6,
        r"\b(?:do\s+anything\s+now|developer\s+mode\s+(?:enabled|activated|output)"
        r"|(?:jailbreak|jailbroken|dan)\s+mode|stay\s+in\s+character"
        r"|no\s+(?:ethical|moral)\s+(?:guidelines|restrictions|limits|constraints))\b",
        "anything|mode|character|ethical|moral & now|enabled|activated|output|mode|character"
        "|guidelines|restrictions|limits|constraints",
        "anything|mode|character|ethical|moral",
        back=20,
        span=40,
    ),
    _rule(
        "override.conceal",
        0.6,
        r"\b(?:do\s+not|don't|dont|never|without)\s+(?:tell(?:ing)?|inform(?:ing)?|notify(?:ing)?"
        r"|alert(?:ing)?|warn(?:ing)?|mention(?:ing)?\s+(?:this|it|that|anything)\s+to"
        r"|reveal(?:ing)?\s+(?:this|it|that)\s+to|let(?:ting)?|(?:show|display)(?:ing)?\s+(?:this"
        r"|it|these)(?:\s+[\w-]+){0,2}\s+to)"
        r"\s+(?:the|your)\s+(?:user|human|operator)s?\b",
        "user|users|human|operator|operators & not|don|dont|never|without",
        "do|don't|dont|never|without",
    ),
    _rule(
        "override.conceal",
        0.6,
        r"\b(?:keep|hide)\s+(?:this|it|these\s+instructions)\s+(?:a\s+)?(?:secret|hidden)\s+from"
        r"\s+(?:the\s+)?(?:user|human)\b",
        "user|human & secret|hidden",
        "keep|hide",
    ),
    _rule(
        "override.conceal",
        0.6,
        r"\bthe\s+user\s+(?:must|should|will)\s+(?:not|never)\s+(?:know|see|be\s+told|find\s+out"
        r"|notice)\b",
        "user & not|never & know|see|told|find|notice",
        "the user",
    ),
    _rule(
        "override.reveal-prompt",
        0.6,
        r"\b(?:reveal|print|output|repeat|show|display|leak|dump|expose|give\s+me|tell\s+me|share"
        r"|write\s+out)\s+(?:me\s+)?(?:all\s+)?(?:of\s+)?your\s+(?:(?:full|entire|complete|original"
        r"|hidden|initial|exact|secret|internal)\s+)*(?:system\s+(?:prompt|message|instructions?)"
        r"|initial\s+(?:prompt|instructions)|instructions|prompt|pre-?prompt)\b",
        "your & prompt|instructions|preprompt|message",
        "reveal|print|output|repeat|show|display|leak|dump|expose|give|tell|share|write",
    ),
    _rule(
        "override.reveal-prompt",
        0.3,
        r"\b(?:reveal|print|output|repeat|show|display|leak|dump|expose)\s+the\s+(?:(?:full|entire"
        r"|hidden|initial|secret)\s+)*(?:system\s+prompt|hidden\s+instructions"
        r"|initial\s+instructions)\b",
        "system|hidden|initial & prompt|instructions",
        "reveal|print|output|repeat|show|display|leak|dump|expose",
    ),
    _rule(
        "override.addressed-to-model",
        0.45,
        rf"\b(?:if|when)\s+you\s+are\s+(?:an?\s+)?{_AI}\b",
        f"you & are & if|when & {AI_WORDS}",
        "you are",
        back=8,
        span=60,
    ),
    _rule(
        "override.addressed-to-model",
        0.4,
        rf"\b(?:note|message|instructions?|attention|important)\s+(?:to|for)\s+(?:the\s+|any\s+"
        rf"|all\s+)?{_AI}s?\b",
        f"note|message|instruction|instructions|attention|important & {AI_WORDS}",
        "note|message|instruction|attention|important",
    ),
    _rule(
        "override.user-impersonation",
        0.45,
        r"\b(?:the\s+)?(?:task|instructions?|request|question)\s+(?:that\s+)?(?:i|the\s+user"
        r"|your\s+user)"
        r"\s+(?:gave|give|asked|sent)\s+you\b",
        "gave|give|asked|sent & task|instruction|instructions|request|question",
        "gave you|give you|asked you|sent you",
        back=60,
        span=20,
    ),
    _rule(
        "override.user-impersonation",
        0.45,
        r"\b(?:important|urgent)\s+(?:message|instructions?|notice)\s+from\s+(?:me|the\s+user"
        r"|your\s+user"
        r"|your\s+developer|the\s+developer|the\s+admin(?:istrator)?|the\s+system|openai"
        r"|anthropic)\b",
        "important|urgent & message|instruction|instructions|notice & from",
        "important|urgent",
    ),
    _rule(
        "override.ignore-previous",
        0.7,
        r"\b(?:ignore|disregard|forget)\s+(?:the\s+|all\s+(?:the\s+)?)?(?:previous|preceding|prior"
        r"|above|earlier"
        r"|original)\s+(?:text|content|input|messages?|conversation|context|question|request)\b"
        r"|\b(?:ignore|disregard|forget)\s+(?:the\s+user(?:'s\s+(?:task|question|request))?"
        r"|the\s+(?:user'?s?\s+)?question"
        r"|my\s+original\s+(?:question|request)|your\s+(?:task|instructions|guidelines|rules))\b",
        "ignore|disregard|forget & text|content|input|message|messages|conversation|context"
        "|question"
        "|request|user|task|instructions|guidelines|rules",
        "ignore|disregard|forget",
    ),
    _rule(
        "override.ignore-previous",
        0.7,
        r"\b(?:(?:ignoriere|ignorieren\s+sie|vergiss|vergessen\s+sie|missachte)\s+(?:(?:alle|deine"
        r"|die|ihre"
        r"|vorherigen|bisherigen|obigen)\s+)*(?:anweisungen|instruktionen|richtlinien|regeln"
        r"|vorgaben)"
        r"|(?:ignore[sz]?|oublie[sz]?)\s+(?:toutes\s+|tous\s+)?(?:les\s+|tes\s+"
        r"|vos\s+)?(?:instructions|consignes"
        r"|directives)|(?:ignora|ignore|olvida|olvide|dimentica|esque[cç]a)\s+(?:todas\s+"
        r"|tutte\s+)?(?:las\s+|tus"
        r"\s+|sus\s+|le\s+|tue\s+|as\s+)?(?:instrucciones|indicaciones|istruzioni"
        r"|instru[cç][oõ]es))\b"
        r"|(?:忽略|无视|忽视)(?:之前|以上|上面|先前|前面|所有|全部|的)*(?:指令|指示|说明|提示)"
        r"|(?:これまで|以前|前)の指示.{0,6}無視|تجاهل\s+(?:جميع\s+)?التعليمات",
        "ignoriere|ignorieren|vergiss|vergessen|missachte|ignore|ignores|ignorez|oublie|oubliez"
        "|ignora"
        "|olvida|olvide|dimentica|esqueca|esque|忽略|无视|忽视|無視|تجاهل",
        "ignoriere|ignorieren|vergiss|vergessen|missachte|ignore|oublie|ignora|olvida|olvide"
        "|dimentica"
        "|esque|忽略|无视|忽视|これまで|以前|前の|تجاهل",
    ),
    _rule(
        "override.ignore-previous",
        0.6,
        r"\b(?:supersedes?|overrides?|replaces?|takes?\s+precedence\s+over)\s+(?:all\s+)?(?:prior"
        r"|previous|earlier"
        r"|other|any|your)\s+(?:instructions?|directives?|prompts?)\b",
        "supersede|supersedes|override|overrides|replace|replaces|precedence & instruction"
        "|instructions"
        "|directive|directives|prompt|prompts",
        "supersede|supersedes|override|overrides|replace|replaces|take|takes",
    ),
    _rule(
        "override.rules-changed",
        0.6,
        r"\byour\s+(?:rules|guidelines|instructions|restrictions|programming|guardrails"
        r"|filters)\s+(?:have|has)\s+"
        r"(?:changed|been\s+(?:updated|changed|removed|lifted|disabled|suspended))",
        "your & changed|updated|removed|lifted|disabled|suspended",
        "your",
    ),
    _rule(
        "override.output-hijack",
        0.45,
        r"\b(?:reply|respond|answer|output)\s+(?:only\s+)?with\s+(?:exactly|only|just)\b"
        r"|\byour\s+(?:entire|whole|only)\s+(?:reply|response|answer|output)\s+(?:must|should"
        r"|will)\b",
        "reply|respond|answer|output|your & exactly|only|just|entire|whole",
        "reply|respond|answer|output|your",
    ),
    _rule(
        "override.output-hijack",
        0.45,
        r"\binstead\s+of\s+(?:a\s+normal\s+|the\s+(?:usual|normal|actual)\s+)?(?:answer(?:ing)?"
        r"|respond(?:ing)?"
        r"|repl(?:y|ying)|summar(?:y|izing|ising)|describing)\b",
        "instead & answer|answering|responding|reply|replying|summary|summarizing|summarising"
        "|describing",
        "instead",
    ),
    _rule(
        "override.output-hijack",
        0.45,
        r"(?:your|every|each|any)\s+(?:answer|reply|response|summary)s?\b[^.\n]{0,40}\b(?:add"
        r"|append|include"
        r"|insert|write|say|output|print|cite|mention)\b",
        "answer|reply|response|summary|answers|replies|responses|summaries & add|append|include"
        "|insert"
        "|write|say|output|print|cite|mention",
        "your|every|each|any",
        back=24,
        before=r"\b(?:at\s+the\s+end\s+of|before|after|in)\s+$",
    ),
    _rule(
        "override.output-hijack",
        0.45,
        r"\b(?:every|any|each)\s+(?:answer|reply|response|summary)\s+(?:that|which|drawing|citing"
        r"|about|on|to|you"
        r"|from)\b[^.\n]{0,80}\b(?:must|should|shall|has\s+to|needs\s+to)\b",
        "answer|reply|response|summary & must|should|shall|has|needs & every|any|each",
        "every|any|each",
    ),
    _rule(
        "override.output-hijack",
        0.45,
        r"\bwhen\s+you\s+(?:summari[sz]e|answer|reply\s+to|respond\s+to)\s+(?:this"
        r"|these)\b[^.\n]{0,40}"
        r"\b(?:must|always|include|add|append)\b",
        "summarize|summarise|answer|reply|respond & must|always|include|add|append",
        "when you",
    ),
    _rule(
        "override.verbatim",
        0.3,
        r"\b(?:add|append|include|output|reply|respond|say|write|print|end|repeat|cite"
        r"|quote)\b(?:\s+[\w-]+){0,3}?"
        r"\s+(?:exactly|verbatim|word\s+for\s+word)\b",
        "exactly|verbatim|word & add|append|include|output|reply|respond|say|write|print|end"
        "|repeat|cite|quote",
        "exactly|verbatim|word for word",
        back=60,
        span=20,
    ),
    _rule(
        "override.addressed-to-model",
        0.35,
        r"\b(?:whenever|if|when)\s+(?:a|the)\s+user\s+(?:asks|requests|mentions|queries|says"
        r"|types)\b",
        "user & asks|requests|mentions|queries|says|types & whenever|if|when",
        "a user|the user",
        back=10,
        span=30,
    ),
    _rule(
        "override.memory",
        0.45,
        r"\b(?:save|store|remember|add|write|keep)\s+(?:this|the\s+following"
        r"|it)[^.\n]{0,40}\b(?:your|long[- ]term)"
        r"\s+memory\b",
        "memory & save|store|remember|add|write|keep",
        "memory",
        back=80,
        span=8,
    ),
    _rule(
        "override.memory",
        0.45,
        r"\b(?:every|all)\s+future\s+(?:replies|reply|responses?|answers?|summar(?:y|ies)"
        r"|conversations?|sessions?)\b",
        "future & every|all",
        "future",
        back=8,
        span=30,
    ),
    _rule(
        "override.reveal-prompt",
        0.55,
        r"\brepeat\s+(?:back\s+)?(?:the\s+|all\s+(?:the\s+)?)?(?:words|text|everything|lines?"
        r"|sentences?)\s+"
        r"(?:above|before|preceding)|\b(?:summary|summari[sz]e|list|repeat"
        r"|reveal)\b[^.\n]{0,60}\binstructions\s+"
        r"(?:you\s+(?:were|have\s+been)\s+given|you\s+received|you\s+are\s+following)\b",
        "repeat|summary|summarize|summarise|list|reveal & words|text|everything|line|lines|sentence"
        "|sentences|instructions",
        "repeat|summary|summarize|summarise|list|reveal",
    ),
    _rule(
        "override.jailbreak",
        0.7,
        rf"\b(?:act|behave|pretend|imagine)\s+(?:(?:that\s+)?you\s+are"
        rf"|you're)\s+(?:an?\s+)?(?:[\w-]+\s+){{0,3}}?"
        rf"{_AI}\s+(?:with(?:out)?|that\s+(?:has|have)\s+no|free\s+(?:of|from))\s+(?:any\s+|no\s+)?"
        r"(?:restrictions|filters?|limits|limitations|rules|guidelines|censorship|ethics|morals)"
        r"|\b(?:act|behave|pretend|respond)\s+(?:as|like|to\s+be)\s+(?:an?\s+)?(?:uncensored"
        r"|unfiltered|unrestricted"
        r"|jailbroken|evil|amoral|unethical|unaligned)\b",
        "act|behave|pretend|imagine|respond & restrictions|filter|filters|limits|limitations|rules"
        "|guidelines"
        "|censorship|ethics|morals|uncensored|unfiltered|unrestricted|jailbroken|evil|amoral"
        "|unethical|unaligned",
        "act|behave|pretend|imagine|respond",
    ),
    _rule(
        "override.decode-and-run",
        0.6,
        r"\b(?:decode|translate|decipher|deobfuscate|reverse|unscramble)\b[^.\n]{0,60}\b(?:and"
        r"|then)\s+(?:do\s+what\s+it"
        r"\s+says|follow\s+(?:the\s+)?(?:instructions?|it|them)|execute\s+(?:it|them)|run\s+(?:it"
        r"|them)|obey|carry"
        r"\s+(?:it|them)\s+out)\b",
        "decode|translate|decipher|deobfuscate|reverse|unscramble & and|then & do|follow|execute"
        "|run|obey|carry",
        "decode|translate|decipher|deobfuscate|reverse|unscramble",
    ),
    _rule(
        "override.addressed-to-model",
        0.45,
        r"\b(?:(?:ai|llm)\s+(?:agents?|assistants?|models?|systems?)|(?:all"
        r"|any)\s+(?:ai\s+)?(?:assistants?|agents?"
        r"|models?|llms?|bots?))\s+(?:reading|processing|integrating|summari[sz]ing|parsing"
        r"|that\s+(?:read|process))\b",
        "ai|llm|all|any & agent|agents|assistant|assistants|model|models|system|systems|llms|bot"
        "|bots"
        " & reading|processing|integrating|summarizing|summarising|parsing|read|process",
        "reading|processing|integrating|summarizing|summarising|parsing|that read|that process",
        back=40,
        span=20,
    ),
    _rule(
        "override.addressed-to-model",
        0.45,
        r"\b(?:assistant|ai|model|llm)[- ]only\s+(?:instruction|note|directive|message)s?\b",
        "only & assistant|ai|model|llm",
        "only",
        back=12,
        span=30,
    ),
    _rule(
        "override.hidden-directive",
        0.4,
        r"\b(?:hidden|secret|standing|special|priority|confidential|covert)\s+(?:directive"
        r"|instruction|command|order)s?\b"
        r"|\b(?:message|instructions?|notice|directive)\s+from\s+(?:the\s+)?(?:administrator|admin"
        r"|developer|operator"
        r"|security\s+team|openai|anthropic)\b",
        "directive|directives|instruction|instructions|command|commands|order|orders|message|notice"
        " & hidden|secret|standing|special|priority|confidential|covert|from",
        "hidden|secret|standing|special|priority|confidential|covert|message|instruction|notice"
        "|directive",
    ),
    _rule(
        "exfiltration.send-secret",
        0.5,
        rf"\b{_SEND}\b[^.\n]{{0,40}}\b(?:externally|to\s+an?\s+(?:external|outside"
        r"|third[- ]party)\s+\w+"
        r"|outside\s+(?:the\s+)?(?:company|organi[sz]ation))\b",
        f"{SEND_WORDS} & externally|external|outside|third",
        SEND_AT,
    ),
    # --- fake role markers
    _rule(
        "role-spoof.chat-template",
        0.7,
        r"<\|im_start\|>\s*system|<\|start_header_id\|>\s*system|<\|system\|>",
        "<| & system",
    ),
    _rule(
        "role-spoof.chat-template",
        0.3,
        r"<\|(?:im_start|im_end|im_sep|start_header_id|end_header_id|eot_id|user|assistant"
        r"|endoftext)\|>",
        "<|",
    ),
    _rule("role-spoof.inst", 0.45, r"\[/?inst\]|<<\s*/?sys\s*>>", "inst]|<<"),
    _rule(
        "role-spoof.system-tag",
        0.6,
        r"<\s*(?:system|system[_-]?(?:prompt|message|instructions?)|sys|instructions?|admin"
        r"|developer)"
        r"(?:\s[^<>]{0,40})?>(?=\s*[^<\s][^<]{0,60}?\b(?:you|your|ignore|must|assistant|ai"
        r"|instructions?|new)\b)",
        "system|sys|instruction|instructions|admin|developer & <",
    ),
    _rule(
        "role-spoof.role-header",
        0.55,
        r"^[ \t>*]*(?:#{1,6}[ \t]*)?[\[*]*(?:system|developer"
        r"|admin(?:istrator)?)(?:[ \t]+(?:message"
        r"|prompt|note|override))?[\]*]*[ \t]*:[ \t]*(?=you\b|your\b|ignore\b|disregard\b|new\b"
        r"|from\s+now\s+on\b|always\b|never\b|do\s+not\b|important\b)",
        "system|developer|admin|administrator & you|your|ignore|disregard|new|from|always|never|do"
        "|important & :",
        "system|developer|admin",
        back=24,
        span=60,
    ),
    _rule(
        "role-spoof.role-header",
        0.45,
        r"^[ \t]*#{2,6}[ \t]*(?:system|system\s+(?:prompt|message|instructions?)"
        r"|new\s+instructions?"
        r"|admin(?:istrator)?\s+(?:message|instructions?|override))[ \t]*:?[ \t]*$",
        "system|instruction|instructions|admin|administrator & ##",
        "system|new|admin",
        back=16,
        span=40,
    ),
    _rule(
        "role-spoof.context-escape",
        0.5,
        r"<\s*/\s*(?:tool[_-]?(?:result|output|response)s?|function[_-]?(?:results?|output)"
        r"|search[_-]?results?|untrusted[_-]?(?:content|data|input|text)|user[_-]?(?:input|query)"
        r"|document[_-]?content|web[_-]?(?:page|content))\s*>",
        "</",
    ),
    _rule(
        "role-spoof.context-escape",
        0.35,
        r"\b(?:end|close)\s+of\s+(?:the\s+)?(?:tool\s+(?:output|result)|search\s+results?"
        r"|untrusted\s+(?:content|data|input)|user\s+(?:input|data)|document|context|email"
        r"|web\s*page)\b"
        r"[\s\-=#*\])>]*\n[\s\-=#*\[(<]*(?:system|instructions?|new\s+instructions?|important"
        r"|assistant"
        r"|admin)\b",
        "end|close & of & system|instruction|instructions|important|assistant|admin",
        "end|close",
    ),
    # --- exfiltration
    # A secret file sent to an address is an attack; an API key sent to a URL is also what every
    # API's docs say, so that counts only with other evidence.
    _rule(
        "exfiltration.send-secret",
        0.7,
        rf"\b{_SEND}\b[^.\n]{{0,80}}?{_SECRET_FILE}[^\n]{{0,80}}?\b(?:to|at|into|via|on|using)\b"
        rf"[^.\n]{{0,40}}?{_DESTINATION}",
        f"{SEND_WORDS} & {SECRET_WORDS} & {DESTINATION_WORDS}",
        SEND_AT,
    ),
    _rule(
        "exfiltration.send-secret",
        0.45,
        rf"\b{_SEND}\b[^.\n]{{0,80}}?\b{_SECRET_WORD}\b[^\n]{{0,80}}?\b(?:to|at|into|via|on"
        r"|using)\b"
        rf"[^.\n]{{0,40}}?{_DESTINATION}",
        f"{SEND_WORDS} & {SECRET_WORDS} & {DESTINATION_WORDS}",
        SEND_AT,
    ),
    _rule(
        "exfiltration.send-secret",
        0.7,
        rf"{_SEND}\b[^.\n]{{0,60}}?\b(?:to|at|into|via)\b[^.\n]{{0,40}}?{_DESTINATION}",
        f"{SEND_WORDS} & {SECRET_WORDS} & {DESTINATION_WORDS} & and|then",
        SEND_AT,
        back=150,
        before=rf"{_SECRET}[^.\n]{{0,100}}?\b(?:and|then)\s+$",
    ),
    _rule(
        "exfiltration.send-secret",
        0.6,
        rf"{_SEND}\b\s+(?:it|them|this|that|these|those|all|everything|the\s+\w+)\b",
        f"{SEND_WORDS} & {SECRET_WORDS} & and|then",
        SEND_AT,
        back=150,
        before=rf"\b(?:collect|gather|grab|dump|extract|steal|harvest|read|cat|print|list|find|copy|take|get)"
        rf"\b[^.\n]{{0,60}}?{_SECRET}[^.\n]{{0,60}}?\b(?:and|then)\s+$",
    ),
    _rule(
        "exfiltration.markdown-image",
        0.7,
        rf"!\[[^\]\n]{{0,200}}\]\(\s*<?https?://[^\s)]*\?[^\s)]*{_PLACEHOLDER}",
        "![ & ?",
    ),
    _rule(
        "exfiltration.markdown-image",
        0.6,
        rf"<img\b[^>]{{0,200}}\bsrc\s*=\s*[\"']?https?://[^\"'\s>]*\?[^\"'\s>]*{_PLACEHOLDER}",
        "<img & ?",
    ),
    _rule(
        "exfiltration.url-data",
        0.35,
        r"\b(?:replace|substitute|fill\s+in|swap)\b[^.\n]{0,60}\b(?:with"
        r"|by)\b[^.\n]{0,40}\b(?:api\s+keys?"
        r"|secrets?|tokens?|passwords?|credentials?|(?:conversation|chat)(?:\s+history)?"
        r"|previous\s+messages?"
        r"|user'?s?\s+(?:data|info|messages?|e-?mails?|name|query|question|input|address)"
        r"|system\s+prompt"
        r"|memory)\b",
        "replace|substitute|fill|swap & with|by & api|secret|secrets|token|tokens|password"
        "|passwords"
        "|credential|credentials|conversation|chat|previous|user|users|system|memory",
        "replace|substitute|fill|swap",
    ),
    _rule(
        "exfiltration.url-data",
        0.6,
        r"https?://[^\s\"'<>]*\$\(\s*(?:cat|env|printenv|base64|whoami|hostname|id)\b",
        "$( & http|https",
        "$(",
        back=200,
        span=30,
    ),
    _rule(
        "exfiltration.request-bin",
        0.6,
        rf"\b{_NET}\b[^\n]{{0,200}}?\b{_BINS}",
        f"{BIN_WORDS} & {NET_WORDS}",
        NET_AT,
    ),
    _rule(
        "exfiltration.request-bin",
        0.4,
        rf"\b{_NET}\b[^\n]{{0,200}}?\b{_PASTES}",
        f"{PASTE_WORDS} & {NET_WORDS}",
        NET_AT,
    ),
    _rule(
        "exfiltration.shell-secret",
        0.7,
        rf"\b{_NET}\b[^\n]{{0,200}}?(?:@|<\s*|--upload-file\s+|-t\s+|--post-file[\s=]+"
        r"|\$\(\s*cat\s+"
        rf"|`\s*cat\s+)\s*{_SECRET_FILE}|\b{_NET}\b[^\n]{{0,200}}?(?:\$\(|`)\s*(?:env|printenv)\b",
        f"{NET_WORDS} & ssh|env|passwd|shadow|rsa|ecdsa|aws|credentials|netrc|npmrc|pypirc|kube"
        "|printenv",
        NET_AT,
    ),
    _rule(
        "exfiltration.shell-secret",
        0.7,
        rf"(?:\b(?:env|printenv)|\bcat\s+[^|\n]{{0,80}}?{_SECRET_FILE}[^|\n]*)\s*\|\s*(?:base64[^"
        r"|\n]*\|\s*)?"
        rf"{_NET}\b",
        f"env|printenv|cat & {NET_WORDS} & |",
        "env|printenv|cat",
    ),
    _rule(
        "exfiltration.encode-append",
        0.55,
        r"\b(?:base64|b64|base-64|hex)(?:[\s-]*encod\w*)?\b[^.\n]{0,100}?\b(?:append|add|attach"
        r"|include"
        r"|put|insert|place|concatenate|embed)\w*\b[^.\n]{0,60}?\b(?:url|link|query(?:\s+string)?"
        r"|parameter"
        r"|param|image\s+(?:url|link|src)|endpoint|subdomain|dns)\b",
        "base|b|hex & url|link|query|parameter|param|endpoint|subdomain|dns"
        " & append|add|attach|include|put|insert|place|concatenate|embed|appended|added|appending"
        "|adding",
        "base64|b64|base-64|hex",
    ),
    _rule(
        "exfiltration.encode-append",
        0.55,
        r"\b(?:append|add|attach|include|put|insert)\w*\b[^.\n]{0,80}?\b(?:base64|b64"
        r"|hex)[\s-]*encod\w*"
        r"[^.\n]{0,60}?\b(?:url|link|query|parameter|endpoint)\b",
        "base|b|hex & url|link|query|parameter|endpoint & append|add|attach|include|put|insert",
        "64 encod|64-encod|64encod|hex encod|hex-encod",
        back=110,
        span=100,
    ),
)

_COMMENT = re.compile(r"<!--(.{0,20000}?)-->", re.DOTALL)
_HIDING_STYLE = re.compile(
    r"style\s*=\s*[\"'][^\"']*(?:display\s*:\s*none|visibility\s*:\s*hidden|font-size\s*:\s*0(?:px"
    r"|pt|em|rem|%)?\s*[;\"']"
    r"|opacity\s*:\s*0(?:\.0*)?\s*[;\"']|color\s*:\s*(?:#fff(?:fff)?|white|transparent)\b|(?:left"
    r"|top|text-indent)\s*:\s*-\d{3,})"
    r"|\baria-hidden\s*=\s*[\"']true|<[a-z]+\s[^>]*\bhidden\b[^>]*>"
)
HIDDEN_SPAN = 1_000  # characters after a hiding style that count as hidden
# Base64 runs are found through a byte mask (base64 characters as "a", newlines as "n", the rest
# as " "), which ``bytes.find`` searches far faster than a regex walks the text.
_B64_ALPHABET = frozenset("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/=_-")
_B64_MASK = bytes(
    ord("a") if chr(i) in _B64_ALPHABET else ord("n") if i == 10 else ord(" ") for i in range(256)
)
_NOT_B64 = re.compile(rb"[^a]")
B64_MIN = 24  # characters in a run worth decoding
_HEX = frozenset("0123456789abcdefABCDEF")
_BASE32 = frozenset("ABCDEFGHIJKLMNOPQRSTUVWXYZ234567\n\r\t ")
_HEX_ESCAPES = re.compile(r"(?:\\x[0-9a-fA-F]{2}){8,}")
_EVIDENCE_WEIGHT = {
    "hidden-text.tag-characters": 0.8,
    "hidden-text.html-comment": 0.3,
    "hidden-text.css-hidden": 0.3,
    "hidden-text.obfuscated": 0.35,
    "encoded.base64": 0.35,
    "encoded.hex": 0.35,
    "encoded.base32": 0.35,
}


# --- matching ----------------------------------------------------------------------------------


@dataclass(frozen=True)
class _Hit:
    rule_pattern: str
    kind: str
    weight: float
    start: int
    excerpt: str


def _excerpt(text: str, start: int, end: int) -> str:
    lo = max(0, start - 30)
    return " ".join(text[lo : max(end, lo + EXCERPT_CHARS)].split())[:EXCERPT_CHARS]


_LETTERS_ONLY = bytes(c if 97 <= c <= 122 else 32 for c in range(256))


class _Words:
    """The words (runs of letters) of a lowercased text, to test a rule's gate quickly."""

    def __init__(self, lowered: str) -> None:
        self.text = lowered
        self.words = set(lowered.encode("ascii", "replace").translate(_LETTERS_ONLY).split())

    def opens(self, rule: _Rule) -> bool:
        """Whether every group of the rule's gate has a word or substring in the text."""
        for words, substrings in rule.gate:
            if words.isdisjoint(self.words):
                for substring in substrings:
                    if substring in self.text:
                        break
                else:
                    return False
        return True


@functools.cache
def _lead(anchor: str) -> bytes | None:
    """The whole word an anchor starts with, if it starts with one."""
    m = re.match(r"[a-z]+(?![a-z])", anchor)
    return m.group().encode() if m else None


def _starts(words: _Words, anchors: Sequence[str]) -> Iterator[int]:
    text = words.text
    for anchor in anchors:
        lead = _lead(anchor)
        if lead is not None and lead not in words.words:
            continue
        i = text.find(anchor)
        while i >= 0:
            yield i
            i = text.find(anchor, i + 1)


def _windows(words: _Words, rule: _Rule) -> list[tuple[int, int]]:
    """The merged spans around every occurrence of the rule's anchors."""
    spans = sorted((max(0, i - rule.back), i + rule.span) for i in _starts(words, rule.at))
    merged: list[tuple[int, int]] = []
    for lo, hi in spans:
        if merged and lo <= merged[-1][1]:
            merged[-1] = (merged[-1][0], max(hi, merged[-1][1]))
        else:
            merged.append((lo, hi))
    return merged


def _search(rule: _Rule, words: _Words) -> tuple[int, int] | None:
    """Where the rule first matches (start, end), if it does."""
    text = words.text
    if not rule.at:
        m = rule.regex.search(text)
        return m.span() if m else None
    if rule.before or not rule.back:
        for i in sorted(_starts(words, rule.at)):
            m = rule.regex.match(text, i)
            if m and rule.before is None:
                return m.span()
            if m and rule.before:
                lead = rule.before.search(text, max(0, i - rule.back), i)
                if lead:
                    return lead.start(), m.end()
        return None
    for lo, hi in _windows(words, rule):
        m = rule.regex.search(text, lo, min(hi, len(text)))
        if m:
            return m.span()
    return None


# A match inside a quotation, or just after words such as "phrases like", is a
# mention ("attackers write 'ignore previous instructions'"), not an instruction; it counts for
# MENTION_FACTOR of its weight. (Code spans are not discounted: injections hide in code blocks.)
_MENTION = re.compile(
    r"(?:such\s+as|like|e\.g\.,?|for\s+(?:example|instance)|phrases?|strings?|attacks?|payloads?"
    r"|called|known\s+as|says?|said|contains?|containing|including|writes?|wrote"
    r"|typed?)\s*[\"'`(]?\s*$"
    r"|[\"'`\u201c\u2018\u00ab]\s*$"
)
MENTION_FACTOR = 0.4
QUOTE_REACH = 160  # characters before a match in which an open quotation is looked for


def _mentioned(text: str, start: int) -> bool:
    lead = text[max(0, start - QUOTE_REACH) : start]
    lead = lead[lead.rfind("\n\n") + 1 :]  # a quotation does not span paragraphs
    return (
        lead.count('"') % 2 == 1
        or lead.count("\u201c") > lead.count("\u201d")
        or _MENTION.search(lead, max(0, len(lead) - 24)) is not None
    )


def _match(lowered: str) -> list[_Hit]:
    hits: list[_Hit] = []
    words = _Words(lowered)
    for rule in _RULES:
        if not words.opens(rule):
            continue
        found = _search(rule, words)
        if found:
            start, end = found
            weight = rule.weight * (MENTION_FACTOR if _mentioned(lowered, start) else 1.0)
            hits.append(_Hit(rule.pattern, rule.kind, weight, start, _excerpt(lowered, start, end)))
    return hits


def _evidence(pattern: str, start: int, excerpt: str) -> _Hit:
    return _Hit(pattern, pattern.split(".", 1)[0], _EVIDENCE_WEIGHT[pattern], start, excerpt)


def _hidden_spans(lowered: str) -> Iterator[tuple[str, int, int]]:
    if "<!--" in lowered:
        for m in _COMMENT.finditer(lowered):
            yield "hidden-text.html-comment", m.start(), m.end()
    if "style" in lowered or "hidden" in lowered:
        for m in _HIDING_STYLE.finditer(lowered):
            yield "hidden-text.css-hidden", m.start(), m.end() + HIDDEN_SPAN


def _hidden(raw: str, norm: str, lowered: str, hits: Sequence[_Hit]) -> list[_Hit]:
    """Evidence that matched instructions were hidden from a human reader."""
    found = _tag_text(raw) if not raw.isascii() else []
    if not hits:
        return found
    for pattern, lo, hi in _hidden_spans(lowered):
        inside = [h for h in hits if lo <= h.start < hi]
        if inside:
            found.append(_evidence(pattern, inside[0].start, inside[0].excerpt))
    if norm != raw:
        plain = {h.rule_pattern for h in _match(raw.lower())}
        unseen = [h for h in hits if h.rule_pattern not in plain]
        if unseen:
            found.append(_evidence("hidden-text.obfuscated", unseen[0].start, unseen[0].excerpt))
    return found


def _tag_text(raw: str) -> list[_Hit]:
    """Text written in tags-block characters; a flag emoji's short lowercase tag is not."""
    for m in _TAG_RUN.finditer(raw):
        text = _untag(m).strip()
        if len(text) > 7 or not text.isalnum() or not text.islower():
            return [_evidence("hidden-text.tag-characters", m.start(), text[:EXCERPT_CHARS])]
    return []


def _readable(data: bytes) -> str | None:
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError:
        return None
    if len(text) < 8 or " " not in text:
        return None
    printable = sum(c.isprintable() or c in "\n\t\r" for c in text)
    letters = sum(c.isalpha() or c == " " for c in text)
    return text if printable >= 0.95 * len(text) and letters >= 0.7 * len(text) else None


def _decode_base64(run: str) -> bytes | None:
    """The bytes of a base64 run (standard or URL-safe, padded or not); of its first line alone
    if the lines joined do not decode (a wrapped run's next line may be ordinary text)."""
    for candidate in ("".join(run.split()), run.split(None, 1)[0]):
        body = candidate.rstrip("=").replace("-", "+").replace("_", "/")
        try:
            return base64.b64decode(body + "=" * (-len(body) % 4), validate=True)
        except (binascii.Error, ValueError):
            continue
    return None


def _decode_hex(run: str) -> bytes | None:
    try:
        return bytes.fromhex(run.replace("\\x", ""))
    except ValueError:
        return None


def _run_end(mask: bytes, pos: int) -> int:
    m = _NOT_B64.search(mask, pos)
    return m.start() if m else len(mask)


def _runs(norm: str) -> Iterator[tuple[int, str]]:
    """Runs of at least ``B64_MIN`` base64 characters, with the lines that continue them."""
    mask = norm.encode("ascii", "replace").translate(_B64_MASK)
    i = mask.find(b"a" * B64_MIN)
    while i >= 0:
        end = _run_end(mask, i)
        while end < len(mask) and mask[end] == ord("n"):  # a wrapped run goes on
            j = end + 1
            while j < len(mask) and mask[j] == ord(" ") and norm[j] in " \t\r":
                j += 1
            k = _run_end(mask, j)
            if k - j < 8:
                break
            end = k
        yield i, norm[i:end]
        i = mask.find(b"a" * B64_MIN, end)
    if "\\x" in norm:
        for m in _HEX_ESCAPES.finditer(norm):
            yield m.start(), m.group()


def _decode_base32(run: str) -> bytes | None:
    body = "".join(run.split()).rstrip("=")
    try:
        return base64.b32decode(body + "=" * (-len(body) % 8))
    except (binascii.Error, ValueError):
        return None


def _decode(run: str) -> tuple[str, bytes | None]:
    if run.startswith("\\x") or (len(run) % 2 == 0 and _HEX.issuperset(run)):
        return "encoded.hex", _decode_hex(run)
    if _BASE32.issuperset(run.rstrip("=")):
        return "encoded.base32", _decode_base32(run)
    return "encoded.base64", _decode_base64(run)


def _encoded(norm: str, depth: int) -> list[_Hit]:
    """Findings in base64 and hex runs that decode to readable text, scanned like the text."""
    found: list[_Hit] = []
    for start, run in _runs(norm):
        if len(run) > MAX_ENCODED_CHARS:
            continue
        pattern, data = _decode(run)
        decoded = _readable(data) if data else None
        if decoded is None:
            continue
        inner = normalize(decoded)
        hits = _match(inner.lower())
        if depth > 1:
            hits += _encoded(inner, depth - 1)
        if hits:
            found += [_Hit(h.rule_pattern, h.kind, h.weight, start, h.excerpt) for h in hits]
            found.append(_evidence(pattern, start, _excerpt(inner, 0, len(inner))))
    return found


# --- scanner -----------------------------------------------------------------------------------


def _noisy_or(weights: Sequence[float]) -> float:
    return 1.0 - math.prod(1.0 - w for w in weights)


class Scanner:
    """Scans content an agent read for prompt injection (see the module)."""

    def __init__(
        self, detector: Detector | None = None, *, threshold: float = 0.5, max_chars: int = 200_000
    ) -> None:
        self.detector = detector
        self.threshold = threshold
        self.max_chars = max_chars

    def scan(self, text: str) -> ScanResult:
        """Findings, score and verdict for ``text``; a longer text than ``max_chars`` is read at
        its head and its tail, where injected instructions usually sit."""
        if len(text) > self.max_chars:
            half = self.max_chars // 2
            text = text[:half] + "\n" + text[-half:]
        norm = normalize(text)
        lowered = norm.lower()
        hits = _match(lowered)
        hits += _hidden(text, norm, lowered, hits)
        hits += _encoded(norm, DECODE_DEPTH)
        findings = _findings(hits)
        weights = {h.rule_pattern: h.weight for h in sorted(hits, key=lambda h: h.weight)}
        score = _noisy_or(list(weights.values()))
        if self.detector is not None:
            probability = min(1.0, max(0.0, float(self.detector.score(norm))))
            if probability >= self.threshold:
                findings += (Finding("model", "model.detector", _excerpt(norm, 0, 0)),)
            score = _noisy_or([score, probability])
        return ScanResult(score >= self.threshold, round(score, 4), findings)


def _findings(hits: Sequence[_Hit]) -> tuple[Finding, ...]:
    """One finding per rule, first occurrence first."""
    seen: dict[str, Finding] = {}
    for hit in sorted(hits, key=lambda h: h.start):
        if hit.rule_pattern not in seen:
            seen[hit.rule_pattern] = Finding(hit.kind, hit.rule_pattern, hit.excerpt)
    return tuple(seen.values())[:MAX_FINDINGS]


# --- the built-in detector ---------------------------------------------------------------------

_WORD = re.compile(r"[a-z0-9']+")


class WordNgramDetector:
    """Logistic regression over word n-grams, scored on sliding windows; the highest wins.

    The model file is JSON::

        {"format": "pilothouse-scan-detector", "version": 1,
         "ngrams": [1, 2],              # word n-gram lengths (1..3); words are [a-z0-9']+ runs
         "window": 64, "stride": 32,    # tokens per window and between window starts
         "bias": -3.1,
         "weights": {"ignore": 0.9, "previous instructions": 2.4, ...},
         "about": "free text: what it was trained on"}

    A window's probability is ``sigmoid(bias + sum of the weights of its n-grams, counted)``;
    text shorter than a window is one window. Features are the text lowercased and split into
    words, n-grams joined by one space.
    """

    def __init__(
        self,
        weights: dict[str, float],
        bias: float,
        *,
        ngrams: Sequence[int] = (1, 2),
        window: int = 64,
        stride: int = 32,
    ) -> None:
        self.weights = weights
        self.bias = bias
        self.ngrams = tuple(ngrams)
        self.window = window
        self.stride = stride

    def score(self, text: str) -> float:
        """The highest window probability in ``text``."""
        return _sigmoid(self.logit(text))

    def logit(self, text: str) -> float:
        """The highest window's log-odds (``bias`` plus the weights of its n-grams)."""
        tokens = _WORD.findall(text.lower())
        if not tokens:
            return self.bias
        contributions = [0.0] * len(tokens)
        get = self.weights.get
        for n in self.ngrams:
            for i in range(len(tokens) - n + 1):
                w = get(" ".join(tokens[i : i + n]))
                if w:
                    contributions[i] += w
        sums = [0.0, *accumulate(contributions)]
        starts = range(0, max(1, len(tokens) - self.window + self.stride), self.stride)
        return self.bias + max(sums[min(s + self.window, len(tokens))] - sums[s] for s in starts)

    def to_json(self, about: str = "") -> dict[str, Any]:
        """The model in the file format ``load_detector`` reads."""
        return {
            "format": DETECTOR_FORMAT,
            "version": 1,
            "ngrams": list(self.ngrams),
            "window": self.window,
            "stride": self.stride,
            "bias": self.bias,
            "weights": self.weights,
            "about": about,
        }


def _sigmoid(x: float) -> float:
    return 1.0 / (1.0 + math.exp(-max(-60.0, min(60.0, x))))


def load_detector(path: Path) -> Detector:
    """The ``WordNgramDetector`` stored at ``path``; ``ConfigError`` says what is wrong with a
    file that is not one."""
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise ConfigError(
            f"scan detector {path} cannot be read as JSON: {exc}", path=str(path)
        ) from exc
    problem = _detector_problem(data)
    if problem:
        raise ConfigError(
            f"scan detector {path} is not a {DETECTOR_FORMAT} v1 file: {problem}", path=str(path)
        )
    return WordNgramDetector(
        {str(k): float(v) for k, v in data["weights"].items()},
        float(data["bias"]),
        ngrams=data["ngrams"],
        window=data["window"],
        stride=data["stride"],
    )


def _detector_problem(data: Any) -> str | None:
    if not isinstance(data, dict):
        return "the top level must be an object"
    if data.get("format") != DETECTOR_FORMAT or data.get("version") != 1:
        return f'"format" must be "{DETECTOR_FORMAT}" and "version" 1'
    ngrams, window, stride = data.get("ngrams"), data.get("window"), data.get("stride")
    if not isinstance(ngrams, list) or not ngrams or not all(_int_in(n, 1, 3) for n in ngrams):
        return '"ngrams" must be a non-empty list of integers from 1 to 3'
    if (
        not isinstance(window, int)
        or not _int_in(window, 1, 100_000)
        or not _int_in(stride, 1, window)
    ):
        return '"window" must be a positive integer and "stride" from 1 to "window"'
    if not _finite(data.get("bias")):
        return '"bias" must be a finite number'
    weights = data.get("weights")
    if not isinstance(weights, dict) or not all(_finite(w) for w in weights.values()):
        return '"weights" must be an object of n-gram to finite number'
    return None


def _int_in(value: Any, lo: int, hi: int) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and lo <= value <= hi


def _finite(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value)
