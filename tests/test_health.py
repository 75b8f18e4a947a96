"""Health and readiness; the store failing closed."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import httpx
import pytest

from pilothouse.app import build_app
from pilothouse.identity.tokens import KeyKind, issue
from pilothouse.services import Services, build_services
from pilothouse.settings import Settings
from pilothouse.store import migrate
from tests.conftest import bearer


async def _client(services: Services) -> httpx.AsyncClient:
    app = build_app(services.settings, services=services)
    return httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://t")


async def test_readyz_is_unready_while_migrations_are_pending(services: Services) -> None:
    await migrate.downgrade(services.store, "base")
    try:
        async with await _client(services) as client:
            response = await client.get("/readyz")
            assert (await client.get("/healthz")).status_code == 200
    finally:
        # The PostgreSQL test database is shared by the run: leave it migrated.
        await migrate.upgrade(services.store)
    assert response.status_code == 503
    assert response.json()["error"]["code"] == "migrations_pending"
    assert migrate.head_revision() in response.json()["error"]["message"]


@pytest.fixture
async def unreachable(tmp_path: Path) -> AsyncIterator[Services]:
    """Services whose PostgreSQL cannot be reached (nothing listens on port 1)."""
    settings = Settings(
        database_url="postgresql://postgres@127.0.0.1:1/none", data_dir=tmp_path / "d"
    )
    svc = build_services(settings)
    yield svc
    await svc.store.dispose()


async def test_an_unreachable_store_refuses_requests_instead_of_waving_them_through(
    unreachable: Services,
) -> None:
    token = issue(KeyKind.USER).token
    async with await _client(unreachable) as client:
        ready = await client.get("/readyz")
        call = await client.get("/api/v1/whoami", headers=bearer(token))
    assert ready.status_code == 503
    assert ready.json()["error"]["code"] == "store_unavailable"
    assert call.status_code == 503
    assert call.json()["error"]["code"] == "store_unavailable"
    assert "store" in call.json()["error"]["message"]


async def test_a_refused_key_is_not_answered_when_its_audit_event_cannot_be_written(
    unreachable: Services,
) -> None:
    async with await _client(unreachable) as client:
        call = await client.get("/api/v1/whoami", headers=bearer("not-a-pilothouse-key"))
    assert call.status_code == 503
    assert call.json()["error"]["code"] == "store_unavailable"
