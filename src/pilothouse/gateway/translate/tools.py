"""Tool names and call ids across wires, and the map that takes upstream names back.

Upstream tool names must match ``^[a-zA-Z0-9_-]{1,64}$``. A Responses client's namespaced tool
(Codex: ``{"type": "namespace", "name": "mcp__echo", "tools": [...]}``) is flattened to
``mcp__echo__<tool>``; its freeform ``custom`` tools (``apply_patch``) become function tools
with one string argument, ``input``. Replies must undo both, so a ``ToolMap`` built from the
client's request says what each upstream name stands for. Without one, names of the form
``mcp__<server>__<tool>`` are still split for Responses clients.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import orjson

from pilothouse.gateway.providers.base import WireFormat
from pilothouse.gateway.translate.outcome import fresh_id

MAX_TOOL_NAME = 64
_NOT_NAME = re.compile(r"[^a-zA-Z0-9_-]")
_MCP = "mcp__"


def upstream_tool_name(name: str, namespace: str | None = None) -> str:
    """The name a client's tool takes upstream: flattened, valid and at most 64 characters."""
    flat = f"{namespace}__{name}" if namespace else name
    clean = _NOT_NAME.sub("_", flat) or "tool"
    if len(clean) > MAX_TOOL_NAME:
        digest = hashlib.sha256(flat.encode()).hexdigest()[:8]
        clean = f"{clean[: MAX_TOOL_NAME - 9]}_{digest}"
    return clean


def anthropic_call_id(call_id: Any) -> str:
    """A call id Anthropic accepts (``^[a-zA-Z0-9_-]+$``), the same for the same input."""
    if not isinstance(call_id, str) or not call_id:
        return fresh_id("toolu_")
    return _NOT_NAME.sub("_", call_id)


def custom_tool_parameters(tool: Mapping[str, Any]) -> dict[str, Any]:
    """The JSON schema of the function that stands in for a freeform ``custom`` tool."""
    about = "The complete raw input for the tool."
    fmt = tool.get("format")
    if isinstance(fmt, dict) and isinstance(fmt.get("definition"), str):
        syntax = fmt.get("syntax") or "grammar"
        about += f" It must match this {syntax} grammar:\n{fmt['definition']}"
    return {
        "type": "object",
        "properties": {"input": {"type": "string", "description": about}},
        "required": ["input"],
        "additionalProperties": False,
    }


def custom_tool_arguments(raw_input: Any) -> str:
    """The function arguments that carry a freeform tool call's ``input``."""
    return orjson.dumps({"input": raw_input if isinstance(raw_input, str) else ""}).decode()


def custom_tool_input(arguments: str) -> str:
    """A freeform tool call's ``input`` from the arguments of its stand-in function."""
    try:
        parsed = orjson.loads(arguments)
    except orjson.JSONDecodeError:
        return arguments
    value = parsed.get("input") if isinstance(parsed, dict) else None
    return value if isinstance(value, str) else arguments


@dataclass(frozen=True, slots=True)
class ClientTool:
    """A tool as the client declared it."""

    name: str
    namespace: str | None = None
    custom: bool = False


class ToolMap:
    """What each upstream tool name stands for in the client's request."""

    __slots__ = ("_client", "_tools")

    def __init__(self, client: WireFormat, tools: Mapping[str, ClientTool] | None = None) -> None:
        self._client = client
        self._tools: Mapping[str, ClientTool] = tools or {}

    def client_tool(self, upstream_name: str) -> ClientTool:
        """The client's tool behind ``upstream_name``."""
        found = self._tools.get(upstream_name)
        if found is not None:
            return found
        if self._client is WireFormat.OPENAI_RESPONSES and upstream_name.startswith(_MCP):
            server, sep, tool = upstream_name[len(_MCP) :].partition("__")
            if sep and server and tool:
                return ClientTool(tool, _MCP + server)
        return ClientTool(upstream_name)


def tool_map(body: Mapping[str, Any], client: WireFormat) -> ToolMap:
    """The map from upstream tool names back to the tools of a client request in ``client``."""
    found: dict[str, ClientTool] = {}
    tools = body.get("tools")
    for tool in tools if isinstance(tools, list) else ():
        if isinstance(tool, dict):
            for declared in _declared(tool, client):
                upstream = upstream_tool_name(declared.name, declared.namespace)
                if upstream != declared.name or declared.namespace or declared.custom:
                    found[upstream] = declared
    return ToolMap(client, found)


def _declared(tool: Mapping[str, Any], client: WireFormat) -> list[ClientTool]:
    if client is WireFormat.OPENAI_CHAT:
        function = tool.get("function")
        name = function.get("name") if isinstance(function, dict) else None
        return [ClientTool(name)] if isinstance(name, str) else []
    if client is not WireFormat.OPENAI_RESPONSES:
        name = tool.get("name")
        return [ClientTool(name)] if isinstance(name, str) else []
    kind = tool.get("type")
    if kind == "namespace" and isinstance(tool.get("name"), str):
        inner = tool.get("tools")
        return [
            ClientTool(t["name"], tool["name"], t.get("type") == "custom")
            for t in (inner if isinstance(inner, list) else ())
            if isinstance(t, dict) and isinstance(t.get("name"), str)
        ]
    if kind in ("function", "custom") and isinstance(tool.get("name"), str):
        return [ClientTool(tool["name"], None, kind == "custom")]
    return []
