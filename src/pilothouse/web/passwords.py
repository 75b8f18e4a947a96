"""Local passwords for the dashboard: Argon2id hashes (argon2-cffi, its RFC 9106 low-memory
profile), checked in a worker thread so a sign-in never stalls the event loop."""

from __future__ import annotations

from datetime import datetime

import anyio.to_thread
from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError, VerifyMismatchError
from sqlalchemy import select, update
from sqlalchemy.ext.asyncio import AsyncConnection

from pilothouse.context import RequestContext
from pilothouse.errors import Forbidden, WeakPassword
from pilothouse.identity.bootstrap import OWNER_EMAIL
from pilothouse.identity.roles import Permission, Role
from pilothouse.identity.tables import users
from pilothouse.identity.tokens import KeyKind
from pilothouse.identity.users import get_user
from pilothouse.store.engine import Store
from pilothouse.web.tables import web_sessions

MIN_LENGTH = 12
MAX_LENGTH = 1024
_HASHER = PasswordHasher()  # Argon2id, 64 MiB, 3 passes: about 50 ms here
# Verified when no such user exists, so an unknown email costs as long as a wrong password.
_DUMMY = _HASHER.hash("pilothouse: no such user")


def checked(password: str) -> str:
    """``password`` if it may be set (raises WeakPassword naming why)."""
    if len(password) < MIN_LENGTH:
        raise WeakPassword(f"a password needs at least {MIN_LENGTH} characters")
    if len(password) > MAX_LENGTH:
        raise WeakPassword(f"a password has at most {MAX_LENGTH} characters")
    return password


async def hash_password(password: str) -> str:
    """The Argon2id hash of ``password`` (checked first)."""
    return await anyio.to_thread.run_sync(_HASHER.hash, checked(password))


async def verify(stored: str | None, password: str) -> bool:
    """Whether ``password`` matches ``stored`` (None: no password; the check still takes as
    long). Never raises for a wrong or malformed hash."""

    def run() -> bool:
        try:
            return _HASHER.verify(stored or _DUMMY, password[:MAX_LENGTH]) and stored is not None
        except (VerifyMismatchError, VerificationError, InvalidHashError):
            return False

    return await anyio.to_thread.run_sync(run)


async def set_password(
    store: Store, org_id: str, user_id: str, password: str, now: datetime
) -> None:
    """Set ``user_id``'s password and end their signed-in sessions (unaudited: first start)."""
    hashed = await hash_password(password)
    async with store.write() as conn:
        await _store_hash(conn, org_id, user_id, hashed, now)


async def _store_hash(
    conn: AsyncConnection, org_id: str, user_id: str, hashed: str, now: datetime
) -> None:
    """Write a password hash and end the person's signed-in sessions, in ``conn``'s
    transaction."""
    await conn.execute(
        update(users)
        .where(users.c.id == user_id, users.c.org_id == org_id)
        .values(password_hash=hashed)
    )
    await conn.execute(
        update(web_sessions)
        .where(web_sessions.c.user_id == user_id, web_sessions.c.ended_at.is_(None))
        .values(ended_at=now)
    )


async def set_owner_password(store: Store, root_org_id: str, password: str, now: datetime) -> None:
    """The first owner's password, from ``admin_password`` on first start."""
    async with store.read() as conn:
        owner = await conn.scalar(
            select(users.c.id).where(users.c.org_id == root_org_id, users.c.email == OWNER_EMAIL)
        )
    if owner is not None:
        await set_password(store, root_org_id, owner, password, now)


async def change_password(store: Store, ctx: RequestContext, user_id: str, password: str) -> None:
    """Set a person's dashboard password, as themselves or with ``users:write`` (an owner's
    only by an owner: a password signs in as them); ends their signed-in sessions. Audited as
    ``user.password_set``, without the password."""
    principal = ctx.principal
    if principal.kind is not KeyKind.USER:
        raise Forbidden("only people have passwords: use a person's key")
    async with store.read() as conn:
        target = await get_user(conn, ctx.org_id, user_id)
    if user_id != principal.user_id:
        if not principal.can(Permission.USERS_WRITE):
            raise Forbidden(
                "setting another person's password needs the users:write permission",
                permission=Permission.USERS_WRITE.value,
            )
        if target.role is Role.OWNER and principal.role is not Role.OWNER:
            raise Forbidden("only an owner may set an owner's password")
    hashed = await hash_password(password)
    async with store.write() as conn:  # the change and its audit event commit together
        await _store_hash(conn, ctx.org_id, user_id, hashed, ctx.clock.now())
        await ctx.audit(
            conn,
            "user.password_set",
            target_type="user",
            target_id=user_id,
            details={"by_self": user_id == principal.user_id},
        )
