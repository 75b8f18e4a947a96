"""Reading the audit log: filtered pages of events, newest first or following from a point."""

from __future__ import annotations

import json
from datetime import datetime
from typing import Any

from pydantic import BaseModel
from sqlalchemy import select

from pilothouse.audit import chain
from pilothouse.audit.tables import audit_events
from pilothouse.clock import from_micros
from pilothouse.context import RequestContext
from pilothouse.errors import ValidationFailed
from pilothouse.store.engine import Store


class Actor(BaseModel):
    """Who did it."""

    kind: str
    id: str | None


class Target(BaseModel):
    """What it was done to."""

    type: str | None
    id: str | None


class EventView(BaseModel):
    """An audit event as the API shows it."""

    id: str
    seq: int
    time: datetime
    actor: Actor
    action: str
    target: Target
    request_id: str | None
    outcome: str
    details: dict[str, Any]
    prev_hash: str
    hash: str


class EventPage(BaseModel):
    """Events, and the ``after_seq`` to pass to read on (when following)."""

    data: list[EventView]
    next_after_seq: int | None


class BreakView(BaseModel):
    """Where verification failed."""

    seq: int
    event_id: str | None
    kind: str
    message: str


class VerifyView(BaseModel):
    """The outcome of verifying the caller's organization's chain."""

    ok: bool
    checked: int
    head_seq: int
    head_hash: str
    first_break: BreakView | None


def _view(row: Any) -> EventView:
    return EventView(
        id=row["id"],
        seq=row["seq"],
        time=from_micros(row["ts_us"]),
        actor=Actor(kind=row["actor_kind"], id=row["actor_id"]),
        action=row["action"],
        target=Target(type=row["target_type"], id=row["target_id"]),
        request_id=row["request_id"],
        outcome=row["outcome"],
        details=json.loads(row["details"]),
        prev_hash=row["prev_hash"],
        hash=row["hash"],
    )


async def list_events(
    store: Store,
    ctx: RequestContext,
    *,
    action: str | None,
    actor_id: str | None,
    target_id: str | None,
    after_seq: int | None,
    limit: int,
    before_seq: int | None = None,
) -> EventPage:
    """Events of the caller's organization: newest first (before ``before_seq``, to page back),
    or in order after ``after_seq`` (to follow)."""
    query = select(audit_events).where(audit_events.c.org_id == ctx.org_id)
    if action:
        if action.endswith("*"):
            query = query.where(audit_events.c.action.startswith(action[:-1], autoescape=True))
        else:
            query = query.where(audit_events.c.action == action)
    if actor_id:
        query = query.where(audit_events.c.actor_id == actor_id)
    if target_id:
        query = query.where(audit_events.c.target_id == target_id)
    if after_seq is not None:
        query = query.where(audit_events.c.seq > after_seq).order_by(audit_events.c.seq)
    else:
        if before_seq is not None:
            query = query.where(audit_events.c.seq < before_seq)
        query = query.order_by(audit_events.c.seq.desc())
    async with store.read() as conn:
        rows = (await conn.execute(query.limit(limit))).mappings().all()
    data = [_view(r) for r in rows]
    next_after = max((e.seq for e in data), default=after_seq) if after_seq is not None else None
    return EventPage(data=data, next_after_seq=next_after)


def parse_checkpoint(raw: str | None) -> tuple[int, str] | None:
    """``SEQ:HASH`` -> (seq, hash); ValidationFailed names a malformed one."""
    if not raw:
        return None
    seq, sep, digest = raw.partition(":")
    # isdigit() alone admits digits int() refuses, such as superscripts.
    if not sep or not (seq.isascii() and seq.isdigit()) or len(digest) != 64 or not _is_hex(digest):
        raise ValidationFailed("checkpoint must look like SEQ:HASH (a number and 64 hex digits)")
    return int(seq), digest.lower()


def _is_hex(value: str) -> bool:
    return all(c in "0123456789abcdefABCDEF" for c in value)


async def verify_chain(store: Store, ctx: RequestContext, checkpoint: str | None) -> VerifyView:
    """Verify the caller's organization's chain end to end."""
    pinned = parse_checkpoint(checkpoint)
    async with store.read() as conn:
        result = await chain.verify(conn, ctx.org_id, checkpoint=pinned)
    brk = result.first_break
    return VerifyView(
        ok=result.ok,
        checked=result.checked,
        head_seq=result.head_seq,
        head_hash=result.head_hash,
        first_break=BreakView(
            seq=brk.seq, event_id=brk.event_id, kind=brk.kind, message=brk.message
        )
        if brk
        else None,
    )
