"""Time: always UTC and timezone-aware; a Clock object so tests can move time."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Protocol


class Clock(Protocol):
    """Something that tells the current UTC time."""

    def now(self) -> datetime:
        """The current time, UTC, timezone-aware."""
        ...


class SystemClock:
    """The real clock."""

    def now(self) -> datetime:
        """The current time, UTC, timezone-aware."""
        return datetime.now(UTC)


def to_micros(moment: datetime) -> int:
    """Microseconds since the epoch: an exact, engine-neutral timestamp."""
    delta = moment.astimezone(UTC) - datetime(1970, 1, 1, tzinfo=UTC)
    return (delta.days * 86_400 + delta.seconds) * 1_000_000 + delta.microseconds


def from_micros(micros: int) -> datetime:
    """The UTC datetime for microseconds since the epoch."""
    seconds, rest = divmod(micros, 1_000_000)
    return datetime.fromtimestamp(seconds, UTC).replace(microsecond=rest)
