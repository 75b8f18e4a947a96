"""Reading what an upstream answered when it is not relayed: error details, Retry-After,
and the body iterator wrapped or closed."""

from __future__ import annotations

import time
from collections.abc import AsyncIterator, Mapping
from email.utils import parsedate_to_datetime

import orjson

from pilothouse.gateway.providers.base import UpstreamError, UpstreamReply

ERROR_DETAIL_BYTES = 2048


async def prepend(first: bytes, rest: AsyncIterator[bytes]) -> AsyncIterator[bytes]:
    """``first``, then the rest of the body; closing it closes the upstream body."""
    try:
        if first:
            yield first
        async for chunk in rest:
            yield chunk
    finally:
        await rest.aclose()  # type: ignore[attr-defined]


async def close_reply(reply: UpstreamReply) -> None:
    """Stop reading a reply: its connection is released or closed."""
    await reply.chunks.aclose()  # type: ignore[attr-defined]


async def error_detail(reply: UpstreamReply) -> str:
    """The start of an upstream error body, for the message the client finally gets."""
    parts, size = [], 0
    try:
        async for chunk in reply.chunks:
            parts.append(chunk)
            size += len(chunk)
            if size >= ERROR_DETAIL_BYTES:
                break
    except UpstreamError:
        pass
    finally:
        await close_reply(reply)
    raw = b"".join(parts)[:ERROR_DETAIL_BYTES]
    try:
        parsed = orjson.loads(raw)
        error = parsed.get("error") if isinstance(parsed, dict) else None
        message = error.get("message") if isinstance(error, dict) else None
        if isinstance(message, str):
            return f"({message[:300]})"
    except orjson.JSONDecodeError:
        pass
    text = raw.decode("utf-8", "replace").strip()
    return f"({text[:300]})" if text else ""


def retry_after_seconds(headers: Mapping[str, str]) -> float | None:
    """Seconds from a ``Retry-After`` header (delta-seconds or an HTTP date)."""
    value = headers.get("retry-after")
    if not value:
        return None
    try:
        return max(0.0, float(value))
    except ValueError:
        pass
    try:
        return max(0.0, parsedate_to_datetime(value).timestamp() - time.time())
    except (TypeError, ValueError):
        return None
