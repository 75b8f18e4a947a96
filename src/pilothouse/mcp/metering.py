"""Priced MCP tools: a call of a tool with a price (``McpServerConfig.prices``) is charged to
the caller's budgets the way an LLM call is.

Before the call is forwarded its price is reserved on every budget the caller counts against,
durably, through the ledger (a hard budget it would pass refuses it, and nothing changes);
after it, the reservation is settled by a usage row (model ``mcp:<server>__<tool>``, endpoint
``/mcp``, no tokens, the price as its cost), in one transaction, so the spend views, budgets,
alerts and a session's totals count tool calls with model calls. A process that stops
mid-call leaves the reservation to the sweeper, which settles it at the price (the row marked
estimated, ``orphaned``): no priced call escapes the ledger.

What is charged: a call the upstream answered (its result an error or not) and a call the
caller left while it ran (the upstream had it) cost the price; a call the upstream failed (it
crashed, hung, or answered garbage) costs nothing and its row says ``upstream_failed``.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from pilothouse.budgets.contexts import CallContext
from pilothouse.budgets.ledger import Ledger
from pilothouse.budgets.reserve import Reservation
from pilothouse.gateway.exchange import elapsed_ms, principal_fields
from pilothouse.identity.principal import Principal
from pilothouse.ids import new_id

if TYPE_CHECKING:
    from pilothouse.services import Services

ENDPOINT = "/mcp"
PICOS_PER_MICRO = 10**6
PRICE_VERSION = "mcp"


@dataclass(slots=True)
class Metered:
    """A priced call in flight: what its usage row will say, and what it reserved."""

    request_id: str
    alias: str
    cost_picos: int
    fields: dict[str, Any]
    started: float
    reservation: Reservation | None


class ToolMeter:
    """Reserves and settles priced tool calls through the ledger."""

    def __init__(self, services: Services) -> None:
        self._svc = services

    @property
    def _ledger(self) -> Ledger:
        ledger = self._svc.ledger
        assert ledger is not None
        return ledger

    async def reserve(self, principal: Principal, name: str, micros: int) -> Metered:
        """Reserve a call of tool ``name`` (as callers see it) costing ``micros`` on the
        principal's budgets. Raises BudgetExceeded (nothing reserved) if a hard budget would be
        passed, StoreUnavailable if the store cannot be written (refuse: fail closed)."""
        ledger = self._ledger
        fields = principal_fields(principal)
        alias = f"mcp:{name}"[:200]
        metered = Metered(
            new_id("req"), alias, micros * PICOS_PER_MICRO, fields, time.monotonic(), None
        )
        budgets = await ledger.book.applicable(principal)
        if budgets or self._svc.settings.gateway.reserve_every_call:
            call = CallContext(fields, None, ENDPOINT, alias, None, 0)
            metered.reservation = await ledger.reserve(
                budgets, metered.request_id, metered.cost_picos, call
            )
        return metered

    async def settle(self, metered: Metered, status: str, error: str | None = None) -> None:
        """Write the call's usage row and settle its reservation: the price if ``status`` is
        ``ok`` or ``client_disconnected``, nothing if the upstream failed. Raises
        StoreUnavailable if the row cannot be written (the reservation, durable, is then the
        sweeper's to settle at the price)."""
        ledger = self._ledger
        cost = metered.cost_picos if status in ("ok", "client_disconnected") else 0
        row = {
            "request_id": metered.request_id,
            **metered.fields,
            "client_session": None,
            "endpoint": ENDPOINT,
            "model_alias": metered.alias,
            "downgraded_from": None,
            "deployment": None,
            "upstream_model": None,
            "stream": 0,
            "input_tokens": 0,
            "output_tokens": 0,
            "cache_read_tokens": 0,
            "cache_write_tokens": 0,
            "reasoning_tokens": 0,
            "cost_picos": cost,
            "price_version": PRICE_VERSION,
            "status": status,
            "http_status": 200 if status == "ok" else 502,
            "error": error[:1000] if error else None,
            "retries": 0,
            "estimated": 0,
            "ttfb_ms": None,
            "latency_ms": elapsed_ms(metered.started),
            "created_at": self._svc.clock.now(),
        }
        try:
            await ledger.record(row, metered.reservation)
        finally:
            if metered.reservation is not None:
                ledger.forget(metered.request_id)
