"""Route dependencies: the Services, and a RequestContext for a permitted principal."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from fastapi import Depends, Request

from pilothouse.api.errors import ErrorEnvelope
from pilothouse.context import RequestContext
from pilothouse.errors import Forbidden, Unauthenticated
from pilothouse.identity.principal import Principal
from pilothouse.identity.roles import Permission
from pilothouse.identity.tokens import KeyKind

if TYPE_CHECKING:
    from pilothouse.services import Services

ERROR_RESPONSES: dict[int | str, dict[str, Any]] = {
    status: {"model": ErrorEnvelope, "description": description}
    for status, description in (
        (400, "Malformed request (invalid JSON)"),
        (401, "Missing, unknown, expired or revoked key"),
        (403, "The key's role or scopes do not allow this"),
        (404, "No such object in the caller's organization"),
        (409, "The change conflicts with the current state"),
        (413, "The body is larger than the configured limit"),
        (422, "The body or parameters break the schema"),
        (503, "The store is unavailable; nothing was done"),
    )
}


def services_of(request: Request) -> Services:
    """The running Services."""
    services: Services = request.app.state.services
    return services


def principal_of(request: Request) -> Principal:
    """The principal the middleware authenticated."""
    principal = getattr(request.state, "principal", None)
    if principal is None:
        raise Unauthenticated("this route needs an API key")
    assert isinstance(principal, Principal)
    return principal


def context_of(request: Request) -> RequestContext:
    """A RequestContext for any authenticated principal."""
    return RequestContext(
        principal_of(request), request.state.request_id, services_of(request).clock
    )


def require(permission: Permission) -> Any:
    """A dependency that yields a RequestContext if the principal holds ``permission``."""

    async def dependency(request: Request) -> RequestContext:
        ctx = context_of(request)
        if not ctx.principal.can(permission):
            if ctx.principal.kind is KeyKind.SESSION:
                raise Forbidden(
                    "a session key cannot call admin routes", permission=permission.value
                )
            raise Forbidden(
                f"this needs the {permission.value} permission, which the key lacks",
                permission=permission.value,
            )
        return ctx

    return Depends(dependency)
