"""Translation failures, and upstream error bodies retold in the client's error shape."""

from __future__ import annotations

from typing import Any

import orjson

from pilothouse.gateway.providers.base import WireFormat
from pilothouse.gateway.wire import error_body

MAX_MESSAGE_CHARS = 2000
# Claude Code compacts the conversation when a 400 says this; Codex looks for the code.
_ANTHROPIC_TOO_LONG = "prompt is too long"
_OPENAI_TOO_LONG = "context_length_exceeded"


class TranslationError(ValueError):
    """A request the upstream's wire format cannot express; the message names the field."""


def translate_error(body: bytes, status: int, source: WireFormat, target: WireFormat) -> bytes:
    """An upstream error body (any shape, maybe not JSON) in the client's error shape."""
    code, message = read_error(body, status)
    if target.is_anthropic:
        if code == _OPENAI_TOO_LONG and _ANTHROPIC_TOO_LONG not in message.lower():
            message = f"{_ANTHROPIC_TOO_LONG}: {message}"
    elif _ANTHROPIC_TOO_LONG in message.lower():
        code = _OPENAI_TOO_LONG
    wire = WireFormat.ANTHROPIC_MESSAGES if target.is_anthropic else WireFormat.OPENAI_CHAT
    return error_body(wire, status, code, message)


def read_error(body: bytes, status: int) -> tuple[str, str]:
    """The ``(code, message)`` of an error body in any of the usual shapes."""
    try:
        parsed: Any = orjson.loads(body)
    except orjson.JSONDecodeError:
        parsed = None
    code: Any = None
    message: Any = None
    if isinstance(parsed, dict):
        error = parsed.get("error")
        if isinstance(error, dict):
            message = error.get("message")
            code = error.get("code") or error.get("type")
        elif isinstance(error, str):
            message = error
        if not isinstance(message, str):
            message = parsed.get("message") or parsed.get("detail")
    if not isinstance(message, str) or not message.strip():
        text = body.decode("utf-8", "replace").strip()
        message = text or f"the upstream answered HTTP {status} with no message"
    if not isinstance(code, str) or not code:
        code = "upstream_error"
    return code, message[:MAX_MESSAGE_CHARS]
