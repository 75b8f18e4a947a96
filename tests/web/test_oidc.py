"""Single sign-on with a local OpenID Connect issuer that holds its own keys: a good ID token
signs its person in; one with a bad signature, another audience, an expiry in the past or
another sign-in's nonce is refused (audited), as is a callback whose state is not this
browser's, and a person the organization does not have unless oidc.create_role is set."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from urllib.parse import urlsplit

import httpx
import pytest
from pydantic import SecretStr

from pilothouse.identity.roles import Role
from pilothouse.secrets.crypto import generate
from pilothouse.services import Services
from pilothouse.settings import Settings
from pilothouse.web.auth import COOKIE
from pilothouse.web.config import OidcConfig
from pilothouse.web.oidc import Oidc
from tests.conftest import Api, MutableClock, another_replica
from tests.web.browser import Browser, person
from tests.web.issuer import CLIENT_ID, CLIENT_SECRET, Issuer, running_issuer


@pytest.fixture
def issuer() -> Iterator[Issuer]:
    with running_issuer() as running:
        yield running


@pytest.fixture
def settings(database_url: str, tmp_path: Path, issuer: Issuer) -> Settings:
    oidc = OidcConfig(issuer=issuer.url, client_id=CLIENT_ID, client_secret=CLIENT_SECRET)
    return Settings(database_url=database_url, data_dir=tmp_path / "data", oidc=oidc)


async def sso(browser: Browser, state: str | None = None) -> httpx.Response:
    """Sign in through the issuer, following its redirects as a browser would."""
    leaving = await browser.http.get("/login/oidc?next=/sessions")
    assert leaving.status_code == 303
    async with httpx.AsyncClient() as outside:
        consent = await outside.get(leaving.headers["location"])
    back = urlsplit(consent.headers["location"])
    query = back.query
    if state is not None:
        query = "&".join(
            p if not p.startswith("state=") else f"state={state}" for p in query.split("&")
        )
    return await browser.http.get(f"{back.path}?{query}")


async def test_a_good_id_token_signs_its_person_in(
    api: Api, client: httpx.AsyncClient, issuer: Issuer
) -> None:
    _, email, _ = await person(api, "auditor")
    issuer.email = email
    async with Browser(client) as browser:
        form = await browser.get("/login")
        assert 'href="/login/oidc' in form.text
        back = await sso(browser)
        assert back.status_code == 303 and back.headers["location"] == "/sessions"
        assert COOKIE in browser.http.cookies
        assert (await browser.get("/audit")).status_code == 200
    signed = await api.ok("GET", "/api/v1/audit/events?action=auth.signed_in")
    assert signed["data"][0]["details"]["method"] == "oidc"


@pytest.mark.parametrize(
    ("mode", "reason"),
    [
        ("bad_signature", "signature"),
        ("wrong_audience", "another client"),
        ("expired", "expired"),
        ("wrong_nonce", "nonce"),
    ],
)
async def test_an_id_token_that_is_not_right_is_refused(
    api: Api, client: httpx.AsyncClient, issuer: Issuer, mode: str, reason: str
) -> None:
    _, email, _ = await person(api, "auditor")
    issuer.email, issuer.mode = email, mode
    async with Browser(client) as browser:
        back = await sso(browser)
        assert back.status_code == 401 and reason in back.text
        assert COOKIE not in browser.http.cookies
        assert (await browser.get("/audit")).status_code == 303  # still signed out
    failed = await api.ok("GET", "/api/v1/audit/events?action=auth.failed")
    assert failed["data"][0]["details"]["method"] == "oidc"
    assert reason in failed["data"][0]["details"]["reason"]


async def test_a_callback_that_did_not_start_in_this_browser_is_refused(
    api: Api, client: httpx.AsyncClient, issuer: Issuer
) -> None:
    _, email, _ = await person(api, "auditor")
    issuer.email = email
    async with Browser(client) as browser:
        forged = await sso(browser, state="an-attackers-state")
    assert forged.status_code == 401 and "did not start here" in forged.text


async def test_an_unknown_person_is_refused_unless_creating_is_configured(
    api: Api, client: httpx.AsyncClient, issuer: Issuer, settings: Settings
) -> None:
    issuer.email = "newcomer@example.com"
    async with Browser(client) as browser:
        refused = await sso(browser)
    assert refused.status_code == 401 and "not a person of this organization" in refused.text
    users = await api.ok("GET", "/api/v1/users")
    assert "newcomer@example.com" not in {u["email"] for u in users["data"]}


async def test_with_create_role_a_new_person_is_made_with_that_role(
    api: Api, client: httpx.AsyncClient, issuer: Issuer, services: Services
) -> None:
    assert services.oidc is not None
    config = services.oidc.config.model_copy(update={"create_role": Role.MEMBER})
    services.oidc = Oidc(config)
    issuer.email = "newcomer@example.com"
    async with Browser(client) as browser:
        back = await sso(browser)
        assert back.status_code == 303
        assert (await browser.get("/sessions")).status_code == 200
        assert (await browser.get("/audit")).status_code == 403  # a member
    users = await api.ok("GET", "/api/v1/users")
    (made,) = [u for u in users["data"] if u["email"] == "newcomer@example.com"]
    assert made["role"] == "member"


async def test_a_sign_in_begun_before_a_key_rotation_ends_on_a_rotated_replica(
    api: Api,
    client: httpx.AsyncClient,
    issuer: Issuer,
    settings: Settings,
    clock: MutableClock,
) -> None:
    """The flow cookie is signed with the current master key's derived key and checked with
    every held key's: a replica already given the new key (and still holding the old) ends a
    sign-in another replica began."""
    _, email, _ = await person(api, "auditor")
    issuer.email = email
    old = settings.resolved_master_key_file().read_text().strip()
    rotated = settings.model_copy(update={"master_key": SecretStr(f"{generate('k2')},{old}")})
    async with (
        another_replica(rotated, clock) as (_, second),
        Browser(client) as began,
        Browser(second) as ends,
    ):
        leaving = await began.http.get("/login/oidc?next=/sessions")
        async with httpx.AsyncClient() as outside:
            consent = await outside.get(leaving.headers["location"])
        back = urlsplit(consent.headers["location"])
        ends.http.cookies.update(began.http.cookies)
        done = await ends.http.get(f"{back.path}?{back.query}")
        assert done.status_code == 303 and done.headers["location"] == "/sessions"
        assert (await ends.get("/audit")).status_code == 200
