"""The Provider protocol: send one call upstream in a wire format, get bytes back.

A provider turns an ``UpstreamCall`` into an HTTP exchange (or, for ``demo``, an answer made in
process) and hands back the reply as it arrives. It never retries, never parses what it relays
and never raises anything but ``UpstreamError`` subclasses: the pipeline owns retries, fallback
and accounting.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Mapping
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any, Protocol

from pilothouse.gateway.config import DeploymentConfig


class WireFormat(StrEnum):
    """The request/response dialect a call is in."""

    OPENAI_CHAT = "openai-chat"
    OPENAI_RESPONSES = "openai-responses"
    OPENAI_EMBEDDINGS = "openai-embeddings"
    ANTHROPIC_MESSAGES = "anthropic-messages"
    ANTHROPIC_COUNT_TOKENS = "anthropic-count-tokens"

    @property
    def is_anthropic(self) -> bool:
        """Whether errors and replies take Anthropic's shapes."""
        return self in (WireFormat.ANTHROPIC_MESSAGES, WireFormat.ANTHROPIC_COUNT_TOKENS)


# Request headers a client may send that reach the upstream, by the provider family that
# defines them. Everything else (the client's own key above all) stays at the gateway.
PASS_THROUGH_HEADERS: dict[str, tuple[str, ...]] = {
    "anthropic": ("anthropic-version", "anthropic-beta"),
    "openai": ("openai-organization", "openai-project"),
}


class UpstreamError(Exception):
    """The upstream could not be reached or did not answer in time; safe to retry elsewhere."""

    kind = "upstream_error"


class UpstreamConnectError(UpstreamError):
    """Connection refused, reset before a reply, DNS or TLS failure."""

    kind = "connect_failed"


class UpstreamTimeout(UpstreamError):
    """A connect, first-byte or idle timeout; ``phase`` says which."""

    kind = "timeout"

    def __init__(self, phase: str, seconds: float) -> None:
        super().__init__(f"no {phase.replace('_', ' ')} within {seconds:g}s")
        self.phase = phase
        self.seconds = seconds


class UpstreamBroken(UpstreamError):
    """The connection ended in the middle of a reply body."""

    kind = "stream_cut"


@dataclass(slots=True)
class UpstreamCall:
    """One call as it leaves Pilothouse: the body already names the upstream model.

    ``headers`` holds only the pass-through headers the client sent (lower-case names); the
    provider adds its own authentication, content type and the deployment's extra headers.
    """

    deployment: DeploymentConfig
    wire: WireFormat
    body: dict[str, Any]
    stream: bool
    headers: Mapping[str, str] = field(default_factory=dict)
    # The values of the deployment's secret references (``secret_refs``), read for this call.
    credentials: Mapping[str, str] | None = None


@dataclass(slots=True)
class UpstreamReply:
    """What came back: status, content type, headers, and the body as it arrives.

    ``chunks`` yields body bytes; it raises ``UpstreamTimeout`` (idle) or ``UpstreamBroken`` if
    the body stops early, and must be read to the end or closed with ``aclose()``.
    """

    status: int
    content_type: str
    chunks: AsyncIterator[bytes]
    headers: Mapping[str, str] = field(default_factory=dict)


class Provider(Protocol):
    """Something that can serve calls in some wire formats."""

    name: str

    def speaks(self, wire: WireFormat, deployment: DeploymentConfig) -> bool:
        """Whether this provider accepts calls in ``wire`` natively for ``deployment``."""
        ...

    async def send(self, call: UpstreamCall) -> UpstreamReply:
        """Send ``call``; return once the status and headers are in."""
        ...

    async def aclose(self) -> None:
        """Release connections."""
        ...
