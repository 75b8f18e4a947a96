"""Secrets routes under /api/v1: people manage secrets and grants (values go in, never come
out); a session reads a secret it holds a lease grant for."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Depends, Path, Query, Response

from pilothouse.api.deps import ERROR_RESPONSES, context_of, require, services_of
from pilothouse.api.types import ObjectId
from pilothouse.context import RequestContext
from pilothouse.identity.roles import Permission
from pilothouse.policy.checks import MAX_WAIT_SECONDS
from pilothouse.secrets import admin, leases
from pilothouse.secrets.book import SecretBook
from pilothouse.secrets.refs import NAME_PATTERN
from pilothouse.services import Services

router = APIRouter(prefix="/api/v1", responses=ERROR_RESPONSES, tags=["secrets"])

Svc = Annotated[Services, Depends(services_of)]
Reader = Annotated[RequestContext, require(Permission.SECRETS_READ)]
Writer = Annotated[RequestContext, require(Permission.SECRETS_WRITE)]
Caller = Annotated[RequestContext, Depends(context_of)]
SecretName = Annotated[str, Path(pattern=NAME_PATTERN, description="the secret's name")]


def book_of(svc: Services) -> SecretBook:
    """The running SecretBook."""
    assert svc.secrets is not None
    return svc.secrets


@router.get("/secrets", summary="List secrets")
async def list_secrets(svc: Svc, ctx: Reader) -> list[admin.SecretView]:
    """The organization's secrets with their grants; never a value."""
    return await admin.list_secrets(svc.store, ctx.org_id)


@router.post("/secrets", status_code=201, summary="Create a secret")
async def create_secret(body: admin.SecretIn, svc: Svc, ctx: Writer) -> admin.SecretView:
    """Seal a value (or record where an external one lives) under a new name; 409 if the name
    is taken. The value is never returned, by this or any route but a session's lease."""
    return await admin.create(svc.store, book_of(svc), svc.invalidations, ctx, body)


@router.post("/secrets/rewrap", summary="Re-wrap every secret under the current master key")
async def rewrap(svc: Svc, ctx: Writer) -> admin.Rewrapped:
    """After a new master key is put first in every replica's key file: re-wrap each data key
    under it (values are not decrypted); then the old key can leave the file. Root
    organization only."""
    return await admin.rewrap(svc.store, book_of(svc), svc.invalidations, ctx)


@router.get("/secrets/{name}", summary="Read a secret (a session's lease)")
async def read_secret(
    name: SecretName,
    svc: Svc,
    ctx: Caller,
    wait: Annotated[
        float,
        Query(ge=0, le=MAX_WAIT_SECONDS, description="seconds to wait if a person must approve"),
    ] = 0,
) -> leases.LeaseView:
    """With a session key: the value, under a lease of the grant's time to live, audited.
    403 ``secret_not_granted`` when no lease grant admits the session or the policy refuses
    (or asks: the approval's id is in the error). Any other key: 403, values are write-only."""
    assert svc.checker is not None
    return await leases.lease(svc.store, book_of(svc), svc.checker, ctx, name, wait)


@router.get("/secrets/{name}/info", summary="A secret's metadata and grants")
async def secret_info(name: SecretName, svc: Svc, ctx: Reader) -> admin.SecretView:
    """Everything about a secret but its value."""
    return await admin.read_secret(svc.store, ctx.org_id, name)


@router.post("/secrets/{name}/rotate", summary="Rotate a secret")
async def rotate_secret(
    name: SecretName, body: admin.RotateIn, svc: Svc, ctx: Writer
) -> admin.SecretView:
    """A new value (or reference); the version goes up, grants stay, the old value is gone.
    Injection uses the new value from the next call on, on every replica."""
    return await admin.rotate(svc.store, book_of(svc), svc.invalidations, ctx, name, body)


@router.delete("/secrets/{name}", status_code=204, summary="Delete a secret")
async def delete_secret(name: SecretName, svc: Svc, ctx: Writer) -> Response:
    """Delete the value and every grant; its leases end at once."""
    await admin.delete_secret(svc.store, svc.invalidations, ctx, name)
    return Response(status_code=204)


@router.post("/secrets/{name}/grants", status_code=201, summary="Grant a secret")
async def grant_secret(
    name: SecretName, body: admin.GrantIn, svc: Svc, ctx: Writer
) -> admin.GrantView:
    """Let a team, project, repository, label, session, user, key or everyone use the secret:
    ``inject`` (Pilothouse uses it for them) or ``lease`` (a session reads it)."""
    return await admin.grant(svc.store, svc.invalidations, ctx, name, body)


@router.delete("/secrets/{name}/grants/{grant_id}", status_code=204, summary="Revoke a grant")
async def revoke_grant(name: SecretName, grant_id: ObjectId, svc: Svc, ctx: Writer) -> Response:
    """Remove a grant; the leases it gave end, and it admits no one, at once."""
    await admin.revoke_grant(svc.store, svc.invalidations, ctx, name, grant_id)
    return Response(status_code=204)
