"""Spend: an organization's usage rows summed by who, what and when, exactly.

How the sums are computed, and why this way:

- Grouping, counting and summing happen in the database. An inner query projects the few
  columns a report needs (the group keys, the time bucket, the counters) and the outer query
  groups by the inner query's plain columns, so the same statement works on both engines
  (PostgreSQL will not match a ``GROUP BY`` expression whose parameters differ from the select
  list's). 100k rows reduce to a handful of groups before anything reaches Python.
- Column keys (user, repo, model, ...) are plain columns. A label value is read with each
  engine's own JSON function: ``json_extract(labels, '$."name"')`` on SQLite and
  ``CAST(labels AS jsonb) ->> 'name'`` on PostgreSQL; a row without the label yields NULL.
- Skills and plugins are JSON arrays and a call may carry several. The database groups by the
  array's stored text (canonical, and shared by every call of a session, so there are few
  distinct values); Python then splits each group into one group per distinct element. The
  SQL alternative, ``json_each`` on SQLite against a lateral ``jsonb_array_elements_text``
  outer join on PostgreSQL, is two dialects of harder SQL for no gain in speed. A call with two
  skills counts under both, so group sums may exceed the totals; the totals count each call once.
- Time buckets are UTC on both engines: PostgreSQL truncates ``created_at AT TIME ZONE 'UTC'``;
  SQLite stores UTC text, which ``strftime`` cuts. Weeks start on Monday (ISO 8601).
- Whole days are read from the roll-ups (``gateway/rollups.py``: each day's rows summed by
  attribution), with the rows not yet summed and the rows of the partial days at the window's
  ends, all in one ``UNION ALL`` (one statement, so one snapshot: a roll-up pass committing
  meanwhile cannot count a row twice or not at all). Reports by session or by hour read rows.
- Money is exact: cost is summed as integers. SQLite's 64-bit ``sum`` would overflow past
  $9.2 million of pico-dollars in one group, so cost is summed in two parts (whole micro-dollars
  and the pico-dollars beyond them) that Python, with unbounded integers, puts back together.
"""

from __future__ import annotations

import itertools
import json
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from enum import StrEnum
from typing import Any

from pydantic import BaseModel, Field
from sqlalchemy import BigInteger, Table, func, literal, select, union_all
from sqlalchemy.sql.elements import ColumnElement

from pilothouse.budgets.model import window_start
from pilothouse.context import RequestContext
from pilothouse.gateway.rollups import COST_SPLIT, DAY
from pilothouse.gateway.tables import usage_records, usage_rollups
from pilothouse.gateway.usage_rows import (
    Tokens,
    UsageFilters,
    attribution_conditions,
    conditions,
    dollars,
    invalid,
    label_value,
)
from pilothouse.identity.labels import LABEL_KEY_RE
from pilothouse.store.engine import Store

MAX_GROUP_BY = 4

u = usage_records.c
r = usage_rollups.c


class Interval(StrEnum):
    """The width of a time bucket, in UTC."""

    HOUR = "hour"
    DAY = "day"
    WEEK = "week"
    MONTH = "month"


GROUP_COLUMNS = {
    "user": u.user_id,
    "team": u.team_id,
    "project": u.project,
    "repo": u.repository,
    "session": u.session_id,
    "key": u.key_id,
    "model": u.model_alias,
    "deployment": u.deployment,
    "status": u.status,
    "endpoint": u.endpoint,
}
GROUP_ARRAYS = {"skill": u.skills, "plugin": u.plugins}
GROUP_ALIASES = {"repository": "repo"}
LABEL_PREFIX = "label:"
GROUP_FIELDS = [*GROUP_COLUMNS, *GROUP_ARRAYS]


@dataclass(frozen=True, slots=True)
class GroupKey:
    """One ``group_by`` field: a column, a label (``label:<name>``) or a JSON array."""

    name: str

    @property
    def label(self) -> str | None:
        """The label name, for ``label:<name>``."""
        return self.name.removeprefix(LABEL_PREFIX) if self.name.startswith(LABEL_PREFIX) else None

    @property
    def is_array(self) -> bool:
        """Whether a call may fall under several values of this key (skill, plugin)."""
        return self.name in GROUP_ARRAYS

    @property
    def summed(self) -> bool:
        """Whether roll-ups keep this key (all but the session)."""
        return self.name != "session"

    def expression(self, dialect: str, table: Table = usage_records) -> ColumnElement[Any]:
        """What the database groups by for this key, in ``table`` (usage rows or roll-ups)."""
        if self.label is not None:
            return label_value(dialect, self.label, table)
        if self.is_array:
            return table.c[GROUP_ARRAYS[self.name].name]
        return table.c[GROUP_COLUMNS[self.name].name]


def parse_group_by(raw: str | None) -> list[GroupKey]:
    """``user,repo,label:use_case`` -> keys; unknown, repeated or too many fields are refused."""
    if raw is None or not raw.strip():
        return []
    keys: list[GroupKey] = []
    for part in (p.strip() for p in raw.split(",")):
        name = GROUP_ALIASES.get(part, part)
        label = name.removeprefix(LABEL_PREFIX) if name.startswith(LABEL_PREFIX) else None
        if label is not None and not LABEL_KEY_RE.match(label):
            raise invalid("group_by", f"{part[:80]!r} must be label:<name> with a label key")
        if label is None and name not in GROUP_FIELDS:
            choices = ", ".join(GROUP_FIELDS)
            raise invalid("group_by", f"unknown field {part[:80]!r}; use {choices} or label:<name>")
        if any(k.name == name for k in keys):
            raise invalid("group_by", f"{part!r} is given twice")
        keys.append(GroupKey(name))
    if len(keys) > MAX_GROUP_BY:
        raise invalid("group_by", f"at most {MAX_GROUP_BY} fields, not {len(keys)}")
    return keys


_SQLITE_BUCKETS = {
    Interval.HOUR: ("%Y-%m-%d %H:00:00",),
    Interval.DAY: ("%Y-%m-%d 00:00:00",),
    Interval.WEEK: ("%Y-%m-%d 00:00:00", "weekday 0", "-6 days"),  # back to Monday
    Interval.MONTH: ("%Y-%m-01 00:00:00",),
}
_BUCKET_FORMAT = "%Y-%m-%d %H:%M:%S"


def _bucket(dialect: str, interval: Interval, moment: ColumnElement[Any]) -> ColumnElement[Any]:
    """The UTC start of the bucket ``moment`` is in: on SQLite as ``YYYY-MM-DD HH:MM:SS``
    text; on PostgreSQL as a timestamp, made that text once per group (``_bucket_text``):
    ``to_char`` on every row cost a third of an hourly report's time."""
    if dialect == "postgresql":
        return func.date_trunc(interval.value, func.timezone("UTC", moment))
    fmt, *modifiers = _SQLITE_BUCKETS[interval]
    return func.strftime(fmt, moment, *modifiers)


def _bucket_text(dialect: str, bucket: ColumnElement[Any]) -> ColumnElement[Any]:
    """A grouped bucket as ``YYYY-MM-DD HH:MM:SS`` text, the same on both engines."""
    if dialect == "postgresql":
        return func.to_char(bucket, "YYYY-MM-DD HH24:MI:SS")
    return bucket


class SpendSums(BaseModel):
    """Calls, tokens and exact cost of a set of usage rows."""

    calls: int
    tokens: Tokens
    cost_picos: int = Field(description="Exact cost in pico-dollars (10**12 per dollar).")
    cost: str = Field(description="The same cost in dollars, as an exact decimal string.")

    @classmethod
    def of(cls, groups: Iterable[SpendGroup]) -> SpendSums:
        """The sums of ``groups`` (of a report without array keys: each call in one group)."""
        total = _Sums()
        for g in groups:
            tokens = g.tokens
            total.add(
                _Sums(
                    g.calls,
                    tokens.input,
                    tokens.output,
                    tokens.cache_read,
                    tokens.cache_write,
                    tokens.reasoning,
                    g.cost_picos,
                )
            )
        return cls(**total.fields())


class SpendGroup(BaseModel):
    """The sums of one group in one time bucket."""

    keys: dict[str, str | None] = Field(
        description="The value of each group_by field (null: the rows have none)."
    )
    bucket: datetime | None = Field(description="The UTC start of the bucket (null: no interval).")
    calls: int
    tokens: Tokens
    cost_picos: int = Field(description="Exact cost in pico-dollars (10**12 per dollar).")
    cost: str = Field(description="The same cost in dollars, as an exact decimal string.")


class SpendReport(BaseModel):
    """Spend grouped by the requested fields and time buckets, and the totals."""

    group_by: list[str]
    interval: Interval | None
    since: datetime | None
    until: datetime | None
    groups: list[SpendGroup] = Field(
        description="Bucket ascending, then cost descending. Grouped by skill or plugin, a call"
        " with several counts under each, so groups may sum to more than the totals."
    )
    totals: SpendSums = Field(description="Every matching call, counted once.")
    truncated: bool = Field(description="More groups matched than `limit`; the rest are left off.")


@dataclass(slots=True)
class _Sums:
    """Running sums of one group, as unbounded Python integers."""

    calls: int = 0
    input: int = 0
    output: int = 0
    cache_read: int = 0
    cache_write: int = 0
    reasoning: int = 0
    cost: int = 0

    def add(self, other: _Sums) -> None:
        self.calls += other.calls
        self.input += other.input
        self.output += other.output
        self.cache_read += other.cache_read
        self.cache_write += other.cache_write
        self.reasoning += other.reasoning
        self.cost += other.cost

    def fields(self) -> dict[str, Any]:
        tokens = Tokens(
            input=self.input,
            output=self.output,
            cache_read=self.cache_read,
            cache_write=self.cache_write,
            reasoning=self.reasoning,
        )
        return {
            "calls": self.calls,
            "tokens": tokens,
            "cost_picos": self.cost,
            "cost": dollars(self.cost),
        }


_COUNTERS = ("input", "output", "cache_read", "cache_write", "reasoning")


@dataclass(frozen=True, slots=True)
class _Plan:
    """Where a report's rows come from: usage rows only, or the roll-ups of the whole days in
    ``[first, end)`` (None: unbounded) with the unsummed rows of those days and the rows of the
    partial days around them."""

    summed: bool
    first: datetime | None = None
    end: datetime | None = None


def _plan(filters: UsageFilters, keys: Sequence[GroupKey], interval: Interval | None) -> _Plan:
    """Roll-ups serve a report unless it is by session or by hour, or spans no whole day."""
    if interval is Interval.HOUR or "session_id" in filters.equal:
        return _Plan(summed=False)
    if not all(key.summed for key in keys):
        return _Plan(summed=False)
    first = None
    if filters.since is not None:
        first = window_start(DAY, filters.since)
        if first < filters.since:
            first += timedelta(days=1)
    end = None if filters.until is None else window_start(DAY, filters.until)
    if first is not None and end is not None and end <= first:
        return _Plan(summed=False)
    return _Plan(summed=True, first=first, end=end)


def _rows(
    ctx: RequestContext,
    dialect: str,
    filters: UsageFilters,
    keys: Sequence[GroupKey],
    interval: Interval | None,
    *where: Any,
) -> Any:
    """Usage rows matching ``filters`` and ``where``, projected to a report's columns."""
    projected = [key.expression(dialect).label(f"k{i}") for i, key in enumerate(keys)]
    if interval is not None:
        projected.append(_bucket(dialect, interval, u.created_at).label("bucket"))
    return select(
        *projected,
        literal(1, BigInteger).label("calls"),
        *(u[f"{name}_tokens"].label(name) for name in _COUNTERS),
        (u.cost_picos // COST_SPLIT).label("cost_hi"),
        (u.cost_picos % COST_SPLIT).label("cost_lo"),
    ).where(*conditions(ctx, dialect, filters), *where)


def _rollups(
    ctx: RequestContext,
    dialect: str,
    filters: UsageFilters,
    keys: Sequence[GroupKey],
    interval: Interval | None,
    plan: _Plan,
) -> Any:
    """The roll-ups of the plan's whole days matching ``filters``, projected likewise."""
    projected = [
        key.expression(dialect, usage_rollups).label(f"k{i}") for i, key in enumerate(keys)
    ]
    if interval is not None:
        projected.append(_bucket(dialect, interval, r.day).label("bucket"))
    where = [r.org_id == ctx.org_id, *attribution_conditions(dialect, filters, usage_rollups)]
    if plan.first is not None:
        where.append(r.day >= plan.first)
    if plan.end is not None:
        where.append(r.day < plan.end)
    return select(
        *projected,
        r.calls.label("calls"),
        *(r[f"{name}_tokens"].label(name) for name in _COUNTERS),
        r.cost_micros.label("cost_hi"),
        r.cost_picos_rest.label("cost_lo"),
    ).where(*where)


def _spend_query(
    ctx: RequestContext,
    dialect: str,
    filters: UsageFilters,
    keys: Sequence[GroupKey],
    interval: Interval | None,
    *,
    summed: bool,
) -> Any:
    plan = _plan(filters, keys, interval) if summed else _Plan(summed=False)
    parts: list[Any]
    if not plan.summed:
        parts = [_rows(ctx, dialect, filters, keys, interval)]
    else:
        # The whole days: their roll-ups and their unsummed rows. Then the partial days.
        unsummed: list[ColumnElement[bool]] = [u.rolled_up.is_(None)]
        if plan.first is not None:
            unsummed.append(u.created_at >= plan.first)
        if plan.end is not None:
            unsummed.append(u.created_at < plan.end)
        parts = [
            _rollups(ctx, dialect, filters, keys, interval, plan),
            _rows(ctx, dialect, filters, keys, interval, *unsummed),
        ]
        if plan.first is not None and filters.since is not None and filters.since < plan.first:
            parts.append(_rows(ctx, dialect, filters, keys, interval, u.created_at < plan.first))
        if plan.end is not None and filters.until is not None and plan.end < filters.until:
            parts.append(_rows(ctx, dialect, filters, keys, interval, u.created_at >= plan.end))
    source: Any = parts[0] if len(parts) == 1 else union_all(*parts)
    inner = source.subquery()
    grouped = [inner.c[f"k{i}"] for i in range(len(keys))]
    shown: list[ColumnElement[Any]] = list(grouped)
    if interval is not None:
        grouped.append(inner.c.bucket)
        shown.append(_bucket_text(dialect, inner.c.bucket).label("bucket"))
    return select(
        *shown,
        func.sum(inner.c.calls).label("calls"),
        *(func.sum(inner.c[name]).label(name) for name in _COUNTERS),
        func.sum(inner.c.cost_hi).label("cost_hi"),
        func.sum(inner.c.cost_lo).label("cost_lo"),
    ).group_by(*grouped)


def _sums_of(row: Any) -> _Sums:
    # PostgreSQL sums bigints as numeric (Decimal); int() of a whole Decimal is exact.
    return _Sums(
        calls=int(row["calls"] or 0),
        **{name: int(row[name] or 0) for name in _COUNTERS},
        cost=int(row["cost_hi"] or 0) * COST_SPLIT + int(row["cost_lo"] or 0),
    )


def _elements(text: str | None, cache: dict[str | None, list[str | None]]) -> list[str | None]:
    """The distinct members of a stored JSON array, or ``[None]`` for an empty one."""
    found = cache.get(text)
    if found is None:
        members = sorted({str(m) for m in json.loads(text or "[]")})
        found = cache[text] = [*members] if members else [None]
    return found


def _bucket_start(value: str | None) -> datetime | None:
    if value is None:
        return None
    return datetime.strptime(value, _BUCKET_FORMAT).replace(tzinfo=UTC)


GroupId = tuple[datetime | None, tuple[str | None, ...]]


def _order(item: tuple[GroupId, _Sums]) -> tuple[Any, ...]:
    (bucket, values), sums = item
    return (
        bucket or datetime.min.replace(tzinfo=UTC),
        -sums.cost,
        -sums.calls,
        tuple((v is None, v or "") for v in values),
    )


async def spend_report(
    store: Store,
    ctx: RequestContext,
    filters: UsageFilters,
    keys: Sequence[GroupKey],
    interval: Interval | None,
    *,
    limit: int,
    summed: bool = True,
) -> SpendReport:
    """Calls, tokens and cost of the caller's organization, grouped by ``keys`` and ``interval``;
    from the roll-ups where they serve (``summed``; the same sums, read from fewer rows)."""
    query = _spend_query(ctx, store.dialect, filters, keys, interval, summed=summed)
    async with store.read() as conn:
        rows = (await conn.execute(query)).mappings().all()
    totals = _Sums()
    groups: dict[GroupId, _Sums] = {}
    parsed: dict[str | None, list[str | None]] = {}
    for row in rows:
        sums = _sums_of(row)
        if sums.calls == 0:
            continue  # no group_by and no interval: one row even when nothing matched
        totals.add(sums)
        bucket = _bucket_start(row["bucket"]) if interval is not None else None
        choices = [
            _elements(row[f"k{i}"], parsed) if key.is_array else [row[f"k{i}"]]
            for i, key in enumerate(keys)
        ]
        for values in itertools.product(*choices):
            groups.setdefault((bucket, values), _Sums()).add(sums)
    ordered = sorted(groups.items(), key=_order)
    return SpendReport(
        group_by=[key.name for key in keys],
        interval=interval,
        since=filters.since,
        until=filters.until,
        groups=[
            SpendGroup(
                keys={key.name: value for key, value in zip(keys, values, strict=True)},
                bucket=bucket,
                **sums.fields(),
            )
            for (bucket, values), sums in ordered[:limit]
        ],
        totals=SpendSums(**totals.fields()),
        truncated=len(ordered) > limit,
    )
