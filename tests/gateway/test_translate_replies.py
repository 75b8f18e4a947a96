"""Complete replies and error bodies translated across wires, validated by the SDKs' models."""

from __future__ import annotations

import json
from typing import Any

import anthropic
import httpx2
import openai
import orjson
import pytest
from anthropic.types import Message
from openai.types.chat import ChatCompletion
from openai.types.responses import Response

from pilothouse.gateway.providers.base import WireFormat
from pilothouse.gateway.translate import (
    TranslationError,
    tool_map,
    translate_error,
    translate_reply,
)

CHAT = WireFormat.OPENAI_CHAT
MESSAGES = WireFormat.ANTHROPIC_MESSAGES
RESPONSES = WireFormat.OPENAI_RESPONSES

ANTHROPIC_REPLY: dict[str, Any] = {
    "id": "msg_up",
    "type": "message",
    "role": "assistant",
    "model": "claude-up",
    "content": [
        {"type": "thinking", "thinking": "hmm", "signature": "c2ln"},
        {"type": "text", "text": "Fetching."},
        {
            "type": "tool_use",
            "id": "toolu_9",
            "name": "mcp__echo__fetch_url",
            "input": {"url": "u"},
        },
        {
            "type": "tool_use",
            "id": "toolu_10",
            "name": "apply_patch",
            "input": {"input": "*** Begin Patch"},
        },
    ],
    "stop_reason": "tool_use",
    "stop_sequence": None,
    "usage": {
        "input_tokens": 12,
        "output_tokens": 40,
        "cache_read_input_tokens": 1000,
        "cache_creation_input_tokens": 30,
        "output_tokens_details": {"thinking_tokens": 9},
    },
}
CHAT_REPLY: dict[str, Any] = {
    "id": "chatcmpl-up",
    "object": "chat.completion",
    "created": 1,
    "model": "gpt-up",
    "choices": [
        {
            "index": 0,
            "message": {
                "role": "assistant",
                "content": "Reading.",
                "tool_calls": [
                    {
                        "id": "call_1",
                        "type": "function",
                        "function": {"name": "read_file", "arguments": '{"path": "a"}'},
                    },
                    {
                        "id": "call:2",
                        "type": "function",
                        "function": {"name": "ls", "arguments": ""},
                    },
                ],
            },
            "finish_reason": "tool_calls",
        }
    ],
    "usage": {
        "prompt_tokens": 500,
        "completion_tokens": 25,
        "total_tokens": 525,
        "prompt_tokens_details": {"cached_tokens": 400},
        "completion_tokens_details": {"reasoning_tokens": 10},
    },
}


def reply(body: dict[str, Any], source: WireFormat, target: WireFormat, **kw: Any) -> bytes:
    return translate_reply(orjson.dumps(body), source, target, "client-model", **kw)


def test_anthropic_reply_becomes_a_chat_completion() -> None:
    completion = ChatCompletion.model_validate_json(reply(ANTHROPIC_REPLY, MESSAGES, CHAT))
    assert completion.model == "client-model" and completion.id.startswith("chatcmpl-")
    (choice,) = completion.choices
    assert choice.message.content == "Fetching."
    assert choice.finish_reason == "tool_calls"
    calls = choice.message.tool_calls or []
    assert [c.id for c in calls] == ["toolu_9", "toolu_10"]
    assert calls[0].function.name == "mcp__echo__fetch_url"  # type: ignore[union-attr]
    assert json.loads(calls[0].function.arguments) == {"url": "u"}  # type: ignore[union-attr]
    usage = completion.usage
    assert usage is not None
    assert usage.prompt_tokens == 12 + 1000 + 30 and usage.completion_tokens == 40
    assert usage.total_tokens == 1082
    assert usage.prompt_tokens_details and usage.prompt_tokens_details.cached_tokens == 1000
    assert usage.completion_tokens_details and usage.completion_tokens_details.reasoning_tokens == 9


def test_chat_reply_becomes_an_anthropic_message() -> None:
    message = Message.model_validate_json(reply(CHAT_REPLY, CHAT, MESSAGES))
    assert message.model == "client-model" and message.id.startswith("msg_")
    text, first, second = message.content
    assert text.type == "text" and text.text == "Reading."
    assert first.type == "tool_use" and (first.id, first.name, first.input) == (
        "call_1",
        "read_file",
        {"path": "a"},
    )
    assert second.type == "tool_use" and (second.id, second.input) == ("call_2", {})
    assert message.stop_reason == "tool_use"
    assert message.usage.input_tokens == 100  # 500 prompt tokens less the 400 cached
    assert message.usage.cache_read_input_tokens == 400
    assert message.usage.output_tokens == 25


def test_anthropic_reply_becomes_a_codex_response_with_namespaces_and_custom_tools() -> None:
    codex = {
        "tools": [
            {
                "type": "namespace",
                "name": "mcp__echo",
                "tools": [{"type": "function", "name": "fetch_url"}],
            },
            {"type": "custom", "name": "apply_patch"},
        ]
    }
    body = reply(ANTHROPIC_REPLY, MESSAGES, RESPONSES, tools=tool_map(codex, RESPONSES))
    response = Response.model_validate_json(body)
    assert response.id.startswith("resp_") and response.model == "client-model"
    assert response.status == "completed"
    message, fetch, patch = response.output
    assert message.type == "message" and response.output_text == "Fetching."
    assert fetch.type == "function_call"
    assert (fetch.namespace, fetch.name, fetch.call_id) == ("mcp__echo", "fetch_url", "toolu_9")
    assert json.loads(fetch.arguments) == {"url": "u"}
    assert patch.type == "custom_tool_call"
    assert (patch.name, patch.input, patch.call_id) == (
        "apply_patch",
        "*** Begin Patch",
        "toolu_10",
    )
    assert response.usage is not None
    assert response.usage.input_tokens == 1042
    assert response.usage.input_tokens_details.cached_tokens == 1000
    assert response.usage.output_tokens_details.reasoning_tokens == 9
    assert response.usage.total_tokens == 1082


def test_chat_reply_becomes_a_response() -> None:
    response = Response.model_validate_json(reply(CHAT_REPLY, CHAT, RESPONSES))
    message, first, second = response.output
    assert message.type == "message"
    assert response.output_text == "Reading."
    assert first.type == "function_call" and first.arguments == '{"path": "a"}'
    assert second.type == "function_call" and second.arguments == "{}"
    assert response.usage is not None and response.usage.input_tokens == 500
    assert response.usage.input_tokens_details.cached_tokens == 400


@pytest.mark.parametrize(
    ("finish", "stop_reason", "status"),
    [
        ("stop", "end_turn", "completed"),
        ("length", "max_tokens", "incomplete"),
        ("content_filter", "refusal", "incomplete"),
    ],
)
def test_stop_reasons_map_across_wires(finish: str, stop_reason: str, status: str) -> None:
    body = {
        **CHAT_REPLY,
        "choices": [
            {"index": 0, "message": {"role": "assistant", "content": "x"}, "finish_reason": finish}
        ],
    }
    assert Message.model_validate_json(reply(body, CHAT, MESSAGES)).stop_reason == stop_reason
    assert Response.model_validate_json(reply(body, CHAT, RESPONSES)).status == status
    back = {
        **ANTHROPIC_REPLY,
        "content": [{"type": "text", "text": "x"}],
        "stop_reason": stop_reason,
    }
    assert (
        ChatCompletion.model_validate_json(reply(back, MESSAGES, CHAT)).choices[0].finish_reason
        == finish
    )


def test_chat_cache_writes_are_not_counted_as_plain_input() -> None:
    body = {
        **CHAT_REPLY,
        "usage": {
            **CHAT_REPLY["usage"],
            "prompt_tokens_details": {"cached_tokens": 400, "cache_write_tokens": 60},
        },
    }
    message = Message.model_validate_json(reply(body, CHAT, MESSAGES))
    assert message.usage.input_tokens == 40
    assert message.usage.cache_creation_input_tokens == 60


def test_a_reply_that_is_not_json_is_a_translation_error() -> None:
    with pytest.raises(TranslationError, match="not JSON"):
        translate_reply(b"<html>oops</html>", CHAT, MESSAGES, "m")


# ---- errors ------------------------------------------------------------------------------------


OPENAI_ERROR = {
    "error": {
        "message": "Rate limit reached, try again in 2s",
        "type": "requests",
        "param": None,
        "code": "rate_limit_exceeded",
    }
}
ANTHROPIC_ERROR = {"type": "error", "error": {"type": "overloaded_error", "message": "Overloaded"}}


def anthropic_raises(body: bytes, status: int) -> anthropic.APIStatusError:
    def answer(request: httpx2.Request) -> httpx2.Response:
        return httpx2.Response(status, headers={"content-type": "application/json"}, content=body)

    http = httpx2.Client(transport=httpx2.MockTransport(answer))
    with (
        anthropic.Anthropic(
            api_key="k", base_url="http://gw.test", http_client=http, max_retries=0
        ) as client,
        pytest.raises(anthropic.APIStatusError) as caught,
    ):
        client.messages.create(
            model="m", max_tokens=5, messages=[{"role": "user", "content": "hi"}]
        )
    return caught.value


def openai_raises(body: bytes, status: int) -> openai.APIStatusError:
    def answer(request: httpx2.Request) -> httpx2.Response:
        return httpx2.Response(status, headers={"content-type": "application/json"}, content=body)

    http = httpx2.Client(transport=httpx2.MockTransport(answer))
    with (
        openai.OpenAI(
            api_key="k", base_url="http://gw.test/v1", http_client=http, max_retries=0
        ) as client,
        pytest.raises(openai.APIStatusError) as caught,
    ):
        client.responses.create(model="m", input="hi")
    return caught.value


def test_openai_error_reaches_an_anthropic_client_with_its_message() -> None:
    body = translate_error(orjson.dumps(OPENAI_ERROR), 429, CHAT, MESSAGES)
    error = anthropic_raises(body, 429)
    assert isinstance(error, anthropic.RateLimitError)
    assert "try again in 2s" in error.message
    assert json.loads(body)["error"]["type"] == "rate_limit_error"


def test_anthropic_error_reaches_a_responses_client_with_its_message() -> None:
    body = translate_error(orjson.dumps(ANTHROPIC_ERROR), 503, MESSAGES, RESPONSES)
    error = openai_raises(body, 503)
    assert isinstance(error, openai.InternalServerError)
    assert "Overloaded" in error.message
    assert json.loads(body)["error"]["code"] == "overloaded_error"


def test_an_error_that_is_not_json_keeps_its_text() -> None:
    body = translate_error(b"<html>502 Bad Gateway</html>", 502, CHAT, MESSAGES)
    raised = anthropic_raises(body, 502)
    assert isinstance(raised.body, dict)
    assert raised.body["error"]["message"] == "<html>502 Bad Gateway</html>"
    empty = json.loads(translate_error(b"", 500, MESSAGES, CHAT))
    assert empty["error"]["message"] == "the upstream answered HTTP 500 with no message"


def test_context_length_errors_keep_the_meaning_each_client_looks_for() -> None:
    too_long = {
        "error": {
            "message": "This model's maximum context length is 128000 tokens.",
            "code": "context_length_exceeded",
        }
    }
    for_claude = json.loads(translate_error(orjson.dumps(too_long), 400, CHAT, MESSAGES))
    assert for_claude["error"]["message"].startswith("prompt is too long")
    assert for_claude["error"]["type"] == "invalid_request_error"
    anthropic_too_long = {
        "type": "error",
        "error": {
            "type": "invalid_request_error",
            "message": "prompt is too long: 210000 tokens > 200000 maximum",
        },
    }
    for_codex = json.loads(
        translate_error(orjson.dumps(anthropic_too_long), 400, MESSAGES, RESPONSES)
    )
    assert for_codex["error"]["code"] == "context_length_exceeded"
    assert "210000 tokens" in for_codex["error"]["message"]
