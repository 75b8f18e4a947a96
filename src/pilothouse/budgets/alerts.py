"""Budget alerts: each threshold of each budget fires once per window, is recorded, audited and
sent to the configured webhooks (generic JSON or Slack's incoming-webhook format), retried with
backoff until delivered or given up.

A background loop (every ``alert_check_seconds``) reads the counters of every budget's current
window. A threshold crossed makes a ``budget_alerts`` row, keyed by budget, window and
threshold, so replicas racing to fire it make one. The same reading gives each budget's used
share to the budget book, which the gateway's downgrade rule reads without a query per call.

Delivery leases an alert (pushes its next attempt out) before posting it, so two replicas do not
send the same alert at once; an alert is delivered when every webhook answered 2xx.
"""

from __future__ import annotations

import json
import logging
from datetime import datetime, timedelta
from typing import Any, Literal

import httpx
from pydantic import BaseModel, ConfigDict, Field, HttpUrl
from sqlalchemy import and_, or_, select, update
from sqlalchemy.dialects import postgresql, sqlite

from pilothouse.audit import chain
from pilothouse.budgets.ledger import BudgetBook
from pilothouse.budgets.model import Window, epoch, window_end, window_start
from pilothouse.budgets.reserve import usd
from pilothouse.budgets.tables import budget_alerts, budget_counters, budgets
from pilothouse.clock import Clock
from pilothouse.gateway.usage_rows import dollars
from pilothouse.store.engine import Store

log = logging.getLogger(__name__)

LEASE = timedelta(seconds=60)
BATCH = 50


class AlertWebhook(BaseModel):
    """Where budget alerts are posted."""

    model_config = ConfigDict(extra="forbid")

    url: HttpUrl = Field(description="The webhook's URL (http or https).")
    format: Literal["json", "slack"] = Field(
        "json",
        description="json: Pilothouse's alert object; slack: {text} for an incoming webhook.",
    )
    headers: dict[str, str] = Field(
        default_factory=dict, description="Extra request headers (an authorization, say)."
    )


class Alerts:
    """Fires threshold alerts and delivers them."""

    def __init__(
        self,
        store: Store,
        clock: Clock,
        book: BudgetBook,
        webhooks: list[AlertWebhook],
        *,
        max_attempts: int = 8,
        backoff_base_seconds: float = 2.0,
        backoff_max_seconds: float = 300.0,
        timeout_seconds: float = 5.0,
    ) -> None:
        self._store = store
        self._clock = clock
        self._book = book
        self._webhooks = webhooks
        self._max_attempts = max_attempts
        self._backoff = (backoff_base_seconds, backoff_max_seconds)
        self._timeout = timeout_seconds
        insert = postgresql.insert if store.dialect == "postgresql" else sqlite.insert
        self._new_alert = (
            insert(budget_alerts).on_conflict_do_nothing().returning(budget_alerts.c.budget_id)
        )

    async def check(self) -> int:
        """Record an alert for every threshold crossed in a current window; how many were new.

        The counters and the alerts already fired are read first: a write transaction (on
        SQLite the store's one write lock, which the ledger's ticks wait for) is opened only
        when a threshold was crossed that has no alert yet."""
        now = self._clock.now()
        starts = {w: epoch(window_start(w, now)) for w in Window}
        current = or_(
            *(
                and_(budgets.c.window == w.value, budget_counters.c.window_start == start)
                for w, start in starts.items()
            )
        )
        async with self._store.read() as conn:
            rows = (
                (
                    await conn.execute(
                        select(
                            budgets, budget_counters.c.window_start, budget_counters.c.spent_picos
                        )
                        .join(budget_counters, budget_counters.c.budget_id == budgets.c.id)
                        .where(current)
                    )
                )
                .mappings()
                .all()
            )
            found = await conn.execute(
                select(
                    budget_alerts.c.budget_id,
                    budget_alerts.c.window_start,
                    budget_alerts.c.threshold,
                ).where(budget_alerts.c.window_start.in_(set(starts.values())))
            )
            fired_before = {(r[0], r[1], r[2]) for r in found}
        used: dict[str, float] = {}
        due: list[tuple[Any, int, int, int]] = []  # (row, threshold, spent, limit)
        for row in rows:
            limit, spent = int(row["limit_picos"]), int(row["spent_picos"])
            used[row["id"]] = spent * 100 / limit if limit else 0.0
            for threshold in _thresholds(row["thresholds"]):
                crossed = spent * 100 >= threshold * limit
                if crossed and (row["id"], row["window_start"], threshold) not in fired_before:
                    due.append((row, threshold, spent, limit))
        self._book.set_used(used)
        if not due:
            return 0
        fired = 0
        async with self._store.write() as conn:
            for row, threshold, spent, limit in due:
                made = await conn.execute(
                    self._new_alert.values(
                        budget_id=row["id"],
                        window_start=row["window_start"],
                        threshold=threshold,
                        org_id=row["org_id"],
                        spent_picos=spent,
                        limit_picos=limit,
                        created_at=now,
                        attempts=0,
                        next_attempt_at=now if self._webhooks else None,
                    )
                )
                if made.first() is None:
                    continue  # fired meanwhile by another replica
                fired += 1
                await chain.append(
                    conn,
                    self._clock,
                    org_id=row["org_id"],
                    actor=chain.Actor("system", None),
                    action="budget.threshold_reached",
                    target_type="budget",
                    target_id=row["id"],
                    details={
                        "threshold": threshold,
                        "spent_usd": dollars(spent),
                        "limit_usd": dollars(limit),
                        "window": row["window"],
                        "window_start": row["window_start"],
                    },
                )
        return fired

    async def deliver(self) -> int:
        """Post every alert that is due to every webhook; how many were delivered now."""
        if not self._webhooks:
            return 0
        now = self._clock.now()
        due = (
            select(budget_alerts, budgets.c.name, budgets.c.scope_kind, budgets.c.scope_value)
            .add_columns(budgets.c.window)
            .join(budgets, budgets.c.id == budget_alerts.c.budget_id)
            .where(budget_alerts.c.next_attempt_at <= now, budget_alerts.c.delivered_at.is_(None))
            .limit(BATCH)
        )
        async with self._store.read() as conn:
            alerts = [dict(r) for r in (await conn.execute(due)).mappings()]
        delivered = 0
        async with httpx.AsyncClient(timeout=self._timeout) as http:
            for alert in alerts:
                if not await self._lease(alert, now):
                    continue  # another replica is delivering it
                error = await self._post_all(http, alert)
                delivered += await self._outcome(alert, error)
        return delivered

    async def _lease(self, alert: dict[str, Any], now: datetime) -> bool:
        async with self._store.write() as conn:
            leased = await conn.execute(
                update(budget_alerts)
                .where(_key(alert), budget_alerts.c.next_attempt_at == alert["next_attempt_at"])
                .values(next_attempt_at=now + LEASE)
            )
            return leased.rowcount == 1

    async def _post_all(self, http: httpx.AsyncClient, alert: dict[str, Any]) -> str | None:
        for hook in self._webhooks:
            try:
                reply = await http.post(
                    str(hook.url), json=payload(alert, hook.format), headers=hook.headers
                )
            except httpx.HTTPError as exc:
                return f"{_host(hook)}: {type(exc).__name__}: {exc}"
            if not 200 <= reply.status_code < 300:
                return f"{_host(hook)}: HTTP {reply.status_code}"
        return None

    async def _outcome(self, alert: dict[str, Any], error: str | None) -> int:
        now = self._clock.now()
        attempts = int(alert["attempts"]) + 1
        if error is None:
            values: dict[str, Any] = {
                "attempts": attempts,
                "delivered_at": now,
                "next_attempt_at": None,
                "last_error": None,
            }
        else:
            log.warning("budget alert not delivered (attempt %d): %s", attempts, error)
            wait = min(self._backoff[0] * 2 ** (attempts - 1), self._backoff[1])
            gave_up = attempts >= self._max_attempts
            values = {
                "attempts": attempts,
                "next_attempt_at": None if gave_up else now + timedelta(seconds=wait),
                "last_error": error[:1000] + (" (gave up)" if gave_up else ""),
            }
        async with self._store.write() as conn:
            await conn.execute(update(budget_alerts).where(_key(alert)).values(**values))
        return 1 if error is None else 0


def payload(alert: dict[str, Any], form: str) -> dict[str, Any]:
    """The webhook's body for ``alert`` (a budget_alerts row joined with its budget)."""
    scope = (
        alert["scope_kind"]
        if alert["scope_kind"] == "org"
        else (f"{alert['scope_kind']}:{alert['scope_value']}")
    )
    window = Window(alert["window"])
    start = datetime.fromtimestamp(alert["window_start"], tz=alert["created_at"].tzinfo)
    ends = window_end(window, start)
    body = {
        "type": "budget.threshold_reached",
        "budget_id": alert["budget_id"],
        "budget": alert["name"],
        "scope": scope,
        "window": window.value,
        "window_start": start.isoformat(),
        "resets_at": ends.isoformat() if ends else None,
        "threshold_percent": alert["threshold"],
        "spent_usd": dollars(int(alert["spent_picos"])),
        "limit_usd": dollars(int(alert["limit_picos"])),
        "at": alert["created_at"].isoformat(),
    }
    if form == "slack":
        return {
            "text": f"Pilothouse budget *{alert['name']}* ({scope}, {window.value}) reached"
            f" {alert['threshold']}%: ${usd(int(alert['spent_picos']))} of"
            f" ${usd(int(alert['limit_picos']))}."
        }
    return body


def _thresholds(raw: str) -> list[int]:
    return sorted(int(t) for t in json.loads(raw))


def _key(alert: dict[str, Any]) -> Any:
    return and_(
        budget_alerts.c.budget_id == alert["budget_id"],
        budget_alerts.c.window_start == alert["window_start"],
        budget_alerts.c.threshold == alert["threshold"],
    )


def _host(hook: AlertWebhook) -> str:
    """The webhook's host only: its URL may hold a token (Slack's do)."""
    return hook.url.host or "webhook"
