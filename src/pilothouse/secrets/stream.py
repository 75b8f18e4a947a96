"""Redaction of a streamed LLM reply, where a model writes a secret a few characters per event.

Redacting each event alone would miss a value spread over several deltas, so the text of each
delta stream (a choice's content, a content block, an output item's text, a tool call's
arguments) goes through its own ``StreamRedactor``: what could be the start of a secret is held
back, and the delta carries the rest. What is held is written out in an extra delta event just
before the event that ends that stream (a finish reason, ``content_block_stop``, a ``.done``
event) or before the stream's terminal events. Any other event is redacted whole.

Clients see the same text, redacted, in the same order; a delta may arrive a little later (by
at most one value's length) and a delta may be empty.
"""

from __future__ import annotations

import re
from typing import Any

import orjson

from pilothouse.gateway.providers.base import WireFormat
from pilothouse.secrets.redact import Redactor, StreamRedactor

MARKER = re.compile(rb"\[REDACTED:([^\]\s]{1,128})\]")


def labels_in(data: bytes) -> set[str]:
    """The secrets a redacted text names in its markers."""
    return {m.decode("utf-8", "replace") for m in MARKER.findall(data)}


class SseRedactor:
    """Redacts the framed SSE events of one reply in ``wire``'s format as they are relayed."""

    def __init__(self, redactor: Redactor, wire: WireFormat) -> None:
        self._redactor = redactor
        self._wire = wire
        # key -> (its stream redactor, the event a held remainder is written in)
        self._streams: dict[Any, tuple[StreamRedactor, dict[str, Any]]] = {}

    def feed(self, framed: bytes) -> bytes:
        """Complete events (each ending in a blank line), redacted; text may be held back."""
        if not len(self._redactor) or not framed:
            return framed
        return b"".join([self._event(event) for event in framed.split(b"\n\n") if event])

    def finish(self, tail: bytes) -> bytes:
        """What is still held, written out before ``tail`` (the terminal events), redacted."""
        if not len(self._redactor):
            return tail
        held = self._flush_where(lambda key: True)
        return held + self._redactor.redact_bytes(tail)

    # --- one event ---------------------------------------------------------------------------

    def _event(self, event: bytes) -> bytes:
        prefix, data = _split(event)
        before = None
        if data is not None:
            if self._wire is WireFormat.OPENAI_CHAT:
                before = self._chat(data)
            elif self._wire is WireFormat.ANTHROPIC_MESSAGES:
                before = self._anthropic(data)
            else:
                before = self._responses(data)
        if before is None or data is None:  # not a delta stream's event: redacted whole
            return self._redactor.redact_bytes(event) + b"\n\n"
        # The deltas' text went through their streams; anything else in the event is whole.
        return before + prefix + orjson.dumps(self._redactor.redact_json(data)) + b"\n\n"

    def _chat(self, data: dict[str, Any]) -> bytes | None:
        choices = data.get("choices")
        if not isinstance(choices, list) or not choices:
            return None
        top: dict[str, Any] = {
            k: data[k] for k in ("id", "object", "created", "model") if k in data
        }
        before = b""
        for choice in choices:
            if not isinstance(choice, dict):
                continue
            index = choice.get("index", 0)
            delta = choice.get("delta")
            if isinstance(delta, dict):
                shape: dict[str, Any] = {
                    **top,
                    "choices": [{"index": index, "delta": {"content": _PLACE}}],
                }
                self._through(("chat", index, "content"), delta, "content", shape)
                for call in delta.get("tool_calls") or []:
                    function = call.get("function") if isinstance(call, dict) else None
                    if isinstance(function, dict):
                        at = call.get("index", 0)
                        tool = {"index": at, "function": {"arguments": _PLACE}}
                        shape = {
                            **top,
                            "choices": [{"index": index, "delta": {"tool_calls": [tool]}}],
                        }
                        self._through(("chat", index, "tool", at), function, "arguments", shape)
            if choice.get("finish_reason"):
                before += self._flush_where(lambda k, i=index: k[:2] == ("chat", i))
        return before

    def _anthropic(self, data: dict[str, Any]) -> bytes | None:
        kind = data.get("type")
        index = data.get("index", 0)
        if kind == "content_block_delta" and isinstance(data.get("delta"), dict):
            delta = data["delta"]
            for field in ("text", "partial_json", "thinking"):
                shape = {
                    "type": kind,
                    "index": index,
                    "delta": {"type": delta.get("type"), field: _PLACE},
                }
                self._through(("block", index, field), delta, field, shape)
            return b""
        if kind == "content_block_stop":
            return self._flush_where(lambda k: k[1] == index)
        return None

    def _responses(self, data: dict[str, Any]) -> bytes | None:
        kind = data.get("type")
        if not isinstance(kind, str):
            return None
        key = ("item", data.get("item_id"), data.get("content_index"), kind.rpartition(".")[0])
        if kind.endswith(".delta") and isinstance(data.get("delta"), str):
            self._through(key, data, "delta", {**data, "delta": _PLACE})
            return b""
        if kind.endswith(".done"):
            # The done event repeats the whole text: it is redacted whole, after what was held.
            return self._flush_where(lambda k: k == key)
        return None

    # --- streams -----------------------------------------------------------------------------

    def _through(self, key: Any, holder: dict[str, Any], field: str, shape: dict[str, Any]) -> None:
        """Pass ``holder[field]`` through the stream ``key``; ``shape`` is the event a held
        remainder is written in (``_PLACE`` marks where the text goes)."""
        text = holder.get(field)
        if not isinstance(text, str):
            return
        found = self._streams.get(key)
        stream = found[0] if found is not None else self._redactor.stream()
        holder[field] = stream.feed(text)
        self._streams[key] = (stream, shape)

    def _flush_where(self, which: Any) -> bytes:
        return b"".join(self._flush(k) for k in list(self._streams) if which(k))

    def _flush(self, key: Any) -> bytes:
        stream, shape = self._streams.pop(key)
        rest = stream.flush()
        if not rest:
            return b""
        return b"data: " + orjson.dumps(_filled(shape, rest)) + b"\n\n"


def _split(event: bytes) -> tuple[bytes, dict[str, Any] | None]:
    """The event's lines up to ``data: `` and its JSON data (None if it has none)."""
    at = event.find(b"data:")
    if at < 0:
        return event, None
    body = event[at + 5 :].strip()
    if not body.startswith(b"{") or b"\ndata:" in body:
        return event, None
    try:
        data = orjson.loads(body)
    except orjson.JSONDecodeError:
        return event, None
    if not isinstance(data, dict):
        return event, None
    return event[:at] + b"data: ", data


_PLACE = "\x00pilothouse-held\x00"


def _filled(shape: Any, text: str) -> Any:
    if shape == _PLACE:
        return text
    if isinstance(shape, dict):
        return {k: _filled(v, text) for k, v in shape.items()}
    if isinstance(shape, list):
        return [_filled(v, text) for v in shape]
    return shape
