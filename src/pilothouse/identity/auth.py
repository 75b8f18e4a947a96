"""Authentication: a presented key -> a Principal, through a cache invalidated on change.

A revocation (or a user's disablement, or a session's end) publishes an invalidation in the
same transaction: the node that made it drops the cached key when the transaction commits, and
other replicas drop it when PostgreSQL delivers the NOTIFY (well inside two seconds). Each cache
fill remembers the invalidation generation it started in and is discarded if an invalidation
arrived while it was reading, so a stale read can never be cached after a revocation.
"""

from __future__ import annotations

import dataclasses
import json
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import select, update
from sqlalchemy.ext.asyncio import AsyncConnection

from pilothouse.clock import Clock
from pilothouse.errors import (
    Forbidden,
    InvalidKey,
    KeyExpired,
    KeyRevoked,
    PilothouseError,
    ScopeDenied,
    Unauthenticated,
)
from pilothouse.identity.labels import LABEL_KEY_RE, LABEL_VALUE_MAX, MAX_LABELS
from pilothouse.identity.principal import Principal, SessionContext
from pilothouse.identity.roles import Role
from pilothouse.identity.tables import agent_sessions, api_keys, organizations, users
from pilothouse.identity.tokens import KeyKind, ParsedToken, parse, secret_matches
from pilothouse.memo import IdentityMemo
from pilothouse.store.engine import Store
from pilothouse.store.notify import ALL, Invalidations

SESSION_HEADER = "x-pilothouse-session"
LABELS_HEADER = "x-pilothouse-labels"


@dataclass(frozen=True, slots=True)
class KeyRecord:
    """What authentication needs to know about a stored key."""

    id: str
    org_id: str
    kind: KeyKind
    prefix: str
    secret_hash: str
    user_id: str | None
    role: Role | None
    user_disabled: bool
    is_root_org: bool
    scopes: frozenset[str]
    allowed_labels: frozenset[str]
    session_id: str | None
    session_active: bool
    session_labels: Mapping[str, str]
    session: SessionContext | None
    expires_at: datetime | None
    revoked_at: datetime | None


class KeyCache:
    """Key records by lookup id, dropped on invalidation or after ``ttl`` seconds."""

    def __init__(self, ttl: float, invalidations: Invalidations) -> None:
        self._ttl = ttl
        self._entries: dict[str, tuple[float, KeyRecord]] = {}
        self._generation = 0
        self._invalidations = invalidations
        invalidations.subscribe(self._on_invalidate)

    @property
    def generation(self) -> int:
        """Bumped by every invalidation; fills from an older generation are discarded."""
        return self._generation

    def get(self, lookup: str) -> KeyRecord | None:
        """The cached record, if fresh and the cache can be trusted."""
        if not self._invalidations.listening:
            return None
        entry = self._entries.get(lookup)
        if entry is None or entry[0] < time.monotonic():
            return None
        return entry[1]

    def put(self, lookup: str, record: KeyRecord, generation: int) -> None:
        """Cache ``record`` unless something was invalidated since ``generation``."""
        if generation == self._generation and self._invalidations.listening:
            self._entries[lookup] = (time.monotonic() + self._ttl, record)

    def _on_invalidate(self, kind: str, ref: str) -> None:
        self._generation += 1
        if kind == ALL:
            self._entries.clear()
        elif kind == "key":
            self._drop(lambda r: r.id == ref)
        elif kind == "user":
            self._drop(lambda r: r.user_id == ref)
        elif kind == "session":
            self._drop(lambda r: r.session_id == ref)

    def _drop(self, matches: Callable[[KeyRecord], bool]) -> None:
        for lookup in [k for k, (_, r) in self._entries.items() if matches(r)]:
            del self._entries[lookup]


class LastUsed:
    """Collects key use in memory; written to the store in batches, not once per request."""

    def __init__(self) -> None:
        self._pending: dict[str, datetime] = {}

    def touch(self, key_id: str, moment: datetime) -> None:
        """Note that ``key_id`` was used at ``moment``."""
        self._pending[key_id] = moment

    async def flush(self, store: Store) -> int:
        """Write pending last-used times; returns how many keys were written."""
        pending, self._pending = self._pending, {}
        if not pending:
            return 0
        async with store.write() as conn:
            for key_id, moment in pending.items():
                await conn.execute(
                    update(api_keys).where(api_keys.c.id == key_id).values(last_used_at=moment)
                )
        return len(pending)


def extract_token(headers: Mapping[str, str]) -> str:
    """The key from ``Authorization: Bearer`` or ``x-api-key``; raise if neither is there."""
    authorization = headers.get("authorization", "")
    if authorization:
        scheme, _, value = authorization.partition(" ")
        if scheme.lower() != "bearer" or not value.strip():
            raise InvalidKey("the Authorization header must be 'Bearer <key>'")
        return value.strip()
    api_key = headers.get("x-api-key", "").strip()
    if api_key:
        return api_key
    raise Unauthenticated("no API key: send 'Authorization: Bearer <key>' or 'x-api-key: <key>'")


class Authenticator:
    """Turns request headers into a Principal, or raises an Unauthenticated error."""

    def __init__(self, store: Store, clock: Clock, cache: KeyCache, last_used: LastUsed) -> None:
        self._store = store
        self._clock = clock
        self._cache = cache
        # The principal of each key record, made once: the same record gives the same object,
        # so what is worked out per principal (its budgets, its usage row's attribution) can be
        # kept by identity. A new record (the key, its user or session changed) gets a new one.
        self._principals: IdentityMemo[Principal] = IdentityMemo()
        self._last_used = last_used

    async def authenticate(self, headers: Mapping[str, str]) -> Principal:
        """Authenticate a request by its headers (lower-case names).

        A refusal carries ``context["key_prefix"]`` and, when the key exists,
        ``context["org_id"]``, so it can be audited without reading the key again.
        """
        parsed = parse(extract_token(headers))
        record = await self._record(parsed)
        try:
            return await self._admit(parsed, record, headers)
        except PilothouseError as exc:
            exc.context["key_prefix"] = parsed.prefix
            if record is not None:
                exc.context["org_id"] = record.org_id
            raise

    async def _admit(
        self, parsed: ParsedToken, record: KeyRecord | None, headers: Mapping[str, str]
    ) -> Principal:
        if record is None or record.kind is not parsed.kind:
            raise InvalidKey(f"unknown API key {parsed.prefix}")
        if not secret_matches(parsed, record.secret_hash):
            raise InvalidKey(f"unknown API key {parsed.prefix}")
        now = self._clock.now()
        if record.revoked_at is not None:
            raise KeyRevoked(f"API key {record.prefix} was revoked")
        if record.kind is KeyKind.SESSION and not record.session_active:
            raise KeyRevoked(f"session key {record.prefix} belongs to a session that has ended")
        if record.expires_at is not None and record.expires_at <= now:
            raise KeyExpired(f"API key {record.prefix} expired at {record.expires_at.isoformat()}")
        if record.user_disabled:
            raise KeyRevoked(f"API key {record.prefix} belongs to a disabled user")
        self._last_used.touch(record.id, now)
        principal = self._principal_of(record)
        if record.kind is KeyKind.SERVICE:
            principal = await self._declared(principal, record, headers)
        return principal

    def _principal_of(self, record: KeyRecord) -> Principal:
        principal = self._principals.get(record)
        if principal is None:
            principal = self._principals.put(record, _principal(record))
        return principal

    async def _record(self, parsed: ParsedToken) -> KeyRecord | None:
        cached = self._cache.get(parsed.lookup)
        if cached is not None:
            return cached
        generation = self._cache.generation
        async with self._store.read() as conn:
            record = await load_key(conn, parsed.lookup)
        if record is not None:
            self._cache.put(parsed.lookup, record, generation)
        return record

    async def _declared(
        self, principal: Principal, record: KeyRecord, headers: Mapping[str, str]
    ) -> Principal:
        session_id = headers.get(SESSION_HEADER, "").strip()
        raw_labels = headers.get(LABELS_HEADER, "").strip()
        if not session_id and not raw_labels:
            return principal
        if "sessions:declare" not in record.scopes:
            raise ScopeDenied(
                f"service key {record.prefix} may not declare a session or labels by header"
                " (it lacks the sessions:declare scope)"
            )
        labels = parse_label_header(raw_labels)
        refused = sorted(k for k in labels if k not in record.allowed_labels)
        if refused and "*" not in record.allowed_labels:
            raise ScopeDenied(
                f"service key {record.prefix} may not set the label(s) {', '.join(refused)}"
            )
        session_labels: Mapping[str, str] = {}
        context = None
        if session_id:
            session_labels, context = await self._active_session(record.org_id, session_id)
        return dataclasses.replace(
            principal,
            session_id=session_id or None,
            labels={**session_labels, **labels},
            session=context,
        )

    async def _active_session(
        self, org_id: str, session_id: str
    ) -> tuple[Mapping[str, str], SessionContext]:
        async with self._store.read() as conn:
            row = (
                (
                    await conn.execute(
                        select(agent_sessions).where(
                            agent_sessions.c.id == session_id, agent_sessions.c.org_id == org_id
                        )
                    )
                )
                .mappings()
                .one_or_none()
            )
        if row is None:
            raise Forbidden(f"declared session {session_id[:40]!r} does not exist")
        if row["status"] != "active":
            raise Forbidden(f"declared session {session_id} has ended")
        labels: dict[str, str] = json.loads(row["labels"])
        return labels, session_context(row)


def session_context(row: Any, prefix: str = "") -> SessionContext:
    """A SessionContext from a row holding session columns named ``<prefix><column>``."""
    return SessionContext(
        id=row[f"{prefix}id"],
        user_id=row[f"{prefix}user_id"],
        team_id=row[f"{prefix}team_id"],
        project=row[f"{prefix}project"],
        use_case=row[f"{prefix}use_case"],
        repository=row[f"{prefix}repository"],
        skills=tuple(json.loads(row[f"{prefix}skills"] or "[]")),
        plugins=tuple(json.loads(row[f"{prefix}plugins"] or "[]")),
    )


def parse_label_header(raw: str) -> dict[str, str]:
    """``k=v, k2=v2`` -> mapping; raise Forbidden on a malformed pair."""
    labels: dict[str, str] = {}
    for pair in filter(None, (p.strip() for p in raw.split(","))):
        key, sep, value = pair.partition("=")
        key, value = key.strip(), value.strip()
        if not sep or not LABEL_KEY_RE.match(key) or len(value) > LABEL_VALUE_MAX or not value:
            raise Forbidden(f"malformed label {pair[:80]!r} in {LABELS_HEADER}: use key=value")
        labels[key] = value
    if len(labels) > MAX_LABELS:
        raise Forbidden(f"at most {MAX_LABELS} labels may be declared")
    return labels


async def load_key(conn: AsyncConnection, lookup: str) -> KeyRecord | None:
    """Read one key with what authentication needs about its user, org and session."""
    query = (
        select(
            api_keys,
            users.c.role,
            users.c.disabled,
            organizations.c.is_root,
            agent_sessions.c.status.label("session_status"),
            agent_sessions.c.labels.label("session_labels"),
            agent_sessions.c.user_id.label("session_user_id"),
            agent_sessions.c.team_id.label("session_team_id"),
            agent_sessions.c.project.label("session_project"),
            agent_sessions.c.use_case.label("session_use_case"),
            agent_sessions.c.repository.label("session_repository"),
            agent_sessions.c.skills.label("session_skills"),
            agent_sessions.c.plugins.label("session_plugins"),
        )
        .join(organizations, organizations.c.id == api_keys.c.org_id)
        .outerjoin(users, users.c.id == api_keys.c.user_id)
        .outerjoin(agent_sessions, agent_sessions.c.id == api_keys.c.session_id)
        .where(api_keys.c.lookup == lookup)
    )
    row = (await conn.execute(query)).mappings().one_or_none()
    if row is None:
        return None
    return KeyRecord(
        id=row["id"],
        org_id=row["org_id"],
        kind=KeyKind(row["kind"]),
        prefix=row["prefix"],
        secret_hash=row["secret_hash"],
        user_id=row["user_id"],
        role=Role(row["role"]) if row["role"] else None,
        user_disabled=bool(row["disabled"]),
        is_root_org=bool(row["is_root"]),
        scopes=frozenset(json.loads(row["scopes"])),
        allowed_labels=frozenset(json.loads(row["allowed_labels"])),
        session_id=row["session_id"],
        session_active=row["session_status"] == "active",
        session_labels=json.loads(row["session_labels"] or "{}"),
        session=(
            session_context(row, prefix="session_") if row["session_status"] is not None else None
        ),
        expires_at=row["expires_at"],
        revoked_at=row["revoked_at"],
    )


def _principal(record: KeyRecord) -> Principal:
    return Principal(
        org_id=record.org_id,
        key_id=record.id,
        kind=record.kind,
        key_prefix=record.prefix,
        user_id=record.user_id,
        role=record.role,
        is_root_org=record.is_root_org,
        scopes=record.scopes,
        session_id=record.session_id,
        labels=dict(record.session_labels),
        session=record.session,
    )
