"""Replicas sharing one PostgreSQL: a key revoked through one is refused by another within two
seconds although that one caches keys for an hour, and replicas starting together on an empty
database make one root organization."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterator
from contextlib import ExitStack
from pathlib import Path

import httpx
import pytest

from pilothouse.identity.tokens import KeyKind, issue
from tests.conftest import _truncate, bearer
from tests.servers import pilothouse_process

REVOCATION_BOUND_SECONDS = 2.0


@pytest.fixture
def two_replicas(pg_url: str, tmp_path: Path) -> Iterator[tuple[str, str, str]]:
    """Two `pilothouse serve` processes sharing the test PostgreSQL: (url A, url B, owner key)."""
    asyncio.run(_truncate(pg_url))
    admin_key = issue(KeyKind.USER).token
    env = {
        "PILOTHOUSE_DATABASE_URL": pg_url,
        "PILOTHOUSE_ADMIN_KEY": admin_key,
        "PILOTHOUSE_KEY_CACHE_TTL_SECONDS": "3600",
        "PILOTHOUSE_LOG_LEVEL": "warning",
    }
    with ExitStack() as stack:
        # One at a time: the first migrates and bootstraps, the second finds it done.
        url_a, _ = stack.enter_context(pilothouse_process(["serve"], tmp_path, env))
        url_b, _ = stack.enter_context(pilothouse_process(["serve"], tmp_path, env))
        yield url_a, url_b, admin_key


def test_a_key_revoked_on_one_replica_is_refused_by_the_other_within_two_seconds(
    two_replicas: tuple[str, str, str],
) -> None:
    url_a, url_b, owner = two_replicas
    with httpx.Client(timeout=5) as http:
        created = http.post(f"{url_a}/api/v1/keys", headers=bearer(owner), json={"name": "victim"})
        assert created.status_code == 201, created.text
        key = created.json()
        # B authenticates (and caches) the key.
        for _ in range(3):
            assert (
                http.get(f"{url_b}/api/v1/whoami", headers=bearer(key["token"])).status_code == 200
            )

        revoked = http.post(f"{url_a}/api/v1/keys/{key['id']}/revoke", headers=bearer(owner))
        assert revoked.status_code == 200, revoked.text
        started = time.monotonic()
        # The replica that revoked refuses at once.
        at_a = http.get(f"{url_a}/api/v1/whoami", headers=bearer(key["token"]))
        assert at_a.status_code == 401
        assert at_a.json()["error"]["code"] == "key_revoked"

        status_at_b = 200
        while time.monotonic() - started < REVOCATION_BOUND_SECONDS + 1:
            response = http.get(f"{url_b}/api/v1/whoami", headers=bearer(key["token"]))
            status_at_b = response.status_code
            if status_at_b == 401:
                break
            time.sleep(0.02)
        elapsed = time.monotonic() - started
        assert status_at_b == 401
        assert response.json()["error"]["code"] == "key_revoked"
        assert elapsed < REVOCATION_BOUND_SECONDS, (
            f"refused by the other replica after {elapsed:.2f}s"
        )


def test_a_second_replica_on_a_bootstrapped_database_does_not_make_another_root(
    two_replicas: tuple[str, str, str],
) -> None:
    url_a, url_b, owner = two_replicas
    with httpx.Client(timeout=5) as http:
        org_a = http.get(f"{url_a}/api/v1/org", headers=bearer(owner)).json()
        org_b = http.get(f"{url_b}/api/v1/org", headers=bearer(owner)).json()
        assert org_a == org_b
        assert org_a["is_root"] is True


async def test_replicas_bootstrapping_an_empty_database_together_make_one_root(
    pg_url: str, tmp_path: Path
) -> None:
    from sqlalchemy import func, select

    from pilothouse.identity.tables import organizations
    from pilothouse.services import build_services
    from pilothouse.settings import Settings

    await _truncate(pg_url)
    replicas = [build_services(Settings(database_url=pg_url, data_dir=tmp_path)) for _ in range(4)]
    try:
        await asyncio.gather(*(r.start() for r in replicas))
        async with replicas[0].store.read() as conn:
            roots = await conn.scalar(select(func.count()).select_from(organizations))
        assert roots == 1
        made = [r.bootstrap_result.owner_token for r in replicas if r.bootstrap_result]
        assert sum(token is not None for token in made) == 1
    finally:
        await asyncio.gather(*(r.close() for r in replicas))
