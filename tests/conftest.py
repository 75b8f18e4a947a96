"""Shared fixtures: a store on SQLite and on PostgreSQL, started Services, an in-process client.

Every test that takes ``services`` (or anything built on it) runs once per engine:
``[sqlite]`` always, ``[postgresql]`` when ``PILOTHOUSE_TEST_DATABASE_URL`` names a reachable
server (``.ci/run`` sets it), otherwise that half is skipped with the reason.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import shutil
import uuid
from collections.abc import AsyncIterator, Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest
from sqlalchemy import text
from sqlalchemy.engine import make_url

from pilothouse.app import build_app
from pilothouse.services import Services, build_services
from pilothouse.settings import Settings, normalise_database_url
from pilothouse.store import migrate
from pilothouse.store.engine import Store
from pilothouse.store.schema import metadata

PG_ENV = "PILOTHOUSE_TEST_DATABASE_URL"


class MutableClock:
    """A clock tests can move."""

    def __init__(self) -> None:
        self.moment = datetime.now(UTC)

    def now(self) -> datetime:
        """The clock's current time."""
        return self.moment

    def advance(self, **kwargs: float) -> None:
        """Move the clock forward."""
        self.moment += timedelta(**kwargs)


def _pg_admin_url() -> str | None:
    return os.environ.get(PG_ENV) or None


async def _pg_admin(admin_url: str, statement: str) -> None:
    import asyncpg

    dsn = make_url(admin_url).set(drivername="postgresql").render_as_string(hide_password=False)
    conn = await asyncpg.connect(dsn, timeout=5)
    try:
        await conn.execute(statement)
    finally:
        await conn.close()


async def _pg_create(admin_url: str, name: str) -> None:
    await _pg_admin(admin_url, f'CREATE DATABASE "{name}"')


async def _pg_drop(admin_url: str, name: str) -> None:
    await _pg_admin(admin_url, f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


async def _migrate(url: str) -> None:
    store = Store(url)
    try:
        await migrate.upgrade(store)
    finally:
        await store.dispose()


@pytest.fixture(scope="session")
def pg_url() -> Iterator[str]:
    """A migrated PostgreSQL database made for this test run (dropped at the end)."""
    admin = _pg_admin_url()
    if admin is None:
        pytest.skip(f"PostgreSQL tests need {PG_ENV} (set by .ci/run)")
    admin = normalise_database_url(admin)
    name = f"pilothouse_test_{uuid.uuid4().hex[:10]}"
    try:
        asyncio.run(_pg_create(admin, name))
    except (OSError, TimeoutError) as exc:
        pytest.skip(f"PostgreSQL at {PG_ENV} is unreachable: {exc}")
    url = make_url(admin).set(database=name).render_as_string(hide_password=False)
    asyncio.run(_migrate(url))
    yield url
    asyncio.run(_pg_drop(admin, name))


@pytest.fixture(scope="session")
def sqlite_template(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A migrated SQLite file each test copies (faster than migrating per test)."""
    path = tmp_path_factory.mktemp("template") / "pilothouse.db"
    asyncio.run(_migrate(f"sqlite+aiosqlite:///{path}"))
    return path


async def _truncate(url: str) -> None:
    store = Store(url)
    try:
        async with store.write() as conn:
            names = ", ".join(t.name for t in metadata.sorted_tables)
            await conn.execute(text(f"TRUNCATE {names} CASCADE"))
    finally:
        await store.dispose()


@pytest.fixture(params=["sqlite", "postgresql"])
def database_url(
    request: pytest.FixtureRequest, tmp_path: Path, sqlite_template: Path
) -> Iterator[str]:
    """A migrated, empty database URL on each engine."""
    if request.param == "sqlite":
        path = tmp_path / "pilothouse.db"
        shutil.copy(sqlite_template, path)
        yield f"sqlite+aiosqlite:///{path}"
        return
    url: str = request.getfixturevalue("pg_url")
    asyncio.run(_truncate(url))
    yield url


@pytest.fixture
def clock() -> MutableClock:
    """A movable clock for the services under test."""
    return MutableClock()


@pytest.fixture
def settings(database_url: str, tmp_path: Path) -> Settings:
    """Settings pointing at the test database."""
    return Settings(database_url=database_url, data_dir=tmp_path / "data")


@pytest.fixture
async def services(settings: Settings, clock: MutableClock) -> AsyncIterator[Services]:
    """Started Services (bootstrapped: one root organization with an owner key)."""
    svc = build_services(settings, clock)
    await svc.start(migrate_store=False)
    try:
        yield svc
    finally:
        await svc.close()


@contextlib.asynccontextmanager
async def another_replica(
    settings: Settings, clock: MutableClock, base_url: str = "http://pilothouse.test"
) -> AsyncIterator[tuple[Services, httpx.AsyncClient]]:
    """A second replica on the test's store, in process (``settings`` may differ from the
    first's: another master key, a faster background pass): its Services and a client."""
    other = build_services(settings, clock)
    await other.start(migrate_store=False)
    try:
        transport = httpx.ASGITransport(app=build_app(settings, services=other))
        async with httpx.AsyncClient(transport=transport, base_url=base_url) as client:
            yield other, client
    finally:
        await other.close()


@pytest.fixture
async def client(services: Services) -> AsyncIterator[httpx.AsyncClient]:
    """An httpx client calling the app in-process."""
    app = build_app(services.settings, services=services)
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://pilothouse.test") as c:
        yield c


@pytest.fixture
def owner_token(services: Services) -> str:
    """The bootstrap owner key of the root organization."""
    assert services.bootstrap_result is not None
    token = services.bootstrap_result.owner_token
    assert token is not None
    return token


def bearer(token: str) -> dict[str, str]:
    """Authorization header for ``token``."""
    return {"authorization": f"Bearer {token}"}


class Api:
    """Small helpers over the admin API for arranging tests."""

    def __init__(self, client: httpx.AsyncClient, owner_token: str) -> None:
        self.client = client
        self.owner = owner_token

    async def call(
        self, method: str, path: str, token: str | None = None, **kwargs: Any
    ) -> httpx.Response:
        """Call the API as ``token`` (the owner by default)."""
        headers = {**bearer(token or self.owner), **kwargs.pop("headers", {})}
        return await self.client.request(method, path, headers=headers, **kwargs)

    async def ok(self, method: str, path: str, token: str | None = None, **kwargs: Any) -> Any:
        """Call and require a 2xx; return the JSON body (None for 204)."""
        response = await self.call(method, path, token, **kwargs)
        assert response.is_success, f"{method} {path}: {response.status_code} {response.text}"
        return response.json() if response.content else None

    async def user_with_key(self, role: str, *, token: str | None = None) -> tuple[str, str]:
        """Make a user with ``role`` and a key for them: (user id, token)."""
        email = f"{role}-{uuid.uuid4().hex[:8]}@example.com"
        user = await self.ok("POST", "/api/v1/users", token, json={"email": email, "role": role})
        key = await self.ok("POST", "/api/v1/keys", token, json={"user_id": user["id"]})
        return user["id"], key["token"]

    async def service_key(self, scopes: list[str], allowed_labels: list[str] | None = None) -> str:
        """Make a service key with ``scopes``."""
        body = {"kind": "service", "scopes": scopes, "allowed_labels": allowed_labels or []}
        key = await self.ok("POST", "/api/v1/keys", json=body)
        return str(key["token"])

    async def session(self, token: str | None = None, **body: Any) -> dict[str, Any]:
        """Open a session; returns the whole response (session and key)."""
        result: dict[str, Any] = await self.ok("POST", "/api/v1/sessions", token, json=body)
        return result


@pytest.fixture
def api(client: httpx.AsyncClient, owner_token: str) -> Api:
    """Helpers over the admin API, acting as the root owner by default."""
    return Api(client, owner_token)
