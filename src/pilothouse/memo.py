"""Values worked out once per object, for the hot path: kept by the object's identity.

An object that stands for a state (a key record, a principal made from it, a model's
configuration, the tuple of an organization's budgets) is replaced, never changed, when that
state changes; what was worked out from it can be kept under its identity and is stale exactly
when the object is no longer the one in use. Holding the object keeps its ``id`` from being
reused. Unlike ``functools.lru_cache`` the object need not be hashable, and a lookup costs a
dict ``get`` and an ``is``.
"""

from __future__ import annotations

from typing import Generic, TypeVar

V = TypeVar("V")
KEPT_MAX = 10_000


class IdentityMemo(Generic[V]):
    """Values by object identity, at most ``limit`` of them (all are dropped at the limit)."""

    def __init__(self, limit: int = KEPT_MAX) -> None:
        self._limit = limit
        self._kept: dict[int, tuple[object, V]] = {}

    def get(self, obj: object) -> V | None:
        """What was kept for ``obj``, or None."""
        found = self._kept.get(id(obj))
        return found[1] if found is not None and found[0] is obj else None

    def put(self, obj: object, value: V) -> V:
        """Keep ``value`` for ``obj``; return it."""
        if len(self._kept) >= self._limit:
            self._kept.clear()
        self._kept[id(obj)] = (obj, value)
        return value

    def clear(self) -> None:
        """Drop everything kept."""
        self._kept.clear()
