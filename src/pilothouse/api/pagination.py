"""Cursor pagination over sortable ids, newest first."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, TypeVar

from sqlalchemy import Column, Select

R = TypeVar("R")


def page_query(query: Select[Any], id_column: Column[str], cursor: str | None, limit: int) -> Any:
    """Order newest first, start after ``cursor``, fetch one extra row to know if more follow."""
    if cursor:
        query = query.where(id_column < cursor)
    return query.order_by(id_column.desc()).limit(limit + 1)


def split_page(rows: Sequence[R], limit: int, cursor_of: Any) -> tuple[list[R], str | None]:
    """Drop the extra row and name the cursor of the next page, if there is one."""
    if len(rows) > limit:
        kept = list(rows[:limit])
        return kept, str(cursor_of(kept[-1]))
    return list(rows), None
