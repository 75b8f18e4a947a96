"""Rendering errors as the one JSON envelope, including the framework's own errors."""

from __future__ import annotations

import logging
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from pydantic import BaseModel
from starlette.exceptions import HTTPException as StarletteHTTPException

from pilothouse.audit import chain
from pilothouse.errors import (
    BadRequest,
    Forbidden,
    InvalidJSON,
    MethodNotAllowed,
    NotFound,
    PilothouseError,
    ValidationFailed,
)

log = logging.getLogger(__name__)


class ErrorDetail(BaseModel):
    """The inside of the error envelope."""

    code: str
    message: str
    request_id: str | None = None
    errors: list[dict[str, Any]] | None = None


class ErrorEnvelope(BaseModel):
    """``{"error": {...}}``: every API error has this shape."""

    error: ErrorDetail


def request_id_of(request: Request) -> str | None:
    """The request id the middleware assigned."""
    return getattr(request.state, "request_id", None)


def error_response(exc: PilothouseError, request_id: str | None) -> JSONResponse:
    """Render an error as the JSON envelope with its status."""
    headers = {"www-authenticate": "Bearer"} if exc.status == 401 else None
    return JSONResponse(exc.body(request_id), status_code=exc.status, headers=headers)


def _describe(err: dict[str, Any]) -> dict[str, Any]:
    loc = [str(p) for p in err.get("loc", ())]
    where = ".".join(loc[1:]) if len(loc) > 1 else ".".join(loc)
    if err.get("type") == "extra_forbidden":
        message = f"unknown field {where!r}"
    elif err.get("type") == "missing":
        message = f"missing required field {where!r}"
    else:
        message = f"{where or 'body'}: {err.get('msg', 'invalid')}"
    return {"location": loc, "type": err.get("type", "invalid"), "message": message}


def validation_error(exc: RequestValidationError) -> PilothouseError:
    """Map FastAPI's validation error to InvalidJSON or ValidationFailed."""
    errors = [dict(e) for e in exc.errors()]
    if any(e.get("type") == "json_invalid" for e in errors):
        return InvalidJSON("the request body is not valid JSON")
    described = [_describe(e) for e in errors]
    summary = "; ".join(d["message"] for d in described[:5])
    return ValidationFailed(f"invalid request: {summary}", errors=described)


async def audit_denied(request: Request, exc: Forbidden) -> None:
    """Record a refused authorization, wherever in the request it was decided."""
    services = request.app.state.services
    principal = request.state.principal
    async with services.store.write() as conn:
        await chain.append(
            conn,
            services.clock,
            org_id=principal.org_id,
            actor=chain.Actor(principal.actor_kind, principal.actor_id),
            action="access.denied",
            outcome="denied",
            request_id=request_id_of(request),
            details={
                "reason": exc.message,
                "method": request.method,
                "path": request.url.path,
                **(
                    {"permission": exc.details["permission"]} if "permission" in exc.details else {}
                ),
            },
        )


def install(app: FastAPI) -> None:
    """Register the handlers that turn every error into the envelope."""

    @app.exception_handler(PilothouseError)
    async def _domain(request: Request, exc: PilothouseError) -> JSONResponse:
        if isinstance(exc, Forbidden) and getattr(request.state, "principal", None) is not None:
            try:
                await audit_denied(request, exc)
            except PilothouseError as audit_exc:
                # The refusal could not be recorded: answer with that (fail closed).
                return error_response(audit_exc, request_id_of(request))
        return error_response(exc, request_id_of(request))

    @app.exception_handler(RequestValidationError)
    async def _validation(request: Request, exc: RequestValidationError) -> JSONResponse:
        return error_response(validation_error(exc), request_id_of(request))

    @app.exception_handler(StarletteHTTPException)
    async def _http(request: Request, exc: StarletteHTTPException) -> JSONResponse:
        mapped: PilothouseError
        if isinstance(exc.__cause__, PilothouseError):
            # FastAPI wraps errors raised while reading the body (the size limit) in a 400.
            mapped = exc.__cause__
        elif exc.status_code == 404:
            mapped = NotFound(f"no route {request.method} {request.url.path}")
        elif exc.status_code == 405:
            mapped = MethodNotAllowed(f"{request.method} is not allowed on {request.url.path}")
        else:
            mapped = BadRequest(str(exc.detail))
            mapped.status = exc.status_code  # type: ignore[misc]
        return error_response(mapped, request_id_of(request))

    @app.exception_handler(Exception)
    async def _unexpected(request: Request, exc: Exception) -> JSONResponse:
        log.exception("unhandled error on %s %s", request.method, request.url.path)
        return error_response(
            PilothouseError("internal error; the request id names it in the server log"),
            request_id_of(request),
        )
