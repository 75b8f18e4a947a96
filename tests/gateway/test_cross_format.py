"""Cross-format calls through real SDKs: the Anthropic SDK served by an OpenAI-format upstream,
the OpenAI SDK served by an Anthropic upstream, and the Responses API (Codex) served by both;
streaming and tools, parsed by the SDKs' own parsers, with exact usage rows."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import anthropic
import httpx
import httpx2
import pytest

from pilothouse.gateway.config import DeploymentConfig, ModelConfig, PriceOverride
from pilothouse.services import Services
from pilothouse.settings import Settings
from tests.gateway.conftest import anthropic_client, openai_client, usage_rows
from tests.gateway.upstream import (
    DEFAULT_REPLY,
    TOOL_CALL_TOKENS,
    FakeUpstream,
    prompt_tokens,
)

PRICE = PriceOverride(input=2_000_000, output=8_000_000, cache_read=200_000)
WEATHER = {
    "name": "get_weather",
    "description": "Weather for a city",
    "input_schema": {"type": "object", "properties": {"city": {"type": "string"}}},
}
WEATHER_FN: Any = {
    "type": "function",
    "function": {
        "name": "get_weather",
        "description": "Weather for a city",
        "parameters": {"type": "object", "properties": {"city": {"type": "string"}}},
    },
}


@pytest.fixture
def settings(database_url: str, tmp_path: Path, upstream: FakeUpstream) -> Settings:
    chat = DeploymentConfig(
        name="chat-upstream",
        provider="openai-compatible",
        model="gpt-upstream",
        base_url=upstream.openai_url,
        api_key="sk-upstream-chat",  # type: ignore[arg-type]
        price=PRICE,
    )
    messages = DeploymentConfig(
        name="messages-upstream",
        provider="anthropic",
        model="claude-upstream",
        base_url=upstream.url,
        api_key="sk-ant-upstream",  # type: ignore[arg-type]
        price=PRICE,
    )
    return Settings(
        database_url=database_url,
        data_dir=tmp_path / "data",
        models=[
            ModelConfig(alias="claude-via-openai", deployments=[chat]),
            ModelConfig(alias="gpt-via-anthropic", deployments=[messages]),
        ],
    )


def _cost(row: dict[str, Any]) -> int:
    return (
        row["input_tokens"] * PRICE.input
        + row["output_tokens"] * PRICE.output
        + row["cache_read_tokens"] * 200_000
    )


async def test_anthropic_sdk_streams_text_from_an_openai_format_upstream(
    upstream: FakeUpstream, gateway_http2: httpx2.AsyncClient, services: Services, key: str
) -> None:
    client = anthropic_client(gateway_http2, key)
    async with client.messages.stream(
        model="claude-via-openai",
        max_tokens=200,
        system="Be brief.",
        messages=[{"role": "user", "content": "say hello"}],
    ) as stream:
        text = "".join([t async for t in stream.text_stream])
        final = await stream.get_final_message()
    assert text == DEFAULT_REPLY
    assert final.stop_reason == "end_turn"
    sent = upstream.last
    assert sent.path.endswith("/chat/completions")
    assert sent.body["messages"][0] == {"role": "system", "content": "Be brief."}
    assert sent.body["stream_options"] == {"include_usage": True}
    assert sent.headers["authorization"] == "Bearer sk-upstream-chat"
    assert key not in str(sent.headers)
    (row,) = await usage_rows(services)
    assert row["input_tokens"] == prompt_tokens(sent.body) == final.usage.input_tokens
    assert row["output_tokens"] == len(DEFAULT_REPLY.split()) == final.usage.output_tokens
    assert row["cost_picos"] == _cost(row)
    assert row["deployment"] == "chat-upstream" and row["estimated"] == 0


async def test_anthropic_sdk_tool_use_round_trip_through_an_openai_format_upstream(
    upstream: FakeUpstream, gateway_http2: httpx2.AsyncClient, services: Services, key: str
) -> None:
    client = anthropic_client(gateway_http2, key)
    async with client.messages.stream(
        model="claude-via-openai",
        max_tokens=200,
        tools=[WEATHER],  # type: ignore[list-item]
        messages=[{"role": "user", "content": "use get_weather for Paris"}],
    ) as stream:
        first = await stream.get_final_message()
    assert first.stop_reason == "tool_use"
    (use,) = [b for b in first.content if b.type == "tool_use"]
    assert use.name == "get_weather"
    assert upstream.last.body["tools"][0]["function"]["name"] == "get_weather"

    follow = await client.messages.create(
        model="claude-via-openai",
        max_tokens=200,
        tools=[WEATHER],  # type: ignore[list-item]
        messages=[
            {"role": "user", "content": "use get_weather for Paris"},
            {"role": "assistant", "content": [use.model_dump()]},  # type: ignore[list-item]
            {
                "role": "user",
                "content": [{"type": "tool_result", "tool_use_id": use.id, "content": "sunny"}],
            },
        ],
    )
    assert follow.stop_reason == "end_turn"
    sent = upstream.last.body["messages"]
    assert sent[-2]["tool_calls"][0]["id"] == use.id
    assert sent[-1] == {"role": "tool", "tool_call_id": use.id, "content": "sunny"}
    rows = await usage_rows(services)
    assert [r["output_tokens"] for r in rows] == [TOOL_CALL_TOKENS, len(DEFAULT_REPLY.split())]


async def test_openai_sdk_streams_tool_calls_from_an_anthropic_upstream(
    upstream: FakeUpstream, gateway_http: httpx.AsyncClient, services: Services, key: str
) -> None:
    client = openai_client(gateway_http, key)
    stream = await client.chat.completions.create(
        model="gpt-via-anthropic",
        messages=[
            {"role": "system", "content": "You are terse."},
            {"role": "user", "content": "call get_weather please"},
        ],
        tools=[WEATHER_FN],
        stream=True,
        stream_options={"include_usage": True},
    )
    names, finish, usage = [], None, None
    async for chunk in stream:
        for choice in chunk.choices:
            calls = choice.delta.tool_calls or []
            names.extend(c.function.name for c in calls if c.function and c.function.name)
            finish = choice.finish_reason or finish
        usage = chunk.usage or usage
    assert names == ["get_weather"] and finish == "tool_calls"
    sent = upstream.last
    assert sent.path == "/v1/messages"
    assert sent.body["system"] == [{"type": "text", "text": "You are terse."}]
    assert sent.headers["x-api-key"] == "sk-ant-upstream"
    assert "authorization" not in sent.headers
    (row,) = await usage_rows(services)
    assert usage is not None
    assert row["input_tokens"] == prompt_tokens(sent.body) == usage.prompt_tokens
    assert row["output_tokens"] == TOOL_CALL_TOKENS == usage.completion_tokens


async def test_openai_sdk_plain_completion_from_an_anthropic_upstream(
    upstream: FakeUpstream, gateway_http: httpx.AsyncClient, services: Services, key: str
) -> None:
    reply = await openai_client(gateway_http, key).chat.completions.create(
        model="gpt-via-anthropic", messages=[{"role": "user", "content": "hello"}], max_tokens=50
    )
    assert reply.choices[0].message.content == DEFAULT_REPLY
    assert reply.choices[0].finish_reason == "stop"
    assert upstream.last.body["max_tokens"] == 50
    (row,) = await usage_rows(services)
    assert row["cost_picos"] == _cost(row) > 0


@pytest.mark.parametrize("alias", ["claude-via-openai", "gpt-via-anthropic"])
async def test_responses_api_streams_through_either_upstream_format(
    alias: str,
    upstream: FakeUpstream,
    gateway_http: httpx.AsyncClient,
    services: Services,
    key: str,
) -> None:
    client = openai_client(gateway_http, key)
    async with client.responses.stream(
        model=alias,
        instructions="Be brief.",
        input=[{"role": "user", "content": "say hello"}],
    ) as stream:
        final = await stream.get_final_response()
    assert final.output_text == DEFAULT_REPLY
    assert final.usage is not None
    (row,) = await usage_rows(services)
    assert row["input_tokens"] == prompt_tokens(upstream.last.body) == final.usage.input_tokens
    assert row["output_tokens"] == final.usage.output_tokens == len(DEFAULT_REPLY.split())
    assert row["endpoint"].endswith("/responses")


async def test_an_upstream_200_that_is_not_json_is_a_recorded_502(
    upstream: FakeUpstream, gateway_http2: httpx2.AsyncClient, services: Services, key: str
) -> None:
    upstream.fail(200, body=b"<html>maintenance</html>")
    client = anthropic_client(gateway_http2, key)
    with pytest.raises(anthropic.APIStatusError) as failed:
        await client.messages.create(
            model="claude-via-openai", max_tokens=10, messages=[{"role": "user", "content": "hi"}]
        )
    assert failed.value.status_code == 502
    (row,) = await usage_rows(services)
    assert (row["status"], row["http_status"], row["cost_picos"]) == ("upstream_error", 502, 0)
