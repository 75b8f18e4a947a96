"""Which models a caller may use: the ``allowed`` selectors of each alias.

An alias without ``allowed`` is open to every key. Otherwise one matching selector admits the
caller: its organization, its session (by id), its session's team (by id or name), project or
repository, its key (by id or prefix), its user, or one of its labels; ``*`` admits everyone
(secret grants use the same selectors). Team names are read from the store and kept for a short
while; a store that cannot be read refuses (fail closed).
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence

from sqlalchemy import select

from pilothouse.gateway.config import ModelConfig
from pilothouse.identity.principal import Principal
from pilothouse.identity.tables import teams
from pilothouse.store.engine import Store


class ModelAccess:
    """Decides whether a principal may call a model alias."""

    def __init__(
        self,
        store: Store,
        ttl_seconds: float,
        *,
        monotonic: Callable[[], float] = time.monotonic,
    ) -> None:
        self._store = store
        self._ttl = ttl_seconds
        self._now = monotonic
        self._team_names: dict[str, tuple[str | None, float]] = {}

    async def allows(self, model: ModelConfig, principal: Principal) -> bool:
        """Whether ``principal`` may use ``model``."""
        if model.allowed is None:
            return True
        return await self.admits(model.allowed, principal)

    async def admits(self, selectors: Sequence[str], principal: Principal) -> bool:
        """Whether one of ``selectors`` (the ``allowed`` syntax, or ``*``) matches
        ``principal`` (secret grants use it too)."""
        team_name: str | None = None
        for selector in selectors:
            if selector == "*":
                return True
            kind, _, value = selector.partition(":")
            if kind == "team" and team_name is None and _team_id(principal):
                team_name = await self._team_name(_team_id(principal) or "")
            if _matches(kind, value, principal, team_name):
                return True
        return False

    async def _team_name(self, team_id: str) -> str | None:
        cached = self._team_names.get(team_id)
        now = self._now()
        if cached is not None and cached[1] > now:
            return cached[0]
        async with self._store.read() as conn:
            name = await conn.scalar(select(teams.c.name).where(teams.c.id == team_id))
        self._team_names[team_id] = (name, now + self._ttl)
        return name


def _team_id(principal: Principal) -> str | None:
    return principal.session.team_id if principal.session else None


def _matches(kind: str, value: str, principal: Principal, team_name: str | None) -> bool:
    session = principal.session
    if kind == "org":
        return principal.org_id == value
    if kind == "team":
        return value in (_team_id(principal), team_name)
    if kind == "project":
        return session is not None and session.project == value
    if kind == "repo":
        return session is not None and session.repository == value
    if kind == "session":
        return principal.session_id == value
    if kind == "key":
        return value in (principal.key_id, principal.key_prefix)
    if kind == "user":
        user = (session.user_id if session else None) or principal.user_id
        return user == value
    if kind == "label":
        name, _, wanted = value.partition("=")
        return principal.labels.get(name) == wanted
    return False
