"""Wire-format details: error bodies each SDK parses, and usage read from replies and streams.

Streams are relayed event by event. Only events that mention ``"usage"`` are parsed; the rest
pass through as bytes. The terminal event (``data: [DONE]`` or ``message_stop``) is held back so
the call's usage row can be made durable before the client is told the call finished.
"""

from __future__ import annotations

from typing import Any

import orjson

from pilothouse.gateway.providers.base import WireFormat
from pilothouse.gateway.usage import Usage

_ANTHROPIC_TYPES = {
    400: "invalid_request_error",
    401: "authentication_error",
    403: "permission_error",
    404: "not_found_error",
    413: "request_too_large",
    429: "rate_limit_error",
    502: "api_error",
    503: "overloaded_error",
    504: "api_error",
}
_OPENAI_TYPES = {
    400: "invalid_request_error",
    401: "authentication_error",
    403: "permission_denied",
    404: "not_found_error",
    413: "invalid_request_error",
    429: "rate_limit_exceeded",
}


def error_body(wire: WireFormat, status: int, code: str, message: str) -> bytes:
    """An error in the shape the client's SDK expects, with Pilothouse's stable code."""
    if wire is WireFormat.ANTHROPIC_MESSAGES:
        kind = _ANTHROPIC_TYPES.get(status, "api_error")
        return orjson.dumps(
            {"type": "error", "error": {"type": kind, "message": message, "code": code}}
        )
    kind = _OPENAI_TYPES.get(status, "server_error")
    return orjson.dumps({"error": {"message": message, "type": kind, "param": None, "code": code}})


def _int(value: Any) -> int:
    return value if isinstance(value, int) and value >= 0 else 0


def openai_usage(raw: Any) -> Usage:
    """Usage from an OpenAI ``usage`` object (prompt tokens include cached ones)."""
    if not isinstance(raw, dict):
        return Usage()
    cached = _int((raw.get("prompt_tokens_details") or {}).get("cached_tokens"))
    reasoning = _int((raw.get("completion_tokens_details") or {}).get("reasoning_tokens"))
    prompt = _int(raw.get("prompt_tokens"))
    return Usage(
        input_tokens=max(prompt - cached, 0),
        output_tokens=_int(raw.get("completion_tokens")),
        cache_read_tokens=cached,
        reasoning_tokens=reasoning,
    )


def anthropic_usage(raw: Any, into: Usage | None = None) -> Usage:
    """Usage from an Anthropic ``usage`` object; later fields override earlier ones."""
    usage = into or Usage()
    if not isinstance(raw, dict):
        return usage
    if "input_tokens" in raw:
        usage.input_tokens = _int(raw["input_tokens"])
    if "output_tokens" in raw:
        usage.output_tokens = _int(raw["output_tokens"])
    if "cache_read_input_tokens" in raw:
        usage.cache_read_tokens = _int(raw["cache_read_input_tokens"])
    if "cache_creation_input_tokens" in raw:
        usage.cache_write_tokens = _int(raw["cache_creation_input_tokens"])
    return usage


def usage_of_body(wire: WireFormat, body: bytes) -> Usage:
    """Usage from a complete (non-streamed) reply body."""
    try:
        parsed = orjson.loads(body)
    except orjson.JSONDecodeError:
        return Usage()
    raw = parsed.get("usage") if isinstance(parsed, dict) else None
    if wire is WireFormat.ANTHROPIC_MESSAGES:
        return anthropic_usage(raw)
    return openai_usage(raw)


class StreamWatcher:
    """Splits a relayed SSE stream into events, reads usage, holds back the terminal event."""

    def __init__(self, wire: WireFormat, *, hide_usage_chunk: bool) -> None:
        self.wire = wire
        self.usage = Usage()
        self.finished = False
        self.terminal = b""
        self._hide_usage_chunk = hide_usage_chunk
        self._buffer = b""

    def feed(self, chunk: bytes) -> bytes:
        """Take upstream bytes; return the complete events to forward now."""
        self._buffer += chunk
        if b"\n\n" not in self._buffer:
            return b""
        complete, _, self._buffer = self._buffer.rpartition(b"\n\n")
        out = []
        for event in complete.split(b"\n\n"):
            kept = self._event(event)
            if kept is not None:
                out.append(kept + b"\n\n")
        return b"".join(out)

    def rest(self) -> bytes:
        """Whatever partial event was left when the stream ended."""
        rest, self._buffer = self._buffer, b""
        return rest

    def _event(self, event: bytes) -> bytes | None:
        if self.wire is WireFormat.OPENAI_CHAT:
            return self._openai_event(event)
        return self._anthropic_event(event)

    def _openai_event(self, event: bytes) -> bytes | None:
        if event.strip() == b"data: [DONE]":
            self.finished = True
            self.terminal += event + b"\n\n"
            return None
        if b'"usage"' in event:
            data = _data(event)
            if isinstance(data, dict) and isinstance(data.get("usage"), dict):
                self.usage = openai_usage(data["usage"])
                if self._hide_usage_chunk and not data.get("choices"):
                    return None
        return event

    def _anthropic_event(self, event: bytes) -> bytes | None:
        if b"message_stop" in event and b'"type":"message_stop"' in event.replace(b" ", b""):
            self.finished = True
            self.terminal += event + b"\n\n"
            return None
        if b'"usage"' in event:
            data = _data(event)
            if isinstance(data, dict):
                if data.get("type") == "message_start":
                    anthropic_usage((data.get("message") or {}).get("usage"), self.usage)
                elif data.get("type") == "message_delta":
                    anthropic_usage(data.get("usage"), self.usage)
        return event


def _data(event: bytes) -> Any:
    payload = b"".join(
        line[5:].lstrip() for line in event.split(b"\n") if line.startswith(b"data:")
    )
    try:
        return orjson.loads(payload)
    except orjson.JSONDecodeError:
        return None
