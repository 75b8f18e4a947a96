"""Checking an agent's action: who acts, what the policy says, the approval an ``ask`` waits on,
and the record of it (a ``policy_checks`` row for simulation and an audit event, written in one
transaction before the answer is given).

Who may check: a session key checks its own session's actions; a user key or a service key with
the ``policy:check`` scope checks for a session it names (``session_id``) or, without one, for
itself. The subject rules see is read from the session's row on every check, so a taint or a
change of labels counts from the next check on.

Scanning (``scan``) reads content an agent took in (a tool's result, a fetched page) for prompt
injection; a flagged session is marked tainted, which rules can match (``when: {tainted: true}``).
"""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Mapping
from dataclasses import replace
from datetime import timedelta
from typing import TYPE_CHECKING, Any

from pydantic import BaseModel, Field, model_validator
from sqlalchemy import and_, insert, select, update
from sqlalchemy.ext.asyncio import AsyncConnection

from pilothouse.api.types import ActionText, Body, Content, ObjectId, ShortText
from pilothouse.audit import chain
from pilothouse.clock import Clock
from pilothouse.context import RequestContext
from pilothouse.errors import Forbidden, NotFound
from pilothouse.identity.roles import Permission
from pilothouse.identity.tables import agent_sessions, teams, users
from pilothouse.identity.tokens import KeyKind
from pilothouse.ids import new_id
from pilothouse.policy.approvals import Approvals, ApprovalView, action_hash, read_row, view_of
from pilothouse.policy.document import Channel, Verdict
from pilothouse.policy.engine import Action, Decision, Hit, Subject
from pilothouse.policy.record import CheckRecorder
from pilothouse.policy.scan import Scanner
from pilothouse.policy.tables import approvals, policy_checks
from pilothouse.policy.versions import PolicyBook
from pilothouse.secrets.detect import CredentialDetector, Finding
from pilothouse.secrets.redact import Redactor
from pilothouse.store.engine import Store
from pilothouse.store.notify import ALL, Invalidations

if TYPE_CHECKING:
    from pilothouse.secrets.book import SecretBook

AUDITED_CHARS = 2000  # of a command, path or URL in an audit event
MAX_WAIT_SECONDS = 3600
INLINE_DETECT_CHARS = 20_000

# The field each channel's action must give.
NEEDS = {
    Channel.SHELL: "command",
    Channel.GIT: "command",
    Channel.FILE_READ: "path",
    Channel.FILE_WRITE: "path",
    Channel.HTTP: "url",
    Channel.MCP: "tool",
    Channel.LLM: "model",
    Channel.SECRET: "secret",
}


class ActionIn(Body):
    """What the agent is about to do: the field its channel needs, and any others."""

    command: ActionText | None = Field(None, description="shell, git: the command line")
    path: ActionText | None = Field(None, description="file_read, file_write: the file")
    url: ActionText | None = Field(None, description="http: the URL")
    tool: ShortText | None = Field(None, description="mcp: server__tool")
    arguments: dict[str, Any] | None = Field(None, description="mcp: the tool's arguments")
    model: ShortText | None = Field(None, description="llm: the model")
    secret: ShortText | None = Field(None, description="secret: the secret's name")


class SourceIn(Body):
    """Where the check comes from (recorded, not judged)."""

    client: ShortText | None = None
    tool: ShortText | None = None
    tool_use_id: ShortText | None = None


class CheckRequest(Body):
    """A check of one action."""

    channel: Channel
    action: ActionIn
    session_id: ObjectId | None = Field(
        None, description="user and service keys: the session the action is for"
    )
    wait: float = Field(
        0,
        ge=0,
        le=MAX_WAIT_SECONDS,
        description="seconds to wait for a human's decision when the answer is ask",
    )
    approval_id: ObjectId | None = Field(
        None, description="an approval given earlier for exactly this action"
    )
    source: SourceIn | None = None

    @model_validator(mode="after")
    def _channel_field(self) -> CheckRequest:
        needed = NEEDS[self.channel]
        if getattr(self.action, needed) is None:
            raise ValueError(f"a {self.channel.value} check needs action.{needed}")
        return self


class HitView(BaseModel):
    """A rule that matched."""

    rule: str
    decision: Verdict
    reason: str
    pack: str | None
    report: bool
    excepted: str | None


class CheckResult(BaseModel):
    """The answer to a check."""

    check_id: str
    decision: Verdict
    reason: str
    rule: str | None
    approval: ApprovalView | None
    hits: list[HitView]
    policy_version: int


class ScanRequest(Body):
    """Content an agent read, to be scanned for prompt injection."""

    content: Content
    source: ShortText | None = Field(None, description="where it came from: a tool, a URL")
    session_id: ObjectId | None = Field(None, description="user and service keys: the session")


class FindingView(BaseModel):
    """What the scanner found."""

    kind: str
    pattern: str
    excerpt: str


class ScanResponse(BaseModel):
    """What a scan found, and whether the session is now tainted."""

    flagged: bool
    score: float
    findings: list[FindingView]
    tainted: bool


def _hit_view(hit: Hit) -> HitView:
    return HitView(
        rule=hit.rule,
        decision=hit.decision,
        reason=hit.reason,
        pack=hit.pack,
        report=hit.report,
        excepted=hit.excepted,
    )


SUBJECT_KIND = "session-subject"
MAX_SUBJECTS = 20_000  # sessions whose subject is kept in memory (a few hundred bytes each)


class Checker:
    """Answers checks and scans."""

    def __init__(
        self,
        store: Store,
        book: PolicyBook,
        approvals_: Approvals,
        scanner: Scanner,
        invalidations: Invalidations,
        clock: Clock,
        subject_ttl_seconds: float,
    ):
        self._store = store
        self.book = book
        self.approvals = approvals_
        self.scanner = scanner
        self.recorder = CheckRecorder(store, clock)
        self._invalidations = invalidations
        self._subject_ttl = subject_ttl_seconds
        # (org, session) -> (read at, subject, session row): a session's context is fixed when
        # it opens; its taint, which is not, drops the entry on every replica when it changes.
        self._subjects: dict[tuple[str, str], tuple[float, Subject, Mapping[str, Any]]] = {}
        self.secrets: SecretBook | None = None  # set once built: what is redacted
        self.detector: CredentialDetector | None = None
        invalidations.subscribe(self._forget)

    async def redactor(self) -> Redactor:
        """The redactor of every known secret value (refuses if they cannot be read)."""
        if self.secrets is None:
            return Redactor.empty()
        await self.secrets.fresh()
        return self.secrets.redactor

    def _forget(self, kind: str, ref: str) -> None:
        if kind == ALL:
            self._subjects.clear()
        elif kind == SUBJECT_KIND:
            for key in [k for k in self._subjects if k[1] == ref]:
                del self._subjects[key]

    # --- who acts ---------------------------------------------------------------------------

    def session_of(self, ctx: RequestContext, session_id: str | None) -> str | None:
        """The session a check or scan is for; refuses a caller that may not check."""
        principal = ctx.principal
        if principal.kind is KeyKind.SESSION:
            if session_id is not None and session_id != principal.session_id:
                raise Forbidden("a session key checks its own session's actions only")
            return principal.session_id
        if principal.kind is KeyKind.SERVICE and "policy:check" not in principal.scopes:
            raise Forbidden(
                "this needs a service key with the policy:check scope",
                permission=Permission.POLICY_CHECK.value,
            )
        return session_id

    async def subject(self, ctx: RequestContext, session_id: str | None) -> tuple[Subject, Any]:
        """Who acts as rules see them, and the session's row (None for a key acting alone)."""
        principal = ctx.principal
        if session_id is not None:
            cached = self._subjects.get((ctx.org_id, session_id))
            if cached is not None and time.monotonic() - cached[0] < self._subject_ttl:
                self._may_check(ctx, cached[2])
                return replace(cached[1], key_kind=principal.actor_kind), cached[2]
        listening = self._invalidations.listening  # before the read: a change during it drops
        subject, row = await self._read_subject(ctx, session_id)
        if row is not None and listening:
            if len(self._subjects) >= MAX_SUBJECTS:  # ended sessions' entries: start afresh
                self._subjects.clear()
            self._subjects[(ctx.org_id, row["id"])] = (time.monotonic(), subject, row)
        return subject, row

    def _may_check(self, ctx: RequestContext, row: Mapping[str, Any]) -> None:
        principal = ctx.principal
        if (
            principal.kind is KeyKind.USER
            and row["user_id"] != principal.user_id
            and not principal.can(Permission.SESSIONS_MANAGE)
        ):
            raise Forbidden("a user key checks actions of its own user's sessions only")

    async def _read_subject(
        self, ctx: RequestContext, session_id: str | None
    ) -> tuple[Subject, Any]:
        principal = ctx.principal
        kind = principal.actor_kind
        async with self._store.read() as conn:
            if session_id is None:
                email = None
                if principal.user_id is not None:
                    email = await conn.scalar(
                        select(users.c.email).where(users.c.id == principal.user_id)
                    )
                return Subject(user=email, user_id=principal.user_id, key_kind=kind), None
            found = (
                (
                    await conn.execute(
                        select(
                            agent_sessions,
                            teams.c.name.label("team_name"),
                            users.c.email.label("user_email"),
                        )
                        .outerjoin(teams, teams.c.id == agent_sessions.c.team_id)
                        .outerjoin(users, users.c.id == agent_sessions.c.user_id)
                        .where(
                            agent_sessions.c.id == session_id,
                            agent_sessions.c.org_id == ctx.org_id,
                        )
                    )
                )
                .mappings()
                .one_or_none()
            )
        if found is None:
            raise NotFound(f"session {session_id} not found")
        row = dict(found)
        self._may_check(ctx, row)
        subject = Subject(
            team=row["team_name"],
            team_id=row["team_id"],
            user=row["user_email"],
            user_id=row["user_id"],
            project=row["project"],
            repository=row["repository"],
            labels=json.loads(row["labels"]),
            key_kind=kind,
            tainted=row["tainted_at"] is not None,
        )
        return subject, row

    # --- checking ---------------------------------------------------------------------------

    async def check(self, ctx: RequestContext, body: CheckRequest) -> CheckResult:
        """Decide ``body``'s action, record it, and wait for a human if asked to."""
        session_id = self.session_of(ctx, body.session_id)
        subject, session = await self.subject(ctx, session_id)
        active = await self.book.active(ctx.org_id)
        redactor = await self.redactor()
        # A known secret in a command never reaches a check row, an approval or the audit log.
        given = redactor.redact_json(body.action.model_dump(exclude_none=True))
        if body.source is not None:
            source = SourceIn(**redactor.redact_json(body.source.model_dump()))
            body = body.model_copy(update={"source": source})
        action = Action(body.channel, **given)
        decision = active.policy.decide(subject, action)
        digest = action_hash(body.channel.value, given)
        check_id = new_id("chk")
        verdict, reason = decision.decision, decision.reason
        row = {
            "id": check_id,
            "org_id": ctx.org_id,
            "session_id": session_id,
            "key_id": ctx.principal.key_id,
            "channel": body.channel.value,
            "action": json.dumps(given, sort_keys=True),
            "subject": json.dumps(_subject_json(subject), sort_keys=True),
            "decision": decision.decision.value,
            "rule": decision.rule,
            "policy_version": active.version,
            "approval_id": None,
            "created_at": ctx.clock.now(),
        }
        if verdict is not Verdict.ASK:  # no approval involved: group-committed (record.py)
            details = _audited(
                body, given, decision, verdict, reason, check_id, None, active.version
            )
            await self.recorder.record(
                ctx.org_id, row, self._event(ctx, session_id, verdict, details)
            )
            return self._result(ctx, check_id, decision, verdict, reason, None, active.version)
        timeout = active.document.approvals.timeout_seconds
        async with self._store.write() as conn:
            approval = None
            if body.approval_id is not None and verdict is Verdict.ASK:
                approval = await read_row(conn, ctx.org_id, body.approval_id)
                if approval is not None and (
                    approval["action_hash"] != digest
                    or approval["session_id"] != session_id
                    or approval["used_at"] is not None
                ):
                    # For its own action only, and once: anything else asks again.
                    approval = None
            if approval is None and verdict is Verdict.ASK:
                approval = await self._open(conn, ctx, session_id, digest)
            if approval is not None:
                verdict, reason = await self._settled(conn, approval, verdict, reason)
            if approval is None and verdict is Verdict.ASK:
                approval = await self._new_approval(
                    conn, ctx, check_id, session, body, given, digest, subject, decision, timeout
                )
            row["approval_id"] = approval["id"] if approval is not None else None
            await conn.execute(insert(policy_checks).values(**row))
            details = _audited(
                body, given, decision, verdict, reason, check_id, approval, active.version
            )
            event = self._event(ctx, session_id, verdict, details)
            await chain.append_many(conn, ctx.clock, ctx.org_id, [event])
        if verdict is Verdict.ASK and approval is not None and body.wait > 0:
            approval = await self.approvals.wait(ctx.org_id, approval["id"], body.wait)
            async with self._store.write() as conn:
                verdict, reason = await self._settled(conn, approval, verdict, reason)
                # What the agent was told in the end, beside the ask recorded above.
                answered = {"check_id": check_id, "decision": verdict.value, "reason": reason}
                answered["approval_id"] = approval["id"]
                event = self._event(ctx, session_id, verdict, answered)
                event = replace(event, action="policy.check.answered")
                await chain.append_many(conn, ctx.clock, ctx.org_id, [event])
        return self._result(ctx, check_id, decision, verdict, reason, approval, active.version)

    def _event(
        self,
        ctx: RequestContext,
        session_id: str | None,
        verdict: Verdict,
        details: Mapping[str, Any],
    ) -> chain.Event:
        principal = ctx.principal
        return chain.Event(
            actor=chain.Actor(principal.actor_kind, principal.actor_id),
            action="policy.check",
            outcome=verdict.value,
            target_type="session" if session_id else None,
            target_id=session_id,
            request_id=ctx.request_id,
            details=details,
        )

    def _result(
        self,
        ctx: RequestContext,
        check_id: str,
        decision: Decision,
        verdict: Verdict,
        reason: str,
        approval: Any,
        version: int,
    ) -> CheckResult:
        return CheckResult(
            check_id=check_id,
            decision=verdict,
            reason=reason,
            rule=decision.rule,
            approval=view_of(approval, ctx.clock.now(), self.approvals.public_url)
            if approval is not None
            else None,
            hits=[_hit_view(h) for h in decision.hits],
            policy_version=version,
        )

    async def _open(
        self, conn: AsyncConnection, ctx: RequestContext, session_id: str | None, digest: str
    ) -> Any:
        """An approval of the same action in the same session that still stands: pending
        (asked again while it waits: the same approval, not a second one), or approved and not
        yet used (an agent whose hook stopped waiting asks again after a person approved)."""
        return (
            (
                await conn.execute(
                    select(approvals)
                    .where(
                        approvals.c.org_id == ctx.org_id,
                        approvals.c.action_hash == digest,
                        approvals.c.status.in_(("pending", "approved")),
                        approvals.c.used_at.is_(None),
                        approvals.c.expires_at > ctx.clock.now(),
                        approvals.c.session_id == session_id
                        if session_id is not None
                        else approvals.c.session_id.is_(None),
                    )
                    .order_by(approvals.c.id.desc())
                    .limit(1)
                )
            )
            .mappings()
            .one_or_none()
        )

    async def _settled(
        self, conn: AsyncConnection, approval: Any, verdict: Verdict, reason: str
    ) -> tuple[Verdict, str]:
        """What an approval makes of an ask: allow once approved (spent on this call), deny
        once denied or expired, ask while it waits."""
        status = approval["status"]
        who = approval["decided_by"] or "someone"
        note = f": {approval['comment']}" if approval["comment"] else ""
        if status == "approved":
            if approval["used_at"] is None and await self.approvals.use(conn, approval):
                return Verdict.ALLOW, f"approved by {who}{note}"
            return verdict, reason  # spent already: the action needs a new approval
        if status == "denied":
            return Verdict.DENY, f"denied by {who}{note}"
        if status == "pending" and await self.approvals.expire_in(
            conn, approval["org_id"], approval["id"]
        ):
            status = "expired"
        if status == "expired":
            return Verdict.DENY, "no one approved it in time: the approval expired"
        return verdict, reason

    async def _new_approval(
        self,
        conn: AsyncConnection,
        ctx: RequestContext,
        check_id: str,
        session: Any,
        body: CheckRequest,
        given: Mapping[str, Any],
        digest: str,
        subject: Subject,
        decision: Decision,
        lifetime: int,
    ) -> Any:
        now = ctx.clock.now()
        expires_at = now + timedelta(seconds=lifetime)
        row: dict[str, Any] = {
            "id": new_id("apr"),
            "org_id": ctx.org_id,
            "check_id": check_id,
            "session_id": session["id"] if session is not None else None,
            "session_user_id": session["user_id"] if session is not None else ctx.principal.user_id,
            "key_id": ctx.principal.key_id,
            "channel": body.channel.value,
            "action": json.dumps(dict(given), sort_keys=True),
            "action_hash": digest,
            "subject": json.dumps(_subject_json(subject), sort_keys=True),
            "rule": decision.rule,
            "reason": decision.reason,
            "status": "pending",
            "created_at": now,
            "expires_at": expires_at,
            "decided_at": None,
            "decided_by": None,
            "comment": None,
            "used_at": None,
            "added_rule": None,
        }
        await conn.execute(insert(approvals).values(**row))
        await ctx.audit(
            conn,
            "approval.requested",
            target_type="approval",
            target_id=row["id"],
            details={
                "check_id": check_id,
                "channel": row["channel"],
                "action_hash": digest,
                "session_id": row["session_id"],
                "rule": decision.rule,
                "reason": decision.reason,
                "expires_at": expires_at.isoformat(),
            },
        )
        self.approvals.notify_after_commit(conn, row)
        return row

    # --- scanning ---------------------------------------------------------------------------

    async def scan(self, ctx: RequestContext, body: ScanRequest) -> ScanResponse:
        """Scan ``body``'s content; taint the session if it is flagged."""
        session_id = self.session_of(ctx, body.session_id)
        tainted = False
        if session_id is not None:
            _, session = await self.subject(ctx, session_id)
            tainted = session["tainted_at"] is not None
        redactor = await self.redactor()
        content = redactor.redact(body.content)  # excerpts below quote the content
        source = redactor.redact(body.source) if body.source is not None else None
        result = self.scanner.scan(content)
        if result.flagged and session_id is not None:
            tainted = True
            await self._taint(ctx, session_id, source, result)
        credentials = await self._detect(content)
        if credentials:
            kinds = sorted({c.kind for c in credentials})
            tainted = tainted or session_id is not None
            await self._credentials_seen(ctx, session_id, source, kinds)
        return ScanResponse(
            flagged=result.flagged,
            score=result.score,
            findings=[
                FindingView(kind=f.kind, pattern=f.pattern, excerpt=f.excerpt)
                for f in result.findings
            ],
            tainted=tainted,
        )

    async def _detect(self, content: str) -> list[Finding]:
        """Credential-shaped strings in ``content`` (about 2 ms per 20 KB: a long text is
        searched off the event loop)."""
        if self.detector is None:
            return []
        if len(content) <= INLINE_DETECT_CHARS:
            return self.detector.scan(content)
        return await asyncio.to_thread(self.detector.scan, content)

    async def _credentials_seen(
        self, ctx: RequestContext, session_id: str | None, source: str | None, kinds: list[str]
    ) -> None:
        """An unknown credential-shaped string in what the agent read: audited (its kind, never
        the string), and the session tainted (its holder may be exfiltrating, or about to)."""
        reason = f"credential-shaped string in {source or 'content read'}: {', '.join(kinds)}"
        async with self._store.write() as conn:
            await ctx.audit(
                conn,
                "secret.detected",
                outcome="flagged",
                target_type="session" if session_id else None,
                target_id=session_id,
                details={"source": source, "kinds": kinds},
            )
            if session_id is not None:
                await self._mark_tainted(
                    conn, ctx, session_id, reason, {"kinds": kinds}, "session.credential_flagged"
                )

    async def _taint(
        self, ctx: RequestContext, session_id: str, source: str | None, result: Any
    ) -> None:
        patterns = sorted({f.pattern for f in result.findings})
        found = ", ".join(patterns) or "a model's score"
        reason = f"prompt injection in {source or 'content read'}: {found}"
        details = {"source": source, "score": result.score, "patterns": patterns}
        async with self._store.write() as conn:
            await self._mark_tainted(
                conn, ctx, session_id, reason, details, "session.injection_flagged"
            )

    async def _mark_tainted(
        self,
        conn: AsyncConnection,
        ctx: RequestContext,
        session_id: str,
        reason: str,
        details: Mapping[str, Any],
        again: str,
    ) -> None:
        """Taint the session (audited as ``session.tainted``; as ``again`` if it was already)."""
        changed = await conn.execute(
            update(agent_sessions)
            .where(
                and_(
                    agent_sessions.c.id == session_id,
                    agent_sessions.c.org_id == ctx.org_id,
                    agent_sessions.c.tainted_at.is_(None),
                )
            )
            .values(tainted_at=ctx.clock.now(), taint_reason=reason[:2000])
        )
        await self._invalidations.publish(conn, SUBJECT_KIND, session_id)
        await ctx.audit(
            conn,
            "session.tainted" if changed.rowcount else again,
            target_type="session",
            target_id=session_id,
            details={**details, "reason": reason},
        )


def _subject_json(subject: Subject) -> dict[str, Any]:
    return {
        "team": subject.team,
        "team_id": subject.team_id,
        "user": subject.user,
        "user_id": subject.user_id,
        "project": subject.project,
        "repository": subject.repository,
        "labels": dict(subject.labels),
        "key_kind": subject.key_kind,
        "tainted": subject.tainted,
    }


def subject_from_json(data: Mapping[str, Any]) -> Subject:
    """A recorded subject, as a simulation replays it."""
    return Subject(**{**data, "labels": data.get("labels") or {}})


def _clip(text: Any) -> Any:
    if isinstance(text, str) and len(text) > AUDITED_CHARS:
        return text[:AUDITED_CHARS] + "…"
    return text


def _audited(
    body: CheckRequest,
    given: Mapping[str, Any],
    decision: Decision,
    verdict: Verdict,
    reason: str,
    check_id: str,
    approval: Any,
    version: int,
) -> dict[str, Any]:
    return {
        "check_id": check_id,
        "channel": body.channel.value,
        "action": {k: _clip(v) for k, v in given.items() if k != "arguments"},
        "decision": verdict.value,
        "policy_decision": decision.decision.value,
        "rule": decision.rule,
        "reason": reason,
        "hits": [h.rule for h in decision.hits],
        "approval_id": approval["id"] if approval is not None else None,
        "policy_version": version,
        "source": body.source.model_dump(exclude_none=True) if body.source else None,
    }


__all__ = ["CheckRequest", "CheckResult", "Checker", "ScanRequest", "ScanResponse"]
