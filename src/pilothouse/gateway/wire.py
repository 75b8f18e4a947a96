"""Wire-format details: error bodies each SDK parses, and usage read from replies and streams.

Streams are relayed event by event. Only events that mention ``"usage"`` are parsed; the rest
pass through as bytes. The terminal event (``data: [DONE]`` or ``message_stop``) is held back so
the call's usage row can be made durable before the client is told the call finished.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import orjson

from pilothouse.gateway.providers.base import WireFormat
from pilothouse.gateway.usage import Usage

_ANTHROPIC_TYPES = {
    400: "invalid_request_error",
    401: "authentication_error",
    402: "billing_error",
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
    402: "insufficient_quota",
    403: "permission_denied",
    404: "not_found_error",
    413: "invalid_request_error",
    429: "rate_limit_exceeded",
}


def error_body(
    wire: WireFormat,
    status: int,
    code: str,
    message: str,
    details: Mapping[str, Any] | None = None,
) -> bytes:
    """An error in the shape the client's SDK expects, with Pilothouse's stable code (and
    ``details``, such as a budget's numbers, as more fields of the error object)."""
    if wire.is_anthropic:
        kind = _ANTHROPIC_TYPES.get(status, "api_error")
        error: dict[str, Any] = {"type": kind, "message": message, "code": code}
        if details:
            error.update(details)
        return orjson.dumps({"type": "error", "error": error})
    kind = _OPENAI_TYPES.get(status, "server_error")
    error = {"message": message, "type": kind, "param": None, "code": code}
    if details:
        error.update(details)
    return orjson.dumps({"error": error})


def sse_error(wire: WireFormat, status: int, code: str, message: str) -> bytes:
    """An error event for a stream whose headers were already sent, as each SDK raises it."""
    if wire.is_anthropic:
        return b"event: error\ndata: " + error_body(wire, status, code, message) + b"\n\n"
    payload: dict[str, Any] = orjson.loads(error_body(wire, status, code, message))
    if wire is WireFormat.OPENAI_RESPONSES:
        # The Responses stream's own error event, which also carries the "error" object the
        # OpenAI SDK raises on.
        payload.update(type="error", code=code, message=message, param=None, sequence_number=0)
        return b"event: error\ndata: " + orjson.dumps(payload) + b"\n\n"
    return b"data: " + orjson.dumps(payload) + b"\n\n"


def _int(value: Any) -> int:
    return value if isinstance(value, int) and value >= 0 else 0


def openai_usage(raw: Any) -> Usage:
    """Usage from an OpenAI ``usage`` object (prompt tokens include cached ones)."""
    if not isinstance(raw, dict):
        return Usage()
    details = raw.get("prompt_tokens_details") or {}
    cached = _int(details.get("cached_tokens"))
    written = _int(details.get("cache_write_tokens"))
    reasoning = _int((raw.get("completion_tokens_details") or {}).get("reasoning_tokens"))
    prompt = _int(raw.get("prompt_tokens"))
    return Usage(
        input_tokens=max(prompt - cached - written, 0),
        output_tokens=_int(raw.get("completion_tokens")),
        cache_read_tokens=cached,
        cache_write_tokens=written,
        reasoning_tokens=reasoning,
    )


def responses_usage(raw: Any) -> Usage:
    """Usage from a Responses API ``usage`` object (input tokens include cached ones)."""
    if not isinstance(raw, dict):
        return Usage()
    details = raw.get("input_tokens_details") or {}
    cached = _int(details.get("cached_tokens"))
    written = _int(details.get("cache_write_tokens"))
    reasoning = _int((raw.get("output_tokens_details") or {}).get("reasoning_tokens"))
    return Usage(
        input_tokens=max(_int(raw.get("input_tokens")) - cached - written, 0),
        output_tokens=_int(raw.get("output_tokens")),
        cache_read_tokens=cached,
        cache_write_tokens=written,
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
    if wire is WireFormat.OPENAI_RESPONSES:
        return responses_usage(raw)
    return openai_usage(raw)


class StreamWatcher:
    """Splits a relayed SSE stream into events, reads usage, holds back the terminal event.

    Events are kept (as the bytes already relayed) so that, if the stream ends before its usage
    arrives, the output produced so far can still be estimated from them.
    """

    def __init__(self, wire: WireFormat, *, hide_usage_chunk: bool) -> None:
        self.wire = wire
        self.usage = Usage()
        self.finished = False
        self.terminal = b""
        self.seen: list[bytes] = []
        self._hide_usage_chunk = hide_usage_chunk
        self._buffer = b""

    def events(self, chunk: bytes) -> list[bytes]:
        """Take upstream bytes; return the complete events to forward now (no blank lines)."""
        if b"\r" in chunk:
            chunk = chunk.replace(b"\r\n", b"\n")
        self._buffer += chunk
        if b"\n\n" not in self._buffer:
            return []
        complete, _, self._buffer = self._buffer.rpartition(b"\n\n")
        kept = [event for event in complete.split(b"\n\n") if event and self._keep(event)]
        self.seen.extend(kept)
        return kept

    def feed(self, chunk: bytes) -> bytes:
        """Take upstream bytes; return the complete events to forward now, framed."""
        return b"".join(event + b"\n\n" for event in self.events(chunk))

    def rest(self) -> bytes:
        """Whatever partial event was left when the stream ended."""
        rest, self._buffer = self._buffer, b""
        return rest

    def output_chars(self) -> int:
        """Characters of generated text and tool arguments in the events relayed so far."""
        return sum(_delta_chars(_data(event)) for event in self.seen)

    def _keep(self, event: bytes) -> bool:
        if self.wire is WireFormat.OPENAI_CHAT:
            return self._openai_event(event)
        if self.wire is WireFormat.OPENAI_RESPONSES:
            return self._responses_event(event)
        return self._anthropic_event(event)

    def _hold(self, event: bytes) -> bool:
        self.finished = True
        self.terminal += event + b"\n\n"
        return False

    def _openai_event(self, event: bytes) -> bool:
        if event.strip() == b"data: [DONE]":
            return self._hold(event)
        if b'"usage"' in event:
            data = _data(event)
            if isinstance(data, dict) and isinstance(data.get("usage"), dict):
                self.usage = openai_usage(data["usage"])
                if self._hide_usage_chunk and not data.get("choices"):
                    return False
        return True

    def _responses_event(self, event: bytes) -> bool:
        if b"response.completed" in event or b"response.incomplete" in event:
            data = _data(event)
            if isinstance(data, dict) and data.get("type") in _RESPONSES_TERMINAL:
                self.usage = responses_usage((data.get("response") or {}).get("usage"))
                return self._hold(event)
        return True

    def _anthropic_event(self, event: bytes) -> bool:
        if b"message_stop" in event and b'"type":"message_stop"' in event.replace(b" ", b""):
            return self._hold(event)
        if b'"usage"' in event:
            data = _data(event)
            if isinstance(data, dict):
                if data.get("type") == "message_start":
                    anthropic_usage((data.get("message") or {}).get("usage"), self.usage)
                elif data.get("type") == "message_delta":
                    anthropic_usage(data.get("usage"), self.usage)
        return True


_RESPONSES_TERMINAL = {"response.completed", "response.incomplete"}


def _delta_chars(data: Any) -> int:
    """Generated characters in one parsed stream event of any wire format."""
    if not isinstance(data, dict):
        return 0
    total = 0
    for choice in data.get("choices") or ():
        delta = choice.get("delta") if isinstance(choice, dict) else None
        if isinstance(delta, dict):
            total += _strlen(delta.get("content")) + _strlen(delta.get("reasoning_content"))
            for call in delta.get("tool_calls") or ():
                if isinstance(call, dict):
                    total += _strlen((call.get("function") or {}).get("arguments"))
    delta = data.get("delta")
    if isinstance(delta, dict):  # Anthropic content_block_delta
        for field in ("text", "partial_json", "thinking"):
            total += _strlen(delta.get(field))
    elif isinstance(delta, str):  # Responses output_text / function_call_arguments delta
        total += len(delta)
    return total


def _strlen(value: Any) -> int:
    return len(value) if isinstance(value, str) else 0


def _data(event: bytes) -> Any:
    payload = b"".join(
        line[5:].lstrip() for line in event.split(b"\n") if line.startswith(b"data:")
    )
    try:
        return orjson.loads(payload)
    except orjson.JSONDecodeError:
        return None
