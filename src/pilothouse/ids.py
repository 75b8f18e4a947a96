"""Sortable, prefixed identifiers (``ses_01JD...``): a ULID behind a short kind prefix."""

from __future__ import annotations

from ulid import ULID


def new_id(prefix: str) -> str:
    """A new id for an object of the kind ``prefix``."""
    return f"{prefix}_{ULID()}"
