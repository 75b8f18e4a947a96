"""Client stream writers for OpenAI chat and Anthropic clients.

A reader (``stream.py``) calls a writer once per thing the upstream said: text, the start of a
tool call, a fragment of its arguments, the end of a block, the stop reason. Each call returns
the client's SSE events for it, complete and ready to send. ``finish`` closes the client's
stream; usage is read from the ``Usage`` shared with the reader at that point.
"""

from __future__ import annotations

import time
from typing import Any, Protocol

import orjson

from pilothouse.gateway.providers.base import WireFormat
from pilothouse.gateway.translate.outcome import (
    Stop,
    anthropic_stop_reason,
    anthropic_usage_json,
    chat_finish_reason,
    chat_usage,
    fresh_id,
)
from pilothouse.gateway.translate.tools import ToolMap, anthropic_call_id
from pilothouse.gateway.usage import Usage
from pilothouse.gateway.wire import error_body

DONE = b"data: [DONE]\n\n"


class StreamWriter(Protocol):
    """Writes one client's stream from what the upstream said."""

    failed: bool

    def text(self, key: str, text: str) -> bytes:
        """Text of the block ``key``."""
        ...

    def tool_start(self, key: str, call_id: str, name: str) -> bytes:
        """A tool call starts as block ``key``."""
        ...

    def tool_args(self, key: str, fragment: str) -> bytes:
        """A fragment of the JSON arguments of the tool call ``key``."""
        ...

    def block_end(self, key: str) -> bytes:
        """Block ``key`` is complete."""
        ...

    def stop(self, stop: Stop) -> bytes:
        """The model stopped, for ``stop``."""
        ...

    def finish(self) -> bytes:
        """The closing events of the client's stream."""
        ...

    def error(self, status: int, code: str, message: str) -> bytes:
        """An in-stream error event; nothing more is written after it."""
        ...


def sse(name: str, payload: dict[str, Any]) -> bytes:
    """One named SSE event."""
    return b"event: " + name.encode() + b"\ndata: " + orjson.dumps(payload) + b"\n\n"


class ChatWriter:
    """Writes an OpenAI chat completion stream."""

    def __init__(self, model: str, usage: Usage, tools: ToolMap, *, include_usage: bool) -> None:
        self.failed = False
        self._usage = usage
        self._tools = tools
        self._include_usage = include_usage
        head: dict[str, Any] = {"id": fresh_id("chatcmpl-"), "object": "chat.completion.chunk"}
        head |= {"created": int(time.time()), "model": model}
        # Every chunk shares its head: serialise it once and close it per chunk.
        self._head = b"data: " + orjson.dumps(head)[:-1] + b',"choices":'
        self._started = False
        self._stopped = False
        self._calls: dict[str, int] = {}
        self._without_args: set[str] = set()

    def _chunk(self, delta: dict[str, Any], finish: str | None = None) -> bytes:
        choice = {"index": 0, "delta": delta, "logprobs": None, "finish_reason": finish}
        out = self._head + orjson.dumps([choice]) + b"}\n\n"
        if not self._started:
            self._started = True
            out = self._chunk({"role": "assistant", "content": ""}) + out
        return out

    def text(self, key: str, text: str) -> bytes:
        """A content delta."""
        return self._chunk({"content": text})

    def tool_start(self, key: str, call_id: str, name: str) -> bytes:
        """The first delta of a tool call: its index, id and name."""
        index = self._calls[key] = len(self._calls)
        self._without_args.add(key)
        function = {"name": self._tools.client_tool(name).name, "arguments": ""}
        call = {"index": index, "id": call_id, "type": "function", "function": function}
        return self._chunk({"tool_calls": [call]})

    def tool_args(self, key: str, fragment: str) -> bytes:
        """An arguments delta of a tool call."""
        index = self._calls.get(key)
        if index is None or not fragment:
            return b""
        self._without_args.discard(key)
        return self._chunk({"tool_calls": [{"index": index, "function": {"arguments": fragment}}]})

    def block_end(self, key: str) -> bytes:
        """Give a tool call that had no arguments an empty object, which clients can parse."""
        if key in self._without_args:
            return self.tool_args(key, "{}")
        return b""

    def stop(self, stop: Stop) -> bytes:
        """The chunk with the finish reason."""
        if self._stopped:
            return b""
        out = b"".join([self.block_end(key) for key in list(self._without_args)])
        self._stopped = True
        return out + self._chunk({}, chat_finish_reason(stop))

    def finish(self) -> bytes:
        """The usage chunk (when the client asked for it) and ``[DONE]``."""
        if self.failed:
            return b""
        out = self.stop("tool" if self._calls else "end")
        if self._include_usage:
            out += self._head + b'[],"usage":' + orjson.dumps(chat_usage(self._usage)) + b"}\n\n"
        return out + DONE

    def error(self, status: int, code: str, message: str) -> bytes:
        """``data: {"error": ...}``, which the OpenAI SDK raises as an ``APIError``."""
        self.failed = True
        return b"data: " + error_body(WireFormat.OPENAI_CHAT, status, code, message) + b"\n\n"


class AnthropicWriter:
    """Writes an Anthropic Messages stream, one content block open at a time."""

    def __init__(self, model: str, usage: Usage, tools: ToolMap) -> None:
        self.failed = False
        self._model = model
        self._usage = usage
        self._tools = tools
        self._started = False
        self._blocks = 0
        self._open: str | None = None
        self._index: dict[str, int] = {}
        self._stop: Stop | None = None
        self._made_calls = False

    def _start(self) -> bytes:
        if self._started:
            return b""
        self._started = True
        message: dict[str, Any] = {
            "id": fresh_id("msg_"),
            "type": "message",
            "role": "assistant",
            "model": self._model,
            "content": [],
            "stop_reason": None,
            "stop_sequence": None,
            "usage": anthropic_usage_json(self._usage),
        }
        return sse("message_start", {"type": "message_start", "message": message})

    def _begin(self, key: str, block: dict[str, Any]) -> bytes:
        out = self._start() + self._close()
        index = self._index[key] = self._blocks
        self._blocks += 1
        self._open = key
        start = {"type": "content_block_start", "index": index, "content_block": block}
        return out + sse("content_block_start", start)

    def _close(self) -> bytes:
        if self._open is None:
            return b""
        index = self._index[self._open]
        self._open = None
        return sse("content_block_stop", {"type": "content_block_stop", "index": index})

    def _delta(self, index: int, delta: dict[str, Any]) -> bytes:
        event = {"type": "content_block_delta", "index": index, "delta": delta}
        return sse("content_block_delta", event)

    def text(self, key: str, text: str) -> bytes:
        """A ``text_delta``, in a new text block unless ``key`` is the open one."""
        out = b""
        if self._open != key:
            out = self._begin(key, {"type": "text", "text": ""})
        return out + self._delta(self._index[key], {"type": "text_delta", "text": text})

    def tool_start(self, key: str, call_id: str, name: str) -> bytes:
        """A ``tool_use`` block starts."""
        self._made_calls = True
        tool = self._tools.client_tool(name)
        block = {"type": "tool_use", "id": anthropic_call_id(call_id), "name": tool.name}
        return self._begin(key, {**block, "input": {}})

    def tool_args(self, key: str, fragment: str) -> bytes:
        """An ``input_json_delta`` (by index, even if the upstream interleaved its calls)."""
        index = self._index.get(key)
        if index is None or not fragment:
            return b""
        return self._delta(index, {"type": "input_json_delta", "partial_json": fragment})

    def block_end(self, key: str) -> bytes:
        """``content_block_stop`` for the open block."""
        return self._close() if self._open == key else b""

    def stop(self, stop: Stop) -> bytes:
        """Close the open block; the stop reason waits for the usage, sent by ``finish``."""
        self._stop = stop
        return self._start() + self._close()

    def finish(self) -> bytes:
        """``message_delta`` with the stop reason and usage, then ``message_stop``."""
        if self.failed:
            return b""
        stop = self._stop or ("tool" if self._made_calls else "end")
        delta = {"stop_reason": anthropic_stop_reason(stop), "stop_sequence": None}
        usage = anthropic_usage_json(self._usage)
        closing = {"type": "message_delta", "delta": delta, "usage": usage}
        return (
            self._start()
            + self._close()
            + sse("message_delta", closing)
            + sse("message_stop", {"type": "message_stop"})
        )

    def error(self, status: int, code: str, message: str) -> bytes:
        """``event: error``, which the Anthropic SDK raises as an API error."""
        self.failed = True
        return (
            b"event: error\ndata: "
            + error_body(WireFormat.ANTHROPIC_MESSAGES, status, code, message)
            + b"\n\n"
        )
