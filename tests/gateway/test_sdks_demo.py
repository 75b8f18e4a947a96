"""The real OpenAI and Anthropic SDKs through the gateway to the demo provider: answers the SDKs
parse, and exactly one usage row per call with its tokens, exact cost and attribution."""

from __future__ import annotations

import json
from typing import Any

import anthropic
import httpx
import httpx2
import openai
import pytest

from pilothouse.gateway.config import DeploymentConfig
from pilothouse.gateway.prices import PriceBook
from pilothouse.services import Services
from tests.gateway.conftest import anthropic_client, openai_client, usage_rows

DEMO_PRICE = PriceBook.shipped().for_deployment(DeploymentConfig(provider="demo", model="demo-1"))


def _expected_cost(row: dict[str, Any]) -> int:
    assert DEMO_PRICE is not None
    return (
        row["input_tokens"] * DEMO_PRICE.input
        + row["output_tokens"] * DEMO_PRICE.output
        + row["cache_read_tokens"] * DEMO_PRICE.cache_read
        + row["cache_write_tokens"] * DEMO_PRICE.cache_write
    )


def _assert_attributed(row: dict[str, Any], session: dict[str, Any]) -> None:
    s = session["session"]
    assert row["session_id"] == s["id"]
    assert row["team_id"] == s["team_id"]
    assert row["project"] == "checkout"
    assert row["repository"] == "acme/payments"
    assert json.loads(row["labels"]) == {"use_case": "bugfix"}
    assert json.loads(row["skills"]) == ["git"]
    assert json.loads(row["plugins"]) == ["reviewer"]
    assert row["key_id"] == session["key"]["id"]
    assert row["cost_picos"] == _expected_cost(row) > 0
    assert row["deployment"] == "demo/demo-1"


async def test_openai_chat_completion_is_answered_and_recorded_once(
    gateway_http: httpx.AsyncClient, services: Services, agent_session: dict[str, Any]
) -> None:
    client = openai_client(gateway_http, agent_session["key"]["token"])
    reply = await client.chat.completions.create(
        model="gpt-4o-mini", messages=[{"role": "user", "content": "hello there"}]
    )
    assert "demo provider" in (reply.choices[0].message.content or "")
    (row,) = await usage_rows(services)
    assert reply.usage is not None
    assert row["input_tokens"] == reply.usage.prompt_tokens
    assert row["output_tokens"] == reply.usage.completion_tokens
    assert row["model_alias"] == "gpt-4o-mini"
    assert row["stream"] == 0
    assert row["status"] == "ok"
    _assert_attributed(row, agent_session)


async def test_openai_stream_hides_the_usage_chunk_it_did_not_ask_for_but_counts_it(
    gateway_http: httpx.AsyncClient, services: Services, agent_session: dict[str, Any]
) -> None:
    client = openai_client(gateway_http, agent_session["key"]["token"])
    stream = await client.chat.completions.create(
        model="gpt-4o-mini",
        messages=[{"role": "user", "content": "stream me something"}],
        stream=True,
    )
    chunks = [chunk async for chunk in stream]
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert "demo provider" in text
    assert all(c.usage is None for c in chunks)
    (row,) = await usage_rows(services)
    assert row["stream"] == 1
    assert row["output_tokens"] > 0 and row["input_tokens"] > 0
    _assert_attributed(row, agent_session)


async def test_openai_stream_shows_usage_when_the_client_asks(
    gateway_http: httpx.AsyncClient, services: Services, agent_session: dict[str, Any]
) -> None:
    client = openai_client(gateway_http, agent_session["key"]["token"])
    stream = await client.chat.completions.create(
        model="gpt-4o-mini",
        messages=[{"role": "user", "content": "count me"}],
        stream=True,
        stream_options={"include_usage": True},
    )
    chunks = [chunk async for chunk in stream]
    usage = chunks[-1].usage
    assert usage is not None
    (row,) = await usage_rows(services)
    assert row["output_tokens"] == usage.completion_tokens


async def test_openai_tool_call_is_parsed_by_the_sdk(
    gateway_http: httpx.AsyncClient, agent_session: dict[str, Any]
) -> None:
    client = openai_client(gateway_http, agent_session["key"]["token"])
    tools: Any = [
        {"type": "function", "function": {"name": "get_weather", "parameters": {"type": "object"}}}
    ]
    reply = await client.chat.completions.create(
        model="gpt-4o",
        messages=[{"role": "user", "content": "use get_weather for Paris"}],
        tools=tools,
    )
    calls = reply.choices[0].message.tool_calls
    assert calls is not None and calls[0].function.name == "get_weather"  # type: ignore[union-attr]
    assert reply.choices[0].finish_reason == "tool_calls"


@pytest.mark.parametrize("stream", [False, True])
async def test_anthropic_messages_are_answered_and_recorded_once(
    gateway_http2: httpx2.AsyncClient,
    services: Services,
    agent_session: dict[str, Any],
    stream: bool,
) -> None:
    client = anthropic_client(gateway_http2, agent_session["key"]["token"])
    request: Any = {
        "model": "claude-sonnet-5",
        "max_tokens": 256,
        "system": "be brief",
        "messages": [{"role": "user", "content": "hello claude"}],
    }
    if stream:
        async with client.messages.stream(**request) as events:
            message = await events.get_final_message()
    else:
        message = await client.messages.create(**request)
    assert message.content[0].type == "text"
    assert "demo provider" in message.content[0].text
    (row,) = await usage_rows(services)
    assert row["input_tokens"] == message.usage.input_tokens
    assert row["output_tokens"] == message.usage.output_tokens
    assert row["stream"] == int(stream)
    _assert_attributed(row, agent_session)


async def test_anthropic_streamed_tool_use_is_parsed_by_the_sdk(
    gateway_http2: httpx2.AsyncClient, agent_session: dict[str, Any]
) -> None:
    client = anthropic_client(gateway_http2, agent_session["key"]["token"])
    async with client.messages.stream(
        model="claude-opus-4-8",
        max_tokens=128,
        tools=[{"name": "Bash", "input_schema": {"type": "object"}}],
        messages=[{"role": "user", "content": "use Bash to list files"}],
    ) as events:
        message = await events.get_final_message()
    assert message.stop_reason == "tool_use"
    assert message.content[0].type == "tool_use"
    assert message.content[0].name == "Bash"


async def test_rejected_calls_get_sdk_errors_and_no_usage_row(
    gateway_http: httpx.AsyncClient,
    gateway_http2: httpx2.AsyncClient,
    services: Services,
    agent_session: dict[str, Any],
) -> None:
    bad_key = openai_client(gateway_http, "phk_AAAAAAAAAAAA_" + "b" * 40)
    with pytest.raises(openai.AuthenticationError) as denied:
        await bad_key.chat.completions.create(
            model="gpt-4o", messages=[{"role": "user", "content": "hi"}]
        )
    assert "unknown API key" in str(denied.value)
    good = anthropic_client(gateway_http2, agent_session["key"]["token"])
    with pytest.raises(anthropic.NotFoundError) as unknown:
        await good.messages.create(
            model="llama-unknown", max_tokens=10, messages=[{"role": "user", "content": "hi"}]
        )
    assert "llama-unknown" in str(unknown.value)
    assert await usage_rows(services) == []


async def test_models_lists_the_exact_aliases_for_an_authenticated_caller(
    gateway_http: httpx.AsyncClient, agent_session: dict[str, Any]
) -> None:
    client = openai_client(gateway_http, agent_session["key"]["token"])
    models = [m.id async for m in client.models.list()]
    assert models == ["demo"]
