"""The OpenAI provider: chat completions, responses and embeddings at api.openai.com."""

from __future__ import annotations

from pilothouse.gateway.providers.base import WireFormat
from pilothouse.gateway.providers.http import HttpProvider

OPENAI_PATHS = {
    WireFormat.OPENAI_CHAT: "/chat/completions",
    WireFormat.OPENAI_RESPONSES: "/responses",
    WireFormat.OPENAI_EMBEDDINGS: "/embeddings",
}


class OpenAIProvider(HttpProvider):
    """OpenAI's API: ``Authorization: Bearer``, base URL up to and including ``/v1``."""

    name = "openai"
    family = "openai"
    default_base_url = "https://api.openai.com/v1"
    paths = OPENAI_PATHS
