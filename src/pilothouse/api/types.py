"""Field types for request bodies and parameters; each refuses what the store cannot hold."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Annotated, Generic, TypeVar

from pydantic import AfterValidator, AwareDatetime, BaseModel, ConfigDict, Field, StringConstraints

from pilothouse.identity.labels import LABEL_KEY_PATTERN, LABEL_VALUE_MAX, MAX_LABELS


def _no_nul(value: str) -> str:
    # PostgreSQL text cannot hold NUL; refuse it on every engine so behaviour is the same.
    if "\x00" in value:
        raise ValueError("must not contain NUL characters")
    return value


EMAIL_MAX = 320


def _fits_lower_cased(value: str) -> str:
    # Emails are stored lower-cased, and a few characters grow when lower-cased ("İ" -> "i̇").
    if len(value.lower()) > EMAIL_MAX:
        raise ValueError(f"must be at most {EMAIL_MAX} characters once lower-cased")
    return value


def _utc(value: datetime) -> datetime:
    # Stored times are UTC; a moment with no UTC equivalent (year 1 at +14:00) cannot be compared.
    try:
        return value.astimezone(UTC)
    except OverflowError:
        raise ValueError("is outside the range of times that can be expressed in UTC") from None


Text = Annotated[str, StringConstraints(max_length=2000), AfterValidator(_no_nul)]
Password = Annotated[str, StringConstraints(min_length=1, max_length=1024), AfterValidator(_no_nul)]
Document = Annotated[str, StringConstraints(max_length=1_000_000), AfterValidator(_no_nul)]
"""A whole document in a body (a policy's YAML)."""
Content = Annotated[str, StringConstraints(max_length=2_000_000), AfterValidator(_no_nul)]
"""Content an agent read (a tool's result, a page), as it is scanned."""
ActionText = Annotated[
    str, StringConstraints(min_length=1, max_length=100_000), AfterValidator(_no_nul)
]
"""A command line, path or URL an agent is about to use."""
Reference = Annotated[str, StringConstraints(max_length=1000), AfterValidator(_no_nul)]
"""Where an external value lives: a variable name, a path, a Vault path and field."""
Selector = Annotated[str, StringConstraints(max_length=300), AfterValidator(_no_nul)]
"""Who: ``*`` or ``<kind>:<value>`` (team:payments, repo:acme/api, label:env=ci, ...)."""
Name = Annotated[
    str,
    StringConstraints(min_length=1, max_length=200, strip_whitespace=True),
    AfterValidator(_no_nul),
]
ShortText = Annotated[str, StringConstraints(max_length=200), AfterValidator(_no_nul)]
Email = Annotated[
    str,
    StringConstraints(max_length=EMAIL_MAX, pattern=r"^[^@\s\x00]+@[^@\s\x00]+$"),
    AfterValidator(_fits_lower_cased),
]
Repository = Annotated[str, StringConstraints(max_length=400), AfterValidator(_no_nul)]
Moment = Annotated[AwareDatetime, AfterValidator(_utc)]
LabelKey = Annotated[str, StringConstraints(pattern=LABEL_KEY_PATTERN)]
LabelValue = Annotated[
    str, StringConstraints(min_length=1, max_length=LABEL_VALUE_MAX), AfterValidator(_no_nul)
]
Labels = Annotated[dict[LabelKey, LabelValue], Field(max_length=MAX_LABELS)]
NameList = Annotated[list[Name], Field(max_length=50)]

ObjectId = Annotated[str, StringConstraints(min_length=1, max_length=40), AfterValidator(_no_nul)]
Limit = Annotated[int, Field(ge=1, le=500)]
T = TypeVar("T")


class Body(BaseModel):
    """Base of request bodies: unknown fields are an error, not silently ignored."""

    model_config = ConfigDict(extra="forbid")


class Page(BaseModel, Generic[T]):
    """One page of a list, newest first; pass ``next_cursor`` back as ``cursor``."""

    data: list[T]
    next_cursor: str | None = None
