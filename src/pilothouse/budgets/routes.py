"""Budget routes under /api/v1: list, create, show, change and delete budgets."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Depends, Query, Response

from pilothouse.api.deps import ERROR_RESPONSES, require, services_of
from pilothouse.api.types import Limit, ObjectId, Page
from pilothouse.budgets import service, views
from pilothouse.budgets.model import ScopeKind
from pilothouse.context import RequestContext
from pilothouse.identity.roles import Permission
from pilothouse.services import Services

router = APIRouter(prefix="/api/v1", tags=["budgets"], responses=ERROR_RESPONSES)

Svc = Annotated[Services, Depends(services_of)]
Reader = Annotated[RequestContext, require(Permission.BUDGETS_READ)]
Writer = Annotated[RequestContext, require(Permission.BUDGETS_WRITE)]


@router.get("/budgets", summary="List budgets")
async def list_budgets(
    svc: Svc,
    ctx: Reader,
    scope_kind: Annotated[ScopeKind | None, Query(description="Only budgets on this kind.")] = None,
    scope_value: Annotated[
        views.ScopeValue | None,
        Query(description='Only budgets on this scope value ("" for org, name=value for labels).'),
    ] = None,
    limit: Annotated[Limit, Query(description="items per page")] = 50,
    cursor: Annotated[
        ObjectId | None, Query(description="next_cursor from the previous page")
    ] = None,
) -> Page[views.BudgetView]:
    """Budgets of the organization, newest first, each with where it stands now."""
    await svc.usage_settled()
    return await service.list_budgets(
        svc.store, ctx, scope_kind=scope_kind, scope_value=scope_value, limit=limit, cursor=cursor
    )


@router.post("/budgets", status_code=201, summary="Create a budget")
async def create_budget(body: views.BudgetCreate, svc: Svc, ctx: Writer) -> views.BudgetView:
    """Limit a scope's spend over a window; calls count against it from the next one on.

    One budget per scope and window: a second is a 409. A team or user scope must name a team
    or user of the organization (400 otherwise).
    """
    return await service.create_budget(svc.store, svc.invalidations, ctx, body)


@router.get("/budgets/{budget_id}", summary="Show a budget")
async def get_budget(budget_id: ObjectId, svc: Svc, ctx: Reader) -> views.BudgetView:
    """One budget, with its spend, reservations and forecast in the current window."""
    await svc.usage_settled()
    return await service.read_budget(svc.store, ctx, budget_id)


@router.patch("/budgets/{budget_id}", summary="Update a budget")
async def update_budget(
    budget_id: ObjectId, body: views.BudgetUpdate, svc: Svc, ctx: Writer
) -> views.BudgetView:
    """Change a budget's name, limit, enforcement, thresholds or downgrade (not its scope or
    window: make a new budget for those)."""
    return await service.update_budget(svc.store, svc.invalidations, ctx, budget_id, body)


@router.delete("/budgets/{budget_id}", status_code=204, summary="Delete a budget")
async def delete_budget(budget_id: ObjectId, svc: Svc, ctx: Writer) -> Response:
    """Delete a budget and its counters."""
    await service.delete_budget(svc.store, svc.invalidations, ctx, budget_id)
    return Response(status_code=204)
