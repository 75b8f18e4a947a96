"""The hash chain: canonical JSON, appending an event, and verifying a chain end to end.

Each organization has one chain. Event ``n`` stores ``prev_hash`` (the hash of event ``n-1``,
or 64 zeros for the first) and ``hash = SHA-256(canonical JSON of its fields and prev_hash)``.
``audit_heads`` records the last sequence number and hash, so removing events from the end is
detected too; an exported checkpoint (seq, hash) lets an outsider pin the chain.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from sqlalchemy import insert, select, update
from sqlalchemy.ext.asyncio import AsyncConnection

from pilothouse.audit.tables import audit_events, audit_heads
from pilothouse.clock import Clock, to_micros
from pilothouse.ids import new_id

GENESIS = "0" * 64
_HASHED = (
    "id",
    "org_id",
    "seq",
    "ts_us",
    "actor_kind",
    "actor_id",
    "action",
    "target_type",
    "target_id",
    "request_id",
    "outcome",
    "details",
    "prev_hash",
)


def canonical_json(value: Any) -> str:
    """JSON with sorted keys, no spaces and UTF-8 text: the same bytes for the same value."""
    return json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=False)


def event_hash(row: Mapping[str, Any]) -> str:
    """The SHA-256 of an event's hashed fields."""
    return hashlib.sha256(canonical_json({k: row[k] for k in _HASHED}).encode()).hexdigest()


@dataclass(frozen=True, slots=True)
class Actor:
    """Who did it: ``user``, ``service``, ``session`` or ``anonymous``/``system``."""

    kind: str
    id: str | None


async def create_chain(conn: AsyncConnection, org_id: str) -> None:
    """Start an organization's chain (done when the organization is made)."""
    await conn.execute(insert(audit_heads).values(org_id=org_id, seq=0, hash=GENESIS, note=""))


@dataclass(frozen=True, slots=True)
class Event:
    """One event to append (its chain position and hash are given when it is appended)."""

    actor: Actor
    action: str
    outcome: str = "success"
    target_type: str | None = None
    target_id: str | None = None
    request_id: str | None = None
    details: Mapping[str, Any] | None = None


async def append(
    conn: AsyncConnection,
    clock: Clock,
    *,
    org_id: str,
    actor: Actor,
    action: str,
    outcome: str = "success",
    target_type: str | None = None,
    target_id: str | None = None,
    request_id: str | None = None,
    details: Mapping[str, Any] | None = None,
) -> str:
    """Append one event to ``org_id``'s chain inside the caller's write transaction."""
    event = Event(actor, action, outcome, target_type, target_id, request_id, details)
    (event_id,) = await append_many(conn, clock, org_id, [event])
    return event_id


async def append_many(
    conn: AsyncConnection, clock: Clock, org_id: str, events: Sequence[Event]
) -> list[str]:
    """Append ``events`` in order to ``org_id``'s chain inside the caller's write transaction:
    one read of the head (locked) and one write of it, however many events."""
    head = (
        await conn.execute(
            select(audit_heads.c.seq, audit_heads.c.hash)
            .where(audit_heads.c.org_id == org_id)
            .with_for_update()
        )
    ).one()
    rows = chained_rows(org_id, head.seq, head.hash, to_micros(clock.now()), events)
    if not rows:
        return []
    await conn.execute(insert(audit_events), rows)
    last = rows[-1]
    await conn.execute(
        update(audit_heads)
        .where(audit_heads.c.org_id == org_id)
        .values(seq=last["seq"], hash=last["hash"])
    )
    return [str(r["id"]) for r in rows]


def chained_rows(
    org_id: str, seq: int, prev_hash: str, ts_us: int, events: Sequence[Event]
) -> list[dict[str, Any]]:
    """The rows of ``events`` following a chain whose head is (``seq``, ``prev_hash``): each
    with its sequence number, the previous event's hash and its own. The caller holds the head
    (locked) and moves it to the last row's ``seq`` and ``hash``."""
    rows: list[dict[str, Any]] = []
    for event in events:
        seq += 1
        row: dict[str, Any] = {
            "id": new_id("evt"),
            "org_id": org_id,
            "seq": seq,
            "ts_us": ts_us,
            "actor_kind": event.actor.kind,
            "actor_id": event.actor.id,
            "action": event.action,
            "target_type": event.target_type,
            "target_id": event.target_id,
            "request_id": event.request_id,
            "outcome": event.outcome,
            "details": canonical_json(dict(event.details or {})),
            "prev_hash": prev_hash,
        }
        row["hash"] = prev_hash = event_hash(row)
        rows.append(row)
    return rows


@dataclass(frozen=True, slots=True)
class Break:
    """The first place a chain fails to verify."""

    seq: int
    event_id: str | None
    kind: str
    message: str


@dataclass(frozen=True, slots=True)
class Verification:
    """The outcome of walking one chain."""

    ok: bool
    checked: int
    head_seq: int
    head_hash: str
    first_break: Break | None


async def verify(
    conn: AsyncConnection,
    org_id: str,
    *,
    checkpoint: tuple[int, str] | None = None,
    page: int = 2000,
) -> Verification:
    """Walk ``org_id``'s chain in order and report the first altered, missing or moved event."""
    head = (
        await conn.execute(
            select(audit_heads.c.seq, audit_heads.c.hash).where(audit_heads.c.org_id == org_id)
        )
    ).one()
    expected_seq, prev_hash, checked = 1, GENESIS, 0
    found_break: Break | None = None
    while found_break is None:
        rows = (
            (
                await conn.execute(
                    select(audit_events)
                    .where(audit_events.c.org_id == org_id, audit_events.c.seq >= expected_seq)
                    .order_by(audit_events.c.seq)
                    .limit(page)
                )
            )
            .mappings()
            .all()
        )
        for row in rows:
            found_break = _check(row, expected_seq, prev_hash, checkpoint)
            if found_break is not None:
                break
            checked += 1
            expected_seq, prev_hash = row["seq"] + 1, row["hash"]
        if len(rows) < page:
            break
    if found_break is None:
        found_break = _check_end(expected_seq - 1, prev_hash, head.seq, head.hash, checkpoint)
    return Verification(found_break is None, checked, head.seq, head.hash, found_break)


def _check(
    row: Any,
    expected_seq: int,
    prev_hash: str,
    checkpoint: tuple[int, str] | None,
) -> Break | None:
    seq, event_id = int(row["seq"]), str(row["id"])
    if seq != expected_seq:
        return Break(
            expected_seq,
            None,
            "missing",
            f"event {expected_seq} is missing (the chain jumps from {expected_seq - 1} to {seq}):"
            " events were deleted",
        )
    if event_hash(row) != row["hash"]:
        return Break(
            seq, event_id, "altered", f"event {seq} ({event_id}) does not match its hash: altered"
        )
    if row["prev_hash"] != prev_hash:
        return Break(
            seq,
            event_id,
            "relinked",
            f"event {seq} ({event_id}) does not follow event {seq - 1}: events were deleted,"
            " inserted or reordered before it",
        )
    if checkpoint is not None and checkpoint[0] == seq and checkpoint[1] != row["hash"]:
        return Break(
            seq, event_id, "checkpoint", f"event {seq} ({event_id}) differs from the checkpoint"
        )
    return None


def _check_end(
    last_seq: int,
    last_hash: str,
    head_seq: int,
    head_hash: str,
    checkpoint: tuple[int, str] | None,
) -> Break | None:
    if last_seq != head_seq or last_hash != head_hash:
        return Break(
            last_seq + 1,
            None,
            "truncated",
            f"the chain ends at event {last_seq} but its head records event {head_seq}:"
            " events were deleted from the end",
        )
    if checkpoint is not None and checkpoint[0] > last_seq:
        return Break(
            last_seq + 1,
            None,
            "truncated",
            f"the checkpoint names event {checkpoint[0]} but the chain ends at event {last_seq}",
        )
    return None
