"""Telemetry: a GenAI span per settled call when an exporter is configured; Prometheus /metrics."""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator
from dataclasses import replace
from pathlib import Path
from typing import Any

import httpx
import pytest
from aiohttp import web
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import (
    ExportTraceServiceRequest,
    ExportTraceServiceResponse,
)
from opentelemetry.sdk.trace import ReadableSpan
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import SpanKind, StatusCode
from prometheus_client.parser import text_string_to_metric_families

from pilothouse.app import build_app
from pilothouse.errors import ConfigError
from pilothouse.services import Services, build_services
from pilothouse.settings import Settings, load_settings
from pilothouse.telemetry import (
    MAX_MODEL_LABELS,
    CallRecord,
    Telemetry,
    operation_name,
    traces_endpoint,
)
from tests.conftest import MutableClock
from tests.servers import free_port

TRACE_ID = "4bf92f3577b34da6a3ce929d0e0e4736"
PARENT_SPAN_ID = "00f067aa0ba902b7"
STARTED_NS = 1_790_000_000_000_000_000
Samples = dict[tuple[str, frozenset[tuple[str, str]]], float]


def record(**changes: Any) -> CallRecord:
    """A settled, successful streaming chat call; ``changes`` override fields."""
    base = CallRecord(
        request_id="req_01TEST",
        operation="chat",
        provider="anthropic",
        deployment="anthropic/claude-sonnet-4-5",
        request_model="claude-sonnet",
        response_model="claude-sonnet-4-5-20250929",
        status="ok",
        http_status=200,
        input_tokens=100,
        output_tokens=50,
        cache_read_tokens=1000,
        cache_write_tokens=200,
        reasoning_tokens=10,
        cost_picos=1_234_500_000,
        stream=True,
        retries=1,
        ttfb_ms=250,
        started_ns=STARTED_NS,
        ended_ns=STARTED_NS + 1_500_000_000,
        org_id="org_1",
        session_id="ses_1",
        user_id="usr_1",
        team_id="team_1",
        project="checkout",
        repository="github.com/acme/shop",
        traceparent=None,
    )
    return replace(base, **changes)


@pytest.fixture
async def traced() -> AsyncIterator[tuple[Telemetry, InMemorySpanExporter]]:
    """Started Telemetry whose spans go to an in-memory exporter."""
    exporter = InMemorySpanExporter()
    telemetry = Telemetry(Settings(otel_service_name="gw-test"), span_exporter=exporter)
    telemetry.start()
    try:
        yield telemetry, exporter
    finally:
        await telemetry.stop()


async def spans_of(telemetry: Telemetry, exporter: InMemorySpanExporter) -> list[ReadableSpan]:
    """Every span exported so far (after flushing the batch processor)."""
    await telemetry.flush()
    return list(exporter.get_finished_spans())


def samples(text: str) -> Samples:
    """Prometheus text parsed into {(sample name, labels): value}."""
    return {
        (s.name, frozenset(s.labels.items())): s.value
        for family in text_string_to_metric_families(text)
        for s in family.samples
    }


def value(
    parsed: dict[tuple[str, frozenset[tuple[str, str]]], float], name: str, **labels: str
) -> float:
    """One sample's value (KeyError when the series does not exist)."""
    return parsed[(name, frozenset(labels.items()))]


async def test_a_settled_call_becomes_a_client_span_with_genai_attributes(
    traced: tuple[Telemetry, InMemorySpanExporter],
) -> None:
    telemetry, exporter = traced
    telemetry.call_finished(
        record(max_tokens=1024, response_id="msg_1", finish_reasons=("end_turn",))
    )
    (span,) = await spans_of(telemetry, exporter)
    assert span.name == "chat claude-sonnet"
    assert span.kind is SpanKind.CLIENT
    assert span.start_time == STARTED_NS
    assert span.end_time == STARTED_NS + 1_500_000_000
    assert span.parent is None
    assert span.status.status_code is StatusCode.UNSET
    assert span.resource.attributes["service.name"] == "gw-test"
    attrs = dict(span.attributes or {})
    assert attrs["gen_ai.operation.name"] == "chat"
    assert attrs["gen_ai.provider.name"] == "anthropic"
    assert attrs["gen_ai.request.model"] == "claude-sonnet"
    assert attrs["gen_ai.response.model"] == "claude-sonnet-4-5-20250929"
    assert attrs["gen_ai.request.max_tokens"] == 1024
    assert attrs["gen_ai.request.stream"] is True
    assert attrs["gen_ai.response.id"] == "msg_1"
    assert attrs["gen_ai.response.finish_reasons"] == ("end_turn",)
    assert attrs["gen_ai.response.time_to_first_chunk"] == 0.25
    # The conventions' input count includes cache reads and writes; Pilothouse's excludes them.
    assert attrs["gen_ai.usage.input_tokens"] == 1300
    assert attrs["gen_ai.usage.output_tokens"] == 50
    assert attrs["gen_ai.usage.cache_read.input_tokens"] == 1000
    assert attrs["gen_ai.usage.cache_creation.input_tokens"] == 200
    assert attrs["gen_ai.usage.reasoning.output_tokens"] == 10
    assert attrs["session.id"] == "ses_1"
    assert attrs["user.id"] == "usr_1"
    assert attrs["pilothouse.request_id"] == "req_01TEST"
    assert attrs["pilothouse.deployment"] == "anthropic/claude-sonnet-4-5"
    assert attrs["pilothouse.org_id"] == "org_1"
    assert attrs["pilothouse.team_id"] == "team_1"
    assert attrs["pilothouse.project"] == "checkout"
    assert attrs["pilothouse.repository"] == "github.com/acme/shop"
    assert attrs["pilothouse.cost_picos"] == 1_234_500_000
    assert attrs["pilothouse.cost_usd"] == "0.0012345"
    assert attrs["pilothouse.retries"] == 1
    assert attrs["pilothouse.ttfb_ms"] == 250
    assert "error.type" not in attrs


async def test_a_call_carrying_a_traceparent_becomes_a_child_of_the_clients_span(
    traced: tuple[Telemetry, InMemorySpanExporter],
) -> None:
    telemetry, exporter = traced
    telemetry.call_finished(record(traceparent=f"00-{TRACE_ID}-{PARENT_SPAN_ID}-01"))
    (span,) = await spans_of(telemetry, exporter)
    assert span.parent is not None
    assert span.parent.is_remote
    assert format(span.parent.span_id, "016x") == PARENT_SPAN_ID
    assert span.context is not None
    assert format(span.context.trace_id, "032x") == TRACE_ID


async def test_a_malformed_traceparent_starts_a_new_trace(
    traced: tuple[Telemetry, InMemorySpanExporter],
) -> None:
    telemetry, exporter = traced
    telemetry.call_finished(record(traceparent="00-not-a-trace-01"))
    (span,) = await spans_of(telemetry, exporter)
    assert span.parent is None


async def test_a_traceparent_the_client_sampled_out_makes_no_span(
    traced: tuple[Telemetry, InMemorySpanExporter],
) -> None:
    telemetry, exporter = traced
    telemetry.call_finished(record(traceparent=f"00-{TRACE_ID}-{PARENT_SPAN_ID}-00"))
    assert await spans_of(telemetry, exporter) == []


async def test_a_failed_call_has_error_type_and_an_error_status(
    traced: tuple[Telemetry, InMemorySpanExporter],
) -> None:
    telemetry, exporter = traced
    failed = record(
        status="upstream_error", http_status=502, error="upstream answered 529", stream=False
    )
    telemetry.call_finished(failed)
    (span,) = await spans_of(telemetry, exporter)
    attrs = dict(span.attributes or {})
    assert attrs["error.type"] == "upstream_error"
    assert attrs["pilothouse.http_status"] == 502
    assert "gen_ai.request.stream" not in attrs
    assert span.status.status_code is StatusCode.ERROR
    assert span.status.description == "upstream answered 529"


async def test_a_call_refused_before_routing_is_a_span_without_a_provider(
    traced: tuple[Telemetry, InMemorySpanExporter],
) -> None:
    telemetry, exporter = traced
    refused = record(
        provider="",
        deployment=None,
        request_model="",
        response_model=None,
        status="refused",
        http_status=401,
        error="the key is revoked",
        input_tokens=0,
        output_tokens=0,
        cache_read_tokens=0,
        cache_write_tokens=0,
        reasoning_tokens=0,
        cost_picos=0,
        ttfb_ms=None,
    )
    telemetry.call_finished(refused)
    (span,) = await spans_of(telemetry, exporter)
    attrs = dict(span.attributes or {})
    assert span.name == "chat"
    assert "gen_ai.provider.name" not in attrs
    assert "pilothouse.deployment" not in attrs
    assert attrs["error.type"] == "refused"
    assert attrs["gen_ai.usage.input_tokens"] == 0


def test_calls_are_named_by_the_conventions_operations() -> None:
    assert operation_name("openai-chat") == "chat"
    assert operation_name("openai-responses") == "chat"
    assert operation_name("anthropic-messages") == "chat"
    assert operation_name("openai-embeddings") == "embeddings"
    assert operation_name("anthropic-count-tokens") == "count_tokens"


async def test_no_spans_are_made_without_an_exporter(services: Services) -> None:
    assert services.settings.otel_exporter == "none"
    assert services.telemetry.tracing is False
    services.telemetry.call_finished(record())
    assert services.telemetry.tracing is False


async def test_a_record_that_breaks_telemetry_is_logged_not_raised(
    traced: tuple[Telemetry, InMemorySpanExporter], caplog: pytest.LogCaptureFixture
) -> None:
    telemetry, _ = traced
    with caplog.at_level(logging.ERROR, logger="pilothouse.telemetry"):
        telemetry.call_finished(record(request_model=None))
    assert "telemetry for call req_01TEST failed" in caplog.text


async def test_the_otlp_exporter_posts_spans_to_the_collector() -> None:
    received: list[bytes] = []

    async def collect(request: web.Request) -> web.Response:
        received.append(await request.read())
        body = ExportTraceServiceResponse().SerializeToString()
        return web.Response(body=body, content_type="application/x-protobuf")

    collector = web.Application()
    collector.router.add_post("/v1/traces", collect)
    runner = web.AppRunner(collector)
    await runner.setup()
    port = free_port()
    await web.TCPSite(runner, "127.0.0.1", port).start()
    # A bare collector URL gets the traces path.
    settings = Settings(otel_exporter="otlp", otel_endpoint=f"http://127.0.0.1:{port}")
    telemetry = Telemetry(settings)
    telemetry.start()
    try:
        telemetry.call_finished(record(traceparent=f"00-{TRACE_ID}-{PARENT_SPAN_ID}-01"))
        await telemetry.flush()
    finally:
        await telemetry.stop()
        await runner.cleanup()
    assert len(received) == 1
    request = ExportTraceServiceRequest.FromString(received[0])
    (resource_spans,) = request.resource_spans
    resource = {a.key: a.value.string_value for a in resource_spans.resource.attributes}
    assert resource["service.name"] == "pilothouse"
    (span,) = resource_spans.scope_spans[0].spans
    assert span.name == "chat claude-sonnet"
    assert span.kind == span.SPAN_KIND_CLIENT
    assert span.trace_id.hex() == TRACE_ID
    assert span.parent_span_id.hex() == PARENT_SPAN_ID
    assert span.start_time_unix_nano == STARTED_NS
    attrs = {a.key: a.value for a in span.attributes}
    assert attrs["gen_ai.request.model"].string_value == "claude-sonnet"
    assert attrs["gen_ai.usage.output_tokens"].int_value == 50


async def test_the_console_exporter_prints_spans(capsys: pytest.CaptureFixture[str]) -> None:
    telemetry = Telemetry(Settings(otel_exporter="console"))
    telemetry.start()
    try:
        assert telemetry.tracing
        telemetry.call_finished(record())
        await telemetry.flush()
    finally:
        await telemetry.stop()
    assert '"gen_ai.request.model": "claude-sonnet"' in capsys.readouterr().out


def test_a_bare_collector_url_gets_the_traces_path() -> None:
    assert traces_endpoint(None) == "http://localhost:4318/v1/traces"
    assert traces_endpoint("http://collector:4318") == "http://collector:4318/v1/traces"
    assert traces_endpoint("http://collector:4318/") == "http://collector:4318/v1/traces"
    assert traces_endpoint("https://otel.example/api/traces") == "https://otel.example/api/traces"


def test_telemetry_settings_come_from_the_environment() -> None:
    settings = load_settings(
        environ={
            "PILOTHOUSE_OTEL_EXPORTER": "otlp",
            "PILOTHOUSE_OTEL_ENDPOINT": "http://collector:4318",
            "PILOTHOUSE_OTEL_SERVICE_NAME": "gateway-eu",
            "PILOTHOUSE_METRICS_ENABLED": "false",
        }
    )
    assert settings.otel_exporter == "otlp"
    assert settings.otel_endpoint == "http://collector:4318"
    assert settings.otel_service_name == "gateway-eu"
    assert settings.metrics_enabled is False
    with pytest.raises(ConfigError, match="otel_exporter"):
        load_settings(environ={"PILOTHOUSE_OTEL_EXPORTER": "jaeger"})
    with pytest.raises(ConfigError, match="otel_endpoint"):
        load_settings(environ={"PILOTHOUSE_OTEL_ENDPOINT": "collector:4318"})


async def test_metrics_count_calls_tokens_cost_and_latency_by_model(
    client: httpx.AsyncClient, services: Services
) -> None:
    services.telemetry.call_finished(record())
    services.telemetry.call_finished(record(retries=0, ttfb_ms=None, cost_picos=2_000_000_000))
    services.telemetry.call_finished(
        record(status="upstream_error", http_status=502, input_tokens=0, output_tokens=0)
    )
    response = await client.get("/metrics")  # no credentials: scrapers send none
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/plain; version=0.0.4")
    parsed = samples(response.text)
    model, deployment = "claude-sonnet", "anthropic/claude-sonnet-4-5"
    requests = "pilothouse_llm_requests_total"
    assert value(parsed, requests, model=model, deployment=deployment, status="ok") == 2
    assert value(parsed, requests, model=model, deployment=deployment, status="upstream_error") == 1
    tokens = "pilothouse_llm_tokens_total"
    assert value(parsed, tokens, model=model, kind="input") == 200
    assert value(parsed, tokens, model=model, kind="output") == 100
    assert value(parsed, tokens, model=model, kind="cache_read") == 3000
    assert value(parsed, tokens, model=model, kind="cache_write") == 600
    assert value(parsed, tokens, model=model, kind="reasoning") == 30
    cost = value(parsed, "pilothouse_llm_cost_usd_total", model=model)
    assert cost == pytest.approx((1_234_500_000 * 2 + 2_000_000_000) / 1e12)
    assert value(parsed, "pilothouse_llm_retries_total", model=model) == 2
    duration = "pilothouse_llm_request_duration_seconds"
    assert value(parsed, f"{duration}_count", model=model, status="ok") == 2
    assert value(parsed, f"{duration}_sum", model=model, status="ok") == pytest.approx(3.0)
    assert value(parsed, f"{duration}_bucket", model=model, status="ok", le="1.0") == 0
    assert value(parsed, f"{duration}_bucket", model=model, status="ok", le="2.5") == 2
    assert value(parsed, f"{duration}_bucket", model=model, status="ok", le="120.0") == 2
    ttfb = "pilothouse_llm_time_to_first_byte_seconds"
    assert value(parsed, f"{ttfb}_count", model=model) == 2
    assert value(parsed, f"{ttfb}_bucket", model=model, le="0.25") == 2
    assert value(parsed, f"{ttfb}_bucket", model=model, le="0.1") == 0


async def test_metrics_are_not_in_the_openapi_schema(client: httpx.AsyncClient) -> None:
    spec = (await client.get("/api/openapi.json")).json()
    assert "/metrics" not in spec["paths"]
    assert (await client.get("/metrics")).status_code == 200


async def test_metrics_negotiate_openmetrics(client: httpx.AsyncClient) -> None:
    response = await client.get("/metrics", headers={"accept": "application/openmetrics-text"})
    assert response.headers["content-type"].startswith("application/openmetrics-text")
    assert response.text.endswith("# EOF\n")


def test_the_model_label_is_capped_against_arbitrary_model_names() -> None:
    telemetry = Telemetry(Settings())
    for n in range(MAX_MODEL_LABELS + 5):
        telemetry.call_finished(record(request_model=f"model-{n}"))
    body, _ = telemetry.metrics()
    parsed = samples(body.decode())
    models = {
        dict(labels)["model"]
        for (name, labels) in parsed
        if name == "pilothouse_llm_requests_total"
    }
    assert len(models) == MAX_MODEL_LABELS + 1
    assert "model-0" in models
    assert f"model-{MAX_MODEL_LABELS}" not in models
    deployment = "anthropic/claude-sonnet-4-5"
    other = value(
        parsed, "pilothouse_llm_requests_total", model="other", deployment=deployment, status="ok"
    )
    assert other == 5


def test_each_telemetry_counts_in_its_own_registry() -> None:
    first, second = Telemetry(Settings()), Telemetry(Settings())
    first.call_finished(record())
    assert b'model="claude-sonnet"' in first.metrics()[0]
    assert b'model="claude-sonnet"' not in second.metrics()[0]


async def test_metrics_answer_404_when_disabled(
    database_url: str, tmp_path: Path, clock: MutableClock
) -> None:
    settings = Settings(database_url=database_url, data_dir=tmp_path / "d", metrics_enabled=False)
    services = build_services(settings, clock)
    await services.start(migrate_store=False)
    try:
        services.telemetry.call_finished(record())
        transport = httpx.ASGITransport(app=build_app(settings, services=services))
        async with httpx.AsyncClient(transport=transport, base_url="http://t") as client:
            response = await client.get("/metrics")
    finally:
        await services.close()
    assert response.status_code == 404
    assert response.json()["error"]["code"] == "not_found"
    assert "metrics_enabled" in response.json()["error"]["message"]
