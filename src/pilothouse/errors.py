"""One error tree for all of Pilothouse.

Every error carries a stable ``code`` (clients may switch on it), an HTTP ``status`` and a
message that names the problem and, where there is one, the fix::

    PilothouseError                 500 internal_error
    ├── ConfigError                 500 config_invalid
    ├── BadRequest                  400 bad_request
    │   ├── InvalidJSON             400 invalid_json
    │   ├── ValidationFailed        422 validation_error
    │   ├── WeakPassword            400 weak_password
    │   └── BodyTooLarge            413 body_too_large
    ├── Unauthenticated             401 missing_credentials
    │   ├── InvalidKey              401 invalid_key
    │   ├── KeyExpired              401 key_expired
    │   ├── KeyRevoked              401 key_revoked
    │   └── SignInRefused           401 sign_in_failed
    │       └── SsoRefused          401 sso_failed
    ├── CsrfFailed                  403 csrf_failed
    ├── TooManyFailures             429 too_many_failures
    ├── Forbidden                   403 forbidden
    │   ├── ScopeDenied             403 scope_denied
    │   └── SecretNotGranted        403 secret_not_granted
    ├── BudgetExceeded              402 budget_exceeded
    ├── RateLimited                 429 rate_limited
    ├── NotFound                    404 not_found
    ├── MethodNotAllowed            405 method_not_allowed
    ├── Conflict                    409 conflict
    └── StoreUnavailable            503 store_unavailable

The API renders any of them as ``{"error": {"code", "message", "request_id", ...}}``.
"""

from __future__ import annotations

from typing import Any, ClassVar


class PilothouseError(Exception):
    """Base of every error Pilothouse raises on purpose."""

    status: ClassVar[int] = 500
    code: ClassVar[str] = "internal_error"

    def __init__(self, message: str, **details: Any) -> None:
        super().__init__(message)
        self.message = message
        self.details = details
        self.context: dict[str, Any] = {}
        """Server-side facts about the error (for audit and logs); never rendered."""

    def body(self, request_id: str | None = None) -> dict[str, Any]:
        """The JSON error envelope."""
        error: dict[str, Any] = {"code": self.code, "message": self.message}
        if request_id:
            error["request_id"] = request_id
        error.update(self.details)
        return {"error": error}


class ConfigError(PilothouseError):
    """Settings or a config file are invalid; raised at start-up."""

    code = "config_invalid"


class BudgetExceeded(PilothouseError):
    """A hard budget would be exceeded by a call; the details say which, and when it resets."""

    status = 402
    code = "budget_exceeded"


class RateLimited(PilothouseError):
    """A rate limit (per minute or concurrent) would be exceeded; ``retry_after`` says when."""

    status = 429
    code = "rate_limited"

    def __init__(self, message: str, retry_after: float, **details: Any) -> None:
        super().__init__(message, **details)
        self.retry_after = retry_after


class BadRequest(PilothouseError):
    """The request cannot be understood."""

    status = 400
    code = "bad_request"


class InvalidJSON(BadRequest):
    """The body is not well-formed JSON."""

    code = "invalid_json"


class ValidationFailed(BadRequest):
    """The body or parameters break the schema (unknown field, wrong type, out of range)."""

    status = 422
    code = "validation_error"


class PolicyInvalid(BadRequest):
    """A policy document was refused (``problems``: each with its line); nothing changed."""

    status = 422
    code = "policy_invalid"


class BodyTooLarge(BadRequest):
    """The body is larger than ``max_body_bytes``."""

    status = 413
    code = "body_too_large"


class Unauthenticated(PilothouseError):
    """No credentials were presented."""

    status = 401
    code = "missing_credentials"


class InvalidKey(Unauthenticated):
    """The presented key is malformed or unknown."""

    code = "invalid_key"


class KeyExpired(Unauthenticated):
    """The presented key has passed its expiry."""

    code = "key_expired"


class KeyRevoked(Unauthenticated):
    """The presented key was revoked (or its session ended)."""

    code = "key_revoked"


class WeakPassword(BadRequest):
    """A password too short or too long to set."""

    code = "weak_password"


class SignInRefused(Unauthenticated):
    """A dashboard sign-in that signs no one in (a password one never says which part was
    wrong)."""

    code = "sign_in_failed"


class SsoRefused(SignInRefused):
    """A single sign-on that signs no one in; ``message`` says why."""

    code = "sso_failed"


class CsrfFailed(PilothouseError):
    """A form came without its session's CSRF token, with another, or from another site."""

    status = 403
    code = "csrf_failed"


class TooManyFailures(PilothouseError):
    """Too many failed sign-ins for this email from this address: wait."""

    status = 429
    code = "too_many_failures"


class Forbidden(PilothouseError):
    """The principal may not do this."""

    status = 403
    code = "forbidden"


class ScopeDenied(Forbidden):
    """A service key tried something outside its scopes."""

    code = "scope_denied"


class SecretNotGranted(Forbidden):
    """No grant lets this principal use the secret (or no such secret: the two look alike)."""

    code = "secret_not_granted"


class NotFound(PilothouseError):
    """No such object in the caller's organization."""

    status = 404
    code = "not_found"


class MethodNotAllowed(PilothouseError):
    """The route exists but not with this method."""

    status = 405
    code = "method_not_allowed"


class Conflict(PilothouseError):
    """The change clashes with the current state (a duplicate name, say)."""

    status = 409
    code = "conflict"


class StoreUnavailable(PilothouseError):
    """The store cannot be read or written; the request was refused, not waved through."""

    status = 503
    code = "store_unavailable"


class PolicyUnreadable(PilothouseError):
    """The active policy cannot be loaded: checks are refused, never waved through."""

    status = 503
    code = "policy_unreadable"
