"""The dashboard in a real browser: Debian's Chromium, driven by Playwright, against a real
server. A person signs in, reads the overview, drills from a team's spend into one session's
timeline, sees a waiting approval appear without reloading, approves it, and the agent that
was blocked on the API proceeds; then saves a broken policy and sees the problem beside the
draft, and revokes a key that the API then refuses.

Screenshots of each page are saved in the test's directory; with
``PILOTHOUSE_UPDATE_SCREENSHOTS=1`` they replace those in ``docs/screenshots``."""

from __future__ import annotations

import os
import shutil
import threading
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.servers import RunningServer, running_server
from tests.web.browser import PASSWORD
from tests.web.test_policy_and_keys import BROKEN
from tests.web.test_roles import ASKING

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
DOCS = Path(__file__).resolve().parents[2] / "docs" / "screenshots"

pytestmark = [
    pytest.mark.timeout(180),
    pytest.mark.skipif(
        CHROMIUM is None,
        reason="Chromium is not installed (.ci/run installs Debian's chromium)",
    ),
]


def owner(
    server: RunningServer, method: str, path: str, token: str | None = None, **kw: Any
) -> Any:
    reply = httpx.request(
        method,
        f"{server.url}{path}",
        headers={"authorization": f"Bearer {token or server.owner_token}"},
        timeout=30,
        **kw,
    )
    assert reply.is_success, reply.text
    return reply.json() if reply.content else None


@pytest.fixture
def server(tmp_path: Path) -> Iterator[RunningServer]:
    with running_server(tmp_path / "data", admin_password=PASSWORD) as running:
        yield running


@pytest.fixture
async def page(tmp_path: Path) -> AsyncIterator[Any]:
    from playwright.async_api import async_playwright

    async with async_playwright() as playwright:
        browser = await playwright.chromium.launch(executable_path=CHROMIUM, headless=True)
        context = await browser.new_context(viewport={"width": 1366, "height": 900})
        try:
            yield await context.new_page()
        finally:
            await context.close()
            await browser.close()


async def shot(page: Any, tmp_path: Path, name: str) -> None:
    """A full-page screenshot, kept with the test (and in docs/ when asked)."""
    path = tmp_path / f"{name}.png"
    await page.screenshot(path=str(path), full_page=True)
    if os.environ.get("PILOTHOUSE_UPDATE_SCREENSHOTS") == "1":
        DOCS.mkdir(parents=True, exist_ok=True)
        shutil.copy(path, DOCS / path.name)


async def test_sign_in_drill_into_a_session_and_approve_a_waiting_agent(
    server: RunningServer, page: Any, tmp_path: Path
) -> None:
    team = owner(server, "POST", "/api/v1/teams", json={"name": "platform"})
    dev = owner(server, "POST", "/api/v1/users", json={"email": "dev@example.com", "name": "Dev"})
    owner(server, "POST", f"/api/v1/teams/{team['id']}/members", json={"user_id": dev["id"]})
    opened = owner(  # the agent works for Dev: the owner may decide its approvals
        server,
        "POST",
        "/api/v1/sessions",
        json={
            "team_id": team["id"],
            "user_id": dev["id"],
            "project": "checkout",
            "repository": "acme/shop",
        },
    )
    session_id, agent_key = opened["session"]["id"], opened["key"]["token"]
    chat = {"model": "demo", "messages": [{"role": "user", "content": "plan the release"}]}
    owner(server, "POST", "/v1/chat/completions", agent_key, json=chat)
    owner(server, "PUT", "/api/v1/policy", json={"source": ASKING})

    # Sign in, read the overview.
    await page.goto(f"{server.url}/")
    assert "/login" in page.url
    await page.fill("input[name=email]", "owner@localhost")
    await page.fill("input[name=password]", PASSWORD)
    await page.click("button[type=submit]")
    await page.wait_for_selector("h1:has-text('Overview')")
    today = await page.inner_text("[data-spend=today]")
    assert today.startswith("$") and today != "$0.00"
    await shot(page, tmp_path, "overview")

    # From the team's spend to its sessions, to one session's timeline.
    await page.click(f"a[href='/sessions?team_id={team['id']}']")
    await page.wait_for_selector("h1:has-text('Sessions')")
    await shot(page, tmp_path, "sessions")
    await page.click(f"a[href='/sessions/{session_id}']")
    await page.wait_for_selector(f"h1:has-text('{session_id}')")
    assert await page.locator("td:text-is('LLM call')").count() == 1
    await shot(page, tmp_path, "session-timeline")

    # The approvals queue is open when the agent asks: the request appears without a reload.
    await page.click("nav a[href='/approvals']")
    await page.wait_for_selector("#nothing-waiting")
    answered: dict[str, Any] = {}

    def agent_asks() -> None:  # blocked on the API until a person decides
        body = {"channel": "shell", "action": {"command": "./deploy.sh prod"}, "wait": 30}
        answered.update(owner(server, "POST", "/api/v1/check", agent_key, json=body))

    agent = threading.Thread(target=agent_asks)
    agent.start()
    row = page.locator("tr[data-approval]")
    await row.wait_for(timeout=15_000)
    assert "deploys need a second pair of eyes" in await row.inner_text()
    await shot(page, tmp_path, "approvals")
    await row.locator("input[name=comment]").fill("release window is open")
    await row.locator("button:has-text('Approve')").click()
    await page.wait_for_selector("#nothing-waiting")
    agent.join(30)
    assert not agent.is_alive()
    assert answered["decision"] == "allow"
    history = await page.inner_text("main")
    assert "release window is open" in history

    # The session's timeline now holds the check and the approval.
    await page.goto(f"{server.url}/sessions/{session_id}")
    timeline = await page.inner_text("table.timeline")
    assert "approved" in timeline and "./deploy.sh prod" in timeline

    # The audit log, verified.
    await page.goto(f"{server.url}/audit?verify=1")
    assert await page.locator("[data-chain=ok]").count() == 1
    await shot(page, tmp_path, "audit")

    # A broken policy: the problem is shown beside the draft, which is kept as typed.
    await page.click("nav a[href='/policy']")
    await page.fill("textarea[name=source]", BROKEN)
    await page.click("button[value=save]")
    problems = await page.wait_for_selector("#problems")
    assert problems is not None and "line" in await problems.inner_text()
    assert await page.input_value("textarea[name=source]") == BROKEN
    assert owner(server, "GET", "/api/v1/policy")["source"] == ASKING  # nothing stored
    await shot(page, tmp_path, "policy")

    # A key revoked on the page is refused by the API at once.
    made = owner(server, "POST", "/api/v1/keys", json={"name": "ci bot"})
    await page.click("nav a[href='/keys']")
    await page.locator(f"tr[data-key='{made['id']}'] button:has-text('Revoke')").click()
    await page.locator(f"tr[data-key='{made['id']}']").wait_for(state="detached")
    async with httpx.AsyncClient() as http:
        refused = await http.get(
            f"{server.url}/api/v1/whoami", headers={"authorization": f"Bearer {made['token']}"}
        )
    assert refused.status_code == 401
    await shot(page, tmp_path, "keys")
