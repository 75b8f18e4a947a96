"""Bad requests are refused with a stable code and a message naming the problem, and change nothing.

Every case snapshots every table (but the audit log) before and after: a refused request must
leave the store as it was. Authentication failures must append exactly one ``auth.failed``
audit event each; validation failures must append none.
"""

from __future__ import annotations

import json
import re
from collections import Counter
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from typing import Any, NamedTuple

import httpx
import pytest

from pilothouse.app import build_app
from pilothouse.identity.tokens import KeyKind, issue
from pilothouse.services import Services, build_services
from pilothouse.settings import Settings
from tests.api.conftest import Snapshot, audit_counts, store_snapshot
from tests.conftest import Api, MutableClock, bearer

BODY_LIMIT = 1024
JSON = {"content-type": "application/json"}


def _served_schema() -> dict[str, Any]:
    # Building the app opens no connection; the schema lists every parameter and body field.
    schema: dict[str, Any] = build_app(Settings(database_url="sqlite+aiosqlite://")).openapi()
    return schema


SCHEMA = _served_schema()


@dataclass
class Watched:
    """The store as it was before a refused request."""

    services: Services
    tables: Snapshot
    audit: Counter[str]

    async def new_audit_events(self) -> Counter[str]:
        """Audit events appended since the watch began, by action."""
        return await audit_counts(self.services.store) - self.audit

    async def assert_tables_unchanged(self) -> None:
        """Every table but the audit log holds what it held before."""
        assert await store_snapshot(self.services.store) == self.tables


async def watch(services: Services) -> Watched:
    """Remember the store's state, to compare after a request."""
    return Watched(
        services, await store_snapshot(services.store), await audit_counts(services.store)
    )


def assert_error(response: httpx.Response, status: int, code: str, *named: str) -> None:
    """The response is the error envelope with ``status`` and ``code``, naming ``named``."""
    assert response.status_code == status, response.text[:500]
    error = response.json()["error"]
    assert error["code"] == code
    assert error["request_id"] == response.headers["x-request-id"]
    for fragment in named:
        assert fragment.lower() in error["message"].lower(), error["message"]


# --- validation: malformed, unknown, mistyped, out of range, NUL ----------------------------


class Bad(NamedTuple):
    """A request the API must refuse before doing anything."""

    name: str
    method: str
    path: str
    kwargs: dict[str, Any]
    status: int
    code: str
    named: tuple[str, ...]


def _json(raw: str) -> dict[str, Any]:
    return {"content": raw.encode(), "headers": JSON}


def _invalid(name: str, method: str, path: str, body: Any, *named: str) -> Bad:
    return Bad(name, method, path, {"json": body}, 422, "validation_error", named)


def _invalid_query(name: str, path: str, *named: str) -> Bad:
    return Bad(name, "GET", path, {}, 422, "validation_error", named)


HEX64 = "ab" * 32
BAD_REQUESTS = [
    Bad("malformed JSON", "POST", "/api/v1/teams", _json('{"name": "x",'), 400, "invalid_json",
        ("not valid JSON",)),
    Bad("JSON with a trailing comma", "POST", "/api/v1/users", _json('{"email": "a@b.c",}'), 400,
        "invalid_json", ("not valid JSON",)),
    Bad("JSON that is not an object", "POST", "/api/v1/teams", _json('["team"]'), 422,
        "validation_error", ("body", "valid dictionary")),
    Bad("an empty body", "POST", "/api/v1/teams", {"content": b""}, 422, "validation_error",
        ("missing required field 'body'",)),
    _invalid("an unknown field", "POST", "/api/v1/teams", {"name": "x", "colour": "red"},
             "unknown field 'colour'"),
    _invalid("an unknown nested field", "POST", "/api/v1/sessions",
             {"agent": {"kind": "cli", "flavour": "mint"}}, "unknown field 'agent.flavour'"),
    _invalid("an unknown field on update", "PATCH", "/api/v1/users/{user_id}",
             {"nickname": "bob"}, "unknown field 'nickname'"),
    _invalid("a missing field", "POST", "/api/v1/users", {"name": "x"},
             "missing required field 'email'"),
    _invalid("a number for a string", "POST", "/api/v1/users", {"email": 42},
             "email", "valid string"),
    _invalid("a string for a list", "POST", "/api/v1/sessions", {"skills": "git"},
             "skills", "valid list"),
    _invalid("a string for a boolean", "PATCH", "/api/v1/users/{user_id}", {"disabled": "maybe"},
             "disabled", "valid boolean"),
    _invalid("a list for an object", "POST", "/api/v1/sessions", {"labels": ["a"]},
             "labels", "valid dictionary"),
    _invalid("a float for an integer", "POST", "/api/v1/sessions", {"ttl_seconds": 600.5},
             "ttl_seconds", "valid integer"),
    _invalid_query("a word for a number", "/api/v1/teams?limit=many", "limit", "valid integer"),
    _invalid("an unknown role", "POST", "/api/v1/users", {"email": "a@b.c", "role": "emperor"},
             "role"),
    _invalid("an unknown outcome", "POST", "/api/v1/sessions/{session_id}/end",
             {"outcome": "exploded"}, "outcome"),
    _invalid("an unknown scope", "POST", "/api/v1/keys",
             {"kind": "service", "scopes": ["admin:all"]}, "scopes"),
    _invalid("scopes on a user key", "POST", "/api/v1/keys", {"scopes": ["sessions:write"]},
             "scopes", "only to service keys"),
    _invalid("an address without @", "POST", "/api/v1/users", {"email": "nobody"}, "email"),
    _invalid("a TTL under the minimum", "POST", "/api/v1/sessions", {"ttl_seconds": 59},
             "ttl_seconds", "greater than or equal to 60"),
    _invalid("a TTL over the maximum", "POST", "/api/v1/sessions", {"ttl_seconds": 604801},
             "ttl_seconds", "less than or equal to 604800"),
    _invalid("a key lifetime under the minimum", "POST", "/api/v1/keys",
             {"expires_in_seconds": 10}, "expires_in_seconds", "greater than or equal to 60"),
    _invalid("a name over 200 characters", "POST", "/api/v1/teams", {"name": "x" * 201},
             "name", "at most 200"),
    _invalid("a blank name", "POST", "/api/v1/teams", {"name": "   "}, "name", "at least 1"),
    _invalid("more than 32 labels", "POST", "/api/v1/sessions",
             {"labels": {f"k{i}": "v" for i in range(33)}}, "labels", "at most 32"),
    _invalid("a label key with a space", "POST", "/api/v1/sessions", {"labels": {"a b": "v"}},
             "labels", "pattern"),
    _invalid("more than 50 skills", "POST", "/api/v1/sessions", {"skills": ["s"] * 51},
             "skills", "at most 50"),
    _invalid_query("a page size of 0", "/api/v1/users?limit=0", "limit",
                   "greater than or equal to 1"),
    _invalid_query("a page size over 500", "/api/v1/keys?limit=501", "limit",
                   "less than or equal to 500"),
    _invalid_query("a negative sequence number", "/api/v1/audit/events?after_seq=-1",
                   "after_seq"),
    _invalid_query("an id over 40 characters", f"/api/v1/teams/{'x' * 41}", "team_id",
                   "at most 40"),
    _invalid_query("a label filter without =", "/api/v1/sessions?label=team", "label filter"),
    _invalid_query("a malformed checkpoint", "/api/v1/audit/verify?checkpoint=nope",
                   "checkpoint", "SEQ:HASH"),
    _invalid_query("both directions of the audit log",
                   "/api/v1/audit/events?after_seq=1&before_seq=9", "after_seq", "before_seq"),
    # NUL: PostgreSQL text cannot hold it, so every engine refuses it.
    _invalid("NUL in a team name", "POST", "/api/v1/teams", {"name": "a\x00b"}, "name", "NUL"),
    _invalid("NUL in a nested field", "POST", "/api/v1/sessions", {"agent": {"kind": "\x00"}},
             "agent.kind", "NUL"),
    _invalid("NUL in a list item", "POST", "/api/v1/sessions", {"skills": ["git", "a\x00"]},
             "skills.1", "NUL"),
    _invalid("NUL in a label value", "POST", "/api/v1/sessions", {"labels": {"team": "a\x00"}},
             "labels.team", "NUL"),
    _invalid("NUL in an outcome detail", "POST", "/api/v1/sessions/{session_id}/end",
             {"detail": "\x00"}, "detail", "NUL"),
    _invalid("NUL in an update", "PATCH", "/api/v1/teams/{team_id}", {"description": "\x00"},
             "description", "NUL"),
    _invalid_query("NUL in a path id", "/api/v1/users/usr%00x", "user_id", "NUL"),
    _invalid_query("NUL in a label filter", "/api/v1/sessions?label=team%3Da%00",
                   "label filter"),
    # Regressions: each of these reached the store and answered 500.
    _invalid("NUL in a session's repository", "POST", "/api/v1/sessions",
             {"repository": "git@host:a\x00b"}, "repository", "NUL"),
    _invalid_query("NUL in a session filter", "/api/v1/sessions?project=a%00b", "project", "NUL"),
    _invalid_query("a time without a timezone", "/api/v1/sessions?created_after=2026-01-01T00:00",
                   "created_after", "timezone"),
    _invalid_query("a time before year 1 in UTC",
                   "/api/v1/sessions?created_after=0001-01-01T00:00:00%2B14:00",
                   "created_after", "UTC"),
    _invalid_query("a time after year 9999 in UTC",
                   "/api/v1/sessions?created_before=9999-12-31T23:59:59-14:00",
                   "created_before", "UTC"),
    _invalid_query("a checkpoint with a non-ASCII digit",
                   f"/api/v1/audit/verify?checkpoint=%C2%B2:{HEX64}", "checkpoint", "SEQ:HASH"),
    _invalid("an address that outgrows its limit in lower case", "POST", "/api/v1/users",
             {"email": "\u0130" * 200 + "@example.com"}, "email", "lower"),
]  # fmt: skip


@dataclass
class Targets:
    """Objects whose ids bad requests address."""

    team_id: str
    user_id: str
    session_id: str


async def arrange_targets(api: Api) -> Targets:
    """A team, a user and an active session in the root organization."""
    team = await api.ok("POST", "/api/v1/teams", json={"name": "target"})
    user = await api.ok("POST", "/api/v1/users", json={"email": "target@example.com"})
    session = await api.session(user_id=user["id"])
    return Targets(team["id"], user["id"], session["session"]["id"])


@pytest.mark.parametrize("bad", BAD_REQUESTS, ids=lambda bad: bad.name)
async def test_a_bad_request_is_refused_naming_the_problem_and_changes_nothing(
    api: Api, services: Services, bad: Bad
) -> None:
    # Requests that name an object name a real one: the refusal is the body's, not a 404.
    ids = vars(await arrange_targets(api)) if "{" in bad.path else {}
    before = await watch(services)
    path = bad.path.format(**ids)
    response = await api.call(bad.method, path, **bad.kwargs)
    assert_error(response, bad.status, bad.code, *bad.named)
    await before.assert_tables_unchanged()
    assert await before.new_audit_events() == Counter()


def _parameters() -> list[Any]:
    return [
        pytest.param(
            method.upper(), path, p["in"], p["name"], id=f"{method.upper()} {path} {p['name']}"
        )
        for path, operations in SCHEMA["paths"].items()
        if path.startswith("/api/v1/")
        for method, operation in operations.items()
        for p in operation.get("parameters", [])
    ]


def _with_nul(path: str, where: str, name: str) -> str:
    filled = path
    for part in path.split("/"):
        if part.startswith("{"):
            value = "a%00b" if part == f"{{{name}}}" else "x"
            filled = filled.replace(part, value)
    return f"{filled}?{name}=a%00b" if where == "query" else filled


@pytest.mark.parametrize(("method", "path", "where", "name"), _parameters())
async def test_nul_in_any_parameter_is_refused(
    api: Api, services: Services, method: str, path: str, where: str, name: str
) -> None:
    before = await watch(services)
    response = await api.call(method, _with_nul(path, where, name))
    assert_error(response, 422, "validation_error", name)
    await before.assert_tables_unchanged()
    assert await before.new_audit_events() == Counter()


def _resolve(schema: dict[str, Any]) -> dict[str, Any]:
    ref = schema.get("$ref")
    if ref is None:
        return schema
    resolved: dict[str, Any] = SCHEMA["components"]["schemas"][ref.rsplit("/", 1)[1]]
    return resolved


def _is_string(schema: dict[str, Any]) -> bool:
    options = schema.get("anyOf", [schema])
    return any(_resolve(option).get("type") == "string" for option in options)


def _string_body_fields() -> list[Any]:
    found = []
    for path, operations in SCHEMA["paths"].items():
        for method, operation in operations.items():
            content = operation.get("requestBody", {}).get("content", {})
            if "application/json" not in content:
                continue
            body = _resolve(content["application/json"]["schema"])
            found += [
                pytest.param(method.upper(), path, field, id=f"{method.upper()} {path} {field}")
                for field, schema in body.get("properties", {}).items()
                if _is_string(schema)
            ]
    return found


@pytest.mark.parametrize(("method", "path", "field"), _string_body_fields())
async def test_nul_in_any_string_field_of_a_body_is_refused(
    api: Api, services: Services, method: str, path: str, field: str
) -> None:
    before = await watch(services)
    url = re.sub(r"\{[a-z_]+\}", "x", path)
    response = await api.call(method, url, json={field: "a\x00b"})
    assert_error(response, 422, "validation_error", field)
    located = [e for e in response.json()["error"]["errors"] if e["location"] == ["body", field]]
    assert located, response.text
    await before.assert_tables_unchanged()
    assert await before.new_audit_events() == Counter()


# --- body size ------------------------------------------------------------------------------


@pytest.fixture
async def limited(settings: Settings, clock: MutableClock) -> AsyncIterator[tuple[Services, Api]]:
    """Services whose body limit is ``BODY_LIMIT`` bytes, and an owner's client for them."""
    services = build_services(settings.model_copy(update={"max_body_bytes": BODY_LIMIT}), clock)
    await services.start(migrate_store=False)
    try:
        app = build_app(services.settings, services=services)
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://pilothouse.test") as c:
            assert services.bootstrap_result is not None
            assert services.bootstrap_result.owner_token is not None
            yield services, Api(c, services.bootstrap_result.owner_token)
    finally:
        await services.close()


def _team_body(size: int) -> bytes:
    body = json.dumps({"name": "big", "description": ""}).encode()
    return json.dumps({"name": "big", "description": "x" * (size - len(body))}).encode()


async def _chunks(body: bytes) -> AsyncIterator[bytes]:
    for start in range(0, len(body), 100):
        yield body[start : start + 100]


async def test_a_body_at_the_limit_is_accepted(limited: tuple[Services, Api]) -> None:
    _, api = limited
    body = _team_body(BODY_LIMIT)
    assert len(body) == BODY_LIMIT
    created = await api.ok("POST", "/api/v1/teams", content=body, headers=JSON)
    assert len(created["description"]) > 900


@pytest.mark.parametrize("streamed", [False, True], ids=["content-length", "chunked"])
async def test_a_body_over_the_limit_is_refused_and_changes_nothing(
    limited: tuple[Services, Api], streamed: bool
) -> None:
    services, api = limited
    body = _team_body(BODY_LIMIT + 1)
    before = await watch(services)
    content: bytes | AsyncIterator[bytes] = _chunks(body) if streamed else body
    response = await api.call("POST", "/api/v1/teams", content=content, headers=JSON)
    if streamed:
        assert "content-length" not in response.request.headers
        assert response.request.headers["transfer-encoding"] == "chunked"
    assert_error(response, 413, "body_too_large", f"limit of {BODY_LIMIT} bytes")
    await before.assert_tables_unchanged()
    assert await before.new_audit_events() == Counter()


# --- authentication -------------------------------------------------------------------------

Present = Callable[[Api, Services, MutableClock], Awaitable[dict[str, str]]]


async def _no_key(api: Api, services: Services, clock: MutableClock) -> dict[str, str]:
    return {}


def _header(value: str) -> Present:
    async def present(api: Api, services: Services, clock: MutableClock) -> dict[str, str]:
        return {"authorization": value}

    return present


async def _unknown_key(api: Api, services: Services, clock: MutableClock) -> dict[str, str]:
    return bearer(issue(KeyKind.USER).token)


async def _unknown_key_as_x_api_key(
    api: Api, services: Services, clock: MutableClock
) -> dict[str, str]:
    return {"x-api-key": issue(KeyKind.SERVICE).token}


async def _wrong_secret(api: Api, services: Services, clock: MutableClock) -> dict[str, str]:
    prefix = api.owner.rsplit("_", 1)[0]
    return bearer(f"{prefix}_{'A' * 40}")


async def _expired_key(api: Api, services: Services, clock: MutableClock) -> dict[str, str]:
    key = await api.ok("POST", "/api/v1/keys", json={"expires_in_seconds": 60})
    clock.advance(seconds=61)
    return bearer(key["token"])


async def _revoked_key(api: Api, services: Services, clock: MutableClock) -> dict[str, str]:
    key = await api.ok("POST", "/api/v1/keys", json={})
    await api.ok("POST", f"/api/v1/keys/{key['id']}/revoke")
    return bearer(key["token"])


async def _disabled_users_key(api: Api, services: Services, clock: MutableClock) -> dict[str, str]:
    user_id, token = await api.user_with_key("admin")
    await api.ok("PATCH", f"/api/v1/users/{user_id}", json={"disabled": True})
    return bearer(token)


async def _ended_sessions_key(api: Api, services: Services, clock: MutableClock) -> dict[str, str]:
    opened = await api.session()
    await api.ok("POST", f"/api/v1/sessions/{opened['session']['id']}/end", json={})
    return bearer(opened["key"]["token"])


class Unauthenticated(NamedTuple):
    """A way of presenting no valid key, and how it must be refused."""

    name: str
    present: Present
    code: str
    named: tuple[str, ...]


UNAUTHENTICATED = [
    Unauthenticated("no key", _no_key, "missing_credentials", ("no API key",)),
    Unauthenticated("basic auth", _header("Basic dXNlcjpwYXNz"), "invalid_key", ("Bearer",)),
    Unauthenticated("a bare Bearer", _header("Bearer"), "invalid_key", ("Bearer",)),
    Unauthenticated("a token scheme", _header("Token phk_x_y"), "invalid_key", ("Bearer",)),
    Unauthenticated("a malformed key", _header("Bearer not-a-key"), "invalid_key", ("malformed",)),
    Unauthenticated("an unknown key", _unknown_key, "invalid_key", ("unknown API key",)),
    Unauthenticated(
        "an unknown x-api-key", _unknown_key_as_x_api_key, "invalid_key", ("unknown API key",)
    ),
    Unauthenticated("a wrong secret", _wrong_secret, "invalid_key", ("unknown API key",)),
    Unauthenticated("an expired key", _expired_key, "key_expired", ("expired",)),
    Unauthenticated("a revoked key", _revoked_key, "key_revoked", ("revoked",)),
    Unauthenticated("a disabled user's key", _disabled_users_key, "key_revoked", ("disabled",)),
    Unauthenticated("an ended session's key", _ended_sessions_key, "key_revoked", ("revoked",)),
]


@pytest.mark.parametrize("case", UNAUTHENTICATED, ids=lambda case: case.name)
async def test_a_request_without_a_valid_key_is_refused_changes_nothing_and_is_audited(
    api: Api, services: Services, clock: MutableClock, case: Unauthenticated
) -> None:
    headers = await case.present(api, services, clock)
    before = await watch(services)
    response = await api.client.post(
        "/api/v1/teams", json={"name": "should not exist"}, headers=headers
    )
    assert_error(response, 401, case.code, *case.named)
    assert response.headers["www-authenticate"] == "Bearer"
    await before.assert_tables_unchanged()
    assert await before.new_audit_events() == Counter({"auth.failed": 1})
