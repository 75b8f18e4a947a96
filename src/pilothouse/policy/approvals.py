"""Approvals: an action a rule asked about waits for a human to decide.

An approval is bound to the SHA-256 of its exact channel and action (``action_hash``): an
approved action runs once (``used_at``), and the same request with any byte changed is another
action that needs its own approval. A pending approval expires at ``expires_at`` (the policy's
``approvals.timeout_seconds``); an expired one denies.

Who decides: a user key whose role holds ``approvals:decide`` (owner, admin, security). Session
and service keys never decide (they are not humans). The user a session acts for may not decide
that session's approvals unless the policy's ``approvals.self_approval`` is true. A decision is
one conditional update (``WHERE status = 'pending'``), so two people, or two replicas, deciding
at once: one wins, the other gets a 409.

Waiting: a check with ``wait`` parks on an event that the approval's invalidation sets (on
every replica, through PostgreSQL's notifications) and re-reads the row at least every
``POLL_SECONDS`` in case a notification was missed.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import json
import logging
from collections.abc import Mapping
from datetime import datetime
from glob import escape
from typing import Any, Literal

from pydantic import BaseModel, Field
from sqlalchemy import and_, select, update
from sqlalchemy.ext.asyncio import AsyncConnection

from pilothouse.announce import Announcer
from pilothouse.api.pagination import page_query, split_page
from pilothouse.api.types import Body, Page, Text
from pilothouse.audit import chain
from pilothouse.audit.chain import canonical_json
from pilothouse.budgets.alerts import AlertWebhook
from pilothouse.clock import Clock
from pilothouse.context import RequestContext
from pilothouse.errors import Conflict, Forbidden, NotFound
from pilothouse.identity.roles import Permission
from pilothouse.identity.tokens import KeyKind
from pilothouse.policy.document import (
    Channel,
    Exception_,
    Match,
    Rule,
    Verdict,
    When,
    with_item,
)
from pilothouse.policy.tables import approvals
from pilothouse.policy.versions import PolicyBook, latest_row, store_version
from pilothouse.store.engine import Store
from pilothouse.store.notify import ALL, Invalidations

log = logging.getLogger(__name__)

KIND = "approval"
POLL_SECONDS = 2.0
Status = Literal["pending", "approved", "denied", "expired"]


def action_hash(channel: str, action: Mapping[str, Any]) -> str:
    """The SHA-256 an approval is bound to: the channel and every field of the action given."""
    given = {k: v for k, v in action.items() if v is not None}
    return hashlib.sha256(
        canonical_json({"channel": channel, "action": given}).encode()
    ).hexdigest()


class ApprovalView(BaseModel):
    """An approval as the API shows it."""

    id: str
    status: Status
    channel: str
    action: dict[str, Any]
    action_hash: str
    session_id: str | None
    rule: str | None
    reason: str
    created_at: datetime
    expires_at: datetime
    decided_at: datetime | None
    decided_by: str | None
    comment: str | None
    used_at: datetime | None
    added_rule: str | None
    link: str | None = None


class Decide(Body):
    """A human's decision on an approval."""

    comment: Text | None = None
    add_rule: bool = Field(
        False,
        description="approve only: also store a policy version with an exception that lets"
        " this exact action through from now on (needs policy:write)",
    )


def view_of(row: Mapping[str, Any], now: datetime, public_url: str | None = None) -> ApprovalView:
    """``row`` as the API shows it; a pending approval past its expiry shows as expired."""
    status = row["status"]
    if status == "pending" and row["expires_at"] <= now:
        status = "expired"
    return ApprovalView(
        id=row["id"],
        status=status,
        channel=row["channel"],
        action=json.loads(row["action"]),
        action_hash=row["action_hash"],
        session_id=row["session_id"],
        rule=row["rule"],
        reason=row["reason"],
        created_at=row["created_at"],
        expires_at=row["expires_at"],
        decided_at=row["decided_at"],
        decided_by=row["decided_by"],
        comment=row["comment"],
        used_at=row["used_at"],
        added_rule=row["added_rule"],
        link=f"{public_url.rstrip('/')}/api/v1/approvals/{row['id']}" if public_url else None,
    )


async def read_row(conn: AsyncConnection, org_id: str, approval_id: str) -> Any:
    """The approval's row, or None if ``org_id`` has no such approval."""
    return (
        (
            await conn.execute(
                select(approvals).where(approvals.c.id == approval_id, approvals.c.org_id == org_id)
            )
        )
        .mappings()
        .one_or_none()
    )


class Approvals:
    """Waiting for decisions, deciding, expiring, and telling people an approval waits."""

    def __init__(
        self,
        store: Store,
        clock: Clock,
        invalidations: Invalidations,
        book: PolicyBook,
        webhooks: list[AlertWebhook],
        public_url: str | None,
    ) -> None:
        self._store = store
        self._clock = clock
        self._invalidations = invalidations
        self._book = book
        self.announcer = Announcer(webhooks)
        self.public_url = public_url
        self._waiters: dict[str, set[asyncio.Event]] = {}
        invalidations.subscribe(self._wake)

    def _wake(self, kind: str, ref: str) -> None:
        if kind == ALL:
            events = [e for group in self._waiters.values() for e in group]
        elif kind == KIND:
            events = list(self._waiters.get(ref, ()))
        else:
            return
        for event in events:
            event.set()

    # --- waiting ----------------------------------------------------------------------------

    async def wait(self, org_id: str, approval_id: str, seconds: float) -> Any:
        """Wait up to ``seconds`` (never past the approval's expiry) for a decision; the row
        as it then stands. A pending approval that reached its expiry is marked expired."""
        end = asyncio.get_running_loop().time() + seconds  # the wait: real time
        event = asyncio.Event()
        self._waiters.setdefault(approval_id, set()).add(event)
        try:
            while True:
                event.clear()  # before the read: a decision during it wakes the next wait
                async with self._store.read() as conn:
                    row = await read_row(conn, org_id, approval_id)
                assert row is not None
                now = self._clock.now()  # the expiry: the clock's time
                if row["status"] != "pending":
                    return row
                if row["expires_at"] <= now:
                    return await self.expire(org_id, approval_id) or row
                left = min(
                    end - asyncio.get_running_loop().time(),
                    (row["expires_at"] - now).total_seconds(),
                )
                if left <= 0:
                    return row
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(event.wait(), timeout=min(left, POLL_SECONDS))
        finally:
            group = self._waiters.get(approval_id)
            if group is not None:
                group.discard(event)
                if not group:
                    del self._waiters[approval_id]

    async def expire(self, org_id: str, approval_id: str) -> Any:
        """Mark a pending approval past its expiry expired (audited); the row after, or None if
        it was decided or expired by someone else first."""
        async with self._store.write() as conn:
            return await self.expire_in(conn, org_id, approval_id)

    async def expire_in(self, conn: AsyncConnection, org_id: str, approval_id: str) -> Any:
        """``expire`` inside the caller's write transaction."""
        now = self._clock.now()
        done = await conn.execute(
            update(approvals)
            .where(
                approvals.c.id == approval_id,
                approvals.c.org_id == org_id,
                approvals.c.status == "pending",
                approvals.c.expires_at <= now,
            )
            .values(status="expired", decided_at=now)
        )
        if done.rowcount != 1:
            return None
        await chain.append(
            conn,
            self._clock,
            org_id=org_id,
            actor=chain.Actor("system", None),
            action="approval.expired",
            outcome="denied",
            target_type="approval",
            target_id=approval_id,
            details={"reason": "no one decided before it expired"},
        )
        await self._invalidations.publish(conn, KIND, approval_id)
        return await read_row(conn, org_id, approval_id)

    async def expire_due(self) -> int:
        """Expire every pending approval past its expiry; how many."""
        async with self._store.read() as conn:
            due = (
                await conn.execute(
                    select(approvals.c.org_id, approvals.c.id)
                    .where(
                        approvals.c.status == "pending", approvals.c.expires_at <= self._clock.now()
                    )
                    .limit(200)
                )
            ).all()
        expired = 0
        for org_id, approval_id in due:
            expired += await self.expire(org_id, approval_id) is not None
        return expired

    async def use(self, conn: AsyncConnection, row: Mapping[str, Any]) -> bool:
        """Spend an approved approval on its action, once; whether this call did."""
        used = await conn.execute(
            update(approvals)
            .where(
                approvals.c.id == row["id"],
                approvals.c.status == "approved",
                approvals.c.used_at.is_(None),
            )
            .values(used_at=self._clock.now())
        )
        return bool(used.rowcount == 1)

    # --- deciding ---------------------------------------------------------------------------

    async def decide(
        self, ctx: RequestContext, approval_id: str, verdict: Verdict, body: Decide
    ) -> ApprovalView:
        """Approve or deny ``approval_id`` as ``ctx``'s human (see the module for who may)."""
        principal = ctx.principal
        if principal.kind is not KeyKind.USER:
            raise Forbidden(
                "only a person's key can decide an approval", permission="approvals:decide"
            )
        if body.add_rule and verdict is not Verdict.ALLOW:
            raise Conflict("add_rule goes with approve only")
        active = await self._book.active(ctx.org_id)
        async with self._store.write() as conn:
            row = await read_row(conn, ctx.org_id, approval_id)
            if row is None:
                raise NotFound(f"approval {approval_id} not found")
            if (
                row["session_user_id"] is not None
                and row["session_user_id"] == principal.user_id
                and not active.document.approvals.self_approval
            ):
                raise Forbidden(
                    "you cannot decide an approval of your own session's action (the policy's"
                    " approvals.self_approval is false)",
                    reason="self_approval",
                )
            now = ctx.clock.now()
            if row["status"] != "pending" or row["expires_at"] <= now:
                shown = view_of(row, now).status
                raise Conflict(
                    f"approval {approval_id} is {shown}: it can no longer be decided", status=shown
                )
            added = None
            if body.add_rule:
                if not principal.can(Permission.POLICY_WRITE):
                    raise Forbidden(
                        "adding a rule needs the policy:write permission", permission="policy:write"
                    )
                added = await self._add_rule(conn, ctx, row, active.source)
            status = "approved" if verdict is Verdict.ALLOW else "denied"
            done = await conn.execute(
                update(approvals)
                .where(approvals.c.id == approval_id, approvals.c.status == "pending")
                .values(
                    status=status,
                    decided_at=now,
                    decided_by=principal.user_id,
                    comment=body.comment,
                    added_rule=added,
                )
            )
            if done.rowcount != 1:
                raise Conflict(f"approval {approval_id} was decided by someone else first")
            await ctx.audit(
                conn,
                f"approval.{status}",
                target_type="approval",
                target_id=approval_id,
                details={
                    "channel": row["channel"],
                    "action_hash": row["action_hash"],
                    "session_id": row["session_id"],
                    "rule": row["rule"],
                    "comment": body.comment,
                    "added_rule": added,
                },
            )
            await self._invalidations.publish(conn, KIND, approval_id)
            row = await read_row(conn, ctx.org_id, approval_id)
        return view_of(row, ctx.clock.now(), self.public_url)

    async def _add_rule(
        self, conn: AsyncConnection, ctx: RequestContext, row: Mapping[str, Any], source: str
    ) -> str:
        """Store a policy version that lets this exact action through; the new entry's id."""
        if self._book.file_managed(ctx.org_id):
            raise Conflict(
                "this policy is managed from a file (setting policy_file): add the rule there",
                managed_by="file",
            )
        latest = await latest_row(conn, ctx.org_id)
        current = latest["source"] if latest is not None else source
        entry_id = f"approved-{row['id'].split('_', 1)[-1].lower()}"
        channel = Channel(row["channel"])
        match = _exact(channel, json.loads(row["action"]))
        subject = json.loads(row["subject"])
        when = When(repository=[subject["repository"]] if subject.get("repository") else None)
        reason = f"approved by {ctx.principal.actor_id} ({row['id']})"
        entry: Exception_ | Rule
        if row["rule"]:
            key = "exceptions"
            entry = Exception_(
                id=entry_id,
                rule=row["rule"],
                channel=channel,
                when=when,
                match=match,
                reason=reason,
            )
        else:  # the default asked: an allow rule is stronger than the default
            key = "rules"
            entry = Rule(
                id=entry_id,
                channel=channel,
                when=when,
                match=match,
                decision=Verdict.ALLOW,
                reason=reason,
            )
        item = entry.model_dump(mode="json", exclude_defaults=True)
        new_source = with_item(current, key, item)
        await store_version(
            conn,
            self._invalidations,
            ctx.clock,
            org_id=ctx.org_id,
            source=new_source,
            origin="approval",
            actor=chain.Actor(ctx.principal.actor_kind, ctx.principal.actor_id),
            comment=f"approve and add a rule: {row['id']}",
            request_id=ctx.request_id,
        )
        return entry_id

    # --- listing ----------------------------------------------------------------------------

    async def list(
        self,
        ctx: RequestContext,
        status: Status | None,
        session_id: str | None,
        limit: int,
        cursor: str | None,
    ) -> Page[ApprovalView]:
        """Approvals of the organization, newest first."""
        now = ctx.clock.now()
        query = select(approvals).where(approvals.c.org_id == ctx.org_id)
        if status == "pending":
            query = query.where(approvals.c.status == "pending", approvals.c.expires_at > now)
        elif status == "expired":
            query = query.where(
                (approvals.c.status == "expired")
                | and_(approvals.c.status == "pending", approvals.c.expires_at <= now)
            )
        elif status is not None:
            query = query.where(approvals.c.status == status)
        if session_id is not None:
            query = query.where(approvals.c.session_id == session_id)
        async with self._store.read() as conn:
            rows = (
                (await conn.execute(page_query(query, approvals.c.id, cursor, limit)))
                .mappings()
                .all()
            )
        kept, next_cursor = split_page(rows, limit, lambda r: r["id"])
        return Page[ApprovalView](
            data=[view_of(dict(r), now, self.public_url) for r in kept], next_cursor=next_cursor
        )

    async def read(self, ctx: RequestContext, approval_id: str) -> ApprovalView:
        """One approval of the organization."""
        async with self._store.read() as conn:
            row = await read_row(conn, ctx.org_id, approval_id)
        if row is None:
            raise NotFound(f"approval {approval_id} not found")
        return view_of(row, ctx.clock.now(), self.public_url)

    # --- telling people ---------------------------------------------------------------------

    def notify_after_commit(self, conn: AsyncConnection, row: Mapping[str, Any]) -> None:
        """Post the new approval to every approval webhook once its transaction commits."""
        if not self.announcer.webhooks:
            return
        view = view_of(row, self._clock.now(), self.public_url)
        self.announcer.after_commit(
            conn, f"approval {view.id}", lambda form: notification(view, form)
        )

    async def aclose(self) -> None:
        """Let notifications in flight finish (bounded)."""
        await self.announcer.aclose()


def notification(view: ApprovalView, form: str) -> dict[str, Any]:
    """The webhook body announcing ``view``: Pilothouse's JSON, or Slack's ``{text}``."""
    if form == "slack":
        what = _summary(view.channel, view.action)
        link = f" <{view.link}|Review it>" if view.link else ""
        return {
            "text": f"Pilothouse: an agent waits for approval ({view.channel}): `{what}`."
            f" Reason: {view.reason}. Expires {view.expires_at.isoformat()}.{link}"
        }
    return {
        "type": "approval.requested",
        "approval": view.model_dump(mode="json"),
        "link": view.link,
    }


def _summary(channel: str, action: Mapping[str, Any]) -> str:
    for field in ("command", "path", "url", "tool", "model", "secret"):
        if action.get(field):
            return str(action[field])[:300]
    return channel


def _exact(channel: Channel, action: Mapping[str, Any]) -> Match:
    """A match for exactly ``action`` (glob characters escaped)."""
    fields: dict[str, Any] = {}
    if action.get("command") is not None:
        fields["line"] = escape(action["command"])
    for name in ("path", "url", "tool", "model", "secret"):
        if action.get(name) is not None:
            fields[name] = escape(str(action[name]))
    if action.get("arguments"):
        fields["arguments"] = {k: escape(str(v)) for k, v in action["arguments"].items()}
    return Match(**fields)
