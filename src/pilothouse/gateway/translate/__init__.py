"""Cross-format translation: pure functions between OpenAI chat, OpenAI Responses and Anthropic.

Client wires are OpenAI chat, Anthropic Messages and OpenAI Responses; upstream wires are OpenAI
chat and Anthropic Messages. Requests go client -> upstream (``translate_request``); replies,
errors and streams come back (``translate_reply``, ``translate_error``, ``StreamTranslator``).
A Responses client's namespaced and freeform tools are flattened on the way up; pass the
``tool_map`` of the client's request to the reply and stream side to restore them.

Nothing here does I/O; a ``TranslationError`` names the field that cannot be expressed.
"""

from pilothouse.gateway.translate.errors import TranslationError, translate_error
from pilothouse.gateway.translate.reply import translate_reply
from pilothouse.gateway.translate.request import translate_request
from pilothouse.gateway.translate.stream import StreamTranslator
from pilothouse.gateway.translate.tools import ClientTool, ToolMap, tool_map

__all__ = [
    "ClientTool",
    "StreamTranslator",
    "ToolMap",
    "TranslationError",
    "tool_map",
    "translate_error",
    "translate_reply",
    "translate_request",
]
