"""API keys: user keys for humans, service keys for harnesses, session keys for agents."""

from __future__ import annotations

import json
from datetime import datetime, timedelta
from typing import Annotated, Any, Literal

from pydantic import BaseModel, Field
from sqlalchemy import insert, select, update
from sqlalchemy.ext.asyncio import AsyncConnection

from pilothouse.api.pagination import page_query, split_page
from pilothouse.api.types import Body, LabelKey, ObjectId, Page, ShortText
from pilothouse.context import RequestContext
from pilothouse.errors import Conflict, Forbidden, NotFound, ValidationFailed
from pilothouse.identity.roles import SERVICE_SCOPES, Permission
from pilothouse.identity.tables import api_keys
from pilothouse.identity.tokens import IssuedToken, KeyKind, issue
from pilothouse.identity.users import get_user
from pilothouse.ids import new_id
from pilothouse.store.engine import Store
from pilothouse.store.notify import Invalidations

MAX_KEY_LIFETIME = timedelta(days=3650)


class KeyView(BaseModel):
    """A key as the API shows it: never its secret."""

    id: str
    kind: KeyKind
    name: str
    prefix: str
    user_id: str | None
    session_id: str | None
    scopes: list[str]
    allowed_labels: list[str]
    created_at: datetime
    expires_at: datetime | None
    revoked_at: datetime | None
    last_used_at: datetime | None


class KeyCreated(KeyView):
    """A new key with its token, which is shown this once and never again."""

    token: str


class KeyCreate(Body):
    """A new user key (for yourself, or for another user with keys:manage) or service key."""

    kind: Literal["user", "service"] = "user"
    name: ShortText = ""
    user_id: ObjectId | None = None
    expires_in_seconds: (
        Annotated[int, Field(ge=60, le=int(MAX_KEY_LIFETIME.total_seconds()))] | None
    ) = None
    scopes: Annotated[
        list[
            Literal[
                "sessions:write",
                "sessions:declare",
                "usage:read",
                "budgets:read",
                "budgets:write",
                "policy:check",
            ]
        ],
        Field(max_length=8),
    ] = []
    allowed_labels: Annotated[list[LabelKey | Literal["*"]], Field(max_length=64)] = []


def view(row: Any) -> KeyView:
    """A stored key row as the API shows it."""
    data = dict(row)
    data["scopes"] = json.loads(data["scopes"])
    data["allowed_labels"] = json.loads(data["allowed_labels"])
    return KeyView.model_validate(data)


async def insert_key(
    conn: AsyncConnection,
    org_id: str,
    kind: KeyKind,
    name: str,
    now: datetime,
    *,
    user_id: str | None = None,
    session_id: str | None = None,
    scopes: list[str] | None = None,
    allowed_labels: list[str] | None = None,
    expires_at: datetime | None = None,
    created_by: str | None = None,
    issued: IssuedToken | None = None,
) -> KeyCreated:
    """Store a new key (hashed) and return it with its one-time token."""
    token = issued or issue(kind)
    key_id = new_id("key")
    row = {
        "id": key_id,
        "org_id": org_id,
        "kind": kind.value,
        "name": name,
        "lookup": token.lookup,
        "prefix": token.prefix,
        "secret_hash": token.secret_hash,
        "user_id": user_id,
        "session_id": session_id,
        "scopes": json.dumps(sorted(set(scopes or []))),
        "allowed_labels": json.dumps(sorted(set(allowed_labels or []))),
        "created_by": created_by,
        "created_at": now,
        "expires_at": expires_at,
        "revoked_at": None,
        "last_used_at": None,
    }
    await conn.execute(insert(api_keys).values(**row))
    return KeyCreated.model_validate({**view(row).model_dump(), "token": token.token})


async def insert_user_key(
    conn: AsyncConnection,
    org_id: str,
    user_id: str,
    name: str,
    now: datetime,
    *,
    created_by: str | None = None,
    issued: IssuedToken | None = None,
) -> KeyCreated:
    """Store a new non-expiring user key."""
    return await insert_key(
        conn, org_id, KeyKind.USER, name, now, user_id=user_id, created_by=created_by, issued=issued
    )


async def _get_row(conn: AsyncConnection, org_id: str, key_id: str) -> Any:
    row = (
        (
            await conn.execute(
                select(api_keys).where(api_keys.c.id == key_id, api_keys.c.org_id == org_id)
            )
        )
        .mappings()
        .one_or_none()
    )
    if row is None:
        raise NotFound(f"key {key_id} not found")
    return row


def _visible(ctx: RequestContext, row: Any) -> bool:
    return ctx.principal.can(Permission.KEYS_READ_ALL) or (
        row["user_id"] is not None and row["user_id"] == ctx.principal.user_id
    )


async def create_key(store: Store, ctx: RequestContext, body: KeyCreate) -> KeyCreated:
    """Make a key; only keys:manage may make service keys or keys for other users."""
    now = ctx.clock.now()
    expires_at = (
        now + timedelta(seconds=body.expires_in_seconds) if body.expires_in_seconds else None
    )
    principal = ctx.principal
    async with store.write() as conn:
        if body.kind == "service":
            if not principal.can(Permission.KEYS_MANAGE):
                raise Forbidden("making a service key needs the owner or admin role")
            unknown = set(body.scopes) - SERVICE_SCOPES
            if unknown:
                raise ValidationFailed(f"unknown scopes: {', '.join(sorted(unknown))}")
            created = await insert_key(
                conn,
                ctx.org_id,
                KeyKind.SERVICE,
                body.name,
                now,
                scopes=list(body.scopes),
                allowed_labels=list(body.allowed_labels),
                expires_at=expires_at,
                created_by=principal.actor_id,
            )
        else:
            if body.scopes or body.allowed_labels:
                raise ValidationFailed("scopes and allowed_labels apply only to service keys")
            user_id = body.user_id or principal.user_id
            if user_id is None:
                raise ValidationFailed("user_id is required: this caller is not a user")
            if user_id != principal.user_id and not principal.can(Permission.KEYS_MANAGE):
                raise Forbidden("making a key for another user needs the owner or admin role")
            user = await get_user(conn, ctx.org_id, user_id)
            if user.disabled:
                raise Conflict(f"user {user_id} is disabled")
            created = await insert_key(
                conn,
                ctx.org_id,
                KeyKind.USER,
                body.name,
                now,
                user_id=user_id,
                expires_at=expires_at,
                created_by=principal.actor_id,
            )
        await ctx.audit(
            conn,
            "key.created",
            target_type="key",
            target_id=created.id,
            details={"kind": created.kind.value, "prefix": created.prefix, "user": created.user_id},
        )
    return created


async def list_keys(
    store: Store,
    ctx: RequestContext,
    *,
    kind: KeyKind | None,
    user_id: str | None,
    include_revoked: bool,
    limit: int,
    cursor: str | None,
) -> Page[KeyView]:
    """Keys of the organization (all with keys:read_all, else the caller's own)."""
    query = select(api_keys).where(api_keys.c.org_id == ctx.org_id)
    if not ctx.principal.can(Permission.KEYS_READ_ALL):
        query = query.where(api_keys.c.user_id == ctx.principal.user_id)
    if kind is not None:
        query = query.where(api_keys.c.kind == kind.value)
    if user_id is not None:
        query = query.where(api_keys.c.user_id == user_id)
    if not include_revoked:
        query = query.where(api_keys.c.revoked_at.is_(None))
    async with store.read() as conn:
        rows = (await conn.execute(page_query(query, api_keys.c.id, cursor, limit))).mappings()
        kept, next_cursor = split_page(rows.all(), limit, lambda r: r["id"])
    return Page[KeyView](data=[view(r) for r in kept], next_cursor=next_cursor)


async def read_key(store: Store, ctx: RequestContext, key_id: str) -> KeyView:
    """One key the caller may see."""
    async with store.read() as conn:
        row = await _get_row(conn, ctx.org_id, key_id)
    if not _visible(ctx, row):
        raise NotFound(f"key {key_id} not found")
    return view(row)


async def revoke_key(
    store: Store, invalidations: Invalidations, ctx: RequestContext, key_id: str
) -> KeyView:
    """Revoke a key; refused everywhere at once on this node, within seconds on others."""
    async with store.write() as conn:
        row = await _get_row(conn, ctx.org_id, key_id)
        own = row["user_id"] is not None and row["user_id"] == ctx.principal.user_id
        if not own and not ctx.principal.can(Permission.KEYS_REVOKE_ANY):
            if _visible(ctx, row):
                raise Forbidden(
                    "revoking another user's key needs the owner, admin or security role"
                )
            raise NotFound(f"key {key_id} not found")
        if row["revoked_at"] is not None:
            raise Conflict(f"key {key_id} is already revoked")
        await revoke_in(conn, invalidations, key_id, ctx.clock.now())
        await ctx.audit(
            conn,
            "key.revoked",
            target_type="key",
            target_id=key_id,
            details={"kind": row["kind"], "prefix": row["prefix"]},
        )
        return view(await _get_row(conn, ctx.org_id, key_id))


async def revoke_in(
    conn: AsyncConnection, invalidations: Invalidations, key_id: str, now: datetime
) -> None:
    """Mark a key revoked inside the caller's transaction and invalidate caches on commit."""
    await conn.execute(
        update(api_keys)
        .where(api_keys.c.id == key_id, api_keys.c.revoked_at.is_(None))
        .values(revoked_at=now)
    )
    await invalidations.publish(conn, "key", key_id)
