"""Routing: which deployments serve a requested model, in which order."""

from __future__ import annotations

from collections.abc import Sequence

from pilothouse.gateway.config import DeploymentConfig, ModelConfig


class Router:
    """Model aliases (exact names first, then globs in order) to ordered deployments."""

    def __init__(self, models: Sequence[ModelConfig]) -> None:
        self._exact = {m.alias: m for m in models if not _is_glob(m.alias)}
        self._globs = [m for m in models if _is_glob(m.alias)]

    def resolve(self, requested: str) -> ModelConfig | None:
        """The alias that serves ``requested``, if any."""
        found = self._exact.get(requested)
        if found is not None:
            return found
        return next((m for m in self._globs if m.matches(requested)), None)

    def aliases(self) -> list[str]:
        """Every alias, exact and glob, in configuration order."""
        return [*self._exact, *(m.alias for m in self._globs)]

    def order(self, model: ModelConfig) -> list[DeploymentConfig]:
        """Deployments in the order to try them (priority: lowest first)."""
        return sorted(model.deployments, key=lambda d: d.priority)


def _is_glob(alias: str) -> bool:
    return any(c in alias for c in "*?[")
