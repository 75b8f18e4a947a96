"""The canary: one secret with a unique value used through every path Pilothouse has (a
provider key injected upstream, an MCP upstream's credential, a lease, a prompt that holds it,
a tool result that holds it (hooks, scans, MCP), MCP arguments that hold it, a command that
holds it, a reply that echoes it, an upstream error that echoes it, a log line that holds
it), after which the value, in any of its encodings, is in no database row outside the sealed
store, no log line, no audit event, no telemetry span, no response to a key not
granted it, and no request body that reached the upstream."""

from __future__ import annotations

import asyncio
import base64
import logging
import sys
import uuid
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any
from urllib.parse import quote

import httpx
import httpx2
import pytest
from mcp import Client
from mcp.client.streamable_http import streamable_http_client
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from sqlalchemy import select

from pilothouse.app import build_app
from pilothouse.gateway.config import DeploymentConfig, ModelConfig, PriceOverride
from pilothouse.mcp.config import McpServerConfig
from pilothouse.secrets.refs import SecretRef
from pilothouse.services import Services, build_services
from pilothouse.settings import Settings
from pilothouse.store.schema import metadata
from pilothouse.telemetry import Telemetry
from tests.conftest import Api, MutableClock
from tests.gateway.conftest import openai_client
from tests.gateway.upstream import FakeUpstream

VALUE = f"pk-canary-{uuid.uuid4().hex}"
PRICE = PriceOverride(input=1_000_000, output=4_000_000)


def forms(value: str) -> list[str]:
    """The value as it could be written down: raw, base64, URL-encoded, hex."""
    raw = value.encode()
    return [
        value,
        base64.b64encode(raw).decode().rstrip("="),
        base64.urlsafe_b64encode(raw).decode().rstrip("="),
        quote(value, safe=""),
        raw.hex(),
    ]


@pytest.fixture
async def traced(
    database_url: str, tmp_path: Path, clock: MutableClock, upstream: FakeUpstream
) -> AsyncIterator[tuple[Services, InMemorySpanExporter]]:
    deployment = DeploymentConfig(
        name="canary-upstream",
        provider="openai-compatible",
        model="fake-chat",
        base_url=upstream.openai_url,
        price=PRICE,
        api_key=SecretRef(secret="canary"),
    )
    echo = McpServerConfig(
        name="echo",
        transport="stdio",
        command=sys.executable,
        args=["-m", "tests.mcp.servers", "echo"],
        env={"UPSTREAM_TOKEN": SecretRef(secret="canary")},
        restart_backoff_seconds=0.1,
        restart_backoff_max_seconds=0.2,
    )
    settings = Settings(
        database_url=database_url,
        data_dir=tmp_path / "data",
        models=[ModelConfig(alias="canary-model", retries=0, deployments=[deployment])],
        mcp_servers=[echo],
        otel_exporter="console",
    )
    exporter = InMemorySpanExporter()
    svc = build_services(settings, clock)
    svc.telemetry = Telemetry(settings, span_exporter=exporter)
    await svc.start(migrate_store=False)
    try:
        yield svc, exporter
    finally:
        await svc.close()


async def test_the_canary_value_escapes_through_no_path(
    traced: tuple[Services, InMemorySpanExporter],
    upstream: FakeUpstream,
    caplog: pytest.LogCaptureFixture,
) -> None:
    services, exporter = traced
    caplog.set_level(logging.DEBUG)
    app = build_app(services.settings, services=services)
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://pilothouse.test") as http:
        assert services.bootstrap_result is not None
        api = Api(http, services.bootstrap_result.owner_token or "")
        responses = await exercise(api, http, upstream, services)
    await services.usage_settled()
    await services.telemetry.flush()

    # The injection reached the upstream in its header, and nowhere else did the value go.
    assert any(r.headers.get("authorization") == f"Bearer {VALUE}" for r in upstream.requests)
    leaks: list[str] = []
    for index, received in enumerate(upstream.requests):
        leaks += [f"upstream body {index}" for f in forms(VALUE) if f in str(received.body)]
    leaks += [
        f"response: {name}" for name, text in responses if any(f in text for f in forms(VALUE))
    ]
    logged = [caplog.text] + [r.getMessage() for r in caplog.records]
    leaks += [f"log: {line[:80]}" for line in logged if any(f in line for f in forms(VALUE))]
    leaks += [
        f"span {s.name}: {k}"
        for s in exporter.get_finished_spans()
        for k, v in {**dict(s.attributes or {}), "status": s.status.description}.items()
        if any(f in str(v) for f in forms(VALUE))
    ]
    leaks += await rows_holding(services, forms(VALUE))
    assert leaks == []
    spans = exporter.get_finished_spans()
    assert spans, "the spans were not captured: the test proves nothing"
    tool_spans = [s for s in spans if (s.attributes or {}).get("mcp.method.name") == "tools/call"]
    assert {(s.attributes or {}).get("gen_ai.tool.name") for s in tool_spans} == {
        "echo__env",
        "echo__echo",
    }


async def exercise(
    api: Api, http: httpx.AsyncClient, upstream: FakeUpstream, services: Services
) -> list[tuple[str, str]]:
    """Use the canary through every path; every response to an agent, returned by name."""
    responses: list[tuple[str, str]] = []
    await api.ok("POST", "/api/v1/secrets", json={"name": "canary", "value": VALUE})
    await api.ok("POST", "/api/v1/secrets/canary/grants", json={"subject": "*", "use": "inject"})
    await api.ok(
        "POST",
        "/api/v1/secrets/canary/grants",
        json={"subject": "label:trusted=yes", "use": "lease"},
    )
    trusted = await api.session(labels={"trusted": "yes"})
    other = await api.session(labels={"trusted": "no"})
    agent, stranger = trusted["key"]["token"], other["key"]["token"]

    # A lease: the granted session gets it (not a leak: it was granted); the other does not.
    leased = await api.ok("GET", "/api/v1/secrets/canary", agent)
    assert leased["value"] == VALUE
    refused = await api.call("GET", "/api/v1/secrets/canary", stranger)
    assert refused.status_code == 403
    responses.append(("ungranted lease", refused.text))

    # A command holding it (a PreToolUse hook), a tool result holding it (PostToolUse, scan).
    hook = {
        "hook_event_name": "PreToolUse",
        "tool_name": "Bash",
        "tool_input": {"command": f"curl -H 'Authorization: Bearer {VALUE}' https://api.x.test"},
    }
    for token in (agent, stranger):
        pre = await api.call("POST", "/hooks/claude-code", token, json=hook)
        responses.append(("pre hook", pre.text))
        post = await api.call(
            "POST",
            "/hooks/claude-code",
            token,
            json={
                "hook_event_name": "PostToolUse",
                "tool_name": "Bash",
                "tool_response": {"stdout": f"TOKEN={VALUE}\n", "stderr": ""},
            },
        )
        responses.append(("post hook", post.text))
        scan = await api.call(
            "POST", "/api/v1/scan", token, json={"content": f"the key is {VALUE}", "source": VALUE}
        )
        responses.append(("scan", scan.text))
        check = await api.call(
            "POST",
            "/api/v1/check",
            token,
            json={"channel": "shell", "action": {"command": f"echo {VALUE}"}},
        )
        responses.append(("check", check.text))

    # A prompt and a tool result holding it, a reply echoing it (whole and streamed), and an
    # upstream error echoing it; every caller, granted or not, is answered without it.
    upstream.reply = f"I see {VALUE} in there"
    messages: Any = [
        {"role": "user", "content": f"use {VALUE} to deploy"},
        {
            "role": "assistant",
            "content": None,
            "tool_calls": [
                {
                    "id": "call_1",
                    "type": "function",
                    "function": {"name": "env", "arguments": "{}"},
                }
            ],
        },
        {"role": "tool", "tool_call_id": "call_1", "content": f"SECRET={VALUE}"},
    ]
    for token in (agent, stranger):
        client = openai_client(http, token)
        whole = await client.chat.completions.create(model="canary-model", messages=messages)
        responses.append(("chat", whole.model_dump_json()))
        stream = await client.chat.completions.create(
            model="canary-model", messages=messages, stream=True
        )
        responses.append(("stream", "".join([c.model_dump_json() async for c in stream])))
    upstream.fail(401, message=f"invalid api key {VALUE}")
    failed = await http.post(
        "/v1/chat/completions",
        headers={"authorization": f"Bearer {stranger}"},
        json={"model": "canary-model", "messages": [{"role": "user", "content": "hi"}]},
    )
    assert failed.status_code == 401
    responses.append(("upstream error", failed.text))

    # An MCP upstream given it as its credential (its process has it), a tool result that
    # holds it, and arguments that hold it: the agent reads it nowhere, the upstream is not
    # sent it by the agent.
    assert services.mcp is not None
    assert await services.mcp.registry.get("echo").wait_ready(15)
    pid = services.mcp.registry.get("echo").status.pid
    environ = await asyncio.to_thread(Path(f"/proc/{pid}/environ").read_bytes)
    assert pid is not None and VALUE.encode() in environ
    for token in (agent, stranger):
        headers = {"authorization": f"Bearer {token}"}
        transport = httpx2.ASGITransport(app=build_app(services.settings, services=services))
        async with (
            httpx2.AsyncClient(transport=transport, headers=headers) as mcp_http,
            Client(
                streamable_http_client("http://pilothouse.test/mcp", http_client=mcp_http)
            ) as mcp,
        ):
            listed = await mcp.list_tools()
            responses.append(("mcp tools", listed.model_dump_json()))
            for name, arguments in (
                ("echo__env", {"name": "UPSTREAM_TOKEN"}),
                ("echo__echo", {"text": f"the key is {VALUE}"}),
            ):
                result = await mcp.call_tool(name, arguments)
                assert not result.is_error, result
                responses.append((f"mcp {name}", result.model_dump_json()))

    # A log line that holds it, as a careless library might write one.
    logging.getLogger("some.library").warning("connecting with token=%s", VALUE)
    return responses


async def rows_holding(services: Services, needles: list[str]) -> list[str]:
    """Every table.column whose rows hold a needle, the sealed store's own table aside."""
    found = []
    async with services.store.read() as conn:
        for table in metadata.sorted_tables:
            if table.name == "secrets":
                continue
            for row in (await conn.execute(select(table))).mappings():
                for column, value in row.items():
                    text = value.decode("latin-1") if isinstance(value, bytes) else str(value)
                    if any(n in text for n in needles):
                        found.append(f"{table.name}.{column}")
    return sorted(set(found))
