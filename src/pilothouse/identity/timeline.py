"""A session's timeline: every LLM call it made (tokens, cost, model, latency) and every event
recorded about it (policy checks and their decisions, approvals, MCP calls, secret leases, taint
flags, its opening and end), in order, with totals.

Read with ``sessions:read``, as the session itself is: a member sees only their own sessions'
timelines (``sessions.visible``)."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from typing import Any

from pydantic import BaseModel, Field
from sqlalchemy import func, select
from sqlalchemy.ext.asyncio import AsyncConnection

from pilothouse.audit.tables import audit_events
from pilothouse.context import RequestContext
from pilothouse.gateway.rollups import COST_SPLIT
from pilothouse.gateway.tables import usage_records
from pilothouse.gateway.usage_rows import dollars
from pilothouse.identity.sessions import SessionView, read_session
from pilothouse.policy.tables import approvals
from pilothouse.store.engine import Store

MOST_ITEMS = 500  # of each kind, the newest; the totals count them all


class TimelineItem(BaseModel):
    """One moment of a session."""

    at: datetime
    kind: str = Field(
        description="llm (a model call) or the audit action (policy.check, mcp.call, ...)."
    )
    summary: str = Field(description="What happened, in a line.")
    outcome: str = Field(description="ok, or the call's status; an event's outcome.")
    decision: str | None = Field(None, description="A policy check's: allow, deny or ask.")
    model: str | None = None
    input_tokens: int | None = None
    output_tokens: int | None = None
    cost: str | None = Field(None, description="Dollars, exact.")
    latency_ms: int | None = None
    details: dict[str, Any] = Field(default_factory=dict)


class TimelineTotals(BaseModel):
    """What the session added up to."""

    llm_calls: int
    input_tokens: int
    output_tokens: int
    cost: str
    cost_picos: int
    checks: dict[str, int] = Field(description="Policy checks by decision.")
    approvals: int
    mcp_calls: int
    secret_leases: int
    tainted: bool
    truncated: bool = Field(
        description="Only the newest 500 items of a kind are listed; the totals count all."
    )


class Timeline(BaseModel):
    """A session, what it did in order, and its totals."""

    session: SessionView
    items: list[TimelineItem]
    totals: TimelineTotals


async def session_timeline(store: Store, ctx: RequestContext, session_id: str) -> Timeline:
    """The timeline of one session the caller may read (else NotFound)."""
    session = await read_session(store, ctx, session_id)
    a = approvals.c
    newest = [  # of each kind, the newest MOST_ITEMS and one more (to say there are more)
        (usage_records, usage_records.c.session_id, usage_records.c.created_at),
        (audit_events, audit_events.c.target_id, audit_events.c.seq),
        (approvals, a.session_id, a.created_at),
    ]
    async with store.read() as conn:
        calls, events, asked = [
            (
                await conn.execute(
                    select(table)
                    .where(table.c.org_id == ctx.org_id, of_session == session_id)
                    .order_by(order.desc())
                    .limit(MOST_ITEMS + 1)
                )
            )
            .mappings()
            .all()
            for table, of_session, order in newest
        ]
        totals = await _totals(conn, ctx.org_id, session_id)
    totals.truncated = max(len(calls), len(events), len(asked)) > MOST_ITEMS
    items = [_call_item(row) for row in calls[:MOST_ITEMS]]
    items += [_event_item(row) for row in events[:MOST_ITEMS]]
    items += [_approval_item(row) for row in asked[:MOST_ITEMS]]
    # An approval opens with the check that asked it, at the same instant: after it.
    items.sort(key=lambda item: (item.at, item.kind == "approval"))
    return Timeline(session=session, items=items, totals=totals)


def _call_item(row: Any) -> TimelineItem:
    ended = row["created_at"] if row["created_at"].tzinfo else row["created_at"].replace(tzinfo=UTC)
    return TimelineItem(
        at=ended - timedelta(milliseconds=row["latency_ms"] or 0),  # when the call began
        kind="llm",
        summary=f"{row['model_alias']} via {row['endpoint']}",
        outcome=row["status"],
        model=row["model_alias"],
        input_tokens=row["input_tokens"] + row["cache_read_tokens"] + row["cache_write_tokens"],
        output_tokens=row["output_tokens"],
        cost=dollars(row["cost_picos"]),
        latency_ms=row["latency_ms"],
        details={"request_id": row["request_id"], "cost_picos": row["cost_picos"]},
    )


def _event_item(row: Any) -> TimelineItem:
    details = json.loads(row["details"]) if row["details"] else {}
    action = row["action"]
    decision = details.get("decision") if action == "policy.check" else None
    return TimelineItem(
        at=datetime.fromtimestamp(row["ts_us"] / 1_000_000, UTC),
        kind=action,
        summary=_summary(action, details),
        outcome=row["outcome"],
        decision=decision,
        details=details,
    )


def _approval_item(row: Any) -> TimelineItem:
    at = row["created_at"]
    action = json.loads(row["action"]) if row["action"] else {}
    what = _action_text(row["channel"], action)
    decided = f", {row['status']} by {row['decided_by']}" if row["decided_by"] else ""
    return TimelineItem(
        at=at if at.tzinfo else at.replace(tzinfo=UTC),
        kind="approval",
        summary=f"{what}: asked a person ({row['reason']}){decided}",
        outcome=row["status"],
        details={"approval_id": row["id"], "rule": row["rule"], "comment": row["comment"]},
    )


def _action_text(channel: str, action: dict[str, Any]) -> str:
    """What an action was, in a few words: its tool and command, path or URL."""
    tool = action.get("tool") or channel
    for key in ("command", "path", "url", "host", "name"):
        value = action.get(key)
        if isinstance(value, str) and value:
            return f"{tool} {value[:120]}"
    return str(tool)


def _summary(action: str, details: dict[str, Any]) -> str:
    """One line for an event, from what its details hold."""
    if action == "policy.check":
        what = _action_text(str(details.get("channel", "?")), details.get("action") or {})
        rule = details.get("rule")
        return f"{what}: {details.get('decision', '?')}" + (f" ({rule})" if rule else "")
    if action.startswith("mcp."):
        error = details.get("error")
        return str(details.get("tool", "?")) + (f": {error}" if error else "")
    if action.startswith("secret."):
        return f"{action.removeprefix('secret.')} {details.get('name', details.get('secret', ''))}"
    reason = details.get("reason")
    return action + (f": {reason}" if isinstance(reason, str) else "")


async def _totals(conn: AsyncConnection, org_id: str, session_id: str) -> TimelineTotals:
    """The session's totals, summed by the store over every row (not only those shown)."""
    u, e = usage_records.c, audit_events.c
    calls = (
        await conn.execute(
            select(
                func.count(),
                func.coalesce(
                    func.sum(u.input_tokens + u.cache_read_tokens + u.cache_write_tokens), 0
                ),
                func.coalesce(func.sum(u.output_tokens), 0),
                # In two parts, as spend reports sum it: SQLite's sum is 64-bit.
                func.coalesce(func.sum(u.cost_picos // COST_SPLIT), 0),
                func.coalesce(func.sum(u.cost_picos % COST_SPLIT), 0),
            ).where(u.org_id == org_id, u.session_id == session_id)
        )
    ).one()
    counted: dict[tuple[str, str], int] = {}
    for action, outcome, n in await conn.execute(
        select(e.action, e.outcome, func.count())
        .where(e.org_id == org_id, e.target_id == session_id)
        .group_by(e.action, e.outcome)
    ):
        counted[(action, outcome)] = int(n)
    asked = await conn.scalar(
        select(func.count()).where(
            approvals.c.org_id == org_id, approvals.c.session_id == session_id
        )
    )
    picos = int(calls[3]) * COST_SPLIT + int(calls[4])
    return TimelineTotals(
        llm_calls=int(calls[0]),
        input_tokens=int(calls[1]),
        output_tokens=int(calls[2]),
        cost=dollars(picos),
        cost_picos=picos,
        checks={o: n for (a, o), n in counted.items() if a == "policy.check"},
        approvals=int(asked or 0),
        mcp_calls=sum(n for (a, _), n in counted.items() if a == "mcp.call"),
        secret_leases=sum(n for (a, _), n in counted.items() if a == "secret.leased"),
        tainted=any(a == "session.tainted" for a, _ in counted),
        truncated=False,
    )
