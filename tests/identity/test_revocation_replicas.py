"""Two server processes on one PostgreSQL: a key revoked through one is refused by the other
within two seconds, although the other holds it in its cache with a one-hour lifetime."""

from __future__ import annotations

import asyncio
import os
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from pilothouse.identity.tokens import KeyKind, issue
from tests.conftest import _truncate, bearer

REVOCATION_BOUND_SECONDS = 2.0


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _wait_healthy(url: str, process: subprocess.Popen[bytes], deadline_s: float = 30) -> None:
    deadline = time.monotonic() + deadline_s
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"server exited early with {process.returncode}")
        try:
            if httpx.get(f"{url}/readyz", timeout=1).status_code == 200:
                return
        except httpx.TransportError:
            pass
        time.sleep(0.1)
    raise TimeoutError(f"{url} did not become ready")


@pytest.fixture
def two_replicas(pg_url: str, tmp_path: Path) -> Iterator[tuple[str, str, str]]:
    """Two `pilothouse serve` processes sharing the test PostgreSQL: (url A, url B, owner key)."""
    asyncio.run(_truncate(pg_url))
    admin_key = issue(KeyKind.USER).token
    env = {
        **os.environ,
        "PILOTHOUSE_DATABASE_URL": pg_url,
        "PILOTHOUSE_ADMIN_KEY": admin_key,
        "PILOTHOUSE_KEY_CACHE_TTL_SECONDS": "3600",
        "PILOTHOUSE_LOG_LEVEL": "warning",
    }
    processes: list[subprocess.Popen[bytes]] = []
    urls = []
    try:
        for name in ("a", "b"):
            port = _free_port()
            log = (tmp_path / f"{name}.log").open("wb")
            processes.append(
                subprocess.Popen(
                    [sys.executable, "-m", "pilothouse", "serve", "--port", str(port)],
                    env=env,
                    cwd=tmp_path,
                    stdout=log,
                    stderr=subprocess.STDOUT,
                )
            )
            log.close()
            urls.append(f"http://127.0.0.1:{port}")
            # Start one at a time: the first migrates and bootstraps, the second finds it done.
            _wait_healthy(urls[-1], processes[-1])
        yield urls[0], urls[1], admin_key
    finally:
        for process in processes:
            process.terminate()
        for process in processes:
            try:
                process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait(timeout=5)


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
