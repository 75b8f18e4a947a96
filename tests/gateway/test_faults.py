"""Upstream faults: the caller gets a clear error or a fallback answer within the timeouts,
nothing hangs, and the usage rows are right (one per forwarded call, estimated when cut)."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import anthropic
import httpx
import httpx2
import openai
import pytest

from pilothouse.gateway.config import (
    DeploymentConfig,
    GatewayConfig,
    ModelConfig,
    PriceOverride,
    Timeouts,
)
from pilothouse.services import Services
from pilothouse.settings import Settings
from tests.gateway.conftest import anthropic_client, openai_client, usage_rows
from tests.gateway.upstream import DEFAULT_REPLY, FakeUpstream, free_port, prompt_tokens
from tests.servers import running_server

PRICE = PriceOverride(input=1_000_000, output=4_000_000)
FAST = Timeouts(connect=1.0, first_byte=0.4, idle=0.4)
MESSAGES: Any = [{"role": "user", "content": "say something short"}]


def gateway_config() -> GatewayConfig:
    return GatewayConfig(
        backoff_base_seconds=0.01,
        backoff_max_seconds=0.05,
        max_retry_after_seconds=1.0,
        breaker_failures=3,
        breaker_cooldown_seconds=30,
    )


def fault_models(up: FakeUpstream, dead_port: int) -> list[ModelConfig]:
    def compatible(name: str, **kw: Any) -> DeploymentConfig:
        return DeploymentConfig(
            name=name,
            provider="openai-compatible",
            model="fake-chat",
            base_url=up.openai_url,
            price=PRICE,
            timeouts=FAST,
            **kw,
        )

    demo = DeploymentConfig(name="demo-fallback", provider="demo", model="demo-1", priority=9)
    return [
        ModelConfig(alias="solo", deployments=[compatible("fake")]),
        ModelConfig(alias="once", retries=0, deployments=[compatible("fake-once")]),
        ModelConfig(alias="fallback", retries=1, deployments=[compatible("fake-primary"), demo]),
        ModelConfig(
            alias="claude-fake",
            deployments=[
                DeploymentConfig(
                    name="fake-anthropic",
                    provider="anthropic",
                    model="claude-fake",
                    base_url=up.url,
                    price=PRICE,
                    timeouts=FAST,
                )
            ],
        ),
        ModelConfig(
            alias="dead",
            deployments=[
                DeploymentConfig(
                    name="dead",
                    provider="openai-compatible",
                    model="x",
                    base_url=f"http://127.0.0.1:{dead_port}/v1",
                    price=PRICE,
                    timeouts=FAST,
                )
            ],
        ),
    ]


@pytest.fixture
def settings(database_url: str, tmp_path: Path, upstream: FakeUpstream) -> Settings:
    return Settings(
        database_url=database_url,
        data_dir=tmp_path / "data",
        models=fault_models(upstream, free_port()),
        gateway=gateway_config(),
    )


async def test_a_500_is_retried_and_the_retry_is_recorded(
    upstream: FakeUpstream, gateway_http: httpx.AsyncClient, services: Services, key: str
) -> None:
    upstream.fail(500, message="upstream exploded")
    reply = await openai_client(gateway_http, key).chat.completions.create(
        model="solo", messages=MESSAGES
    )
    assert reply.choices[0].message.content == DEFAULT_REPLY
    assert len(upstream.requests) == 2
    (row,) = await usage_rows(services)
    assert (row["status"], row["retries"], row["deployment"]) == ("ok", 1, "fake")
    assert row["input_tokens"] == prompt_tokens(upstream.last.body)
    assert row["output_tokens"] == len(DEFAULT_REPLY.split())
    assert row["cost_picos"] == row["input_tokens"] * PRICE.input + row["output_tokens"] * 4_000_000


async def test_a_429_retry_after_is_waited_out(
    upstream: FakeUpstream, gateway_http: httpx.AsyncClient, services: Services, key: str
) -> None:
    upstream.fail(429, message="slow down", retry_after=0.3)
    started = time.monotonic()
    await openai_client(gateway_http, key).chat.completions.create(model="solo", messages=MESSAGES)
    assert time.monotonic() - started >= 0.3
    (row,) = await usage_rows(services)
    assert (row["status"], row["retries"]) == ("ok", 1)


async def test_a_long_retry_after_cools_the_deployment_and_falls_back(
    upstream: FakeUpstream, gateway_http: httpx.AsyncClient, services: Services, key: str
) -> None:
    upstream.fail(429, message="come back in a minute", retry_after=60)
    client = openai_client(gateway_http, key)
    first = await client.chat.completions.create(model="fallback", messages=MESSAGES)
    assert "demo provider" in (first.choices[0].message.content or "")
    second = await client.chat.completions.create(model="fallback", messages=MESSAGES)
    assert "demo provider" in (second.choices[0].message.content or "")
    assert len(upstream.requests) == 1  # the cooling deployment was skipped the second time
    rows = await usage_rows(services)
    assert [(r["deployment"], r["retries"]) for r in rows] == [
        ("demo-fallback", 1),
        ("demo-fallback", 0),
    ]


async def test_an_upstream_429_that_persists_reaches_the_client_as_429(
    upstream: FakeUpstream, gateway_http: httpx.AsyncClient, services: Services, key: str
) -> None:
    upstream.fail(429, message="quota", retry_after=0.05)
    with pytest.raises(openai.RateLimitError) as limited:
        await openai_client(gateway_http, key).chat.completions.create(
            model="once", messages=MESSAGES
        )
    assert limited.value.code == "upstream_rate_limited"
    assert "fake-once: HTTP 429 (quota)" in limited.value.message
    assert limited.value.response.headers["retry-after"] == "1"
    (row,) = await usage_rows(services)
    assert (row["status"], row["http_status"], row["cost_picos"]) == ("upstream_failed", 429, 0)


async def test_connection_refused_fails_fast_naming_the_deployment(
    gateway_http: httpx.AsyncClient, services: Services, key: str
) -> None:
    started = time.monotonic()
    with pytest.raises(openai.APIStatusError) as failed:
        await openai_client(gateway_http, key).chat.completions.create(
            model="dead", messages=MESSAGES
        )
    assert time.monotonic() - started < 2
    assert failed.value.status_code == 502
    assert failed.value.code == "upstream_failed"
    assert "'dead' failed after 3 tries" in failed.value.message
    assert "dead:" in failed.value.message
    (row,) = await usage_rows(services)
    assert (row["status"], row["retries"], row["input_tokens"]) == ("upstream_failed", 2, 0)
    # Three failures in a row opened the breaker: the next call is refused at once.
    with pytest.raises(openai.APIStatusError) as cooling:
        await openai_client(gateway_http, key).chat.completions.create(
            model="dead", messages=MESSAGES
        )
    assert cooling.value.status_code == 503
    assert cooling.value.code == "upstream_unavailable"


async def test_headers_that_never_come_time_out_and_the_retry_answers(
    upstream: FakeUpstream, gateway_http: httpx.AsyncClient, services: Services, key: str
) -> None:
    upstream.stall_headers()
    started = time.monotonic()
    await openai_client(gateway_http, key).chat.completions.create(model="solo", messages=MESSAGES)
    assert 0.4 <= time.monotonic() - started < 2
    (row,) = await usage_rows(services)
    assert (row["status"], row["retries"]) == ("ok", 1)


async def test_a_stall_on_every_try_is_a_504(
    upstream: FakeUpstream, gateway_http: httpx.AsyncClient, services: Services, key: str
) -> None:
    upstream.stall_headers(times=5)
    started = time.monotonic()
    with pytest.raises(openai.APIStatusError) as failed:
        await openai_client(gateway_http, key).chat.completions.create(
            model="solo", messages=MESSAGES
        )
    assert time.monotonic() - started < 3
    assert (failed.value.status_code, failed.value.code) == (504, "upstream_timeout")
    assert "no first byte within 0.4s" in failed.value.message


async def test_a_stream_that_stalls_before_its_first_event_is_retried(
    upstream: FakeUpstream, gateway_http: httpx.AsyncClient, services: Services, key: str
) -> None:
    upstream.stall_stream(after=0)
    stream = await openai_client(gateway_http, key).chat.completions.create(
        model="solo", messages=MESSAGES, stream=True
    )
    text = "".join([c.choices[0].delta.content or "" async for c in stream if c.choices])
    assert text == DEFAULT_REPLY
    (row,) = await usage_rows(services)
    assert (row["status"], row["retries"], row["estimated"]) == ("ok", 1, 0)


async def test_a_stream_that_stalls_midway_ends_with_an_error_and_an_estimated_row(
    upstream: FakeUpstream, gateway_http: httpx.AsyncClient, services: Services, key: str
) -> None:
    upstream.stall_stream(after=3)
    stream = await openai_client(gateway_http, key).chat.completions.create(
        model="solo", messages=MESSAGES, stream=True
    )
    seen = []
    with pytest.raises(openai.APIError, match="upstream stream failed"):
        async for chunk in stream:
            seen.extend(c.delta.content or "" for c in chunk.choices)
    assert "".join(seen)  # what came before the stall was relayed
    (row,) = await usage_rows(services)
    assert (row["status"], row["estimated"]) == ("upstream_timeout", 1)
    assert row["input_tokens"] > 0 and row["output_tokens"] > 0
    assert row["cost_picos"] > 0


async def test_an_anthropic_stream_cut_midway_keeps_the_input_count_it_was_told(
    upstream: FakeUpstream, gateway_http2: httpx2.AsyncClient, services: Services, key: str
) -> None:
    upstream.cut(after=4)
    client = anthropic_client(gateway_http2, key)
    with pytest.raises(anthropic.APIError):
        async with client.messages.stream(
            model="claude-fake", max_tokens=100, messages=MESSAGES
        ) as stream:
            async for _ in stream:
                pass
    (row,) = await usage_rows(services)
    assert (row["status"], row["estimated"]) == ("upstream_cut", 1)
    # message_start carried the real input count: it is kept, not estimated over.
    assert row["input_tokens"] == prompt_tokens(upstream.last.body)
    assert row["output_tokens"] >= 1


async def test_an_upstream_400_is_passed_on_without_retrying(
    upstream: FakeUpstream, gateway_http: httpx.AsyncClient, services: Services, key: str
) -> None:
    upstream.fail(400, message="max_tokens is too large")
    with pytest.raises(openai.BadRequestError, match="max_tokens is too large"):
        await openai_client(gateway_http, key).chat.completions.create(
            model="solo", messages=MESSAGES
        )
    assert len(upstream.requests) == 1
    (row,) = await usage_rows(services)
    assert (row["status"], row["http_status"], row["cost_picos"]) == ("upstream_error", 400, 0)


def test_a_client_that_disconnects_cancels_the_upstream_and_what_was_produced_counts(
    tmp_path: Path,
) -> None:
    with FakeUpstream.threaded(reply=" ".join(["word"] * 200)) as up:
        up.slow(0.05)
        with running_server(
            tmp_path / "srv", models=fault_models(up, free_port()), gateway=gateway_config()
        ) as server:
            owner = {"authorization": f"Bearer {server.owner_token}"}
            session = httpx.post(
                f"{server.url}/api/v1/sessions", json={"project": "p"}, headers=owner
            ).json()
            key = session["key"]["token"]
            body = {"model": "solo", "messages": MESSAGES, "stream": True}
            started = time.monotonic()
            with httpx.stream(
                "POST",
                f"{server.url}/v1/chat/completions",
                json=body,
                headers={"authorization": f"Bearer {key}"},
            ) as response:
                events = 0
                for line in response.iter_lines():
                    events += line.startswith("data:")
                    if events == 5:
                        break
            rows: list[dict[str, Any]] = []
            while time.monotonic() - started < 5 and not rows:
                time.sleep(0.05)
                rows = httpx.get(f"{server.url}/api/v1/usage", headers=owner).json()["data"]
            assert rows, "the call was not recorded"
            (row,) = rows
            assert (row["status"], row["estimated"]) == ("client_disconnected", True)
            assert row["tokens"]["output"] >= 4
            assert row["tokens"]["input"] > 0  # estimated: an OpenAI stream reports usage last
            # The upstream was let go well before its 200-word stream (10 s) could finish.
            assert time.monotonic() - started < 5
