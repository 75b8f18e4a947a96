"""Every admin change is an audit event naming actor, action, target and the request id."""

from __future__ import annotations

from typing import Any

import httpx

from tests.conftest import Api


async def _last_event(api: Api) -> dict[str, Any]:
    page = await api.ok("GET", "/api/v1/audit/events", params={"limit": 1})
    event: dict[str, Any] = page["data"][0]
    return event


async def _change(api: Api, method: str, path: str, **kwargs: Any) -> httpx.Response:
    response = await api.call(method, path, **kwargs)
    assert response.is_success, response.text
    return response


async def test_each_admin_change_appends_one_event_with_its_request_id(api: Api) -> None:
    me = await api.ok("GET", "/api/v1/whoami")
    team = (await _change(api, "POST", "/api/v1/teams", json={"name": "t"})).json()
    user = (await _change(api, "POST", "/api/v1/users", json={"email": "u@x.io"})).json()
    key = (await _change(api, "POST", "/api/v1/keys", json={"user_id": user["id"]})).json()
    session = (await _change(api, "POST", "/api/v1/sessions", json={})).json()["session"]
    steps: list[tuple[str, str, dict[str, Any], str, str]] = [
        (
            "PATCH",
            f"/api/v1/teams/{team['id']}",
            {"json": {"description": "d"}},
            "team.updated",
            team["id"],
        ),
        (
            "POST",
            f"/api/v1/teams/{team['id']}/members",
            {"json": {"user_id": user["id"]}},
            "team.member_added",
            team["id"],
        ),
        (
            "DELETE",
            f"/api/v1/teams/{team['id']}/members/{user['id']}",
            {},
            "team.member_removed",
            team["id"],
        ),
        (
            "PATCH",
            f"/api/v1/users/{user['id']}",
            {"json": {"role": "finance"}},
            "user.updated",
            user["id"],
        ),
        ("POST", f"/api/v1/keys/{key['id']}/revoke", {}, "key.revoked", key["id"]),
        (
            "POST",
            f"/api/v1/sessions/{session['id']}/revoke-key",
            {},
            "session.key_revoked",
            session["id"],
        ),
        (
            "POST",
            f"/api/v1/sessions/{session['id']}/end",
            {"json": {}},
            "session.ended",
            session["id"],
        ),
        ("DELETE", f"/api/v1/teams/{team['id']}", {}, "team.deleted", team["id"]),
        (
            "POST",
            "/api/v1/orgs",
            {"json": {"name": "o2", "owner_email": "o@o2.io"}},
            "org.created",
            "",
        ),
    ]
    for method, path, kwargs, action, target in steps:
        before = (await _last_event(api))["seq"]
        response = await _change(
            api, method, path, headers={"x-request-id": f"test-{action}"}, **kwargs
        )
        event = await _last_event(api)
        assert event["seq"] == before + 1, action
        assert event["action"] == action
        assert event["outcome"] == "success"
        assert event["actor"] == {"kind": "user", "id": me["user_id"]}
        assert event["request_id"] == response.headers["x-request-id"] == f"test-{action}"
        if target:
            assert event["target"]["id"] == target
    assert (await api.ok("GET", "/api/v1/audit/verify"))["ok"] is True


async def test_creations_are_audited_and_never_carry_a_secret(api: Api) -> None:
    key = await api.ok("POST", "/api/v1/keys", json={"name": "k"})
    opened = await api.session()
    everything = await api.ok("GET", "/api/v1/audit/events", params={"limit": 500})
    actions = {e["action"] for e in everything["data"]}
    assert {"bootstrap.completed", "key.created", "session.created"} <= actions
    dump = str(everything)
    for token in (key["token"], opened["key"]["token"], api.owner):
        assert token.rsplit("_", 1)[1] not in dump


async def test_refused_authentication_and_authorization_are_audited(api: Api) -> None:
    _, member = await api.user_with_key("member")
    await api.client.get("/api/v1/whoami", headers={"authorization": "Bearer phk_nope"})
    await api.call("POST", "/api/v1/teams", member, json={"name": "nope"})
    events = (await api.ok("GET", "/api/v1/audit/events", params={"limit": 2}))["data"]
    denied, failed = events
    assert denied["action"] == "access.denied"
    assert denied["outcome"] == "denied"
    assert denied["details"]["permission"] == "teams:write"
    assert failed["action"] == "auth.failed"
    assert failed["details"]["reason"] == "invalid_key"
    assert failed["actor"]["kind"] == "anonymous"


async def test_the_log_pages_back_with_before_seq_and_follows_with_after_seq(api: Api) -> None:
    for i in range(5):
        await api.ok("POST", "/api/v1/teams", json={"name": f"t{i}"})
    newest = (await api.ok("GET", "/api/v1/audit/events", params={"limit": 2}))["data"]
    older = await api.ok(
        "GET", "/api/v1/audit/events", params={"limit": 2, "before_seq": newest[-1]["seq"]}
    )
    seqs = [e["seq"] for e in newest + older["data"]]
    assert seqs == list(range(seqs[0], seqs[0] - 4, -1))
    follow = await api.ok("GET", "/api/v1/audit/events", params={"after_seq": seqs[-1]})
    assert [e["seq"] for e in follow["data"]] == sorted(seqs[:-1])
    assert follow["next_after_seq"] == seqs[0]
    both = await api.call("GET", "/api/v1/audit/events", params={"after_seq": 1, "before_seq": 3})
    assert both.status_code == 422


async def test_refusals_decided_inside_domain_code_are_audited_too(api: Api) -> None:
    _, member = await api.user_with_key("member")
    refused = await api.call("POST", "/api/v1/keys", member, json={"kind": "service"})
    assert refused.status_code == 403
    event = (await api.ok("GET", "/api/v1/audit/events", params={"limit": 1}))["data"][0]
    assert event["action"] == "access.denied"
    assert event["request_id"] == refused.headers["x-request-id"]
    assert "service key" in event["details"]["reason"]


async def test_a_refused_key_is_audited_in_its_own_organization(api: Api) -> None:
    other = await api.ok("POST", "/api/v1/orgs", json={"name": "o2", "owner_email": "o@o2.io"})
    other_owner = other["key"]["token"]
    prefix = other["key"]["prefix"]
    wrong = f"{prefix}_{'x' * 40}"
    refused = await api.client.get("/api/v1/whoami", headers={"x-api-key": wrong})
    assert refused.status_code == 401
    theirs = await api.ok("GET", "/api/v1/audit/events", other_owner, params={"limit": 1})
    event = theirs["data"][0]
    assert event["action"] == "auth.failed"
    assert event["target"]["id"] == prefix
    assert event["request_id"] == refused.headers["x-request-id"]
    ours = await api.ok("GET", "/api/v1/audit/events", params={"action": "auth.failed"})
    assert all(e["target"]["id"] != prefix for e in ours["data"])
