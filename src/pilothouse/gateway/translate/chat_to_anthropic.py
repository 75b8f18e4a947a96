"""An OpenAI chat request as an Anthropic Messages request.

System and developer messages become ``system``. Tool messages become ``tool_result`` blocks of
one user turn, ahead of any other content of that turn (Anthropic requires it), and turns of the
same role are merged. Anthropic requires ``max_tokens``; the default is ``DEFAULT_MAX_TOKENS``.
"""

from __future__ import annotations

import re
from typing import Any

import orjson

from pilothouse.gateway.translate.errors import TranslationError
from pilothouse.gateway.translate.tools import anthropic_call_id

DEFAULT_MAX_TOKENS = 4096
_DATA_URL = re.compile(r"^data:([^;,]+);base64,(.*)$", re.DOTALL)
_REFUSED = {
    "audio": "audio output cannot be produced by an Anthropic model",
    "functions": "legacy functions are not supported: send tools",
    "function_call": "legacy function_call is not supported: send tool_choice",
}


def chat_to_anthropic(
    body: dict[str, Any], *, default_max_tokens: int = DEFAULT_MAX_TOKENS
) -> dict[str, Any]:
    """An Anthropic Messages request body for an OpenAI chat request body."""
    _refuse(body)
    raw = body.get("messages")
    if not isinstance(raw, list):
        raise TranslationError("messages: must be a list of messages")
    system: list[dict[str, Any]] = []
    turns: list[dict[str, Any]] = []
    for i, message in enumerate(raw):
        where = f"messages[{i}]"
        if not isinstance(message, dict):
            raise TranslationError(f"{where}: must be an object")
        role = message.get("role")
        if role in ("system", "developer"):
            system.extend(_text_blocks(message.get("content"), f"{where}.content"))
        elif role == "user":
            _append(turns, "user", _user_blocks(message.get("content"), f"{where}.content"))
        elif role == "assistant":
            _append(turns, "assistant", _assistant_blocks(message, where))
        elif role == "tool":
            _append(turns, "user", [_tool_result(message, where)])
        else:
            raise TranslationError(f"{where}.role: {role!r} cannot be sent to an Anthropic model")
    out: dict[str, Any] = {"model": body.get("model"), "messages": [_ordered(t) for t in turns]}
    if system:
        out["system"] = system
    _tools(body, out)
    _settings(body, out, default_max_tokens)
    return out


def _refuse(body: dict[str, Any]) -> None:
    n = body.get("n")
    if isinstance(n, int) and n > 1:
        raise TranslationError("n: an Anthropic model answers with one choice; send n=1")
    if body.get("logprobs") or body.get("top_logprobs"):
        raise TranslationError("logprobs: an Anthropic model does not return log probabilities")
    for name, why in _REFUSED.items():
        if body.get(name):
            raise TranslationError(f"{name}: {why}")
    if "audio" in (body.get("modalities") or ()):
        raise TranslationError("modalities: audio output cannot be produced by an Anthropic model")


def _append(turns: list[dict[str, Any]], role: str, blocks: list[dict[str, Any]]) -> None:
    if not blocks:
        return
    if turns and turns[-1]["role"] == role:
        turns[-1]["content"].extend(blocks)
    else:
        turns.append({"role": role, "content": blocks})


def _ordered(turn: dict[str, Any]) -> dict[str, Any]:
    """Tool results first in a user turn, as Anthropic requires."""
    blocks = turn["content"]
    if turn["role"] == "user" and any(b["type"] == "tool_result" for b in blocks[1:]):
        blocks.sort(key=lambda b: b["type"] != "tool_result")
    return turn


def _text_blocks(content: Any, where: str) -> list[dict[str, Any]]:
    if content is None:
        return []
    if isinstance(content, str):
        return [{"type": "text", "text": content}] if content else []
    if not isinstance(content, list):
        raise TranslationError(f"{where}: must be a string or a list of content parts")
    blocks = []
    for j, part in enumerate(content):
        text = part.get("text", part.get("refusal")) if isinstance(part, dict) else None
        if not isinstance(text, str):
            raise TranslationError(f"{where}[{j}]: only text parts are allowed here")
        if text:
            blocks.append({"type": "text", "text": text})
    return blocks


def _user_blocks(content: Any, where: str) -> list[dict[str, Any]]:
    if not isinstance(content, list):
        return _text_blocks(content, where)
    blocks = []
    for j, part in enumerate(content):
        kind = part.get("type") if isinstance(part, dict) else None
        at = f"{where}[{j}]"
        if kind == "text":
            if part.get("text"):
                blocks.append({"type": "text", "text": part["text"]})
        elif kind == "image_url":
            blocks.append(_image(part.get("image_url"), at))
        elif kind == "file":
            blocks.append(_document(part.get("file"), at))
        else:
            raise TranslationError(
                f"{at}.type: {kind!r} parts cannot be sent to an Anthropic model"
            )
    return blocks


def _image(image: Any, where: str) -> dict[str, Any]:
    url = image.get("url") if isinstance(image, dict) else image
    if not isinstance(url, str):
        raise TranslationError(f"{where}.image_url.url: must be a string")
    found = _DATA_URL.match(url)
    if found:
        source = {"type": "base64", "media_type": found[1], "data": found[2]}
        return {"type": "image", "source": source}
    return {"type": "image", "source": {"type": "url", "url": url}}


def _document(file: Any, where: str) -> dict[str, Any]:
    data = file.get("file_data") if isinstance(file, dict) else None
    found = _DATA_URL.match(data) if isinstance(data, str) else None
    if not found:
        raise TranslationError(f"{where}.file.file_data: only inline base64 files can be sent")
    source = {"type": "base64", "media_type": found[1], "data": found[2]}
    return {"type": "document", "source": source}


def _assistant_blocks(message: dict[str, Any], where: str) -> list[dict[str, Any]]:
    blocks = _text_blocks(message.get("content"), f"{where}.content")
    calls = message.get("tool_calls")
    for j, call in enumerate(calls if isinstance(calls, list) else ()):
        at = f"{where}.tool_calls[{j}]"
        function = call.get("function") if isinstance(call, dict) else None
        if not isinstance(function, dict) or not isinstance(function.get("name"), str):
            raise TranslationError(f"{at}.function: a function tool call with a name is needed")
        blocks.append(
            {
                "type": "tool_use",
                "id": anthropic_call_id(call.get("id")),
                "name": function["name"],
                "input": _arguments(function.get("arguments")),
            }
        )
    return blocks


def _arguments(raw: Any) -> dict[str, Any]:
    if isinstance(raw, dict):
        return raw
    if not isinstance(raw, str) or not raw.strip():
        return {}
    try:
        parsed = orjson.loads(raw)
    except orjson.JSONDecodeError:
        parsed = None
    # A model's malformed arguments stay in the history as text rather than fail every turn.
    return parsed if isinstance(parsed, dict) else {"raw_arguments": raw}


def _tool_result(message: dict[str, Any], where: str) -> dict[str, Any]:
    content = message.get("content")
    text = "\n\n".join(b["text"] for b in _text_blocks(content, f"{where}.content"))
    block: dict[str, Any] = {
        "type": "tool_result",
        "tool_use_id": anthropic_call_id(message.get("tool_call_id")),
    }
    if text:
        block["content"] = text
    return block


def _tools(body: dict[str, Any], out: dict[str, Any]) -> None:
    tools = []
    for i, tool in enumerate(body.get("tools") or ()):
        function = tool.get("function") if isinstance(tool, dict) else None
        if not isinstance(tool, dict) or tool.get("type") != "function":
            kind = tool.get("type") if isinstance(tool, dict) else None
            raise TranslationError(f"tools[{i}].type: {kind!r} tools cannot be sent to Anthropic")
        if not isinstance(function, dict) or not isinstance(function.get("name"), str):
            raise TranslationError(f"tools[{i}].function.name: must be a string")
        schema = function.get("parameters") or {"type": "object", "properties": {}}
        entry: dict[str, Any] = {"name": function["name"], "input_schema": schema}
        if function.get("description"):
            entry["description"] = function["description"]
        tools.append(entry)
    if not tools:
        return
    out["tools"] = tools
    choice = _tool_choice(body.get("tool_choice"))
    if body.get("parallel_tool_calls") is False and choice.get("type") != "none":
        choice["disable_parallel_tool_use"] = True
    if choice != {"type": "auto"}:
        out["tool_choice"] = choice


def _tool_choice(choice: Any) -> dict[str, Any]:
    if choice is None or choice == "auto":
        return {"type": "auto"}
    if choice == "required":
        return {"type": "any"}
    if choice == "none":
        return {"type": "none"}
    function = choice.get("function") if isinstance(choice, dict) else None
    if isinstance(function, dict) and isinstance(function.get("name"), str):
        return {"type": "tool", "name": function["name"]}
    raise TranslationError(f"tool_choice: {choice!r} cannot be sent to an Anthropic model")


def _settings(body: dict[str, Any], out: dict[str, Any], default_max_tokens: int) -> None:
    limit = body.get("max_completion_tokens") or body.get("max_tokens")
    out["max_tokens"] = limit if isinstance(limit, int) and limit > 0 else default_max_tokens
    temperature = body.get("temperature")
    if isinstance(temperature, int | float):
        out["temperature"] = min(float(temperature), 1.0)  # OpenAI allows up to 2
    if body.get("top_p") is not None:
        out["top_p"] = body["top_p"]
    stop = body.get("stop")
    stops = [stop] if isinstance(stop, str) else stop if isinstance(stop, list) else []
    stops = [s for s in stops if isinstance(s, str) and s.strip()]
    if stops:
        out["stop_sequences"] = stops
    user = body.get("user") or body.get("safety_identifier")
    if isinstance(user, str) and user:
        out["metadata"] = {"user_id": user}
    _response_format(body.get("response_format"), out)
    if "stream" in body:
        out["stream"] = bool(body["stream"])


def _response_format(fmt: Any, out: dict[str, Any]) -> None:
    kind = fmt.get("type") if isinstance(fmt, dict) else None
    if kind in (None, "text"):
        return
    schema = (fmt.get("json_schema") or {}).get("schema") if kind == "json_schema" else None
    if not isinstance(schema, dict):
        raise TranslationError(
            f"response_format.type: {kind!r} needs a json_schema for an Anthropic model"
        )
    out["output_config"] = {"format": {"type": "json_schema", "schema": schema}}
