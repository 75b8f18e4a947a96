"""First start: the root organization, its owner, and an owner key printed once."""

from __future__ import annotations

from dataclasses import dataclass

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncConnection

from pilothouse.audit import chain
from pilothouse.clock import Clock
from pilothouse.identity.apikeys import insert_user_key
from pilothouse.identity.orgs import insert_org
from pilothouse.identity.roles import Role
from pilothouse.identity.tables import api_keys, organizations, users
from pilothouse.identity.tokens import KeyKind, from_plaintext
from pilothouse.identity.users import insert_user

SYSTEM = chain.Actor("system", None)
OWNER_EMAIL = "owner@localhost"


@dataclass(frozen=True, slots=True)
class Bootstrap:
    """What bootstrap did: the new owner token, if one was made (shown once)."""

    org_id: str
    created: bool
    owner_token: str | None


async def bootstrap(
    conn: AsyncConnection, clock: Clock, *, org_name: str, admin_key: str | None
) -> Bootstrap:
    """Create the root organization if there is none; install ``admin_key`` if it is new."""
    now = clock.now()
    root = await conn.scalar(select(organizations.c.id).where(organizations.c.is_root.is_(True)))
    if root is None:
        org_id = await insert_org(conn, org_name, is_root=True, now=now)
        owner_id = await insert_user(conn, org_id, OWNER_EMAIL, "Owner", Role.OWNER, now)
        issued = from_plaintext(KeyKind.USER, admin_key) if admin_key else None
        key = await insert_user_key(
            conn, org_id, owner_id, "bootstrap owner key", now, issued=issued
        )
        await chain.append(
            conn,
            clock,
            org_id=org_id,
            actor=SYSTEM,
            action="bootstrap.completed",
            target_type="org",
            target_id=org_id,
            details={"owner": owner_id, "key": key.prefix},
        )
        return Bootstrap(org_id, True, None if admin_key else key.token)
    if admin_key:
        await _ensure_admin_key(conn, clock, root, admin_key)
    return Bootstrap(root, False, None)


async def _ensure_admin_key(conn: AsyncConnection, clock: Clock, org_id: str, token: str) -> None:
    issued = from_plaintext(KeyKind.USER, token)
    if await conn.scalar(select(api_keys.c.id).where(api_keys.c.lookup == issued.lookup)):
        return
    owner_id = await conn.scalar(
        select(users.c.id)
        .where(users.c.org_id == org_id, users.c.role == Role.OWNER.value)
        .order_by(users.c.id)
        .limit(1)
    )
    assert owner_id is not None, "the root organization has no owner"
    key = await insert_user_key(
        conn, org_id, owner_id, "PILOTHOUSE_ADMIN_KEY", clock.now(), issued=issued
    )
    await chain.append(
        conn,
        clock,
        org_id=org_id,
        actor=SYSTEM,
        action="key.created",
        target_type="key",
        target_id=key.id,
        details={"kind": "user", "prefix": key.prefix, "source": "PILOTHOUSE_ADMIN_KEY"},
    )
