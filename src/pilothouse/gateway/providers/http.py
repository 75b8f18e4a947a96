"""What the real providers share: the request, the connection pool, the reply.

``HttpProvider`` is the base of the OpenAI, Anthropic and OpenAI-compatible providers: a
subclass names its paths per wire format, its auth header and its pass-through family;
everything else happens here. Calls go through ``HttpClient`` (``providers/pool.py``), the
process's one pool of keep-alive connections.

Wiring: build one ``HttpClient`` at startup, hand it to every HTTP provider
(``OpenAIProvider(http)``, ``AnthropicProvider(http)``, ``OpenAICompatibleProvider(http)``) so
they share one pool, and ``await http.aclose()`` at shutdown (a provider's ``aclose()`` does the
same; closing twice is harmless).

Per deployment, the origin, the request lines and the header block are built once, as bytes,
and cached (rebuilt when the configuration object changes), so a call costs one dict lookup,
the JSON encoding of its body and the bytes of the headers a client passes through.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from urllib.parse import urlencode, urlsplit

import orjson
from pydantic import SecretStr

from pilothouse import __version__
from pilothouse.gateway.config import DeploymentConfig
from pilothouse.gateway.providers.base import (
    PASS_THROUGH_HEADERS,
    UpstreamCall,
    UpstreamError,
    UpstreamReply,
    WireFormat,
)
from pilothouse.gateway.providers.pool import HttpClient, Origin, Timeouts

__all__ = ["HttpClient", "HttpProvider"]

USER_AGENT = f"pilothouse/{__version__}"
DEFAULT_PORTS = {"http": 80, "https": 443}


@dataclass(slots=True)
class Upstream:
    """What a provider needs to call one deployment, built once per deployment."""

    deployment: DeploymentConfig
    origin: Origin
    # Per wire: b"POST <path> HTTP/1.1\r\nhost: ...\r\n<fixed headers>".
    heads: dict[WireFormat, bytes]
    # Headers a client may set (its value wins), with the value sent when it sets none.
    pass_through: tuple[tuple[str, str | None], ...]
    timeouts: Timeouts
    credentials: Mapping[str, str] | None = None


class HttpProvider:
    """Base of the providers that speak HTTP: subclasses name paths, auth and header family."""

    name: str
    family: str
    default_base_url: str | None = None
    paths: Mapping[WireFormat, str] = {}

    def __init__(self, http: HttpClient) -> None:
        self._http = http
        self._upstreams: dict[str, Upstream] = {}

    def speaks(self, wire: WireFormat, deployment: DeploymentConfig) -> bool:
        """Whether ``wire`` has a path on this provider."""
        return wire in self.paths

    def auth_headers(self, key: str, deployment: DeploymentConfig) -> dict[str, str]:
        """The headers that carry the provider key."""
        return {"authorization": f"Bearer {key}"}

    def default_headers(self, deployment: DeploymentConfig) -> dict[str, str]:
        """Headers sent unless the client passes its own value through."""
        return {}

    def query(self, deployment: DeploymentConfig) -> dict[str, str]:
        """Query parameters added to every URL."""
        return {}

    async def aclose(self) -> None:
        """Close the shared HTTP client (idempotent, so every provider may call it)."""
        await self._http.aclose()

    async def send(self, call: UpstreamCall) -> UpstreamReply:
        """Send ``call``; return once the status and headers are in."""
        upstream = self._upstreams.get(call.deployment.id)
        if (
            upstream is None
            or upstream.deployment is not call.deployment
            or upstream.credentials != call.credentials  # a secret was rotated
        ):
            upstream = self._prepare(call.deployment, call.credentials)
        head = upstream.heads.get(call.wire)
        if head is None:
            raise UpstreamError(
                f"{call.deployment.id}: provider {self.name} does not speak {call.wire}"
            )
        body = orjson.dumps(call.body)
        extra = ""
        for name, default in upstream.pass_through:
            value = call.headers.get(name) or default
            if value and "\r" not in value and "\n" not in value:
                extra += f"{name}: {value}\r\n"
        data = b"%s%scontent-length: %d\r\n\r\n%s" % (
            head,
            extra.encode("latin-1", "replace"),
            len(body),
            body,
        )
        reply = await self._http.request(upstream.origin, data, upstream.timeouts)
        return UpstreamReply(reply.status, reply.content_type, reply, reply.headers)

    def _prepare(
        self, deployment: DeploymentConfig, credentials: Mapping[str, str] | None
    ) -> Upstream:
        base = deployment.base_url or self.default_base_url
        if not base:
            raise UpstreamError(f"{deployment.id}: provider {self.name} needs a base_url")
        given = credentials or {}
        secret = (
            deployment.api_key.get_secret_value()
            if isinstance(deployment.api_key, SecretStr)
            else given.get("api_key")
        )
        pinned = {
            k.lower(): v if isinstance(v, str) else given[f"header:{k.lower()}"]
            for k, v in deployment.headers.items()
        }
        overridable = [n for n in PASS_THROUGH_HEADERS[self.family] if n not in pinned]
        defaults = self.default_headers(deployment)
        headers = {"content-type": "application/json", "user-agent": USER_AGENT}
        headers.update({n: v for n, v in defaults.items() if n not in overridable})
        if secret:
            headers.update(self.auth_headers(secret, deployment))
        # The operator's static headers win over ours and over the client's pass-through ones.
        headers.update(pinned)
        origin, prefix, query = self._base(base, deployment)
        host = f"[{origin.host}]" if ":" in origin.host else origin.host
        if origin.port != DEFAULT_PORTS[origin.scheme]:
            host = f"{host}:{origin.port}"
        if any("\r" in v or "\n" in v for v in headers.values()):
            raise UpstreamError(f"{deployment.id}: a header value holds a line break")
        fixed = "".join(f"{n}: {v}\r\n" for n, v in headers.items())
        try:
            heads = {
                wire: f"POST {prefix}{path}{query} HTTP/1.1\r\nhost: {host}\r\n{fixed}".encode(
                    "latin-1"
                )
                for wire, path in self.paths.items()
                if self.speaks(wire, deployment)
            }
        except UnicodeEncodeError:
            raise UpstreamError(
                f"{deployment.id}: a header or the base_url is not plain ASCII/latin-1"
            ) from None
        timeouts = deployment.timeouts
        upstream = Upstream(
            deployment=deployment,
            origin=origin,
            heads=heads,
            pass_through=tuple((n, defaults.get(n)) for n in overridable),
            timeouts=Timeouts(timeouts.connect, timeouts.first_byte, timeouts.idle),
            credentials=credentials,
        )
        self._upstreams[deployment.id] = upstream
        return upstream

    def _base(self, base: str, deployment: DeploymentConfig) -> tuple[Origin, str, str]:
        """The origin, the path prefix and the query string (with its ``?``) of ``base``."""
        invalid = UpstreamError(f"{deployment.id}: base_url is not a valid URL")
        try:
            parts = urlsplit(base)
            port = parts.port
        except ValueError:
            raise invalid from None
        scheme = parts.scheme.lower()
        if scheme not in DEFAULT_PORTS or not parts.hostname:
            raise invalid
        if any(c in base for c in " \r\n\t"):
            raise invalid
        origin = Origin(scheme, parts.hostname, port or DEFAULT_PORTS[scheme])
        query = "&".join(q for q in (parts.query, urlencode(self.query(deployment))) if q)
        return origin, parts.path.rstrip("/"), f"?{query}" if query else ""
