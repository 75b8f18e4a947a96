"""An OpenAI Responses request (Codex CLI: full history in ``input``, ``store: false``) as an
OpenAI chat request; Anthropic deployments take it from there through ``chat_to_anthropic``.

Instructions and developer messages become system messages. Function calls join the assistant
message before them; their outputs become ``tool`` messages. Namespaced and freeform tools are
flattened as ``tools.py`` describes. Reasoning items and the Responses API's built-in tools
(web search and the like) have no chat form and are dropped.
"""

from __future__ import annotations

from typing import Any

from pilothouse.gateway.translate.errors import TranslationError
from pilothouse.gateway.translate.tools import (
    custom_tool_arguments,
    custom_tool_parameters,
    upstream_tool_name,
)

# Items that only a server with state, or the Responses API's own tools, can act on.
_SKIPPED_ITEMS = frozenset(
    {
        "reasoning",
        "compaction",
        "web_search_call",
        "file_search_call",
        "image_generation_call",
        "code_interpreter_call",
        "computer_call",
        "computer_call_output",
        "local_shell_call",
        "local_shell_call_output",
        "shell_call",
        "shell_call_output",
        "mcp_list_tools",
        "mcp_approval_request",
        "mcp_approval_response",
        "mcp_call",
        "tool_search_call",
        "tool_search_output",
    }
)
_STATEFUL = {
    "previous_response_id": "needs the upstream to hold earlier responses",
    "conversation": "needs the upstream to hold the conversation",
    "prompt": "stored prompts exist only on OpenAI's servers",
    "background": "background responses are not supported across wire formats",
}


def responses_to_chat(body: dict[str, Any]) -> dict[str, Any]:
    """An OpenAI chat request body for a Responses request body."""
    for name, why in _STATEFUL.items():
        if body.get(name):
            raise TranslationError(f"{name}: {why}; send the full history in input")
    history = _History()
    instructions = body.get("instructions")
    if isinstance(instructions, str) and instructions:
        history.messages.append({"role": "system", "content": instructions})
    raw = body.get("input")
    if isinstance(raw, str):
        history.messages.append({"role": "user", "content": raw})
    elif isinstance(raw, list):
        for i, item in enumerate(raw):
            history.add(item, f"input[{i}]")
        history.flush_images()
    elif raw is not None:
        raise TranslationError("input: must be a string or a list of items")
    out: dict[str, Any] = {"model": body.get("model"), "messages": history.messages}
    _tools(body, out)
    _settings(body, out)
    return out


class _History:
    """Chat messages built item by item."""

    def __init__(self) -> None:
        self.messages: list[dict[str, Any]] = []
        # Images returned by tools wait for the run of tool messages to end.
        self._images: list[dict[str, Any]] = []

    def add(self, item: Any, where: str) -> None:
        if not isinstance(item, dict):
            raise TranslationError(f"{where}: must be an object")
        kind = item.get("type", "message")
        if kind not in ("function_call_output", "custom_tool_call_output"):
            self.flush_images()
        if kind == "message":
            self._message(item, where)
        elif kind == "function_call":
            name = _name(item, where)
            arguments = item.get("arguments")
            self._call(item, upstream_tool_name(name, item.get("namespace")), arguments or "{}")
        elif kind == "custom_tool_call":
            name = upstream_tool_name(_name(item, where), item.get("namespace"))
            self._call(item, name, custom_tool_arguments(item.get("input")))
        elif kind in ("function_call_output", "custom_tool_call_output"):
            text = self._output(item.get("output"), f"{where}.output")
            self.messages.append(
                {"role": "tool", "tool_call_id": item.get("call_id"), "content": text}
            )
        elif kind == "item_reference":
            raise TranslationError(f"{where}.type: item references need stored items; send them")
        elif kind not in _SKIPPED_ITEMS:
            raise TranslationError(f"{where}.type: {kind!r} items cannot be sent to this model")

    def flush_images(self) -> None:
        if self._images:
            self.messages.append({"role": "user", "content": self._images})
            self._images = []

    def _message(self, item: dict[str, Any], where: str) -> None:
        role = item.get("role")
        content = item.get("content")
        if role in ("system", "developer"):
            self.messages.append({"role": "system", "content": _text(content, f"{where}.content")})
        elif role == "user":
            self.messages.append({"role": "user", "content": _user(content, f"{where}.content")})
        elif role == "assistant":
            text = _text(content, f"{where}.content")
            if text:
                self.messages.append({"role": "assistant", "content": text})
        else:
            raise TranslationError(f"{where}.role: {role!r} is not a message role")

    def _call(self, item: dict[str, Any], name: str, arguments: str) -> None:
        call = {
            "id": item.get("call_id") or item.get("id"),
            "type": "function",
            "function": {"name": name, "arguments": arguments},
        }
        last = self.messages[-1] if self.messages else None
        if last is not None and last["role"] == "assistant":
            last.setdefault("tool_calls", []).append(call)
        else:
            self.messages.append({"role": "assistant", "content": None, "tool_calls": [call]})

    def _output(self, output: Any, where: str) -> str:
        if isinstance(output, str) or output is None:
            return output or ""
        if not isinstance(output, list):
            raise TranslationError(f"{where}: must be a string or a list of content items")
        texts = []
        for j, part in enumerate(output):
            kind = part.get("type") if isinstance(part, dict) else None
            if kind == "input_image":
                self._images.append(_image(part, f"{where}[{j}]"))
            elif isinstance(part, dict) and isinstance(part.get("text"), str):
                texts.append(part["text"])
        return "\n\n".join(texts)


def _name(item: dict[str, Any], where: str) -> str:
    name = item.get("name")
    if not isinstance(name, str) or not name:
        raise TranslationError(f"{where}.name: a tool call needs a name")
    return name


def _text(content: Any, where: str) -> str:
    if isinstance(content, str) or content is None:
        return content or ""
    if not isinstance(content, list):
        raise TranslationError(f"{where}: must be a string or a list of content items")
    texts = []
    for j, part in enumerate(content):
        text = part.get("text", part.get("refusal")) if isinstance(part, dict) else None
        if not isinstance(text, str):
            raise TranslationError(f"{where}[{j}]: only text content is allowed here")
        texts.append(text)
    return "\n\n".join(texts)


def _user(content: Any, where: str) -> str | list[dict[str, Any]]:
    if not isinstance(content, list):
        return _text(content, where)
    parts: list[dict[str, Any]] = []
    for j, part in enumerate(content):
        kind = part.get("type") if isinstance(part, dict) else None
        if kind in ("input_text", "output_text", "text"):
            parts.append({"type": "text", "text": part.get("text") or ""})
        elif kind == "input_image":
            parts.append(_image(part, f"{where}[{j}]"))
        elif kind == "input_file" and isinstance(part.get("file_data"), str):
            file = {"file_data": part["file_data"], "filename": part.get("filename") or "file"}
            parts.append({"type": "file", "file": file})
        else:
            raise TranslationError(f"{where}[{j}].type: {kind!r} content cannot be sent here")
    if all(p["type"] == "text" for p in parts):
        return "\n\n".join(p["text"] for p in parts)
    return parts


def _image(part: dict[str, Any], where: str) -> dict[str, Any]:
    url = part.get("image_url")
    if not isinstance(url, str):
        raise TranslationError(f"{where}.image_url: only images given by URL can be sent here")
    image: dict[str, Any] = {"url": url}
    if part.get("detail") in ("low", "high"):
        image["detail"] = part["detail"]
    return {"type": "image_url", "image_url": image}


def _tools(body: dict[str, Any], out: dict[str, Any]) -> None:
    tools: list[dict[str, Any]] = []
    for i, tool in enumerate(body.get("tools") or ()):
        if not isinstance(tool, dict):
            raise TranslationError(f"tools[{i}]: must be an object")
        if tool.get("type") == "namespace":
            inner = tool.get("tools")
            for j, member in enumerate(inner if isinstance(inner, list) else ()):
                tools.extend(_function(member, f"tools[{i}].tools[{j}]", tool.get("name")))
        else:
            tools.extend(_function(tool, f"tools[{i}]", None))
    if not tools:
        return
    out["tools"] = tools
    choice = _tool_choice(body.get("tool_choice"))
    if choice is not None:
        out["tool_choice"] = choice
    if isinstance(body.get("parallel_tool_calls"), bool):
        out["parallel_tool_calls"] = body["parallel_tool_calls"]


def _function(tool: Any, where: str, namespace: Any) -> list[dict[str, Any]]:
    kind = tool.get("type") if isinstance(tool, dict) else None
    if kind not in ("function", "custom"):
        return []  # the Responses API's built-in tools run on OpenAI's servers only
    name = tool.get("name")
    if not isinstance(name, str) or not name:
        raise TranslationError(f"{where}.name: must be a string")
    ns = namespace if isinstance(namespace, str) else None
    if kind == "custom":
        parameters = custom_tool_parameters(tool)
    else:
        parameters = tool.get("parameters") or {"type": "object", "properties": {}}
    function: dict[str, Any] = {"name": upstream_tool_name(name, ns), "parameters": parameters}
    if tool.get("description"):
        function["description"] = tool["description"]
    if tool.get("strict") is True:
        function["strict"] = True
    return [{"type": "function", "function": function}]


def _tool_choice(choice: Any) -> Any:
    if choice in ("auto", "none", "required"):
        return choice
    if not isinstance(choice, dict):
        return None
    if choice.get("type") in ("function", "custom") and isinstance(choice.get("name"), str):
        name = upstream_tool_name(choice["name"], choice.get("namespace"))
        return {"type": "function", "function": {"name": name}}
    if choice.get("type") == "allowed_tools":
        return "required" if choice.get("mode") == "required" else "auto"
    return None  # a built-in tool was asked for; let the model choose


def _settings(body: dict[str, Any], out: dict[str, Any]) -> None:
    if isinstance(body.get("max_output_tokens"), int):
        out["max_completion_tokens"] = body["max_output_tokens"]
    for name in ("temperature", "top_p"):
        if body.get(name) is not None:
            out[name] = body[name]
    user = body.get("user") or body.get("safety_identifier")
    if isinstance(user, str) and user:
        out["user"] = user[:64]
    response_format = _response_format((body.get("text") or {}).get("format"))
    if response_format:
        out["response_format"] = response_format
    if "stream" in body:
        out["stream"] = bool(body["stream"])
        if out["stream"]:
            out["stream_options"] = {"include_usage": True}


def _response_format(fmt: Any) -> dict[str, Any] | None:
    kind = fmt.get("type") if isinstance(fmt, dict) else None
    if kind == "json_object":
        return {"type": "json_object"}
    if kind == "json_schema":
        keys = ("name", "schema", "strict", "description")
        return {"type": "json_schema", "json_schema": {k: fmt[k] for k in keys if k in fmt}}
    return None
