"""The policy page (validate, simulate against history, store with policy:write, problems
shown beside the draft, history and diffs) and the keys page (a new key's token shown once, a
revoked key refused at once), each authorized as the API is."""

from __future__ import annotations

import httpx

from tests.conftest import Api, bearer
from tests.web.browser import Browser, csrf_of, person

GOOD = """\
default: allow
rules:
  - id: no-prod-deploys
    channel: shell
    match: {program: ./deploy.sh}
    decision: deny
    reason: not from an agent
"""
BROKEN = """\
default: allow
rules:
  - id: no-prod-deploys
    channel: shell
    decision: perhaps
"""


async def test_a_broken_draft_shows_its_problems_in_place_and_stores_nothing(
    api: Api, client: httpx.AsyncClient
) -> None:
    _, email, _ = await person(api, "security")
    async with Browser(client) as browser:
        await browser.sign_in(email)
        shown = await browser.get("/policy")
        token = csrf_of(shown.text)
        refused = await browser.http.post(
            "/policy", data={"csrf": token, "source": BROKEN, "intent": "save"}
        )
        assert refused.status_code == 422
        assert 'id="problems"' in refused.text and "line " in refused.text
        assert "decision: perhaps" in refused.text  # the draft kept as typed
        assert (await api.ok("GET", "/api/v1/policy"))["version"] == 0
        stored = await browser.http.post(
            "/policy",
            data={"csrf": token, "source": GOOD, "intent": "save", "comment": "no deploys"},
        )
        assert stored.status_code == 303 and stored.headers["location"] == "/policy?diff=1"
        diff = await browser.get("/policy?diff=1")
    assert '<span class="add">+  - id: no-prod-deploys</span>' in diff.text
    active = await api.ok("GET", "/api/v1/policy")
    assert active["version"] == 1 and active["comment"] == "no deploys"


async def test_simulation_replays_recorded_checks_through_the_draft(
    api: Api, client: httpx.AsyncClient
) -> None:
    opened = await api.session()
    body = {"channel": "shell", "action": {"command": "./deploy.sh prod"}}
    assert (await api.ok("POST", "/api/v1/check", opened["key"]["token"], json=body))[
        "decision"
    ] == "allow"
    _, email, _ = await person(api, "auditor")  # reads the policy, may simulate, may not store
    async with Browser(client) as browser:
        await browser.sign_in(email)
        shown = await browser.get("/policy")
        assert "Save as a new version" not in shown.text and "readonly" in shown.text
        token = csrf_of(shown.text)
        simulated = await browser.http.post(
            "/policy", data={"csrf": token, "source": GOOD, "intent": "simulate"}
        )
        assert simulated.status_code == 200 and 'id="simulation"' in simulated.text
        assert "<strong>1</strong> would be decided otherwise" in simulated.text
        saved = await browser.http.post(
            "/policy", data={"csrf": token, "source": GOOD, "intent": "save"}
        )
    assert saved.status_code == 403 and "policy:write" in saved.text
    assert (await api.ok("GET", "/api/v1/policy"))["version"] == 0


async def test_a_key_made_on_the_page_is_shown_once_and_a_revoked_one_is_refused(
    api: Api, client: httpx.AsyncClient
) -> None:
    _, email, _ = await person(api, "member")
    async with Browser(client) as browser:
        await browser.sign_in(email)
        made = await browser.post_form("/keys", "/keys", name="laptop")
        assert made.status_code == 200 and 'id="created-key"' in made.text
        token = made.text.split('<code class="token">')[1].split("<")[0]
        assert (await client.get("/api/v1/whoami", headers=bearer(token))).status_code == 200
        listed = await browser.get("/keys")
        assert token not in listed.text  # shown once, never again
        key_id = listed.text.split('data-key="')[1].split('"')[0]
        revoked = await browser.post_form("/keys", f"/keys/{key_id}/revoke")
        assert revoked.status_code == 303
    refused = await client.get("/api/v1/whoami", headers=bearer(token))
    assert refused.status_code == 401


async def test_an_admin_adds_people_and_teams_and_an_auditor_only_looks(
    api: Api, client: httpx.AsyncClient
) -> None:
    _, admin, _ = await person(api, "admin")
    async with Browser(client) as browser:
        await browser.sign_in(admin)
        added = await browser.post_form(
            "/people", "/people/users", email="new@example.com", name="New Person", role="member"
        )
        assert added.status_code == 303
        again = await browser.post_form(
            "/people", "/people/users", email="new@example.com", role="member"
        )
        assert again.status_code == 409 and "already exists" in again.text
        (made,) = [
            u
            for u in (await api.ok("GET", "/api/v1/users"))["data"]
            if u["email"] == "new@example.com"
        ]
        promoted = await browser.post_form(
            "/people", f"/people/users/{made['id']}", role="finance", change="role"
        )
        assert promoted.status_code == 303
        team = await browser.post_form("/people", "/people/teams", name="checkout")
        assert team.status_code == 303
        (checkout,) = (await api.ok("GET", "/api/v1/teams"))["data"]
        joined = await browser.post_form(
            "/people", f"/people/teams/{checkout['id']}/members", user_id=made["id"]
        )
        assert joined.status_code == 303
        disabled = await browser.post_form(
            "/people", f"/people/users/{made['id']}", role="finance", change="disable"
        )
        assert disabled.status_code == 303
    after = await api.ok("GET", f"/api/v1/users/{made['id']}")
    assert after["role"] == "finance" and after["disabled"] is True
    assert after["team_ids"] == [checkout["id"]]
    _, auditor, _ = await person(api, "auditor")
    async with Browser(client) as browser:
        await browser.sign_in(auditor)
        shown = await browser.get("/people")
        assert shown.status_code == 200 and "Add a person" not in shown.text
        tried = await browser.post_form("/people", "/people/teams", name="sneaky")
        assert tried.status_code == 403
