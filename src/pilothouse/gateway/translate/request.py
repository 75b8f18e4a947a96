"""Client request bodies in the upstream's wire format."""

from __future__ import annotations

from typing import Any

from pilothouse.gateway.providers.base import WireFormat
from pilothouse.gateway.translate.anthropic_to_chat import anthropic_to_chat
from pilothouse.gateway.translate.chat_to_anthropic import DEFAULT_MAX_TOKENS, chat_to_anthropic
from pilothouse.gateway.translate.errors import TranslationError
from pilothouse.gateway.translate.responses_to_chat import responses_to_chat

_CHAT = WireFormat.OPENAI_CHAT
_MESSAGES = WireFormat.ANTHROPIC_MESSAGES
_RESPONSES = WireFormat.OPENAI_RESPONSES


def translate_request(
    body: dict[str, Any],
    source: WireFormat,
    target: WireFormat,
    *,
    default_max_tokens: int = DEFAULT_MAX_TOKENS,
) -> dict[str, Any]:
    """A client request body in ``source`` as an upstream body in ``target``.

    ``model`` is kept as given; ``stream`` is kept, and a streamed chat request asks for usage.
    ``default_max_tokens`` fills Anthropic's required ``max_tokens`` when the client set none.
    Raises ``TranslationError`` naming the field that cannot be expressed.
    """
    if source is target:
        return body
    if source is _MESSAGES and target is _CHAT:
        return anthropic_to_chat(body)
    if source is _CHAT and target is _MESSAGES:
        return chat_to_anthropic(body, default_max_tokens=default_max_tokens)
    if source is _RESPONSES and target is _CHAT:
        return responses_to_chat(body)
    if source is _RESPONSES and target is _MESSAGES:
        return chat_to_anthropic(responses_to_chat(body), default_max_tokens=default_max_tokens)
    raise TranslationError(f"a {source.value} request cannot be sent as {target.value}")
