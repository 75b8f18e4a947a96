"""The request context every domain function takes: who is acting, in which request."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from sqlalchemy.ext.asyncio import AsyncConnection

from pilothouse.audit import chain
from pilothouse.clock import Clock
from pilothouse.identity.principal import Principal


@dataclass(frozen=True, slots=True)
class RequestContext:
    """An authenticated principal acting in one request."""

    principal: Principal
    request_id: str
    clock: Clock

    @property
    def org_id(self) -> str:
        """The organization the principal belongs to; every query is confined to it."""
        return self.principal.org_id

    async def audit(
        self,
        conn: AsyncConnection,
        action: str,
        *,
        target_type: str | None = None,
        target_id: str | None = None,
        details: Mapping[str, Any] | None = None,
        outcome: str = "success",
        org_id: str | None = None,
    ) -> str:
        """Append an audit event for this principal inside the caller's transaction."""
        return await chain.append(
            conn,
            self.clock,
            org_id=org_id or self.org_id,
            actor=chain.Actor(self.principal.actor_kind, self.principal.actor_id),
            action=action,
            outcome=outcome,
            target_type=target_type,
            target_id=target_id,
            request_id=self.request_id,
            details=details,
        )
