"""Identity routes under /api/v1: who am I, organizations, teams, users, keys, sessions."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Depends, Query, Request, Response
from pydantic import BaseModel, Field

from pilothouse.api.deps import ERROR_RESPONSES, context_of, require, services_of
from pilothouse.api.types import (
    Body,
    Limit,
    Moment,
    ObjectId,
    Page,
    Password,
    Repository,
    ShortText,
)
from pilothouse.context import RequestContext
from pilothouse.identity import apikeys, orgs, sessions, teams, timeline, users
from pilothouse.identity.roles import Permission, Role
from pilothouse.identity.tokens import KeyKind
from pilothouse.services import Services
from pilothouse.web import passwords

router = APIRouter(prefix="/api/v1", responses=ERROR_RESPONSES)

Svc = Annotated[Services, Depends(services_of)]
Cursor = Annotated[ObjectId | None, Query(description="next_cursor from the previous page")]
PageSize = Annotated[Limit, Query(description="items per page")]


class WhoAmI(BaseModel):
    """The authenticated caller."""

    org_id: str
    kind: KeyKind
    key_id: str
    key_prefix: str
    user_id: str | None
    role: Role | None
    scopes: list[str]
    session_id: str | None
    labels: dict[str, str]


@router.get("/whoami", tags=["identity"], summary="The authenticated caller")
async def whoami(request: Request) -> WhoAmI:
    """Who the presented key authenticates as (works for session keys too)."""
    p = context_of(request).principal
    return WhoAmI(
        org_id=p.org_id,
        kind=p.kind,
        key_id=p.key_id,
        key_prefix=p.key_prefix,
        user_id=p.user_id,
        role=p.role,
        scopes=sorted(p.scopes),
        session_id=p.session_id,
        labels=dict(p.labels),
    )


# --- organizations ---------------------------------------------------------------------------


@router.get("/org", tags=["orgs"], summary="The caller's organization")
async def get_org(svc: Svc, ctx: RequestContext = require(Permission.ORG_READ)) -> orgs.OrgView:
    """The caller's organization."""
    return await orgs.current_org(svc.store, ctx)


@router.post("/orgs", tags=["orgs"], status_code=201, summary="Create an organization")
async def create_org(
    body: orgs.OrgCreate, svc: Svc, ctx: RequestContext = require(Permission.ORG_CREATE)
) -> orgs.OrgCreated:
    """Make a new organization with an owner; root-organization owners only."""
    return await orgs.create_org(svc.store, ctx, body)


# --- teams -----------------------------------------------------------------------------------


@router.get("/teams", tags=["teams"], summary="List teams")
async def list_teams(
    svc: Svc,
    ctx: RequestContext = require(Permission.TEAMS_READ),
    limit: PageSize = 50,
    cursor: Cursor = None,
) -> Page[teams.TeamView]:
    """Teams of the organization, newest first."""
    return await teams.list_teams(svc.store, ctx, limit=limit, cursor=cursor)


@router.post("/teams", tags=["teams"], status_code=201, summary="Create a team")
async def create_team(
    body: teams.TeamCreate, svc: Svc, ctx: RequestContext = require(Permission.TEAMS_WRITE)
) -> teams.TeamView:
    """Make a team."""
    return await teams.create_team(svc.store, ctx, body)


@router.get("/teams/{team_id}", tags=["teams"], summary="Show a team")
async def get_team(
    team_id: ObjectId, svc: Svc, ctx: RequestContext = require(Permission.TEAMS_READ)
) -> teams.TeamView:
    """One team."""
    return await teams.read_team(svc.store, ctx, team_id)


@router.patch("/teams/{team_id}", tags=["teams"], summary="Update a team")
async def update_team(
    team_id: ObjectId,
    body: teams.TeamUpdate,
    svc: Svc,
    ctx: RequestContext = require(Permission.TEAMS_WRITE),
) -> teams.TeamView:
    """Rename a team or change its description."""
    return await teams.update_team(svc.store, ctx, team_id, body)


@router.delete("/teams/{team_id}", tags=["teams"], status_code=204, summary="Delete a team")
async def delete_team(
    team_id: ObjectId, svc: Svc, ctx: RequestContext = require(Permission.TEAMS_WRITE)
) -> Response:
    """Delete a team that has no sessions."""
    await teams.delete_team(svc.store, ctx, team_id)
    return Response(status_code=204)


@router.post("/teams/{team_id}/members", tags=["teams"], summary="Add a team member")
async def add_member(
    team_id: ObjectId,
    body: teams.MemberAdd,
    svc: Svc,
    ctx: RequestContext = require(Permission.TEAMS_WRITE),
) -> teams.TeamView:
    """Put a user in a team."""
    return await teams.add_team_member(svc.store, ctx, team_id, body)


@router.delete("/teams/{team_id}/members/{user_id}", tags=["teams"], summary="Remove a member")
async def remove_member(
    team_id: ObjectId,
    user_id: ObjectId,
    svc: Svc,
    ctx: RequestContext = require(Permission.TEAMS_WRITE),
) -> teams.TeamView:
    """Take a user out of a team."""
    return await teams.remove_team_member(svc.store, ctx, team_id, user_id)


# --- users -----------------------------------------------------------------------------------


@router.get("/users", tags=["users"], summary="List users")
async def list_users(
    svc: Svc,
    ctx: RequestContext = require(Permission.USERS_READ),
    role: Role | None = None,
    include_disabled: bool = False,
    limit: PageSize = 50,
    cursor: Cursor = None,
) -> Page[users.UserView]:
    """Users of the organization, newest first."""
    return await users.list_users(
        svc.store, ctx, role=role, include_disabled=include_disabled, limit=limit, cursor=cursor
    )


@router.post("/users", tags=["users"], status_code=201, summary="Create a user")
async def create_user(
    body: users.UserCreate, svc: Svc, ctx: RequestContext = require(Permission.USERS_WRITE)
) -> users.UserView:
    """Add a user with a role."""
    return await users.create_user(svc.store, ctx, body)


@router.get("/users/{user_id}", tags=["users"], summary="Show a user")
async def get_user(
    user_id: ObjectId, svc: Svc, ctx: RequestContext = require(Permission.USERS_READ)
) -> users.UserView:
    """One user."""
    async with svc.store.read() as conn:
        return await users.get_user(conn, ctx.org_id, user_id)


@router.patch("/users/{user_id}", tags=["users"], summary="Update a user")
async def update_user(
    user_id: ObjectId,
    body: users.UserUpdate,
    svc: Svc,
    ctx: RequestContext = require(Permission.USERS_WRITE),
) -> users.UserView:
    """Change a user's name, role, or disable them (their keys stop working at once)."""
    return await users.update_user(svc.store, svc.invalidations, ctx, user_id, body)


class PasswordSet(Body):
    """A new dashboard password."""

    password: Password = Field(description="At least 12 characters.")


@router.post(
    "/users/{user_id}/password",
    tags=["users"],
    status_code=204,
    summary="Set a user's dashboard password",
)
async def set_password(
    user_id: ObjectId,
    body: PasswordSet,
    svc: Svc,
    ctx: RequestContext = require(Permission.USERS_READ),
) -> None:
    """Set the password a person signs in to the dashboard with: your own, or (with
    users:write) another's; an owner's only by an owner. Ends their signed-in sessions.
    Audited without the password."""
    await passwords.change_password(svc.store, ctx, user_id, body.password)


# --- keys ------------------------------------------------------------------------------------


@router.get("/keys", tags=["keys"], summary="List API keys")
async def list_keys(
    svc: Svc,
    ctx: RequestContext = require(Permission.KEYS_OWN),
    kind: KeyKind | None = None,
    user_id: ObjectId | None = None,
    include_revoked: bool = False,
    limit: PageSize = 50,
    cursor: Cursor = None,
) -> Page[apikeys.KeyView]:
    """Keys of the organization (all, with keys:read_all; otherwise your own)."""
    return await apikeys.list_keys(
        svc.store,
        ctx,
        kind=kind,
        user_id=user_id,
        include_revoked=include_revoked,
        limit=limit,
        cursor=cursor,
    )


@router.post("/keys", tags=["keys"], status_code=201, summary="Create an API key")
async def create_key(
    body: apikeys.KeyCreate, svc: Svc, ctx: RequestContext = require(Permission.KEYS_OWN)
) -> apikeys.KeyCreated:
    """Make a user or service key; the token is in this response only."""
    return await apikeys.create_key(svc.store, ctx, body)


@router.get("/keys/{key_id}", tags=["keys"], summary="Show an API key")
async def get_key(
    key_id: ObjectId, svc: Svc, ctx: RequestContext = require(Permission.KEYS_OWN)
) -> apikeys.KeyView:
    """One key (never its secret)."""
    return await apikeys.read_key(svc.store, ctx, key_id)


@router.post("/keys/{key_id}/revoke", tags=["keys"], summary="Revoke an API key")
async def revoke_key(
    key_id: ObjectId, svc: Svc, ctx: RequestContext = require(Permission.KEYS_OWN)
) -> apikeys.KeyView:
    """Revoke a key: refused at once on this node, within two seconds on every replica."""
    return await apikeys.revoke_key(svc.store, svc.invalidations, ctx, key_id)


# --- sessions --------------------------------------------------------------------------------


@router.get("/sessions", tags=["sessions"], summary="List agent sessions")
async def list_sessions(
    svc: Svc,
    ctx: RequestContext = require(Permission.SESSIONS_READ),
    status: sessions.SessionStatus | None = None,
    team_id: ObjectId | None = None,
    user_id: ObjectId | None = None,
    project: Annotated[ShortText | None, Query()] = None,
    use_case: Annotated[ShortText | None, Query()] = None,
    repository: Annotated[Repository | None, Query()] = None,
    agent_kind: Annotated[ShortText | None, Query()] = None,
    label: Annotated[
        list[str] | None, Query(description="key=value; repeat to AND", max_length=32)
    ] = None,
    created_after: Moment | None = None,
    created_before: Moment | None = None,
    limit: PageSize = 50,
    cursor: Cursor = None,
) -> Page[sessions.SessionView]:
    """Sessions of the organization, newest first, narrowed by any filters given."""
    filters = sessions.SessionFilters(
        status=status,
        team_id=team_id,
        user_id=user_id,
        project=project,
        use_case=use_case,
        repository=repository,
        agent_kind=agent_kind,
        labels=sessions.parse_label_filters(label or []),
        created_after=created_after,
        created_before=created_before,
    )
    return await sessions.list_sessions(svc.store, ctx, filters, limit=limit, cursor=cursor)


@router.post("/sessions", tags=["sessions"], status_code=201, summary="Open an agent session")
async def create_session(
    body: sessions.SessionCreate,
    svc: Svc,
    ctx: RequestContext = require(Permission.SESSIONS_WRITE),
) -> sessions.SessionCreated:
    """Open a session with its context; the session key is in this response only."""
    return await sessions.create_session(svc.store, ctx, body)


@router.get("/sessions/{session_id}", tags=["sessions"], summary="Show an agent session")
async def get_session(
    session_id: ObjectId, svc: Svc, ctx: RequestContext = require(Permission.SESSIONS_READ)
) -> sessions.SessionView:
    """One session."""
    return await sessions.read_session(svc.store, ctx, session_id)


@router.get(
    "/sessions/{session_id}/timeline", tags=["sessions"], summary="An agent session's timeline"
)
async def get_session_timeline(
    session_id: ObjectId, svc: Svc, ctx: RequestContext = require(Permission.SESSIONS_READ)
) -> timeline.Timeline:
    """Everything the session did, in order: its LLM calls (tokens, cost, model, latency), its
    policy checks and their decisions, approvals, MCP calls, secret leases and taint flags,
    with totals. A member reads their own sessions' only."""
    await svc.usage_settled()
    return await timeline.session_timeline(svc.store, ctx, session_id)


@router.post("/sessions/{session_id}/end", tags=["sessions"], summary="End an agent session")
async def end_session(
    session_id: ObjectId,
    body: sessions.SessionEnd,
    svc: Svc,
    ctx: RequestContext = require(Permission.SESSIONS_WRITE),
) -> sessions.SessionView:
    """End a session with its outcome; its key stops working."""
    return await sessions.end_session(svc.store, svc.invalidations, ctx, session_id, body)


@router.post(
    "/sessions/{session_id}/revoke-key", tags=["sessions"], summary="Revoke a session's key"
)
async def revoke_session_key(
    session_id: ObjectId, svc: Svc, ctx: RequestContext = require(Permission.SESSIONS_WRITE)
) -> sessions.SessionView:
    """Revoke the session's key without ending the session."""
    return await sessions.revoke_session_key(svc.store, svc.invalidations, ctx, session_id)
