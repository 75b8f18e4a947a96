"""Routing: which deployments serve a requested model, in which order, and which to skip.

Each alias names a strategy that orders its deployments for one call:

- ``priority``: lowest ``priority`` first, the rest as fallbacks in that order;
- ``weighted``: a random order drawn by ``weight`` (a deployment of weight 3 leads three times as
  often as one of weight 1; weight 0 only ever serves as a fallback);
- ``lowest-cost``: cheapest input plus output price first;
- ``lowest-latency``: lowest moving average of time to first byte first; a deployment with no
  sample yet goes first, so every deployment gets measured.

Health is kept per deployment, per process: consecutive failures cool a deployment down for a
while (a circuit breaker), and an upstream's ``Retry-After`` cools it down for as long as it
asks. A cooling deployment is left out of the order until its time is up; its next call is then
a probe that either closes the breaker or cools it down again.
"""

from __future__ import annotations

import random
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from pilothouse.gateway.config import DeploymentConfig, GatewayConfig, ModelConfig
from pilothouse.gateway.prices import PriceBook


@dataclass(slots=True)
class Health:
    """What one process has seen of one deployment."""

    failures: int = 0
    cooling_until: float = 0.0
    latency_ms: float | None = None


class Router:
    """Model aliases (exact names first, then globs in order) to ordered, healthy deployments."""

    def __init__(
        self,
        models: Sequence[ModelConfig],
        config: GatewayConfig | None = None,
        prices: PriceBook | None = None,
        *,
        monotonic: Callable[[], float] = time.monotonic,
        rng: random.Random | None = None,
    ) -> None:
        self._exact = {m.alias: m for m in models if not _is_glob(m.alias)}
        self._globs = [m for m in models if _is_glob(m.alias)]
        self._config = config or GatewayConfig()
        self._prices = prices
        self._now = monotonic
        self._rng = rng or random.Random()
        self._health: dict[str, Health] = {}

    @property
    def config(self) -> GatewayConfig:
        """The gateway-wide retry and breaker settings."""
        return self._config

    def resolve(self, requested: str) -> ModelConfig | None:
        """The alias that serves ``requested``, if any."""
        found = self._exact.get(requested)
        if found is not None:
            return found
        return next((m for m in self._globs if m.matches(requested)), None)

    def models(self) -> list[ModelConfig]:
        """Every alias, exact and glob, in configuration order."""
        return [*self._exact.values(), *self._globs]

    def order(self, model: ModelConfig) -> list[DeploymentConfig]:
        """The deployments of ``model`` in the order its strategy tries them, cooling ones out."""
        now = self._now()
        ready = [d for d in model.deployments if self.health(d).cooling_until <= now]
        if model.strategy == "weighted":
            return self._weighted(ready)
        if model.strategy == "lowest-cost":
            return sorted(ready, key=self._cost_key)
        if model.strategy == "lowest-latency":
            return sorted(ready, key=self._latency_key)
        return sorted(ready, key=lambda d: d.priority)

    def cooling(self, model: ModelConfig) -> float:
        """Seconds until the first cooling deployment of ``model`` is tried again (0 if none)."""
        now = self._now()
        waits = [self.health(d).cooling_until - now for d in model.deployments]
        return max(0.0, min(waits))

    def health(self, deployment: DeploymentConfig) -> Health:
        """This process's view of ``deployment``."""
        found = self._health.get(deployment.id)
        if found is None:
            found = self._health[deployment.id] = Health()
        return found

    def succeeded(self, deployment: DeploymentConfig, ttfb_ms: float) -> None:
        """A call to ``deployment`` answered: close its breaker, update its latency average."""
        health = self.health(deployment)
        health.failures = 0
        health.cooling_until = 0.0
        alpha = self._config.latency_smoothing
        if health.latency_ms is None:
            health.latency_ms = ttfb_ms
        else:
            health.latency_ms += alpha * (ttfb_ms - health.latency_ms)

    def failed(self, deployment: DeploymentConfig, retry_after: float | None = None) -> None:
        """A call to ``deployment`` failed in a way worth retrying: count it, maybe cool it down.

        A ``Retry-After`` longer than the longest wait the gateway sits out cools the deployment
        for that long at once; otherwise it cools after ``breaker_failures`` failures in a row.
        """
        health = self.health(deployment)
        health.failures += 1
        now = self._now()
        if retry_after is not None and retry_after > self._config.max_retry_after_seconds:
            health.cooling_until = max(health.cooling_until, now + retry_after)
        elif health.failures >= self._config.breaker_failures:
            health.cooling_until = now + self._config.breaker_cooldown_seconds

    def _weighted(self, ready: list[DeploymentConfig]) -> list[DeploymentConfig]:
        # Efraimidis-Spirakis: sorting by u ** (1 / w) draws an order without replacement.
        positive = [d for d in ready if d.weight > 0]
        keyed = sorted(positive, key=lambda d: self._rng.random() ** (1.0 / d.weight), reverse=True)
        return keyed + [d for d in ready if d.weight == 0]

    def _cost_key(self, deployment: DeploymentConfig) -> tuple[int, int]:
        price = self._prices.for_deployment(deployment) if self._prices else None
        if price is None:
            return (1, 0)  # unpriced deployments last
        return (0, price.input + price.output)

    def _latency_key(self, deployment: DeploymentConfig) -> float:
        latency = self.health(deployment).latency_ms
        return -1.0 if latency is None else latency


def _is_glob(alias: str) -> bool:
    return any(c in alias for c in "*?[")
