"""Gateway fixtures: SDK clients over the in-process app, and usage rows read back."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import anthropic
import httpx
import httpx2
import openai
import pytest
from sqlalchemy import select

from pilothouse.app import build_app
from pilothouse.gateway.tables import usage_records
from pilothouse.services import Services
from tests.conftest import Api
from tests.gateway.upstream import FakeUpstream


@pytest.fixture
async def gateway_http(services: Services) -> AsyncIterator[httpx.AsyncClient]:
    """An httpx client for SDKs, calling the app in-process."""
    app = build_app(services.settings, services=services)
    async with httpx.AsyncClient(
        transport=httpx.ASGITransport(app=app), base_url="http://pilothouse.test"
    ) as client:
        yield client


@pytest.fixture
async def gateway_http2(services: Services) -> AsyncIterator[httpx2.AsyncClient]:
    """The same, for SDKs built on httpx2 (the Anthropic SDK 2.x)."""
    app = build_app(services.settings, services=services)
    async with httpx2.AsyncClient(
        transport=httpx2.ASGITransport(app=app), base_url="http://pilothouse.test"
    ) as client:
        yield client


@pytest.fixture
async def agent_session(api: Api) -> dict[str, Any]:
    """An open session with context, as an orchestrator would make it."""
    team = await api.ok("POST", "/api/v1/teams", json={"name": "payments"})
    return await api.session(
        team_id=team["id"],
        project="checkout",
        repository="acme/payments",
        skills=["git"],
        plugins=["reviewer"],
        labels={"use_case": "bugfix"},
    )


def openai_client(http: httpx.AsyncClient, key: str) -> openai.AsyncOpenAI:
    """The real OpenAI SDK pointed at the gateway."""
    return openai.AsyncOpenAI(
        api_key=key, base_url="http://pilothouse.test/v1", http_client=http, max_retries=0
    )


def anthropic_client(http: httpx2.AsyncClient, key: str) -> anthropic.AsyncAnthropic:
    """The real Anthropic SDK pointed at the gateway."""
    return anthropic.AsyncAnthropic(
        api_key=key, base_url="http://pilothouse.test", http_client=http, max_retries=0
    )


async def usage_rows(services: Services) -> list[dict[str, Any]]:
    """Every usage row, oldest first."""
    await services.usage_settled()  # what the calls already answered queued
    async with services.store.read() as conn:
        rows = await conn.execute(select(usage_records).order_by(usage_records.c.created_at))
        return [dict(r) for r in rows.mappings()]


@pytest.fixture
async def upstream() -> AsyncIterator[FakeUpstream]:
    """A fake OpenAI- and Anthropic-format upstream on 127.0.0.1, with scriptable faults."""
    async with FakeUpstream() as up:
        yield up


@pytest.fixture
async def key(api: Api) -> str:
    """A session key, as an agent presents it."""
    session = await api.session(project="gateway-tests")
    token: str = session["key"]["token"]
    return token
