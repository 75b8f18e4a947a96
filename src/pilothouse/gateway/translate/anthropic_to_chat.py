"""An Anthropic Messages request (Claude Code, the Anthropic SDK) as an OpenAI chat request.

System text becomes system messages, in place when it comes as ``role: "system"`` inside
``messages``. Tool results become ``tool`` messages right after the assistant turn that called
them (OpenAI requires it), followed by whatever else the user turn held. Thinking blocks,
``cache_control`` and Anthropic-only settings are dropped.
"""

from __future__ import annotations

from typing import Any

import orjson

from pilothouse.gateway.translate.errors import TranslationError
from pilothouse.gateway.translate.tools import upstream_tool_name

# Blocks with no OpenAI form whose loss does not change what the model is asked.
_DROPPED_BLOCKS = frozenset(
    {"thinking", "redacted_thinking", "server_tool_use", "web_search_tool_result"}
)
MAX_USER_CHARS = 64


def anthropic_to_chat(body: dict[str, Any]) -> dict[str, Any]:
    """An OpenAI chat request body for an Anthropic Messages request body."""
    messages: list[dict[str, Any]] = []
    system = _plain_text(body.get("system"), "system")
    if system:
        messages.append({"role": "system", "content": system})
    raw = body.get("messages")
    if not isinstance(raw, list):
        raise TranslationError("messages: must be a list of messages")
    for i, message in enumerate(raw):
        for converted in _message(message, f"messages[{i}]"):
            if converted["role"] == "tool":
                _add_tool_result(messages, converted)
            else:
                messages.append(converted)
    out: dict[str, Any] = {"model": body.get("model"), "messages": messages}
    _tools(body, out)
    _settings(body, out)
    return out


def _add_tool_result(messages: list[dict[str, Any]], result: dict[str, Any]) -> None:
    """Put a tool message right after its assistant turn, ahead of system text sent between.

    OpenAI rejects anything between an assistant's tool calls and their results, and Claude
    Code may send ``role: "system"`` messages anywhere.
    """
    at = len(messages)
    while at > 0 and messages[at - 1]["role"] == "system":
        at -= 1
    if at < len(messages) and at > 0 and messages[at - 1]["role"] in ("assistant", "tool"):
        messages.insert(at, result)
    else:
        messages.append(result)


def _message(message: Any, where: str) -> list[dict[str, Any]]:
    if not isinstance(message, dict):
        raise TranslationError(f"{where}: must be an object")
    role = message.get("role")
    content = message.get("content")
    if role == "system":
        return [{"role": "system", "content": _plain_text(content, f"{where}.content")}]
    if role == "user":
        return _user(content, where)
    if role == "assistant":
        assistant = _assistant(content, where)
        return [assistant] if assistant else []
    raise TranslationError(f"{where}.role: {role!r} is not user, assistant or system")


def _plain_text(content: Any, where: str) -> str:
    if content is None or isinstance(content, str):
        return content or ""
    if not isinstance(content, list):
        raise TranslationError(f"{where}: must be a string or a list of text blocks")
    texts = []
    for j, block in enumerate(content):
        if not isinstance(block, dict) or not isinstance(block.get("text"), str):
            raise TranslationError(f"{where}[{j}]: only text blocks can be sent as system text")
        texts.append(block["text"])
    return "\n\n".join(texts)


def _user(content: Any, where: str) -> list[dict[str, Any]]:
    if isinstance(content, str):
        return [{"role": "user", "content": content}]
    if not isinstance(content, list):
        raise TranslationError(f"{where}.content: must be a string or a list of blocks")
    results: list[dict[str, Any]] = []
    parts: list[dict[str, Any]] = []
    for j, block in enumerate(content):
        at = f"{where}.content[{j}]"
        kind = block.get("type") if isinstance(block, dict) else None
        if kind == "text":
            parts.append({"type": "text", "text": block.get("text") or ""})
        elif kind in ("image", "document"):
            parts.append(_media(block, at))
        elif kind == "tool_result":
            text, images = _tool_result(block, at)
            results.append(
                {"role": "tool", "tool_call_id": block.get("tool_use_id"), "content": text}
            )
            parts.extend(images)
        elif kind not in _DROPPED_BLOCKS:
            raise TranslationError(f"{at}.type: {kind!r} blocks cannot be sent to a chat model")
    if parts:
        results.append({"role": "user", "content": _parts_content(parts)})
    return results


def _parts_content(parts: list[dict[str, Any]]) -> str | list[dict[str, Any]]:
    # Plain strings are what every OpenAI-compatible server accepts.
    if all(part["type"] == "text" for part in parts):
        return "\n\n".join(part["text"] for part in parts)
    return parts


def _media(block: dict[str, Any], where: str) -> dict[str, Any]:
    source = block.get("source")
    if not isinstance(source, dict):
        raise TranslationError(f"{where}.source: must be an object")
    kind = source.get("type")
    if kind == "base64":
        data = f"data:{source.get('media_type')};base64,{source.get('data')}"
        if block["type"] == "image":
            return {"type": "image_url", "image_url": {"url": data}}
        name = block.get("title") or "document"
        return {"type": "file", "file": {"file_data": data, "filename": name}}
    if kind == "url" and block["type"] == "image":
        return {"type": "image_url", "image_url": {"url": source.get("url")}}
    if kind == "text" and block["type"] == "document":
        return {"type": "text", "text": source.get("data") or ""}
    raise TranslationError(
        f"{where}.source.type: {kind!r} {block['type']} sources cannot be sent to a chat model"
    )


def _tool_result(block: dict[str, Any], where: str) -> tuple[str, list[dict[str, Any]]]:
    content = block.get("content")
    images: list[dict[str, Any]] = []
    if isinstance(content, list):
        texts = []
        for j, part in enumerate(content):
            if not isinstance(part, dict):
                continue
            if part.get("type") == "image":
                images.append(_media(part, f"{where}.content[{j}]"))
            elif isinstance(part.get("text"), str):
                texts.append(part["text"])
        text = "\n\n".join(texts)
    else:
        text = content if isinstance(content, str) else ""
    if block.get("is_error"):
        text = f"Error: {text}"
    return text, images


def _assistant(content: Any, where: str) -> dict[str, Any] | None:
    if isinstance(content, str):
        return {"role": "assistant", "content": content}
    if not isinstance(content, list):
        raise TranslationError(f"{where}.content: must be a string or a list of blocks")
    texts: list[str] = []
    calls: list[dict[str, Any]] = []
    for j, block in enumerate(content):
        kind = block.get("type") if isinstance(block, dict) else None
        if kind == "text":
            texts.append(block.get("text") or "")
        elif kind == "tool_use":
            calls.append(_tool_call(block, f"{where}.content[{j}]"))
        elif kind not in _DROPPED_BLOCKS:
            raise TranslationError(
                f"{where}.content[{j}].type: {kind!r} blocks cannot be sent to a chat model"
            )
    text = "\n\n".join(t for t in texts if t)
    if not text and not calls:
        return None
    message: dict[str, Any] = {"role": "assistant", "content": text or None}
    if calls:
        message["tool_calls"] = calls
    return message


def _tool_call(block: dict[str, Any], where: str) -> dict[str, Any]:
    name = block.get("name")
    if not isinstance(name, str):
        raise TranslationError(f"{where}.name: a tool_use block needs a name")
    arguments = orjson.dumps(block.get("input") or {}).decode()
    return {
        "id": block.get("id"),
        "type": "function",
        "function": {"name": upstream_tool_name(name), "arguments": arguments},
    }


def _tools(body: dict[str, Any], out: dict[str, Any]) -> None:
    tools = []
    for i, tool in enumerate(body.get("tools") or ()):
        if not isinstance(tool, dict):
            raise TranslationError(f"tools[{i}]: must be an object")
        if tool.get("type") not in (None, "custom"):
            continue  # Anthropic's own server and client tools have no schema to send
        name = tool.get("name")
        if not isinstance(name, str):
            raise TranslationError(f"tools[{i}].name: must be a string")
        function: dict[str, Any] = {
            "name": upstream_tool_name(name),
            "parameters": tool.get("input_schema") or {"type": "object", "properties": {}},
        }
        if tool.get("description"):
            function["description"] = tool["description"]
        tools.append({"type": "function", "function": function})
    if not tools:
        return
    out["tools"] = tools
    choice = body.get("tool_choice")
    if not isinstance(choice, dict):
        return
    kind = choice.get("type")
    if kind == "tool" and isinstance(choice.get("name"), str):
        name = upstream_tool_name(choice["name"])
        out["tool_choice"] = {"type": "function", "function": {"name": name}}
    elif kind in ("auto", "any", "none"):
        out["tool_choice"] = {"auto": "auto", "any": "required", "none": "none"}[kind]
    else:
        raise TranslationError(f"tool_choice.type: {kind!r} is not auto, any, tool or none")
    if choice.get("disable_parallel_tool_use") and kind != "none":
        out["parallel_tool_calls"] = False


def _settings(body: dict[str, Any], out: dict[str, Any]) -> None:
    if isinstance(body.get("max_tokens"), int):
        out["max_completion_tokens"] = body["max_tokens"]
    for name in ("temperature", "top_p"):
        if body.get(name) is not None:
            out[name] = body[name]
    if body.get("stop_sequences"):
        out["stop"] = body["stop_sequences"]
    user = _user_id((body.get("metadata") or {}).get("user_id"))
    if user:
        out["user"] = user
    fmt = (body.get("output_config") or {}).get("format")
    if isinstance(fmt, dict) and fmt.get("type") == "json_schema":
        schema = {"name": "output", "schema": fmt.get("schema") or {}, "strict": True}
        out["response_format"] = {"type": "json_schema", "json_schema": schema}
    if "stream" in body:
        out["stream"] = bool(body["stream"])
        if out["stream"]:
            out["stream_options"] = {"include_usage": True}


def _user_id(raw: Any) -> str | None:
    """An OpenAI ``user`` from Anthropic's ``metadata.user_id``.

    Claude Code sends a JSON string holding ``device_id`` and ``session_id``; the device is the
    stable end-user identifier OpenAI asks for.
    """
    if not isinstance(raw, str) or not raw:
        return None
    if raw.startswith("{"):
        try:
            parsed = orjson.loads(raw)
        except orjson.JSONDecodeError:
            parsed = None
        if isinstance(parsed, dict):
            for key in ("device_id", "account_uuid", "session_id"):
                if isinstance(parsed.get(key), str) and parsed[key]:
                    return str(parsed[key])[:MAX_USER_CHARS]
    return raw[:MAX_USER_CHARS]
