"""The policy each organization runs: versions stored with author and time, the active one kept
in memory, and a file that is the policy's source of truth when one is configured (GitOps).

Each change stores the whole YAML as a new version (``policy_versions``); the highest version is
the active one. A replica keeps the active ``Policy`` of each organization in memory and drops
it when a new version is stored (``Invalidations``: at once on the replica that stored it, on
every other one when PostgreSQL's notification arrives; while a replica is not listening it
reads the version every time). An organization that never stored a policy runs version 0: the
built-in packs, default allow.

Fail closed: a stored version that no longer loads (a later release dropped a built-in rule it
names, say) makes every check of that organization a 503 ``policy_unreadable``, never an allow.
"""

from __future__ import annotations

import asyncio
import difflib
import hashlib
import logging
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

from pydantic import BaseModel
from sqlalchemy import insert, select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncConnection

from pilothouse.audit import chain
from pilothouse.clock import Clock
from pilothouse.context import RequestContext
from pilothouse.errors import Conflict, NotFound, PolicyInvalid, PolicyUnreadable
from pilothouse.policy.document import Document, load
from pilothouse.policy.engine import Policy
from pilothouse.policy.tables import policy_versions
from pilothouse.store.engine import Store
from pilothouse.store.notify import ALL, Invalidations

log = logging.getLogger(__name__)

KIND = "policy"
DEFAULT_SOURCE = "# No policy stored yet: the built-in packs, and allow what no rule matches.\n"


@dataclass(frozen=True)
class Active:
    """An organization's active policy."""

    version: int
    source: str
    policy: Policy

    @property
    def document(self) -> Document:
        return self.policy.document


class VersionView(BaseModel):
    """A stored version of the policy."""

    version: int
    origin: str
    author_kind: str
    author_id: str | None
    comment: str
    created_at: datetime | None
    sha256: str
    source: str | None = None


def _sha(source: str) -> str:
    return hashlib.sha256(source.encode()).hexdigest()


def _view(row: Any, *, with_source: bool) -> VersionView:
    return VersionView(
        version=row["version"],
        origin=row["origin"],
        author_kind=row["author_kind"],
        author_id=row["author_id"],
        comment=row["comment"],
        created_at=row["created_at"],
        sha256=_sha(row["source"]),
        source=row["source"] if with_source else None,
    )


DEFAULT_VIEW = VersionView(
    version=0,
    origin="default",
    author_kind="system",
    author_id=None,
    comment="the built-in packs, default allow",
    created_at=None,
    sha256=_sha(DEFAULT_SOURCE),
    source=DEFAULT_SOURCE,
)


class PolicyBook:
    """The active policy of each organization, from memory when it can be."""

    def __init__(
        self, store: Store, invalidations: Invalidations, policy_file: Path | None = None
    ) -> None:
        self.policy_file = policy_file
        self.root_org_id = ""  # set at start-up: the organization the file is the policy of
        self._store = store
        self._invalidations = invalidations
        self._active: dict[str, Active] = {}
        invalidations.subscribe(self._invalidate)

    def file_managed(self, org_id: str) -> bool:
        """Whether ``org_id``'s policy comes from the policy file (API changes are refused)."""
        return self.policy_file is not None and org_id == self.root_org_id

    def _invalidate(self, kind: str, ref: str) -> None:
        if kind == ALL:
            self._active.clear()
        elif kind == KIND:
            self._active.pop(ref, None)

    async def active(self, org_id: str) -> Active:
        """``org_id``'s active policy (raises PolicyUnreadable, or StoreUnavailable)."""
        cached = self._active.get(org_id)
        if cached is not None:
            return cached
        listening = self._invalidations.listening  # before the read: a change during it drops
        async with self._store.read() as conn:
            row = await latest_row(conn, org_id)
        active = _activate(org_id, row)
        if listening:
            self._active[org_id] = active
        return active


def _activate(org_id: str, row: Any) -> Active:
    if row is None:
        return Active(0, DEFAULT_SOURCE, Policy(Document()))
    try:
        return Active(row["version"], row["source"], Policy(load(row["source"])))
    except PolicyInvalid as exc:
        log.error("policy version %s of %s does not load: %s", row["version"], org_id, exc)
        raise PolicyUnreadable(
            f"the active policy (version {row['version']}) does not load: {exc.message};"
            " store a corrected version",
            version=row["version"],
        ) from exc


async def latest_row(conn: AsyncConnection, org_id: str) -> Any:
    return (
        (
            await conn.execute(
                select(policy_versions)
                .where(policy_versions.c.org_id == org_id)
                .order_by(policy_versions.c.version.desc())
                .limit(1)
            )
        )
        .mappings()
        .one_or_none()
    )


async def store_version(
    conn: AsyncConnection,
    invalidations: Invalidations,
    clock: Clock,
    *,
    org_id: str,
    source: str,
    origin: str,
    actor: chain.Actor,
    comment: str = "",
    base_version: int | None = None,
    request_id: str | None = None,
) -> VersionView:
    """Store ``source`` as ``org_id``'s next version inside the caller's write transaction.

    Refused with PolicyInvalid (nothing stored) if it does not load, and with a Conflict if
    ``base_version`` is given and is no longer the active version (someone changed it since)."""
    load(source)
    latest = await latest_row(conn, org_id)
    current = int(latest["version"]) if latest is not None else 0
    if base_version is not None and base_version != current:
        raise Conflict(
            f"the policy is at version {current}, not {base_version}: it changed since you read"
            " it; read it again and re-apply your change",
            version=current,
        )
    row = {
        "org_id": org_id,
        "version": current + 1,
        "source": source,
        "origin": origin,
        "author_kind": actor.kind,
        "author_id": actor.id,
        "comment": comment,
        "created_at": clock.now(),
    }
    try:
        async with conn.begin_nested():
            await conn.execute(insert(policy_versions).values(**row))
    except IntegrityError:
        raise Conflict(
            "another change to the policy was stored at the same moment; read it and retry"
        ) from None
    previous = latest["source"] if latest is not None else DEFAULT_SOURCE
    await chain.append(
        conn,
        clock,
        org_id=org_id,
        actor=actor,
        action="policy.updated",
        target_type="policy",
        target_id=str(current + 1),
        request_id=request_id,
        details={
            "version": current + 1,
            "origin": origin,
            "comment": comment,
            "sha256": _sha(source),
            "diff": diff(previous, source, current, current + 1)[:4000],
        },
    )
    await invalidations.publish(conn, KIND, org_id)
    return _view(row, with_source=True)


def diff(old: str, new: str, old_version: int, new_version: int) -> str:
    """A unified diff between two versions' YAML."""
    return "".join(
        difflib.unified_diff(
            old.splitlines(keepends=True),
            new.splitlines(keepends=True),
            fromfile=f"version {old_version}",
            tofile=f"version {new_version}",
        )
    )


async def put_policy(
    store: Store,
    invalidations: Invalidations,
    ctx: RequestContext,
    source: str,
    comment: str,
    base_version: int | None,
    book: PolicyBook,
) -> VersionView:
    """Store a new version through the API (refused while a file is the source of truth)."""
    if book.file_managed(ctx.org_id):
        raise Conflict(
            "this policy is managed from a file (setting policy_file); change the file instead",
            managed_by="file",
        )
    async with store.write() as conn:
        return await store_version(
            conn,
            invalidations,
            ctx.clock,
            org_id=ctx.org_id,
            source=source,
            origin="api",
            actor=chain.Actor(ctx.principal.actor_kind, ctx.principal.actor_id),
            comment=comment,
            base_version=base_version,
            request_id=ctx.request_id,
        )


async def read_version(store: Store, org_id: str, version: int | None) -> VersionView:
    """One version (the active one if ``version`` is None), with its YAML."""
    async with store.read() as conn:
        if version is None:
            row = await latest_row(conn, org_id)
        else:
            row = (
                (
                    await conn.execute(
                        select(policy_versions).where(
                            policy_versions.c.org_id == org_id,
                            policy_versions.c.version == version,
                        )
                    )
                )
                .mappings()
                .one_or_none()
            )
    if row is None:
        if version in (None, 0):
            return DEFAULT_VIEW
        raise NotFound(f"policy version {version} not found")
    return _view(row, with_source=True)


async def list_versions(
    store: Store, org_id: str, limit: int, before: int | None
) -> tuple[list[VersionView], int | None]:
    """Versions newest first (without their YAML), and the ``before`` of the next page."""
    query = select(policy_versions).where(policy_versions.c.org_id == org_id)
    if before is not None:
        query = query.where(policy_versions.c.version < before)
    query = query.order_by(policy_versions.c.version.desc()).limit(limit + 1)
    async with store.read() as conn:
        rows = (await conn.execute(query)).mappings().all()
    views = [_view(r, with_source=False) for r in rows[:limit]]
    if len(rows) > limit:
        return views, views[-1].version
    if len(views) < limit:  # the last page ends with version 0, the built-in default
        views.append(DEFAULT_VIEW.model_copy(update={"source": None}))
        return views, None
    return views, views[-1].version  # a full page: version 0 is on the next one


async def sync_file(
    store: Store, invalidations: Invalidations, clock: Clock, org_id: str, path: Path
) -> int | None:
    """Store ``path``'s YAML as ``org_id``'s next version if it differs from the active one;
    the version stored, or None. An unreadable or invalid file is logged and changes nothing."""
    try:
        source = await asyncio.to_thread(path.read_text, encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        log.error("policy file %s cannot be read; the active policy is kept: %s", path, exc)
        return None
    async with store.read() as conn:
        latest = await latest_row(conn, org_id)
    if latest is not None and latest["source"] == source:
        return None
    try:
        load(source)
    except PolicyInvalid as exc:
        log.error("policy file %s is invalid; the active policy is kept: %s", path, exc)
        return None
    async with store.write() as conn:
        again = await latest_row(conn, org_id)  # another replica may have stored it meanwhile
        if again is not None and again["source"] == source:
            return None
        view = await store_version(
            conn,
            invalidations,
            clock,
            org_id=org_id,
            source=source,
            origin="file",
            actor=chain.Actor("system", None),
            comment=f"loaded from {path.name}",
        )
    log.info("policy file %s stored as version %d", path, view.version)
    return view.version
