"""The demo provider: answers like a model (text, tool calls, streaming, usage), with no key.

It is clearly not a model: it says what it is and repeats what it was asked. It exists so that
``pilothouse demo`` and the tests exercise the whole gateway with no provider account. It ignores
keys and URLs; a deployment's ``latency_ms`` delays the first byte of each reply.
"""

from __future__ import annotations

import asyncio
import hashlib
import math
import time
from collections.abc import AsyncIterator
from typing import Any

import orjson
from ulid import ULID

from pilothouse.gateway.config import DeploymentConfig
from pilothouse.gateway.providers.base import UpstreamCall, UpstreamReply, WireFormat
from pilothouse.gateway.translate import StreamTranslator, translate_reply, translate_request
from pilothouse.gateway.usage import estimate_tokens

WORDS_PER_CHUNK = 3


def _last_user_text(messages: list[Any]) -> str:
    for message in reversed(messages):
        if isinstance(message, dict) and message.get("role") == "user":
            content = message.get("content")
            if isinstance(content, str):
                return content
            if isinstance(content, list):  # the last text block: what was typed, not reminders
                texts = [b.get("text") for b in content if isinstance(b, dict)]
                return next((t for t in reversed(texts) if isinstance(t, str) and t), "")
    return ""


def _last_is_tool_result(messages: list[Any]) -> bool:
    if not messages or not isinstance(messages[-1], dict):
        return False
    last = messages[-1]
    if last.get("role") == "tool":
        return True
    content = last.get("content")
    return isinstance(content, list) and any(
        isinstance(b, dict) and b.get("type") == "tool_result" for b in content
    )


def _tool_names(body: dict[str, Any]) -> list[str]:
    names = []
    for tool in body.get("tools") or []:
        if isinstance(tool, dict):
            name = tool.get("name") or (tool.get("function") or {}).get("name")
            if isinstance(name, str):
                names.append(name)
    return names


class DemoAnswer:
    """What the demo model says to a request: text, or one tool call."""

    def __init__(self, body: dict[str, Any]) -> None:
        messages = body.get("messages") or []
        asked = _last_user_text(messages)
        self.tool: str | None = None
        if not _last_is_tool_result(messages):
            self.tool = next((n for n in _tool_names(body) if n in asked), None)
        if self.tool:
            self.text = ""
        elif _last_is_tool_result(messages):
            self.text = "The demo provider received the tool result. Done."
        else:
            self.text = (
                f"This is the Pilothouse demo provider, not a model. You said: {asked[:200]}"
            )
        cap = next(
            (
                body[name]
                for name in ("max_tokens", "max_completion_tokens", "max_output_tokens")
                if isinstance(body.get(name), int) and body[name] > 0
            ),
            None,
        )
        if (
            cap is not None and estimate_tokens(self.text) > cap
        ):  # stops at max_tokens, as models do
            self.text = self.text[: cap * 4]
        self.input_tokens = max(1, estimate_tokens(messages) + estimate_tokens(body.get("system")))
        self.output_tokens = max(1, estimate_tokens(self.text) + (8 if self.tool else 0))
        if cap is not None:
            self.output_tokens = min(self.output_tokens, cap)

    def pieces(self) -> list[str]:
        """The text in stream-sized pieces."""
        words = self.text.split(" ")
        return [
            " ".join(words[i : i + WORDS_PER_CHUNK])
            + (" " if i + WORDS_PER_CHUNK < len(words) else "")
            for i in range(0, len(words), WORDS_PER_CHUNK)
        ]


class DemoProvider:
    """The built-in demo provider."""

    name = "demo"

    def speaks(self, wire: WireFormat, deployment: DeploymentConfig) -> bool:
        """The demo speaks every wire format."""
        return True

    async def aclose(self) -> None:
        """Nothing to release."""

    async def send(self, call: UpstreamCall) -> UpstreamReply:
        """Answer ``call`` in its own wire format."""
        if call.deployment.latency_ms:
            await asyncio.sleep(call.deployment.latency_ms / 1000)
        model = str(call.body.get("model", call.deployment.model))
        if call.wire is WireFormat.OPENAI_EMBEDDINGS:
            return _json(_embeddings(call.body, model))
        if call.wire is WireFormat.ANTHROPIC_COUNT_TOKENS:
            count = estimate_tokens([call.body.get("system"), call.body.get("messages")])
            return _json({"input_tokens": max(1, count)})
        if call.wire is WireFormat.OPENAI_RESPONSES:
            return _responses(call, model)
        answer = DemoAnswer(call.body)
        if call.wire is WireFormat.ANTHROPIC_MESSAGES:
            if call.stream:
                return _sse(_anthropic_stream(answer, model))
            return _json(_anthropic_message(answer, model))
        include_usage = bool((call.body.get("stream_options") or {}).get("include_usage"))
        if call.stream:
            return _sse(_openai_stream(answer, model, include_usage))
        return _json(_openai_completion(answer, model))


def _responses(call: UpstreamCall, model: str) -> UpstreamReply:
    """The Responses API: the chat answer, in the Responses shape (through the translator)."""
    answer = DemoAnswer(
        translate_request(call.body, WireFormat.OPENAI_RESPONSES, WireFormat.OPENAI_CHAT)
    )
    if not call.stream:
        chat = orjson.dumps(_openai_completion(answer, model))
        reply = translate_reply(chat, WireFormat.OPENAI_CHAT, WireFormat.OPENAI_RESPONSES, model)
        return UpstreamReply(200, "application/json", _once(reply))

    async def events() -> AsyncIterator[bytes]:
        translator = StreamTranslator(
            WireFormat.OPENAI_CHAT, WireFormat.OPENAI_RESPONSES, model, include_usage=False
        )
        async for event in _openai_stream(answer, model, include_usage=True):
            out = translator.event(event.rstrip(b"\n"))
            if out:
                yield out
        yield translator.finish()

    return _sse(events())


def _embeddings(body: dict[str, Any], model: str) -> dict[str, Any]:
    """A deterministic unit vector per input (from its hash): stable, clearly not semantic."""
    raw = body.get("input")
    inputs = [raw] if isinstance(raw, str) else list(raw or [])
    asked = body.get("dimensions")
    size = asked if isinstance(asked, int) and 0 < asked <= 4096 else 16
    data = []
    for index, item in enumerate(inputs):
        digest = hashlib.sha256(orjson.dumps(item)).digest()
        values = [digest[i % len(digest)] - 127.5 for i in range(max(1, min(size, 4096)))]
        norm = math.sqrt(sum(v * v for v in values)) or 1.0
        data.append(
            {"object": "embedding", "index": index, "embedding": [v / norm for v in values]}
        )
    tokens = max(1, estimate_tokens(inputs))
    return {
        "object": "list",
        "data": data,
        "model": model,
        "usage": {"prompt_tokens": tokens, "total_tokens": tokens},
    }


async def _once(payload: bytes) -> AsyncIterator[bytes]:
    yield payload


def _json(payload: dict[str, Any]) -> UpstreamReply:
    async def one() -> AsyncIterator[bytes]:
        yield orjson.dumps(payload)

    return UpstreamReply(200, "application/json", one())


def _sse(events: AsyncIterator[bytes]) -> UpstreamReply:
    return UpstreamReply(200, "text/event-stream", events)


def _openai_usage(answer: DemoAnswer) -> dict[str, Any]:
    return {
        "prompt_tokens": answer.input_tokens,
        "completion_tokens": answer.output_tokens,
        "total_tokens": answer.input_tokens + answer.output_tokens,
        "prompt_tokens_details": {"cached_tokens": 0},
        "completion_tokens_details": {"reasoning_tokens": 0},
    }


def _openai_tool_call(answer: DemoAnswer) -> dict[str, Any]:
    return {
        "id": f"call_{ULID()}",
        "type": "function",
        "function": {"name": answer.tool, "arguments": "{}"},
    }


def _openai_completion(answer: DemoAnswer, model: str) -> dict[str, Any]:
    message: dict[str, Any] = {"role": "assistant", "content": answer.text or None}
    if answer.tool:
        message["tool_calls"] = [_openai_tool_call(answer)]
    return {
        "id": f"chatcmpl-{ULID()}",
        "object": "chat.completion",
        "created": int(time.time()),
        "model": model,
        "choices": [
            {
                "index": 0,
                "message": message,
                "finish_reason": "tool_calls" if answer.tool else "stop",
            }
        ],
        "usage": _openai_usage(answer),
    }


async def _openai_stream(
    answer: DemoAnswer, model: str, include_usage: bool
) -> AsyncIterator[bytes]:
    base = {
        "id": f"chatcmpl-{ULID()}",
        "object": "chat.completion.chunk",
        "created": int(time.time()),
        "model": model,
    }

    def chunk(delta: dict[str, Any], finish: str | None = None) -> bytes:
        choice = {"index": 0, "delta": delta, "finish_reason": finish}
        return b"data: " + orjson.dumps({**base, "choices": [choice]}) + b"\n\n"

    yield chunk({"role": "assistant", "content": ""})
    if answer.tool:
        call = _openai_tool_call(answer)
        yield chunk({"tool_calls": [{"index": 0, **call}]})
    else:
        for piece in answer.pieces():
            yield chunk({"content": piece})
    yield chunk({}, "tool_calls" if answer.tool else "stop")
    if include_usage:
        usage = {**base, "choices": [], "usage": _openai_usage(answer)}
        yield b"data: " + orjson.dumps(usage) + b"\n\n"
    yield b"data: [DONE]\n\n"


def _anthropic_usage(answer: DemoAnswer, output_tokens: int) -> dict[str, Any]:
    return {
        "input_tokens": answer.input_tokens,
        "output_tokens": output_tokens,
        "cache_creation_input_tokens": 0,
        "cache_read_input_tokens": 0,
    }


def _anthropic_blocks(answer: DemoAnswer) -> list[dict[str, Any]]:
    if answer.tool:
        return [{"type": "tool_use", "id": f"toolu_{ULID()}", "name": answer.tool, "input": {}}]
    return [{"type": "text", "text": answer.text}]


def _anthropic_message(answer: DemoAnswer, model: str) -> dict[str, Any]:
    return {
        "id": f"msg_{ULID()}",
        "type": "message",
        "role": "assistant",
        "model": model,
        "content": _anthropic_blocks(answer),
        "stop_reason": "tool_use" if answer.tool else "end_turn",
        "stop_sequence": None,
        "usage": _anthropic_usage(answer, answer.output_tokens),
    }


def _event(name: str, data: dict[str, Any]) -> bytes:
    return b"event: " + name.encode() + b"\ndata: " + orjson.dumps(data) + b"\n\n"


def _block_delta(delta: dict[str, Any]) -> bytes:
    return _event(
        "content_block_delta", {"type": "content_block_delta", "index": 0, "delta": delta}
    )


async def _anthropic_stream(answer: DemoAnswer, model: str) -> AsyncIterator[bytes]:
    start = _anthropic_message(answer, model)
    start.update(content=[], stop_reason=None, usage=_anthropic_usage(answer, 1))
    yield _event("message_start", {"type": "message_start", "message": start})
    if answer.tool:
        block = _anthropic_blocks(answer)[0]
        yield _event(
            "content_block_start",
            {"type": "content_block_start", "index": 0, "content_block": {**block, "input": {}}},
        )
        delta = {"type": "input_json_delta", "partial_json": "{}"}
        yield _event(
            "content_block_delta", {"type": "content_block_delta", "index": 0, "delta": delta}
        )
    else:
        yield _event(
            "content_block_start",
            {
                "type": "content_block_start",
                "index": 0,
                "content_block": {"type": "text", "text": ""},
            },
        )
        for piece in answer.pieces():
            delta = {"type": "text_delta", "text": piece}
            yield _event(
                "content_block_delta", {"type": "content_block_delta", "index": 0, "delta": delta}
            )
    yield _event("content_block_stop", {"type": "content_block_stop", "index": 0})
    yield _event(
        "message_delta",
        {
            "type": "message_delta",
            "delta": {
                "stop_reason": "tool_use" if answer.tool else "end_turn",
                "stop_sequence": None,
            },
            "usage": {"output_tokens": answer.output_tokens},
        },
    )
    yield _event("message_stop", {"type": "message_stop"})
