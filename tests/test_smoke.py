"""The service starts, reports health, and the owner key works."""

from __future__ import annotations

import httpx

from tests.conftest import Api


async def test_healthz_and_readyz_report_a_migrated_store(client: httpx.AsyncClient) -> None:
    assert (await client.get("/healthz")).json()["status"] == "ok"
    ready = await client.get("/readyz")
    assert ready.status_code == 200
    assert ready.json()["status"] == "ready"


async def test_owner_key_authenticates_as_the_root_owner(api: Api) -> None:
    me = await api.ok("GET", "/api/v1/whoami")
    assert me["role"] == "owner"
    assert me["kind"] == "user"
