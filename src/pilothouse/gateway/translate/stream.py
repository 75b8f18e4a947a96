"""Streams across wires: read each upstream SSE event, write the client's events for it.

A reader per upstream wire (``ChatReader``, ``AnthropicReader``) parses one event, keeps the
usage it reports and calls the client's writer (``stream_writers.py``,
``stream_responses.py``). Blocks are named by keys: ``t`` and ``c<index>`` for a chat stream's
text and tool calls, ``b<index>`` for an Anthropic stream's content blocks.
"""

from __future__ import annotations

from typing import Any

import orjson

from pilothouse.gateway.providers.base import WireFormat
from pilothouse.gateway.translate.errors import TranslationError
from pilothouse.gateway.translate.outcome import (
    Stop,
    fresh_id,
    settled_stop,
    stop_from_anthropic,
    stop_from_chat,
    usage_from_anthropic,
    usage_from_chat,
)
from pilothouse.gateway.translate.stream_responses import ResponsesWriter
from pilothouse.gateway.translate.stream_writers import AnthropicWriter, ChatWriter, StreamWriter
from pilothouse.gateway.translate.tools import ToolMap
from pilothouse.gateway.usage import Usage

# Anthropic error types as HTTP statuses, for an error that arrives inside a stream.
_ANTHROPIC_STATUS = {
    "invalid_request_error": 400,
    "authentication_error": 401,
    "permission_error": 403,
    "not_found_error": 404,
    "request_too_large": 413,
    "rate_limit_error": 429,
    "overloaded_error": 503,
}


def sse_data(raw: bytes) -> tuple[str | None, bytes]:
    """The ``event:`` name and the joined ``data:`` lines of one SSE event."""
    name: str | None = None
    data: list[bytes] = []
    for line in raw.split(b"\n"):
        if line.startswith(b"data:"):
            value = line[5:]
            data.append(value[1:] if value.startswith(b" ") else value)
        elif line.startswith(b"event:"):
            name = line[6:].strip().decode("utf-8", "replace")
    return name, b"\n".join(data)


class _Reader:
    def __init__(self, writer: StreamWriter, usage: Usage) -> None:
        self.writer = writer
        self.usage = usage
        self.chars = 0
        self.made_calls = False

    def _error(self, error: Any, status: int) -> bytes:
        if not isinstance(error, dict):
            error = {"message": str(error)}
        code = error.get("code") or error.get("type") or "upstream_error"
        message = error.get("message") or "the upstream reported an error mid-stream"
        return self.writer.error(status, str(code), str(message))

    def _stop(self, stop: Stop) -> bytes:
        return self.writer.stop(settled_stop(stop, self.made_calls))


class ChatReader(_Reader):
    """Reads an OpenAI chat completion stream."""

    def __init__(self, writer: StreamWriter, usage: Usage) -> None:
        super().__init__(writer, usage)
        self._calls: set[int] = set()

    def read(self, name: str | None, data: bytes) -> bytes:
        """The client's events for one chunk."""
        if not data or data == b"[DONE]":
            return b""
        try:
            chunk = orjson.loads(data)
        except orjson.JSONDecodeError:
            return b""
        if not isinstance(chunk, dict):
            return b""
        error = chunk.get("error")
        if error:
            limited = isinstance(error, dict) and error.get("code") == "rate_limit_exceeded"
            return self._error(error, 429 if limited else 502)
        if isinstance(chunk.get("usage"), dict):
            usage_from_chat(chunk["usage"], self.usage)
        out = b""
        for choice in chunk.get("choices") or ():
            if isinstance(choice, dict) and choice.get("index", 0) == 0:
                out += self._choice(choice)
        return out

    def _choice(self, choice: dict[str, Any]) -> bytes:
        out = b""
        delta = choice.get("delta") or {}
        for key in ("content", "refusal"):
            text = delta.get(key)
            if isinstance(text, str) and text:
                self.chars += len(text)
                out += self.writer.text("t", text)
        for key in ("reasoning_content", "reasoning"):
            thought = delta.get(key)
            if isinstance(thought, str):
                self.chars += len(thought)
        for call in delta.get("tool_calls") or ():
            if isinstance(call, dict):
                out += self._call(call)
        if choice.get("finish_reason"):
            out += self._stop(stop_from_chat(choice["finish_reason"]))
        return out

    def _call(self, call: dict[str, Any]) -> bytes:
        index = call.get("index", 0)
        key = f"c{index}"
        function = call.get("function") or {}
        out = b""
        if index not in self._calls:
            self._calls.add(index)
            self.made_calls = True
            call_id = call.get("id") or fresh_id("call_")
            out = self.writer.tool_start(key, call_id, function.get("name") or "")
        fragment = function.get("arguments")
        if isinstance(fragment, str) and fragment:
            self.chars += len(fragment)
            out += self.writer.tool_args(key, fragment)
        return out


class AnthropicReader(_Reader):
    """Reads an Anthropic Messages stream."""

    def __init__(self, writer: StreamWriter, usage: Usage) -> None:
        super().__init__(writer, usage)
        self._kinds: dict[int, str] = {}

    def read(self, name: str | None, data: bytes) -> bytes:
        """The client's events for one event."""
        try:
            event = orjson.loads(data) if data else None
        except orjson.JSONDecodeError:
            return b""
        if not isinstance(event, dict):
            return b""
        kind = event.get("type") or name
        if kind == "content_block_delta":
            return self._delta(event)
        if kind == "content_block_start":
            return self._start(event)
        if kind == "content_block_stop":
            index = event.get("index")
            return self.writer.block_end(f"b{index}") if index in self._kinds else b""
        if kind == "message_start":
            usage_from_anthropic((event.get("message") or {}).get("usage"), self.usage)
        elif kind == "message_delta":
            usage_from_anthropic(event.get("usage"), self.usage)
            reason = (event.get("delta") or {}).get("stop_reason")
            if reason:
                return self._stop(stop_from_anthropic(reason))
        elif kind == "error":
            error = event.get("error")
            kind = error.get("type") if isinstance(error, dict) else None
            status = _ANTHROPIC_STATUS.get(kind, 502) if isinstance(kind, str) else 502
            return self._error(error, status)
        return b""

    def _start(self, event: dict[str, Any]) -> bytes:
        block = event.get("content_block") or {}
        index = event.get("index")
        kind = block.get("type")
        if not isinstance(index, int) or kind not in ("text", "tool_use"):
            return b""  # thinking and server tool blocks have no place in the client's wire
        self._kinds[index] = kind
        key = f"b{index}"
        if kind == "text":
            text = block.get("text")
            return self._text(key, text) if isinstance(text, str) and text else b""
        self.made_calls = True
        call_id = block.get("id") or fresh_id("toolu_")
        out = self.writer.tool_start(key, call_id, block.get("name") or "")
        if block.get("input"):  # some servers send the whole input up front
            out += self._args(key, orjson.dumps(block["input"]).decode())
        return out

    def _delta(self, event: dict[str, Any]) -> bytes:
        delta = event.get("delta") or {}
        kind = delta.get("type")
        index = event.get("index")
        if kind == "thinking_delta" and isinstance(delta.get("thinking"), str):
            self.chars += len(delta["thinking"])
        if index not in self._kinds:
            return b""
        if kind == "text_delta" and isinstance(delta.get("text"), str):
            return self._text(f"b{index}", delta["text"])
        if kind == "input_json_delta" and isinstance(delta.get("partial_json"), str):
            return self._args(f"b{index}", delta["partial_json"])
        return b""

    def _text(self, key: str, text: str) -> bytes:
        self.chars += len(text)
        return self.writer.text(key, text) if text else b""

    def _args(self, key: str, fragment: str) -> bytes:
        self.chars += len(fragment)
        return self.writer.tool_args(key, fragment)


class StreamTranslator:
    """Turns an upstream SSE stream in ``source`` into the client's stream in ``target``."""

    def __init__(
        self,
        source: WireFormat,
        target: WireFormat,
        model: str,
        *,
        include_usage: bool,
        tools: ToolMap | None = None,
    ) -> None:
        self._usage = Usage()
        names = tools or ToolMap(target)
        writer: StreamWriter
        if target is WireFormat.OPENAI_CHAT:
            writer = ChatWriter(model, self._usage, names, include_usage=include_usage)
        elif target is WireFormat.ANTHROPIC_MESSAGES:
            writer = AnthropicWriter(model, self._usage, names)
        elif target is WireFormat.OPENAI_RESPONSES:
            writer = ResponsesWriter(model, self._usage, names)
        else:
            raise TranslationError(f"streams in {target.value} are not written")
        self._reader: ChatReader | AnthropicReader
        if source is WireFormat.OPENAI_CHAT:
            self._reader = ChatReader(writer, self._usage)
        elif source is WireFormat.ANTHROPIC_MESSAGES:
            self._reader = AnthropicReader(writer, self._usage)
        else:
            raise TranslationError(f"streams in {source.value} are not read")
        self._writer = writer

    def event(self, raw: bytes) -> bytes:
        """One complete upstream SSE event (no trailing blank line) as the client's events."""
        if self._writer.failed:
            return b""
        if b"\r" in raw:
            raw = raw.replace(b"\r\n", b"\n").replace(b"\r", b"\n")
        if b"\n\n" not in raw:
            return self._reader.read(*sse_data(raw))
        return b"".join(self._reader.read(*sse_data(part)) for part in raw.split(b"\n\n"))

    def finish(self) -> bytes:
        """The client's closing events, also after an upstream that ended early."""
        return self._writer.finish()

    def error(self, status: int, code: str, message: str) -> bytes:
        """An in-stream error event in the client's format."""
        if self._writer.failed:
            return b""
        return self._writer.error(status, code, message)

    @property
    def usage(self) -> Usage:
        """The usage the upstream reported so far."""
        return self._usage

    @property
    def output_chars(self) -> int:
        """Characters of text, tool arguments and thinking the upstream generated so far."""
        return self._reader.chars
