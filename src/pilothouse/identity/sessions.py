"""Agent sessions: one run of one agent on one task, the principal everything is charged to."""

from __future__ import annotations

import json
from datetime import datetime, timedelta
from enum import StrEnum
from typing import Annotated, Any

from pydantic import BaseModel, Field
from sqlalchemy import and_, insert, select, update
from sqlalchemy.ext.asyncio import AsyncConnection

from pilothouse.api.pagination import page_query, split_page
from pilothouse.api.types import Body, Labels, NameList, ObjectId, Page, Repository, ShortText, Text
from pilothouse.context import RequestContext
from pilothouse.errors import Conflict, Forbidden, NotFound, ValidationFailed
from pilothouse.identity.apikeys import KeyCreated, insert_key, revoke_in
from pilothouse.identity.labels import LABEL_KEY_RE
from pilothouse.identity.roles import Permission, Role
from pilothouse.identity.tables import agent_sessions, api_keys, session_labels
from pilothouse.identity.teams import get_team
from pilothouse.identity.tokens import KeyKind
from pilothouse.identity.users import get_user
from pilothouse.ids import new_id
from pilothouse.secrets.tables import secret_leases
from pilothouse.store.engine import Store
from pilothouse.store.notify import Invalidations

DEFAULT_TTL = timedelta(hours=8)
MAX_TTL = timedelta(days=7)


class SessionStatus(StrEnum):
    """Where a session is in its life."""

    ACTIVE = "active"
    ENDED = "ended"


class Outcome(StrEnum):
    """How a session ended."""

    SUCCEEDED = "succeeded"
    FAILED = "failed"
    CANCELLED = "cancelled"
    TIMED_OUT = "timed_out"
    UNKNOWN = "unknown"


class Agent(BaseModel):
    """Which agent runs the session."""

    kind: ShortText | None = None
    version: ShortText | None = None


class AgentIn(Body, Agent):
    """Which agent runs the session (request form)."""


class SessionCreate(Body):
    """A new agent session and its context."""

    team_id: ObjectId | None = None
    user_id: ObjectId | None = None
    project: ShortText | None = None
    use_case: ShortText | None = None
    repository: Repository | None = None
    branch: ShortText | None = None
    ticket: ShortText | None = None
    agent: AgentIn = AgentIn()
    skills: NameList = []
    plugins: NameList = []
    labels: Labels = {}
    ttl_seconds: Annotated[int, Field(ge=60, le=int(MAX_TTL.total_seconds()))] = int(
        DEFAULT_TTL.total_seconds()
    )


class SessionEnd(Body):
    """How the session ended."""

    outcome: Outcome = Outcome.SUCCEEDED
    detail: Text | None = None


class SessionView(BaseModel):
    """An agent session as the API shows it."""

    id: str
    status: SessionStatus
    team_id: str | None
    user_id: str | None
    project: str | None
    use_case: str | None
    repository: str | None
    branch: str | None
    ticket: str | None
    agent: Agent
    skills: list[str]
    plugins: list[str]
    labels: dict[str, str]
    outcome: Outcome | None
    outcome_detail: str | None
    key_prefix: str | None
    created_at: datetime
    expires_at: datetime
    ended_at: datetime | None


class SessionCreated(BaseModel):
    """A new session and its key (shown once)."""

    session: SessionView
    key: KeyCreated


class SessionFilters(BaseModel):
    """What a session list can be narrowed by."""

    status: SessionStatus | None = None
    team_id: str | None = None
    user_id: str | None = None
    project: str | None = None
    use_case: str | None = None
    repository: str | None = None
    agent_kind: str | None = None
    labels: list[tuple[str, str]] = []
    created_after: datetime | None = None
    created_before: datetime | None = None


def parse_label_filters(values: list[str]) -> list[tuple[str, str]]:
    """``["k=v", ...]`` query values -> pairs (all must hold); ValidationFailed names a bad one."""
    pairs: list[tuple[str, str]] = []
    for item in values:
        key, sep, value = item.partition("=")
        if not sep or not LABEL_KEY_RE.match(key) or not value or "\x00" in value:
            raise ValidationFailed(f"label filter {item[:80]!r} must look like key=value")
        pairs.append((key, value))
    return pairs


def _view(row: Any) -> SessionView:
    data = dict(row)
    data["agent"] = Agent(kind=data.pop("agent_kind"), version=data.pop("agent_version"))
    for field in ("skills", "plugins", "labels"):
        data[field] = json.loads(data[field])
    return SessionView.model_validate(data)


def _select() -> Any:
    return select(agent_sessions, api_keys.c.prefix.label("key_prefix")).outerjoin(
        api_keys,
        and_(
            api_keys.c.session_id == agent_sessions.c.id, api_keys.c.kind == KeyKind.SESSION.value
        ),
    )


async def get_session(conn: AsyncConnection, org_id: str, session_id: str) -> SessionView:
    """One session of ``org_id``; another organization's session is NotFound."""
    row = (
        (
            await conn.execute(
                _select().where(
                    agent_sessions.c.id == session_id, agent_sessions.c.org_id == org_id
                )
            )
        )
        .mappings()
        .one_or_none()
    )
    if row is None:
        raise NotFound(f"session {session_id} not found")
    return _view(row)


async def create_session(store: Store, ctx: RequestContext, body: SessionCreate) -> SessionCreated:
    """Open a session and mint its key; the key ends with the session or its TTL."""
    principal = ctx.principal
    user_id = body.user_id or principal.user_id
    if (
        user_id is not None
        and user_id != principal.user_id
        and not principal.can(Permission.SESSIONS_MANAGE)
        and principal.kind is not KeyKind.SERVICE
    ):
        raise Forbidden("opening a session for another user needs the owner or admin role")
    now = ctx.clock.now()
    expires_at = now + timedelta(seconds=body.ttl_seconds)
    session_id = new_id("ses")
    async with store.write() as conn:
        if body.team_id is not None:
            await get_team(conn, ctx.org_id, body.team_id)
        if user_id is not None:
            user = await get_user(conn, ctx.org_id, user_id)
            if user.disabled:
                raise Conflict(f"user {user_id} is disabled")
        await conn.execute(
            insert(agent_sessions).values(
                id=session_id,
                org_id=ctx.org_id,
                team_id=body.team_id,
                user_id=user_id,
                project=body.project,
                use_case=body.use_case,
                repository=body.repository,
                branch=body.branch,
                ticket=body.ticket,
                agent_kind=body.agent.kind,
                agent_version=body.agent.version,
                skills=json.dumps(body.skills),
                plugins=json.dumps(body.plugins),
                labels=json.dumps(body.labels, sort_keys=True),
                status=SessionStatus.ACTIVE.value,
                created_by_key=principal.key_id,
                created_at=now,
                expires_at=expires_at,
            )
        )
        if body.labels:
            await conn.execute(
                insert(session_labels),
                [
                    {"org_id": ctx.org_id, "session_id": session_id, "key": k, "value": v}
                    for k, v in body.labels.items()
                ],
            )
        key = await insert_key(
            conn,
            ctx.org_id,
            KeyKind.SESSION,
            f"session {session_id}",
            now,
            user_id=None,
            session_id=session_id,
            expires_at=expires_at,
            created_by=principal.actor_id,
        )
        await ctx.audit(
            conn,
            "session.created",
            target_type="session",
            target_id=session_id,
            details={"key": key.prefix, "team": body.team_id, "user": user_id},
        )
        session = await get_session(conn, ctx.org_id, session_id)
    return SessionCreated(session=session, key=key)


async def list_sessions(
    store: Store,
    ctx: RequestContext,
    filters: SessionFilters,
    *,
    limit: int,
    cursor: str | None,
) -> Page[SessionView]:
    """Sessions of the caller's organization, narrowed by ``filters`` (a member's: their own)."""
    query = _select().where(agent_sessions.c.org_id == ctx.org_id)
    if own_only(ctx):
        query = query.where(agent_sessions.c.user_id == ctx.principal.user_id)
    for name in ("status", "team_id", "user_id", "project", "use_case", "repository", "agent_kind"):
        value = getattr(filters, name)
        if value is not None:
            query = query.where(agent_sessions.c[name] == str(value))
    if filters.created_after is not None:
        query = query.where(agent_sessions.c.created_at >= filters.created_after)
    if filters.created_before is not None:
        query = query.where(agent_sessions.c.created_at < filters.created_before)
    for key, value in filters.labels:
        label = session_labels.alias()
        query = query.join(
            label,
            and_(
                label.c.session_id == agent_sessions.c.id,
                label.c.key == key,
                label.c.value == value,
            ),
        )
    async with store.read() as conn:
        rows = (
            await conn.execute(page_query(query, agent_sessions.c.id, cursor, limit))
        ).mappings()
        kept, next_cursor = split_page(rows.all(), limit, lambda r: r["id"])
    return Page[SessionView](data=[_view(r) for r in kept], next_cursor=next_cursor)


async def read_session(store: Store, ctx: RequestContext, session_id: str) -> SessionView:
    """One session of the caller's organization (a member's own only: another's is
    NotFound, as if it did not exist)."""
    async with store.read() as conn:
        found = await get_session(conn, ctx.org_id, session_id)
    if own_only(ctx) and found.user_id != ctx.principal.user_id:
        raise NotFound(f"session {session_id} not found")
    return found


def own_only(ctx: RequestContext) -> bool:
    """Whether the caller sees only their own sessions: a member does (the other roles
    oversee the organization's agents, and see them all)."""
    principal = ctx.principal
    return principal.kind is KeyKind.USER and principal.role is Role.MEMBER


def _check_may_change(ctx: RequestContext, row: Any) -> None:
    principal = ctx.principal
    if principal.can(Permission.SESSIONS_MANAGE):
        return
    if row["created_by_key"] == principal.key_id:
        return
    if principal.user_id is not None and row["user_id"] == principal.user_id:
        return
    raise Forbidden("only the session's opener, its user, an owner or an admin may change it")


async def _session_row(conn: AsyncConnection, org_id: str, session_id: str) -> Any:
    row = (
        (
            await conn.execute(
                select(agent_sessions).where(
                    agent_sessions.c.id == session_id, agent_sessions.c.org_id == org_id
                )
            )
        )
        .mappings()
        .one_or_none()
    )
    if row is None:
        raise NotFound(f"session {session_id} not found")
    return row


async def end_session(
    store: Store,
    invalidations: Invalidations,
    ctx: RequestContext,
    session_id: str,
    body: SessionEnd,
) -> SessionView:
    """End a session with its outcome; its key stops working at once."""
    now = ctx.clock.now()
    async with store.write() as conn:
        row = await _session_row(conn, ctx.org_id, session_id)
        _check_may_change(ctx, row)
        if row["status"] != SessionStatus.ACTIVE.value:
            raise Conflict(f"session {session_id} has already ended")
        await conn.execute(
            update(agent_sessions)
            .where(agent_sessions.c.id == session_id)
            .values(
                status=SessionStatus.ENDED.value,
                outcome=body.outcome.value,
                outcome_detail=body.detail,
                ended_at=now,
            )
        )
        await _revoke_session_keys(conn, invalidations, session_id, now)
        # Its secret leases end with it (its key, their only holder, stops working too).
        await conn.execute(
            update(secret_leases)
            .where(secret_leases.c.session_id == session_id, secret_leases.c.ended_at.is_(None))
            .values(ended_at=now, end_reason="session_ended")
        )
        await ctx.audit(
            conn,
            "session.ended",
            target_type="session",
            target_id=session_id,
            details={"outcome": body.outcome.value},
        )
        return await get_session(conn, ctx.org_id, session_id)


async def revoke_session_key(
    store: Store, invalidations: Invalidations, ctx: RequestContext, session_id: str
) -> SessionView:
    """Revoke a session's key without ending the session (a leaked key, say)."""
    now = ctx.clock.now()
    async with store.write() as conn:
        row = await _session_row(conn, ctx.org_id, session_id)
        _check_may_change(ctx, row)
        revoked = await _revoke_session_keys(conn, invalidations, session_id, now)
        if not revoked:
            raise Conflict(f"session {session_id} has no active key")
        await ctx.audit(
            conn,
            "session.key_revoked",
            target_type="session",
            target_id=session_id,
            details={"keys": revoked},
        )
        return await get_session(conn, ctx.org_id, session_id)


async def _revoke_session_keys(
    conn: AsyncConnection, invalidations: Invalidations, session_id: str, now: datetime
) -> list[str]:
    key_ids = list(
        (
            await conn.execute(
                select(api_keys.c.id).where(
                    api_keys.c.session_id == session_id, api_keys.c.revoked_at.is_(None)
                )
            )
        ).scalars()
    )
    for key_id in key_ids:
        await revoke_in(conn, invalidations, key_id, now)
    await invalidations.publish(conn, "session", session_id)
    return key_ids
