"""Dashboard sign-in: people's browser sessions, their cookie, and CSRF tokens.

- **Sign-in** with an email and a local password (Argon2id, ``web/passwords.py``) or through
  the configured OpenID Connect issuer (``web/oidc.py``). Either makes a web session: a random
  token in the cookie, only its SHA-256 in the store, so a copy of the store signs no one in.
- **The cookie** is ``HttpOnly`` (no script reads it), ``SameSite=Lax`` (no other site's form
  or fetch carries it) and ``Secure`` when the request came over TLS (``https``, as the server
  or a trusted proxy says) or ``public_url`` is https.
- **CSRF**: every form carries the session's own token, compared in constant time; a POST
  without it, or with another, changes nothing (403 ``csrf_failed``). The sign-in form, before
  any session, uses a double-submit token: a cookie and a field that must match.
- **Authorization** is the API's: a signed-in person acts as their user, with their role's
  permissions (``Principal`` of kind ``user``), through the same domain functions.
- A session ends at sign-out, at its expiry (``web_session_hours``), or when the person is
  disabled or their role changes (read again on every request: never stale). Ended and
  expired sessions are deleted hourly (``forget_ended``).
- Repeated failed sign-ins for one email from one address are refused for a while (10 in 15
  minutes, none counted from before that address's last sign-in as that person), each audited
  as ``auth.failed``. They are counted from the audit log, so every replica counts the same
  failures (guesses spread over replicas are not multiplied by them); sign-ins racing each
  other may each pass before the others' failures are written.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import secrets
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

from sqlalchemy import and_, delete, insert, or_, select, update

from pilothouse.audit import chain
from pilothouse.audit.tables import audit_events
from pilothouse.clock import Clock, to_micros
from pilothouse.errors import SignInRefused, TooManyFailures
from pilothouse.identity.principal import Principal
from pilothouse.identity.roles import Role
from pilothouse.identity.tables import organizations, users
from pilothouse.identity.tokens import KeyKind
from pilothouse.identity.users import insert_user
from pilothouse.store.engine import Store
from pilothouse.web import passwords
from pilothouse.web.tables import web_sessions

COOKIE = "pilothouse_session"
LOGIN_CSRF_COOKIE = "pilothouse_login"
TOKEN_BYTES = 32
FAILURES_ALLOWED = 10
FAILURE_WINDOW_SECONDS = 15 * 60


@dataclass(frozen=True, slots=True)
class Signed:
    """A signed-in person: who they act as, and their session's CSRF token."""

    principal: Principal
    csrf: str
    session_hash: str
    email: str
    name: str


def token_hash(token: str) -> str:
    """What the store keeps of a session token."""
    return hashlib.sha256(token.encode()).hexdigest()


def same(given: str | None, expected: str) -> bool:
    """Constant-time equality of a presented token and the expected one."""
    return given is not None and hmac.compare_digest(given.encode(), expected.encode())


class WebAuth:
    """Signs people in and out, and finds who a cookie belongs to."""

    def __init__(self, store: Store, clock: Clock, session_hours: float) -> None:
        self._store = store
        self._clock = clock
        self._lifetime = timedelta(hours=session_hours)

    async def sign_in(
        self, email: str, password: str, organization: str | None, address: str
    ) -> tuple[str, Signed]:
        """The new session's cookie token and who it signs in, for a right email and
        password; raises SignInRefused (audited) or TooManyFailures."""
        email = email.strip().lower()
        candidates = await self._with_password(email, organization)
        await self._refuse_if_throttled(candidates, address)
        found = None
        for row in candidates or [None]:
            ok = await passwords.verify(row["password_hash"] if row else None, password)
            if ok and row is not None:
                found = row
                break
        if found is None:
            await self._audit_failure(candidates, email, address)
            raise SignInRefused("the email or the password is wrong")
        return await self.open_session(found["id"], "password", address)

    async def open_session(self, user_id: str, method: str, address: str) -> tuple[str, Signed]:
        """A new web session for ``user_id`` (audited as ``auth.signed_in``): its token and
        who it signs in."""
        token = secrets.token_urlsafe(TOKEN_BYTES)
        csrf = secrets.token_urlsafe(TOKEN_BYTES)
        now = self._clock.now()
        async with self._store.write() as conn:
            row = (await conn.execute(self._people().where(users.c.id == user_id))).mappings().one()
            await conn.execute(
                insert(web_sessions).values(
                    id=token_hash(token),
                    org_id=row["org_id"],
                    user_id=user_id,
                    csrf=csrf,
                    method=method,
                    created_at=now,
                    expires_at=now + self._lifetime,
                    ended_at=None,
                )
            )
            await chain.append(
                conn,
                self._clock,
                org_id=row["org_id"],
                actor=chain.Actor("user", user_id),
                action="auth.signed_in",
                target_type="user",
                target_id=user_id,
                details={"method": method, "address": address},
            )
        return token, _signed(row, token_hash(token), csrf)

    async def sso_user(
        self, organization: str | None, email: str, name: str, create: Role | None
    ) -> str:
        """The person ``email`` signs in as by single sign-on: of ``organization`` (the root's
        by default), not disabled; made with role ``create`` if they are new and it is set."""
        org_query = select(organizations.c.id)
        org_query = (
            org_query.where(organizations.c.name == organization)
            if organization
            else org_query.where(organizations.c.is_root.is_(True))
        )
        async with self._store.write() as conn:
            org_id = await conn.scalar(org_query)
            if org_id is None:
                raise SignInRefused(f"single sign-on names no organization {organization!r}")
            row = (
                (
                    await conn.execute(
                        select(users.c.id, users.c.disabled).where(
                            users.c.org_id == org_id, users.c.email == email
                        )
                    )
                )
                .mappings()
                .one_or_none()
            )
            if row is not None:
                if row["disabled"]:
                    raise SignInRefused(f"{email} is disabled in Pilothouse")
                return str(row["id"])
            if create is None:
                raise SignInRefused(
                    f"{email} is not a person of this organization: an admin adds them first"
                )
            user_id = await insert_user(conn, org_id, email, name, create, self._clock.now())
            await chain.append(
                conn,
                self._clock,
                org_id=org_id,
                actor=chain.Actor("system", None),
                action="user.created",
                target_type="user",
                target_id=user_id,
                details={"email": email, "role": create.value, "by": "single sign-on"},
            )
            return user_id

    async def audit_refusal(self, method: str, reason: str, address: str) -> None:
        """A refused sign-in that names no person (single sign-on): in the root's log."""
        async with self._store.write() as conn:
            root = await conn.scalar(
                select(organizations.c.id).where(organizations.c.is_root.is_(True))
            )
            await chain.append(
                conn,
                self._clock,
                org_id=str(root),
                actor=chain.Actor("anonymous", None),
                action="auth.failed",
                outcome="denied",
                details={"reason": reason[:500], "method": method, "address": address},
            )

    async def signed(self, token: str | None) -> Signed | None:
        """Who the cookie ``token`` signs in now (None: nobody, expired, ended or disabled)."""
        if not token or len(token) > 200:
            return None
        now = self._clock.now()
        query = (
            self._people()
            .add_columns(web_sessions.c.csrf, web_sessions.c.id.label("session_hash"))
            .join(web_sessions, web_sessions.c.user_id == users.c.id)
            .where(
                and_(
                    web_sessions.c.id == token_hash(token),
                    web_sessions.c.ended_at.is_(None),
                    web_sessions.c.expires_at > now,
                    users.c.disabled.is_(False),
                )
            )
        )
        async with self._store.read() as conn:
            row = (await conn.execute(query)).mappings().one_or_none()
        if row is None:
            return None
        return _signed(row, row["session_hash"], row["csrf"])

    async def sign_out(self, signed: Signed) -> None:
        """End ``signed``'s session (audited)."""
        principal = signed.principal
        async with self._store.write() as conn:
            await conn.execute(
                update(web_sessions)
                .where(web_sessions.c.id == signed.session_hash)
                .values(ended_at=self._clock.now())
            )
            await chain.append(
                conn,
                self._clock,
                org_id=principal.org_id,
                actor=chain.Actor("user", principal.user_id),
                action="auth.signed_out",
                target_type="user",
                target_id=principal.user_id,
                details={},
            )

    async def forget_ended(self) -> int:
        """Delete the sessions that ended or expired (nothing signs in with them again; the
        audit log keeps each sign-in and sign-out); how many."""
        w = web_sessions.c
        ended = delete(web_sessions).where(
            or_(w.ended_at.is_not(None), w.expires_at <= self._clock.now())
        )
        async with self._store.write() as conn:
            return int((await conn.execute(ended)).rowcount or 0)

    def _people(self) -> Any:
        return select(
            users.c.id,
            users.c.org_id,
            users.c.email,
            users.c.name,
            users.c.role,
            organizations.c.is_root,
        ).join(organizations, organizations.c.id == users.c.org_id)

    async def _with_password(self, email: str, organization: str | None) -> list[Any]:
        query = (
            self._people()
            .add_columns(users.c.password_hash, organizations.c.name.label("org_name"))
            .where(
                users.c.email == email,
                users.c.disabled.is_(False),
                users.c.password_hash.is_not(None),
            )
        )
        if organization:
            query = query.where(organizations.c.name == organization.strip())
        async with self._store.read() as conn:
            return list((await conn.execute(query)).mappings().all())

    async def _refuse_if_throttled(self, candidates: list[Any], address: str) -> None:
        """Raise TooManyFailures if ``address`` failed to sign in as these people
        ``FAILURES_ALLOWED`` times within the window since it last signed in as them, as the
        audit log records (an email no one has a password under has nothing to guess)."""
        if not candidates:
            return
        e = audit_events.c
        horizon = to_micros(self._clock.now()) - FAILURE_WINDOW_SECONDS * 1_000_000
        query = (
            select(e.ts_us, e.action, e.details)
            .where(
                e.org_id.in_({row["org_id"] for row in candidates}),
                e.target_id.in_([row["id"] for row in candidates]),
                e.action.in_(("auth.failed", "auth.signed_in")),
                e.ts_us >= horizon,
            )
            .order_by(e.ts_us)
        )
        failed: list[int] = []
        async with self._store.read() as conn:
            for ts_us, action, details in await conn.execute(query):
                if json.loads(details or "{}").get("address") != address:
                    continue
                if action == "auth.signed_in":
                    failed.clear()  # they knew the password: what came before is forgiven
                else:
                    failed.append(ts_us)
        if len(failed) >= FAILURES_ALLOWED:
            oldest = failed[-FAILURES_ALLOWED]
            wait = -(-(oldest - horizon) // 1_000_000)  # whole seconds, rounded up
            raise TooManyFailures(
                f"too many failed sign-ins for this email from this address: try again in {wait} s"
            )

    async def _audit_failure(self, candidates: list[Any], email: str, address: str) -> None:
        if not candidates:
            return  # no such person here: nothing of theirs to record it under
        async with self._store.write() as conn:
            for row in candidates:  # one person per organization: each may count it
                await chain.append(
                    conn,
                    self._clock,
                    org_id=row["org_id"],
                    actor=chain.Actor("anonymous", None),
                    action="auth.failed",
                    outcome="denied",
                    target_type="user",
                    target_id=row["id"],
                    details={"reason": "wrong password", "method": "password", "address": address},
                )


def _signed(row: Any, session_hash: str, csrf: str) -> Signed:
    principal = Principal(
        org_id=row["org_id"],
        key_id=f"web_{session_hash[:16]}",
        kind=KeyKind.USER,
        key_prefix="web",
        user_id=row["id"],
        role=Role(row["role"]),
        is_root_org=bool(row["is_root"]),
    )
    return Signed(principal, csrf, session_hash, row["email"], row["name"])
