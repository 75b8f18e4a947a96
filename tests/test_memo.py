"""Values kept by an object's identity: equal objects do not share, and the limit holds."""

from __future__ import annotations

from pilothouse.memo import IdentityMemo


def test_a_value_is_kept_for_the_very_object_only() -> None:
    memo: IdentityMemo[str] = IdentityMemo()
    first, twin = ["state"], ["state"]  # equal, unhashable, not the same object
    assert memo.get(first) is None
    assert memo.put(first, "worked out") == "worked out"
    assert memo.get(first) == "worked out"
    assert memo.get(twin) is None
    memo.clear()
    assert memo.get(first) is None


def test_at_its_limit_the_memo_starts_over() -> None:
    memo: IdentityMemo[int] = IdentityMemo(limit=2)
    objects = [object() for _ in range(3)]
    for n, obj in enumerate(objects):
        memo.put(obj, n)
    assert [memo.get(obj) for obj in objects] == [None, None, 2]
