"""Gateway configuration: model aliases and the deployments that serve them.

Plain pydantic models with no other Pilothouse imports, so ``settings`` can hold them.
"""

from __future__ import annotations

import fnmatch
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, SecretStr

ProviderName = Literal["demo", "openai", "anthropic", "openai-compatible"]


class PriceOverride(BaseModel):
    """A deployment's own prices, in micro-dollars per million tokens."""

    model_config = ConfigDict(extra="forbid")

    input: int = Field(ge=0)
    output: int = Field(ge=0)
    cache_read: int | None = Field(None, ge=0)
    cache_write: int | None = Field(None, ge=0)


class DeploymentConfig(BaseModel):
    """One upstream that can serve an alias."""

    model_config = ConfigDict(extra="forbid")

    name: str | None = Field(None, description="Defaults to provider/model.")
    provider: ProviderName
    model: str = Field(description="The model name the upstream knows.")
    base_url: str | None = None
    api_key: SecretStr | None = None
    weight: int = Field(1, ge=0)
    priority: int = Field(0, description="Lower is tried first with the priority strategy.")
    price: PriceOverride | None = None

    @property
    def id(self) -> str:
        """The name usage rows record."""
        return self.name or f"{self.provider}/{self.model}"


class ModelConfig(BaseModel):
    """An alias (exact, or a glob such as ``claude-*``) and its deployments."""

    model_config = ConfigDict(extra="forbid")

    alias: str
    deployments: list[DeploymentConfig] = Field(min_length=1)
    strategy: Literal["priority", "weighted", "lowest-cost", "lowest-latency"] = "priority"

    def matches(self, requested: str) -> bool:
        """Whether a requested model name is served by this alias."""
        if any(c in self.alias for c in "*?["):
            return fnmatch.fnmatchcase(requested, self.alias)
        return requested == self.alias


def demo_models() -> list[ModelConfig]:
    """The default catalogue: the demo provider behind names real clients send."""
    demo = DeploymentConfig(provider="demo", model="demo-1")
    return [
        ModelConfig(alias="demo", deployments=[demo]),
        ModelConfig(alias="claude-*", deployments=[demo]),
        ModelConfig(alias="gpt-*", deployments=[demo]),
    ]
