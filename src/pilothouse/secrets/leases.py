"""Leases: a session reads a secret it was granted, for a while, every read audited.

A read needs, in order: a session key (people and services never read values back), a lease
grant that admits the session, and the policy's allow on channel ``secret`` (so rules and taint
apply: ``when: {tainted: true}`` can refuse or ask). A lease lasts its grant's ``ttl_seconds``;
reads within it reuse it (counted), after it a new one is taken if the grant still stands.
Revoking the grant or deleting the secret ends its leases at once, and so does the session's
end (its key stops working with it).
"""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Any

from pydantic import BaseModel
from sqlalchemy import insert, select, update

from pilothouse.context import RequestContext
from pilothouse.errors import Forbidden, SecretNotGranted
from pilothouse.identity.tokens import KeyKind
from pilothouse.ids import new_id
from pilothouse.policy.checks import ActionIn, Checker, CheckRequest
from pilothouse.policy.document import Channel, Verdict
from pilothouse.secrets.book import Entry, Grant, SecretBook
from pilothouse.secrets.tables import secret_leases
from pilothouse.store.engine import Store


class LeaseView(BaseModel):
    """A secret's value, leased to the calling session."""

    name: str
    value: str
    version: int
    lease_id: str
    expires_at: datetime
    reads: int


async def lease(
    store: Store,
    book: SecretBook,
    checker: Checker,
    ctx: RequestContext,
    name: str,
    wait: float,
) -> LeaseView:
    """Lease secret ``name`` to the calling session (see the module for what it takes)."""
    principal = ctx.principal
    if principal.kind is not KeyKind.SESSION:
        raise Forbidden(
            "secret values are write-only: only a session key with a lease grant reads one"
            " (people list secrets with GET /api/v1/secrets and rotate them)"
        )
    await book.fresh()
    entry = book.entry(ctx.org_id, name)
    grant = await book.granted(entry, "lease", principal) if entry is not None else None
    if entry is None or grant is None:
        await _refused(store, ctx, name, "no lease grant admits this session")
        raise SecretNotGranted(f"secret {name!r} is not granted to this session for reading")
    check = await checker.check(
        ctx,
        CheckRequest(channel=Channel.SECRET, action=ActionIn(secret=name), wait=wait),
    )
    if check.decision is Verdict.DENY:
        raise SecretNotGranted(
            f"the policy refuses reading secret {name!r}: {check.reason}",
            rule=check.rule,
            check_id=check.check_id,
        )
    if check.decision is Verdict.ASK:
        approval = check.approval.id if check.approval else None
        raise SecretNotGranted(
            f"reading secret {name!r} waits for a person's approval ({check.reason}): ask"
            " again once it is approved, or with ?wait=<seconds>",
            rule=check.rule,
            check_id=check.check_id,
            approval_id=approval,
        )
    value = await book.value(entry)
    row = await _record(store, ctx, entry, grant)
    return LeaseView(
        name=name,
        value=value,
        version=entry.version,
        lease_id=row["id"],
        expires_at=row["expires_at"],
        reads=row["reads"],
    )


async def _record(store: Store, ctx: RequestContext, entry: Entry, grant: Grant) -> dict[str, Any]:
    """The session's standing lease of this version under this grant, read once more, or a
    new one; audited either way."""
    session_id = ctx.principal.session_id
    assert session_id is not None
    now = ctx.clock.now()
    async with store.write() as conn:
        found = (
            (
                await conn.execute(
                    select(secret_leases).where(
                        secret_leases.c.org_id == ctx.org_id,
                        secret_leases.c.session_id == session_id,
                        secret_leases.c.secret_id == entry.id,
                        secret_leases.c.grant_id == grant.id,
                        secret_leases.c.version == entry.version,
                        secret_leases.c.ended_at.is_(None),
                        secret_leases.c.expires_at > now,
                    )
                )
            )
            .mappings()
            .first()
        )
        if found is not None:
            row = {**found, "reads": found["reads"] + 1}
            await conn.execute(
                update(secret_leases)
                .where(secret_leases.c.id == row["id"])
                .values(reads=row["reads"])
            )
            action = "secret.read"
        else:
            row = {
                "id": new_id("lea"),
                "org_id": ctx.org_id,
                "secret_id": entry.id,
                "secret_name": entry.name,
                "grant_id": grant.id,
                "session_id": session_id,
                "version": entry.version,
                "created_at": now,
                "expires_at": now + timedelta(seconds=grant.ttl_seconds or 0),
                "reads": 1,
                "ended_at": None,
                "end_reason": None,
            }
            await conn.execute(insert(secret_leases).values(**row))
            action = "secret.leased"
        await ctx.audit(
            conn,
            action,
            target_type="secret",
            target_id=entry.id,
            details={
                "name": entry.name,
                "version": entry.version,
                "lease_id": row["id"],
                "grant_id": grant.id,
                "session_id": session_id,
                "expires_at": row["expires_at"].isoformat(),
            },
        )
    return row


async def _refused(store: Store, ctx: RequestContext, name: str, reason: str) -> None:
    async with store.write() as conn:
        await ctx.audit(
            conn,
            "secret.lease_denied",
            outcome="denied",
            target_type="secret",
            target_id=None,
            details={"name": name, "reason": reason, "session_id": ctx.principal.session_id},
        )
