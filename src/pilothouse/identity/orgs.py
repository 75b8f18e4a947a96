"""Organizations: the tenant boundary. The root organization is made at bootstrap."""

from __future__ import annotations

from datetime import datetime

from pydantic import BaseModel
from sqlalchemy import insert, select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncConnection

from pilothouse.api.types import Body, Email, Name, ShortText
from pilothouse.audit import chain
from pilothouse.context import RequestContext
from pilothouse.errors import Conflict, NotFound
from pilothouse.identity import apikeys, users
from pilothouse.identity.roles import Role
from pilothouse.identity.tables import organizations
from pilothouse.ids import new_id
from pilothouse.store.engine import Store


class OrgView(BaseModel):
    """An organization as the API shows it."""

    id: str
    name: str
    is_root: bool
    created_at: datetime


class OrgCreate(Body):
    """Make a new organization with its first owner."""

    name: Name
    owner_email: Email
    owner_name: ShortText = ""


class OrgCreated(BaseModel):
    """A new organization, its owner, and the owner's key (shown once)."""

    org: OrgView
    owner: users.UserView
    key: apikeys.KeyCreated


async def insert_org(conn: AsyncConnection, name: str, *, is_root: bool, now: datetime) -> str:
    """Insert an organization and start its audit chain."""
    org_id = new_id("org")
    try:
        async with conn.begin_nested():
            await conn.execute(
                insert(organizations).values(id=org_id, name=name, is_root=is_root, created_at=now)
            )
    except IntegrityError as exc:
        raise Conflict(f"an organization named {name!r} already exists") from exc
    await chain.create_chain(conn, org_id)
    return org_id


async def get_org(conn: AsyncConnection, org_id: str) -> OrgView:
    """One organization by id."""
    row = (
        (await conn.execute(select(organizations).where(organizations.c.id == org_id)))
        .mappings()
        .one_or_none()
    )
    if row is None:
        raise NotFound(f"organization {org_id} not found")
    return OrgView.model_validate(dict(row))


async def current_org(store: Store, ctx: RequestContext) -> OrgView:
    """The caller's organization."""
    async with store.read() as conn:
        return await get_org(conn, ctx.org_id)


async def create_org(store: Store, ctx: RequestContext, body: OrgCreate) -> OrgCreated:
    """Make an organization, its owner and an owner key; audited in both organizations."""
    now = ctx.clock.now()
    async with store.write() as conn:
        org_id = await insert_org(conn, body.name, is_root=False, now=now)
        owner_id = await users.insert_user(
            conn, org_id, body.owner_email, body.owner_name, Role.OWNER, now
        )
        key = await apikeys.insert_user_key(
            conn, org_id, owner_id, "owner key", now, created_by=ctx.principal.actor_id
        )
        details = {"name": body.name, "owner": owner_id, "key": key.prefix}
        await ctx.audit(conn, "org.created", target_type="org", target_id=org_id, details=details)
        await ctx.audit(
            conn,
            "org.created",
            target_type="org",
            target_id=org_id,
            details=details,
            org_id=org_id,
        )
        return OrgCreated(
            org=await get_org(conn, org_id),
            owner=await users.get_user(conn, org_id, owner_id),
            key=key,
        )
