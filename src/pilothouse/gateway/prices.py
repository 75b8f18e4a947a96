"""Prices: a versioned data file, per-deployment overrides, and exact integer cost.

Prices are micro-dollars per million tokens, so one token at price ``p`` costs exactly ``p``
pico-dollars: cost is an integer number of pico-dollars, never a float.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from importlib import resources

from pilothouse.gateway.config import DeploymentConfig
from pilothouse.gateway.usage import Usage

PICOS_PER_DOLLAR = 10**12


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
    """The shipped price table, looked up by upstream model name."""

    def __init__(self, table: dict[str, dict[str, int]], version: str) -> None:
        self._table = table
        self.version = version

    @classmethod
    def shipped(cls) -> PriceBook:
        """The price file that ships with Pilothouse."""
        data = json.loads(resources.files("pilothouse.gateway").joinpath("prices.json").read_text())
        return cls(data["models"], data["version"])

    def for_deployment(self, deployment: DeploymentConfig) -> Price | None:
        """The deployment's override, else the table's price for its model; None if unpriced."""
        if deployment.price is not None:
            p = deployment.price
            return Price(
                p.input,
                p.output,
                p.cache_read if p.cache_read is not None else p.input,
                p.cache_write if p.cache_write is not None else p.input,
                f"override:{deployment.id}",
            )
        entry = self._table.get(deployment.model)
        if entry is None:
            return None
        return Price(
            entry["input"],
            entry["output"],
            entry.get("cache_read", entry["input"]),
            entry.get("cache_write", entry["input"]),
            self.version,
        )
