"""Complete (non-streamed) replies: read the upstream's, write the client's.

A reply is read into ``Reply`` (text and tool calls in order, a neutral stop reason, usage) and
written in the client's shape with fresh ids and the model name the client asked for.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any

import orjson

from pilothouse.gateway.providers.base import WireFormat
from pilothouse.gateway.translate.errors import TranslationError
from pilothouse.gateway.translate.outcome import (
    Stop,
    anthropic_stop_reason,
    anthropic_usage_json,
    chat_finish_reason,
    chat_usage,
    fresh_id,
    responses_status,
    responses_usage,
    settled_stop,
    stop_from_anthropic,
    stop_from_chat,
    usage_from_anthropic,
    usage_from_chat,
)
from pilothouse.gateway.translate.tools import (
    ToolMap,
    anthropic_call_id,
    custom_tool_input,
)
from pilothouse.gateway.usage import Usage


@dataclass(slots=True)
class ToolCall:
    """One tool call as the upstream made it."""

    call_id: str
    name: str
    arguments: str


@dataclass(slots=True)
class Reply:
    """What a model answered, in no wire's shape."""

    parts: list[str | ToolCall] = field(default_factory=list)
    stop: Stop = "end"
    usage: Usage = field(default_factory=Usage)

    @property
    def calls(self) -> list[ToolCall]:
        """The tool calls, in order."""
        return [p for p in self.parts if isinstance(p, ToolCall)]

    def text(self, joiner: str = "") -> str:
        """All the text, joined."""
        return joiner.join(p for p in self.parts if isinstance(p, str))


def translate_reply(
    body: bytes,
    source: WireFormat,
    target: WireFormat,
    model: str,
    *,
    tools: ToolMap | None = None,
) -> bytes:
    """A complete 200 reply in ``source`` as the client's ``target`` shape, as JSON bytes.

    ``model`` is the name the client asked for; ``tools`` (from ``tool_map``) maps upstream
    tool names back to the client's namespaced and freeform tools.
    """
    try:
        parsed = orjson.loads(body)
    except orjson.JSONDecodeError as exc:
        raise TranslationError(f"the upstream's reply is not JSON: {exc}") from None
    if not isinstance(parsed, dict):
        raise TranslationError("the upstream's reply is not a JSON object")
    if source is WireFormat.OPENAI_CHAT:
        reply = read_chat(parsed)
    elif source is WireFormat.ANTHROPIC_MESSAGES:
        reply = read_anthropic(parsed)
    else:
        raise TranslationError(f"replies in {source.value} are not read")
    names = tools or ToolMap(target)
    if target is WireFormat.OPENAI_CHAT:
        return orjson.dumps(chat_reply(reply, model, names))
    if target is WireFormat.ANTHROPIC_MESSAGES:
        return orjson.dumps(anthropic_reply(reply, model, names))
    if target is WireFormat.OPENAI_RESPONSES:
        return orjson.dumps(responses_reply(reply, model, names))
    raise TranslationError(f"replies in {target.value} are not written")


def read_chat(body: dict[str, Any]) -> Reply:
    """The reply in an OpenAI chat completion."""
    reply = Reply()
    usage_from_chat(body.get("usage"), reply.usage)
    choices = body.get("choices")
    choice = choices[0] if isinstance(choices, list) and choices else {}
    message = choice.get("message") or {}
    for key in ("content", "refusal"):
        text = message.get(key)
        if isinstance(text, list):  # some servers send content parts
            text = "".join(p.get("text") or "" for p in text if isinstance(p, dict))
        if isinstance(text, str) and text:
            reply.parts.append(text)
    for call in message.get("tool_calls") or ():
        function = call.get("function") if isinstance(call, dict) else None
        if isinstance(function, dict) and isinstance(function.get("name"), str):
            arguments = function.get("arguments")
            call_id = call.get("id") or fresh_id("call_")
            reply.parts.append(ToolCall(call_id, function["name"], arguments or "{}"))
    reply.stop = settled_stop(stop_from_chat(choice.get("finish_reason")), bool(reply.calls))
    return reply


def read_anthropic(body: dict[str, Any]) -> Reply:
    """The reply in an Anthropic message."""
    reply = Reply()
    usage_from_anthropic(body.get("usage"), reply.usage)
    for block in body.get("content") or ():
        kind = block.get("type") if isinstance(block, dict) else None
        if kind == "text" and block.get("text"):
            reply.parts.append(block["text"])
        elif kind == "tool_use" and isinstance(block.get("name"), str):
            arguments = orjson.dumps(block.get("input") or {}).decode()
            call_id = block.get("id") or fresh_id("toolu_")
            reply.parts.append(ToolCall(call_id, block["name"], arguments))
    reply.stop = settled_stop(stop_from_anthropic(body.get("stop_reason")), bool(reply.calls))
    return reply


def chat_reply(reply: Reply, model: str, tools: ToolMap) -> dict[str, Any]:
    """An OpenAI chat completion."""
    text = reply.text("\n\n")
    message: dict[str, Any] = {"role": "assistant", "content": text or None, "refusal": None}
    if reply.calls:
        message["tool_calls"] = [
            {
                "id": call.call_id,
                "type": "function",
                "function": {
                    "name": tools.client_tool(call.name).name,
                    "arguments": call.arguments,
                },
            }
            for call in reply.calls
        ]
    choice = {
        "index": 0,
        "message": message,
        "logprobs": None,
        "finish_reason": chat_finish_reason(reply.stop),
    }
    return {
        "id": fresh_id("chatcmpl-"),
        "object": "chat.completion",
        "created": int(time.time()),
        "model": model,
        "choices": [choice],
        "usage": chat_usage(reply.usage),
    }


def anthropic_reply(reply: Reply, model: str, tools: ToolMap) -> dict[str, Any]:
    """An Anthropic message."""
    content: list[dict[str, Any]] = []
    for part in reply.parts:
        if isinstance(part, str):
            content.append({"type": "text", "text": part})
        else:
            content.append(
                {
                    "type": "tool_use",
                    "id": anthropic_call_id(part.call_id),
                    "name": tools.client_tool(part.name).name,
                    "input": _input_object(part.arguments),
                }
            )
    return {
        "id": fresh_id("msg_"),
        "type": "message",
        "role": "assistant",
        "model": model,
        "content": content,
        "stop_reason": anthropic_stop_reason(reply.stop),
        "stop_sequence": None,
        "usage": anthropic_usage_json(reply.usage),
    }


def _input_object(arguments: str) -> dict[str, Any]:
    try:
        parsed = orjson.loads(arguments) if arguments.strip() else {}
    except orjson.JSONDecodeError:
        parsed = None
    # Anthropic's tool input must be an object; the client's own validation reports the rest.
    return parsed if isinstance(parsed, dict) else {}


def responses_reply(reply: Reply, model: str, tools: ToolMap) -> dict[str, Any]:
    """A Responses response object."""
    output: list[dict[str, Any]] = []
    for part in reply.parts:
        if isinstance(part, str):
            output.append(message_item(fresh_id("msg_"), part))
        else:
            output.append(call_item(part, tools, "completed"))
    status, incomplete = responses_status(reply.stop)
    return response_object(
        fresh_id("resp_"), int(time.time()), model, status, output, reply.usage, incomplete
    )


def message_item(item_id: str, text: str, status: str = "completed") -> dict[str, Any]:
    """A Responses assistant message item holding ``text``."""
    return {
        "id": item_id,
        "type": "message",
        "status": status,
        "role": "assistant",
        "content": [text_part(text)],
    }


def text_part(text: str) -> dict[str, Any]:
    """A Responses ``output_text`` content part."""
    return {"type": "output_text", "text": text, "annotations": [], "logprobs": []}


def call_item(
    call: ToolCall, tools: ToolMap, status: str, item_id: str | None = None
) -> dict[str, Any]:
    """A Responses ``function_call`` or ``custom_tool_call`` item for ``call``."""
    tool = tools.client_tool(call.name)
    item: dict[str, Any]
    if tool.custom:
        item = {
            "id": item_id or fresh_id("ctc_"),
            "type": "custom_tool_call",
            "status": status,
            "call_id": call.call_id,
            "name": tool.name,
            "input": custom_tool_input(call.arguments),
        }
    else:
        item = {
            "id": item_id or fresh_id("fc_"),
            "type": "function_call",
            "status": status,
            "call_id": call.call_id,
            "name": tool.name,
            "arguments": call.arguments,
        }
    if tool.namespace:
        item["namespace"] = tool.namespace
    return item


def response_object(
    response_id: str,
    created_at: int,
    model: str,
    status: str,
    output: list[dict[str, Any]],
    usage: Usage | None,
    incomplete: dict[str, str] | None = None,
    error: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """A Responses ``response`` object."""
    return {
        "id": response_id,
        "object": "response",
        "created_at": created_at,
        "status": status,
        "model": model,
        "output": output,
        "usage": responses_usage(usage) if usage is not None else None,
        "error": error,
        "incomplete_details": incomplete,
        "instructions": None,
        "parallel_tool_calls": True,
        "tool_choice": "auto",
        "tools": [],
        "store": False,
    }
