"""The key cache never keeps a record read before an invalidation that overtook it."""

from __future__ import annotations

from datetime import UTC, datetime

from pilothouse.identity.auth import KeyCache, KeyRecord
from pilothouse.identity.tokens import KeyKind
from pilothouse.store.engine import Store
from pilothouse.store.notify import ALL, Invalidations


def _record(key_id: str = "key_1", user_id: str = "usr_1") -> KeyRecord:
    return KeyRecord(
        id=key_id,
        org_id="org_1",
        kind=KeyKind.USER,
        prefix="phk_x",
        secret_hash="0" * 64,
        user_id=user_id,
        role=None,
        user_disabled=False,
        is_root_org=False,
        scopes=frozenset(),
        allowed_labels=frozenset(),
        session_id=None,
        session_active=False,
        session_labels={},
        session=None,
        expires_at=None,
        revoked_at=datetime.now(UTC),
    )


def _cache(tmp_path_str: str) -> tuple[KeyCache, Invalidations]:
    invalidations = Invalidations(Store(f"sqlite+aiosqlite:///{tmp_path_str}/x.db"))
    return KeyCache(ttl=60, invalidations=invalidations), invalidations


def test_a_fill_that_started_before_an_invalidation_is_discarded(tmp_path: object) -> None:
    cache, invalidations = _cache(str(tmp_path))
    generation = cache.generation
    invalidations._deliver("key", "key_1")  # arrives while the read was in flight
    cache.put("lookup", _record(), generation)
    assert cache.get("lookup") is None


def test_invalidations_drop_matching_entries_only(tmp_path: object) -> None:
    cache, invalidations = _cache(str(tmp_path))
    cache.put("a", _record("key_a", "usr_a"), cache.generation)
    cache.put("b", _record("key_b", "usr_b"), cache.generation)
    invalidations._deliver("user", "usr_a")
    assert cache.get("a") is None
    assert cache.get("b") is not None
    invalidations._deliver(ALL, ALL)
    assert cache.get("b") is None
