"""Single sign-on with an OpenID Connect issuer: the authorization-code flow with PKCE, the ID
token verified with the issuer's published keys.

1. ``/login/oidc`` sends the browser to the issuer's authorization endpoint (from its discovery
   document) with a random ``state``, ``nonce`` and PKCE verifier, kept in a short-lived
   HttpOnly cookie.
2. The issuer sends it back to ``/login/oidc/callback`` with a code. The state must match the
   cookie's; the code is exchanged at the token endpoint (with the client secret, if one is
   configured, and the verifier).
3. The ID token must be signed by one of the issuer's keys (its JWKS, by ``kid``; asymmetric
   algorithms only, ``none`` and HMAC refused), for this client (``aud``), by this issuer
   (``iss``), unexpired (``exp``, ``iat``, ``nbf``, a minute of leeway), and carry the cookie's
   ``nonce``. Its email (``email_verified`` not false) must be a person of the configured
   organization who is not disabled, or is created with ``oidc.create_role`` if that is set.

Any failure is refused with a reason and audited (``auth.failed``, method ``oidc``)."""

from __future__ import annotations

import base64
import hashlib
import hmac
import secrets
import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlencode

import anyio.to_thread
import httpx
import jwt

from pilothouse.errors import SsoRefused
from pilothouse.web.config import OidcConfig

FLOW_COOKIE = "pilothouse_oidc"
FLOW_SECONDS = 600
FLOW_PURPOSE = "pilothouse dashboard oidc flow"
"""What the flow cookie's key is derived for, from the master keys."""
LEEWAY_SECONDS = 60
ALGORITHMS = ["RS256", "RS384", "RS512", "PS256", "PS384", "PS512", "ES256", "ES384", "EdDSA"]
DISCOVERY_SECONDS = 3600


@dataclass(frozen=True, slots=True)
class Flow:
    """What the flow cookie keeps between leaving for the issuer and coming back."""

    state: str
    nonce: str
    verifier: str
    next: str


@dataclass(frozen=True, slots=True)
class Identity:
    """Who the issuer says signed in."""

    email: str
    name: str
    subject: str


class Oidc:
    """The configured issuer: its discovery document and keys, read once an hour."""

    def __init__(self, config: OidcConfig) -> None:
        self.config = config
        self._discovered: tuple[float, dict[str, Any]] | None = None
        self._keys: jwt.PyJWKClient | None = None

    async def discovery(self) -> dict[str, Any]:
        """The issuer's discovery document (cached for an hour)."""
        cached = self._discovered
        if cached is not None and time.monotonic() - cached[0] < DISCOVERY_SECONDS:
            return cached[1]
        url = self.config.issuer.rstrip("/") + "/.well-known/openid-configuration"
        try:
            async with httpx.AsyncClient(timeout=10) as http:
                reply = await http.get(url)
                reply.raise_for_status()
                document = reply.json()
        except (httpx.HTTPError, ValueError) as exc:
            raise SsoRefused(f"the issuer's discovery document could not be read: {exc}") from exc
        if not isinstance(document, dict) or document.get("issuer") != self.config.issuer:
            raise SsoRefused("the issuer's discovery document names another issuer")
        self._discovered = (time.monotonic(), document)
        self._keys = jwt.PyJWKClient(str(document["jwks_uri"]), cache_keys=True, lifespan=3600)
        return document

    async def start(self, redirect_uri: str, next_path: str) -> tuple[str, Flow]:
        """Where to send the browser, and the flow to keep in its cookie."""
        document = await self.discovery()
        flow = Flow(
            secrets.token_urlsafe(24),
            secrets.token_urlsafe(24),
            secrets.token_urlsafe(48),
            next_path,
        )
        challenge = base64.urlsafe_b64encode(hashlib.sha256(flow.verifier.encode()).digest())
        query = {
            "response_type": "code",
            "client_id": self.config.client_id,
            "redirect_uri": redirect_uri,
            "scope": self.config.scopes,
            "state": flow.state,
            "nonce": flow.nonce,
            "code_challenge": challenge.rstrip(b"=").decode(),
            "code_challenge_method": "S256",
        }
        return f"{document['authorization_endpoint']}?{urlencode(query)}", flow

    async def finish(self, code: str, redirect_uri: str, flow: Flow) -> Identity:
        """Exchange ``code`` and verify the ID token; who signed in (else SsoRefused)."""
        document = await self.discovery()
        form = {
            "grant_type": "authorization_code",
            "code": code,
            "redirect_uri": redirect_uri,
            "client_id": self.config.client_id,
            "code_verifier": flow.verifier,
        }
        if self.config.client_secret is not None:
            form["client_secret"] = self.config.client_secret.get_secret_value()
        try:
            async with httpx.AsyncClient(timeout=10) as http:
                reply = await http.post(str(document["token_endpoint"]), data=form)
                tokens = reply.json() if reply.content else {}
        except (httpx.HTTPError, ValueError) as exc:
            raise SsoRefused(f"the issuer's token endpoint could not be reached: {exc}") from exc
        if reply.status_code != 200 or not isinstance(tokens, dict) or "id_token" not in tokens:
            error = tokens.get("error", reply.status_code) if isinstance(tokens, dict) else "?"
            raise SsoRefused(f"the issuer did not exchange the code ({error})")
        claims = await self.verified(str(tokens["id_token"]), flow.nonce)
        email = claims.get("email")
        if not isinstance(email, str) or "@" not in email:
            raise SsoRefused("the ID token carries no email (ask for the email scope)")
        if claims.get("email_verified") is False:
            raise SsoRefused("the issuer has not verified this email")
        name = claims.get("name") if isinstance(claims.get("name"), str) else ""
        return Identity(email.strip().lower(), str(name)[:200], str(claims.get("sub", "")))

    async def verified(self, token: str, nonce: str) -> dict[str, Any]:
        """The claims of an ID token signed by the issuer's key for this client, unexpired,
        with ``nonce`` (else SsoRefused naming what failed)."""
        await self.discovery()
        keys = self._keys
        assert keys is not None
        try:
            key = await anyio.to_thread.run_sync(keys.get_signing_key_from_jwt, token)
            claims: dict[str, Any] = jwt.decode(
                token,
                key.key,
                algorithms=ALGORITHMS,
                audience=self.config.client_id,
                issuer=self.config.issuer,
                leeway=LEEWAY_SECONDS,
                options={"require": ["exp", "iat", "iss", "aud", "sub"]},
            )
        except jwt.ExpiredSignatureError as exc:
            raise SsoRefused("the ID token has expired") from exc
        except jwt.InvalidAudienceError as exc:
            raise SsoRefused("the ID token is for another client (audience)") from exc
        except jwt.InvalidIssuerError as exc:
            raise SsoRefused("the ID token is from another issuer") from exc
        except jwt.InvalidSignatureError as exc:
            raise SsoRefused("the ID token's signature is not the issuer's") from exc
        except jwt.PyJWKClientError as exc:
            raise SsoRefused(f"the ID token is signed by no key of the issuer: {exc}") from exc
        except jwt.InvalidTokenError as exc:
            raise SsoRefused(f"the ID token is invalid: {exc}") from exc
        if claims.get("nonce") != nonce:
            raise SsoRefused("the ID token is not the answer to this sign-in (nonce)")
        return claims


def flow_cookie(flow: Flow, key: bytes) -> str:
    """The flow, signed (HMAC-SHA256 with ``key``) with its expiry, for its cookie."""
    expires = int(time.time()) + FLOW_SECONDS
    body = ".".join([flow.state, flow.nonce, flow.verifier, str(expires)])
    body += "." + base64.urlsafe_b64encode(flow.next.encode()).decode()
    mac = _mac(key, body)
    return f"{body}.{mac}"


def flow_from(cookie: str | None, keys: Sequence[bytes]) -> Flow | None:
    """The flow a cookie holds, if it is ours (signed with one of ``keys``), untampered and
    unexpired."""
    if not cookie or len(cookie) > 2000:
        return None
    body, _, mac = cookie.rpartition(".")
    if not any(secrets.compare_digest(mac, _mac(key, body)) for key in keys):
        return None
    try:
        state, nonce, verifier, expires, raw_next = body.split(".")
        if int(expires) < time.time():
            return None
        return Flow(state, nonce, verifier, base64.urlsafe_b64decode(raw_next).decode())
    except ValueError:
        return None


def _mac(key: bytes, body: str) -> str:
    return hmac.new(key, body.encode(), hashlib.sha256).hexdigest()
