"""Sortable, prefixed identifiers (``ses_01JD...``): a ULID behind a short kind prefix."""

from __future__ import annotations

import re

from ulid import ULID

ID_PATTERN = r"^[a-z]{2,5}_[0-9A-HJKMNP-TV-Z]{26}$"
_ID_RE = re.compile(ID_PATTERN)


def new_id(prefix: str) -> str:
    """A new id for an object of the kind ``prefix``."""
    return f"{prefix}_{ULID()}"


def is_id(value: str, prefix: str) -> bool:
    """Whether ``value`` is a well-formed id of kind ``prefix``."""
    return value.startswith(prefix + "_") and _ID_RE.match(value) is not None
