"""The Anthropic provider: messages and token counting at api.anthropic.com."""

from __future__ import annotations

from pilothouse.gateway.config import DeploymentConfig
from pilothouse.gateway.providers.base import WireFormat
from pilothouse.gateway.providers.http import HttpProvider

ANTHROPIC_VERSION = "2023-06-01"


class AnthropicProvider(HttpProvider):
    """Anthropic's API: ``x-api-key``, base URL the host without ``/v1``."""

    name = "anthropic"
    family = "anthropic"
    default_base_url = "https://api.anthropic.com"
    paths = {
        WireFormat.ANTHROPIC_MESSAGES: "/v1/messages",
        WireFormat.ANTHROPIC_COUNT_TOKENS: "/v1/messages/count_tokens",
    }

    def auth_headers(self, key: str, deployment: DeploymentConfig) -> dict[str, str]:
        """The key goes in ``x-api-key``."""
        return {"x-api-key": key}

    def default_headers(self, deployment: DeploymentConfig) -> dict[str, str]:
        """An API version, for clients that send none."""
        return {"anthropic-version": ANTHROPIC_VERSION}
