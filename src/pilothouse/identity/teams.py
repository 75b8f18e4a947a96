"""Teams: groups of users; sessions, budgets and policies can be scoped to a team."""

from __future__ import annotations

from datetime import datetime

from pydantic import BaseModel
from sqlalchemy import delete, insert, select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncConnection

from pilothouse.api.pagination import page_query, split_page
from pilothouse.api.types import Body, Name, ObjectId, Page, Text
from pilothouse.context import RequestContext
from pilothouse.errors import Conflict, NotFound
from pilothouse.identity.tables import agent_sessions, team_members, teams
from pilothouse.identity.users import get_user
from pilothouse.ids import new_id
from pilothouse.store.engine import Store


class TeamView(BaseModel):
    """A team as the API shows it."""

    id: str
    name: str
    description: str
    member_ids: list[str]
    created_at: datetime


class TeamCreate(Body):
    """A new team."""

    name: Name
    description: Text = ""


class TeamUpdate(Body):
    """Fields of a team that may change."""

    name: Name | None = None
    description: Text | None = None


class MemberAdd(Body):
    """A user to add to a team."""

    user_id: ObjectId


async def insert_team(
    conn: AsyncConnection, org_id: str, name: str, description: str, now: datetime
) -> str:
    """Insert a team; a duplicate name in the organization is a Conflict."""
    team_id = new_id("team")
    try:
        async with conn.begin_nested():
            await conn.execute(
                insert(teams).values(
                    id=team_id, org_id=org_id, name=name, description=description, created_at=now
                )
            )
    except IntegrityError as exc:
        raise Conflict(f"a team named {name!r} already exists") from exc
    return team_id


async def add_member(
    conn: AsyncConnection, org_id: str, team_id: str, user_id: str, now: datetime
) -> bool:
    """Add a user to a team; False if already a member."""
    exists = await conn.scalar(
        select(team_members.c.user_id).where(
            team_members.c.team_id == team_id, team_members.c.user_id == user_id
        )
    )
    if exists:
        return False
    await conn.execute(
        insert(team_members).values(org_id=org_id, team_id=team_id, user_id=user_id, created_at=now)
    )
    return True


async def get_team(conn: AsyncConnection, org_id: str, team_id: str) -> TeamView:
    """One team of ``org_id``; another organization's team is NotFound."""
    row = (
        (await conn.execute(select(teams).where(teams.c.id == team_id, teams.c.org_id == org_id)))
        .mappings()
        .one_or_none()
    )
    if row is None:
        raise NotFound(f"team {team_id} not found")
    members = (
        await conn.execute(
            select(team_members.c.user_id)
            .where(team_members.c.team_id == team_id)
            .order_by(team_members.c.user_id)
        )
    ).scalars()
    return TeamView.model_validate({**row, "member_ids": list(members)})


async def list_teams(
    store: Store, ctx: RequestContext, *, limit: int, cursor: str | None
) -> Page[TeamView]:
    """Teams of the caller's organization."""
    query = select(teams.c.id).where(teams.c.org_id == ctx.org_id)
    async with store.read() as conn:
        ids = (await conn.execute(page_query(query, teams.c.id, cursor, limit))).scalars().all()
        kept, next_cursor = split_page(ids, limit, lambda i: i)
        data = [await get_team(conn, ctx.org_id, i) for i in kept]
    return Page[TeamView](data=data, next_cursor=next_cursor)


async def read_team(store: Store, ctx: RequestContext, team_id: str) -> TeamView:
    """One team of the caller's organization."""
    async with store.read() as conn:
        return await get_team(conn, ctx.org_id, team_id)


async def create_team(store: Store, ctx: RequestContext, body: TeamCreate) -> TeamView:
    """Make a team."""
    async with store.write() as conn:
        team_id = await insert_team(conn, ctx.org_id, body.name, body.description, ctx.clock.now())
        await ctx.audit(
            conn, "team.created", target_type="team", target_id=team_id, details={"name": body.name}
        )
        return await get_team(conn, ctx.org_id, team_id)


async def update_team(
    store: Store, ctx: RequestContext, team_id: str, body: TeamUpdate
) -> TeamView:
    """Rename a team or change its description."""
    changes = body.model_dump(exclude_none=True)
    async with store.write() as conn:
        await get_team(conn, ctx.org_id, team_id)
        if changes:
            try:
                async with conn.begin_nested():
                    await conn.execute(
                        update(teams)
                        .where(teams.c.id == team_id, teams.c.org_id == ctx.org_id)
                        .values(**changes)
                    )
            except IntegrityError as exc:
                raise Conflict(f"a team named {body.name!r} already exists") from exc
            await ctx.audit(
                conn, "team.updated", target_type="team", target_id=team_id, details=changes
            )
        return await get_team(conn, ctx.org_id, team_id)


async def delete_team(store: Store, ctx: RequestContext, team_id: str) -> None:
    """Delete a team that no session refers to."""
    async with store.write() as conn:
        team = await get_team(conn, ctx.org_id, team_id)
        in_use = await conn.scalar(
            select(agent_sessions.c.id).where(agent_sessions.c.team_id == team_id).limit(1)
        )
        if in_use:
            raise Conflict(f"team {team_id} has sessions and cannot be deleted")
        await conn.execute(delete(team_members).where(team_members.c.team_id == team_id))
        await conn.execute(delete(teams).where(teams.c.id == team_id))
        await ctx.audit(
            conn, "team.deleted", target_type="team", target_id=team_id, details={"name": team.name}
        )


async def add_team_member(
    store: Store, ctx: RequestContext, team_id: str, body: MemberAdd
) -> TeamView:
    """Put a user of the organization in a team."""
    async with store.write() as conn:
        await get_team(conn, ctx.org_id, team_id)
        await get_user(conn, ctx.org_id, body.user_id)
        if await add_member(conn, ctx.org_id, team_id, body.user_id, ctx.clock.now()):
            await ctx.audit(
                conn,
                "team.member_added",
                target_type="team",
                target_id=team_id,
                details={"user": body.user_id},
            )
        return await get_team(conn, ctx.org_id, team_id)


async def remove_team_member(
    store: Store, ctx: RequestContext, team_id: str, user_id: str
) -> TeamView:
    """Take a user out of a team."""
    async with store.write() as conn:
        await get_team(conn, ctx.org_id, team_id)
        removed = await conn.execute(
            delete(team_members).where(
                team_members.c.team_id == team_id, team_members.c.user_id == user_id
            )
        )
        if removed.rowcount == 0:
            raise NotFound(f"user {user_id} is not a member of team {team_id}")
        await ctx.audit(
            conn,
            "team.member_removed",
            target_type="team",
            target_id=team_id,
            details={"user": user_id},
        )
        return await get_team(conn, ctx.org_id, team_id)
