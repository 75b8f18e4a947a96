"""`pilothouse serve` and `pilothouse demo` as a user runs them: real processes, real HTTP."""

from __future__ import annotations

import asyncio
import re
from pathlib import Path

import httpx

from pilothouse.demo import seed_demo
from pilothouse.services import build_services
from pilothouse.settings import Settings
from tests.conftest import bearer
from tests.servers import pilothouse_process

KEY_RE = re.compile(r"phk_[0-9A-Za-z]{12}_[0-9A-Za-z]{40}")


def test_first_start_prints_an_owner_key_once_and_it_keeps_working(tmp_path: Path) -> None:
    with pilothouse_process(["serve"], tmp_path) as (url, log):
        keys = KEY_RE.findall(log.read_text())
        assert len(keys) == 1
        me = httpx.get(f"{url}/api/v1/whoami", headers=bearer(keys[0])).json()
        assert me["role"] == "owner"
    assert (tmp_path / ".pilothouse" / "pilothouse.db").exists()
    with pilothouse_process(["serve"], tmp_path) as (url, log):
        assert KEY_RE.findall(log.read_text()) == []
        assert httpx.get(f"{url}/api/v1/whoami", headers=bearer(keys[0])).status_code == 200


def test_serve_reads_a_config_file(tmp_path: Path) -> None:
    config = tmp_path / "pilothouse.yaml"
    config.write_text(f"data_dir: {tmp_path / 'elsewhere'}\nmax_body_bytes: 2048\n")
    with pilothouse_process(["serve", "--config", str(config)], tmp_path) as (url, log):
        key = KEY_RE.findall(log.read_text())[0]
        big = httpx.post(f"{url}/api/v1/teams", headers=bearer(key), json={"name": "x" * 4000})
        assert big.status_code == 413
    assert (tmp_path / "elsewhere" / "pilothouse.db").exists()


def test_demo_seeds_a_living_organization_once(tmp_path: Path) -> None:
    settings = Settings(data_dir=tmp_path / "demo")
    token = seed_demo(settings)
    assert seed_demo(settings) == token

    async def counts() -> dict[str, int]:
        from pilothouse.app import build_app

        svc = build_services(settings)
        await svc.start()
        app = build_app(settings, services=svc)
        try:
            transport = httpx.ASGITransport(app=app)
            async with httpx.AsyncClient(transport=transport, base_url="http://t") as c:
                result = {}
                for name in ("teams", "users", "sessions"):
                    page = (await c.get(f"/api/v1/{name}", headers=bearer(token))).json()
                    result[name] = len(page["data"])
                ended = await c.get(
                    "/api/v1/sessions", params={"status": "ended"}, headers=bearer(token)
                )
                result["ended"] = len(ended.json()["data"])
                return result
        finally:
            await svc.close()

    seeded = asyncio.run(counts())
    assert seeded["teams"] == 3
    assert seeded["users"] == 7
    assert seeded["sessions"] == 5
    assert 0 < seeded["ended"] < seeded["sessions"]


def test_the_demo_command_serves_the_seeded_store(tmp_path: Path) -> None:
    with pilothouse_process(["demo", "--data-dir", str(tmp_path / "d")], tmp_path) as (url, log):
        key = KEY_RE.findall(log.read_text())[0]
        sessions = httpx.get(f"{url}/api/v1/sessions", headers=bearer(key)).json()
        assert len(sessions["data"]) == 5
