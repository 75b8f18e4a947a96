"""Reading usage rows: the filters /usage and /spend share, exact dollars, and pages of rows.

Label filters read the stored JSON with each engine's own function (``json_extract`` on SQLite,
``jsonb ->>`` on PostgreSQL); see :mod:`pilothouse.gateway.spend` for why.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from pydantic import BaseModel, Field
from sqlalchemy import String, Table, and_, cast, func, or_, select
from sqlalchemy.dialects.postgresql import JSONB
from sqlalchemy.sql.elements import ColumnElement

from pilothouse.api.types import Page
from pilothouse.clock import from_micros, to_micros
from pilothouse.context import RequestContext
from pilothouse.errors import ValidationFailed
from pilothouse.gateway.prices import PICOS_PER_DOLLAR
from pilothouse.gateway.tables import usage_records
from pilothouse.identity.labels import LABEL_KEY_PATTERN
from pilothouse.identity.sessions import parse_label_filters
from pilothouse.store.engine import Store

u = usage_records.c


def dollars(picos: int) -> str:
    """Pico-dollars as an exact decimal string of dollars, twelve places: ``0.000123456789``."""
    sign = "-" if picos < 0 else ""
    whole, fraction = divmod(abs(picos), PICOS_PER_DOLLAR)
    return f"{sign}{whole}.{fraction:012d}"


class Tokens(BaseModel):
    """Tokens by kind; ``input`` excludes cache reads and writes."""

    input: int
    output: int
    cache_read: int
    cache_write: int
    reasoning: int


class UsageView(BaseModel):
    """One LLM call as the API shows it."""

    request_id: str
    created_at: datetime
    session_id: str | None
    key_id: str | None
    user_id: str | None
    team_id: str | None
    project: str | None
    repository: str | None
    labels: dict[str, str]
    skills: list[str]
    plugins: list[str]
    client_session: str | None
    endpoint: str
    model: str = Field(description="The model alias the caller asked for.")
    deployment: str | None
    upstream_model: str | None
    stream: bool
    tokens: Tokens
    cost_picos: int = Field(description="Exact cost in pico-dollars (10**12 per dollar).")
    cost: str = Field(description="The same cost in dollars, as an exact decimal string.")
    price_version: str | None
    status: str
    http_status: int
    error: str | None
    retries: int
    estimated: bool = Field(
        description="The call ended before its usage arrived; the tokens are an estimate."
    )
    ttfb_ms: int | None
    latency_ms: int


# --- filters --------------------------------------------------------------------------------

FILTER_COLUMNS = {
    "session_id": u.session_id,
    "user_id": u.user_id,
    "team_id": u.team_id,
    "project": u.project,
    "repository": u.repository,
    "model": u.model_alias,
    "deployment": u.deployment,
    "status": u.status,
    "key_id": u.key_id,
}
_LABEL_START = re.compile(rf",(?={LABEL_KEY_PATTERN[1:-1]}=)")


@dataclass(frozen=True, slots=True)
class UsageFilters:
    """What usage rows (and so spend) can be narrowed by; every filter given must hold."""

    since: datetime | None = None
    until: datetime | None = None
    equal: dict[str, str] = field(default_factory=dict)
    """Column filters by their API name (a key of ``FILTER_COLUMNS``)."""
    labels: tuple[tuple[str, str], ...] = ()


def invalid(param: str, message: str) -> ValidationFailed:
    """A 422 naming the query parameter ``param``, in the envelope validation errors use."""
    return ValidationFailed(
        f"invalid request: {param}: {message}",
        errors=[{"location": ["query", param], "type": "value_error", "message": message}],
    )


def parse_labels(values: Iterable[str]) -> tuple[tuple[str, str], ...]:
    """``k=v`` filters, each repeated or comma-separated (``a=1,b=2``), as pairs."""
    items = [part for value in values for part in _LABEL_START.split(value)]
    return tuple(parse_label_filters(items))


def make_filters(
    since: datetime | None,
    until: datetime | None,
    equal: dict[str, str | None],
    labels: Iterable[str],
) -> UsageFilters:
    """Checked filters (``equal`` keyed like ``FILTER_COLUMNS``); an inverted window is refused."""
    if since is not None and until is not None and until < since:
        raise invalid("until", "must not be before since")
    given = {name: value for name, value in equal.items() if value is not None}
    return UsageFilters(since, until, given, parse_labels(labels))


def label_value(dialect: str, name: str, table: Table = usage_records) -> ColumnElement[Any]:
    """The value of label ``name`` of a row of ``table`` (NULL where it has none), in the
    engine's JSON SQL."""
    labels = table.c.labels
    if dialect == "postgresql":
        return cast(labels, JSONB).op("->>", return_type=String)(name)
    return func.json_extract(labels, f'$."{name}"', type_=String)


def conditions(ctx: RequestContext, dialect: str, filters: UsageFilters) -> list[Any]:
    """WHERE clauses: the caller's organization (always) and every filter given."""
    where: list[Any] = [u.org_id == ctx.org_id]
    if filters.since is not None:
        where.append(u.created_at >= filters.since)
    if filters.until is not None:
        where.append(u.created_at < filters.until)
    return where + attribution_conditions(dialect, filters, usage_records)


def attribution_conditions(dialect: str, filters: UsageFilters, table: Table) -> list[Any]:
    """The column and label filters, on ``table`` (usage rows, or roll-ups: the same names)."""
    where = [table.c[FILTER_COLUMNS[name].name] == value for name, value in filters.equal.items()]
    return where + [label_value(dialect, k, table) == v for k, v in filters.labels]


# --- usage rows -----------------------------------------------------------------------------

CURSOR_PATTERN = r"^[0-9]{1,18}\.[^\x00]{1,64}$"
"""``<created_at in microseconds>.<request id>`` of the last row of the previous page."""


def _cursor_of(row: Any) -> str:
    return f"{to_micros(row['created_at'])}.{row['request_id']}"


def _after(cursor: str) -> ColumnElement[bool]:
    micros, _, request_id = cursor.partition(".")
    try:
        moment = from_micros(int(micros))
    except (ValueError, OverflowError, OSError):
        raise invalid("cursor", "is not a cursor this API returned") from None
    return or_(u.created_at < moment, and_(u.created_at == moment, u.request_id < request_id))


def _usage_view(row: Any) -> UsageView:
    return UsageView(
        request_id=row["request_id"],
        created_at=row["created_at"],
        session_id=row["session_id"],
        key_id=row["key_id"],
        user_id=row["user_id"],
        team_id=row["team_id"],
        project=row["project"],
        repository=row["repository"],
        labels=json.loads(row["labels"]),
        skills=json.loads(row["skills"]),
        plugins=json.loads(row["plugins"]),
        client_session=row["client_session"],
        endpoint=row["endpoint"],
        model=row["model_alias"],
        deployment=row["deployment"],
        upstream_model=row["upstream_model"],
        stream=bool(row["stream"]),
        tokens=Tokens(
            input=row["input_tokens"],
            output=row["output_tokens"],
            cache_read=row["cache_read_tokens"],
            cache_write=row["cache_write_tokens"],
            reasoning=row["reasoning_tokens"],
        ),
        cost_picos=row["cost_picos"],
        cost=dollars(row["cost_picos"]),
        price_version=row["price_version"],
        status=row["status"],
        http_status=row["http_status"],
        error=row["error"],
        retries=row["retries"],
        estimated=bool(row["estimated"]),
        ttfb_ms=row["ttfb_ms"],
        latency_ms=row["latency_ms"],
    )


async def list_usage(
    store: Store, ctx: RequestContext, filters: UsageFilters, *, limit: int, cursor: str | None
) -> Page[UsageView]:
    """Usage rows of the caller's organization, newest first, narrowed by ``filters``."""
    query = select(usage_records).where(*conditions(ctx, store.dialect, filters))
    if cursor:
        query = query.where(_after(cursor))
    query = query.order_by(u.created_at.desc(), u.request_id.desc()).limit(limit + 1)
    async with store.read() as conn:
        rows = (await conn.execute(query)).mappings().all()
    kept = rows[:limit]
    next_cursor = _cursor_of(kept[-1]) if len(rows) > limit else None
    return Page[UsageView](data=[_usage_view(r) for r in kept], next_cursor=next_cursor)
