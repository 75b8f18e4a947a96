"""A streamed reply that writes a secret a few characters per event is redacted all the same,
in every wire format, and the client reads the same text (redacted) in the same order."""

from __future__ import annotations

import json
from typing import Any

import pytest

from pilothouse.gateway.providers.base import WireFormat
from pilothouse.secrets.redact import Redactor
from pilothouse.secrets.stream import SseRedactor, labels_in

VALUE = "ghp_4f9c2e7a1b3d5f6e8a0c"
TEXT = f"the token is {VALUE}, keep it safe"


def pieces(text: str, size: int) -> list[str]:
    return [text[i : i + size] for i in range(0, len(text), size)]


def sse(data: dict[str, Any], event: str | None = None) -> bytes:
    head = f"event: {event}\n" if event else ""
    return f"{head}data: {json.dumps(data)}\n\n".encode()


def chat_stream(text: str, size: int) -> tuple[list[bytes], bytes]:
    top = {"id": "c1", "object": "chat.completion.chunk", "created": 1, "model": "m"}
    events = [
        sse({**top, "choices": [{"index": 0, "delta": {"content": p}, "finish_reason": None}]})
        for p in pieces(text, size)
    ]
    events.append(sse({**top, "choices": [{"index": 0, "delta": {}, "finish_reason": "stop"}]}))
    return events, b"data: [DONE]\n\n"


def anthropic_stream(text: str, size: int) -> tuple[list[bytes], bytes]:
    events = [sse({"type": "content_block_start", "index": 0, "content_block": {"type": "text"}})]
    events += [
        sse(
            {"type": "content_block_delta", "index": 0, "delta": {"type": "text_delta", "text": p}},
            "content_block_delta",
        )
        for p in pieces(text, size)
    ]
    events.append(sse({"type": "content_block_stop", "index": 0}, "content_block_stop"))
    return events, sse({"type": "message_stop"}, "message_stop")


def responses_stream(text: str, size: int) -> tuple[list[bytes], bytes]:
    base = {"item_id": "msg_1", "output_index": 0, "content_index": 0}
    events = [
        sse({"type": "response.output_text.delta", **base, "delta": p}) for p in pieces(text, size)
    ]
    events.append(sse({"type": "response.output_text.done", **base, "text": text}))
    completed = {"type": "response.completed", "response": {"output_text": text}}
    return events, sse(completed)


def text_of(wire: WireFormat, relayed: bytes) -> str:
    """The text a client assembles from the relayed events' deltas."""
    text = ""
    for event in relayed.split(b"\n\n"):
        line = next((x for x in event.split(b"\n") if x.startswith(b"data: {")), None)
        if line is None:
            continue
        data = json.loads(line[6:])
        if wire is WireFormat.OPENAI_CHAT:
            text += "".join(c["delta"].get("content") or "" for c in data["choices"])
        elif wire is WireFormat.ANTHROPIC_MESSAGES and data["type"] == "content_block_delta":
            text += data["delta"]["text"]
        elif data.get("type") == "response.output_text.delta":
            text += data["delta"]
    return text


@pytest.mark.parametrize(
    ("wire", "make"),
    [
        (WireFormat.OPENAI_CHAT, chat_stream),
        (WireFormat.ANTHROPIC_MESSAGES, anthropic_stream),
        (WireFormat.OPENAI_RESPONSES, responses_stream),
    ],
)
@pytest.mark.parametrize("size", [1, 3, 7, 64])
def test_a_value_spread_over_deltas_is_redacted_and_the_text_kept_in_order(
    wire: WireFormat, make: Any, size: int
) -> None:
    redactor = Redactor({VALUE: "gh-token"})
    events, tail = make(TEXT, size)
    relaying = SseRedactor(redactor, wire)
    relayed = b"".join(relaying.feed(e) for e in events) + relaying.finish(tail)
    assert VALUE.encode() not in relayed
    assert text_of(wire, relayed) == TEXT.replace(VALUE, "[REDACTED:gh-token]")
    assert labels_in(relayed) == {"gh-token"}


def test_events_that_are_not_deltas_are_redacted_whole_and_nothing_changes_without_secrets() -> (
    None
):
    events, tail = responses_stream(TEXT, 5)
    untouched = SseRedactor(Redactor.empty(), WireFormat.OPENAI_RESPONSES)
    assert [untouched.feed(e) for e in events] == events
    relaying = SseRedactor(Redactor({VALUE: "gh-token"}), WireFormat.OPENAI_RESPONSES)
    done = b"".join(relaying.feed(e) for e in events[-1:])  # the .done event repeats the text
    assert VALUE.encode() not in done and b"[REDACTED:gh-token]" in done
    assert VALUE.encode() not in relaying.finish(tail)
