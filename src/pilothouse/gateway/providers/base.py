"""The Provider protocol: send one call upstream in a wire format, get bytes back."""

from __future__ import annotations

from collections.abc import AsyncIterator, Mapping
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any, Protocol

from pilothouse.gateway.config import DeploymentConfig


class WireFormat(StrEnum):
    """The request/response dialect a call is in."""

    OPENAI_CHAT = "openai-chat"
    ANTHROPIC_MESSAGES = "anthropic-messages"


@dataclass(slots=True)
class UpstreamCall:
    """One call as it leaves Pilothouse: the body already names the upstream model."""

    deployment: DeploymentConfig
    wire: WireFormat
    body: dict[str, Any]
    stream: bool
    headers: Mapping[str, str] = field(default_factory=dict)


@dataclass(slots=True)
class UpstreamReply:
    """What came back: status, content type, and the body as it arrives."""

    status: int
    content_type: str
    chunks: AsyncIterator[bytes]
    headers: Mapping[str, str] = field(default_factory=dict)


class Provider(Protocol):
    """Something that can serve calls in some wire formats."""

    name: str

    def speaks(self, wire: WireFormat) -> bool:
        """Whether this provider accepts calls in ``wire`` natively."""
        ...

    async def send(self, call: UpstreamCall) -> UpstreamReply:
        """Send ``call``; the reply's chunks must be read to the end or closed."""
        ...
