"""Streamed calls settle their budgets exactly, cache tokens included, in every wire format: the
counter holds the usage row's cost, and that cost is the tokens the stream reported times the
deployment's prices."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import httpx
import pytest

from pilothouse.gateway.config import DeploymentConfig, ModelConfig
from pilothouse.services import Services
from pilothouse.settings import Settings
from tests.budgets.test_ledger import add_budget, counter, rows
from tests.conftest import Api, bearer
from tests.gateway.upstream import FakeUpstream

PRICE = {"input": 3_000_000, "output": 15_000_000, "cache_read": 300_000, "cache_write": 3_750_000}
CACHED = 7


@pytest.fixture
async def upstream() -> AsyncIterator[FakeUpstream]:
    async with FakeUpstream(cached_tokens=CACHED) as up:
        yield up


@pytest.fixture
def settings(database_url: str, tmp_path: Path, upstream: FakeUpstream) -> Settings:
    return Settings(
        database_url=database_url,
        data_dir=tmp_path / "data",
        models=[
            ModelConfig(
                alias="oa",
                deployments=[
                    DeploymentConfig(
                        provider="openai-compatible",
                        model="fake-model",
                        base_url=upstream.openai_url,
                        price=PRICE,
                    )
                ],
            ),
            ModelConfig(
                alias="an",
                deployments=[
                    DeploymentConfig(
                        provider="anthropic",
                        model="claude-fake",
                        base_url=upstream.url,
                        price=PRICE,
                    )
                ],
            ),
        ],
    )


CASES = {
    "openai chat": (
        "/v1/chat/completions",
        {"model": "oa", "stream": True, "messages": [{"role": "user", "content": "hello there"}]},
    ),
    "anthropic messages": (
        "/v1/messages",
        {
            "model": "an",
            "stream": True,
            "max_tokens": 64,
            "messages": [{"role": "user", "content": "hello there"}],
        },
    ),
    "openai responses": ("/v1/responses", {"model": "oa", "stream": True, "input": "hello there"}),
}


@pytest.mark.parametrize("case", sorted(CASES))
async def test_a_streamed_call_settles_its_budget_to_its_exact_cost(
    case: str, services: Services, client: httpx.AsyncClient, api: Api
) -> None:
    path, body = CASES[case]
    session = await api.session(project="pricing")
    budget = await add_budget(
        services, scope_kind="project", scope_value="pricing", limit_picos=10**12
    )
    async with client.stream(
        "POST", path, json=body, headers=bearer(session["key"]["token"])
    ) as reply:
        assert reply.status_code == 200
        text = (await reply.aread()).decode()
    assert "event: error" not in text and '"error":{' not in text
    [row] = await rows(services)
    assert row["status"] == "ok" and row["estimated"] == 0 and row["stream"] == 1
    assert row["cache_read_tokens"] == CACHED and row["output_tokens"] > 0
    expected = (
        row["input_tokens"] * PRICE["input"]
        + row["output_tokens"] * PRICE["output"]
        + row["cache_read_tokens"] * PRICE["cache_read"]
        + row["cache_write_tokens"] * PRICE["cache_write"]
    )
    assert row["cost_picos"] == expected
    assert await counter(services, budget) == {
        "spent_picos": expected,
        "reserved_picos": 0,
        "calls": 1,
    }
