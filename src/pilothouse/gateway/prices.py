"""Prices: a versioned data file, per-deployment overrides, and exact integer cost.

Prices are micro-dollars per million tokens, so one token at price ``p`` costs exactly ``p``
pico-dollars: cost is an integer number of pico-dollars, never a float.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from importlib import resources

from pilothouse.gateway.config import DeploymentConfig, PriceOverride
from pilothouse.gateway.usage import Usage

PICOS_PER_DOLLAR = 10**12
# A dated snapshot (claude-haiku-4-5-20251001, gpt-4o-2024-08-06) costs what its model costs.
_SNAPSHOT = re.compile(r"-(\d{8}|\d{4}-\d{2}-\d{2})$")


@dataclass(frozen=True, slots=True)
class Price:
    """Micro-dollars per million tokens of each kind."""

    input: int
    output: int
    cache_read: int
    cache_write: int
    version: str

    def cost_picos(self, usage: Usage) -> int:
        """The exact cost of ``usage`` in pico-dollars."""
        return (
            usage.input_tokens * self.input
            + usage.output_tokens * self.output
            + usage.cache_read_tokens * self.cache_read
            + usage.cache_write_tokens * self.cache_write
        )


class PriceBook:
    """The shipped price table, looked up by upstream model name, and the default price."""

    def __init__(
        self,
        table: dict[str, dict[str, int]],
        version: str,
        default: PriceOverride | None = None,
    ) -> None:
        self._table = table
        self.version = version
        self._default = default

    @classmethod
    def shipped(cls, default: PriceOverride | None = None) -> PriceBook:
        """The price file that ships with Pilothouse, and an optional default price."""
        data = json.loads(resources.files("pilothouse.gateway").joinpath("prices.json").read_text())
        return cls(data["models"], data["version"], default)

    def for_deployment(self, deployment: DeploymentConfig) -> Price | None:
        """The deployment's override, else the table's price for its model (or its dated
        snapshot's model), else the configured default; None if the model is unpriced."""
        if deployment.price is not None:
            return _override(deployment.price, f"override:{deployment.id}")
        entry = self._table.get(deployment.model)
        if entry is None:
            entry = self._table.get(_SNAPSHOT.sub("", deployment.model))
        if entry is None:
            return _override(self._default, "default") if self._default is not None else None
        return Price(
            entry["input"],
            entry["output"],
            entry.get("cache_read", entry["input"]),
            entry.get("cache_write", entry["input"]),
            self.version,
        )


def _override(p: PriceOverride, version: str) -> Price:
    return Price(
        p.input,
        p.output,
        p.cache_read if p.cache_read is not None else p.input,
        p.cache_write if p.cache_write is not None else p.input,
        version,
    )
