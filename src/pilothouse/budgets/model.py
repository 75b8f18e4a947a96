"""What a budget is, which calls it applies to, and its windows (UTC, computed from the clock)."""

from __future__ import annotations

import calendar
import json
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from enum import StrEnum
from typing import Any

from pilothouse.identity.principal import Principal


class ScopeKind(StrEnum):
    """What a budget limits."""

    ORG = "org"
    TEAM = "team"
    USER = "user"
    PROJECT = "project"
    USE_CASE = "use_case"
    REPOSITORY = "repository"
    SESSION = "session"
    KEY = "key"
    LABEL = "label"


class Window(StrEnum):
    """The period a budget's spend is counted over."""

    DAY = "day"
    WEEK = "week"
    MONTH = "month"
    TOTAL = "total"


class Enforcement(StrEnum):
    """Refuse calls over the limit, or only alert."""

    HARD = "hard"
    SOFT = "soft"


@dataclass(frozen=True, slots=True)
class Downgrade:
    """Above ``at_percent`` of the limit, calls for ``source`` (None: any) go to ``target``."""

    at_percent: int
    target: str
    source: str | None = None


@dataclass(frozen=True, slots=True)
class Budget:
    """A limit on a scope's spend over a window."""

    id: str
    org_id: str
    name: str
    scope_kind: ScopeKind
    scope_value: str
    window: Window
    limit_picos: int
    enforcement: Enforcement
    thresholds: tuple[int, ...] = (50, 80, 100)
    downgrade: Downgrade | None = None

    @property
    def scope(self) -> str:
        """The scope as people write it: ``team:tm_1``, ``label:use_case=review``, ``org``."""
        return (
            self.scope_kind.value
            if self.scope_kind is ScopeKind.ORG
            else (f"{self.scope_kind.value}:{self.scope_value}")
        )


def scope_values(principal: Principal) -> dict[ScopeKind, set[str]]:
    """Every scope value a call by ``principal`` is charged to."""
    session = principal.session
    found: dict[ScopeKind, set[str]] = {ScopeKind.ORG: {""}, ScopeKind.KEY: {principal.key_id}}
    user = (session.user_id if session else None) or principal.user_id
    pairs: list[tuple[ScopeKind, str | None]] = [(ScopeKind.USER, user)]
    if session is not None:
        pairs += [
            (ScopeKind.SESSION, session.id),
            (ScopeKind.TEAM, session.team_id),
            (ScopeKind.PROJECT, session.project),
            (ScopeKind.USE_CASE, session.use_case),
            (ScopeKind.REPOSITORY, session.repository),
        ]
    elif principal.session_id:
        pairs.append((ScopeKind.SESSION, principal.session_id))
    for kind, value in pairs:
        if value:
            found.setdefault(kind, set()).add(value)
    labels = {f"{name}={value}" for name, value in principal.labels.items()}
    if labels:
        found[ScopeKind.LABEL] = labels
    return found


def applies(budget: Budget, scopes: dict[ScopeKind, set[str]]) -> bool:
    """Whether ``budget`` counts a call charged to ``scopes``."""
    return budget.scope_value in scopes.get(budget.scope_kind, ())


def window_start(window: Window, now: datetime) -> datetime:
    """The first instant (UTC) of the window ``now`` falls in; the epoch for ``total``."""
    now = now.astimezone(UTC)
    day = now.replace(hour=0, minute=0, second=0, microsecond=0)
    if window is Window.DAY:
        return day
    if window is Window.WEEK:  # ISO weeks: Monday 00:00 UTC
        return day - timedelta(days=day.weekday())
    if window is Window.MONTH:
        return day.replace(day=1)
    return datetime(1970, 1, 1, tzinfo=UTC)


def window_end(window: Window, now: datetime) -> datetime | None:
    """When the window ``now`` falls in ends (the next one starts); None for ``total``."""
    start = window_start(window, now)
    if window is Window.DAY:
        return start + timedelta(days=1)
    if window is Window.WEEK:
        return start + timedelta(days=7)
    if window is Window.MONTH:
        days = calendar.monthrange(start.year, start.month)[1]
        return start + timedelta(days=days)
    return None


SECONDS_A_DAY = 86_400


def day_window_starts(day: int) -> dict[Window, int]:
    """The epoch seconds at which each window starts for the instants of the UTC day that
    starts at ``day`` (epoch seconds): how counters key their window, the same all day."""
    midnight = datetime.fromtimestamp(day, UTC)
    return {window: epoch(window_start(window, midnight)) for window in Window}


def epoch(moment: datetime) -> int:
    """Whole seconds since the epoch: how counters key their window."""
    return int(moment.timestamp())


def budget_from_row(row: Mapping[Any, Any]) -> Budget:
    """A ``budgets`` row as a Budget."""
    downgrade = None
    if row["downgrade"]:
        raw = json.loads(row["downgrade"])
        downgrade = Downgrade(int(raw["at_percent"]), str(raw["to"]), raw.get("from"))
    return Budget(
        id=row["id"],
        org_id=row["org_id"],
        name=row["name"],
        scope_kind=ScopeKind(row["scope_kind"]),
        scope_value=row["scope_value"],
        window=Window(row["window"]),
        limit_picos=int(row["limit_picos"]),
        enforcement=Enforcement(row["enforcement"]),
        thresholds=tuple(int(t) for t in json.loads(row["thresholds"])),
        downgrade=downgrade,
    )
