"""Telemetry: an OpenTelemetry span and Prometheus metrics for every settled LLM call.

The pipeline hands over one ``CallRecord`` when a call is settled; ``Telemetry.call_finished``
turns it into a span (only when an exporter is configured: the span is made after the fact with
the call's own start and end times, and exported off the request path by a batch processor) and
into counter and histogram updates. Spans follow the OpenTelemetry GenAI semantic conventions and
never carry prompt or response content, nor any key.
"""

from __future__ import annotations

import asyncio
import logging
import sys
from collections.abc import Mapping
from dataclasses import dataclass
from decimal import Decimal
from typing import Final
from urllib.parse import urlsplit

from opentelemetry.context import Context
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import (
    BatchSpanProcessor,
    ConsoleSpanExporter,
    SpanExporter,
)
from opentelemetry.sdk.trace.sampling import ALWAYS_ON, ParentBased
from opentelemetry.trace import SpanKind, Status, StatusCode, Tracer
from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator
from opentelemetry.util.types import AttributeValue
from prometheus_client import CollectorRegistry, Counter, Histogram
from prometheus_client.exposition import choose_encoder

from pilothouse import __version__
from pilothouse.settings import Settings

log = logging.getLogger(__name__)

DEFAULT_OTLP_ENDPOINT: Final = "http://localhost:4318/v1/traces"
MAX_MODEL_LABELS: Final = 200
"""Distinct ``model`` label values before further models are counted as ``other``."""
OTHER_MODEL: Final = "other"
LATENCY_BUCKETS: Final = (
    0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 20.0, 30.0, 60.0, 120.0,
)  # fmt: skip
TOKEN_KINDS: Final = ("input", "output", "cache_read", "cache_write", "reasoning")

# gen_ai.operation.name by the gateway's wire format (``WireFormat`` values). Chat completions,
# the Responses API and Anthropic messages are all "chat" in the conventions; count_tokens has
# no convention, so it gets its own name.
OPERATIONS: Final[Mapping[str, str]] = {
    "openai-chat": "chat",
    "openai-responses": "chat",
    "anthropic-messages": "chat",
    "openai-embeddings": "embeddings",
    "anthropic-count-tokens": "count_tokens",
}


def operation_name(wire: str) -> str:
    """The ``gen_ai.operation.name`` of a call in wire format ``wire``."""
    return OPERATIONS.get(wire, "chat")


@dataclass(frozen=True, slots=True)
class CallRecord:
    """What the pipeline hands over once a call is settled; never content, never keys.

    Token counts mean what the usage row's columns mean: ``input_tokens`` excludes cache reads
    and writes, ``output_tokens`` includes reasoning. ``status`` must be one of the pipeline's
    fixed codes (it is a metric label). A call refused before a deployment was chosen has
    ``provider=""`` and ``deployment=None`` (and ``request_model=""`` if none was read).
    """

    request_id: str
    operation: str
    provider: str
    deployment: str | None
    request_model: str
    response_model: str | None
    status: str
    http_status: int
    input_tokens: int
    output_tokens: int
    cache_read_tokens: int
    cache_write_tokens: int
    reasoning_tokens: int
    cost_picos: int
    stream: bool
    retries: int
    ttfb_ms: int | None
    started_ns: int
    ended_ns: int
    org_id: str
    session_id: str | None
    user_id: str | None
    team_id: str | None
    project: str | None
    repository: str | None
    traceparent: str | None
    error: str | None = None
    endpoint: str | None = None
    max_tokens: int | None = None
    response_id: str | None = None
    finish_reasons: tuple[str, ...] = ()
    server_address: str | None = None
    server_port: int | None = None


class Telemetry:
    """Spans (when an exporter is configured) and Prometheus metrics for settled LLM calls."""

    def __init__(self, settings: Settings, *, span_exporter: SpanExporter | None = None) -> None:
        """``span_exporter`` replaces the one ``settings`` names (tests pass an in-memory one)."""
        self._settings = settings
        self._exporter_override = span_exporter
        self._provider: TracerProvider | None = None
        self._tracer: Tracer | None = None
        self._propagator = TraceContextTextMapPropagator()
        self._metrics = _Metrics() if settings.metrics_enabled else None

    @property
    def tracing(self) -> bool:
        """Whether spans are being made."""
        return self._tracer is not None

    def start(self) -> None:
        """Set up the span pipeline if an exporter is configured (no-op otherwise)."""
        if self._provider is not None:
            return
        exporter = self._exporter_override or _exporter_for(self._settings)
        if exporter is None:
            return
        resource = Resource(
            {"service.name": self._settings.otel_service_name, "service.version": __version__}
        )
        # A client's sampled-out traceparent is honoured; calls without one are all sampled.
        provider = TracerProvider(
            sampler=ParentBased(ALWAYS_ON), resource=resource, shutdown_on_exit=False
        )
        provider.add_span_processor(BatchSpanProcessor(exporter))
        self._provider = provider
        self._tracer = provider.get_tracer("pilothouse", __version__)

    async def flush(self) -> None:
        """Export every span made so far (blocking work runs in a thread)."""
        if self._provider is not None:
            await asyncio.to_thread(self._provider.force_flush)

    async def stop(self) -> None:
        """Export what is pending and stop the span pipeline."""
        provider, self._provider, self._tracer = self._provider, None, None
        if provider is not None:
            await asyncio.to_thread(provider.shutdown)

    def call_finished(self, record: CallRecord) -> None:
        """Count a settled call and, when tracing, queue its span; cheap, never raises."""
        try:
            if self._metrics is not None:
                self._metrics.observe(record)
            if self._tracer is not None:
                self._emit_span(self._tracer, record)
        except Exception:
            # Telemetry must never fail a call that has already been served and recorded.
            log.exception("telemetry for call %s failed", record.request_id)

    def tool_called(
        self,
        *,
        method: str,
        tool: str,
        server: str,
        started_ns: int,
        ended_ns: int,
        session_id: str | None,
        org_id: str,
        request_id: str,
        error: str | None,
    ) -> None:
        """When tracing, queue the span of one MCP request through ``/mcp`` (``tools/call``,
        ``prompts/get``, ``resources/read``; MCP and GenAI semantic conventions:
        ``mcp.method.name``, ``gen_ai.tool.name`` for a tool); never raises."""
        tracer = self._tracer
        if tracer is None:
            return
        try:
            attributes: dict[str, AttributeValue] = {
                "mcp.method.name": method,
                "pilothouse.mcp.name": tool,
                "pilothouse.mcp.server": server,
                "pilothouse.org_id": org_id,
                "pilothouse.request_id": request_id,
            }
            if method == "tools/call":
                attributes["gen_ai.operation.name"] = "execute_tool"
                attributes["gen_ai.tool.name"] = tool
            if session_id is not None:
                attributes["session.id"] = session_id
            if error is not None:
                attributes["error.type"] = "tool_error"
            span = tracer.start_span(
                f"{method} {tool}",
                kind=SpanKind.SERVER,
                attributes=attributes,
                start_time=started_ns,
            )
            if error is not None:
                span.set_status(Status(StatusCode.ERROR, error[:500]))
            span.end(end_time=max(ended_ns, started_ns))
        except Exception:
            log.exception("telemetry for tool call %s failed", request_id)

    def metrics(self, accept: str = "") -> tuple[bytes, str]:
        """The Prometheus exposition (negotiated from ``accept``) and its content type."""
        if self._metrics is None:
            return b"", "text/plain; charset=utf-8"
        encoder, content_type = choose_encoder(accept)
        return encoder(self._metrics.registry), content_type

    def _emit_span(self, tracer: Tracer, record: CallRecord) -> None:
        parent = Context()
        if record.traceparent:
            parent = self._propagator.extract({"traceparent": record.traceparent}, parent)
        name = f"{record.operation} {record.request_model}".rstrip()
        span = tracer.start_span(
            name,
            context=parent,
            kind=SpanKind.CLIENT,
            attributes=span_attributes(record),
            start_time=record.started_ns,
        )
        if record.status != "ok":
            span.set_status(Status(StatusCode.ERROR, (record.error or record.status)[:500]))
        span.end(end_time=max(record.ended_ns, record.started_ns))


def span_attributes(record: CallRecord) -> dict[str, AttributeValue]:
    """A call's span attributes: GenAI semantic conventions, then ``pilothouse.*``."""
    attrs: dict[str, AttributeValue] = {
        "gen_ai.operation.name": record.operation,
        "gen_ai.request.model": record.request_model,
        # The conventions count every input token; Pilothouse's input excludes cached ones.
        "gen_ai.usage.input_tokens": (
            record.input_tokens + record.cache_read_tokens + record.cache_write_tokens
        ),
        "gen_ai.usage.output_tokens": record.output_tokens,
        "gen_ai.usage.cache_read.input_tokens": record.cache_read_tokens,
        "gen_ai.usage.cache_creation.input_tokens": record.cache_write_tokens,
        "pilothouse.request_id": record.request_id,
        "pilothouse.org_id": record.org_id,
        "pilothouse.status": record.status,
        "pilothouse.http_status": record.http_status,
        "pilothouse.cost_picos": record.cost_picos,
        "pilothouse.cost_usd": _usd(record.cost_picos),
        "pilothouse.retries": record.retries,
    }
    optional: dict[str, AttributeValue | None] = {
        "gen_ai.provider.name": record.provider or None,
        "gen_ai.response.model": record.response_model,
        "gen_ai.request.max_tokens": record.max_tokens,
        "gen_ai.response.id": record.response_id,
        "gen_ai.usage.reasoning.output_tokens": record.reasoning_tokens or None,
        "server.address": record.server_address,
        "server.port": record.server_port if record.server_address else None,
        "session.id": record.session_id,
        "user.id": record.user_id,
        "pilothouse.deployment": record.deployment,
        "pilothouse.endpoint": record.endpoint,
        "pilothouse.ttfb_ms": record.ttfb_ms,
        "pilothouse.team_id": record.team_id,
        "pilothouse.project": record.project,
        "pilothouse.repository": record.repository,
    }
    attrs.update({k: v for k, v in optional.items() if v is not None})
    if record.stream:
        attrs["gen_ai.request.stream"] = True
        if record.ttfb_ms is not None:
            attrs["gen_ai.response.time_to_first_chunk"] = record.ttfb_ms / 1000
    if record.finish_reasons:
        attrs["gen_ai.response.finish_reasons"] = list(record.finish_reasons)
    if record.status != "ok":
        attrs["error.type"] = record.status
    return attrs


def _usd(picos: int) -> str:
    """Exact dollars from pico-dollars, as a decimal string."""
    return format(Decimal(picos).scaleb(-12).normalize(), "f")


def _exporter_for(settings: Settings) -> SpanExporter | None:
    if settings.otel_exporter == "console":
        return ConsoleSpanExporter(service_name=settings.otel_service_name, out=sys.stdout)
    if settings.otel_exporter == "otlp":
        # Imported here: the OTLP exporter pulls in protobuf and an HTTP client, which a server
        # without an exporter never needs.
        from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter

        return OTLPSpanExporter(endpoint=traces_endpoint(settings.otel_endpoint), timeout=10)
    return None


def traces_endpoint(url: str | None) -> str:
    """The OTLP/HTTP traces URL for ``otel_endpoint``: a bare collector URL gets /v1/traces."""
    if not url:
        return DEFAULT_OTLP_ENDPOINT
    if urlsplit(url).path in ("", "/"):
        return url.rstrip("/") + "/v1/traces"
    return url


class _ModelLabels:
    """Bounds the ``model`` label: clients may send any model string."""

    def __init__(self, limit: int) -> None:
        self._seen: set[str] = set()
        self._limit = limit

    def __call__(self, model: str) -> str:
        model = model[:100]
        if model in self._seen:
            return model
        if len(self._seen) >= self._limit:
            return OTHER_MODEL
        self._seen.add(model)
        return model


@dataclass(frozen=True, slots=True)
class _Children:
    """The labelled series one (model, deployment, status) updates, looked up once."""

    requests: Counter
    tokens: tuple[Counter, ...]
    cost: Counter
    duration: Histogram
    ttfb: Histogram
    retries: Counter


class _Metrics:
    """Prometheus series in a registry of their own (several apps may share a process)."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        reg = self.registry
        self.requests = Counter(
            "pilothouse_llm_requests",
            "Settled LLM calls by requested model, deployment and outcome.",
            ["model", "deployment", "status"],
            registry=reg,
        )
        self.tokens = Counter(
            "pilothouse_llm_tokens",
            "Tokens by requested model and kind (input excludes cache reads and writes).",
            ["model", "kind"],
            registry=reg,
        )
        self.cost = Counter(
            "pilothouse_llm_cost_usd",
            "Cost in US dollars by requested model (a float for dashboards; the ledger is exact).",
            ["model"],
            registry=reg,
        )
        self.duration = Histogram(
            "pilothouse_llm_request_duration_seconds",
            "Time from receiving an LLM call to settling it.",
            ["model", "status"],
            buckets=LATENCY_BUCKETS,
            registry=reg,
        )
        self.ttfb = Histogram(
            "pilothouse_llm_time_to_first_byte_seconds",
            "Time from receiving an LLM call to the upstream's first byte.",
            ["model"],
            buckets=LATENCY_BUCKETS,
            registry=reg,
        )
        self.retries = Counter(
            "pilothouse_llm_retries",
            "Upstream attempts beyond the first, by requested model.",
            ["model"],
            registry=reg,
        )
        self._models = _ModelLabels(MAX_MODEL_LABELS)
        self._children: dict[tuple[str, str, str], _Children] = {}

    def observe(self, record: CallRecord) -> None:
        """Count one call."""
        model = self._models(record.request_model)
        key = (model, record.deployment or "", record.status)
        children = self._children.get(key) or self._make_children(key)
        children.requests.inc()
        counts = (
            record.input_tokens,
            record.output_tokens,
            record.cache_read_tokens,
            record.cache_write_tokens,
            record.reasoning_tokens,
        )
        for counter, count in zip(children.tokens, counts, strict=True):
            if count > 0:
                counter.inc(count)
        if record.cost_picos > 0:
            children.cost.inc(record.cost_picos / 1e12)
        if record.retries > 0:
            children.retries.inc(record.retries)
        children.duration.observe(max(record.ended_ns - record.started_ns, 0) / 1e9)
        if record.ttfb_ms is not None:
            children.ttfb.observe(record.ttfb_ms / 1000)

    def _make_children(self, key: tuple[str, str, str]) -> _Children:
        model, deployment, status = key
        children = _Children(
            requests=self.requests.labels(model, deployment, status),
            tokens=tuple(self.tokens.labels(model, kind) for kind in TOKEN_KINDS),
            cost=self.cost.labels(model),
            duration=self.duration.labels(model, status),
            ttfb=self.ttfb.labels(model),
            retries=self.retries.labels(model),
        )
        self._children[key] = children
        return children
