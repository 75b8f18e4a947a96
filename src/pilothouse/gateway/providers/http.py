"""What the real providers share: one aiohttp session, the request, the reply, the error mapping.

``HttpClient`` holds the process's one ``aiohttp.ClientSession`` (made on first use, inside the
running loop) and its keep-alive pool. ``HttpProvider`` is the base of the OpenAI, Anthropic and
OpenAI-compatible providers: a subclass names its paths per wire format, its auth header and its
pass-through family; everything else happens here.

Wiring: build one ``HttpClient`` at startup, hand it to every HTTP provider
(``OpenAIProvider(http)``, ``AnthropicProvider(http)``, ``OpenAICompatibleProvider(http)``) so
they share one pool, and ``await http.aclose()`` at shutdown (a provider's ``aclose()`` does the
same; closing twice is harmless).

Per deployment, the URLs, the headers and the timeouts are built once and cached (rebuilt when
the configuration object changes), so a call costs one dict lookup, the JSON encoding of its
body and aiohttp itself.

Timeouts map onto aiohttp's own timers, so they cost nothing per chunk beyond what aiohttp
already does:

- ``connect``: aiohttp's ``connect`` (a free pooled connection, DNS, TCP and TLS);
- ``first_byte``: aiohttp's ``sock_read``, which starts once the request is written and so
  measures the wait for the response headers;
- ``idle``: once the headers are in, the same ``sock_read`` timer is switched to ``idle``. It is
  re-armed on every packet the upstream sends and stopped while aiohttp holds reading back
  because we have not consumed the buffer, so it measures the upstream's silence, never our own
  slowness (one ``asyncio.timeout`` per chunk would time our reads instead, and cost a timer
  per chunk on top of aiohttp's).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

import aiohttp
import orjson
from yarl import URL

from pilothouse import __version__
from pilothouse.gateway.config import DeploymentConfig
from pilothouse.gateway.providers.base import (
    PASS_THROUGH_HEADERS,
    UpstreamBroken,
    UpstreamCall,
    UpstreamConnectError,
    UpstreamError,
    UpstreamReply,
    UpstreamTimeout,
    WireFormat,
)

POOL_LIMIT = 1024
KEEPALIVE_SECONDS = 30.0
USER_AGENT = f"pilothouse/{__version__}"


class HttpClient:
    """The process's one aiohttp session to upstreams, made on first use in the running loop."""

    def __init__(
        self, *, limit: int = POOL_LIMIT, keepalive_timeout: float = KEEPALIVE_SECONDS
    ) -> None:
        self._limit = limit
        self._keepalive = keepalive_timeout
        self._session: aiohttp.ClientSession | None = None

    @property
    def session(self) -> aiohttp.ClientSession:
        """The open session; a new one after ``aclose()``."""
        session = self._session
        if session is None or session.closed:
            session = self._session = self._open()
        return session

    def _open(self) -> aiohttp.ClientSession:
        connector = aiohttp.TCPConnector(
            limit=self._limit,
            limit_per_host=0,
            keepalive_timeout=self._keepalive,
            ttl_dns_cache=300,
        )
        return aiohttp.ClientSession(
            connector=connector,
            cookie_jar=aiohttp.DummyCookieJar(),
            auto_decompress=True,
            # Our own user agent travels in each deployment's headers.
            skip_auto_headers=("User-Agent",),
            # Timeouts are per deployment; an LLM stream may rightly last many minutes.
            timeout=aiohttp.ClientTimeout(),
            raise_for_status=False,
            trust_env=False,
        )

    async def aclose(self) -> None:
        """Close the session and its connections (idempotent)."""
        session, self._session = self._session, None
        if session is not None and not session.closed:
            await session.close()


@dataclass(slots=True)
class Upstream:
    """What a provider needs to call one deployment, built once per deployment."""

    deployment: DeploymentConfig
    urls: dict[WireFormat, URL]
    headers: dict[str, str]
    pass_through: tuple[str, ...]
    timeout: aiohttp.ClientTimeout
    switch_idle: bool
    secret: str | None


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
        if upstream is None or upstream.deployment is not call.deployment:
            upstream = self._prepare(call.deployment)
        url = upstream.urls.get(call.wire)
        if url is None:
            raise UpstreamError(
                f"{call.deployment.id}: provider {self.name} does not speak {call.wire}"
            )
        headers = upstream.headers
        if call.headers:
            found = {n: v for n in upstream.pass_through if (v := call.headers.get(n))}
            if found:
                headers = {**headers, **found}
        return await open_reply(self._http.session, url, orjson.dumps(call.body), headers, upstream)

    def _prepare(self, deployment: DeploymentConfig) -> Upstream:
        base = deployment.base_url or self.default_base_url
        if not base:
            raise UpstreamError(f"{deployment.id}: provider {self.name} needs a base_url")
        secret = deployment.api_key.get_secret_value() if deployment.api_key else None
        headers = {"content-type": "application/json", "user-agent": USER_AGENT}
        headers.update(self.default_headers(deployment))
        if secret:
            headers.update(self.auth_headers(secret, deployment))
        # The operator's static headers win over ours and over the client's pass-through ones.
        pinned = {k.lower(): v for k, v in deployment.headers.items()}
        headers.update(pinned)
        timeouts = deployment.timeouts
        try:
            urls = self._urls(URL(base), deployment)
        except (ValueError, TypeError):
            raise UpstreamError(f"{deployment.id}: base_url is not a valid URL") from None
        upstream = Upstream(
            deployment=deployment,
            urls=urls,
            headers=headers,
            pass_through=tuple(n for n in PASS_THROUGH_HEADERS[self.family] if n not in pinned),
            timeout=aiohttp.ClientTimeout(connect=timeouts.connect, sock_read=timeouts.first_byte),
            switch_idle=timeouts.idle != timeouts.first_byte,
            secret=secret,
        )
        self._upstreams[deployment.id] = upstream
        return upstream

    def _urls(self, base: URL, deployment: DeploymentConfig) -> dict[WireFormat, URL]:
        query = self.query(deployment)
        prefix = base.path.rstrip("/")
        urls = {}
        for wire, path in self.paths.items():
            if self.speaks(wire, deployment):
                url = base.with_path(prefix + path, keep_query=True)
                urls[wire] = url.update_query(query) if query else url
        return urls


async def open_reply(
    session: aiohttp.ClientSession,
    url: URL,
    data: bytes,
    headers: Mapping[str, str],
    upstream: Upstream,
) -> UpstreamReply:
    """POST ``data`` to ``url``; the reply as soon as its status and headers are in."""
    try:
        resp = await session.request(
            "POST",
            url,
            data=data,
            headers=headers,
            timeout=upstream.timeout,
            allow_redirects=False,
        )
    except (aiohttp.ClientError, OSError) as exc:  # TimeoutError is an OSError
        failure = _before_reply(exc, upstream)
    else:
        if upstream.switch_idle:
            _switch_to_idle(resp, upstream.deployment.timeouts.idle)
        return UpstreamReply(
            resp.status,
            resp.content_type,
            Body(resp, upstream),
            {k.lower(): v for k, v in resp.headers.items()},
        )
    # Raised outside the handler so that aiohttp's exception, whose request_info holds the
    # request headers (the provider key among them), is not kept as the context.
    raise failure


def _before_reply(exc: BaseException, upstream: Upstream) -> UpstreamError:
    timeouts = upstream.deployment.timeouts
    if isinstance(exc, aiohttp.ConnectionTimeoutError):
        return UpstreamTimeout("connect", timeouts.connect)
    if isinstance(exc, TimeoutError):  # aiohttp's sock_read while awaiting the headers
        return UpstreamTimeout("first_byte", timeouts.first_byte)
    return UpstreamConnectError(_describe(exc, upstream))


def _switch_to_idle(resp: aiohttp.ClientResponse, idle: float) -> None:
    connection = resp.connection
    protocol = connection.protocol if connection is not None else None
    if protocol is None:
        return
    protocol.read_timeout = idle
    if not resp.content.is_eof():
        # Re-arm the timer aiohttp set with first_byte when the headers arrived. At the end of
        # the body aiohttp drops it, so a finished reply is never re-armed.
        protocol.start_timeout()


class Body:
    """A reply body as it arrives: an async iterator of bytes that releases its connection.

    Read to the end, the connection goes back to the pool; ``aclose()`` before that closes it.
    """

    __slots__ = ("_content", "_resp", "_upstream")

    def __init__(self, resp: aiohttp.ClientResponse, upstream: Upstream) -> None:
        self._resp = resp
        self._content = resp.content
        self._upstream = upstream

    def __aiter__(self) -> Body:
        return self

    async def __anext__(self) -> bytes:
        try:
            chunk = await self._content.readany()
        except (aiohttp.ClientError, OSError) as exc:
            self._resp.close()
            failure = self._failure(exc)
        else:
            if chunk:
                return chunk
            self._resp.release()
            raise StopAsyncIteration
        raise failure  # outside the handler, as in open_reply

    def _failure(self, exc: BaseException) -> UpstreamError:
        if isinstance(exc, TimeoutError):  # aiohttp's sock_read, set to idle
            return UpstreamTimeout("idle", self._upstream.deployment.timeouts.idle)
        return UpstreamBroken(_describe(exc, self._upstream, "reply body cut"))

    async def aclose(self) -> None:
        """Stop reading: an unfinished body's connection is closed, a finished one is pooled."""
        self._resp.close()


def _describe(exc: BaseException, upstream: Upstream, what: str = "cannot connect") -> str:
    """A message naming the deployment and the cause, with the provider key scrubbed out."""
    url = next(iter(upstream.urls.values()), None)
    where = f"{url.host}:{url.port}" if url is not None else "?"
    detail = str(exc) or type(exc).__name__
    if isinstance(exc, aiohttp.ClientConnectorError):
        detail = exc.os_error.strerror or type(exc.os_error).__name__
    message = f"{upstream.deployment.id}: {what} ({where}): {type(exc).__name__}: {detail}"
    if upstream.secret:
        message = message.replace(upstream.secret, "***")
    return message
