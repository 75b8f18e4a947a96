"""The HTTP providers against a fake upstream: wire formats, headers, timeouts, faults, pooling."""

from __future__ import annotations

import time
from collections.abc import AsyncIterator, Mapping
from typing import Any

import anthropic
import httpx
import openai
import orjson
import pytest
from pydantic import SecretStr

from pilothouse.gateway.config import DeploymentConfig, ProviderName, Timeouts
from pilothouse.gateway.providers.anthropic import AnthropicProvider
from pilothouse.gateway.providers.base import (
    UpstreamBroken,
    UpstreamCall,
    UpstreamConnectError,
    UpstreamError,
    UpstreamReply,
    UpstreamTimeout,
    WireFormat,
)
from pilothouse.gateway.providers.http import HttpClient, HttpProvider
from pilothouse.gateway.providers.openai import OpenAIProvider
from pilothouse.gateway.providers.openai_compatible import OpenAICompatibleProvider
from tests.gateway.upstream import TOOL_CALL_TOKENS, FakeUpstream, Turn, free_port

KEY = "sk-provider-SECRET-0123456789abcdef"
CHAT = {"model": "gpt-x", "messages": [{"role": "user", "content": "say hello please"}]}
MESSAGES = {"model": "claude-x", "max_tokens": 64, "messages": CHAT["messages"]}
RESPONSES = {"model": "gpt-x", "input": [{"role": "user", "content": "say hello please"}]}
REPLY_WORDS = 5  # "Hello from the fake upstream."


@pytest.fixture
async def up() -> AsyncIterator[FakeUpstream]:
    """A fake upstream for one test."""
    async with FakeUpstream() as upstream:
        yield upstream


@pytest.fixture
async def http() -> AsyncIterator[HttpClient]:
    """The shared HTTP client, closed after the test."""
    client = HttpClient()
    yield client
    await client.aclose()


def deployment(
    provider: ProviderName, base_url: str | None, key: str | None = KEY, **extra: Any
) -> DeploymentConfig:
    """A deployment of ``provider`` at ``base_url``."""
    return DeploymentConfig(
        provider=provider,
        model="upstream-model",
        base_url=base_url,
        api_key=SecretStr(key) if key else None,
        **extra,
    )


def timeouts(first_byte: float = 5.0, idle: float = 5.0, connect: float = 5.0) -> Timeouts:
    """Deployment timeouts."""
    return Timeouts(connect=connect, first_byte=first_byte, idle=idle)


async def send(
    provider: HttpProvider,
    dep: DeploymentConfig,
    wire: WireFormat,
    body: Mapping[str, Any],
    headers: Mapping[str, str] | None = None,
) -> UpstreamReply:
    """Send one call."""
    stream = bool(body.get("stream"))
    return await provider.send(UpstreamCall(dep, wire, dict(body), stream, headers or {}))


async def read(reply: UpstreamReply) -> bytes:
    """The whole reply body."""
    return b"".join([chunk async for chunk in reply.chunks])


def sse(raw: bytes) -> list[Any]:
    """The data of each event in an SSE body (``[DONE]`` kept as a string)."""
    out: list[Any] = []
    for event in raw.decode().split("\n\n"):
        for line in event.splitlines():
            if line.startswith("data: "):
                data = line[len("data: ") :]
                out.append(data if data == "[DONE]" else orjson.loads(data))
    return out


# ---- wire formats


async def test_openai_chat_is_posted_with_bearer_key_and_answered_with_exact_usage(
    up: FakeUpstream, http: HttpClient
) -> None:
    reply = await send(
        OpenAIProvider(http), deployment("openai", up.openai_url), WireFormat.OPENAI_CHAT, CHAT
    )
    body = orjson.loads(await read(reply))
    assert (reply.status, reply.content_type) == (200, "application/json")
    assert body["choices"][0]["message"]["content"] == "Hello from the fake upstream."
    assert body["usage"]["prompt_tokens"] == 3
    assert body["usage"]["completion_tokens"] == REPLY_WORDS
    seen = up.last
    assert (seen.method, seen.path) == ("POST", "/v1/chat/completions")
    assert seen.headers["authorization"] == f"Bearer {KEY}"
    assert seen.headers["content-type"] == "application/json"
    assert seen.headers["user-agent"].startswith("pilothouse/")
    assert seen.body == CHAT


async def test_openai_chat_stream_relays_every_event_and_the_usage_chunk(
    up: FakeUpstream, http: HttpClient
) -> None:
    body = {**CHAT, "stream": True, "stream_options": {"include_usage": True}}
    reply = await send(
        OpenAIProvider(http), deployment("openai", up.openai_url), WireFormat.OPENAI_CHAT, body
    )
    assert (reply.status, reply.content_type) == (200, "text/event-stream")
    events = sse(await read(reply))
    text = "".join(e["choices"][0]["delta"].get("content", "") for e in events[:-2])
    assert text == "Hello from the fake upstream."
    assert events[-2]["usage"]["completion_tokens"] == REPLY_WORDS
    assert events[-1] == "[DONE]"


async def test_openai_chat_stream_without_include_usage_has_no_usage_chunk(
    up: FakeUpstream, http: HttpClient
) -> None:
    body = {**CHAT, "stream": True}
    reply = await send(
        OpenAIProvider(http), deployment("openai", up.openai_url), WireFormat.OPENAI_CHAT, body
    )
    assert not any(isinstance(e, dict) and "usage" in e for e in sse(await read(reply)))


@pytest.mark.parametrize("stream", [False, True])
async def test_openai_responses_reach_the_responses_path_with_usage(
    up: FakeUpstream, http: HttpClient, stream: bool
) -> None:
    body = {**RESPONSES, "stream": stream}
    reply = await send(
        OpenAIProvider(http), deployment("openai", up.openai_url), WireFormat.OPENAI_RESPONSES, body
    )
    raw = await read(reply)
    if stream:
        events = sse(raw)
        assert events[0]["type"] == "response.created"
        assert events[-1]["type"] == "response.completed"
        final = events[-1]["response"]
    else:
        final = orjson.loads(raw)
    assert up.last.path == "/v1/responses"
    assert final["output"][0]["content"][0]["text"] == "Hello from the fake upstream."
    assert final["usage"]["input_tokens"] == 3
    assert final["usage"]["output_tokens"] == REPLY_WORDS


async def test_openai_embeddings_reach_the_embeddings_path(
    up: FakeUpstream, http: HttpClient
) -> None:
    body = {"model": "emb", "input": ["one two", "three"]}
    reply = await send(
        OpenAIProvider(http),
        deployment("openai", up.openai_url),
        WireFormat.OPENAI_EMBEDDINGS,
        body,
    )
    answer = orjson.loads(await read(reply))
    assert up.last.path == "/v1/embeddings"
    assert [d["index"] for d in answer["data"]] == [0, 1]
    assert answer["usage"]["prompt_tokens"] == 3


@pytest.mark.parametrize("stream", [False, True])
async def test_anthropic_messages_use_x_api_key_and_a_default_version(
    up: FakeUpstream, http: HttpClient, stream: bool
) -> None:
    body = {**MESSAGES, "stream": stream}
    reply = await send(
        AnthropicProvider(http),
        deployment("anthropic", up.url),
        WireFormat.ANTHROPIC_MESSAGES,
        body,
    )
    raw = await read(reply)
    seen = up.last
    assert seen.path == "/v1/messages"
    assert seen.headers["x-api-key"] == KEY
    assert "authorization" not in seen.headers
    assert seen.headers["anthropic-version"] == "2023-06-01"
    if stream:
        events = sse(raw)
        assert [e["type"] for e in events][:3] == ["message_start", "ping", "content_block_start"]
        assert events[-2]["usage"]["output_tokens"] == REPLY_WORDS
        assert events[-1]["type"] == "message_stop"
    else:
        message = orjson.loads(raw)
        assert message["content"][0]["text"] == "Hello from the fake upstream."
        assert message["usage"]["input_tokens"] == 3


async def test_anthropic_count_tokens_reaches_its_path(up: FakeUpstream, http: HttpClient) -> None:
    reply = await send(
        AnthropicProvider(http),
        deployment("anthropic", up.url),
        WireFormat.ANTHROPIC_COUNT_TOKENS,
        MESSAGES,
    )
    assert orjson.loads(await read(reply)) == {"input_tokens": 3}
    assert up.last.path == "/v1/messages/count_tokens"


async def test_a_base_url_with_a_path_prefix_keeps_it(up: FakeUpstream, http: HttpClient) -> None:
    dep = deployment("anthropic", f"{up.url}/gw/anthropic/")
    await read(await send(AnthropicProvider(http), dep, WireFormat.ANTHROPIC_MESSAGES, MESSAGES))
    assert up.last.path == "/gw/anthropic/v1/messages"


# ---- what each provider speaks


def test_each_provider_speaks_only_its_wire_formats() -> None:
    http = HttpClient()
    openai_dep = deployment("openai", None)
    assert OpenAIProvider(http).speaks(WireFormat.OPENAI_RESPONSES, openai_dep)
    assert not OpenAIProvider(http).speaks(WireFormat.ANTHROPIC_MESSAGES, openai_dep)
    assert AnthropicProvider(http).speaks(WireFormat.ANTHROPIC_COUNT_TOKENS, openai_dep)
    assert not AnthropicProvider(http).speaks(WireFormat.OPENAI_CHAT, openai_dep)
    compatible = OpenAICompatibleProvider(http)
    plain = deployment("openai-compatible", "http://vllm:8000/v1")
    assert compatible.speaks(WireFormat.OPENAI_CHAT, plain)
    assert compatible.speaks(WireFormat.OPENAI_EMBEDDINGS, plain)
    assert not compatible.speaks(WireFormat.OPENAI_RESPONSES, plain)
    with_responses = deployment("openai-compatible", "http://vllm:8000/v1", responses_api=True)
    assert compatible.speaks(WireFormat.OPENAI_RESPONSES, with_responses)


def test_an_openai_compatible_deployment_without_base_url_is_refused_at_load() -> None:
    with pytest.raises(ValueError, match="needs a base_url"):
        deployment("openai-compatible", None)


async def test_a_wire_the_provider_does_not_speak_is_refused(
    up: FakeUpstream, http: HttpClient
) -> None:
    dep = deployment("openai-compatible", up.openai_url)
    with pytest.raises(UpstreamError, match="does not speak"):
        await send(OpenAICompatibleProvider(http), dep, WireFormat.OPENAI_RESPONSES, RESPONSES)
    assert up.requests == []


# ---- headers


async def test_openai_compatible_without_a_key_sends_no_auth_header(
    up: FakeUpstream, http: HttpClient
) -> None:
    dep = deployment("openai-compatible", up.openai_url, key=None)
    await read(await send(OpenAICompatibleProvider(http), dep, WireFormat.OPENAI_CHAT, CHAT))
    assert "authorization" not in up.last.headers
    assert "api-key" not in up.last.headers


async def test_azure_style_deployment_sends_api_version_and_api_key_header(
    up: FakeUpstream, http: HttpClient
) -> None:
    dep = deployment(
        "openai-compatible", f"{up.url}/openai/deployments/gpt4o", api_version="2024-10-21"
    )
    await read(await send(OpenAICompatibleProvider(http), dep, WireFormat.OPENAI_CHAT, CHAT))
    seen = up.last
    assert seen.path == "/openai/deployments/gpt4o/chat/completions"
    assert seen.query == {"api-version": "2024-10-21"}
    assert seen.headers["api-key"] == KEY
    assert "authorization" not in seen.headers


async def test_openai_forwards_only_openai_pass_through_headers_never_client_auth(
    up: FakeUpstream, http: HttpClient
) -> None:
    client_headers = {
        "openai-organization": "org-1",
        "openai-project": "proj-1",
        "anthropic-beta": "tools-1",
        "authorization": "Bearer client-key",
        "x-api-key": "client-key",
        "x-custom": "nope",
    }
    dep = deployment("openai", up.openai_url)
    await read(await send(OpenAIProvider(http), dep, WireFormat.OPENAI_CHAT, CHAT, client_headers))
    seen = up.last.headers
    assert (seen["openai-organization"], seen["openai-project"]) == ("org-1", "proj-1")
    assert seen["authorization"] == f"Bearer {KEY}"
    assert not {"anthropic-beta", "x-api-key", "x-custom"} & seen.keys()


async def test_anthropic_forwards_the_clients_version_and_beta_but_not_its_key(
    up: FakeUpstream, http: HttpClient
) -> None:
    client_headers = {
        "anthropic-version": "2099-01-01",
        "anthropic-beta": "context-1m",
        "openai-organization": "org-1",
        "x-api-key": "client-key",
        "authorization": "Bearer client-key",
    }
    dep = deployment("anthropic", up.url)
    await read(
        await send(
            AnthropicProvider(http), dep, WireFormat.ANTHROPIC_MESSAGES, MESSAGES, client_headers
        )
    )
    seen = up.last.headers
    assert (seen["anthropic-version"], seen["anthropic-beta"]) == ("2099-01-01", "context-1m")
    assert seen["x-api-key"] == KEY
    assert not {"openai-organization", "authorization"} & seen.keys()


async def test_deployment_headers_are_sent_and_win_over_the_clients(
    up: FakeUpstream, http: HttpClient
) -> None:
    dep = deployment(
        "anthropic", up.url, headers={"X-Team": "payments", "Anthropic-Version": "2024-06-01"}
    )
    await read(
        await send(
            AnthropicProvider(http),
            dep,
            WireFormat.ANTHROPIC_MESSAGES,
            MESSAGES,
            {"anthropic-version": "2099-01-01"},
        )
    )
    seen = up.last.headers
    assert seen["x-team"] == "payments"
    assert seen["anthropic-version"] == "2024-06-01"


async def test_a_changed_deployment_config_is_used_at_once(
    up: FakeUpstream, http: HttpClient
) -> None:
    provider = OpenAIProvider(http)
    await read(
        await send(provider, deployment("openai", up.openai_url), WireFormat.OPENAI_CHAT, CHAT)
    )
    rotated = deployment("openai", up.openai_url, key="sk-rotated")
    await read(await send(provider, rotated, WireFormat.OPENAI_CHAT, CHAT))
    assert up.last.headers["authorization"] == "Bearer sk-rotated"


async def test_reply_headers_are_exposed_lower_cased(up: FakeUpstream, http: HttpClient) -> None:
    reply = await send(
        OpenAIProvider(http), deployment("openai", up.openai_url), WireFormat.OPENAI_CHAT, CHAT
    )
    await read(reply)
    assert reply.headers["x-request-id"].startswith("req_fake")
    assert reply.headers["content-type"].startswith("application/json")
    assert all(name == name.lower() for name in reply.headers)


# ---- upstream errors are replies, not exceptions


async def test_a_429_is_a_reply_with_its_retry_after(up: FakeUpstream, http: HttpClient) -> None:
    up.fail(429, message="slow down", retry_after=7)
    reply = await send(
        OpenAIProvider(http), deployment("openai", up.openai_url), WireFormat.OPENAI_CHAT, CHAT
    )
    assert reply.status == 429
    assert reply.headers["retry-after"] == "7"
    assert orjson.loads(await read(reply))["error"]["message"] == "slow down"


async def test_an_upstream_400_body_is_relayed_in_the_apis_shape(
    up: FakeUpstream, http: HttpClient
) -> None:
    up.fail(400, message="max_tokens: too large")
    dep = deployment("anthropic", up.url)
    reply = await send(AnthropicProvider(http), dep, WireFormat.ANTHROPIC_MESSAGES, MESSAGES)
    assert reply.status == 400
    error = orjson.loads(await read(reply))
    assert error == {
        "type": "error",
        "error": {"type": "invalid_request_error", "message": "max_tokens: too large"},
    }


# ---- failures before the reply


async def test_connection_refused_is_a_connect_error_at_once(http: HttpClient) -> None:
    dep = deployment("openai", f"http://127.0.0.1:{free_port()}/v1")
    started = time.monotonic()
    with pytest.raises(UpstreamConnectError) as caught:
        await send(OpenAIProvider(http), dep, WireFormat.OPENAI_CHAT, CHAT)
    assert time.monotonic() - started < 1
    assert "cannot connect" in str(caught.value)


async def test_a_tls_failure_is_a_connect_error(up: FakeUpstream, http: HttpClient) -> None:
    dep = deployment("openai", f"https://127.0.0.1:{up.port}/v1")
    with pytest.raises(UpstreamConnectError):
        await send(OpenAIProvider(http), dep, WireFormat.OPENAI_CHAT, CHAT)


async def test_a_full_pool_waits_no_longer_than_the_connect_timeout(up: FakeUpstream) -> None:
    http = HttpClient(limit=1)
    provider = OpenAIProvider(http)
    dep = deployment("openai", up.openai_url, timeouts=timeouts(connect=0.2))
    up.stall_stream(after=1)
    try:
        holding = await send(provider, dep, WireFormat.OPENAI_CHAT, {**CHAT, "stream": True})
        with pytest.raises(UpstreamTimeout) as caught:
            await send(provider, dep, WireFormat.OPENAI_CHAT, CHAT)
        assert (caught.value.phase, caught.value.seconds) == ("connect", 0.2)
        await holding.chunks.aclose()  # type: ignore[attr-defined]
    finally:
        await http.aclose()


async def test_an_invalid_base_url_is_refused(http: HttpClient) -> None:
    with pytest.raises(UpstreamError, match="not a valid URL"):
        await send(
            OpenAIProvider(http), deployment("openai", "http://[::1"), WireFormat.OPENAI_CHAT, CHAT
        )


async def test_a_connection_reset_before_the_reply_is_a_connect_error(
    up: FakeUpstream, http: HttpClient
) -> None:
    up.drop()
    with pytest.raises(UpstreamConnectError):
        await send(
            OpenAIProvider(http), deployment("openai", up.openai_url), WireFormat.OPENAI_CHAT, CHAT
        )


async def test_no_headers_within_first_byte_is_a_first_byte_timeout(
    up: FakeUpstream, http: HttpClient
) -> None:
    up.stall_headers()
    dep = deployment("openai", up.openai_url, timeouts=timeouts(first_byte=0.2, idle=5))
    started = time.monotonic()
    with pytest.raises(UpstreamTimeout) as caught:
        await send(OpenAIProvider(http), dep, WireFormat.OPENAI_CHAT, CHAT)
    assert 0.15 < time.monotonic() - started < 1.5
    assert (caught.value.phase, caught.value.seconds) == ("first_byte", 0.2)


async def test_the_idle_timeout_does_not_apply_before_the_headers(
    up: FakeUpstream, http: HttpClient
) -> None:
    up.stall_headers(0.3)
    dep = deployment("openai", up.openai_url, timeouts=timeouts(first_byte=2, idle=0.1))
    reply = await send(OpenAIProvider(http), dep, WireFormat.OPENAI_CHAT, {**CHAT, "stream": True})
    assert sse(await read(reply))[-1] == "[DONE]"


# ---- failures in the body


async def test_a_stream_that_stalls_is_an_idle_timeout_raised_by_the_chunks(
    up: FakeUpstream, http: HttpClient
) -> None:
    up.stall_stream(after=2)
    dep = deployment("openai", up.openai_url, timeouts=timeouts(first_byte=5, idle=0.2))
    reply = await send(OpenAIProvider(http), dep, WireFormat.OPENAI_CHAT, {**CHAT, "stream": True})
    received = b""
    started = time.monotonic()
    with pytest.raises(UpstreamTimeout) as caught:
        async for chunk in reply.chunks:
            received += chunk
    assert time.monotonic() - started < 1.5
    assert (caught.value.phase, caught.value.seconds) == ("idle", 0.2)
    assert len(sse(received)) == 2


async def test_the_first_byte_timeout_does_not_apply_to_the_body(
    up: FakeUpstream, http: HttpClient
) -> None:
    up.stall_stream(after=1, seconds=0.3)
    dep = deployment("openai", up.openai_url, timeouts=timeouts(first_byte=0.1, idle=2))
    reply = await send(OpenAIProvider(http), dep, WireFormat.OPENAI_CHAT, {**CHAT, "stream": True})
    assert sse(await read(reply))[-1] == "[DONE]"


async def test_a_stream_cut_midway_is_broken(up: FakeUpstream, http: HttpClient) -> None:
    up.cut(after=3)
    dep = deployment("anthropic", up.url)
    reply = await send(
        AnthropicProvider(http), dep, WireFormat.ANTHROPIC_MESSAGES, {**MESSAGES, "stream": True}
    )
    with pytest.raises(UpstreamBroken):
        await read(reply)


async def test_a_whole_body_cut_midway_is_broken(up: FakeUpstream, http: HttpClient) -> None:
    up.cut(after=1)
    reply = await send(
        OpenAIProvider(http), deployment("openai", up.openai_url), WireFormat.OPENAI_CHAT, CHAT
    )
    assert reply.status == 200
    with pytest.raises(UpstreamBroken, match="reply body cut"):
        await read(reply)


async def test_stream_chunks_arrive_before_the_stream_ends(
    up: FakeUpstream, http: HttpClient
) -> None:
    up.stall_stream(after=2)
    reply = await send(
        OpenAIProvider(http),
        deployment("openai", up.openai_url),
        WireFormat.OPENAI_CHAT,
        {**CHAT, "stream": True},
    )
    received = b""
    async for chunk in reply.chunks:
        received += chunk
        if len(sse(received)) == 2:
            break
    await reply.chunks.aclose()  # type: ignore[attr-defined]
    assert sse(received)[1]["choices"][0]["delta"]["content"] == "Hello "


# ---- the connection pool


async def test_sequential_calls_reuse_one_connection(up: FakeUpstream, http: HttpClient) -> None:
    provider = OpenAIProvider(http)
    dep = deployment("openai", up.openai_url)
    for body in (CHAT, {**CHAT, "stream": True}, CHAT):
        await read(await send(provider, dep, WireFormat.OPENAI_CHAT, body))
    up.fail(500)
    await read(await send(provider, dep, WireFormat.OPENAI_CHAT, CHAT))
    assert len(up.requests) == 4
    assert up.connections == 1


async def test_providers_share_the_pool(up: FakeUpstream, http: HttpClient) -> None:
    await read(
        await send(
            OpenAIProvider(http), deployment("openai", up.openai_url), WireFormat.OPENAI_CHAT, CHAT
        )
    )
    await read(
        await send(
            AnthropicProvider(http),
            deployment("anthropic", up.url),
            WireFormat.ANTHROPIC_MESSAGES,
            MESSAGES,
        )
    )
    assert up.connections == 1


async def test_closing_a_reply_midway_drops_its_connection_only(
    up: FakeUpstream, http: HttpClient
) -> None:
    provider = OpenAIProvider(http)
    dep = deployment("openai", up.openai_url)
    up.stall_stream(after=1)
    reply = await send(provider, dep, WireFormat.OPENAI_CHAT, {**CHAT, "stream": True})
    await anext(reply.chunks)
    await reply.chunks.aclose()  # type: ignore[attr-defined]
    await read(await send(provider, dep, WireFormat.OPENAI_CHAT, CHAT))
    await read(await send(provider, dep, WireFormat.OPENAI_CHAT, CHAT))
    assert up.connections == 2


async def test_closing_an_unread_reply_releases_it(up: FakeUpstream, http: HttpClient) -> None:
    provider = OpenAIProvider(http)
    reply = await send(provider, deployment("openai", up.openai_url), WireFormat.OPENAI_CHAT, CHAT)
    await reply.chunks.aclose()  # type: ignore[attr-defined]
    await provider.aclose()
    await provider.aclose()


async def test_a_closed_client_opens_a_new_session_on_next_use(
    up: FakeUpstream, http: HttpClient
) -> None:
    provider = OpenAIProvider(http)
    dep = deployment("openai", up.openai_url)
    await read(await send(provider, dep, WireFormat.OPENAI_CHAT, CHAT))
    await provider.aclose()
    await read(await send(provider, dep, WireFormat.OPENAI_CHAT, CHAT))
    assert up.connections == 2


# ---- the key stays secret


def _chain(exc: BaseException) -> str:
    texts = []
    seen: BaseException | None = exc
    while seen is not None:
        texts += [str(seen), repr(seen)]
        seen = seen.__cause__ or seen.__context__
    return "\n".join(texts)


async def test_a_reply_that_is_not_http_is_a_connect_error(
    up: FakeUpstream, http: HttpClient
) -> None:
    up.garbage()
    with pytest.raises(UpstreamConnectError) as caught:
        await send(
            OpenAIProvider(http), deployment("openai", up.openai_url), WireFormat.OPENAI_CHAT, CHAT
        )
    assert KEY not in _chain(caught.value)


@pytest.mark.parametrize("failure", ["refused", "drop", "garbage", "stall", "idle", "cut"])
async def test_the_provider_key_never_appears_in_an_error(
    up: FakeUpstream, http: HttpClient, failure: str
) -> None:
    url = f"http://127.0.0.1:{free_port()}/v1" if failure == "refused" else up.openai_url
    dep = deployment("openai", url, timeouts=timeouts(first_byte=0.2, idle=0.2))
    if failure == "drop":
        up.drop()
    elif failure == "garbage":
        up.garbage()
    elif failure == "stall":
        up.stall_headers()
    elif failure == "idle":
        up.stall_stream(after=1)
    elif failure == "cut":
        up.cut(after=1)
    with pytest.raises(UpstreamError) as caught:
        await read(
            await send(OpenAIProvider(http), dep, WireFormat.OPENAI_CHAT, {**CHAT, "stream": True})
        )
    assert KEY not in _chain(caught.value)
    assert "SECRET" not in _chain(caught.value)


# ---- the fake upstream answers like a model, in shapes the real SDKs accept


async def test_the_fake_calls_a_tool_the_user_names_then_answers_its_result(
    up: FakeUpstream, http: HttpClient
) -> None:
    tools = [{"name": "Bash", "description": "run", "input_schema": {"type": "object"}}]
    asked: list[Any] = [{"role": "user", "content": "use Bash"}]
    ask = {**MESSAGES, "tools": tools, "messages": asked}
    provider, dep = AnthropicProvider(http), deployment("anthropic", up.url)
    first = orjson.loads(await read(await send(provider, dep, WireFormat.ANTHROPIC_MESSAGES, ask)))
    call = first["content"][0]
    assert (call["type"], call["name"], first["stop_reason"]) == ("tool_use", "Bash", "tool_use")
    assert first["usage"]["output_tokens"] == TOOL_CALL_TOKENS
    result = {"type": "tool_result", "tool_use_id": call["id"], "content": "ok"}
    follow = {
        **ask,
        "messages": [
            *asked,
            {"role": "assistant", "content": first["content"]},
            {"role": "user", "content": [result]},
        ],
    }
    second = orjson.loads(
        await read(await send(provider, dep, WireFormat.ANTHROPIC_MESSAGES, follow))
    )
    assert second["content"][0]["text"] == "Hello from the fake upstream."


async def test_the_fake_serves_a_script_by_assistant_turns(http: HttpClient) -> None:
    script = [Turn(tool="exec_command", arguments={"cmd": "ls"}), Turn(text="all done")]
    async with FakeUpstream(script=script) as up:
        provider, dep = OpenAIProvider(http), deployment("openai", up.openai_url)
        body = {**RESPONSES, "stream": True}
        events = sse(await read(await send(provider, dep, WireFormat.OPENAI_RESPONSES, body)))
        call = events[-1]["response"]["output"][0]
        assert (call["name"], orjson.loads(call["arguments"])) == ("exec_command", {"cmd": "ls"})
        history = [
            *RESPONSES["input"],
            {"type": "function_call", "name": "exec_command", "arguments": "{}", "call_id": "c1"},
            {"type": "function_call_output", "call_id": "c1", "output": "a b"},
        ]
        body = {**body, "input": history}
        events = sse(await read(await send(provider, dep, WireFormat.OPENAI_RESPONSES, body)))
        assert events[-1]["response"]["output"][0]["content"][0]["text"] == "all done"
        # the prompt's 3 words, the call's arguments "{}" and the output's 2 words
        assert events[-1]["response"]["usage"]["input_tokens"] == 3 + 1 + 2


async def test_the_fake_streams_what_the_openai_sdk_accepts(up: FakeUpstream) -> None:
    async with openai.AsyncOpenAI(api_key="k", base_url=up.openai_url, max_retries=0) as client:
        stream = await client.chat.completions.create(
            model="gpt-x",
            messages=[{"role": "user", "content": "hi"}],
            stream=True,
            stream_options={"include_usage": True},
        )
        chunks = [chunk async for chunk in stream]
        assert chunks[-1].usage is not None and chunks[-1].usage.completion_tokens == REPLY_WORDS
        async with client.responses.stream(model="gpt-x", input="hi there") as events:
            final = await events.get_final_response()
        assert final.output_text == "Hello from the fake upstream."
        assert final.usage is not None and final.usage.input_tokens == 2
        embedded = await client.embeddings.create(model="emb", input="a b c")
        assert len(embedded.data[0].embedding) == 8


async def test_the_fake_streams_what_the_anthropic_sdk_accepts(up: FakeUpstream) -> None:
    tools: Any = [{"name": "Read", "description": "read", "input_schema": {"type": "object"}}]
    async with (
        anthropic.AsyncAnthropic(api_key="k", base_url=up.url, max_retries=0) as client,
        client.messages.stream(
            model="claude-x",
            max_tokens=64,
            messages=[{"role": "user", "content": "please use Read"}],
            tools=tools,
        ) as stream,
    ):
        message = await stream.get_final_message()
    assert message.content[0].type == "tool_use"
    assert message.usage.input_tokens == 3
    assert message.usage.output_tokens == TOOL_CALL_TOKENS


def test_the_fake_runs_in_a_thread_for_synchronous_callers() -> None:
    with FakeUpstream.threaded(reply="threaded hello") as up:
        up.fail(503)
        assert httpx.post(f"{up.openai_url}/chat/completions", json=CHAT).status_code == 503
        answer = httpx.post(f"{up.openai_url}/chat/completions", json=CHAT).json()
    assert answer["choices"][0]["message"]["content"] == "threaded hello"
    assert len(up.requests) == 2
