"""Master keys in a running server: the wrong key or a missing one stops start-up with a clear
error, a tampered ciphertext fails loudly, and rotation (a new key first, re-wrap, old key
gone) keeps every secret readable."""

from __future__ import annotations

import os
import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import httpx
import pytest
from pydantic import SecretStr
from sqlalchemy import select, update

from pilothouse.app import build_app
from pilothouse.errors import ConfigError
from pilothouse.identity.tokens import KeyKind, issue
from pilothouse.secrets.crypto import generate
from pilothouse.secrets.tables import secrets
from pilothouse.services import Services, build_services
from pilothouse.settings import Settings
from tests.conftest import Api, MutableClock


def key_file(path: Path, *lines: str) -> Path:
    path.write_text("".join(line + "\n" for line in lines))
    os.chmod(path, 0o600)
    return path


@asynccontextmanager
async def server(settings: Settings, clock: MutableClock) -> AsyncIterator[tuple[Services, Api]]:
    svc = build_services(settings, clock)
    await svc.start(migrate_store=False)
    try:
        app = build_app(settings, services=svc)
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://test") as client:
            yield svc, Api(client, OWNER)
    finally:
        await svc.close()


OWNER = issue(KeyKind.USER).token  # the same owner key on every start


def settings_for(database_url: str, tmp_path: Path, keys: Path) -> Settings:
    return Settings(
        database_url=database_url,
        data_dir=tmp_path / "data",
        master_key_file=keys,
        admin_key=SecretStr(OWNER),
    )


async def lease_values(api: Api, names: list[str]) -> dict[str, Any]:
    session = await api.session()
    token = session["key"]["token"]
    return {n: (await api.ok("GET", f"/api/v1/secrets/{n}", token))["value"] for n in names}


async def seed(api: Api, values: dict[str, str]) -> None:
    for name, value in values.items():
        await api.ok("POST", "/api/v1/secrets", json={"name": name, "value": value})
        await api.ok(
            "POST", f"/api/v1/secrets/{name}/grants", json={"subject": "*", "use": "lease"}
        )


async def test_the_default_key_file_is_made_owner_only_in_the_data_directory(
    database_url: str, tmp_path: Path, clock: MutableClock
) -> None:
    settings = Settings(
        database_url=database_url, data_dir=tmp_path / "data", admin_key=SecretStr(OWNER)
    )
    async with server(settings, clock):
        made = tmp_path / "data" / "master.key"
        assert made.exists() and made.stat().st_mode & 0o777 == 0o600


async def test_a_named_key_file_that_is_missing_or_too_open_stops_start_up(
    database_url: str, tmp_path: Path, clock: MutableClock
) -> None:
    with pytest.raises(ConfigError, match="does not exist"):
        build_services(settings_for(database_url, tmp_path, tmp_path / "absent.key"), clock)
    loose = key_file(tmp_path / "loose.key", generate("k1"))
    os.chmod(loose, 0o644)
    with pytest.raises(ConfigError, match="chmod 600"):
        build_services(settings_for(database_url, tmp_path, loose), clock)


async def test_the_wrong_master_key_stops_start_up_with_a_clear_error(
    database_url: str, tmp_path: Path, clock: MutableClock
) -> None:
    right = key_file(tmp_path / "right.key", generate("k1"))
    async with server(settings_for(database_url, tmp_path, right), clock) as (_, api):
        await seed(api, {"one": f"value-{uuid.uuid4().hex}"})
    wrong = key_file(tmp_path / "wrong.key", generate("k1"))  # same id, other bytes
    svc = build_services(settings_for(database_url, tmp_path, wrong), clock)
    try:
        with pytest.raises(ConfigError, match="not the key this store's secrets were sealed"):
            await svc.start(migrate_store=False)
    finally:
        await svc.close()
    other = key_file(tmp_path / "other.key", generate("k9"))  # k1 not held at all
    svc = build_services(settings_for(database_url, tmp_path, other), clock)
    try:
        with pytest.raises(ConfigError, match="k1"):
            await svc.start(migrate_store=False)
    finally:
        await svc.close()


async def test_a_tampered_ciphertext_fails_loudly_and_gives_nothing(
    database_url: str, tmp_path: Path, clock: MutableClock
) -> None:
    keys = key_file(tmp_path / "m.key", generate("k1"))
    value = f"value-{uuid.uuid4().hex}"
    async with server(settings_for(database_url, tmp_path, keys), clock) as (svc, api):
        await seed(api, {"tampered": value})
        async with svc.store.write() as conn:
            stored = await conn.scalar(select(secrets.c.ciphertext))
            flipped = bytes([stored[0] ^ 1]) + bytes(stored[1:])
            await conn.execute(update(secrets).values(ciphertext=flipped))
    async with server(settings_for(database_url, tmp_path, keys), clock) as (svc, api):
        session = await api.session()
        response = await api.call("GET", "/api/v1/secrets/tampered", session["key"]["token"])
        assert response.status_code == 500
        assert response.json()["error"]["code"] == "secret_corrupt"
        assert value not in response.text


async def test_rotating_the_master_key_keeps_every_secret_readable(
    database_url: str, tmp_path: Path, clock: MutableClock
) -> None:
    old, new = generate("k1"), generate("k2")
    values = {f"s{i}": f"value-{i}-{uuid.uuid4().hex}" for i in range(3)}
    keys = key_file(tmp_path / "m.key", old)
    async with server(settings_for(database_url, tmp_path, keys), clock) as (_, api):
        await seed(api, values)
    key_file(keys, new, old)  # the new key first: it seals; both open
    async with server(settings_for(database_url, tmp_path, keys), clock) as (_, api):
        assert await lease_values(api, list(values)) == values
        done = await api.ok("POST", "/api/v1/secrets/rewrap")
        assert done == {"key_id": "k2", "rewrapped": 3, "already": 0}
        listed = await api.ok("GET", "/api/v1/secrets")
        assert {s["key_id"] for s in listed} == {"k2"}
    key_file(keys, new)  # the old key gone
    async with server(settings_for(database_url, tmp_path, keys), clock) as (_, api):
        assert await lease_values(api, list(values)) == values
