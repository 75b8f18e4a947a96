"""Announcing something to people's webhooks (approval requests, changed MCP tools): each body
posted to each webhook after the change commits, retried a few times, never failing what
announced it, and finished (within a bound) when the server stops."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Sequence
from typing import Any

import httpx
from sqlalchemy.ext.asyncio import AsyncConnection

from pilothouse.budgets.alerts import AlertWebhook
from pilothouse.store.engine import after_commit

log = logging.getLogger(__name__)

ATTEMPTS = 3
TIMEOUT_S = 5.0


class Announcer:
    """Posts announcements to a list of webhooks in the background."""

    def __init__(self, webhooks: Sequence[AlertWebhook]) -> None:
        self.webhooks = list(webhooks)
        self._posting: set[asyncio.Task[None]] = set()

    def after_commit(
        self, conn: AsyncConnection, what: str, body_for: Callable[[str], dict[str, Any]]
    ) -> None:
        """Once ``conn``'s transaction commits, post ``body_for(format)`` to every webhook
        (``what`` names it in the log when a post fails)."""
        if not self.webhooks:
            return

        def start() -> None:
            task = asyncio.get_running_loop().create_task(self._post(what, body_for))
            self._posting.add(task)
            task.add_done_callback(self._posting.discard)

        after_commit(conn, start)

    async def _post(self, what: str, body_for: Callable[[str], dict[str, Any]]) -> None:
        async with httpx.AsyncClient(timeout=TIMEOUT_S) as http:
            for hook in self.webhooks:
                body = body_for(hook.format)
                for attempt in range(ATTEMPTS):
                    try:
                        reply = await http.post(str(hook.url), json=body, headers=hook.headers)
                        if 200 <= reply.status_code < 300:
                            break
                        error = f"HTTP {reply.status_code}"
                    except httpx.HTTPError as exc:
                        error = f"{type(exc).__name__}: {exc}"
                    log.warning(
                        "%s not posted to %s (attempt %d): %s",
                        what,
                        hook.url.host,
                        attempt + 1,
                        error,
                    )
                    await asyncio.sleep(0.5 * 2**attempt)

    async def aclose(self) -> None:
        """Let announcements in flight finish (bounded)."""
        if self._posting:
            await asyncio.wait(self._posting, timeout=TIMEOUT_S)
