"""Servers that imitate OpenAI's API: vLLM, Ollama, OpenRouter, LiteLLM, Azure OpenAI...

``base_url`` is required. With ``api_version`` set (Azure style) every URL gets
``?api-version=...`` and the key travels in an ``api-key`` header instead of ``Authorization``.
``/responses`` is only used when the deployment says the server has it (``responses_api``).
"""

from __future__ import annotations

from pilothouse.gateway.config import DeploymentConfig
from pilothouse.gateway.providers.base import WireFormat
from pilothouse.gateway.providers.http import HttpProvider
from pilothouse.gateway.providers.openai import OPENAI_PATHS


class OpenAICompatibleProvider(HttpProvider):
    """Any server with OpenAI's API at ``base_url``; the key is optional."""

    name = "openai-compatible"
    family = "openai"
    paths = OPENAI_PATHS

    def speaks(self, wire: WireFormat, deployment: DeploymentConfig) -> bool:
        """Chat and embeddings; responses only if the deployment has ``responses_api``."""
        if not deployment.base_url or wire not in self.paths:
            return False
        return wire is not WireFormat.OPENAI_RESPONSES or deployment.responses_api

    def auth_headers(self, key: str, deployment: DeploymentConfig) -> dict[str, str]:
        """``api-key`` for Azure-style servers, ``Authorization: Bearer`` otherwise."""
        if deployment.api_version:
            return {"api-key": key}
        return {"authorization": f"Bearer {key}"}

    def query(self, deployment: DeploymentConfig) -> dict[str, str]:
        """``api-version`` for Azure-style servers."""
        return {"api-version": deployment.api_version} if deployment.api_version else {}
