"""The client stream writer for Responses clients (Codex CLI, the OpenAI SDK).

The event sequence is the one Codex and ``openai``'s ``ResponseStreamState`` accept:
``response.created``, ``response.in_progress``, then per output item ``output_item.added``,
its content events and ``output_item.done``, and last ``response.completed`` with the full
response, usage included. Every event carries ``type`` and a ``sequence_number``.

Tool calls stay open until their block ends (or the model stops), so a chat upstream that
interleaves argument fragments of parallel calls still produces whole items. A freeform tool
call's input is only known once its stand-in function's arguments are complete, so it is sent
in one delta at the end.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any

from pilothouse.gateway.translate.outcome import Stop, fresh_id, responses_status
from pilothouse.gateway.translate.reply import (
    ToolCall,
    call_item,
    message_item,
    response_object,
    text_part,
)
from pilothouse.gateway.translate.stream_writers import sse
from pilothouse.gateway.translate.tools import ToolMap
from pilothouse.gateway.usage import Usage

# Codex reads these codes of a failed response; any other code is retried as a server error.
_CODEX_CODES = frozenset(
    {"context_length_exceeded", "insufficient_quota", "rate_limit_exceeded", "server_error"}
)


@dataclass(slots=True)
class _Text:
    key: str
    index: int
    item_id: str
    pieces: list[str] = field(default_factory=list)


@dataclass(slots=True)
class _Call:
    index: int
    item_id: str
    call: ToolCall
    custom: bool
    pieces: list[str] = field(default_factory=list)


class ResponsesWriter:
    """Writes a Responses event stream."""

    def __init__(self, model: str, usage: Usage, tools: ToolMap) -> None:
        self.failed = False
        self._model = model
        self._usage = usage
        self._tools = tools
        self._id = fresh_id("resp_")
        self._created = int(time.time())
        self._sequence = 0
        self._started = False
        self._output: dict[int, dict[str, Any]] = {}
        self._items = 0
        self._text: _Text | None = None
        self._calls: dict[str, _Call] = {}
        self._stop: Stop | None = None

    def _event(self, kind: str, fields: dict[str, Any]) -> bytes:
        payload = {"type": kind, "sequence_number": self._sequence, **fields}
        self._sequence += 1
        return sse(kind, payload)

    def _response(self, status: str, *, final: bool, **extra: Any) -> dict[str, Any]:
        output = [self._output[i] for i in sorted(self._output)] if final else []
        usage = self._usage if final else None
        return response_object(self._id, self._created, self._model, status, output, usage, **extra)

    def _start(self) -> bytes:
        if self._started:
            return b""
        self._started = True
        response = self._response("in_progress", final=False)
        return self._event("response.created", {"response": response}) + self._event(
            "response.in_progress", {"response": response}
        )

    def _add(self, item: dict[str, Any]) -> tuple[int, bytes]:
        index = self._items
        self._items += 1
        return index, self._event(
            "response.output_item.added", {"output_index": index, "item": item}
        )

    def _done(self, index: int, item: dict[str, Any]) -> bytes:
        self._output[index] = item
        return self._event("response.output_item.done", {"output_index": index, "item": item})

    def text(self, key: str, text: str) -> bytes:
        """An ``output_text.delta``, in a new message item unless ``key`` is the open one."""
        out = self._start()
        current = self._text
        if current is None or current.key != key:
            out += self._close_text()
            current, opened = self._open_text(key)
            out += opened
        current.pieces.append(text)
        where = {"item_id": current.item_id, "output_index": current.index, "content_index": 0}
        delta = {**where, "delta": text, "logprobs": []}
        return out + self._event("response.output_text.delta", delta)

    def _open_text(self, key: str) -> tuple[_Text, bytes]:
        item_id = fresh_id("msg_")
        item = {**message_item(item_id, ""), "status": "in_progress", "content": []}
        index, added = self._add(item)
        self._text = _Text(key, index, item_id)
        part = {"item_id": item_id, "output_index": index, "content_index": 0}
        part["part"] = text_part("")
        return self._text, added + self._event("response.content_part.added", part)

    def _close_text(self) -> bytes:
        current, self._text = self._text, None
        if current is None:
            return b""
        text = "".join(current.pieces)
        where = {"item_id": current.item_id, "output_index": current.index, "content_index": 0}
        return (
            self._event("response.output_text.done", {**where, "text": text, "logprobs": []})
            + self._event("response.content_part.done", {**where, "part": text_part(text)})
            + self._done(current.index, message_item(current.item_id, text))
        )

    def tool_start(self, key: str, call_id: str, name: str) -> bytes:
        """A ``function_call`` (or ``custom_tool_call``) item is added."""
        out = self._start() + self._close_text()
        custom = self._tools.client_tool(name).custom
        call = ToolCall(call_id, name, "")
        item_id = fresh_id("ctc_" if custom else "fc_")
        item = call_item(call, self._tools, "in_progress", item_id)
        index, added = self._add(item)
        self._calls[key] = _Call(index, item_id, call, custom)
        return out + added

    def tool_args(self, key: str, fragment: str) -> bytes:
        """A ``function_call_arguments.delta``; freeform tool input waits for the end."""
        current = self._calls.get(key)
        if current is None or not fragment:
            return b""
        current.pieces.append(fragment)
        if current.custom:
            return b""
        where = {"item_id": current.item_id, "output_index": current.index}
        return self._event("response.function_call_arguments.delta", {**where, "delta": fragment})

    def block_end(self, key: str) -> bytes:
        """Close the text or tool call item of ``key``."""
        if self._text is not None and self._text.key == key:
            return self._close_text()
        current = self._calls.pop(key, None)
        return self._close_call(current) if current is not None else b""

    def _close_call(self, current: _Call) -> bytes:
        out = b""
        if not current.pieces and not current.custom:
            out = self._append_args(current, "{}")
        current.call.arguments = "".join(current.pieces)
        item = call_item(current.call, self._tools, "completed", current.item_id)
        where = {"item_id": current.item_id, "output_index": current.index}
        if current.custom:
            raw = item["input"]
            out += self._event("response.custom_tool_call_input.delta", {**where, "delta": raw})
            out += self._event("response.custom_tool_call_input.done", {**where, "input": raw})
        else:
            done = {**where, "name": item["name"], "arguments": item["arguments"]}
            out += self._event("response.function_call_arguments.done", done)
        return out + self._done(current.index, item)

    def _append_args(self, current: _Call, fragment: str) -> bytes:
        current.pieces.append(fragment)
        where = {"item_id": current.item_id, "output_index": current.index}
        return self._event("response.function_call_arguments.delta", {**where, "delta": fragment})

    def _close_all(self) -> bytes:
        out = self._close_text()
        for key in list(self._calls):
            out += self._close_call(self._calls.pop(key))
        return out

    def stop(self, stop: Stop) -> bytes:
        """Every open item is done; ``response.completed`` waits for ``finish``."""
        self._stop = stop
        return self._start() + self._close_all()

    def finish(self) -> bytes:
        """``response.completed`` with every output item and the usage."""
        if self.failed:
            return b""
        out = self._start() + self._close_all()
        made_calls = any(item["type"] != "message" for item in self._output.values())
        status, incomplete = responses_status(self._stop or ("tool" if made_calls else "end"))
        response = self._response(status, final=True, incomplete=incomplete)
        return out + self._event("response.completed", {"response": response})

    def error(self, status: int, code: str, message: str) -> bytes:
        """An ``error`` event with Pilothouse's code, then ``response.failed`` as Codex reads it."""
        self.failed = True
        out = self._start() + self._close_all()
        # The "error" object makes the OpenAI SDK raise; Codex reads ``response.failed``.
        kind = "rate_limit_exceeded" if status == 429 else "server_error"
        error = {"message": message, "type": kind, "param": None, "code": code}
        out += self._event(
            "error", {"code": code, "message": message, "param": None, "error": error}
        )
        if code not in _CODEX_CODES:
            code = "rate_limit_exceeded" if status == 429 else "server_error"
        failure = {"code": code, "message": message}
        response = self._response("failed", final=True, error=failure)
        return out + self._event("response.failed", {"response": response})
