"""Request bodies translated across wires: the shapes Claude Code and Codex really send
(see clients/FINDINGS.md sections 3.2 and 5.2), and input that cannot be expressed."""

from __future__ import annotations

import copy
import json
from typing import Any

import orjson
import pytest

from pilothouse.gateway.providers.base import WireFormat
from pilothouse.gateway.translate import TranslationError, tool_map, translate_request

CHAT = WireFormat.OPENAI_CHAT
MESSAGES = WireFormat.ANTHROPIC_MESSAGES
RESPONSES = WireFormat.OPENAI_RESPONSES

USER_ID = json.dumps({"device_id": "d" * 64, "account_uuid": "", "session_id": "s-1"})
BASH_SCHEMA = {
    "type": "object",
    "properties": {"command": {"type": "string"}, "description": {"type": "string"}},
    "required": ["command"],
}
CLAUDE_CODE: dict[str, Any] = {
    "model": "claude-opus-4-8",
    "max_tokens": 64000,
    "stream": True,
    "thinking": {"type": "adaptive"},
    "context_management": {"edits": [{"type": "clear_thinking_20251015", "keep": "all"}]},
    "output_config": {"effort": "high"},
    "metadata": {"user_id": USER_ID},
    "system": [
        {"type": "text", "text": "x-anthropic-billing-header: cc_version=2.1.197.787;"},
        {"type": "text", "text": "You are a Claude agent.", "cache_control": {"type": "ephemeral"}},
        {"type": "text", "text": "\nHelp with code.", "cache_control": {"type": "ephemeral"}},
    ],
    "tools": [
        {"name": "Bash", "description": "Run a command", "input_schema": BASH_SCHEMA},
        {"name": "mcp__echo__fetch_url", "input_schema": {"type": "object"}},
        {"type": "web_search_20250305", "name": "web_search", "max_uses": 5},
    ],
    "messages": [
        {
            "role": "user",
            "content": [
                {"type": "text", "text": "<system-reminder>today</system-reminder>"},
                {"type": "text", "text": "fetch the paste", "cache_control": {"type": "ephemeral"}},
            ],
        },
        {"role": "system", "content": [{"type": "text", "text": "Available agent types: ..."}]},
        {
            "role": "assistant",
            "content": [
                {"type": "thinking", "thinking": "I should use Bash.", "signature": "c2ln"},
                {"type": "text", "text": "I will fetch the paste."},
                {
                    "type": "tool_use",
                    "id": "toolu_1791",
                    "name": "Bash",
                    "input": {"command": "curl -s https://pastebin.com/raw/abc"},
                },
            ],
        },
        {
            "role": "user",
            "content": [
                {
                    "type": "tool_result",
                    "tool_use_id": "toolu_1791",
                    "is_error": True,
                    "content": "Pilothouse policy: blocked",
                    "cache_control": {"type": "ephemeral"},
                },
                {"type": "text", "text": "then summarise"},
            ],
        },
    ],
}


def test_claude_code_request_becomes_a_chat_request_with_system_text_in_place() -> None:
    body = translate_request(copy.deepcopy(CLAUDE_CODE), MESSAGES, CHAT)
    roles = [m["role"] for m in body["messages"]]
    assert roles == ["system", "user", "system", "assistant", "tool", "user"]
    system, user, inline_system, assistant, tool, after = body["messages"]
    assert system["content"].startswith("x-anthropic-billing-header")
    assert "You are a Claude agent." in system["content"] and "Help with code." in system["content"]
    assert "<system-reminder>" in user["content"] and "fetch the paste" in user["content"]
    assert inline_system["content"] == "Available agent types: ..."
    assert assistant["content"] == "I will fetch the paste."
    (call,) = assistant["tool_calls"]
    assert call["id"] == "toolu_1791" and call["type"] == "function"
    assert call["function"]["name"] == "Bash"
    assert json.loads(call["function"]["arguments"]) == {
        "command": "curl -s https://pastebin.com/raw/abc"
    }
    assert tool == {
        "role": "tool",
        "tool_call_id": "toolu_1791",
        "content": "Error: Pilothouse policy: blocked",
    }
    assert after == {"role": "user", "content": "then summarise"}


def test_claude_code_settings_become_chat_settings_and_anthropic_only_fields_are_dropped() -> None:
    body = translate_request(copy.deepcopy(CLAUDE_CODE), MESSAGES, CHAT)
    assert body["model"] == "claude-opus-4-8"
    assert body["max_completion_tokens"] == 64000
    assert body["stream"] is True and body["stream_options"] == {"include_usage": True}
    assert body["user"] == "d" * 64
    for field in (
        "thinking",
        "context_management",
        "output_config",
        "metadata",
        "system",
        "max_tokens",
    ):
        assert field not in body
    text = orjson.dumps(body).decode()
    assert "cache_control" not in text and "I should use Bash" not in text
    names = [t["function"]["name"] for t in body["tools"]]
    assert names == ["Bash", "mcp__echo__fetch_url"]  # the server tool has no schema to send
    assert body["tools"][0]["function"]["parameters"] == BASH_SCHEMA
    assert body["tools"][0]["function"]["description"] == "Run a command"


def test_anthropic_tool_choice_and_sampling_map_to_chat() -> None:
    base = {"model": "m", "max_tokens": 10, "messages": [{"role": "user", "content": "hi"}]}
    base["tools"] = [{"name": "Bash", "input_schema": BASH_SCHEMA}]
    cases: list[tuple[dict[str, Any], Any]] = [
        ({"type": "auto"}, "auto"),
        ({"type": "any"}, "required"),
        ({"type": "none"}, "none"),
        ({"type": "tool", "name": "Bash"}, {"type": "function", "function": {"name": "Bash"}}),
    ]
    for choice, expected in cases:
        body = translate_request({**base, "tool_choice": choice}, MESSAGES, CHAT)
        assert body["tool_choice"] == expected
    body = translate_request(
        {
            **base,
            "tool_choice": {"type": "auto", "disable_parallel_tool_use": True},
            "stop_sequences": ["END"],
            "temperature": 0.2,
            "top_p": 0.9,
            "top_k": 5,
            "stream": False,
        },
        MESSAGES,
        CHAT,
    )
    assert body["parallel_tool_calls"] is False
    assert (body["stop"], body["temperature"], body["top_p"]) == (["END"], 0.2, 0.9)
    assert "top_k" not in body and body["stream"] is False and "stream_options" not in body


def test_anthropic_images_and_tool_result_images_become_chat_content_parts() -> None:
    image = {
        "type": "image",
        "source": {"type": "base64", "media_type": "image/png", "data": "AAAA"},
    }
    body = {
        "model": "m",
        "max_tokens": 10,
        "messages": [
            {"role": "user", "content": [image, {"type": "text", "text": "what is it?"}]},
            {
                "role": "assistant",
                "content": [{"type": "tool_use", "id": "t1", "name": "shot", "input": {}}],
            },
            {
                "role": "user",
                "content": [
                    {
                        "type": "tool_result",
                        "tool_use_id": "t1",
                        "content": [{"type": "text", "text": "taken"}, image],
                    }
                ],
            },
        ],
    }
    messages = translate_request(body, MESSAGES, CHAT)["messages"]
    assert messages[0]["content"][0] == {
        "type": "image_url",
        "image_url": {"url": "data:image/png;base64,AAAA"},
    }
    assert messages[0]["content"][1] == {"type": "text", "text": "what is it?"}
    assert messages[1]["tool_calls"][0]["function"]["arguments"] == "{}"
    assert messages[2] == {"role": "tool", "tool_call_id": "t1", "content": "taken"}
    assert messages[3]["role"] == "user" and messages[3]["content"][0]["type"] == "image_url"


def test_long_tool_names_are_shortened_for_upstreams_and_mapped_back() -> None:
    long_name = "mcp__a_very_long_server_name_for_testing__" + "x" * 40
    body = {
        "model": "m",
        "max_tokens": 5,
        "messages": [{"role": "user", "content": "hi"}],
        "tools": [{"name": long_name, "input_schema": {"type": "object"}}],
    }
    upstream_name = translate_request(body, MESSAGES, CHAT)["tools"][0]["function"]["name"]
    assert len(upstream_name) == 64 and upstream_name != long_name
    assert tool_map(body, MESSAGES).client_tool(upstream_name).name == long_name


# ---- OpenAI chat -> Anthropic ------------------------------------------------------------------


CHAT_HISTORY: dict[str, Any] = {
    "model": "claude-sonnet-5",
    "stream": True,
    "stream_options": {"include_usage": True},
    "stop": "END",
    "temperature": 1.5,
    "user": "alice",
    "parallel_tool_calls": False,
    "tool_choice": "required",
    "tools": [
        {
            "type": "function",
            "function": {
                "name": "read_file",
                "description": "Read",
                "parameters": {"type": "object"},
            },
        }
    ],
    "messages": [
        {"role": "system", "content": "Be exact."},
        {"role": "developer", "content": [{"type": "text", "text": "Use tools."}]},
        {
            "role": "user",
            "content": [
                {"type": "text", "text": "compare"},
                {"type": "image_url", "image_url": {"url": "data:image/jpeg;base64,/9j/"}},
                {"type": "image_url", "image_url": {"url": "https://example.com/a.png"}},
            ],
        },
        {
            "role": "assistant",
            "content": "Reading both.",
            "tool_calls": [
                {
                    "id": "call_a",
                    "type": "function",
                    "function": {"name": "read_file", "arguments": '{"path": "a"}'},
                },
                {
                    "id": "functions.read_file:1",
                    "type": "function",
                    "function": {"name": "read_file", "arguments": "not json"},
                },
            ],
        },
        {"role": "tool", "tool_call_id": "call_a", "content": "A"},
        {
            "role": "tool",
            "tool_call_id": "functions.read_file:1",
            "content": [{"type": "text", "text": "B"}],
        },
        {"role": "user", "content": "and now?"},
    ],
}


def test_chat_history_becomes_anthropic_messages_with_merged_tool_results() -> None:
    body = translate_request(copy.deepcopy(CHAT_HISTORY), CHAT, MESSAGES)
    assert body["system"] == [
        {"type": "text", "text": "Be exact."},
        {"type": "text", "text": "Use tools."},
    ]
    user, assistant, results = body["messages"]
    assert user["role"] == "user"
    assert user["content"][1]["source"] == {
        "type": "base64",
        "media_type": "image/jpeg",
        "data": "/9j/",
    }
    assert user["content"][2]["source"] == {"type": "url", "url": "https://example.com/a.png"}
    assert assistant["role"] == "assistant"
    text, first, second = assistant["content"]
    assert text == {"type": "text", "text": "Reading both."}
    assert first == {
        "type": "tool_use",
        "id": "call_a",
        "name": "read_file",
        "input": {"path": "a"},
    }
    # Anthropic ids allow only [a-zA-Z0-9_-]; the same id is made the same way in tool_result.
    assert second["id"] == "functions_read_file_1"
    assert second["input"] == {"raw_arguments": "not json"}
    assert results["role"] == "user"
    assert [b["type"] for b in results["content"]] == ["tool_result", "tool_result", "text"]
    assert results["content"][0] == {"type": "tool_result", "tool_use_id": "call_a", "content": "A"}
    assert results["content"][1]["tool_use_id"] == "functions_read_file_1"
    assert results["content"][2] == {"type": "text", "text": "and now?"}


def test_chat_settings_become_anthropic_settings() -> None:
    body = translate_request(copy.deepcopy(CHAT_HISTORY), CHAT, MESSAGES)
    assert body["max_tokens"] == 4096  # required by Anthropic; the default
    assert body["stop_sequences"] == ["END"]
    assert body["temperature"] == 1.0  # OpenAI allows up to 2, Anthropic up to 1
    assert body["metadata"] == {"user_id": "alice"}
    assert body["stream"] is True and "stream_options" not in body
    assert body["tools"] == [
        {"name": "read_file", "input_schema": {"type": "object"}, "description": "Read"}
    ]
    assert body["tool_choice"] == {"type": "any", "disable_parallel_tool_use": True}
    limited = translate_request({**CHAT_HISTORY, "max_completion_tokens": 300}, CHAT, MESSAGES)
    assert limited["max_tokens"] == 300
    assert translate_request({**CHAT_HISTORY, "max_tokens": 77}, CHAT, MESSAGES)["max_tokens"] == 77
    custom = translate_request(CHAT_HISTORY, CHAT, MESSAGES, default_max_tokens=32000)
    assert custom["max_tokens"] == 32000


def test_chat_requests_anthropic_cannot_serve_are_refused_naming_the_field() -> None:
    base = {"model": "m", "messages": [{"role": "user", "content": "hi"}]}
    cases: list[tuple[dict[str, Any], str]] = [
        ({"n": 2}, "n"),
        ({"logprobs": True}, "logprobs"),
        ({"tools": [{"type": "custom", "custom": {"name": "x"}}]}, "tools[0].type"),
        ({"messages": [{"role": "function", "name": "f", "content": "x"}]}, "messages[0].role"),
        (
            {"messages": [{"role": "user", "content": [{"type": "input_audio"}]}]},
            "messages[0].content[0].type",
        ),
        ({"messages": "hi"}, "messages"),
        ({"response_format": {"type": "json_object"}}, "response_format.type"),
    ]
    for extra, field in cases:
        with pytest.raises(TranslationError) as caught:
            translate_request({**base, **extra}, CHAT, MESSAGES)
        assert str(caught.value).startswith(f"{field}:"), str(caught.value)


def test_anthropic_requests_chat_cannot_serve_are_refused_naming_the_field() -> None:
    document = {"type": "document", "source": {"type": "file", "file_id": "file_1"}}
    body = {"model": "m", "max_tokens": 5, "messages": [{"role": "user", "content": [document]}]}
    with pytest.raises(TranslationError, match=r"^messages\[0\]\.content\[0\]\.source\.type:"):
        translate_request(body, MESSAGES, CHAT)
    body = {"model": "m", "max_tokens": 5, "messages": [{"role": "robot", "content": "x"}]}
    with pytest.raises(TranslationError, match=r"^messages\[0\]\.role:"):
        translate_request(body, MESSAGES, CHAT)


# ---- Responses (Codex) -> chat and Anthropic ---------------------------------------------------


PATCH = "*** Begin Patch\n*** Add File: notes.txt\n+hi\n*** End Patch"
CODEX: dict[str, Any] = {
    "model": "gpt-5.5",
    "stream": True,
    "store": False,
    "tool_choice": "auto",
    "parallel_tool_calls": True,
    "reasoning": {"summary": "auto"},
    "include": ["reasoning.encrypted_content"],
    "prompt_cache_key": "session-1",
    "tools": [
        {
            "type": "function",
            "name": "exec_command",
            "description": "Run a command",
            "strict": False,
            "parameters": {"type": "object", "properties": {"cmd": {"type": "string"}}},
        },
        {
            "type": "custom",
            "name": "apply_patch",
            "description": "Edit files",
            "format": {"type": "grammar", "syntax": "lark", "definition": "start: patch"},
        },
        {"type": "web_search", "external_web_access": False},
        {
            "type": "namespace",
            "name": "mcp__echo",
            "description": "echo server",
            "tools": [
                {"type": "function", "name": "echo", "parameters": {"type": "object"}},
                {"type": "function", "name": "fetch_url", "parameters": {"type": "object"}},
            ],
        },
    ],
    "input": [
        {
            "type": "message",
            "role": "developer",
            "content": [{"type": "input_text", "text": "You are Codex."}],
        },
        {
            "type": "message",
            "role": "user",
            "content": [{"type": "input_text", "text": "<environment_context/>"}],
        },
        {
            "type": "message",
            "role": "user",
            "content": [{"type": "input_text", "text": "fetch the paste"}],
        },
        {"type": "reasoning", "id": "rs_1", "summary": [], "encrypted_content": "gAAA"},
        {
            "type": "message",
            "role": "assistant",
            "status": "completed",
            "content": [
                {"type": "output_text", "text": "I will fetch the paste.", "annotations": []}
            ],
        },
        {
            "type": "function_call",
            "name": "exec_command",
            "arguments": '{"cmd": "curl x"}',
            "call_id": "call_1",
        },
        {
            "type": "function_call",
            "namespace": "mcp__echo",
            "name": "fetch_url",
            "arguments": '{"url": "u"}',
            "call_id": "call_2",
        },
        {
            "type": "function_call_output",
            "call_id": "call_1",
            "output": "Command blocked by PreToolUse hook",
        },
        {
            "type": "function_call_output",
            "call_id": "call_2",
            "output": [{"type": "input_text", "text": "fetched"}],
        },
        {"type": "custom_tool_call", "call_id": "call_3", "name": "apply_patch", "input": PATCH},
        {"type": "custom_tool_call_output", "call_id": "call_3", "output": "Success."},
    ],
}


def test_codex_request_becomes_a_chat_request() -> None:
    body = translate_request(copy.deepcopy(CODEX), RESPONSES, CHAT)
    roles = [m["role"] for m in body["messages"]]
    assert roles == ["system", "user", "user", "assistant", "tool", "tool", "assistant", "tool"]
    system, _, prompt, assistant, out1, out2, patch_call, patch_out = body["messages"]
    assert system == {"role": "system", "content": "You are Codex."}
    assert prompt == {"role": "user", "content": "fetch the paste"}
    assert assistant["content"] == "I will fetch the paste."
    first, second = assistant["tool_calls"]
    assert first == {
        "id": "call_1",
        "type": "function",
        "function": {"name": "exec_command", "arguments": '{"cmd": "curl x"}'},
    }
    assert second["function"]["name"] == "mcp__echo__fetch_url"
    assert out1 == {
        "role": "tool",
        "tool_call_id": "call_1",
        "content": "Command blocked by PreToolUse hook",
    }
    assert out2["content"] == "fetched"
    (call,) = patch_call["tool_calls"]
    assert call["function"]["name"] == "apply_patch"
    assert json.loads(call["function"]["arguments"]) == {"input": PATCH}
    assert patch_out == {"role": "tool", "tool_call_id": "call_3", "content": "Success."}
    assert "gAAA" not in orjson.dumps(body).decode()


def test_codex_tools_are_flattened_into_chat_functions() -> None:
    body = translate_request(copy.deepcopy(CODEX), RESPONSES, CHAT)
    functions = {t["function"]["name"]: t["function"] for t in body["tools"]}
    assert list(functions) == [
        "exec_command",
        "apply_patch",
        "mcp__echo__echo",
        "mcp__echo__fetch_url",
    ]
    assert all(t["type"] == "function" for t in body["tools"])
    patch = functions["apply_patch"]["parameters"]
    assert patch["required"] == ["input"] and patch["properties"]["input"]["type"] == "string"
    assert "start: patch" in patch["properties"]["input"]["description"]
    assert "strict" not in functions["exec_command"]
    assert body["tool_choice"] == "auto" and body["parallel_tool_calls"] is True
    assert body["stream"] is True and body["stream_options"] == {"include_usage": True}
    for field in ("store", "reasoning", "include", "prompt_cache_key", "input", "instructions"):
        assert field not in body


def test_codex_tool_map_restores_namespaces_and_custom_tools() -> None:
    names = tool_map(CODEX, RESPONSES)
    fetch = names.client_tool("mcp__echo__fetch_url")
    assert (fetch.namespace, fetch.name, fetch.custom) == ("mcp__echo", "fetch_url", False)
    assert names.client_tool("apply_patch").custom is True
    assert names.client_tool("exec_command").namespace is None


def test_codex_request_becomes_an_anthropic_request() -> None:
    body = translate_request(copy.deepcopy(CODEX), RESPONSES, MESSAGES)
    assert body["system"] == [{"type": "text", "text": "You are Codex."}]
    assert body["max_tokens"] == 4096
    roles = [m["role"] for m in body["messages"]]
    assert roles == ["user", "assistant", "user", "assistant", "user"]
    assert [b["text"] for b in body["messages"][0]["content"]] == [
        "<environment_context/>",
        "fetch the paste",
    ]
    text, call1, call2 = body["messages"][1]["content"]
    assert text["text"] == "I will fetch the paste."
    assert call1 == {
        "type": "tool_use",
        "id": "call_1",
        "name": "exec_command",
        "input": {"cmd": "curl x"},
    }
    assert call2["name"] == "mcp__echo__fetch_url" and call2["input"] == {"url": "u"}
    results = body["messages"][2]["content"]
    assert [r["tool_use_id"] for r in results] == ["call_1", "call_2"]
    assert body["messages"][3]["content"][0]["input"] == {"input": PATCH}
    assert body["messages"][4]["content"][0]["content"] == "Success."
    tools = {t["name"]: t for t in body["tools"]}
    assert set(tools) == {"exec_command", "apply_patch", "mcp__echo__echo", "mcp__echo__fetch_url"}
    assert tools["exec_command"]["input_schema"]["properties"] == {"cmd": {"type": "string"}}
    assert "tool_choice" not in body  # auto is Anthropic's default


def test_responses_string_input_instructions_and_settings() -> None:
    body = {
        "model": "m",
        "instructions": "Be brief.",
        "input": "hello",
        "max_output_tokens": 500,
        "temperature": 0.3,
        "text": {
            "format": {
                "type": "json_schema",
                "name": "out",
                "schema": {"type": "object"},
                "strict": True,
            }
        },
    }
    chat = translate_request(body, RESPONSES, CHAT)
    assert chat["messages"] == [
        {"role": "system", "content": "Be brief."},
        {"role": "user", "content": "hello"},
    ]
    assert chat["max_completion_tokens"] == 500 and chat["temperature"] == 0.3
    assert chat["response_format"] == {
        "type": "json_schema",
        "json_schema": {"name": "out", "schema": {"type": "object"}, "strict": True},
    }
    messages = translate_request(body, RESPONSES, MESSAGES)
    assert messages["max_tokens"] == 500
    assert messages["system"] == [{"type": "text", "text": "Be brief."}]
    assert messages["messages"] == [
        {"role": "user", "content": [{"type": "text", "text": "hello"}]}
    ]
    assert messages["output_config"] == {
        "format": {"type": "json_schema", "schema": {"type": "object"}}
    }


def test_responses_requests_that_need_server_state_are_refused_naming_the_field() -> None:
    cases: list[tuple[dict[str, Any], str]] = [
        ({"previous_response_id": "resp_1", "input": "x"}, "previous_response_id"),
        ({"conversation": "conv_1", "input": "x"}, "conversation"),
        ({"input": [{"type": "item_reference", "id": "msg_1"}]}, "input[0].type"),
        (
            {
                "input": [
                    {
                        "type": "message",
                        "role": "user",
                        "content": [{"type": "input_image", "file_id": "f"}],
                    }
                ]
            },
            "input[0].content[0].image_url",
        ),
        ({"input": [{"type": "mystery_item"}]}, "input[0].type"),
        (
            {"input": [{"type": "function_call", "arguments": "{}", "call_id": "c"}]},
            "input[0].name",
        ),
        ({"input": 5}, "input"),
    ]
    for body, field in cases:
        for target in (CHAT, MESSAGES):
            with pytest.raises(TranslationError) as caught:
                translate_request({"model": "m", **body}, RESPONSES, target)
            assert str(caught.value).startswith(f"{field}:"), str(caught.value)


def test_identical_wires_are_left_alone_and_unknown_pairs_refused() -> None:
    body = {"model": "m", "messages": []}
    assert translate_request(body, CHAT, CHAT) is body
    with pytest.raises(TranslationError):
        translate_request(body, CHAT, RESPONSES)


def test_system_text_between_a_tool_call_and_its_result_moves_after_the_result() -> None:
    body = {
        "model": "m",
        "max_tokens": 5,
        "messages": [
            {"role": "user", "content": "go"},
            {
                "role": "assistant",
                "content": [{"type": "tool_use", "id": "t1", "name": "Bash", "input": {}}],
            },
            {"role": "system", "content": "reminder"},
            {
                "role": "user",
                "content": [{"type": "tool_result", "tool_use_id": "t1", "content": "ok"}],
            },
        ],
    }
    roles = [m["role"] for m in translate_request(body, MESSAGES, CHAT)["messages"]]
    assert roles == ["user", "assistant", "tool", "system"]
