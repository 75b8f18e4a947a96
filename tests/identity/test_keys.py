"""API keys: shown once, stored hashed, expiring, revocable at once, declared-session headers."""

from __future__ import annotations

import hashlib

from sqlalchemy import select

from pilothouse.identity.tables import api_keys
from pilothouse.services import Services
from tests.conftest import Api, MutableClock, bearer


async def test_a_key_is_stored_hashed_and_its_token_is_shown_only_at_creation(
    api: Api, services: Services
) -> None:
    created = await api.ok("POST", "/api/v1/keys", json={"name": "laptop"})
    token = created["token"]
    assert token.startswith(created["prefix"] + "_")
    shown = await api.ok("GET", f"/api/v1/keys/{created['id']}")
    assert "token" not in shown
    listed = await api.ok("GET", "/api/v1/keys")
    assert all("token" not in k for k in listed["data"])
    async with services.store.read() as conn:
        row = (await conn.execute(select(api_keys).where(api_keys.c.id == created["id"]))).one()
    secret = token.rsplit("_", 1)[1]
    assert secret not in "".join(str(v) for v in row)
    lookup = created["prefix"].split("_", 1)[1]
    assert row.secret_hash == hashlib.sha256(f"{lookup}:{secret}".encode()).hexdigest()


async def test_a_revoked_key_is_refused_on_the_next_request(api: Api) -> None:
    created = await api.ok("POST", "/api/v1/keys", json={})
    assert (await api.call("GET", "/api/v1/whoami", created["token"])).status_code == 200
    await api.ok("POST", f"/api/v1/keys/{created['id']}/revoke")
    refused = await api.call("GET", "/api/v1/whoami", created["token"])
    assert refused.status_code == 401
    assert refused.json()["error"]["code"] == "key_revoked"


async def test_an_expired_key_is_refused(api: Api, clock: MutableClock) -> None:
    created = await api.ok("POST", "/api/v1/keys", json={"expires_in_seconds": 60})
    assert (await api.call("GET", "/api/v1/whoami", created["token"])).status_code == 200
    clock.advance(seconds=61)
    refused = await api.call("GET", "/api/v1/whoami", created["token"])
    assert refused.status_code == 401
    assert refused.json()["error"]["code"] == "key_expired"


async def test_disabling_a_user_refuses_their_keys_at_once(api: Api) -> None:
    user_id, token = await api.user_with_key("member")
    assert (await api.call("GET", "/api/v1/whoami", token)).status_code == 200
    await api.ok("PATCH", f"/api/v1/users/{user_id}", json={"disabled": True})
    refused = await api.call("GET", "/api/v1/whoami", token)
    assert refused.status_code == 401
    assert "disabled" in refused.json()["error"]["message"]


async def test_a_role_change_applies_to_cached_keys_at_once(api: Api) -> None:
    user_id, token = await api.user_with_key("member")
    assert (await api.call("GET", "/api/v1/audit/events", token)).status_code == 403
    await api.ok("PATCH", f"/api/v1/users/{user_id}", json={"role": "auditor"})
    assert (await api.call("GET", "/api/v1/audit/events", token)).status_code == 200


async def test_the_same_key_works_as_bearer_and_as_x_api_key(api: Api) -> None:
    by_bearer = await api.client.get("/api/v1/whoami", headers=bearer(api.owner))
    by_header = await api.client.get("/api/v1/whoami", headers={"x-api-key": api.owner})
    assert by_bearer.json() == by_header.json()


async def test_last_used_is_recorded_without_a_write_per_request(
    api: Api, services: Services
) -> None:
    created = await api.ok("POST", "/api/v1/keys", json={})
    await api.call("GET", "/api/v1/whoami", created["token"])
    assert (await api.ok("GET", f"/api/v1/keys/{created['id']}"))["last_used_at"] is None
    assert await services.last_used.flush(services.store) >= 1
    assert (await api.ok("GET", f"/api/v1/keys/{created['id']}"))["last_used_at"] is not None


async def test_admin_key_from_settings_is_installed_once(services: Services) -> None:
    from pilothouse.identity.bootstrap import bootstrap
    from pilothouse.identity.tokens import KeyKind, issue

    token = issue(KeyKind.USER).token
    for _ in range(2):
        async with services.store.write() as conn:
            await bootstrap(conn, services.clock, org_name="default", admin_key=token)
    principal = await services.authenticator.authenticate({"authorization": f"Bearer {token}"})
    assert principal.role is not None and principal.role.value == "owner"
    async with services.store.read() as conn:
        rows = (
            await conn.execute(
                select(api_keys.c.id).where(api_keys.c.name == "PILOTHOUSE_ADMIN_KEY")
            )
        ).all()
    assert len(rows) == 1


async def test_a_service_key_with_the_scope_declares_session_and_labels(api: Api) -> None:
    token = await api.service_key(["sessions:write", "sessions:declare"], ["ci_job"])
    opened = await api.session(token, labels={"env": "ci"})
    me = await api.ok(
        "GET",
        "/api/v1/whoami",
        token,
        headers={
            "x-pilothouse-session": opened["session"]["id"],
            "x-pilothouse-labels": "ci_job=build-7",
        },
    )
    assert me["session_id"] == opened["session"]["id"]
    assert me["labels"] == {"env": "ci", "ci_job": "build-7"}


async def test_a_service_key_may_not_set_labels_outside_its_allowlist(api: Api) -> None:
    token = await api.service_key(["sessions:declare"], ["ci_job"])
    refused = await api.call(
        "GET", "/api/v1/whoami", token, headers={"x-pilothouse-labels": "team=payments"}
    )
    assert refused.status_code == 403
    assert refused.json()["error"]["code"] == "scope_denied"
    assert "team" in refused.json()["error"]["message"]


async def test_a_service_key_without_the_scope_cannot_declare_a_session(api: Api) -> None:
    token = await api.service_key(["sessions:write"])
    opened = await api.session(token)
    refused = await api.call(
        "GET", "/api/v1/whoami", token, headers={"x-pilothouse-session": opened["session"]["id"]}
    )
    assert refused.status_code == 403
    assert refused.json()["error"]["code"] == "scope_denied"


async def test_declaring_an_ended_or_foreign_session_is_refused(api: Api) -> None:
    token = await api.service_key(["sessions:write", "sessions:declare"])
    opened = await api.session(token)
    session_id = opened["session"]["id"]
    await api.ok("POST", f"/api/v1/sessions/{session_id}/end", token, json={})
    ended = await api.call(
        "GET", "/api/v1/whoami", token, headers={"x-pilothouse-session": session_id}
    )
    assert ended.status_code == 403
    other = await api.ok(
        "POST", "/api/v1/orgs", json={"name": "other", "owner_email": "o@other.example"}
    )
    foreign = await api.session(other["key"]["token"])
    refused = await api.call(
        "GET", "/api/v1/whoami", token, headers={"x-pilothouse-session": foreign["session"]["id"]}
    )
    assert refused.status_code == 403
    assert "does not exist" in refused.json()["error"]["message"]
