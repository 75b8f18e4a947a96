"""Signing in to the dashboard: passwords (Argon2id), the session cookie's flags, CSRF on every
form, signing out, throttled guessing, and sessions that end when the person changes."""

from __future__ import annotations

from typing import Any

import httpx
import pytest
from sqlalchemy import select

from pilothouse.identity.tables import users
from pilothouse.services import Services
from pilothouse.settings import Settings
from pilothouse.web.auth import COOKIE, FAILURES_ALLOWED
from pilothouse.web.tables import web_sessions
from tests.conftest import Api, MutableClock, another_replica
from tests.web.browser import PASSWORD, Browser, csrf_of, person


async def events(api: Api, action: str) -> list[dict[str, Any]]:
    return list((await api.ok("GET", f"/api/v1/audit/events?action={action}"))["data"])


async def test_a_right_password_signs_in_with_an_http_only_same_site_cookie(
    api: Api, client: httpx.AsyncClient
) -> None:
    _, email, _ = await person(api, "finance")
    async with Browser(client) as browser:
        refused = await browser.sign_in(email, "not the password at all")
        assert refused.status_code == 401 and "wrong" in refused.text
        assert COOKIE not in browser.http.cookies
        signed = await browser.sign_in(email, next="/sessions")
        assert signed.status_code == 303 and signed.headers["location"] == "/sessions"
        cookie = next(v for v in signed.headers.get_list("set-cookie") if v.startswith(COOKIE))
        flags = {part.strip().lower() for part in cookie.split(";")[1:]}
        assert {"httponly", "samesite=lax", "path=/"} <= flags
        assert "secure" not in flags  # plain http here: a Secure cookie would never come back
        overview = await browser.get("/")
        assert overview.status_code == 200 and "<h1>Overview</h1>" in overview.text
    (failed,) = await events(api, "auth.failed")
    assert failed["details"]["method"] == "password"
    assert "not the password at all" not in str(failed)  # what was tried is never recorded
    assert len(await events(api, "auth.signed_in")) == 1


async def test_behind_tls_the_cookie_is_secure(api: Api, services: Services) -> None:
    _, email, _ = await person(api, "finance")
    from pilothouse.app import build_app

    app = build_app(services.settings, services=services)
    transport = httpx.ASGITransport(app=app)
    async with (
        httpx.AsyncClient(transport=transport, base_url="https://pilothouse.test") as tls,
        Browser(tls) as browser,
    ):
        signed = await browser.sign_in(email)
    cookie = next(v for v in signed.headers.get_list("set-cookie") if v.startswith(COOKIE))
    assert "secure" in {part.strip().lower() for part in cookie.split(";")}


async def test_a_form_without_the_sessions_csrf_token_changes_nothing(
    api: Api, client: httpx.AsyncClient
) -> None:
    _, email, _ = await person(api, "security")
    async with Browser(client) as browser:
        await browser.sign_in(email)
        missing = await browser.http.post("/logout", data={})
        wrong = await browser.http.post("/logout", data={"csrf": "forged-token"})
        assert missing.status_code == wrong.status_code == 403
        assert "CSRF" in missing.text
        still = await browser.get("/")
        assert still.status_code == 200  # still signed in: the forged sign-out did nothing
        foreign = await browser.http.post(
            "/logout",
            data={"csrf": csrf_of(still.text)},
            headers={"origin": "https://attacker.example"},
        )
        assert foreign.status_code == 403
        assert (await browser.get("/")).status_code == 200
        # The sign-in form's own token (a double-submit cookie) must match too.
        stale = await browser.http.post(
            "/login", data={"csrf": "made-up", "email": email, "password": PASSWORD}
        )
        assert stale.status_code == 403


async def test_signing_out_ends_the_session_on_the_server(
    api: Api, client: httpx.AsyncClient
) -> None:
    _, email, _ = await person(api, "auditor")
    async with Browser(client) as browser:
        await browser.sign_in(email)
        copied = browser.http.cookies[COOKIE]
        out = await browser.post_form("/", "/logout")
        assert out.status_code == 303 and out.headers["location"] == "/login"
    async with Browser(client) as thief:
        thief.http.cookies.set(COOKIE, copied)
        again = await thief.get("/sessions")
        assert again.status_code == 303 and again.headers["location"].startswith("/login")


@pytest.mark.parametrize(
    "target", ["https://evil.example/", "//evil.example/x", "/\\evil.example", "javascript:1"]
)
async def test_after_signing_in_a_person_never_lands_on_another_site(
    api: Api, client: httpx.AsyncClient, target: str
) -> None:
    _, email, _ = await person(api, "finance")
    async with Browser(client) as browser:
        signed = await browser.sign_in(email, next=target)
    assert signed.headers["location"] == "/"


async def test_guessing_is_refused_after_ten_failures_even_with_the_right_password(
    api: Api, client: httpx.AsyncClient
) -> None:
    _, email, _ = await person(api, "member")
    async with Browser(client) as browser:
        for _ in range(FAILURES_ALLOWED):
            assert (await browser.sign_in(email, "wrong password!!")).status_code == 401
        blocked = await browser.sign_in(email)
        assert blocked.status_code == 429 and "too many" in blocked.text


async def test_guesses_spread_over_replicas_are_counted_together_and_age_out(
    api: Api, client: httpx.AsyncClient, settings: Settings, clock: MutableClock
) -> None:
    """The failures are counted from the audit log: a second replica on the same store refuses
    the eleventh guess too, and both let the person in once the window has passed."""
    _, email, _ = await person(api, "member")
    async with (
        another_replica(settings, clock) as (_, second),
        Browser(client) as one,
        Browser(second) as two,
    ):
        for i in range(FAILURES_ALLOWED):
            browser = (one, two)[i % 2]
            assert (await browser.sign_in(email, "wrong password!!")).status_code == 401
        for browser in (one, two):
            blocked = await browser.sign_in(email)
            assert blocked.status_code == 429 and "try again in 900 s" in blocked.text
        clock.advance(minutes=10)
        assert "try again in 300 s" in (await two.sign_in(email)).text
        clock.advance(minutes=5, seconds=1)
        assert (await two.sign_in(email)).status_code == 303


async def test_signing_in_forgives_the_failures_before_it(
    api: Api, client: httpx.AsyncClient
) -> None:
    _, email, _ = await person(api, "member")
    async with Browser(client) as browser:
        for _ in range(FAILURES_ALLOWED - 1):
            assert (await browser.sign_in(email, "wrong password!!")).status_code == 401
        assert (await browser.sign_in(email)).status_code == 303
        for _ in range(FAILURES_ALLOWED - 1):
            assert (await browser.sign_in(email, "wrong password!!")).status_code == 401
        assert (await browser.sign_in(email)).status_code == 303


async def test_disabling_a_person_or_setting_their_password_ends_their_sessions(
    api: Api, client: httpx.AsyncClient
) -> None:
    user_id, email, _ = await person(api, "auditor")
    async with Browser(client) as browser:
        await browser.sign_in(email)
        assert (await browser.get("/audit")).status_code == 200
        await api.ok(
            "POST", f"/api/v1/users/{user_id}/password", json={"password": "another long password"}
        )
        assert (await browser.get("/audit")).status_code == 303
        await browser.sign_in(email, "another long password")
        assert (await browser.get("/audit")).status_code == 200
        await api.ok("PATCH", f"/api/v1/users/{user_id}", json={"disabled": True})
        assert (await browser.get("/audit")).status_code == 303


async def test_ended_and_expired_sessions_are_deleted_and_live_ones_kept(
    api: Api, client: httpx.AsyncClient, services: Services, clock: MutableClock
) -> None:
    _, email, _ = await person(api, "auditor")
    async with Browser(client) as left, Browser(client) as stays, Browser(client) as old:
        await old.sign_in(email)
        clock.advance(hours=services.settings.web_session_hours / 2)
        for browser in (left, stays):
            await browser.sign_in(email)
        await left.post_form("/", "/logout")
        clock.advance(hours=services.settings.web_session_hours / 2)  # ``old`` has expired
        assert services.web is not None
        assert await services.web.forget_ended() == 2
        async with services.store.read() as conn:
            kept = (await conn.execute(select(web_sessions.c.ended_at))).all()
        assert kept == [(None,)]
        assert (await stays.get("/audit")).status_code == 200
        for browser in (left, old):
            assert (await browser.get("/audit")).status_code == 303
        assert await services.web.forget_ended() == 0


async def test_passwords_are_set_by_their_owner_or_users_write_and_never_shown(
    api: Api, services: Services
) -> None:
    member_id, _, member_key = await person(api, "member")
    admin_id, _, admin_key = await person(api, "admin")
    owner = (await api.ok("GET", "/api/v1/whoami"))["user_id"]
    short = await api.call(
        "POST", f"/api/v1/users/{member_id}/password", member_key, json={"password": "short"}
    )
    assert short.status_code == 400 and short.json()["error"]["code"] == "weak_password"
    own = {"password": "my own long password"}
    assert (
        await api.call("POST", f"/api/v1/users/{member_id}/password", member_key, json=own)
    ).status_code == 204
    other = await api.call("POST", f"/api/v1/users/{admin_id}/password", member_key, json=own)
    assert other.status_code == 403
    # A password signs in as its person: an admin may not set an owner's.
    takeover = await api.call("POST", f"/api/v1/users/{owner}/password", admin_key, json=own)
    assert takeover.status_code == 403
    shown = await api.ok("GET", f"/api/v1/users/{member_id}")
    assert "password" not in str(shown)
    async with services.store.read() as conn:
        stored = await conn.scalar(select(users.c.password_hash).where(users.c.id == member_id))
    assert stored is not None and stored.startswith("$argon2id$") and "my own" not in stored
    audited = await events(api, "user.password_set")
    assert audited and all("password" not in str(e["details"]) for e in audited)


async def test_a_bad_parameter_is_a_page_that_names_it(api: Api, client: httpx.AsyncClient) -> None:
    _, email, _ = await person(api, "security")
    async with Browser(client) as browser:
        await browser.sign_in(email)
        bad = await browser.get("/policy?diff=0")
    assert bad.status_code == 422 and "text/html" in bad.headers["content-type"]
    assert "diff" in bad.text


async def test_a_nul_in_an_address_or_a_form_is_refused_and_changes_nothing(
    api: Api, client: httpx.AsyncClient
) -> None:
    _, email, _ = await person(api, "security")
    async with Browser(client) as browser:
        sneaky = await browser.sign_in(email + "\x00")
        assert sneaky.status_code == 422 and COOKIE not in browser.http.cookies
        await browser.sign_in(email)
        for path in (
            "/sessions?project=a%00b",
            "/spend?team_id=x%00",
            "/audit?action=a%00",
            "/sessions/ses_%00",
        ):
            assert (await browser.get(path)).status_code == 400, path
        decided = await browser.post_form("/approvals", "/approvals/apr_%00/approve")
        assert decided.status_code == 400
        policy = await browser.get("/policy")
        stored = await browser.http.post(
            "/policy",
            data={"csrf": csrf_of(policy.text), "source": "default: allow\x00", "intent": "save"},
        )
        assert stored.status_code == 422
    assert (await api.ok("GET", "/api/v1/policy"))["version"] == 0
