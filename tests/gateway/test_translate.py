"""Streams translated across wires, read back by the real OpenAI and Anthropic SDKs.

Each test feeds an upstream SSE stream event by event to ``StreamTranslator`` and hands the
client's bytes to the SDK a client would use (over a mock transport), so the assertions are
about what Claude Code, Codex and SDK users actually get.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import anthropic
import httpx2
import openai
import pytest
from anthropic.types import Message, RawMessageStreamEvent
from openai.lib.streaming.responses import ResponseStreamEvent as StreamedEvent
from openai.types.chat import ChatCompletion, ChatCompletionChunk
from openai.types.responses import Response, ResponseStreamEvent
from pydantic import TypeAdapter

from pilothouse.gateway.config import DeploymentConfig
from pilothouse.gateway.providers.base import UpstreamCall, WireFormat
from pilothouse.gateway.providers.demo import DemoProvider
from pilothouse.gateway.translate import (
    StreamTranslator,
    ToolMap,
    tool_map,
    translate_request,
)

CHAT = WireFormat.OPENAI_CHAT
MESSAGES = WireFormat.ANTHROPIC_MESSAGES
RESPONSES = WireFormat.OPENAI_RESPONSES
SSE = {"content-type": "text/event-stream"}


# ---- upstream streams ------------------------------------------------------------------------


def anthropic_event(data: dict[str, Any]) -> bytes:
    """One Anthropic SSE event, without the blank line that ends it."""
    return f"event: {data['type']}\ndata: {json.dumps(data)}".encode()


def chat_event(data: dict[str, Any] | str) -> bytes:
    """One OpenAI chat SSE event, without the blank line that ends it."""
    payload = data if isinstance(data, str) else json.dumps(data)
    return f"data: {payload}".encode()


def block_start(index: int, block: dict[str, Any]) -> bytes:
    event = {"type": "content_block_start", "index": index, "content_block": block}
    return anthropic_event(event)


def block_delta(index: int, delta: dict[str, Any]) -> bytes:
    return anthropic_event({"type": "content_block_delta", "index": index, "delta": delta})


def block_stop(index: int) -> bytes:
    return anthropic_event({"type": "content_block_stop", "index": index})


def anthropic_stream(
    tool_name: str = "Bash", tool_input: str = '{"command": "ls -la"}'
) -> list[bytes]:
    """Thinking, text and a tool call, with cache reads and writes in the usage."""
    start_usage = {
        "input_tokens": 20,
        "output_tokens": 1,
        "cache_read_input_tokens": 100,
        "cache_creation_input_tokens": 5,
    }
    message: dict[str, Any] = {
        "id": "msg_up",
        "type": "message",
        "role": "assistant",
        "model": "claude-up",
        "content": [],
        "stop_reason": None,
        "stop_sequence": None,
        "usage": start_usage,
    }
    cut = len(tool_input) // 2
    return [
        anthropic_event({"type": "message_start", "message": message}),
        anthropic_event({"type": "ping"}),
        block_start(0, {"type": "thinking", "thinking": "", "signature": ""}),
        block_delta(0, {"type": "thinking_delta", "thinking": "Think."}),
        block_delta(0, {"type": "signature_delta", "signature": "c2ln"}),
        block_stop(0),
        block_start(1, {"type": "text", "text": ""}),
        block_delta(1, {"type": "text_delta", "text": "Let me "}),
        block_delta(1, {"type": "text_delta", "text": "look."}),
        block_stop(1),
        block_start(2, {"type": "tool_use", "id": "toolu_01A", "name": tool_name, "input": {}}),
        block_delta(2, {"type": "input_json_delta", "partial_json": tool_input[:cut]}),
        block_delta(2, {"type": "input_json_delta", "partial_json": tool_input[cut:]}),
        block_stop(2),
        anthropic_event(
            {
                "type": "message_delta",
                "delta": {"stop_reason": "tool_use", "stop_sequence": None},
                "usage": {"output_tokens": 42, "output_tokens_details": {"thinking_tokens": 7}},
            }
        ),
        anthropic_event({"type": "message_stop"}),
    ]


def chat_chunk(delta: dict[str, Any], finish: str | None = None) -> bytes:
    choice = {"index": 0, "delta": delta, "finish_reason": finish}
    return chat_event(
        {
            "id": "chatcmpl-up",
            "object": "chat.completion.chunk",
            "created": 1,
            "model": "gpt-up",
            "choices": [choice],
        }
    )


def tool_delta(index: int, arguments: str, call_id: str = "", name: str = "") -> dict[str, Any]:
    call: dict[str, Any] = {"index": index, "function": {"arguments": arguments}}
    if call_id:
        call |= {"id": call_id, "type": "function"}
        call["function"]["name"] = name
    return {"tool_calls": [call]}


CHAT_USAGE = {
    "prompt_tokens": 120,
    "completion_tokens": 30,
    "total_tokens": 150,
    "prompt_tokens_details": {"cached_tokens": 100},
    "completion_tokens_details": {"reasoning_tokens": 5},
}


def chat_stream() -> list[bytes]:
    """Text, then two tool calls whose argument fragments interleave, then usage."""
    usage_chunk = {
        "id": "chatcmpl-up",
        "object": "chat.completion.chunk",
        "created": 1,
        "model": "gpt-up",
        "choices": [],
        "usage": CHAT_USAGE,
    }
    return [
        chat_chunk({"role": "assistant", "content": ""}),
        chat_chunk({"content": "Reading "}),
        chat_chunk({"content": "both."}),
        chat_chunk(tool_delta(0, "", "call_a", "read_file")),
        chat_chunk(tool_delta(0, '{"path": ')),
        chat_chunk(tool_delta(1, '{"path": "b.txt"}', "call_b", "read_file")),
        chat_chunk(tool_delta(0, '"a.txt"}')),
        chat_chunk({}, "tool_calls"),
        chat_event(usage_chunk),
        chat_event("[DONE]"),
    ]


def translate(
    events: list[bytes],
    source: WireFormat,
    target: WireFormat,
    *,
    include_usage: bool = True,
    tools: ToolMap | None = None,
) -> tuple[bytes, StreamTranslator]:
    translator = StreamTranslator(
        source, target, "client-model", include_usage=include_usage, tools=tools
    )
    out = b"".join(translator.event(event) for event in events) + translator.finish()
    return out, translator


# ---- SDK clients over a mock transport -------------------------------------------------------


def openai_client(
    body: bytes, status: int = 200, headers: dict[str, str] | None = None
) -> openai.OpenAI:
    def answer(request: httpx2.Request) -> httpx2.Response:
        return httpx2.Response(status, headers=headers or SSE, content=body)

    http = httpx2.Client(transport=httpx2.MockTransport(answer))
    return openai.OpenAI(
        api_key="sk-test", base_url="http://gw.test/v1", http_client=http, max_retries=0
    )


def anthropic_client(
    body: bytes, status: int = 200, headers: dict[str, str] | None = None
) -> anthropic.Anthropic:
    def answer(request: httpx2.Request) -> httpx2.Response:
        return httpx2.Response(status, headers=headers or SSE, content=body)

    http = httpx2.Client(transport=httpx2.MockTransport(answer))
    return anthropic.Anthropic(
        api_key="sk-test", base_url="http://gw.test", http_client=http, max_retries=0
    )


ANTHROPIC_EVENT: TypeAdapter[RawMessageStreamEvent] = TypeAdapter(RawMessageStreamEvent)
RESPONSES_EVENT: TypeAdapter[ResponseStreamEvent] = TypeAdapter(ResponseStreamEvent)


def strictly_valid(body: bytes, target: WireFormat) -> None:
    """Every event validates against the SDK's own model, not only its lenient stream parser."""
    for payload in sse_payloads(body):
        if target is RESPONSES:
            RESPONSES_EVENT.validate_python(payload)
        elif payload.get("type") != "error" and "error" not in payload:
            if target is CHAT:
                ChatCompletionChunk.model_validate(payload)
            else:
                ANTHROPIC_EVENT.validate_python(payload)


def final_chat(body: bytes) -> tuple[ChatCompletion, list[ChatCompletionChunk]]:
    strictly_valid(body, CHAT)
    with openai_client(body) as client:
        chunks = list(
            client.chat.completions.create(
                model="m", messages=[{"role": "user", "content": "hi"}], stream=True
            )
        )
        with client.chat.completions.stream(
            model="m", messages=[{"role": "user", "content": "hi"}]
        ) as stream:
            final = stream.get_final_completion()
    return final, chunks


def final_message(body: bytes) -> Message:
    strictly_valid(body, MESSAGES)
    with (
        anthropic_client(body) as client,
        client.messages.stream(
            model="m", max_tokens=100, messages=[{"role": "user", "content": "hi"}]
        ) as stream,
    ):
        return stream.get_final_message()


def final_response(body: bytes) -> tuple[Response, list[StreamedEvent[None]]]:
    strictly_valid(body, RESPONSES)
    with openai_client(body) as client, client.responses.stream(model="m", input="hi") as stream:
        events = list(stream)
        return stream.get_final_response(), events


def sse_payloads(body: bytes) -> Iterator[dict[str, Any]]:
    for event in body.split(b"\n\n"):
        for line in event.split(b"\n"):
            if line.startswith(b"data: {"):
                yield json.loads(line[6:])


# ---- Anthropic upstream ------------------------------------------------------------------------


def test_anthropic_stream_reaches_an_openai_chat_client_with_text_tool_call_and_usage() -> None:
    body, translator = translate(anthropic_stream(), MESSAGES, CHAT)
    final, chunks = final_chat(body)
    choice = final.choices[0]
    assert choice.message.content == "Let me look."
    (call,) = choice.message.tool_calls or []
    assert call.id == "toolu_01A"
    assert call.function.name == "Bash"  # type: ignore[union-attr]
    assert json.loads(call.function.arguments) == {"command": "ls -la"}  # type: ignore[union-attr]
    assert choice.finish_reason == "tool_calls"
    assert final.model == "client-model"
    assert final.id.startswith("chatcmpl-")
    usage = chunks[-1].usage
    assert usage is not None and not chunks[-1].choices
    # OpenAI's prompt tokens include Anthropic's cache reads and writes.
    assert usage.prompt_tokens == 20 + 100 + 5
    assert usage.prompt_tokens_details and usage.prompt_tokens_details.cached_tokens == 100
    assert usage.completion_tokens == 42
    assert usage.completion_tokens_details and usage.completion_tokens_details.reasoning_tokens == 7
    assert (translator.usage.input_tokens, translator.usage.cache_read_tokens) == (20, 100)
    assert (translator.usage.cache_write_tokens, translator.usage.output_tokens) == (5, 42)


def test_chat_client_that_did_not_ask_for_usage_gets_no_usage_chunk_but_usage_is_counted() -> None:
    body, translator = translate(anthropic_stream(), MESSAGES, CHAT, include_usage=False)
    _, chunks = final_chat(body)
    assert all(chunk.usage is None and chunk.choices for chunk in chunks)
    assert body.endswith(b"data: [DONE]\n\n")
    assert translator.usage.output_tokens == 42


def test_terminal_events_come_only_from_finish() -> None:
    for source, target, events in [
        (MESSAGES, CHAT, anthropic_stream()),
        (CHAT, MESSAGES, chat_stream()),
        (CHAT, RESPONSES, chat_stream()),
        (MESSAGES, RESPONSES, anthropic_stream()),
    ]:
        translator = StreamTranslator(source, target, "m", include_usage=True)
        relayed = b"".join(translator.event(event) for event in events)
        closing = translator.finish()
        for terminal in (b"[DONE]", b"message_stop", b"response.completed"):
            assert terminal not in relayed
        assert any(t in closing for t in (b"[DONE]", b"message_stop", b"response.completed"))


def test_anthropic_stream_reaches_codex_as_a_namespaced_function_call() -> None:
    codex = {
        "tools": [
            {
                "type": "namespace",
                "name": "mcp__echo",
                "tools": [{"type": "function", "name": "fetch_url"}],
            }
        ]
    }
    events = anthropic_stream("mcp__echo__fetch_url", '{"url": "https://example.com"}')
    body, _ = translate(events, MESSAGES, RESPONSES, tools=tool_map(codex, RESPONSES))
    final, streamed = final_response(body)
    message, call = final.output
    assert message.type == "message" and message.content[0].text == "Let me look."  # type: ignore[union-attr]
    assert call.type == "function_call"
    assert (call.namespace, call.name, call.call_id) == ("mcp__echo", "fetch_url", "toolu_01A")
    assert json.loads(call.arguments) == {"url": "https://example.com"}
    assert final.status == "completed" and final.model == "client-model"
    assert final.id.startswith("resp_")
    assert final.usage is not None
    assert final.usage.input_tokens == 125 and final.usage.input_tokens_details.cached_tokens == 100
    assert (
        final.usage.output_tokens == 42 and final.usage.output_tokens_details.reasoning_tokens == 7
    )
    assert final.usage.total_tokens == 167
    kinds = [event.type for event in streamed]
    assert kinds[:2] == ["response.created", "response.in_progress"]
    assert kinds[-1] == "response.completed"
    assert kinds.count("response.output_item.done") == 2
    assert "response.function_call_arguments.done" in kinds
    numbers = [payload["sequence_number"] for payload in sse_payloads(body)]
    assert numbers == list(range(len(numbers)))


def test_namespaced_tool_is_split_for_codex_even_without_a_tool_map() -> None:
    events = anthropic_stream("mcp__echo__fetch_url", '{"url": "u"}')
    body, _ = translate(events, MESSAGES, RESPONSES)
    final, _ = final_response(body)
    call = final.output[-1]
    assert call.type == "function_call" and (call.namespace, call.name) == (
        "mcp__echo",
        "fetch_url",
    )


def test_apply_patch_comes_back_to_codex_as_a_custom_tool_call() -> None:
    codex = {"tools": [{"type": "custom", "name": "apply_patch", "format": {"type": "grammar"}}]}
    patch = "*** Begin Patch\n*** Add File: notes.txt\n+hello\n*** End Patch"
    events = anthropic_stream("apply_patch", json.dumps({"input": patch}))
    body, _ = translate(events, MESSAGES, RESPONSES, tools=tool_map(codex, RESPONSES))
    final, streamed = final_response(body)
    call = final.output[-1]
    assert call.type == "custom_tool_call"
    assert (call.name, call.input, call.call_id) == ("apply_patch", patch, "toolu_01A")
    kinds = [event.type for event in streamed]
    assert "response.custom_tool_call_input.done" in kinds
    assert "response.function_call_arguments.delta" not in kinds


def test_crlf_line_endings_are_read_like_lf() -> None:
    events = [event.replace(b"\n", b"\r\n") for event in anthropic_stream()]
    body, translator = translate(events, MESSAGES, CHAT)
    final, _ = final_chat(body)
    assert final.choices[0].message.content == "Let me look."
    assert translator.usage.output_tokens == 42


def test_several_events_in_one_call_are_all_translated() -> None:
    events = anthropic_stream()
    joined = b"\r\n\r\n".join(event.replace(b"\n", b"\r\n") for event in events)
    translator = StreamTranslator(MESSAGES, CHAT, "m", include_usage=True)
    body = translator.event(joined) + translator.finish()
    final, _ = final_chat(body)
    assert final.choices[0].message.content == "Let me look."


def test_unknown_events_and_blocks_are_skipped() -> None:
    events = anthropic_stream()
    events.insert(2, anthropic_event({"type": "future_event", "x": 1}))
    events.insert(
        3, block_start(9, {"type": "server_tool_use", "id": "srvtoolu_1", "name": "web_search"})
    )
    events.insert(4, block_delta(9, {"type": "input_json_delta", "partial_json": '{"q": 1}'}))
    events.insert(5, b": keep-alive comment")
    body, _ = translate(events, MESSAGES, CHAT)
    final, _ = final_chat(body)
    assert [c.function.name for c in final.choices[0].message.tool_calls or []] == ["Bash"]  # type: ignore[union-attr]


def test_output_chars_counts_text_tool_arguments_and_thinking() -> None:
    tool_input = '{"command": "ls -la"}'
    _, translator = translate(anthropic_stream(tool_input=tool_input), MESSAGES, CHAT)
    assert translator.output_chars == len("Think.") + len("Let me look.") + len(tool_input)
    _, translator = translate(chat_stream(), CHAT, MESSAGES)
    arguments = '{"path": "a.txt"}{"path": "b.txt"}'
    assert translator.output_chars == len("Reading both.") + len(arguments)


# ---- OpenAI chat upstream ----------------------------------------------------------------------


def test_chat_stream_reaches_an_anthropic_client_with_interleaved_tool_calls() -> None:
    body, translator = translate(chat_stream(), CHAT, MESSAGES)
    message = final_message(body)
    text, first, second = message.content
    assert text.type == "text" and text.text == "Reading both."
    assert first.type == "tool_use" and second.type == "tool_use"
    assert (first.id, first.name, first.input) == ("call_a", "read_file", {"path": "a.txt"})
    assert (second.id, second.name, second.input) == ("call_b", "read_file", {"path": "b.txt"})
    assert message.stop_reason == "tool_use"
    assert message.model == "client-model" and message.id.startswith("msg_")
    # Anthropic's input tokens exclude the cached ones that OpenAI counts in prompt_tokens.
    assert message.usage.input_tokens == 20
    assert message.usage.cache_read_input_tokens == 100
    assert message.usage.output_tokens == 30
    assert translator.usage.reasoning_tokens == 5


def test_chat_stream_reaches_a_responses_client() -> None:
    body, _ = translate(chat_stream(), CHAT, RESPONSES)
    final, _ = final_response(body)
    message, first, second = final.output
    assert message.type == "message" and message.content[0].text == "Reading both."  # type: ignore[union-attr]
    assert first.type == "function_call" and second.type == "function_call"
    assert json.loads(first.arguments) == {"path": "a.txt"}
    assert json.loads(second.arguments) == {"path": "b.txt"}
    assert first.call_id == "call_a" and second.call_id == "call_b"
    assert final.usage is not None
    assert final.usage.input_tokens == 120 and final.usage.input_tokens_details.cached_tokens == 100
    assert final.usage.output_tokens_details.reasoning_tokens == 5


def test_finish_reasons_map_to_anthropic_stop_reasons() -> None:
    for finish, expected in [
        ("stop", "end_turn"),
        ("length", "max_tokens"),
        ("content_filter", "refusal"),
    ]:
        events = [chat_chunk({"content": "Hi"}), chat_chunk({}, finish), chat_event("[DONE]")]
        body, _ = translate(events, CHAT, MESSAGES)
        assert final_message(body).stop_reason == expected


def test_a_length_stop_reaches_a_responses_client_as_incomplete() -> None:
    events = [chat_chunk({"content": "Hi"}), chat_chunk({}, "length")]
    body, _ = translate(events, CHAT, RESPONSES)
    final, _ = final_response(body)
    assert final.status == "incomplete"
    assert final.incomplete_details is not None
    assert final.incomplete_details.reason == "max_output_tokens"


def test_a_tool_call_without_arguments_reaches_clients_as_an_empty_object() -> None:
    events = [chat_chunk(tool_delta(0, "", "call_x", "list_files")), chat_chunk({}, "tool_calls")]
    body, _ = translate(events, CHAT, MESSAGES)
    (block,) = final_message(body).content
    assert block.type == "tool_use" and block.input == {}
    body, _ = translate(events, CHAT, RESPONSES)
    final, _ = final_response(body)
    assert final.output[0].type == "function_call" and final.output[0].arguments == "{}"
    stop = [
        anthropic_event(
            {
                "type": "message_delta",
                "delta": {"stop_reason": "tool_use"},
                "usage": {"output_tokens": 3},
            }
        )
    ]
    events = [
        *anthropic_stream()[:10],
        block_start(2, {"type": "tool_use", "id": "toolu_2", "name": "Glob", "input": {}}),
        block_stop(2),
        *stop,
    ]
    body, _ = translate(events, MESSAGES, CHAT)
    final_completion, _ = final_chat(body)
    (call,) = final_completion.choices[0].message.tool_calls or []
    assert call.function.arguments == "{}"  # type: ignore[union-attr]


def test_a_stop_finish_reason_after_tool_calls_still_runs_the_tools() -> None:
    events = [chat_chunk(tool_delta(0, "{}", "call_x", "list_files")), chat_chunk({}, "stop")]
    body, _ = translate(events, CHAT, MESSAGES)
    assert final_message(body).stop_reason == "tool_use"


# ---- streams that end early or fail ------------------------------------------------------------


def test_a_cut_stream_still_closes_cleanly_for_each_client() -> None:
    body, _ = translate(anthropic_stream()[:8], MESSAGES, CHAT)
    final, _ = final_chat(body)
    assert final.choices[0].message.content == "Let me "
    assert final.choices[0].finish_reason == "stop"
    body, _ = translate(chat_stream()[:5], CHAT, MESSAGES)
    message = final_message(body)
    assert message.content[0].type == "text" and message.content[0].text == "Reading both."
    assert message.content[1].type == "tool_use"
    assert message.stop_reason == "tool_use"
    body, _ = translate(chat_stream()[:3], CHAT, RESPONSES)
    response, _ = final_response(body)
    assert response.output_text == "Reading both."


def test_a_stream_with_no_events_at_all_still_closes_cleanly() -> None:
    body, _ = translate([], CHAT, MESSAGES)
    assert final_message(body).content == []
    body, _ = translate([], MESSAGES, RESPONSES)
    assert final_response(body)[0].output == []
    body, _ = translate([], MESSAGES, CHAT)
    assert final_chat(body)[0].choices[0].finish_reason == "stop"


def test_error_reaches_an_anthropic_client_as_an_api_error() -> None:
    translator = StreamTranslator(CHAT, MESSAGES, "m", include_usage=False)
    body = b"".join(translator.event(e) for e in chat_stream()[:3])
    body += translator.error(502, "stream_cut", "the upstream connection ended mid-reply")
    assert translator.finish() == b""
    with pytest.raises(anthropic.APIStatusError, match="ended mid-reply"):
        final_message(body)


def test_error_reaches_an_openai_chat_client_as_an_api_error() -> None:
    translator = StreamTranslator(MESSAGES, CHAT, "m", include_usage=False)
    body = b"".join(translator.event(e) for e in anthropic_stream()[:8])
    body += translator.error(504, "timeout", "no data within 30s")
    with pytest.raises(openai.APIError, match="no data within 30s"):
        final_chat(body)


def test_error_reaches_a_responses_client_as_a_failed_response_codex_can_read() -> None:
    translator = StreamTranslator(MESSAGES, RESPONSES, "m", include_usage=False)
    body = b"".join(translator.event(e) for e in anthropic_stream()[:8])
    body += translator.error(429, "rate_limited", "slow down, try again in 2s")
    with pytest.raises(openai.APIError, match="slow down"):
        final_response(body)
    failed = [p for p in sse_payloads(body) if p["type"] == "response.failed"]
    assert len(failed) == 1
    response = Response.model_validate(failed[0]["response"])
    assert response.status == "failed" and response.error is not None
    assert response.error.code == "rate_limit_exceeded"
    assert response.error.message == "slow down, try again in 2s"
    assert translator.finish() == b""


def test_an_upstream_error_event_is_retold_in_the_client_format() -> None:
    overloaded = anthropic_event(
        {"type": "error", "error": {"type": "overloaded_error", "message": "Overloaded"}}
    )
    translator = StreamTranslator(MESSAGES, CHAT, "m", include_usage=True)
    body = b"".join(
        translator.event(e) for e in [*anthropic_stream()[:8], overloaded, *anthropic_stream()[8:]]
    )
    body += translator.finish()
    with pytest.raises(openai.APIError, match="Overloaded"):
        final_chat(body)
    assert b"[DONE]" not in body
    error = chat_event(
        {
            "error": {
                "message": "quota gone",
                "type": "insufficient_quota",
                "code": "insufficient_quota",
            }
        }
    )
    body, _ = translate([chat_chunk({"content": "x"}), error], CHAT, MESSAGES)
    with pytest.raises(anthropic.APIStatusError, match="quota gone"):
        final_message(body)


# ---- end to end with the demo provider ---------------------------------------------------------


CLAUDE_CODE_REQUEST: dict[str, Any] = {
    "model": "claude-sonnet-5",
    "max_tokens": 64000,
    "stream": True,
    "thinking": {"type": "adaptive"},
    "system": [
        {"type": "text", "text": "x-anthropic-billing-header: cc_version=2.1.197;"},
        {"type": "text", "text": "You are Claude Code.", "cache_control": {"type": "ephemeral"}},
    ],
    "tools": [
        {
            "name": "Bash",
            "description": "Run a shell command",
            "input_schema": {"type": "object", "properties": {"command": {"type": "string"}}},
        }
    ],
    "messages": [{"role": "user", "content": [{"type": "text", "text": "please use Bash"}]}],
}


async def demo_stream(body: dict[str, Any]) -> list[bytes]:
    deployment = DeploymentConfig(provider="demo", model="demo-1")
    reply = await DemoProvider().send(UpstreamCall(deployment, CHAT, body, stream=True))
    raw = b"".join([chunk async for chunk in reply.chunks])
    return [event for event in raw.split(b"\n\n") if event]


async def test_claude_code_turn_through_a_chat_deployment_end_to_end() -> None:
    upstream = translate_request(CLAUDE_CODE_REQUEST, MESSAGES, CHAT)
    events = await demo_stream(upstream)
    body, translator = translate(
        events, CHAT, MESSAGES, tools=tool_map(CLAUDE_CODE_REQUEST, MESSAGES)
    )
    message = final_message(body)
    (block,) = message.content
    assert block.type == "tool_use" and block.name == "Bash"
    assert message.stop_reason == "tool_use"
    assert message.usage.input_tokens == translator.usage.input_tokens > 0
    assert message.usage.output_tokens == translator.usage.output_tokens > 0


async def test_codex_turn_through_a_chat_deployment_end_to_end() -> None:
    codex = {
        "model": "gpt-5.5",
        "stream": True,
        "store": False,
        "input": [
            {
                "type": "message",
                "role": "developer",
                "content": [{"type": "input_text", "text": "Be brief."}],
            },
            {
                "type": "message",
                "role": "user",
                "content": [{"type": "input_text", "text": "say hello"}],
            },
        ],
        "tools": [{"type": "web_search"}],
    }
    upstream = translate_request(codex, RESPONSES, CHAT)
    events = await demo_stream(upstream)
    body, _ = translate(events, CHAT, RESPONSES, tools=tool_map(codex, RESPONSES))
    final, _ = final_response(body)
    assert "say hello" in final.output_text
    assert final.usage is not None and final.usage.output_tokens > 0
