"""Agent sessions: context, session keys, filters, ending with an outcome."""

from __future__ import annotations

from pilothouse.services import Services
from tests.conftest import Api, MutableClock


async def test_a_session_keeps_its_whole_context(api: Api) -> None:
    team = await api.ok("POST", "/api/v1/teams", json={"name": "payments"})
    body = {
        "team_id": team["id"],
        "project": "checkout",
        "use_case": "bugfix",
        "repository": "acme/payments",
        "branch": "fix/rounding",
        "ticket": "PAY-12",
        "agent": {"kind": "claude-code", "version": "2.1.197"},
        "skills": ["git", "tests"],
        "plugins": ["reviewer"],
        "labels": {"env": "ci", "cost_center": "42"},
    }
    opened = await api.session(**body)
    shown = await api.ok("GET", f"/api/v1/sessions/{opened['session']['id']}")
    for field, value in body.items():
        assert shown[field] == value, field
    assert shown["status"] == "active"
    assert shown["key_prefix"] == opened["key"]["prefix"]
    me = await api.ok("GET", "/api/v1/whoami")
    assert shown["user_id"] == me["user_id"]


async def test_a_session_key_authenticates_as_its_session_with_its_labels(api: Api) -> None:
    opened = await api.session(labels={"env": "ci"})
    me = await api.ok("GET", "/api/v1/whoami", opened["key"]["token"])
    assert me["kind"] == "session"
    assert me["session_id"] == opened["session"]["id"]
    assert me["labels"] == {"env": "ci"}
    assert me["role"] is None


async def test_a_session_key_cannot_call_admin_routes(api: Api) -> None:
    token = (await api.session())["key"]["token"]
    for method, path in (
        ("GET", "/api/v1/sessions"),
        ("POST", "/api/v1/sessions"),
        ("GET", "/api/v1/audit/events"),
        ("POST", "/api/v1/keys"),
    ):
        response = await api.call(method, path, token, json={})
        assert response.status_code == 403, (method, path)
        assert "session key" in response.json()["error"]["message"]


async def test_ending_a_session_records_the_outcome_and_kills_its_key(api: Api) -> None:
    opened = await api.session()
    session_id, token = opened["session"]["id"], opened["key"]["token"]
    ended = await api.ok(
        "POST", f"/api/v1/sessions/{session_id}/end", json={"outcome": "failed", "detail": "tests"}
    )
    assert ended["status"] == "ended"
    assert ended["outcome"] == "failed"
    assert ended["outcome_detail"] == "tests"
    assert ended["ended_at"] is not None
    refused = await api.call("GET", "/api/v1/whoami", token)
    assert refused.status_code == 401
    assert refused.json()["error"]["code"] == "key_revoked"
    again = await api.call("POST", f"/api/v1/sessions/{session_id}/end", json={})
    assert again.status_code == 409


async def test_revoking_a_session_key_leaves_the_session_active(api: Api) -> None:
    opened = await api.session()
    session_id = opened["session"]["id"]
    shown = await api.ok("POST", f"/api/v1/sessions/{session_id}/revoke-key")
    assert shown["status"] == "active"
    assert (await api.call("GET", "/api/v1/whoami", opened["key"]["token"])).status_code == 401


async def test_a_session_key_expires_with_the_session_ttl(api: Api, clock: MutableClock) -> None:
    opened = await api.session(ttl_seconds=120)
    clock.advance(seconds=121)
    refused = await api.call("GET", "/api/v1/whoami", opened["key"]["token"])
    assert refused.status_code == 401
    assert refused.json()["error"]["code"] == "key_expired"


async def test_sessions_list_filters_by_context_and_labels(api: Api) -> None:
    a = await api.session(project="alpha", repository="acme/a", labels={"env": "ci"})
    b = await api.session(project="beta", repository="acme/b", labels={"env": "prod", "tier": "1"})
    await api.ok("POST", f"/api/v1/sessions/{b['session']['id']}/end", json={})

    async def ids(**params: object) -> set[str]:
        page = await api.ok("GET", "/api/v1/sessions", params=params)
        return {s["id"] for s in page["data"]}

    assert await ids(project="alpha") == {a["session"]["id"]}
    assert await ids(repository="acme/b") == {b["session"]["id"]}
    assert await ids(status="ended") == {b["session"]["id"]}
    assert await ids(label="env=ci") == {a["session"]["id"]}
    assert await ids(label=["env=prod", "tier=1"]) == {b["session"]["id"]}
    assert await ids(label=["env=prod", "tier=2"]) == set()
    assert await ids(label=["tier=1", "tier=2"]) == set()
    assert await ids(label=["tier=2", "tier=1"]) == set()


async def test_sessions_list_pages_newest_first(api: Api) -> None:
    opened = [(await api.session(project=f"p{i}"))["session"]["id"] for i in range(5)]
    first = await api.ok("GET", "/api/v1/sessions", params={"limit": 2})
    second = await api.ok(
        "GET", "/api/v1/sessions", params={"limit": 2, "cursor": first["next_cursor"]}
    )
    third = await api.ok(
        "GET", "/api/v1/sessions", params={"limit": 2, "cursor": second["next_cursor"]}
    )
    seen = [s["id"] for page in (first, second, third) for s in page["data"]]
    assert seen == list(reversed(opened))
    assert third["next_cursor"] is None


async def test_a_member_cannot_end_someone_elses_session(api: Api) -> None:
    _, member = await api.user_with_key("member")
    theirs = await api.session()
    refused = await api.call(
        "POST", f"/api/v1/sessions/{theirs['session']['id']}/end", member, json={}
    )
    assert refused.status_code == 403
    own = await api.session(member)
    await api.ok("POST", f"/api/v1/sessions/{own['session']['id']}/end", member, json={})


async def test_session_changes_are_audited(api: Api, services: Services) -> None:
    opened = await api.session()
    await api.ok("POST", f"/api/v1/sessions/{opened['session']['id']}/end", json={})
    events = await api.ok("GET", "/api/v1/audit/events", params={"action": "session.*"})
    actions = [e["action"] for e in events["data"]]
    assert actions == ["session.ended", "session.created"]
    assert all(e["target"]["id"] == opened["session"]["id"] for e in events["data"])
    assert opened["key"]["token"] not in str(events)
