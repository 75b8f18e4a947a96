"""`pilothouse serve` and `pilothouse demo` as a user runs them: real processes, real HTTP."""

from __future__ import annotations

import asyncio
import contextlib
import http.client
import re
import time
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


def _healthz_again(conn: http.client.HTTPConnection) -> int | None:
    """GET /healthz on ``conn``'s open connection: the status, or None if the server closed it
    (``http.client`` never reconnects a connection the server closed)."""
    try:
        conn.request("GET", "/healthz")
        reply = conn.getresponse()
        reply.read()
        return reply.status
    except (http.client.RemoteDisconnected, ConnectionResetError, BrokenPipeError):
        return None


def test_idle_connections_outlive_the_clients_own_expiry_and_the_setting_is_honoured(
    tmp_path: Path,
) -> None:
    """httpx (and so the OpenAI and Anthropic SDKs) drops an idle connection after 5 s. A server
    that closed its end at 5 s too raced the client's next request ("Server disconnected without
    sending a response"); by default it keeps the connection well past that."""
    short = tmp_path / "short.yaml"
    short.write_text(f"data_dir: {tmp_path / 'short'}\nkeep_alive_seconds: 1\n")
    with contextlib.ExitStack() as stack:
        conns = []
        for args in (["--data-dir", str(tmp_path / "d")], ["--config", str(short)]):
            url, _ = stack.enter_context(pilothouse_process(["serve", *args], tmp_path))
            conn = http.client.HTTPConnection(url.removeprefix("http://"), timeout=5)
            stack.callback(conn.close)
            assert _healthz_again(conn) == 200
            conns.append(conn)
        time.sleep(6)  # past the client's 5 s expiry (and the server's old default)
        kept, closed = conns
        assert _healthz_again(kept) == 200
        assert _healthz_again(closed) is None


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
                spend = (await c.get("/api/v1/spend", headers=bearer(token))).json()
                result["calls"] = spend["totals"]["calls"]
                waiting = await c.get(
                    "/api/v1/approvals", params={"status": "pending"}, headers=bearer(token)
                )
                result["waiting"] = len(waiting.json()["data"])
                budgets = (await c.get("/api/v1/budgets", headers=bearer(token))).json()
                burns.extend(float(b["current"]["used_percent"]) for b in budgets["data"])
                return result
        finally:
            await svc.close()

    burns: list[float] = []
    seeded = asyncio.run(counts())
    assert seeded["teams"] == 3
    assert seeded["users"] == 7
    assert seeded["sessions"] == 5
    assert 0 < seeded["ended"] < seeded["sessions"]
    # The dashboard has something to show: calls, approvals waiting, budgets burning.
    assert seeded["calls"] > 10 and seeded["waiting"] == 2
    burns.sort()
    assert len(burns) == 3 and burns[0] < 50 and 80 <= burns[1] < 100 and burns[2] >= 100


def test_the_demo_command_serves_the_seeded_store(tmp_path: Path) -> None:
    with pilothouse_process(["demo", "--data-dir", str(tmp_path / "d")], tmp_path) as (url, log):
        key = KEY_RE.findall(log.read_text())[0]
        sessions = httpx.get(f"{url}/api/v1/sessions", headers=bearer(key)).json()
        assert len(sessions["data"]) == 5
        assert "pilothouse-demo" in log.read_text()  # the dashboard's password, printed
        with httpx.Client(base_url=url, headers={"accept": "text/html"}) as browser:
            form = browser.get("/login").text
            csrf = form.split('name="csrf" value="')[1].split('"')[0]
            body = {"csrf": csrf, "email": "owner@localhost", "password": "pilothouse-demo"}
            assert browser.post("/login", data=body).status_code == 303
            overview = browser.get("/")
        assert overview.status_code == 200 and "Approvals waiting" in overview.text
