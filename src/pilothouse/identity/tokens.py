"""API key tokens: ``<kind prefix>_<lookup>_<secret>``, shown once, stored as a hash."""

from __future__ import annotations

import hashlib
import hmac
import secrets
from dataclasses import dataclass
from enum import StrEnum

from pilothouse.errors import InvalidKey

_ALPHABET = "0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz"
LOOKUP_LEN = 12
SECRET_LEN = 40


class KeyKind(StrEnum):
    """What a key authenticates as."""

    USER = "user"
    SERVICE = "service"
    SESSION = "session"


TOKEN_PREFIX = {KeyKind.USER: "phk", KeyKind.SERVICE: "phs", KeyKind.SESSION: "pha"}
_KIND_BY_PREFIX = {v: k for k, v in TOKEN_PREFIX.items()}


@dataclass(frozen=True, slots=True)
class IssuedToken:
    """A freshly made token: the plaintext (shown once) and what the store keeps."""

    token: str
    lookup: str
    prefix: str
    secret_hash: str


@dataclass(frozen=True, slots=True)
class ParsedToken:
    """A presented token split into its parts."""

    kind: KeyKind
    lookup: str
    secret: str

    @property
    def prefix(self) -> str:
        """The visible, non-secret part."""
        return f"{TOKEN_PREFIX[self.kind]}_{self.lookup}"


def _random(length: int) -> str:
    return "".join(secrets.choice(_ALPHABET) for _ in range(length))


def hash_secret(lookup: str, secret: str) -> str:
    """SHA-256 of a key's secret; keys are long random strings, so a fast hash suffices."""
    return hashlib.sha256(f"{lookup}:{secret}".encode()).hexdigest()


def issue(kind: KeyKind) -> IssuedToken:
    """Make a new random token of ``kind``."""
    lookup, secret = _random(LOOKUP_LEN), _random(SECRET_LEN)
    prefix = f"{TOKEN_PREFIX[kind]}_{lookup}"
    return IssuedToken(f"{prefix}_{secret}", lookup, prefix, hash_secret(lookup, secret))


def from_plaintext(kind: KeyKind, token: str) -> IssuedToken:
    """Adopt an operator-chosen token (``PILOTHOUSE_ADMIN_KEY``); it must parse as ``kind``."""
    parsed = parse(token)
    if parsed.kind is not kind:
        raise InvalidKey(f"a {kind.value} key must start with {TOKEN_PREFIX[kind]}_")
    return IssuedToken(
        token, parsed.lookup, parsed.prefix, hash_secret(parsed.lookup, parsed.secret)
    )


def parse(token: str) -> ParsedToken:
    """Split a presented token; raise InvalidKey if it is not one of ours."""
    parts = token.split("_")
    if len(parts) != 3 or parts[0] not in _KIND_BY_PREFIX:
        raise InvalidKey("the API key is malformed: Pilothouse keys look like phk_<id>_<secret>")
    _, lookup, secret = parts
    if len(lookup) != LOOKUP_LEN or not (16 <= len(secret) <= 128):
        raise InvalidKey("the API key is malformed: Pilothouse keys look like phk_<id>_<secret>")
    if not all(c in _ALPHABET for c in lookup + secret):
        raise InvalidKey("the API key is malformed: Pilothouse keys look like phk_<id>_<secret>")
    return ParsedToken(_KIND_BY_PREFIX[parts[0]], lookup, secret)


def secret_matches(parsed: ParsedToken, stored_hash: str) -> bool:
    """Constant-time comparison of a presented secret with the stored hash."""
    return hmac.compare_digest(hash_secret(parsed.lookup, parsed.secret), stored_hash)
