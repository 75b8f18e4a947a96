"""Usage and spend routes under /api/v1: the rows of LLM calls, and their sums by group and time."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Depends, Query

from pilothouse.api.deps import ERROR_RESPONSES, require, services_of
from pilothouse.api.types import Limit, Moment, ObjectId, Page, Repository, ShortText, Text
from pilothouse.context import RequestContext
from pilothouse.gateway import spend, usage_rows
from pilothouse.identity.roles import Permission
from pilothouse.services import Services

router = APIRouter(prefix="/api/v1", tags=["usage"], responses=ERROR_RESPONSES)

Svc = Annotated[Services, Depends(services_of)]
Name = Annotated[ShortText | None, Query()]
Id = Annotated[ObjectId | None, Query()]
LabelFilter = Annotated[Text, Query()]


def usage_filters(
    since: Annotated[Moment | None, Query(description="Calls at or after this time.")] = None,
    until: Annotated[Moment | None, Query(description="Calls before this time.")] = None,
    session_id: Id = None,
    user_id: Id = None,
    team_id: Id = None,
    project: Name = None,
    repository: Annotated[Repository | None, Query()] = None,
    model: Annotated[
        ShortText | None, Query(description="The model alias the caller asked for.")
    ] = None,
    deployment: Name = None,
    status: Annotated[ShortText | None, Query(description="ok, upstream_error, ...")] = None,
    key_id: Id = None,
    label: Annotated[
        list[LabelFilter] | None,
        Query(description="key=value; repeat, or separate by commas, to AND", max_length=32),
    ] = None,
) -> usage_rows.UsageFilters:
    """The filters /usage and /spend share."""
    equal = {
        "session_id": session_id,
        "user_id": user_id,
        "team_id": team_id,
        "project": project,
        "repository": repository,
        "model": model,
        "deployment": deployment,
        "status": status,
        "key_id": key_id,
    }
    return usage_rows.make_filters(since, until, equal, label or [])


Filters = Annotated[usage_rows.UsageFilters, Depends(usage_filters)]
# The permission is checked before the filters are parsed: a caller who may not read usage
# learns nothing from its parameters.
Reader = Annotated[RequestContext, require(Permission.USAGE_READ)]


@router.get("/usage", summary="List LLM calls")
async def list_usage(
    svc: Svc,
    ctx: Reader,
    filters: Filters,
    limit: Annotated[Limit, Query(description="items per page")] = 50,
    cursor: Annotated[
        str | None,
        Query(pattern=usage_rows.CURSOR_PATTERN, description="next_cursor from the previous page"),
    ] = None,
) -> Page[usage_rows.UsageView]:
    """Usage rows (one per LLM call, and one per call of a priced MCP tool) of the
    organization, newest first, narrowed by the filters.

    Cost is exact: `cost_picos` in pico-dollars (10**12 per dollar) and `cost` in dollars as a
    decimal string.
    """
    await svc.usage_settled()
    return await usage_rows.list_usage(svc.store, ctx, filters, limit=limit, cursor=cursor)


@router.get("/spend", summary="Sum spend by group and time")
async def spend_report(
    svc: Svc,
    ctx: Reader,
    filters: Filters,
    group_by: Annotated[
        str | None,
        Query(
            max_length=400,
            description="Comma-separated, at most 4 of: user, team, project, repo, session, key,"
            " model, deployment, status, endpoint, skill, plugin, label:<name>.",
        ),
    ] = None,
    interval: Annotated[
        spend.Interval | None, Query(description="UTC time buckets; none: one bucket.")
    ] = None,
    limit: Annotated[
        int, Query(ge=1, le=10_000, description="Most groups to return (see truncated).")
    ] = 1000,
) -> spend.SpendReport:
    """Calls, tokens and exact cost of the organization's LLM calls, summed per group.

    Groups come bucket ascending, then cost descending. Grouped by `skill` or `plugin`, a call
    that used several counts under each of them (so the groups may add up to more than
    `totals`, which count every call once); a call with none groups under null, as does a call
    without the label named by `label:<name>`.
    """
    keys = spend.parse_group_by(group_by)
    await svc.usage_settled()
    return await spend.spend_report(svc.store, ctx, filters, keys, interval, limit=limit)
