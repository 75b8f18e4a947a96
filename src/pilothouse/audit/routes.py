"""Audit routes under /api/v1/audit."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Depends, Query

from pilothouse.api.deps import ERROR_RESPONSES, require, services_of
from pilothouse.api.types import Limit
from pilothouse.audit import events
from pilothouse.context import RequestContext
from pilothouse.errors import ValidationFailed
from pilothouse.identity.roles import Permission
from pilothouse.services import Services

router = APIRouter(prefix="/api/v1/audit", tags=["audit"], responses=ERROR_RESPONSES)
Svc = Annotated[Services, Depends(services_of)]
Filter = Annotated[str | None, Query(max_length=200, pattern=r"^[^\x00]*$")]


@router.get("/events", summary="List audit events")
async def list_events(
    svc: Svc,
    ctx: RequestContext = require(Permission.AUDIT_READ),
    action: Annotated[
        str | None, Query(max_length=80, pattern=r"^[^\x00]*$", description="exact, or prefix*")
    ] = None,
    actor_id: Filter = None,
    target_id: Filter = None,
    after_seq: Annotated[
        int | None, Query(ge=0, le=2**62, description="follow: events after this seq, in order")
    ] = None,
    before_seq: Annotated[
        int | None, Query(ge=0, le=2**62, description="page back: events before this seq")
    ] = None,
    limit: Limit = 50,
) -> events.EventPage:
    """Events of the organization: newest first, or (with after_seq) in order from a point."""
    if after_seq is not None and before_seq is not None:
        raise ValidationFailed("give after_seq (follow) or before_seq (page back), not both")
    return await events.list_events(
        svc.store,
        ctx,
        action=action,
        actor_id=actor_id,
        target_id=target_id,
        after_seq=after_seq,
        before_seq=before_seq,
        limit=limit,
    )


@router.get("/verify", summary="Verify the audit chain")
async def verify(
    svc: Svc,
    ctx: RequestContext = require(Permission.AUDIT_READ),
    checkpoint: Annotated[
        str | None, Query(max_length=100, description="SEQ:HASH recorded earlier, to pin")
    ] = None,
) -> events.VerifyView:
    """Walk the chain and report the first altered, deleted or reordered event."""
    return await events.verify_chain(svc.store, ctx, checkpoint)
