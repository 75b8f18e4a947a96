"""Managing budgets: create, list, show, change and delete them (request and response shapes
are in ``views.py``)."""

from __future__ import annotations

import json
from datetime import datetime
from typing import Any

from sqlalchemy import delete, func, insert, select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncConnection

from pilothouse.api.pagination import page_query, split_page
from pilothouse.api.types import Page
from pilothouse.budgets.model import (
    ScopeKind,
    Window,
    epoch,
    window_start,
)
from pilothouse.budgets.tables import budget_counters, budgets
from pilothouse.budgets.views import BudgetCreate, BudgetUpdate, BudgetView, DowngradeRule, view_of
from pilothouse.context import RequestContext
from pilothouse.errors import BadRequest, Conflict, NotFound
from pilothouse.gateway.rollups import COST_SPLIT
from pilothouse.gateway.tables import usage_records
from pilothouse.gateway.usage_rows import UsageFilters, conditions, dollars
from pilothouse.identity.tables import agent_sessions, teams, users
from pilothouse.ids import new_id
from pilothouse.store.engine import Store
from pilothouse.store.notify import Invalidations


async def _views(conn: AsyncConnection, rows: list[Any], now: datetime) -> list[BudgetView]:
    """Views of ``rows``, reading the counters of all of them in one query."""
    if not rows:
        return []
    starts = {epoch(window_start(w, now)) for w in Window}
    found = (
        await conn.execute(
            select(budget_counters).where(
                budget_counters.c.budget_id.in_([r["id"] for r in rows]),
                budget_counters.c.window_start.in_(starts),
            )
        )
    ).mappings()
    counters = {(c["budget_id"], int(c["window_start"])): c for c in found}
    return [
        view_of(r, counters.get((r["id"], epoch(window_start(Window(r["window"]), now)))), now)
        for r in rows
    ]


async def _row(conn: AsyncConnection, org_id: str, budget_id: str) -> Any:
    row = (
        (
            await conn.execute(
                select(budgets).where(budgets.c.id == budget_id, budgets.c.org_id == org_id)
            )
        )
        .mappings()
        .one_or_none()
    )
    if row is None:
        raise NotFound(f"budget {budget_id} not found")
    return row


async def get_budget(
    conn: AsyncConnection, org_id: str, budget_id: str, now: datetime
) -> BudgetView:
    """One budget of ``org_id`` as it stands at ``now``; another organization's is NotFound."""
    (view,) = await _views(conn, [await _row(conn, org_id, budget_id)], now)
    return view


async def list_budgets(
    store: Store,
    ctx: RequestContext,
    *,
    scope_kind: ScopeKind | None,
    scope_value: str | None,
    limit: int,
    cursor: str | None,
) -> Page[BudgetView]:
    """Budgets of the caller's organization, newest first, optionally of one scope."""
    query = select(budgets).where(budgets.c.org_id == ctx.org_id)
    if scope_kind is not None:
        query = query.where(budgets.c.scope_kind == scope_kind.value)
    if scope_value is not None:
        query = query.where(budgets.c.scope_value == scope_value)
    async with store.read() as conn:
        rows = (await conn.execute(page_query(query, budgets.c.id, cursor, limit))).mappings().all()
        kept, next_cursor = split_page(rows, limit, lambda r: r["id"])
        data = await _views(conn, kept, ctx.clock.now())
    return Page[BudgetView](data=data, next_cursor=next_cursor)


async def read_budget(store: Store, ctx: RequestContext, budget_id: str) -> BudgetView:
    """One budget of the caller's organization."""
    async with store.read() as conn:
        return await get_budget(conn, ctx.org_id, budget_id, ctx.clock.now())


# --- changing -------------------------------------------------------------------------------


def _downgrade_json(rule: DowngradeRule | None) -> str | None:
    if rule is None:
        return None
    return json.dumps(
        {"at_percent": rule.at_percent, "to": rule.to, "from": rule.from_}, sort_keys=True
    )


async def _check_scope_exists(conn: AsyncConnection, org_id: str, body: BudgetCreate) -> None:
    """A team or user budget must name a team or user of the organization."""
    table = {ScopeKind.TEAM: teams, ScopeKind.USER: users}.get(body.scope_kind)
    if table is None:
        return
    found = await conn.scalar(
        select(table.c.id).where(table.c.id == body.scope_value, table.c.org_id == org_id)
    )
    if found is None:
        kind = body.scope_kind.value
        raise BadRequest(
            f"{kind} {body.scope_value!r} does not exist in your organization; "
            f"give the id of one of its {kind}s",
            errors=[
                {
                    "location": ["body", "scope_value"],
                    "type": f"unknown_{kind}",
                    "message": f"no {kind} {body.scope_value!r} in your organization",
                }
            ],
        )


async def _duplicate(
    conn: AsyncConnection, org_id: str, body: BudgetCreate, scope: str
) -> Conflict:
    """The Conflict for a second budget on a scope and window, naming the first."""
    existing = await conn.scalar(
        select(budgets.c.id).where(
            budgets.c.org_id == org_id,
            budgets.c.scope_kind == body.scope_kind.value,
            budgets.c.scope_value == body.scope_value,
            budgets.c.window == body.window.value,
        )
    )
    return Conflict(
        f"{scope} already has a {body.window.value} budget ({existing}); change that one instead",
        budget_id=existing,
    )


COUNTER_MAX = 2**63 - 1  # a counter is a signed 64-bit column: earlier spend beyond it is capped
# The usage-row filter (``gateway/usage_rows.py`` ``FILTER_COLUMNS``) a scope kind's value is.
SCOPE_FILTERS = {
    ScopeKind.TEAM: "team_id",
    ScopeKind.USER: "user_id",
    ScopeKind.PROJECT: "project",
    ScopeKind.REPOSITORY: "repository",
    ScopeKind.SESSION: "session_id",
    ScopeKind.KEY: "key_id",
}


async def _earlier_spend(
    conn: AsyncConnection,
    dialect: str,
    ctx: RequestContext,
    body: BudgetCreate,
    since: datetime,
    until: datetime | None = None,
) -> tuple[int, int]:
    """What the calls of ``body``'s scope made from ``since`` (until ``until``) cost, and how
    many there were: their usage rows, matched as the gateway charges a call to its scopes
    (with the filters spend reports use)."""
    kind, value = body.scope_kind, body.scope_value
    equal: dict[str, str] = {}
    labels: tuple[tuple[str, str], ...] = ()
    if kind in SCOPE_FILTERS:
        equal[SCOPE_FILTERS[kind]] = value
    elif kind is ScopeKind.LABEL:
        name, _, label = value.partition("=")
        labels = ((name, label),)
    where = conditions(ctx, dialect, UsageFilters(since, until, equal, labels))
    if kind is ScopeKind.USE_CASE:  # a session's use case: not on the usage row itself
        sessions = select(agent_sessions.c.id).where(
            agent_sessions.c.org_id == ctx.org_id, agent_sessions.c.use_case == value
        )
        where.append(usage_records.c.session_id.in_(sessions))
    cost = usage_records.c.cost_picos  # summed in two parts, as spend reports do: SQLite's
    parts = (func.sum(cost // COST_SPLIT), func.sum(cost % COST_SPLIT))  # sum is 64-bit
    found = (await conn.execute(select(*parts, func.count()).where(*where))).one()
    # PostgreSQL sums bigints as numeric (Decimal); int() of a whole Decimal is exact.
    return int(found[0] or 0) * COST_SPLIT + int(found[1] or 0), int(found[2])


async def create_budget(
    store: Store, invalidations: Invalidations, ctx: RequestContext, body: BudgetCreate
) -> BudgetView:
    """Make a budget. Unless ``body.count_earlier_spend`` is false, what its scope spent in the
    current window before it existed counts (its usage rows until now summed first, those
    since in the transaction that writes the budget); every call from the next on is reserved
    and settled against it."""
    now = ctx.clock.now()
    budget_id = new_id("bud")
    scope = body.scope_kind.value + (f":{body.scope_value}" if body.scope_value else "")
    name = body.name or f"{scope} {body.window.value}"[:200]
    start = window_start(body.window, now)
    earlier = (0, 0)
    if body.count_earlier_spend:
        # The window's calls until now are summed first, outside the write transaction: on
        # SQLite that holds the one write lock, and a month of calls takes time to read.
        async with store.read() as conn:
            earlier = await _earlier_spend(conn, store.dialect, ctx, body, start, now)
    async with store.write() as conn:
        await _check_scope_exists(conn, ctx.org_id, body)
        try:
            async with conn.begin_nested():
                await conn.execute(
                    insert(budgets).values(
                        id=budget_id,
                        org_id=ctx.org_id,
                        name=name,
                        scope_kind=body.scope_kind.value,
                        scope_value=body.scope_value,
                        window=body.window.value,
                        limit_picos=body.limit_usd,
                        enforcement=body.enforcement.value,
                        thresholds=json.dumps(body.thresholds),
                        downgrade=_downgrade_json(body.downgrade),
                        created_by=ctx.principal.actor_id,
                        created_at=now,
                        updated_at=now,
                    )
                )
        except IntegrityError as exc:
            raise await _duplicate(conn, ctx.org_id, body, scope) from exc
        details: dict[str, Any] = {}
        if body.count_earlier_spend:  # and those since, with the budget's row written
            later = await _earlier_spend(conn, store.dialect, ctx, body, now)
            spent, calls = min(earlier[0] + later[0], COUNTER_MAX), earlier[1] + later[1]
            if calls:  # the ledger makes the counter of a window with none (from zero)
                await conn.execute(
                    insert(budget_counters).values(
                        budget_id=budget_id,
                        window_start=epoch(start),
                        spent_picos=spent,
                        reserved_picos=0,
                        calls=calls,
                    )
                )
            details = {"earlier_spend_usd": dollars(spent), "earlier_calls": calls}
        await invalidations.publish(conn, "budget", ctx.org_id)
        view = await get_budget(conn, ctx.org_id, budget_id, now)
        await ctx.audit(
            conn,
            "budget.created",
            target_type="budget",
            target_id=budget_id,
            details={
                "name": view.name,
                "scope": view.scope,
                "window": view.window.value,
                "limit_usd": view.limit_usd,
                "enforcement": view.enforcement.value,
                **details,
            },
        )
        return view


def _changes(row: Any, body: BudgetUpdate) -> dict[str, Any]:
    """The columns ``body`` changes, with their new values (those it leaves as they are: none)."""
    new: dict[str, Any] = {}
    if body.name is not None:
        new["name"] = body.name
    if body.limit_usd is not None:
        new["limit_picos"] = body.limit_usd
    if body.enforcement is not None:
        new["enforcement"] = body.enforcement.value
    if body.thresholds is not None:
        new["thresholds"] = json.dumps(body.thresholds)
    if "downgrade" in body.model_fields_set:
        new["downgrade"] = _downgrade_json(body.downgrade)
    return {column: value for column, value in new.items() if value != row[column]}


def _audit_details(old_limit: str, after: BudgetView, changed: dict[str, Any]) -> dict[str, Any]:
    fields = sorted("limit_usd" if c == "limit_picos" else c for c in changed)
    details: dict[str, Any] = {
        "scope": after.scope,
        "window": after.window.value,
        "changed": fields,
        "old_limit_usd": old_limit,
        "limit_usd": after.limit_usd,
        "enforcement": after.enforcement.value,
    }
    if "name" in fields:
        details["name"] = after.name
    if "thresholds" in fields:
        details["thresholds"] = after.thresholds
    if "downgrade" in fields:
        rule = after.downgrade
        details["downgrade"] = rule.model_dump(by_alias=True) if rule is not None else None
    return details


async def update_budget(
    store: Store,
    invalidations: Invalidations,
    ctx: RequestContext,
    budget_id: str,
    body: BudgetUpdate,
) -> BudgetView:
    """Change a budget's name, limit, enforcement, thresholds or downgrade."""
    now = ctx.clock.now()
    async with store.write() as conn:
        row = await _row(conn, ctx.org_id, budget_id)
        changed = _changes(row, body)
        if not changed:
            return await get_budget(conn, ctx.org_id, budget_id, now)
        await conn.execute(
            update(budgets)
            .where(budgets.c.id == budget_id, budgets.c.org_id == ctx.org_id)
            .values(**changed, updated_at=now)
        )
        await invalidations.publish(conn, "budget", ctx.org_id)
        after = await get_budget(conn, ctx.org_id, budget_id, now)
        await ctx.audit(
            conn,
            "budget.updated",
            target_type="budget",
            target_id=budget_id,
            details=_audit_details(dollars(row["limit_picos"]), after, changed),
        )
        return after


async def delete_budget(
    store: Store, invalidations: Invalidations, ctx: RequestContext, budget_id: str
) -> None:
    """Delete a budget and its counters; calls stop counting against it at once."""
    async with store.write() as conn:
        budget = await get_budget(conn, ctx.org_id, budget_id, ctx.clock.now())
        await conn.execute(delete(budget_counters).where(budget_counters.c.budget_id == budget_id))
        await conn.execute(delete(budgets).where(budgets.c.id == budget_id))
        await invalidations.publish(conn, "budget", ctx.org_id)
        await ctx.audit(
            conn,
            "budget.deleted",
            target_type="budget",
            target_id=budget_id,
            details={
                "name": budget.name,
                "scope": budget.scope,
                "window": budget.window.value,
                "limit_usd": budget.limit_usd,
                "enforcement": budget.enforcement.value,
            },
        )
