"""Managing secrets: create, rotate, delete, grant, revoke a grant, re-wrap under a new master
key. Values are write-only: they go in, are sealed, and are never read back by a person (only
rotated); every change is audited without its value and reaches every replica's book at once.
"""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any, Literal

from pydantic import (
    AfterValidator,
    BaseModel,
    Field,
    SecretStr,
    field_validator,
    model_validator,
)
from sqlalchemy import and_, delete, select, update
from sqlalchemy.ext.asyncio import AsyncConnection

from pilothouse.api.types import Body, Reference, Selector, Text
from pilothouse.context import RequestContext
from pilothouse.errors import Conflict, Forbidden, NotFound, ValidationFailed
from pilothouse.gateway.config import check_selector
from pilothouse.ids import new_id
from pilothouse.secrets.book import BUILTIN, KIND, SecretBook, sealing_context
from pilothouse.secrets.crypto import Sealed
from pilothouse.secrets.redact import MIN_SECRET_LENGTH
from pilothouse.secrets.refs import NAME_PATTERN
from pilothouse.secrets.tables import secret_grants, secret_leases, secrets
from pilothouse.store.engine import Store
from pilothouse.store.notify import Invalidations

MAX_VALUE_CHARS = 65_536
SERVER_ENV_PREFIX = "PILOTHOUSE_"  # the server's own settings: its master and admin keys
DEFAULT_LEASE_SECONDS = 900
MAX_LEASE_SECONDS = 86_400
Backend = Literal["builtin", "env", "file", "vault"]
Use = Literal["inject", "lease"]


def _value_fits(value: SecretStr) -> SecretStr:
    text = value.get_secret_value()
    if len(text) < MIN_SECRET_LENGTH:
        raise ValueError(
            f"must be at least {MIN_SECRET_LENGTH} characters: a shorter value could not be"
            " redacted without destroying ordinary text"
        )
    if len(text) > MAX_VALUE_CHARS:
        raise ValueError(f"must be at most {MAX_VALUE_CHARS} characters")
    if "\x00" in text:
        raise ValueError("must not contain NUL characters")
    return value


SecretValue = Annotated[SecretStr, AfterValidator(_value_fits)]


class SecretIn(Body):
    """A new secret: a value sealed here, or a reference to where it lives."""

    name: str = Field(pattern=NAME_PATTERN, description="letters, digits, . _ -; 128 at most")
    value: SecretValue | None = Field(None, description="builtin: the value (never read back)")
    backend: Backend = Field("builtin", description="builtin, env, file or vault")
    ref: Reference | None = Field(
        None, description="env: a variable name; file: a path; vault: <path>#<field>"
    )
    description: Text = ""

    @model_validator(mode="after")
    def _one_source(self) -> SecretIn:
        if self.backend == BUILTIN and (self.value is None or self.ref is not None):
            raise ValueError("a builtin secret takes a value and no ref")
        if self.backend != BUILTIN and (self.ref is None or self.value is not None):
            raise ValueError(f"a {self.backend} secret takes a ref and no value")
        return self


class RotateIn(Body):
    """A secret's new value (builtin) or new reference (external)."""

    value: SecretValue | None = None
    ref: Reference | None = None

    @model_validator(mode="after")
    def _one(self) -> RotateIn:
        if (self.value is None) == (self.ref is None):
            raise ValueError("give either value or ref")
        return self


class GrantIn(Body):
    """Who may use a secret, and how."""

    subject: Selector = Field(
        description="* (everyone), org:<id>, team:<id or name>, project:<name>,"
        " repo:<owner/name>, label:<name>=<value>, session:<id>, user:<id>, key:<id or prefix>",
    )
    use: Use = Field(
        description="inject: Pilothouse uses it on the caller's behalf (provider keys, MCP"
        " upstream credentials); lease: a session may read it for ttl_seconds"
    )
    ttl_seconds: int | None = Field(
        None, ge=1, le=MAX_LEASE_SECONDS, description=f"lease: default {DEFAULT_LEASE_SECONDS}"
    )

    @field_validator("subject")
    @classmethod
    def _subject(cls, value: str) -> str:
        if value != "*":
            check_selector(value)
        return value

    @model_validator(mode="after")
    def _ttl(self) -> GrantIn:
        if self.use == "inject" and self.ttl_seconds is not None:
            raise ValueError("ttl_seconds is for lease grants")
        if self.use == "lease" and self.ttl_seconds is None:
            self.ttl_seconds = DEFAULT_LEASE_SECONDS
        return self


class GrantView(BaseModel):
    """A grant."""

    id: str
    subject: str
    use: str
    ttl_seconds: int | None
    created_at: datetime


class SecretView(BaseModel):
    """A secret as people see it: everything but its value."""

    name: str
    description: str
    backend: str
    ref: str | None
    version: int
    key_id: str | None
    created_at: datetime
    rotated_at: datetime
    grants: list[GrantView]


class Rewrapped(BaseModel):
    """The result of re-wrapping every data key under the current master key."""

    key_id: str
    rewrapped: int
    already: int


async def list_secrets(store: Store, org_id: str) -> list[SecretView]:
    """The organization's secrets, by name, with their grants."""
    async with store.read() as conn:
        rows = (
            (await conn.execute(select(secrets).where(secrets.c.org_id == org_id))).mappings().all()
        )
        grants = (
            (
                await conn.execute(
                    select(secret_grants)
                    .where(secret_grants.c.org_id == org_id)
                    .order_by(secret_grants.c.id)
                )
            )
            .mappings()
            .all()
        )
    by_secret: dict[str, list[GrantView]] = {}
    for grant in grants:
        by_secret.setdefault(grant["secret_id"], []).append(_grant_view(grant))
    return sorted((_view(row, by_secret.get(row["id"], [])) for row in rows), key=lambda v: v.name)


async def read_secret(store: Store, org_id: str, name: str) -> SecretView:
    """One secret's metadata and grants."""
    for view in await list_secrets(store, org_id):
        if view.name == name:
            return view
    raise NotFound(f"secret {name!r} not found")


async def create(
    store: Store,
    book: SecretBook,
    invalidations: Invalidations,
    ctx: RequestContext,
    body: SecretIn,
) -> SecretView:
    """Seal and store a new secret (409 if the name is taken)."""
    _check_ref(book, ctx, body.backend, body.ref)
    now = ctx.clock.now()
    secret_id = new_id("sec")
    row: dict[str, Any] = {
        "id": secret_id,
        "org_id": ctx.org_id,
        "name": body.name,
        "description": body.description,
        "backend": body.backend,
        "ref": body.ref,
        "key_id": None,
        "wrapped_key": None,
        "ciphertext": None,
        "version": 1,
        "created_at": now,
        "created_by": ctx.principal.actor_id,
        "rotated_at": now,
    }
    if body.value is not None:
        row.update(_sealed(book, ctx.org_id, secret_id, body.value))
    async with store.write() as conn:
        taken = await conn.scalar(
            select(secrets.c.id).where(secrets.c.org_id == ctx.org_id, secrets.c.name == body.name)
        )
        if taken is not None:
            raise Conflict(
                f"secret {body.name!r} exists: rotate it (`pilothouse secrets rotate {body.name}`)"
            )
        await conn.execute(secrets.insert().values(**row))
        await _changed(conn, invalidations, ctx, "secret.created", row, {})
    return _view(row, [])


async def rotate(
    store: Store,
    book: SecretBook,
    invalidations: Invalidations,
    ctx: RequestContext,
    name: str,
    body: RotateIn,
) -> SecretView:
    """Give a secret a new value (or reference): its version goes up; grants stay."""
    async with store.write() as conn:
        row = await _row(conn, ctx.org_id, name)
        if (row["backend"] == BUILTIN) != (body.value is not None):
            raise ValidationFailed(
                f"secret {name!r} is a {row['backend']} secret: rotate it with a"
                f" {'value' if row['backend'] == BUILTIN else 'ref'}"
            )
        changes: dict[str, Any] = {"version": row["version"] + 1, "rotated_at": ctx.clock.now()}
        if body.value is not None:
            changes.update(_sealed(book, ctx.org_id, row["id"], body.value))
        else:
            _check_ref(book, ctx, row["backend"], body.ref)
            changes["ref"] = body.ref
        await conn.execute(update(secrets).where(secrets.c.id == row["id"]).values(**changes))
        updated = {**row, **changes}
        await _changed(conn, invalidations, ctx, "secret.rotated", updated, {})
        grants = await _grants(conn, row["id"])
    return _view(updated, grants)


async def delete_secret(
    store: Store, invalidations: Invalidations, ctx: RequestContext, name: str
) -> None:
    """Delete a secret, its value and its grants; its leases end at once."""
    async with store.write() as conn:
        row = await _row(conn, ctx.org_id, name)
        await _end_leases(conn, secret_leases.c.secret_id == row["id"], ctx, "secret_deleted")
        await conn.execute(delete(secret_grants).where(secret_grants.c.secret_id == row["id"]))
        await conn.execute(delete(secrets).where(secrets.c.id == row["id"]))
        await _changed(conn, invalidations, ctx, "secret.deleted", row, {})


async def grant(
    store: Store,
    invalidations: Invalidations,
    ctx: RequestContext,
    name: str,
    body: GrantIn,
) -> GrantView:
    """Let ``body.subject`` use the secret as ``body.use``."""
    now = ctx.clock.now()
    async with store.write() as conn:
        row = await _row(conn, ctx.org_id, name)
        grant_row = {
            "id": new_id("sgr"),
            "org_id": ctx.org_id,
            "secret_id": row["id"],
            "subject": body.subject,
            "use": body.use,
            "ttl_seconds": body.ttl_seconds,
            "created_at": now,
            "created_by": ctx.principal.actor_id,
        }
        await conn.execute(secret_grants.insert().values(**grant_row))
        details = {"grant_id": grant_row["id"], "subject": body.subject, "use": body.use}
        await _changed(conn, invalidations, ctx, "secret.granted", row, details)
    return _grant_view(grant_row)


async def revoke_grant(
    store: Store, invalidations: Invalidations, ctx: RequestContext, name: str, grant_id: str
) -> None:
    """Remove a grant; the leases it gave end at once."""
    async with store.write() as conn:
        row = await _row(conn, ctx.org_id, name)
        found = (
            (
                await conn.execute(
                    select(secret_grants).where(
                        secret_grants.c.id == grant_id, secret_grants.c.secret_id == row["id"]
                    )
                )
            )
            .mappings()
            .one_or_none()
        )
        if found is None:
            raise NotFound(f"secret {name!r} has no grant {grant_id}")
        await _end_leases(conn, secret_leases.c.grant_id == grant_id, ctx, "grant_revoked")
        await conn.execute(delete(secret_grants).where(secret_grants.c.id == grant_id))
        details = {"grant_id": grant_id, "subject": found["subject"], "use": found["use"]}
        await _changed(conn, invalidations, ctx, "secret.grant_revoked", row, details)


async def rewrap(
    store: Store, book: SecretBook, invalidations: Invalidations, ctx: RequestContext
) -> Rewrapped:
    """Re-wrap every secret's data key under the current master key (values are not
    decrypted). Every replica must hold the new key before this runs; the old key can be
    removed from the file once it has."""
    if not ctx.principal.is_root_org:
        raise Forbidden("the master key is the server's: only the root organization re-wraps")
    keyring = book.keyring
    current = keyring.current.id
    done = already = 0
    async with store.write() as conn:
        rows = (
            (await conn.execute(select(secrets).where(secrets.c.backend == BUILTIN)))
            .mappings()
            .all()
        )
        for row in rows:
            if row["key_id"] == current:
                already += 1
                continue
            sealed = Sealed(row["key_id"], bytes(row["wrapped_key"]), bytes(row["ciphertext"]))
            fresh = keyring.rewrap(sealed, sealing_context(row["org_id"], row["id"]))
            await conn.execute(
                update(secrets)
                .where(secrets.c.id == row["id"], secrets.c.key_id == row["key_id"])
                .values(key_id=fresh.key_id, wrapped_key=fresh.wrapped_key)
            )
            done += 1
        await invalidations.publish(conn, KIND, "*")
        await ctx.audit(
            conn,
            "secret.rewrapped",
            target_type="master_key",
            target_id=current,
            details={"rewrapped": done, "already": already},
        )
    return Rewrapped(key_id=current, rewrapped=done, already=already)


# --- pieces --------------------------------------------------------------------------------


def _sealed(book: SecretBook, org_id: str, secret_id: str, value: SecretStr) -> dict[str, Any]:
    sealed = book.keyring.seal(
        value.get_secret_value().encode(), sealing_context(org_id, secret_id)
    )
    return {
        "key_id": sealed.key_id,
        "wrapped_key": sealed.wrapped_key,
        "ciphertext": sealed.ciphertext,
    }


def _check_ref(book: SecretBook, ctx: RequestContext, backend: str, ref: str | None) -> None:
    """Refuse a reference that is malformed, or that reaches what is not the caller's: the
    external backends read the server's own environment, files and Vault, so only the root
    organization (the operator) points at them, and never at the server's own keys."""
    if backend == BUILTIN:
        return
    if not ctx.principal.is_root_org:
        raise Forbidden(
            f"a {backend} secret reads the server's own {backend}: only the root organization"
            " may create one (store the value itself instead)"
        )
    if (backend == "env" and (ref or "").upper().startswith(SERVER_ENV_PREFIX)) or (
        backend == "file" and ref is not None and book.protects(ref)
    ):
        raise Forbidden(f"{ref!r} is the server's own configuration: it cannot be a secret")
    found = book.backends.get(backend)
    if found is None:
        raise ValidationFailed(
            f"the {backend} backend is not configured on this server (see docs/secrets.md)"
        )
    try:
        found.check_ref(ref or "")
    except ValueError as exc:
        raise ValidationFailed(f"ref: {exc}") from None


async def _row(conn: AsyncConnection, org_id: str, name: str) -> Any:
    row = (
        (
            await conn.execute(
                select(secrets).where(secrets.c.org_id == org_id, secrets.c.name == name)
            )
        )
        .mappings()
        .one_or_none()
    )
    if row is None:
        raise NotFound(f"secret {name!r} not found")
    return row


async def _grants(conn: AsyncConnection, secret_id: str) -> list[GrantView]:
    rows = await conn.execute(
        select(secret_grants)
        .where(secret_grants.c.secret_id == secret_id)
        .order_by(secret_grants.c.id)
    )
    return [_grant_view(r) for r in rows.mappings()]


async def _end_leases(conn: AsyncConnection, which: Any, ctx: RequestContext, reason: str) -> None:
    await conn.execute(
        update(secret_leases)
        .where(and_(which, secret_leases.c.ended_at.is_(None)))
        .values(ended_at=ctx.clock.now(), end_reason=reason)
    )


async def _changed(
    conn: AsyncConnection,
    invalidations: Invalidations,
    ctx: RequestContext,
    action: str,
    row: Any,
    extra: dict[str, Any],
) -> None:
    await invalidations.publish(conn, KIND, row["id"])
    details = {"name": row["name"], "backend": row["backend"], "version": row["version"], **extra}
    await ctx.audit(conn, action, target_type="secret", target_id=row["id"], details=details)


def _grant_view(row: Any) -> GrantView:
    return GrantView.model_validate({k: row[k] for k in GrantView.model_fields})


def _view(row: Any, grants: list[GrantView]) -> SecretView:
    fields = {k: row[k] for k in SecretView.model_fields if k != "grants"}
    return SecretView.model_validate({**fields, "grants": grants})
