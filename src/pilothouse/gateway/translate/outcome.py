"""How a call ended, in each wire's words: stop reasons, usage objects and fresh ids.

Stop reasons go through one neutral vocabulary (``Stop``) so that every pair of wires needs
only a reader and a writer per wire. Usage goes through ``pilothouse.gateway.usage.Usage``,
whose ``input_tokens`` excludes cache reads and writes: OpenAI counts both inside
``prompt_tokens`` (only reads are reported as ``cached_tokens``), Anthropic reports each apart.
"""

from __future__ import annotations

from typing import Any, Literal

from ulid import ULID

from pilothouse.gateway.usage import Usage
from pilothouse.gateway.wire import anthropic_usage, openai_usage

Stop = Literal["end", "length", "tool", "filter", "stop_sequence"]

_FROM_CHAT: dict[str, Stop] = {
    "stop": "end",
    "length": "length",
    "tool_calls": "tool",
    "function_call": "tool",
    "content_filter": "filter",
}
_FROM_ANTHROPIC: dict[str, Stop] = {
    "end_turn": "end",
    "max_tokens": "length",
    "tool_use": "tool",
    "stop_sequence": "stop_sequence",
    "refusal": "filter",
    "pause_turn": "end",
    "model_context_window_exceeded": "length",
}
_TO_CHAT: dict[Stop, str] = {
    "end": "stop",
    "stop_sequence": "stop",
    "length": "length",
    "tool": "tool_calls",
    "filter": "content_filter",
}
_TO_ANTHROPIC: dict[Stop, str] = {
    "end": "end_turn",
    "stop_sequence": "stop_sequence",
    "length": "max_tokens",
    "tool": "tool_use",
    "filter": "refusal",
}


def stop_from_chat(reason: Any) -> Stop:
    """The neutral stop reason of an OpenAI ``finish_reason``."""
    return _FROM_CHAT.get(reason, "end") if isinstance(reason, str) else "end"


def stop_from_anthropic(reason: Any) -> Stop:
    """The neutral stop reason of an Anthropic ``stop_reason``."""
    return _FROM_ANTHROPIC.get(reason, "end") if isinstance(reason, str) else "end"


def settled_stop(stop: Stop | None, made_tool_calls: bool) -> Stop:
    """The stop reason to report: a turn that called tools ended to run them."""
    if stop is None or (stop == "end" and made_tool_calls):
        return "tool" if made_tool_calls else "end"
    return stop


def chat_finish_reason(stop: Stop) -> str:
    """An OpenAI chat ``finish_reason``."""
    return _TO_CHAT[stop]


def anthropic_stop_reason(stop: Stop) -> str:
    """An Anthropic ``stop_reason``."""
    return _TO_ANTHROPIC[stop]


def responses_status(stop: Stop) -> tuple[str, dict[str, str] | None]:
    """A Responses ``status`` and ``incomplete_details`` for a finished response."""
    if stop == "length":
        return "incomplete", {"reason": "max_output_tokens"}
    if stop == "filter":
        return "incomplete", {"reason": "content_filter"}
    return "completed", None


def usage_from_chat(raw: Any, into: Usage) -> None:
    """Replace ``into`` with the usage of an OpenAI ``usage`` object (see ``openai_usage``)."""
    seen = openai_usage(raw)
    into.input_tokens = seen.input_tokens
    into.output_tokens = seen.output_tokens
    into.cache_read_tokens = seen.cache_read_tokens
    into.cache_write_tokens = seen.cache_write_tokens
    into.reasoning_tokens = seen.reasoning_tokens


def usage_from_anthropic(raw: Any, into: Usage) -> None:
    """Update ``into`` from an Anthropic ``usage`` object (fields present override)."""
    anthropic_usage(raw, into)
    details = raw.get("output_tokens_details") if isinstance(raw, dict) else None
    if isinstance(details, dict):
        thinking = details.get("thinking_tokens")
        if isinstance(thinking, int) and thinking >= 0:
            into.reasoning_tokens = thinking


def _prompt_tokens(usage: Usage) -> int:
    return usage.input_tokens + usage.cache_read_tokens + usage.cache_write_tokens


def chat_usage(usage: Usage) -> dict[str, Any]:
    """An OpenAI chat ``usage`` object (prompt tokens include cache reads and writes)."""
    prompt = _prompt_tokens(usage)
    return {
        "prompt_tokens": prompt,
        "completion_tokens": usage.output_tokens,
        "total_tokens": prompt + usage.output_tokens,
        "prompt_tokens_details": {
            "cached_tokens": usage.cache_read_tokens,
            "cache_write_tokens": usage.cache_write_tokens,
        },
        "completion_tokens_details": {"reasoning_tokens": usage.reasoning_tokens},
    }


def anthropic_usage_json(usage: Usage) -> dict[str, Any]:
    """An Anthropic ``usage`` object (input tokens exclude cache reads and writes)."""
    return {
        "input_tokens": usage.input_tokens,
        "output_tokens": usage.output_tokens,
        "cache_creation_input_tokens": usage.cache_write_tokens,
        "cache_read_input_tokens": usage.cache_read_tokens,
    }


def responses_usage(usage: Usage) -> dict[str, Any]:
    """A Responses ``usage`` object (input tokens include cache reads and writes)."""
    prompt = _prompt_tokens(usage)
    return {
        "input_tokens": prompt,
        "input_tokens_details": {
            "cached_tokens": usage.cache_read_tokens,
            "cache_write_tokens": usage.cache_write_tokens,
        },
        "output_tokens": usage.output_tokens,
        "output_tokens_details": {"reasoning_tokens": usage.reasoning_tokens},
        "total_tokens": prompt + usage.output_tokens,
    }


def fresh_id(prefix: str) -> str:
    """A new sortable id with a wire's own prefix (``chatcmpl-``, ``msg_``, ``resp_``...)."""
    return f"{prefix}{ULID()}"
