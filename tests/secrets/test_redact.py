"""Redaction of known secret values: every form of a value becomes a marker that names it, the
longest match starting earliest wins, nothing is copied when nothing matches, and a stream
split anywhere comes out as the whole text would."""

from __future__ import annotations

import base64
import json
import random
import string
from urllib.parse import quote, quote_plus

import pytest

from pilothouse.secrets.redact import (
    MIN_FRAGMENT_LENGTH,
    MIN_SECRET_LENGTH,
    Redactor,
    encoded_forms,
)

TOKEN = "tok-3f9Q/x+Zr8=k"  # base64 of it has + and /, its URL and JSON forms differ
PASSWORD = 'pä"ss\\wörd 1'  # non-ASCII, a quote and a backslash: every escape differs
REDACTOR = Redactor({TOKEN: "github-token", PASSWORD: "db-password"})


def _forms(value: str) -> dict[str, str]:
    raw = value.encode()
    standard = base64.b64encode(raw).decode()
    urlsafe = base64.urlsafe_b64encode(raw).decode()
    return {
        "raw": value,
        "base64": standard,
        "base64 unpadded": standard.rstrip("="),
        "base64 url-safe": urlsafe,
        "base64 url-safe unpadded": urlsafe.rstrip("="),
        "quote": quote(value, safe=""),
        "quote_plus": quote_plus(value),
        "hex": raw.hex(),
        "HEX": raw.hex().upper(),
        "json": json.dumps(value)[1:-1],
        "json, not ASCII-escaped": json.dumps(value, ensure_ascii=False)[1:-1],
    }


@pytest.mark.parametrize("value", [TOKEN, PASSWORD])
@pytest.mark.parametrize("form", list(_forms(TOKEN)))
def test_every_encoded_form_of_a_value_becomes_its_secret_s_marker(value: str, form: str) -> None:
    label = "github-token" if value == TOKEN else "db-password"
    text = f"before {_forms(value)[form]} after"
    assert REDACTOR.redact(text) == f"before [REDACTED:{label}] after"
    assert REDACTOR.found(text) == [label]


@pytest.mark.parametrize("prefix", ["", "u", "us", "user:", "a-longer-user-name:"])
def test_a_value_inside_a_longer_base64_string_is_found_at_every_alignment(prefix: str) -> None:
    value = "s3cr3t-value-0123456789"
    redactor = Redactor({value: "api-key"})
    for encode in (base64.b64encode, base64.urlsafe_b64encode):
        basic = encode(f"{prefix}{value}:trailing".encode()).decode()
        redacted = redactor.redact(f"Authorization: Basic {basic}")
        left, right = redacted.removeprefix("Authorization: Basic ").split("[REDACTED:api-key]")
        # What is left is the neighbours' encoding, and a character at each end they share.
        assert len(left) <= len(prefix) * 4 // 3 + 1
        assert len(right) <= len(":trailing") * 4 // 3 + 3


def test_aligned_base64_fragments_shorter_than_the_minimum_are_not_looked_for() -> None:
    short, longer = "abcdefgh", "abcdefghijklmn"  # aligned fragments of 10 and 16 characters
    assert MIN_FRAGMENT_LENGTH == 16
    for value, found in ((short, False), (longer, True)):
        inside = base64.b64encode(f"x{value}y".encode()).decode()
        redacted = Redactor({value: "v"}).redact(inside)
        assert ("[REDACTED:v]" in redacted) is found


def test_escaped_forms_are_added_only_where_they_differ_from_the_value() -> None:
    plain = "abcdEFGH1234"  # nothing to escape; 12 bytes: base64 has no padding, no + or /
    raw = plain.encode()
    assert encoded_forms(plain) == {plain, raw.hex(), raw.hex().upper(), "YWJjZEVGR0gxMjM0"}
    assert {quote(TOKEN, safe=""), json.dumps(PASSWORD)[1:-1]} <= (
        encoded_forms(TOKEN) | encoded_forms(PASSWORD)
    )


def test_values_too_short_to_redact_are_refused_naming_the_problem() -> None:
    with pytest.raises(ValueError, match=r"secret 'pin'.* shorter than 8 characters: too short"):
        Redactor({"1234567": "pin"})
    assert len(Redactor({"12345678": "pin"})) == 1
    assert MIN_SECRET_LENGTH == 8


@pytest.mark.parametrize("label", ["", "has space", "[REDACTED:x]", "x" * 129, "new\nline"])
def test_labels_that_would_break_the_marker_are_refused(label: str) -> None:
    with pytest.raises(ValueError, match="label must be 1 to 128 letters"):
        Redactor({TOKEN: label})


def test_a_label_holding_a_secret_value_is_refused_without_showing_it() -> None:
    with pytest.raises(ValueError, match="label contains a secret's value") as raised:
        Redactor({TOKEN: "github", "other-secret-1": "key-other-secret-1"})
    assert "other-secret-1" not in str(raised.value).replace("secret's", "")


def test_overlapping_values_the_longest_starting_earliest_wins() -> None:
    redactor = Redactor(
        {"abcdefgh-1234": "short", "abcdefgh-1234-longer": "long", "1234-longer-tail": "tail"}
    )
    assert redactor.redact("x abcdefgh-1234-longer y") == "x [REDACTED:long] y"
    assert redactor.redact("x abcdefgh-1234-long y") == "x [REDACTED:short]-long y"
    # Earliest start first, even where a later one is longer; then the next, not overlapping.
    assert redactor.redact("abcdefgh-1234-longer-tail") == "[REDACTED:long]-tail"
    assert redactor.redact("abcdefgh-1234 1234-longer-tail") == "[REDACTED:short] [REDACTED:tail]"


def test_nothing_is_copied_when_no_secret_occurs() -> None:
    text = "an ordinary request body, " * 100
    body = text.encode()
    obj = {"messages": [{"role": "user", "content": text}], "n": 1, "stream": True}
    assert REDACTOR.redact(text) is text
    assert REDACTOR.redact_bytes(body) is body
    assert REDACTOR.redact_json(obj) is obj
    assert REDACTOR.found(text) == []


def test_bytes_that_are_not_utf8_survive_around_a_secret() -> None:
    data = b"\xff\xfe\x80 " + TOKEN.encode() + b" \xc3(\xed\xa0\x80"
    assert REDACTOR.redact_bytes(data) == b"\xff\xfe\x80 [REDACTED:github-token] \xc3(\xed\xa0\x80"


def test_lone_surrogates_in_text_survive_around_a_secret() -> None:
    assert REDACTOR.redact(f"\ud800 {TOKEN} \udfff") == "\ud800 [REDACTED:github-token] \udfff"


def test_json_keys_and_nested_values_are_redacted_in_a_copy() -> None:
    obj = {
        "model": "m",
        "messages": [
            {"role": "user", "content": f"use {TOKEN}"},
            {"role": "tool", "content": [{"type": "text", "text": "plain"}]},
        ],
        TOKEN: [1, 2.5, None, True, PASSWORD],
    }
    original = json.loads(json.dumps(obj))
    redacted = REDACTOR.redact_json(obj)
    assert obj == original  # the input is untouched
    assert redacted == {
        "model": "m",
        "messages": [
            {"role": "user", "content": "use [REDACTED:github-token]"},
            {"role": "tool", "content": [{"type": "text", "text": "plain"}]},
        ],
        "[REDACTED:github-token]": [1, 2.5, None, True, "[REDACTED:db-password]"],
    }
    # What did not change is shared, not copied.
    assert redacted["messages"][1] is obj["messages"][1]


def test_found_names_each_secret_once_in_order_and_never_its_value() -> None:
    text = f"{PASSWORD} {TOKEN.encode().hex()} {PASSWORD}"
    assert REDACTOR.found(text) == ["db-password", "github-token"]


def test_an_empty_redactor_returns_its_input() -> None:
    empty = Redactor.empty()
    text, data, obj = "tok-3f9Q/x+Zr8=k", b"\xff", {"a": ["b"]}
    assert len(empty) == 0
    assert empty.redact(text) is text
    assert empty.redact_bytes(data) is data
    assert empty.redact_json(obj) is obj
    assert empty.found(text) == []
    stream = empty.stream()
    assert stream.feed(text) + stream.flush() == text


def test_the_redactor_counts_values_and_shows_none_of_them() -> None:
    assert len(REDACTOR) == 2
    assert TOKEN not in repr(REDACTOR) and "pä" not in repr(REDACTOR)


def test_redacted_text_redacts_to_itself() -> None:
    once = REDACTOR.redact(f"{TOKEN}{PASSWORD}{TOKEN}")
    assert once == "[REDACTED:github-token][REDACTED:db-password][REDACTED:github-token]"
    assert REDACTOR.redact(once) is once


def test_values_with_control_bytes_and_many_neighbours_are_found() -> None:
    # Control bytes are the rarest: anchors start there, and the text's own control bytes
    # (and the byte anchors' starts are translated to) must not hide them.
    values = {"ab\x01cdefgh\x02ij": "ctl-1", "\x02\x01\x02\x01\x02\x01\x02\x01": "ctl-2"}
    redactor = Redactor(values)
    text = "\x01\x02 ab\x01cdefgh\x02ij \x01 \x02\x01\x02\x01\x02\x01\x02\x01\x02"
    assert redactor.redact(text) == "\x01\x02 [REDACTED:ctl-1] \x01 [REDACTED:ctl-2]\x02"


def test_thousands_of_secrets_are_each_found_in_every_form() -> None:
    rng = random.Random(11)
    alphabet = string.ascii_letters + string.digits + "-_/+="
    values = {
        "".join(rng.choice(alphabet) for _ in range(rng.randint(8, 48))): f"secret-{i}"
        for i in range(3000)
    }
    redactor = Redactor(values)
    chosen = rng.sample(sorted(values), 200)
    pieces, labels = [], []
    for value in chosen:
        pieces.append(rng.choice(sorted(encoded_forms(value))))
        labels.append(values[value])
    text = " | ".join(pieces)
    assert redactor.redact(text) == " | ".join(f"[REDACTED:{label}]" for label in labels)


def _stream(redactor: Redactor, text: str, cuts: list[int]) -> tuple[str, int]:
    stream = redactor.stream()
    out, held, at = [], 0, 0
    for cut in [*cuts, len(text)]:
        out.append(stream.feed(text[at:cut]))
        held = max(held, stream.held)
        at = cut
    out.append(stream.flush())
    return "".join(out), held


def test_a_stream_split_anywhere_comes_out_as_the_whole_text_redacted() -> None:
    rng = random.Random(5)
    values = {
        TOKEN: "github-token",
        PASSWORD: "db-password",
        "tok-3f9Q-other": "other",  # shares a prefix with TOKEN
        "abcdefghijklmnop": "alpha",
        "ghijklmnopqrs": "overlap",  # overlaps the end of "alpha"
    }
    redactor = Redactor(values)
    pieces = [f for v in values for f in encoded_forms(v)]
    pieces += ["tok-", "tok-3f9Q", "abc", "é", "ü", " ", "\n", "ghij", "[REDACTED", "\ud800"]
    longest = max(len(f.encode("utf-8", "surrogatepass")) for f in pieces)
    for _ in range(2000):
        text = "".join(rng.choice(pieces) for _ in range(rng.randint(0, 12)))
        cuts = sorted(rng.sample(range(len(text) + 1), min(len(text) + 1, rng.randint(0, 9))))
        streamed, held = _stream(redactor, text, cuts)
        assert streamed == redactor.redact(text), (text, cuts)
        assert held < longest


def test_a_stream_one_character_at_a_time_comes_out_as_the_whole_text_redacted() -> None:
    text = f"key={TOKEN}&pw={quote(PASSWORD, safe='')} and {PASSWORD.encode().hex()}"
    streamed, _ = _stream(REDACTOR, text, list(range(1, len(text))))
    assert streamed == REDACTOR.redact(text)
    assert "[REDACTED:github-token]" in streamed and streamed.count("[REDACTED:db-password]") == 2


def test_a_stream_holds_back_only_what_could_begin_a_secret() -> None:
    stream = Redactor({"tok-3f9Q-abcdefgh": "t"}).stream()
    assert stream.feed("ordinary text.") == "ordinary text."
    assert stream.held == 0
    assert stream.feed(" t") == " "  # "t" could begin it
    assert stream.held == 1
    assert stream.feed("hen tok-3f") == "then "  # could be the start of the secret
    assert stream.held == len("tok-3f")
    assert stream.feed("ish") == "tok-3fish"  # it was not
    assert stream.feed(" tok-3f9Q-abcdefgh") == " [REDACTED:t]"
    assert stream.flush() == ""
