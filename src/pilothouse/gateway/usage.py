"""Token usage of one call, by kind."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any


@dataclass(slots=True)
class Usage:
    """Tokens by kind; ``input_tokens`` excludes cache reads and writes."""

    input_tokens: int = 0
    output_tokens: int = 0
    cache_read_tokens: int = 0
    cache_write_tokens: int = 0
    reasoning_tokens: int = 0


def estimate_tokens(value: Any) -> int:
    """A rough token count (4 characters a token) of every string inside ``value``.

    Used where no tokenizer's count exists: the demo provider, count_tokens for upstreams that
    cannot count, and calls that ended before their usage arrived (rows marked estimated).
    """
    if isinstance(value, str):
        return (len(value) + 3) // 4
    if isinstance(value, dict):
        return sum(estimate_tokens(v) for v in value.values())
    if isinstance(value, list):
        return sum(estimate_tokens(v) for v in value)
    return 0
