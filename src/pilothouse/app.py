"""Wiring only: build the ASGI app, mount each domain's routes, run Services in the lifespan."""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from typing import Any

from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse

from pilothouse import __version__
from pilothouse.api import errors
from pilothouse.api.middleware import ApiMiddleware
from pilothouse.audit.routes import router as audit_router
from pilothouse.clock import Clock
from pilothouse.errors import PilothouseError
from pilothouse.gateway.asgi import GatewayASGI
from pilothouse.identity.routes import router as identity_router
from pilothouse.services import Services, build_services
from pilothouse.settings import Settings
from pilothouse.store import migrate


def build_app(
    settings: Settings,
    *,
    clock: Clock | None = None,
    services: Services | None = None,
    on_started: Callable[[Services], Awaitable[None]] | None = None,
) -> FastAPI:
    """The Pilothouse ASGI application for ``settings``."""
    svc = services or build_services(settings, clock)

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        await svc.start()
        if on_started is not None:
            await on_started(svc)
        try:
            yield
        finally:
            await svc.close()

    app = FastAPI(
        title="Pilothouse",
        version=__version__,
        summary="The control plane for software agents.",
        openapi_url="/api/openapi.json",
        docs_url="/api/docs",
        redoc_url=None,
        lifespan=lifespan,
    )
    app.state.services = svc
    app.add_middleware(ApiMiddleware)
    errors.install(app)
    app.include_router(identity_router)
    app.include_router(audit_router)
    _health_routes(app)
    assert svc.gateway is not None
    app.mount("/v1", GatewayASGI(svc.gateway), name="gateway")
    return app


def _health_routes(app: FastAPI) -> None:
    @app.api_route("/", methods=["GET", "HEAD"], include_in_schema=False)
    async def root() -> dict[str, Any]:
        """What answers a client's probe of its base URL (Claude Code sends HEAD here)."""
        return {"service": "pilothouse", "version": __version__}

    @app.get("/healthz", tags=["health"], summary="The process is up")
    async def healthz() -> dict[str, Any]:
        """The process is up."""
        return {"status": "ok", "version": __version__}

    @app.get(
        "/readyz",
        tags=["health"],
        summary="The store answers and is migrated",
        responses={503: {"model": errors.ErrorEnvelope}},
    )
    async def readyz(request: Request) -> Any:
        """The store answers and its migrations are current."""
        svc: Services = request.app.state.services
        try:
            current = await migrate.current_revision(svc.store)
        except PilothouseError as exc:
            return errors.error_response(exc, errors.request_id_of(request))
        head = migrate.head_revision()
        if current != head:
            return JSONResponse(
                {
                    "error": {
                        "code": "migrations_pending",
                        "message": f"the store is at migration {current}, the code needs {head}",
                    }
                },
                status_code=503,
            )
        return {"status": "ready", "migration": current}
