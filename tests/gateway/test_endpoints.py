"""The other endpoints and what real clients send: /v1/responses (Codex), /v1/embeddings,
/v1/messages/count_tokens, provider headers passed through, Claude Code's ?beta=true and
role "system" messages, and the clients' own session ids kept as attribution hints."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import httpx
import httpx2
import pytest

from pilothouse.gateway.config import DeploymentConfig, ModelConfig, PriceOverride
from pilothouse.services import Services
from pilothouse.settings import Settings
from tests.gateway.conftest import anthropic_client, openai_client, usage_rows
from tests.gateway.upstream import DEFAULT_REPLY, FakeUpstream, prompt_tokens

PRICE = PriceOverride(input=1_000_000, output=1_000_000)


@pytest.fixture
def settings(database_url: str, tmp_path: Path, upstream: FakeUpstream) -> Settings:
    def deployment(provider: Any, model: str, url: str) -> DeploymentConfig:
        return DeploymentConfig(
            provider=provider,
            model=model,
            base_url=url,
            api_key="sk-up",
            price=PRICE,  # type: ignore[arg-type]
        )

    demo = DeploymentConfig(provider="demo", model="demo-1")
    return Settings(
        database_url=database_url,
        data_dir=tmp_path / "data",
        models=[
            ModelConfig(
                alias="gpt-up", deployments=[deployment("openai", "gpt-x", upstream.openai_url)]
            ),
            ModelConfig(
                alias="claude-up", deployments=[deployment("anthropic", "claude-x", upstream.url)]
            ),
            ModelConfig(
                alias="embed-up",
                deployments=[deployment("openai", "text-embedding-3-small", upstream.openai_url)],
            ),
            ModelConfig(alias="demo", deployments=[demo]),
        ],
    )


async def test_responses_stream_natively_to_an_openai_upstream_like_codex(
    upstream: FakeUpstream, gateway_http: httpx.AsyncClient, services: Services, key: str
) -> None:
    client = openai_client(gateway_http, key)
    async with client.responses.stream(
        model="gpt-up",
        input=[{"role": "user", "content": "say hello"}],
        extra_headers={"session-id": "codex-thread-7", "x-codex-turn-metadata": "{}"},
    ) as stream:
        final = await stream.get_final_response()
    assert final.output_text == DEFAULT_REPLY
    assert upstream.last.path == "/v1/responses"
    (row,) = await usage_rows(services)
    assert row["client_session"] == "codex-thread-7"
    assert row["input_tokens"] == prompt_tokens(upstream.last.body)
    assert row["output_tokens"] == len(DEFAULT_REPLY.split())


async def test_responses_non_stream_from_the_demo(
    gateway_http: httpx.AsyncClient, services: Services, key: str
) -> None:
    reply = await openai_client(gateway_http, key).responses.create(
        model="demo", input="hello from responses"
    )
    assert "hello from responses" in reply.output_text
    (row,) = await usage_rows(services)
    assert reply.usage is not None
    assert row["input_tokens"] == reply.usage.input_tokens
    assert row["output_tokens"] == reply.usage.output_tokens > 0


async def test_embeddings_are_priced_by_input_tokens(
    upstream: FakeUpstream, gateway_http: httpx.AsyncClient, services: Services, key: str
) -> None:
    result = await openai_client(gateway_http, key).embeddings.create(
        model="embed-up", input=["one two three", "four five"]
    )
    assert len(result.data) == 2
    (row,) = await usage_rows(services)
    assert (row["input_tokens"], row["output_tokens"]) == (5, 0)
    assert row["cost_picos"] == 5 * PRICE.input
    demo = await openai_client(gateway_http, key).embeddings.create(model="demo", input="x")
    assert len(demo.data[0].embedding) == 16


async def test_count_tokens_asks_an_anthropic_upstream_and_estimates_otherwise(
    upstream: FakeUpstream, gateway_http2: httpx2.AsyncClient, services: Services, key: str
) -> None:
    client = anthropic_client(gateway_http2, key)
    counted = await client.messages.count_tokens(
        model="claude-up", messages=[{"role": "user", "content": "one two three four"}]
    )
    assert counted.input_tokens == 4
    assert upstream.last.path == "/v1/messages/count_tokens"
    estimated = await client.messages.count_tokens(
        model="gpt-up", messages=[{"role": "user", "content": "x" * 400}]
    )
    assert 100 <= estimated.input_tokens <= 102  # four characters a token, roles included
    assert await usage_rows(services) == []  # counting is free: no usage rows


async def test_claude_code_request_shape_passes_with_its_headers(
    upstream: FakeUpstream, gateway_http: httpx.AsyncClient, services: Services, key: str
) -> None:
    body = {
        "model": "claude-up",
        "max_tokens": 64000,
        "stream": True,
        "thinking": {"type": "adaptive"},
        "metadata": {"user_id": '{"session_id":"abc"}'},
        "system": [
            {"type": "text", "text": "You are Claude Code.", "cache_control": {"type": "ephemeral"}}
        ],
        "messages": [
            {"role": "user", "content": [{"type": "text", "text": "fix the bug"}]},
            {"role": "system", "content": [{"type": "text", "text": "Agent types: ..."}]},
        ],
    }
    headers = {
        "x-api-key": key,
        "anthropic-version": "2023-06-01",
        "anthropic-beta": "claude-code-20250219,context-1m-2025-08-07",
        "x-claude-code-session-id": "b003aa66-b8cc",
        "openai-organization": "org-should-not-reach-anthropic",
    }
    async with gateway_http.stream(
        "POST", "/v1/messages?beta=true", json=body, headers=headers
    ) as response:
        assert response.status_code == 200
        text = "".join([line async for line in response.aiter_lines()])
    assert "message_stop" in text
    sent = upstream.last
    assert sent.headers["anthropic-beta"] == "claude-code-20250219,context-1m-2025-08-07"
    assert sent.headers["anthropic-version"] == "2023-06-01"
    assert sent.headers["x-api-key"] == "sk-up"
    assert "openai-organization" not in sent.headers
    assert "x-claude-code-session-id" not in sent.headers
    assert sent.body["messages"][1]["role"] == "system"  # passed on as Claude Code sent it
    (row,) = await usage_rows(services)
    assert row["client_session"] == "b003aa66-b8cc"


async def test_openai_headers_reach_openai_upstreams_only(
    upstream: FakeUpstream, gateway_http: httpx.AsyncClient, key: str
) -> None:
    await openai_client(gateway_http, key).chat.completions.create(
        model="gpt-up",
        messages=[{"role": "user", "content": "hi"}],
        extra_headers={"OpenAI-Organization": "org-1", "OpenAI-Project": "proj-1"},
    )
    sent = upstream.last.headers
    assert (sent["openai-organization"], sent["openai-project"]) == ("org-1", "proj-1")
    assert sent["authorization"] == "Bearer sk-up"


@pytest.mark.parametrize(
    ("path", "body", "message"),
    [
        ("/v1/responses", {"model": "demo"}, "'input' is required"),
        ("/v1/embeddings", {"model": "demo"}, "'input' is required"),
        ("/v1/embeddings", {"model": "demo", "input": "x", "stream": True}, "does not stream"),
        ("/v1/chat/completions", {"model": "demo", "messages": [], "stream": "yes"}, "'stream'"),
        ("/v1/messages/count_tokens", {"model": "demo"}, "'messages' is required"),
    ],
)
async def test_bad_requests_name_the_field_and_record_nothing(
    path: str,
    body: dict[str, Any],
    message: str,
    gateway_http: httpx.AsyncClient,
    services: Services,
    key: str,
) -> None:
    response = await gateway_http.post(path, json=body, headers={"authorization": f"Bearer {key}"})
    assert response.status_code == 400
    assert message in response.text
    assert await usage_rows(services) == []
