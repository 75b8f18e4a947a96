"""Rate limits: calls and tokens per UTC minute and calls at once, per scope, counted in the
store (so the same for every replica), with the headers and the error an SDK retries on."""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Iterator
from contextlib import ExitStack
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx
import pytest
from sqlalchemy import select

from pilothouse.budgets.limits import RateLimitConfig
from pilothouse.budgets.tables import rate_counters
from pilothouse.gateway.config import DeploymentConfig, ModelConfig
from pilothouse.identity.tokens import KeyKind, issue
from pilothouse.services import Services
from pilothouse.settings import Settings
from tests.conftest import Api, MutableClock, _truncate, bearer
from tests.servers import pilothouse_process

BODY = {"model": "demo", "max_tokens": 16, "messages": [{"role": "user", "content": "hi there"}]}


@pytest.fixture
def settings(database_url: str, tmp_path: Path) -> Settings:
    demo = DeploymentConfig(provider="demo", model="demo-1")
    slow = DeploymentConfig(provider="demo", model="demo-1", latency_ms=300)
    return Settings(
        database_url=database_url,
        data_dir=tmp_path / "data",
        models=[
            ModelConfig(alias="demo", deployments=[demo]),
            ModelConfig(alias="slow", deployments=[slow]),
            # Embeddings for it are admitted and then served by no deployment: never forwarded.
            ModelConfig(
                alias="nowhere",
                deployments=[
                    DeploymentConfig(
                        provider="anthropic",
                        model="claude-x",
                        base_url="http://127.0.0.1:9",
                        price={"input": 1, "output": 1},
                    )
                ],
            ),
        ],
        rate_limits=[
            RateLimitConfig(scope="session:*", rpm=3),
            RateLimitConfig(scope="project:tokens", tpm=100),
            RateLimitConfig(scope="label:use_case=*", concurrent=2),
        ],
    )


async def chat(client: httpx.AsyncClient, key: str, **body: Any) -> httpx.Response:
    return await client.post("/v1/chat/completions", json={**BODY, **body}, headers=bearer(key))


async def counts(services: Services, *, settled: bool = True) -> dict[str, int]:
    """Every rate counter, by key; first (``settled``) waiting for the settlements that calls
    already answered queued."""
    if settled:
        await services.usage_settled()
    async with services.store.read() as conn:
        rows = await conn.execute(select(rate_counters.c.key, rate_counters.c.count))
        return {key.split("|", 1)[1]: int(count) for key, count in rows}


async def test_calls_per_minute_per_session_with_headers_and_reset(
    services: Services, client: httpx.AsyncClient, api: Api, clock: MutableClock
) -> None:
    clock.moment = datetime(2026, 11, 24, 10, 0, 15, tzinfo=UTC)
    one = (await api.session(project="p"))["key"]["token"]
    other = (await api.session(project="p"))["key"]["token"]
    remaining = []
    for _ in range(3):
        reply = await chat(client, one)
        assert reply.status_code == 200, reply.text
        assert reply.headers["x-ratelimit-limit-requests"] == "3"
        assert reply.headers["x-ratelimit-reset-requests"] == "45s"
        remaining.append(reply.headers["x-ratelimit-remaining-requests"])
    assert remaining == ["2", "1", "0"]
    refused = await chat(client, one)
    assert refused.status_code == 429
    assert refused.headers["retry-after"] == "45"
    assert refused.headers["x-ratelimit-remaining-requests"] == "0"
    error = refused.json()["error"]
    assert error["code"] == "rate_limited" and error["type"] == "rate_limit_exceeded"
    assert error["limit_kind"] == "rpm" and error["limit"] == 3 and error["used"] == 3
    assert (
        error["scope"].startswith("session:") and error["resets_at"] == "2026-11-24T10:01:00+00:00"
    )
    assert "3 calls a minute" in error["message"]
    # Each session has its own limit (session:*), and the next minute starts from zero.
    assert (await chat(client, other)).status_code == 200
    clock.moment = datetime(2026, 11, 24, 10, 1, 0, tzinfo=UTC)
    assert (await chat(client, one)).status_code == 200


async def test_anthropic_format_calls_also_get_anthropic_s_own_rate_limit_headers(
    services: Services, client: httpx.AsyncClient, api: Api, clock: MutableClock
) -> None:
    clock.moment = datetime(2026, 11, 24, 10, 0, 15, tzinfo=UTC)
    key = (await api.session(project="tokens"))["key"]["token"]
    messages = {**BODY, "max_tokens": 10}
    remaining, tokens_left = [], []
    for _ in range(3):
        reply = await client.post("/v1/messages", json=messages, headers=bearer(key))
        assert reply.status_code == 200, reply.text
        assert reply.headers["anthropic-ratelimit-requests-limit"] == "3"
        assert reply.headers["anthropic-ratelimit-requests-reset"] == "2026-11-24T10:01:00Z"
        assert reply.headers["anthropic-ratelimit-tokens-limit"] == "100"
        assert reply.headers["anthropic-ratelimit-tokens-reset"] == "2026-11-24T10:01:00Z"
        # The OpenAI names stay: a harness may read either.
        assert reply.headers["x-ratelimit-reset-requests"] == "45s"
        remaining.append(reply.headers["anthropic-ratelimit-requests-remaining"])
        tokens_left.append(int(reply.headers["anthropic-ratelimit-tokens-remaining"]))
    assert remaining == ["2", "1", "0"]
    # Each call took its worst case (prompt and max_tokens) when admitted: what was left then.
    assert tokens_left[0] > tokens_left[1] > tokens_left[2] >= 0
    refused = await client.post("/v1/messages", json=messages, headers=bearer(key))
    assert refused.status_code == 429
    assert refused.json()["error"]["type"] == "rate_limit_error"
    assert refused.headers["retry-after"] == "45"
    assert refused.headers["anthropic-ratelimit-requests-limit"] == "3"
    assert refused.headers["anthropic-ratelimit-requests-remaining"] == "0"
    assert refused.headers["anthropic-ratelimit-requests-reset"] == "2026-11-24T10:01:00Z"
    # OpenAI-format calls get OpenAI's names only.
    other = (await api.session(project="p"))["key"]["token"]
    reply = await chat(client, other)
    assert reply.headers["x-ratelimit-limit-requests"] == "3"
    assert not [name for name in reply.headers if name.startswith("anthropic-ratelimit-")]


async def test_tokens_per_minute_reserve_the_worst_case_and_settle_to_the_actual(
    services: Services, client: httpx.AsyncClient, api: Api, clock: MutableClock
) -> None:
    clock.moment = datetime(2026, 11, 24, 10, 0, 0, tzinfo=UTC)
    key = (await api.session(project="tokens"))["key"]["token"]
    # 3 prompt tokens + 40 output reserved (43); the demo answers with 18.
    first = await chat(client, key, max_tokens=40)
    assert first.status_code == 200
    used = first.json()["usage"]["total_tokens"]
    assert used == 21
    minute = int(clock.moment.timestamp())
    assert (await counts(services))[f"tpm|project:tokens|{minute}"] == used
    assert first.headers["x-ratelimit-limit-tokens"] == "100"
    # A call whose worst case does not fit in what is left is refused before it is forwarded.
    refused = await chat(client, key, max_tokens=100)
    assert refused.status_code == 429 and refused.json()["error"]["limit_kind"] == "tpm"
    assert (await counts(services))[f"tpm|project:tokens|{minute}"] == used


async def test_calls_at_once_per_label_value_and_the_slot_comes_back(
    services: Services, client: httpx.AsyncClient, api: Api
) -> None:
    key = (await api.session(project="p", labels={"use_case": "review"}))["key"]["token"]
    replies = await asyncio.gather(*(chat(client, key, model="slow") for _ in range(5)))
    statuses = sorted(r.status_code for r in replies)
    assert statuses == [200, 200, 429, 429, 429]
    refused = next(r for r in replies if r.status_code == 429)
    assert refused.json()["error"]["limit_kind"] == "conc"
    assert "2 calls at once" in refused.json()["error"]["message"]
    # The slots came back before the replies were sent (read without waiting for queued
    # settlements): a client calling one at a time, through any replica, is never refused by
    # its own last call.
    assert (await counts(services, settled=False))["conc|label:use_case=review"] == 0
    assert (await chat(client, key, model="slow")).status_code == 200


async def test_a_bad_request_takes_nothing_and_an_unforwarded_call_gives_it_back(
    services: Services, client: httpx.AsyncClient, api: Api, clock: MutableClock
) -> None:
    clock.moment = datetime(2026, 11, 24, 10, 0, 0, tzinfo=UTC)
    key = (await api.session(project="tokens", labels={"use_case": "x"}))["key"]["token"]
    reply = await chat(client, key, messages="not a list")
    assert reply.status_code == 400  # refused before any limit is taken
    assert await counts(services) == {}
    reply = await client.post(
        "/v1/embeddings", json={"model": "nowhere", "input": "hello"}, headers=bearer(key)
    )
    assert reply.status_code == 503 and reply.json()["error"]["code"] == "model_unavailable"
    minute = int(clock.moment.timestamp())
    left = await counts(services)
    assert left[f"tpm|project:tokens|{minute}"] == 0 and left["conc|label:use_case=x"] == 0
    assert left[next(k for k in left if k.startswith("rpm|session:"))] == 0


def test_a_bad_rate_limit_scope_is_refused_with_its_reason() -> None:
    with pytest.raises(ValueError, match="the scope kind must be one of"):
        RateLimitConfig(scope="galaxy:1", rpm=1)
    with pytest.raises(ValueError, match="label:<name>=<value>"):
        RateLimitConfig(scope="label:use_case", rpm=1)
    with pytest.raises(ValueError, match="give a value or"):
        RateLimitConfig(scope="user:", rpm=1)


# --- two replicas --------------------------------------------------------------------------


@pytest.fixture
def two_replicas(pg_url: str, tmp_path: Path) -> Iterator[tuple[list[str], str]]:
    asyncio.run(_truncate(pg_url))
    owner = issue(KeyKind.USER).token
    config = tmp_path / "pilothouse.json"
    config.write_text(json.dumps({"rate_limits": [{"scope": "org", "rpm": 20}]}))
    env = {
        "PILOTHOUSE_DATABASE_URL": pg_url,
        "PILOTHOUSE_ADMIN_KEY": owner,
        "PILOTHOUSE_LOG_LEVEL": "warning",
    }
    with ExitStack() as stack:
        args = ["serve", "--config", str(config)]
        urls = [stack.enter_context(pilothouse_process(args, tmp_path, env))[0] for _ in range(2)]
        yield urls, owner


def test_a_per_minute_limit_holds_across_two_replicas(
    two_replicas: tuple[list[str], str],
) -> None:
    urls, owner = two_replicas

    async def scenario() -> list[int]:
        async with httpx.AsyncClient(timeout=30) as http:
            made = await http.post(
                f"{urls[0]}/api/v1/sessions", headers=bearer(owner), json={"project": "p"}
            )
            key = made.json()["key"]["token"]
            # All 60 calls inside one UTC minute.
            second = datetime.now(UTC).second
            if second > 40:
                await asyncio.sleep(60.5 - second)
            replies = await asyncio.gather(
                *(
                    http.post(f"{urls[i % 2]}/v1/chat/completions", json=BODY, headers=bearer(key))
                    for i in range(60)
                )
            )
            return [r.status_code for r in replies]

    started = time.monotonic()
    statuses = asyncio.run(scenario())
    assert time.monotonic() - started < 60
    assert statuses.count(200) == 20  # not 20 per replica
    assert statuses.count(429) == 40
