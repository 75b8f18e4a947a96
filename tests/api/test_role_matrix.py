"""Who may call which admin route: every route x every kind of caller, and tenant isolation.

The expectations below are written out by hand from the intended policy, not derived from
``pilothouse.identity.roles``: a change to the grants that breaks the policy fails a cell.
Callers and read-only objects are arranged once per engine (the ``world`` fixture); every cell
that may change something arranges its own fresh target, so cells cannot affect one another.
"""

from __future__ import annotations

import asyncio
import shutil
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, NamedTuple

import httpx
import pytest
import pytest_asyncio

from pilothouse.app import build_app
from pilothouse.mcp.tables import mcp_pins
from pilothouse.services import Services, build_services
from pilothouse.settings import Settings
from tests.api.conftest import store_snapshot
from tests.conftest import Api, MutableClock, _truncate, bearer

CALLERS = (
    "owner",
    "admin",
    "security",
    "finance",
    "auditor",
    "member",
    "session",
    "service",
    "none",
)
HUMANS = CALLERS[:6]
SERVICE_SCOPES = ["sessions:write", "sessions:declare"]
ERROR_CODES = {401: "missing_credentials", 403: "forbidden", 404: "not_found"}
NEW_PASSWORD = "a long enough password"

# Every admin route (and variant) x every caller. own..mem are users of the root organization
# with that role, ses a session key, svc a service key with sessions:write and
# sessions:declare; none sends no key. The variant names the target: own = the caller's own
# key or session; other = another user's; service = a new service key.
MATRIX_TABLE = """
METHOD PATH                                      VARIANT  own adm sec fin aud mem ses svc none
GET    /api/v1/whoami                            -        200 200 200 200 200 200 200 200 401
GET    /api/v1/org                               -        200 200 200 200 200 200 403 403 401
POST   /api/v1/orgs                              -        201 403 403 403 403 403 403 403 401
GET    /api/v1/teams                             -        200 200 200 200 200 200 403 403 401
POST   /api/v1/teams                             -        201 201 403 403 403 403 403 403 401
GET    /api/v1/teams/{team_id}                   -        200 200 200 200 200 200 403 403 401
PATCH  /api/v1/teams/{team_id}                   -        200 200 403 403 403 403 403 403 401
DELETE /api/v1/teams/{team_id}                   -        204 204 403 403 403 403 403 403 401
POST   /api/v1/teams/{team_id}/members           -        200 200 403 403 403 403 403 403 401
DELETE /api/v1/teams/{team_id}/members/{user_id} -        200 200 403 403 403 403 403 403 401
GET    /api/v1/users                             -        200 200 200 200 200 200 403 403 401
POST   /api/v1/users                             -        201 201 403 403 403 403 403 403 401
GET    /api/v1/users/{user_id}                   -        200 200 200 200 200 200 403 403 401
PATCH  /api/v1/users/{user_id}                   -        200 200 403 403 403 403 403 403 401
POST   /api/v1/users/{user_id}/password          own      204 204 204 204 204 204 403 403 401
POST   /api/v1/users/{user_id}/password          other    204 204 403 403 403 403 403 403 401
GET    /api/v1/keys                              -        200 200 200 200 200 200 403 403 401
POST   /api/v1/keys                              own      201 201 201 201 201 201 403 403 401
POST   /api/v1/keys                              other    201 201 403 403 403 403 403 403 401
POST   /api/v1/keys                              service  201 201 403 403 403 403 403 403 401
GET    /api/v1/keys/{key_id}                     own      200 200 200 200 200 200 403 403 401
GET    /api/v1/keys/{key_id}                     other    200 200 200 404 200 404 403 403 401
POST   /api/v1/keys/{key_id}/revoke              own      200 200 200 200 200 200 403 403 401
POST   /api/v1/keys/{key_id}/revoke              other    200 200 200 404 403 404 403 403 401
GET    /api/v1/sessions                          -        200 200 200 200 200 200 403 403 401
POST   /api/v1/sessions                          own      201 201 403 403 403 201 403 201 401
POST   /api/v1/sessions                          other    201 201 403 403 403 403 403 201 401
GET    /api/v1/sessions/{session_id}             -        200 200 200 200 200 404 403 403 401
GET    /api/v1/sessions/{session_id}             own      200 200 200 200 200 200 403 403 401
GET    /api/v1/sessions/{session_id}/timeline    -        200 200 200 200 200 404 403 403 401
GET    /api/v1/sessions/{session_id}/timeline    own      200 200 200 200 200 200 403 403 401
POST   /api/v1/sessions/{session_id}/end         own      200 200 403 403 403 200 403 200 401
POST   /api/v1/sessions/{session_id}/end         other    200 200 403 403 403 403 403 403 401
POST   /api/v1/sessions/{session_id}/revoke-key  own      200 200 403 403 403 200 403 200 401
POST   /api/v1/sessions/{session_id}/revoke-key  other    200 200 403 403 403 403 403 403 401
GET    /api/v1/audit/events                      -        200 200 200 403 200 403 403 403 401
GET    /api/v1/audit/verify                      -        200 200 200 403 200 403 403 403 401
GET    /api/v1/usage                             -        200 200 403 200 200 403 403 403 401
GET    /api/v1/spend                             -        200 200 403 200 200 403 403 403 401
GET    /api/v1/budgets                           -        200 200 403 200 200 403 403 403 401
POST   /api/v1/budgets                           -        201 201 403 201 403 403 403 403 401
GET    /api/v1/budgets/{budget_id}               -        200 200 403 200 200 403 403 403 401
PATCH  /api/v1/budgets/{budget_id}               -        200 200 403 200 403 403 403 403 401
DELETE /api/v1/budgets/{budget_id}               -        204 204 403 204 403 403 403 403 401
GET    /api/v1/policy                            -        200 200 200 403 200 403 403 403 401
PUT    /api/v1/policy                            -        200 200 200 403 403 403 403 403 401
POST   /api/v1/policy/validate                   -        200 200 200 403 200 403 403 403 401
GET    /api/v1/policy/versions                   -        200 200 200 403 200 403 403 403 401
GET    /api/v1/policy/versions/{version}         -        200 200 200 403 200 403 403 403 401
POST   /api/v1/policy/simulate                   -        200 200 200 403 200 403 403 403 401
POST   /api/v1/check                             -        200 200 200 200 200 200 200 403 401
POST   /api/v1/scan                              -        200 200 200 200 200 200 200 403 401
GET    /api/v1/approvals                         -        200 200 200 403 200 403 403 403 401
GET    /api/v1/approvals/{approval_id}           -        200 200 200 403 200 403 403 403 401
POST   /api/v1/approvals/{approval_id}/approve   -        200 200 200 403 403 403 403 403 401
POST   /api/v1/approvals/{approval_id}/deny      -        200 200 200 403 403 403 403 403 401
GET    /api/v1/secrets                           -        200 200 200 403 200 403 403 403 401
POST   /api/v1/secrets                           -        201 201 201 403 403 403 403 403 401
POST   /api/v1/secrets/rewrap                    -        200 200 200 403 403 403 403 403 401
GET    /api/v1/secrets/{name}                    -        403 403 403 403 403 403 200 403 401
GET    /api/v1/secrets/{name}/info               -        200 200 200 403 200 403 403 403 401
POST   /api/v1/secrets/{name}/rotate             -        200 200 200 403 403 403 403 403 401
DELETE /api/v1/secrets/{name}                    -        204 204 204 403 403 403 403 403 401
POST   /api/v1/secrets/{name}/grants             -        201 201 201 403 403 403 403 403 401
DELETE /api/v1/secrets/{name}/grants/{grant_id}  -        204 204 204 403 403 403 403 403 401
GET    /api/v1/mcp/servers                       -        200 200 200 403 200 403 403 403 401
GET    /api/v1/mcp/tools                         -        200 200 200 403 200 403 403 403 401
GET    /api/v1/mcp/pins                          -        200 200 200 403 200 403 403 403 401
POST   /api/v1/mcp/pins/{server}/{tool}/approve  -        200 200 200 403 403 403 403 403 401
"""

# Every route that names an object, called by root-organization callers on objects of a second
# organization: each caller listed gets 404 and nothing changes. The callers are those the
# route admits at all (the others get their 403 first). Variant: which id is foreign where
# the route takes two (-: all of them).
CROSS_ORG_TABLE = """
METHOD PATH                                      VARIANT CALLERS
GET    /api/v1/teams/{team_id}                   -       owner admin security finance auditor member
PATCH  /api/v1/teams/{team_id}                   -       owner admin
DELETE /api/v1/teams/{team_id}                   -       owner admin
POST   /api/v1/teams/{team_id}/members           -       owner admin
POST   /api/v1/teams/{team_id}/members           user    owner admin
DELETE /api/v1/teams/{team_id}/members/{user_id} -       owner admin
GET    /api/v1/users/{user_id}                   -       owner admin security finance auditor member
PATCH  /api/v1/users/{user_id}                   -       owner admin
POST   /api/v1/users/{user_id}/password          -       owner admin security finance auditor member
POST   /api/v1/keys                              user    owner admin
GET    /api/v1/keys/{key_id}                     -       owner admin security finance auditor member
POST   /api/v1/keys/{key_id}/revoke              -       owner admin security finance auditor member
POST   /api/v1/sessions                          team    owner admin member service
POST   /api/v1/sessions                          user    owner admin service
GET    /api/v1/sessions/{session_id}             -       owner admin security finance auditor member
GET    /api/v1/sessions/{session_id}/timeline    -       owner admin security finance auditor member
POST   /api/v1/sessions/{session_id}/end         -       owner admin member service
POST   /api/v1/sessions/{session_id}/revoke-key  -       owner admin member service
GET    /api/v1/budgets/{budget_id}               -       owner admin finance auditor
PATCH  /api/v1/budgets/{budget_id}               -       owner admin finance
DELETE /api/v1/budgets/{budget_id}               -       owner admin finance
GET    /api/v1/policy/versions/{version}         -       owner admin security auditor
POST   /api/v1/check                             session owner admin security finance auditor member
GET    /api/v1/approvals/{approval_id}           -       owner admin security auditor
POST   /api/v1/approvals/{approval_id}/approve   -       owner admin security
POST   /api/v1/approvals/{approval_id}/deny      -       owner admin security
GET    /api/v1/secrets/{name}/info               -       owner admin security auditor
POST   /api/v1/secrets/{name}/rotate             -       owner admin security
DELETE /api/v1/secrets/{name}                    -       owner admin security
POST   /api/v1/secrets/{name}/grants             -       owner admin security
DELETE /api/v1/secrets/{name}/grants/{grant_id}  -       owner admin security
DELETE /api/v1/secrets/{name}/grants/{grant_id}  grant   owner admin security
"""
# Routes that name an object but answer a foreign one otherwise than 404, on purpose (each is
# tested where it is built): a session asking for a secret it is not granted gets 403
# secret_not_granted whether or not the name exists anywhere, so names cannot be probed
# (tests/secrets/test_api.py).
# Pins belong to the server, not to an organization: only the root organization's people
# approve one, others get 403 (tests/mcp/test_gateway.py).
NOT_404 = {("GET", "/api/v1/secrets/{name}"), ("POST", "/api/v1/mcp/pins/{server}/{tool}/approve")}


class Cell(NamedTuple):
    """One route variant called by one caller, and the status it must get."""

    method: str
    path: str
    variant: str
    caller: str
    status: int


def _rows(table: str) -> list[list[str]]:
    return [line.split() for line in table.strip().splitlines()[1:]]


def _matrix_cells() -> list[Cell]:
    cells = []
    for method, path, variant, *statuses in _rows(MATRIX_TABLE):
        cells += [
            Cell(method, path, variant, caller, int(status))
            for caller, status in zip(CALLERS, statuses, strict=True)
        ]
    return cells


MATRIX = _matrix_cells()
CROSS_ORG = [
    Cell(method, path, variant, caller, 404)
    for method, path, variant, *callers in _rows(CROSS_ORG_TABLE)
    for caller in callers
]


def _cell_id(cell: Cell) -> str:
    variant = "" if cell.variant == "-" else f"({cell.variant})"
    return f"{cell.method}_{cell.path.removeprefix('/api/v1')}{variant}-{cell.caller}"


# --- the arrangement: callers and read-only objects, once per engine ------------------------


def _unique(stem: str) -> str:
    return f"{stem}-{uuid.uuid4().hex[:10]}"


def _email() -> str:
    return f"{_unique('user')}@example.com"


async def fresh_team(api: Api, *member_ids: str) -> str:
    """A new team in ``api``'s organization, with ``member_ids`` in it."""
    team = await api.ok("POST", "/api/v1/teams", json={"name": _unique("team")})
    for user_id in member_ids:
        await api.ok("POST", f"/api/v1/teams/{team['id']}/members", json={"user_id": user_id})
    return str(team["id"])


async def fresh_user(api: Api) -> str:
    """A new member (without a key) in ``api``'s organization."""
    user = await api.ok("POST", "/api/v1/users", json={"email": _email()})
    return str(user["id"])


async def fresh_key(api: Api, user_id: str) -> str:
    """A new key for ``user_id``."""
    key = await api.ok("POST", "/api/v1/keys", json={"user_id": user_id})
    return str(key["id"])


async def fresh_budget(api: Api) -> str:
    """A new budget in ``api``'s organization, on a project of its own."""
    body = {"scope_kind": "project", "scope_value": _unique("p"), "window": "day", "limit_usd": 1}
    return str((await api.ok("POST", "/api/v1/budgets", json=body))["id"])


async def fresh_session(api: Api, user_id: str | None = None, token: str | None = None) -> str:
    """A new session opened by ``token`` (the organization's owner by default)."""
    body = {"user_id": user_id} if user_id else {}
    return str((await api.session(token, **body))["session"]["id"])


@dataclass
class Org:
    """A second organization, its owner, and objects in it that only ever get read."""

    api: Api
    user_id: str
    team_id: str
    key_id: str
    session_id: str


@dataclass
class World:
    """The root organization's callers and read-only objects, and a second organization."""

    services: Services
    root: Api
    other: Org | None = None
    tokens: dict[str, str] = field(default_factory=dict)
    user_ids: dict[str, str] = field(default_factory=dict)
    key_ids: dict[str, str] = field(default_factory=dict)
    session_ids: dict[str, str] = field(default_factory=dict)
    bystander_id: str = ""
    bystander_key_id: str = ""
    team_id: str = ""
    session_id: str = ""

    @property
    def foreign(self) -> Org:
        """The second organization."""
        assert self.other is not None
        return self.other

    async def token_for(self, caller: str) -> str | None:
        """The caller's key. A session caller gets a new session, so no cell can end another's."""
        if caller == "session":
            opened = await self.root.session()
            self.key_ids["session"] = opened["key"]["id"]
            self.session_ids["session"] = opened["session"]["id"]
            self.tokens["session"] = opened["key"]["token"]
        return self.tokens.get(caller)


@pytest.fixture(scope="module", params=["sqlite", "postgresql"])
def world_database_url(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory, sqlite_template: Path
) -> Iterator[str]:
    """A migrated, empty database on each engine, shared by this module's tests."""
    if request.param == "sqlite":
        path = tmp_path_factory.mktemp("role-matrix") / "pilothouse.db"
        shutil.copy(sqlite_template, path)
        yield f"sqlite+aiosqlite:///{path}"
        return
    url: str = request.getfixturevalue("pg_url")
    asyncio.run(_truncate(url))
    yield url


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def world(
    world_database_url: str, tmp_path_factory: pytest.TempPathFactory
) -> AsyncIterator[World]:
    """Started services with a user of every role, a service key and a second organization."""
    data_dir = tmp_path_factory.mktemp("role-matrix-data")
    settings = Settings(database_url=world_database_url, data_dir=data_dir)
    services = build_services(settings, MutableClock())
    await services.start(migrate_store=False)
    try:
        transport = httpx.ASGITransport(app=build_app(settings, services=services))
        async with httpx.AsyncClient(transport=transport, base_url="http://pilothouse.test") as c:
            assert services.bootstrap_result is not None
            assert services.bootstrap_result.owner_token is not None
            world = World(services, Api(c, services.bootstrap_result.owner_token))
            await _arrange(world)
            yield world
    finally:
        await services.close()


async def _arrange(w: World) -> None:
    root = w.root
    for role in HUMANS:
        w.user_ids[role], w.tokens[role] = await root.user_with_key(role)
    w.tokens["service"] = await root.service_key(SERVICE_SCOPES)
    for caller, token in w.tokens.items():
        w.key_ids[caller] = (await root.ok("GET", "/api/v1/whoami", token))["key_id"]
    w.bystander_id = await fresh_user(root)
    w.bystander_key_id = await fresh_key(root, w.bystander_id)
    w.team_id = await fresh_team(root, w.bystander_id)
    w.session_id = await fresh_session(root, w.bystander_id)
    created = await root.ok(
        "POST", "/api/v1/orgs", json={"name": _unique("org"), "owner_email": _email()}
    )
    other = Api(root.client, created["key"]["token"])
    user_id = await fresh_user(other)
    w.other = Org(
        api=other,
        user_id=user_id,
        team_id=await fresh_team(other, user_id),
        key_id=await fresh_key(other, user_id),
        session_id=await fresh_session(other, user_id),
    )


# --- how each row is called: the path and body, with a fresh target where it may change -----


class Call(NamedTuple):
    """The concrete request for one cell."""

    path: str
    body: dict[str, Any] | None = None


Arrange = Callable[[World, str], Awaitable[Call]]


def _fixed(path: str) -> Arrange:
    async def arrange(w: World, caller: str) -> Call:
        return Call(path)

    return arrange


async def _create_org(w: World, caller: str) -> Call:
    return Call("/api/v1/orgs", {"name": _unique("org"), "owner_email": _email()})


async def _create_team(w: World, caller: str) -> Call:
    return Call("/api/v1/teams", {"name": _unique("team")})


async def _read_team(w: World, caller: str) -> Call:
    return Call(f"/api/v1/teams/{w.team_id}")


async def _update_team(w: World, caller: str) -> Call:
    return Call(f"/api/v1/teams/{await fresh_team(w.root)}", {"description": "changed"})


async def _delete_team(w: World, caller: str) -> Call:
    return Call(f"/api/v1/teams/{await fresh_team(w.root)}")


async def _add_member(w: World, caller: str) -> Call:
    team_id = await fresh_team(w.root)
    return Call(f"/api/v1/teams/{team_id}/members", {"user_id": w.bystander_id})


async def _remove_member(w: World, caller: str) -> Call:
    team_id = await fresh_team(w.root, w.bystander_id)
    return Call(f"/api/v1/teams/{team_id}/members/{w.bystander_id}")


async def _create_user(w: World, caller: str) -> Call:
    return Call("/api/v1/users", {"email": _email(), "role": "member"})


async def _read_user(w: World, caller: str) -> Call:
    return Call(f"/api/v1/users/{w.bystander_id}")


async def _update_user(w: World, caller: str) -> Call:
    return Call(f"/api/v1/users/{await fresh_user(w.root)}", {"name": "Renamed"})


async def _set_own_password(w: World, caller: str) -> Call:
    target = w.user_ids.get(caller, w.bystander_id)  # a key with no person: someone's
    return Call(f"/api/v1/users/{target}/password", {"password": NEW_PASSWORD})


async def _set_other_password(w: World, caller: str) -> Call:
    return Call(f"/api/v1/users/{await fresh_user(w.root)}/password", {"password": NEW_PASSWORD})


async def _create_own_key(w: World, caller: str) -> Call:
    return Call("/api/v1/keys", {"name": "my laptop"})


async def _create_key_for_other(w: World, caller: str) -> Call:
    return Call("/api/v1/keys", {"user_id": w.bystander_id})


async def _create_service_key(w: World, caller: str) -> Call:
    return Call("/api/v1/keys", {"kind": "service", "scopes": ["sessions:write"]})


async def _read_own_key(w: World, caller: str) -> Call:
    return Call(f"/api/v1/keys/{w.key_ids.get(caller, w.bystander_key_id)}")


async def _read_other_key(w: World, caller: str) -> Call:
    return Call(f"/api/v1/keys/{w.bystander_key_id}")


async def _revoke_own_key(w: World, caller: str) -> Call:
    # A second key of the caller's, so the key the caller presents stays valid; a session key
    # tries its own (fresh) key; callers with no user of their own target a bystander's key.
    if caller in w.user_ids:
        key_id = await fresh_key(w.root, w.user_ids[caller])
    elif caller == "session":
        key_id = w.key_ids["session"]
    else:
        key_id = await fresh_key(w.root, w.bystander_id)
    return Call(f"/api/v1/keys/{key_id}/revoke")


async def _revoke_other_key(w: World, caller: str) -> Call:
    return Call(f"/api/v1/keys/{await fresh_key(w.root, w.bystander_id)}/revoke")


async def _create_own_session(w: World, caller: str) -> Call:
    return Call("/api/v1/sessions", {"project": "matrix"})


async def _create_session_for_other(w: World, caller: str) -> Call:
    return Call("/api/v1/sessions", {"project": "matrix", "user_id": w.bystander_id})


async def _read_session(w: World, caller: str) -> Call:
    return Call(f"/api/v1/sessions/{w.session_id}")


async def _read_own_session(w: World, caller: str) -> Call:
    return Call(f"/api/v1/sessions/{await _own_session(w, caller)}")


async def _read_timeline(w: World, caller: str) -> Call:
    return Call(f"/api/v1/sessions/{w.session_id}/timeline")


async def _read_own_timeline(w: World, caller: str) -> Call:
    return Call(f"/api/v1/sessions/{await _own_session(w, caller)}/timeline")


async def _own_session(w: World, caller: str) -> str:
    # Humans: a session opened for them; the service key: one it opened; the session key: its
    # own session; no key: anyone's.
    if caller in w.user_ids:
        return await fresh_session(w.root, w.user_ids[caller])
    if caller == "service":
        return await fresh_session(w.root, token=w.tokens["service"])
    if caller == "session":
        return w.session_ids["session"]
    return await fresh_session(w.root, w.bystander_id)


async def _end_own_session(w: World, caller: str) -> Call:
    return Call(f"/api/v1/sessions/{await _own_session(w, caller)}/end", {"outcome": "failed"})


async def _end_other_session(w: World, caller: str) -> Call:
    session_id = await fresh_session(w.root, w.bystander_id)
    return Call(f"/api/v1/sessions/{session_id}/end", {"outcome": "failed"})


async def _revoke_own_session_key(w: World, caller: str) -> Call:
    return Call(f"/api/v1/sessions/{await _own_session(w, caller)}/revoke-key")


async def _revoke_other_session_key(w: World, caller: str) -> Call:
    return Call(f"/api/v1/sessions/{await fresh_session(w.root, w.bystander_id)}/revoke-key")


async def _create_budget(w: World, caller: str) -> Call:
    body = {"scope_kind": "project", "scope_value": _unique("p"), "window": "day", "limit_usd": 1}
    return Call("/api/v1/budgets", body)


async def _read_budget(w: World, caller: str) -> Call:
    return Call(f"/api/v1/budgets/{await fresh_budget(w.root)}")


async def _update_budget(w: World, caller: str) -> Call:
    return Call(f"/api/v1/budgets/{await fresh_budget(w.root)}", {"limit_usd": "1000"})


POLICY = (
    "rules:\n  - id: r\n    channel: shell\n    match: {program: make}\n"
    "    decision: ask\n    reason: r\n"
)
ASKED = "kubectl delete namespace matrix"  # the built-in cloud pack asks about it


async def _put_policy(w: World, caller: str) -> Call:
    return Call("/api/v1/policy", {"source": POLICY, "comment": caller})


async def _validate_policy(w: World, caller: str) -> Call:
    return Call("/api/v1/policy/validate", {"source": POLICY})


async def _simulate_policy(w: World, caller: str) -> Call:
    return Call("/api/v1/policy/simulate", {"source": POLICY, "limit": 10})


async def _check(w: World, caller: str) -> Call:
    return Call("/api/v1/check", {"channel": "shell", "action": {"command": "ls"}})


async def _scan(w: World, caller: str) -> Call:
    return Call("/api/v1/scan", {"content": "hello"})


async def fresh_approval(api: Api, user_id: str | None = None) -> str:
    """A new pending approval in ``api``'s organization, asked by a session acting for
    ``user_id`` (never a caller of the matrix, so any of them may decide it)."""
    opened = await api.session(**({"user_id": user_id} if user_id else {}))
    body = {"channel": "shell", "action": {"command": ASKED}}
    result = await api.ok("POST", "/api/v1/check", opened["key"]["token"], json=body)
    return str(result["approval"]["id"])


async def _read_approval(w: World, caller: str) -> Call:
    return Call(f"/api/v1/approvals/{await fresh_approval(w.root, w.bystander_id)}")


async def _approve(w: World, caller: str) -> Call:
    approval_id = await fresh_approval(w.root, w.bystander_id)
    return Call(f"/api/v1/approvals/{approval_id}/approve", {"comment": caller})


async def _deny(w: World, caller: str) -> Call:
    approval_id = await fresh_approval(w.root, w.bystander_id)
    return Call(f"/api/v1/approvals/{approval_id}/deny", {"comment": caller})


async def fresh_secret(api: Api, use: str = "lease") -> tuple[str, str]:
    """A new secret in ``api``'s organization granted to everyone: (its name, the grant)."""
    name = _unique("secret")
    await api.ok("POST", "/api/v1/secrets", json={"name": name, "value": _unique("value")})
    body = {"subject": "*", "use": use}
    grant = await api.ok("POST", f"/api/v1/secrets/{name}/grants", json=body)
    return name, str(grant["id"])


async def _create_secret(w: World, caller: str) -> Call:
    return Call("/api/v1/secrets", {"name": _unique("secret"), "value": _unique("value")})


async def _read_secret(w: World, caller: str) -> Call:
    return Call(f"/api/v1/secrets/{(await fresh_secret(w.root))[0]}")


async def _secret_info(w: World, caller: str) -> Call:
    return Call(f"/api/v1/secrets/{(await fresh_secret(w.root))[0]}/info")


async def _rotate_secret(w: World, caller: str) -> Call:
    name, _ = await fresh_secret(w.root)
    return Call(f"/api/v1/secrets/{name}/rotate", {"value": _unique("newer")})


async def _delete_secret(w: World, caller: str) -> Call:
    return Call(f"/api/v1/secrets/{(await fresh_secret(w.root))[0]}")


async def _grant_secret(w: World, caller: str) -> Call:
    name, _ = await fresh_secret(w.root)
    return Call(f"/api/v1/secrets/{name}/grants", {"subject": "team:x", "use": "inject"})


async def _revoke_grant(w: World, caller: str) -> Call:
    name, grant_id = await fresh_secret(w.root)
    return Call(f"/api/v1/secrets/{name}/grants/{grant_id}")


async def _approve_pin(w: World, caller: str) -> Call:
    """A tool whose definition changed, withheld until approved (as PinBook records one)."""
    tool = _unique("tool")
    now = w.services.clock.now()
    async with w.services.store.write() as conn:
        await conn.execute(
            mcp_pins.insert().values(
                server="matrix",
                tool=tool,
                sha256="a" * 64,
                definition='{"name": "t"}',
                status="changed",
                seen_sha256="b" * 64,
                seen_definition='{"name": "t", "description": "changed"}',
                first_seen_at=now,
                changed_at=now,
            )
        )
    return Call(f"/api/v1/mcp/pins/matrix/{tool}/approve", {"sha256": "b" * 64})


ARRANGE: dict[tuple[str, str, str], Arrange] = {
    ("GET", "/api/v1/whoami", "-"): _fixed("/api/v1/whoami"),
    ("GET", "/api/v1/org", "-"): _fixed("/api/v1/org"),
    ("POST", "/api/v1/orgs", "-"): _create_org,
    ("GET", "/api/v1/teams", "-"): _fixed("/api/v1/teams"),
    ("POST", "/api/v1/teams", "-"): _create_team,
    ("GET", "/api/v1/teams/{team_id}", "-"): _read_team,
    ("PATCH", "/api/v1/teams/{team_id}", "-"): _update_team,
    ("DELETE", "/api/v1/teams/{team_id}", "-"): _delete_team,
    ("POST", "/api/v1/teams/{team_id}/members", "-"): _add_member,
    ("DELETE", "/api/v1/teams/{team_id}/members/{user_id}", "-"): _remove_member,
    ("GET", "/api/v1/users", "-"): _fixed("/api/v1/users"),
    ("POST", "/api/v1/users", "-"): _create_user,
    ("GET", "/api/v1/users/{user_id}", "-"): _read_user,
    ("PATCH", "/api/v1/users/{user_id}", "-"): _update_user,
    ("POST", "/api/v1/users/{user_id}/password", "own"): _set_own_password,
    ("POST", "/api/v1/users/{user_id}/password", "other"): _set_other_password,
    ("GET", "/api/v1/keys", "-"): _fixed("/api/v1/keys"),
    ("POST", "/api/v1/keys", "own"): _create_own_key,
    ("POST", "/api/v1/keys", "other"): _create_key_for_other,
    ("POST", "/api/v1/keys", "service"): _create_service_key,
    ("GET", "/api/v1/keys/{key_id}", "own"): _read_own_key,
    ("GET", "/api/v1/keys/{key_id}", "other"): _read_other_key,
    ("POST", "/api/v1/keys/{key_id}/revoke", "own"): _revoke_own_key,
    ("POST", "/api/v1/keys/{key_id}/revoke", "other"): _revoke_other_key,
    ("GET", "/api/v1/sessions", "-"): _fixed("/api/v1/sessions"),
    ("POST", "/api/v1/sessions", "own"): _create_own_session,
    ("POST", "/api/v1/sessions", "other"): _create_session_for_other,
    ("GET", "/api/v1/sessions/{session_id}", "-"): _read_session,
    ("GET", "/api/v1/sessions/{session_id}", "own"): _read_own_session,
    ("GET", "/api/v1/sessions/{session_id}/timeline", "-"): _read_timeline,
    ("GET", "/api/v1/sessions/{session_id}/timeline", "own"): _read_own_timeline,
    ("POST", "/api/v1/sessions/{session_id}/end", "own"): _end_own_session,
    ("POST", "/api/v1/sessions/{session_id}/end", "other"): _end_other_session,
    ("POST", "/api/v1/sessions/{session_id}/revoke-key", "own"): _revoke_own_session_key,
    ("POST", "/api/v1/sessions/{session_id}/revoke-key", "other"): _revoke_other_session_key,
    ("GET", "/api/v1/audit/events", "-"): _fixed("/api/v1/audit/events"),
    ("GET", "/api/v1/audit/verify", "-"): _fixed("/api/v1/audit/verify"),
    ("GET", "/api/v1/usage", "-"): _fixed("/api/v1/usage"),
    ("GET", "/api/v1/spend", "-"): _fixed("/api/v1/spend?group_by=user,repo,label:use_case"),
    ("GET", "/api/v1/budgets", "-"): _fixed("/api/v1/budgets"),
    ("POST", "/api/v1/budgets", "-"): _create_budget,
    ("GET", "/api/v1/budgets/{budget_id}", "-"): _read_budget,
    ("PATCH", "/api/v1/budgets/{budget_id}", "-"): _update_budget,
    ("DELETE", "/api/v1/budgets/{budget_id}", "-"): _read_budget,
    ("GET", "/api/v1/policy", "-"): _fixed("/api/v1/policy"),
    ("PUT", "/api/v1/policy", "-"): _put_policy,
    ("POST", "/api/v1/policy/validate", "-"): _validate_policy,
    ("GET", "/api/v1/policy/versions", "-"): _fixed("/api/v1/policy/versions"),
    ("GET", "/api/v1/policy/versions/{version}", "-"): _fixed("/api/v1/policy/versions/0"),
    ("POST", "/api/v1/policy/simulate", "-"): _simulate_policy,
    ("POST", "/api/v1/check", "-"): _check,
    ("POST", "/api/v1/scan", "-"): _scan,
    ("GET", "/api/v1/approvals", "-"): _fixed("/api/v1/approvals"),
    ("GET", "/api/v1/approvals/{approval_id}", "-"): _read_approval,
    ("POST", "/api/v1/approvals/{approval_id}/approve", "-"): _approve,
    ("POST", "/api/v1/approvals/{approval_id}/deny", "-"): _deny,
    ("GET", "/api/v1/secrets", "-"): _fixed("/api/v1/secrets"),
    ("POST", "/api/v1/secrets", "-"): _create_secret,
    ("POST", "/api/v1/secrets/rewrap", "-"): _fixed("/api/v1/secrets/rewrap"),
    ("GET", "/api/v1/secrets/{name}", "-"): _read_secret,
    ("GET", "/api/v1/secrets/{name}/info", "-"): _secret_info,
    ("POST", "/api/v1/secrets/{name}/rotate", "-"): _rotate_secret,
    ("DELETE", "/api/v1/secrets/{name}", "-"): _delete_secret,
    ("POST", "/api/v1/secrets/{name}/grants", "-"): _grant_secret,
    ("DELETE", "/api/v1/secrets/{name}/grants/{grant_id}", "-"): _revoke_grant,
    ("GET", "/api/v1/mcp/servers", "-"): _fixed("/api/v1/mcp/servers"),
    ("GET", "/api/v1/mcp/tools", "-"): _fixed("/api/v1/mcp/tools"),
    ("GET", "/api/v1/mcp/pins", "-"): _fixed("/api/v1/mcp/pins"),
    ("POST", "/api/v1/mcp/pins/{server}/{tool}/approve", "-"): _approve_pin,
}


# --- the same routes aimed at the second organization's objects -----------------------------


async def _foreign_team(w: World, caller: str) -> Call:
    return Call(f"/api/v1/teams/{w.foreign.team_id}")


async def _update_foreign_team(w: World, caller: str) -> Call:
    return Call(f"/api/v1/teams/{await fresh_team(w.foreign.api)}", {"name": "taken over"})


async def _delete_foreign_team(w: World, caller: str) -> Call:
    return Call(f"/api/v1/teams/{await fresh_team(w.foreign.api)}")


async def _add_foreign_member_to_foreign_team(w: World, caller: str) -> Call:
    team_id = await fresh_team(w.foreign.api)
    return Call(f"/api/v1/teams/{team_id}/members", {"user_id": w.foreign.user_id})


async def _add_foreign_member_to_own_team(w: World, caller: str) -> Call:
    team_id = await fresh_team(w.root)
    return Call(f"/api/v1/teams/{team_id}/members", {"user_id": w.foreign.user_id})


async def _remove_foreign_member(w: World, caller: str) -> Call:
    team_id = await fresh_team(w.foreign.api, w.foreign.user_id)
    return Call(f"/api/v1/teams/{team_id}/members/{w.foreign.user_id}")


async def _foreign_user(w: World, caller: str) -> Call:
    return Call(f"/api/v1/users/{w.foreign.user_id}")


async def _update_foreign_user(w: World, caller: str) -> Call:
    return Call(f"/api/v1/users/{await fresh_user(w.foreign.api)}", {"disabled": True})


async def _create_key_for_foreign_user(w: World, caller: str) -> Call:
    return Call("/api/v1/keys", {"user_id": w.foreign.user_id})


async def _foreign_key(w: World, caller: str) -> Call:
    return Call(f"/api/v1/keys/{w.foreign.key_id}")


async def _revoke_foreign_key(w: World, caller: str) -> Call:
    key_id = await fresh_key(w.foreign.api, w.foreign.user_id)
    return Call(f"/api/v1/keys/{key_id}/revoke")


async def _create_session_in_foreign_team(w: World, caller: str) -> Call:
    return Call("/api/v1/sessions", {"team_id": w.foreign.team_id})


async def _create_session_for_foreign_user(w: World, caller: str) -> Call:
    return Call("/api/v1/sessions", {"user_id": w.foreign.user_id})


async def _foreign_session(w: World, caller: str) -> Call:
    return Call(f"/api/v1/sessions/{w.foreign.session_id}")


async def _foreign_timeline(w: World, caller: str) -> Call:
    return Call(f"/api/v1/sessions/{w.foreign.session_id}/timeline")


async def _set_foreign_password(w: World, caller: str) -> Call:
    return Call(f"/api/v1/users/{w.foreign.user_id}/password", {"password": NEW_PASSWORD})


async def _end_foreign_session(w: World, caller: str) -> Call:
    session_id = await fresh_session(w.foreign.api, w.foreign.user_id)
    return Call(f"/api/v1/sessions/{session_id}/end", {"outcome": "cancelled"})


async def _revoke_foreign_session_key(w: World, caller: str) -> Call:
    session_id = await fresh_session(w.foreign.api, w.foreign.user_id)
    return Call(f"/api/v1/sessions/{session_id}/revoke-key")


async def _foreign_budget(w: World, caller: str) -> Call:
    return Call(f"/api/v1/budgets/{await fresh_budget(w.foreign.api)}")


async def _update_foreign_budget(w: World, caller: str) -> Call:
    return Call(f"/api/v1/budgets/{await fresh_budget(w.foreign.api)}", {"limit_usd": "1000"})


async def _foreign_policy_version(w: World, caller: str) -> Call:
    # A version only the other organization has: one past the root organization's newest.
    ours = (await w.root.ok("GET", "/api/v1/policy"))["version"]
    theirs = (await w.foreign.api.ok("GET", "/api/v1/policy"))["version"]
    while theirs <= ours:
        stored = await w.foreign.api.ok("PUT", "/api/v1/policy", json={"source": POLICY})
        theirs = stored["version"]
    return Call(f"/api/v1/policy/versions/{theirs}")


async def _check_foreign_session(w: World, caller: str) -> Call:
    body = {"channel": "shell", "action": {"command": "ls"}, "session_id": w.foreign.session_id}
    return Call("/api/v1/check", body)


async def _foreign_approval(w: World, caller: str) -> Call:
    return Call(f"/api/v1/approvals/{await fresh_approval(w.foreign.api, w.foreign.user_id)}")


async def _approve_foreign(w: World, caller: str) -> Call:
    approval_id = await fresh_approval(w.foreign.api, w.foreign.user_id)
    return Call(f"/api/v1/approvals/{approval_id}/approve", {})


async def _deny_foreign(w: World, caller: str) -> Call:
    approval_id = await fresh_approval(w.foreign.api, w.foreign.user_id)
    return Call(f"/api/v1/approvals/{approval_id}/deny", {})


async def _foreign_secret_info(w: World, caller: str) -> Call:
    return Call(f"/api/v1/secrets/{(await fresh_secret(w.foreign.api))[0]}/info")


async def _rotate_foreign_secret(w: World, caller: str) -> Call:
    name, _ = await fresh_secret(w.foreign.api)
    return Call(f"/api/v1/secrets/{name}/rotate", {"value": _unique("taken-over")})


async def _delete_foreign_secret(w: World, caller: str) -> Call:
    return Call(f"/api/v1/secrets/{(await fresh_secret(w.foreign.api))[0]}")


async def _grant_foreign_secret(w: World, caller: str) -> Call:
    name, _ = await fresh_secret(w.foreign.api)
    return Call(f"/api/v1/secrets/{name}/grants", {"subject": "*", "use": "lease"})


async def _revoke_foreign_grant(w: World, caller: str) -> Call:
    name, grant_id = await fresh_secret(w.foreign.api)
    return Call(f"/api/v1/secrets/{name}/grants/{grant_id}")


async def _revoke_foreign_grant_of_own_secret(w: World, caller: str) -> Call:
    _, grant_id = await fresh_secret(w.foreign.api)
    name, _ = await fresh_secret(w.root)
    return Call(f"/api/v1/secrets/{name}/grants/{grant_id}")


ARRANGE_CROSS_ORG: dict[tuple[str, str, str], Arrange] = {
    ("GET", "/api/v1/teams/{team_id}", "-"): _foreign_team,
    ("PATCH", "/api/v1/teams/{team_id}", "-"): _update_foreign_team,
    ("DELETE", "/api/v1/teams/{team_id}", "-"): _delete_foreign_team,
    ("POST", "/api/v1/teams/{team_id}/members", "-"): _add_foreign_member_to_foreign_team,
    ("POST", "/api/v1/teams/{team_id}/members", "user"): _add_foreign_member_to_own_team,
    ("DELETE", "/api/v1/teams/{team_id}/members/{user_id}", "-"): _remove_foreign_member,
    ("GET", "/api/v1/users/{user_id}", "-"): _foreign_user,
    ("PATCH", "/api/v1/users/{user_id}", "-"): _update_foreign_user,
    ("POST", "/api/v1/users/{user_id}/password", "-"): _set_foreign_password,
    ("POST", "/api/v1/keys", "user"): _create_key_for_foreign_user,
    ("GET", "/api/v1/keys/{key_id}", "-"): _foreign_key,
    ("POST", "/api/v1/keys/{key_id}/revoke", "-"): _revoke_foreign_key,
    ("POST", "/api/v1/sessions", "team"): _create_session_in_foreign_team,
    ("POST", "/api/v1/sessions", "user"): _create_session_for_foreign_user,
    ("GET", "/api/v1/sessions/{session_id}", "-"): _foreign_session,
    ("GET", "/api/v1/sessions/{session_id}/timeline", "-"): _foreign_timeline,
    ("POST", "/api/v1/sessions/{session_id}/end", "-"): _end_foreign_session,
    ("POST", "/api/v1/sessions/{session_id}/revoke-key", "-"): _revoke_foreign_session_key,
    ("GET", "/api/v1/budgets/{budget_id}", "-"): _foreign_budget,
    ("PATCH", "/api/v1/budgets/{budget_id}", "-"): _update_foreign_budget,
    ("DELETE", "/api/v1/budgets/{budget_id}", "-"): _foreign_budget,
    ("GET", "/api/v1/policy/versions/{version}", "-"): _foreign_policy_version,
    ("POST", "/api/v1/check", "session"): _check_foreign_session,
    ("GET", "/api/v1/approvals/{approval_id}", "-"): _foreign_approval,
    ("POST", "/api/v1/approvals/{approval_id}/approve", "-"): _approve_foreign,
    ("POST", "/api/v1/approvals/{approval_id}/deny", "-"): _deny_foreign,
    ("GET", "/api/v1/secrets/{name}/info", "-"): _foreign_secret_info,
    ("POST", "/api/v1/secrets/{name}/rotate", "-"): _rotate_foreign_secret,
    ("DELETE", "/api/v1/secrets/{name}", "-"): _delete_foreign_secret,
    ("POST", "/api/v1/secrets/{name}/grants", "-"): _grant_foreign_secret,
    ("DELETE", "/api/v1/secrets/{name}/grants/{grant_id}", "-"): _revoke_foreign_grant,
    ("DELETE", "/api/v1/secrets/{name}/grants/{grant_id}", "grant"): (
        _revoke_foreign_grant_of_own_secret
    ),
}


async def _send(w: World, method: str, call: Call, token: str | None) -> httpx.Response:
    headers = bearer(token) if token else {}
    return await w.root.client.request(method, call.path, json=call.body, headers=headers)


async def _admin_routes(w: World) -> set[tuple[str, str]]:
    schema = (await w.root.client.get("/api/openapi.json")).json()
    return {
        (method.upper(), path)
        for path, operations in schema["paths"].items()
        if path.startswith("/api/v1/")
        for method in operations
    }


# --- the tests ------------------------------------------------------------------------------


@pytest.mark.asyncio(loop_scope="module")
async def test_the_matrix_lists_every_admin_route_and_no_other(world: World) -> None:
    routes = await _admin_routes(world)
    listed = {(cell.method, cell.path) for cell in MATRIX}
    assert routes - listed == set(), "admin routes missing from MATRIX_TABLE"
    assert listed - routes == set(), "MATRIX_TABLE lists routes the app does not have"
    assert {(c.method, c.path, c.variant) for c in MATRIX} == set(ARRANGE)


@pytest.mark.asyncio(loop_scope="module")
async def test_every_route_that_names_an_object_is_checked_across_organizations(
    world: World,
) -> None:
    naming_an_object = {(m, p) for m, p in await _admin_routes(world) if "{" in p} - NOT_404
    checked = {(cell.method, cell.path) for cell in CROSS_ORG}
    assert naming_an_object - checked == set(), "routes missing from CROSS_ORG_TABLE"
    assert {(c.method, c.path, c.variant) for c in CROSS_ORG} == set(ARRANGE_CROSS_ORG)


@pytest.mark.asyncio(loop_scope="module")
@pytest.mark.parametrize("cell", MATRIX, ids=_cell_id)
async def test_each_caller_gets_the_intended_status_from_each_admin_route(
    world: World, cell: Cell
) -> None:
    token = await world.token_for(cell.caller)
    call = await ARRANGE[(cell.method, cell.path, cell.variant)](world, cell.caller)
    refused = cell.status >= 400
    before = await store_snapshot(world.services.store) if refused else None
    response = await _send(world, cell.method, call, token)
    assert response.status_code == cell.status, response.text[:300]
    if refused:
        assert response.json()["error"]["code"] == ERROR_CODES[cell.status]
        assert await store_snapshot(world.services.store) == before, "a refused call changed data"


@pytest.mark.asyncio(loop_scope="module")
@pytest.mark.parametrize("cell", CROSS_ORG, ids=_cell_id)
async def test_objects_of_another_organization_are_not_found_and_stay_unchanged(
    world: World, cell: Cell
) -> None:
    token = await world.token_for(cell.caller)
    call = await ARRANGE_CROSS_ORG[(cell.method, cell.path, cell.variant)](world, cell.caller)
    before = await store_snapshot(world.services.store)
    response = await _send(world, cell.method, call, token)
    assert response.status_code == 404, response.text[:300]
    assert response.json()["error"]["code"] == "not_found"
    assert await store_snapshot(world.services.store) == before


async def _list_all(w: World, path: str, token: str | None = None) -> list[dict[str, Any]]:
    items: list[dict[str, Any]] = []
    cursor = ""
    while True:
        page = await w.root.ok("GET", f"{path}?limit=500{cursor}", token)
        items += page["data"]
        if page["next_cursor"] is None:
            return items
        cursor = f"&cursor={page['next_cursor']}"


@pytest.mark.asyncio(loop_scope="module")
@pytest.mark.parametrize(
    ("path", "foreign_id"),
    [
        ("/api/v1/teams", "team_id"),
        ("/api/v1/users", "user_id"),
        ("/api/v1/keys", "key_id"),
        ("/api/v1/sessions", "session_id"),
    ],
)
async def test_lists_show_only_the_callers_organization(
    world: World, path: str, foreign_id: str
) -> None:
    object_id = getattr(world.foreign, foreign_id)
    listed_by_owner = await _list_all(world, path, world.tokens["owner"])
    listed_by_other = await _list_all(world, path, world.foreign.api.owner)
    assert object_id not in {item["id"] for item in listed_by_owner}
    assert object_id in {item["id"] for item in listed_by_other}


@pytest.mark.asyncio(loop_scope="module")
@pytest.mark.parametrize("foreign_id", ["user_id", "team_id", "session_id"])
async def test_audit_events_show_only_the_callers_organization(
    world: World, foreign_id: str
) -> None:
    path = f"/api/v1/audit/events?target_id={getattr(world.foreign, foreign_id)}"
    by_owner = await world.root.ok("GET", path, world.tokens["owner"])
    by_other = await world.foreign.api.ok("GET", path)
    assert by_owner["data"] == []
    assert by_other["data"] != []


@pytest.mark.asyncio(loop_scope="module")
async def test_an_owner_of_another_organization_cannot_create_organizations(world: World) -> None:
    body = {"name": _unique("org"), "owner_email": _email()}
    response = await world.foreign.api.call("POST", "/api/v1/orgs", json=body)
    assert response.status_code == 403, response.text[:300]
    assert response.json()["error"]["code"] == "forbidden"


SEES_OTHERS_KEYS = {
    "owner": True,
    "admin": True,
    "security": True,
    "auditor": True,
    "finance": False,
    "member": False,
}


@pytest.mark.asyncio(loop_scope="module")
@pytest.mark.parametrize(("caller", "sees_others"), SEES_OTHERS_KEYS.items())
async def test_only_roles_that_read_all_keys_list_other_users_keys(
    world: World, caller: str, sees_others: bool
) -> None:
    key_ids = {key["id"] for key in await _list_all(world, "/api/v1/keys", world.tokens[caller])}
    assert world.key_ids[caller] in key_ids
    assert (world.bystander_key_id in key_ids) is sees_others
