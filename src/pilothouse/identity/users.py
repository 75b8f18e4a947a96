"""Users: the humans of an organization, each with one role."""

from __future__ import annotations

from datetime import datetime

from pydantic import BaseModel
from sqlalchemy import func, insert, select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncConnection

from pilothouse.api.pagination import page_query, split_page
from pilothouse.api.types import Body, Email, Page, ShortText
from pilothouse.context import RequestContext
from pilothouse.errors import Conflict, Forbidden, NotFound
from pilothouse.identity.roles import Role
from pilothouse.identity.tables import team_members, users
from pilothouse.ids import new_id
from pilothouse.store.engine import Store
from pilothouse.store.notify import Invalidations


class UserView(BaseModel):
    """A user as the API shows it."""

    id: str
    email: str
    name: str
    role: Role
    disabled: bool
    team_ids: list[str]
    created_at: datetime


class UserCreate(Body):
    """A new user."""

    email: Email
    name: ShortText = ""
    role: Role = Role.MEMBER


class UserUpdate(Body):
    """Fields of a user that may change; omitted fields stay as they are."""

    name: ShortText | None = None
    role: Role | None = None
    disabled: bool | None = None


async def insert_user(
    conn: AsyncConnection, org_id: str, email: str, name: str, role: Role, now: datetime
) -> str:
    """Insert a user; a duplicate email in the organization is a Conflict."""
    user_id = new_id("usr")
    try:
        async with conn.begin_nested():
            await conn.execute(
                insert(users).values(
                    id=user_id,
                    org_id=org_id,
                    email=email.lower(),
                    name=name,
                    role=role.value,
                    disabled=False,
                    created_at=now,
                )
            )
    except IntegrityError as exc:
        raise Conflict(f"a user with email {email!r} already exists") from exc
    return user_id


async def get_user(conn: AsyncConnection, org_id: str, user_id: str) -> UserView:
    """One user of ``org_id``; another organization's user is NotFound."""
    row = (
        (await conn.execute(select(users).where(users.c.id == user_id, users.c.org_id == org_id)))
        .mappings()
        .one_or_none()
    )
    if row is None:
        raise NotFound(f"user {user_id} not found")
    team_ids = (
        await conn.execute(
            select(team_members.c.team_id)
            .where(team_members.c.user_id == user_id)
            .order_by(team_members.c.team_id)
        )
    ).scalars()
    return UserView.model_validate({**row, "team_ids": list(team_ids)})


async def list_users(
    store: Store,
    ctx: RequestContext,
    *,
    role: Role | None,
    include_disabled: bool,
    limit: int,
    cursor: str | None,
) -> Page[UserView]:
    """Users of the caller's organization."""
    query = select(users.c.id).where(users.c.org_id == ctx.org_id)
    if role is not None:
        query = query.where(users.c.role == role.value)
    if not include_disabled:
        query = query.where(users.c.disabled.is_(False))
    async with store.read() as conn:
        ids = (await conn.execute(page_query(query, users.c.id, cursor, limit))).scalars().all()
        kept, next_cursor = split_page(ids, limit, lambda i: i)
        # The page's people and their teams in two statements, not two per person.
        rows = (await conn.execute(select(users).where(users.c.id.in_(kept)))).mappings().all()
        teams: dict[str, list[str]] = {i: [] for i in kept}
        for user_id, team_id in await conn.execute(
            select(team_members.c.user_id, team_members.c.team_id)
            .where(team_members.c.user_id.in_(kept))
            .order_by(team_members.c.team_id)
        ):
            teams[user_id].append(team_id)
    by_id = {row["id"]: row for row in rows}
    data = [UserView.model_validate({**by_id[i], "team_ids": teams[i]}) for i in kept]
    return Page[UserView](data=data, next_cursor=next_cursor)


async def create_user(store: Store, ctx: RequestContext, body: UserCreate) -> UserView:
    """Add a user; only an owner may make another owner."""
    _check_may_grant(ctx, body.role)
    async with store.write() as conn:
        user_id = await insert_user(
            conn, ctx.org_id, body.email, body.name, body.role, ctx.clock.now()
        )
        await ctx.audit(
            conn,
            "user.created",
            target_type="user",
            target_id=user_id,
            details={"email": body.email.lower(), "role": body.role.value},
        )
        return await get_user(conn, ctx.org_id, user_id)


async def update_user(
    store: Store,
    invalidations: Invalidations,
    ctx: RequestContext,
    user_id: str,
    body: UserUpdate,
) -> UserView:
    """Change a user's name, role or disabled flag; keys see the change at once."""
    changes = body.model_dump(exclude_none=True)
    async with store.write() as conn:
        current = await get_user(conn, ctx.org_id, user_id)
        if current.role is Role.OWNER or body.role is Role.OWNER:
            _check_may_grant(ctx, Role.OWNER)
        losing_owner = current.role is Role.OWNER and (
            (body.role is not None and body.role is not Role.OWNER) or body.disabled
        )
        if losing_owner and await _active_owners(conn, ctx.org_id) <= 1:
            raise Conflict("the organization's last active owner cannot be demoted or disabled")
        if changes:
            values = {k: (v.value if isinstance(v, Role) else v) for k, v in changes.items()}
            await conn.execute(
                update(users)
                .where(users.c.id == user_id, users.c.org_id == ctx.org_id)
                .values(**values)
            )
            await invalidations.publish(conn, "user", user_id)
            await ctx.audit(
                conn,
                "user.updated",
                target_type="user",
                target_id=user_id,
                details={k: str(v) for k, v in values.items()},
            )
        return await get_user(conn, ctx.org_id, user_id)


async def _active_owners(conn: AsyncConnection, org_id: str) -> int:
    count = await conn.scalar(
        select(func.count())
        .select_from(users)
        .where(
            users.c.org_id == org_id,
            users.c.role == Role.OWNER.value,
            users.c.disabled.is_(False),
        )
    )
    return int(count or 0)


def _check_may_grant(ctx: RequestContext, role: Role) -> None:
    if role is Role.OWNER and ctx.principal.role is not Role.OWNER:
        raise Forbidden("only an owner may grant, change or remove the owner role")
