"""Field types for request bodies and parameters; each refuses what the store cannot hold."""

from __future__ import annotations

from typing import Annotated, Generic, TypeVar

from pydantic import AfterValidator, BaseModel, ConfigDict, Field, StringConstraints

from pilothouse.identity.labels import LABEL_KEY_PATTERN, LABEL_VALUE_MAX, MAX_LABELS


def _no_nul(value: str) -> str:
    # PostgreSQL text cannot hold NUL; refuse it on every engine so behaviour is the same.
    if "\x00" in value:
        raise ValueError("must not contain NUL characters")
    return value


Text = Annotated[str, StringConstraints(max_length=2000), AfterValidator(_no_nul)]
Name = Annotated[
    str,
    StringConstraints(min_length=1, max_length=200, strip_whitespace=True),
    AfterValidator(_no_nul),
]
ShortText = Annotated[str, StringConstraints(max_length=200), AfterValidator(_no_nul)]
Email = Annotated[
    str,
    StringConstraints(max_length=320, pattern=r"^[^@\s\x00]+@[^@\s\x00]+$"),
]
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
